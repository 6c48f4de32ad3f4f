//! What Ferry asks a worker to run, and how it travels on the wire to the bridge.

use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Method, Request, Uri};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde::Serialize;

use crate::WorkerError;

/// Header carrying the entry module path (percent-encoded).
pub const ENTRY_HEADER: &str = "x-ferry-entry";
/// Header carrying the [`EntryKind`].
pub const KIND_HEADER: &str = "x-ferry-kind";
/// Header carrying the JSON [`InvocationMeta`].
pub const META_HEADER: &str = "x-ferry-meta";
/// Response header the bridge sets when a handler asked for the 404 page.
pub const NOT_FOUND_HEADER: &str = "x-ferry-not-found";
/// Response header the bridge sets when the handler threw before responding.
pub const ERROR_HEADER: &str = "x-ferry-error";

/// The kind of entrypoint, which decides the calling convention in the bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// `pages/` page: `handler(req, res, ctx)`.
    Pages,
    /// `pages/api` route: `handler(req, res, ctx)`.
    PagesApi,
    /// `app/` page: `handler(req, res, ctx)`.
    AppPage,
    /// `app/` route handler: `handler(req, res, ctx)`.
    AppRoute,
    /// middleware / proxy: `handler(Request, ctx) -> Response`, answered as-is.
    Middleware,
    /// `/_next/image`: the bridge runs next start's image optimizer (the entry is ignored).
    Image,
}

impl EntryKind {
    /// The wire name (`x-ferry-kind`).
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Pages => "PAGES",
            EntryKind::PagesApi => "PAGES_API",
            EntryKind::AppPage => "APP_PAGE",
            EntryKind::AppRoute => "APP_ROUTE",
            EntryKind::Middleware => "MIDDLEWARE",
            EntryKind::Image => "IMAGE",
        }
    }
}

impl From<ferry_manifest::FunctionKind> for EntryKind {
    fn from(kind: ferry_manifest::FunctionKind) -> Self {
        match kind {
            ferry_manifest::FunctionKind::Pages => EntryKind::Pages,
            ferry_manifest::FunctionKind::PagesApi => EntryKind::PagesApi,
            ferry_manifest::FunctionKind::AppPage => EntryKind::AppPage,
            ferry_manifest::FunctionKind::AppRoute => EntryKind::AppRoute,
        }
    }
}

/// The `requestMeta` bits the bridge hands to the entrypoint.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct InvocationMeta {
    /// Public hostname (like `next start -H`); default `localhost`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Public port; with it the bridge builds `initURL` as `proto://hostname:port/url` like next start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `http` or `https`; default `http`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// The original request URL (absolute), before rewrites; overrides the computed one.
    #[serde(rename = "initURL", skip_serializing_if = "Option::is_none")]
    pub init_url: Option<String>,
    /// Origin for on-demand revalidation requests (`res.revalidate`), e.g. `http://127.0.0.1:3000`.
    #[serde(rename = "revalidateOrigin", skip_serializing_if = "Option::is_none")]
    pub revalidate_origin: Option<String>,
    /// Any other plain `requestMeta` field (`params`, `query`, `isRSCRequest`, `postponed`, ...).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// One request for a worker: which entry to run and the request to run it with.
#[derive(Debug)]
pub struct Invocation {
    /// Entry module: absolute, or relative to the project dir.
    pub entry: String,
    /// Calling convention.
    pub kind: EntryKind,
    /// Request method.
    pub method: Method,
    /// Invocation path + query (`req.url` in the handler); scheme and authority are ignored.
    pub uri: Uri,
    /// Request headers as the entrypoint should see them (hop-by-hop ones are dropped).
    pub headers: HeaderMap,
    /// Request body, streamed to the worker.
    pub body: ferry_http::Body,
    /// `requestMeta` bits.
    pub meta: InvocationMeta,
}

