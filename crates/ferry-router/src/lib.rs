//! Next.js routing phases in Rust: resolves a request against the manifest's routing tables, pure and I/O-free.
//!
//! The algorithm mirrors `@next/routing`'s `resolveRoutes()` (16.4.3) step by step: i18n
//! prefixing, `beforeMiddleware` (headers, trailing-slash and user redirects), middleware,
//! `beforeFiles`, the filesystem match against the known pathnames, `afterFiles`,
//! `dynamicRoutes`, `fallback`, with `onMatch` headers on a match and `_next/data` normalization.
//! URLs follow WHATWG semantics (the `url` crate), regexes JavaScript semantics (`regress`).
//!
//! The work is split in phases because middleware runs in JavaScript outside this crate:
//! [`Router::start`] → ([`Router::middleware_matches`] → [`Router::apply_middleware`]) →
//! [`Router::finish`]. [`Router::resolve`] runs them all without middleware.
//!
//! Deliberate differences from `@next/routing`, following `next start`:
//! - a redirect from `beforeMiddleware` (and the i18n locale redirect) finishes in
//!   [`Router::start`], before middleware runs; `@next/routing` runs middleware first and lets it
//!   answer, redirect or rewrite instead.
//! - [`Resolution::Redirect`] carries both the headers `@next/routing` resolved and, separately,
//!   [`Resolution::Redirect::next_start_headers`]: `next start` does not send `headers()` rules
//!   on redirect responses.
//! - RSC requests (`rsc: 1` header) are detected and the matching `.rsc` / segment output is
//!   offered in [`Output::rsc`]; `@next/routing` leaves this to the platform.
//! - Opt-in ([`Router::with_next_start_data_urls`]): with middleware, a `_next/data/<buildId>/
//!   <page>.json` URL with no data route of its own is served by the page itself.
//! - Opt-in ([`RequestInfo::init_origin`]): the middleware sees, and its answer is resolved
//!   against, `next start`'s own origin (`http://<-H>:<port>`) instead of the request's.
//! - Opt-in ([`Router::with_next_start_semantics`]): `next start`'s basePath / i18n /
//!   trailing-slash / `_next/data` handling where `@next/routing` differs (see that method).

mod bounded;
mod headers;
mod i18n;
mod matcher;
mod memo;
mod middleware;
mod next_start;
mod prefilter;
mod rurl;
mod segments;
mod urls;

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;

use ferry_manifest::{I18nConfig, Manifest, RscConfig};
use rurl::Url;

pub use headers::{HeaderList, SharedHeaders};
use matcher::{
    CompiledRoute, Condition, NsCondition, RouteList, RouteMatch, js_match, replace_destination,
    route_params,
};
pub use middleware::MiddlewareEffect;

/// Longest request pathname (after URL normalization) the router accepts; longer ones are
/// rejected with 414 so no regex ever sees them.
pub const MAX_PATH_LEN: usize = matcher::MAX_REGEX_INPUT;

/// Errors building a [`Router`].
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// A `sourceRegex` is not a valid JavaScript regex.
    #[error(
        "routing.{phase}[{index}] ({source_pattern}): invalid sourceRegex {regex:?}: {message}"
    )]
    InvalidRegex {
        /// The routing phase (`beforeMiddleware`, `middleware.matchers`, ...).
        phase: &'static str,
        /// Position of the rule in its phase.
        index: usize,
        /// The user's `source` pattern, or `-`.
        source_pattern: String,
        /// The regex that failed.
        regex: String,
        /// The engine's message.
        message: String,
    },
}

/// A request as the router sees it.
#[derive(Debug, Clone, Default)]
pub struct RequestInfo {
    /// HTTP method.
    pub method: String,
    /// The raw request path, undecoded, without the query.
    pub path: String,
    /// The raw query string without `?`, if any.
    pub query: Option<String>,
    /// Request headers, names lowercase, one entry per value (latin-1 decoded like Node does);
    /// shared so that routing which leaves them alone hands them back without a copy.
    pub headers: SharedHeaders,
    /// The `Host` header (or `:authority`), `localhost` when absent or invalid.
    pub host: Option<String>,
    /// Whether the request came over TLS (decides the URL scheme).
    pub secure: bool,
    /// `next start`'s `initURL` origin (`http://<-H or localhost>:<port>`): the middleware is
    /// invoked with it and its rewrites and redirects are made relative to it, so one it does not
    /// recognise as its own is proxied like an external rewrite. `None`: the request's own URL
    /// (`@next/routing`).
    pub init_origin: Option<String>,
}

/// RSC request details and the outputs that answer it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RscRequest {
    /// `rsc: 1` was sent.
    pub header: bool,
    /// `next-router-prefetch: 1` was sent.
    pub prefetch: bool,
    /// The `next-router-segment-prefetch` header value (e.g. `/_tree`).
    pub segment: Option<String>,
    /// The known `.rsc` pathname for the resolved pathname (`/index.rsc` for `/`), if any.
    pub rsc_pathname: Option<String>,
    /// The known segment prefetch pathname (`/x.segments/_tree.segment.rsc`), if any.
    pub segment_pathname: Option<String>,
}

/// A resolved route to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The matched output pathname (`/blog/[slug]`, `/_next/static/x.js`, `/isr`).
    pub pathname: String,
    /// The concrete path to invoke (`/blog/hello`), percent-encoded as in the URL.
    pub invocation_path: String,
    /// The query to invoke with, decoded `URLSearchParams` entries in order.
    pub query: Vec<(String, String)>,
    /// Dynamic route matches (`"1"`, `"nxtPslug"` ...); the names are shared with the
    /// compiled route.
    pub route_matches: Vec<(Arc<str>, String)>,
    /// Response headers routing resolved (headers rules, middleware, onMatch), `Headers` order.
    pub headers: Vec<(String, String)>,
    /// Request headers to forward, after middleware overrides.
    pub request_headers: SharedHeaders,
    /// A status set by a rule, if any.
    pub status: Option<u16>,
    /// RSC request details, when the request is an RSC request.
    pub rsc: Option<RscRequest>,
    /// A `_next/data/<buildId>/<page>.json` request served by the page's own output (see
    /// [`Router::with_next_start_data_urls`]); next-server names the page in
    /// `x-nextjs-matched-path`.
    pub next_data_page: bool,
    /// Keys of [`Output::query`] next start holds as an array although they have one value (a
    /// repeated param a rewrite added to the query: `path: ["x"]`).
    pub query_arrays: Vec<String>,
}

/// The final outcome of routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Answer with a redirect.
    Redirect {
        /// 301, 302, 303, 307 or 308.
        status: u16,
        /// The `Location` value (`None` for a `Refresh`-only rule).
        location: Option<String>,
        /// Every header `@next/routing` resolved (includes `location` and `headers()` rules).
        headers: Vec<(String, String)>,
        /// What `next start` sends: `location` (plus `refresh: 0;url=…` on a 308) and middleware
        /// headers, without the `headers()` rules (with them for a middleware redirect).
        next_start_headers: Vec<(String, String)>,
    },
    /// Proxy the request to an absolute URL.
    ExternalRewrite {
        /// The destination URL (query included).
        url: String,
        /// Response headers resolved so far.
        headers: Vec<(String, String)>,
        /// Request headers to forward.
        request_headers: SharedHeaders,
        /// A status set by a rule, if any.
        status: Option<u16>,
    },
    /// Serve an output.
    Output(Output),
    /// Nothing matched: serve the 404 page (with these headers).
    NotFound {
        /// Response headers resolved so far.
        headers: Vec<(String, String)>,
        /// Request headers to forward.
        request_headers: SharedHeaders,
        /// A status set by a rule, if any.
        status: Option<u16>,
        /// `next start` only: the `fallback: false` page (its output pathname) the request
        /// reached and that declines the path; router-server.js then routes the request a
        /// second time (see [`Router::no_fallback_retry`]).
        declined: Option<String>,
    },
    /// The request cannot be routed (path too long, unparsable destination built from the
    /// request); answer with `status`.
    Rejected {
        /// 400, 414 or 500.
        status: u16,
        /// Why.
        reason: String,
    },
}

/// The outcome of [`Router::start`].
#[derive(Debug)]
pub enum Step {
    /// Routing finished before middleware.
    Done(Resolution),
    /// Continue: maybe run middleware, then [`Router::finish`].
    Continue(RoutingState),
}

/// Routing state between phases.
#[derive(Debug, Clone)]
pub struct RoutingState {
    url: Url,
    /// The URL middleware sees (`_next/data` form for data requests); `None`: `url` as it was
    /// when [`Router::start`] returned (no copy made for the usual request).
    middleware_url: Option<Url>,
    request_headers: HeaderList,
    response_headers: HeaderList,
    /// Response headers that came from middleware (next start keeps them on redirects).
    middleware_headers: HeaderList,
    status: Option<u16>,
    is_next_data: bool,
    /// next start: the request named a locale and, without it, an `/api` path
    /// (resolve-routes.js `checkLocaleApi` then skips the filesystem while the path is unchanged).
    locale_api: bool,
    /// next start: the request's pathname, to tell whether a rewrite changed it.
    request_path: String,
    /// next start: pages an earlier pass invoked and that declined (router-server.js
    /// `invokedOutputs`), skipped by the dynamic routes.
    declined: Vec<String>,
}

impl RoutingState {
    /// The state after `beforeMiddleware` (no middleware answer yet, no next-start extras).
    fn new(
        url: Url,
        middleware_url: Option<Url>,
        request_headers: HeaderList,
        response_headers: HeaderList,
        status: Option<u16>,
    ) -> Self {
        Self {
            url,
            middleware_url,
            request_headers,
            response_headers,
            middleware_headers: HeaderList::new(),
            status,
            is_next_data: false,
            locale_api: false,
            request_path: String::new(),
            declined: Vec::new(),
        }
    }

    /// The URL to invoke middleware with (path + query, the `_next/data` form for data requests).
    pub fn middleware_url(&self) -> &str {
        self.middleware_url.as_ref().unwrap_or(&self.url).as_str()
    }
    /// The request headers to give middleware.
    pub fn request_headers(&self) -> &HeaderList {
        &self.request_headers
    }
    /// The response headers resolved so far.
    pub fn response_headers(&self) -> &HeaderList {
        &self.response_headers
    }
}

#[derive(Debug)]
struct MiddlewareMatcherC {
    re: matcher::JsRegex,
    /// The same regex case-sensitive: next start's matcher is `new RegExp(regexp)`.
    re_case_sensitive: matcher::JsRegex,
    has: Vec<Condition>,
    missing: Vec<Condition>,
    /// The conditions as next start tests them (`matchHas`).
    ns_has: Vec<NsCondition>,
    ns_missing: Vec<NsCondition>,
}

/// What next start knows about a rule that the compiled route does not keep.
#[derive(Debug)]
struct RouteMeta {
    /// An internal rule (the trailing-slash redirects: `priority` in the routing table).
    internal: bool,
    /// The source's params, in capture order (name, modifier).
    params: Vec<(String, Option<char>)>,
    /// The conditions as next start tests them (`matchHas`: anchored values).
    has: Vec<NsCondition>,
    missing: Vec<NsCondition>,
    /// How many of a rewrite destination's query pairs the user wrote (the adapter appends the
    /// source's params after them; next start decides that per request).
    user_query: usize,
}

impl RouteMeta {
    fn new(r: &ferry_manifest::Route) -> Self {
        let params = r
            .source
            .as_deref()
            .map(next_start::source_params)
            .unwrap_or_default();
        let user_query = r
            .destination
            .as_deref()
            .map(|d| next_start::user_query_len(d, &params, r.has.as_deref().unwrap_or_default()))
            .unwrap_or(0);
        Self {
            internal: r.priority == Some(true),
            params,
            has: matcher::ns_conditions(r.has.as_deref()),
            missing: matcher::ns_conditions(r.missing.as_deref()),
            user_query,
        }
    }
}

/// Per-phase [`RouteMeta`].
#[derive(Debug, Default)]
struct PhaseMeta {
    before_files: Vec<RouteMeta>,
    after_files: Vec<RouteMeta>,
    fallback: Vec<RouteMeta>,
    on_match: Vec<RouteMeta>,
}

/// A dynamic route's destination for one request.
struct DynamicDestination<'u> {
    matched: matcher::RegexMatch<'u>,
    /// The destination with the captures in it, when the route has one.
    dest: Option<String>,
    /// The request URL the route matched.
    url: &'u Url,
}

