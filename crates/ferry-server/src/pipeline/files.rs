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
    if matches!(ctx.parts.method, Method::GET | Method::HEAD) && is_pages_html(app, output) {
        // next-server renders these pages (`/404` itself answers 404), it does not stream a file.
        let status = match page_of(app, &output.pathname) {
            "/404" => StatusCode::NOT_FOUND,
            "/500" => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::OK,
        };
        return Some(
            super::not_found::static_page_as_rendered(app, ctx, entry, status, None).await,
        );
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

/// A pages-router HTML output (an automatically static page, `/404`, `/500`): next start
/// serves these through next-server's page rendering, not as files.
pub fn is_pages_html(app: &App, output: &ferry_router::Output) -> bool {
    use ferry_manifest::StaticSource;
    let dot_html = |ct: &str| ct.starts_with("text/html");
    let page = page_of(app, &output.pathname);
    !page.starts_with("/_next/")
        && app.manifest.static_files.iter().any(|f| {
            f.pathname == output.pathname
                && f.source == StaticSource::Output
                && dot_html(&f.content_type)
        })
}

/// An output pathname without the basePath and the locale prefix (`/docs/fr/404` → `/404`).
pub fn page_of<'a>(app: &App, pathname: &'a str) -> &'a str {
    let base = app.manifest.config.base_path.as_str();
    let page = pathname
        .strip_prefix(base)
        .filter(|p| p.starts_with('/'))
        .unwrap_or(pathname);
    let Some(i18n) = app.manifest.config.i18n.as_ref() else {
        return page;
    };
    for locale in &i18n.locales {
        if let Some(rest) = page
            .strip_prefix('/')
            .and_then(|p| p.strip_prefix(locale.as_str()))
        {
            if rest.is_empty() {
                return "/";
            }
            if rest.starts_with('/') {
                return rest;
            }
        }
    }
    page
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
