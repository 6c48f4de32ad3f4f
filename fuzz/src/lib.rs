//! Request-to-resolution harness shared by the `route` fuzz target and the corpus replay test
//! (`crates/ferry-router/tests/safety.rs` includes this file): arbitrary bytes become a request
//! (method, path + query, headers including host, cookie, accept-language and the RSC ones, a
//! middleware answer) that is routed through every phase against the real fixture tables.
#![allow(dead_code)] // the replay test uses part of it

use ferry_manifest::{
    BundleKind, I18nConfig, MANIFEST_VERSION, Manifest, MiddlewareMatcher, MiddlewareOutput,
    Routing, RuntimeConfig, StaticFile, StaticSource,
};
use ferry_router::{MiddlewareEffect, RequestInfo, Resolution, Router, Step};
use serde::Deserialize;

/// The fixture tables, in selector order.
pub const FIXTURES: [&str; 3] = [
    include_str!("../../crates/ferry-router/tests/fixtures/showcase.json"),
    include_str!("../../crates/ferry-router/tests/fixtures/rules.json"),
    include_str!("../../crates/ferry-router/tests/fixtures/intl.json"),
];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Fixture {
    build_id: String,
    base_path: String,
    i18n: Option<I18nConfig>,
    routing: Routing,
    #[serde(default)]
    middleware_matchers: Option<Vec<MiddlewareMatcher>>,
    pathnames: Vec<String>,
}

