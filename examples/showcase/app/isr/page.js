export const revalidate = 5

export default async function IsrPage() {
  return (
    <div>
      <h1>ISR</h1>
      <p id="generated-at">{new Date().toISOString()}</p>
    </div>
  )
}
