//! External rewrites: the request is proxied to an absolute `http://` or `https://` destination
//! and the response streamed back, the way next start's `proxyRequest`
//! (router-utils/proxy-request.js, httpxy with `changeOrigin` and no `xfwd`) does it: `Host`
//! becomes the destination's, `x-forwarded-host` carries the client's `Host`, nothing else is
//! added. TLS destinations are verified like Node's https agent does it: the Mozilla root
//! certificates (Node bundles the same list) plus the PEM file `NODE_EXTRA_CA_CERTS` names.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ferry_http::Body;
use http::{HeaderValue, Request, Response, StatusCode, Uri, header};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::{RequestCtx, route::header_map};

/// Time to get response headers from the destination.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// The environment variable Node reads for extra trusted CA certificates (a PEM file).
pub const EXTRA_CA_CERTS_ENV: &str = "NODE_EXTRA_CA_CERTS";

/// A pooled HTTP/1.1 client for external rewrite destinations, `http://` and `https://`.
#[derive(Clone)]
pub struct UpstreamClient {
    client: Client<HttpsConnector<HttpConnector>, Body>,
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpstreamClient")
    }
}

impl UpstreamClient {
    /// A client trusting the Mozilla roots plus every certificate in `extra_ca_pem` (PEM; what
    /// is not a certificate is skipped), and how many extra certificates it trusts.
    pub fn new(extra_ca_pem: Option<&[u8]>) -> Result<(UpstreamClient, usize), rustls::Error> {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let mut added = 0;
        if let Some(pem) = extra_ca_pem {
            for cert in CertificateDer::pem_slice_iter(pem).flatten() {
                if roots.add(cert).is_ok() {
                    added += 1;
                }
            }
        }
        // An explicit provider: the process-wide default panics when two are compiled in.
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        http.set_nodelay(true);
        // `http://` destinations go through the same connector, without TLS.
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = UpstreamClient {
            client: Client::builder(TokioExecutor::new()).build(connector),
        };
        Ok((client, added))
    }

    /// The process-wide client: extra roots from `NODE_EXTRA_CA_CERTS` when it names a readable
    /// file (Node warns and goes on without them otherwise; so does Ferry). `None` only if TLS
    /// cannot be set up at all (logged once).
    pub fn shared() -> Option<&'static UpstreamClient> {
        static CLIENT: OnceLock<Option<UpstreamClient>> = OnceLock::new();
        CLIENT
            .get_or_init(|| {
                let path = std::env::var_os(EXTRA_CA_CERTS_ENV).filter(|p| !p.is_empty());
                let pem = path.as_ref().and_then(|p| match std::fs::read(p) {
                    Ok(pem) => Some(pem),
                    Err(e) => {
                        tracing::warn!(
                            "{EXTRA_CA_CERTS_ENV}={}: cannot read it ({e}); external rewrites \
                             trust the default roots only",
                            p.to_string_lossy()
                        );
                        None
                    }
                });
                match UpstreamClient::new(pem.as_deref()) {
                    Ok((client, added)) => {
                        if pem.is_some() {
                            tracing::debug!(
                                "external rewrites trust {added} extra certificate(s) from \
                                 {EXTRA_CA_CERTS_ENV}"
                            );
                        }
                        Some(client)
                    }
                    Err(e) => {
                        tracing::error!("external rewrites: no TLS client ({e})");
                        None
                    }
                }
            })
            .as_ref()
    }
}

/// Where an external rewrite came from: next start builds the upstream URL differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A `rewrites()` rule: `prepareDestination` merges the request's query under the
    /// destination's own.
    Rule,
    /// The middleware's `x-middleware-rewrite`: its URL is used as it is.
    Middleware,
}

/// Proxies the request to `url` with the process-wide [`UpstreamClient`].
pub async fn forward(
    ctx: &RequestCtx,
    url: &str,
    origin: Origin,
    request_headers: &[(String, String)],
    status: Option<u16>,
    body: Body,
) -> Response<Body> {
    let Some(client) = UpstreamClient::shared() else {
        return ferry_http::text_response(StatusCode::BAD_GATEWAY, "Bad Gateway");
    };
    forward_with(client, ctx, url, origin, request_headers, status, body).await
}

