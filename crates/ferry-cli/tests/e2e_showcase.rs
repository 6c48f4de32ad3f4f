//! End-to-end tests of `ferry start` serving `examples/showcase`: the real `ferry` binary, a real
//! `ferry build` of a copy of the app (done once for this test binary), real Node.js workers, real
//! sockets. One test per behaviour; each test starts its own server on a free port.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use support::{FerryServer, RawRequest, RawResponse};
use support::{body_text, paragraph};

/// Generous bound for one request (the slowest page, /stream, takes 1.5 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

static SHOWCASE: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// The showcase, copied and built with `ferry build` once for all tests of this binary.
fn showcase() -> Result<&'static Path> {
    SHOWCASE
        .get_or_init(|| {
            support::build_app_once("showcase", &support::showcase_src(), |_| Ok(()))
                .map_err(|e| format!("{e:#}"))
        })
        .as_deref()
        .map_err(|e| anyhow!("building the showcase failed: {e}"))
}

/// `ferry start` of the showcase with one worker (so module state such as the action counter is
/// deterministic) and a short shutdown timeout (so dropping the server is quick).
fn start(extra: &[&str], env: &[(&str, &str)]) -> Result<FerryServer> {
    let mut args = vec!["--workers", "1", "--shutdown-timeout", "10"];
    args.extend_from_slice(extra);
    FerryServer::start(showcase()?, &args, env)
}

fn expect_status(resp: &RawResponse, status: u16, what: &str) -> Result<()> {
    ensure!(
        resp.status == status,
        "{what}: expected HTTP {status}, got {} {} (headers {:?})",
        resp.status,
        resp.reason,
        resp.headers
    );
    Ok(())
}

