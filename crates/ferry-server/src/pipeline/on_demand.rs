//! On-demand ISR: pages of a dynamic route that the build did not prerender (`/blog/new` of
//! `/blog/[slug]` with `generateStaticParams` and `dynamicParams`, or a pages-router route with
//! `fallback: 'blocking'`). next start renders such a page on its first request (`x-nextjs-cache:
//! MISS`, the page's ISR `Cache-Control`), caches it, and from then on treats it like a
//! build-time prerender (`HIT`, `STALE` + one background regeneration, `revalidatePath`).
//! Ferry does the same in its own cache (shared by every worker and, on Redis, every
//! instance): [`register`] makes the page a prerender of its route's group, a miss is rendered
//! once ([`render_miss`]; concurrent requests share the render) and stored with every variant
//! of the group, and everything after that is `prerendered::serve`'s usual path.

use std::sync::Arc;
use std::time::SystemTime;

use ferry_http::Body;
use ferry_prerender::Rendered;
use http::{HeaderMap, HeaderValue, Response};

use super::RequestCtx;
use super::prerendered::{REVALIDATE_WAIT, cache_write, render_group};
use crate::App;

/// Makes `key` (the request's cache key, see `prerendered::cache_key`) an on-demand prerender of
/// the output's dynamic route, if that route renders unknown params on demand. `true`: `key` is
/// a prerender now.
pub fn register(app: &App, output: &ferry_router::Output, key: &str) -> bool {
    let Some(template) = template_page(app, &output.pathname) else {
        return false;
    };
    app.prerenders.register_on_demand(key, &template)
}

/// The HTML template prerender pathname of an output (`/blog/[slug].rsc`,
/// `/blog/[slug].segments/…`, `/_next/data/<id>/legacy/[slug].json` → `/blog/[slug]`,
/// `/legacy/[slug]`); `None` for a concrete (non-dynamic) output.
fn template_page(app: &App, pathname: &str) -> Option<String> {
    if !pathname.contains('[') {
        return None;
    }
    if let Some(page) = super::functions::data_request_page(app, pathname) {
        return Some(format!("{}{page}", app.manifest.config.base_path));
    }
    let base = match pathname.find(".segments/") {
        Some(i) => &pathname[..i],
        None => pathname.strip_suffix(".rsc").unwrap_or(pathname),
    };
    Some(base.to_owned())
}

/// Nothing cached for the on-demand page `key` yet: render its group once (a request arriving
/// meanwhile waits for that render), store it, answer from the stored entry with `label`
/// (`MISS`, or `REVALIDATED` for `res.revalidate`). `None`: the render was not cacheable (a
/// dynamic render, a redirect, an error): the worker answers the request itself.
pub async fn render_miss(
    app: &Arc<App>,
    ctx: &RequestCtx,
    key: &str,
    label: &'static str,
) -> Option<Response<Body>> {
    let entry = render_miss_entry(app, ctx, key).await?;
    Some(
        app.prerenders
            .respond_with_label(&entry, label, &ctx.parts.method, &ctx.parts.headers),
    )
}

/// [`render_miss`]'s render: the entry stored for `key` by this request's render of the group,
/// or by the render in flight it shared. `None`: nothing cacheable was stored.
pub async fn render_miss_entry(
    app: &Arc<App>,
    ctx: &RequestCtx,
    key: &str,
) -> Option<Arc<ferry_prerender::CachedEntry>> {
    let Some(regen) = app.prerenders.claim_render(key) else {
        // Another request renders the group: share its result, as next start's response cache
        // does.
        let hit = app
            .prerenders
            .lookup_after_regeneration(key, REVALIDATE_WAIT)
            .await?;
        if let Some(claim) = &hit.regeneration {
            app.prerenders.regeneration_failed(&claim.pathname);
        }
        return Some(hit.entry);
    };
    // Rendered with the request's query, as next start renders a missing entry.
    render_group(app.clone(), regen, ctx.parts.uri.query().map(str::to_owned)).await;
    let fresh = app
        .prerenders
        .lookup_or_fetch(key, SystemTime::now())
        .await?;
    if let Some(claim) = &fresh.regeneration {
        app.prerenders.regeneration_failed(&claim.pathname);
    }
    Some(fresh.entry)
}

