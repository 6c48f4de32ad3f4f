'use strict'
// Ferry worker bridge: one Node.js process serving plain HTTP/1.1 on a Unix
// domain socket. Ferry (Rust) routes each request and tells the bridge which
// Next.js entrypoint to run through internal headers:
//   x-ferry-entry  entry module (percent-encoded), absolute or relative to the
//                  project dir (cwd)
//   x-ferry-kind   PAGES | PAGES_API | APP_PAGE | APP_ROUTE | MIDDLEWARE | IMAGE
//                  (IMAGE: next start's /_next/image; the entry is ignored)
//   x-ferry-meta   JSON: requestMeta bits (hostname, port, protocol, initURL,
//                  revalidateOrigin, and any plain requestMeta field)
// The request target is the invocation path + query Ferry chose.
// Control requests (no x-ferry-entry): GET /__ferry/health,
// POST /__ferry/drain (answers once pending waitUntil work settled),
// POST /__ferry/terminate (the process sends itself SIGTERM).

const http = require('node:http')
const path = require('node:path')
const { createRequire } = require('node:module')

const socketPath = process.env.FERRY_BRIDGE_SOCKET
const workerId = process.env.FERRY_WORKER_ID || '0'
const projectDir = process.cwd()
const manualSignals = Boolean(process.env.NEXT_MANUAL_SIG_HANDLE)

if (!socketPath) {
  console.error('[ferry bridge] FERRY_BRIDGE_SOCKET is not set')
  process.exit(2)
}

// Resolve modules from the app, not from the bridge's temp location.
const projectRequire = createRequire(path.join(projectDir, 'package.json'))

function optionalRequire(id) {
  try {
    return projectRequire(id)
  } catch (err) {
    if (err && err.code === 'MODULE_NOT_FOUND' && String(err.message).includes(id)) {
      return undefined
    }
    throw err
  }
}

// `next start` loads .env files (production mode) before anything else.
if (process.env.FERRY_BRIDGE_LOAD_ENV !== '0') {
  try {
    const nextEnv = optionalRequire('@next/env')
    if (nextEnv && typeof nextEnv.loadEnvConfig === 'function') {
      nextEnv.loadEnvConfig(projectDir, false, { info() {}, error: console.error }, true)
    }
  } catch (err) {
    console.error('[ferry bridge] loading .env files failed:', err)
  }
}

// Installs the AsyncLocalStorage globals and the other environment patches the
// compiled entrypoints expect (same as next-server does on start).
const nextEnvironment = optionalRequire('next/dist/server/node-environment')
if (!nextEnvironment) {
  console.error('[ferry bridge] next/dist/server/node-environment not found; running without it')
}

// Renders Ferry makes to fill its own cache (meta `ferryOwnedEntry`: pages of dynamic routes
// rendered on demand) run in this context: Ferry stores the result, shared by every worker and
// instance, so Ferry's cache handler (js/cache-handler/incremental.cjs) does not keep a second,
// per-worker copy in Next's file-system cache (which a client requesting /blog/<random> would
// otherwise grow without bound).
const { AsyncLocalStorage } = require('node:async_hooks')
const ferryOwnedRender = new AsyncLocalStorage()
globalThis.__ferryOwnedRender = ferryOwnedRender

// ---- cache invalidation reaches Ferry ------------------------------------------
// Ferry serves prerendered pages from its own cache. When app code revalidates tags or
// paths (revalidateTag / revalidatePath lower to `_N_T_` tags), Next's IncrementalCache in
// this process learns of it; we forward the tags to Ferry before the call resolves, so the
// response that follows (e.g. a Server Action's) already sees the invalidation.
// The entrypoints use IncrementalCache classes from Next's precompiled route-module bundles,
// not from node_modules, so we cannot patch one class up front. Every route module publishes
// the cache it creates as `globalThis.__incrementalCache`; a setter there patches each
// distinct class the first time one of its instances appears.
const forwardsInFlight = new Set()

function forwardRevalidations() {
  const url = process.env.FERRY_CONTROL_URL
  const token = process.env.FERRY_CONTROL_TOKEN
  if (!url || !token) return
  const patched = new WeakSet()
  const patch = (cache) => {
    const proto = cache && Object.getPrototypeOf(cache)
    if (!proto || patched.has(proto) || typeof proto.revalidateTag !== 'function') return
    patched.add(proto)
    const original = proto.revalidateTag
    proto.revalidateTag = function ferryRevalidateTag(tags, ...rest) {
      // Tracked from the call on: the response that follows waits for it (endAfterInvalidations).
      const call = forwardRevalidateTag.call(this, original, tags, rest)
      forwardsInFlight.add(call)
      call.finally(() => forwardsInFlight.delete(call)).catch(() => {})
      return call
    }
  }
  // Next's revalidateTag, then the tags to Ferry (unless Ferry's cache handler sent them).
  async function forwardRevalidateTag(original, tags, rest) {
    const result = await original.call(this, tags, ...rest)
    // Ferry's own cache handler (js/cache-handler) has forwarded them already.
    if (globalThis.__ferryCacheHandler) return result
    const list = (Array.isArray(tags) ? tags : [tags]).filter((t) => typeof t === 'string')
    if (list.length > 0) {
      // Next's own cache handler: without durations (revalidatePath, revalidateTag without a
      // profile) the entries expire now and the next request renders; with durations they go
      // stale now and expire `durations.expire` seconds later.
      const durations = rest[0]
      const expire = durations && typeof durations === 'object' ? durations.expire : 0
      try {
        await fetch(`${url}/revalidate-tags`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'x-ferry-control-token': token },
          body: JSON.stringify({ tags: list, expire: expire === 0 }),
        })
      } catch (err) {
        console.error('[ferry bridge] could not forward revalidated tags to Ferry:', err)
      }
    }
    return result
  }
  let current
  Object.defineProperty(globalThis, '__incrementalCache', {
    configurable: true,
    get: () => current,
    set: (value) => {
      patch(value)
      current = value
    },
  })
}
forwardRevalidations()

