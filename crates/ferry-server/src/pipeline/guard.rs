//! Stage 1: reject what cannot be served and strip headers only Ferry may set.
//!
//! Next.js trusts some request headers as internal signals between its own layers. A client that
//! sends them could skip the proxy (`x-middleware-subrequest`, CVE-2025-29927), pick the route
//! (`x-matched-path`, `x-invoke-*`) or force a regeneration. They are removed at the edge; the
//! revalidation headers survive only with the deployment's secret bypass token, which is how
//! Next's own `res.revalidate()` calls back into the server.

use ferry_http::Body;
use http::header::HeaderName;
use http::{HeaderMap, Response, StatusCode};

use crate::App;

/// Longest request target accepted (path and query), like common proxies' 8 KB limit.
pub const MAX_URI_LEN: usize = 8 * 1024;

/// Header names a client may never send.
const FORBIDDEN: &[&str] = &[
    "x-middleware-subrequest",
    "x-middleware-invoke",
    "x-middleware-next",
    "x-middleware-rewrite",
    "x-middleware-redirect",
    "x-middleware-set-cookie",
    "x-middleware-skip",
    "x-middleware-override-headers",
    "x-matched-path",
    "x-now-route-matches",
    "x-next-resume",
    "next-resume",
    "x-nextjs-data",
];

/// Prefixes of header names a client may never send.
const FORBIDDEN_PREFIXES: &[&str] = &["x-middleware-request-", "x-invoke-", "x-ferry-"];

/// Headers honoured only together with the right `x-prerender-revalidate` token.
const TOKEN_GATED: &[&str] = &[
    "x-prerender-revalidate",
    "x-prerender-revalidate-if-generated",
    "x-next-revalidated-tags",
    "x-next-revalidate-tag-token",
];

/// Validates the request and sanitizes its headers in place.
/// `Err` carries the status to reject with.
pub fn check(app: &App, parts: &mut http::request::Parts) -> Result<(), u16> {
    let target_len = parts.uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    if target_len > MAX_URI_LEN {
        return Err(414);
    }
    let path = parts.uri.path();
    if !path.starts_with('/') {
        // `OPTIONS *` and authority-form targets have nothing to serve here.
        return Err(400);
    }
    strip_internal_headers(&mut parts.headers, app.prerenders.bypass_token());
    Ok(())
}

/// Removes every internal header; keeps the revalidation ones only with a valid token.
pub fn strip_internal_headers(headers: &mut HeaderMap, bypass_token: Option<&str>) {
    let token_ok = match (headers.get("x-prerender-revalidate"), bypass_token) {
        (Some(sent), Some(token)) => constant_time_eq(sent.as_bytes(), token.as_bytes()),
        _ => false,
    };
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            let n = name.as_str();
            FORBIDDEN.contains(&n)
                || FORBIDDEN_PREFIXES.iter().any(|p| n.starts_with(p))
                || (!token_ok && TOKEN_GATED.contains(&n))
        })
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }
}

/// Compares secrets without an early exit.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A plain error response for a rejected request.
pub fn reject(status: u16) -> Response<Body> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let reason = status.canonical_reason().unwrap_or("Bad Request");
    ferry_http::text_response(status, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        h
    }

    #[test]
    fn forged_middleware_subrequest_is_removed() {
        let mut h = headers(&[
            (
                "x-middleware-subrequest",
                "middleware:middleware:middleware:middleware:middleware",
            ),
            ("x-matched-path", "/admin"),
            ("x-invoke-path", "/admin"),
            ("x-middleware-request-cookie", "a=b"),
            ("accept", "text/html"),
        ]);
        strip_internal_headers(&mut h, Some("secret"));
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("accept"));
    }

    #[test]
    fn revalidate_header_survives_only_with_the_token() {
        let mut h = headers(&[("x-prerender-revalidate", "guess")]);
        strip_internal_headers(&mut h, Some("secret"));
        assert!(h.is_empty());
        let mut h = headers(&[
            ("x-prerender-revalidate", "secret"),
            ("x-prerender-revalidate-if-generated", "1"),
        ]);
        strip_internal_headers(&mut h, Some("secret"));
        assert_eq!(h.len(), 2);
        let mut h = headers(&[("x-prerender-revalidate", "secret")]);
        strip_internal_headers(&mut h, None);
        assert!(h.is_empty());
    }
}
