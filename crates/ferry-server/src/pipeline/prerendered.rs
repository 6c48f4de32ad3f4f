//! Prerendered pages (static and ISR) answered from the prerender cache. A stale entry is served
//! at once and its whole group (HTML, RSC, segments, data JSON) regenerated once in the
//! background through a worker; an expired one is rendered before answering.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use ferry_http::Body;
use ferry_prerender::{CacheState, Regeneration, Rendered};
use ferry_workers::Invocation;
use http::{HeaderMap, HeaderValue, Method, Response};
use http_body::Frame;
use http_body_util::{BodyExt, Limited, StreamBody};
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

use super::RequestCtx;
use crate::App;

/// Largest rendered body kept in the cache.
const MAX_RENDER_BYTES: usize = 64 * 1024 * 1024;

/// Marks a cached HTML entry that stands for the 404 page: a pages-router page whose
/// `getStaticProps` returned `notFound` (cached by next start like a page). Never sent.
const NOT_FOUND_MARKER: &str = "x-ferry-not-found";

/// The headers of a cached [`NOT_FOUND_MARKER`] entry.
pub(super) fn not_found_marker() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(NOT_FOUND_MARKER, HeaderValue::from_static("1"));
    h
}

/// Serves the output from the prerender cache when it holds it and the request may use it.
pub async fn serve(
    app: &Arc<App>,
    ctx: &RequestCtx,
    output: &ferry_router::Output,
) -> Option<Response<Body>> {
    let res = serve_cached(app, ctx, output).await?;
    if res.headers().contains_key(NOT_FOUND_MARKER) {
        // A cached `notFound`: next start renders the 404 page with the entry's Cache-Control
        // and cache state.
        return Some(super::functions::not_found_page(app, ctx, output, res.headers(), None).await);
    }
    Some(res)
}

async fn serve_cached(
    app: &Arc<App>,
    ctx: &RequestCtx,
    output: &ferry_router::Output,
) -> Option<Response<Body>> {
    let key = cache_key(output);
    // A page of a dynamic route the build did not prerender becomes one of the route's
    // prerenders here (on-demand ISR), if the route renders unknown params on demand.
    if !app.prerenders.is_prerender(&key) && !super::on_demand::register(app, output, &key) {
        return None;
    }
    // The guard keeps `x-prerender-revalidate` only with the deployment's secret token: this is
    // Next's on-demand revalidation (`res.revalidate`) calling back into the server.
    if ctx.parts.headers.contains_key("x-prerender-revalidate") {
        if app.prerenders.template_of(&key).is_some() && app.prerenders.fetch(&key).await.is_none()
        {
            // A `fallback: true` page nobody rendered yet: next start answers the revalidation
            // with the fallback shell and caches nothing (measured); so does the worker.
            if app.prerenders.fallback_shell_for(&key).is_some() {
                return None;
            }
            // An on-demand page revalidated before anything was cached for it: rendered and
            // stored (an uncacheable render, e.g. `notFound`, is left to the worker, which
            // answers the revalidation itself).
            return super::on_demand::render_miss(app, ctx, &key, "REVALIDATED").await;
        }
        return Some(revalidate_now(app, ctx, &key).await);
    }
    if bypasses(app, ctx, output, &key) || dynamic_ppr_navigation(app, output, &key) {
        return None;
    }
    // A PPR shell is answered like any entry (stale: served, regenerated once in the background;
    // expired: rendered first), but as the shell with its resumed dynamic part appended. That
    // includes the shell of a new param of a PPR route, rendered on demand into Ferry's cache.
    let ppr = match app.postponed.get(&key) {
        Some(shell) => Some(shell.clone()),
        None => PprShell::on_demand(app, &key),
    };
    // A memory miss looks behind the memory tier (disk, Redis: bounded by the store's timeout),
    // then reloads the bundle's seed.
    let Some(mut hit) = app
        .prerenders
        .lookup_or_fetch(&key, SystemTime::now())
        .await
    else {
        // Nothing cached: an on-demand page's first request renders it into the cache (a
        // `fallback: true` page's first HTML request gets the fallback shell, bots excepted).
        if let Some(shell) = app.prerenders.fallback_shell_for(&key)
            && !super::on_demand::from_bot(ctx)
        {
            return super::on_demand::fallback_shell(app, ctx, &key, &shell).await;
        }
        if let Some(ppr) = &ppr {
            // A new param of a PPR route, as next start answers it: its shell rendered (with its
            // postponed state) and stored first, then sent and resumed in the same response.
            // Nothing stored (no postponed state, notFound, a redirect, an error): the worker
            // answers.
            let entry = super::on_demand::render_miss_entry(app, ctx, &key).await?;
            return ppr_resume(app, ctx, output, &entry, ppr);
        }
        if app.prerenders.template_of(&key).is_some() {
            let mut res = super::on_demand::render_miss(app, ctx, &key, "MISS").await?;
            if unknown_segment(app, output, &key) {
                segment_miss(app, &mut res);
            }
            return Some(res);
        }
        return None;
    };
    let answer = |entry: &ferry_prerender::CachedEntry, label: &'static str| match &ppr {
        Some(ppr) => ppr_resume(app, ctx, output, entry, ppr),
        None => Some(app.prerenders.respond_with_label(
            entry,
            label,
            &ctx.parts.method,
            &ctx.parts.headers,
        )),
    };
    if hit.state == CacheState::Expired && hit.regeneration.is_none() {
        // The group is being rendered already (another request's render, a background
        // regeneration still storing its variants): share that render, as next start's response
        // cache does, rather than render beside it uncached (the next request would then render
        // a second time). Still expired afterwards: this request claims the render below.
        hit = app
            .prerenders
            .lookup_after_regeneration(&key, REVALIDATE_WAIT)
            .await?;
        if hit.state == CacheState::Fresh {
            return answer(&hit.entry, "MISS");
        }
    }
    if hit.state == CacheState::Expired {
        // Must not be served: render now. Whoever holds the claim stores the result.
        let regen = hit.regeneration?;
        // next start renders a missing entry within the request, with the request's URL (its
        // query shows in the page's canonical URL, `_rsc` included), and caches that render.
        render_group(app.clone(), regen, ctx.parts.uri.query().map(str::to_owned)).await;
        let fresh = app
            .prerenders
            .lookup_or_fetch(&key, SystemTime::now())
            .await?;
        if let Some(claim) = &fresh.regeneration {
            // Not fresh (the render was not cacheable, or an invalidation arrived meanwhile):
            // the lookup's claim must not outlive this request, or later requests would wait.
            app.prerenders.regeneration_failed(&claim.pathname);
        }
        return answer(&fresh.entry, "MISS");
    }
    if ppr.is_some() {
        if let Some(regen) = hit.regeneration.clone() {
            tokio::spawn(regenerate(app.clone(), regen));
        }
        return answer(&hit.entry, "STALE");
    }
    let mut res = app
        .prerenders
        .respond(&hit, &ctx.parts.method, &ctx.parts.headers);
    if let Some(regen) = hit.regeneration {
        tokio::spawn(regenerate(app.clone(), regen));
    }
    if unknown_segment(app, output, &key) {
        segment_miss(app, &mut res);
    }
    Some(res)
}

