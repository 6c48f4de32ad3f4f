//! Stage 4: what every response gets on the way out: the headers routing resolved (the
//! response's own headers win, as in next start, except a rendered response's Cache-Control),
//! `X-Powered-By`, runtime compression.

use std::sync::Arc;

use ferry_http::Body;
use ferry_workers::WorkerResponseInfo;
use http::{HeaderValue, Response, header};

use super::{RequestCtx, route::latin1_header};
use crate::App;

/// Applies routing headers, `x-powered-by` and compression.
pub fn finish(
    app: &Arc<App>,
    ctx: &RequestCtx,
    res: Response<Body>,
    routing_headers: &[(String, String)],
) -> Response<Body> {
    let worker = res.extensions().get::<WorkerResponseInfo>();
    let from_worker = worker.is_some();
    let (mut res, routing_headers) = if worker.is_some_and(|w| w.handler_error) {
        // Compressed like any rendered response below (next start's `Vary: Accept-Encoding`).
        (internal_server_error(), &[][..])
    } else {
        (res, routing_headers)
    };
    // A successful render (not a file, not an error page, which set their own Cache-Control).
    let rendered_ok = is_rendered(res.headers()) && res.status().is_success();
    let headers = res.headers_mut();
    for (name, value) in routing_headers {
        // The middleware protocol stays internal, except where next start's router shows a
        // rewrite to the client (resolve-routes.js sets `x-middleware-rewrite` on resHeaders).
        if name.starts_with("x-middleware-") && name != "x-middleware-rewrite" {
            continue;
        }
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            latin1_header(value),
        ) else {
            continue;
        };
        if name == header::SET_COOKIE {
            headers.append(name, value);
        } else if name == header::CACHE_CONTROL && rendered_ok {
            // next start sets routing headers on the response before it renders, and
            // `sendRenderResult` (send-payload.js) only adds its own Cache-Control when none is
            // there: a middleware's (or `headers()` rule's) Cache-Control wins over the page's.
            headers.insert(name, value);
        } else if !headers.contains_key(&name) {
            headers.insert(name, value);
        }
    }
    if app.manifest.config.powered_by_header
        && !headers.contains_key("x-powered-by")
        && is_rendered(headers)
        && is_html(headers)
        && !from_worker
    {
        headers.insert("x-powered-by", HeaderValue::from_static("Next.js"));
    }
    // Files carry their own (build-time) encodings and ranges; only rendered bodies are compressed.
    if app.manifest.config.compress
        && !headers.contains_key(header::CONTENT_ENCODING)
        && is_rendered(headers)
    {
        let accept = ctx
            .parts
            .headers
            .get(header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok());
        return ferry_static::compress_response(res, &ctx.parts.method, accept);
    }
    res
}

/// next start's answer when the code it runs throws before responding (the middleware, a
/// handler's own setup; the worker marks it `x-ferry-error`): router-server's plain-text 500,
/// sent through `sendRenderResult` with the dynamic Cache-Control and an ETag, and none of the
/// headers routing had collected.
fn internal_server_error() -> Response<Body> {
    const BODY: &str = "Internal Server Error";
    let mut res = Response::new(ferry_http::full(BODY));
    *res.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache, no-store, max-age=0, must-revalidate"),
    );
    if let Ok(etag) = HeaderValue::from_str(&ferry_prerender::generate_etag(BODY.as_bytes())) {
        headers.insert(header::ETAG, etag);
    }
    res
}

/// next start sends `X-Powered-By` only from `sendRenderResult` (send-payload.js), and only when
/// the result is HTML: rendered pages and cached prerenders, never files it streams from disk,
/// route handlers, API routes or RSC payloads. A worker's entrypoint calls `sendRenderResult`
/// itself, so only responses Ferry produced without a worker get it here.
fn is_html(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.trim_start()
                .to_ascii_lowercase()
                .starts_with("text/html")
        })
}

/// Not a file streamed from disk (those carry `Accept-Ranges`).
fn is_rendered(headers: &http::HeaderMap) -> bool {
    !headers.contains_key(header::ACCEPT_RANGES)
}
