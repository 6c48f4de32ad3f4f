//! End-to-end tests of on-demand ISR (issue 4): pages of a dynamic route that the build did not
//! prerender, rendered on their first request and from then on served from Ferry's cache like
//! build-time prerenders. The real `ferry` binary, a real `ferry build` of
//! `tests/fixtures/cache-app` (`/ondemand/[slug]`: `generateStaticParams` lists only `pre`,
//! revalidate 2 s; `/legacy-od/[slug]`: the pages router with `fallback: 'blocking'`;
//! `/legacy-fb/[slug]`: `fallback: true`), real
//! Node.js workers, a real `redis-server` for the shared-cache test. Every render appends
//! `<pid> <ms> <path>` to the render log, so renders are counted per page.

mod support;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, ensure};
use support::redis::Redis;
use support::{
    FerryServer, RawRequest, RawResponse, body_text, files_named, released_together, stamp,
};

/// Each render of the fixture's on-demand pages takes this long at runtime.
const RENDER_DELAY_MS: u64 = 1000;
/// The fixture's on-demand pages revalidate every 2 s.
const REVALIDATE: Duration = Duration::from_secs(2);

static APP: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// The fixture, copied and built with `ferry build` once for all tests of this binary.
fn app() -> Result<&'static Path> {
    APP.get_or_init(|| {
        let src = support::repo_root().join("tests/fixtures/cache-app");
        support::build_app_once("on-demand", &src, |_| Ok(())).map_err(|e| format!("{e:#}"))
    })
    .as_deref()
    .map_err(|e| anyhow!("building the cache fixture failed: {e}"))
}

/// Renders of `path` in the render log.
fn renders(log: &Path, path: &str) -> usize {
    std::fs::read_to_string(log).map_or(0, |t| {
        t.lines()
            .filter(|l| l.split(' ').nth(2) == Some(path))
            .count()
    })
}

/// Waits until `path` has not been rendered for a while; its render count.
fn renders_settled(log: &Path, path: &str) -> usize {
    let mut last = renders(log, path);
    let quiet = Duration::from_millis(RENDER_DELAY_MS + 1000);
    let mut since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    while since.elapsed() < quiet && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
        let now = renders(log, path);
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
    last
}

/// One answer: status, `x-nextjs-cache`, render stamp.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    status: u16,
    cache: String,
    stamp: String,
}

fn seen(resp: &RawResponse) -> Result<Seen> {
    let body = body_text(resp)?;
    Ok(Seen {
        status: resp.status,
        cache: resp.header("x-nextjs-cache").unwrap_or("-").to_owned(),
        stamp: stamp(&body).unwrap_or_default(),
    })
}

fn html(ferry: &FerryServer, path: &str, timeout: Duration) -> Result<Seen> {
    seen(&ferry.send(RawRequest::get(path), timeout)?)
}

/// The page's RSC payload (`rsc: 1`, as the client router asks for it).
fn rsc(ferry: &FerryServer, path: &str) -> Result<Seen> {
    let resp = ferry.send(
        RawRequest::get(&format!("{path}?_rsc=")).header("rsc", "1"),
        Duration::from_secs(30),
    )?;
    ensure!(
        resp.header("content-type")
            .is_some_and(|c| c.starts_with("text/x-component")),
        "{path} RSC answered {:?}",
        resp.header("content-type")
    );
    seen(&resp)
}

