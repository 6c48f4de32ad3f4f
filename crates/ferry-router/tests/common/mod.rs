//! Shared harness of the oracle tests (`oracle.rs`, `generated.rs`): the reference resolver
//! (`@next/routing@16.4.3` in one long-lived Node process, `oracle/oracle.js`), the manifest a
//! fixture table becomes, and the normalization both sides are compared on.
//!
//! Deliberate difference (handled in [`prepare`], documented in `src/lib.rs`): when routing
//! finishes before middleware (a `beforeMiddleware` or locale redirect, as `next start` does),
//! the oracle is asked with a middleware that changes nothing, which is what `@next/routing` then
//! returns.
//!
//! `next start` mode ([`Router::with_next_start_semantics`]) runs on the same cases: it must
//! resolve each one as `@next/routing` does, or differ in one of the classes listed with their
//! reasons in [`NEXT_START_CLASSES`] (decided per case by [`next_start_classes`]); anything else
//! fails the test.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use ferry_manifest::{
    BundleKind, I18nConfig, MANIFEST_VERSION, Manifest, MiddlewareMatcher, MiddlewareOutput,
    Routing, RuntimeConfig, StaticFile, StaticSource,
};
use ferry_router::{MiddlewareEffect, RequestInfo, Resolution, Router, Step};
use serde::Deserialize;
use serde_json::{Value, json};

pub const TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct Fixture {
    pub build_id: String,
    pub base_path: String,
    pub i18n: Option<I18nConfig>,
    pub routing: Routing,
    #[serde(default)]
    pub middleware_matchers: Option<Vec<MiddlewareMatcher>>,
    pub pathnames: Vec<String>,
}

pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests")
}

pub fn load(name: &str) -> (Value, Fixture) {
    let text = std::fs::read_to_string(dir().join("fixtures").join(format!("{name}.json")))
        .expect("fixture readable");
    let raw: Value = serde_json::from_str(&text).expect("fixture json");
    let fx: Fixture = serde_json::from_value(raw.clone()).expect("fixture shape");
    (raw, fx)
}

pub fn manifest(fx: &Fixture) -> Manifest {
    Manifest {
        version: MANIFEST_VERSION,
        ferry_version: "test".into(),
        next_version: "16.4.6".into(),
        kind: BundleKind::Server,
        build_id: fx.build_id.clone(),
        deployment_id: None,
        config: RuntimeConfig {
            base_path: fx.base_path.clone(),
            i18n: fx.i18n.clone(),
            ..RuntimeConfig::default()
        },
        routing: fx.routing.clone(),
        functions: vec![],
        middleware: fx
            .middleware_matchers
            .clone()
            .map(|matchers| MiddlewareOutput {
                entry: "middleware.js".into(),
                runtime: "nodejs".into(),
                matchers,
            }),
        prerenders: vec![],
        static_files: fx
            .pathnames
            .iter()
            .map(|p| StaticFile {
                pathname: p.clone(),
                file: format!("f{p}"),
                source: StaticSource::Output,
                content_type: "text/plain".into(),
                size: 0,
                hash: String::new(),
                immutable_hash: None,
                encodings: vec![],
            })
            .collect(),
        server: None,
    }
}

