//! The worker pool against real `node` processes running the bridge and a hand-written
//! fixture entrypoint (tests/fixtures/app/handler.js).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_http::HttpError;
use ferry_workers::{
    EntryKind, Invocation, PoolConfig, WorkerError, WorkerPool, WorkerResponseInfo,
};
use http::{HeaderValue, Method, Response};
use http_body_util::{BodyExt, StreamBody};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn config(name: &str) -> PoolConfig {
    let mut cfg = PoolConfig::new(fixture(name));
    cfg.workers = 1;
    cfg.startup_timeout = Duration::from_secs(20);
    cfg
}

fn inv(method: Method, target: &str) -> Invocation {
    let uri = target.parse().expect("uri");
    Invocation::new("handler.js", EntryKind::PagesApi, method, uri)
}

fn get(target: &str) -> Invocation {
    inv(Method::GET, target)
}

/// Every test body runs under this bound: nothing may hang.
async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(90), f)
        .await
        .expect("test timed out")
}

async fn text(resp: Response<ferry_http::Body>) -> String {
    let bytes = tokio::time::timeout(Duration::from_secs(20), resp.into_body().collect())
        .await
        .expect("body timed out")
        .expect("body")
        .to_bytes();
    String::from_utf8(bytes.to_vec()).expect("utf8")
}

fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
}

async fn wait_dead(pid: u32, within: Duration) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if !process_alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    !process_alive(pid)
}