// Invalidations made while handling a request (a route handler's or Server Action's
// revalidatePath / revalidateTag) are sent to Ferry before that response ends, as next start
// applies them in-process before its response completes: the request that follows must not be
// served the old entry. Both paths count: Ferry's cache handler (js/cache-handler/client.cjs
// publishes its POSTs in flight) and the forwarding above for Next's own handler. Bounded: a
// Ferry that does not answer delays a response by at most INVALIDATION_WAIT_MS.
const INVALIDATION_WAIT_MS = 5000

function invalidationsInFlight() {
  const fromHandler = globalThis.__ferryRevalidationsInFlight ? globalThis.__ferryRevalidationsInFlight() : undefined
  if (!fromHandler && forwardsInFlight.size === 0) return undefined
  let timer
  const bound = new Promise((resolve) => {
    timer = setTimeout(resolve, INVALIDATION_WAIT_MS)
  })
  return Promise.race([Promise.allSettled([fromHandler, ...forwardsInFlight]), bound]).finally(() => clearTimeout(timer))
}

function endAfterInvalidations(...args) {
  const pending = invalidationsInFlight()
  if (!pending) return http.ServerResponse.prototype.end.apply(this, args)
  pending.then(() => http.ServerResponse.prototype.end.apply(this, args))
  return this
}

// Like `next start`: log uncaught errors, keep serving.
process.on('uncaughtException', (err) => {
  console.error('uncaughtException:', err)
})
try {
  const handlers = optionalRequire('next/dist/server/lib/process-error-handlers')
  if (handlers && !handlers.isUnhandledRejectionListenerRegistered()) {
    handlers.registerUnhandledRejectionListener()
  }
} catch {
  process.on('unhandledRejection', (err) => console.error('unhandledRejection:', err))
}

// ---- waitUntil tracking ------------------------------------------------------

const pending = new Set()
let drainWaiters = []

function waitUntil(promise) {
  if (!promise || typeof promise.then !== 'function') return
  const tracked = Promise.resolve(promise)
    .catch((err) => console.error('[ferry bridge] waitUntil work failed:', err))
    .finally(() => {
      pending.delete(tracked)
      if (pending.size === 0) {
        const waiters = drainWaiters
        drainWaiters = []
        for (const w of waiters) w()
      }
    })
  pending.add(tracked)
}

function drained() {
  if (pending.size === 0) return Promise.resolve()
  return new Promise((resolve) => drainWaiters.push(resolve))
}

// ---- entry loading -------------------------------------------------------------

const entries = new Map()

function loadEntry(entry) {
  // Keyed by the entry as Ferry names it: no path work per request.
  let mod = entries.get(entry)
  if (mod) return mod
  const file = path.isAbsolute(entry) ? entry : path.join(projectDir, entry)
  const loaded = require(file)
  mod = {
    node: pickHandler(loaded, ['handler']),
    middleware: pickHandler(loaded, ['handler', 'middleware', 'proxy']),
  }
  entries.set(entry, mod)
  return mod
}

// ---- Edge-runtime entrypoints ---------------------------------------------------------
// `middleware.ts` (edge unless it exports `runtime = 'nodejs'`) and `runtime = 'edge'` routes are
// chunks for Next's edge sandbox, not Node modules: next start evaluates them in a vm context with
// the edge globals (next/dist/server/web/sandbox) and calls what they register in `_ENTRIES`. The
// bridge does the same with Next's own sandbox and calls the entry's `handler(request, ctx)` (the
// adapter's edge interface). Which entries are edge: `<distDir>/server/middleware-manifest.json`.

const edgeEntries = new Map()

/** The middleware-manifest definition whose chunks include `file`, with its distDir; or null. */
function edgeDefinition(file) {
  const fs = require('node:fs')
  for (let dir = path.dirname(file); dir !== path.dirname(dir); dir = path.dirname(dir)) {
    const manifestPath = path.join(dir, 'server', 'middleware-manifest.json')
    if (!fs.existsSync(manifestPath)) continue
    const manifest = JSON.parse(fs.readFileSync(manifestPath, 'utf8'))
    const rel = path.relative(dir, file).split(path.sep).join('/')
    const defs = [...Object.values(manifest.middleware || {}), ...Object.values(manifest.functions || {})]
    const def = defs.find((d) => d.entrypoint === rel || (d.files || []).includes(rel))
    return def ? { distDir: dir, def } : null
  }
  return null
}