impl DynamicDestination<'_> {
    /// The destination pathname (the request's when the route has no destination).
    fn path(&self) -> &str {
        match &self.dest {
            Some(d) => before_question_mark(d),
            None => self.url.path(),
        }
    }

    /// The URL to invoke (destination query merged): built only for the route that answers.
    /// `Err(q)`: the request URL with the query `q` (see [`verbatim_destination_query`]),
    /// left to [`Router::output_final_with_query`] to apply.
    fn invocation_url(&self) -> Result<Cow<'_, Url>, &str> {
        match self.dest.as_deref() {
            Some(d) => match verbatim_destination_query(self.url, d) {
                Some(q) => Err(q),
                None => Ok(Cow::Owned(urls::merge_destination_query(self.url, d))),
            },
            None => Ok(Cow::Borrowed(self.url)),
        }
    }
}

/// The router, built once per deployment.
#[derive(Debug)]
pub struct Router {
    before_middleware: RouteList,
    before_files: RouteList,
    after_files: RouteList,
    dynamic_routes: RouteList,
    /// `dynamicRoutes` compiled case-sensitively: next start matches dynamic routes with
    /// `new RegExp(`^${re}$`)` (route-regex.js, route-matcher.js), without the `i` flag.
    dynamic_routes_case_sensitive: RouteList,
    on_match: RouteList,
    /// An `onMatch` rule has a `query` condition (then an output's URL is built in full for
    /// them; otherwise a dynamic route's new query need not be set on a copy of the URL).
    on_match_reads_query: bool,
    fallback: RouteList,
    middleware: Vec<MiddlewareMatcherC>,
    pathnames: memo::PathSet,
    base_path: String,
    build_id: String,
    i18n: Option<I18nConfig>,
    should_normalize_next_data: bool,
    next_start_data_urls: bool,
    /// `next start` semantics (see [`Router::with_next_start_semantics`]).
    next_start: bool,
    trailing_slash: bool,
    /// Per `beforeMiddleware` rule: internal (`priority`) and its source's params.
    before_middleware_meta: Vec<RouteMeta>,
    /// The other phases' [`RouteMeta`].
    meta: PhaseMeta,
    /// Files served from `public/` and `.next/static` (next start finds them under the default
    /// locales only; pages under any locale).
    asset_paths: HashSet<String>,
    /// Function pathnames (next start invokes them with the request's trailing slash; a
    /// prerender or file is named without it).
    function_paths: HashSet<String>,
    /// `dynamicRoutes` destinations of `fallback: false` pages (see `next_start.rs`).
    no_fallback: HashSet<String>,
    /// Prerendered paths of dynamic pages-router routes (`/en-US/blog/hello` of `/blog/[slug]`):
    /// next start's filesystem check only knows page files (filesystem.js `pageFiles`, the
    /// pages-manifest keys), so it finds these through the dynamic routes, after `afterFiles`.
    dynamic_page_prerenders: HashSet<String>,
    rsc: RscConfig,
    /// Static files whose resolution depends only on their path (see `memo.rs`).
    path_only: memo::PathMap<Output>,
}

/// Where a rewrite goes (see `Router::rewrite_target`).
enum Rewritten {
    /// An absolute URL on another server (serialized).
    External(String),
    /// The same origin, a new path and query.
    Internal(Url),
}

/// Outcome of `processRoutes`.
enum PhaseEnd {
    Continue(Url),
    Redirect { location: String, status: u16 },
    External(String),
    Stopped,
    Rejected(String),
}

fn compile_phase(
    phase: &'static str,
    routes: &[ferry_manifest::Route],
) -> Result<RouteList, RouterError> {
    compile_phase_with(phase, routes, false)
}