/// One render of the on-demand app page of `regen` with `onCacheEntry` (the bridge's
/// `ferryCacheEntry`): next start's APP_PAGE cache entry (HTML, RSC payload, segment prefetches,
/// headers, cache control) from one render, so HTML and RSC of the page always match. Stored
/// together by the caller; an uncacheable result (revalidate 0) stores nothing.
pub(super) async fn render_app_group(
    app: &Arc<App>,
    function: &crate::app::Function,
    regen: &ferry_prerender::Regeneration,
    query: Option<&str>,
) -> Result<Vec<(String, Rendered)>, String> {
    let rsc = &app.manifest.routing.rsc;
    let html = regen
        .group_pathnames
        .iter()
        .find(|p| !p.ends_with(&rsc.suffix) && !p.contains(&rsc.prefetch_segment_dir_suffix))
        .ok_or("the group has no HTML page")?
        .clone();
    let mut inv = super::prerendered::render_invocation(
        app,
        function,
        &html,
        regen.bypass_token.as_deref(),
        query,
    )?;
    owned_by_ferry(&mut inv);
    let frame = super::prerendered::render_cache_entry(app, inv).await?;
    // A partially static route's page: its shell and the postponed state of the same render are
    // one pair. Only a shell is stored: a render that did not postpone, `notFound()` or a
    // redirect is left to the worker, which answers the request as next start would (it renders
    // such a page per request).
    let postponed = if app.prerenders.on_demand_shell(&html).is_some() {
        if frame.status != http::StatusCode::OK {
            return Err(format!("the PPR page rendered {}", frame.status));
        }
        let state = frame
            .postponed
            .clone()
            .ok_or("the PPR page's render has no postponed state")?;
        Some(Arc::<str>::from(state))
    } else {
        None
    };
    let vary = HeaderValue::from_str(&rsc.vary_header).ok();
    // next start's headers for an on-demand page (measured, 16.4.6): those of a build-time
    // prerender of the route (`Vary` with the router headers, `x-nextjs-prerender: 1`) plus the
    // entry's own (`x-nextjs-stale-time`, the cache tags). A PPR shell rendered at runtime is
    // replayed with the render's own headers: no `x-nextjs-prerender` (measured on
    // `/posts/three` of tests/fixtures/ppr-app; a build-time shell's stored headers have it, so
    // Ferry sends it for `/posts/one`, as next start does). Its RSC prefetch and segment
    // prefetches do carry it.
    let ppr = postponed.is_some();
    let headers = |content_type: &'static str, segment: bool| {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(content_type),
        );
        if let Some(v) = &vary {
            h.insert(http::header::VARY, v.clone());
        }
        for (name, value) in &frame.headers {
            h.append(name.clone(), value.clone());
        }
        if !(ppr && content_type.starts_with("text/html")) {
            h.insert("x-nextjs-prerender", HeaderValue::from_static("1"));
        }
        if segment
            && let Ok(name) = http::HeaderName::from_bytes(rsc.did_postpone_header.as_bytes())
        {
            h.insert(name, HeaderValue::from_static("2"));
        }
        h
    };
    let rendered = |headers: HeaderMap, body: bytes::Bytes| frame.rendered(headers, body);
    let mut shell = rendered(
        headers("text/html; charset=utf-8", false),
        frame.html.clone(),
    );
    shell.postponed = postponed;
    let mut results = vec![(html.clone(), shell)];
    let base = if html == "/" { "/index" } else { html.as_str() };
    if let Some(data) = &frame.rsc {
        let mut h = headers("text/x-component", false);
        if ppr && let Ok(name) = http::HeaderName::from_bytes(rsc.did_postpone_header.as_bytes()) {
            // A PPR page's RSC entry answers prefetches only (`prerendered::serve`), with
            // next start's `x-nextjs-postponed: 1` (the render postponed; not a dynamic
            // request). An RSC navigation is a dynamic render by the worker.
            h.insert(name, HeaderValue::from_static("1"));
        }
        results.push((format!("{base}{}", rsc.suffix), rendered(h, data.clone())));
    }
    for (segment, data) in &frame.segments {
        let pathname = format!(
            "{base}{}{segment}{}",
            rsc.prefetch_segment_dir_suffix, rsc.prefetch_segment_suffix
        );
        results.push((
            pathname,
            rendered(headers("text/x-component", true), data.clone()),
        ));
    }
    Ok(results)
}

/// Marks a render Ferry stores itself (js/bridge/bridge.cjs `ferryOwnedRender`): the worker's
/// Next cache keeps no copy of the page.
fn owned_by_ferry(inv: &mut ferry_workers::Invocation) {
    inv.meta
        .extra
        .insert("ferryOwnedEntry".into(), serde_json::Value::Bool(true));
}

