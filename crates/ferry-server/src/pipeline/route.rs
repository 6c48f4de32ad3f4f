//! Stage 2: Next.js routing. The router is pure; this stage feeds it the request and, when a
//! middleware matcher matches, runs the middleware / proxy in a worker and hands its answer back.

use std::sync::Arc;

use bytes::Bytes;
use ferry_http::Body;
use ferry_router::{MiddlewareEffect, RequestInfo, Resolution, Step};
use ferry_workers::Invocation;
use http::{HeaderMap, HeaderName, HeaderValue, Response, Uri};
use http_body_util::{BodyExt, Limited};

use super::{RequestCtx, functions, fused, guard};
use crate::App;

/// Largest request body buffered so both the middleware and the route can read it (next's
/// default `proxyClientMaxBodySize` is 10 MB).
pub const MIDDLEWARE_BODY_LIMIT: usize = 10 * 1024 * 1024;

/// What routing produced.
pub enum Routed {
    /// Serve this resolution; the body is handed on.
    Resolved(Resolution, Body),
    /// The middleware answered (or failed): send this response, with the response headers
    /// routing resolved before it (next start keeps the `headers()` rules on it).
    Respond(Response<Body>, Vec<(String, String)>),
    /// The middleware and the page it let through ran in one worker trip (`fused.rs`).
    Rendered(Box<fused::Rendered>),
}

/// Builds the router's view of the request.
pub fn request_info(app: &App, ctx: &RequestCtx) -> RequestInfo {
    let uri = &ctx.parts.uri;
    let headers = header_pairs(&ctx.parts.headers);
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

/// A static file whose routing depends only on its path, resolved once when the router was
/// built: requests without a query or the RSC header skip the routing phases.
fn path_only(app: &App, ctx: &RequestCtx) -> Option<Resolution> {
    let parts = &ctx.parts;
    if !matches!(parts.method, http::Method::GET | http::Method::HEAD)
        || parts.uri.query().is_some()
        || parts.headers.contains_key(app.router.rsc_header())
    {
        return None;
    }
    let output = app.router.path_only_output(parts.uri.path())?;
    Some(Resolution::Output(ferry_router::Output {
        request_headers: header_pairs(&parts.headers),
        ..output.clone()
    }))
}

/// The request's headers as the router sees them.
fn header_pairs(headers: &HeaderMap) -> ferry_router::SharedHeaders {
    std::sync::Arc::new(
        headers
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), latin1(value.as_bytes())))
            .collect(),
    )
}

/// Node decodes header bytes as latin-1; so do we, so regexes see the same characters.
fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| b as char).collect()
}

/// Runs every routing phase, with the middleware when it matches; again (as next start's
/// router-server does) while a `fallback: false` page declines the path.
pub async fn route(app: &Arc<App>, ctx: &RequestCtx, body: Body) -> Routed {
    if let Some(resolution) = path_only(app, ctx) {
        return Routed::Resolved(resolution, body);
    }
    let mut info = request_info(app, ctx);
    let mut declined: Vec<String> = Vec::new();
    let mut earlier: Vec<(String, String)> = Vec::new();
    let mut body = body;
    loop {
        let routed = route_pass(app, ctx, &info, &declined, body).await;
        match routed {
            Routed::Resolved(
                Resolution::NotFound {
                    headers,
                    request_headers,
                    declined: Some(page),
                    ..
                },
                rest,
            ) if declined.len() + 1 < ferry_router::Router::MAX_PASSES => {
                // router-server.js `handleRequest(handleIndex + 1)`: the response keeps what
                // this pass set (its routing headers; the page's `x-nextjs-matched-path`).
                Resolution::merge_headers(&mut earlier, headers);
                if is_data_request(&request_headers) {
                    Resolution::merge_headers(
                        &mut earlier,
                        vec![(
                            "x-nextjs-matched-path".to_owned(),
                            strip_base_path(app, &page).to_owned(),
                        )],
                    );
                }
                declined.push(page);
                info = app.router.no_fallback_retry(&info, &request_headers);
                body = rest;
            }
            Routed::Resolved(resolution, rest) if !declined.is_empty() => {
                return retried(
                    app,
                    ctx,
                    &info,
                    resolution.with_earlier_headers(earlier),
                    rest,
                )
                .await;
            }
            Routed::Respond(res, headers) if !declined.is_empty() => {
                let mut all = earlier;
                Resolution::merge_headers(&mut all, headers);
                return Routed::Respond(res, all);
            }
            Routed::Resolved(
                Resolution::NotFound {
                    headers,
                    request_headers,
                    status,
                    declined: None,
                },
                rest,
            ) => {
                if let Some(res) = decoded_data_page(app, &info, &request_headers) {
                    return Routed::Respond(res, headers);
                }
                return Routed::Resolved(
                    Resolution::NotFound {
                        headers,
                        request_headers,
                        status,
                        declined: None,
                    },
                    rest,
                );
            }
            other => return other,
        }
    }
}