/// [`compile_phase`], choosing the regexes' case sensitivity (`@next/routing`: insensitive).
fn compile_phase_with(
    phase: &'static str,
    routes: &[ferry_manifest::Route],
    case_sensitive: bool,
) -> Result<RouteList, RouterError> {
    routes
        .iter()
        .enumerate()
        .map(|(index, r)| {
            CompiledRoute::new(r, case_sensitive).map_err(|e| RouterError::InvalidRegex {
                phase,
                index,
                source_pattern: r.source.clone().unwrap_or_else(|| "-".into()),
                regex: r.source_regex.clone(),
                message: e.to_string(),
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(|compiled| {
            let internal: Vec<bool> = routes.iter().map(|r| r.priority == Some(true)).collect();
            RouteList::new(compiled, &internal)
        })
}

fn is_redirect_status(s: Option<u16>) -> bool {
    s.is_some_and(|s| (300..400).contains(&s))
}

fn is_external(dest: &str) -> bool {
    dest.starts_with("http://") || dest.starts_with("https://")
}

fn has_redirect_headers(h: &[(String, String)]) -> bool {
    h.iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("location") || k.eq_ignore_ascii_case("refresh"))
}

/// The prerendered concrete paths of the pages router's dynamic routes (see
/// `Router::dynamic_page_prerenders`): not templates, not `_next/data` JSON.
fn dynamic_page_prerenders(manifest: &Manifest) -> HashSet<String> {
    let pages: HashSet<&str> = manifest
        .functions
        .iter()
        .filter(|f| f.kind == ferry_manifest::FunctionKind::Pages)
        .map(|f| f.id.as_str())
        .collect();
    manifest
        .prerenders
        .iter()
        .filter(|p| pages.contains(p.parent_output_id.as_str()) && p.route.contains('['))
        .filter(|p| !is_dynamic_template(&p.pathname) && !p.pathname.contains("/_next/data/"))
        .map(|p| p.pathname.clone())
        .collect()
}

/// `/\[[^/]+?\]/.test(p)`: a `[slug]`-style template pathname.
pub(crate) fn is_dynamic_template(p: &str) -> bool {
    let b = p.as_bytes();
    b.iter().enumerate().any(|(i, &c)| {
        if c != b'[' {
            return false;
        }
        let seg_end = b[i + 1..]
            .iter()
            .position(|&c| c == b'/')
            .map_or(b.len(), |n| i + 1 + n);
        seg_end >= i + 3 && b[i + 2..seg_end].contains(&b']')
    })
}

impl Router {
    /// Builds the router, compiling every regex once.
    pub fn new(manifest: &Manifest) -> Result<Self, RouterError> {
        let r = &manifest.routing;
        let middleware = match &manifest.middleware {
            None => Vec::new(),
            Some(mw) => mw
                .matchers
                .iter()
                .enumerate()
                .map(|(index, m)| {
                    Ok(MiddlewareMatcherC {
                        re: matcher::compile(&m.source_regex, false).map_err(|e| {
                            RouterError::InvalidRegex {
                                phase: "middleware.matchers",
                                index,
                                source_pattern: m.source.clone().unwrap_or_else(|| "-".into()),
                                regex: m.source_regex.clone(),
                                message: e.to_string(),
                            }
                        })?,
                        re_case_sensitive: matcher::compile(&m.source_regex, true).map_err(
                            |e| RouterError::InvalidRegex {
                                phase: "middleware.matchers",
                                index,
                                source_pattern: m.source.clone().unwrap_or_else(|| "-".into()),
                                regex: m.source_regex.clone(),
                                message: e.to_string(),
                            },
                        )?,
                        has: matcher::conditions(m.has.as_deref()),
                        missing: matcher::conditions(m.missing.as_deref()),
                        ns_has: matcher::ns_conditions(m.has.as_deref()),
                        ns_missing: matcher::ns_conditions(m.missing.as_deref()),
                    })
                })
                .collect::<Result<_, RouterError>>()?,
        };
        let mut router = Self {
            before_middleware: compile_phase("beforeMiddleware", &r.before_middleware)?,
            before_files: compile_phase("beforeFiles", &r.before_files)?,
            after_files: compile_phase("afterFiles", &r.after_files)?,
            dynamic_routes: compile_phase("dynamicRoutes", &r.dynamic_routes)?,
            dynamic_routes_case_sensitive: compile_phase_with(
                "dynamicRoutes",
                &r.dynamic_routes,
                true,
            )?,
            on_match: compile_phase("onMatch", &r.on_match)?,
            on_match_reads_query: r.on_match.iter().any(|rule| {
                [&rule.has, &rule.missing]
                    .into_iter()
                    .flatten()
                    .flatten()
                    .any(|c| c.kind == ferry_manifest::HasKind::Query)
            }),
            fallback: compile_phase("fallback", &r.fallback)?,
            middleware,
            pathnames: manifest
                .route_pathnames()
                .into_iter()
                .map(str::to_string)
                .collect(),
            base_path: manifest.config.base_path.clone(),
            build_id: manifest.build_id.clone(),
            i18n: manifest.config.i18n.clone(),
            should_normalize_next_data: r.should_normalize_next_data,
            next_start_data_urls: false,
            next_start: false,
            trailing_slash: manifest.config.trailing_slash,
            before_middleware_meta: r.before_middleware.iter().map(RouteMeta::new).collect(),
            meta: PhaseMeta {
                before_files: r.before_files.iter().map(RouteMeta::new).collect(),
                after_files: r.after_files.iter().map(RouteMeta::new).collect(),
                fallback: r.fallback.iter().map(RouteMeta::new).collect(),
                on_match: r.on_match.iter().map(RouteMeta::new).collect(),
            },
            asset_paths: manifest
                .static_files
                .iter()
                .filter(|f| {
                    matches!(
                        f.source,
                        ferry_manifest::StaticSource::Public
                            | ferry_manifest::StaticSource::NextStatic
                    )
                })
                .map(|f| f.pathname.clone())
                .collect(),
            function_paths: manifest
                .functions
                .iter()
                .map(|f| f.pathname.clone())
                .collect(),
            dynamic_page_prerenders: dynamic_page_prerenders(manifest),
            no_fallback: next_start::no_fallback_destinations(&r.dynamic_routes),
            rsc: r.rsc.clone(),
            path_only: memo::PathMap::default(),
        };
        router.path_only = router.path_only_outputs(manifest);
        Ok(router)
    }

    /// `next start` with middleware normalizes a `_next/data/<buildId>/<page>.json` URL to the
    /// page before its filesystem check (resolve-routes.js, `middleware_next_data`), so every
    /// page, API route and file answers at its data URL; `@next/routing` only matches real data
    /// routes. Off by default (the oracle test checks `@next/routing`'s behaviour).
    pub fn with_next_start_data_urls(mut self, on: bool) -> Self {
        self.next_start_data_urls = on;
        self
    }

    /// `next start`'s routing where `@next/routing` differs from it (router-server.js,
    /// resolve-routes.js, filesystem.js of next 16.4.6). Off by default: the oracle tests check
    /// `@next/routing`'s behaviour, and check this mode where the two agree. With it on:
    /// - the locale-detection redirect comes first, for the root path only, relative on the same
    ///   host and to a bare domain (no basePath) for a preferred locale's domain;
    /// - the default locale is added to the pathname with the basePath only when the request
    ///   had it (and to `/api` paths too); a trailing slash the request had is kept;
    /// - internal rules (the trailing-slash redirects) match the path without the default
    ///   locale, so `Location`s carry no default locale and `/docs` → `/docs/` works;
    /// - a redirect's unmatched optional param is dropped from the path with its `/` and kept
    ///   as `:name` in the query; the request query is merged into the destination's;
    /// - the filesystem check needs the basePath, drops one trailing slash, matches locales
    ///   case-insensitively, finds pages under any locale and public files under the default
    ///   ones, and skips `/<locale>/api/...` requests (`checkLocaleApi`);
    /// - with middleware, a `_next/data/<buildId>/…json` URL is turned into its page's URL
    ///   (locale and trailing slash added) before any rule, and every `_next/data` request is
    ///   marked with the request header `x-nextjs-data: 1`;
    /// - middleware matchers and dynamic routes are case-sensitive.
    pub fn with_next_start_semantics(mut self, on: bool) -> Self {
        self.next_start = on;
        self
    }

    /// Whether the app has middleware at all.
    pub fn has_middleware(&self) -> bool {
        !self.middleware.is_empty()
    }

    /// Runs every phase with no middleware.
    pub fn resolve(&self, req: &RequestInfo) -> Resolution {
        match self.start(req) {
            Step::Done(r) => r,
            Step::Continue(state) => self.finish(state),
        }
    }

    fn request_url(req: &RequestInfo) -> Result<Url, String> {
        let mut u = Self::origin_url(req.secure, req.host.as_deref(), &req.path)?;
        if let Some(q) = req.query.as_deref().filter(|q| !q.is_empty()) {
            u.set_query(Some(q));
        }
        Ok(u)
    }

    /// `{scheme}://{host}{path}` (`localhost` for a missing or invalid host). Parsing the
    /// origin is a good part of a resolution, and a server sees the same few hosts: each
    /// thread keeps the last.
    fn origin_url(secure: bool, host: Option<&str>, path: &str) -> Result<Url, String> {
        thread_local! {
            static LAST: std::cell::RefCell<Option<(bool, Option<String>, Url)>> =
                const { std::cell::RefCell::new(None) };
        }
        let cached = LAST.with_borrow(|last| match last {
            Some((s, h, u)) if *s == secure && h.as_deref() == host => Some(u.with_path(path)),
            _ => None,
        });
        if let Some(u) = cached {
            return Ok(u);
        }
        let scheme = if secure { "https" } else { "http" };
        let u = Url::parse(&format!("{scheme}://{}/", host.unwrap_or("localhost")))
            .or_else(|_| Url::parse(&format!("{scheme}://localhost/")))
            .map_err(|e| e.to_string())?;
        let with_path = u.with_path(path);
        LAST.set(Some((secure, host.map(str::to_string), u)));
        Ok(with_path)
    }

    /// Whether `path` starts with [`Router::next_data_prefix`], without building it.
    fn is_next_data_path(&self, path: &str) -> bool {
        path.strip_prefix(self.base_path.as_str())
            .and_then(|p| p.strip_prefix("/_next/data/"))
            .and_then(|p| p.strip_prefix(self.build_id.as_str()))
            .is_some_and(|p| p.starts_with('/'))
    }

    fn next_data_prefix(&self) -> String {
        format!("{}/_next/data/{}/", self.base_path, self.build_id)
    }

    /// `normalizeNextDataUrl`.
    fn normalize_next_data(&self, u: &Url) -> Url {
        let prefix = self.next_data_prefix();
        let mut n = u.clone();
        if let Some(rest) = u.path().strip_prefix(&prefix) {
            let rest = rest.strip_suffix(".json").unwrap_or(rest);
            let p = if rest == "index" {
                if self.base_path.is_empty() {
                    "/".to_string()
                } else {
                    self.base_path.clone()
                }
            } else {
                format!("{}/{rest}", self.base_path)
            };
            n.set_path(&p);
        }
        n
    }

    /// `denormalizeNextDataUrl`.
    fn denormalize_next_data(&self, u: &Url) -> Url {
        let prefix = self.next_data_prefix();
        let mut n = u.clone();
        let s = u.path();
        if !s.starts_with(&prefix) {
            let mut e = s;
            if !self.base_path.is_empty() && s.starts_with(&self.base_path) {
                e = &s[self.base_path.len()..];
            }
            // next start's page URL of a data request keeps a trailing slash.
            let e = if self.next_start && e.len() > 1 {
                e.strip_suffix('/').unwrap_or(e)
            } else {
                e
            };
            let e = if e.is_empty() || e == "/" {
                "/index"
            } else {
                e
            };
            let p = format!("{}/_next/data/{}{e}.json", self.base_path, self.build_id);
            n.set_path(&p);
        }
        n
    }

    fn data_mode(&self, state: &RoutingState) -> bool {
        state.is_next_data && self.should_normalize_next_data
    }

    /// Phase 1: i18n and `beforeMiddleware`. Redirects finish here (before middleware, as in
    /// `next start`).
    pub fn start(&self, req: &RequestInfo) -> Step {
        // A static file whose routing reads only its path was resolved at build (memo.rs).
        if let Some(r) = self.memo_resolution(req) {
            return Step::Done(r);
        }
        // A regex over its step budget (src/bounded.rs) refuses the request: no answer is safe.
        bounded::budget_guard(
            || self.start_unbounded(req),
            |reason| {
                Step::Done(Resolution::Rejected {
                    status: 400,
                    reason,
                })
            },
        )
    }

    fn start_unbounded(&self, req: &RequestInfo) -> Step {
        let url = match Self::request_url(req) {
            Ok(u) => u,
            Err(e) => {
                return Step::Done(Resolution::Rejected {
                    status: 400,
                    reason: format!("invalid request URL: {e}"),
                });
            }
        };
        if url.path().len() > MAX_PATH_LEN {
            return Step::Done(Resolution::Rejected {
                status: 414,
                reason: format!("path longer than {MAX_PATH_LEN} bytes"),
            });
        }
        let request_headers = HeaderList::from_shared(&req.headers);
        if self.next_start {
            return self.start_next_start(req, url, request_headers);
        }
        let is_next_data = self.should_normalize_next_data && self.is_next_data_path(url.path());
        let mut f = url;
        if is_next_data {
            f = self.normalize_next_data(&f);
        }
        // i18n: prefix the locale, maybe a locale redirect.
        let mut locale_redirect: Option<String> = None;
        if let (Some(i18n), false) = (&self.i18n, is_next_data) {
            match self.apply_i18n(i18n, &mut f, &request_headers) {
                Ok(r) => locale_redirect = r,
                Err(e) => {
                    return Step::Done(Resolution::Rejected {
                        status: 500,
                        reason: e,
                    });
                }
            }
        }
        let (f, response_headers, status) =
            match self.before_middleware(f, None, &request_headers, locale_redirect) {
                Ok(phase) => phase,
                Err(r) => return Step::Done(*r),
            };
        let middleware_url = if is_next_data && self.should_normalize_next_data {
            Some(self.denormalize_next_data(&f))
        } else {
            None
        };
        let middleware_url =
            with_init_origin(req, middleware_url.as_ref().unwrap_or(&f)).or(middleware_url);
        Step::Continue(RoutingState {
            is_next_data,
            ..RoutingState::new(f, middleware_url, request_headers, response_headers, status)
        })
    }

    /// [`Router::start`] with `next start`'s semantics (see
    /// [`Router::with_next_start_semantics`]).
    fn start_next_start(
        &self,
        req: &RequestInfo,
        url: Url,
        mut request_headers: HeaderList,
    ) -> Step {
        let bp = self.base_path.as_str();
        let mut f = url.clone();
        let mut locale_api = false;
        let mut default_locale = String::new();
        if let Some(i18n) = &self.i18n {
            // router-server.js: the locale redirect, before any routing.
            let cookie = request_headers.get("cookie");
            let accept = request_headers.get("accept-language");
            let lr = next_start::LocaleRequest {
                path: &req.path,
                query: req.query.as_deref(),
                host: req.host.as_deref(),
                cookie: cookie.as_deref(),
                accept_language: accept.as_deref(),
            };
            if let Some(loc) = next_start::locale_redirect(i18n, bp, self.trailing_slash, &lr) {
                return Step::Done(self.locale_redirect(loc, HeaderList::new()));
            }
            // resolve-routes.js: "ensure locale is present for resolving routes".
            let path = f.path().to_string();
            let had_base_path = next_start::has_prefix(&path, bp);
            let normalized = if had_base_path {
                next_start::remove_prefix(&path, bp).into_owned()
            } else {
                path.clone()
            };
            let (np, detected) = i18n::normalize_locale_path(&normalized, &i18n.locales);
            let host = next_start::hostname(req.host.as_deref());
            default_locale = next_start::default_locale(i18n, host.as_deref()).to_string();
            locale_api = detected.is_some() && next_start::has_prefix(&np, "/api");
            if detected.is_none() && !np.starts_with("/_next/") {
                let p = if np == "/" {
                    format!("/{default_locale}")
                } else {
                    format!("/{default_locale}{np}")
                };
                let mut p = next_start::add_prefix(&p, if had_base_path { bp } else { "" });
                if path.ends_with('/') {
                    p = next_start::maybe_add_trailing_slash(p, self.trailing_slash);
                }
                f.set_path(&p);
            }
        }
        // resolve-routes.js `middleware_next_data` (only with middleware): a data URL becomes
        // its page's URL before any rule.
        let mut is_next_data = false;
        if !self.middleware.is_empty() {
            let path = f.path().to_string();
            let had_base_path = !bp.is_empty() && next_start::has_prefix(&path, bp);
            let mut normalized = if had_base_path {
                next_start::remove_prefix(&path, bp).into_owned()
            } else {
                path.clone()
            };
            let is_data_path =
                next_start::has_prefix(&normalized, "/_next/data") && normalized.ends_with(".json");
            let data_prefix = format!("/_next/data/{}", self.build_id);
            let current =
                next_start::has_prefix(&normalized, &data_prefix) && normalized.ends_with(".json");
            if current {
                let rest = &normalized[data_prefix.len()..];
                let rest = rest.strip_suffix(".json").unwrap_or(rest);
                let rest = if rest.is_empty() { "/" } else { rest };
                // denormalizePagePath
                normalized = match rest {
                    "/index" => "/".to_string(),
                    r => match r.strip_prefix("/index/") {
                        Some(x) if !is_dynamic_template(r) => format!("/{x}"),
                        _ => r.to_string(),
                    },
                };
            }
            if is_data_path {
                request_headers.set("x-nextjs-data", "1");
            }
            if let Some(i18n) = &self.i18n {
                let (np, detected) = i18n::normalize_locale_path(&normalized, &i18n.locales);
                if detected.is_none() && !np.starts_with("/_next/") {
                    normalized = if np == "/" {
                        format!("/{default_locale}")
                    } else {
                        format!("/{default_locale}{np}")
                    };
                }
            }
            if current {
                if had_base_path {
                    normalized = if normalized == "/" {
                        bp.to_string()
                    } else {
                        format!("{bp}{normalized}")
                    };
                }
                normalized = next_start::maybe_add_trailing_slash(normalized, self.trailing_slash);
                f.set_path(&normalized);
                // Without the basePath no data route can match (getItem needs it).
                is_next_data = bp.is_empty() || had_base_path;
            }
        }
        let meta = Some(&self.before_middleware_meta[..]);
        let (f, response_headers, status) =
            match self.before_middleware(f, meta, &request_headers, None) {
                Ok(phase) => phase,
                Err(r) => return Step::Done(*r),
            };
        // next-server invokes the middleware with the request's own URL (`initURL`).
        let middleware_url = is_next_data.then(|| url.clone());
        let middleware_url =
            with_init_origin(req, middleware_url.as_ref().unwrap_or(&f)).or(middleware_url);
        Step::Continue(RoutingState {
            is_next_data,
            locale_api,
            request_path: url.path().to_string(),
            ..RoutingState::new(f, middleware_url, request_headers, response_headers, status)
        })
    }

    /// The `beforeMiddleware` phase on `f`: the URL to go on with, the response headers and
    /// status so far, or the answer (a redirect, external rewrite or rejection; a pending
    /// `locale_redirect` wins over a rule that stopped routing, as in `@next/routing`).
    fn before_middleware(
        &self,
        f: Url,
        meta: Option<&[RouteMeta]>,
        request_headers: &HeaderList,
        mut locale_redirect: Option<String>,
    ) -> Result<(Url, HeaderList, Option<u16>), Box<Resolution>> {
        let mut headers = HeaderList::new();
        let mut status = None;
        let end = self.process_routes(
            &self.before_middleware,
            meta,
            f,
            request_headers,
            &mut headers,
            &mut status,
        );
        Err(Box::new(match end {
            PhaseEnd::Continue(u) => match locale_redirect {
                Some(loc) => self.locale_redirect(loc, headers),
                None => return Ok((u, headers, status)),
            },
            PhaseEnd::Redirect { location, status } => {
                self.redirect(status, Some(location), headers)
            }
            PhaseEnd::External(url) => Resolution::ExternalRewrite {
                url,
                headers: headers.into_sorted_combined(),
                request_headers: request_headers.to_shared(),
                status,
            },
            PhaseEnd::Rejected(reason) => Resolution::Rejected {
                status: 500,
                reason,
            },
            PhaseEnd::Stopped => match locale_redirect.take() {
                Some(loc) => self.locale_redirect(loc, headers),
                None => {
                    let location = headers.get("location");
                    self.redirect(status.unwrap_or(307), location, headers)
                }
            },
        }))
    }

    /// next start's `getItem` (filesystem.js) over the known pathnames: the basePath is
    /// required, one trailing slash is dropped, locales match case-insensitively, pages are
    /// found under any locale and files under the default locales.
    fn next_start_item(&self, path: &str) -> Option<&str> {
        let bp = self.base_path.as_str();
        if !next_start::has_prefix(path, bp) {
            return None;
        }
        let mut item = next_start::remove_prefix(path, bp).into_owned();
        if item.is_empty() {
            item = "/".into();
        }
        if item != "/" && item.ends_with('/') {
            item.pop();
        }
        // Pages only answer at their own spelling (next start 404s `/st%61tic`), files also
        // at the decoded one.
        let decoded = urls::decode_uri_component(&item).filter(|d| *d != item);
        let full = |p: &str| -> Vec<String> {
            if p == "/" {
                if bp.is_empty() {
                    vec!["/".into()]
                } else {
                    vec![bp.to_string(), format!("{bp}/")]
                }
            } else {
                vec![format!("{bp}{p}")]
            }
        };
        let is_page = |p: &str| !self.asset_paths.contains(p);
        for (i, cand) in std::iter::once(item).chain(decoded).enumerate() {
            let decoded = i > 0;
            let page_part = match &self.i18n {
                Some(i18n) => i18n::normalize_locale_path(&cand, &i18n.locales).0,
                None => cand.clone(),
            };
            if next_start_unroutable(&page_part) {
                continue;
            }
            for p in full(&cand) {
                if let Some(found) = self.pathnames.get(&p)
                    && !(decoded && is_page(&p))
                {
                    return Some(found);
                }
            }
            let Some(i18n) = &self.i18n else { continue };
            let (lp, Some(locale)) = i18n::normalize_locale_path(&cand, &i18n.locales) else {
                continue;
            };
            let canonical = if lp == "/" {
                format!("{bp}/{locale}")
            } else {
                format!("{bp}/{locale}{lp}")
            };
            if let Some(found) = self.pathnames.get(&canonical)
                && !(decoded && is_page(&canonical))
            {
                return Some(found);
            }
            let default_locale = locale == i18n.default_locale
                || i18n.domains.iter().any(|d| d.default_locale == locale);
            for p in full(&lp) {
                if let Some(found) = self.pathnames.get(&p)
                    && if is_page(&p) {
                        !decoded
                    } else {
                        default_locale
                    }
                {
                    return Some(found);
                }
            }
        }
        None
    }

    /// `checkLocaleApi`: a `/<locale>/api/...` request whose path no rewrite changed.
    fn locale_api_blocked(&self, state: &RoutingState, url: &Url) -> bool {
        self.next_start && state.locale_api && url.path() == state.request_path
    }

    fn locale_redirect(&self, location: String, mut headers: HeaderList) -> Resolution {
        if !headers.has("location") {
            headers.set("location", &location);
        }
        let all = headers.sorted_combined();
        Resolution::Redirect {
            status: 307,
            location: Some(location),
            next_start_headers: vec![(
                "location".into(),
                headers.get("location").unwrap_or_default(),
            )],
            headers: all,
        }
    }

    fn redirect(&self, status: u16, location: Option<String>, headers: HeaderList) -> Resolution {
        let mut next_start = Vec::new();
        if let Some(l) = headers.get("location") {
            next_start.push(("location".to_string(), l));
        }
        match headers.get("refresh") {
            Some(l) => next_start.push(("refresh".to_string(), l)),
            // `next start` adds `Refresh: 0;url=<location>` to 308s (old browsers), checked
            // against next 16.4.6.
            None if status == 308 => {
                if let Some(l) = headers.get("location") {
                    next_start.push(("refresh".to_string(), format!("0;url={l}")));
                }
            }
            None => {}
        }
        Resolution::Redirect {
            status,
            location,
            headers: headers.sorted_combined(),
            next_start_headers: next_start,
        }
    }

    /// The i18n block of `resolveRoutes`: returns the locale redirect URL, if any.
    fn apply_i18n(
        &self,
        i18n: &I18nConfig,
        f: &mut Url,
        headers: &HeaderList,
    ) -> Result<Option<String>, String> {
        let bp = self.base_path.as_str();
        let path = f.path().to_string();
        let e = match path.strip_prefix(bp) {
            Some("") => "/".to_string(),
            Some(rest) => rest.to_string(),
            None => path.clone(),
        };
        if e.starts_with("/_next/") || e.starts_with("/api/") {
            return Ok(None);
        }
        let hostname = f.host_str().unwrap_or_default().to_string();
        let cookie = headers.get("cookie").filter(|v| !v.is_empty());
        let accept = headers.get("accept-language").filter(|v| !v.is_empty());
        let (norm_path, detected) = i18n::normalize_locale_path(&e, &i18n.locales);
        let in_path = detected.is_some();
        let domain = i18n::detect_domain_locale(&i18n.domains, Some(&hostname), None);
        let default = domain
            .map(|d| d.default_locale.as_str())
            .filter(|l| !l.is_empty())
            .unwrap_or(&i18n.default_locale);
        let mut locale: &str = detected.unwrap_or(default);
        let mut redirect = None;
        let detect = i18n.locale_detection != Some(false) && !in_path && norm_path == "/";
        if detect {
            locale = i18n::detect_locale(
                &e,
                Some(&hostname),
                cookie.as_deref(),
                accept.as_deref(),
                i18n,
            );
            if locale != default {
                let target = i18n::detect_domain_locale(&i18n.domains, None, Some(locale));
                if let Some(t) = target.filter(|t| t.domain != hostname) {
                    let scheme = if t.http == Some(true) {
                        "http"
                    } else {
                        "https"
                    };
                    let prefix = if locale == t.default_locale {
                        String::new()
                    } else {
                        format!("/{locale}")
                    };
                    let s = format!("{scheme}://{}{bp}{prefix}{e}{}", t.domain, urls::search(f));
                    let u = Url::parse(&s).map_err(|err| format!("locale redirect {s}: {err}"))?;
                    redirect = Some(u.to_string());
                }
                if target.is_none_or(|t| t.domain == hostname) {
                    let mut t = f.clone();
                    t.set_path(&format!("{bp}/{locale}{e}"));
                    redirect = Some(t.to_string());
                }
            }
        }
        if !in_path && redirect.is_none() {
            let l = if locale.is_empty() { default } else { locale };
            f.set_path(&format!("{bp}/{l}{e}"));
        }
        Ok(redirect)
    }

    /// `processRoutes` for `beforeMiddleware` / `beforeFiles`.
    fn process_routes(
        &self,
        routes: &RouteList,
        meta: Option<&[RouteMeta]>,
        mut url: Url,
        req_headers: &HeaderList,
        res_headers: &mut HeaderList,
        status: &mut Option<u16>,
    ) -> PhaseEnd {
        // One scan for the phase's candidates (redone when a rewrite changes the path).
        let mut candidates = routes.candidates(url.path());
        let mut from = 0;
        while let Some(i) = candidates.next(from) {
            from = i + 1;
            let Some(route) = routes.get(i) else {
                break;
            };
            let meta = meta.and_then(|m| m.get(i));
            // next start matches internal rules against the path without the default locale.
            let internal_url = match (&self.i18n, meta) {
                (Some(i18n), Some(mt)) if self.next_start && mt.internal => {
                    let host = next_start::hostname(url.host_str());
                    let dl = next_start::default_locale(i18n, host.as_deref());
                    let mut u = url.clone();
                    u.set_path(&next_start::internal_route_path(
                        url.path(),
                        &self.base_path,
                        i18n,
                        dl,
                        self.trailing_slash,
                    ));
                    Some(u)
                }
                _ => None,
            };
            let match_url = internal_url.as_ref().unwrap_or(&url);
            let Some(m) = self.rule_match(route, meta, match_url, req_headers) else {
                continue;
            };
            if let Err(bad) = apply_rule_headers(route, &m, res_headers, status) {
                return PhaseEnd::Rejected(bad);
            }
            if is_redirect_status(route.status)
                && m.headers.as_deref().is_some_and(has_redirect_headers)
            {
                let rs = route.status.unwrap_or(307);
                if let Some(dest) = &m.destination {
                    return match self.destination_url(&url, dest) {
                        Ok(u) => PhaseEnd::Redirect {
                            location: u.to_string(),
                            status: rs,
                        },
                        Err(e) => PhaseEnd::Rejected(e),
                    };
                }
                let loc = m.headers.as_deref().and_then(|h| {
                    h.iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case("location"))
                        .map(|(_, v)| v.clone())
                });
                if let (true, Some(mt)) = (self.next_start, meta) {
                    if let Some(loc) = self.next_start_location(route, mt, match_url, req_headers) {
                        res_headers.set("location", &urls::merge_request_query(&loc, &url));
                    }
                    return PhaseEnd::Stopped;
                }
                if let Some(loc) = loc.filter(|l| !l.is_empty()) {
                    res_headers.set("location", &urls::redirect_location_with_query(&loc, &url));
                }
                return PhaseEnd::Stopped;
            }
            if let Some(dest) = &m.destination {
                url = match self.rewrite_target(route, meta, &url, match_url, req_headers, dest) {
                    Ok(Rewritten::Internal(u)) => u,
                    Ok(Rewritten::External(u)) => return PhaseEnd::External(u),
                    Err(e) => return PhaseEnd::Rejected(e),
                };
                candidates = routes.candidates(url.path());
            }
        }
        PhaseEnd::Continue(url)
    }

    /// A redirect rule's `Location` as next start's `prepareDestination` builds it (unmatched
    /// optional params: see [`next_start::redirect_template`]).
    fn next_start_location(
        &self,
        route: &CompiledRoute,
        meta: &RouteMeta,
        url: &Url,
        req_headers: &HeaderList,
    ) -> Option<String> {
        let template = route
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("location"))
            .map(|(_, v)| v.as_str())
            .filter(|l| !l.is_empty())?;
        let (regex, caps) = next_start_captures(route, meta, url, req_headers)?;
        let template = next_start::redirect_template(template, &regex, &meta.params);
        Some(replace_destination(&template, Some(&regex), &caps))
    }

    /// `matchRoute`; in next-start mode with next start's `matchHas` (values anchored, its
    /// params interpolated) for a rule with conditions.
    fn rule_match<'a>(
        &self,
        route: &'a CompiledRoute,
        meta: Option<&RouteMeta>,
        url: &Url,
        req_headers: &HeaderList,
    ) -> Option<RouteMatch<'a>> {
        let Some(meta) =
            meta.filter(|m| self.next_start && (!m.has.is_empty() || !m.missing.is_empty()))
        else {
            return route.match_route(url, req_headers);
        };
        let (regex, caps) = next_start_captures(route, meta, url, req_headers)?;
        Some(route.interpolated(&regex, &caps))
    }

    /// A rewrite's destination as next start builds it (see [`next_start::prepare_rewrite`]);
    /// `None` outside next-start mode or when the rule does not match.
    fn next_start_rewrite(
        &self,
        route: &CompiledRoute,
        meta: &RouteMeta,
        url: &Url,
        req_headers: &HeaderList,
    ) -> Option<next_start::PreparedRewrite> {
        if !self.next_start {
            return None;
        }
        let dest = route.destination.as_deref()?;
        let regex = js_match(&route.re, url.path())?;
        let has = matcher::next_start_match_has(&meta.has, &meta.missing, url, req_headers)?;
        Some(next_start::prepare_rewrite(
            dest,
            &regex,
            &meta.params,
            meta.user_query,
            has,
        ))
    }

    /// Where a rewrite rule sends `url` (matched as `match_url`): an absolute external URL, or
    /// `url` with the destination's path and query (never another origin).
    fn rewrite_target(
        &self,
        route: &CompiledRoute,
        meta: Option<&RouteMeta>,
        url: &Url,
        match_url: &Url,
        req_headers: &HeaderList,
        dest: &str,
    ) -> Result<Rewritten, String> {
        let prepared =
            meta.and_then(|mt| self.next_start_rewrite(route, mt, match_url, req_headers));
        if is_external(dest) {
            let target = prepared.map_or_else(
                || dest.to_string(),
                |p| urls::with_dest_query(&p.path, &p.query),
            );
            return Url::parse(&target)
                .map(|u| Rewritten::External(u.to_string()))
                .map_err(|e| format!("external rewrite {target}: {e}"));
        }
        Ok(Rewritten::Internal(match prepared {
            Some(p) => urls::assign_destination(url, &p.path, &p.query),
            None => urls::apply_internal_destination(url, dest),
        }))
    }

    /// `applyDestination` (or `new URL(dest)` for an external one).
    fn destination_url(&self, url: &Url, dest: &str) -> Result<Url, String> {
        if is_external(dest) {
            Url::parse(dest).map_err(|e| format!("redirect destination {dest}: {e}"))
        } else {
            Ok(urls::apply_internal_destination(url, dest))
        }
    }

    /// Whether the middleware runs for this request (`shouldInvokeMiddlewareForRequest`).
    pub fn middleware_matches(&self, state: &RoutingState) -> bool {
        // Over the step budget: run the middleware (it may guard the path); `finish` refuses.
        bounded::budget_guard(|| self.middleware_matches_unbounded(state), |_| true)
    }

    fn middleware_matches_unbounded(&self, state: &RoutingState) -> bool {
        if self.middleware.is_empty() {
            return false;
        }
        let url = &state.url;
        let h = &state.request_headers;
        let matches = |path: &str| {
            self.middleware.iter().any(|m| {
                let re = if self.next_start {
                    &m.re_case_sensitive
                } else {
                    &m.re
                };
                matcher::js_is_match(re, path)
                    && if self.next_start {
                        matcher::next_start_match_has(&m.ns_has, &m.ns_missing, url, h).is_some()
                    } else {
                        matcher::has_holds(&m.has, url, h)
                            && matcher::check_missing(&m.missing, url, h)
                    }
            })
        };
        if matches(url.path()) {
            return true;
        }
        // Without a `%` the decoded path is the same one.
        if !url.path().contains('%') {
            return false;
        }
        match urls::decode_uri_component(url.path()) {
            Some(d) if d != url.path() => matches(&d),
            _ => false,
        }
    }

    /// Applies what the middleware answered (its status and response headers: the
    /// `x-middleware-*` protocol, `location`, `set-cookie` ...).
    pub fn apply_middleware(
        &self,
        state: &mut RoutingState,
        status: u16,
        headers: &[(String, String)],
    ) -> MiddlewareEffect {
        middleware::apply(state, status, headers)
    }

    /// The remaining phases: `beforeFiles`, filesystem, `afterFiles`, `dynamicRoutes`,
    /// `fallback`.
    pub fn finish(&self, state: RoutingState) -> Resolution {
        bounded::budget_guard(
            || self.finish_unbounded(state),
            |reason| Resolution::Rejected {
                status: 400,
                reason,
            },
        )
    }

    fn finish_unbounded(&self, mut state: RoutingState) -> Resolution {
        let data = self.data_mode(&state);
        // Nothing below reads `state.url` again: move it.
        let mut f = state.url.take();
        if data {
            f = self.normalize_next_data(&f);
        }
        let mut status = state.status;
        let end = self.process_routes(
            &self.before_files,
            Some(&self.meta.before_files),
            f,
            &state.request_headers,
            &mut state.response_headers,
            &mut status,
        );
        state.status = status;
        let mut f = match end {
            PhaseEnd::Redirect { location, status } => {
                return self.redirect_from_state(&state, status, Some(location));
            }
            PhaseEnd::External(u) => return self.external(&state, u),
            PhaseEnd::Rejected(reason) => {
                return Resolution::Rejected {
                    status: 500,
                    reason,
                };
            }
            PhaseEnd::Stopped => {
                let loc = state.response_headers.get("location");
                return self.redirect_from_state(&state, state.status.unwrap_or(307), loc);
            }
            PhaseEnd::Continue(u) => u,
        };
        if data {
            f = self.denormalize_next_data(&f);
        }
        // Filesystem.
        let fs = if !self.next_start || data {
            self.pathnames.get(f.path()).map(String::as_str)
        } else if self.locale_api_blocked(&state, &f) {
            None
        } else {
            self.next_start_item(f.path())
        };
        // A page named only by its decoded spelling answers with the 404 page (next_start.rs).
        if fs.is_none()
            && self.next_start
            && !data
            && !self.locale_api_blocked(&state, &f)
            && let Some(page) = self.decoded_page_not_found(f.path(), f.host_str())
        {
            return self.output(&state, &f, &page, f.path(), Vec::new());
        }
        // next start looks for a dynamic route's prerendered path only after `afterFiles`: a
        // rewrite there that changes the URL wins (resolve-routes.js `check_fs` knows page files).
        let mut after_files_done = false;
        let fs = match fs {
            Some(item)
                if self.next_start && !data && self.dynamic_page_prerenders.contains(item) =>
            {
                let (mut st, mut g) = (state.clone(), f.clone());
                if let Some(r) =
                    self.rewrite_phase(&self.after_files, &self.meta.after_files, &mut st, &mut g)
                {
                    return r;
                }
                if g.as_str() == f.as_str() {
                    Some(item)
                } else {
                    (state, f, after_files_done) = (st, g, true);
                    None
                }
            }
            other => other,
        };
        if let Some(fs) = fs {
            // A prerender or file is named without the trailing slash next start drops.
            if self.next_start
                && !data
                && !self.function_paths.contains(fs)
                && f.path().len() > 1
                && let Some(p) = f.path().strip_suffix('/')
            {
                let p = p.to_string();
                f.set_path(&p);
            }
            // (A locale with brackets could hide the template when the locale is stripped.)
            let fs_is_template = is_dynamic_template(fs)
                || self
                    .i18n
                    .as_ref()
                    .is_some_and(|i| i.locales.iter().any(|l| l.contains('[')));
            for route in self.dynamic_route_list().matching(f.path()) {
                // A destination that is a template whatever the request (`/blog/[slug]$2?…`)
                // can only name `fs` when `fs` is a template too: skip its regex.
                if !fs_is_template && route.dest_always_template {
                    continue;
                }
                let Some(d) = self.dynamic_destination(route, &state, &f) else {
                    continue;
                };
                let target = match self.match_pathname_locale_fallback(d.path()) {
                    None if is_dynamic_template(d.path()) => continue,
                    None => fs,
                    Some(found) if found == fs || is_dynamic_template(fs) => found,
                    Some(_) => continue,
                };
                let params = route_params(&d.matched);
                return match d.invocation_url() {
                    Ok(url) => self.output_final(&mut state, &url, target, f.path(), params),
                    Err(q) => self.output_final_with_query(
                        &mut state,
                        &f,
                        Some(q),
                        target,
                        f.path(),
                        params,
                    ),
                };
            }
            return self.output_final(&mut state, &f, fs, f.path(), Vec::new());
        }
        if data {
            f = self.normalize_next_data(&f);
            let page = if self.next_start {
                self.next_start_item(f.path())
            } else {
                self.pathnames.get(f.path()).map(String::as_str)
            };
            if self.next_start_data_urls
                && !self.middleware.is_empty()
                && let Some(fs) = page
            {
                let mut out = self.output_final(&mut state, &f, fs, f.path(), Vec::new());
                if let Resolution::Output(o) = &mut out {
                    o.next_data_page = true;
                }
                return out;
            }
        }
        // afterFiles
        if !after_files_done
            && let Some(r) = self.rewrite_phase(
                &self.after_files,
                &self.meta.after_files,
                &mut state,
                &mut f,
            )
        {
            return r;
        }
        // dynamicRoutes
        if let Some(r) = self.check_dynamic_routes(&mut state, &f) {
            return r;
        }
        // fallback
        if let Some(r) = self.rewrite_phase(&self.fallback, &self.meta.fallback, &mut state, &mut f)
        {
            return r;
        }
        Resolution::NotFound {
            headers: state.response_headers.into_sorted_combined(),
            request_headers: state.request_headers.into_shared(),
            status: state.status,
            declined: None,
        }
    }

    /// The `afterFiles` / `fallback` loop of `resolveRoutes`.
    fn rewrite_phase(
        &self,
        routes: &RouteList,
        metas: &[RouteMeta],
        state: &mut RoutingState,
        f: &mut Url,
    ) -> Option<Resolution> {
        let data = self.data_mode(state);
        // One scan for the phase's candidates (redone when a rewrite changes the path).
        let mut candidates = routes.candidates(f.path());
        let mut from = 0;
        while let Some(i) = candidates.next(from) {
            from = i + 1;
            let (Some(route), Some(meta)) = (routes.get(i), metas.get(i)) else {
                break;
            };
            let Some(m) = self.rule_match(route, Some(meta), f, &state.request_headers) else {
                continue;
            };
            if let Err(reason) =
                apply_rule_headers(route, &m, &mut state.response_headers, &mut state.status)
            {
                return Some(Resolution::Rejected {
                    status: 500,
                    reason,
                });
            }
            let Some(dest) = &m.destination else {
                continue;
            };
            if is_redirect_status(route.status)
                && m.headers.as_deref().is_some_and(has_redirect_headers)
            {
                return Some(match self.destination_url(f, dest) {
                    Ok(u) => self.redirect_from_state(
                        state,
                        route.status.unwrap_or(307),
                        Some(u.to_string()),
                    ),
                    Err(reason) => Resolution::Rejected {
                        status: 500,
                        reason,
                    },
                });
            }
            *f = match self.rewrite_target(route, Some(meta), f, f, &state.request_headers, dest) {
                Ok(Rewritten::Internal(u)) => u,
                Ok(Rewritten::External(u)) => return Some(self.external(state, u)),
                Err(reason) => {
                    return Some(Resolution::Rejected {
                        status: 500,
                        reason,
                    });
                }
            };
            candidates = routes.candidates(f.path());
            // checkDynamicRoutes
            let base = if data {
                self.denormalize_next_data(f)
            } else {
                f.clone()
            };
            if let Some(r) = self.check_dynamic_routes(state, &base) {
                return Some(r);
            }
            let s = if data {
                self.denormalize_next_data(f)
            } else {
                f.clone()
            };
            let found = if self.next_start && !data {
                self.next_start_item(s.path())
            } else {
                self.pathnames.get(s.path()).map(String::as_str)
            };
            if let Some(found) = found {
                return Some(self.output_final(state, &s, found, s.path(), Vec::new()));
            }
        }
        None
    }

    /// `matchesPathnameWithLocaleFallback`.
    /// The `dynamicRoutes` phase as this mode matches it: case-sensitively under next start
    /// semantics (`/Posts/one` is no `/posts/[id]` there), else like `@next/routing`.
    fn dynamic_route_list(&self) -> &RouteList {
        if self.next_start {
            &self.dynamic_routes_case_sensitive
        } else {
            &self.dynamic_routes
        }
    }

    /// `checkDynamicRoutes`: the first dynamic route whose destination is a known pathname.
    fn check_dynamic_routes(&self, state: &mut RoutingState, url: &Url) -> Option<Resolution> {
        if self.locale_api_blocked(state, url) {
            return None;
        }
        for route in self.dynamic_route_list().matching(url.path()) {
            let Some(d) = self.dynamic_destination(route, state, url) else {
                // next start matches a `fallback: false` page's route without the cookie the
                // adapter's rule asks for (next_start.rs).
                if let Some(r) = self.no_fallback_match(route, state, url) {
                    return Some(r);
                }
                continue;
            };
            if let Some(found) = self.match_pathname_locale_fallback(d.path()) {
                let params = route_params(&d.matched);
                return Some(match d.invocation_url() {
                    Ok(u) => self.output_final(state, &u, found, url.path(), params),
                    Err(q) => {
                        self.output_final_with_query(state, url, Some(q), found, url.path(), params)
                    }
                });
            }
        }
        None
    }

    /// A dynamic route applied to `url`: its match, destination pathname and the URL to invoke
    /// (destination query merged), or `None` when the route does not match.
    fn dynamic_destination<'u>(
        &self,
        route: &CompiledRoute,
        state: &RoutingState,
        url: &'u Url,
    ) -> Option<DynamicDestination<'u>> {
        let (matched, caps) = route.match_dynamic(url, &state.request_headers)?;
        let dest = route.destination_for(&matched, &caps);
        Some(DynamicDestination { matched, dest, url })
    }

    fn match_pathname_locale_fallback(&self, pathname: &str) -> Option<&str> {
        if let Some(p) = self.pathnames.get(pathname) {
            return Some(p);
        }
        let i18n = self.i18n.as_ref()?;
        let bp = self.base_path.as_str();
        let r = if !bp.is_empty() && pathname.starts_with(bp) {
            let r = &pathname[bp.len()..];
            if r.is_empty() { "/" } else { r }
        } else {
            pathname
        };
        for l in &i18n.locales {
            let a = format!("/{l}");
            let rest = if r == a {
                "/"
            } else if let Some(rest) = r.strip_prefix(&format!("{a}/")) {
                if rest.is_empty() { "/" } else { &r[a.len()..] }
            } else {
                continue;
            };
            let o = if bp.is_empty() {
                rest.to_string()
            } else {
                format!("{bp}{rest}")
            };
            if let Some(p) = self.pathnames.get(&o) {
                return Some(p);
            }
        }
        None
    }

    fn external(&self, state: &RoutingState, url: String) -> Resolution {
        Resolution::ExternalRewrite {
            url,
            headers: state.response_headers.sorted_combined(),
            request_headers: state.request_headers.to_shared(),
            status: state.status,
        }
    }

    fn redirect_from_state(
        &self,
        state: &RoutingState,
        status: u16,
        location: Option<String>,
    ) -> Resolution {
        let mut r = self.redirect(status, location, state.response_headers.clone());
        if let Resolution::Redirect {
            next_start_headers, ..
        } = &mut r
        {
            for (k, v) in state.middleware_headers.sorted_combined() {
                if !next_start_headers.iter().any(|(nk, _)| *nk == k) {
                    next_start_headers.push((k, v));
                }
            }
        }
        r
    }

    /// Builds an [`Output`] with `onMatch` headers applied (`withResolvedInvocationTarget`),
    /// leaving `state` as it is (a copy of it goes into the output: the routing phases'
    /// outputs use [`Router::output_final`]).
    fn output(
        &self,
        state: &RoutingState,
        url: &Url,
        pathname: &str,
        invocation_path: &str,
        route_matches: Vec<(Arc<str>, String)>,
    ) -> Resolution {
        let mut copy = state.clone();
        self.output_final(&mut copy, url, pathname, invocation_path, route_matches)
    }

    /// [`Router::output`] for a state routing is done with: its header lists move into the
    /// output instead of being copied.
    fn output_final(
        &self,
        state: &mut RoutingState,
        url: &Url,
        pathname: &str,
        invocation_path: &str,
        route_matches: Vec<(Arc<str>, String)>,
    ) -> Resolution {
        self.output_final_with_query(state, url, None, pathname, invocation_path, route_matches)
    }

    /// [`Router::output_final`] for `url` with its query replaced by `query` when given (built
    /// as a URL only when an `onMatch` rule reads the query).
    fn output_final_with_query(
        &self,
        state: &mut RoutingState,
        url: &Url,
        query: Option<&str>,
        pathname: &str,
        invocation_path: &str,
        route_matches: Vec<(Arc<str>, String)>,
    ) -> Resolution {
        let headers = std::mem::take(&mut state.response_headers);
        let with_query;
        let (url, query) = match query {
            Some(q) if self.on_match_reads_query => {
                let mut u = url.clone();
                u.set_query(Some(q));
                with_query = u;
                (&with_query, None)
            }
            other => (url, other),
        };
        let parts = self.output_parts(
            state,
            headers,
            url,
            query,
            pathname,
            invocation_path,
            route_matches,
        );
        match parts {
            Ok(o) => Resolution::Output(o),
            Err(reason) => Resolution::Rejected {
                status: 500,
                reason,
            },
        }
    }

    /// The [`Output`] of [`Router::output`] with `headers` as the response headers so far (the
    /// request headers move out of `state`); `Err` (why) when an `onMatch` rule produced an
    /// invalid header.
    #[allow(clippy::too_many_arguments)]
    fn output_parts(
        &self,
        state: &mut RoutingState,
        mut headers: HeaderList,
        url: &Url,
        query: Option<&str>,
        pathname: &str,
        invocation_path: &str,
        route_matches: Vec<(Arc<str>, String)>,
    ) -> Result<Output, String> {
        // next start (resolve-routes.js) applies `onMatchHeaders` to the pathname it matched,
        // which for a `_next/data` request is the page's, never `/_next/data/…` (so its
        // `/_next/data/(.*)` deployment-id rule never fires there). `next start` wins.
        let normalized;
        let on_match_url = if self.data_mode(state) {
            normalized = self.normalize_next_data(url);
            &normalized
        } else {
            url
        };
        for (r, meta) in self.on_match.iter().zip(&self.meta.on_match) {
            if let Some(m) = self.rule_match(r, Some(meta), on_match_url, &state.request_headers) {
                // `onMatch` applies headers only (a status there does not count).
                let mut unused_status = None;
                apply_rule_headers(r, &m, &mut headers, &mut unused_status)?;
            }
        }
        Ok(Output {
            pathname: pathname.to_string(),
            invocation_path: invocation_path.to_string(),
            // `query`: the query to invoke with when it is not `url`'s (no `onMatch` rule reads
            // it, see `output_final_with_query`).
            query: match query {
                Some(q) => urls::query_str_pairs(q),
                None => urls::query_pairs(url),
            },
            route_matches,
            headers: headers.into_sorted_combined(),
            rsc: self.rsc_request(&state.request_headers, pathname),
            request_headers: std::mem::take(&mut state.request_headers).into_shared(),
            status: state.status,
            next_data_page: false,
            query_arrays: urls::query_arrays(url),
        })
    }

    /// RSC request detection (a `next start` behaviour `@next/routing` leaves to the platform):
    /// which `.rsc` / segment output answers an `rsc: 1` request for `pathname`.
    fn rsc_request(&self, h: &HeaderList, pathname: &str) -> Option<RscRequest> {
        if h.get_str(&self.rsc.header).as_deref() != Some("1") {
            return None;
        }
        let prefetch = h.get_str(&self.rsc.prefetch_header).as_deref() == Some("1");
        let segment = h.get(&self.rsc.prefetch_segment_header);
        let bp = self.base_path.as_str();
        let stem = if pathname == "/"
            || pathname.strip_prefix(bp) == Some("/")
            || (!bp.is_empty() && pathname == bp)
        {
            Cow::Owned(format!("{}/index", self.base_path))
        } else {
            Cow::Borrowed(pathname.trim_end_matches('/'))
        };
        let rsc_pathname = if pathname.ends_with(&self.rsc.suffix) {
            Some(pathname.to_string())
        } else {
            let mut p = String::with_capacity(stem.len() + self.rsc.suffix.len());
            p.push_str(&stem);
            p.push_str(&self.rsc.suffix);
            self.pathnames.contains(&p).then_some(p)
        };
        let segment_pathname = segment.as_ref().and_then(|s| {
            let p = format!(
                "{stem}{}{s}{}",
                self.rsc.prefetch_segment_dir_suffix, self.rsc.prefetch_segment_suffix
            );
            self.pathnames.contains(&p).then_some(p)
        });
        Some(RscRequest {
            header: true,
            prefetch,
            segment,
            rsc_pathname,
            segment_pathname,
        })
    }
}

