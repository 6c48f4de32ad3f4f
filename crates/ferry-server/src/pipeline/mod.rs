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
pub mod fused;
pub mod guard;
pub mod image;
pub mod method;
pub mod not_found;
pub mod on_demand;
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
    // WebSocket and other HTTP/1.1 upgrades: proxied for an external rewrite, refused otherwise.
    if proxy::is_upgrade(&parts) {
        return proxy::upgrade(app, RequestCtx { parts, remote }, ferry_http::boxed(body)).await;
    }
    // resolve-routes.js's first check, before the middleware and every rule (files included):
    // repeated slashes or backslashes in the path answer 308 to the cleaned path.
    if let Some(res) = redirect::repeated_slashes(&parts.uri) {
        return res;
    }
    let ctx = RequestCtx { parts, remote };
    // `/_next/image` that no routing rule can change: answered before routing.
    if let Some(res) = image::serve_prerouted(app, &ctx).await {
        return res;
    }
    let body = ferry_http::boxed(body);
    let (resolution, body) = match route::route(app, &ctx, body).await {
        route::Routed::Resolved(resolution, body) => (resolution, body),
        route::Routed::Respond(res, headers) => return finish::finish(app, &ctx, res, &headers),
        route::Routed::Rendered(rendered) => {
            let fused::Rendered {
                output,
                function,
                response,
            } = *rendered;
            let res = functions::complete(app, &ctx, &output, &function, response).await;
            return finish_output(app, &ctx, &output, res);
        }
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
            // The router marks a middleware rewrite with `x-middleware-rewrite`. next start
            // (resolve-routes.js) answers a `rewrites()` rule to an external URL with
            // `resHeaders: null`: no `headers()` rules on the proxied response; a middleware
            // rewrite keeps the headers resolved so far.
            let from_middleware = headers.iter().any(|(k, _)| k == "x-middleware-rewrite");
            let (origin, headers) = if from_middleware {
                (proxy::Origin::Middleware, headers)
            } else {
                (proxy::Origin::Rule, Vec::new())
            };
            let res = proxy::forward(&ctx, &url, origin, &request_headers, status, body).await;
            finish::finish(app, &ctx, res, &headers)
        }
        Resolution::NotFound {
            headers,
            request_headers,
            ..
        } => {
            // With an app router `/_not-found` that page answers instead (router-server only
            // short-circuits `invokeRender('/404')`).
            let res =
                if marked_data_request(app, &ctx) && !app.functions.contains_key("/_not-found") {
                    data_not_found(app, &ctx)
                } else {
                    not_found::respond(app, &ctx, &request_headers).await
                };
            finish::finish(app, &ctx, res, &headers)
        }
        Resolution::Output(output) => {
            let res = serve_output(app, &ctx, &output, body).await;
            finish_output(app, &ctx, &output, res)
        }
    }
}

/// The last steps for an output's response: the matched page of a `_next/data` answer, then
/// the routing headers (stage 5).
fn finish_output(
    app: &Arc<App>,
    ctx: &RequestCtx,
    output: &ferry_router::Output,
    mut res: Response<Body>,
) -> Response<Body> {
    if output.next_data_page || marked_data_request(app, ctx) {
        name_data_page(app, output, &mut res);
    }
    let mut headers = output.headers.clone();
    headers.extend(rsc_rewrite_headers(ctx, output));
    finish::finish(app, ctx, res, &headers)
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

/// A page served at its `_next/data` URL: next-server (the route module's `prepare`) answers a
/// request marked `x-nextjs-data` with `x-nextjs-matched-path: /<locale><page>` when it renders
/// it with 200, from its cache too. Files (other than the pages router's own HTML pages) are
/// served by the router before that layer and get no such header.
fn name_data_page(app: &App, output: &ferry_router::Output, res: &mut Response<Body>) {
    if res.status() != http::StatusCode::OK
        || res.headers().contains_key("x-nextjs-matched-path")
        || (app.statics.get(&output.pathname).is_some() && !files::is_pages_html(app, output))
    {
        return;
    }
    let base = app.manifest.config.base_path.as_str();
    let page = functions::data_request_page(app, &output.pathname).unwrap_or_else(|| {
        output
            .pathname
            .strip_prefix(base)
            .filter(|p| p.starts_with('/'))
            .unwrap_or(&output.pathname)
            .to_owned()
    });
    // A prerendered page of a dynamic route is named by its route (`/en-US/blog/[slug]`).
    let page = if app.functions.contains_key(&format!("{base}{page}")) {
        page
    } else {
        page_template(app, &page).unwrap_or(page)
    };
    if let Ok(value) = http::HeaderValue::from_str(&page) {
        res.headers_mut().insert("x-nextjs-matched-path", value);
    }
}

/// The dynamic page route (`/en-US/blog/[slug]`, basePath-less) a concrete page path
/// (`/en-US/blog/hello`) belongs to: the function pathname whose segments match, the one with
/// the most literal segments when several do.
fn page_template(app: &App, page: &str) -> Option<String> {
    let base = app.manifest.config.base_path.as_str();
    let segments: Vec<&str> = page.split('/').filter(|s| !s.is_empty()).collect();
    app.functions
        .keys()
        .filter_map(|p| p.strip_prefix(base).filter(|t| t.contains('[')))
        .filter(|t| !t.contains("/_next/data/"))
        .filter_map(|t| {
            let pattern: Vec<&str> = t.split('/').filter(|s| !s.is_empty()).collect();
            template_matches(&pattern, &segments).map(|literal| (literal, t))
        })
        .max_by_key(|(literal, _)| *literal)
        .map(|(_, t)| t.to_owned())
}

/// Whether route segments (`blog`, `[slug]`, `[...rest]`, `[[...rest]]`) match a path's
/// segments; the number of literal segments when they do.
fn template_matches(pattern: &[&str], path: &[&str]) -> Option<usize> {
    let mut literal = 0;
    for (i, seg) in pattern.iter().enumerate() {
        if seg.starts_with("[[...") {
            return (i == pattern.len() - 1).then_some(literal);
        }
        if seg.starts_with("[...") {
            return (i == pattern.len() - 1 && path.len() > i).then_some(literal);
        }
        let actual = path.get(i)?;
        if seg.starts_with('[') && seg.ends_with(']') {
            continue;
        }
        if seg != actual {
            return None;
        }
        literal += 1;
    }
    (pattern.len() == path.len()).then_some(literal)
}

/// next start's router marks a `_next/data/…json` request `x-nextjs-data` when the app has a
/// middleware (resolve-routes.js `middleware_next_data`), whatever its build id.
fn marked_data_request(app: &App, ctx: &RequestCtx) -> bool {
    if app.middleware.is_none() {
        return false;
    }
    let path = ctx.parts.uri.path();
    let base = app.manifest.config.base_path.as_str();
    let rest = path
        .strip_prefix(base)
        .filter(|r| !base.is_empty() && r.starts_with('/'))
        .unwrap_or(path);
    rest.starts_with("/_next/data/") && rest.ends_with(".json")
}

/// A marked data request that found nothing: router-server's `invokeRender('/404')` answers
/// `{}` (404, JSON) naming the pathname routing ended on, not the 404 page.
fn data_not_found(app: &App, ctx: &RequestCtx) -> Response<Body> {
    let mut res = Response::new(ferry_http::full("{}"));
    *res.status_mut() = http::StatusCode::NOT_FOUND;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    res.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static(ferry_static::CACHE_PRIVATE),
    );
    if let Ok(v) = http::HeaderValue::from_str(&data_request_pathname(app, ctx)) {
        res.headers_mut().insert("x-nextjs-matched-path", v);
    }
    res
}

