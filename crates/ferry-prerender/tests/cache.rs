//! The prerender cache against real seed files (copied from the showcase's `next build` into
//! tests/fixtures) in a temp bundle, answering over real HTTP. Expected header values were
//! measured from next start 16.4.6 on `/tmp/ref/showcase`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use ferry_manifest::Manifest;
use ferry_prerender::{CacheHit, CacheState, PrerenderCache, Rendered};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
const RSC_VARY: &str =
    "rsc, next-router-state-tree, next-router-prefetch, next-router-segment-prefetch";
const TOKEN: &str = "95f2a3120001eb0bdd4bc2e02af789dc";
const BUILD_ID: &str = "QieQYEuOxgI6b6eZkxrtM";

fn app_headers(ct: &str, tags: &str) -> serde_json::Value {
    serde_json::json!({
        "vary": RSC_VARY, "content-type": ct, "x-nextjs-stale-time": "300",
        "x-nextjs-prerender": "1", "x-next-cache-tags": tags
    })
}

fn prerender(
    pathname: &str,
    parent: &str,
    group: u64,
    file: Option<&str>,
    headers: serde_json::Value,
    revalidate: serde_json::Value,
) -> serde_json::Value {
    let bypass = serde_json::json!([{"type": "header", "key": "next-action"},
        {"type": "header", "key": "content-type", "value": "multipart/form-data;.*"}]);
    let mut p = serde_json::json!({
        "pathname": pathname, "parentOutputId": parent, "groupId": group, "route": parent,
        "bypassFor": bypass, "bypassToken": TOKEN, "allowQuery": [],
    });
    if let Some(file) = file {
        p["seed"] = serde_json::json!({
            "file": file, "headers": headers, "revalidate": revalidate,
            "expiration": if revalidate.is_number() { serde_json::json!(31_536_000) } else { serde_json::Value::Null }
        });
    }
    p
}

/// A bundle shaped like the showcase's: `/`, `/blog/hello`, `/isr` (+ `.rsc`), the pages-router
/// `/legacy/static` (+ its data route), and the `/blog/[slug]` template without seed.
/// `isr_revalidate` lets the HTTP test use a short period.
fn bundle(isr_revalidate: u64) -> (tempfile::TempDir, Manifest) {
    let dir = tempfile::tempdir().expect("tempdir");
    for f in [
        "index.html",
        "blog-hello.html",
        "isr.html",
        "isr.rsc",
        "legacy-static.html",
        "legacy-static.json",
    ] {
        std::fs::create_dir_all(dir.path().join("seeds")).expect("mkdir");
        std::fs::copy(format!("{FIXTURES}/{f}"), dir.path().join("seeds").join(f))
            .expect("copy fixture");
    }
    let isr_tags = "_N_T_/layout,_N_T_/isr/layout,_N_T_/isr/page,_N_T_/isr";
    let pages_headers = |ct: &str| serde_json::json!({"vary": RSC_VARY, "content-type": ct});
    let data = format!("/_next/data/{BUILD_ID}/legacy/static.json");
    let m = serde_json::json!({
        "version": 1, "ferryVersion": "0.1.0", "nextVersion": "16.4.6", "kind": "server",
        "buildId": BUILD_ID, "config": {}, "routing": {},
        "functions": [
            {"id": "/", "kind": "APP_PAGE", "pathname": "/", "sourcePage": "/page", "entry": "a.js", "runtime": "nodejs"},
            {"id": "/isr", "kind": "APP_PAGE", "pathname": "/isr", "sourcePage": "/isr/page", "entry": "a.js", "runtime": "nodejs"},
            {"id": "/blog/[slug]", "kind": "APP_PAGE", "pathname": "/blog/[slug]", "sourcePage": "/blog/[slug]/page", "entry": "a.js", "runtime": "nodejs"},
            {"id": "/legacy/static", "kind": "PAGES", "pathname": "/legacy/static", "sourcePage": "legacy/static", "entry": "p.js", "runtime": "nodejs"},
            {"id": "/fb/[slug]", "kind": "PAGES", "pathname": "/fb/[slug]", "sourcePage": "fb/[slug]", "entry": "p.js", "runtime": "nodejs"}
        ],
        "prerenders": [
            prerender("/", "/", 1, Some("seeds/index.html"),
                app_headers("text/html; charset=utf-8", "_N_T_/layout,_N_T_/page,_N_T_/,_N_T_/index"), serde_json::json!(false)),
            prerender("/blog/hello", "/blog/[slug]", 3, Some("seeds/blog-hello.html"),
                app_headers("text/html; charset=utf-8", "_N_T_/layout,_N_T_/blog/hello"), serde_json::json!(false)),
            prerender("/isr", "/isr", 6, Some("seeds/isr.html"),
                app_headers("text/html; charset=utf-8", isr_tags), serde_json::json!(isr_revalidate)),
            prerender("/isr.rsc", "/isr", 6, Some("seeds/isr.rsc"),
                app_headers("text/x-component", isr_tags), serde_json::json!(isr_revalidate)),
            prerender("/legacy/static", "/legacy/static", 7, Some("seeds/legacy-static.html"),
                pages_headers("text/html; charset=utf-8"), serde_json::json!(10)),
            prerender(&data, "/legacy/static", 7, Some("seeds/legacy-static.json"),
                pages_headers("application/json; charset=utf-8"), serde_json::json!(10)),
            prerender("/blog/[slug]", "/blog/[slug]", 8, None, serde_json::json!({}), serde_json::json!(false)),
            prerender("/blog/[slug].rsc", "/blog/[slug]", 8, None, serde_json::json!({}), serde_json::json!(false)),
            // A pages-router route with `fallback: true`: the template's seed is the fallback shell.
            prerender("/fb/[slug]", "/fb/[slug]", 9, Some("seeds/legacy-static.html"),
                pages_headers("text/html; charset=utf-8"), serde_json::json!(1)),
            prerender(&format!("/_next/data/{BUILD_ID}/fb/[slug].json"), "/fb/[slug]", 9, None,
                serde_json::json!({}), serde_json::json!(false)),
        ]
    });
    let manifest =
        Manifest::from_json(&m.to_string(), std::path::Path::new("m")).expect("manifest");
    (dir, manifest)
}

