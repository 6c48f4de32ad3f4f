// Builds a routing table from next.config-style rules with Next.js's own build code, the way
// `next build` hands it to a Deployment Adapter (next/dist/build/adapter/build-complete.js):
// loadCustomRoutes (basePath / i18n / trailing-slash processing and validation),
// generateRoutesManifest (buildCustomRoute, page regexes), then the adapter's conversion of the
// routes manifest into `routing` (routing-utils convert*, modifyRouteRegex, named page regexes
// with basePath/locale prefixes, `_next/data` routes, RSC suffix routes, middleware matchers).
//
// The steps after generateRoutesManifest are inline in build-complete.js (not exported), so they
// are restated here from that file (next 16.4.6) using the same helpers; keep them in step.
'use strict'
const path = require('node:path')

const NEXT_DIR =
  process.env.FERRY_ORACLE_NEXT_DIR ||
  path.join(__dirname, '../../../../examples/showcase/node_modules/next')
const req = (p) => require(path.join(NEXT_DIR, 'dist', p))

let mods
function load() {
  if (mods) return mods
  mods = {
    loadCustomRoutes: req('lib/load-custom-routes').default,
    generateRoutesManifest: req('build/generate-routes-manifest').generateRoutesManifest,
    routingUtils: require(path.join(NEXT_DIR, 'dist/compiled/@vercel/routing-utils')),
    redirectStatus: req('lib/redirect-status'),
    getNamedRouteRegex: req('shared/lib/router/utils/route-regex').getNamedRouteRegex,
    escapeStringRegexp: req('shared/lib/escape-regexp').escapeStringRegexp,
    sortSortableRoutes: req('shared/lib/router/utils/sortable-routes').sortSortableRoutes,
    isDynamicRoute: req('shared/lib/router/utils').isDynamicRoute,
    getMiddlewareMatchers: req('build/analysis/get-page-static-info').getMiddlewareMatchers,
    addPathPrefix: req('shared/lib/router/utils/add-path-prefix').addPathPrefix,
  }
  return mods
}

const PREVIEW_ID = '95f2a3120001eb0bdd4bc2e02af789dc'