/** `{ middleware, node: undefined }` for an edge entry (evaluated once per worker), else null. */
function loadEdgeEntry(entry) {
  let loading = edgeEntries.get(entry)
  if (loading === undefined) {
    const file = path.isAbsolute(entry) ? entry : path.join(projectDir, entry)
    const found = edgeDefinition(file)
    loading = found ? evaluateEdgeEntry(found.distDir, found.def) : null
    edgeEntries.set(entry, loading)
  }
  return loading
}

async function evaluateEdgeEntry(distDir, def) {
  const sandbox = projectRequire('next/dist/server/web/sandbox')
  const abs = (binding) => ({ ...binding, filePath: path.join(distDir, binding.filePath) })
  // What next-server's getEdgeFunctionInfo hands its sandbox.
  const runtime = await sandbox.getRuntimeContext({
    name: def.name,
    paths: (def.files || []).map((f) => path.join(distDir, f)),
    edgeFunctionEntry: { ...def, wasm: (def.wasm || []).map(abs), assets: (def.assets || []).map(abs) },
    distDir,
    useCache: true,
  })
  const registered = await runtime.context._ENTRIES[`middleware_${def.name}`]
  const handler = pickHandler(registered, ['handler'])
  if (!handler) throw new Error(`edge entry ${def.name} registers no handler(request, ctx)`)
  return { middleware: handler, node: undefined, edge: handler }
}

function pickHandler(loaded, names) {
  for (const name of names) {
    if (loaded && typeof loaded[name] === 'function') return loaded[name]
    const d = loaded && loaded.default
    if (d && typeof d[name] === 'function') return d[name]
  }
  return undefined
}

// ---- requestMeta -------------------------------------------------------------------

function formatHostname(h) {
  return h.includes(':') && !h.startsWith('[') ? `[${h}]` : h
}

// `ferryQuery`: the routed query as ordered [key, value] pairs (JSON objects in Ferry's
// meta lose their key order); next-server's `query` requestMeta is a ParsedUrlQuery object,
// repeated keys as arrays, keys in routing order. A pair [key, value, true] is a key next start
// holds as an array even with one value (a catch-all param a rewrite appended: `path: ['x']`).
function queryObject(pairs) {
  const query = Object.create(null)
  for (const [k, v, array] of pairs) {
    if (!Object.prototype.hasOwnProperty.call(query, k)) query[k] = array === true ? [v] : v
    else if (Array.isArray(query[k])) query[k].push(v)
    else query[k] = [query[k], v]
  }
  return query
}

function buildRequestMeta(req, meta) {
  const { port, protocol, revalidateOrigin, ferryQuery, ...rest } = meta
  const proto = protocol || 'http'
  const requestMeta = { relativeProjectDir: '.', ...rest }
  if (Array.isArray(ferryQuery)) requestMeta.query = queryObject(ferryQuery)
  if (!requestMeta.initURL) {
    // Same shape as next start: <proto>://<hostname>:<port><url>.
    const host = formatHostname(meta.hostname || 'localhost')
    requestMeta.initURL = port
      ? `${proto}://${host}:${port}${req.url}`
      : `${proto}://${req.headers.host || host}${req.url}`
  }
  if (!requestMeta.initProtocol) requestMeta.initProtocol = proto
  // A 404 from `notFound` goes back to Ferry, which renders its own 404 page.
  requestMeta.render404 = async (_req, res) => {
    if (res.headersSent) {
      res.end()
      return
    }
    res.statusCode = 404
    res.setHeader('x-ferry-not-found', '1')
    res.setHeader('content-type', 'text/plain; charset=utf-8')
    res.end('This page could not be found')
  }
  if (revalidateOrigin) {
    // On-demand revalidation (res.revalidate) goes back through Ferry's front.
    requestMeta.revalidate = async ({ urlPath, headers, revalidateHeaders, opts }) => {
      const h = new Headers()
      for (const [k, v] of Object.entries(headers || revalidateHeaders || {})) {
        if (Array.isArray(v)) for (const x of v) h.append(k, x)
        else if (v !== undefined) h.set(k, String(v))
      }
      const res = await fetch(new URL(urlPath, revalidateOrigin), { method: 'HEAD', headers: h, redirect: 'manual' })
      const cache = res.headers.get('x-nextjs-cache')
      if ((cache || '').toUpperCase() !== 'REVALIDATED' && res.status !== 200 &&
          !(res.status === 404 && opts && opts.unstable_onlyGenerated)) {
        throw new Error(`Invalid response ${res.status}`)
      }
    }
  }
  return requestMeta
}

// ---- /_next/image (x-ferry-kind: IMAGE) ------------------------------------------
// next start's image optimizer, run with Next's own code: the same request flow as
// next-server's handleNextImageRequest + imageOptimizer (validateParams, ResponseCache over
// ImageOptimizerCache, fetchExternalImage / fetchInternalImage, sendResponse). Differences:
// - the config is the build's (`.next/required-server-files.json`), as the entrypoints use;
// - the disk cache lives in `$FERRY_CACHE_DIR/cache/images` (the bundle is immutable; Ferry
//   sets FERRY_CACHE_DIR), else `<os tmpdir>/ferry-cache/cache/images`;
// - a local `url` is fetched from Ferry's public server over loopback (FERRY_CONTROL_URL's origin),
//   with no client headers, like next-server's internal request. The fetch carries
//   `ferry-image-fetch: 1` so Ferry refuses to route it to /_next/image again (a rewrite
//   pointing back at the optimizer cannot loop).
let imageRuntime