/// An RSC request (not a prefetch) for an on-demand page of a PPR route: next start renders it
/// dynamically (`isDynamicRSCRequest`); only prefetches are answered from the page's stored
/// RSC payload (the APP_PAGE entry's `rscData`).
fn dynamic_ppr_navigation(app: &App, output: &ferry_router::Output, key: &str) -> bool {
    if !output.rsc.as_ref().is_some_and(|r| r.header && !r.prefetch) {
        return false;
    }
    let Some(base) = key.strip_suffix(&app.manifest.routing.rsc.suffix) else {
        return false;
    };
    let page = if base == "/index" { "/" } else { base };
    app.prerenders.on_demand_shell(page).is_some()
}

// ---- PPR (Cache Components) ----------------------------------------------------------------
// A partially prerendered page is answered like next start does it: the static shell from the
// cache at once, then the postponed Suspense boundaries, rendered by a worker resuming the
// build's postponed state, appended to the same response (next start: app-page template,
// `resumeRender`; the adapter docs' "Implementing PPR in an Adapter").

/// The build's postponed state by HTML prerender pathname: PARTIALLY_STATIC prerenders with a
/// shell file and a postponed state (their `.rsc` / segment twins are answered from the cache or
/// by a dynamic render, as under next start).
pub fn postponed_states(
    manifest: &ferry_manifest::Manifest,
) -> std::collections::HashMap<String, PprShell> {
    manifest
        .prerenders
        .iter()
        .filter(|p| p.rendering_mode.as_deref() == Some("PARTIALLY_STATIC"))
        .filter(|p| !p.pathname.ends_with(&manifest.routing.rsc.suffix))
        .filter(|p| {
            !p.pathname
                .contains(&manifest.routing.rsc.prefetch_segment_dir_suffix)
        })
        .filter_map(|p| {
            let seed = p.seed.as_ref()?;
            seed.file.as_ref()?;
            let state = seed.postponed_state.as_deref()?;
            let shell = PprShell {
                postponed: Some(Arc::from(state)),
                parent_output_id: p.parent_output_id.clone(),
            };
            Some((p.pathname.clone(), shell))
        })
        .collect()
}

/// What resuming a PPR shell needs besides the cached shell.
#[derive(Debug, Clone)]
pub struct PprShell {
    /// The build's postponed state, opaque: the state of the build's seed shell (a regenerated
    /// shell carries its own in its cache entry). `None` for a shell rendered on demand (a new
    /// param of a PPR route), which is only ever stored with its own.
    postponed: Option<Arc<str>>,
    /// The function that resumes it.
    parent_output_id: String,
}

impl PprShell {
    /// The shell of an on-demand page of a partially static route (`/posts/three` of
    /// `/posts/[id]`), if `key` is one (see `ferry_prerender::PrerenderCache::on_demand_shell`).
    fn on_demand(app: &App, key: &str) -> Option<PprShell> {
        Some(PprShell {
            postponed: None,
            parent_output_id: app.prerenders.on_demand_shell(key)?,
        })
    }

    /// The id of the page function the shell was prerendered from (and that renders the page's
    /// dynamic RSC navigations and prefetches, which Ferry's cache does not hold).
    pub fn parent_output_id(&self) -> &str {
        &self.parent_output_id
    }
}

