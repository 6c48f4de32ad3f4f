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

mod headers;
mod i18n;
mod matcher;
mod middleware;
mod prefilter;
mod urls;

use std::collections::HashSet;

use ferry_manifest::{I18nConfig, Manifest, RscConfig};
use url::Url;

pub use headers::HeaderList;
use matcher::{CompiledRoute, Condition, js_match, replace_destination, route_params};
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
    /// Request headers, names lowercase, one entry per value (latin-1 decoded like Node does).
    pub headers: Vec<(String, String)>,
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
    /// Dynamic route matches (`"1"`, `"nxtPslug"` ...).
    pub route_matches: Vec<(String, String)>,
    /// Response headers routing resolved (headers rules, middleware, onMatch), `Headers` order.
    pub headers: Vec<(String, String)>,
    /// Request headers to forward, after middleware overrides.
    pub request_headers: Vec<(String, String)>,
    /// A status set by a rule, if any.
    pub status: Option<u16>,
    /// RSC request details, when the request is an RSC request.
    pub rsc: Option<RscRequest>,
    /// A `_next/data/<buildId>/<page>.json` request served by the page's own output (see
    /// [`Router::with_next_start_data_urls`]); next-server names the page in
    /// `x-nextjs-matched-path`.
    pub next_data_page: bool,
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
        request_headers: Vec<(String, String)>,
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
        request_headers: Vec<(String, String)>,
        /// A status set by a rule, if any.
        status: Option<u16>,
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
    /// The URL middleware sees (`_next/data` form for data requests).
    middleware_url: Url,
    request_headers: HeaderList,
    response_headers: HeaderList,
    /// Response headers that came from middleware (next start keeps them on redirects).
    middleware_headers: HeaderList,
    status: Option<u16>,
    is_next_data: bool,
}

