//! The request pipeline, as an explicit ordered list of stages (one module each):
//!
//! 0. [`control`]: authenticated requests from Ferry's own workers (cache invalidation).
//! 1. [`guard`]: reject malformed requests, strip internal headers a client must not forge.
//! 2. [`route`]: Next.js routing phases; the middleware / proxy runs in a worker when it matches.
//! 3. [`rsc`]: an RSC request to an app page must carry the right `_rsc` cache-busting hash;
//!    [`method`]: the methods a page accepts (405 on SSG pages, 400 for OPTIONS).
//! 4. serve the resolution, first match wins:
//!    [`redirect`] | [`proxy`] (external rewrite) | [`files`] (static and public files) |
//!    [`prerendered`] (prerender / ISR cache) | [`functions`] (Node workers) | [`not_found`].
//! 5. [`finish`]: routing headers, `x-powered-by`, runtime compression.

pub mod control;
pub mod files;
pub mod finish;
pub mod functions;
pub mod guard;
pub mod image;
pub mod method;
pub mod not_found;
pub mod prerendered;
pub mod proxy;
pub mod redirect;
pub mod route;
pub mod rsc;

use std::net::SocketAddr;
use std::sync::Arc;

use ferry_http::Body;
use ferry_router::Resolution;
use hyper::body::Incoming;
use hyper::{Request, Response};

use crate::App;

/// What every stage may need to know about the request, after the guard.
#[derive(Debug)]
pub struct RequestCtx {
    /// Method, URI, headers (sanitized), version.
    pub parts: http::request::Parts,
    /// The client's address.
    pub remote: SocketAddr,
}

/// Runs one request through every stage.
pub async fn handle(app: &Arc<App>, req: Request<Incoming>, remote: SocketAddr) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    if control::is_control(app, &parts) {
        return control::handle(app, &parts, ferry_http::boxed(body)).await;
    }
    if let Err(rejection) = guard::check(app, &mut parts) {
        return rejection.into_response();
    }
    let ctx = RequestCtx { parts, remote };
    let body = ferry_http::boxed(body);
    let (resolution, body) = match route::route(app, &ctx, body).await {
        route::Routed::Resolved(resolution, body) => (resolution, body),
        route::Routed::Respond(res) => return finish::finish(app, &ctx, res, &[]),
    };
    // next start matches `/_next/image` in the filesystem check, after middleware.
    if let Some((res, headers)) = image::serve(app, &ctx, &resolution).await {
        return finish::finish(app, &ctx, res, headers);
    }
    match resolution {
        Resolution::Redirect {
            status,
            location,
            next_start_headers,
            ..
        } => redirect::respond(status, location.as_deref(), &next_start_headers),
        Resolution::Rejected { status, reason } => {
            tracing::debug!("rejected {}: {reason}", ctx.parts.uri);
            guard::reject(status)
        }
        Resolution::ExternalRewrite {
            url,
            headers,
            request_headers,
            status,
        } => {
            let res = proxy::forward(&ctx, &url, &request_headers, status, body).await;
            finish::finish(app, &ctx, res, &headers)
        }
        Resolution::NotFound {
            headers,
            request_headers,
            ..
        } => {
            let res = match redirect::repeated_slashes(&ctx.parts.uri) {
                Some(res) => res,
                None => not_found::respond(app, &ctx, &request_headers).await,
            };
            finish::finish(app, &ctx, res, &headers)
        }
        Resolution::Output(output) => {
            let mut res = serve_output(app, &ctx, &output, body).await;
            if output.next_data_page {
                name_data_page(app, &output, &mut res);
            }
            let mut headers = output.headers.clone();
            headers.extend(rsc_rewrite_headers(&ctx, &output));
            finish::finish(app, &ctx, res, &headers)
        }
    }
}