/// Shell now, resumed part when the worker has it. next start's headers for such a response:
/// the shell's stored headers, `x-nextjs-postponed: 1`, `Cache-Control: private, no-cache,
/// no-store, max-age=0, must-revalidate` (the body is per request), no ETag, no length, no
/// `x-nextjs-cache`.
fn ppr_resume(
    app: &Arc<App>,
    ctx: &RequestCtx,
    output: &ferry_router::Output,
    entry: &ferry_prerender::CachedEntry,
    ppr: &PprShell,
) -> Option<Response<Body>> {
    // The shell and its postponed state are one pair: a regenerated shell carries the state of
    // its own render; an entry without one is the build's seed (also as stored by an earlier
    // Ferry), whose state is the build's.
    let postponed = entry.postponed.clone().or_else(|| ppr.postponed.clone())?;
    let mut headers = entry.headers.clone();
    let content_type = headers.remove(http::header::CONTENT_TYPE);
    if let Ok(name) =
        http::HeaderName::from_bytes(app.manifest.routing.rsc.did_postpone_header.as_bytes())
    {
        headers.insert(name, HeaderValue::from_static("1"));
    }
    headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache, no-store, max-age=0, must-revalidate"),
    );
    if let Some(ct) = content_type {
        headers.insert(http::header::CONTENT_TYPE, ct);
    }
    let mut res = Response::new(ferry_http::empty());
    *res.status_mut() = entry.status;
    *res.headers_mut() = headers;
    if ctx.parts.method == Method::HEAD {
        // next start's headers go out with the shell, before the resume runs: nothing the
        // resumed render does can change them, so a HEAD needs no render.
        return Some(res);
    }
    let function = app.functions_by_id.get(&ppr.parent_output_id)?;
    let pool = app.workers.as_ref()?;
    let inv = super::functions::resume_invocation(app, ctx, output, function, &postponed)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(8);
    let pool = pool.clone();
    let target = ctx.parts.uri.clone();
    tokio::spawn(async move {
        let failed = |msg: String| std::io::Error::other(msg);
        let res = match pool.dispatch(inv).await {
            Ok(res) if res.status() == http::StatusCode::OK => res,
            Ok(res) => {
                tracing::error!("resuming {target}: the worker answered {}", res.status());
                let _ = tx
                    .send(Err(failed(format!("resume answered {}", res.status()))))
                    .await;
                return;
            }
            Err(err) => {
                tracing::error!("resuming {target}: {err}");
                let _ = tx.send(Err(failed(err.to_string()))).await;
                return;
            }
        };
        // The resumed render's own headers came too late for the client (next start sent the
        // shell's first); only its body is appended.
        let mut body = res.into_body();
        while let Some(frame) = body.frame().await {
            let item = match frame {
                Ok(f) => match f.into_data() {
                    Ok(data) => Ok(Frame::data(data)),
                    Err(_) => continue,
                },
                // Like next start, a failed resume aborts the response (no clean end).
                Err(e) => Err(e),
            };
            let stop = item.is_err();
            if tx.send(item).await.is_err() || stop {
                // The client went away: dropping the worker's body ends its render.
                return;
            }
        }
    });
    let shell = futures_util::stream::once(std::future::ready(Ok(Frame::data(entry.body.clone()))));
    let rest = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    *res.body_mut() = BodyExt::boxed(StreamBody::new(futures_util::StreamExt::chain(shell, rest)));
    Some(res)
}

// ---- end of PPR --------------------------------------------------------------------------------

