//! End-to-end fault tests: the real `ferry` binary serving `tests/fixtures/faults-app` (route
//! handlers that crash their worker, hang, sleep) built once for this test binary, plus `.env`
//! file loading. Each test starts its own server on a free port.

mod support;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, ensure};
use support::{FerryServer, RawRequest, RawResponse};

/// The value `.env.production` defines (and `.env` defines differently: production wins).
const DOTENV_VALUE: &str = "from-dotenv-production";

static FAULTS: OnceLock<Result<PathBuf, String>> = OnceLock::new();

fn faults_src() -> PathBuf {
    support::repo_root().join("tests/fixtures/faults-app")
}

/// The faults app, with `.env` files written into the copy, built once for all tests here.
fn faults_app() -> Result<&'static Path> {
    FAULTS
        .get_or_init(|| {
            support::build_app_once("faults", &faults_src(), |app| {
                std::fs::write(app.join(".env"), "FERRY_FAULTS_ENV_VALUE=from-dotenv\n")?;
                std::fs::write(
                    app.join(".env.production"),
                    format!("FERRY_FAULTS_ENV_VALUE={DOTENV_VALUE}\n"),
                )?;
                Ok(())
            })
            .map_err(|e| format!("{e:#}"))
        })
        .as_deref()
        .map_err(|e| anyhow!("building the faults app failed: {e}"))
}

fn start(extra: &[&str], env: &[(&str, &str)]) -> Result<FerryServer> {
    let mut args = vec!["--shutdown-timeout", "5"];
    args.extend_from_slice(extra);
    FerryServer::start(faults_app()?, &args, env)
}

fn text(resp: &RawResponse) -> String {
    String::from_utf8_lossy(&resp.body).into_owned()
}

/// The `pid` field of a JSON body such as `{"ok":true,"pid":123}`.
fn json_pid(resp: &RawResponse) -> Result<u32> {
    let body = text(resp);
    let start = body
        .find("\"pid\":")
        .ok_or_else(|| anyhow!("no pid in {body:?}"))?
        + 6;
    Ok(body[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()?)
}

/// GET /api/ok, expecting 200.
fn ok(ferry: &FerryServer, what: &str) -> Result<RawResponse> {
    let resp = ferry.get("/api/ok")?;
    ensure!(
        resp.status == 200 && text(&resp).contains("\"ok\":true"),
        "{what}: /api/ok answered {} {:?}; ferry output:\n{}",
        resp.status,
        text(&resp),
        ferry.log_tail()
    );
    Ok(resp)
}

#[test]
fn crashing_worker_gives_5xx_quickly_and_is_replaced() -> Result<()> {
    let ferry = start(&["--workers", "1"], &[])?;
    let before = json_pid(&ok(&ferry, "before the crash")?)?;
    let started = Instant::now();
    let crash = ferry.send(RawRequest::get("/api/crash"), Duration::from_secs(30))?;
    let took = started.elapsed();
    ensure!(
        (500..600).contains(&crash.status),
        "/api/crash answered {} (expected 5xx)",
        crash.status
    );
    ensure!(
        took < Duration::from_secs(3),
        "/api/crash answered after {took:?} (expected < 3 s)"
    );
    eprintln!("crash: HTTP {} after {} ms", crash.status, took.as_millis());
    let after = json_pid(&ok(&ferry, "after the crash")?)?;
    ensure!(
        after != before,
        "the same worker pid {before} answered after it exited"
    );
    Ok(())
}

#[test]
fn hung_request_gets_504_after_worker_timeout() -> Result<()> {
    let ferry = start(&["--workers", "1", "--worker-timeout", "2"], &[])?;
    ok(&ferry, "before the hang")?;
    let started = Instant::now();
    let hang = ferry.send(RawRequest::get("/api/hang"), Duration::from_secs(30))?;
    let took = started.elapsed();
    ensure!(
        hang.status == 504,
        "/api/hang answered {} after {took:?} (expected 504 after ~2 s)",
        hang.status
    );
    ensure!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(8),
        "/api/hang: 504 after {took:?}, expected about the 2 s worker timeout"
    );
    eprintln!("hang: 504 after {} ms", took.as_millis());
    for i in 0..3 {
        ok(&ferry, &format!("request {i} after the hang"))?;
    }
    Ok(())
}