pub fn wait_with_timeout(mut child: Child, what: &str) {
    let start = Instant::now();
    loop {
        match child.try_wait().expect("wait") {
            Some(s) => {
                assert!(s.success(), "{what} failed: {s}");
                return;
            }
            None if start.elapsed() > Duration::from_secs(300) => {
                let _ = child.kill();
                panic!("{what} timed out");
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

pub struct Oracle {
    child: Child,
    stdin: ChildStdin,
    rx: Receiver<String>,
}

impl Oracle {
    pub fn start() -> Self {
        let odir = dir().join("oracle");
        if !odir.join("node_modules/@next/routing").exists() {
            // scripts/npm-install.sh: `npm ci`, or `npm install` when the lockfile cannot be
            // used as it is with this registry.
            let child = Command::new("bash")
                .arg(dir().join("../../../scripts/npm-install.sh"))
                .arg(&odir)
                .stdout(Stdio::null())
                .spawn()
                .expect("npm runs");
            wait_with_timeout(child, "npm ci");
        }
        let mut child = Command::new("node")
            .arg("oracle.js")
            .current_dir(&odir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("node runs");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, stdin, rx }
    }

    pub fn ask(&mut self, msg: &Value) -> Value {
        writeln!(self.stdin, "{msg}").expect("write to oracle");
        let line = self
            .rx
            .recv_timeout(TIMEOUT)
            .expect("oracle answers in time");
        serde_json::from_str(&line).expect("oracle json")
    }
}

impl Drop for Oracle {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A resolution reduced to what both sides can be compared on.
#[derive(Debug, PartialEq)]
pub enum Norm {
    Respond,
    Redirect {
        status: u16,
        location: Option<String>,
        headers: Vec<(String, String)>,
    },
    External {
        url: String,
        headers: Vec<(String, String)>,
        status: Option<u16>,
    },
    Output {
        pathname: String,
        invocation_path: String,
        query: BTreeMap<String, Vec<String>>,
        route_matches: BTreeMap<String, String>,
        headers: Vec<(String, String)>,
        status: Option<u16>,
    },
    NotFound {
        headers: Vec<(String, String)>,
        status: Option<u16>,
    },
    Error,
}

pub fn norm_rust(r: Resolution) -> Norm {
    match r {
        Resolution::Redirect {
            status,
            location,
            headers,
            ..
        } => Norm::Redirect {
            status,
            location,
            headers,
        },
        Resolution::ExternalRewrite {
            url,
            headers,
            status,
            ..
        } => Norm::External {
            url,
            headers,
            status,
        },
        Resolution::Output(o) => {
            let mut query: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (k, v) in o.query {
                query.entry(k).or_default().push(v);
            }
            Norm::Output {
                pathname: o.pathname,
                invocation_path: o.invocation_path,
                query,
                route_matches: o
                    .route_matches
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
                headers: o.headers,
                status: o.status,
            }
        }
        Resolution::NotFound {
            headers, status, ..
        } => Norm::NotFound { headers, status },
        Resolution::Rejected { .. } => Norm::Error,
    }
}

pub fn headers_of(v: &Value) -> Vec<(String, String)> {
    v.get("resolvedHeaders")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|p| {
                    (
                        p[0].as_str().unwrap_or_default().to_string(),
                        p[1].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn norm_js(v: &Value) -> Norm {
    if v.get("error").is_some() {
        return Norm::Error;
    }
    if v.get("middlewareResponded").is_some() {
        return Norm::Respond;
    }
    let headers = headers_of(v);
    let status = v.get("status").and_then(Value::as_u64).map(|s| s as u16);
    if let Some(r) = v.get("redirect") {
        return Norm::Redirect {
            status: r["status"].as_u64().unwrap_or_default() as u16,
            location: r["url"].as_str().map(str::to_string),
            headers,
        };
    }
    if let Some(u) = v.get("externalRewrite") {
        return Norm::External {
            url: u.as_str().unwrap_or_default().to_string(),
            headers,
            status,
        };
    }
    if let Some(p) = v.get("resolvedPathname") {
        let t = &v["invocationTarget"];
        let mut query = BTreeMap::new();
        if let Some(obj) = t["query"].as_object() {
            for (k, v) in obj {
                let vals = match v {
                    Value::Array(a) => a
                        .iter()
                        .map(|x| x.as_str().unwrap_or_default().to_string())
                        .collect(),
                    other => vec![other.as_str().unwrap_or_default().to_string()],
                };
                query.insert(k.clone(), vals);
            }
        }
        let route_matches = v
            .get("routeMatches")
            .and_then(Value::as_object)
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        return Norm::Output {
            pathname: p.as_str().unwrap_or_default().to_string(),
            invocation_path: t["pathname"].as_str().unwrap_or_default().to_string(),
            query,
            route_matches,
            headers,
            status,
        };
    }
    let is_redirect = status.is_some_and(|s| (300..400).contains(&s))
        && headers
            .iter()
            .any(|(k, _)| k == "location" || k == "refresh");
    if is_redirect {
        let location = headers
            .iter()
            .find(|(k, _)| k == "location")
            .map(|(_, v)| v.clone());
        return Norm::Redirect {
            status: status.unwrap_or_default(),
            location,
            headers,
        };
    }
    Norm::NotFound { headers, status }
}

/// A deterministic xorshift generator.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

#[derive(Clone, Debug)]
pub struct Case {
    pub req: RequestInfo,
    pub mw: Option<(u16, Vec<(String, String)>)>,
}

pub fn case(path: &str, query: Option<&str>, headers: &[(&str, &str)], host: &str) -> Case {
    Case {
        req: RequestInfo {
            method: "GET".into(),
            path: path.into(),
            query: query.map(str::to_string),
            headers: std::sync::Arc::new(
                headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            host: Some(host.into()),
            secure: false,
            init_origin: None,
        },
        mw: None,
    }
}

pub fn middleware_responses() -> Vec<(u16, Vec<(&'static str, &'static str)>)> {
    vec![
        (200, vec![("x-middleware-next", "1")]),
        (
            200,
            vec![
                ("x-middleware-next", "1"),
                ("x-middleware-override-headers", "x-from-mw,cookie"),
                ("x-middleware-request-x-from-mw", "yes"),
                ("x-custom", "c"),
            ],
        ),
        (200, vec![("x-middleware-rewrite", "/about?mw=1")]),
        (
            200,
            vec![("x-middleware-rewrite", "http://localhost:3000/blog/mw")],
        ),
        (
            200,
            vec![("x-middleware-rewrite", "https://ext.example/a?b=1")],
        ),
        (307, vec![("location", "/landing/x")]),
        (308, vec![("location", "https://other.example/p")]),
        (200, vec![]),
        (
            200,
            vec![("location", "/not-a-redirect"), ("x-middleware-next", "1")],
        ),
        (
            200,
            vec![
                ("x-middleware-next", "1"),
                ("set-cookie", "a=1"),
                ("set-cookie", "b=2"),
                ("x-middleware-set-cookie", "a=1"),
            ],
        ),
    ]
}

pub fn case_json(table: &str, c: &Case) -> Value {
    json!({
        "table": table,
        "req": {
            "path": c.req.path,
            "query": c.req.query,
            "headers": *c.req.headers,
            "host": c.req.host,
            "secure": c.req.secure,
        },
        "mw": c.mw.as_ref().map(|(s, h)| json!({"status": s, "headers": h})),
    })
}

pub fn run_rust(router: &Router, c: &Case) -> (Norm, Option<bool>, bool) {
    let (n, invoked, early, _) = run_rust_passes(router, c);
    (n, invoked, early)
}

/// [`run_rust`], routing again while a `fallback: false` page declines the path (next start
/// mode, as the server does: the middleware answers the same way each pass); also returns how
/// many passes it took.
pub fn run_rust_passes(router: &Router, c: &Case) -> (Norm, Option<bool>, bool, usize) {
    let mut req = c.req.clone();
    let mut declined: Vec<String> = Vec::new();
    let mut earlier: Vec<(String, String)> = Vec::new();
    loop {
        let passes = declined.len() + 1;
        let (r, invoked, early) = match router.start(&req) {
            Step::Done(r) => (r, None, passes == 1),
            Step::Continue(mut st) => {
                st.set_declined(declined.clone());
                let invoked = router.middleware_matches(&st);
                let mut done = None;
                if invoked && let Some((status, headers)) = &c.mw {
                    match router.apply_middleware(&mut st, *status, headers) {
                        MiddlewareEffect::Respond => {
                            return (Norm::Respond, Some(true), false, passes);
                        }
                        MiddlewareEffect::Done(r) => done = Some(*r),
                        MiddlewareEffect::Continue => {}
                    }
                }
                let r = done.unwrap_or_else(|| router.finish(st));
                (r, Some(invoked), false)
            }
        };
        match r {
            Resolution::NotFound {
                headers,
                request_headers,
                declined: Some(page),
                ..
            } if passes < Router::MAX_PASSES => {
                Resolution::merge_headers(&mut earlier, headers);
                declined.push(page);
                req = router.no_fallback_retry(&req, &request_headers);
            }
            r => {
                let invoked = if passes == 1 {
                    invoked
                } else {
                    invoked.or(Some(false))
                };
                return (
                    norm_rust(r.with_earlier_headers(earlier)),
                    invoked,
                    early,
                    passes,
                );
            }
        }
    }
}

impl Oracle {
    /// Sends every message, then reads one answer per message. A writer thread feeds stdin
    /// while this thread drains the answers, so Node never waits on a round trip.
    pub fn ask_many(&mut self, msgs: &[Value]) -> Vec<Value> {
        let stdin = &mut self.stdin;
        let rx = &self.rx;
        std::thread::scope(|s| {
            let writer = s.spawn(move || {
                let mut w = BufWriter::with_capacity(1 << 16, stdin);
                for m in msgs {
                    writeln!(w, "{m}").expect("write to oracle");
                }
                w.flush().expect("flush to oracle");
            });
            let mut out = Vec::with_capacity(msgs.len());
            for _ in msgs {
                let line = rx.recv_timeout(TIMEOUT).expect("oracle answers in time");
                out.push(serde_json::from_str(&line).expect("oracle json"));
            }
            writer.join().expect("writer thread");
            out
        })
    }
}

/// The outcome kind of a normalized resolution (for coverage counts).
pub fn kind(n: &Norm) -> &'static str {
    match n {
        Norm::Respond => "respond",
        Norm::Redirect { .. } => "redirect",
        Norm::External { .. } => "external",
        Norm::Output { .. } => "output",
        Norm::NotFound { .. } => "notfound",
        Norm::Error => "error",
    }
}

/// Ferry's side of one case, and the message that asks the oracle the same question.
pub struct Prepared {
    pub ours: Norm,
    pub invoked: Option<bool>,
    pub msg: Value,
}

/// Runs a case through Ferry's router and builds the oracle question for it.
pub fn prepare(router: &Router, table: &str, c: &Case) -> Prepared {
    let (ours, invoked, finished_early) = run_rust(router, c);
    let msg = if finished_early {
        // Deliberate difference: see the module doc.
        let mut asked = c.clone();
        asked.mw = None;
        case_json(table, &asked)
    } else {
        case_json(table, c)
    };
    Prepared { ours, invoked, msg }
}

/// Compares Ferry's result with the oracle's answer; `Some(report)` on a divergence.
pub fn check(table: &str, c: &Case, p: &Prepared, theirs_raw: &Value) -> Option<String> {
    let theirs = norm_js(theirs_raw);
    let invoked_js = theirs_raw["invoked"].as_bool();
    let invoked_diff =
        p.invoked.is_some() && theirs_raw.get("error").is_none() && p.invoked != invoked_js;
    if p.ours != theirs || invoked_diff {
        Some(format!(
            "[{table}] {:?} q={:?} h={:?} host={:?} secure={} mw={:?}\n  ours:   {:?} (mw invoked {:?})\n  theirs: {theirs:?} (mw invoked {invoked_js:?}){}",
            c.req.path,
            c.req.query,
            c.req.headers,
            c.req.host,
            c.req.secure,
            c.mw,
            p.ours,
            p.invoked,
            theirs_raw
                .get("error")
                .map(|e| format!("\n  oracle error: {e}"))
                .unwrap_or_default()
        ))
    } else {
        None
    }
}

/// `s` cut to about `max` bytes (very long generated paths make unreadable reports).
pub fn shorten(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

// --- next start mode -------------------------------------------------------------------------

/// What the next-start classifier needs to know about a table.
#[derive(Clone, Debug)]
pub struct TableInfo {
    pub base_path: String,
    pub i18n: Option<I18nConfig>,
    pub middleware: bool,
    /// The table has `dynamicRoutes` rules.
    pub dynamic_routes: bool,
    /// The table has internal rules (`priority`: the trailing-slash redirects).
    pub internal_rules: bool,
    /// Every `has` / `missing` item of every rule and middleware matcher.
    pub conditions: Vec<ferry_manifest::RouteHas>,
    /// Rewrites whose destination path interpolates a param: (sourceRegex, case-insensitive).
    pub param_rewrites: Vec<String>,
    /// Rewrites whose destination path ends in `/` (`/?x=1`): their sourceRegex.
    pub slash_rewrites: Vec<String>,
}

impl TableInfo {
    pub fn of(fx: &Fixture) -> Self {
        Self {
            base_path: fx.base_path.clone(),
            i18n: fx.i18n.clone(),
            middleware: fx
                .middleware_matchers
                .as_ref()
                .is_some_and(|m| !m.is_empty()),
            dynamic_routes: !fx.routing.dynamic_routes.is_empty(),
            internal_rules: fx
                .routing
                .before_middleware
                .iter()
                .any(|r| r.priority == Some(true)),
            conditions: {
                let r = &fx.routing;
                let rules = r
                    .before_middleware
                    .iter()
                    .chain(&r.before_files)
                    .chain(&r.after_files)
                    .chain(&r.dynamic_routes)
                    .chain(&r.on_match)
                    .chain(&r.fallback)
                    .flat_map(|r| r.has.iter().chain(r.missing.iter()).flatten());
                let matchers = fx
                    .middleware_matchers
                    .iter()
                    .flatten()
                    .flat_map(|m| m.has.iter().chain(m.missing.iter()).flatten());
                rules.chain(matchers).cloned().collect()
            },
            param_rewrites: fx
                .routing
                .before_files
                .iter()
                .chain(&fx.routing.after_files)
                .chain(&fx.routing.fallback)
                .filter(|r| {
                    r.destination
                        .as_deref()
                        .is_some_and(|d| d.split('?').next().unwrap_or_default().contains('$'))
                })
                .map(|r| r.source_regex.clone())
                .collect(),
            slash_rewrites: fx
                .routing
                .before_files
                .iter()
                .chain(&fx.routing.after_files)
                .chain(&fx.routing.fallback)
                .filter(|r| {
                    r.destination.as_deref().is_some_and(|d| {
                        let p = d.split(['?', '#']).next().unwrap_or_default();
                        p.len() > 1 && p.ends_with('/')
                    })
                })
                .map(|r| r.source_regex.clone())
                .collect(),
        }
    }
}

/// The router in `next start` mode, as the server builds it.
pub fn next_start_router(fx: &Fixture) -> Router {
    Router::new(&manifest(fx))
        .expect("router builds")
        .with_next_start_data_urls(true)
        .with_next_start_semantics(true)
}

/// The classes of request where `next start` (and so [`Router::with_next_start_semantics`])
/// deliberately differs from `@next/routing`, each with the Next.js code that decides it. A
/// request in none of them must resolve the same in both modes.
pub const NEXT_START_CLASSES: &[(&str, &str)] = &[
    (
        "next-data",
        "a `_next/data` URL: next start turns it into its page URL (locale, trailing slash) before every rule and only with middleware (resolve-routes.js middleware_next_data); @next/routing normalizes it without middleware, after i18n",
    ),
    (
        "i18n-root",
        "i18n, the path without basePath is `/` or `/index`: next start's locale redirect comes first, is relative, goes to a bare domain and prefers the host's domain locale (router-server.js getLocaleRedirect)",
    ),
    (
        "i18n-without-base-path",
        "i18n, a basePath the request lacks: next start adds the locale without the basePath (resolve-routes.js hadBasePath), @next/routing adds both",
    ),
    (
        "i18n-api",
        "i18n, an `/api` path: next start adds the locale to it and skips the filesystem for `/<locale>/api` (checkLocaleApi); @next/routing leaves `/api` alone",
    ),
    (
        "i18n-locale-spelling",
        "i18n, a locale segment spelled in another case: next start's filesystem check matches locales case-insensitively",
    ),
    (
        "i18n-internal-rule",
        "i18n and internal trailing-slash rules: next start matches them against the path without the default locale (resolve-routes.js handleRoute `route.internal`)",
    ),
    (
        "trailing-slash",
        "a path ending in `/` (the request's, or a rewrite destination's such as `/?x=1`): next start's filesystem check drops one trailing slash (filesystem.js getItem) and keeps it when adding the locale",
    ),
    (
        "filesystem-name",
        "a path naming `/index`, `/_error`, `/404`, `/_app`, `/_document`, a percent-encoded page, or a file (found under the default locales): next start's getItem answers these differently",
    ),
    (
        "redirect-destination",
        "a redirect with a request query or an unmatched optional param: next start merges the query and compiles the destination with path-to-regexp (prepare-destination.js)",
    ),
    (
        "middleware-case",
        "middleware and an upper-case letter in the path: next start's matchers are case-sensitive (`new RegExp(matcher.regexp)`)",
    ),
    (
        "dynamic-route-case",
        "dynamic routes and an upper-case letter in the path: next start matches them case-sensitively (filesystem.js getRouteMatcher of route-regex.js `new RegExp(`^${re}$`)`, the data routes' `new RegExp(dataRouteRegex)`), @next/routing with the `i` flag",
    ),
    (
        "i18n-page-under-locale",
        "i18n, a page found under the locale the request named or the router added: next start's filesystem check strips any locale for pages (filesystem.js handleLocale on pageFile), @next/routing needs the locale-prefixed pathname",
    ),
    (
        "base-path-without-i18n",
        "a basePath, no i18n, and the request lacks it: next start's filesystem check requires the basePath",
    ),
    (
        "has-value",
        "a `has` / `missing` item whose value the request's matches only as a substring, or a cookie read differently (percent-encoded or repeated), or a repeated query key: next start's matchHas anchors the value (`new RegExp(`^${value}$`)`), reads cookies with the `cookie` package (first wins, decoded) and a query array by its last value, and a host item without named groups that holds gives a `host` param (prepare-destination.js matchHas)",
    ),
    (
        "fallback-false-retry",
        "a `fallback: false` page's route matches without the prerender-bypass cookie: next start invokes the page, which declines a path it did not prerender (NoFallbackError), and router-server.js routes the request again from the URL next-server left (basePath, `_next/data` prefix and locale stripped; the page skipped), keeping the first pass's headers; @next/routing never matches the page without the cookie",
    ),
    (
        "rewrite-destination",
        "a rewrite both modes follow to the same output (or an external URL with the same path up to an absent param's `/`) with a different query: next start compiles the destination with its own params (prepare-destination.js prepareDestination, appendParamsToQuery: arrays for repeated params, no nextInternalLocale, matchHas's params, `:name` kept for an absent one, an absent optional path param dropped with its `/`) where the adapter's `$n` template (@vercel/routing-utils replaceSegments) appended every param",
    ),
];

/// The request's values a `has` item of `kind`/`key` can see, each as next start and as
/// `@next/routing` read it, the middleware rewrite's query included.
fn condition_values(
    c: &Case,
    h: &ferry_manifest::RouteHas,
) -> Vec<(Option<String>, Option<String>)> {
    use ferry_manifest::HasKind;
    let key = h.key.clone().unwrap_or_default();
    let header = |name: &str| {
        let vals: Vec<&str> = c
            .req
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect();
        (!vals.is_empty()).then(|| vals.join(if name == "cookie" { "; " } else { ", " }))
    };
    match h.kind {
        HasKind::Header => {
            let v = header(&key.to_lowercase());
            vec![(v.clone(), v)]
        }
        HasKind::Cookie => {
            let Some(cookie) = header("cookie") else {
                return vec![];
            };
            let all: Vec<String> = cookie
                .split(';')
                .filter_map(|p| p.split_once('='))
                .filter(|(n, _)| n.trim() == key)
                .map(|(_, v)| v.trim().to_string())
                .collect();
            let first = all.first().map(|v| {
                let v = v.trim_matches('"');
                url::form_urlencoded::parse(format!("x={}", v.replace('+', "%2B")).as_bytes())
                    .next()
                    .map(|(_, d)| d.into_owned())
                    .unwrap_or_else(|| v.to_string())
            });
            vec![(first, all.last().cloned())]
        }
        HasKind::Query => {
            let mut queries = vec![c.req.query.clone().unwrap_or_default()];
            if let Some((_, hs)) = &c.mw {
                for (k, v) in hs {
                    if k == "x-middleware-rewrite" {
                        queries.push(
                            v.split_once('?')
                                .map(|(_, q)| q.to_string())
                                .unwrap_or_default(),
                        );
                    }
                }
            }
            queries
                .iter()
                .map(|q| {
                    let vals: Vec<String> = url::form_urlencoded::parse(q.as_bytes())
                        .filter(|(k, _)| *k == key)
                        .map(|(_, v)| v.into_owned())
                        .collect();
                    (vals.last().cloned(), vals.first().cloned())
                })
                .collect()
        }
        HasKind::Host => {
            let host = c.req.host.clone().unwrap_or_else(|| "localhost".into());
            let name = host.split(':').next().unwrap_or_default().to_lowercase();
            vec![(Some(name.clone()), Some(name))]
        }
    }
}

/// Whether a `has` item of the table reads the request differently in next start (see the
/// `has-value` class).
fn has_value_differs(t: &TableInfo, c: &Case) -> bool {
    t.conditions.iter().any(|h| {
        condition_values(c, h).into_iter().any(|(ns, plain)| {
            if ns != plain {
                return true;
            }
            let (Some(v), Some(actual)) = (&h.value, ns) else {
                return false;
            };
            match (
                regress::Regex::new(v),
                regress::Regex::new(&format!("^{v}$")),
                regress::Regex::new(&format!("^(?:{v})$")),
            ) {
                (Ok(plain), Ok(ns), Ok(grouped)) => {
                    let holds = ns.find(&actual).is_some();
                    plain.find(&actual).is_some() && !holds
                        || holds != grouped.find(&actual).is_some()
                        // matchHas: a host item without named groups adds a `host` param.
                        || holds && h.kind == ferry_manifest::HasKind::Host && !v.contains("(?<")
                }
                _ => false,
            }
        })
    })
}

/// An external URL without its query and with every empty path segment's `/` taken out.
fn external_path(url: &str) -> String {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    let path = &url[..end];
    let (scheme, path) = match path.find("://") {
        Some(i) => path.split_at(i + 3),
        None => ("", path),
    };
    let mut p = path.to_string();
    while p.contains("//") {
        p = p.replace("//", "/");
    }
    p = p.trim_end_matches('/').to_string();
    format!("{scheme}{p}")
}

fn has_prefix(path: &str, prefix: &str) -> bool {
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|r| r.starts_with('/'))
}

/// The next-start classes `c` belongs to (see [`NEXT_START_CLASSES`]).
pub fn next_start_classes(t: &TableInfo, c: &Case, ns: &Norm, plain: &Norm) -> Vec<&'static str> {
    // The path as routing sees it (dot segments resolved like the URL parser does).
    let mut u = url::Url::parse("http://h/").expect("url");
    u.set_path(&c.req.path);
    let path = u.path();
    let bp = t.base_path.as_str();
    let mut out = vec![];
    let stripped = if has_prefix(path, bp) {
        &path[bp.len()..]
    } else {
        path
    };
    if path.contains("/_next/data/") {
        out.push("next-data");
    }
    if let Some(i18n) = &t.i18n {
        let (first, rest) = {
            let s = stripped.trim_start_matches('/');
            let (a, b) = s.split_once('/').unwrap_or((s, ""));
            (a.to_string(), format!("/{b}"))
        };
        let locale = i18n.locales.iter().find(|l| l.eq_ignore_ascii_case(&first));
        if matches!(stripped, "" | "/" | "/index" | "/index/")
            || locale.is_some() && matches!(rest.as_str(), "/" | "/index" | "/index/")
        {
            out.push("i18n-root");
        }
        if !bp.is_empty() && !has_prefix(path, bp) {
            out.push("i18n-without-base-path");
        }
        let unprefixed = if locale.is_some() {
            rest.as_str()
        } else {
            stripped
        };
        if has_prefix(unprefixed, "/api") || has_prefix(stripped, "/api") {
            out.push("i18n-api");
        }
        if locale.is_some_and(|l| *l != first) {
            out.push("i18n-locale-spelling");
        }
        if let Norm::Output {
            pathname,
            invocation_path,
            ..
        } = ns
        {
            let first = |p: &str| {
                let p = if has_prefix(p, bp) { &p[bp.len()..] } else { p };
                p.trim_start_matches('/')
                    .split('/')
                    .next()
                    .unwrap_or_default()
                    .to_lowercase()
            };
            let is_locale = |seg: &str| i18n.locales.iter().any(|l| l.to_lowercase() == seg);
            if is_locale(&first(invocation_path)) && !is_locale(&first(pathname)) {
                out.push("i18n-page-under-locale");
            }
        }
        let permanent = |n: &Norm| matches!(n, Norm::Redirect { status: 308, .. });
        if t.internal_rules && (permanent(ns) || permanent(plain)) {
            out.push("i18n-internal-rule");
        }
        // A file: next start finds public files under the default locale it adds.
        if path.rsplit('/').next().is_some_and(|seg| seg.contains('.')) {
            out.push("filesystem-name");
        }
    } else if !bp.is_empty() && !has_prefix(path, bp) {
        out.push("base-path-without-i18n");
    }
    // The request's, or a rewrite's: the basePath root reached as `<basePath>/`.
    let base_root = matches!(ns, Norm::Output { pathname, invocation_path, .. }
        if !bp.is_empty() && pathname == bp
            || invocation_path.len() > 1 && invocation_path.ends_with('/'));
    // A rewrite to a path ending in `/` (`/?x=1` is `/<locale>/` with i18n): next start's
    // filesystem check drops that slash too.
    let mut localized = vec![path.to_string()];
    if let Some(i18n) = &t.i18n {
        for l in &i18n.locales {
            localized.push(format!(
                "{bp}/{l}{}",
                if stripped == "/" { "" } else { stripped }
            ));
        }
    }
    let slash_rewrite = t.slash_rewrites.iter().any(|re| {
        regress::Regex::with_flags(re, "i")
            .is_ok_and(|re| localized.iter().any(|p| re.find(p).is_some()))
    });
    if path.len() > 1 && path.ends_with('/') || base_root || slash_rewrite {
        out.push("trailing-slash");
    }
    let special = ["/index", "/_error", "/404", "/_app", "/_document"];
    // Also where a rewrite (or middleware) led.
    let rewritten_to_special = matches!(plain, Norm::Output { pathname, .. }
        if special.iter().any(|s| pathname.ends_with(s)));
    // A percent-encoded path, the request's or the one a middleware rewrite leads to.
    let mw_encoded = c.mw.iter().flat_map(|(_, hs)| hs).any(|(k, v)| {
        k == "x-middleware-rewrite" && v.split('?').next().unwrap_or_default().contains('%')
    });
    if special.iter().any(|s| path.contains(s))
        || path.contains('%')
        || mw_encoded
        || rewritten_to_special
    {
        out.push("filesystem-name");
    }
    let redirect = |n: &Norm| matches!(n, Norm::Redirect { .. });
    if (redirect(ns) || redirect(plain))
        && (c.req.query.as_deref().is_some_and(|q| !q.is_empty())
            || [ns, plain]
                .iter()
                .any(|n| matches!(n, Norm::Redirect { location: Some(l), .. } if l.contains(':')))
            || empty_segments_dropped(ns) == empty_segments_dropped(plain))
    {
        out.push("redirect-destination");
    }
    if t.middleware && path.chars().any(|ch| ch.is_ascii_uppercase()) {
        out.push("middleware-case");
    }
    if t.dynamic_routes && path.chars().any(|ch| ch.is_ascii_uppercase()) {
        out.push("dynamic-route-case");
    }
    if has_value_differs(t, c) {
        out.push("has-value");
    }
    let same_target = match (ns, plain) {
        (
            Norm::External {
                url: a,
                headers: ha,
                status: sa,
            },
            Norm::External {
                url: b,
                headers: hb,
                status: sb,
            },
        ) => external_path(a) == external_path(b) && ha == hb && sa == sb,
        (
            Norm::Output {
                pathname: pa,
                invocation_path: ia,
                headers: ha,
                status: sa,
                ..
            },
            Norm::Output {
                pathname: pb,
                invocation_path: ib,
                headers: hb,
                status: sb,
                ..
            },
        ) => {
            // Up to an absent param's `/` (chained rewrites included: the later rule's source
            // never sees the request's path).
            let slashes = |p: &str| {
                let mut p = p.to_string();
                while p.contains("//") {
                    p = p.replace("//", "/");
                }
                p.trim_end_matches('/').to_string()
            };
            let same_path = ia == ib || !t.param_rewrites.is_empty() && slashes(ia) == slashes(ib);
            pa == pb && same_path && ha == hb && sa == sb
        }
        _ => false,
    };
    // A rewrite whose destination path interpolates a param that did not take part: next start
    // drops it with its `/`, the adapter's `$n` leaves an empty segment.
    let mut paths = vec![path.to_string()];
    if let Some((_, hs)) = &c.mw {
        for (k, v) in hs {
            if k == "x-middleware-rewrite" {
                let p = v.split('?').next().unwrap_or_default();
                let p = p.find("://").map_or(p, |i| {
                    let rest = &p[i + 3..];
                    rest.find('/').map_or("/", |j| &rest[j..])
                });
                paths.push(p.to_string());
            }
        }
    }
    let absent_param = t.param_rewrites.iter().any(|re| {
        regress::Regex::with_flags(re, "i").is_ok_and(|re| {
            paths.iter().any(|p| {
                re.find(p)
                    .is_some_and(|m| m.captures.iter().any(Option::is_none))
            })
        })
    });
    if same_target || absent_param {
        out.push("rewrite-destination");
    }
    out
}

/// A redirect's location with every empty path segment's `/` taken out (an absent optional
/// param: next start's path-to-regexp `compile` drops it with its prefix).
fn empty_segments_dropped(n: &Norm) -> Option<String> {
    let Norm::Redirect {
        status,
        location: Some(l),
        ..
    } = n
    else {
        return None;
    };
    let end = l.find(['?', '#']).unwrap_or(l.len());
    let (path, rest) = l.split_at(end);
    // Keep a scheme's `//`.
    let (scheme, path) = match path.find("://") {
        Some(i) => path.split_at(i + 3),
        None => ("", path),
    };
    let mut p = path.to_string();
    while p.contains("//") {
        p = p.replace("//", "/");
    }
    if p.len() > 1 && p.ends_with('/') {
        p.pop();
    }
    Some(format!("{status} {scheme}{p}{rest}"))
}

/// Runs `c` through the next-start router: `Ok(None)` when it resolves as `@next/routing` does
/// (`plain`), `Ok(Some(class))` when it differs in a documented class, `Err(report)` otherwise.
pub fn check_next_start(
    ns_router: &Router,
    t: &TableInfo,
    table: &str,
    c: &Case,
    plain: &Norm,
) -> Result<Option<&'static str>, String> {
    let (ns, _, _, passes) = run_rust_passes(ns_router, c);
    if ns == *plain {
        return Ok(None);
    }
    let mut classes = next_start_classes(t, c, &ns, plain);
    if passes > 1 {
        classes.insert(0, "fallback-false-retry");
    }
    match classes.first() {
        Some(class) => Ok(Some(class)),
        None => Err(format!(
            "[{table}] next-start mode differs outside every documented class: {:?} q={:?} h={:?} host={:?} mw={:?}\n  next start mode: {ns:?}\n  @next/routing:   {plain:?}",
            c.req.path, c.req.query, c.req.headers, c.req.host, c.mw
        )),
    }
}
