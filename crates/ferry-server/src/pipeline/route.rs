//! Stage 2: Next.js routing. The router is pure; this stage feeds it the request and, when a
//! middleware matcher matches, runs the middleware / proxy in a worker and hands its answer back.

use std::sync::Arc;

use bytes::Bytes;
use ferry_http::Body;
use ferry_router::{MiddlewareEffect, RequestInfo, Resolution, Step};
use ferry_workers::Invocation;
use http::{HeaderMap, HeaderName, HeaderValue, Response, Uri};
use http_body_util::{BodyExt, Limited};

use super::{RequestCtx, functions, guard};
use crate::App;

/// Largest request body buffered so both the middleware and the route can read it (next's
/// default `proxyClientMaxBodySize` is 10 MB).
pub const MIDDLEWARE_BODY_LIMIT: usize = 10 * 1024 * 1024;

/// What routing produced.
pub enum Routed {
    /// Serve this resolution; the body is handed on.
    Resolved(Resolution, Body),
    /// The middleware answered (or failed): send this response.
    Respond(Response<Body>),
}

/// Builds the router's view of the request.
pub fn request_info(app: &App, ctx: &RequestCtx) -> RequestInfo {
    let uri = &ctx.parts.uri;
    let headers = ctx
        .parts
        .headers
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), latin1(value.as_bytes())))
        .collect();
    let host = ctx
        .parts
        .headers
        .get(http::header::HOST)
        .map(|h| latin1(h.as_bytes()))
        .or_else(|| uri.authority().map(|a| a.as_str().to_owned()));
    RequestInfo {
        method: ctx.parts.method.as_str().to_owned(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers,
        host,
        secure: false,
        init_origin: functions::init_origin(app),
    }
}

/// Node decodes header bytes as latin-1; so do we, so regexes see the same characters.
fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| b as char).collect()
}

/// Runs every routing phase, with the middleware when it matches.
pub async fn route(app: &Arc<App>, ctx: &RequestCtx, body: Body) -> Routed {
    let info = request_info(app, ctx);
    let mut state = match app.router.start(&info) {
        Step::Done(resolution) => return Routed::Resolved(resolution, body),
        Step::Continue(state) => state,
    };
    let Some(middleware) = app
        .middleware
        .as_ref()
        .filter(|_| app.router.middleware_matches(&state))
    else {
        return Routed::Resolved(app.router.finish(state), body);
    };

    // The middleware may read the body and so may the route after it: buffer it once.
    let bytes = match buffer_body(ctx, body).await {
        Ok(bytes) => bytes,
        Err(res) => return Routed::Respond(res),
    };
    let uri: Uri = match state.middleware_url().parse() {
        Ok(uri) => uri,
        Err(_) => return Routed::Respond(guard::reject(400)),
    };
    let mut inv = Invocation::new(
        middleware.entry.clone(),
        middleware.kind,
        ctx.parts.method.clone(),
        uri,
    );
    inv.headers = header_map(state.request_headers().raw());
    inv.body = ferry_http::full(bytes.clone());
    inv.meta = functions::middleware_meta(app, ctx, state.middleware_url());
    let Some(pool) = app.workers.as_ref() else {
        return Routed::Resolved(app.router.finish(state), ferry_http::full(bytes));
    };
    let res = match pool.dispatch(inv).await {
        Ok(res) => res,
        Err(err) => {
            tracing::error!("middleware failed for {}: {err}", ctx.parts.uri);
            return Routed::Respond(ferry_http::HttpError::to_response(&err));
        }
    };
    let status = res.status().as_u16();
    let pairs: Vec<(String, String)> = res
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), latin1(v.as_bytes())))
        .collect();
    match app.router.apply_middleware(&mut state, status, &pairs) {
        MiddlewareEffect::Continue => {
            Routed::Resolved(app.router.finish(state), ferry_http::full(bytes))
        }
        MiddlewareEffect::Done(resolution) => {
            Routed::Resolved(*resolution, ferry_http::full(bytes))
        }
        MiddlewareEffect::Respond => Routed::Respond(strip_middleware_signals(res)),
    }
}

async fn buffer_body(ctx: &RequestCtx, body: Body) -> Result<Bytes, Response<Body>> {
    if matches!(ctx.parts.method, http::Method::GET | http::Method::HEAD)
        && !ctx.parts.headers.contains_key(http::header::CONTENT_LENGTH)
        && !ctx
            .parts
            .headers
            .contains_key(http::header::TRANSFER_ENCODING)
    {
        return Ok(Bytes::new());
    }
    match Limited::new(body, MIDDLEWARE_BODY_LIMIT).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => Err(guard::reject(413)),
        Err(_) => Err(guard::reject(400)),
    }
}

/// Converts router header pairs back into a `HeaderMap`, dropping what cannot be a header.
pub fn header_map(pairs: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(pairs.len());
    for (name, value) in pairs {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            latin1_header(value),
        ) else {
            continue;
        };
        map.append(name, value);
    }
    map
}

/// Encodes a latin-1 string back into header bytes.
pub fn latin1_header(value: &str) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
    let bytes: Vec<u8> = value
        .chars()
        .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
        .collect();
    HeaderValue::from_bytes(&bytes)
}

/// A middleware that answers itself must not leak the internal signalling headers.
fn strip_middleware_signals(mut res: Response<Body>) -> Response<Body> {
    let doomed: Vec<HeaderName> = res
        .headers()
        .keys()
        .filter(|k| k.as_str().starts_with("x-middleware-"))
        .cloned()
        .collect();
    for name in doomed {
        res.headers_mut().remove(name);
    }
    res
}