/// A `_next/data` request (marked, with middleware) for a page named only by its decoded
/// spelling (`/_next/data/<id>/en-US/st%61tic.json`): next start invokes the page, whose render
/// matches no page at that spelling and, for a data request, answers `{}` with 200 naming the
/// path it tried (base-server.js `renderToResponseImpl`), without Cache-Control.
fn decoded_data_page(
    app: &App,
    info: &RequestInfo,
    request_headers: &[(String, String)],
) -> Option<Response<Body>> {
    if app.middleware.is_none() || !is_data_request(request_headers) {
        return None;
    }
    let base = app.manifest.config.base_path.as_str();
    let rest = info
        .path
        .strip_prefix(base)
        .filter(|r| r.starts_with('/'))?;
    let page = rest
        .strip_prefix(&format!("/_next/data/{}/", app.manifest.build_id))?
        .strip_suffix(".json")?;
    let page = if page == "index" {
        "/".to_owned()
    } else {
        format!("/{page}")
    };
    let page_info = RequestInfo {
        path: format!("{base}{page}"),
        ..info.clone()
    };
    let pathname = app.router.next_start_pathname(&page_info);
    if !app
        .router
        .names_page_by_decoded_spelling(&pathname, info.host.as_deref())
    {
        return None;
    }
    let matched = strip_base_path(app, &pathname);
    let matched = matched
        .strip_suffix('/')
        .filter(|m| !m.is_empty())
        .unwrap_or(matched);
    let mut res = Response::new(ferry_http::full("{}"));
    let h = res.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(matched) {
        h.insert("x-nextjs-matched-path", v);
    }
    Some(res)
}

/// Whether routing marked the request a `_next/data` request (`x-nextjs-data`).
fn is_data_request(request_headers: &[(String, String)]) -> bool {
    request_headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("x-nextjs-data"))
}

/// An output pathname without the app's basePath.
fn strip_base_path<'a>(app: &App, pathname: &'a str) -> &'a str {
    let base = app.manifest.config.base_path.as_str();
    pathname
        .strip_prefix(base)
        .filter(|r| !base.is_empty() && r.starts_with('/'))
        .unwrap_or(pathname)
}

/// The outcome of a later routing pass. A miss is answered here: router-server renders the 404
/// for the URL that pass routed (the page declined the request's own), so the 404 page is the
/// one of that URL's locale and a marked data request's `{}` names that pass's pathname.
async fn retried(
    app: &Arc<App>,
    ctx: &RequestCtx,
    info: &RequestInfo,
    resolution: Resolution,
    body: Body,
) -> Routed {
    let Resolution::NotFound {
        headers,
        request_headers,
        ..
    } = resolution
    else {
        return Routed::Resolved(resolution, body);
    };
    let pathname = app.router.next_start_pathname(info);
    let data = is_data_request(&request_headers)
        && app.middleware.is_some()
        && !app.functions.contains_key("/_not-found");
    if data {
        let mut res = Response::new(ferry_http::full("{}"));
        *res.status_mut() = http::StatusCode::NOT_FOUND;
        let h = res.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static(ferry_static::CACHE_PRIVATE),
        );
        if let Ok(v) = HeaderValue::from_str(&pathname) {
            h.insert("x-nextjs-matched-path", v);
        }
        return Routed::Respond(res, headers);
    }
    let locale = app.router.path_locale(&pathname);
    let res = super::not_found::respond_in(app, ctx, &request_headers, locale.as_deref()).await;
    Routed::Respond(res, headers)
}