/// One request's outcome: status (0 on a transport error) and time to the complete response.
fn timed_get(addr: std::net::SocketAddr, path: &str) -> (u16, Duration) {
    let started = Instant::now();
    let req = RawRequest::get(path)
        .header("Host", "localhost")
        .header("Connection", "close");
    let status = support::send(addr, &req, Duration::from_secs(60)).map_or(0, |r| r.status);
    (status, started.elapsed())
}

/// Requests the default per-worker in-flight limit lets into one worker at once (ferry-workers'
/// `PoolConfig::max_in_flight_per_worker`).
const WORKER_IN_FLIGHT: usize = 8;

#[test]
fn full_queue_rejects_with_503_at_once() -> Result<()> {
    let queue_limit = 2;
    let ferry = start(&["--workers", "1", "--queue-limit", "2"], &[])?;
    ok(&ferry, "warm-up")?;
    // Enough slow requests to fill the worker, the queue, and then some.
    let burst = WORKER_IN_FLIGHT + queue_limit + 5;
    let addr = ferry.addr;
    let results: Vec<(u16, Duration)> = thread::scope(|s| {
        let handles: Vec<_> = (0..burst)
            .map(|_| s.spawn(move || timed_get(addr, "/api/slow?ms=3000")))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or((0, Duration::ZERO)))
            .collect()
    });
    let ok_count = results.iter().filter(|(s, _)| *s == 200).count();
    let fast_503 = results
        .iter()
        .filter(|(s, t)| *s == 503 && *t < Duration::from_secs(1))
        .count();
    eprintln!(
        "queue: {burst} concurrent /api/slow?ms=3000 → {ok_count} × 200, {fast_503} × 503 (< 1 s); all: {results:?}"
    );
    let odd: Vec<_> = results
        .iter()
        .filter(|(s, t)| !(*s == 200 || (*s == 503 && *t < Duration::from_secs(1))))
        .collect();
    ensure!(
        odd.is_empty(),
        "responses that are neither 200 nor an immediate 503: {odd:?} (all: {results:?})"
    );
    ensure!(
        // At least one in the worker plus the queued ones succeed.
        ok_count > queue_limit,
        "only {ok_count} succeeded: {results:?}"
    );
    ensure!(
        fast_503 >= burst - (WORKER_IN_FLIGHT + queue_limit),
        "expected at least {} immediate 503s with {WORKER_IN_FLIGHT} in flight + {queue_limit} queued, got {fast_503}: {results:?}",
        burst - (WORKER_IN_FLIGHT + queue_limit)
    );
    ok(&ferry, "after the burst")?;
    Ok(())
}

#[test]
fn overload_keeps_rss_bounded() -> Result<()> {
    let ferry = start(&["--workers", "1", "--queue-limit", "2"], &[])?;
    ok(&ferry, "warm-up")?;
    let pid = ferry.pid();
    let before = support::rss_kib(pid).ok_or_else(|| anyhow!("no RSS for ferry {pid}"))?;
    let peak = AtomicU64::new(before);
    let done = AtomicBool::new(false);
    let addr = ferry.addr;
    let burst = 200;
    let statuses: Vec<u16> = thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                if let Some(rss) = support::rss_kib(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                thread::sleep(Duration::from_millis(20));
            }
        });
        let handles: Vec<_> = (0..burst)
            .map(|_| s.spawn(move || timed_get(addr, "/api/slow?ms=2000").0))
            .collect();
        let statuses = handles.into_iter().map(|h| h.join().unwrap_or(0)).collect();
        done.store(true, Ordering::Relaxed);
        statuses
    });
    let after = support::rss_kib(pid).unwrap_or(0);
    let peak = peak.load(Ordering::Relaxed);
    let n503 = statuses.iter().filter(|&&s| s == 503).count();
    let n200 = statuses.iter().filter(|&&s| s == 200).count();
    eprintln!(
        "overload: {burst} concurrent → {n200} × 200, {n503} × 503; ferry RSS {before} KiB before, peak {peak} KiB, {after} KiB after"
    );
    ensure!(
        n200 + n503 == burst,
        "some requests failed otherwise: {statuses:?}"
    );
    ensure!(
        peak < before + 64 * 1024,
        "ferry RSS grew from {before} KiB to {peak} KiB under {burst} requests"
    );
    ok(&ferry, "after the overload")?;
    Ok(())
}