/// On-demand revalidation: regenerate the entry's whole group now, answer like next start
/// (`x-nextjs-cache: REVALIDATED` with the fresh entry).
async fn revalidate_now(app: &Arc<App>, ctx: &RequestCtx, key: &str) -> Response<Body> {
    let path = key.to_owned();
    cache_write(app, move |c| c.invalidate_path(&path)).await;
    // Another request may be regenerating the group already: wait for it, bounded.
    let deadline = tokio::time::Instant::now() + REVALIDATE_WAIT;
    loop {
        let Some(hit) = app.prerenders.lookup_or_fetch(key, SystemTime::now()).await else {
            break;
        };
        if let Some(regen) = hit.regeneration {
            render_group(app.clone(), regen, None).await;
            break;
        }
        if hit.state == CacheState::Fresh || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    match app.prerenders.lookup_or_fetch(key, SystemTime::now()).await {
        Some(fresh) => app.prerenders.respond_with_label(
            &fresh.entry,
            "REVALIDATED",
            &ctx.parts.method,
            &ctx.parts.headers,
        ),
        None => ferry_http::text_response(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            "revalidation failed",
        ),
    }
}

/// How long an on-demand revalidation waits for a regeneration another request started.
pub(super) const REVALIDATE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A segment prefetch (`next-router-segment-prefetch`) for a page whose prerender has segment
/// data, naming a segment it does not have.
fn unknown_segment(app: &App, output: &ferry_router::Output, key: &str) -> bool {
    let Some(rsc) = output.rsc.as_ref().filter(|r| r.header) else {
        return false;
    };
    if rsc.segment.is_none() || rsc.segment_pathname.is_some() {
        return false;
    }
    let Some(stem) = key.strip_suffix(&app.manifest.routing.rsc.suffix) else {
        return false;
    };
    let tree = format!(
        "{stem}{}/_tree{}",
        app.manifest.routing.rsc.prefetch_segment_dir_suffix,
        app.manifest.routing.rsc.prefetch_segment_suffix
    );
    app.prerenders.is_prerender(&tree)
}

/// next start's answer to an unknown segment (app-page template, "Segment Cache" branch): 404,
/// empty, `x-nextjs-postponed: 2`, the entry's Cache-Control, none of its stored headers.
fn segment_miss(app: &App, res: &mut Response<Body>) {
    *res.status_mut() = http::StatusCode::NOT_FOUND;
    *res.body_mut() = ferry_http::empty();
    let headers = res.headers_mut();
    for name in [
        http::header::CONTENT_TYPE,
        http::header::CONTENT_LENGTH,
        http::header::CONTENT_ENCODING,
        http::header::ETAG,
    ] {
        headers.remove(name);
    }
    headers.remove("x-nextjs-stale-time");
    if let Ok(v) = HeaderValue::from_str(&app.manifest.routing.rsc.vary_header) {
        headers.insert(http::header::VARY, v);
    }
    if let Ok(name) =
        http::HeaderName::from_bytes(app.manifest.routing.rsc.did_postpone_header.as_bytes())
    {
        headers.insert(name, HeaderValue::from_static("2"));
    }
}

fn bypasses(app: &App, ctx: &RequestCtx, output: &ferry_router::Output, key: &str) -> bool {
    let mut probe = http::Request::new(());
    // The app-page entrypoint answers any method from its cache unless the request may be a
    // Server Action (next start serves a prerendered `/blog/hello` to a plain POST). The
    // pages router's SSG pages never get here with another method (405 in `method`).
    let method = &ctx.parts.method;
    let other_method = method != Method::GET && method != Method::HEAD;
    let app_page = other_method
        && super::method::page_function(app, output)
            .is_some_and(|f| f.kind == ferry_workers::EntryKind::AppPage);
    *probe.method_mut() = if app_page && !super::method::is_possible_server_action(ctx) {
        Method::GET
    } else {
        ctx.parts.method.clone()
    };
    *probe.uri_mut() = ctx.parts.uri.clone();
    *probe.headers_mut() = ctx.parts.headers.clone();
    app.prerenders.should_bypass(key, &probe)
}

/// The concrete pathname of the cached response: the invocation path, decoded like the adapter's
/// prerender pathnames, with the RSC / segment suffix of the matched output.
pub fn cache_key(output: &ferry_router::Output) -> String {
    let path = percent_decode_str(&output.invocation_path)
        .decode_utf8_lossy()
        .into_owned();
    // An RSC request answers with the `.rsc` (or segment) variant of the matched output.
    let variant = output
        .rsc
        .as_ref()
        .filter(|r| r.header)
        .and_then(|r| r.segment_pathname.as_deref().or(r.rsc_pathname.as_deref()))
        .unwrap_or(&output.pathname);
    let suffix = output_suffix(variant);
    if suffix.is_empty() || path.ends_with(suffix) {
        return path;
    }
    let base = if path == "/" { "/index" } else { path.as_str() };
    format!("{base}{suffix}")
}

/// `.rsc` or `.segments/…segment.rsc` at the end of an output pathname, else `""`.
fn output_suffix(pathname: &str) -> &str {
    if let Some(i) = pathname.find(".segments/") {
        return &pathname[i..];
    }
    pathname
        .strip_suffix(".rsc")
        .map_or("", |base| &pathname[base.len()..])
}

/// Renders every pathname of the group through the worker and stores the results together,
/// unless another instance on the shared store is regenerating it (or just did).
pub async fn regenerate(app: Arc<App>, regen: Regeneration) {
    if !app.prerenders.begin_regeneration(&regen).await {
        return;
    }
    render_group(app, regen, None).await;
}

/// [`regenerate`], rendering each pathname with `query` (the triggering request's, if any).
pub(super) async fn render_group(app: Arc<App>, regen: Regeneration, query: Option<String>) {
    let Some(function) = app.functions_by_id.get(&regen.parent_output_id).cloned() else {
        tracing::warn!(
            "cannot regenerate {}: no function {}",
            regen.pathname,
            regen.parent_output_id
        );
        app.prerenders.regeneration_failed(&regen.pathname);
        return;
    };
    if let Some(template) = app.prerenders.template_of(&regen.pathname) {
        render_on_demand_group(&app, &function, regen, template, query.as_deref()).await;
        return;
    }
    if let Some(html) = ppr_html_pathname(&app, &regen) {
        match render_ppr_group(&app, &function, &regen, &html, query.as_deref()).await {
            Ok(mut results) => {
                results.sort_by_key(|(p, _)| p != &regen.pathname);
                cache_write(&app, move |c| c.store_group(results, SystemTime::now())).await;
            }
            Err(err) => {
                tracing::warn!("regenerating the PPR shell {html} failed: {err}");
                app.prerenders.regeneration_failed(&regen.pathname);
            }
        }
        return;
    }
    // A pages-router page: HTML and data JSON from one render (next's PAGES cache entry, see
    // `on_demand::render_pages_group`), as next start regenerates them. With the revalidation
    // token only: the worker keeps no copy of an owned render, so only an on-demand revalidation
    // (which always renders) may be asked for. Any other answer (`notFound`, a redirect) is
    // rendered per variant below and cached as it is.
    if function.kind == ferry_workers::EntryKind::Pages && regen.bypass_token.is_some() {
        match super::on_demand::render_pages_group(&app, &function, &regen, query.as_deref()).await
        {
            Ok(Some(mut results)) => {
                results.sort_by_key(|(p, _)| p != &regen.pathname);
                cache_write(&app, move |c| c.store_group(results, SystemTime::now())).await;
                return;
            }
            Ok(None) => {}
            Err(err) => tracing::debug!("{}: one render of the page: {err}", regen.pathname),
        }
    }
    // The group's variants (HTML, RSC, segments, data JSON) render concurrently: next start gets
    // them all from one render, so a regeneration here should take about one render's time too,
    // not one per variant (a stale page would otherwise stay stale N times longer).
    let token = regen.bypass_token.as_deref();
    let renders = regen.group_pathnames.iter().map(|pathname| {
        let (app, function, query) = (&app, &function, query.as_deref());
        async move {
            let rendered = render(app, function, pathname, token, query).await;
            (pathname.clone(), rendered)
        }
    });
    let mut results = Vec::with_capacity(regen.group_pathnames.len());
    for (pathname, rendered) in futures_util::future::join_all(renders).await {
        match rendered {
            Ok(rendered) => results.push((pathname, rendered)),
            Err(err) => {
                tracing::warn!("regenerating {pathname} failed: {err}");
                app.prerenders.regeneration_failed(&regen.pathname);
                return;
            }
        }
    }
    // The looked-up pathname first: store_group releases the claim by it.
    results.sort_by_key(|(p, _)| p != &regen.pathname);
    cache_write(&app, move |c| c.store_group(results, SystemTime::now())).await;
}

/// Renders the group of an on-demand page (see `on_demand`): an app page's variants from one
/// render's cache entry, a pages-router page's HTML and data JSON like a build-time prerender's.
async fn render_on_demand_group(
    app: &Arc<App>,
    function: &crate::app::Function,
    regen: Regeneration,
    template: String,
    query: Option<&str>,
) {
    let results = if function.kind == ferry_workers::EntryKind::AppPage {
        super::on_demand::render_app_group(app, function, &regen, query).await
    } else if let Some(one) = super::on_demand::render_pages_group(app, function, &regen, query)
        .await
        .transpose()
    {
        // HTML and data JSON from one render (next's PAGES cache entry).
        one.map(|results| {
            results
                .into_iter()
                .map(|(pathname, mut r)| {
                    super::on_demand::name_data_route(app, &template, &pathname, &mut r);
                    (pathname, r)
                })
                .collect()
        })
    } else {
        let token = regen.bypass_token.as_deref();
        let route = template.as_str();
        let renders = regen.group_pathnames.iter().map(|pathname| async move {
            let rendered =
                super::on_demand::render_pages_variant(app, function, pathname, token, query).await;
            rendered.map(|mut r| {
                super::on_demand::name_data_route(app, route, pathname, &mut r);
                (pathname.clone(), r)
            })
        });
        let results: Result<Vec<_>, String> = futures_util::future::join_all(renders)
            .await
            .into_iter()
            .collect();
        // A pages-router page that is not found (or redirects) is not cached as the page: next
        // start answers `notFound` of a blocking fallback with the 404 page, which the worker
        // renders for the request.
        results.and_then(
            |r| match r.iter().find(|(_, r)| r.status != http::StatusCode::OK) {
                Some((p, r)) => Err(format!("{p} answered {}", r.status)),
                None => Ok(r),
            },
        )
    };
    match results {
        Ok(results) => super::on_demand::store(app, &regen, template, results).await,
        Err(err) => {
            tracing::debug!(
                "rendering the on-demand page {} failed: {err}",
                regen.pathname
            );
            app.prerenders.regeneration_failed(&regen.pathname);
        }
    }
}

/// Runs a cache write off the async executor: the disk store writes through (with fsync).
pub(crate) async fn cache_write(
    app: &Arc<App>,
    f: impl FnOnce(&ferry_prerender::PrerenderCache) + Send + 'static,
) {
    let app = app.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || f(&app.prerenders)).await {
        tracing::error!("prerender cache write failed: {e}");
    }
}

