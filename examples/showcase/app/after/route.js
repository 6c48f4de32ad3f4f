import { after } from 'next/server'
import { appendFileSync } from 'node:fs'

export const dynamic = 'force-dynamic'

export async function GET(request) {
  const url = new URL(request.url)
  const id = url.searchParams.get('id') ?? 'none'
  after(async () => {
    await new Promise((resolve) => setTimeout(resolve, 300))
    const log = process.env.FERRY_EXAMPLE_AFTER_LOG
    if (log) appendFileSync(log, `after ${id}\n`)
  })
  return Response.json({ scheduled: id })
}
