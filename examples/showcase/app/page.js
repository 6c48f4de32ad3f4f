import Link from 'next/link'

export default function Home() {
  return (
    <div>
      <h1>Ferry showcase</h1>
      <p id="kind">static page</p>
      <Link href="/isr">ISR page</Link>
    </div>
  )
}