/// One render of `pathname` with the revalidation token, collected in full.
async fn render(
    app: &App,
    function: &crate::app::Function,
    pathname: &str,
    token: Option<&str>,
    query: Option<&str>,
) -> Result<Rendered, String> {
    let inv = render_invocation(app, function, pathname, token, query)?;
    let (parts, bytes) = dispatch_whole(app, inv).await?;
    if parts.status.is_server_error() {
        return Err(format!("status {}", parts.status));
    }
    Ok(Rendered::from_response(parts.status, parts.headers, bytes))
}

/// What a decoded pathname must have encoded to be a request target again (`%` too: a `%` in a
/// decoded pathname was `%25` in the URL).
const RENDER_PATH: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// The worker request that renders `pathname` for the cache.
pub(super) fn render_invocation(
    app: &App,
    function: &crate::app::Function,
    pathname: &str,
    token: Option<&str>,
    query: Option<&str>,
) -> Result<Invocation, String> {
    let (path, headers) = render_request(pathname, token);
    // Prerender pathnames are decoded (`/posts/été`): the request line needs them encoded again.
    let mut uri = utf8_percent_encode(&path, RENDER_PATH).to_string();
    if let Some(q) = query {
        uri = format!("{uri}?{q}");
    }
    let uri = uri.parse().map_err(|e| format!("bad uri {uri}: {e}"))?;
    let mut inv = Invocation::new(function.entry.clone(), function.kind, Method::GET, uri);
    inv.headers = headers;
    inv.meta.hostname = Some("localhost".into());
    inv.meta.port = app.local_addr().map(|a| a.port());
    Ok(inv)
}