impl RoutingState {
    /// The URL to invoke middleware with (path + query, the `_next/data` form for data requests).
    pub fn middleware_url(&self) -> &str {
        self.middleware_url.as_str()
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
    has: Vec<Condition>,
    missing: Vec<Condition>,
}

/// A dynamic route's destination for one request.
struct DynamicDestination {
    matched: matcher::RegexMatch,
    path: String,
    url: Url,
}

/// The router, built once per deployment.
#[derive(Debug)]
pub struct Router {
    before_middleware: Vec<CompiledRoute>,
    before_files: Vec<CompiledRoute>,
    after_files: Vec<CompiledRoute>,
    dynamic_routes: Vec<CompiledRoute>,
    on_match: Vec<CompiledRoute>,
    fallback: Vec<CompiledRoute>,
    middleware: Vec<MiddlewareMatcherC>,
    pathnames: HashSet<String>,
    base_path: String,
    build_id: String,
    i18n: Option<I18nConfig>,
    should_normalize_next_data: bool,
    next_start_data_urls: bool,
    rsc: RscConfig,
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
) -> Result<Vec<CompiledRoute>, RouterError> {
    routes
        .iter()
        .enumerate()
        .map(|(index, r)| {
            CompiledRoute::new(r, false).map_err(|e| RouterError::InvalidRegex {
                phase,
                index,
                source_pattern: r.source.clone().unwrap_or_else(|| "-".into()),
                regex: r.source_regex.clone(),
                message: e.to_string(),
            })
        })
        .collect()
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

/// `/\[[^/]+?\]/.test(p)`: a `[slug]`-style template pathname.
fn is_dynamic_template(p: &str) -> bool {
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
                        has: matcher::conditions(m.has.as_deref()),
                        missing: matcher::conditions(m.missing.as_deref()),
                    })
                })
                .collect::<Result<_, RouterError>>()?,
        };
        Ok(Self {
            before_middleware: compile_phase("beforeMiddleware", &r.before_middleware)?,
            before_files: compile_phase("beforeFiles", &r.before_files)?,
            after_files: compile_phase("afterFiles", &r.after_files)?,
            dynamic_routes: compile_phase("dynamicRoutes", &r.dynamic_routes)?,
            on_match: compile_phase("onMatch", &r.on_match)?,
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
            rsc: r.rsc.clone(),
        })
    }

    /// `next start` with middleware normalizes a `_next/data/<buildId>/<page>.json` URL to the
    /// page before its filesystem check (resolve-routes.js, `middleware_next_data`), so every
    /// page, API route and file answers at its data URL; `@next/routing` only matches real data
    /// routes. Off by default (the oracle test checks `@next/routing`'s behaviour).
    pub fn with_next_start_data_urls(mut self, on: bool) -> Self {
        self.next_start_data_urls = on;
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
        let scheme = if req.secure { "https" } else { "http" };
        let host = req.host.as_deref().unwrap_or("localhost");
        let mut u = Url::parse(&format!("{scheme}://{host}/"))
            .or_else(|_| Url::parse(&format!("{scheme}://localhost/")))
            .map_err(|e| e.to_string())?;
        u.set_path(&req.path);
        if let Some(q) = req.query.as_deref().filter(|q| !q.is_empty()) {
            u.set_query(Some(q));
        }
        Ok(u)
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
        let request_headers =
            HeaderList::from_pairs(req.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let mut response_headers = HeaderList::new();
        let mut f = url.clone();
        let mut is_next_data = false;
        if self.should_normalize_next_data {
            is_next_data = url.path().starts_with(&self.next_data_prefix());
            if is_next_data {
                f = self.normalize_next_data(&f);
            }
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
        let mut status = None;
        let end = self.process_routes(
            &self.before_middleware,
            f,
            &request_headers,
            &mut response_headers,
            &mut status,
        );
        let f = match end {
            PhaseEnd::Redirect { location, status } => {
                return Step::Done(self.redirect(status, Some(location), response_headers));
            }
            PhaseEnd::External(u) => {
                return Step::Done(Resolution::ExternalRewrite {
                    url: u,
                    headers: response_headers.sorted_combined(),
                    request_headers: request_headers.raw().to_vec(),
                    status,
                });
            }
            PhaseEnd::Rejected(reason) => {
                return Step::Done(Resolution::Rejected {
                    status: 500,
                    reason,
                });
            }
            PhaseEnd::Stopped => {
                // @next/routing checks the locale redirect first.
                if let Some(loc) = locale_redirect {
                    return Step::Done(self.locale_redirect(loc, response_headers));
                }
                let location = response_headers.get("location");
                return Step::Done(self.redirect(
                    status.unwrap_or(307),
                    location,
                    response_headers,
                ));
            }
            PhaseEnd::Continue(u) => u,
        };
        if let Some(loc) = locale_redirect {
            return Step::Done(self.locale_redirect(loc, response_headers));
        }
        let mut middleware_url = if is_next_data && self.should_normalize_next_data {
            self.denormalize_next_data(&f)
        } else {
            f.clone()
        };
        if let Some(init) = req.init_origin.as_deref()
            && let Ok(mut u) = Url::parse(init)
        {
            u.set_path(middleware_url.path());
            u.set_query(middleware_url.query());
            middleware_url = u;
        }
        Step::Continue(RoutingState {
            url: f,
            middleware_url,
            request_headers,
            response_headers,
            middleware_headers: HeaderList::new(),
            status,
            is_next_data,
        })
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
        routes: &[CompiledRoute],
        mut url: Url,
        req_headers: &HeaderList,
        res_headers: &mut HeaderList,
        status: &mut Option<u16>,
    ) -> PhaseEnd {
        for route in routes {
            let Some(m) = route.match_route(&url, req_headers) else {
                continue;
            };
            if let Some(h) = &m.headers {
                for (k, v) in h {
                    res_headers.set(k, v);
                }
            }
            if route.status.is_some() {
                *status = route.status;
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
                if let Some(loc) = loc.filter(|l| !l.is_empty()) {
                    res_headers.set("location", &urls::redirect_location_with_query(&loc, &url));
                }
                return PhaseEnd::Stopped;
            }
            if let Some(dest) = &m.destination {
                if is_external(dest) {
                    return match Url::parse(dest) {
                        Ok(u) => PhaseEnd::External(u.to_string()),
                        Err(e) => PhaseEnd::Rejected(format!("external rewrite {dest}: {e}")),
                    };
                }
                // An internal destination only changes the path and query, never the origin.
                url = urls::apply_internal_destination(&url, dest);
            }
        }
        PhaseEnd::Continue(url)
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
        if self.middleware.is_empty() {
            return false;
        }
        let url = &state.url;
        let h = &state.request_headers;
        let matches = |path: &str| {
            self.middleware.iter().any(|m| {
                js_match(&m.re, path).is_some()
                    && matcher::check_has(&m.has, url, h).is_some()
                    && matcher::check_missing(&m.missing, url, h)
            })
        };
        if matches(url.path()) {
            return true;
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
    pub fn finish(&self, mut state: RoutingState) -> Resolution {
        let data = self.data_mode(&state);
        let mut f = state.url.clone();
        if data {
            f = self.normalize_next_data(&f);
        }
        let mut status = state.status;
        let end = self.process_routes(
            &self.before_files,
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
        if let Some(fs) = self.pathnames.get(f.path()) {
            for route in &self.dynamic_routes {
                let Some(d) = self.dynamic_destination(route, &state, &f) else {
                    continue;
                };
                let target = match self.match_pathname_locale_fallback(&d.path) {
                    None if is_dynamic_template(&d.path) => continue,
                    None => fs.as_str(),
                    Some(found) if found == fs.as_str() || is_dynamic_template(fs) => found,
                    Some(_) => continue,
                };
                return self.output(&state, &d.url, target, f.path(), route_params(&d.matched));
            }
            return self.output(&state, &f, fs, f.path(), Vec::new());
        }
        if data {
            f = self.normalize_next_data(&f);
            if self.next_start_data_urls
                && !self.middleware.is_empty()
                && let Some(fs) = self.pathnames.get(f.path())
            {
                let mut out = self.output(&state, &f, fs, f.path(), Vec::new());
                if let Resolution::Output(o) = &mut out {
                    o.next_data_page = true;
                }
                return out;
            }
        }
        // afterFiles
        if let Some(r) = self.rewrite_phase(&self.after_files, &mut state, &mut f) {
            return r;
        }
        // dynamicRoutes
        if let Some(r) = self.check_dynamic_routes(&state, &f) {
            return r;
        }
        // fallback
        if let Some(r) = self.rewrite_phase(&self.fallback, &mut state, &mut f) {
            return r;
        }
        Resolution::NotFound {
            headers: state.response_headers.sorted_combined(),
            request_headers: state.request_headers.raw().to_vec(),
            status: state.status,
        }
    }

    /// The `afterFiles` / `fallback` loop of `resolveRoutes`.
    fn rewrite_phase(
        &self,
        routes: &[CompiledRoute],
        state: &mut RoutingState,
        f: &mut Url,
    ) -> Option<Resolution> {
        let data = self.data_mode(state);
        for route in routes {
            let Some(m) = route.match_route(f, &state.request_headers) else {
                continue;
            };
            if let Some(h) = &m.headers {
                for (k, v) in h {
                    state.response_headers.set(k, v);
                }
            }
            if route.status.is_some() {
                state.status = route.status;
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
            if is_external(dest) {
                return Some(match Url::parse(dest) {
                    Ok(u) => self.external(state, u.to_string()),
                    Err(e) => Resolution::Rejected {
                        status: 500,
                        reason: format!("external rewrite {dest}: {e}"),
                    },
                });
            }
            *f = urls::apply_internal_destination(f, dest);
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
            if let Some(found) = self.pathnames.get(s.path()) {
                return Some(self.output(state, &s, found, s.path(), Vec::new()));
            }
        }
        None
    }

    /// `matchesPathnameWithLocaleFallback`.
    /// `checkDynamicRoutes`: the first dynamic route whose destination is a known pathname.
    fn check_dynamic_routes(&self, state: &RoutingState, url: &Url) -> Option<Resolution> {
        for route in &self.dynamic_routes {
            let Some(d) = self.dynamic_destination(route, state, url) else {
                continue;
            };
            if let Some(found) = self.match_pathname_locale_fallback(&d.path) {
                return Some(self.output(
                    state,
                    &d.url,
                    found,
                    url.path(),
                    route_params(&d.matched),
                ));
            }
        }
        None
    }

    /// A dynamic route applied to `url`: its match, destination pathname and the URL to invoke
    /// (destination query merged), or `None` when the route does not match.
    fn dynamic_destination(
        &self,
        route: &CompiledRoute,
        state: &RoutingState,
        url: &Url,
    ) -> Option<DynamicDestination> {
        let (matched, caps) = route.match_dynamic(url, &state.request_headers)?;
        let dest = route
            .destination
            .as_ref()
            .map(|d| replace_destination(d, Some(&matched), &caps));
        let path = dest
            .as_deref()
            .map(|d| d.split('?').next().unwrap_or_default().to_string())
            .unwrap_or_else(|| url.path().to_string());
        let url = dest
            .as_deref()
            .map(|d| urls::merge_destination_query(url, d))
            .unwrap_or_else(|| url.clone());
        Some(DynamicDestination { matched, path, url })
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
            request_headers: state.request_headers.raw().to_vec(),
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

    /// Builds an [`Output`] with `onMatch` headers applied (`withResolvedInvocationTarget`).
    fn output(
        &self,
        state: &RoutingState,
        url: &Url,
        pathname: &str,
        invocation_path: &str,
        route_matches: Vec<(String, String)>,
    ) -> Resolution {
        let mut headers = state.response_headers.clone();
        // next start (resolve-routes.js) applies `onMatchHeaders` to the pathname it matched,
        // which for a `_next/data` request is the page's, never `/_next/data/…` (so its
        // `/_next/data/(.*)` deployment-id rule never fires there). `next start` wins.
        let on_match_url = if self.data_mode(state) {
            self.normalize_next_data(url)
        } else {
            url.clone()
        };
        for r in &self.on_match {
            if let Some(m) = r.match_route(&on_match_url, &state.request_headers) {
                for (k, v) in m.headers.unwrap_or_default() {
                    headers.set(&k, &v);
                }
            }
        }
        Resolution::Output(Output {
            pathname: pathname.to_string(),
            invocation_path: invocation_path.to_string(),
            query: urls::query_pairs(url),
            route_matches,
            headers: headers.sorted_combined(),
            request_headers: state.request_headers.raw().to_vec(),
            status: state.status,
            rsc: self.rsc_request(&state.request_headers, pathname),
            next_data_page: false,
        })
    }

    /// RSC request detection (a `next start` behaviour `@next/routing` leaves to the platform):
    /// which `.rsc` / segment output answers an `rsc: 1` request for `pathname`.
    fn rsc_request(&self, h: &HeaderList, pathname: &str) -> Option<RscRequest> {
        if h.get(&self.rsc.header).as_deref() != Some("1") {
            return None;
        }
        let prefetch = h.get(&self.rsc.prefetch_header).as_deref() == Some("1");
        let segment = h.get(&self.rsc.prefetch_segment_header);
        let stem = if pathname == "/"
            || pathname == format!("{}/", self.base_path)
            || (!self.base_path.is_empty() && pathname == self.base_path)
        {
            format!("{}/index", self.base_path)
        } else {
            pathname.trim_end_matches('/').to_string()
        };
        let rsc_pathname = if pathname.ends_with(&self.rsc.suffix) {
            Some(pathname.to_string())
        } else {
            let p = format!("{stem}{}", self.rsc.suffix);
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

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_manifest::{
        BundleKind, MANIFEST_VERSION, Route, RuntimeConfig, StaticFile, StaticSource,
    };
    use std::time::{Duration, Instant};

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
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
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
                .find(|(k, _)| k == "nxtPslug")
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
        let Step::Continue(st) =
            router.start(&get("/_next/static/chunks/0cz1d0mv5g_q7.js", None, &[]))
        else {
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
