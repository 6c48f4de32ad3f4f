//! End-to-end test of Partial Prerendering (Cache Components): the real `ferry` binary serving a
//! real `ferry build` of `tests/fixtures/ppr-app`, real Node.js workers.
//!
//! `/ppr`, `/posts/one` and `/isr` are prerendered to a static shell with a dynamic hole that
//! waits 1 s. Ferry must send the shell from its cache at once and append the dynamic part (a
//! worker resuming the build's postponed state) to the same response: the shell's bytes arrive
//! long before the response ends, and the whole body is one valid document carrying the
//! request's own dynamic data.
//!
//! `/regen` is a PPR shell whose cached stamp revalidates every 2 s. Once stale, it is
//! regenerated once in the background (the stale shell served meanwhile) and the new shell is
//! served with the postponed state of its own render: its resumed hole reads the stamp from the
//! resume data cache carried in that state, so hole and shell show the same stamp only when the
//! pair matches. `revalidatePath('/regen')` makes the next request render the pair first.
//!
//! `/posts/[id]` renders new params on demand: the first request for `/posts/<new>` renders its
//! shell with its postponed state once into Ferry's cache (concurrent first requests share that
//! render) and resumes it in the same response; later requests get the stored shell at once
//! (even with every worker stopped) and a resume; the workers keep no copy of their own.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use support::{FerryServer, RawRequest, files_named};

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

/// `/regen`'s cached stamp revalidates after this long (tests/fixtures/ppr-app/app/regen).
const REGEN_REVALIDATE: Duration = Duration::from_secs(2);

/// The ISO stamp in `<p id="{id}">…</p>` (React's `<!-- -->` text separators removed).
fn stamp(html: &str, id: &str) -> Result<String> {
    let text = support::paragraph(html, id)?.replace("<!-- -->", "");
    let at = text
        .find("stamp: ")
        .ok_or_else(|| anyhow!("no stamp in {text:?}"))?;
    Ok(text[at + "stamp: ".len()..].trim().to_owned())
}

/// One `/regen` answer: the shell's stamp, and the resumed hole's stamp and text.
#[derive(Debug)]
struct Regen {
    shell: String,
    hole: String,
    hole_text: String,
    shell_at: Duration,
}

/// GET /regen as `agent`, checking it is one clean document: the shell at once, the hole
/// resumed into it without a React error or a client-rendering fallback.
fn get_regen(addr: SocketAddr, agent: &str) -> Result<Regen> {
    let t = timed_get(addr, "/regen", &[("x-test-agent", agent)], "shell stamp")?;
    ensure!(t.head.starts_with("HTTP/1.1 200"), "/regen: {}", t.head);
    ensure!(
        header(&t.head, "x-nextjs-postponed") == Some("1"),
        "/regen is not a resumed PPR response:\n{}",
        t.head
    );
    let body = &t.body;
    ensure!(
        body.starts_with("<!DOCTYPE html>")
            && body.matches("<!DOCTYPE html>").count() == 1
            && body.trim_end().ends_with("</html>"),
        "/regen is not one complete document:\n{body}"
    );
    // `<!--$!-->`: a boundary React gave up on (client rendering); `data-dgst`: a render error.
    for bad in ["<!--$!-->", "data-dgst", "Switched to client rendering"] {
        ensure!(!body.contains(bad), "/regen has {bad:?}:\n{body}");
    }
    let hole_text = support::paragraph(body, "hole")?.replace("<!-- -->", "");
    ensure!(
        hole_text.contains(&format!("hole for {agent} ")),
        "the hole is not this request's: {hole_text:?}"
    );
    Ok(Regen {
        shell: stamp(body, "shell-stamp")?,
        hole: stamp(body, "hole")?,
        hole_text,
        shell_at: t.marker_at,
    })
}

/// Ferry on `store` with `workers` workers, logging every entry the prerender cache stores (the
/// render counts these tests assert are read from that log).
fn start_logging_stores(app: &Path, store: &str, workers: u8) -> Result<FerryServer> {
    let workers = workers.to_string();
    FerryServer::start(
        app,
        &["--workers", workers.as_str(), "--cache-url", store],
        &[("FERRY_LOG", "info,ferry_prerender=debug")],
    )
}

/// Regenerations of `/regen` stored so far (the prerender cache's debug log).
fn regen_stores(ferry: &FerryServer) -> usize {
    ferry.log().matches("stored /regen (").count()
}

