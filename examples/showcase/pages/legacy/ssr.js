export async function getServerSideProps({ query, req }) {
  return { props: { q: query.q ?? null, method: req.method } }
}

export default function LegacySsr({ q, method }) {
  return (
    <div>
      <h1>Pages router SSR</h1>
      <p id="q">{q ?? 'none'}</p>
      <p id="method">{method}</p>
    </div>
  )
}
