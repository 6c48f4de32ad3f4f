import { revalidatePath } from 'next/cache'

let counter = 0

async function increment() {
  'use server'
  counter += 1
  revalidatePath('/actions')
}

export default function ActionsPage() {
  return (
    <div>
      <h1>Server Action</h1>
      <p id="counter">{counter}</p>
      <form action={increment}>
        <button type="submit">increment</button>
      </form>
    </div>
  )
}