function loadImageRuntime() {
  if (imageRuntime) return imageRuntime
  const fs = require('node:fs')
  const os = require('node:os')
  const rsf = JSON.parse(fs.readFileSync(path.join(projectDir, '.next', 'required-server-files.json'), 'utf8'))
  const nextConfig = rsf.config
  const optimizer = projectRequire('next/dist/server/image-optimizer')
  const responseCache = projectRequire('next/dist/server/response-cache')
  const { RouteKind } = projectRequire('next/dist/server/route-kind')
  const { getExtension } = projectRequire('next/dist/server/serve-static')
  // ImageOptimizerCache keeps its files in `<distDir>/cache/images`, as under next start.
  const cacheRoot = process.env.FERRY_CACHE_DIR || path.join(os.tmpdir(), 'ferry-cache')
  imageRuntime = {
    nextConfig,
    optimizer,
    CachedRouteKind: responseCache.CachedRouteKind,
    RouteKind,
    getExtension,
    cache: new optimizer.ImageOptimizerCache({ distDir: cacheRoot, nextConfig }),
    responseCache: new responseCache.default({ minimalMode: false, route: 'image' }),
    origin: process.env.FERRY_CONTROL_URL
      ? new URL(process.env.FERRY_CONTROL_URL).origin
      : `http://127.0.0.1:${process.env.PORT || 3000}`,
    agent: new http.Agent({ keepAlive: true }),
  }
  return imageRuntime
}

// next-server's handleInternalReq: run the image request through the server's own routing.
// Here that is Ferry's public server; the mocked response gets what it answered.
function fetchFromFerry(rt, mockReq, mockRes) {
  return new Promise((resolve, reject) => {
    // No client headers, as next-server's mocked request; the marker stops a loop in Ferry.
    const headers = { 'ferry-image-fetch': '1' }
    const upstream = http.request(new URL(mockReq.url, rt.origin), { method: mockReq.method || 'GET', headers, agent: rt.agent }, (res) => {
      mockRes.statusCode = res.statusCode
      for (const [k, v] of Object.entries(res.headers)) {
        if (v !== undefined) mockRes.setHeader(k, v)
      }
      res.on('data', (chunk) => mockRes.write(chunk))
      res.on('end', () => {
        mockRes.end()
        resolve()
      })
      res.on('error', reject)
    })
    upstream.on('error', reject)
    upstream.end()
  })
}

// Ferry's own optimizer cannot decode some sources (AVIF): it sends their bytes here
// (`meta.ferryImageTransform` = { contentType, width, quality }, set by Ferry only) and keeps
// the rest of the request (fetch, validation, cache, headers). next's imageOptimizer transforms
// them (sharp, with the build's experimental.imgOpt* settings) into the type Ferry negotiated;
// 200 with the bytes, or 500 with sharp's error (a missing sharp included): Ferry then serves
// the source as it is, as next does.
async function transformImage(req, res, t) {
  const { nextConfig, optimizer } = loadImageRuntime()
  const chunks = []
  for await (const chunk of req) chunks.push(chunk)
  const upstream = { buffer: Buffer.concat(chunks), contentType: null, cacheControl: null, etag: '' }
  const params = { href: '', width: Number(t.width), quality: Number(t.quality), mimeType: String(t.contentType) }
  const out = await optimizer.imageOptimizer(upstream, params, nextConfig, { isDev: false, silent: true })
  if (out.error || out.contentType !== params.mimeType) {
    plain(res, 500, String((out.error && out.error.message) || out.error || `not transformed: ${out.contentType}`))
    return
  }
  res.statusCode = 200
  res.setHeader('content-type', out.contentType)
  res.end(out.buffer)
}

