//! Getting the source image: next's `fetchExternalImage` for absolute urls (private addresses
//! refused unless `dangerouslyAllowLocalIP`, DNS pinned to the checked addresses, a 7 s deadline,
//! `maximumRedirects`, `maximumResponseBody`), and the shape every source arrives in.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use sha2::Digest as _;

use crate::ImageError;

/// next's upstream deadline (`agentOptions.timeout`).
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(7);

/// A fetched source image.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Its bytes.
    pub buffer: Bytes,
    /// The upstream's `Cache-Control` (its max-age can raise the cache lifetime).
    pub cache_control: Option<String>,
    /// The upstream's ETag header, base64url-encoded, else the hash of the bytes.
    pub etag: String,
}

impl Upstream {
    /// A source with its response headers (next's `extractEtag` applied to `etag`).
    pub fn new(buffer: Bytes, cache_control: Option<String>, etag: Option<&str>) -> Self {
        let etag = extract_etag(etag, &buffer);
        Self {
            buffer,
            cache_control,
            etag,
        }
    }
}

/// base64url SHA-256 of the items' concatenation (next's `getHash`).
pub fn hash(items: &[&[u8]]) -> String {
    let mut h = sha2::Sha256::new();
    for item in items {
        h.update(item);
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h.finalize())
}

/// next's `extractEtag`: the upstream ETag base64url-encoded, else the hash of the bytes.
pub fn extract_etag(etag: Option<&str>, buffer: &[u8]) -> String {
    match etag {
        Some(e) if !e.is_empty() => base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(e),
        _ => hash(&[buffer]),
    }
}

/// next's `getMaxAge`: `s-maxage`, else `max-age`, else 0.
pub fn max_age(cache_control: Option<&str>) -> u64 {
    let mut s_maxage = None;
    let mut max_age = None;
    for d in cache_control.unwrap_or("").split(',') {
        let mut kv = d.trim().splitn(2, '=');
        let key = kv.next().unwrap_or("").to_ascii_lowercase();
        let value = kv.next().unwrap_or("").trim_matches('"').to_owned();
        match key.as_str() {
            "s-maxage" => s_maxage = Some(value),
            "max-age" => max_age = Some(value),
            _ => {}
        }
    }
    let v = s_maxage
        .filter(|v| !v.is_empty())
        .or(max_age)
        .unwrap_or_default();
    // parseInt: leading digits.
    let digits: String = v.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().unwrap_or(0)
}

/// next's `isPrivateIp` (ipaddr.js: any range but `unicast`).
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => private_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => private_v4(v4),
            None => private_v6(v6),
        },
    }
}

fn private_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64)
        || o[0] >= 240
        || (o[0] == 192 && o[1] == 0 && (o[2] == 0 || o[2] == 2))
        || (o[0] == 192 && o[1] == 88 && o[2] == 99)
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
        || (o[0] == 198 && o[1] == 51 && o[2] == 100)
        || (o[0] == 203 && o[1] == 0 && o[2] == 113)
}

fn private_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    // Only global unicast (2000::/3) minus its special-purpose blocks is public.
    (s[0] & 0xe000) != 0x2000
        || (s[0] == 0x2001 && s[1] == 0)
        || s[0] == 0x2002
        || (s[0] == 0x2001 && s[1] == 0x0db8)
        || (s[0] == 0x2001 && s[1] == 0x0002 && s[2] == 0)
}

fn invalid(status: u16) -> ImageError {
    ImageError::new(
        status,
        "\"url\" parameter is valid but upstream response is invalid",
    )
}

