// Reference resolver for ferry-router's oracle test: reads JSON lines on stdin, answers one
// JSON line per request on stdout, using @next/routing's resolveRoutes (the reference
// implementation of Next.js routing for adapters).
'use strict'
const readline = require('node:readline')
const { resolveRoutes, responseToMiddlewareResult } = require('@next/routing')

const tables = new Map()

function buildUrl(req) {
  const scheme = req.secure ? 'https' : 'http'
  let u
  try {
    u = new URL(`${scheme}://${req.host ?? 'localhost'}/`)
  } catch {
    u = new URL(`${scheme}://localhost/`)
  }
  u.pathname = req.path
  if (req.query) u.search = '?' + req.query
  return u
}

function toJson(result, invoked) {
  const out = { invoked }
  if (result.middlewareResponded) out.middlewareResponded = true
  if (result.externalRewrite) out.externalRewrite = result.externalRewrite.href
  if (result.redirect) out.redirect = { url: result.redirect.url.href, status: result.redirect.status }
  if (result.resolvedPathname !== undefined) out.resolvedPathname = result.resolvedPathname
  if (result.invocationTarget) out.invocationTarget = result.invocationTarget
  if (result.resolvedHeaders) out.resolvedHeaders = [...result.resolvedHeaders]
  if (result.status !== undefined) out.status = result.status
  if (result.routeMatches) out.routeMatches = result.routeMatches
  return out
}

async function handle(msg) {
  if (msg.define) {
    tables.set(msg.define, msg.table)
    return { ok: true }
  }
  if (msg.build) {
    // A next.config-style spec turned into an adapter routing table by Next's own build code.
    const table = await require('./build-table').buildTable(msg.spec)
    tables.set(msg.build, table)
    return { table }
  }
  if (msg.drop) {
    tables.delete(msg.drop)
    return { ok: true }
  }
  const t = tables.get(msg.table)
  const req = msg.req
  let invoked = false
  const result = await resolveRoutes({
    url: buildUrl(req),
    buildId: t.buildId,
    basePath: t.basePath,
    i18n: t.i18n ?? undefined,
    requestBody: null,
    headers: new Headers(req.headers),
    pathnames: t.pathnames,
    routes: { ...t.routing, middlewareMatchers: t.middlewareMatchers ?? [] },
    invokeMiddleware: async (ctx) => {
      invoked = true
      if (!msg.mw) return {}
      const resp = new Response(null, { status: msg.mw.status, headers: msg.mw.headers })
      return responseToMiddlewareResult(resp, ctx.headers, ctx.url)
    },
  })
  return toJson(result, invoked)
}

async function main() {
  const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity })
  for await (const line of rl) {
    if (!line.trim()) continue
    let out
    try {
      out = await handle(JSON.parse(line))
    } catch (e) {
      out = { error: String(e && e.message ? e.message : e) }
    }
    process.stdout.write(JSON.stringify(out) + '\n')
  }
}
main()
