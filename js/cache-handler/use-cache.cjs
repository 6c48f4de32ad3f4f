'use strict'
// Ferry's `cacheHandlers.default` / `.remote` (next.config): the store of `'use cache'` and
// `'use cache: remote'` entries. Under `ferry start` entries live in Ferry's cache store (shared
// by every worker and, on Redis, every instance) and tags / soft tags are Ferry's marks;
// without Ferry (`next build`) it is Next's default in-memory handler.
//
// Stored value: a frame of the entry's metadata (tags, stale, timestamp, expire, revalidate)
// and the bytes of its value stream.

const client = require('./client.cjs')
const { createDefaultCacheHandler } = require('next/dist/server/lib/cache-handlers/default')

const PREFIX = 'use-cache:'

function streamOf(bytes) {
  return new ReadableStream({
    start(controller) {
      controller.enqueue(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength))
      controller.close()
    },
  })
}

function ferryHandler() {
  // A read waits for this process's own write of the same key (as Next's default handler).
  const pendingSets = new Map()
  return {
    async get(cacheKey, softTags) {
      const pending = pendingSets.get(cacheKey)
      if (pending) await pending
      const hit = await client.get(PREFIX + cacheKey, softTags)
      if (!hit) return undefined
      let entry
      try {
        entry = client.unframe(hit.value)
      } catch {
        return undefined
      }
      const meta = entry.meta
      // JSON has no Infinity ("never"): it was stored as null.
      for (const f of ['stale', 'revalidate', 'expire']) if (meta[f] === null) meta[f] = Infinity
      // Like Next's default handler in production: past its revalidate time an entry is a miss.
      if (Date.now() > meta.timestamp + meta.revalidate * 1000) return undefined
      return { ...meta, revalidate: hit.stale ? -1 : meta.revalidate, value: streamOf(entry.value) }
    },

    async set(cacheKey, pendingEntry) {
      let done
      pendingSets.set(cacheKey, new Promise((resolve) => (done = resolve)))
      try {
        const entry = await pendingEntry
        // expire 0: a dynamic entry, regenerated on every read (Next's default skips it too).
        if (entry.expire === 0) return
        const value = Buffer.from(await new Response(entry.value).arrayBuffer())
        const { value: _, ...meta } = entry
        await client.set(
          PREFIX + cacheKey,
          {
            tags: meta.tags || [],
            created: meta.timestamp,
            revalidate: Number.isFinite(meta.revalidate) ? meta.revalidate : null,
            expire: Number.isFinite(meta.expire) ? meta.expire : null,
          },
          client.frame(meta, value)
        )
      } catch (err) {
        // An interrupted value stream: keep nothing (an incomplete value renders an incomplete page).
        if (process.env.NEXT_PRIVATE_DEBUG_CACHE) console.debug('[ferry cache-handler] set failed', cacheKey, err)
      } finally {
        pendingSets.delete(cacheKey)
        done()
      }
    },

    // Ferry is asked on every read: nothing to synchronize ahead of a request.
    async refreshTags() {},

    async getExpiration(tags) {
      return (await client.marks(tags)).expired
    },

    async updateTags(tags, durations) {
      await client.revalidateTags(tags, durations)
    },
  }
}

module.exports = client.enabled ? ferryHandler() : createDefaultCacheHandler(50 * 1024 * 1024)
