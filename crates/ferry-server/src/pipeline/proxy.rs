//! External rewrites: the request is proxied to an absolute `http://` destination and the
//! response streamed back.

use std::sync::OnceLock;
use std::time::Duration;

use ferry_http::Body;
use http::{HeaderValue, Request, Response, StatusCode, Uri, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::{RequestCtx, route::header_map};

/// Time to get response headers from the destination.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

fn client() -> &'static Client<HttpConnector, Body> {
    static CLIENT: OnceLock<Client<HttpConnector, Body>> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(10)));
        connector.set_nodelay(true);
        Client::builder(TokioExecutor::new()).build(connector)
    })
}

/// Proxies the request to `url`.
pub async fn forward(
    ctx: &RequestCtx,
    url: &str,
    request_headers: &[(String, String)],
    status: Option<u16>,
    body: Body,
) -> Response<Body> {
    let Ok(uri) = url.parse::<Uri>() else {
        return ferry_http::text_response(StatusCode::BAD_GATEWAY, "invalid rewrite destination");
    };
    if uri.scheme_str() != Some("http") {
        // TLS to upstreams is not built in yet; say so instead of failing obscurely.
        return ferry_http::text_response(
            StatusCode::BAD_GATEWAY,
            "external rewrites to https:// destinations are not supported yet",
        );
    }
    let mut headers = header_map(request_headers);
    for name in ferry_http::HOP_BY_HOP {
        headers.remove(*name);
    }
    if let Some(authority) = uri.authority()
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        headers.insert(header::HOST, host);
    }
    let mut req = Request::new(body);
    *req.method_mut() = ctx.parts.method.clone();
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    match tokio::time::timeout(UPSTREAM_TIMEOUT, client().request(req)).await {
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
