//! End-to-end tests of the shared data cache and of ISR regeneration under load: the real
//! `ferry` binary serving a real `ferry build` of `tests/fixtures/cache-app`, real Node.js
//! workers, and (for the two-instance test) a real `redis-server` on a port of 42100-42199.
//!
//! - `/data` reads the fetch cache, `unstable_cache` and `'use cache'` (all tagged `x`): a value
//!   one worker cached is what the other worker (or the other instance, on one Redis) renders,
//!   and `revalidateTag('x')` / `revalidatePath('/data')` in one worker invalidate it for all;
//! - 100 concurrent requests to a stale ISR page are all answered at once from the stale entry,
//!   and the page is regenerated exactly once (renders counted by the page itself);
//! - the same split across two instances on one Redis: regenerated once overall (the shared
//!   regeneration lock), by the workers of one instance.

mod support;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail, ensure};
use support::redis::Redis;
use support::{FerryServer, RawRequest, released_together};
use support::{body_text, paragraph, signal_pid};

/// Each ISR render of the fixture takes this long at runtime.
const RENDER_DELAY_MS: u64 = 1500;
/// The fixture's `/isr` revalidates every 5 s.
const ISR_REVALIDATE: Duration = Duration::from_secs(5);

static APP: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// The fixture, copied and built with `ferry build` once for all tests of this binary.
fn app() -> Result<&'static Path> {
    APP.get_or_init(|| {
        let src = support::repo_root().join("tests/fixtures/cache-app");
        support::build_app_once("isr", &src, |_| Ok(())).map_err(|e| format!("{e:#}"))
    })
    .as_deref()
    .map_err(|e| anyhow!("building the cache fixture failed: {e}"))
}

/// One render of `/data`: the worker that rendered it and the three cached values.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Data {
    pid: String,
    /// (fetch id, unstable_cache "id by", 'use cache' "id by")
    values: (String, String, String),
}

fn data(ferry: &FerryServer) -> Result<Data> {
    let resp = ferry.get("/data")?;
    let html = body_text(&resp)?;
    ensure!(
        resp.status == 200,
        "/data answered {}: {html}\n{}",
        resp.status,
        ferry.log_tail()
    );
    Ok(Data {
        pid: paragraph(&html, "pid")?,
        values: (
            paragraph(&html, "fetch")?,
            paragraph(&html, "unstable")?,
            paragraph(&html, "use-cache")?,
        ),
    })
}

/// Renders of `/data` until one comes from a worker other than `not_pid` (4 concurrent requests
/// per round, so the pool uses both workers).
fn data_from_other_worker(ferry: &FerryServer, not_pid: &str) -> Result<Data> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let round: Vec<Result<Data>> = thread::scope(|s| {
            let handles: Vec<_> = (0..4).map(|_| s.spawn(|| data(ferry))).collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow!("request thread panicked")))
                })
                .collect()
        });
        for d in round {
            let d = d?;
            if d.pid != not_pid {
                return Ok(d);
            }
        }
    }
    bail!("no render of /data by a worker other than {not_pid} within 30 s")
}

fn get_ok(ferry: &FerryServer, path: &str) -> Result<String> {
    let resp = ferry.get(path)?;
    let text = body_text(&resp)?;
    ensure!(
        resp.status == 200,
        "{path} answered {}: {text}",
        resp.status
    );
    Ok(text)
}

/// Data cache writes, and a route handler's `revalidateTag` (Next runs it in `waitUntil`), reach
/// Ferry after the response: give them a moment to land.
fn settle() {
    thread::sleep(Duration::from_millis(500));
}

fn all_differ(a: &Data, b: &Data) -> bool {
    a.values.0 != b.values.0 && a.values.1 != b.values.1 && a.values.2 != b.values.2
}

/// Requests `invalidate` (a revalidateTag / revalidatePath route), then proves every cached
/// value was renewed (`/data` differs from `before` everywhere) and that the other worker
/// renders the same renewed values; returns them.
fn renewed_everywhere(ferry: &FerryServer, invalidate: &str, before: &Data) -> Result<Data> {
    get_ok(ferry, invalidate)?;
    settle();
    let after = data(ferry)?;
    ensure!(
        all_differ(&after, before),
        "{invalidate} left cached values: {after:?} vs {before:?}"
    );
    settle();
    let other = data_from_other_worker(ferry, &after.pid)?;
    ensure!(
        other.values == after.values,
        "after {invalidate}, worker {} rendered {other:?}, worker {} {after:?}",
        other.pid,
        after.pid
    );
    Ok(after)
}

