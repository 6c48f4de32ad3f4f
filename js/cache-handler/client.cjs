'use strict'
// The cache handlers' line to Ferry: POSTs to the control endpoint the worker bridge's
// environment names (FERRY_CONTROL_URL, FERRY_CONTROL_TOKEN; see
// crates/ferry-server/src/pipeline/control.rs for the protocol). Without them (during
// `next build`, or a plain `next start`) `enabled` is false and the handlers keep Next's own
// in-process behaviour.
//
// A *frame* is one line of JSON metadata, a newline, then raw bytes.

// Edge-runtime bundles (a `middleware.ts` that uses 'use cache' or the fetch cache) have no
// node:http: Turbopack compiles the require into a throw, caught here, and those bundles talk to
// Ferry with fetch instead. (Thrown at load, it made every request through such a middleware 500.)
let http
try {
  http = require('node:http')
} catch {
  http = undefined
}

const base = process.env.FERRY_CONTROL_URL
const token = process.env.FERRY_CONTROL_TOKEN
const enabled = Boolean(base && token)
const agent = enabled && http ? new http.Agent({ keepAlive: true, maxSockets: 64 }) : undefined

// Reads are on the render path: a Ferry that does not answer quickly is a miss, not a hang.
const READ_TIMEOUT_MS = 2000
const WRITE_TIMEOUT_MS = 10000

let warned = false
function warnOnce(what, err) {
  if (warned) return
  warned = true
  console.error(`[ferry cache-handler] ${what} failed (a read is a miss, a write is skipped; further failures are not logged):`, err)
}

/** POST `body` to `<control url><path>`; resolves to { status, body: Buffer }. */
function post(path, body, timeoutMs) {
  if (!http) return postWithFetch(path, body, timeoutMs)
  // Ferry closes a keep-alive connection idle past its keep-alive timeout; a worker that was not
  // scheduled when that FIN arrived (a loaded machine) still has the socket in its agent's free
  // list and sends the next request on it: ECONNRESET. Every control request is idempotent, and
  // Ferry never read one sent on a closed connection: retried once on a fresh socket.
  return postOnce(path, body, timeoutMs).catch((err) => {
    if (err && err.reusedSocket && (err.code === 'ECONNRESET' || err.code === 'EPIPE')) {
      return postOnce(path, body, timeoutMs)
    }
    throw err
  })
}

function postOnce(path, body, timeoutMs) {
  return new Promise((resolve, reject) => {
    const url = new URL(base + path)
    const req = http.request(url, {
      method: 'POST',
      agent,
      headers: {
        'x-ferry-control-token': token,
        'content-type': 'application/octet-stream',
        'content-length': body.length,
      },
    })
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer from Ferry within ${timeoutMs} ms`)))
    req.on('error', (err) => {
      if (err && typeof err === 'object') err.reusedSocket = req.reusedSocket
      reject(err)
    })
    req.on('response', (res) => {
      const chunks = []
      res.on('data', (c) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks) }))
      res.on('error', reject)
    })
    req.end(body)
  })
}

/** `post` where node:http is missing (the edge runtime). */
async function postWithFetch(path, body, timeoutMs) {
  const abort = new AbortController()
  const timer = setTimeout(() => abort.abort(new Error(`no answer from Ferry within ${timeoutMs} ms`)), timeoutMs)
  try {
    const res = await fetch(base + path, {
      method: 'POST',
      headers: { 'x-ferry-control-token': token, 'content-type': 'application/octet-stream' },
      body,
      // Next patches fetch in its runtimes: this one must never be cached itself.
      cache: 'no-store',
      signal: abort.signal,
    })
    return { status: res.status, body: Buffer.from(await res.arrayBuffer()) }
  } finally {
    clearTimeout(timer)
  }
}

function frame(meta, value) {
  return Buffer.concat([Buffer.from(JSON.stringify(meta) + '\n'), value])
}

function unframe(buf) {
  const nl = buf.indexOf(10)
  if (nl < 0) throw new Error('malformed frame')
  return { meta: JSON.parse(buf.subarray(0, nl).toString('utf8')), value: buf.subarray(nl + 1) }
}

/**
 * The entry stored under `key`, unless expired (by time or by a tag / soft tag expired after it
 * was created): `{ value: Buffer, tags, created (ms), stale }`, else undefined.
 */
async function get(key, softTags) {
  try {
    const body = Buffer.from(JSON.stringify({ key, tags: softTags || [] }))
    const res = await post('/data-get', body, READ_TIMEOUT_MS)
    if (res.status !== 200) return undefined
    const { meta, value } = unframe(res.body)
    return { value, tags: meta.tags || [], created: meta.created, stale: Boolean(meta.stale) }
  } catch (err) {
    warnOnce('reading the shared cache', err)
    return undefined
  }
}

/** Stores `value` (Buffer) under `key`; meta: { tags, created (ms), revalidate, expire (s) }. */
async function set(key, meta, value) {
  try {
    const res = await post('/data-set', frame({ key, ...meta }, value), WRITE_TIMEOUT_MS)
    if (res.status !== 204) throw new Error(`Ferry answered ${res.status}`)
  } catch (err) {
    warnOnce('writing the shared cache', err)
  }
}

/** Latest marks of `tags`: { stale, expired } in ms (0: never). */
async function marks(tags) {
  if (!tags || tags.length === 0) return { stale: 0, expired: 0 }
  try {
    const res = await post('/tag-marks', Buffer.from(JSON.stringify({ tags })), READ_TIMEOUT_MS)
    if (res.status !== 200) return { stale: 0, expired: 0 }
    const m = JSON.parse(res.body.toString('utf8'))
    return { stale: Number(m.stale) || 0, expired: Number(m.expired) || 0 }
  } catch (err) {
    warnOnce('reading tag marks', err)
    return { stale: 0, expired: 0 }
  }
}

// revalidateTag reaches the incremental handler and every 'use cache' handler at once (Next's
// revalidateTags): identical requests in flight are sent once.
const inflight = new Map()

/**
 * Invalidates `tags` everywhere. Without `durations`, or with `expire: 0`, entries carrying them
 * expire now (the next read misses); with a profile they go stale now (served while refreshed).
 */
function revalidateTags(tags, durations) {
  const list = (Array.isArray(tags) ? tags : [tags]).filter((t) => typeof t === 'string')
  if (list.length === 0) return Promise.resolve()
  const expire = !durations || durations.expire === 0
  const id = JSON.stringify([list, expire])
  let p = inflight.get(id)
  if (!p) {
    p = post('/revalidate-tags', Buffer.from(JSON.stringify({ tags: list, expire })), WRITE_TIMEOUT_MS)
      .then((res) => {
        if (res.status !== 204) throw new Error(`Ferry answered ${res.status}`)
      })
      .catch((err) => console.error('[ferry cache-handler] revalidating tags failed:', err))
      .finally(() => inflight.delete(id))
    inflight.set(id, p)
  }
  return p
}

// The worker bridge ends a response only once the invalidations it caused have reached Ferry
// (next start applies them in-process before its response completes): without this, the
// request that follows a route handler's revalidatePath could still be served the old entry.
// A global, because the bridge and these modules are loaded from different places.
if (enabled) {
  globalThis.__ferryRevalidationsInFlight = () =>
    inflight.size === 0 ? undefined : Promise.all(inflight.values())
}

module.exports = { enabled, get, set, marks, revalidateTags, frame, unframe }