/// GET `path` until it answers `HIT`.
fn until_hit(ferry: &FerryServer, path: &str) -> Result<Seen> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = html(ferry, path, Duration::from_secs(30))?;
        if s.cache == "HIT" {
            return Ok(s);
        }
        ensure!(
            Instant::now() < deadline,
            "{path} did not turn HIT within 30 s (last {s:?})\n{}",
            ferry.log_tail()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

fn start(extra: &[&str], log: &Path) -> Result<FerryServer> {
    let mut args = vec!["--workers", "2", "--shutdown-timeout", "5"];
    args.extend_from_slice(extra);
    let log = log.to_string_lossy().into_owned();
    let delay = RENDER_DELAY_MS.to_string();
    FerryServer::start(
        app()?,
        &args,
        &[
            ("FERRY_TEST_RENDER_LOG", &log),
            ("FERRY_TEST_RENDER_DELAY_MS", &delay),
        ],
    )
}

#[test]
fn a_new_slug_renders_once_then_is_served_by_ferry_with_isr() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("renders.log");
    let ferry = start(&["--cache-url", "memory"], &log)?;
    let page = "/ondemand/burst";

    // 20 concurrent first requests: one render, shared by all (next start: MISS for each).
    let first = released_together(20, |_| html(&ferry, page, Duration::from_secs(30)))?;
    let stamps: HashSet<&str> = first.iter().map(|s| s.stamp.as_str()).collect();
    for s in &first {
        ensure!(
            s.status == 200 && s.cache == "MISS",
            "a first request answered {s:?}"
        );
    }
    ensure!(stamps.len() == 1, "the first requests saw {stamps:?}");
    let stamp1 = first[0].stamp.clone();
    ensure!(!stamp1.is_empty(), "no render stamp in {page}");
    // Counted at once: the entry turns stale 2 s after the render, and a stale hit regenerates.
    let n = renders(&log, page);
    ensure!(n == 1, "20 first requests rendered {page} {n} times");

    // Every variant of the page came from that one render: the RSC payload has the same stamp.
    let r = rsc(&ferry, page)?;
    ensure!(r.cache == "HIT" && r.stamp == stamp1, "RSC answered {r:?}");

    // Served by Ferry alone: with every worker stopped the page still answers, at once.
    ferry.signal_workers("STOP")?;
    let hit = html(&ferry, page, Duration::from_secs(5));
    let hit_rsc = rsc(&ferry, page);
    ferry.signal_workers("CONT")?;
    let (hit, hit_rsc) = (hit?, hit_rsc?);
    ensure!(
        hit.cache == "HIT" && hit.stamp == stamp1,
        "second request: {hit:?}"
    );
    ensure!(hit_rsc.stamp == stamp1, "second RSC request: {hit_rsc:?}");
    ensure!(renders(&log, page) == 1, "a hit rendered the page");

    // Stale: a burst is answered from the stale entry; one background regeneration renders
    // HTML and RSC together.
    thread::sleep(REVALIDATE + Duration::from_millis(500));
    let stale = released_together(10, |_| html(&ferry, page, Duration::from_secs(30)))?;
    for s in &stale {
        ensure!(
            s.cache == "STALE" && s.stamp == stamp1,
            "a stale request answered {s:?}"
        );
    }
    let fresh = until_hit(&ferry, page)?;
    ensure!(fresh.stamp != stamp1, "the regeneration kept the old page");
    let r = rsc(&ferry, page)?;
    ensure!(
        r.stamp == fresh.stamp,
        "HTML and RSC from different renders: {fresh:?} {r:?}"
    );
    let n = renders(&log, page);
    ensure!(n == 2, "the stale burst rendered {} times", n - 1);
    // Nothing else renders it meanwhile (no request until the entry is stale again).
    let n = renders_settled(&log, page);
    ensure!(n == 2, "the stale burst rendered {} times", n - 1);

    // revalidatePath of the slug: the next request renders (MISS, new content), then HIT.
    let resp = ferry.get(&format!("/api/revalidate?path={page}"))?;
    ensure!(
        resp.status == 200,
        "revalidatePath answered {}",
        resp.status
    );
    let after = html(&ferry, page, Duration::from_secs(30))?;
    ensure!(
        after.cache == "MISS" && after.stamp != fresh.stamp,
        "after revalidatePath: {after:?}"
    );
    let again = html(&ferry, page, Duration::from_secs(30))?;
    ensure!(
        again.cache == "HIT" && again.stamp == after.stamp,
        "second request after revalidatePath: {again:?}"
    );
    let r = rsc(&ferry, page)?;
    ensure!(r.stamp == after.stamp, "RSC after revalidatePath: {r:?}");
    let n = renders(&log, page);
    ensure!(n == 3, "revalidatePath rendered {} times", n - 2);

    // The pages router's blocking fallback: MISS, then HIT and the data JSON cached with it.
    let legacy = "/legacy-od/burst";
    let first = html(&ferry, legacy, Duration::from_secs(30))?;
    ensure!(
        first.status == 200 && first.cache == "MISS",
        "{legacy}: {first:?}"
    );
    let second = html(&ferry, legacy, Duration::from_secs(30))?;
    ensure!(
        second.cache == "HIT" && second.stamp == first.stamp,
        "{legacy} second request: {second:?}"
    );
    let build_id = support::build_id(app()?)?;
    let data = ferry.send(
        RawRequest::get(&format!("/_next/data/{build_id}/legacy-od/burst.json"))
            .header("x-nextjs-data", "1"),
        Duration::from_secs(30),
    )?;
    ensure!(
        data.status == 200 && data.header("x-nextjs-cache") == Some("HIT"),
        "{legacy} data: {} {:?}",
        data.status,
        data.header("x-nextjs-cache")
    );
    // A pages-router `notFound` of a blocking fallback: cached by Ferry like next start caches
    // it (one entry for both variants, `MISS` then `HIT`, never revalidated): the HTML is the
    // 404 page, the data JSON next's `{"notFound":true}`. The first request renders once.
    let missing = "/legacy-od/missing";
    let notfound_answer = |r: &RawResponse| {
        (
            r.status,
            r.header("x-nextjs-cache").map(str::to_owned),
            r.header("cache-control").map(str::to_owned),
        )
    };
    let first = ferry.get(missing)?;
    ensure!(
        notfound_answer(&first) == (404, Some("MISS".into()), Some("s-maxage=31536000".into()))
            && first
                .header("content-type")
                .is_some_and(|t| t.starts_with("text/html")),
        "{missing} first: {:?}",
        notfound_answer(&first)
    );
    let second = ferry.get(missing)?;
    ensure!(
        notfound_answer(&second) == (404, Some("HIT".into()), Some("s-maxage=31536000".into())),
        "{missing} second: {:?}",
        notfound_answer(&second)
    );
    let data = ferry.send(
        RawRequest::get(&format!("/_next/data/{build_id}/legacy-od/missing.json"))
            .header("x-nextjs-data", "1"),
        Duration::from_secs(30),
    )?;
    let body = data.decoded_body()?;
    ensure!(
        notfound_answer(&data) == (404, Some("HIT".into()), Some("s-maxage=31536000".into()))
            && body == br#"{"notFound":true}"#
            && data.header("content-type").is_none()
            && data.header("x-nextjs-matched-path") == Some("/legacy-od/[slug]"),
        "{missing} data: {:?} {:?}",
        notfound_answer(&data),
        String::from_utf8_lossy(&body)
    );
    Ok(())
}

