// Ferry's Next.js Deployment Adapter.
//
// `ferry build` points Next.js at this file through NEXT_ADAPTER_PATH. It is deliberately tiny:
// it pins the ids Ferry chose, traces the files Ferry's worker bridge needs at runtime, and hands
// the build context over as JSON. Everything else (bundle layout, static files, compression, the
// manifest) happens in Rust.
'use strict'

const fs = require('fs')
const path = require('path')
const { createRequire } = require('module')

const PHASE_PRODUCTION_BUILD = 'phase-production-build'

// Modules js/bridge/bridge.cjs loads from the app besides the entrypoints (keep in sync with its
// `projectRequire(...)` / `optionalRequire(...)` calls; a ferry-build test checks). Traced like
// the entrypoints' own files, so the bundle runs without the app's node_modules. Ids that do not
// resolve with the app's `next` version are skipped, as the bridge skips them; `sharp` (an
// optional dependency of next, loaded lazily by the image optimizer) is followed when installed.
const BRIDGE_MODULES = [
  '@next/env',
  'next/dist/server/node-environment',
  'next/dist/server/lib/process-error-handlers',
  'next/dist/server/image-optimizer',
  'next/dist/server/response-cache',
  'next/dist/server/route-kind',
  'next/dist/server/serve-static',
  'next/dist/server/web/sandbox',
]

/** Repo-relative path → absolute path of every file the bridge modules need, traced with Next's nft. */
async function traceBridgeModules(projectDir, repoRoot, extraEntries = []) {
  // Resolve from the app, as the bridge does, so the app's own next / sharp versions are traced.
  const projectRequire = createRequire(path.join(projectDir, 'package.json'))
  const { nodeFileTrace } = projectRequire('next/dist/compiled/@vercel/nft')
  const entries = [...extraEntries]
  for (const id of BRIDGE_MODULES) {
    try {
      entries.push(projectRequire.resolve(id))
    } catch {
      // Not in this next version: the bridge's optionalRequire finds nothing either.
    }
  }
  const { fileList, esmFileList } = await nodeFileTrace(entries, {
    base: repoRoot,
    processCwd: projectDir,
  })
  const files = {}
  for (const rel of [...fileList, ...esmFileList]) {
    const abs = path.join(repoRoot, rel)
    // nft also lists the symlinks it passed through (pnpm); the bundle keeps real files only.
    if (fs.statSync(abs, { throwIfNoEntry: false })?.isFile()) files[rel] = abs
  }
  return files
}

// ---- Ferry's cache handlers (js/cache-handler) --------------------------------------------
// `ferry build` writes them beside this file (./cache-handler/). They are copied into the app's
// `node_modules/.cache/ferry/` (Turbopack bundles the handler into the proxy and cannot read
// files under distDir): next.config points at them there, Next records the path relative to
// distDir, and they are traced into the bundle at the same place. Only values the user left
// unset are set.
function installCacheHandlers(config, projectDir) {
  const src = path.join(__dirname, 'cache-handler')
  if (!projectDir || !fs.existsSync(src)) return
  const dest = path.join(projectDir, 'node_modules', '.cache', 'ferry')
  fs.mkdirSync(dest, { recursive: true })
  for (const name of fs.readdirSync(src)) fs.copyFileSync(path.join(src, name), path.join(dest, name))
  if (!config.cacheHandler) config.cacheHandler = path.join(dest, 'incremental.cjs')
  const edgeFile = appRouterEdgeSegment(projectDir)
  if (edgeFile) {
    // Next 16.4 with Turbopack cannot compile an app-router edge route once `cacheHandlers` is
    // set ("Expected ';', '}' or <eof>" in templates/edge-app-route.js, also with plain `next
    // build`): 'use cache' entries stay in each worker's own memory for this app.
    console.warn(
      `[ferry] ${path.relative(projectDir, edgeFile)} uses the edge runtime: 'use cache' entries are not shared through Ferry in this app (Next cannot build edge app routes with cacheHandlers)`
    )
    return
  }
  const handlers = { ...(config.cacheHandlers || {}) }
  for (const kind of ['default', 'remote']) {
    if (!handlers[kind]) handlers[kind] = path.join(dest, 'use-cache.cjs')
  }
  config.cacheHandlers = handlers
}
// The first app-router source file that selects the edge runtime (`export const runtime =
// 'edge'` in a page, route or layout), if any.
function appRouterEdgeSegment(projectDir) {
  const edge = /export\s+const\s+runtime\s*=\s*['"](?:experimental-)?edge['"]/
  const stack = ['app', 'src/app'].map((d) => path.join(projectDir, d))
  while (stack.length) {
    const dir = stack.pop()
    let entries
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true })
    } catch {
      continue
    }
    for (const e of entries) {
      const full = path.join(dir, e.name)
      if (e.isDirectory()) {
        if (e.name !== 'node_modules') stack.push(full)
      } else if (/\.(?:[cm]?[jt]sx?)$/.test(e.name) && edge.test(fs.readFileSync(full, 'utf8'))) {
        return full
      }
    }
  }
  return undefined
}