/// One routing pass (router-server.js `resolveRoutes`), skipping the pages earlier passes
/// invoked and that declined.
async fn route_pass(
    app: &Arc<App>,
    ctx: &RequestCtx,
    info: &RequestInfo,
    declined: &[String],
    body: Body,
) -> Routed {
    let mut state = match app.router.start(info) {
        Step::Done(resolution) => return Routed::Resolved(resolution, body),
        Step::Continue(state) => state,
    };
    state.set_declined(declined.to_vec());
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
        Err(res) => return Routed::Respond(res, Vec::new()),
    };
    let url = next_start_middleware_url(app, ctx, state.middleware_url());
    let uri: Uri = match url.parse() {
        Ok(uri) => uri,
        Err(_) => return Routed::Respond(guard::reject(400), Vec::new()),
    };
    let mut inv = Invocation::new(
        middleware.entry.clone(),
        middleware.kind,
        ctx.parts.method.clone(),
        uri,
    );
    inv.headers = header_map(state.request_headers().raw());
    functions::add_forwarded_headers(app, ctx, &mut inv.headers);
    inv.body = ferry_http::full(bytes.clone());
    inv.meta = functions::middleware_meta(app, ctx, &url);
    let Some(pool) = app.workers.as_ref() else {
        return Routed::Resolved(app.router.finish(state), ferry_http::full(bytes));
    };
    let planned = if declined.is_empty() && bytes.is_empty() {
        fused::plan(app, ctx, &state, middleware, &inv)
    } else {
        None
    };
    let res = if let Some(plan) = planned {
        match fused::run(app, ctx, pool, &mut state, plan, inv).await {
            fused::Outcome::Rendered(rendered) => return Routed::Rendered(rendered),
            fused::Outcome::Routed(routed) => return routed,
            fused::Outcome::MiddlewareAnswered(res) => res,
        }
    } else {
        match pool.dispatch(inv).await {
            Ok(res) => res,
            Err(err) => {
                tracing::error!("middleware failed for {}: {err}", ctx.parts.uri);
                return Routed::Respond(ferry_http::HttpError::to_response(&err), Vec::new());
            }
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
        MiddlewareEffect::Respond => Routed::Respond(
            strip_middleware_signals(res),
            state.response_headers().sorted_combined(),
        ),
    }
}

/// The URL next start gives the middleware (next-server.js `runMiddleware`):
/// `<origin>/<locale><pathname><?query>`, where `pathname` is the routed page path with the
/// basePath and the locale prefix the router added (a `_next/data` URL in its page form), and
/// `locale` the request's. The adapter then parses it twice (`NextURL`, and again once it
/// dropped a default locale), so the proxy sees `/static/` for `/docs/static/` and
/// `/docs/en-US/static/`, but `/docs/fr/static/` (locale `fr`) for `/docs/fr/static/`.
fn next_start_middleware_url(app: &App, ctx: &RequestCtx, routed: &str) -> String {
    middleware_url_for(
        &app.manifest.config,
        &app.manifest.build_id,
        functions::default_locale(app, ctx),
        routed,
    )
}

