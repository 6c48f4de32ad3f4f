//! Real Next.js 16 entrypoints through the pool, compared with `next start` on the same build.
//!
//! Builds its own copy of examples/showcase (node_modules hard-linked, `next build` run fresh),
//! then asks both the pool and `next start` for the same URLs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferry_workers::{EntryKind, Invocation, PoolConfig, WorkerPool};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

/// Ports this crate's tests may use.
const PORTS: std::ops::Range<u16> = 4500..4550;

fn showcase() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/showcase")
}

/// Copies the app; `node_modules` is hard-linked (same file system) or copied.
fn copy_app(from: &Path, to: &Path) {
    for entry in walkdir::WalkDir::new(from).into_iter().filter_entry(|e| {
        // A build in the source tree may be stale or in progress: always build fresh.
        !(e.depth() == 1 && e.file_name() == ".next")
    }) {
        let entry = entry.expect("walk");
        let rel = entry.path().strip_prefix(from).expect("prefix");
        let dest = to.join(rel);
        let ft = entry.file_type();
        if ft.is_dir() {
            std::fs::create_dir_all(&dest).expect("mkdir");
        } else if ft.is_symlink() {
            let target = std::fs::read_link(entry.path()).expect("readlink");
            std::os::unix::fs::symlink(target, &dest).expect("symlink");
        } else if rel.starts_with("node_modules") {
            if std::fs::hard_link(entry.path(), &dest).is_err() {
                std::fs::copy(entry.path(), &dest).expect("copy");
            }
        } else {
            std::fs::copy(entry.path(), &dest).expect("copy");
        }
    }
}

fn free_port() -> u16 {
    PORTS
        .clone()
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port in 4500..4550")
}

/// One HTTP/1.1 request to `next start`.
async fn fetch(
    port: u16,
    method: Method,
    target: &str,
    body: &'static str,
) -> Response<bytes::Bytes> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect next start");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(target)
        .header("host", format!("localhost:{port}"))
        .header("user-agent", "ferry-test")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            body.as_bytes(),
        )))
        .expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req))
        .await
        .expect("next start timed out")
        .expect("next start response");
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    Response::from_parts(parts, bytes)
}

async fn invoke(
    pool: &WorkerPool,
    port: u16,
    entry: &str,
    kind: EntryKind,
    method: Method,
    target: &str,
    body: &'static str,
) -> Response<bytes::Bytes> {
    let mut inv = Invocation::new(entry, kind, method, target.parse().expect("uri"));
    let mut headers = HeaderMap::new();
    headers.insert(
        "host",
        HeaderValue::from_str(&format!("localhost:{port}")).expect("host"),
    );
    headers.insert("user-agent", HeaderValue::from_static("ferry-test"));
    if !body.is_empty() {
        headers.insert("content-length", HeaderValue::from(body.len()));
    }
    inv.headers = headers;
    inv.body = ferry_http::full(body);
    inv.meta.hostname = Some("localhost".into());
    inv.meta.port = Some(port);
    let resp = pool.dispatch(inv).await.expect("dispatch");
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    Response::from_parts(parts, bytes)
}

fn text(resp: &Response<bytes::Bytes>) -> &str {
    std::str::from_utf8(resp.body()).expect("utf8")
}

fn header<'a>(resp: &'a Response<bytes::Bytes>, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