#[test]
fn a_stale_ppr_shell_is_regenerated_once_with_its_own_postponed_state() -> Result<()> {
    let ferry = start_logging_stores(app()?, "memory", 2)?;
    let addr = ferry.addr;
    // Whatever the build's age, its shell is stale after the revalidate period.
    std::thread::sleep(REGEN_REVALIDATE + Duration::from_millis(500));
    ensure!(regen_stores(&ferry) == 0, "nothing regenerated yet");

    // A burst of stale requests: each gets a shell at once and its own hole, from one pair.
    const N: usize = 12;
    let barrier = std::sync::Barrier::new(N);
    let burst: Vec<Result<Regen>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..N)
            .map(|i| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    get_regen(addr, &format!("burst-{i}"))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("client panicked"))))
            .collect()
    });
    let mut build_stamp = None;
    for r in burst {
        let r = r.with_context(|| ferry.log_tail())?;
        ensure!(
            r.shell_at < SHELL_DEADLINE,
            "a stale request waited {:?} for its shell",
            r.shell_at
        );
        ensure!(
            r.hole == r.shell,
            "shell and resumed hole from different renders: shell {}, hole {:?}",
            r.shell,
            r.hole_text
        );
        // The oldest stamp seen is the build's (a late burst request may see the new shell).
        if build_stamp.as_ref().is_none_or(|b: &String| r.shell < *b) {
            build_stamp = Some(r.shell);
        }
    }
    let build_stamp = build_stamp.ok_or_else(|| anyhow!("no burst answer"))?;

    // The regenerated shell arrives (without waiting for it: every answer is served at once).
    let deadline = Instant::now() + TIMEOUT;
    let fresh = loop {
        let r = get_regen(addr, "after").with_context(|| ferry.log_tail())?;
        ensure!(
            r.hole == r.shell,
            "shell {} served with the hole of another render: {:?}",
            r.shell,
            r.hole_text
        );
        if r.shell != build_stamp {
            break r;
        }
        ensure!(
            Instant::now() < deadline,
            "/regen was not regenerated within {TIMEOUT:?}\n{}",
            ferry.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    ensure!(
        fresh.shell > build_stamp,
        "new shell {} is not newer than {build_stamp}",
        fresh.shell
    );
    let stores = regen_stores(&ferry);
    eprintln!(
        "/regen: build shell {build_stamp}, regenerated shell {} (hole {}), {stores} regeneration(s)",
        fresh.shell, fresh.hole
    );
    ensure!(
        stores == 1,
        "{N} stale requests regenerated /regen {stores} times (expected once)\n{}",
        ferry.log_tail()
    );

    // On-demand: revalidatePath expires the shell; the next request renders the pair first
    // (a merely stale shell would be served as it is). Past the revalidate period first, so the
    // stamp's own 'use cache' entry is due for a new value too.
    std::thread::sleep(REGEN_REVALIDATE + Duration::from_millis(200));
    let res = ferry.send(
        RawRequest {
            method: "POST".into(),
            ..RawRequest::get("/api/revalidate?path=/regen")
        },
        TIMEOUT,
    )?;
    ensure!(res.status == 200, "revalidatePath answered {}", res.status);
    let revalidated = get_regen(addr, "on-demand").with_context(|| ferry.log_tail())?;
    ensure!(
        revalidated.shell > fresh.shell && revalidated.hole == revalidated.shell,
        "after revalidatePath: shell {} hole {:?} (previous shell {})",
        revalidated.shell,
        revalidated.hole_text,
        fresh.shell
    );
    Ok(())
}

// ---- New params of a PPR route, rendered on demand into Ferry's cache ---------------------------

/// Stores of the page `page` (its HTML shell entry) so far: each is one render of its group
/// (the prerender cache's debug log).
fn shell_stores(ferry: &FerryServer, page: &str) -> usize {
    ferry.log().matches(&format!("stored {page} (")).count()
}

/// A resumed answer for the post `id`: 200, next start's headers for a resumed shell rendered at
/// runtime, the shell before the request's dynamic part, one document.
fn check_post(id: &str, t: &Timed) -> Result<()> {
    ensure!(
        t.head.starts_with("HTTP/1.1 200"),
        "/posts/{id}: {}",
        t.head
    );
    ensure!(
        header(&t.head, "x-nextjs-postponed") == Some("1")
            && header(&t.head, "cache-control")
                == Some("private, no-cache, no-store, max-age=0, must-revalidate"),
        "/posts/{id} is not a resumed PPR answer:\n{}",
        t.head
    );
    // next start 16.4.6 replays a shell rendered at runtime with the render's own headers: no
    // `x-nextjs-prerender` (a build-time shell's stored headers carry it), no cache state.
    for absent in [
        "content-length",
        "etag",
        "x-nextjs-cache",
        "x-nextjs-prerender",
    ] {
        ensure!(
            header(&t.head, absent).is_none(),
            "/posts/{id}: {absent} sent:\n{}",
            t.head
        );
    }
    let body = &t.body;
    let shell_at = body
        .find(&format!("Post <!-- -->{id}"))
        .ok_or_else(|| anyhow!("/posts/{id}: no shell in\n{body}"))?;
    let dynamic_at = body
        .find(&format!("views of <!-- -->{id}"))
        .ok_or_else(|| anyhow!("/posts/{id}: no resumed part in\n{body}"))?;
    ensure!(shell_at < dynamic_at, "/posts/{id}: dynamic part first");
    ensure!(
        body.starts_with("<!DOCTYPE html>")
            && body.matches("<!DOCTYPE html>").count() == 1
            && body.trim_end().ends_with("</html>"),
        "/posts/{id} is not one complete document:\n{body}"
    );
    for bad in ["<!--$!-->", "data-dgst"] {
        ensure!(!body.contains(bad), "/posts/{id} has {bad:?}:\n{body}");
    }
    Ok(())
}

/// GET `target`, reading until `marker` arrived (bounded by `within`): when it did, and the
/// connection to read the rest from.
fn get_until(
    addr: SocketAddr,
    target: &str,
    marker: &str,
    within: Duration,
) -> Result<(Duration, TcpStream, Vec<u8>)> {
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    let req = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let started = Instant::now();
    stream.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    while !contains(&raw, marker.as_bytes()) {
        let left = within
            .checked_sub(started.elapsed())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                anyhow!(
                    "{marker:?} did not arrive within {within:?}; got:\n{}",
                    String::from_utf8_lossy(&raw)
                )
            })?;
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut buf).context("reading the shell")?;
        ensure!(n > 0, "closed before {marker:?}");
        raw.extend_from_slice(&buf[..n]);
    }
    Ok((started.elapsed(), stream, raw))
}

