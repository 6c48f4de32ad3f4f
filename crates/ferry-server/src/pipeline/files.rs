//! Static and public files, answered from Rust with next start's headers.

use std::sync::Arc;

use ferry_http::Body;
use ferry_workers::Invocation;
use http::{HeaderName, Method, Response, StatusCode, header};

use super::{RequestCtx, functions};
use crate::App;

/// Statuses next start's router answers by rendering its error page for a file request
/// (`invokeRender('/<status>')` in router-server.js): a method other than GET/HEAD, and the
/// errors `send` reports (412, 416).
const RENDERED_ERRORS: [StatusCode; 3] = [
    StatusCode::METHOD_NOT_ALLOWED,
    StatusCode::PRECONDITION_FAILED,
    StatusCode::RANGE_NOT_SATISFIABLE,
];

/// Headers of the file response that stay on the rendered error page (set before the render).
const KEPT: [HeaderName; 6] = [
    header::ALLOW,
    header::CONTENT_RANGE,
    header::CONTENT_TYPE,
    header::LAST_MODIFIED,
    header::CACHE_CONTROL,
    header::ACCEPT_RANGES,
];

/// Serves the output when it is a file listed in the bundle.
pub async fn serve(
    app: &Arc<App>,
    ctx: &RequestCtx,
    output: &ferry_router::Output,
) -> Option<Response<Body>> {
    let entry = app.statics.get(&output.pathname)?;
    let page = output
        .pathname
        .strip_prefix(app.manifest.config.base_path.as_str())
        .unwrap_or(&output.pathname);
    if page == "/404" && matches!(ctx.parts.method, Method::GET | Method::HEAD) {
        let res = app
            .statics
            .respond(entry, &Method::GET, &http::HeaderMap::new())
            .await;
        return Some(static_404_page(app, ctx, res).await);
    }
    let res = app
        .statics
        .respond(entry, &ctx.parts.method, &ctx.parts.headers)
        .await;
    if RENDERED_ERRORS.contains(&res.status())
        && ctx.parts.method != Method::OPTIONS
        && let Some(page) = render_error_page(app, ctx, output, res.status()).await
    {
        return Some(with_file_headers(page, &res));
    }
    Some(res)
}

/// A request for `/404` itself: next-server renders the static 404 page as a page (status 404,
/// `sendRenderResult`: strong ETag, `X-Powered-By`, no file validators or Cache-Control).
async fn static_404_page(app: &App, ctx: &RequestCtx, file: Response<Body>) -> Response<Body> {
    use http_body_util::BodyExt;
    let (parts, body) = file.into_parts();
    let Ok(collected) = http_body_util::Limited::new(body, 8 * 1024 * 1024)
        .collect()
        .await
    else {
        return super::guard::reject(500);
    };
    let bytes = collected.to_bytes();
    let mut res = Response::new(if ctx.parts.method == Method::HEAD {
        ferry_http::empty()
    } else {
        ferry_http::full(bytes.clone())
    });
    *res.status_mut() = StatusCode::NOT_FOUND;
    let h = res.headers_mut();
    if let Some(ct) = parts.headers.get(header::CONTENT_TYPE) {
        h.insert(header::CONTENT_TYPE, ct.clone());
    }
    if app.manifest.config.generate_etags
        && let Ok(v) = http::HeaderValue::from_str(&ferry_prerender::generate_etag(&bytes))
    {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CONTENT_LENGTH, http::HeaderValue::from(bytes.len()));
    res
}

/// The pages router's `_error` page rendered for `status`, if the app has one.
async fn render_error_page(
    app: &Arc<App>,
    ctx: &RequestCtx,
    output: &ferry_router::Output,
    status: StatusCode,
) -> Option<Response<Body>> {
    let function = app.functions.get("/_error")?;
    let pool = app.workers.as_ref()?;
    let uri = format!("/{}", status.as_u16()).parse().ok()?;
    let mut inv = Invocation::new(
        function.entry.clone(),
        function.kind,
        ctx.parts.method.clone(),
        uri,
    );
    inv.headers = super::route::header_map(&output.request_headers);
    inv.meta = functions::meta(app, ctx);
    inv.meta
        .extra
        .insert("invokeStatus".into(), status.as_u16().into());
    match pool.dispatch(inv).await {
        Ok(mut res) => {
            *res.status_mut() = status;
            Some(res)
        }
        Err(err) => {
            tracing::warn!("rendering the {status} page failed: {err}");
            None
        }
    }
}

/// The rendered page keeps what the file response had set before the render.
fn with_file_headers(mut page: Response<Body>, file: &Response<Body>) -> Response<Body> {
    for name in KEPT {
        let values: Vec<_> = file.headers().get_all(&name).iter().cloned().collect();
        if values.is_empty() {
            continue;
        }
        page.headers_mut().remove(&name);
        for v in values {
            page.headers_mut().append(name.clone(), v);
        }
    }
    page
}