/// Page paths next start's filesystem check never answers with their own page: the pages
/// router's internals, `/404` (rendered as the 404 it is) and `/index` (the index page is `/`).
fn next_start_unroutable(page: &str) -> bool {
    matches!(page, "/_app" | "/_document" | "/_error" | "/404" | "/index")
}

/// `u`'s path and query on `next start`'s own origin ([`RequestInfo::init_origin`]), if set.
fn with_init_origin(req: &RequestInfo, u: &Url) -> Option<Url> {
    let mut n = Url::parse(req.init_origin.as_deref()?).ok()?;
    n.set_path(u.path());
    n.set_query(u.query());
    Some(n)
}

/// A rule's regex match and next start's `matchHas` params (the defined ones) on `url`, or
/// `None` when either fails.
fn next_start_captures<'u>(
    route: &CompiledRoute,
    meta: &RouteMeta,
    url: &'u Url,
    req_headers: &HeaderList,
) -> Option<(matcher::RegexMatch<'u>, matcher::Captures)> {
    let regex = js_match(&route.re, url.path())?;
    let caps = matcher::next_start_match_has(&meta.has, &meta.missing, url, req_headers)?
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
    Some((regex, caps))
}

/// `s` up to its first `?` (all of it when there is none).
fn before_question_mark(s: &str) -> &str {
    match s.bytes().position(|b| b == b'?') {
        Some(i) => &s[..i],
        None => s,
    }
}

