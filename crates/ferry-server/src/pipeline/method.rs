//! Stage 3b: which methods a page accepts, as next-server's `renderToResponseWithComponents`
//! (base-server.js) decides before it runs a page's entrypoint:
//!
//! - a non-GET/HEAD request to an SSG page (or a prerendered route handler) that is not a
//!   possible Server Action: 405, `Allow: GET` + `Allow: HEAD`, body `Method Not Allowed`;
//! - an `OPTIONS` request to any other page (not a route handler, not the 404 page): 400, empty.
//!
//! Both come after next-server set the router `Vary` (app pages; pages-router pages only for an
//! RSC request). Entrypoints invoked directly skip that layer, so Ferry applies it here.

use ferry_http::Body;
use ferry_workers::EntryKind;
use http::{HeaderValue, Method, Response, StatusCode, header};

use super::RequestCtx;
use crate::App;
use crate::app::Function;

/// The page function an output belongs to (its `.rsc` / segment variants included).
pub fn page_function<'a>(app: &'a App, output: &ferry_router::Output) -> Option<&'a Function> {
    let pathname = output.pathname.as_str();
    let base = pathname
        .find(".segments/")
        .map_or(pathname, |i| &pathname[..i]);
    let base = base.strip_suffix(".rsc").unwrap_or(base);
    let base = if base == "/index" { "/" } else { base };
    app.functions
        .get(base)
        .or_else(|| {
            // A concrete prerendered pathname (`/blog/hello`): the page it was rendered from.
            // Only non-GET requests get here, so a scan is fine.
            let parent = app
                .manifest
                .prerenders
                .iter()
                .find(|p| p.pathname == base)?;
            app.functions_by_id.get(&parent.parent_output_id)
        })
        // Route handlers only when prerendered (a `force-static` GET): next start answers
        // another method 405 there too; other route handlers handle every method themselves.
        .filter(|f| {
            matches!(f.kind, EntryKind::AppPage | EntryKind::Pages)
                || (f.kind == EntryKind::AppRoute && f.ssg)
        })
}

/// `getIsPossibleServerAction` (server-action-request-meta.js).
pub fn is_possible_server_action(ctx: &RequestCtx) -> bool {
    if ctx.parts.method != Method::POST {
        return false;
    }
    let headers = &ctx.parts.headers;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    headers.contains_key("next-action")
        || content_type == "application/x-www-form-urlencoded"
        || content_type.starts_with("multipart/form-data")
}

/// Error pages are exempt from both rules.
fn is_error_page(pathname: &str) -> bool {
    matches!(pathname, "/_not-found" | "/404" | "/500" | "/_error")
}

/// The response next-server gives instead of running the page, if any.
pub fn check(app: &App, ctx: &RequestCtx, output: &ferry_router::Output) -> Option<Response<Body>> {
    let method = &ctx.parts.method;
    if method == Method::GET || method == Method::HEAD {
        return None;
    }
    let function = page_function(app, output)?;
    let base = output
        .pathname
        .split(".segments/")
        .next()
        .unwrap_or_default();
    let base = base.strip_suffix(".rsc").unwrap_or(base);
    if is_error_page(base) {
        return None;
    }
    let mut res = if function.ssg && !is_possible_server_action(ctx) {
        let mut res = Response::new(ferry_http::full("Method Not Allowed"));
        *res.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        // Node's setHeader('Allow', ['GET', 'HEAD']) sends two header lines.
        res.headers_mut()
            .append(header::ALLOW, HeaderValue::from_static("GET"));
        res.headers_mut()
            .append(header::ALLOW, HeaderValue::from_static("HEAD"));
        res
    } else if method == Method::OPTIONS {
        let mut res = Response::new(ferry_http::empty());
        *res.status_mut() = StatusCode::BAD_REQUEST;
        res
    } else {
        return None;
    };
    let rsc_request = output.rsc.as_ref().is_some_and(|r| r.header);
    if matches!(function.kind, EntryKind::AppPage | EntryKind::AppRoute) || rsc_request {
        super::functions::prepend_vary(res.headers_mut(), &app.manifest.routing.rsc.vary_header);
    }
    Some(res)
}
