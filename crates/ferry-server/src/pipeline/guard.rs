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

/// Node's default `--max-http-header-size`: request line plus headers. Over it: 431.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Most header fields a request may carry (HTTP/1.1: hyper's parser refuses more with 431;
/// HTTP/2: checked here). Node keeps 2000 and drops the rest; browsers send ~20, proxies add a
/// few; 256 leaves room and bounds per-request header work.
pub const MAX_HEADERS: usize = 256;

/// The methods Node's HTTP parser (llhttp) accepts; any other is a parse error (400).
const NODE_METHODS: &[&str] = &[
    "DELETE",
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "CONNECT",
    "OPTIONS",
    "TRACE",
    "COPY",
    "LOCK",
    "MKCOL",
    "MOVE",
    "PROPFIND",
    "PROPPATCH",
    "SEARCH",
    "UNLOCK",
    "BIND",
    "REBIND",
    "UNBIND",
    "ACL",
    "REPORT",
    "MKACTIVITY",
    "CHECKOUT",
    "MERGE",
    "M-SEARCH",
    "NOTIFY",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "PATCH",
    "PURGE",
    "MKCALENDAR",
    "LINK",
    "UNLINK",
    "SOURCE",
    "QUERY",
];

/// Why a request is refused before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// What Node's HTTP server itself answers: the status and an empty body.
    Node(StatusCode),
    /// Ferry's own limits: the status with its reason phrase as text.
    Ferry(u16),
}

impl Rejection {
    /// The response to send.
    pub fn into_response(self) -> Response<Body> {
        match self {
            Rejection::Node(status) => bare(status),
            Rejection::Ferry(status) => reject(status),
        }
    }
}

/// Validates the request and sanitizes its headers in place.
/// `Err` says how to refuse it.
pub fn check(app: &App, parts: &mut http::request::Parts) -> Result<(), Rejection> {
    // What Node's HTTP server refuses before next start sees the request: a head over its
    // size limit (431), a method its parser does not know, an HTTP/1.1 request without Host
    // (400); it answers those with an empty body.
    if head_len(parts) > MAX_HEAD_BYTES {
        return Err(Rejection::Node(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
    }
    // HTTP/1.1 never gets here with more (the parser refuses them); HTTP/2 does.
    if parts.headers.len() > MAX_HEADERS {
        return Err(Rejection::Ferry(431));
    }
    if !NODE_METHODS.contains(&parts.method.as_str())
        || (parts.version == http::Version::HTTP_11
            && !parts.headers.contains_key(http::header::HOST))
    {
        return Err(Rejection::Node(StatusCode::BAD_REQUEST));
    }
    let target_len = parts.uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    if target_len > MAX_URI_LEN {
        return Err(Rejection::Ferry(414));
    }
    let path = parts.uri.path();
    if !path.starts_with('/') {
        // `OPTIONS *` and authority-form targets have nothing to serve here.
        return Err(Rejection::Ferry(400));
    }
    strip_internal_headers(&mut parts.headers, app.prerenders.bypass_token());
    Ok(())
}

/// Bytes of the request line and headers as sent (`name: value\r\n` each).
fn head_len(parts: &http::request::Parts) -> usize {
    let target = parts.uri.to_string().len();
    let line = parts.method.as_str().len() + target + " HTTP/1.1\r\n".len() + 1;
    parts
        .headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + line
}

/// An empty response with only a status, as Node's parser-level errors are.
fn bare(status: StatusCode) -> Response<Body> {
    let mut res = Response::new(ferry_http::empty());
    *res.status_mut() = status;
    res
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
    fn node_parser_limits() {
        let parts = |req: http::Request<()>| req.into_parts().0;
        let ok = parts(
            http::Request::get("/x")
                .header("host", "a")
                .body(())
                .unwrap_or_default(),
        );
        assert!(head_len(&ok) < 64);
        let big = parts(
            http::Request::get(format!("/{}", "a".repeat(MAX_HEAD_BYTES)))
                .header("host", "a")
                .body(())
                .unwrap_or_default(),
        );
        assert!(head_len(&big) > MAX_HEAD_BYTES);
        // MAX_HEADERS small headers stay under MAX_HEAD_BYTES, so the count limit is its own.
        assert!(MAX_HEADERS * "x-h000: v\r\n".len() < MAX_HEAD_BYTES);
        assert!(NODE_METHODS.contains(&"PATCH") && !NODE_METHODS.contains(&"FOO"));
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