/// One render of an on-demand pages-router page for both its variants: its `_next/data` JSON
/// is rendered with meta `ferryPagesEntry`, and the bridge answers with next's PAGES cache entry
/// of that render (js/bridge/bridge.cjs `sendPagesEntry`): the HTML and the data JSON next
/// start stores together from one render, so they always match. The data JSON keeps the
/// handler's own headers; the HTML gets the entry's. `Ok(None)`: the group has no data JSON
/// (render its variants one by one). `notFound` is cached like next start caches it (see
/// below). An answer without an entry (a redirect, an uncacheable render) is an error: nothing
/// is stored, the worker answers the request.
pub(super) async fn render_pages_group(
    app: &App,
    function: &crate::app::Function,
    regen: &ferry_prerender::Regeneration,
    query: Option<&str>,
) -> Result<Option<Vec<(String, Rendered)>>, String> {
    let is_data = |p: &String| super::functions::data_request_page(app, p).is_some();
    let (Some(data), Some(html)) = (
        regen.group_pathnames.iter().find(|p| is_data(p)),
        regen.group_pathnames.iter().find(|p| !is_data(p)),
    ) else {
        return Ok(None);
    };
    let mut inv = super::prerendered::render_invocation(
        app,
        function,
        data,
        regen.bypass_token.as_deref(),
        query,
    )?;
    owned_by_ferry(&mut inv);
    inv.meta
        .extra
        .insert("ferryPagesEntry".into(), serde_json::Value::Bool(true));
    let (mut parts, bytes) = super::prerendered::dispatch_whole(app, inv).await?;
    if parts.headers.remove("x-ferry-pages-entry").is_none() {
        return Err(format!(
            "the page answered {} without a cache entry",
            parts.status
        ));
    }
    let entry = PagesEntry::parse(&bytes)?;
    let data_rendered = Rendered::from_response(parts.status, parts.headers, entry.data);
    if !data_rendered.is_cacheable() {
        return Err("the render is not cacheable".into());
    }
    if entry.not_found {
        // `getStaticProps` returned `notFound`: next start caches it for both variants (one
        // response-cache entry). The data JSON is the handler's `{"notFound":true}` answer; the
        // HTML is the 404 page, rendered when served (see `prerendered::not_found_page`).
        let html_rendered = Rendered {
            status: http::StatusCode::NOT_FOUND,
            headers: super::prerendered::not_found_marker(),
            body: bytes::Bytes::new(),
            revalidate: data_rendered.revalidate,
            expire: data_rendered.expire,
            postponed: None,
        };
        return Ok(Some(vec![
            (html.clone(), html_rendered),
            (data.clone(), data_rendered),
        ]));
    }
    let mut headers = entry.headers;
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    let html_rendered = Rendered {
        status: entry.status,
        headers,
        body: entry.html,
        revalidate: data_rendered.revalidate,
        expire: data_rendered.expire,
        postponed: None,
    };
    Ok(Some(vec![
        (html.clone(), html_rendered),
        (data.clone(), data_rendered),
    ]))
}

/// The bridge's answer to a render with `ferryPagesEntry` (js/bridge/bridge.cjs
/// `sendPagesEntry`): one JSON line (status, headers, HTML length, `notFound`), the HTML, the
/// data JSON.
#[derive(Debug)]
struct PagesEntry {
    /// `getStaticProps` returned `notFound` (no HTML; the data JSON is `{"notFound":true}`).
    not_found: bool,
    status: http::StatusCode,
    headers: HeaderMap,
    html: bytes::Bytes,
    data: bytes::Bytes,
}

impl PagesEntry {
    fn parse(bytes: &bytes::Bytes) -> Result<Self, String> {
        let nl = bytes
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("pages entry frame without a header line")?;
        let meta: serde_json::Value =
            serde_json::from_slice(&bytes[..nl]).map_err(|e| format!("pages entry frame: {e}"))?;
        let len = meta["html"]
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or("pages entry frame without an html length")?;
        let rest = bytes.slice(nl + 1..);
        if len > rest.len() {
            return Err("truncated pages entry frame".into());
        }
        let (status, headers) = super::prerendered::frame_status_and_headers(&meta);
        Ok(PagesEntry {
            not_found: meta["notFound"].as_bool() == Some(true),
            status,
            headers,
            html: rest.slice(..len),
            data: rest.slice(len..),
        })
    }
}

/// The first HTML request of a `fallback: true` page nothing is cached for (`shell`: the route's
/// template, whose entry is the build's fallback shell), as next start answers it (pages
/// handler, `isIsrFallback`; measured on 16.4.6): not a render but the fallback shell, `200`,
/// `x-nextjs-cache: MISS`, `Cache-Control: private, no-cache, no-store, max-age=0,
/// must-revalidate`, nothing cached; the client then fetches the data JSON, which renders the
/// page. While a render of the page is in flight (its data JSON asked first), next start's
/// response cache shares it with the HTML request: the full page, still `MISS` with the
/// fallback's Cache-Control. `None`: no shell (the worker answers).
pub async fn fallback_shell(
    app: &Arc<App>,
    ctx: &RequestCtx,
    key: &str,
    shell: &str,
) -> Option<Response<Body>> {
    let (method, headers) = (&ctx.parts.method, &ctx.parts.headers);
    let mut res = if app.prerenders.is_regenerating(key)
        && let Some(hit) = app
            .prerenders
            .lookup_after_regeneration(key, REVALIDATE_WAIT)
            .await
    {
        if let Some(claim) = &hit.regeneration {
            app.prerenders.regeneration_failed(&claim.pathname);
        }
        app.prerenders
            .respond_with_label(&hit.entry, "MISS", method, headers)
    } else {
        let entry = app.prerenders.fetch(shell).await?;
        let mut res = app
            .prerenders
            .respond_with_label(&entry, "MISS", method, headers);
        // The seed's router `Vary` is not sent with the shell (measured).
        res.headers_mut().insert(
            http::header::VARY,
            HeaderValue::from_static("Accept-Encoding"),
        );
        res
    };
    res.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache, no-store, max-age=0, must-revalidate"),
    );
    Some(res)
}

