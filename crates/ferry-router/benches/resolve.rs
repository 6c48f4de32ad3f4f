//! Median time per resolution on the showcase routing table (all phases, middleware matching
//! included). Run with `cargo bench -p ferry-router --bench resolve`.

use std::time::Instant;

use ferry_manifest::{
    BundleKind, MANIFEST_VERSION, Manifest, MiddlewareOutput, Routing, RuntimeConfig, StaticFile,
    StaticSource,
};
use ferry_router::{RequestInfo, Router, Step};

fn showcase() -> Manifest {
    let v: serde_json::Value =
        serde_json::from_str(include_str!("../tests/fixtures/showcase.json")).expect("json");
    let routing: Routing = serde_json::from_value(v["routing"].clone()).expect("routing");
    let pathnames: Vec<String> = serde_json::from_value(v["pathnames"].clone()).expect("paths");
    Manifest {
        version: MANIFEST_VERSION,
        ferry_version: "t".into(),
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

fn main() {
    let router = Router::new(&showcase()).expect("router");
    let paths = [
        "/",
        "/blog/hello",
        "/blog/new-post",
        "/_next/static/chunks/0cz1d0mv5g_q7.js",
        "/ssr",
        "/docs/x",
        "/old-blog/a",
        "/nope/at/all",
    ];
    for p in paths {
        let req = RequestInfo {
            method: "GET".into(),
            path: p.into(),
            query: Some("a=1".into()),
            headers: vec![
                ("accept".into(), "text/html".into()),
                ("cookie".into(), "a=1; b=2".into()),
                ("user-agent".into(), "bench".into()),
            ],
            host: Some("localhost:3000".into()),
            secure: false,
            init_origin: None,
        };
        let mut samples = Vec::with_capacity(2000);
        for _ in 0..2000 {
            let t = Instant::now();
            let r = match router.start(&req) {
                Step::Done(r) => r,
                Step::Continue(st) => {
                    let _ = router.middleware_matches(&st);
                    router.finish(st)
                }
            };
            std::hint::black_box(r);
            samples.push(t.elapsed().as_nanos());
        }
        samples.sort_unstable();
        eprintln!(
            "{p:40} median {:.2} µs",
            samples[samples.len() / 2] as f64 / 1000.0
        );
    }
}
