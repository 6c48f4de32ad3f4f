//! External rewrites: the request is proxied to an absolute `http://` or `https://` destination
//! and the response streamed back, the way next start's `proxyRequest`
//! (router-utils/proxy-request.js, httpxy with `changeOrigin` and no `xfwd`) does it: `Host`
//! becomes the destination's, `x-forwarded-host` carries the client's `Host`, nothing else is
//! added. TLS destinations are verified like Node's https agent does it: the Mozilla root
//! certificates (Node bundles the same list) plus the PEM file `NODE_EXTRA_CA_CERTS` names.
//!
//! WebSocket upgrades (router-server.js `upgradeHandler`, measured on next 16.4.6): an upgrade
//! request that routes to an external rewrite is proxied like httpxy's `ws()` does it (the same
//! `Host` / `x-forwarded-host` / query as the HTTP proxy, the client's `Upgrade` and
//! `Connection`); a `101` from the destination is answered with the destination's headers and
//! the two connections are joined byte for byte; any other answer is passed through and the
//! connection closed. Every other upgrade request gets no answer: next start ends the socket (or
//! leaves it open forever), Ferry closes the connection ([`refuse_upgrade`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ferry_http::Body;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, header};
use hyper::upgrade::OnUpgrade;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::RequestCtx;
use super::route::{self, Routed, header_map};
use crate::App;
use ferry_router::Resolution;

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
    let (url, uri) = match upstream_uri(ctx, url, origin) {
        Ok(pair) => pair,
        Err(msg) => return ferry_http::text_response(StatusCode::BAD_GATEWAY, msg),
    };
    let mut headers = upstream_headers(ctx, request_headers, &uri);
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

/// The destination URL (the request's query merged in for a rule) and its parsed form; the
/// 502 message when it is not an absolute `http://` or `https://` URL.
fn upstream_uri(
    ctx: &RequestCtx,
    url: &str,
    origin: Origin,
) -> Result<(String, Uri), &'static str> {
    let url = match origin {
        Origin::Rule => with_request_query(url, ctx.parts.uri.query()),
        Origin::Middleware => url.to_owned(),
    };
    let Ok(uri) = url.parse::<Uri>() else {
        return Err("invalid rewrite destination");
    };
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err("external rewrite destinations must be http:// or https:// URLs");
    }
    Ok((url, uri))
}

/// The routed request headers without hop-by-hop ones, `Host` set to the destination's and
/// `x-forwarded-host` to the client's (httpxy with `changeOrigin`, no `xfwd`).
fn upstream_headers(
    ctx: &RequestCtx,
    request_headers: &[(String, String)],
    uri: &Uri,
) -> HeaderMap {
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
    headers
}

/// Time for the destination to answer an upgrade handshake (connecting included).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Time for hyper to hand over the client's connection once the `101` is written.
const CLIENT_UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one direction of a tunnel may stay open after the other has ended: a half-closed
/// tunnel must not live forever (Node's sockets end as soon as the peer does).
const HALF_CLOSE_LINGER: Duration = Duration::from_secs(5);
/// Upgraded connections open at once (they no longer count against the listener's connection
/// limit once upgraded); past this an upgrade gets 503.
const MAX_TUNNELS: usize = 16 * 1024;

/// Marks a response that must not be sent: the listener closes the connection instead, the way
/// next start ends the socket of an upgrade request it does not proxy.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("upgrade request not proxied: connection closed without a response")]
pub struct CloseConnection;

/// Whether the request asks to switch protocols as Node's HTTP parser sees it (and next start's
/// `upgrade` event fires): an `Upgrade` header and a `Connection` header naming `upgrade`, on an
/// HTTP/1.1 connection hyper can hand over.
pub fn is_upgrade(parts: &http::request::Parts) -> bool {
    // Only WebSocket upgrades take this path. Deliberate difference: next start ends the
    // socket of any other upgrade (`Upgrade: h2c` from `curl --http2` over http:// gets an
    // empty reply); Ferry ignores such an `Upgrade`, as RFC 9110 §7.8 allows, and answers
    // over HTTP/1.1.
    let websocket = parts
        .headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("websocket"));
    websocket
        && parts.extensions.get::<OnUpgrade>().is_some()
        && parts
            .headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// The answer to an upgrade request Ferry does not proxy: none; the connection is closed
/// (the listener sees [`CloseConnection`]).
pub fn refuse_upgrade() -> Response<Body> {
    let mut res = Response::new(ferry_http::empty());
    res.extensions_mut().insert(CloseConnection);
    res
}

