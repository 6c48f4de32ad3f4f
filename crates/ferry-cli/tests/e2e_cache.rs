//! End-to-end tests of the prerender cache stores: the real `ferry` binary serving a real
//! `ferry build` of `examples/showcase`, real Node.js workers, and a real `redis-server` (on a
//! loopback port of 41700-41799) that the tests kill and restart.
//!
//! - the disk store (the default) keeps a regenerated page across a restart;
//! - two instances on one Redis: a regeneration (`res.revalidate`) and a `revalidatePath`
//!   (Server Action) through A are served by B; the propagation delay over 100 invalidations is
//!   printed (p50 / p99) and bounded; Redis killed mid-run gives no 5xx and no slow cache hit;
//!   Redis restarted, both instances recover and a write made during the outage reaches B.

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU16, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail, ensure};
use support::redis::Redis;
use support::{FerryServer, RawRequest};
use support::{body_text, paragraph};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

static SHOWCASE: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// The showcase, copied and built with `ferry build` once for all tests of this binary.
fn showcase() -> Result<&'static Path> {
    SHOWCASE
        .get_or_init(|| {
            support::build_app_once("cache", &support::showcase_src(), |_| Ok(()))
                .map_err(|e| format!("{e:#}"))
        })
        .as_deref()
        .map_err(|e| anyhow!("building the showcase failed: {e}"))
}

fn start(extra: &[&str]) -> Result<FerryServer> {
    let mut args = vec!["--workers", "1", "--shutdown-timeout", "5"];
    args.extend_from_slice(extra);
    FerryServer::start(showcase()?, &args, &[])
}

/// GET /legacy/static → (status, x-nextjs-cache, built-at).
fn legacy(ferry: &FerryServer) -> Result<(u16, String, String)> {
    let resp = ferry.get("/legacy/static")?;
    let cache = resp.header("x-nextjs-cache").unwrap_or("-").to_owned();
    if resp.status != 200 {
        return Ok((resp.status, cache, String::new()));
    }
    Ok((
        resp.status,
        cache,
        paragraph(&body_text(&resp)?, "built-at")?,
    ))
}

/// `res.revalidate('/legacy/static')` through `ferry`'s pages API route.
fn revalidate(ferry: &FerryServer) -> Result<()> {
    let api = ferry.get("/api/revalidate?path=/legacy/static")?;
    let text = body_text(&api)?;
    ensure!(
        api.status == 200 && text.contains("\"revalidated\":true"),
        "res.revalidate failed: {} {text}\n{}",
        api.status,
        ferry.log_tail()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Redis process
// ---------------------------------------------------------------------------------------------

static NEXT_PORT: AtomicU16 = AtomicU16::new(41700);

/// A port of 41700-41799 free right now.
fn redis_port() -> Result<u16> {
    loop {
        let p = NEXT_PORT.fetch_add(1, Ordering::SeqCst);
        ensure!(p < 41800, "no free port left in 41700-41799");
        if TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return Ok(p);
        }
    }
}

/// A redis-server on 127.0.0.1:port (no persistence), killed on drop.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn disk_cache_serves_the_regenerated_page_after_a_restart() -> Result<()> {
    let regenerated = {
        let ferry = start(&["--cache-max-size", "64MB"])?;
        let (status, _, seed) = legacy(&ferry)?;
        ensure!(status == 200, "GET /legacy/static: {status}");
        thread::sleep(Duration::from_millis(20));
        revalidate(&ferry)?;
        let (_, cache, regenerated) = legacy(&ferry)?;
        ensure!(
            cache == "HIT" && regenerated != seed,
            "not regenerated: {cache} {regenerated} (seed {seed})"
        );
        regenerated
    };
    // Restarted (the old process is gone): the regenerated page, not the build's seed.
    let ferry = start(&["--cache-max-size", "64MB"])?;
    let (status, cache, after) = legacy(&ferry)?;
    ensure!(status == 200, "GET /legacy/static after restart: {status}");
    ensure!(
        after == regenerated,
        "after a restart: served {after} ({cache}), expected the regenerated {regenerated}"
    );
    ensure!(
        ferry.log().contains("prerender cache: disk"),
        "no disk cache line in the log:\n{}",
        ferry.log_tail()
    );
    Ok(())
}

#[test]
fn bad_cache_url_fails_to_start_clearly() -> Result<()> {
    let port = support::free_port()?;
    let spec = support::ferry_start(&support::ferry_bin(), showcase()?, port)
        .args(["--cache-url", "ftp://nowhere"]);
    let (status, out) = support::run_capture(&spec, Duration::from_secs(60))?;
    ensure!(!status.success(), "started with an unsupported cache URL");
    ensure!(out.contains("unsupported cache URL"), "message: {out}");
    Ok(())
}