/// [`next_start_middleware_url`] for a config, build id and the request's default locale.
fn middleware_url_for(
    cfg: &ferry_manifest::RuntimeConfig,
    build_id: &str,
    default_locale: &str,
    routed: &str,
) -> String {
    // `skipProxyUrlNormalize`: next-server hands the middleware the initURL as it is.
    let Some(i18n) = cfg
        .i18n
        .as_ref()
        .filter(|_| !cfg.skip_middleware_url_normalize)
    else {
        return routed.to_owned();
    };
    let Ok(mut url) = url::Url::parse(routed) else {
        return routed.to_owned();
    };
    let base = cfg.base_path.as_str();
    let trailing = cfg.trailing_slash;
    let path = url.path().to_owned();
    let (had_base, rest) = match path
        .strip_prefix(base)
        .filter(|r| !base.is_empty() && (r.is_empty() || r.starts_with('/')))
    {
        Some("") => (true, "/"),
        Some(r) => (true, r),
        None => (false, path.as_str()),
    };
    // `_next/data/<buildId>/<page>.json` → the page path (resolve-routes' `middleware_next_data`).
    let data_prefix = format!("/_next/data/{build_id}/");
    let mut page = match rest
        .strip_prefix(&data_prefix)
        .and_then(|p| p.strip_suffix(".json"))
    {
        Some(p) => {
            let p = format!("/{p}");
            let p = if p == "/index" { "/".to_owned() } else { p };
            if trailing && !p.ends_with('/') {
                format!("{p}/")
            } else {
                p
            }
        }
        None => rest.to_owned(),
    };
    let first = page.split('/').nth(1).unwrap_or_default();
    let locale = match i18n.locales.iter().find(|l| l.eq_ignore_ascii_case(first)) {
        // The locale in its configured spelling; the path keeps the request's (`/NL-NL/`).
        Some(l) => l.clone(),
        None => {
            let default = default_locale.to_owned();
            if !page.starts_with("/_next/") {
                page = if page == "/" {
                    format!("/{default}{}", if trailing { "/" } else { "" })
                } else {
                    format!("/{default}{page}")
                };
            }
            default
        }
    };
    let page = if had_base {
        format!("{base}{page}")
    } else {
        page
    };
    url.set_path(&format!("/{locale}{page}"));
    url.to_string()
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
pub(crate) fn strip_middleware_signals(mut res: Response<Body>) -> Response<Body> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ferry_manifest::RuntimeConfig {
        serde_json::from_value(serde_json::json!({
            "basePath": "/docs",
            "trailingSlash": true,
            "i18n": { "locales": ["en-US", "fr", "nl-NL"], "defaultLocale": "en-US" }
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// What next-server's runMiddleware builds (`/<locale><routed pathname>`), checked against
    /// `next start` 16.4.6 on tests/fixtures/routing-app: the proxy then sees `fr
    /// /docs/fr/static/` for `/docs/fr/static/` but `en-US /static/` for `/docs/static/`.
    #[test]
    fn middleware_url_is_next_starts_locale_prefixed_routed_path() {
        let cfg = config();
        let url = |routed: &str| middleware_url_for(&cfg, "B", "en-US", routed);
        assert_eq!(
            url("http://localhost:3000/docs/fr/static/"),
            "http://localhost:3000/fr/docs/fr/static/"
        );
        assert_eq!(
            url("http://localhost:3000/docs/static/?a=1"),
            "http://localhost:3000/en-US/docs/en-US/static/?a=1"
        );
        assert_eq!(
            url("http://localhost:3000/docs/NL-NL/static/"),
            "http://localhost:3000/nl-NL/docs/NL-NL/static/"
        );
        assert_eq!(
            url("http://localhost:3000/docs/_next/data/B/fr/static.json"),
            "http://localhost:3000/fr/docs/fr/static/"
        );
        assert_eq!(
            url("http://localhost:3000/docs/_next/data/B/en-US.json"),
            "http://localhost:3000/en-US/docs/en-US/"
        );
        assert_eq!(
            middleware_url_for(&cfg, "B", "fr", "http://localhost:3000/docs/static/"),
            "http://localhost:3000/fr/docs/fr/static/"
        );
    }
}