/// Whether the request comes from a bot (next's `isBot` on the `User-Agent`): a bot gets a
/// `fallback: true` page rendered (blocking), not the fallback shell.
pub fn from_bot(ctx: &RequestCtx) -> bool {
    ctx.parts
        .headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(ferry_prerender::is_bot)
}

/// One render of a pages-router variant (`pathname`: the page or its data JSON) of an
/// on-demand page, with the revalidation token, collected in full.
pub(super) async fn render_pages_variant(
    app: &App,
    function: &crate::app::Function,
    pathname: &str,
    token: Option<&str>,
    query: Option<&str>,
) -> Result<Rendered, String> {
    let mut inv = super::prerendered::render_invocation(app, function, pathname, token, query)?;
    owned_by_ferry(&mut inv);
    let (parts, bytes) = super::prerendered::dispatch_whole(app, inv).await?;
    if parts.status.is_server_error() {
        return Err(format!("status {}", parts.status));
    }
    Ok(Rendered::from_response(parts.status, parts.headers, bytes))
}

/// Stores the results of an on-demand page's render (registering segment variants the render
/// produced), releasing the group's claim.
pub(super) async fn store(
    app: &Arc<App>,
    regen: &ferry_prerender::Regeneration,
    template: String,
    results: Vec<(String, Rendered)>,
) {
    for (pathname, _) in &results {
        app.prerenders.register_on_demand(pathname, &template);
    }
    if results.is_empty() {
        app.prerenders.regeneration_failed(&regen.pathname);
        return;
    }
    let mut results = results;
    // The looked-up pathname first: store_group releases the group's claim by it.
    results.sort_by_key(|(p, _)| p != &regen.pathname);
    cache_write(app, move |c| c.store_group(results, SystemTime::now())).await;
}

/// The `x-nextjs-matched-path` next start sends with a dynamic page's `_next/data` JSON: the
/// route (`/legacy/[slug]`), also for a page rendered on demand.
pub(super) fn name_data_route(app: &App, template: &str, pathname: &str, rendered: &mut Rendered) {
    if super::functions::data_request_page(app, pathname).is_none()
        || rendered.headers.contains_key("x-nextjs-matched-path")
    {
        return;
    }
    let page = template
        .strip_prefix(app.manifest.config.base_path.as_str())
        .unwrap_or(template);
    if let Ok(v) = HeaderValue::from_str(page) {
        rendered.headers.insert("x-nextjs-matched-path", v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_entry_frames_split_html_and_data() {
        let frame = |meta: serde_json::Value, rest: &str| {
            bytes::Bytes::from(format!("{meta}\n{rest}").into_bytes())
        };
        let meta = serde_json::json!({"status": 200, "headers": {"x-a": "1", "x-b": ["2", "3"]}, "html": 5});
        let e = PagesEntry::parse(&frame(meta, "<p/>!{\"pageProps\":{}}")).expect("frame");
        assert_eq!(&e.html[..], b"<p/>!");
        assert_eq!(&e.data[..], b"{\"pageProps\":{}}");
        assert_eq!(e.status, http::StatusCode::OK);
        assert_eq!(e.headers.get_all("x-b").iter().count(), 2);
        // An HTML length past the end, or no header line: an error, nothing stored.
        assert!(PagesEntry::parse(&frame(serde_json::json!({"html": 50}), "short")).is_err());
        assert!(PagesEntry::parse(&bytes::Bytes::from_static(b"no newline")).is_err());
        assert!(PagesEntry::parse(&frame(serde_json::json!({}), "x")).is_err());
        assert!(!e.not_found);
        // `notFound`: no HTML, the data JSON is next's own answer.
        let meta = serde_json::json!({"status": 404, "headers": {}, "html": 0, "notFound": true});
        let e = PagesEntry::parse(&frame(meta, r#"{"notFound":true}"#)).expect("frame");
        assert!(e.not_found && e.html.is_empty());
        assert_eq!(&e.data[..], br#"{"notFound":true}"#);
    }
}