#[test]
fn dotenv_production_is_loaded_at_runtime() -> Result<()> {
    let ferry = start(&["--workers", "1"], &[])?;
    let resp = ferry.get("/api/env")?;
    ensure!(resp.status == 200, "/api/env answered {}", resp.status);
    ensure!(
        text(&resp) == format!("{{\"value\":\"{DOTENV_VALUE}\"}}"),
        "/api/env: expected the .env.production value {DOTENV_VALUE:?}, got {:?}",
        text(&resp)
    );
    Ok(())
}

#[test]
fn process_env_wins_over_dotenv() -> Result<()> {
    let ferry = start(
        &["--workers", "1"],
        &[("FERRY_FAULTS_ENV_VALUE", "from-process")],
    )?;
    let resp = ferry.get("/api/env")?;
    ensure!(resp.status == 200, "/api/env answered {}", resp.status);
    ensure!(
        text(&resp) == "{\"value\":\"from-process\"}",
        "/api/env: expected the process environment to win over .env files, got {:?}",
        text(&resp)
    );
    Ok(())
}

/// Regression: a SIGKILLed `ferry start` left its workers' run directory (bridge script and
/// sockets) in the temp dir forever; the next start now removes it.
#[test]
fn killed_instance_run_dir_is_swept_by_the_next_start() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let tmp_path = tmp
        .path()
        .to_str()
        .ok_or_else(|| anyhow!("temp dir is not UTF-8"))?
        .to_owned();
    let run_dirs = || -> Result<Vec<PathBuf>> {
        let mut dirs = Vec::new();
        for entry in std::fs::read_dir(tmp.path())? {
            let entry = entry?;
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with("ferry-workers-")
            {
                dirs.push(entry.path());
            }
        }
        Ok(dirs)
    };
    let env = [("TMPDIR", tmp_path.as_str())];

    let mut first = start(&["--workers", "1"], &env)?;
    ok(&first, "the first instance")?;
    let left = run_dirs()?;
    ensure!(left.len() == 1, "expected one run dir, found {left:?}");
    let workers = first.children();
    first.process().signal("-KILL");
    ensure!(
        first
            .process()
            .wait_exit(Duration::from_secs(10))?
            .is_some(),
        "ferry survived SIGKILL"
    );
    // Its workers notice their parent is gone (their stdin closes) and exit.
    let deadline = Instant::now() + Duration::from_secs(15);
    while workers.iter().any(|&p| support::pid_alive(p)) {
        ensure!(
            Instant::now() < deadline,
            "workers {workers:?} outlived their SIGKILLed ferry"
        );
        thread::sleep(Duration::from_millis(50));
    }
    ensure!(
        left[0].exists(),
        "a SIGKILLed ferry cannot remove its own run dir"
    );

    let second = start(&["--workers", "1"], &env)?;
    ok(&second, "the second instance")?;
    ensure!(
        !left[0].exists(),
        "the next start left the dead instance's run dir {}",
        left[0].display()
    );
    ensure!(
        run_dirs()?.len() == 1,
        "expected only the live instance's run dir, found {:?}",
        run_dirs()?
    );
    Ok(())
}