async function handleImage(req, res, meta) {
  if (meta && meta.ferryImageTransform) return transformImage(req, res, meta.ferryImageTransform)
  const rt = loadImageRuntime()
  const { nextConfig, optimizer } = rt
  const imagesConfig = nextConfig.images
  const query = require('node:url').parse(req.url || '/', true).query
  const paramsResult = optimizer.ImageOptimizerCache.validateParams(req, query, nextConfig, false)
  if ('errorMessage' in paramsResult) {
    res.statusCode = 400
    res.end(paramsResult.errorMessage)
    return
  }
  const cacheKey = optimizer.ImageOptimizerCache.getCacheKey(paramsResult)
  try {
    const cacheEntry = await rt.responseCache.get(
      cacheKey,
      async ({ previousCacheEntry }) => {
        const { href } = paramsResult
        const upstream = paramsResult.isAbsolute
          ? await optimizer.fetchExternalImage(href, imagesConfig.dangerouslyAllowLocalIP, imagesConfig.maximumResponseBody, imagesConfig.maximumRedirects)
          : await optimizer.fetchInternalImage(href, req, res, imagesConfig.maximumResponseBody, (mockReq, mockRes) => {
              if (mockReq.url === req.url) throw new Error('Invariant attempted to optimize _next/image itself')
              return fetchFromFerry(rt, mockReq, mockRes)
            })
        const { buffer, contentType, maxAge, upstreamEtag, etag } = await optimizer.imageOptimizer(upstream, paramsResult, nextConfig, {
          isDev: false,
          previousCacheEntry,
        })
        return {
          value: { kind: rt.CachedRouteKind.IMAGE, buffer, etag, extension: rt.getExtension(contentType), upstreamEtag },
          cacheControl: { revalidate: maxAge, expire: undefined },
        }
      },
      { routeKind: rt.RouteKind.IMAGE, incrementalCache: rt.cache, isFallback: false },
    )
    if (cacheEntry !== null && 'error' in cacheEntry) throw cacheEntry.error
    if (!cacheEntry || !cacheEntry.value || cacheEntry.value.kind !== rt.CachedRouteKind.IMAGE) {
      throw new Error('invariant did not get entry from image response cache')
    }
    const xCache = cacheEntry.isMiss ? 'MISS' : cacheEntry.isStale ? 'STALE' : 'HIT'
    const maxAge = (cacheEntry.cacheControl && cacheEntry.cacheControl.revalidate) || 0
    optimizer.sendResponse(req, res, paramsResult.href, cacheEntry.value.extension, cacheEntry.value.buffer,
      cacheEntry.value.etag, paramsResult.isStatic, xCache, imagesConfig, maxAge, false)
  } catch (err) {
    if (err instanceof optimizer.ImageError) {
      res.statusCode = err.statusCode
      res.end(err.message)
      return
    }
    throw err
  }
}
// ---- end of /_next/image -------------------------------------------------------------

// ---- request handling ------------------------------------------------------------

const INTERNAL = ['x-ferry-entry', 'x-ferry-kind', 'x-ferry-meta']
let shuttingDown = false

function plain(res, status, body, extra) {
  if (res.headersSent) {
    res.destroy()
    return
  }
  res.statusCode = status
  res.setHeader('content-type', 'text/plain; charset=utf-8')
  if (extra) for (const [k, v] of Object.entries(extra)) res.setHeader(k, v)
  res.end(body)
}

async function handleControl(req, res) {
  const url = req.url || '/'
  if (url === '/__ferry/health') {
    plain(res, 200, 'ok')
  } else if (url === '/__ferry/drain' && req.method === 'POST') {
    await drained()
    plain(res, 200, 'drained')
  } else if (url === '/__ferry/terminate' && req.method === 'POST') {
    plain(res, 202, 'terminating')
    // A real signal, so an app's own process.on('SIGTERM') handler runs.
    setImmediate(() => process.kill(process.pid, 'SIGTERM'))
  } else {
    plain(res, 404, 'unknown control request')
  }
}

async function handleEntry(req, res, entry) {
  const kind = String(req.headers['x-ferry-kind'] || '')
  let meta = {}
  const rawMeta = req.headers['x-ferry-meta']
  if (rawMeta) {
    try {
      meta = JSON.parse(String(rawMeta)) || {}
    } catch {
      plain(res, 400, 'invalid x-ferry-meta', { 'x-ferry-error': 'meta' })
      return
    }
  }
  for (const h of INTERNAL) delete req.headers[h]
  // rawHeaders still carries them; keep it consistent with req.headers.
  const raw = []
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    if (!INTERNAL.includes(req.rawHeaders[i].toLowerCase())) raw.push(req.rawHeaders[i], req.rawHeaders[i + 1])
  }
  // The client's Connection header is hop-by-hop between Ferry and this process, so it comes
  // in the meta; app code sees it as under next start (`connection: close`, `keep-alive`).
  const { ferryConnection } = meta
  delete meta.ferryConnection
  if (typeof ferryConnection === 'string' && ferryConnection) {
    req.headers.connection = ferryConnection
    raw.push('Connection', ferryConnection)
  }
  req.rawHeaders = raw

  if (kind === 'IMAGE') {
    await handleImage(req, res, meta)
    return
  }
  const fused = meta.ferryMiddleware
  delete meta.ferryMiddleware
  if (fused && !(await runFusedMiddleware(req, res, fused))) return
  const mod = (await loadEdgeEntry(entry)) || loadEntry(entry)
  if (kind === 'MIDDLEWARE') {
    if (!mod.middleware) throw new Error(`entry ${entry} exports no middleware handler`)
    await runMiddleware(req, res, mod.middleware, meta)
    return
  }
  if (mod.edge) {
    // An edge-runtime route handler or page: the same web-handler call, its Response streamed to
    // the client as it is.
    await runMiddleware(req, res, mod.edge, meta, { toClient: true })
    return
  }
  if (!mod.node) throw new Error(`entry ${entry} exports no handler(req, res, ctx)`)
  // PPR resume (meta `ferryResume`): the body is the page's postponed state, not the client's.
  const postponed = meta.ferryResume ? await readPostponed(req) : undefined
  delete meta.ferryResume
  // Regeneration of a cached page (meta `ferryCacheEntry`): answer with the cache entry itself.
  const captureEntry = meta.ferryCacheEntry === true
  delete meta.ferryCacheEntry
  const requestMeta = buildRequestMeta(req, meta)
  if (postponed !== undefined) requestMeta.postponed = postponed
  if (captureEntry) requestMeta.onCacheEntry = (entry) => sendCacheEntry(res, entry)
  const owned = meta.ferryOwnedEntry === true
  delete meta.ferryOwnedEntry
  const pagesEntry = meta.ferryPagesEntry === true
  delete meta.ferryPagesEntry
  // Like router-server's invokeRender({ invokeStatus }): an error page rendered for a status
  // (405, 416 ...) starts with it, and `_error`'s getInitialProps reads it from res.statusCode.
  if (Number.isInteger(meta.invokeStatus)) res.statusCode = meta.invokeStatus
  if (owned) {
    // An object store: Ferry's cache handler leaves a PAGES entry there (`ferryPagesEntry`).
    const store = {}
    const render = () => mod.node(req, res, { waitUntil, requestMeta })
    if (pagesEntry) await ferryOwnedRender.run(store, () => sendPagesEntry(res, render, store))
    else await ferryOwnedRender.run(store, render)
    return
  }
  await mod.node(req, res, { waitUntil, requestMeta })
}