/// Proxies the request to `url` through `client`.
pub async fn forward_with(
    client: &UpstreamClient,
    ctx: &RequestCtx,
    url: &str,
    origin: Origin,
    request_headers: &[(String, String)],
    status: Option<u16>,
    body: Body,
) -> Response<Body> {
    let url = match origin {
        Origin::Rule => with_request_query(url, ctx.parts.uri.query()),
        Origin::Middleware => url.to_owned(),
    };
    let Ok(uri) = url.parse::<Uri>() else {
        return ferry_http::text_response(StatusCode::BAD_GATEWAY, "invalid rewrite destination");
    };
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return ferry_http::text_response(
            StatusCode::BAD_GATEWAY,
            "external rewrite destinations must be http:// or https:// URLs",
        );
    }
    let mut headers = header_map(request_headers);
    for name in ferry_http::HOP_BY_HOP {
        headers.remove(*name);
    }
    // proxy-request.js: `headers: { 'x-forwarded-host': req.headers.host || '' }`.
    let client_host = ctx
        .parts
        .headers
        .get(header::HOST)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static(""));
    headers.insert("x-forwarded-host", client_host);
    if let Some(authority) = uri.authority()
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        headers.insert(header::HOST, host);
    }
    // httpxy: a client that asked to close gets a fresh upstream connection marked `close`;
    // otherwise Node's keep-alive agent says `keep-alive` explicitly.
    let close = ctx
        .parts
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("close"));
    headers.insert(
        header::CONNECTION,
        HeaderValue::from_static(if close { "close" } else { "keep-alive" }),
    );
    let mut req = Request::new(body);
    *req.method_mut() = ctx.parts.method.clone();
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    match tokio::time::timeout(UPSTREAM_TIMEOUT, client.client.request(req)).await {
        Ok(Ok(res)) => {
            let (mut parts, body) = res.into_parts();
            for name in ferry_http::HOP_BY_HOP {
                parts.headers.remove(*name);
            }
            if let Some(s) = status.and_then(|s| StatusCode::from_u16(s).ok()) {
                parts.status = s;
            }
            Response::from_parts(parts, ferry_http::boxed(body))
        }
        Ok(Err(err)) => {
            tracing::warn!("external rewrite to {url} failed: {err}");
            ferry_http::text_response(StatusCode::BAD_GATEWAY, "Bad Gateway")
        }
        Err(_) => ferry_http::text_response(StatusCode::GATEWAY_TIMEOUT, "Gateway Timeout"),
    }
}

/// `prepareDestination`'s query merge for an external rewrite rule: the request's query
/// first, the destination's own values winning for a key both have, serialized like
/// `stringifyQuery` (request keys and values percent-encoded, `encodeURIComponent`).
pub fn with_request_query(url: &str, request_query: Option<&str>) -> String {
    let Some(request_query) = request_query.filter(|q| !q.is_empty()) else {
        return url.to_owned();
    };
    let Ok(mut parsed) = url::Url::parse(url) else {
        return url.to_owned();
    };
    let mut merged: Vec<(String, Vec<String>)> = Vec::new();
    let mut put =
        |key: String, values: Vec<String>| match merged.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = values,
            None => merged.push((key, values)),
        };
    for (key, values) in group(url::form_urlencoded::parse(request_query.as_bytes())) {
        put(key, values);
    }
    for (key, values) in group(parsed.query_pairs()) {
        put(key, values);
    }
    let mut search = String::new();
    for (key, values) in &merged {
        for value in values {
            if !search.is_empty() {
                search.push('&');
            }
            search.push_str(&encode_component(key));
            search.push('=');
            search.push_str(&encode_component(value));
        }
    }
    parsed.set_query(if search.is_empty() {
        None
    } else {
        Some(&search)
    });
    parsed.to_string()
}

/// Query pairs grouped by key in first-seen order (a `ParsedUrlQuery`).
fn group<'a>(
    pairs: impl Iterator<Item = (std::borrow::Cow<'a, str>, std::borrow::Cow<'a, str>)>,
) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for (k, v) in pairs {
        match out.iter_mut().find(|(key, _)| key == k.as_ref()) {
            Some(slot) => slot.1.push(v.into_owned()),
            None => out.push((k.into_owned(), vec![v.into_owned()])),
        }
    }
    out
}

/// JavaScript's `encodeURIComponent`.
fn encode_component(s: &str) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'!')
        .remove(b'~')
        .remove(b'*')
        .remove(b'\'')
        .remove(b'(')
        .remove(b')');
    utf8_percent_encode(s, COMPONENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_rewrite_rule_keeps_the_request_query_under_the_destinations() {
        assert_eq!(
            with_request_query("http://127.0.0.1:9/upstream/a/b", Some("x=1")),
            "http://127.0.0.1:9/upstream/a/b?x=1"
        );
        assert_eq!(
            with_request_query("http://h/p?a=dest&c=3", Some("a=req&b=2&b=x%20y")),
            "http://h/p?a=dest&b=2&b=x%20y&c=3"
        );
        assert_eq!(with_request_query("http://h/p?a=1", None), "http://h/p?a=1");
        assert_eq!(with_request_query("http://h/p", Some("")), "http://h/p");
    }
}