/// next start (resolve-routes.js) tells the client router where an RSC request was rewritten:
/// `x-nextjs-rewritten-path` when the pathname changed, `x-nextjs-rewritten-query` when the
/// query did (compared as strings: a request without one differs from the destination's `""`).
fn rsc_rewrite_headers(ctx: &RequestCtx, output: &ferry_router::Output) -> Vec<(String, String)> {
    if !output.rsc.as_ref().is_some_and(|r| r.header) {
        return Vec::new();
    }
    let requested = ctx.parts.uri.path();
    if output.invocation_path == requested {
        return Vec::new();
    }
    // The destination never carries the `_rsc` cache-busting param (prepare-destination.js).
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(output.query.iter().filter(|(k, _)| k != "_rsc"))
        .finish();
    let mut out = vec![(
        "x-nextjs-rewritten-path".to_owned(),
        output.invocation_path.clone(),
    )];
    if ctx.parts.uri.query() != Some(query.as_str()) {
        out.push(("x-nextjs-rewritten-query".to_owned(), query));
    }
    out
}

/// A page served at its `_next/data` URL: next-server (base-server.js) answers a request
/// marked `x-nextjs-data` with `x-nextjs-matched-path: <page>` when it rendered it with 200.
/// Files are served by the router before that layer and get no such header.
fn name_data_page(app: &App, output: &ferry_router::Output, res: &mut Response<Body>) {
    if res.status() != http::StatusCode::OK
        || res.headers().contains_key("x-nextjs-matched-path")
        || app.statics.get(&output.pathname).is_some()
    {
        return;
    }
    let page = output
        .pathname
        .strip_prefix(app.manifest.config.base_path.as_str())
        .filter(|p| p.starts_with('/'))
        .unwrap_or(&output.pathname);
    if let Ok(value) = http::HeaderValue::from_str(page) {
        res.headers_mut().insert("x-nextjs-matched-path", value);
    }
}

/// The filesystem outcome: a static file, a prerender, or a function, in that order.
async fn serve_output(
    app: &Arc<App>,
    ctx: &RequestCtx,
    output: &ferry_router::Output,
    body: Body,
) -> Response<Body> {
    // next's BLOCKED_PAGES: the pages router's internals are never routable.
    let page = output
        .pathname
        .strip_prefix(app.manifest.config.base_path.as_str())
        .unwrap_or(&output.pathname);
    if matches!(page, "/_app" | "/_document" | "/_error") {
        return not_found::respond(app, ctx, &output.request_headers).await;
    }
    // next build writes a default `500.html` (the adapter lists it as a static file) but keeps it
    // out of the pages-manifest, so next start never routes `/500` to it: the 404 page answers.
    if page == "/500" && !app.functions.contains_key(&output.pathname) {
        return not_found::respond(app, ctx, &output.request_headers).await;
    }
    // The `.rsc` / segment outputs answer RSC requests for their page; next start's router
    // does not serve them at their own URL.
    let rsc_output = page.ends_with(app.manifest.routing.rsc.suffix.as_str())
        || page.contains(&format!(
            "{}/",
            app.manifest.routing.rsc.prefetch_segment_dir_suffix
        ));
    if rsc_output && not_found::is_rsc_url(app, ctx) {
        return not_found::respond(app, ctx, &output.request_headers).await;
    }
    // Files are served by next start's router before next-server's own checks.
    if app.statics.get(&output.pathname).is_none()
        && let Some(res) = redirect::repeated_slashes(&ctx.parts.uri)
    {
        return res;
    }
    if is_app_rsc_request(app, output)
        && app.manifest.config.validate_rsc_request_headers
        && let Some(res) = rsc::check(ctx)
    {
        return res;
    }
    if let Some(res) = method::check(app, ctx, output) {
        return res;
    }
    if let Some(res) = files::serve(app, ctx, output).await {
        return res;
    }
    if let Some(res) = prerendered::serve(app, ctx, output).await {
        return res;
    }
    if let Some(res) = functions::serve(app, ctx, output, body).await {
        return res;
    }
    not_found::respond(app, ctx, &output.request_headers).await
}

/// An RSC request (`rsc: 1`) whose output is an app router page.
fn is_app_rsc_request(app: &App, output: &ferry_router::Output) -> bool {
    if !output.rsc.as_ref().is_some_and(|r| r.header) {
        return false;
    }
    let base = output
        .pathname
        .find(".segments/")
        .map_or(output.pathname.as_str(), |i| &output.pathname[..i]);
    let base = base.strip_suffix(".rsc").unwrap_or(base);
    let base = if base == "/index" { "/" } else { base };
    app.functions
        .get(base)
        .is_some_and(|f| f.kind == ferry_workers::EntryKind::AppPage)
        && base != "/_not-found"
}
