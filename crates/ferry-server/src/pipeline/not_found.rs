//! The 404 page: the app router's `/_not-found`, else the pages router's `/404`, else plain text.

use std::sync::Arc;

use ferry_http::{Body, HttpError};
use ferry_workers::Invocation;
use http::{Response, StatusCode};

use super::{RequestCtx, functions, route::header_map};
use crate::App;

/// `sec-fetch-dest` values that are not a document (is-non-html-sec-fetch-dest.js).
const NON_HTML_DESTS: &[&str] = &[
    "audio",
    "audioworklet",
    "font",
    "image",
    "json",
    "manifest",
    "paintworklet",
    "report",
    "script",
    "serviceworker",
    "sharedworker",
    "style",
    "track",
    "video",
    "webidentity",
    "worker",
    "xslt",
];

/// next start's router answers some misses with plain text instead of the 404 page: a missing
/// `/_next/static/` asset, and a GET/HEAD for a subresource (`sec-fetch-dest` not a document).
fn plain_not_found(app: &App, ctx: &RequestCtx) -> Option<Response<Body>> {
    // The router's view of the path: dot segments (`..`, `%2e%2e`) resolved, as WHATWG URL does.
    let resolved = url::Url::parse(&format!("http://n{}", ctx.parts.uri.path()));
    let path = resolved.as_ref().map_or(ctx.parts.uri.path(), |u| u.path());
    let path = path
        .strip_prefix(app.manifest.config.base_path.as_str())
        .filter(|p| p.starts_with('/'))
        .unwrap_or(path);
    let subresource = matches!(ctx.parts.method, http::Method::GET | http::Method::HEAD)
        && ctx
            .parts
            .headers
            .get("sec-fetch-dest")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|d| NON_HTML_DESTS.contains(&d));
    if !path.starts_with("/_next/static/") && !subresource {
        return None;
    }
    let mut res = ferry_http::text_response(StatusCode::NOT_FOUND, "Not Found");
    res.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static(ferry_static::CACHE_PRIVATE),
    );
    Some(res)
}

/// The request URL names an RSC payload (`/x.rsc`, `/x.segments/…segment.rsc`).
pub fn is_rsc_url(app: &App, ctx: &RequestCtx) -> bool {
    let rsc = &app.manifest.routing.rsc;
    let path = ctx.parts.uri.path();
    !rsc.suffix.is_empty() && path.ends_with(rsc.suffix.as_str())
}

/// Renders the app's 404 page for the current request.
pub async fn respond(
    app: &Arc<App>,
    ctx: &RequestCtx,
    request_headers: &[(String, String)],
) -> Response<Body> {
    if let Some(res) = plain_not_found(app, ctx) {
        return res;
    }
    if let (Some(function), Some(pool)) = (app.functions.get("/_not-found"), app.workers.as_ref()) {
        let uri = ctx.parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        if let Ok(uri) = uri.parse() {
            let method = if ctx.parts.method == http::Method::HEAD {
                http::Method::HEAD
            } else {
                http::Method::GET
            };
            let mut inv = Invocation::new(function.entry.clone(), function.kind, method, uri);
            inv.headers = header_map(request_headers);
            if is_rsc_url(app, ctx) {
                // next-server's RSC normalizer turns a `.rsc` URL into an RSC request for
                // whatever it renders, the 404 page included.
                let rsc = &app.manifest.routing.rsc.header;
                if let Ok(name) = http::HeaderName::from_bytes(rsc.as_bytes()) {
                    inv.headers
                        .insert(name, http::HeaderValue::from_static("1"));
                }
            }
            inv.meta = functions::meta(app, ctx);
            return match pool.dispatch(inv).await {
                Ok(mut res) => {
                    *res.status_mut() = StatusCode::NOT_FOUND;
                    // next start's router-server sets this before it renders the 404 page, and
                    // the page's own `sendRenderResult` keeps a Cache-Control already set.
                    res.headers_mut().insert(
                        http::header::CACHE_CONTROL,
                        http::HeaderValue::from_static(ferry_static::CACHE_PRIVATE),
                    );
                    res
                }
                Err(err) => err.to_response(),
            };
        }
    }
    if let Some(entry) = app.statics.get("/404") {
        let mut res = app
            .statics
            .respond(entry, &http::Method::GET, &http::HeaderMap::new())
            .await;
        *res.status_mut() = StatusCode::NOT_FOUND;
        res.headers_mut().insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static(ferry_static::CACHE_PRIVATE),
        );
        if ctx.parts.method == http::Method::HEAD {
            *res.body_mut() = ferry_http::empty();
        }
        return res;
    }
    ferry_http::text_response(StatusCode::NOT_FOUND, "404: This page could not be found.")
}
