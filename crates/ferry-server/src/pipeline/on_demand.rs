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
    let answer = |entry: &ferry_prerender::CachedEntry| {
        app.prerenders
            .respond_with_label(entry, label, &ctx.parts.method, &ctx.parts.headers)
    };
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
        return Some(answer(&hit.entry));
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
    Some(answer(&fresh.entry))
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
    let vary = HeaderValue::from_str(&rsc.vary_header).ok();
    // next start's headers for an on-demand page (measured, 16.4.6): those of a build-time
    // prerender of the route (`Vary` with the router headers, `x-nextjs-prerender: 1`) plus the
    // entry's own (`x-nextjs-stale-time`, the cache tags).
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
        h.insert("x-nextjs-prerender", HeaderValue::from_static("1"));
        if segment
            && let Ok(name) = http::HeaderName::from_bytes(rsc.did_postpone_header.as_bytes())
        {
            h.insert(name, HeaderValue::from_static("2"));
        }
        h
    };
    let rendered = |headers: HeaderMap, body: bytes::Bytes| frame.rendered(headers, body);
    let mut results = vec![(
        html.clone(),
        rendered(
            headers("text/html; charset=utf-8", false),
            frame.html.clone(),
        ),
    )];
    let base = if html == "/" { "/index" } else { html.as_str() };
    if let Some(data) = &frame.rsc {
        results.push((
            format!("{base}{}", rsc.suffix),
            rendered(headers("text/x-component", false), data.clone()),
        ));
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