#[test]
fn two_instances_share_the_cache_through_redis_and_survive_its_outage() -> Result<()> {
    let port = redis_port()?;
    let mut redis = Redis::start_on(port)?;
    let url = redis.url();
    let a = start(&["--cache-url", &url])?;
    let b = start(&["--cache-url", &url])?;
    for (name, s) in [("A", &a), ("B", &b)] {
        ensure!(
            s.log().contains("shared through Redis"),
            "{name} does not use Redis:\n{}",
            s.log_tail()
        );
    }

    // --- revalidatePath through a Server Action on A expires /actions on B too.
    let page = b.get("/actions")?;
    ensure!(page.status == 200, "GET B /actions: {}", page.status);
    let html = body_text(&a.get("/actions")?)?;
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
    let resp = a.send(post, REQUEST_TIMEOUT)?;
    ensure!(resp.status == 200, "server action on A: {}", resp.status);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let page = b.get("/actions")?;
        ensure!(page.status == 200, "GET B /actions: {}", page.status);
        let cache = page.header("x-nextjs-cache").unwrap_or("-");
        let counter = paragraph(&body_text(&page)?, "counter")?;
        // B renders it anew (MISS, its own worker's counter) or serves A's render (counter 1).
        if cache == "MISS" || counter == "1" {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "revalidatePath on A never reached B (still {cache} {counter})"
        );
        thread::sleep(Duration::from_millis(10));
    }

    // --- 100 regenerations through A, each timed until B serves new content.
    let (_, _, mut current) = legacy(&b)?;
    let mut delays = Vec::new();
    let mut from_a = 0;
    for i in 0..100 {
        thread::sleep(Duration::from_millis(2));
        revalidate(&a)?;
        let acked = Instant::now();
        let (_, _, at_a) = legacy(&a)?;
        loop {
            let (status, _, seen) = legacy(&b)?;
            ensure!(status < 500, "B answered {status} during the run");
            if seen != current {
                delays.push(acked.elapsed());
                from_a += usize::from(seen == at_a);
                current = seen;
                break;
            }
            ensure!(
                acked.elapsed() < Duration::from_secs(5),
                "invalidation {i} not seen by B within 5 s (still {current})\nA:\n{}\nB:\n{}",
                a.log_tail(),
                b.log_tail()
            );
            thread::sleep(Duration::from_millis(2));
        }
    }
    delays.sort();
    let (p50, p99, max) = (
        percentile(&delays, 0.50),
        percentile(&delays, 0.99),
        delays[delays.len() - 1],
    );
    eprintln!(
        "propagation A -> B over {} invalidations (from A's acknowledgement, which includes A's \
         own read-back): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {from_a} served A's render",
        delays.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );
    ensure!(
        p99 < Duration::from_secs(1),
        "p99 {p99:?} over the 1 s target"
    );

    // --- Redis killed mid-run: no 5xx, cache hits stay fast, regenerations still work locally.
    redis.kill();
    let outage_start = Instant::now();
    let mut slowest_hit = Duration::ZERO;
    let mut requests = 0;
    while outage_start.elapsed() < Duration::from_secs(3) {
        for (name, s) in [("A", &a), ("B", &b)] {
            for path in ["/legacy/static", "/isr", "/", "/api/hello", "/blog/hello"] {
                let started = Instant::now();
                let resp = s.get(path)?;
                let took = started.elapsed();
                requests += 1;
                ensure!(
                    resp.status < 500,
                    "{name} {path} answered {} with Redis down\n{}",
                    resp.status,
                    s.log_tail()
                );
                if matches!(resp.header("x-nextjs-cache"), Some("HIT" | "STALE")) {
                    slowest_hit = slowest_hit.max(took);
                }
            }
        }
    }
    ensure!(
        slowest_hit < Duration::from_millis(300),
        "a cache hit took {slowest_hit:?} with Redis down"
    );
    // A regeneration during the outage: A serves it at once.
    let (_, _, before_outage_write) = legacy(&a)?;
    thread::sleep(Duration::from_millis(5));
    revalidate(&a)?;
    let (_, cache, during) = legacy(&a)?;
    ensure!(
        during != before_outage_write,
        "A did not regenerate with Redis down ({cache} {during})"
    );
    eprintln!(
        "Redis down: {requests} requests to A and B, no 5xx, slowest cache hit {:.1} ms",
        slowest_hit.as_secs_f64() * 1e3
    );

    // --- Redis back (empty): both reconnect; the write made during the outage is replayed to
    // Redis and reaches B without any new request to A. B may also have regenerated the page
    // itself meanwhile (its entry turns stale 10 s after it was made, and the polling below
    // then starts a regeneration): the newest render wins, so a render newer than A's outage
    // write is as good (`built-at` is an ISO timestamp; the replay itself is tested in
    // ferry-prerender's `redis_outage_never_blocks_and_recovers_with_replayed_writes`).
    let restarted = Instant::now();
    let _redis = Redis::start_on(port)?;
    loop {
        let (status, _, seen) = legacy(&b)?;
        ensure!(status < 500, "B answered {status} during recovery");
        if seen == during || seen.as_str() > during.as_str() {
            break;
        }
        ensure!(
            restarted.elapsed() < Duration::from_secs(10),
            "the regeneration made during the outage never reached B (B serves {seen}, A made \
             {during})\nA:\n{}\nB:\n{}",
            a.log_tail(),
            b.log_tail()
        );
        thread::sleep(Duration::from_millis(10));
    }
    let recovered = restarted.elapsed();
    // And the live path works again.
    thread::sleep(Duration::from_millis(5));
    revalidate(&a)?;
    let acked = Instant::now();
    let (_, _, live) = legacy(&a)?;
    loop {
        let (_, _, seen) = legacy(&b)?;
        if seen == live || (seen != during && seen != current) {
            break;
        }
        ensure!(
            acked.elapsed() < Duration::from_secs(5),
            "live propagation did not resume after the restart"
        );
        thread::sleep(Duration::from_millis(5));
    }
    eprintln!(
        "Redis restarted: outage write reached B after {:.0} ms, live propagation {:.1} ms",
        recovered.as_secs_f64() * 1e3,
        acked.elapsed().as_secs_f64() * 1e3
    );
    for (name, s) in [("A", &a), ("B", &b)] {
        let log = s.log();
        ensure!(
            log.contains("reconnected to Redis"),
            "{name} logged no reconnection:\n{}",
            s.log_tail()
        );
        if log.contains("panicked") {
            bail!("{name} panicked:\n{}", s.log_tail());
        }
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