/// Seed mtime, the time the cache dates seeds by.
fn set_seed_time(dir: &std::path::Path, file: &str, t: SystemTime) {
    let f = std::fs::File::options()
        .write(true)
        .open(dir.join("seeds").join(file))
        .expect("open");
    f.set_modified(t).expect("set mtime");
}

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn isr_cache() -> (tempfile::TempDir, PrerenderCache) {
    let (dir, m) = bundle(5);
    for f in [
        "isr.html",
        "isr.rsc",
        "legacy-static.html",
        "legacy-static.json",
    ] {
        set_seed_time(dir.path(), f, t0());
    }
    let cache = PrerenderCache::new(dir.path(), &m).expect("cache");
    (dir, cache)
}

fn rendered(body: &str, ct: &str, cache_control: &str, tags: &str) -> Rendered {
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_str(ct).expect("ct"));
    h.insert("vary", HeaderValue::from_static(RSC_VARY));
    h.insert("x-nextjs-stale-time", HeaderValue::from_static("300"));
    h.insert("x-nextjs-prerender", HeaderValue::from_static("1"));
    h.insert(
        "x-next-cache-tags",
        HeaderValue::from_str(tags).expect("tags"),
    );
    h.insert(
        "cache-control",
        HeaderValue::from_str(cache_control).expect("cc"),
    );
    Rendered::from_response(StatusCode::OK, h, Bytes::from(body.to_owned()))
}

#[test]
fn stale_while_revalidate_and_expiration() {
    let (_dir, cache) = isr_cache();
    let fresh = cache
        .lookup("/isr", t0() + Duration::from_secs(4))
        .expect("hit");
    assert_eq!(fresh.state, CacheState::Fresh);
    assert!(!fresh.needs_regeneration);

    let stale = cache
        .lookup("/isr", t0() + Duration::from_secs(6))
        .expect("hit");
    assert_eq!(stale.state, CacheState::Stale);
    assert!(stale.needs_regeneration);
    let regen = stale.regeneration.clone().expect("regeneration");
    assert_eq!(regen.parent_output_id, "/isr");
    assert_eq!(regen.group_id, 6);
    assert_eq!(
        regen.group_pathnames,
        vec!["/isr".to_owned(), "/isr.rsc".to_owned()]
    );
    assert_eq!(regen.bypass_token.as_deref(), Some(TOKEN));
    // The RSC twin is in the same group: no second regeneration.
    let rsc = cache
        .lookup("/isr.rsc", t0() + Duration::from_secs(6))
        .expect("hit");
    assert_eq!(rsc.state, CacheState::Stale);
    assert!(!rsc.needs_regeneration);

    // A failed regeneration lets the next stale lookup try again.
    cache.regeneration_failed("/isr");
    let again = cache
        .lookup("/isr.rsc", t0() + Duration::from_secs(7))
        .expect("hit");
    assert!(again.needs_regeneration);

    let now = t0() + Duration::from_secs(8);
    let cc = "s-maxage=5, stale-while-revalidate=31535995";
    cache.store_group(
        vec![
            (
                "/isr".into(),
                rendered("<p>new</p>", "text/html; charset=utf-8", cc, "_N_T_/isr"),
            ),
            (
                "/isr.rsc".into(),
                rendered("0:new", "text/x-component", cc, "_N_T_/isr"),
            ),
        ],
        now,
    );
    let hit = cache
        .lookup("/isr", now + Duration::from_secs(1))
        .expect("hit");
    assert_eq!(hit.state, CacheState::Fresh);
    assert_eq!(&hit.entry.body[..], b"<p>new</p>");
    assert_eq!(hit.entry.revalidate, Some(5));
    assert_eq!(hit.entry.expire, Some(31_536_000));
    let rsc = cache
        .lookup("/isr.rsc", now + Duration::from_secs(1))
        .expect("hit");
    assert_eq!(&rsc.entry.body[..], b"0:new");

    // Past the expiration it must not be served stale.
    let expired = cache
        .lookup("/isr", now + Duration::from_secs(31_536_000))
        .expect("hit");
    assert_eq!(expired.state, CacheState::Expired);
    assert!(expired.needs_regeneration);

    // Static entries never go stale.
    let s = cache
        .lookup(
            "/",
            SystemTime::now() + Duration::from_secs(10 * 31_536_000),
        )
        .expect("hit");
    assert_eq!(s.state, CacheState::Fresh);
    assert!(
        cache.lookup("/blog/[slug]", SystemTime::now()).is_none(),
        "no seed"
    );
    assert!(cache.lookup("/nope", SystemTime::now()).is_none());
}