/// The pathname next start's router gives a `_next/data` request of the current build: the
/// page path, with the default locale when it has none, the basePath it came with and the
/// trailing slash (`/docs/_next/data/<id>/nope.json` → `/docs/en-US/nope/`); other data URLs
/// keep their path.
fn data_request_pathname(app: &App, ctx: &RequestCtx) -> String {
    let path = ctx.parts.uri.path();
    let cfg = &app.manifest.config;
    let base = cfg.base_path.as_str();
    let (had_base, rest) = match path
        .strip_prefix(base)
        .filter(|r| !base.is_empty() && r.starts_with('/'))
    {
        Some(r) => (true, r),
        None => (false, path),
    };
    let prefix = format!("/_next/data/{}/", app.manifest.build_id);
    let Some(page) = rest
        .strip_prefix(prefix.as_str())
        .and_then(|p| p.strip_suffix(".json"))
    else {
        return path.to_owned();
    };
    let mut page = if page == "index" {
        "/".to_owned()
    } else {
        format!("/{page}")
    };
    if let Some(i18n) = cfg.i18n.as_ref() {
        let first = page.split('/').nth(1).unwrap_or_default();
        if !i18n.locales.iter().any(|l| l.eq_ignore_ascii_case(first)) {
            let default = functions::default_locale(app, ctx);
            page = if page == "/" {
                format!("/{default}")
            } else {
                format!("/{default}{page}")
            };
        }
    }
    if had_base {
        page = if page == "/" {
            base.to_owned()
        } else {
            format!("{base}{page}")
        };
    }
    if cfg.trailing_slash && !page.ends_with('/') {
        page.push('/');
    }
    page
}

/// The filesystem outcome: a static file, a prerender, or a function, in that order.
async fn serve_output(
    app: &Arc<App>,
    ctx: &RequestCtx,
    output: &ferry_router::Output,
    body: Body,
) -> Response<Body> {
    // next's BLOCKED_PAGES: the pages router's internals are never routable (in any locale).
    let page = files::page_of(app, &output.pathname);
    if matches!(page, "/_app" | "/_document" | "/_error") {
        return not_found::respond(app, ctx, &output.request_headers).await;
    }
    // next build writes a default `500.html` (the adapter lists it as a static file) but keeps it
    // out of the pages-manifest, so next start never routes `/500` to it: the 404 page answers.
    // With i18n the per-locale `500.html` files are pages next start serves (with status 500).
    let unlocalized = output
        .pathname
        .strip_prefix(app.manifest.config.base_path.as_str())
        .unwrap_or(&output.pathname);
    if unlocalized == "/500" && !app.functions.contains_key(&output.pathname) {
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
    // App pages and route handlers alike (an RSC request to `/api/x` without the right `_rsc`
    // gets next start's 307 too; edge-app differential).
    functions::function_for(app, base).is_some_and(|f| {
        matches!(
            f.kind,
            ferry_workers::EntryKind::AppPage | ferry_workers::EntryKind::AppRoute
        )
    }) && base != "/_not-found"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_page_templates_match_by_segment() {
        let m = |t: &str, p: &str| {
            let t: Vec<&str> = t.split('/').filter(|s| !s.is_empty()).collect();
            let p: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
            template_matches(&t, &p)
        };
        assert_eq!(m("/en-US/blog/[slug]", "/en-US/blog/hello"), Some(2));
        assert_eq!(m("/en-US/blog/[slug]", "/fr/blog/hello"), None);
        assert_eq!(m("/en-US/blog/[slug]", "/en-US/blog/a/b"), None);
        assert_eq!(m("/catch/[[...parts]]", "/catch"), Some(1));
        assert_eq!(m("/catch/[...parts]", "/catch"), None);
        assert_eq!(m("/catch/[...parts]", "/catch/a/b"), Some(1));
    }
}