/// Fetches an absolute image url as next start does.
pub async fn fetch_external(
    href: &str,
    allow_local_ip: bool,
    max_body: u64,
    redirects: u32,
) -> Result<Upstream, ImageError> {
    let mut url = url::Url::parse(href).map_err(|_| invalid(400))?;
    let mut left = redirects;
    loop {
        let client = client_for(&url, allow_local_ip).await?;
        let deadline = tokio::time::Instant::now() + UPSTREAM_TIMEOUT;
        let timed_out = || {
            tracing::error!("upstream image response timed out for {url}");
            ImageError::new(
                504,
                "\"url\" parameter is valid but upstream response timed out",
            )
        };
        let res = tokio::time::timeout_at(deadline, client.get(url.clone()).send())
            .await
            .map_err(|_| timed_out())?
            .map_err(|err| {
                tracing::error!("upstream image response failed for {url}: {err}");
                ImageError::internal()
            })?;
        let status = res.status().as_u16();
        let location = res
            .headers()
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|l| url.join(l).ok());
        if matches!(status, 301 | 302 | 303 | 307 | 308)
            && let Some(next) = location
        {
            if left == 0 {
                tracing::error!("upstream image response had too many redirects {url}");
                return Err(invalid(508));
            }
            left -= 1;
            url = next;
            continue;
        }
        if !(200..=299).contains(&status) {
            tracing::error!("upstream image response failed for {url} {status}");
            return Err(invalid(status));
        }
        let header = |name: http::header::HeaderName| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let cache_control = header(http::header::CACHE_CONTROL);
        let etag = header(http::header::ETAG);
        let mut body = BytesMut::new();
        let mut stream = res.bytes_stream();
        loop {
            let chunk = tokio::time::timeout_at(deadline, stream.next())
                .await
                .map_err(|_| timed_out())?;
            match chunk {
                None => break,
                Some(Ok(c)) => {
                    if (body.len() + c.len()) as u64 > max_body {
                        tracing::error!("upstream image response exceeded maximum size for {url}");
                        return Err(invalid(413));
                    }
                    body.extend_from_slice(&c);
                }
                Some(Err(err)) => {
                    tracing::error!("upstream image response failed for {url}: {err}");
                    return Err(ImageError::internal());
                }
            }
        }
        if body.is_empty() {
            tracing::error!("upstream image response is empty for {url}");
            return Err(invalid(400));
        }
        return Ok(Upstream::new(body.freeze(), cache_control, etag.as_deref()));
    }
}

/// A client that only reaches addresses that passed the private-address check (resolved once
/// here and pinned, so DNS cannot answer differently for the connection) and follows no
/// redirects itself.
async fn client_for(url: &url::Url, allow_local_ip: bool) -> Result<reqwest::Client, ImageError> {
    let builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(fetch_headers())
        .no_proxy();
    let host = url.host_str().unwrap_or_default().to_owned();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let not_allowed = || ImageError::new(400, "\"url\" parameter is not allowed");
    let builder = if allow_local_ip {
        builder
    } else if let Ok(ip) = bare.parse::<IpAddr>() {
        if is_private(ip) {
            tracing::error!("upstream image {url} is a private IP");
            return Err(not_allowed());
        }
        builder
    } else {
        let port = url.port_or_known_default().unwrap_or(80);
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
            .await
            .map_err(|err| {
                tracing::error!("upstream image {url}: cannot resolve {bare}: {err}");
                ImageError::internal()
            })?
            .collect();
        if addrs.is_empty() || addrs.iter().any(|a| is_private(a.ip())) {
            tracing::error!(
                "upstream image {url} hostname resolved to a private IP; set \
                 images.dangerouslyAllowLocalIP if this is expected"
            );
            return Err(not_allowed());
        }
        builder.resolve_to_addrs(bare, &addrs)
    };
    builder.build().map_err(|err| {
        tracing::error!("cannot build the image fetch client: {err}");
        ImageError::internal()
    })
}

fn fetch_headers() -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    for (k, v) in [
        ("accept", "*/*"),
        ("accept-language", "*"),
        ("sec-fetch-mode", "cors"),
        ("user-agent", "node"),
        // Bodies are read as they come: ask for them uncompressed.
        ("accept-encoding", "identity"),
    ] {
        h.insert(
            http::HeaderName::from_static(k),
            http::HeaderValue::from_static(v),
        );
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_and_max_age_follow_next() {
        assert_eq!(extract_etag(Some("W/\"1\""), b""), "Vy8iMSI");
        assert_eq!(
            extract_etag(None, b"abc"),
            "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"
        );
        assert_eq!(
            max_age(Some("public, max-age=31536000, immutable")),
            31536000
        );
        assert_eq!(max_age(Some("s-maxage=10, max-age=99")), 10);
        assert_eq!(max_age(Some("max-age=\"60\"")), 60);
        assert_eq!(max_age(Some("no-store")), 0);
        assert_eq!(max_age(None), 0);
    }

    #[test]
    fn private_ranges() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_private(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(!is_private(ip.parse().expect("ip")), "{ip}");
        }
    }

    #[tokio::test]
    async fn refuses_loopback_unless_allowed() {
        let err = fetch_external("http://127.0.0.1:41401/a.png", false, 1000, 3)
            .await
            .expect_err("loopback refused");
        assert_eq!(err.status, 400);
        assert_eq!(err.message, "\"url\" parameter is not allowed");
        let err = fetch_external("http://localhost:41401/a.png", false, 1000, 3)
            .await
            .expect_err("localhost refused");
        assert_eq!(err.message, "\"url\" parameter is not allowed");
    }
}
