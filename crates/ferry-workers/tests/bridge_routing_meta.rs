//! What the bridge makes of the routing bits Ferry sends in `x-ferry-meta` (real `node` workers
//! running the bridge and the fixture entrypoints in tests/fixtures/app): the routed query as
//! next-server's ordered `query` requestMeta, the client's hop-by-hop `Connection` header, and
//! a middleware answer without Node's own `Date`.

use std::path::Path;
use std::time::Duration;

use ferry_workers::{EntryKind, Invocation, PoolConfig, WorkerPool};
use http::{Method, Response};
use http_body_util::BodyExt;

fn config() -> PoolConfig {
    let mut cfg = PoolConfig::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/app"));
    cfg.workers = 1;
    cfg.startup_timeout = Duration::from_secs(20);
    cfg
}

fn get(entry: &str, kind: EntryKind, target: &str) -> Invocation {
    Invocation::new(entry, kind, Method::GET, target.parse().expect("uri"))
}

async fn text(resp: Response<ferry_http::Body>) -> String {
    let bytes = tokio::time::timeout(Duration::from_secs(20), resp.into_body().collect())
        .await
        .expect("body timed out")
        .expect("body")
        .to_bytes();
    String::from_utf8(bytes.to_vec()).expect("utf8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routed_query_reaches_the_entrypoint_in_routing_order() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let pool = WorkerPool::start(config()).await.expect("start");
        let mut req = get("handler.js", EntryKind::Pages, "/meta?q=1");
        // A middleware rewrite to `/ssr/?q=1&from=mw`: next start's page shows
        // `{"q":"1","from":"mw"}`, not keys in sorted order; repeated keys become arrays.
        req.meta.extra.insert(
            "ferryQuery".into(),
            serde_json::json!([["q", "1"], ["from", "mw"], ["a", "1"], ["a", "2"]]),
        );
        let body = text(pool.dispatch(req).await.expect("dispatch")).await;
        assert!(
            body.contains(r#""query":{"q":"1","from":"mw","a":["1","2"]}"#),
            "{body}"
        );
        assert!(!body.contains("ferryQuery"), "{body}");
        pool.shutdown(Duration::from_secs(5)).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_connection_header_reaches_the_entrypoint() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let pool = WorkerPool::start(config()).await.expect("start");
        let mut req = get("handler.js", EntryKind::PagesApi, "/echo");
        req.meta
            .extra
            .insert("ferryConnection".into(), "close".into());
        let resp = pool.dispatch(req).await.expect("dispatch");
        let json: serde_json::Value = serde_json::from_str(&text(resp).await).expect("json");
        assert_eq!(json["headers"]["connection"], "close");
        // Without it the entrypoint sees none (Ferry's own connection to the worker is not the
        // client's), and the worker connection stays reusable.
        let resp = pool
            .dispatch(get("handler.js", EntryKind::PagesApi, "/echo"))
            .await
            .expect("dispatch");
        let json: serde_json::Value = serde_json::from_str(&text(resp).await).expect("json");
        assert!(json["headers"].get("connection").is_none(), "{json}");
        pool.shutdown(Duration::from_secs(5)).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn middleware_answer_carries_no_date_of_nodes() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let pool = WorkerPool::start(config()).await.expect("start");
        let mut req = get("middleware.js", EntryKind::Middleware, "/anything");
        req.meta.hostname = Some("example.test".into());
        req.meta.port = Some(3000);
        let resp = pool.dispatch(req).await.expect("dispatch");
        assert_eq!(resp.headers()["x-middleware-next"], "1");
        // Ferry copies middleware response headers onto the request (as resolve-routes does);
        // a `Date` Node added would reach the page as a request header.
        assert!(resp.headers().get("date").is_none());
        pool.shutdown(Duration::from_secs(5)).await;
    })
    .await
    .expect("test timed out");
}