/// The manifest a fixture table (the JSON of `tests/fixtures/*.json`) stands for.
pub fn manifest(json: &str) -> Manifest {
    let fx: Fixture = serde_json::from_str(json).expect("fixture json");
    Manifest {
        version: MANIFEST_VERSION,
        ferry_version: "fuzz".into(),
        next_version: "16.4.6".into(),
        kind: BundleKind::Server,
        build_id: fx.build_id,
        deployment_id: None,
        config: RuntimeConfig {
            base_path: fx.base_path,
            i18n: fx.i18n,
            ..RuntimeConfig::default()
        },
        routing: fx.routing,
        functions: vec![],
        middleware: fx.middleware_matchers.map(|matchers| MiddlewareOutput {
            entry: "middleware.js".into(),
            runtime: "nodejs".into(),
            matchers,
        }),
        prerenders: vec![],
        static_files: fx
            .pathnames
            .into_iter()
            .map(|p| StaticFile {
                file: format!("f{p}"),
                pathname: p,
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

/// One router per fixture table (the showcase one also with `next start`'s data URLs).
pub fn routers() -> Vec<Router> {
    let mut out: Vec<Router> = FIXTURES
        .iter()
        .map(|j| Router::new(&manifest(j)).expect("fixture router"))
        .collect();
    out.push(
        Router::new(&manifest(FIXTURES[0]))
            .expect("fixture router")
            .with_next_start_data_urls(true),
    );
    out
}

const METHODS: [&str; 6] = ["GET", "HEAD", "POST", "OPTIONS", "PUT", "G\u{e9}T"];
/// Header names the router looks at, so the fuzzer need not discover them.
const NAMES: [&str; 12] = [
    "host",
    "cookie",
    "accept-language",
    "rsc",
    "next-router-prefetch",
    "next-router-segment-prefetch",
    "x-prerender-revalidate",
    "purpose",
    "x-nextjs-data",
    "x-id-mode",
    "x-mode",
    "user-agent",
];

/// Bytes to text the way the server hands header values over (latin-1: every byte a char).
fn latin1(b: &[u8]) -> String {
    b.iter().map(|&c| char::from(c)).collect()
}

/// A decoded fuzz case: which router, the request, and the middleware answer (if it runs).
pub struct Case {
    /// Index into [`routers`].
    pub router: usize,
    /// The request.
    pub req: RequestInfo,
    /// The middleware's status and response headers.
    pub middleware: Option<(u16, Vec<(String, String)>)>,
}

/// Decodes fuzz bytes: `[selector, flags, mw]` then 0x00-separated fields: path, query, then
/// headers as `name-index value` or `name:value`, the last field feeding the middleware answer.
pub fn decode(data: &[u8], n_routers: usize) -> Option<Case> {
    let (&sel, rest) = data.split_first()?;
    let (&flags, rest) = rest.split_first().unwrap_or((&0, &[]));
    let (&mw, rest) = rest.split_first().unwrap_or((&0, &[]));
    let mut fields = rest.split(|&b| b == 0);
    let path = fields.next().map(latin1).unwrap_or_default();
    let path = if flags & 0x10 == 0 && !path.starts_with('/') {
        format!("/{path}")
    } else {
        path
    };
    let query = fields.next().map(latin1).filter(|_| flags & 0x20 == 0);
    let mut headers = Vec::new();
    let mut host = None;
    let mut mw_value = String::from("/");
    for f in fields {
        let Some((&first, value)) = f.split_first() else {
            continue;
        };
        let (name, value) = if usize::from(first) < NAMES.len() {
            (NAMES[usize::from(first)].to_string(), latin1(value))
        } else {
            let text = latin1(f);
            match text.split_once(':') {
                Some((n, v)) => (n.to_ascii_lowercase(), v.to_string()),
                None => {
                    mw_value = text;
                    continue;
                }
            }
        };
        if name == "host" {
            host = Some(value.clone());
        }
        headers.push((name, value));
    }
    let req = RequestInfo {
        method: METHODS[usize::from(flags & 0x07) % METHODS.len()].to_string(),
        path,
        query,
        headers: headers.into(),
        host,
        secure: flags & 0x08 != 0,
        init_origin: match flags >> 6 {
            1 => Some("http://localhost:3000".into()),
            2 => Some("http://127.0.0.1:3000".into()),
            _ => None,
        },
    };
    let h = |k: &str, v: &str| (k.to_string(), v.to_string());
    let middleware = match mw % 10 {
        0 => None,
        1 => Some((200, vec![h("x-middleware-next", "1")])),
        2 => Some((200, vec![h("x-middleware-rewrite", &mw_value)])),
        3 => Some((307, vec![h("location", &mw_value)])),
        4 => Some((
            200,
            vec![
                h("x-middleware-next", "1"),
                h("x-middleware-override-headers", &mw_value),
                h(&format!("x-middleware-request-{mw_value}"), "v"),
                h("set-cookie", "a=1"),
                h("set-cookie", &mw_value),
                h("x-middleware-set-cookie", "a=1"),
            ],
        )),
        5 => Some((200, vec![h("content-type", "text/plain")])),
        6 => Some((
            302,
            vec![h("x-middleware-rewrite", &mw_value), h("location", "/x")],
        )),
        7 => Some((
            200,
            vec![h("x-middleware-rewrite", &format!("http://{mw_value}"))],
        )),
        8 => Some((
            u16::from(mw),
            vec![h("location", &mw_value), h("x-middleware-refresh", "1")],
        )),
        _ => Some((
            200,
            vec![h(
                "x-middleware-rewrite",
                &format!("https://ext.example/{mw_value}"),
            )],
        )),
    };
    Some(Case {
        router: usize::from(sel) % n_routers,
        req,
        middleware,
    })
}

/// Routes a request through every phase: `start`, middleware matching, the middleware answer
/// (when it matches), `finish`; also the middleware-free [`Router::resolve`].
pub fn route(router: &Router, req: &RequestInfo, mw: Option<&(u16, Vec<(String, String)>)>) {
    let plain = router.resolve(req);
    check(&plain);
    let Step::Continue(mut state) = router.start(req) else {
        return;
    };
    let _ = state.middleware_url();
    if router.middleware_matches(&state)
        && let Some((status, headers)) = mw
    {
        match router.apply_middleware(&mut state, *status, headers) {
            MiddlewareEffect::Continue => {}
            MiddlewareEffect::Respond => return,
            MiddlewareEffect::Done(r) => {
                check(&r);
                return;
            }
        }
    }
    check(&router.finish(state));
}

/// Invariants every resolution keeps.
fn check(r: &Resolution) {
    match r {
        Resolution::Redirect { status, .. } => {
            assert!((300..400).contains(status), "redirect status {status}")
        }
        Resolution::Rejected { status, .. } => {
            assert!((400..600).contains(status), "rejected status {status}")
        }
        Resolution::Output(o) => assert!(!o.pathname.is_empty(), "empty output pathname"),
        Resolution::ExternalRewrite { .. } | Resolution::NotFound { .. } => {}
    }
}

/// The fuzz entry point: decode and route (no panic is the property).
pub fn run(routers: &[Router], data: &[u8]) {
    if let Some(case) = decode(data, routers.len()) {
        route(&routers[case.router], &case.req, case.middleware.as_ref());
    }
}