#[test]
fn exactly_one_regeneration_for_100_concurrent_stale_lookups() {
    let (_dir, cache) = isr_cache();
    let barrier = std::sync::Barrier::new(100);
    let now = t0() + Duration::from_secs(60);
    let claims: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..100)
            .map(|i| {
                let (cache, barrier) = (&cache, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    let path = if i % 2 == 0 { "/isr" } else { "/isr.rsc" };
                    let hit = cache.lookup(path, now).expect("hit");
                    assert_eq!(hit.state, CacheState::Stale);
                    usize::from(hit.needs_regeneration)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).sum()
    });
    assert_eq!(claims, 1);
}

#[test]
fn on_demand_invalidation_by_tag_and_path() {
    let (_dir, cache) = isr_cache();
    let now = t0() + Duration::from_secs(1);
    assert_eq!(
        cache.lookup("/isr", now).expect("hit").state,
        CacheState::Fresh
    );
    cache.invalidate_tags_at(&["_N_T_/isr/page".to_owned()], now);
    for p in ["/isr", "/isr.rsc"] {
        assert_eq!(
            cache.lookup(p, now).expect("hit").state,
            CacheState::Stale,
            "{p}"
        );
    }
    // Unrelated pages are untouched.
    assert_eq!(
        cache.lookup("/", now).expect("hit").state,
        CacheState::Fresh
    );
    // A regeneration stored after the invalidation is fresh again.
    let later = now + Duration::from_secs(1);
    cache.store(
        "/isr",
        rendered(
            "x",
            "text/html",
            "s-maxage=5, stale-while-revalidate=9",
            "_N_T_/isr/page",
        ),
        later,
    );
    assert_eq!(
        cache.lookup("/isr", later).expect("hit").state,
        CacheState::Fresh
    );

    // Pages router entries have no tags: invalidate by path marks the whole group.
    let data = format!("/_next/data/{BUILD_ID}/legacy/static.json");
    assert_eq!(
        cache.lookup(&data, now).expect("hit").state,
        CacheState::Fresh
    );
    cache.invalidate_path_at("/legacy/static", now);
    assert_eq!(
        cache.lookup("/legacy/static", now).expect("hit").state,
        CacheState::Stale
    );
    assert_eq!(
        cache.lookup(&data, now).expect("hit").state,
        CacheState::Stale
    );
}

#[test]
fn bypass_conditions() {
    let (_dir, cache) = isr_cache();
    assert_eq!(cache.bypass_token(), Some(TOKEN));
    let get = |h: &[(&str, &str)]| {
        let mut b = http::Request::get("/isr");
        for (k, v) in h {
            b = b.header(*k, *v);
        }
        b.body(()).expect("req")
    };
    assert!(!cache.should_bypass("/isr", &get(&[])));
    assert!(cache.should_bypass("/isr", &get(&[("next-action", "abc")])));
    assert!(cache.should_bypass("/isr", &get(&[("x-prerender-revalidate", TOKEN)])));
    assert!(!cache.should_bypass("/isr", &get(&[("x-prerender-revalidate", "wrong")])));
    assert!(cache.should_bypass(
        "/isr",
        &get(&[("cookie", &format!("__prerender_bypass={TOKEN}"))])
    ));
    assert!(!cache.should_bypass("/isr", &get(&[("cookie", "__prerender_bypass=nope")])));
    let post = http::Request::post("/isr")
        .header("content-type", "multipart/form-data; boundary=x")
        .body(())
        .expect("req");
    assert!(cache.should_bypass("/isr", &post));
}

