//! `/_next/image`: next start's image optimizer, run in a worker (until Ferry has its own).
//!
//! next start matches `<basePath>/_next/image` in routing's filesystem check (`check_fs`), so
//! `headers()` rules, redirects, the middleware and `beforeFiles` rewrites run first and their
//! response headers apply, while `afterFiles`, dynamic routes and `fallback` never see it. The
//! manifest has no output for it, so Ferry's router ends such a request as not found (or in a
//! catch-all route): this stage takes it over then. The worker runs Next's own code
//! (`next/dist/server/image-optimizer`, see the IMAGE section of `js/bridge/bridge.cjs`): same
//! validation messages, headers, disk cache (`$FERRY_CACHE_DIR/cache/images`), ETag / 304.
//!
//! A local `url` is fetched by the worker from Ferry's public port with [`FETCH_HEADER`] set;
//! such a request never reaches the optimizer again, so a rewrite pointing back at
//! `/_next/image` cannot loop (next-server refuses the same with an invariant error).

use std::sync::Arc;

use ferry_http::Body;
use ferry_router::Resolution;
use ferry_workers::{EntryKind, Invocation};
use http::{Response, StatusCode};

use super::{RequestCtx, route};
use crate::App;

/// Request header marking the worker's own fetch of a local image (never answered here).
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
    if !is_image_path(&app.manifest.config.base_path, path) || !optimizer_enabled(app) {
        return None;
    }
    let pool = app.workers.as_ref()?;
    if ctx.parts.headers.contains_key(FETCH_HEADER) {
        // The worker's own fetch of a local image was routed back here.
        tracing::warn!("image url routes back to /_next/image: {}", ctx.parts.uri);
        return Some((
            ferry_http::text_response(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
            headers,
        ));
    }
    let mut inv = Invocation::new(
        ENTRY,
        EntryKind::Image,
        ctx.parts.method.clone(),
        ctx.parts.uri.clone(),
    );
    inv.headers = route::header_map(request_headers);
    let res = match pool.dispatch(inv).await {
        Ok(res) => res,
        Err(err) => {
            tracing::error!("image optimizer failed for {}: {err}", ctx.parts.uri);
            ferry_http::HttpError::to_response(&err)
        }
    };
    Some((res, headers))
}

/// `<basePath>/_next/image`, with next's trailing-slash tolerance.
fn is_image_path(base_path: &str, path: &str) -> bool {
    let Some(rest) = path.strip_prefix(base_path) else {
        return false;
    };
    rest == "/_next/image" || rest == "/_next/image/"
}

/// next-server answers with the 404 page when the default loader is not in use.
fn optimizer_enabled(app: &App) -> bool {
    let images = &app.manifest.config.images;
    let loader = images
        .get("loader")
        .and_then(|v| v.as_str())
        .unwrap_or("default");
    let unoptimized = images
        .get("unoptimized")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    loader == "default" && !unoptimized
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