// ---- PPR regeneration --------------------------------------------------------------------------
// A PPR shell and its postponed state must come from one render (the state describes the
// shell's holes and carries the render's resume data cache). next start gets both, with the RSC
// payload and the segment prefetches, from one prerender into one APP_PAGE cache entry
// (response cache, app-page template). Ferry does the same: one worker render of the page with
// `onCacheEntry` (the bridge's meta `ferryCacheEntry`) hands back that entry whole, and the
// group's variants are stored from it together.

/// The PPR page (shell) pathname of the group being regenerated, if it has one.
fn ppr_html_pathname(app: &App, regen: &Regeneration) -> Option<String> {
    regen
        .group_pathnames
        .iter()
        .find(|p| app.postponed.contains_key(p.as_str()))
        .cloned()
}

/// Runs a background render in a worker and reads its whole answer (at most
/// `MAX_RENDER_BYTES`).
pub(super) async fn dispatch_whole(
    app: &App,
    inv: ferry_workers::Invocation,
) -> Result<(http::response::Parts, Bytes), String> {
    let pool = app.workers.as_ref().ok_or("no workers")?;
    let res = pool.dispatch(inv).await.map_err(|e| e.to_string())?;
    let (parts, body) = res.into_parts();
    let bytes = Limited::new(body, MAX_RENDER_BYTES)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((parts, bytes))
}

/// Renders `inv` with `onCacheEntry` (meta `ferryCacheEntry`): the bridge answers with next's
/// fresh APP_PAGE cache entry from that one render (HTML, RSC, postponed state, segments,
/// headers, cache control), parsed here. A failed render is an error: the handler hands over a
/// failed prerender too (for next start to resume it once).
pub(super) async fn render_cache_entry(
    app: &App,
    mut inv: Invocation,
) -> Result<CacheEntryFrame, String> {
    inv.meta
        .extra
        .insert("ferryCacheEntry".into(), serde_json::Value::Bool(true));
    let (parts, bytes) = dispatch_whole(app, inv).await?;
    if parts.headers.get("x-ferry-cache-entry").is_none() {
        return Err(format!(
            "the page answered {} without a cache entry",
            parts.status
        ));
    }
    let frame = CacheEntryFrame::parse(&bytes)?;
    if frame.status.is_server_error() {
        return Err(format!("the render failed ({})", frame.status));
    }
    Ok(frame)
}

/// One prerender of the PPR page `html`, as the group's entries: the shell with its postponed
/// state, and each segment prefetch the group has. The `.rsc` variant is left out: a PPR page's
/// RSC navigation is a dynamic render (the build seeds no `.rsc` for it either).
async fn render_ppr_group(
    app: &App,
    function: &crate::app::Function,
    regen: &Regeneration,
    html: &str,
    query: Option<&str>,
) -> Result<Vec<(String, Rendered)>, String> {
    let inv = render_invocation(app, function, html, regen.bypass_token.as_deref(), query)?;
    let frame = render_cache_entry(app, inv).await?;
    let postponed = frame.postponed.clone().ok_or(
        "the new render has no postponed state (the page is no longer partially static); \
         the previous shell stays",
    )?;
    let rendered = |headers: HeaderMap, body: Bytes| frame.rendered(headers, body);
    let mut results = Vec::new();
    // next start replays a regenerated shell with the render's own headers (no
    // `x-nextjs-prerender`, which only the build's seed headers carry for a postponed shell);
    // the content type and Vary are the handler's, as in the seed.
    let previous = previous_headers(app, html, "text/html; charset=utf-8").await;
    let mut headers = HeaderMap::new();
    for name in [http::header::CONTENT_TYPE, http::header::VARY] {
        for value in previous.get_all(&name) {
            headers.append(name.clone(), value.clone());
        }
    }
    for name in frame.headers.keys() {
        headers.remove(name);
    }
    for (name, value) in &frame.headers {
        headers.append(name.clone(), value.clone());
    }
    let mut shell = rendered(headers, frame.html.clone());
    shell.postponed = Some(Arc::from(postponed.as_str()));
    results.push((html.to_owned(), shell));
    let rsc = &app.manifest.routing.rsc;
    let base = if html == "/" { "/index" } else { html };
    for (segment, data) in &frame.segments {
        let pathname = format!(
            "{base}{}{segment}{}",
            rsc.prefetch_segment_dir_suffix, rsc.prefetch_segment_suffix
        );
        if !regen.group_pathnames.contains(&pathname) {
            continue;
        }
        // A segment prefetch is answered without the page's stored headers (next start's
        // "Segment Cache" branch): keep the segment's own, with the render's tags.
        let mut headers = previous_headers(app, &pathname, "text/x-component").await;
        if let Some(tags) = frame.headers.get("x-next-cache-tags") {
            headers.insert("x-next-cache-tags", tags.clone());
        }
        results.push((pathname, rendered(headers, data.clone())));
    }
    Ok(results)
}

/// The headers `pathname`'s cached entry replays (its seed's, cleaned), else just a content type.
async fn previous_headers(app: &App, pathname: &str, content_type: &'static str) -> HeaderMap {
    if let Some(entry) = app.prerenders.fetch(pathname).await {
        return entry.headers.clone();
    }
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    headers
}