/// The page's `_next/data` JSON (`x-nextjs-data: 1`, as the client router asks for it).
fn data(ferry: &FerryServer, build_id: &str, page: &str) -> Result<Seen> {
    seen(&ferry.send(
        RawRequest::get(&format!("/_next/data/{build_id}{page}.json")).header("x-nextjs-data", "1"),
        Duration::from_secs(30),
    )?)
}

#[test]
fn a_fallback_true_page_is_rendered_once_by_its_data_json_then_served_by_ferry() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("renders.log");
    let ferry = start(&["--cache-url", "memory"], &log)?;
    let build_id = support::build_id(app()?)?;
    let page = "/legacy-fb/fbburst";

    // First HTML requests: the fallback shell, as next start sends it, and no render.
    for _ in 0..2 {
        let resp = ferry.get(page)?;
        let body = body_text(&resp)?;
        ensure!(
            resp.status == 200
                && resp.header("x-nextjs-cache") == Some("MISS")
                && resp.header("cache-control")
                    == Some("private, no-cache, no-store, max-age=0, must-revalidate")
                && body.contains(r#"id="fallback""#),
            "{page} first HTML: {} {:?} {:?}",
            resp.status,
            resp.header("x-nextjs-cache"),
            resp.header("cache-control")
        );
    }
    ensure!(
        renders(&log, page) == 0,
        "the fallback shell rendered the page"
    );

    // 12 concurrent data requests (the client after the shell): one render, shared.
    let first = released_together(12, |_| data(&ferry, &build_id, page))?;
    let stamps: HashSet<&str> = first.iter().map(|s| s.stamp.as_str()).collect();
    for s in &first {
        ensure!(
            s.status == 200 && s.cache == "MISS",
            "a data request answered {s:?}"
        );
    }
    ensure!(stamps.len() == 1, "the first data requests saw {stamps:?}");
    let stamp1 = first[0].stamp.clone();
    ensure!(!stamp1.is_empty(), "no render stamp in the data JSON");
    let n = renders(&log, page);
    ensure!(n == 1, "12 first data requests rendered {page} {n} times");

    // HTML and data from that one render, answered by Ferry alone (every worker stopped).
    ferry.signal_workers("STOP")?;
    let hit = html(&ferry, page, Duration::from_secs(5));
    let hit_data = data(&ferry, &build_id, page);
    ferry.signal_workers("CONT")?;
    let (hit, hit_data) = (hit?, hit_data?);
    ensure!(
        hit.cache == "HIT" && hit.stamp == stamp1,
        "HTML after the data render: {hit:?}"
    );
    ensure!(
        hit_data.cache == "HIT" && hit_data.stamp == stamp1,
        "data after its render: {hit_data:?}"
    );

    // Stale: answered at once, one background regeneration of HTML and data together.
    thread::sleep(REVALIDATE + Duration::from_millis(500));
    let stale = released_together(8, |_| html(&ferry, page, Duration::from_secs(30)))?;
    for s in &stale {
        ensure!(
            s.cache == "STALE" && s.stamp == stamp1,
            "a stale request answered {s:?}"
        );
    }
    let fresh = until_hit(&ferry, page)?;
    ensure!(fresh.stamp != stamp1, "the regeneration kept the old page");
    let d = data(&ferry, &build_id, page)?;
    ensure!(
        d.stamp == fresh.stamp,
        "HTML and data from different renders: {fresh:?} {d:?}"
    );
    ensure!(
        renders(&log, page) == 2,
        "the stale burst rendered more than once"
    );

    // A bot gets the page rendered (blocking), once, then it is cached for everyone.
    let bot_page = "/legacy-fb/fbbot";
    let ua = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
    let bot = seen(&ferry.send(
        RawRequest::get(bot_page).header("user-agent", ua),
        Duration::from_secs(30),
    )?)?;
    ensure!(bot.cache == "MISS" && !bot.stamp.is_empty(), "bot: {bot:?}");
    let user = html(&ferry, bot_page, Duration::from_secs(30))?;
    ensure!(
        user.cache == "HIT" && user.stamp == bot.stamp,
        "after the bot: {user:?}"
    );
    ensure!(
        renders(&log, bot_page) == 1,
        "the bot's page rendered twice"
    );

    // A blocking pages-router page renders once for its HTML and data JSON too.
    let blocking = "/legacy-od/once";
    let first = html(&ferry, blocking, Duration::from_secs(30))?;
    ensure!(first.cache == "MISS", "{blocking}: {first:?}");
    let d = data(&ferry, &build_id, blocking)?;
    ensure!(
        d.cache == "HIT" && d.stamp == first.stamp,
        "{blocking} data: {d:?}"
    );
    ensure!(
        renders(&log, blocking) == 1,
        "{blocking} rendered more than once"
    );

    // The workers keep no copy of these pages in Next's file-system cache.
    let copies = files_named(&app()?.join(".ferry"), "fbburst");
    ensure!(
        copies.is_empty(),
        "the workers cached the page themselves: {copies:?}"
    );
    Ok(())
}

