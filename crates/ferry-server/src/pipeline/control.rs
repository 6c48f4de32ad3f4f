//! Stage 0: control requests from Ferry's own workers, authenticated by a per-process secret.
//!
//! When app code calls `revalidateTag` / `revalidatePath` (a Server Action, a route handler), the
//! worker's Next.js runtime invalidates its own cache; the bridge then tells Ferry here, so the
//! Rust prerender cache stops serving the invalidated entries. Anything without the secret falls
//! through to the normal pipeline (and a 404), so the path reveals nothing.

use std::sync::Arc;

use ferry_http::Body;
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde_json::Value;

use crate::App;

/// URL prefix of control requests.
pub const PREFIX: &str = "/__ferry/control";
/// Header carrying the secret.
pub const TOKEN_HEADER: &str = "x-ferry-control-token";
/// Control bodies are small JSON documents.
const MAX_BODY: usize = 1024 * 1024;

/// Whether the request is a control request with the right secret.
pub fn is_control(app: &App, parts: &http::request::Parts) -> bool {
    parts.method == Method::POST
        && parts.uri.path().starts_with(PREFIX)
        && parts.headers.get(TOKEN_HEADER).is_some_and(|t| {
            super::guard::constant_time_eq(t.as_bytes(), app.control_token.as_bytes())
        })
}

/// Handles an authenticated control request.
pub async fn handle(app: &Arc<App>, parts: &http::request::Parts, body: Body) -> Response<Body> {
    let Ok(collected) = Limited::new(body, MAX_BODY).collect().await else {
        return status(StatusCode::BAD_REQUEST);
    };
    let Ok(json) = serde_json::from_slice::<Value>(&collected.to_bytes()) else {
        return status(StatusCode::BAD_REQUEST);
    };
    let strings = |key: &str| -> Vec<String> {
        json.get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    match parts.uri.path().strip_prefix(PREFIX) {
        Some("/revalidate-tags") => {
            let tags = strings("tags");
            let expire = json.get("expire").and_then(Value::as_bool).unwrap_or(false);
            tracing::debug!("revalidate tags {tags:?} (expire: {expire})");
            if expire {
                app.prerenders.expire_tags(&tags);
            } else {
                app.prerenders.invalidate_tags(&tags);
            }
            status(StatusCode::NO_CONTENT)
        }
        _ => status(StatusCode::NOT_FOUND),
    }
}

fn status(code: StatusCode) -> Response<Body> {
    let mut res = Response::new(ferry_http::empty());
    *res.status_mut() = code;
    res
}