// The configured cache handler files: Next copies the files themselves but, with Turbopack,
// not what they require (Ferry's handlers require each other and next's own caches).
function cacheHandlerFiles(config) {
  const list = [config.cacheHandler, ...Object.values(config.cacheHandlers || {})]
  return [...new Set(list.filter((f) => typeof f === 'string' && path.isAbsolute(f) && fs.existsSync(f)))]
}
// ---- end of cache handlers ------------------------------------------------------------------

/** @type {import('next').NextAdapter} */
module.exports = {
  name: 'ferry',

  // Runs for every command that loads next.config (`next build`, `next start`, `next dev`):
  // only the production build is touched, and only where the user left a value unset.
  modifyConfig(config, { phase, projectDir }) {
    if (phase !== PHASE_PRODUCTION_BUILD) return config

    const buildId = process.env.FERRY_BUILD_ID
    if (buildId && typeof config.generateBuildId !== 'function') {
      config.generateBuildId = () => buildId
    }

    // Next also applies NEXT_DEPLOYMENT_ID itself; the user's own value always wins.
    const deploymentId = process.env.FERRY_DEPLOYMENT_ID
    if (deploymentId && !config.deploymentId) {
      config.deploymentId = deploymentId
      // `next start` re-reads next.config at runtime without this adapter, so its server sees
      // no deployment id: onBuildComplete reports that, and Ferry's workers match it.
      process.env.FERRY_PINNED_DEPLOYMENT_ID = deploymentId
    }
    installCacheHandlers(config, projectDir)
    return config
  },

  // Writes the whole build context for the Rust side. Maps (if any) become plain objects.
  async onBuildComplete(ctx) {
    const out = process.env.FERRY_ADAPTER_OUTPUT
    if (!out) return

    const { routing, outputs, config, buildId, nextVersion, distDir, projectDir, repoRoot } = ctx
    const payload = {
      routing,
      outputs,
      // Functions in next.config cannot be serialized; JSON.stringify drops them.
      config,
      buildId,
      nextVersion,
      distDir,
      projectDir,
      repoRoot,
      runtimeFiles: await traceBridgeModules(projectDir, repoRoot, cacheHandlerFiles(config)),
      // The deployment id the app's server sees at runtime under `next start` (next.config's own
      // value, without Ferry's pin): '' when Ferry pinned it.
      runtimeDeploymentId:
        process.env.FERRY_PINNED_DEPLOYMENT_ID &&
        process.env.FERRY_PINNED_DEPLOYMENT_ID === config.deploymentId
          ? ''
          : config.deploymentId || '',
    }
    const json = JSON.stringify(payload, (_key, value) =>
      value instanceof Map ? Object.fromEntries(value) : value
    )
    fs.mkdirSync(path.dirname(out), { recursive: true })
    fs.writeFileSync(out, json)
  },
}