#[test]
fn runtime_pages_of_dynamic_routes() {
    let (_dir, cache) = isr_cache();
    let now = SystemTime::now();
    assert!(cache.lookup("/blog/new", now).is_none());
    let r = rendered(
        "<h1>new</h1>",
        "text/html; charset=utf-8",
        "s-maxage=31536000",
        "_N_T_/blog/new",
    );
    cache
        .store_dynamic("/blog/new", "/blog/[slug]", r, now)
        .expect("store");
    let r = rendered(
        "0:new",
        "text/x-component",
        "s-maxage=31536000",
        "_N_T_/blog/new",
    );
    cache
        .store_dynamic("/blog/new.rsc", "/blog/[slug].rsc", r, now)
        .expect("store");
    let hit = cache.lookup("/blog/new", now).expect("hit");
    assert_eq!(hit.state, CacheState::Fresh);
    assert_eq!(hit.entry.revalidate, None);
    assert_eq!(
        cache.template_of("/blog/new").as_deref(),
        Some("/blog/[slug]")
    );
    cache.invalidate_tags_at(&["_N_T_/blog/new".into()], now);
    let stale = cache.lookup("/blog/new", now).expect("hit");
    let regen = stale.regeneration.expect("claimed");
    assert_eq!(regen.parent_output_id, "/blog/[slug]");
    assert_eq!(
        regen.group_pathnames,
        vec!["/blog/new".to_owned(), "/blog/new.rsc".to_owned()]
    );
    assert!(
        !cache
            .lookup("/blog/new.rsc", now)
            .expect("hit")
            .needs_regeneration
    );
    let r = rendered("x", "text/html", "s-maxage=1", "");
    assert!(cache.store_dynamic("/x/y", "/nope/[x]", r, now).is_err());
    // Uncacheable results are not stored.
    let r = rendered(
        "x",
        "text/html",
        "private, no-cache, no-store, max-age=0, must-revalidate",
        "",
    );
    cache
        .store_dynamic("/blog/dyn", "/blog/[slug]", r, now)
        .expect("ok");
    assert!(cache.lookup("/blog/dyn", now).is_none());
}

#[test]
fn on_demand_pages_register_from_their_template_with_one_group() {
    let (_dir, cache) = isr_cache();
    let now = SystemTime::now();
    // Not the template of a route that renders unknown params on demand.
    assert!(!cache.register_on_demand("/isr/x", "/isr"));
    assert!(!cache.register_on_demand("/blog/new", "/nope/[slug]"));
    assert!(cache.register_on_demand("/blog/new.rsc", "/blog/[slug]"));
    assert!(
        cache.is_prerender("/blog/new"),
        "the whole group is registered"
    );
    assert!(cache.register_on_demand("/blog/new.segments/_tree.segment.rsc", "/blog/[slug]"));
    assert_eq!(cache.on_demand_pages(), 1);
    // Nothing cached yet: one render claim for the whole group.
    assert!(cache.lookup("/blog/new", now).is_none());
    let regen = cache.claim_render("/blog/new.rsc").expect("claimed");
    assert!(
        cache.claim_render("/blog/new").is_none(),
        "one render per group"
    );
    assert_eq!(regen.parent_output_id, "/blog/[slug]");
    assert_eq!(
        regen.group_pathnames,
        vec![
            "/blog/new".to_owned(),
            "/blog/new.rsc".to_owned(),
            "/blog/new.segments/_tree.segment.rsc".to_owned()
        ]
    );
    assert!(cache.is_regenerating("/blog/new"));
    let html = rendered(
        "<p>1</p>",
        "text/html; charset=utf-8",
        "s-maxage=2, stale-while-revalidate=10",
        "_N_T_/blog/new",
    );
    let rsc = rendered(
        "0:1",
        "text/x-component",
        "s-maxage=2, stale-while-revalidate=10",
        "_N_T_/blog/new",
    );
    cache.store_group(
        vec![("/blog/new.rsc".into(), rsc), ("/blog/new".into(), html)],
        now,
    );
    assert!(
        !cache.is_regenerating("/blog/new"),
        "storing ends the claim"
    );
    let hit = cache.lookup("/blog/new", now).expect("cached");
    assert_eq!(hit.state, CacheState::Fresh);
    // Stale after 2 s: one regeneration of the page's own group.
    let later = now + Duration::from_secs(3);
    let stale = cache.lookup("/blog/new", later).expect("cached");
    assert_eq!(stale.state, CacheState::Stale);
    assert!(stale.regeneration.is_some());
    assert!(
        cache
            .lookup("/blog/new.rsc", later)
            .expect("rsc")
            .regeneration
            .is_none()
    );
    // Another page of the route is a group of its own.
    assert!(cache.register_on_demand("/blog/other", "/blog/[slug]"));
    assert!(cache.claim_render("/blog/other").is_some());
    // A path invalidation covers the page's variants.
    cache.invalidate_path_at("/blog/new", later);
}