fn expect_header(resp: &RawResponse, name: &str, value: &str, what: &str) -> Result<()> {
    ensure!(
        resp.header(name) == Some(value),
        "{what}: expected `{name}: {value}`, got {:?} (status {}, headers {:?})",
        resp.header(name),
        resp.status,
        resp.headers
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Start-up
// ---------------------------------------------------------------------------------------------

#[test]
fn start_to_first_200_is_measured_and_ready_line_printed() -> Result<()> {
    let app = showcase()?;
    let port = support::free_port()?;
    let addr = ([127, 0, 0, 1], port).into();
    let logs = tempfile::tempdir()?;
    let spec = support::ferry_start(&support::ferry_bin(), app, port).args(["--workers", "1"]);
    let started = Instant::now();
    let mut server =
        support::ServerProcess::spawn("ferry start", &spec, addr, &logs.path().join("ferry.log"))?;
    let probe = RawRequest::get("/")
        .header("Host", "localhost")
        .header("Connection", "close");
    let first_200 = loop {
        if let Some(status) = server.wait_exit(Duration::ZERO)? {
            bail!(
                "ferry start exited ({status}):\n{}",
                support::tail(&server.log, 30)
            );
        }
        if let Ok(resp) = support::send(addr, &probe, Duration::from_secs(10))
            && resp.status == 200
        {
            break started.elapsed();
        }
        ensure!(
            started.elapsed() < Duration::from_secs(60),
            "no 200 within 60 s:\n{}",
            support::tail(&server.log, 30)
        );
        thread::sleep(Duration::from_millis(5));
    };
    // The first 200 that needs a Node.js worker (a route handler).
    let api = RawRequest::get("/api/hello")
        .header("Host", "localhost")
        .header("Connection", "close");
    let first_worker_200 = loop {
        if let Ok(resp) = support::send(addr, &api, Duration::from_secs(10))
            && resp.status == 200
        {
            break started.elapsed();
        }
        ensure!(
            started.elapsed() < Duration::from_secs(60),
            "/api/hello: no 200 within 60 s:\n{}",
            support::tail(&server.log, 30)
        );
        thread::sleep(Duration::from_millis(5));
    };
    eprintln!(
        "start-to-first-200 (showcase, 1 worker): GET / (prerendered) {} ms, GET /api/hello (worker) {} ms",
        first_200.as_millis(),
        first_worker_200.as_millis()
    );
    // The ready line is printed before (or as) the first request is answered.
    let log = std::fs::read_to_string(&server.log)?;
    ensure!(
        log.contains(&format!("✓ Ready on http://127.0.0.1:{port}")),
        "no ready line in:\n{log}"
    );
    ensure!(
        first_200 < Duration::from_secs(10),
        "first 200 after {first_200:?}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Static files and prerendered pages (answered by Rust)
// ---------------------------------------------------------------------------------------------

#[test]
fn static_page_is_served_with_prerender_headers() -> Result<()> {
    let ferry = start(&[], &[])?;
    let resp = ferry.get("/")?;
    expect_status(&resp, 200, "GET /")?;
    expect_header(&resp, "x-nextjs-prerender", "1", "GET /")?;
    expect_header(&resp, "x-nextjs-cache", "HIT", "GET /")?;
    expect_header(&resp, "cache-control", "s-maxage=31536000", "GET /")?;
    expect_header(&resp, "x-powered-by", "Next.js", "GET /")?;
    ensure!(
        resp.header("content-type")
            .is_some_and(|c| c.starts_with("text/html")),
        "content-type {:?}",
        resp.header("content-type")
    );
    ensure!(resp.header("etag").is_some(), "no etag: {:?}", resp.headers);
    ensure!(
        body_text(&resp)?.contains("<p id=\"kind\">static page</p>"),
        "not the home page"
    );
    Ok(())
}

#[test]
fn public_file_is_served_byte_for_byte() -> Result<()> {
    let ferry = start(&[], &[])?;
    let on_disk = std::fs::read(showcase()?.join("public/robots.txt"))?;
    let resp = ferry.get("/robots.txt")?;
    expect_status(&resp, 200, "GET /robots.txt")?;
    expect_header(
        &resp,
        "cache-control",
        "public, max-age=0",
        "GET /robots.txt",
    )?;
    ensure!(
        resp.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "content-type {:?}",
        resp.header("content-type")
    );
    ensure!(
        resp.decoded_body()? == on_disk,
        "body differs from the file"
    );
    Ok(())
}

#[test]
fn hashed_chunk_is_immutable_with_etag_304() -> Result<()> {
    let app = showcase()?;
    let ferry = start(&[], &[])?;
    let chunk = support::largest_chunk(app)?;
    let file = std::fs::read(app.join(".next").join(chunk.trim_start_matches("/_next/")))?;
    let resp = ferry.get(&chunk)?;
    expect_status(&resp, 200, "GET chunk")?;
    expect_header(
        &resp,
        "cache-control",
        "public, max-age=31536000, immutable",
        "GET chunk",
    )?;
    ensure!(
        resp.header("content-type")
            .is_some_and(|c| c.contains("javascript")),
        "content-type {:?}",
        resp.header("content-type")
    );
    ensure!(
        resp.decoded_body()? == file,
        "chunk body differs from the file"
    );
    let etag = resp
        .header("etag")
        .ok_or_else(|| anyhow!("no etag on {chunk}: {:?}", resp.headers))?
        .to_owned();
    let again = ferry.send(
        RawRequest::get(&chunk).header("If-None-Match", &etag),
        REQUEST_TIMEOUT,
    )?;
    expect_status(&again, 304, "conditional GET chunk")?;
    ensure!(again.body.is_empty(), "304 with a body");
    expect_header(&again, "etag", &etag, "304")?;
    Ok(())
}

#[test]
fn hashed_chunk_ranges_give_206_and_416() -> Result<()> {
    let app = showcase()?;
    let ferry = start(&[], &[])?;
    let chunk = support::largest_chunk(app)?;
    let file = std::fs::read(app.join(".next").join(chunk.trim_start_matches("/_next/")))?;
    let len = file.len();
    ensure!(len > 200, "chunk too small for the test: {len}");

    let part = ferry.send(
        RawRequest::get(&chunk).header("Range", "bytes=100-199"),
        REQUEST_TIMEOUT,
    )?;
    expect_status(&part, 206, "Range bytes=100-199")?;
    expect_header(
        &part,
        "content-range",
        &format!("bytes 100-199/{len}"),
        "206",
    )?;
    ensure!(
        part.body == file[100..200],
        "206 body is not bytes 100..200"
    );

    let suffix = ferry.send(
        RawRequest::get(&chunk).header("Range", "bytes=-50"),
        REQUEST_TIMEOUT,
    )?;
    expect_status(&suffix, 206, "Range bytes=-50")?;
    ensure!(
        suffix.body == file[len - 50..],
        "suffix range body is not the last 50 bytes"
    );

    let beyond = ferry.send(
        RawRequest::get(&chunk).header("Range", &format!("bytes={}-", len + 10)),
        REQUEST_TIMEOUT,
    )?;
    expect_status(&beyond, 416, "Range beyond the end")?;
    expect_header(&beyond, "content-range", &format!("bytes */{len}"), "416")?;
    Ok(())
}

#[test]
fn hashed_chunk_brotli_variant_decodes_to_identity() -> Result<()> {
    let app = showcase()?;
    let ferry = start(&[], &[])?;
    let chunk = support::largest_chunk(app)?;
    let identity = ferry.get(&chunk)?;
    expect_status(&identity, 200, "GET chunk (identity)")?;
    ensure!(
        identity.header("content-encoding").is_none(),
        "identity request got content-encoding {:?}",
        identity.header("content-encoding")
    );
    let br = ferry.send(
        RawRequest::get(&chunk).header("Accept-Encoding", "br"),
        REQUEST_TIMEOUT,
    )?;
    expect_status(&br, 200, "GET chunk (br)")?;
    expect_header(&br, "content-encoding", "br", "Accept-Encoding: br")?;
    ensure!(
        br.header_all("vary")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("accept-encoding")),
        "no Vary: Accept-Encoding on the br variant: {:?}",
        br.headers
    );
    ensure!(
        br.body.len() < identity.body.len(),
        "br body ({} bytes) not smaller than identity ({} bytes)",
        br.body.len(),
        identity.body.len()
    );
    ensure!(
        br.decoded_body()? == identity.body,
        "br body does not decompress to the identity bytes"
    );
    Ok(())
}

#[test]
fn head_has_headers_and_no_body() -> Result<()> {
    let app = showcase()?;
    let ferry = start(&[], &[])?;
    let chunk = support::largest_chunk(app)?;
    for path in ["/", chunk.as_str(), "/robots.txt"] {
        let get = ferry.get(path)?;
        let head = ferry.send(
            RawRequest {
                method: "HEAD".into(),
                target: path.into(),
                ..RawRequest::default()
            },
            REQUEST_TIMEOUT,
        )?;
        expect_status(&head, 200, &format!("HEAD {path}"))?;
        ensure!(
            head.header("content-length") == Some(&get.body.len().to_string()),
            "HEAD {path}: content-length {:?}, GET body is {} bytes",
            head.header("content-length"),
            get.body.len()
        );
        ensure!(
            head.header("etag") == get.header("etag"),
            "HEAD {path}: etag {:?} vs GET {:?}",
            head.header("etag"),
            get.header("etag")
        );
        // A body after a HEAD response would show up as garbage before the next response on a
        // kept-alive connection; check the connection carries nothing after the head.
        let mut stream = TcpStream::connect(ferry.addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(
            format!("HEAD {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        let head_end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| anyhow!("HEAD {path}: no end of head"))?;
        ensure!(
            raw.len() == head_end + 4,
            "HEAD {path}: {} bytes after the head",
            raw.len() - head_end - 4
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// ISR and Server Actions
// ---------------------------------------------------------------------------------------------

/// GET /isr → (x-nextjs-cache, generated-at timestamp).
fn isr(ferry: &FerryServer) -> Result<(String, String)> {
    let resp = ferry.get("/isr")?;
    expect_status(&resp, 200, "GET /isr")?;
    let cache = resp.header("x-nextjs-cache").unwrap_or("none").to_owned();
    Ok((cache, paragraph(&body_text(&resp)?, "generated-at")?))
}

/// Polls /isr until it is a HIT with a timestamp other than `old`; returns that timestamp.
fn wait_isr_regenerated(ferry: &FerryServer, old: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = Vec::new();
    loop {
        let (cache, ts) = isr(ferry)?;
        if cache == "HIT" && ts != old {
            return Ok(ts);
        }
        seen.push(format!("{cache} {ts}"));
        ensure!(
            Instant::now() < deadline,
            "/isr not regenerated (old {old}) within 15 s; seen: {seen:?}"
        );
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn isr_goes_stale_after_revalidate_and_regenerates_once() -> Result<()> {
    let ferry = start(&[], &[])?;
    // The build-time seed is older than 5 s by now (or soon): get to a fresh regeneration first.
    let (_, seed) = isr(&ferry)?;
    let first = wait_isr_regenerated(&ferry, &seed)?;
    let fresh_at = Instant::now();

    // Within the 5 s window: a HIT with the same timestamp.
    let (cache, ts) = isr(&ferry)?;
    ensure!(
        cache == "HIT" && ts == first,
        "inside the window: expected HIT {first}, got {cache} {ts}"
    );

    // After the window: STALE with the old timestamp (served at once, regenerated in the
    // background). Several concurrent requests must all be answered from the cache.
    thread::sleep(Duration::from_secs(6).saturating_sub(fresh_at.elapsed()));
    let burst: Vec<Result<(String, String)>> = thread::scope(|s| {
        let handles: Vec<_> = (0..5).map(|_| s.spawn(|| isr(&ferry))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("client thread panicked")))
            })
            .collect()
    });
    let burst = burst.into_iter().collect::<Result<Vec<_>>>()?;
    ensure!(
        burst.iter().any(|(c, t)| c == "STALE" && *t == first),
        "after the window: expected STALE {first} among {burst:?}"
    );

    // The background regeneration makes the next responses HIT with one new timestamp: a single
    // regeneration, not one per stale request.
    let second = wait_isr_regenerated(&ferry, &first)?;
    ensure!(second > first, "new timestamp {second} not after {first}");
    for _ in 0..3 {
        let (cache, ts) = isr(&ferry)?;
        ensure!(
            cache == "HIT" && ts == second,
            "after regeneration: expected HIT {second}, got {cache} {ts} (more than one regeneration?)"
        );
    }
    Ok(())
}

fn find_action_id(html: &str) -> Result<String> {
    let start = html
        .find("$ACTION_ID_")
        .ok_or_else(|| anyhow!("no $ACTION_ID_ in the HTML of /actions"))?
        + "$ACTION_ID_".len();
    let id: String = html[start..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    ensure!(!id.is_empty(), "empty action id");
    Ok(id)
}

#[test]
fn res_revalidate_regenerates_the_page_at_once() -> Result<()> {
    let ferry = start(&[], &[])?;
    let before = ferry.get("/legacy/static")?;
    expect_status(&before, 200, "GET /legacy/static")?;
    let old = paragraph(&body_text(&before)?, "built-at")?;
    // Timestamps have millisecond resolution: make sure a new render differs.
    thread::sleep(Duration::from_millis(20));

    let api = ferry.get("/api/revalidate?path=/legacy/static")?;
    expect_status(&api, 200, "GET /api/revalidate")?;
    let api_body = body_text(&api)?;
    ensure!(
        api_body.contains("\"revalidated\":true"),
        "res.revalidate failed: {api_body}"
    );

    // The very next request is served fresh from Ferry's cache: regenerated, not stale.
    let after = ferry.get("/legacy/static")?;
    expect_status(&after, 200, "GET /legacy/static after res.revalidate")?;
    expect_header(&after, "x-nextjs-cache", "HIT", "after res.revalidate")?;
    let new = paragraph(&body_text(&after)?, "built-at")?;
    ensure!(
        new != old,
        "still the old render {old} after res.revalidate"
    );
    Ok(())
}

#[test]
fn server_action_increments_and_revalidates_path() -> Result<()> {
    let ferry = start(&[], &[])?;
    let page = ferry.get("/actions")?;
    expect_status(&page, 200, "GET /actions")?;
    let html = body_text(&page)?;
    let before: u64 = paragraph(&html, "counter")?.parse()?;
    let action = find_action_id(&html)?;

    let post = RawRequest {
        method: "POST".into(),
        target: "/actions".into(),
        body: b"[]".to_vec(),
        ..RawRequest::default()
    }
    .header("Next-Action", &action)
    .header("Content-Type", "text/plain;charset=UTF-8")
    .header("Accept", "text/x-component")
    .header("Origin", "http://localhost")
    .header("Content-Length", "2");
    let resp = ferry.send(post, REQUEST_TIMEOUT)?;
    expect_status(&resp, 200, "POST /actions (server action)")?;
    ensure!(
        resp.header("content-type")
            .is_some_and(|c| c.starts_with("text/x-component")),
        "action response content-type {:?}",
        resp.header("content-type")
    );

    // revalidatePath('/actions'): the page regenerates and shows the incremented counter.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = Vec::new();
    loop {
        let page = ferry.get("/actions")?;
        expect_status(&page, 200, "GET /actions after the action")?;
        let counter: u64 = paragraph(&body_text(&page)?, "counter")?.parse()?;
        if counter == before + 1 {
            return Ok(());
        }
        seen.push(format!(
            "{} {counter}",
            page.header("x-nextjs-cache").unwrap_or("-")
        ));
        ensure!(
            Instant::now() < deadline,
            "counter never became {} (was {before}); seen {seen:?}",
            before + 1
        );
        thread::sleep(Duration::from_millis(200));
    }
}

// ---------------------------------------------------------------------------------------------
// Streaming
// ---------------------------------------------------------------------------------------------

/// Timing of one streamed response read over a raw socket.
#[derive(Debug)]
struct Streamed {
    status_line: String,
    /// From writing the request to the first body byte.
    first_body: Duration,
    /// Body bytes received in that first read.
    first_chunk: String,
    /// From writing the request to the moment `fast part` had arrived.
    fast_part: Option<Duration>,
    /// From writing the request to EOF.
    total: Duration,
    /// Everything received (head and chunked body, undecoded).
    raw: String,
}

/// GETs `path` with `Connection: close` and records when bytes arrive; `on_first_body` is told
/// when the first body byte has arrived.
fn stream_get(
    addr: std::net::SocketAddr,
    path: &str,
    on_first_body: Option<mpsc::Sender<()>>,
) -> Result<Streamed> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    let started = Instant::now();
    stream.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    let mut first_body = None;
    let mut first_chunk = String::new();
    let mut fast_part = None;
    let mut notify = on_first_body;
    loop {
        let n = stream.read(&mut buf).context("reading the stream")?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if first_body.is_none()
            && let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n")
            && raw.len() > end + 4
        {
            first_body = Some(started.elapsed());
            first_chunk = String::from_utf8_lossy(&raw[end + 4..]).into_owned();
            if let Some(tx) = notify.take() {
                let _ = tx.send(());
            }
        }
        if fast_part.is_none() && raw.windows(9).any(|w| w == b"fast part") {
            fast_part = Some(started.elapsed());
        }
        ensure!(
            started.elapsed() < Duration::from_secs(30),
            "stream took over 30 s"
        );
    }
    let total = started.elapsed();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    Ok(Streamed {
        status_line: raw.lines().next().unwrap_or_default().to_owned(),
        first_body: first_body.ok_or_else(|| anyhow!("no body received: {raw}"))?,
        first_chunk,
        fast_part,
        total,
        raw,
    })
}

#[test]
fn streaming_page_sends_the_shell_before_the_slow_part() -> Result<()> {
    let ferry = start(&[], &[])?;
    let s = stream_get(ferry.addr, "/stream", None)?;
    eprintln!(
        "/stream: first body byte after {} ms, `fast part` after {:?} ms, complete after {} ms",
        s.first_body.as_millis(),
        s.fast_part.map(|d| d.as_millis()),
        s.total.as_millis()
    );
    ensure!(
        s.status_line.starts_with("HTTP/1.1 200"),
        "status line {:?}",
        s.status_line
    );
    ensure!(s.raw.contains("slow part done"), "slow part missing");
    let fast = s
        .fast_part
        .ok_or_else(|| anyhow!("`fast part` never arrived"))?;
    ensure!(
        s.total >= Duration::from_millis(1400),
        "complete after {:?}: the slow part sleeps 1.5 s",
        s.total
    );
    ensure!(
        fast + Duration::from_millis(1000) <= s.total,
        "`fast part` arrived after {fast:?}, the whole response after {:?}: not streamed",
        s.total
    );
    ensure!(
        !s.first_chunk.contains("slow part done"),
        "the first chunk already holds the slow part"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// after()
// ---------------------------------------------------------------------------------------------

fn wait_for_line(file: &Path, line: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if text.lines().any(|l| l == line) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "`{line}` not in {} within {timeout:?}; it holds {text:?}",
            file.display()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn after_callback_runs() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("after.log");
    let log_str = log.to_string_lossy().into_owned();
    let ferry = start(&[], &[("FERRY_EXAMPLE_AFTER_LOG", &log_str)])?;
    let resp = ferry.get("/after?id=e2e-run")?;
    expect_status(&resp, 200, "GET /after")?;
    ensure!(
        body_text(&resp)?.contains("\"scheduled\":\"e2e-run\""),
        "unexpected body {:?}",
        body_text(&resp)?
    );
    wait_for_line(&log, "after e2e-run", Duration::from_secs(10))
}

#[test]
fn after_callback_survives_sigterm() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("after.log");
    let log_str = log.to_string_lossy().into_owned();
    let mut ferry = start(&[], &[("FERRY_EXAMPLE_AFTER_LOG", &log_str)])?;
    let resp = ferry.get("/after?id=e2e-term")?;
    expect_status(&resp, 200, "GET /after")?;
    // The callback waits 300 ms before writing: SIGTERM now, while it is pending.
    ferry.process().signal("-TERM");
    let status = ferry.process().wait_exit(Duration::from_secs(15))?;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    ensure!(
        text.lines().any(|l| l == "after e2e-term"),
        "after() work lost on SIGTERM: log holds {text:?}; ferry exit {status:?}; ferry output:\n{}",
        ferry.log_tail()
    );
    let status = status.ok_or_else(|| anyhow!("ferry still running 15 s after SIGTERM"))?;
    ensure!(
        status.code() == Some(0),
        "ferry exit status {status} after SIGTERM, expected 0:\n{}",
        ferry.log_tail()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Middleware / proxy and forged internal headers
// ---------------------------------------------------------------------------------------------

#[test]
fn proxy_redirects_and_sets_headers() -> Result<()> {
    let ferry = start(&[], &[])?;
    let redirect = ferry.get("/proxy-redirect")?;
    expect_status(&redirect, 307, "GET /proxy-redirect")?;
    let location = redirect.header("location").unwrap_or_default();
    ensure!(
        location == "/" || location.ends_with("://localhost/"),
        "location {location:?}"
    );
    let ssr = ferry.get("/ssr")?;
    expect_status(&ssr, 200, "GET /ssr")?;
    expect_header(&ssr, "x-ferry-proxy", "seen", "GET /ssr")?;
    ensure!(
        body_text(&ssr)?.contains("<h1>SSR</h1>"),
        "not the SSR page"
    );
    Ok(())
}

/// Forged `x-middleware-subrequest` values that skipped middleware in vulnerable Next.js versions
/// (CVE-2025-29927): the recursion-depth marker repeated 5 times for each module name.
const FORGED_SUBREQUESTS: &[&str] = &[
    "middleware:middleware:middleware:middleware:middleware",
    "src/middleware:src/middleware:src/middleware:src/middleware:src/middleware",
    "proxy:proxy:proxy:proxy:proxy",
    "src/proxy:src/proxy:src/proxy:src/proxy:src/proxy",
    "pages/_middleware",
];

#[test]
fn forged_middleware_subrequest_does_not_skip_the_proxy() -> Result<()> {
    let ferry = start(&[], &[])?;
    for forged in FORGED_SUBREQUESTS {
        let ssr = ferry.send(
            RawRequest::get("/ssr").header("x-middleware-subrequest", forged),
            REQUEST_TIMEOUT,
        )?;
        expect_status(&ssr, 200, &format!("/ssr with forged {forged}"))?;
        expect_header(
            &ssr,
            "x-ferry-proxy",
            "seen",
            &format!("/ssr with forged x-middleware-subrequest: {forged} (proxy skipped?)"),
        )?;
        let redirect = ferry.send(
            RawRequest::get("/proxy-redirect").header("x-middleware-subrequest", forged),
            REQUEST_TIMEOUT,
        )?;
        expect_status(
            &redirect,
            307,
            &format!("/proxy-redirect with forged x-middleware-subrequest: {forged}"),
        )?;
    }
    Ok(())
}

#[test]
fn forged_routing_headers_do_not_change_the_page() -> Result<()> {
    let ferry = start(&[], &[])?;
    let forged = [
        ("x-matched-path", "/ssr"),
        ("x-invoke-path", "/ssr"),
        ("x-invoke-output", "/ssr"),
        ("x-now-route-matches", "1=ssr"),
    ];
    for (name, value) in forged {
        let home = ferry.send(RawRequest::get("/").header(name, value), REQUEST_TIMEOUT)?;
        expect_status(&home, 200, &format!("/ with {name}: {value}"))?;
        ensure!(
            body_text(&home)?.contains("<p id=\"kind\">static page</p>"),
            "/ with {name}: {value} served another page"
        );
    }
    let ssr = ferry.send(
        RawRequest::get("/ssr")
            .header("x-matched-path", "/")
            .header("x-invoke-path", "/")
            .header("x-invoke-query", "%7B%22a%22%3A%221%22%7D"),
        REQUEST_TIMEOUT,
    )?;
    expect_status(&ssr, 200, "/ssr with forged x-matched-path: /")?;
    let html = body_text(&ssr)?;
    ensure!(
        html.contains("<h1>SSR</h1>") && !html.contains("static page"),
        "/ssr with x-matched-path: / served another page"
    );
    // A forged matched path must not reach a page the URL does not route to either.
    let blog = ferry.send(
        RawRequest::get("/blog/hello").header("x-matched-path", "/api/hello"),
        REQUEST_TIMEOUT,
    )?;
    expect_status(&blog, 200, "/blog/hello with x-matched-path: /api/hello")?;
    ensure!(
        !body_text(&blog)?.contains("\"hello\":\"world\""),
        "/blog/hello with x-matched-path: /api/hello served the API route"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Listening address: flags and environment
// ---------------------------------------------------------------------------------------------

#[test]
fn port_and_hostname_come_from_env() -> Result<()> {
    let app = showcase()?;
    let port = support::free_port()?;
    let spec = support::ProcessSpec::new(support::ferry_bin(), app)
        .args(["start", &app.to_string_lossy(), "--workers", "1"])
        .env("PORT", &port.to_string())
        .env("HOSTNAME", "127.0.0.1")
        .env("NEXT_TELEMETRY_DISABLED", "1");
    let ferry = FerryServer::start_spec(&spec, ([127, 0, 0, 1], port).into())?;
    expect_status(&ferry.get("/")?, 200, "GET / on $PORT")?;
    ensure!(
        ferry
            .log()
            .contains(&format!("Ready on http://127.0.0.1:{port}")),
        "ready line does not name 127.0.0.1:{port}:\n{}",
        ferry.log_tail()
    );
    Ok(())
}

#[test]
fn port_and_hostname_flags_override_env() -> Result<()> {
    let app = showcase()?;
    let (port, env_port) = (support::free_port()?, support::free_port()?);
    ensure!(port != env_port, "free_port returned the same port twice");
    let spec = support::ferry_start(&support::ferry_bin(), app, port)
        .args(["--workers", "1"])
        .env("PORT", &env_port.to_string())
        .env("HOSTNAME", "0.0.0.0");
    let ferry = FerryServer::start_spec(&spec, ([127, 0, 0, 1], port).into())?;
    expect_status(&ferry.get("/")?, 200, "GET / on -p")?;
    ensure!(
        ferry
            .log()
            .contains(&format!("Ready on http://127.0.0.1:{port}")),
        "ready line does not name -H 127.0.0.1 -p {port}:\n{}",
        ferry.log_tail()
    );
    ensure!(
        TcpStream::connect(("127.0.0.1", env_port)).is_err(),
        "something listens on $PORT {env_port} although -p {port} was given"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Graceful shutdown
// ---------------------------------------------------------------------------------------------

fn shutdown_with_slow_request_in_flight(signal: &str) -> Result<()> {
    let mut ferry = start(&[], &[])?;
    let workers = ferry.wait_for_workers(1)?;
    let addr = ferry.addr;
    let (tx, rx) = mpsc::channel();
    let client = thread::spawn(move || stream_get(addr, "/stream", Some(tx)));
    // Signal once the response has begun (the slow part still has ~1.5 s to go).
    rx.recv_timeout(Duration::from_secs(20))
        .map_err(|_| anyhow!("/stream never started answering"))?;
    let signalled = Instant::now();
    ferry.process().signal(signal);
    let status = ferry.process().wait_exit(Duration::from_secs(15))?;
    let exit_after = signalled.elapsed();
    let streamed = client
        .join()
        .map_err(|_| anyhow!("client thread panicked"))?;
    let streamed = streamed.with_context(|| {
        format!(
            "the in-flight /stream request failed after {signal}; ferry output:\n{}",
            ferry.log_tail()
        )
    })?;
    ensure!(
        streamed.raw.contains("slow part done") && streamed.raw.ends_with("0\r\n\r\n"),
        "the in-flight /stream response was cut short by {signal}: ends with {:?}",
        &streamed.raw[streamed.raw.len().saturating_sub(80)..]
    );
    let status = status.ok_or_else(|| {
        anyhow!(
            "ferry still running 15 s after {signal} (shutdown timeout 10 s):\n{}",
            ferry.log_tail()
        )
    })?;
    ensure!(
        status.code() == Some(0),
        "ferry exit status {status} after {signal}, expected 0:\n{}",
        ferry.log_tail()
    );
    eprintln!(
        "{signal}: ferry exited 0 after {} ms",
        exit_after.as_millis()
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    while workers.iter().any(|&p| support::pid_alive(p)) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<String> = workers
        .iter()
        .filter(|&&p| support::pid_alive(p))
        .map(|&p| format!("{p} {}", support::cmdline(p)))
        .collect();
    ensure!(
        left.is_empty(),
        "worker processes left after exit: {left:?}"
    );
    Ok(())
}

#[test]
fn sigterm_finishes_in_flight_request_and_exits_0() -> Result<()> {
    shutdown_with_slow_request_in_flight("-TERM")
}

#[test]
fn sigint_finishes_in_flight_request_and_exits_0() -> Result<()> {
    shutdown_with_slow_request_in_flight("-INT")
}

// ---------------------------------------------------------------------------------------------
// Protocols and runtime compression
// ---------------------------------------------------------------------------------------------

#[test]
fn h2c_prior_knowledge_serves_static_prerendered_and_dynamic() -> Result<()> {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let ferry = start(&[], &[])?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let stream = tokio::net::TcpStream::connect(ferry.addr).await?;
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await?;
        tokio::spawn(conn);
        for (path, marker) in [
            ("/", "Ferry showcase"),
            ("/ssr", "id=\"rendered-at\""),
            ("/api/hello", "\"hello\":\"world\""),
            ("/robots.txt", "User-agent"),
        ] {
            let req = hyper::Request::get(format!("http://localhost{path}"))
                .body(Empty::<bytes::Bytes>::new())?;
            let res = tokio::time::timeout(REQUEST_TIMEOUT, sender.send_request(req)).await??;
            ensure!(
                res.version() == hyper::Version::HTTP_2,
                "{path}: {:?}",
                res.version()
            );
            ensure!(res.status() == 200, "{path}: status {}", res.status());
            let body = res.into_body().collect().await?.to_bytes();
            let text = String::from_utf8_lossy(&body);
            ensure!(text.contains(marker), "{path}: no {marker:?} in the body");
        }
        Ok(())
    })
}

/// Decodes as much of a chunked body as `raw` holds (`raw` starts after the head).
fn dechunk_prefix(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = raw;
    while let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let Ok(size) = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
        else {
            break;
        };
        let start = line_end + 2;
        if size == 0 || rest.len() < start + size {
            out.extend_from_slice(&rest[start..rest.len().min(start + size)]);
            break;
        }
        out.extend_from_slice(&rest[start..start + size]);
        rest = &rest[(start + size + 2).min(rest.len())..];
    }
    out
}

#[test]
fn gzip_compression_of_a_streamed_page_does_not_hold_back_the_shell() -> Result<()> {
    use flate2::write::GzDecoder;

    let ferry = start(&[], &[])?;
    let mut stream = TcpStream::connect_timeout(&ferry.addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    let started = Instant::now();
    stream.write_all(
        b"GET /stream HTTP/1.1\r\nHost: localhost\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n",
    )?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    let mut fast_at = None;
    let mut head_end = None;
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if head_end.is_none() {
            head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
        }
        if let (Some(h), None) = (head_end, fast_at) {
            // Decompress what has arrived so far: the shell must be decodable already.
            let mut decoder = GzDecoder::new(Vec::new());
            let _ = decoder.write_all(&dechunk_prefix(&raw[h..]));
            let _ = decoder.flush();
            if String::from_utf8_lossy(decoder.get_ref()).contains("fast part") {
                fast_at = Some(started.elapsed());
            }
        }
        ensure!(
            started.elapsed() < Duration::from_secs(30),
            "took over 30 s"
        );
    }
    let total = started.elapsed();
    let head = String::from_utf8_lossy(&raw[..head_end.unwrap_or(0)]).to_ascii_lowercase();
    ensure!(head.starts_with("http/1.1 200"), "head: {head}");
    ensure!(
        head.contains("content-encoding: gzip"),
        "not gzipped: {head}"
    );
    let fast = fast_at.ok_or_else(|| anyhow!("`fast part` never decoded"))?;
    eprintln!("gzip /stream: `fast part` decoded after {fast:?}, complete after {total:?}");
    ensure!(
        fast + Duration::from_millis(1000) <= total,
        "`fast part` decodable only after {fast:?} of {total:?}: compression buffered the stream"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Proxy and page in one worker trip
// ---------------------------------------------------------------------------------------------

/// A page the proxy lets through with a plain `NextResponse.next()` renders in the proxy's own
/// worker trip (`pipeline/fused.rs`): one request per page view reaches the workers, and the page
/// still sees the proxy's response headers as request headers (`x-ferry-proxy`), as under next
/// start. A proxy that changes the request (`?greet=`: an extra request header) costs its own
/// trip, and the page sees the header. The count comes from the pool's own counter, logged at
/// shutdown.
#[test]
fn proxy_and_page_it_lets_through_share_one_worker_trip() -> Result<()> {
    let mut ferry = start(&[], &[])?;
    for i in 0..5 {
        let resp = ferry.send(RawRequest::get("/ssr"), REQUEST_TIMEOUT)?;
        expect_status(&resp, 200, "GET /ssr")?;
        expect_header(&resp, "x-ferry-proxy", "seen", "GET /ssr")?;
        let html = body_text(&resp)?;
        ensure!(
            paragraph(&html, "proxy")? == "seen" && paragraph(&html, "greeting")? == "none",
            "request {i}: the page saw the wrong request headers: {html}"
        );
    }
    for i in 0..3 {
        let resp = ferry.send(RawRequest::get("/ssr?greet=hi"), REQUEST_TIMEOUT)?;
        expect_status(&resp, 200, "GET /ssr?greet=hi")?;
        let html = body_text(&resp)?;
        ensure!(
            paragraph(&html, "proxy")? == "seen" && paragraph(&html, "greeting")? == "hi",
            "greet request {i}: the page saw the wrong request headers: {html}"
        );
    }
    ferry.process().signal("-TERM");
    let status = ferry.process().wait_exit(Duration::from_secs(15))?;
    ensure!(
        status.is_some_and(|s| s.code() == Some(0)),
        "ferry did not exit 0 after SIGTERM ({status:?}):\n{}",
        ferry.log_tail()
    );
    let log = ferry.log_tail();
    let line = log
        .lines()
        .find(|l| l.contains("workers: "))
        .ok_or_else(|| anyhow!("no worker statistics logged at shutdown:\n{log}"))?;
    // 5 plain page views in one trip each, 3 greeted ones in two (proxy, then page).
    ensure!(
        line.contains("workers: 11 requests,"),
        "expected 11 worker requests for 5 fused and 3 two-trip page views: {line}"
    );
    Ok(())
}
