//! The 404 page: the app router's `/_not-found`, else the pages router's `/404`, else plain text.

use std::sync::Arc;

use ferry_http::{Body, HttpError};
use ferry_workers::Invocation;
use http::{Response, StatusCode};

use super::{RequestCtx, functions, route::header_map};
use crate::App;

/// Renders the app's 404 page for the current request.
pub async fn respond(
    app: &Arc<App>,
    ctx: &RequestCtx,
    request_headers: &[(String, String)],
) -> Response<Body> {
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
            inv.meta = functions::meta(app, ctx);
            return match pool.dispatch(inv).await {
                Ok(mut res) => {
                    *res.status_mut() = StatusCode::NOT_FOUND;
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