#[test]
fn data_cache_is_shared_by_the_workers_and_revalidate_tag_reaches_them_all() -> Result<()> {
    let ferry = FerryServer::start(
        app()?,
        &[
            "--workers",
            "2",
            "--cache-url",
            "memory",
            "--shutdown-timeout",
            "5",
        ],
        &[],
    )?;
    // Worker A caches the three values.
    let first = data(&ferry)?;
    settle();
    // Worker B renders with A's values (its own cache would have fetched new ids).
    let other = data_from_other_worker(&ferry, &first.pid)?;
    ensure!(
        other.values == first.values,
        "worker {} did not see worker {}'s cached data: {other:?} vs {first:?}",
        other.pid,
        first.pid
    );

    // revalidateTag('x') in whichever worker answers: every cached value expires everywhere.
    let after_tag = renewed_everywhere(&ferry, "/api/revalidate?tag=x", &first)?;
    // revalidatePath('/data'): the page's soft tags expire the entries it read.
    renewed_everywhere(&ferry, "/api/revalidate?path=/data", &after_tag)?;
    Ok(())
}

#[test]
fn two_instances_on_one_redis_share_the_data_cache() -> Result<()> {
    let redis = Redis::start()?;
    let url = redis.url();
    let args = [
        "--workers",
        "1",
        "--cache-url",
        url.as_str(),
        "--shutdown-timeout",
        "5",
    ];
    let a = FerryServer::start(app()?, &args, &[])?;
    // Both fetch A's /api/source: the fetch cache key is the URL.
    let origin = format!("http://127.0.0.1:{}", a.addr.port());
    let b = FerryServer::start(app()?, &args, &[("FERRY_TEST_SOURCE_ORIGIN", &origin)])?;

    let from_a = data(&a)?;
    settle();
    let from_b = data(&b)?;
    ensure!(
        from_b.values == from_a.values,
        "instance B did not see A's cached data: {from_b:?} vs {from_a:?}\nB: {}",
        b.log_tail()
    );

    // Invalidated through B, gone in A too.
    get_ok(&b, "/api/revalidate?tag=x")?;
    settle();
    let again_a = data(&a)?;
    ensure!(
        all_differ(&again_a, &from_a),
        "revalidateTag through B did not reach A: {again_a:?} vs {from_a:?}"
    );
    settle();
    let again_b = data(&b)?;
    ensure!(
        again_b.values == again_a.values,
        "{again_b:?} vs {again_a:?}"
    );
    drop(redis);
    Ok(())
}

/// Lines the fixture's `/isr` page appended (one per render).
fn renders(log: &Path) -> usize {
    std::fs::read_to_string(log).map_or(0, |t| t.lines().count())
}