/// Serves an upgrade request (see [`is_upgrade`]) after the guard: routed like any request
/// (the middleware included, as resolve-routes.js does for `isUpgradeReq`); proxied when it
/// resolves to an external rewrite, refused without an answer otherwise (router-server.js ends
/// the socket of a matched output and does nothing with the rest).
pub async fn upgrade(app: &Arc<App>, ctx: RequestCtx, body: Body) -> Response<Body> {
    match route::route(app, &ctx, body).await {
        Routed::Resolved(
            Resolution::ExternalRewrite {
                url,
                headers,
                request_headers,
                ..
            },
            _,
        ) => {
            let from_middleware = headers.iter().any(|(k, _)| k == "x-middleware-rewrite");
            let origin = if from_middleware {
                Origin::Middleware
            } else {
                Origin::Rule
            };
            forward_upgrade(&ctx, &url, origin, &request_headers).await
        }
        _ => refuse_upgrade(),
    }
}

/// Proxies an upgrade request (see [`is_upgrade`]) to `url` with the process-wide
/// [`UpstreamClient`]; the response is final (no routing headers: httpxy writes the
/// destination's head as it is).
pub async fn forward_upgrade(
    ctx: &RequestCtx,
    url: &str,
    origin: Origin,
    request_headers: &[(String, String)],
) -> Response<Body> {
    let Some(client) = UpstreamClient::shared() else {
        return ferry_http::text_response(StatusCode::BAD_GATEWAY, "Bad Gateway");
    };
    forward_upgrade_with(client, ctx, url, origin, request_headers).await
}

/// Proxies an upgrade request to `url` through `client`: on a `101` the client gets the
/// destination's `101` and a background task copies bytes both ways until either side closes;
/// any other answer (the destination's, or Ferry's 502 / 503 / 504) is sent with
/// `Connection: close`: the client's connection was not going to carry HTTP any more.
pub async fn forward_upgrade_with(
    client: &UpstreamClient,
    ctx: &RequestCtx,
    url: &str,
    origin: Origin,
    request_headers: &[(String, String)],
) -> Response<Body> {
    let mut res = handshake(client, ctx, url, origin, request_headers).await;
    if res.status() != StatusCode::SWITCHING_PROTOCOLS {
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    res
}

/// [`forward_upgrade_with`] before the non-`101` answers are marked `Connection: close`.
async fn handshake(
    client: &UpstreamClient,
    ctx: &RequestCtx,
    url: &str,
    origin: Origin,
    request_headers: &[(String, String)],
) -> Response<Body> {
    // httpxy's ws passes destroy the socket of anything but `GET` + `Upgrade: websocket`.
    let websocket = ctx
        .parts
        .headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"));
    let Some(on_client_upgrade) = ctx.parts.extensions.get::<OnUpgrade>().cloned() else {
        return refuse_upgrade();
    };
    if ctx.parts.method != http::Method::GET || !websocket {
        return refuse_upgrade();
    }
    let (url, uri) = match upstream_uri(ctx, url, origin) {
        Ok(pair) => pair,
        Err(msg) => return ferry_http::text_response(StatusCode::BAD_GATEWAY, msg),
    };
    let Some(slot) = TunnelSlot::acquire() else {
        tracing::warn!("{MAX_TUNNELS} upgraded connections open; refusing an upgrade to {url}");
        return ferry_http::text_response(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable");
    };
    let mut headers = upstream_headers(ctx, request_headers, &uri);
    // The handshake's own hop-by-hop headers, as the client sent them (httpxy copies them).
    for name in [header::CONNECTION, header::UPGRADE] {
        for value in ctx.parts.headers.get_all(&name) {
            headers.append(name.clone(), value.clone());
        }
    }
    let mut req = Request::new(ferry_http::empty());
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    let mut res = match tokio::time::timeout(HANDSHAKE_TIMEOUT, client.client.request(req)).await {
        Ok(Ok(res)) => res,
        Ok(Err(err)) => {
            tracing::warn!("external rewrite (upgrade) to {url} failed: {err}");
            return ferry_http::text_response(StatusCode::BAD_GATEWAY, "Bad Gateway");
        }
        Err(_) => return ferry_http::text_response(StatusCode::GATEWAY_TIMEOUT, "Gateway Timeout"),
    };
    if res.status() != StatusCode::SWITCHING_PROTOCOLS {
        // Passed through, then the connection ends (httpxy pipes the answer into the socket).
        let (mut parts, body) = res.into_parts();
        for name in ferry_http::HOP_BY_HOP {
            parts.headers.remove(*name);
        }
        return Response::from_parts(parts, ferry_http::boxed(body));
    }
    let on_upstream_upgrade = hyper::upgrade::on(&mut res);
    let (parts, _) = res.into_parts();
    tokio::spawn(async move {
        let _slot = slot;
        let upstream = match on_upstream_upgrade.await {
            Ok(io) => io,
            Err(err) => {
                tracing::debug!("upgrade to {url}: destination connection lost: {err}");
                return;
            }
        };
        let client = match tokio::time::timeout(CLIENT_UPGRADE_TIMEOUT, on_client_upgrade).await {
            Ok(Ok(io)) => io,
            Ok(Err(err)) => {
                tracing::debug!("upgrade to {url}: client connection lost: {err}");
                return;
            }
            Err(_) => return,
        };
        tunnel(
            hyper_util::rt::TokioIo::new(client),
            hyper_util::rt::TokioIo::new(upstream),
            HALF_CLOSE_LINGER,
        )
        .await;
    });
    // The destination's 101 as it is (httpxy writes `HTTP/1.1 101 Switching Protocols` and its
    // headers, `Upgrade` and `Connection` included).
    let mut out = Response::new(ferry_http::empty());
    *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *out.headers_mut() = parts.headers;
    out
}

/// Copies bytes both ways until both directions have ended; once one has, the other gets
/// `linger` ([`HALF_CLOSE_LINGER`]) to finish. Each direction's end is passed on as a write
/// shutdown.
async fn tunnel<A, B>(a: A, b: B, linger: Duration)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let (mut a_read, mut a_write) = tokio::io::split(a);
    let (mut b_read, mut b_write) = tokio::io::split(b);
    let a_to_b = async {
        let copied = tokio::io::copy(&mut a_read, &mut b_write).await;
        let _ = b_write.shutdown().await;
        copied
    };
    let b_to_a = async {
        let copied = tokio::io::copy(&mut b_read, &mut a_write).await;
        let _ = a_write.shutdown().await;
        copied
    };
    tokio::pin!(a_to_b, b_to_a);
    tokio::select! {
        _ = &mut a_to_b => { let _ = tokio::time::timeout(linger, &mut b_to_a).await; }
        _ = &mut b_to_a => { let _ = tokio::time::timeout(linger, &mut a_to_b).await; }
    }
}

/// Upgraded connections open now, and a wake-up when that reaches zero.
static TUNNELS: AtomicUsize = AtomicUsize::new(0);
static TUNNELS_IDLE: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// One open upgraded connection, counted until dropped.
struct TunnelSlot;

impl TunnelSlot {
    fn acquire() -> Option<TunnelSlot> {
        TUNNELS
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < MAX_TUNNELS).then_some(n + 1)
            })
            .ok()
            .map(|_| TunnelSlot)
    }
}

