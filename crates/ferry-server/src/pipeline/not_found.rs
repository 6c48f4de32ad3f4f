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

/// The static 404 page for this request: `<basePath>/404`, or with i18n the one of the
/// request's locale (`<basePath>/<locale>/404`: the locale in the path, else the domain's or the
/// default locale), as next-server renders the 404 page in the request's locale.
fn not_found_file<'a>(
    app: &'a App,
    ctx: &RequestCtx,
    locale: Option<&str>,
) -> Option<&'a ferry_static::StaticEntry> {
    let base = app.manifest.config.base_path.as_str();
    let Some(i18n) = &app.manifest.config.i18n else {
        return app.statics.get(&format!("{base}/404"));
    };
    if let Some(locale) = locale {
        return app
            .statics
            .get(&format!("{base}/{locale}/404"))
            .or_else(|| app.statics.get(&format!("{base}/404")));
    }
    let path = ctx.parts.uri.path();
    let rest = path
        .strip_prefix(base)
        .filter(|p| p.starts_with('/'))
        .unwrap_or(path);
    let first = rest.split('/').nth(1).unwrap_or_default();
    let host = ctx
        .parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| h.split(':').next().unwrap_or(h).to_ascii_lowercase());
    let locale = i18n
        .locales
        .iter()
        .find(|l| l.eq_ignore_ascii_case(first))
        .or_else(|| {
            i18n.domains
                .iter()
                .find(|d| host.as_deref() == Some(d.domain.to_ascii_lowercase().as_str()))
                .map(|d| &d.default_locale)
        })
        .unwrap_or(&i18n.default_locale);
    app.statics
        .get(&format!("{base}/{locale}/404"))
        .or_else(|| app.statics.get(&format!("{base}/404")))
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
    respond_in(app, ctx, request_headers, None).await
}

/// [`respond`], with the pages router's 404 page of `locale` instead of the request's.
pub async fn respond_in(
    app: &Arc<App>,
    ctx: &RequestCtx,
    request_headers: &[(String, String)],
    locale: Option<&str>,
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
            // router-server's `invokeRender('/_not-found', { invokeStatus: 404 })`: the render
            // starts as a 404 (so a `_next/data` request gets no `x-nextjs-matched-path`).
            inv.meta.extra.insert("invokeStatus".into(), 404.into());
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
    if let Some(entry) = not_found_file(app, ctx, locale) {
        // next start's router-server sets the private Cache-Control before it renders the 404
        // page for a miss, and `sendRenderResult` keeps it.
        // A request for `/404` itself is the page, rendered without that header.
        let requested = ctx.parts.uri.path();
        let requested = requested
            .strip_suffix('/')
            .filter(|p| !p.is_empty())
            .unwrap_or(requested);
        let private = (super::files::page_of(app, requested) != "/404")
            .then(|| http::HeaderValue::from_static(ferry_static::CACHE_PRIVATE));
        return static_page_as_rendered(app, ctx, entry, StatusCode::NOT_FOUND, private).await;
    }
    ferry_http::text_response(StatusCode::NOT_FOUND, "404: This page could not be found.")
}

/// A static HTML page of the pages router (an automatically static page, or the 404 page)
/// answered the way next-server sends a rendered page (`sendRenderResult`): `status`, the
/// file's Content-Type, a strong ETag of the bytes (with `generateEtags`; a matching
/// `If-None-Match` answers 304), `X-Powered-By`, no file validators or ranges, and
/// `cache_control` when the router set one first. Without file headers the finish stage treats
/// it as rendered (runtime compression), as next start does.
pub async fn static_page_as_rendered(
    app: &App,
    ctx: &RequestCtx,
    entry: &ferry_static::StaticEntry,
    status: StatusCode,
    cache_control: Option<http::HeaderValue>,
) -> Response<Body> {
    use http_body_util::BodyExt;
    let file = app
        .statics
        .respond(entry, &http::Method::GET, &http::HeaderMap::new())
        .await;
    let (parts, body) = file.into_parts();
    let Ok(collected) = http_body_util::Limited::new(body, 8 * 1024 * 1024)
        .collect()
        .await
    else {
        return super::guard::reject(500);
    };
    let bytes = collected.to_bytes();
    let mut res = Response::new(ferry_http::empty());
    let h = res.headers_mut();
    if app.manifest.config.powered_by_header {
        h.insert("x-powered-by", http::HeaderValue::from_static("Next.js"));
    }
    if let Some(cc) = cache_control {
        h.insert(http::header::CACHE_CONTROL, cc);
    }
    if app.manifest.config.generate_etags
        && let Ok(etag) = http::HeaderValue::from_str(&ferry_prerender::generate_etag(&bytes))
    {
        let fresh = etag_fresh(&ctx.parts.headers, &etag);
        h.insert(http::header::ETAG, etag);
        if fresh {
            *res.status_mut() = StatusCode::NOT_MODIFIED;
            return res;
        }
    }
    *res.status_mut() = status;
    let h = res.headers_mut();
    if let Some(ct) = parts.headers.get(http::header::CONTENT_TYPE) {
        h.insert(http::header::CONTENT_TYPE, ct.clone());
    }
    h.insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from(bytes.len()),
    );
    if ctx.parts.method != http::Method::HEAD {
        *res.body_mut() = ferry_http::full(bytes);
    }
    res
}

/// The `fresh` package for a response with only an ETag: `If-None-Match` lists it (weakly
/// compared, or `*`) and the request does not say `Cache-Control: no-cache`.
fn etag_fresh(headers: &http::HeaderMap, etag: &http::HeaderValue) -> bool {
    let Some(inm) = headers
        .get(http::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let no_cache = headers
        .get(http::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|cc| {
            cc.split(',')
                .any(|d| d.trim().eq_ignore_ascii_case("no-cache"))
        });
    if no_cache {
        return false;
    }
    let Ok(etag) = etag.to_str() else {
        return false;
    };
    let bare = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    inm.trim() == "*" || inm.split(',').any(|t| bare(t) == bare(etag))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_freshness_follows_the_fresh_package() {
        let etag = http::HeaderValue::from_static("\"abc\"");
        let mut h = http::HeaderMap::new();
        assert!(!etag_fresh(&h, &etag));
        h.insert(
            http::header::IF_NONE_MATCH,
            http::HeaderValue::from_static("\"x\", W/\"abc\""),
        );
        assert!(etag_fresh(&h, &etag));
        h.insert(
            http::header::IF_NONE_MATCH,
            http::HeaderValue::from_static("*"),
        );
        assert!(etag_fresh(&h, &etag));
        h.insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-cache"),
        );
        assert!(!etag_fresh(&h, &etag));
    }
}