#[test]
fn a_fallback_true_page_names_its_shell_for_html_only() {
    let (_dir, cache) = isr_cache();
    assert!(cache.register_on_demand("/fb/new", "/fb/[slug]"));
    let data = format!("/_next/data/{BUILD_ID}/fb/new.json");
    assert!(cache.register_on_demand(&data, "/fb/[slug]"));
    assert_eq!(
        cache.fallback_shell_for("/fb/new").as_deref(),
        Some("/fb/[slug]")
    );
    // The data JSON renders the page; a blocking route has no shell.
    assert_eq!(cache.fallback_shell_for(&data), None);
    assert!(cache.register_on_demand("/blog/new", "/blog/[slug]"));
    assert_eq!(cache.fallback_shell_for("/blog/new"), None);
    assert_eq!(cache.fallback_shell_for("/isr"), None);
    // HTML and data are one group (rendered once, stored together).
    let claim = cache.claim_render("/fb/new").expect("claim");
    assert!(claim.group_pathnames.contains(&data));
    assert!(cache.is_regenerating(&data));
    cache.regeneration_failed("/fb/new");
}

#[test]
fn the_on_demand_registry_is_bounded() {
    let (_dir, cache) = isr_cache();
    cache.set_on_demand_limit(100);
    for i in 0..1000 {
        assert!(cache.register_on_demand(&format!("/blog/p{i}"), "/blog/[slug]"));
        assert!(cache.register_on_demand(&format!("/blog/p{i}.rsc"), "/blog/[slug]"));
    }
    assert_eq!(cache.on_demand_pages(), 100);
    // The oldest were dropped (routes and groups): registered again on their next request.
    assert!(!cache.is_prerender("/blog/p0"));
    assert!(!cache.is_prerender("/blog/p0.rsc"));
    assert!(cache.is_prerender("/blog/p999.rsc"));
    assert!(cache.register_on_demand("/blog/p0", "/blog/[slug]"));
    assert_eq!(cache.on_demand_pages(), 100);
    // Manifest prerenders are never dropped.
    assert!(cache.is_prerender("/blog/hello"));
}

// ---------------------------------------------------------------- real HTTP

