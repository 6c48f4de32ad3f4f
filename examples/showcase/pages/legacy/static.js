export async function getStaticProps() {
  return { props: { builtAt: new Date().toISOString() }, revalidate: 10 }
}

export default function LegacyStatic({ builtAt }) {
  return (
    <div>
      <h1>Pages router ISR</h1>
      <p id="built-at">{builtAt}</p>
    </div>
  )
}