struct Case {
    name: &'static str,
    entry: &'static str,
    kind: EntryKind,
    method: Method,
    target: &'static str,
    body: &'static str,
    markers: &'static [&'static str],
    same_body: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_next_entrypoints_match_next_start() {
    let work = tempfile::Builder::new()
        .prefix("showcase-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("tmp");
    let app = work.path().join("app");
    let t = Instant::now();
    copy_app(&showcase(), &app);
    eprintln!("copied showcase in {:?}", t.elapsed());

    let next_bin = app.join("node_modules/next/dist/bin/next");
    let t = Instant::now();
    let build = tokio::time::timeout(
        Duration::from_secs(600),
        tokio::process::Command::new("node")
            .arg(&next_bin)
            .arg("build")
            .current_dir(&app)
            .env("NEXT_TELEMETRY_DISABLED", "1")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("next build timed out")
    .expect("run next build");
    assert!(
        build.status.success(),
        "next build failed:\n{}\n{}",
        String::from_utf8_lossy(&build.stdout),
        String::from_utf8_lossy(&build.stderr)
    );
    eprintln!("next build took {:?}", t.elapsed());

    let after_log = work.path().join("after.log");
    let port = free_port();
    let mut next = tokio::process::Command::new("node")
        .arg(&next_bin)
        .args(["start", "-p", &port.to_string(), "-H", "127.0.0.1"])
        .current_dir(&app)
        .env("NEXT_TELEMETRY_DISABLED", "1")
        .env(
            "FERRY_EXAMPLE_AFTER_LOG",
            work.path().join("after-next.log"),
        )
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn next start");

    let mut cfg = PoolConfig::new(&app);
    cfg.workers = 2;
    cfg.env.push((
        "FERRY_EXAMPLE_AFTER_LOG".into(),
        after_log.to_str().expect("utf8").into(),
    ));
    cfg.preload.push(".next/server/app/ssr/page.js".into());
    let t = Instant::now();
    let pool = WorkerPool::start(cfg).await.expect("pool start");
    eprintln!("pool with 2 workers ready in {:?}", t.elapsed());

    let ready_by = Instant::now() + Duration::from_secs(60);
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        assert!(Instant::now() < ready_by, "next start never listened");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let cases = [
        Case {
            name: "app page /ssr",
            entry: ".next/server/app/ssr/page.js",
            kind: EntryKind::AppPage,
            method: Method::GET,
            target: "/ssr",
            body: "",
            markers: &["<h1>SSR</h1>", "<p id=\"ua\">ferry-test</p>"],
            same_body: false,
        },
        Case {
            name: "app route GET /api/hello",
            entry: ".next/server/app/api/hello/route.js",
            kind: EntryKind::AppRoute,
            method: Method::GET,
            target: "/api/hello?name=ferry",
            body: "",
            markers: &["\"name\":\"ferry\""],
            same_body: true,
        },
        Case {
            name: "app route POST /api/hello",
            entry: ".next/server/app/api/hello/route.js",
            kind: EntryKind::AppRoute,
            method: Method::POST,
            target: "/api/hello",
            body: "ping from ferry",
            markers: &["\"echo\":\"ping from ferry\""],
            same_body: true,
        },
        Case {
            name: "ISR page /isr",
            entry: ".next/server/app/isr/page.js",
            kind: EntryKind::AppPage,
            method: Method::GET,
            target: "/isr",
            body: "",
            markers: &["<h1>ISR</h1>"],
            same_body: false,
        },
        Case {
            name: "pages API /api/legacy",
            entry: ".next/server/pages/api/legacy.js",
            kind: EntryKind::PagesApi,
            method: Method::GET,
            target: "/api/legacy?x=1",
            body: "",
            markers: &["\"router\":\"pages\""],
            same_body: true,
        },
        Case {
            name: "pages SSR /legacy/ssr",
            entry: ".next/server/pages/legacy/ssr.js",
            kind: EntryKind::Pages,
            method: Method::GET,
            target: "/legacy/ssr?q=hi",
            body: "",
            markers: &["Pages router SSR", "<p id=\"q\">hi</p>"],
            same_body: false,
        },
    ];
    for case in &cases {
        let t = Instant::now();
        let ours = invoke(
            &pool,
            port,
            case.entry,
            case.kind,
            case.method.clone(),
            case.target,
            case.body,
        )
        .await;
        let took = t.elapsed();
        let theirs = fetch(port, case.method.clone(), case.target, case.body).await;
        eprintln!(
            "{}: pool {} in {took:?} (x-nextjs-cache {:?}), next start {} (x-nextjs-cache {:?})",
            case.name,
            ours.status(),
            header(&ours, "x-nextjs-cache"),
            theirs.status(),
            header(&theirs, "x-nextjs-cache"),
        );
        assert_eq!(ours.status(), theirs.status(), "{}", case.name);
        assert_eq!(
            header(&ours, "content-type"),
            header(&theirs, "content-type"),
            "{}",
            case.name
        );
        assert_eq!(
            header(&ours, "cache-control"),
            header(&theirs, "cache-control"),
            "{}",
            case.name
        );
        for marker in case.markers {
            assert!(
                text(&ours).contains(marker),
                "{}: pool body lacks {marker}",
                case.name
            );
            assert!(
                text(&theirs).contains(marker),
                "{}: next start body lacks {marker}",
                case.name
            );
        }
        if case.same_body {
            assert_eq!(text(&ours), text(&theirs), "{}", case.name);
        }
    }

    // The proxy (middleware) entry: the pool returns its response as-is for Rust to interpret.
    let ours = invoke(
        &pool,
        port,
        ".next/server/middleware.js",
        EntryKind::Middleware,
        Method::GET,
        "/proxy-redirect",
        "",
    )
    .await;
    let theirs = fetch(port, Method::GET, "/proxy-redirect", "").await;
    eprintln!(
        "proxy /proxy-redirect: pool {} {:?}, next start {} {:?}",
        ours.status(),
        header(&ours, "location"),
        theirs.status(),
        header(&theirs, "location")
    );
    assert_eq!(ours.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(ours.status(), theirs.status());
    assert_eq!(header(&ours, "location"), header(&theirs, "location"));

    let ours = invoke(
        &pool,
        port,
        ".next/server/middleware.js",
        EntryKind::Middleware,
        Method::GET,
        "/ssr",
        "",
    )
    .await;
    let theirs = fetch(port, Method::GET, "/ssr", "").await;
    assert_eq!(ours.status(), StatusCode::OK);
    assert_eq!(header(&ours, "x-middleware-next"), Some("1"));
    assert_eq!(header(&ours, "x-ferry-proxy"), Some("seen"));
    assert_eq!(header(&theirs, "x-ferry-proxy"), Some("seen"));

    let ours = invoke(
        &pool,
        port,
        ".next/server/middleware.js",
        EntryKind::Middleware,
        Method::GET,
        "/proxy-rewrite",
        "",
    )
    .await;
    eprintln!(
        "proxy /proxy-rewrite: x-middleware-rewrite {:?}",
        header(&ours, "x-middleware-rewrite")
    );
    assert_eq!(
        header(&ours, "x-middleware-rewrite"),
        Some(format!("http://localhost:{port}/ssr").as_str())
    );

    // after(): the work runs after the response and survives an immediate shutdown.
    let ours = invoke(
        &pool,
        port,
        ".next/server/app/after/route.js",
        EntryKind::AppRoute,
        Method::GET,
        "/after?id=a1",
        "",
    )
    .await;
    assert_eq!(text(&ours), "{\"scheduled\":\"a1\"}");
    assert!(!after_log.exists(), "after() ran before the response");
    let t = Instant::now();
    pool.shutdown(Duration::from_secs(10)).await;
    eprintln!("pool shutdown (after() pending) took {:?}", t.elapsed());
    assert_eq!(
        std::fs::read_to_string(&after_log).expect("after() log"),
        "after a1\n"
    );

    let _ = next.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(10), next.wait()).await;
}