/// The query `mergeDestinationQueryIntoUrl` ([`urls::merge_destination_query`]) gives `u` for
/// `dest` when it needs no parse / serialize round trip: a dynamic route's destination query
/// (`nxtPslug=hello`) usually meets a URL without a query and is already what
/// `URLSearchParams` would serialize (unique keys, each pair `k=v` of bytes it leaves as they
/// are); then the new query is that text as it stands. `None`: do the full merge.
fn verbatim_destination_query<'d>(u: &Url, dest: &'d str) -> Option<&'d str> {
    // `dest.split('?').nth(1)`; destinations are short: a byte scan beats `split`'s setup.
    let q = match before_question_mark(dest).len() {
        n if n < dest.len() => before_question_mark(&dest[n + 1..]),
        _ => "",
    };
    let serialized_as_is =
        |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'*' | b'-' | b'.' | b'_');
    let verbatim = |q: &str| {
        // `k=v` pairs joined by `&`, one `=` each, every other byte kept as it is: one byte
        // pass (the usual destination has one pair, so its keys are unique).
        let mut eq = false;
        let mut pairs = 1;
        for b in q.bytes() {
            match b {
                b'&' if eq => {
                    eq = false;
                    pairs += 1;
                }
                b'=' if !eq => eq = true,
                b if serialized_as_is(b) => {}
                _ => return false,
            }
        }
        if !eq {
            return false;
        }
        if pairs == 1 {
            return true;
        }
        // Unique keys: each checked against the ones before it (a destination has few).
        q.split('&').enumerate().all(|(i, pair)| {
            let Some((k, v)) = pair.split_once('=') else {
                return false;
            };
            k.bytes().all(serialized_as_is)
                && v.bytes().all(serialized_as_is)
                && !q
                    .split('&')
                    .take(i)
                    .any(|p| p.split_once('=').is_some_and(|(pk, _)| pk == k))
        })
    };
    (u.query().is_none() && !q.is_empty() && verbatim(q)).then_some(q)
}

