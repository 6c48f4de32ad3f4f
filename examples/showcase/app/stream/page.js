import { Suspense } from 'react'
import { connection } from 'next/server'

async function Slow() {
  await new Promise((resolve) => setTimeout(resolve, 1500))
  return <p id="slow">slow part done</p>
}

export default async function StreamPage() {
  await connection()
  return (
    <div>
      <h1>Streaming</h1>
      <p id="fast">fast part</p>
      <Suspense fallback={<p id="loading">loading…</p>}>
        <Slow />
      </Suspense>
    </div>
  )
}