async fn pid_of(pool: &WorkerPool) -> u32 {
    let resp = pool.dispatch(get("/pid")).await.expect("pid request");
    text(resp).await.trim().parse().expect("pid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_streams_request_body_and_keeps_headers() {
    bounded(async {
        let mut cfg = config("app");
        cfg.env.push(("FIXTURE_CUSTOM".into(), "yes".into()));
        let pool = WorkerPool::start(cfg).await.expect("start");

        // A request body that arrives in pieces, over time.
        let (tx, rx) =
            tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, std::io::Error>>(4);
        tokio::spawn(async move {
            for part in ["hello ", "streamed ", "world"] {
                let _ = tx.send(Ok(http_body::Frame::data(Bytes::from(part)))).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let stream = tokio_stream_from(rx);
        let mut req = inv(Method::POST, "/echo?q=1");
        req.body = ferry_http::boxed(StreamBody::new(stream));
        req.headers
            .insert("x-custom", HeaderValue::from_static("abc"));
        req.headers
            .insert("host", HeaderValue::from_static("example.test:3000"));
        // A client must not be able to choose the entry module.
        req.headers
            .insert("x-ferry-entry", HeaderValue::from_static("/etc/passwd"));
        req.headers
            .insert("connection", HeaderValue::from_static("close"));

        let resp = pool.dispatch(req).await.expect("dispatch");
        assert_eq!(resp.status(), 200);
        let info = *resp.extensions().get::<WorkerResponseInfo>().expect("info");
        assert_eq!(info.worker, 0);
        assert!(!info.not_found && !info.handler_error);
        let cookies: Vec<_> = resp.headers().get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert!(resp.headers().get("connection").is_none());
        let json: serde_json::Value = serde_json::from_str(&text(resp).await).expect("json");
        assert_eq!(json["method"], "POST");
        assert_eq!(json["url"], "/echo?q=1");
        assert_eq!(json["body"], "hello streamed world");
        assert_eq!(json["headers"]["x-custom"], "abc");
        assert_eq!(json["headers"]["host"], "example.test:3000");
        assert!(json["headers"].get("x-ferry-entry").is_none());
        assert!(json["headers"].get("x-ferry-kind").is_none());
        assert_eq!(json["nodeEnv"], "production");
        assert_eq!(json["custom"], "yes");
        let cwd = std::fs::canonicalize(fixture("app")).expect("canon");
        assert_eq!(json["cwd"], cwd.to_str().expect("utf8"));

        // Sequential requests reuse kept-alive connections.
        for i in 0..30 {
            let resp = pool
                .dispatch(get(&format!("/echo?i={i}")))
                .await
                .expect("seq");
            assert_eq!(resp.status(), 200);
            assert!(text(resp).await.contains(&format!("/echo?i={i}")));
        }
        // A 4 MiB response streams through intact.
        let resp = pool.dispatch(get("/big?n=64")).await.expect("big");
        assert_eq!(text(resp).await.len(), 64 * 64 * 1024);
        let stats = pool.stats();
        assert_eq!(stats.in_flight, 0);
        assert_eq!(stats.dispatched, 32);
        pool.shutdown(Duration::from_secs(5)).await;
    })
    .await
}

/// Adapts an mpsc receiver into a `Stream`.
fn tokio_stream_from<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + Sync {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_meta_reaches_the_handler() {
    bounded(async {
        let pool = WorkerPool::start(config("app")).await.expect("start");
        let mut req = get("/meta?x=1");
        req.kind = EntryKind::AppPage;
        req.meta.hostname = Some("example.test".into());
        req.meta.port = Some(3000);
        req.meta
            .extra
            .insert("isRSCRequest".into(), serde_json::Value::Bool(true));
        let resp = pool.dispatch(req).await.expect("dispatch");
        let json: serde_json::Value = serde_json::from_str(&text(resp).await).expect("json");
        let meta = &json["meta"];
        assert_eq!(meta["relativeProjectDir"], ".");
        assert_eq!(meta["hostname"], "example.test");
        assert_eq!(meta["initURL"], "http://example.test:3000/meta?x=1");
        assert_eq!(meta["initProtocol"], "http");
        assert_eq!(meta["isRSCRequest"], true);
        assert_eq!(meta["render404"], "function");
        assert!(meta.get("port").is_none());
        assert_eq!(json["hasWaitUntil"], true);

        // render404 and a throwing handler are reported to Rust, not just as a status.
        let resp = pool.dispatch(get("/not-found")).await.expect("404");
        assert_eq!(resp.status(), 404);
        assert!(
            resp.extensions()
                .get::<WorkerResponseInfo>()
                .expect("info")
                .not_found
        );
        assert!(resp.headers().get("x-ferry-not-found").is_none());
        let resp = pool.dispatch(get("/throw")).await.expect("throw");
        assert_eq!(resp.status(), 500);
        assert!(
            resp.extensions()
                .get::<WorkerResponseInfo>()
                .expect("info")
                .handler_error
        );
        assert_eq!(text(resp).await, "Internal Server Error");
        // The worker survived the exception.
        assert_eq!(pool.stats().restarts, 0);
        pool.shutdown(Duration::from_secs(5)).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn middleware_response_comes_back_as_is() {
    bounded(async {
        let pool = WorkerPool::start(config("app")).await.expect("start");
        let mw = |method: Method, target: &str| {
            let mut i = inv(method, target);
            i.entry = "middleware.js".into();
            i.kind = EntryKind::Middleware;
            i.meta.hostname = Some("example.test".into());
            i.meta.port = Some(3000);
            i
        };

        let mut req = mw(Method::GET, "/anything");
        req.headers
            .insert("user-agent", HeaderValue::from_static("ua-test"));
        let resp = pool.dispatch(req).await.expect("next");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-middleware-next"], "1");
        assert_eq!(resp.headers()["x-middleware-request-x-seen"], "ua-test");
        assert_eq!(resp.headers()["x-meta-hostname"], "example.test");

        let resp = pool
            .dispatch(mw(Method::GET, "/mw-redirect"))
            .await
            .expect("redirect");
        assert_eq!(resp.status(), 307);
        assert_eq!(resp.headers()["location"], "/");

        let mut req = mw(Method::POST, "/mw-respond?a=b");
        req.body = ferry_http::full("payload");
        let resp = pool.dispatch(req).await.expect("respond");
        assert_eq!(resp.status(), 401);
        let cookies: Vec<_> = resp.headers().get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["x=1; Path=/", "y=2; Path=/"]);
        assert_eq!(
            text(resp).await,
            "mw says payload @ http://example.test:3000/mw-respond?a=b"
        );
        pool.shutdown(Duration::from_secs(5)).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_response_arrives_before_the_handler_finishes() {
    bounded(async {
        let pool = WorkerPool::start(config("app")).await.expect("start");
        let start = Instant::now();
        let resp = pool
            .dispatch(get("/stream?gap=800"))
            .await
            .expect("dispatch");
        let headers_at = start.elapsed();
        let mut body = resp.into_body();
        let first = body
            .frame()
            .await
            .expect("frame")
            .expect("ok")
            .into_data()
            .expect("data");
        let first_at = start.elapsed();
        assert_eq!(first, "first\n");
        let mut rest = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.expect("frame").into_data() {
                rest.extend_from_slice(&data);
            }
        }
        let end_at = start.elapsed();
        assert_eq!(rest, b"second\n");
        eprintln!("stream: headers {headers_at:?}, first bytes {first_at:?}, end {end_at:?}");
        assert!(
            first_at + Duration::from_millis(600) < end_at,
            "first bytes were not streamed"
        );
        pool.shutdown(Duration::from_secs(5)).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushed_headers_still_stream_and_keep_the_body_whole() {
    bounded(async {
        let pool = WorkerPool::start(config("app")).await.expect("start");
        // The bridge corks `flushHeaders()` until the event loop turns: a small response
        // arrives whole, and the same connection serves the next one.
        for _ in 0..3 {
            let resp = pool.dispatch(get("/flush")).await.expect("dispatch");
            assert_eq!(resp.status(), 200);
            assert_eq!(resp.headers()["content-type"], "text/plain");
            assert_eq!(text(resp).await, "first\nsecond\n");
        }

        // A head flushed with nothing written after it still leaves at once.
        let start = Instant::now();
        let resp = pool
            .dispatch(get("/flush?head-only&gap=800"))
            .await
            .expect("dispatch");
        let headers_at = start.elapsed();
        assert_eq!(text(resp).await, "late\n");
        let end_at = start.elapsed();
        assert!(
            headers_at + Duration::from_millis(600) < end_at,
            "flushed headers were held back: headers {headers_at:?}, end {end_at:?}"
        );

        // The first chunk written after the flush is not held until the end.
        let start = Instant::now();
        let resp = pool
            .dispatch(get("/flush?gap=800"))
            .await
            .expect("dispatch");
        let mut body = resp.into_body();
        let first = body
            .frame()
            .await
            .expect("frame")
            .expect("ok")
            .into_data()
            .expect("data");
        let first_at = start.elapsed();
        assert_eq!(first, "first\n");
        let mut rest = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.expect("frame").into_data() {
                rest.extend_from_slice(&data);
            }
        }
        assert_eq!(rest, b"second\n");
        let end_at = start.elapsed();
        assert!(
            first_at + Duration::from_millis(600) < end_at,
            "first bytes were not streamed: first {first_at:?}, end {end_at:?}"
        );
        pool.shutdown(Duration::from_secs(5)).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_worker_gives_502_and_is_replaced() {
    bounded(async {
        let pool = WorkerPool::start(config("app")).await.expect("start");
        let before = pid_of(&pool).await;

        let start = Instant::now();
        let err = pool
            .dispatch(get("/crash-before-headers"))
            .await
            .expect_err("must fail");
        let took = start.elapsed();
        eprintln!("crash: 502 after {took:?}");
        assert!(matches!(err, WorkerError::Crashed { .. }), "{err:?}");
        assert_eq!(err.status(), 502);
        assert!(took < Duration::from_secs(2));
        assert!(wait_dead(before, Duration::from_secs(5)).await);

        // The next request waits for the replacement and succeeds.
        let start = Instant::now();
        let after = pid_of(&pool).await;
        eprintln!("crash: replacement answered after {:?}", start.elapsed());
        assert_ne!(before, after);

        // A crash after the headers truncates the body with an error.
        let resp = pool.dispatch(get("/crash")).await.expect("headers");
        assert_eq!(resp.status(), 200);
        let collected = tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect())
            .await
            .expect("no hang");
        assert!(collected.is_err());
        let third = pid_of(&pool).await;
        assert_ne!(third, after);
        let stats = pool.stats();
        assert_eq!(stats.restarts, 2);
        assert_eq!(stats.crashed, 1);
        assert_eq!(stats.in_flight, 0);
        pool.shutdown(Duration::from_secs(5)).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_worker_gives_504_and_is_replaced() {
    bounded(async {
        let mut cfg = config("app");
        cfg.request_timeout = Duration::from_millis(800);
        let pool = WorkerPool::start(cfg).await.expect("start");
        let before = pid_of(&pool).await;
        let start = Instant::now();
        let err = pool
            .dispatch(get("/hang"))
            .await
            .expect_err("must time out");
        let took = start.elapsed();
        eprintln!("hang: 504 after {took:?}");
        assert!(matches!(err, WorkerError::Timeout { .. }), "{err:?}");
        assert_eq!(err.status(), 504);
        assert!(took >= Duration::from_millis(800) && took < Duration::from_secs(3));
        assert!(
            wait_dead(before, Duration::from_secs(5)).await,
            "hung worker not killed"
        );
        let after = pid_of(&pool).await;
        assert_ne!(before, after);
        assert_eq!(pool.stats().timeouts, 1);
        pool.shutdown(Duration::from_secs(5)).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_answers_503_at_once() {
    bounded(async {
        let mut cfg = config("app");
        cfg.max_in_flight_per_worker = 1;
        cfg.queue_limit = 2;
        let pool = WorkerPool::start(cfg).await.expect("start");
        let mut slow = Vec::new();
        for _ in 0..3 {
            let pool = pool.clone();
            slow.push(tokio::spawn(async move {
                let resp = pool.dispatch(get("/slow?ms=1200")).await?;
                Ok::<_, WorkerError>(text(resp).await)
            }));
        }
        // One in flight, two queued.
        let end = Instant::now() + Duration::from_secs(5);
        while pool.stats().queued < 2 && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let stats = pool.stats();
        assert_eq!((stats.in_flight, stats.queued), (1, 2));
        for _ in 0..3 {
            let start = Instant::now();
            let err = pool
                .dispatch(get("/slow?ms=10"))
                .await
                .expect_err("overloaded");
            assert!(matches!(err, WorkerError::Overloaded), "{err:?}");
            assert_eq!(err.status(), 503);
            assert!(start.elapsed() < Duration::from_millis(100));
        }
        for task in slow {
            let body = task.await.expect("join").expect("queued request served");
            assert!(body.starts_with("slow "));
        }
        let stats = pool.stats();
        assert_eq!(stats.rejected, 3);
        assert_eq!((stats.in_flight, stats.queued), (0, 0));
        pool.shutdown(Duration::from_secs(5)).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatch_spreads_over_least_loaded_workers() {
    bounded(async {
        let mut cfg = config("app");
        cfg.workers = 2;
        cfg.max_in_flight_per_worker = 4;
        let pool = WorkerPool::start(cfg).await.expect("start");
        assert_eq!(pool.stats().live_workers, 2);
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let pool = pool.clone();
            tasks.push(tokio::spawn(async move {
                text(pool.dispatch(get("/slow?ms=400")).await.expect("slow")).await
            }));
        }
        let mut pids = std::collections::HashMap::new();
        for t in tasks {
            *pids.entry(t.await.expect("join")).or_insert(0) += 1;
        }
        assert_eq!(pids.len(), 2, "{pids:?}");
        assert!(pids.values().all(|&n| n == 2), "{pids:?}");
        pool.shutdown(Duration::from_secs(5)).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_until_work_completes_when_shutdown_follows_the_response() {
    bounded(async {
        let dir = tempfile::tempdir().expect("tmp");
        let log = dir.path().join("wait-until.log");
        let pool = WorkerPool::start(config("app")).await.expect("start");
        let pid = pid_of(&pool).await;
        let target = format!("/wait-until?id=w1&delay=700&file={}", log.display());
        let resp = pool.dispatch(get(&target)).await.expect("dispatch");
        assert_eq!(text(resp).await, "scheduled");
        assert!(!log.exists(), "work ran before the response");
        let start = Instant::now();
        pool.shutdown(Duration::from_secs(10)).await;
        eprintln!("waitUntil: shutdown took {:?}", start.elapsed());
        assert_eq!(std::fs::read_to_string(&log).expect("log"), "done w1\n");
        assert!(wait_dead(pid, Duration::from_secs(2)).await);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_requests_then_stops_workers() {
    bounded(async {
        let mut cfg = config("app");
        cfg.workers = 2;
        let pool = WorkerPool::start(cfg).await.expect("start");
        let pids: Vec<u32> = pool.worker_pids().into_iter().flatten().collect();
        assert_eq!(pids.len(), 2);
        let p = pool.clone();
        let in_flight = tokio::spawn(async move {
            let resp = p.dispatch(get("/slow?ms=1000")).await?;
            Ok::<_, WorkerError>((resp.status(), text(resp).await))
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let start = Instant::now();
        pool.shutdown(Duration::from_secs(10)).await;
        let took = start.elapsed();
        eprintln!("shutdown with a request in flight took {took:?}");
        let (status, body) = in_flight.await.expect("join").expect("in-flight request");
        assert_eq!(status, 200);
        assert!(body.starts_with("slow "));
        assert!(took >= Duration::from_millis(700), "did not wait: {took:?}");
        for pid in pids {
            assert!(
                wait_dead(pid, Duration::from_secs(2)).await,
                "worker {pid} still running"
            );
        }
        let err = pool.dispatch(get("/pid")).await.expect_err("stopped");
        assert!(matches!(err, WorkerError::ShuttingDown));
        assert_eq!(pool.stats().live_workers, 0);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_signal_handling_app_gets_its_sigterm() {
    bounded(async {
        let dir = tempfile::tempdir().expect("tmp");
        let marker = dir.path().join("sigterm.log");
        let mut cfg = config("manual-sig");
        cfg.env.push(("NEXT_MANUAL_SIG_HANDLE".into(), "1".into()));
        cfg.env.push((
            "FIXTURE_SIGTERM_FILE".into(),
            marker.to_str().expect("utf8").into(),
        ));
        cfg.preload.push("handler.js".into());
        let pool = WorkerPool::start(cfg).await.expect("start");
        let pid = pool.worker_pids()[0].expect("pid");
        let p = pool.clone();
        let in_flight = tokio::spawn(async move {
            let resp = p.dispatch(get("/?ms=500")).await?;
            Ok::<_, WorkerError>(text(resp).await)
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let start = Instant::now();
        pool.shutdown(Duration::from_secs(10)).await;
        let took = start.elapsed();
        eprintln!("manual SIGTERM: shutdown took {took:?}");
        assert_eq!(in_flight.await.expect("join").expect("served"), "manual ok");
        assert_eq!(
            std::fs::read_to_string(&marker).expect("handler ran"),
            format!("sigterm {pid}\n")
        );
        assert!(
            took < Duration::from_secs(5),
            "waited for the kill: {took:?}"
        );
        assert!(wait_dead(pid, Duration::from_secs(2)).await);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_failures_are_reported() {
    bounded(async {
        let mut cfg = config("app");
        cfg.node = PathBuf::from("/nonexistent/node-binary");
        let err = WorkerPool::start(cfg).await.expect_err("no node");
        assert!(matches!(err, WorkerError::Spawn { .. }), "{err:?}");

        let mut cfg = config("app");
        cfg.node_args = vec!["-e".into(), "process.exit(7)".into()];
        let err = WorkerPool::start(cfg).await.expect_err("exits");
        assert!(matches!(err, WorkerError::StartExited { .. }), "{err:?}");
        assert!(err.to_string().contains('7'), "{err}");

        let mut cfg = config("app");
        cfg.workers = 0;
        assert!(matches!(
            WorkerPool::start(cfg).await,
            Err(WorkerError::Config(_))
        ));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_pool_kills_its_workers() {
    bounded(async {
        let pool = WorkerPool::start(config("app")).await.expect("start");
        let pid = pid_of(&pool).await;
        drop(pool);
        assert!(wait_dead(pid, Duration::from_secs(5)).await);
    })
    .await
}

/// Ferry dying closes the worker's stdin; the bridge's watchdog must end the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_exits_when_its_stdin_closes() {
    bounded(async {
        let dir = tempfile::tempdir().expect("tmp");
        let bridge = dir.path().join("bridge.cjs");
        std::fs::write(&bridge, ferry_workers::BRIDGE_JS).expect("write");
        let socket = dir.path().join("w.sock");
        let mut child = tokio::process::Command::new("node")
            .arg(&bridge)
            .current_dir(fixture("app"))
            .env("FERRY_BRIDGE_SOCKET", &socket)
            .stdin(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn node");
        let end = Instant::now() + Duration::from_secs(10);
        while !socket.exists() && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(socket.exists(), "bridge never listened");
        drop(child.stdin.take());
        let start = Instant::now();
        let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .expect("bridge kept running after stdin closed")
            .expect("wait");
        eprintln!(
            "watchdog: exited {status} {:?} after stdin closed",
            start.elapsed()
        );
        assert!(status.success());
    })
    .await
}

/// A worker may answer before it has read the request body. While that body is still being
/// sent, the kept-alive connection cannot carry another request ("not ready"); the next
/// request must not wait on it (nor forever): it goes out on a fresh connection at once, and
/// even a connection that never becomes ready costs at most the request timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_becomes_ready_does_not_hold_requests() {
    bounded(async {
        let mut cfg = config("app");
        cfg.request_timeout = Duration::from_secs(5);
        let pool = WorkerPool::start(cfg).await.expect("start");

        // A request body that never ends: the sender stays alive until the test is over.
        let (tx, rx) =
            tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, std::io::Error>>(4);
        tx.send(Ok(http_body::Frame::data(Bytes::from_static(b"start"))))
            .await
            .expect("first chunk");
        let mut req = inv(Method::POST, "/pid");
        req.body = ferry_http::boxed(StreamBody::new(tokio_stream_from(rx)));
        let resp = pool
            .dispatch(req)
            .await
            .expect("answered before the body ended");
        assert_eq!(resp.status(), 200);
        let pid = text(resp).await;
        assert!(pid.trim().parse::<u32>().is_ok(), "{pid}");

        // That connection went back to the idle list but is still busy sending the body.
        for i in 0..3 {
            let start = Instant::now();
            let resp = tokio::time::timeout(Duration::from_secs(10), pool.dispatch(get("/pid")))
                .await
                .unwrap_or_else(|_| panic!("request {i} hung on a connection that is not ready"))
                .expect("dispatch");
            assert_eq!(resp.status(), 200);
            assert_eq!(text(resp).await, pid, "same worker");
            let took = start.elapsed();
            assert!(took < Duration::from_secs(3), "request {i} waited {took:?}");
        }
        drop(tx);
        pool.shutdown(Duration::from_secs(5)).await;
    })
    .await
}
