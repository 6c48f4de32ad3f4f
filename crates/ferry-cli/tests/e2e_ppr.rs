//! End-to-end test of Partial Prerendering (Cache Components): the real `ferry` binary serving a
//! real `ferry build` of `tests/fixtures/ppr-app`, real Node.js workers.
//!
//! `/ppr`, `/posts/one` and `/isr` are prerendered to a static shell with a dynamic hole that
//! waits 1 s. Ferry must send the shell from its cache at once and append the dynamic part (a
//! worker resuming the build's postponed state) to the same response: the shell's bytes arrive
//! long before the response ends, and the whole body is one valid document carrying the
//! request's own dynamic data.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use support::{FerryServer, RawRequest};

/// The fixture's dynamic holes sleep this long (tests/fixtures/ppr-app/app/delay.js).
const HOLE_DELAY: Duration = Duration::from_millis(1000);
/// The shell must be there well before the hole could have rendered.
const SHELL_DEADLINE: Duration = Duration::from_millis(500);
/// Bound on every socket read.
const TIMEOUT: Duration = Duration::from_secs(30);

static APP: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// The fixture, copied and built with `ferry build` once for all tests of this binary.
fn app() -> Result<&'static Path> {
    APP.get_or_init(|| {
        let src = support::repo_root().join("tests/fixtures/ppr-app");
        support::build_app_once("ppr", &src, |_| Ok(())).map_err(|e| format!("{e:#}"))
    })
    .as_deref()
    .map_err(|e| anyhow!("building the PPR fixture failed: {e}"))
}

/// One response read off the socket with timings: when `marker` first appeared in the raw
/// bytes, and when the response was complete.
struct Timed {
    head: String,
    /// The de-chunked body.
    body: String,
    marker_at: Duration,
    done_at: Duration,
}

