//! End-to-end request size limits: the real `ferry start` serving the showcase bundle answers
//! oversized requests with a clean 4xx (a full response, not a connection reset), over raw
//! HTTP/1.1 and over h2c (prior knowledge):
//! - header section (request line + headers) over 16 KB → 431, as Node's HTTP server does;
//! - more than 256 header fields → 431;
//! - request target (path + query) over 8 KB → 414.
//!
//! Requests just under each limit are served normally.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, ensure};
use support::{FerryServer, RawRequest, RawResponse};

const TIMEOUT: Duration = Duration::from_secs(30);

static SHOWCASE: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// The showcase, built with `ferry build` once for this test binary.
fn showcase() -> Result<&'static Path> {
    SHOWCASE
        .get_or_init(|| {
            support::build_app_once("limits", &support::showcase_src(), |_| Ok(()))
                .map_err(|e| format!("{e:#}"))
        })
        .as_deref()
        .map_err(|e| anyhow!("building the showcase failed: {e}"))
}

fn start() -> Result<FerryServer> {
    let app = showcase()?;
    // A port the OS picks: tests in this binary run in parallel, and probing a fixed range
    // let two of them pick the same port (regression: `Address already in use` in CI).
    let port = support::free_port()?;
    let spec = support::ferry_start(&support::ferry_bin(), app, port).args([
        "--workers",
        "1",
        "--shutdown-timeout",
        "5",
    ]);
    FerryServer::start_spec(&spec, ([127, 0, 0, 1], port).into())
}

fn get(target: &str) -> RawRequest {
    RawRequest::get(target)
        .header("Host", "localhost")
        .header("Connection", "close")
}

fn expect(resp: &RawResponse, status: u16, what: &str) -> Result<()> {
    ensure!(
        resp.status == status,
        "{what}: expected {status}, got {} {} (body {:?})",
        resp.status,
        resp.reason,
        String::from_utf8_lossy(&resp.body)
    );
    Ok(())
}

/// `n` header fields `x-h<i>: v`.
fn many(req: RawRequest, n: usize) -> RawRequest {
    (0..n).fold(req, |r, i| r.header(&format!("x-h{i}"), "v"))
}

/// One request over a fresh h2c (prior knowledge) connection; the response status.
fn h2(addr: SocketAddr, target: &str, headers: &[(String, String)]) -> Result<u16> {
    use http_body_util::Empty;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        tokio::time::timeout(TIMEOUT, async {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await?;
            tokio::spawn(conn);
            let mut req = hyper::Request::get(format!("http://localhost:{}{target}", addr.port()));
            for (k, v) in headers {
                req = req.header(k.as_str(), v.as_str());
            }
            let resp = sender
                .send_request(req.body(Empty::<bytes::Bytes>::new())?)
                .await?;
            Ok::<u16, anyhow::Error>(resp.status().as_u16())
        })
        .await
        .map_err(|_| anyhow!("h2 request timed out"))?
    })
}

#[test]
fn http1_header_and_uri_limits_answer_4xx() -> Result<()> {
    let ferry = start()?;
    let addr = ferry.addr;
    let send = |req: &RawRequest| support::send(addr, req, TIMEOUT);

    // Baseline, and just under each limit.
    expect(&send(&get("/"))?, 200, "GET /")?;
    expect(
        &send(&get("/").header("Cookie", &format!("a={}", "b".repeat(15 * 1024))))?,
        200,
        "15 KB cookie",
    )?;
    expect(&send(&many(get("/"), 250))?, 200, "250 header fields")?;
    let near = format!("/?q={}", "a".repeat(8 * 1024 - 8));
    expect(&send(&get(&near))?, 200, "target just under 8 KB")?;

    // Over: the header section (one big cookie, or many headers of a few hundred bytes).
    let resp = send(&get("/").header("Cookie", &format!("a={}", "b".repeat(17 * 1024))))?;
    expect(&resp, 431, "17 KB cookie")?;
    let fat = (0..40).fold(get("/"), |r, i| {
        r.header(&format!("x-f{i}"), &"v".repeat(500))
    });
    expect(&send(&fat)?, 431, "40 × 500-byte headers")?;
    expect(&send(&many(get("/"), 300))?, 431, "300 header fields")?;
    // Well past it: still read whole and answered, not reset.
    let resp = send(&get("/").header("Cookie", &format!("a={}", "b".repeat(200 * 1024))));
    expect(
        &resp.context("200 KB cookie: no answer")?,
        431,
        "200 KB cookie",
    )?;

    // Over: the request target.
    expect(
        &send(&get(&format!("/{}", "a".repeat(9 * 1024))))?,
        414,
        "9 KB path",
    )?;
    expect(
        &send(&get(&format!("/?q={}", "a".repeat(9 * 1024))))?,
        414,
        "9 KB query",
    )?;
    expect(
        &send(&get(&format!("/{}", "%41".repeat(3 * 1024))))?,
        414,
        "9 KB of %xx",
    )?;

    // The server is still fine afterwards.
    expect(&send(&get("/"))?, 200, "GET / after the rejections")?;
    Ok(())
}

#[test]
fn h2c_header_and_uri_limits_answer_4xx() -> Result<()> {
    let ferry = start()?;
    let addr = ferry.addr;
    let many = |n: usize| -> Vec<(String, String)> {
        (0..n)
            .map(|i| (format!("x-h{i}"), "v".to_string()))
            .collect()
    };
    let cookie = |kb: usize| vec![("cookie".to_string(), format!("a={}", "b".repeat(kb * 1024)))];

    ensure!(h2(addr, "/", &[])? == 200, "h2 GET /");
    ensure!(h2(addr, "/", &cookie(15))? == 200, "h2 15 KB cookie");
    ensure!(h2(addr, "/", &many(250))? == 200, "h2 250 header fields");

    let status = h2(addr, "/", &cookie(17))?;
    ensure!(status == 431, "h2 17 KB cookie: {status}");
    let status = h2(addr, "/", &many(300))?;
    ensure!(status == 431, "h2 300 header fields: {status}");
    let status = h2(addr, "/", &cookie(64))?;
    ensure!(status == 431, "h2 64 KB cookie: {status}");
    let status = h2(addr, &format!("/{}", "a".repeat(9 * 1024)), &[])?;
    ensure!(status == 414, "h2 9 KB path: {status}");

    ensure!(h2(addr, "/", &[])? == 200, "h2 GET / after the rejections");
    Ok(())
}