impl Invocation {
    /// A request with no headers, no body and default meta.
    pub fn new(entry: impl Into<String>, kind: EntryKind, method: Method, uri: Uri) -> Self {
        Invocation {
            entry: entry.into(),
            kind,
            method,
            uri,
            headers: HeaderMap::new(),
            body: ferry_http::empty(),
            meta: InvocationMeta::default(),
        }
    }
}

/// Bytes of an entry path that are percent-encoded (the bridge decodes with `decodeURIComponent`).
const ENTRY_SET: &AsciiSet = &CONTROLS.add(b'%').add(b' ');

/// `Expect` is answered by Ferry's own server, never forwarded to a worker.
const NOT_FORWARDED: &[&str] = &["expect"];

/// Builds the HTTP/1.1 request the bridge receives.
pub(crate) fn to_request(inv: Invocation) -> Result<Request<ferry_http::Body>, WorkerError> {
    let Invocation {
        entry,
        kind,
        method,
        uri,
        mut headers,
        body,
        meta,
    } = inv;
    if entry.is_empty() {
        return Err(WorkerError::InvalidInvocation("empty entry".into()));
    }
    let target = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let target = if target.starts_with('/') {
        target.to_owned()
    } else {
        format!("/{target}")
    };
    let target: Uri = target
        .parse()
        .map_err(|e| WorkerError::InvalidInvocation(format!("invocation uri: {e}")))?;

    // `Connection: foo` makes `foo` hop-by-hop too.
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in ferry_http::HOP_BY_HOP.iter().chain(NOT_FORWARDED).chain(&[
        ENTRY_HEADER,
        KIND_HEADER,
        META_HEADER,
    ]) {
        headers.remove(*name);
    }
    if !headers.contains_key(header::HOST) {
        // Node's HTTP/1.1 server rejects requests without Host.
        let host = match (&meta.hostname, meta.port) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.clone(),
            (None, Some(p)) => format!("localhost:{p}"),
            (None, None) => "localhost".to_owned(),
        };
        let value = HeaderValue::from_str(&host)
            .map_err(|_| WorkerError::InvalidInvocation(format!("hostname {host:?}")))?;
        headers.insert(header::HOST, value);
    }
    let entry_value = HeaderValue::from_str(&utf8_percent_encode(&entry, ENTRY_SET).to_string())
        .map_err(|_| WorkerError::InvalidInvocation(format!("entry {entry:?}")))?;
    headers.insert(ENTRY_HEADER, entry_value);
    headers.insert(KIND_HEADER, HeaderValue::from_static(kind.as_str()));
    let meta_json = ascii_json(&meta)?;
    if meta_json != "{}" {
        let value = HeaderValue::from_str(&meta_json)
            .map_err(|_| WorkerError::InvalidInvocation("meta is not a valid header".into()))?;
        headers.insert(META_HEADER, value);
    }

    // The framing must describe the body actually sent, never the client's: an invocation that
    // drops or replaces the body (the 404 page after a POST, an error page) would otherwise
    // announce bytes that never come, and the worker would read the next request as them.
    if let Some(len) = http_body::Body::size_hint(&body).exact() {
        let announced = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if announced.is_some_and(|n| n != len)
            || (announced.is_none() && headers.contains_key(header::CONTENT_LENGTH))
        {
            if len == 0 {
                headers.remove(header::CONTENT_LENGTH);
            } else {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            }
        }
    }

    let mut req = Request::new(body);
    *req.method_mut() = method;
    *req.uri_mut() = target;
    *req.headers_mut() = headers;
    Ok(req)
}