/// Sends a raw GET and reads until the chunked body's last chunk, noting when `marker` arrives.
fn timed_get(
    addr: SocketAddr,
    target: &str,
    headers: &[(&str, &str)],
    marker: &str,
) -> Result<Timed> {
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    let mut req = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let started = Instant::now();
    stream.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    let mut marker_at = None;
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut buf).context("reading the response")?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if marker_at.is_none() && contains(&raw, marker.as_bytes()) {
            marker_at = Some(started.elapsed());
        }
        if raw.ends_with(b"\r\n0\r\n\r\n") {
            break;
        }
    }
    let done_at = started.elapsed();
    let split = find(&raw, b"\r\n\r\n").ok_or_else(|| anyhow!("no response head"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    ensure!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "the PPR response must stream (chunked):\n{head}"
    );
    let body = dechunk(&raw[split + 4..])?;
    Ok(Timed {
        head,
        body: String::from_utf8_lossy(&body).into_owned(),
        marker_at: marker_at.ok_or_else(|| anyhow!("{marker:?} never arrived"))?,
        done_at,
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    find(hay, needle).is_some()
}

/// Decodes a complete chunked body.
fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = find(data, b"\r\n").ok_or_else(|| anyhow!("truncated chunk size"))?;
        let size_text = std::str::from_utf8(&data[..line_end])?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        ensure!(data.len() >= size + 2, "truncated chunk");
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// (page, marker in the shell, text only the resumed part has, request headers).
type Case = (
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

#[test]
fn ppr_shell_arrives_before_the_resumed_dynamic_part() -> Result<()> {
    let app = app()?;
    let ferry = FerryServer::start(app, &["--workers", "1"], &[])?;
    let cases: &[Case] = &[
        (
            "/ppr",
            "PPR shell",
            "dynamic hole: flavour=<!-- -->mint<!-- --> agent=<!-- -->e2e",
            &[("Cookie", "flavour=mint"), ("x-test-agent", "e2e")],
        ),
        (
            "/posts/one",
            "Post <!-- -->one",
            "views of <!-- -->one",
            &[],
        ),
        (
            "/isr",
            "shell rendered at build",
            "who: <!-- -->e2e-isr",
            &[("x-test-agent", "e2e-isr")],
        ),
    ];
    for round in 0..2 {
        for (page, shell_marker, dynamic_marker, headers) in cases {
            let t = timed_get(ferry.addr, page, headers, shell_marker)
                .with_context(|| format!("GET {page}\n{}", ferry.log_tail()))?;
            eprintln!(
                "round {round} {page}: shell after {:?}, complete after {:?}",
                t.marker_at, t.done_at
            );
            ensure!(t.head.starts_with("HTTP/1.1 200"), "{page}: {}", t.head);
            ensure!(
                t.marker_at < SHELL_DEADLINE,
                "{page}: the shell took {:?} (must come from the cache at once)",
                t.marker_at
            );
            ensure!(
                t.done_at >= HOLE_DELAY,
                "{page}: complete after {:?}, before the dynamic hole could render",
                t.done_at
            );
            ensure!(
                t.done_at - t.marker_at >= HOLE_DELAY / 2,
                "{page}: shell at {:?} but complete at {:?}: not streamed ahead",
                t.marker_at,
                t.done_at
            );
            // next start's headers for a resumed PPR response.
            ensure!(
                header(&t.head, "x-nextjs-postponed") == Some("1"),
                "{page}:\n{}",
                t.head
            );
            ensure!(
                header(&t.head, "cache-control")
                    == Some("private, no-cache, no-store, max-age=0, must-revalidate"),
                "{page}:\n{}",
                t.head
            );
            for absent in ["content-length", "etag", "x-nextjs-cache"] {
                ensure!(
                    header(&t.head, absent).is_none(),
                    "{page}: {absent} sent:\n{}",
                    t.head
                );
            }
            // One document: the shell (with its fallback), then the resumed boundary.
            let body = &t.body;
            let shell_at = body
                .find(shell_marker)
                .ok_or_else(|| anyhow!("{page}: no shell"))?;
            let dynamic_at = body
                .find(dynamic_marker)
                .ok_or_else(|| anyhow!("{page}: no dynamic part {dynamic_marker:?} in\n{body}"))?;
            ensure!(
                shell_at < dynamic_at,
                "{page}: dynamic part before the shell"
            );
            ensure!(body.starts_with("<!DOCTYPE html>"), "{page}: {body}");
            ensure!(
                body.trim_end().ends_with("</html>"),
                "{page}: unterminated document"
            );
            ensure!(
                body.matches("<!DOCTYPE html>").count() == 1,
                "{page}: two documents"
            );
        }
    }
    // HEAD gets the same headers without running the resume.
    let started = Instant::now();
    let head = ferry.send(
        RawRequest {
            method: "HEAD".into(),
            ..RawRequest::get("/ppr")
        },
        TIMEOUT,
    )?;
    ensure!(
        head.status == 200 && head.body.is_empty(),
        "HEAD /ppr: {}",
        head.status
    );
    ensure!(head.header("x-nextjs-postponed") == Some("1"));
    ensure!(
        started.elapsed() < SHELL_DEADLINE,
        "HEAD waited {:?}",
        started.elapsed()
    );
    // A fully static page is still a plain cache hit.
    let home = ferry.get("/")?;
    ensure!(
        home.header("x-nextjs-cache") == Some("HIT"),
        "/: {:?}",
        home.headers
    );
    ensure!(home.header("x-nextjs-postponed").is_none());
    Ok(())
}

#[test]
fn ppr_resumes_concurrently_from_one_worker() -> Result<()> {
    let app = app()?;
    let ferry = FerryServer::start(app, &["--workers", "1"], &[])?;
    let addr = ferry.addr;
    let started = Instant::now();
    let results: Vec<Result<Timed>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                s.spawn(move || {
                    let cookie = format!("flavour=c{i}");
                    timed_get(addr, "/ppr", &[("Cookie", cookie.as_str())], "PPR shell")
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("client panicked"))))
            .collect()
    });
    for (i, r) in results.into_iter().enumerate() {
        let t = r.with_context(|| ferry.log_tail())?;
        ensure!(
            t.marker_at < SHELL_DEADLINE,
            "request {i}: shell after {:?}",
            t.marker_at
        );
        ensure!(
            t.body.contains(&format!("flavour=<!-- -->c{i}<!-- -->")),
            "request {i} got another request's dynamic part"
        );
    }
    // The holes sleep concurrently in one worker: far less than 8 × 1 s.
    ensure!(
        started.elapsed() < HOLE_DELAY * 4,
        "took {:?}",
        started.elapsed()
    );
    Ok(())
}