/// `mergeDestinationQueryIntoUrl` ([`urls::merge_destination_query`]), with the
/// [`verbatim_destination_query`] shortcut.
#[cfg(test)]
fn merge_destination_query(u: &Url, dest: &str) -> Url {
    match verbatim_destination_query(u, dest) {
        Some(q) => {
            let mut n = u.clone();
            n.set_query(Some(q));
            n
        }
        None => urls::merge_destination_query(u, dest),
    }
}

/// A matched rule's headers (`Headers.set` each) and status, applied; `Err` when a header is one
/// `Headers.set` refuses (see [`invalid_header`]).
fn apply_rule_headers(
    route: &CompiledRoute,
    m: &RouteMatch<'_>,
    res_headers: &mut HeaderList,
    status: &mut Option<u16>,
) -> Result<(), String> {
    if let Some(h) = &m.headers {
        // The rule's own (uninterpolated) headers were checked when it was compiled.
        let checked = matches!(h, Cow::Borrowed(_)) && route.headers_valid;
        if !checked && let Some(bad) = invalid_header(h) {
            return Err(bad);
        }
        for (k, v) in h.iter() {
            res_headers.set(k, v);
        }
    }
    if route.status.is_some() {
        *status = route.status;
    }
    Ok(())
}

/// A header a rule produced (after `$param` interpolation) that JavaScript's `Headers.set`
/// refuses: `@next/routing` then fails the whole request (and `next start`'s `setHeader` throws
/// too), so the router rejects it with 500 instead of sending it.
fn invalid_header(h: &[(String, String)]) -> Option<String> {
    h.iter()
        .find(|(k, v)| !headers::valid_header(k, v))
        .map(|(k, v)| format!("a headers rule produced an invalid header {k:?}: {v:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_manifest::{
        BundleKind, MANIFEST_VERSION, Route, RuntimeConfig, StaticFile, StaticSource,
    };
    use std::time::{Duration, Instant};

    /// The verbatim shortcut of `merge_destination_query` gives what the full
    /// `URLSearchParams` merge does.
    #[test]
    fn destination_query_shortcut_matches_the_full_merge() {
        let bare = Url::parse("http://h/blog/x").expect("url");
        let with_query = Url::parse("http://h/blog/x?a=1").expect("url");
        for dest in [
            "/blog/[slug]?nxtPslug=x",
            "/p?a=1&b=2",
            "/p?a=1&a=2",
            "/p?a=1&",
            "/p?a=1&&b=2",
            "/p?=b",
            "/p?a",
            "/p?a=b=c",
            "/p?a=%20",
            "/p?a=b+c",
            "/p?a=é",
            "/p?a=1?b=2",
            "/p?",
            "/p",
        ] {
            for u in [&bare, &with_query] {
                assert_eq!(
                    merge_destination_query(u, dest),
                    urls::merge_destination_query(u, dest),
                    "{dest}"
                );
            }
        }
    }

    /// The showcase app's real routing table (tests/fixtures/showcase.json).
    fn showcase() -> Manifest {
        let v: serde_json::Value =
            serde_json::from_str(include_str!("../tests/fixtures/showcase.json")).expect("json");
        let routing: Routing = serde_json::from_value(v["routing"].clone()).expect("routing");
        let matchers = serde_json::from_value(v["middlewareMatchers"].clone()).expect("matchers");
        let pathnames: Vec<String> = serde_json::from_value(v["pathnames"].clone()).expect("paths");
        manifest(
            routing,
            "",
            Some(matchers),
            &pathnames,
            v["buildId"].as_str().unwrap_or("b"),
        )
    }

    use ferry_manifest::Routing;

    fn manifest(
        routing: Routing,
        base_path: &str,
        matchers: Option<Vec<ferry_manifest::MiddlewareMatcher>>,
        pathnames: &[String],
        build_id: &str,
    ) -> Manifest {
        Manifest {
            version: MANIFEST_VERSION,
            ferry_version: "t".into(),
            next_version: "16".into(),
            kind: BundleKind::Server,
            build_id: build_id.into(),
            deployment_id: None,
            config: RuntimeConfig {
                base_path: base_path.into(),
                ..RuntimeConfig::default()
            },
            routing,
            functions: vec![],
            middleware: matchers.map(|matchers| ferry_manifest::MiddlewareOutput {
                entry: "m.js".into(),
                runtime: "nodejs".into(),
                matchers,
            }),
            prerenders: vec![],
            static_files: pathnames
                .iter()
                .map(|p| StaticFile {
                    pathname: p.clone(),
                    file: p.clone(),
                    source: StaticSource::Public,
                    content_type: "x".into(),
                    size: 0,
                    hash: String::new(),
                    immutable_hash: None,
                    encodings: vec![],
                })
                .collect(),
            server: None,
        }
    }

    fn get(path: &str, query: Option<&str>, headers: &[(&str, &str)]) -> RequestInfo {
        RequestInfo {
            method: "GET".into(),
            path: path.into(),
            query: query.map(str::to_string),
            headers: std::sync::Arc::new(
                headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            host: Some("localhost:3000".into()),
            secure: false,
            init_origin: None,
        }
    }

    fn output(r: Resolution) -> Output {
        match r {
            Resolution::Output(o) => o,
            other => panic!("expected an output, got {other:?}"),
        }
    }

    #[test]
    fn trailing_slash_and_user_redirects_skip_header_rules_for_next_start() {
        let router = Router::new(&showcase()).expect("router");
        match router.resolve(&get("/blog/hello/", Some("a=1"), &[])) {
            Resolution::Redirect {
                status,
                location,
                headers,
                next_start_headers,
            } => {
                assert_eq!(status, 308);
                assert_eq!(location.as_deref(), Some("/blog/hello?a=1"));
                assert!(
                    headers
                        .iter()
                        .any(|(k, _)| k == "x-powered-by-ferry-example")
                );
                assert_eq!(
                    next_start_headers,
                    vec![
                        ("location".to_string(), "/blog/hello?a=1".to_string()),
                        ("refresh".to_string(), "0;url=/blog/hello?a=1".to_string()),
                    ]
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn dynamic_routes_rsc_and_on_match() {
        let router = Router::new(&showcase()).expect("router");
        let o = output(router.resolve(&get("/blog/new", None, &[("rsc", "1")])));
        assert_eq!(o.pathname, "/blog/[slug]");
        assert_eq!(o.invocation_path, "/blog/new");
        assert_eq!(o.query, vec![("nxtPslug".to_string(), "new".to_string())]);
        let rsc = o.rsc.expect("rsc request");
        assert_eq!(rsc.rsc_pathname.as_deref(), Some("/blog/[slug].rsc"));
        let o = output(router.resolve(&get(
            "/",
            None,
            &[("rsc", "1"), ("next-router-segment-prefetch", "/_tree")],
        )));
        let rsc = o.rsc.expect("rsc");
        assert_eq!(rsc.rsc_pathname.as_deref(), Some("/index.rsc"));
        assert_eq!(
            rsc.segment_pathname.as_deref(),
            Some("/index.segments/_tree.segment.rsc")
        );
        let o = output(router.resolve(&get("/_next/static/chunks/0cz1d0mv5g_q7.js", None, &[])));
        assert!(o.headers.contains(&(
            "cache-control".into(),
            "public,max-age=31536000,immutable".into()
        )));
        assert!(o.rsc.is_none());
    }

    #[test]
    fn next_start_dynamic_routes_are_case_sensitive() {
        // next start: `new RegExp(`^${re}$`)` (route-regex.js); @next/routing: the `i` flag.
        let plain = Router::new(&showcase()).expect("router");
        let ns = Router::new(&showcase())
            .expect("router")
            .with_next_start_semantics(true);
        for path in ["/Blog/new", "/BLOG/new"] {
            assert_eq!(
                output(plain.resolve(&get(path, None, &[]))).pathname,
                "/blog/[slug]"
            );
            assert!(
                matches!(
                    ns.resolve(&get(path, None, &[])),
                    Resolution::NotFound { .. }
                ),
                "{path}"
            );
        }
        // The param's own case is the page's business.
        let o = output(ns.resolve(&get("/blog/New", None, &[])));
        assert_eq!(o.pathname, "/blog/[slug]");
        assert_eq!(o.invocation_path, "/blog/New");
    }

    #[test]
    fn next_data_and_percent_encoding() {
        let router = Router::new(&showcase()).expect("router");
        let o = output(router.resolve(&get(
            "/_next/data/QieQYEuOxgI6b6eZkxrtM/legacy/ssr.json",
            None,
            &[],
        )));
        assert_eq!(
            o.pathname,
            "/_next/data/QieQYEuOxgI6b6eZkxrtM/legacy/ssr.json"
        );
        // Paths stay percent-encoded; dot segments (also encoded ones) are resolved first.
        let o = output(router.resolve(&get("/blog/a%2Fb c", None, &[])));
        assert_eq!(o.invocation_path, "/blog/a%2Fb%20c");
        assert_eq!(
            o.route_matches
                .iter()
                .find(|(k, _)| &**k == "nxtPslug")
                .map(|(_, v)| v.as_str()),
            Some("a%2Fb%20c")
        );
        let o = output(router.resolve(&get("/x/%2e%2e/ssr", None, &[])));
        assert_eq!(o.pathname, "/ssr");
    }

    #[test]
    fn middleware_phase_split() {
        let router = Router::new(&showcase()).expect("router");
        let Step::Continue(mut st) = router.start(&get("/ssr", None, &[])) else {
            panic!("continues");
        };
        assert!(router.middleware_matches(&st));
        let eff = router.apply_middleware(
            &mut st,
            200,
            &[
                (
                    "x-middleware-rewrite".into(),
                    "http://localhost:3000/isr".into(),
                ),
                ("x-middleware-override-headers".into(), "x-a".into()),
                ("x-middleware-request-x-a".into(), "1".into()),
            ],
        );
        assert_eq!(eff, MiddlewareEffect::Continue);
        let o = output(router.finish(st));
        assert_eq!(o.pathname, "/isr");
        assert!(o.request_headers.contains(&("x-a".into(), "1".into())));
        assert!(
            o.headers
                .contains(&("x-middleware-rewrite".into(), "/isr".into()))
        );
        let chunk = get("/_next/static/chunks/0cz1d0mv5g_q7.js", None, &[]);
        // A GET for a path-only static file is answered from the memo (memo.rs) in `start`.
        let Step::Done(Resolution::Output(o)) = router.start(&chunk) else {
            panic!("memoized");
        };
        assert_eq!(o.pathname, chunk.path);
        let post = RequestInfo {
            method: "POST".into(),
            ..chunk
        };
        let Step::Continue(st) = router.start(&post) else {
            panic!("continues");
        };
        assert!(!router.middleware_matches(&st));
    }

    #[test]
    fn next_start_serves_pages_at_their_data_urls() {
        let data = |page: &str| format!("/_next/data/QieQYEuOxgI6b6eZkxrtM/{page}.json");
        let plain = Router::new(&showcase()).expect("router");
        assert!(matches!(
            plain.resolve(&get(&data("index"), None, &[])),
            Resolution::NotFound { .. }
        ));
        let router = Router::new(&showcase())
            .expect("router")
            .with_next_start_data_urls(true);
        for (page, pathname) in [
            ("index", "/"),
            ("isr", "/isr"),
            ("api/legacy", "/api/legacy"),
        ] {
            let o = output(router.resolve(&get(&data(page), None, &[])));
            assert_eq!(o.pathname, pathname);
            assert!(o.next_data_page);
        }
        // A real data route is still served as one.
        let o = output(router.resolve(&get(&data("legacy/ssr"), None, &[])));
        assert_eq!(o.pathname, data("legacy/ssr"));
        assert!(!o.next_data_page);
        assert!(matches!(
            router.resolve(&get(&data("missing"), None, &[])),
            Resolution::NotFound { .. }
        ));
    }

    #[test]
    fn init_origin_decides_whether_a_middleware_rewrite_is_external() {
        let router = Router::new(&showcase()).expect("router");
        let rewrite = [(
            "x-middleware-rewrite".to_owned(),
            "http://localhost:4000/isr".to_owned(),
        )];
        // next start -H 127.0.0.1: NextURL turns the loopback IP into `localhost`, so the
        // rewrite's origin is not initURL's and next start proxies it.
        let mut req = get("/ssr", Some("a=1"), &[]);
        req.init_origin = Some("http://127.0.0.1:4000".into());
        let Step::Continue(mut st) = router.start(&req) else {
            panic!("continues");
        };
        assert_eq!(st.middleware_url(), "http://127.0.0.1:4000/ssr?a=1");
        match router.apply_middleware(&mut st, 200, &rewrite) {
            MiddlewareEffect::Done(r) => match *r {
                Resolution::ExternalRewrite { url, headers, .. } => {
                    assert_eq!(url, "http://localhost:4000/isr");
                    assert!(headers.contains(&(
                        "x-middleware-rewrite".into(),
                        "http://localhost:4000/isr".into()
                    )));
                }
                other => panic!("expected an external rewrite, got {other:?}"),
            },
            other => panic!("expected an external rewrite, got {other:?}"),
        }
        // Without -H (initURL on localhost) the same rewrite is internal.
        req.init_origin = Some("http://localhost:4000".into());
        let Step::Continue(mut st) = router.start(&req) else {
            panic!("continues");
        };
        assert_eq!(
            router.apply_middleware(&mut st, 200, &rewrite),
            MiddlewareEffect::Continue
        );
        let o = output(router.finish(st));
        assert_eq!(o.pathname, "/isr");
        assert!(
            o.headers
                .contains(&("x-middleware-rewrite".into(), "/isr".into()))
        );
    }

    #[test]
    fn base_path_next_data_denormalizes_for_middleware() {
        let routing = Routing {
            should_normalize_next_data: true,
            ..Routing::default()
        };
        let m = manifest(routing, "/b", Some(vec![]), &["/b/about".into()], "ID");
        let router = Router::new(&m).expect("router");
        let Step::Continue(st) = router.start(&get("/b/_next/data/ID/about.json", None, &[]))
        else {
            panic!("continues");
        };
        assert!(st.middleware_url().ends_with("/b/_next/data/ID/about.json"));
        assert!(matches!(router.finish(st), Resolution::NotFound { .. }));
        let o = output(router.resolve(&get("/b/about", None, &[])));
        assert_eq!(o.pathname, "/b/about");
        assert!(matches!(
            router.resolve(&get("/about", None, &[])),
            Resolution::NotFound { .. }
        ));
    }

    #[test]
    fn invalid_regex_is_a_construction_error_naming_the_rule() {
        let routing = Routing {
            before_files: vec![Route {
                source: Some("/bad".into()),
                source_regex: "^/bad(".into(),
                ..Route::default()
            }],
            ..Routing::default()
        };
        let err = Router::new(&manifest(routing, "", None, &[], "b")).expect_err("must fail");
        let msg = err.to_string();
        assert!(
            msg.contains("beforeFiles[0]") && msg.contains("/bad"),
            "{msg}"
        );
    }

    #[test]
    fn hostile_paths_are_bounded_in_time() {
        let router = Router::new(&showcase()).expect("router");
        let long = format!("/{}", "a".repeat(MAX_PATH_LEN + 10));
        assert!(matches!(
            router.resolve(&get(&long, None, &[])),
            Resolution::Rejected { status: 414, .. }
        ));
        // The worst shapes just under the limit for the table's regexes (lazy segments, `.+`
        // in the segment-prefetch matcher, many slashes).
        let n = MAX_PATH_LEN / 12;
        let hostile = [
            format!("/blog/{}", "x.segments/".repeat(n)),
            format!("/{}", "a/".repeat(MAX_PATH_LEN / 2 - 2)),
            format!("/ssr{}", ".segments/a".repeat(n)),
            format!("/{}", "%".repeat(MAX_PATH_LEN / 3 - 2)),
        ];
        for p in hostile {
            let t = Instant::now();
            let _ = router.resolve(&get(
                &p,
                None,
                &[("x-prerender-revalidate", &"9".repeat(4000))],
            ));
            let Step::Continue(st) = router.start(&get(&p, None, &[])) else {
                continue;
            };
            let _ = router.middleware_matches(&st);
            // Generous for debug builds on a loaded machine; release is far below.
            assert!(
                t.elapsed() < Duration::from_secs(2),
                "{} took {:?}",
                &p[..20],
                t.elapsed()
            );
        }
    }

    /// tests/fixtures/routing-app's real table (basePath `/docs`, trailingSlash, i18n en-US / fr
    /// / nl-NL with domains, middleware), `next start` semantics on or off.
    fn routing_app(next_start: bool) -> Router {
        // As the server builds it.
        Router::new(&routing_app_manifest())
            .expect("router")
            .with_next_start_data_urls(next_start)
            .with_next_start_semantics(next_start)
    }

    fn routing_app_manifest() -> Manifest {
        let v: serde_json::Value =
            serde_json::from_str(include_str!("../tests/fixtures/routing-app.json")).expect("json");
        let routing: Routing = serde_json::from_value(v["routing"].clone()).expect("routing");
        let matchers = serde_json::from_value(v["middlewareMatchers"].clone()).expect("matchers");
        let pathnames: Vec<String> = serde_json::from_value(v["pathnames"].clone()).expect("paths");
        let public: Vec<String> = serde_json::from_value(v["publicFiles"].clone()).expect("public");
        let mut m = manifest(
            routing,
            "/docs",
            Some(matchers),
            &pathnames,
            v["buildId"].as_str().unwrap_or("b"),
        );
        m.config.trailing_slash = true;
        m.config.i18n = Some(serde_json::from_value(v["i18n"].clone()).expect("i18n"));
        for f in &mut m.static_files {
            f.source = if public.contains(&f.pathname) {
                StaticSource::Public
            } else {
                StaticSource::Output
            };
        }
        m
    }

    fn location(r: Resolution) -> (u16, String) {
        match r {
            Resolution::Redirect {
                status,
                location: Some(l),
                ..
            } => (status, l),
            other => panic!("expected a redirect, got {other:?}"),
        }
    }

    fn ns_get(path: &str, query: Option<&str>, headers: &[(&str, &str)]) -> Resolution {
        routing_app(true).resolve(&get(path, query, headers))
    }

    fn query_of(r: Resolution) -> Vec<(String, String)> {
        match r {
            Resolution::Output(o) => o.query,
            other => panic!("not an output: {other:?}"),
        }
    }

    fn external_url(r: Resolution) -> String {
        match r {
            Resolution::ExternalRewrite { url, .. } => url,
            other => panic!("not an external rewrite: {other:?}"),
        }
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn next_start_after_files_rewrite_beats_a_dynamic_routes_prerender() {
        // next start's `check_fs` knows page files (`/blog/[slug]`), not the prerendered
        // `/blog/hello`: the afterFiles rule `/blog/:slug` (cookie `preview`) -> `/ssr` wins.
        let mut m = routing_app_manifest();
        m.functions = serde_json::from_value(serde_json::json!([
            {"id": "/en-US/blog/[slug]", "kind": "PAGES", "pathname": "/docs/en-US/blog/[slug]",
             "sourcePage": "/blog/[slug]", "entry": "b.js", "runtime": "nodejs"},
            {"id": "/en-US/ssr", "kind": "PAGES", "pathname": "/docs/en-US/ssr",
             "sourcePage": "/ssr", "entry": "s.js", "runtime": "nodejs"}
        ]))
        .expect("functions");
        m.prerenders = serde_json::from_value(serde_json::json!([
            {"pathname": "/docs/en-US/blog/hello", "parentOutputId": "/en-US/blog/[slug]",
             "groupId": 1, "route": "/blog/[slug]", "seed": null, "parentFallbackMode": null}
        ]))
        .expect("prerenders");
        let ns = |cookie: Option<&str>| {
            let headers: Vec<(&str, &str)> = cookie.map(|c| ("cookie", c)).into_iter().collect();
            Router::new(&m)
                .expect("router")
                .with_next_start_data_urls(true)
                .with_next_start_semantics(true)
                .resolve(&get("/docs/blog/hello/", None, &headers))
        };
        let o = output(ns(Some("preview=1")));
        assert_eq!(o.pathname, "/docs/en-US/ssr");
        // matchHas gives the cookie's value as a param too.
        assert_eq!(o.query, pairs(&[("slug", "hello"), ("preview", "1")]));
        // Without the cookie no rewrite applies: the prerender answers, as before.
        assert_eq!(output(ns(None)).pathname, "/docs/en-US/blog/hello");
    }

    #[test]
    fn next_start_rewrite_destinations_compile_like_prepare_destination() {
        // fallback `/legacy/:path*` -> `/ssr?legacy=:path*`: an absent param stays literal in
        // the query and is not appended; a present `*` param is appended as an array.
        assert_eq!(
            query_of(ns_get("/docs/legacy/", None, &[])),
            pairs(&[("legacy", ":path*")])
        );
        assert_eq!(
            query_of(ns_get("/docs/legacy/a/b/", Some("z=1"), &[])),
            pairs(&[("z", "1"), ("legacy", "a/b"), ("path", "a"), ("path", "b")])
        );
        // @next/routing keeps the adapter's appended `path=$2`.
        let plain = routing_app(false).resolve(&get("/docs/legacy/", None, &[]));
        assert!(query_of(plain).iter().any(|(k, _)| k == "path"));
        // External: an absent optional param goes with its `/`.
        assert_eq!(
            external_url(ns_get("/docs/proxy-me/", None, &[])),
            "http://127.0.0.1:45139/upstream"
        );
        assert_eq!(
            external_url(ns_get("/docs/proxy-me/a/b/", None, &[])),
            "http://127.0.0.1:45139/upstream/a/b"
        );
        assert_eq!(
            external_url(ns_get("/docs/ext-fallback/", None, &[])),
            "http://127.0.0.1:45139/fallback"
        );
        // A host item with named groups gives only the groups (no `host` param).
        let mut req = get("/docs/host-only/", None, &[("host", "shop.example.test")]);
        req.host = Some("shop.example.test".into());
        assert_eq!(
            query_of(routing_app(true).resolve(&req)),
            pairs(&[("sub", "shop")])
        );
        assert_eq!(
            query_of(ns_get("/docs/with-header/", None, &[("x-rewrite", "abc")])),
            pairs(&[("via", "abc"), ("v", "abc")])
        );
    }

    #[test]
    fn next_start_has_values_are_anchored() {
        // matchHas: `new RegExp(`^${value}$`)`; @next/routing also accepts a substring.
        let req = get("/docs/by-query/", Some("go=Hello1"), &[]);
        assert!(matches!(
            routing_app(false).resolve(&req),
            Resolution::Redirect { status: 307, .. }
        ));
        assert!(!matches!(
            routing_app(true).resolve(&req),
            Resolution::Redirect { .. }
        ));
        let (status, location) = location(ns_get("/docs/by-query/", Some("go=hello"), &[]));
        assert_eq!(status, 307);
        assert!(location.contains("/docs/blog/hello?go=hello"), "{location}");
    }

    #[test]
    fn next_start_finds_pages_behind_a_trailing_slash() {
        // R1: filesystem.js getItem drops one trailing slash; @next/routing finds nothing.
        assert!(matches!(
            routing_app(false).resolve(&get("/docs/ssr/", None, &[])),
            Resolution::NotFound { .. }
        ));
        for (path, pathname) in [
            ("/docs/ssr/", "/docs/en-US/ssr"),
            ("/docs/fr/static/", "/docs/fr/static"),
            ("/docs/NL-NL/static/", "/docs/nl-NL/static"),
            ("/docs/en-us/static/", "/docs/en-US/static"),
            ("/docs/", "/docs/en-US"),
            ("/docs/hello.txt", "/docs/hello.txt"),
            ("/docs/api/echo/", "/docs/api/echo"),
            ("/docs/blog/new-one/", "/docs/en-US/blog/[slug]"),
        ] {
            let o = output(ns_get(path, None, &[]));
            assert_eq!(o.pathname, pathname, "{path}");
        }
        // A file (here the static page's HTML) is named without the slash next start drops.
        let o = output(ns_get("/docs/fr/static/", None, &[]));
        assert_eq!(o.invocation_path, "/docs/fr/static");
        // checkLocaleApi: an API route is not found under an explicit locale; public files only
        // under a default locale.
        for path in [
            "/docs/fr/api/echo/",
            "/docs/nl-NL/hello.txt",
            "/docs/_error/",
            "/docs/fr/404/",
            "/docs/index/",
        ] {
            assert!(
                matches!(ns_get(path, None, &[]), Resolution::NotFound { .. }),
                "{path}"
            );
        }
        // A page's decoded spelling (`/st%61tic`) answers with the 404 page: see
        // tests/next_start_regressions.rs.
        assert_eq!(
            output(ns_get("/docs/st%61tic/", None, &[])).pathname,
            "/docs/en-US/404"
        );
    }

    #[test]
    fn next_start_redirects_the_bare_base_path() {
        // R2: the `^/docs$` rule is internal: it sees `/docs`, not `/docs/en-US`.
        assert_eq!(location(ns_get("/docs", None, &[])), (308, "/docs/".into()));
        assert_eq!(
            location(ns_get("/docs", Some("x=1"), &[])),
            (308, "/docs/?x=1".into())
        );
    }

    #[test]
    fn next_start_trailing_slash_redirects_omit_the_default_locale() {
        // R3
        for (path, want) in [
            ("/docs/static", "/docs/static/"),
            ("/docs/en-US", "/docs/"),
            ("/docs/fr/static", "/docs/fr/static/"),
            ("/docs/hello.txt/", "/docs/hello.txt"),
            ("/outside", "/outside/"),
        ] {
            assert_eq!(
                location(ns_get(path, None, &[])),
                (308, want.into()),
                "{path}"
            );
        }
    }

    #[test]
    fn next_start_adds_no_base_path_to_requests_without_it() {
        // R4: `headers()` rules (all under /docs) do not apply; nothing is found.
        for path in ["/", "/hello.txt", "/DOCS/static/", "/static/"] {
            match ns_get(path, None, &[]) {
                Resolution::NotFound { headers, .. } => {
                    assert!(
                        !headers.iter().any(|(k, _)| k.starts_with("x-ra-")),
                        "{path}"
                    );
                }
                other => panic!("{path}: {other:?}"),
            }
        }
        // /outside/ is `/en-US/outside/`: the basePath: false redirect.
        assert_eq!(
            location(ns_get("/outside/", None, &[])).1,
            "https://example.com/docs/static"
        );
    }

    #[test]
    fn next_start_locale_redirects() {
        // R5
        let al = |v| [("accept-language", v)];
        assert_eq!(
            location(ns_get("/docs/", None, &al("nl-NL"))),
            (307, "/docs/nl-NL/".into())
        );
        assert_eq!(
            location(ns_get("/docs/", None, &al("fr"))),
            (307, "/docs/fr/".into())
        );
        let mut req = get("/docs/", None, &al("fr"));
        req.host = Some("example.com".into());
        assert_eq!(
            location(routing_app(true).resolve(&req)),
            (307, "http://fr.example.test/".into())
        );
        // Not the root: no detection.
        assert!(matches!(
            ns_get("/docs/static/", None, &al("fr")),
            Resolution::Output(_)
        ));
    }

    #[test]
    fn next_start_redirect_destinations_compile_unmatched_params() {
        // R6
        assert_eq!(
            location(ns_get("/docs/opt/one/", None, &[])).1,
            "https://example.com/docs/ssr?a=one&b=:b"
        );
        assert_eq!(
            location(ns_get("/docs/wild/", None, &[])).1,
            "https://example.com/docs/catch"
        );
        assert_eq!(
            location(ns_get("/docs/wild/a/b/", None, &[])).1,
            "https://example.com/docs/catch/a/b"
        );
        // The request query is merged into the destination's.
        assert_eq!(
            location(ns_get("/docs/search/x/", Some("z=1&q=old"), &[])).1,
            "https://example.com/docs/ssr?z=1&q=x&src=redirect"
        );
    }

    #[test]
    fn next_start_next_data_urls() {
        // R9: with middleware, the data URL becomes the page URL before any rule (so no
        // trailing-slash redirect), and the request is marked `x-nextjs-data`.
        let router = routing_app(true);
        let id = router.build_id.clone();
        let data = |p: &str| format!("/docs/_next/data/{id}/{p}.json");
        for (page, pathname) in [
            ("en-US/ssr", data("en-US/ssr")),
            ("en-US", data("en-US")),
            ("blog/hello", data("en-US/blog/hello")),
            // Not prerendered: the dynamic page (the request is marked as a data request).
            ("en-US/blog/missing", "/docs/en-US/blog/[slug]".to_string()),
            ("en-US/static", "/docs/en-US/static".to_string()),
        ] {
            let o = output(router.resolve(&get(&data(page), None, &[])));
            assert_eq!(o.pathname, pathname, "{page}");
            assert!(
                o.headers.contains(&("x-ra-all".into(), "1".into())),
                "{page}"
            );
            assert!(
                o.request_headers
                    .contains(&("x-nextjs-data".into(), "1".into()))
            );
        }
        for path in [
            format!("/_next/data/{id}/en-US/ssr.json"),
            "/docs/_next/data/wrong-build/en-US/ssr.json".into(),
        ] {
            match router.resolve(&get(&path, None, &[])) {
                Resolution::NotFound {
                    request_headers, ..
                } => assert!(
                    request_headers.contains(&("x-nextjs-data".into(), "1".into())),
                    "{path}"
                ),
                other => panic!("{path}: {other:?}"),
            }
        }
    }

    #[test]
    fn next_start_middleware_matchers_are_case_sensitive() {
        for (next_start, want) in [(false, true), (true, false)] {
            let router = routing_app(next_start);
            let Step::Continue(st) = router.start(&get("/docs/Static/", None, &[])) else {
                panic!("continues");
            };
            assert_eq!(
                router.middleware_matches(&st),
                want,
                "next start {next_start}"
            );
        }
    }

    #[test]
    fn dynamic_template_detection_matches_the_js_regex() {
        for (p, want) in [
            ("/blog/[slug]", true),
            ("/a/[]", false),
            ("/a/[]]", true),
            ("/a/[/b]", false),
            ("/a/b", false),
            ("/[[...x]]", true),
        ] {
            assert_eq!(is_dynamic_template(p), want, "{p}");
        }
    }
}