/// JSON with every non-ASCII character escaped, so it fits in a header value.
fn ascii_json(meta: &InvocationMeta) -> Result<String, WorkerError> {
    let json = serde_json::to_string(meta)
        .map_err(|e| WorkerError::InvalidInvocation(format!("meta: {e}")))?;
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() && !c.is_ascii_control() {
            out.push(c);
        } else {
            let mut buf = [0u16; 2];
            for unit in c.encode_utf16(&mut buf) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_follows_the_body_sent() {
        let mut inv = Invocation::new(
            "/abs/page.js",
            EntryKind::AppPage,
            Method::GET,
            Uri::from_static("/x"),
        );
        inv.headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("1"));
        let req = to_request(inv).unwrap_or_else(|e| panic!("{e}"));
        assert!(req.headers().get(header::CONTENT_LENGTH).is_none());

        let mut inv = Invocation::new(
            "/abs/page.js",
            EntryKind::AppPage,
            Method::POST,
            Uri::from_static("/x"),
        );
        inv.headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("9"));
        inv.body = ferry_http::full("abc");
        let req = to_request(inv).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            req.headers()
                .get(header::CONTENT_LENGTH)
                .map(|v| v.as_bytes()),
            Some(&b"3"[..])
        );

        let mut inv = Invocation::new(
            "/abs/page.js",
            EntryKind::AppPage,
            Method::POST,
            Uri::from_static("/x"),
        );
        inv.headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        inv.body = ferry_http::full("abc");
        let req = to_request(inv).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            req.headers()
                .get(header::CONTENT_LENGTH)
                .map(|v| v.as_bytes()),
            Some(&b"3"[..])
        );
    }

    #[test]
    fn strips_hop_by_hop_and_spoofed_internal_headers() {
        let mut inv = Invocation::new(
            "/abs/app/[slug]/page.js",
            EntryKind::AppPage,
            Method::GET,
            Uri::from_static("http://example.com/blog/x?a=1"),
        );
        inv.headers
            .insert("connection", HeaderValue::from_static("keep-alive, x-foo"));
        inv.headers.insert("x-foo", HeaderValue::from_static("1"));
        inv.headers
            .insert("x-ferry-entry", HeaderValue::from_static("/etc/passwd"));
        inv.headers
            .insert("transfer-encoding", HeaderValue::from_static("chunked"));
        inv.headers
            .insert("cookie", HeaderValue::from_static("a=b"));
        inv.meta.hostname = Some("example.test".into());
        inv.meta.port = Some(3000);
        inv.meta
            .extra
            .insert("label".into(), serde_json::Value::String("é😀".into()));
        let req = to_request(inv).expect("request");
        assert_eq!(req.uri(), "/blog/x?a=1");
        let h = req.headers();
        assert!(h.get("x-foo").is_none());
        assert!(h.get("connection").is_none());
        assert!(h.get("transfer-encoding").is_none());
        assert_eq!(h["cookie"], "a=b");
        assert_eq!(h[ENTRY_HEADER], "/abs/app/[slug]/page.js");
        assert_eq!(h[KIND_HEADER], "APP_PAGE");
        assert_eq!(
            h[META_HEADER],
            r#"{"hostname":"example.test","port":3000,"label":"\u00e9\ud83d\ude00"}"#
        );
        assert_eq!(h["host"], "example.test:3000");
    }

    #[test]
    fn entry_with_percent_and_non_ascii_is_encoded() {
        let inv = Invocation::new(
            "app/100%/é.js",
            EntryKind::Pages,
            Method::GET,
            Uri::from_static("/"),
        );
        let req = to_request(inv).expect("request");
        assert_eq!(req.headers()[ENTRY_HEADER], "app/100%25/%C3%A9.js");
        assert_eq!(req.headers()["host"], "localhost");
        assert!(req.headers().get(META_HEADER).is_none());
    }

    #[test]
    fn extra_meta_is_flattened() {
        let mut meta = InvocationMeta {
            init_url: Some("http://a:1/x".into()),
            ..Default::default()
        };
        meta.extra
            .insert("isRSCRequest".into(), serde_json::Value::Bool(true));
        assert_eq!(
            ascii_json(&meta).expect("json"),
            r#"{"initURL":"http://a:1/x","isRSCRequest":true}"#
        );
    }
}
