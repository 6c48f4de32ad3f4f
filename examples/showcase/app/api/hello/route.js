export async function GET(request) {
  const url = new URL(request.url)
  return Response.json({ hello: 'world', name: url.searchParams.get('name') ?? null })
}

export async function POST(request) {
  const body = await request.text()
  return Response.json({ received: body.length, echo: body.slice(0, 64) })
}