#[test]
fn a_new_param_of_a_ppr_route_is_rendered_once_into_ferrys_cache_and_resumed() -> Result<()> {
    let ferry = start_logging_stores(app()?, "memory", 2)?;
    let addr = ferry.addr;

    // First request, nothing cached: one render of the page's group (shell, postponed state,
    // segments) into Ferry's cache, then the shell and its resumed hole in the same response.
    let id = "fresh-a";
    let page = format!("/posts/{id}");
    let first = timed_get(addr, &page, &[], &format!("Post <!-- -->{id}"))
        .with_context(|| ferry.log_tail())?;
    check_post(id, &first)?;
    ensure!(
        first.done_at >= HOLE_DELAY && first.done_at - first.marker_at >= HOLE_DELAY / 2,
        "first request: shell at {:?}, complete at {:?}: the shell was not sent ahead",
        first.marker_at,
        first.done_at
    );
    ensure!(
        shell_stores(&ferry, &page) == 1,
        "the first request stored {page} {} times\n{}",
        shell_stores(&ferry, &page),
        ferry.log_tail()
    );
    let log = ferry.log();
    for variant in [
        ".segments/_tree.segment.rsc",
        ".segments/_full.segment.rsc",
        ".rsc",
    ] {
        ensure!(
            log.contains(&format!("stored {page}{variant} (")),
            "{page}{variant} was not stored with the shell"
        );
    }

    // Later requests: the stored shell at once, from Ferry's cache: it arrives with every
    // worker stopped (only the resumed part needs one).
    ferry.signal_workers("STOP")?;
    let shell = get_until(addr, &page, &format!("Post <!-- -->{id}"), SHELL_DEADLINE);
    ferry.signal_workers("CONT")?;
    let (shell_at, mut stream, mut raw) = shell.with_context(|| ferry.log_tail())?;
    eprintln!("{page} with the workers stopped: shell after {shell_at:?}");
    ensure!(
        !contains(&raw, format!("views of <!-- -->{id}").as_bytes()),
        "the resumed part came with the workers stopped"
    );
    // The resume completes once the workers run again.
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.read_to_end(&mut raw)?;
    ensure!(
        contains(&raw, format!("views of <!-- -->{id}").as_bytes()) && raw.ends_with(b"0\r\n\r\n"),
        "the resume did not complete after SIGCONT:\n{}",
        String::from_utf8_lossy(&raw)
    );
    for round in 0..2 {
        let t = timed_get(addr, &page, &[], &format!("Post <!-- -->{id}"))?;
        check_post(id, &t)?;
        eprintln!(
            "{page} request {}: shell after {:?}, complete after {:?}",
            round + 3,
            t.marker_at,
            t.done_at
        );
        ensure!(
            t.marker_at < SHELL_DEADLINE && t.done_at - t.marker_at >= HOLE_DELAY / 2,
            "{page}: shell at {:?}, complete at {:?}",
            t.marker_at,
            t.done_at
        );
    }
    ensure!(
        shell_stores(&ferry, &page) == 1,
        "later requests rendered {page} again"
    );

    // 12 concurrent first requests of another new param: one render, shared by all, each with
    // its own resumed part.
    let burst_id = "fresh-burst";
    let burst_page = format!("/posts/{burst_id}");
    let marker = format!("Post <!-- -->{burst_id}");
    let burst = support::released_together(12, |_| timed_get(addr, &burst_page, &[], &marker))
        .with_context(|| ferry.log_tail())?;
    for t in &burst {
        check_post(burst_id, t)?;
    }
    let n = shell_stores(&ferry, &burst_page);
    ensure!(
        n == 1,
        "12 concurrent first requests rendered {burst_page} {n} times\n{}",
        ferry.log_tail()
    );

    // The workers keep no copy of these shells in Next's file-system cache (under the bundle):
    // they are Ferry's alone, bounded by Ferry's store and shared through it.
    for part in [id, burst_id] {
        let copies = files_named(&app()?.join(".ferry"), part);
        ensure!(
            copies.is_empty(),
            "the workers cached /posts/{part} themselves: {copies:?}"
        );
    }

    // revalidatePath of the page: the next request renders it again (then resumes that new
    // shell), the one after that is served from the cache.
    let res = ferry.send(
        RawRequest {
            method: "POST".into(),
            ..RawRequest::get(&format!("/api/revalidate?path={page}"))
        },
        TIMEOUT,
    )?;
    ensure!(res.status == 200, "revalidatePath answered {}", res.status);
    let after = timed_get(addr, &page, &[], &format!("Post <!-- -->{id}"))?;
    check_post(id, &after)?;
    ensure!(
        shell_stores(&ferry, &page) == 2,
        "after revalidatePath {page} was stored {} times in all (expected a second render)",
        shell_stores(&ferry, &page)
    );
    let again = timed_get(addr, &page, &[], &format!("Post <!-- -->{id}"))?;
    check_post(id, &again)?;
    ensure!(
        again.marker_at < SHELL_DEADLINE && shell_stores(&ferry, &page) == 2,
        "the request after the re-render rendered again (shell at {:?})",
        again.marker_at
    );
    Ok(())
}

#[test]
fn a_new_params_shell_rendered_by_one_instance_is_resumed_by_another_on_one_redis() -> Result<()> {
    let redis = support::redis::Redis::start()?;
    let url = redis.url();
    let a = start_logging_stores(app()?, &url, 1)?;
    let b = start_logging_stores(app()?, &url, 1)?;
    let id = "shared-r";
    let page = format!("/posts/{id}");
    let marker = format!("Post <!-- -->{id}");
    let on_a = timed_get(a.addr, &page, &[], &marker).with_context(|| a.log_tail())?;
    check_post(id, &on_a)?;
    ensure!(shell_stores(&a, &page) == 1, "A did not store {page}");
    // A writes to Redis in the background right after storing; its answer took the hole's
    // 1 s longer than that.
    let on_b = timed_get(b.addr, &page, &[], &marker).with_context(|| b.log_tail())?;
    check_post(id, &on_b)?;
    ensure!(
        shell_stores(&b, &page) == 0,
        "B rendered {page} itself instead of resuming A's shell from Redis\n{}",
        b.log_tail()
    );
    ensure!(
        on_b.marker_at < SHELL_DEADLINE,
        "B's shell took {:?}",
        on_b.marker_at
    );
    drop(redis);
    Ok(())
}