// spec: { buildId, config: { basePath, trailingSlash, skipTrailingSlashRedirect, i18n,
//   collapseAdapterRoutes, redirects, rewrites: {beforeFiles, afterFiles, fallback}, headers },
//   pages: [..], app: [..], dataPages: [..], staticPages: [..], fallbackFalse: [..],
//   middleware: [matcher] | null, pathnames: [..] (page-relative; basePath is added here) }
async function buildTable(spec) {
  const m = load()
  const c = spec.config
  const config = {
    basePath: c.basePath || '',
    trailingSlash: !!c.trailingSlash,
    skipTrailingSlashRedirect: !!c.skipTrailingSlashRedirect,
    i18n: c.i18n || null,
    experimental: {
      caseSensitiveRoutes: false,
      collapseAdapterRoutes: !!c.collapseAdapterRoutes,
    },
    cacheComponents: false,
    redirects: async () => structuredClone(c.redirects || []),
    rewrites: async () => structuredClone(c.rewrites || { beforeFiles: [], afterFiles: [], fallback: [] }),
    headers: async () => structuredClone(c.headers || []),
  }
  // checkCustomRoutes reports invalid rules with console.error + process.exit(1).
  const exit = process.exit
  const errors = []
  const consoleError = console.error
  const consoleWarn = console.warn
  console.error = (...a) => errors.push(a.join(' '))
  console.warn = () => {}
  process.exit = () => {
    throw new Error('invalid custom routes: ' + errors.join('\n'))
  }
  let custom
  try {
    custom = await m.loadCustomRoutes(config)
  } finally {
    process.exit = exit
    console.error = consoleError
    console.warn = consoleWarn
  }
  const pageKeys = { pages: spec.pages || [], app: spec.app || [] }
  const { routesManifest } = m.generateRoutesManifest({
    appType: pageKeys.app.length && pageKeys.pages.length ? 'hybrid' : pageKeys.app.length ? 'app' : 'pages',
    pageKeys,
    config,
    redirects: custom.redirects,
    headers: custom.headers,
    onMatchHeaders: custom.onMatchHeaders || [],
    rewrites: custom.rewrites,
    restrictedRedirectPaths: ['/_next'].map((p) => (config.basePath ? `${config.basePath}${p}` : p)),
    isAppPPREnabled: false,
  })
  routesManifest.dataRoutes = (spec.dataPages || []).map((page) => ({ page }))
  const buildId = spec.buildId
  const fallbackFalse = new Set(spec.fallbackFalse || [])
  const appPageKeys = pageKeys.app
  const pagesKeys = pageKeys.pages

  // --- build-complete.js: dynamic routes ---
  const dynamicRoutes = []
  const dynamicDataRoutes = []
  const getDestinationQuery = (routeKeys) => {
    const items = Object.entries(routeKeys ?? {})
    if (items.length === 0) return ''
    return '?' + items.map(([key, value]) => `${value}=$${key}`).join('&')
  }
  const fallbackFalseHasCondition = [{ type: 'cookie', key: '__prerender_bypass', value: PREVIEW_ID }]
  const escapedBasePath =
    config.basePath && config.basePath !== '/' ? m.escapeStringRegexp(path.posix.join('/', config.basePath)) : ''
  for (const route of routesManifest.dynamicRoutes) {
    const shouldLocalize = Boolean(config.i18n)
    const routeRegex = m.getNamedRouteRegex(route.page, { prefixRouteKeys: true })
    const isFallbackFalse = fallbackFalse.has(route.page)
    const pagePattern = routeRegex.namedRegex
    const pagePath = route.page
    const sourceRegex = pagePattern.replace(
      '^',
      () => `^${escapedBasePath}[/]?${shouldLocalize ? '(?<nextLocale>[^/]{1,})' : ''}`,
    )
    const destination =
      path.posix.join('/', config.basePath, shouldLocalize ? '/$nextLocale' : '', pagePath) +
      getDestinationQuery(route.routeKeys)
    const suffixCaptureIndex = Object.keys(routeRegex.routeKeys).length + (shouldLocalize ? 1 : 0) + 1
    const hasAppPages = Boolean(appPageKeys && appPageKeys.length > 0)
    const suffixedHas = isFallbackFalse && !pagesKeys.includes(route.page) ? fallbackFalseHasCondition : undefined
    const plainHas = isFallbackFalse ? fallbackFalseHasCondition : undefined
    const canMergeSuffixedAndPlain = config.experimental.collapseAdapterRoutes && hasAppPages && suffixedHas === plainHas
    if (canMergeSuffixedAndPlain) {
      dynamicRoutes.push({
        source: pagePath,
        sourceRegex: sourceRegex.replace(
          new RegExp(m.escapeStringRegexp('(?:/)?$')),
          '(\\.rsc|\\.segments/.+\\.segment\\.rsc|)(?:/)?$',
        ),
        destination: destination.replace(/($|\?)/, (separator) => `$${suffixCaptureIndex}${separator}`),
        has: plainHas,
        missing: undefined,
      })
    } else {
      if (hasAppPages) {
        dynamicRoutes.push({
          source: pagePath + '.rsc',
          sourceRegex: sourceRegex.replace(
            new RegExp(m.escapeStringRegexp('(?:/)?$')),
            '(\\.rsc|\\.segments/.+\\.segment\\.rsc)(?:/)?$',
          ),
          destination: destination.replace(/($|\?)/, (separator) => `$${suffixCaptureIndex}${separator}`),
          has: suffixedHas,
          missing: undefined,
        })
      }
      dynamicRoutes.push({ source: pagePath, sourceRegex, destination, has: plainHas, missing: undefined })
    }
  }
  const needsMiddlewareResolveRoutes = Boolean(spec.middleware) && pagesKeys.length > 0
  const dataRoutePages = new Set(routesManifest.dataRoutes.map((item) => item.page))
  const sortedDataPages = m.sortSortableRoutes([
    ...(needsMiddlewareResolveRoutes ? (spec.staticPages || []).map((page) => ({ sourcePage: page, page })) : []),
    ...routesManifest.dataRoutes.map((item) => ({ sourcePage: item.page, page: item.page })),
  ])
  for (const { page } of sortedDataPages) {
    if (needsMiddlewareResolveRoutes || m.isDynamicRoute(page)) {
      const shouldLocalize = config.i18n
      const isFallbackFalse = fallbackFalse.has(page)
      const routeRegex = m.getNamedRouteRegex(page + '.json', { prefixRouteKeys: true, includeSuffix: true })
      const isDataRoute = dataRoutePages.has(page)
      const destination = path.posix.join(
        '/',
        config.basePath,
        ...(isDataRoute ? ['_next/data', buildId] : ''),
        ...(page === '/'
          ? [shouldLocalize ? '$nextLocale.json' : 'index.json']
          : [
              shouldLocalize ? '$nextLocale' : '',
              page + (isDataRoute ? '.json' : '') + getDestinationQuery(routeRegex.routeKeys || {}),
            ]),
      )
      dynamicDataRoutes.push({
        source: page,
        sourceRegex:
          shouldLocalize && page === '/'
            ? '^' +
              path.posix.join('/', config.basePath, '_next/data', m.escapeStringRegexp(buildId), '(?<nextLocale>[^/]{1,}).json')
            : routeRegex.namedRegex.replace(
                '^',
                `^${path.posix.join('/', config.basePath, '_next/data', m.escapeStringRegexp(buildId))}[/]?${
                  shouldLocalize ? '(?<nextLocale>[^/]{1,})' : ''
                }`,
              ),
        destination,
        has: isFallbackFalse ? fallbackFalseHasCondition : undefined,
        missing: undefined,
      })
    }
  }
  const { convertRewrites, convertHeaders, convertRedirects } = m.routingUtils
  const { modifyRouteRegex, getRedirectStatus } = m.redirectStatus
  const buildRewriteItem = (route) => {
    const converted = convertRewrites([route], ['nextInternalLocale'])[0]
    const regex = converted.src || route.regex
    return {
      source: route.source,
      sourceRegex: route.internal ? regex : modifyRouteRegex(regex),
      destination: converted.dest || route.destination,
      has: route.has,
      missing: route.missing,
    }
  }
  const buildRouteFromHeader = (route) => {
    const converted = convertHeaders([route])[0]
    const regex = converted.src || route.regex
    return {
      source: route.source,
      sourceRegex: route.internal ? regex : modifyRouteRegex(regex),
      headers: 'headers' in converted ? converted.headers || {} : {},
      has: route.has,
      missing: route.missing,
      priority: route.internal || undefined,
    }
  }
  const redirects = routesManifest.redirects.map((route) => {
    const converted = convertRedirects([route], 307)[0]
    const regex = converted.src || route.regex
    return {
      source: route.source,
      sourceRegex: route.internal ? regex : modifyRouteRegex(regex),
      headers: 'headers' in converted ? converted.headers || {} : {},
      status: converted.status || getRedirectStatus(route),
      has: route.has,
      missing: route.missing,
      priority: route.internal || undefined,
    }
  })
  const headers = routesManifest.headers.map(buildRouteFromHeader)
  const onMatchHeaders = routesManifest.onMatchHeaders.map(buildRouteFromHeader)
  const routing = {
    beforeMiddleware: [...headers, ...redirects],
    beforeFiles: routesManifest.rewrites.beforeFiles.map(buildRewriteItem),
    afterFiles: routesManifest.rewrites.afterFiles.map(buildRewriteItem),
    dynamicRoutes: [...dynamicDataRoutes, ...dynamicRoutes],
    onMatch: [
      {
        sourceRegex: `${path.posix.join(
          config.basePath || '/',
          '_next/static',
          `/(?:[^/]+/pages|pages|chunks|immutable|runtime|css|image|media|${m.escapeStringRegexp(buildId)})/.+`,
        )}`,
        headers: { 'cache-control': 'public,max-age=31536000,immutable' },
      },
      ...onMatchHeaders,
    ],
    fallback: routesManifest.rewrites.fallback.map(buildRewriteItem),
    shouldNormalizeNextData: needsMiddlewareResolveRoutes,
    rsc: routesManifest.rsc,
  }
  let middlewareMatchers
  if (spec.middleware) {
    middlewareMatchers = m.getMiddlewareMatchers(spec.middleware, config).map((item) => ({
      source: item.originalSource,
      sourceRegex: item.regexp,
      has: item.has,
      missing: [...(item.missing || []), { type: 'header', key: 'x-prerender-revalidate', value: PREVIEW_ID }],
    }))
  }
  const pathnames = (spec.pathnames || []).map((p) =>
    config.basePath ? m.addPathPrefix(p, config.basePath).replace(/\/$/, '') || '/' : p,
  )
  // Drop `undefined` fields the way the adapter's JSON would.
  return JSON.parse(
    JSON.stringify({
      buildId,
      basePath: config.basePath,
      i18n: config.i18n || null,
      routing,
      middlewareMatchers,
      pathnames,
    }),
  )
}

module.exports = { buildTable }
