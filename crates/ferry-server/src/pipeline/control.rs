//! Stage 0: control requests from Ferry's own workers, authenticated by a per-process secret.
//!
//! When app code calls `revalidateTag` / `revalidatePath` (a Server Action, a route handler), the
//! worker's Next.js runtime invalidates its own cache; the bridge then tells Ferry here, so the
//! Rust prerender cache stops serving the invalidated entries. Anything without the secret falls
//! through to the normal pipeline (and a 404), so the path reveals nothing.
//!
//! The workers' cache handlers (`js/cache-handler/`: Next's `cacheHandler` for the fetch cache
//! and `unstable_cache`, `cacheHandlers` for `'use cache'`) keep their entries here too, in the
//! prerender cache's store (see `ferry_prerender::data`), so every worker and every instance on
//! one Redis shares them. All requests are `POST <PREFIX><path>`:
//!
//! | path | request body | answer |
//! |---|---|---|
//! | `/revalidate-tags` | `{"tags": [..], "expire": bool}` | 204 |
//! | `/data-get` | `{"key": "..", "tags": [soft tags]}` | 200 frame `{"tags", "created", "stale"}` + value, or 404 |
//! | `/data-set` | frame `{"key", "tags", "created"?, "revalidate"?, "expire"?}` + value | 204 |
//! | `/tag-marks` | `{"tags": [..]}` | 200 `{"stale": ms, "expired": ms}` (0: never) |
//!
//! A *frame* is one line of JSON metadata, a `\n`, then the raw value bytes (JSON never contains
//! a raw newline, and the value needs no escaping). Times are milliseconds since the epoch.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use ferry_http::Body;
use ferry_prerender::DataEntry;
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde_json::{Value, json};

use crate::App;

/// URL prefix of control requests.
pub const PREFIX: &str = "/__ferry/control";
/// Header carrying the secret.
pub const TOKEN_HEADER: &str = "x-ferry-control-token";
/// Control bodies are small JSON documents.
const MAX_BODY: usize = 1024 * 1024;
/// A data cache value (a fetch response, a `'use cache'` result) may be large; the request is
/// authenticated, and the store's memory tier bounds what it keeps.
const MAX_DATA_BODY: usize = 64 * 1024 * 1024;

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
    let path = parts.uri.path().strip_prefix(PREFIX).unwrap_or_default();
    let limit = if path == "/data-set" {
        MAX_DATA_BODY
    } else {
        MAX_BODY
    };
    let Ok(collected) = Limited::new(body, limit).collect().await else {
        return status(StatusCode::BAD_REQUEST);
    };
    let bytes = collected.to_bytes();
    if path == "/data-set" {
        return data_set(app, bytes).await;
    }
    let Ok(json) = serde_json::from_slice::<Value>(&bytes) else {
        return status(StatusCode::BAD_REQUEST);
    };
    match path {
        "/revalidate-tags" => {
            let tags = strings(&json, "tags");
            let expire = json.get("expire").and_then(Value::as_bool).unwrap_or(false);
            tracing::debug!("revalidate tags {tags:?} (expire: {expire})");
            super::prerendered::cache_write(app, move |c| {
                if expire {
                    c.expire_tags(&tags);
                } else {
                    c.invalidate_tags(&tags);
                }
            })
            .await;
            status(StatusCode::NO_CONTENT)
        }
        "/data-get" => {
            let Some(key) = json.get("key").and_then(Value::as_str) else {
                return status(StatusCode::BAD_REQUEST);
            };
            let soft_tags = strings(&json, "tags");
            match app
                .prerenders
                .data_get(key, &soft_tags, SystemTime::now())
                .await
            {
                Some(hit) => {
                    let meta = json!({
                        "tags": hit.entry.tags,
                        "created": millis(hit.entry.created),
                        "stale": hit.stale,
                    });
                    let mut frame = BytesMut::from(meta.to_string().as_bytes());
                    frame.extend_from_slice(b"\n");
                    frame.extend_from_slice(&hit.entry.value);
                    let mut res = Response::new(ferry_http::full(frame.freeze()));
                    res.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/octet-stream"),
                    );
                    res
                }
                None => status(StatusCode::NOT_FOUND),
            }
        }
        "/tag-marks" => {
            let marks = app.prerenders.tag_marks(&strings(&json, "tags"));
            let body = json!({
                "stale": marks.stale.map_or(0, millis),
                "expired": marks.expired.map_or(0, millis),
            });
            let mut res = Response::new(ferry_http::full(Bytes::from(body.to_string())));
            res.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            res
        }
        _ => status(StatusCode::NOT_FOUND),
    }
}

/// `/data-set`: stores one framed entry.
async fn data_set(app: &Arc<App>, frame: Bytes) -> Response<Body> {
    let Some(newline) = frame.iter().position(|&b| b == b'\n') else {
        return status(StatusCode::BAD_REQUEST);
    };
    let Ok(meta) = serde_json::from_slice::<Value>(&frame[..newline]) else {
        return status(StatusCode::BAD_REQUEST);
    };
    let Some(key) = meta.get("key").and_then(Value::as_str).map(str::to_owned) else {
        return status(StatusCode::BAD_REQUEST);
    };
    let seconds = |field: &str| {
        meta.get(field)
            .and_then(Value::as_f64)
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| s.ceil() as u64)
    };
    let created = meta
        .get("created")
        .and_then(Value::as_f64)
        .filter(|ms| ms.is_finite() && *ms > 0.0)
        .map_or_else(SystemTime::now, |ms| {
            UNIX_EPOCH + Duration::from_micros((ms * 1000.0) as u64)
        });
    let entry = DataEntry {
        value: frame.slice(newline + 1..),
        tags: strings(&meta, "tags"),
        created,
        revalidate: seconds("revalidate"),
        expire: seconds("expire"),
    };
    tracing::debug!("data cache set {key} (tags {:?})", entry.tags);
    super::prerendered::cache_write(app, move |c| c.data_set(&key, entry)).await;
    status(StatusCode::NO_CONTENT)
}

/// The strings of the array `json[key]` (missing or not an array: none).
fn strings(json: &Value, key: &str) -> Vec<String> {
    json.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Milliseconds since the epoch.
fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn status(code: StatusCode) -> Response<Body> {
    let mut res = Response::new(ferry_http::empty());
    *res.status_mut() = code;
    res
}