impl Drop for TunnelSlot {
    fn drop(&mut self) {
        if TUNNELS.fetch_sub(1, Ordering::SeqCst) == 1 {
            TUNNELS_IDLE.notify_waiters();
        }
    }
}

/// Upgraded connections (and handshakes under way) open now.
pub fn open_tunnels() -> usize {
    TUNNELS.load(Ordering::SeqCst)
}

/// Waits until no upgraded connection is open (graceful shutdown; bounded by the caller).
pub async fn tunnels_closed() {
    loop {
        let notified = TUNNELS_IDLE.notified();
        if TUNNELS.load(Ordering::SeqCst) == 0 {
            return;
        }
        notified.await;
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_tunnel_copies_both_ways_and_ends_a_half_closed_side_after_the_linger()
    -> std::io::Result<()> {
        let (mut client, client_side) = tokio::io::duplex(1024);
        let (mut upstream, upstream_side) = tokio::io::duplex(1024);
        let linger = Duration::from_millis(300);
        let task = tokio::spawn(tunnel(client_side, upstream_side, linger));
        let mut buf = [0u8; 5];
        client.write_all(b"hello").await?;
        upstream.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"hello");
        upstream.write_all(b"world").await?;
        client.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"world");
        // The client stops sending; the destination sees the end but never closes its side.
        client.shutdown().await?;
        assert_eq!(upstream.read(&mut buf).await?, 0);
        let started = std::time::Instant::now();
        let ended = tokio::time::timeout(Duration::from_secs(5), task).await;
        assert!(
            matches!(ended, Ok(Ok(()))),
            "the tunnel ends after the linger"
        );
        assert!(started.elapsed() >= linger - Duration::from_millis(50));
        // Both connections are released: the client reads the end too.
        assert_eq!(client.read(&mut buf).await?, 0);
        Ok(())
    }

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