/// The bridge's answer to a render with `onCacheEntry` (js/bridge/bridge.cjs `sendCacheEntry`):
/// one JSON line, then the parts it lists, back to back.
#[derive(Debug)]
pub(super) struct CacheEntryFrame {
    pub(super) status: http::StatusCode,
    pub(super) headers: HeaderMap,
    /// Seconds; `None`: never revalidates.
    revalidate: Option<u64>,
    expire: Option<u64>,
    pub(super) html: Bytes,
    /// The PPR postponed state of the render's shell (opaque).
    pub(super) postponed: Option<String>,
    /// The RSC payload (stored for on-demand pages, for a PPR page's prefetches only; not kept
    /// when a build-time PPR shell regenerates: the build seeds none).
    pub(super) rsc: Option<Bytes>,
    pub(super) segments: Vec<(String, Bytes)>,
}

/// The `status` and `headers` of a bridge frame's JSON header line (the `ferryCacheEntry` and
/// pages-entry frames): header values as strings or numbers, one or many; unusable names or
/// values are skipped, a missing or invalid status is 200.
pub(super) fn frame_status_and_headers(meta: &serde_json::Value) -> (http::StatusCode, HeaderMap) {
    let mut headers = HeaderMap::new();
    for (name, value) in meta["headers"].as_object().into_iter().flatten() {
        let Ok(name) = http::HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        let values = match value {
            serde_json::Value::Array(items) => items.as_slice(),
            other => std::slice::from_ref(other),
        };
        for v in values {
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                _ => continue,
            };
            if let Ok(v) = HeaderValue::from_str(&text) {
                headers.append(name.clone(), v);
            }
        }
    }
    let status = meta["status"]
        .as_u64()
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| http::StatusCode::from_u16(s).ok())
        .unwrap_or(http::StatusCode::OK);
    (status, headers)
}

impl CacheEntryFrame {
    pub(super) fn parse(data: &Bytes) -> Result<Self, String> {
        let nl = data
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("cache entry frame without a header line")?;
        let meta: serde_json::Value =
            serde_json::from_slice(&data[..nl]).map_err(|e| format!("cache entry frame: {e}"))?;
        let mut rest = data.slice(nl + 1..);
        let mut take = |len: &serde_json::Value| -> Result<Option<Bytes>, String> {
            let Some(n) = len.as_u64() else {
                return Ok(None);
            };
            let n = usize::try_from(n).map_err(|_| "cache entry part too large")?;
            if n > rest.len() {
                return Err("truncated cache entry frame".into());
            }
            Ok(Some(rest.split_to(n)))
        };
        let html = take(&meta["html"])?.ok_or("cache entry frame without html")?;
        let postponed = take(&meta["postponed"])?
            .map(|b| String::from_utf8(b.to_vec()).map_err(|_| "postponed state is not UTF-8"))
            .transpose()?;
        let rsc = take(&meta["rsc"])?;
        let mut segments = Vec::new();
        for item in meta["segments"].as_array().into_iter().flatten() {
            let name = item[0].as_str().ok_or("segment without a name")?;
            let data = take(&item[1])?.ok_or("segment without a length")?;
            segments.push((name.to_owned(), data));
        }
        if !rest.is_empty() {
            return Err("trailing bytes in the cache entry frame".into());
        }
        let (status, headers) = frame_status_and_headers(&meta);
        Ok(CacheEntryFrame {
            status,
            headers,
            revalidate: meta["revalidate"].as_u64(),
            expire: meta["expire"].as_u64(),
            html,
            postponed,
            rsc,
            segments,
        })
    }

    /// One entry of this render: its status and lifetime with `headers` and `body`.
    pub(super) fn rendered(&self, headers: HeaderMap, body: Bytes) -> Rendered {
        let (revalidate, expire) = self.lifetime();
        Rendered {
            status: self.status,
            headers,
            body,
            revalidate,
            expire,
            postponed: None,
        }
    }

    /// Revalidate / expire as [`Rendered`] holds them (`CACHE_ONE_YEAR` and up: static).
    pub(super) fn lifetime(&self) -> (Option<u64>, Option<u64>) {
        match self.revalidate {
            None => (None, None),
            Some(r) if r >= ferry_prerender::CACHE_ONE_YEAR => (None, None),
            Some(r) => (Some(r), self.expire),
        }
    }
}

// ---- end of PPR regeneration -------------------------------------------------------------------

