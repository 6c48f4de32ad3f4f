// @next/routing's resolveRoutes timed on the same tables and requests as benches/resolve.rs:
// warm-up, then the median over batches of awaited resolutions. Prints one JSON line per case:
// {"table","case","median_ns"}. Run from anywhere: `node crates/ferry-router/benches/next_routing.js`.
'use strict'
const path = require('node:path')
const fs = require('node:fs')
const { resolveRoutes } = require(
  path.join(__dirname, '../tests/oracle/node_modules/@next/routing'),
)

const TABLES = {
  showcase: path.join(__dirname, '../tests/fixtures/showcase.json'),
  rules500: path.join(__dirname, 'rules500.json'),
}

// Same requests as resolve.rs (keep in sync).
const BASE_HEADERS = [
  ['accept', 'text/html'],
  ['cookie', 'a=1; b=2'],
  ['user-agent', 'bench'],
]
const CASES = {
  chunk: { path: '/_next/static/chunks/0cz1d0mv5g_q7.js' },
  // resolve.rs sends these as POST to keep them off Ferry's path-only memo; @next/routing reads
  // no method, so they are the same requests here.
  chunk_no_memo: { path: '/_next/static/chunks/0cz1d0mv5g_q7.js' },
  index: { path: '/' },
  index_no_memo: { path: '/' },
  blog: { path: '/blog/x' },
  rsc: { path: '/blog/hello', headers: [['rsc', '1']] },
  not_found: { path: '/nope/at/all' },
}
const RULES_ONLY = {
  redirect_last: { path: '/old-149/abc' },
  rewrite_has: { path: '/rw-98/a/b', query: 'v=1', host: 'sub.example.com' },
}

function params(t, c) {
  const u = new URL(`http://${c.host ?? 'localhost:3000'}/`)
  u.pathname = c.path
  if (c.query) u.search = '?' + c.query
  return {
    url: u,
    buildId: t.buildId,
    basePath: t.basePath,
    i18n: t.i18n ?? undefined,
    requestBody: null,
    headers: new Headers([...BASE_HEADERS, ...(c.headers ?? [])]),
    pathnames: t.pathnames,
    routes: { ...t.routing, middlewareMatchers: t.middlewareMatchers ?? [] },
    invokeMiddleware: async () => ({}),
  }
}

async function time(t, c) {
  // A fresh URL / Headers per call, as a server builds them per request.
  const run = () => resolveRoutes(params(t, c))
  const warm = Date.now()
  while (Date.now() - warm < 300) await run()
  const batch = 50
  const samples = []
  for (let s = 0; s < 200; s++) {
    const start = process.hrtime.bigint()
    for (let i = 0; i < batch; i++) await run()
    samples.push(Number(process.hrtime.bigint() - start) / batch)
  }
  samples.sort((a, b) => a - b)
  return samples[samples.length >> 1]
}

async function main() {
  for (const [name, file] of Object.entries(TABLES)) {
    const t = JSON.parse(fs.readFileSync(file, 'utf8'))
    const cases = name === 'rules500' ? { ...CASES, ...RULES_ONLY } : CASES
    for (const [cname, c] of Object.entries(cases)) {
      const median = await time(t, c)
      process.stdout.write(JSON.stringify({ table: name, case: cname, median_ns: Math.round(median) }) + '\n')
    }
  }
}
main()