// Ferry regenerating a cached app page (a PPR shell above all): the adapter docs' `onCacheEntry`
// hands over the response cache's fresh entry (html, rscData, postponed, segmentData, headers,
// status, cacheControl), the same one next start stores, so the shell and its postponed state
// come from one render. The handler then writes nothing itself; the bridge answers with the
// entry as a frame: `x-ferry-cache-entry: 1`, one JSON line (status, headers, revalidate,
// expire, and the byte length of each part), a newline, then the parts in that order: html,
// postponed (if any), rsc (if any), each segment.
async function sendCacheEntry(res, entry) {
  const value = entry && entry.value
  if (!value || value.kind !== 'APP_PAGE') return false
  const html = Buffer.from(value.html ? await value.html.toUnchunkedString(true) : '', 'utf8')
  const postponed = typeof value.postponed === 'string' ? Buffer.from(value.postponed, 'utf8') : undefined
  const rsc = value.rscData ? Buffer.from(value.rscData) : undefined
  const segments = []
  if (value.segmentData) {
    for (const [name, data] of value.segmentData) segments.push([name, Buffer.from(data)])
  }
  const cacheControl = entry.cacheControl || {}
  const meta = {
    status: value.status || 200,
    headers: value.headers || {},
    // A number of seconds, or null: never revalidates.
    revalidate: typeof cacheControl.revalidate === 'number' ? cacheControl.revalidate : null,
    expire: typeof cacheControl.expire === 'number' ? cacheControl.expire : null,
    html: html.length,
    postponed: postponed ? postponed.length : null,
    rsc: rsc ? rsc.length : null,
    segments: segments.map(([name, data]) => [name, data.length]),
  }
  const parts = [Buffer.from(JSON.stringify(meta) + '\n'), html]
  if (postponed) parts.push(postponed)
  if (rsc) parts.push(rsc)
  for (const [, data] of segments) parts.push(data)
  const body = Buffer.concat(parts)
  res.statusCode = 200
  res.setHeader('x-ferry-cache-entry', '1')
  res.setHeader('content-type', 'application/octet-stream')
  res.setHeader('content-length', body.length)
  res.end(body)
  return true
}

// Ferry rendering a pages-router page for its own cache (meta `ferryPagesEntry`, with
// `ferryOwnedEntry`; the request is the page's `_next/data` JSON): next's pages handler renders
// HTML and data JSON in one render into one PAGES response-cache entry, which Ferry's cache
// handler hands over here before the handler answers. The handler's answer (the data JSON, its
// headers and Cache-Control) is held back and sent after the entry's HTML: `x-ferry-pages-entry:
// 1`, one JSON line (status, the entry's headers, the HTML's byte length), a newline, the HTML,
// then the data JSON body. `notFound` (an entry without a value) is framed the same way with
// `notFound: true` and no HTML. Without an entry (a redirect, an uncacheable or failed render)
// the handler's answer goes out as it was.
async function sendPagesEntry(res, render, store) {
  const chunks = []
  const original = { write: res.write, end: res.end, writeHead: res.writeHead }
  let ended = false
  let markEnded
  const endCalled = new Promise((resolve) => {
    markEnded = resolve
  })
  const push = (chunk, encoding) => {
    if (chunk == null || typeof chunk === 'function') return
    chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk, typeof encoding === 'string' ? encoding : 'utf8'))
  }
  res.writeHead = function (status, reason, headers) {
    if (reason && typeof reason === 'object') headers = reason
    res.statusCode = status
    if (headers && !Array.isArray(headers)) for (const [k, v] of Object.entries(headers)) res.setHeader(k, v)
    return res
  }
  res.write = function (chunk, encoding, cb) {
    push(chunk, encoding)
    const done = typeof encoding === 'function' ? encoding : cb
    if (typeof done === 'function') process.nextTick(done)
    return true
  }
  res.end = function (chunk, encoding, cb) {
    push(chunk, encoding)
    ended = true
    markEnded()
    const done = [chunk, encoding, cb].find((f) => typeof f === 'function')
    if (done) process.nextTick(done)
    return res
  }
  try {
    await render()
    // A handler may finish its answer after its promise resolved.
    if (!ended) await endCalled
  } finally {
    Object.assign(res, original)
  }
  const body = Buffer.concat(chunks)
  const entry = store.entry
  const value = entry && entry.value
  if (entry && value === null && res.statusCode === 404) {
    // `notFound`, cached by next like a page: the data JSON answer is next's own
    // (`{"notFound":true}`, its Cache-Control); the HTML is the 404 page, which Ferry renders.
    const head = Buffer.from(JSON.stringify({ status: 404, headers: {}, html: 0, notFound: true }) + '\n')
    const out = Buffer.concat([head, body])
    res.setHeader('x-ferry-pages-entry', '1')
    res.setHeader('content-length', out.length)
    res.end(out)
    return
  }
  if (!value || res.statusCode !== 200) {
    res.end(body)
    return
  }
  const html = Buffer.from(typeof value.html === 'string' ? value.html : String(value.html || ''), 'utf8')
  const head = Buffer.from(JSON.stringify({ status: value.status || 200, headers: value.headers || {}, html: html.length }) + '\n')
  const out = Buffer.concat([head, html, body])
  res.setHeader('x-ferry-pages-entry', '1')
  res.setHeader('content-length', out.length)
  res.end(out)
}