#[test]
fn on_demand_pages_are_bounded_by_the_cache_size() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("renders.log");
    // A memory store of 64 KiB holds a handful of pages (HTML + RSC ≈ 10 KB each).
    let ferry = start(&["--cache-url", "memory", "--cache-max-size", "64KB"], &log)?;
    let pages: Vec<String> = (0..30).map(|i| format!("/ondemand/bound-{i}")).collect();
    for p in &pages {
        let s = html(&ferry, p, Duration::from_secs(30))?;
        ensure!(s.status == 200 && s.cache == "MISS", "{p}: {s:?}");
    }
    // The newest is still cached; the oldest was evicted and renders again.
    let last = html(&ferry, &pages[29], Duration::from_secs(30))?;
    ensure!(last.cache == "HIT", "{}: {last:?}", pages[29]);
    let oldest = html(&ferry, &pages[0], Duration::from_secs(30))?;
    ensure!(
        oldest.cache == "MISS",
        "{} was not evicted from a 64 KiB cache: {oldest:?}",
        pages[0]
    );
    ensure!(renders(&log, &pages[0]) == 2, "evicted page rendered once");
    // The workers keep no copy of their own (Next's file-system cache under the bundle's
    // `.next/server`): the pages are Ferry's alone, bounded by Ferry's cache.
    let copies = files_named(&app()?.join(".ferry"), "bound-");
    ensure!(
        copies.is_empty(),
        "the workers cached on-demand pages themselves: {copies:?}"
    );
    Ok(())
}

#[test]
fn an_on_demand_page_rendered_by_one_instance_is_served_by_another_on_one_redis() -> Result<()> {
    let redis = Redis::start()?;
    let url = redis.url();
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("renders.log");
    let a = start(&["--cache-url", url.as_str()], &log)?;
    let b = start(&["--cache-url", url.as_str()], &log)?;
    let page = "/ondemand/shared";
    let first = html(&a, page, Duration::from_secs(30))?;
    ensure!(first.cache == "MISS", "A: {first:?}");
    // B finds it in Redis (written in the background right after A stored it).
    let deadline = Instant::now() + Duration::from_secs(5);
    let on_b = loop {
        thread::sleep(Duration::from_millis(100));
        let resp = b.get(page)?;
        let s = seen(&resp)?;
        if s.cache == "HIT" || Instant::now() >= deadline {
            break s;
        }
    };
    ensure!(
        on_b.cache == "HIT" && on_b.stamp == first.stamp,
        "B answered {on_b:?}, A rendered {first:?}\nB: {}",
        b.log_tail()
    );
    ensure!(renders(&log, page) == 1, "the page was rendered twice");
    drop(redis);
    Ok(())
}
