//! `/_next/image`: next start's image optimizer, answered in Rust by [`ferry_image`].
//!
//! next start matches `<basePath>/_next/image` in routing's filesystem check (`check_fs`), so
//! `headers()` rules, redirects, the middleware and `beforeFiles` rewrites run first and their
//! response headers apply, while `afterFiles`, dynamic routes and `fallback` never see it. The
//! manifest has no output for it, so Ferry's router ends such a request as not found (or in a
//! catch-all route): this stage takes it over then. [`ferry_image::Optimizer`] gives next's
//! validation messages, headers, disk cache (`<cache root>/cache/images`, next's layout), ETag /
//! 304; one optimizer per app, made on first use.
//!
//! A local `url` is fetched from Ferry's public port with [`FETCH_HEADER`] set (next runs it
//! through its own routing the same way); such a request never reaches the optimizer again, so a
//! rewrite pointing back at `/_next/image` cannot loop (next-server refuses the same with an
//! invariant error).
//!
//! With a Redis `--cache-url`, optimized images are shared between instances
//! ([`ferry_image::SharedCache`]): one instance's transform is a hit on the others.
//!
//! Every type next's `images.formats` accepts (AVIF, WebP) is encoded here. An app whose
//! `formats` names a type [`ferry_image::ENCODABLE`] lacks would keep next's own optimizer in a
//! worker (`next/dist/server/image-optimizer`, the IMAGE section of `js/bridge/bridge.cjs`);
//! that path logs at debug level.

use std::sync::Arc;

use ferry_http::Body;
use ferry_image::{ImageConfig, LoopbackSource, Optimizer, Options, SharedConfig};
use ferry_router::Resolution;
use ferry_workers::{EntryKind, Invocation};
use http::{HeaderName, HeaderValue, Response, StatusCode};

use super::{RequestCtx, route};
use crate::App;

/// Request header marking the optimizer's own fetch of a local image (never answered here).
pub const FETCH_HEADER: &str = "ferry-image-fetch";

/// What the bridge is told to run (it ignores the entry for [`EntryKind::Image`]).
const ENTRY: &str = "next/dist/server/image-optimizer";

