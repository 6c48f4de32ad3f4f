'use strict'
// Ferry's `cacheHandler` (next.config): Next's incremental cache for the fetch cache and
// `unstable_cache` (kind FETCH) and for rendered responses (APP_PAGE, APP_ROUTE, PAGES).
//
// Under `ferry start` (the worker bridge sets FERRY_CONTROL_URL) FETCH entries live in Ferry's
// cache store, shared by every worker and, on Redis, every instance; revalidateTag /
// revalidatePath reach Ferry's marks, which invalidate data entries and prerendered pages alike.
// Rendered responses stay with Next's own file-system cache (Ferry keeps the pages it serves
// itself), but a response whose tags Ferry has expired is not served from it, and the pages
// Ferry renders on demand for its own cache are not kept here at all.
//
// Without Ferry (`next build`, plain `next start`) everything is Next's file-system cache.

const client = require('./client.cjs')
const FileSystemCache = require('next/dist/server/lib/incremental-cache/file-system-cache').default

const FETCH = 'FETCH'
const PREFIX = 'fetch:'

class FerryCacheHandler {
  constructor(ctx) {
    this.local = new FileSystemCache(ctx)
    // The worker bridge forwards revalidated tags itself only for apps with a cache handler of
    // their own; with this one, `revalidateTag` below already reaches Ferry (once).
    if (client.enabled) globalThis.__ferryCacheHandler = true
  }

  resetRequestCache() {
    this.local.resetRequestCache()
  }

  async get(key, ctx) {
    if (!client.enabled) return this.local.get(key, ctx)
    if (ctx.kind !== FETCH) return this.getResponse(key, ctx)
    const hit = await client.get(PREFIX + key, [...(ctx.tags || []), ...(ctx.softTags || [])])
    if (!hit) return null
    let value
    try {
      value = JSON.parse(hit.value.toString('utf8'))
    } catch {
      return null
    }
    // A tag revalidated with a profile: stale, so Next serves it and refetches in the background
    // (IncrementalCache judges age from lastModified).
    return { lastModified: hit.stale ? 0 : hit.created, value }
  }

  async getResponse(key, ctx) {
    const data = await this.local.get(key, ctx)
    const tags = data && data.value && data.value.headers && data.value.headers['x-next-cache-tags']
    if (typeof tags !== 'string' || tags === '') return data
    const marks = await client.marks(tags.split(','))
    return marks.expired && marks.expired >= (data.lastModified || 0) ? null : data
  }

  async set(key, data, ctx) {
    // A page Ferry rendered for its own cache (an on-demand page of a dynamic route, see
    // js/bridge/bridge.cjs `ferryOwnedRender`): Ferry keeps it; no per-worker copy.
    if (client.enabled && !ctx.fetchCache && ownedByFerry(data, ctx)) return
    if (!client.enabled || !ctx.fetchCache) return this.local.set(key, data, ctx)
    if (!data) return
    const tags = ctx.tags || data.tags || []
    const revalidate = typeof data.revalidate === 'number' ? data.revalidate : null
    await client.set(PREFIX + key, { tags, created: Date.now(), revalidate }, Buffer.from(JSON.stringify(data)))
  }

  async revalidateTag(tags, durations) {
    // The local file-system cache keeps its own tags manifest for the responses it holds.
    await this.local.revalidateTag(tags, durations)
    if (client.enabled) await client.revalidateTags(tags, durations)
  }
}

/**
 * Whether `data` is a rendered page from a render Ferry asked for to fill its own cache. A
 * pages-router render that asked for its cache entry (the bridge's `ferryPagesEntry`) gets it
 * here: next stores one PAGES entry (HTML and data JSON from one render) before answering,
 * or an entry without a value for `notFound`.
 */
function ownedByFerry(data, ctx) {
  const owned = globalThis.__ferryOwnedRender
  const store = owned && owned.getStore()
  if (!store) return false
  // `getStaticProps` returned `notFound`: next caches that as an entry without a value. Ferry
  // keeps it (the bridge hands it over as a notFound PAGES entry); a copy here would answer the
  // worker's next render of the page from this worker's cache (`HIT` on a first request).
  if (data === null || data === undefined) {
    if (typeof store === 'object') store.entry = { value: null, cacheControl: (ctx && ctx.cacheControl) || null }
    return true
  }
  // A `getStaticProps` redirect: Ferry stores none, and the worker's own render of the request
  // answers and caches it, as next start does; a copy of this render here would make that
  // answer a `HIT` on the first request.
  if (data.kind === 'REDIRECT') return true
  const page = data.kind === 'APP_PAGE' || data.kind === 'PAGES'
  if (page && data.kind === 'PAGES' && typeof store === 'object') {
    store.entry = { value: data, cacheControl: (ctx && ctx.cacheControl) || null }
  }
  return page
}

module.exports = FerryCacheHandler