// PPR: Ferry served the static shell from its cache and asks for the rest. The adapter docs'
// resume protocol, in-process: `requestMeta.postponed` makes the app-page handler render only
// the postponed Suspense boundaries. The request stays the client's (method, headers): the
// body's framing headers are Ferry's and are removed so the page sees what next start shows it.
async function readPostponed(req) {
  const chunks = []
  for await (const chunk of req) chunks.push(chunk)
  delete req.headers['content-length']
  delete req.headers['transfer-encoding']
  const raw = []
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    const name = req.rawHeaders[i].toLowerCase()
    if (name !== 'content-length' && name !== 'transfer-encoding') raw.push(req.rawHeaders[i], req.rawHeaders[i + 1])
  }
  req.rawHeaders = raw
  return Buffer.concat(chunks).toString('utf8')
}

// Ferry sent a page with the middleware (proxy) riding along (meta `ferryMiddleware`,
// crates/ferry-server/src/pipeline/fused.rs): one trip where next start makes none. The
// middleware runs first, as its own invocation would. Only after a plain `NextResponse.next()`
// does the page run (true), its response naming the middleware's headers for Ferry's router;
// any other answer is sent as the middleware's and Ferry routes on from it (false).
async function runFusedMiddleware(req, res, fused) {
  const mod = loadEntry(fused.entry)
  if (!mod.middleware) throw new Error(`entry ${fused.entry} exports no middleware handler`)
  const meta = fused.meta || {}
  delete meta.ferryConnection
  const response = await callMiddleware(req, res, mod.middleware, meta)
  if (response && isPlainNext(response)) {
    const pairs = [...response.headers]
    res.setHeader('x-ferry-middleware', JSON.stringify(pairs))
    requestWithMiddlewareHeaders(req, pairs)
    return true
  }
  res.setHeader('x-ferry-middleware-answer', '1')
  await sendMiddlewareResponse(res, response)
  return false
}

/** `NextResponse.next()` and nothing that changes routing: no rewrite, redirect, request
 * header override, cookie or body. */
function isPlainNext(response) {
  if (response.status !== 200 || response.body || response.headers.get('x-middleware-next') !== '1') return false
  for (const name of response.headers.keys()) {
    if (name === 'location' || name === 'set-cookie') return false
    if (name.startsWith('x-middleware-') && name !== 'x-middleware-next') return false
  }
  return true
}

/** resolve-routes after a plain `next()`: every header of the middleware's response is set on the
 * request too (Ferry's router does the same, `ferry_router` middleware.rs, and checks it). */
function requestWithMiddlewareHeaders(req, pairs) {
  for (const [name, rawValue] of pairs) {
    if (name === 'x-middleware-next' || name === 'content-length') continue
    const value = rawValue.replace(/^[\t\n\r ]+|[\t\n\r ]+$/g, '')
    const raw = []
    let found = false
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      if (req.rawHeaders[i].toLowerCase() !== name) raw.push(req.rawHeaders[i], req.rawHeaders[i + 1])
      else if (!found) {
        found = true
        raw.push(req.rawHeaders[i], value)
      }
    }
    if (!found) raw.push(name, value)
    req.rawHeaders = raw
    req.headers[name] = value
  }
}

async function runMiddleware(req, res, handler, meta, { toClient = false } = {}) {
  const response = await callMiddleware(req, res, handler, meta)
  await sendMiddlewareResponse(res, response, toClient)
}

