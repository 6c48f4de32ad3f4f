//! Time per resolution (all phases, middleware matching included, as a request goes through
//! them) on the example app's routing table (`tests/fixtures/showcase.json`) and on a generated
//! table of 500 rules (`benches/rules500.json`: redirects, headers and rewrites with params and
//! has / missing conditions, on top of the showcase's own). Same requests as
//! `benches/next_routing.js` times for `@next/routing`; `bench/routing.sh` runs both.
//!
//! `cargo bench -p ferry-router --bench resolve` (divan: the `median` column).

use std::sync::LazyLock;

use divan::{Bencher, black_box};
use ferry_manifest::{
    BundleKind, MANIFEST_VERSION, Manifest, MiddlewareOutput, Routing, RuntimeConfig, StaticFile,
    StaticSource,
};
use ferry_router::{RequestInfo, Resolution, Router, Step};

fn main() {
    // `FERRY_PROFILE=<table>/<case>:<n>` runs that case n times and exits, for instruction counts
    // (`valgrind --tool=callgrind`: the difference between two `n` over their difference).
    if let Ok(spec) = std::env::var("FERRY_PROFILE") {
        let (name, n) = spec.split_once(':').expect("<table>/<case>:<n>");
        let (table, case) = name.split_once('/').expect("<table>/<case>");
        let router = if table == "rules500" {
            &*RULES500
        } else {
            &*SHOWCASE
        };
        let req = request(case);
        let _ = route(router, &req);
        for _ in 0..n.parse::<usize>().expect("n") {
            black_box(route(router, black_box(&req)));
        }
        return;
    }
    divan::main();
}

fn manifest(json: &str) -> Manifest {
    let v: serde_json::Value = serde_json::from_str(json).expect("json");
    let routing: Routing = serde_json::from_value(v["routing"].clone()).expect("routing");
    let pathnames: Vec<String> = serde_json::from_value(v["pathnames"].clone()).expect("paths");
    Manifest {
        version: MANIFEST_VERSION,
        ferry_version: "bench".into(),
        next_version: "16".into(),
        kind: BundleKind::Server,
        build_id: v["buildId"].as_str().unwrap_or_default().into(),
        deployment_id: None,
        config: RuntimeConfig::default(),
        routing,
        functions: vec![],
        middleware: Some(MiddlewareOutput {
            entry: "m.js".into(),
            runtime: "nodejs".into(),
            matchers: serde_json::from_value(v["middlewareMatchers"].clone()).expect("m"),
        }),
        prerenders: vec![],
        static_files: pathnames
            .into_iter()
            .map(|p| StaticFile {
                file: p.clone(),
                pathname: p,
                source: StaticSource::Output,
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

static SHOWCASE: LazyLock<Router> = LazyLock::new(|| {
    Router::new(&manifest(include_str!("../tests/fixtures/showcase.json"))).expect("router")
});
static RULES500: LazyLock<Router> =
    LazyLock::new(|| Router::new(&manifest(include_str!("rules500.json"))).expect("router"));

/// The requests (keep in sync with `next_routing.js`).
fn request(case: &str) -> RequestInfo {
    let (path, query, host, extra): (&str, Option<&str>, &str, &[(&str, &str)]) = match case {
        "chunk" | "chunk_no_memo" => (
            "/_next/static/chunks/0cz1d0mv5g_q7.js",
            None,
            "localhost:3000",
            &[],
        ),
        "index" | "index_no_memo" => ("/", None, "localhost:3000", &[]),
        "blog" => ("/blog/x", None, "localhost:3000", &[]),
        "rsc" => ("/blog/hello", None, "localhost:3000", &[("rsc", "1")]),
        "not_found" => ("/nope/at/all", None, "localhost:3000", &[]),
        "redirect_last" => ("/old-149/abc", None, "localhost:3000", &[]),
        "rewrite_has" => ("/rw-98/a/b", Some("v=1"), "sub.example.com", &[]),
        other => panic!("unknown case {other}"),
    };
    let mut headers = vec![
        ("accept".to_string(), "text/html".to_string()),
        ("cookie".to_string(), "a=1; b=2".to_string()),
        ("user-agent".to_string(), "bench".to_string()),
    ];
    headers.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    RequestInfo {
        // The router reads no method; `POST` only keeps the `_no_memo` cases off the path-only
        // memo (src/memo.rs) so they measure the routing phases.
        method: if case.ends_with("_no_memo") {
            "POST"
        } else {
            "GET"
        }
        .into(),
        path: path.into(),
        query: query.map(str::to_string),
        headers: headers.into(),
        host: Some(host.into()),
        secure: false,
        init_origin: None,
    }
}

/// One request through every phase (middleware matched, answering "next").
fn route(router: &Router, req: &RequestInfo) -> Resolution {
    match router.start(req) {
        Step::Done(r) => r,
        Step::Continue(st) => {
            let _ = black_box(router.middleware_matches(&st));
            router.finish(st)
        }
    }
}

const CASES: &[&str] = &[
    "chunk",
    "chunk_no_memo",
    "index",
    "index_no_memo",
    "blog",
    "rsc",
    "not_found",
];
/// The 500-rule table's requests: the example app's and two that reach its own rules.
fn rules_cases() -> impl Iterator<Item = &'static str> {
    CASES
        .iter()
        .copied()
        .chain(["redirect_last", "rewrite_has"])
}

#[divan::bench(args = CASES)]
fn showcase(bencher: Bencher, case: &str) {
    let router = &*SHOWCASE;
    let req = request(case);
    bencher.bench_local(|| route(router, black_box(&req)));
}

#[divan::bench(args = rules_cases())]
fn rules500(bencher: Bencher, case: &str) {
    let router = &*RULES500;
    let req = request(case);
    bencher.bench_local(|| route(router, black_box(&req)));
}

/// Compiling a table (paid once per `ferry start`, before the first request).
#[divan::bench(args = ["showcase", "rules500"], sample_count = 20)]
fn build(bencher: Bencher, table: &str) {
    let m = manifest(match table {
        "showcase" => include_str!("../tests/fixtures/showcase.json"),
        _ => include_str!("rules500.json"),
    });
    bencher.bench_local(|| Router::new(black_box(&m)).expect("router"));
}