/// The request that renders a prerender pathname: the page URL plus the RSC / segment / data
/// headers its variant needs.
fn render_request(pathname: &str, token: Option<&str>) -> (String, HeaderMap) {
    let mut headers = HeaderMap::new();
    if let Some(token) = token.and_then(|t| HeaderValue::from_str(t).ok()) {
        headers.insert("x-prerender-revalidate", token);
    }
    let page = |base: &str| {
        if base == "/index" {
            "/".to_owned()
        } else {
            base.to_owned()
        }
    };
    if let Some(i) = pathname.find(".segments/") {
        let segment = pathname[i + ".segments".len()..]
            .strip_suffix(".segment.rsc")
            .unwrap_or("");
        headers.insert("rsc", HeaderValue::from_static("1"));
        headers.insert("next-router-prefetch", HeaderValue::from_static("1"));
        if let Ok(v) = HeaderValue::from_str(segment) {
            headers.insert("next-router-segment-prefetch", v);
        }
        return (page(&pathname[..i]), headers);
    }
    if let Some(base) = pathname.strip_suffix(".rsc") {
        headers.insert("rsc", HeaderValue::from_static("1"));
        return (page(base), headers);
    }
    if pathname.starts_with("/_next/data/") {
        headers.insert("x-nextjs-data", HeaderValue::from_static("1"));
    }
    (pathname.to_owned(), headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(pathname: &str, invocation: &str) -> ferry_router::Output {
        ferry_router::Output {
            pathname: pathname.into(),
            invocation_path: invocation.into(),
            query: vec![],
            query_arrays: vec![],
            route_matches: vec![],
            headers: vec![],
            request_headers: Default::default(),
            status: None,
            rsc: None,
            next_data_page: false,
        }
    }

    #[test]
    fn cache_key_follows_the_output_variant() {
        assert_eq!(cache_key(&output("/isr", "/isr")), "/isr");
        assert_eq!(cache_key(&output("/isr.rsc", "/isr")), "/isr.rsc");
        assert_eq!(cache_key(&output("/index.rsc", "/")), "/index.rsc");
        assert_eq!(
            cache_key(&output("/blog/[slug].rsc", "/blog/hello")),
            "/blog/hello.rsc"
        );
        assert_eq!(
            cache_key(&output(
                "/blog/[slug].segments/_tree.segment.rsc",
                "/blog/hello"
            )),
            "/blog/hello.segments/_tree.segment.rsc"
        );
        assert_eq!(
            cache_key(&output("/blog/[slug]", "/blog/h%C3%A9")),
            "/blog/hé"
        );
    }

    /// The frame js/bridge/bridge.cjs `sendCacheEntry` writes.
    fn frame(meta: serde_json::Value, parts: &[&str]) -> Bytes {
        let mut out = meta.to_string().into_bytes();
        out.push(b'\n');
        for p in parts {
            out.extend_from_slice(p.as_bytes());
        }
        Bytes::from(out)
    }

    #[test]
    fn cache_entry_frames_parse_and_reject_bad_lengths() {
        let meta = serde_json::json!({
            "status": 200, "revalidate": 2, "expire": 300,
            "headers": {"x-next-cache-tags": "a,b", "x-nextjs-stale-time": 30, "x-list": ["1", "2"]},
            "html": 5, "postponed": 3, "rsc": 2,
            "segments": [["/_tree", 1], ["/regen/__PAGE__", 4]],
        });
        let f = CacheEntryFrame::parse(&frame(meta.clone(), &["shell", "pst", "rs", "t", "page"]))
            .expect("frame");
        assert_eq!(&f.html[..], b"shell");
        assert_eq!(f.postponed.as_deref(), Some("pst"));
        assert_eq!(f.segments.len(), 2);
        assert_eq!(f.segments[1].0, "/regen/__PAGE__");
        assert_eq!(&f.segments[1].1[..], b"page");
        assert_eq!(f.headers["x-nextjs-stale-time"], "30");
        assert_eq!(f.headers.get_all("x-list").iter().count(), 2);
        assert_eq!(f.lifetime(), (Some(2), Some(300)));
        // Truncated, or bytes left over: an error, never a shell paired with the wrong state.
        assert!(
            CacheEntryFrame::parse(&frame(meta.clone(), &["shell", "pst", "rs", "t"])).is_err()
        );
        assert!(
            CacheEntryFrame::parse(&frame(meta, &["shell", "pst", "rs", "t", "page", "x"]))
                .is_err()
        );
        assert!(CacheEntryFrame::parse(&Bytes::from_static(b"no newline")).is_err());
        // No postponed state, and a static lifetime.
        let meta = serde_json::json!({"html": 2, "postponed": null, "revalidate": 31_536_000});
        let f = CacheEntryFrame::parse(&frame(meta, &["ok"])).expect("static");
        assert!(f.postponed.is_none());
        assert_eq!(f.lifetime(), (None, None));
    }

    #[test]
    fn decoded_pathnames_are_encoded_again_for_the_render_request() {
        let enc = |p: &str| utf8_percent_encode(p, RENDER_PATH).to_string();
        assert_eq!(enc("/posts/été"), "/posts/%C3%A9t%C3%A9");
        assert_eq!(enc("/a b/100%?#"), "/a%20b/100%25%3F%23");
        assert_eq!(
            enc("/posts/x.segments/posts/$d$id/__PAGE__.segment.rsc"),
            "/posts/x.segments/posts/$d$id/__PAGE__.segment.rsc"
        );
        assert!("/posts/%C3%A9t%C3%A9".parse::<http::Uri>().is_ok());
    }

    #[test]
    fn render_requests_carry_variant_headers() {
        let (uri, h) = render_request("/index.segments/_tree.segment.rsc", Some("t"));
        assert_eq!(uri, "/");
        assert_eq!(h["next-router-segment-prefetch"], "/_tree");
        assert_eq!(h["x-prerender-revalidate"], "t");
        let (uri, h) = render_request("/isr.rsc", None);
        assert_eq!(uri, "/isr");
        assert_eq!(h["rsc"], "1");
        let (uri, h) = render_request("/_next/data/b/legacy/static.json", None);
        assert_eq!(uri, "/_next/data/b/legacy/static.json");
        assert_eq!(h["x-nextjs-data"], "1");
    }
}
