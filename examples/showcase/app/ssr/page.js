import { cookies, headers } from 'next/headers'

export default async function SsrPage() {
  const h = await headers()
  const c = await cookies()
  return (
    <div>
      <h1>SSR</h1>
      <p id="ua">{h.get('user-agent') ?? 'none'}</p>
      <p id="theme">{c.get('theme')?.value ?? 'default'}</p>
      <p id="proxy">{h.get('x-ferry-proxy') ?? 'none'}</p>
      <p id="greeting">{h.get('x-greeting') ?? 'none'}</p>
      <p id="rendered-at">{new Date().toISOString()}</p>
    </div>
  )
}