/// GET /isr until it answers `HIT` (the regeneration was stored); returns the body.
fn wait_for_hit(ferry: &FerryServer) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let resp = ferry.get("/isr")?;
        if resp.header("x-nextjs-cache") == Some("HIT") {
            return body_text(&resp);
        }
        ensure!(
            Instant::now() < deadline,
            "/isr was not regenerated within 90 s\n{}",
            ferry.log_tail()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until no render started for a while (the group's renders are sequential).
fn wait_renders_settled(log: &Path) -> usize {
    let mut last = renders(log);
    let quiet = Duration::from_millis(RENDER_DELAY_MS + 1000);
    let mut since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    while since.elapsed() < quiet && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
        let now = renders(log);
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
    last
}

#[test]
fn a_burst_on_a_stale_isr_page_regenerates_it_once_and_answers_from_the_stale_entry() -> Result<()>
{
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("renders.log");
    let log_str = log.to_string_lossy().into_owned();
    let delay = RENDER_DELAY_MS.to_string();
    let ferry = FerryServer::start(
        app()?,
        &[
            "--workers",
            "2",
            "--cache-url",
            "memory",
            "--shutdown-timeout",
            "5",
        ],
        &[
            ("FERRY_TEST_RENDER_LOG", &log_str),
            ("FERRY_TEST_RENDER_DELAY_MS", &delay),
        ],
    )?;
    // Whatever the seed's age, it is stale after the revalidate period.
    thread::sleep(ISR_REVALIDATE + Duration::from_secs(1));
    ensure!(renders(&log) == 0, "nothing rendered /isr yet");

    // 100 concurrent requests, released together.
    const N: usize = 100;
    let results = released_together(N, |_| {
        let started = Instant::now();
        let resp = ferry.send(RawRequest::get("/isr"), Duration::from_secs(30))?;
        let took = started.elapsed();
        let cache = resp.header("x-nextjs-cache").unwrap_or("-").to_owned();
        let at = paragraph(&body_text(&resp)?, "rendered-at")?;
        Ok((resp.status, cache, at, took))
    })?;
    let slowest = results.iter().map(|r| r.3).max().unwrap_or_default();
    let bodies: HashSet<&str> = results.iter().map(|r| r.2.as_str()).collect();
    eprintln!(
        "burst of {N} on a stale /isr: slowest answer {} ms, {} distinct bodies",
        slowest.as_millis(),
        bodies.len()
    );
    for (status, cache, _, took) in &results {
        ensure!(*status == 200, "a burst request answered {status}");
        ensure!(
            cache == "STALE",
            "a burst request answered x-nextjs-cache {cache} (expected the stale entry)"
        );
        // A request that waited for the render would take at least RENDER_DELAY_MS.
        ensure!(
            *took < Duration::from_millis(1000),
            "a burst request took {} ms: it waited for the regeneration",
            took.as_millis()
        );
    }
    ensure!(
        bodies.len() == 1,
        "the burst saw several bodies: {bodies:?}"
    );
    let stale_body = results[0].2.clone();

    let fresh = paragraph(&wait_for_hit(&ferry)?, "rendered-at")?;
    ensure!(
        fresh != stale_body,
        "the regenerated page has the stale body"
    );
    let burst_renders = wait_renders_settled(&log);

    // What one regeneration renders (every pathname of the page's group: HTML, RSC, segments),
    // triggered by a single request once the new entry is stale in turn.
    thread::sleep(ISR_REVALIDATE + Duration::from_secs(1));
    let one = ferry.get("/isr")?;
    ensure!(
        one.header("x-nextjs-cache") == Some("STALE"),
        "expected STALE after the revalidate period, got {:?}",
        one.header("x-nextjs-cache")
    );
    wait_for_hit(&ferry)?;
    let single_renders = wait_renders_settled(&log) - burst_renders;
    eprintln!(
        "renders: burst of {N} → {burst_renders}, one request → {single_renders} (one regeneration)"
    );
    ensure!(
        single_renders >= 1,
        "the single stale request regenerated nothing"
    );
    ensure!(
        burst_renders == single_renders,
        "the burst rendered {burst_renders} times, one regeneration renders {single_renders}: \
         more than one regeneration ran"
    );
    Ok(())
}

/// GET /isr on `ferry` until it answers `HIT` with content other than `stale` (another
/// instance's regeneration arrives through Redis).
fn wait_for_new_hit(ferry: &FerryServer, stale: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let resp = ferry.get("/isr")?;
        if resp.header("x-nextjs-cache") == Some("HIT") {
            let at = paragraph(&body_text(&resp)?, "rendered-at")?;
            if at != stale {
                return Ok(at);
            }
        }
        ensure!(
            Instant::now() < deadline,
            "/isr was not regenerated within 90 s\n{}",
            ferry.log_tail()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_stale_page_hit_on_two_instances_at_once_regenerates_once_overall() -> Result<()> {
    let redis = Redis::start()?;
    let url = redis.url();
    let dir = tempfile::tempdir()?;
    // Both instances' renders go to one log (appends of one short line each).
    let log = dir.path().join("renders.log");
    let log_str = log.to_string_lossy().into_owned();
    let delay = RENDER_DELAY_MS.to_string();
    let args = [
        "--workers",
        "2",
        "--cache-url",
        url.as_str(),
        "--shutdown-timeout",
        "5",
    ];
    let env = [
        ("FERRY_TEST_RENDER_LOG", log_str.as_str()),
        ("FERRY_TEST_RENDER_DELAY_MS", delay.as_str()),
    ];
    let a = FerryServer::start(app()?, &args, &env)?;
    let b = FerryServer::start(app()?, &args, &env)?;
    // The build's seed is stale on both after the revalidate period.
    thread::sleep(ISR_REVALIDATE + Duration::from_secs(1));
    ensure!(renders(&log) == 0, "nothing rendered /isr yet");

    // 100 concurrent requests, half to each instance, released together.
    const N: usize = 100;
    let results = released_together(N, |i| {
        let ferry = if i % 2 == 0 { &a } else { &b };
        let resp = ferry.send(RawRequest::get("/isr"), Duration::from_secs(30))?;
        ensure!(
            resp.status == 200,
            "a burst request answered {}",
            resp.status
        );
        let cache = resp.header("x-nextjs-cache").unwrap_or("-").to_owned();
        Ok((cache, paragraph(&body_text(&resp)?, "rendered-at")?))
    })?;
    for (cache, _) in &results {
        ensure!(cache == "STALE", "a burst request answered {cache}");
    }
    let stale = results[0].1.clone();
    let fresh_a = wait_for_new_hit(&a, &stale)?;
    let fresh_b = wait_for_new_hit(&b, &stale)?;
    let burst_renders = wait_renders_settled(&log);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let pids: HashSet<&str> = text.lines().filter_map(|l| l.split(' ').next()).collect();
    eprintln!(
        "two instances, burst of {N} (half each): {burst_renders} renders by {} worker(s); A serves {fresh_a}, B serves {fresh_b}",
        pids.len()
    );
    ensure!(
        fresh_a == fresh_b,
        "the instances serve different regenerations: A {fresh_a}, B {fresh_b}"
    );
    // Every render ran in the workers of one instance.
    let (workers_a, workers_b) = (a.children(), b.children());
    let of = |workers: &[u32]| {
        pids.iter()
            .all(|p| p.parse::<u32>().is_ok_and(|p| workers.contains(&p)))
    };
    ensure!(
        of(&workers_a) || of(&workers_b),
        "both instances rendered: render pids {pids:?}, A's workers {workers_a:?}, B's {workers_b:?}"
    );

    // One regeneration's renders (HTML, RSC, segments of the page), from one stale request.
    thread::sleep(ISR_REVALIDATE + Duration::from_secs(1));
    let one = a.get("/isr")?;
    ensure!(
        one.header("x-nextjs-cache") == Some("STALE"),
        "expected STALE after the revalidate period, got {:?}",
        one.header("x-nextjs-cache")
    );
    wait_for_new_hit(&a, &fresh_a)?;
    let single_renders = wait_renders_settled(&log) - burst_renders;
    eprintln!(
        "renders: burst on two instances → {burst_renders}, one regeneration → {single_renders}"
    );
    ensure!(
        single_renders >= 1,
        "the single stale request regenerated nothing"
    );
    ensure!(
        burst_renders == single_renders,
        "the burst on two instances rendered {burst_renders} times, one regeneration renders \
         {single_renders}: both instances regenerated"
    );
    drop((a, b));
    drop(redis);
    Ok(())
}

/// GET /isr: (status, `x-nextjs-cache`, rendered-at).
fn isr(ferry: &FerryServer) -> Result<(u16, String, String)> {
    let resp = ferry.get("/isr")?;
    let cache = resp.header("x-nextjs-cache").unwrap_or("-").to_owned();
    let at = paragraph(&body_text(&resp)?, "rendered-at")?;
    Ok((resp.status, cache, at))
}

/// `revalidatePath('/isr')` through the fixture's route handler (expires the entry now).
fn expire_isr(ferry: &FerryServer) -> Result<()> {
    let resp = ferry.get("/api/revalidate?path=/isr")?;
    ensure!(
        resp.status == 200,
        "/api/revalidate answered {}",
        resp.status
    );
    Ok(())
}

/// Requests for an expired page while its group is being rendered share that render, as next
/// start's response cache makes them: they answer `MISS` with the same content, nothing renders
/// beside it, and the request after them is a `HIT` of that content. Before the fix a request
/// that found the group's render claimed fell through to an uncached worker render, and the
/// request after an on-demand expiry could render a second time (the differential's
/// "second request after" flake, when it landed while a regeneration was still storing).
#[test]
fn requests_after_revalidate_path_share_one_render() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("renders.log");
    let log_str = log.to_string_lossy().into_owned();
    let delay = RENDER_DELAY_MS.to_string();
    let ferry = FerryServer::start(
        app()?,
        &["--workers", "2", "--shutdown-timeout", "5"],
        &[
            ("FERRY_TEST_RENDER_LOG", &log_str),
            ("FERRY_TEST_RENDER_DELAY_MS", &delay),
        ],
    )?;

    // What one blocking render of the group renders: a single request after the expiry.
    expire_isr(&ferry)?;
    let (status, cache, first) = isr(&ferry)?;
    ensure!(
        status == 200 && cache == "MISS",
        "first request after revalidatePath: {status} {cache}\n{}",
        ferry.log_tail()
    );
    let one = wait_renders_settled(&log);
    ensure!(one >= 1, "the blocking render rendered nothing");
    let (_, cache, again) = isr(&ferry)?;
    ensure!(
        cache == "HIT" && again == first,
        "request after the render: {cache}, content {} (expected HIT of {first})",
        if again == first { "same" } else { "new" }
    );

    // Several rounds of three concurrent requests right after an expiry.
    const ROUNDS: usize = 3;
    const N: usize = 3;
    for round in 0..ROUNDS {
        let before = renders(&log);
        expire_isr(&ferry)?;
        let results = released_together(N, |_| isr(&ferry))?;
        let bodies: HashSet<&str> = results.iter().map(|r| r.2.as_str()).collect();
        for (status, cache, _) in &results {
            ensure!(
                *status == 200 && cache == "MISS",
                "round {round}: a concurrent request after revalidatePath answered {status} {cache}"
            );
        }
        ensure!(
            bodies.len() == 1,
            "round {round}: concurrent requests after revalidatePath saw {} different renders",
            bodies.len()
        );
        let (_, cache, after) = isr(&ferry)?;
        ensure!(
            cache == "HIT" && bodies.contains(after.as_str()),
            "round {round}: the request after them answered {cache} with {} content",
            if bodies.contains(after.as_str()) {
                "the same"
            } else {
                "new"
            }
        );
        let rendered = wait_renders_settled(&log) - before;
        ensure!(
            rendered == one,
            "round {round}: {rendered} renders, one blocking render of the group is {one}"
        );
    }
    Ok(())
}

/// Resumes a stopped worker however the test ends.
struct Resume(u32);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = signal_pid(self.0, "CONT");
    }
}

/// A route handler's `revalidatePath` must reach Ferry even when the worker's keep-alive
/// connection to Ferry's control endpoint was closed by Ferry (idle past the keep-alive
/// timeout) while the worker could not notice it: on a loaded machine the worker is not
/// scheduled when Ferry's FIN arrives, and the next control POST goes out on that dead socket.
/// Before the fix the cache handler's POST failed (`socket hang up`, ECONNRESET), the failure was
/// only logged, the route handler answered 200 and the page stayed a `HIT` (the CI flake of
/// `requests_after_revalidate_path_share_one_render`, under load 6-8). Not being scheduled is
/// made exact here with SIGSTOP / SIGCONT around Ferry's (shortened) keep-alive timeout.
#[test]
fn revalidate_path_reaches_ferry_over_a_control_connection_closed_while_idle() -> Result<()> {
    const KEEP_ALIVE_MS: u64 = 2000;
    let keep_alive = KEEP_ALIVE_MS.to_string();
    let ferry = FerryServer::start(
        app()?,
        &["--workers", "1", "--keep-alive-timeout", &keep_alive],
        &[],
    )?;
    let workers = ferry.wait_for_workers(1)?;
    ensure!(workers.len() == 1, "expected one worker, found {workers:?}");
    let worker = workers[0];
    for round in 0..2 {
        // A fresh entry (its 5 s revalidate period outlasts the round).
        expire_isr(&ferry)?;
        let (status, cache, _) = isr(&ferry)?;
        ensure!(
            status == 200 && cache == "MISS",
            "round {round}: after revalidatePath: {status} {cache}"
        );
        // The worker's control connection is used now, then idles.
        let resp = ferry.get("/api/revalidate?tag=unrelated-to-isr")?;
        ensure!(
            resp.status == 200,
            "/api/revalidate answered {}",
            resp.status
        );
        thread::sleep(Duration::from_millis(KEEP_ALIVE_MS - 200));
        // Ferry closes the idle connection while the worker is not running.
        signal_pid(worker, "STOP")?;
        let resume = Resume(worker);
        thread::sleep(Duration::from_millis(500));
        thread::scope(|s| -> Result<()> {
            let revalidate = s.spawn(|| expire_isr(&ferry));
            thread::sleep(Duration::from_millis(300));
            drop(resume);
            revalidate
                .join()
                .unwrap_or_else(|_| Err(anyhow!("request thread panicked")))
        })?;
        let (status, cache, _) = isr(&ferry)?;
        ensure!(
            status == 200 && cache == "MISS",
            "round {round}: the request after revalidatePath answered {status} {cache}: the \
             invalidation did not reach Ferry\n{}",
            ferry.log_tail()
        );
    }
    Ok(())
}