struct Server {
    addr: SocketAddr,
    cache: Arc<PrerenderCache>,
    client: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A server shaped like Ferry's: lookup → respond; a stale hit that claims the regeneration
/// "renders" in the background (a counter stands in for the Node worker) and stores the result.
async fn serve(isr_revalidate: u64) -> Server {
    let (dir, m) = bundle(isr_revalidate);
    let cache = Arc::new(PrerenderCache::new(dir.path(), &m).expect("cache"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let c = cache.clone();
    let renders = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (cache, renders) = (c.clone(), renders.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (cache, renders) = (cache.clone(), renders.clone());
                    async move {
                        let path = req.uri().path().to_owned();
                        let res = match cache.lookup(&path, SystemTime::now()) {
                            Some(hit) => {
                                if let Some(regen) = hit.regeneration.clone() {
                                    let cache = cache.clone();
                                    tokio::spawn(async move {
                                        let n = renders
                                            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                                            + 1;
                                        let body = format!("<p id=\"generated-at\">render {n}</p>");
                                        let cc = format!(
                                            "s-maxage={isr_revalidate}, stale-while-revalidate={}",
                                            31_536_000 - isr_revalidate
                                        );
                                        cache.store(
                                            &regen.pathname,
                                            rendered(
                                                &body,
                                                "text/html; charset=utf-8",
                                                &cc,
                                                "_N_T_/isr",
                                            ),
                                            SystemTime::now(),
                                        );
                                    });
                                }
                                cache.respond(&hit, req.method(), req.headers())
                            }
                            None => ferry_http::text_response(StatusCode::NOT_FOUND, "miss"),
                        };
                        Ok::<_, std::convert::Infallible>(res)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    Server {
        addr,
        cache,
        client,
        task,
        _dir: dir,
    }
}

impl Server {
    async fn get(&self, method: Method, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut rb = self
            .client
            .request(method, format!("http://{}{path}", self.addr));
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        rb.send().await.expect("request")
    }
}

fn hv<'a>(res: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    res.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn static_page_headers_match_next_start() {
    let s = serve(5).await;
    let res = s.get(Method::GET, "/", &[]).await;
    // Measured from next start 16.4.6: GET / on the showcase.
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        hv(&res, "vary"),
        Some(format!("{RSC_VARY}, Accept-Encoding").as_str())
    );
    assert_eq!(hv(&res, "x-nextjs-cache"), Some("HIT"));
    assert_eq!(hv(&res, "x-nextjs-prerender"), Some("1"));
    assert_eq!(hv(&res, "x-nextjs-stale-time"), Some("300"));
    assert_eq!(hv(&res, "x-powered-by"), Some("Next.js"));
    assert_eq!(hv(&res, "cache-control"), Some("s-maxage=31536000"));
    assert_eq!(hv(&res, "etag"), Some("\"6vdg5di8514v3\""));
    assert_eq!(hv(&res, "content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(hv(&res, "content-length"), Some("6319"));
    assert!(hv(&res, "x-next-cache-tags").is_none());
    let body = res.bytes().await.expect("body");
    assert_eq!(body.len(), 6319);

    let hello = s.get(Method::GET, "/blog/hello", &[]).await;
    assert_eq!(hv(&hello, "etag"), Some("\"12z0jsqxkzp5c5\""));
    assert_eq!(hv(&hello, "content-length"), Some("6933"));

    // HEAD: same headers, no body.
    let head = s.get(Method::HEAD, "/", &[]).await;
    assert_eq!(hv(&head, "content-length"), Some("6319"));
    assert_eq!(hv(&head, "etag"), Some("\"6vdg5di8514v3\""));
    assert!(head.bytes().await.expect("body").is_empty());

    // If-None-Match (strong or weak form): 304 without Content-Type.
    for inm in ["\"6vdg5di8514v3\"", "W/\"6vdg5di8514v3\""] {
        let res = s.get(Method::GET, "/", &[("if-none-match", inm)]).await;
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED, "{inm}");
        assert_eq!(hv(&res, "etag"), Some("\"6vdg5di8514v3\""));
        assert_eq!(hv(&res, "cache-control"), Some("s-maxage=31536000"));
        assert_eq!(hv(&res, "x-nextjs-cache"), Some("HIT"));
        assert!(hv(&res, "content-type").is_none());
        assert!(res.bytes().await.expect("body").is_empty());
    }
    // Range is ignored on prerenders (measured: 200).
    let res = s.get(Method::GET, "/", &[("range", "bytes=0-9")]).await;
    assert_eq!(res.status(), StatusCode::OK);

    // Compressed once, same strong ETag (next start keeps it too).
    for (ae, enc) in [("gzip", "gzip"), ("gzip, deflate, br", "br")] {
        let res = s.get(Method::GET, "/", &[("accept-encoding", ae)]).await;
        assert_eq!(hv(&res, "content-encoding"), Some(enc));
        assert_eq!(hv(&res, "etag"), Some("\"6vdg5di8514v3\""));
        let len: usize = hv(&res, "content-length")
            .expect("len")
            .parse()
            .expect("num");
        let got = res.bytes().await.expect("body");
        assert_eq!(got.len(), len);
        assert!(len < 6319 / 2, "{enc} compresses");
    }
}

#[tokio::test]
async fn rsc_and_pages_headers_match_next_start() {
    let s = serve(5).await;
    // Measured: `/isr?_rsc` with `rsc: 1` → text/x-component, no ETag, no X-Powered-By.
    let res = s.get(Method::GET, "/isr.rsc", &[]).await;
    assert_eq!(hv(&res, "content-type"), Some("text/x-component"));
    assert_eq!(
        hv(&res, "vary"),
        Some(format!("{RSC_VARY}, Accept-Encoding").as_str())
    );
    assert_eq!(
        hv(&res, "cache-control"),
        Some("s-maxage=5, stale-while-revalidate=31535995")
    );
    assert!(hv(&res, "etag").is_none());
    assert!(hv(&res, "x-powered-by").is_none());
    assert_eq!(hv(&res, "x-nextjs-prerender"), Some("1"));

    // Measured: pages-router ISR HTML.
    let res = s.get(Method::GET, "/legacy/static", &[]).await;
    assert_eq!(hv(&res, "vary"), Some("Accept-Encoding"));
    assert_eq!(hv(&res, "x-powered-by"), Some("Next.js"));
    assert_eq!(
        hv(&res, "cache-control"),
        Some("s-maxage=10, stale-while-revalidate=31535990")
    );
    assert_eq!(hv(&res, "etag"), Some("\"5wvjnwyk2117u\""));
    assert!(hv(&res, "x-nextjs-prerender").is_none());

    // Measured: its data route.
    let res = s
        .get(
            Method::GET,
            &format!("/_next/data/{BUILD_ID}/legacy/static.json"),
            &[],
        )
        .await;
    assert_eq!(hv(&res, "x-nextjs-matched-path"), Some("/legacy/static"));
    assert_eq!(
        hv(&res, "content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(hv(&res, "vary"), Some("Accept-Encoding"));
    assert_eq!(hv(&res, "etag"), Some("\"2936fx4ou81v\""));
    assert!(hv(&res, "x-powered-by").is_none());
    assert_eq!(
        hv(&res, "cache-control"),
        Some("s-maxage=10, stale-while-revalidate=31535990")
    );
}

#[tokio::test]
async fn isr_over_http_stale_then_hit_with_new_content() {
    // Like the measured next start sequence on /isr (revalidate shortened to 1 s):
    // HIT → (revalidate passes) STALE with the old body → HIT with the new body and ETag.
    let s = serve(1).await;
    let first = s.get(Method::GET, "/isr", &[]).await;
    // Seeds are dated by their file mtime, which is "now" for a fresh copy: HIT.
    assert_eq!(hv(&first, "x-nextjs-cache"), Some("HIT"));
    assert_eq!(
        hv(&first, "cache-control"),
        Some("s-maxage=1, stale-while-revalidate=31535999")
    );
    let old_etag = hv(&first, "etag").expect("etag").to_owned();
    let old_body = first.bytes().await.expect("body");

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let stale = s.get(Method::GET, "/isr", &[]).await;
    assert_eq!(hv(&stale, "x-nextjs-cache"), Some("STALE"));
    assert_eq!(hv(&stale, "etag"), Some(old_etag.as_str()));
    assert_eq!(stale.bytes().await.expect("body"), old_body);

    // The background regeneration lands shortly.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let res = s.get(Method::GET, "/isr", &[]).await;
        if hv(&res, "x-nextjs-cache") == Some("HIT") {
            assert_ne!(hv(&res, "etag"), Some(old_etag.as_str()));
            let body = res.bytes().await.expect("body");
            assert_eq!(&body[..], b"<p id=\"generated-at\">render 1</p>");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "regeneration never stored"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(s.cache.lookup("/isr", SystemTime::now()).is_some());
}

#[test]
fn expiring_tags_forbids_serving_stale() {
    let (_dir, cache) = isr_cache();
    let now = t0() + Duration::from_secs(1);
    cache.expire_tags_at(&["_N_T_/isr/page".to_owned()], now);
    for p in ["/isr", "/isr.rsc"] {
        assert_eq!(
            cache.lookup(p, now).expect("hit").state,
            CacheState::Expired,
            "{p}"
        );
    }
    assert_eq!(
        cache.lookup("/", now).expect("hit").state,
        CacheState::Fresh
    );
    // Rendered after the expiry: fresh again.
    let later = now + Duration::from_secs(1);
    cache.store(
        "/isr",
        rendered(
            "x",
            "text/html",
            "s-maxage=5, stale-while-revalidate=9",
            "_N_T_/isr/page",
        ),
        later,
    );
    assert_eq!(
        cache.lookup("/isr", later).expect("hit").state,
        CacheState::Fresh
    );
}

/// next start sends no `x-next-cache-tags` with a render outside minimal mode: a regenerated
/// entry keeps its seed's tags, so `revalidatePath` still reaches it after the first render.
#[test]
fn regenerated_entries_keep_their_tags() {
    let (_dir, cache) = isr_cache();
    let now = t0() + Duration::from_secs(1);
    let mut untagged = rendered("x", "text/html", "s-maxage=5, stale-while-revalidate=9", "");
    untagged.headers.remove("x-next-cache-tags");
    cache.store("/isr", untagged, now);
    assert_eq!(
        cache.lookup("/isr", now).expect("hit").state,
        CacheState::Fresh
    );
    let later = now + Duration::from_secs(1);
    cache.expire_tags_at(&["_N_T_/isr/page".to_owned()], later);
    assert_eq!(
        cache.lookup("/isr", later).expect("hit").state,
        CacheState::Expired
    );
}

/// A request waiting for the render in flight (`lookup_after_regeneration`, 5 s at most).
fn spawn_waiter(
    cache: &Arc<PrerenderCache>,
    pathname: &'static str,
) -> tokio::task::JoinHandle<Option<CacheHit>> {
    let cache = cache.clone();
    tokio::spawn(async move {
        cache
            .lookup_after_regeneration(pathname, Duration::from_secs(5))
            .await
    })
}

/// An expired lookup that finds the group's render claimed waits for that render instead of
/// rendering beside it (next start's response cache shares one render per key): it gets the
/// fresh entry when the render stored one, and the claim when it did not.
#[tokio::test]
async fn expired_lookups_wait_for_the_render_in_flight() {
    let (_dir, cache) = isr_cache();
    let cache = Arc::new(cache);
    let page = |body: &str| {
        rendered(
            body,
            "text/html",
            "s-maxage=5, stale-while-revalidate=9",
            "_N_T_/isr/page",
        )
    };
    // An entry from a second ago, expired now (revalidatePath).
    let before = SystemTime::now() - Duration::from_secs(1);
    cache.store("/isr", page("old"), before);
    cache.expire_tags_at(&["_N_T_/isr/page".to_owned()], SystemTime::now());
    let first = cache.lookup("/isr", SystemTime::now()).expect("hit");
    assert_eq!(first.state, CacheState::Expired);
    let claim = first
        .regeneration
        .expect("the first expired lookup claims the render");
    let second = cache.lookup("/isr", SystemTime::now()).expect("hit");
    assert!(second.regeneration.is_none() && cache.is_regenerating("/isr"));

    // The render in flight stores a fresh entry: the waiter answers with it.
    let waiter = spawn_waiter(&cache, "/isr");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished(), "the waiter did not wait");
    cache.store(&claim.pathname, page("new"), SystemTime::now());
    let hit = waiter.await.expect("join").expect("hit");
    assert_eq!(hit.state, CacheState::Fresh);
    assert_eq!(&hit.entry.body[..], b"new");
    assert!(hit.regeneration.is_none());

    // Expired again; the render fails: the waiter gets the claim and renders itself.
    cache.expire_tags_at(&["_N_T_/isr/page".to_owned()], SystemTime::now());
    let claim = cache
        .lookup("/isr", SystemTime::now())
        .and_then(|h| h.regeneration)
        .expect("claimed");
    let waiter = spawn_waiter(&cache, "/isr");
    tokio::time::sleep(Duration::from_millis(50)).await;
    cache.regeneration_failed(&claim.pathname);
    let hit = waiter.await.expect("join").expect("hit");
    assert_eq!(hit.state, CacheState::Expired);
    assert!(hit.regeneration.is_some(), "the waiter claims the render");

    // Still in flight when the bound passes: None (the caller renders without the cache).
    let other = cache.lookup("/isr", SystemTime::now()).expect("hit");
    assert!(other.regeneration.is_none());
    assert!(
        cache
            .lookup_after_regeneration("/isr", Duration::from_millis(50))
            .await
            .is_none()
    );
}

/// A PPR shell and its postponed state are one pair in the cache: the seed carries the build's
/// state, a regeneration stores its own state with its shell, and the pair survives a restart on
/// the disk store.
#[test]
fn ppr_shells_keep_their_postponed_state_through_regeneration_and_restart() {
    let (dir, m) = bundle(5);
    set_seed_time(dir.path(), "isr.html", t0());
    let mut m = serde_json::to_value(&m).expect("manifest json");
    for p in m["prerenders"].as_array_mut().expect("prerenders") {
        if p["pathname"] == "/isr" {
            p["seed"]["postponedState"] = serde_json::json!("build-state");
            p["renderingMode"] = serde_json::json!("PARTIALLY_STATIC");
        }
    }
    let m = Manifest::from_json(&m.to_string(), std::path::Path::new("m")).expect("manifest");
    let store_dir = tempfile::tempdir().expect("tempdir");
    let open = || {
        let store = ferry_prerender::DiskStore::open(store_dir.path(), 1 << 24, 1 << 24)
            .expect("disk store");
        PrerenderCache::with_store(dir.path(), &m, Arc::new(store)).expect("cache")
    };
    let cache = open();
    let now = t0() + Duration::from_secs(10);
    let hit = cache.lookup("/isr", now).expect("seed");
    assert_eq!(hit.entry.postponed.as_deref(), Some("build-state"));
    assert_eq!(hit.state, CacheState::Stale);
    assert!(
        hit.regeneration.is_some(),
        "the stale shell claims its regeneration"
    );
    // Not a PPR entry: no state.
    let rsc = cache.lookup("/isr.rsc", now).expect("rsc seed");
    assert!(rsc.entry.postponed.is_none());

    let mut shell = rendered(
        "<html>new shell</html>",
        "text/html; charset=utf-8",
        "s-maxage=5, stale-while-revalidate=100",
        "_N_T_/isr",
    );
    shell.postponed = Some(Arc::from("new-state"));
    cache.store_group(vec![("/isr".to_owned(), shell)], now);
    let hit = cache.lookup("/isr", now).expect("regenerated");
    assert_eq!(hit.state, CacheState::Fresh);
    assert_eq!(&hit.entry.body[..], b"<html>new shell</html>");
    assert_eq!(hit.entry.postponed.as_deref(), Some("new-state"));
    drop(cache);

    // A restart reads the pair back from disk (the older seed does not replace it).
    let cache = open();
    let entry = cache.cache_store().get("/isr").or_else(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(cache.fetch("/isr"))
    });
    let entry = entry.expect("entry after restart");
    assert_eq!(&entry.body[..], b"<html>new shell</html>");
    assert_eq!(entry.postponed.as_deref(), Some("new-state"));
}