/// Serves the request when it is an image optimizer request that routing did not claim:
/// the response plus the routing headers to finish it with; `None` to serve the resolution.
pub async fn serve<'r>(
    app: &Arc<App>,
    ctx: &RequestCtx,
    resolution: &'r Resolution,
) -> Option<(Response<Body>, &'r [(String, String)])> {
    let (path, headers, request_headers) = match resolution {
        Resolution::NotFound {
            headers,
            request_headers,
            ..
        } => (ctx.parts.uri.path(), headers, request_headers),
        Resolution::Output(output) => (
            output.invocation_path.as_str(),
            &output.headers,
            &output.request_headers,
        ),
        // Redirects, external rewrites and rejections come first in next start too.
        _ => return None,
    };
    if !is_image_path(&app.manifest.config.base_path, path) {
        return None;
    }
    // Once the optimizer exists, its parsed config answers (a warm hit parses no JSON).
    let made = app.image_optimizer.get().cloned();
    let parsed;
    let config = match &made {
        Some(o) => o.config(),
        None => {
            parsed = ImageConfig::from_json(&app.manifest.config.images);
            &parsed
        }
    };
    if !config.optimizer_enabled() {
        return None;
    }
    if ctx.parts.headers.contains_key(FETCH_HEADER) {
        // The optimizer's own fetch of a local image was routed back here.
        tracing::warn!("image url routes back to /_next/image: {}", ctx.parts.uri);
        return Some((
            ferry_http::text_response(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
            headers,
        ));
    }
    if !Optimizer::supports_formats(config) {
        return serve_in_worker(app, ctx, route::header_map(request_headers))
            .await
            .map(|res| (res, headers.as_slice()));
    }
    let optimizer = match made {
        Some(o) => o,
        None => optimizer(app, config.clone())?,
    };
    let res = optimizer
        .handle(
            &ctx.parts.method,
            ctx.parts.uri.query().unwrap_or(""),
            &optimizer_headers(request_headers),
        )
        .await;
    Some((res, headers))
}

/// next's own optimizer in a worker, for what [`Optimizer`] cannot produce.
async fn serve_in_worker(
    app: &Arc<App>,
    ctx: &RequestCtx,
    request_headers: http::HeaderMap,
) -> Option<Response<Body>> {
    let pool = app.workers.as_ref()?;
    tracing::debug!("/_next/image in a worker: {}", ctx.parts.uri);
    let mut inv = Invocation::new(
        ENTRY,
        EntryKind::Image,
        ctx.parts.method.clone(),
        ctx.parts.uri.clone(),
    );
    inv.headers = request_headers;
    Some(match pool.dispatch(inv).await {
        Ok(res) => res,
        Err(err) => {
            tracing::error!("image optimizer failed for {}: {err}", ctx.parts.uri);
            ferry_http::HttpError::to_response(&err)
        }
    })
}

/// The app's optimizer, made on first use; `None` before the server has an address.
fn optimizer(app: &Arc<App>, config: ImageConfig) -> Option<Arc<Optimizer>> {
    if let Some(o) = app.image_optimizer.get() {
        return Some(Arc::clone(o));
    }
    let addr = app.local_addr()?;
    let marker = (
        HeaderName::from_static(FETCH_HEADER),
        HeaderValue::from_static("1"),
    );
    let source = match LoopbackSource::new(format!("http://127.0.0.1:{}", addr.port()), marker) {
        Ok(s) => s,
        Err(err) => {
            tracing::error!("cannot start the image optimizer: {err}");
            return None;
        }
    };
    let mut options = Options::new(
        config,
        &app.manifest.config.base_path,
        Some(
            crate::app::cache_root(&app.bundle_dir)
                .join("cache")
                .join("images"),
        ),
    );
    // With Redis, the instances of one deployment share optimized images (keys under the
    // same namespace as the prerender store's).
    options.shared = app.image_cache_url.as_ref().map(|url| SharedConfig {
        url: url.clone(),
        prefix: match &app.manifest.deployment_id {
            Some(d) if !d.is_empty() => format!("ferry:{}.{d}:image:", app.manifest.build_id),
            _ => format!("ferry:{}:image:", app.manifest.build_id),
        },
    });
    // Two first requests racing: one optimizer wins, the other is dropped unused.
    let optimizer = app
        .image_optimizer
        .get_or_init(|| Optimizer::new(options, Arc::new(source)));
    Some(Arc::clone(optimizer))
}

/// The request headers [`Optimizer::handle`] reads (`Accept` and the conditional ones), so a
/// warm hit converts no others.
fn optimizer_headers(pairs: &[(String, String)]) -> http::HeaderMap {
    const READ: [http::header::HeaderName; 4] = [
        http::header::ACCEPT,
        http::header::IF_NONE_MATCH,
        http::header::IF_MODIFIED_SINCE,
        http::header::CACHE_CONTROL,
    ];
    let mut map = http::HeaderMap::new();
    for (name, value) in pairs {
        let Some(known) = READ.iter().find(|n| name.eq_ignore_ascii_case(n.as_str())) else {
            continue;
        };
        if let Ok(v) = route::latin1_header(value) {
            map.append(known.clone(), v);
        }
    }
    map
}

/// `<basePath>/_next/image`, with next's trailing-slash tolerance.
fn is_image_path(base_path: &str, path: &str) -> bool {
    let Some(rest) = path.strip_prefix(base_path) else {
        return false;
    };
    rest == "/_next/image" || rest == "/_next/image/"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_path_honours_base_path_and_trailing_slash() {
        assert!(is_image_path("", "/_next/image"));
        assert!(is_image_path("", "/_next/image/"));
        assert!(is_image_path("/docs", "/docs/_next/image"));
        assert!(!is_image_path("/docs", "/_next/image"));
        assert!(!is_image_path("", "/_next/images"));
        assert!(!is_image_path("", "/_next/image/x"));
        assert!(!is_image_path("", "/_next/IMAGE"));
    }
}