/** Calls a web handler (middleware, edge route) with the request; its Response or nothing. */
async function callMiddleware(req, res, handler, meta) {
  const { port, protocol } = meta
  const proto = protocol || 'http'
  const host = formatHostname(meta.hostname || 'localhost')
  const url = meta.initURL || (port ? `${proto}://${host}:${port}${req.url}` : `${proto}://${req.headers.host || host}${req.url}`)
  const headers = new Headers()
  for (const [k, v] of Object.entries(req.headers)) {
    if (Array.isArray(v)) for (const x of v) headers.append(k, x)
    else if (v !== undefined) headers.set(k, v)
  }
  const abort = new AbortController()
  res.on('close', () => {
    if (!res.writableFinished) abort.abort()
  })
  const hasBody = req.method !== 'GET' && req.method !== 'HEAD'
  // Read the body whole (Ferry has buffered it already, within its middleware body limit). A
  // stream the middleware never reads would leave the rest of the body unread on this
  // keep-alive connection and wedge it for the next request.
  let body
  if (hasBody) {
    const chunks = []
    for await (const chunk of req) chunks.push(chunk)
    body = Buffer.concat(chunks)
  }
  // No `signal` on the Request: the entry's handler (next's middleware template) reads only its
  // url, method, headers and body and hands the middleware `ctx.signal` (below). A Request given a
  // signal creates its own and follows ours, ~35 µs of worker CPU per middleware call.
  const request = new Request(url, {
    method: req.method,
    headers,
    body,
  })
  const { port: _p, protocol: _q, initURL: _i, revalidateOrigin: _r, ...rest } = meta
  return handler(request, {
    waitUntil,
    signal: abort.signal,
    requestMeta: { relativeProjectDir: '.', ...rest },
  })
}

/** Writes a web handler's Response: for a middleware, as-is for Ferry to interpret. */
async function sendMiddlewareResponse(res, response, toClient = false) {
  if (!response) {
    plain(res, 500, 'middleware returned no response')
    return
  }
  // The middleware's response as-is: Ferry interprets x-middleware-* itself. Node would add a
  // `Date` of its own, which Ferry would take for a middleware header (next start runs the
  // middleware in-process and never sees one).
  if (!toClient) res.sendDate = false
  res.statusCode = response.status
  const setCookies = typeof response.headers.getSetCookie === 'function' ? response.headers.getSetCookie() : []
  for (const [k, v] of response.headers) {
    if (k === 'set-cookie') continue
    res.setHeader(k, v)
  }
  if (setCookies.length) res.setHeader('set-cookie', setCookies)
  if (!response.body) {
    res.end()
    return
  }
  const reader = response.body.getReader()
  try {
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      if (value && value.byteLength && !res.write(value)) {
        await new Promise((resolve) => {
          res.once('drain', resolve)
          res.once('close', resolve)
        })
        if (res.destroyed) break
      }
    }
    res.end()
  } finally {
    reader.releaseLock()
  }
}

// Next's response writer calls `res.flushHeaders()` before the first body chunk. Alone, that
// is one write for the head and more for the body, and each write wakes Ferry (on a shared core,
// a context switch each). Corked until this turn of the event loop ends, the head leaves with
// the body written meanwhile (a small response whole, a stream's first chunks) in one write;
// `end()` uncorks at once, and a stream's later chunks go out as written.
function uncork(socket) {
  socket.uncork()
}

function flushHeadersCorked() {
  const socket = this.socket
  if (socket && !socket.destroyed && !this.headersSent) {
    socket.cork()
    setImmediate(uncork, socket)
  }
  return http.ServerResponse.prototype.flushHeaders.call(this)
}

const server = http.createServer(async (req, res) => {
  res.flushHeaders = flushHeadersCorked
  const entry = req.headers['x-ferry-entry']
  if (entry) res.end = endAfterInvalidations
  if (!entry) {
    try {
      await handleControl(req, res)
    } catch (err) {
      console.error('[ferry bridge] control request failed:', err)
      plain(res, 500, 'control request failed')
    }
    return
  }
  try {
    // Ferry percent-encodes the entry path so any file name fits in a header.
    await handleEntry(req, res, decodeURIComponent(String(entry)))
  } catch (err) {
    console.error(`[ferry bridge] ${req.method} ${req.url} (${entry}) failed:`, err)
    plain(res, 500, 'Internal Server Error', { 'x-ferry-error': 'handler' })
  }
})

// Ferry keeps connections open and reuses them; it owns all timeouts.
server.keepAliveTimeout = 0
server.requestTimeout = 0
server.headersTimeout = 0

function closeServer() {
  return new Promise((resolve) => {
    server.close(() => resolve())
    if (typeof server.closeIdleConnections === 'function') server.closeIdleConnections()
  })
}

async function gracefulExit(code) {
  if (shuttingDown) return
  shuttingDown = true
  await closeServer()
  await drained()
  process.exit(code)
}

if (!manualSignals) {
  process.on('SIGTERM', () => gracefulExit(0))
  process.on('SIGINT', () => gracefulExit(0))
}

// Watchdog: Ferry holds our stdin; when Ferry goes away, so do we.
process.stdin.on('end', () => process.exit(0))
process.stdin.on('error', () => process.exit(0))
process.stdin.resume()

function preload() {
  const list = (process.env.FERRY_BRIDGE_PRELOAD || '').split('\n').filter(Boolean)
  for (const entry of list) {
    try {
      loadEntry(entry)
    } catch (err) {
      console.error(`[ferry bridge] preloading ${entry} failed:`, err)
    }
  }
}

preload()
server.listen(socketPath, () => {
  if (process.env.FERRY_BRIDGE_DEBUG) console.error(`[ferry bridge ${workerId}] listening on ${socketPath}`)
})
server.on('error', (err) => {
  console.error('[ferry bridge] server error:', err)
  process.exit(1)
})
