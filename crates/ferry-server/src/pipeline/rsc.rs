//! RSC cache-busting check (next start's `validateRSCRequestHeaders`, on by default).
//!
//! Not every CDN honours `Vary`, so the Next client hashes the router headers into the `_rsc`
//! query parameter. An RSC request to an app page whose `_rsc` does not match its headers is
//! answered with a 307 to the URL with the right `_rsc`, which keeps a poisoned cache key from
//! ever holding an RSC payload.

use base64::Engine;
use ferry_http::Body;
use http::{HeaderMap, Response, StatusCode, header};
use sha2::{Digest, Sha256};

use super::RequestCtx;

const PREFETCH: &str = "next-router-prefetch";
const SEGMENT_PREFETCH: &str = "next-router-segment-prefetch";
const STATE_TREE: &str = "next-router-state-tree";
const NEXT_URL: &str = "next-url";
const RSC_QUERY: &str = "_rsc";

/// The 307 next start sends when `_rsc` does not match the request headers, else `None`.
pub fn check(ctx: &RequestCtx) -> Option<Response<Body>> {
    let headers = &ctx.parts.headers;
    let expected = expected_hash(headers);
    let query = ctx.parts.uri.query().unwrap_or("");
    let actual = query_value(query, RSC_QUERY);
    let matches = match &actual {
        Some(actual) => {
            *actual == expected.clone().unwrap_or_default()
                || legacy_hash(headers).is_some_and(|legacy| legacy == *actual)
        }
        None => false,
    };
    if matches {
        return None;
    }
    let location = with_hash(
        ctx.parts.uri.path(),
        query,
        expected.as_deref().unwrap_or(""),
    );
    let mut res = Response::new(ferry_http::empty());
    *res.status_mut() = StatusCode::TEMPORARY_REDIRECT;
    if let Ok(value) = location.parse() {
        res.headers_mut().insert(header::LOCATION, value);
    }
    Some(res)
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `createCacheBustingSearchParamInput`: `None` when no router header is present.
fn hash_input(headers: &HeaderMap) -> Option<String> {
    let prefetch = header_str(headers, PREFETCH).filter(|v| matches!(*v, "1" | "2" | "3"));
    let segment = header_str(headers, SEGMENT_PREFETCH);
    let tree = header_str(headers, STATE_TREE);
    let next_url = header_str(headers, NEXT_URL);
    if matches!(prefetch, None | Some("0"))
        && segment.is_none()
        && tree.is_none()
        && next_url.is_none()
    {
        return None;
    }
    Some(
        [
            prefetch.unwrap_or("0"),
            segment.unwrap_or("0"),
            tree.unwrap_or("0"),
            next_url.unwrap_or("0"),
        ]
        .join(","),
    )
}

/// SHA-256 truncated to 96 bits, base64url without padding (`""` when no header is present).
fn expected_hash(headers: &HeaderMap) -> Option<String> {
    let input = hash_input(headers)?;
    let digest = Sha256::digest(input.as_bytes());
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..12]))
}

/// The legacy 5-character djb2 form older clients send.
fn legacy_hash(headers: &HeaderMap) -> Option<String> {
    let input = hash_input(headers)?;
    // JS strings are UTF-16: hash code units, like `charCodeAt`.
    let mut hash: u32 = 5381;
    for unit in input.encode_utf16() {
        hash = (hash << 5).wrapping_add(hash).wrapping_add(u32::from(unit));
    }
    let mut n = hash;
    let mut digits = Vec::new();
    loop {
        let d = (n % 36) as u8;
        digits.push(if d < 10 { b'0' + d } else { b'a' + d - 10 });
        n /= 36;
        if n == 0 {
            break;
        }
    }
    digits.reverse();
    digits.truncate(5);
    Some(String::from_utf8_lossy(&digits).into_owned())
}

/// `searchParams.get(name)` on a raw query (first occurrence, `+` and `%XX` decoded).
fn query_value(query: &str, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `setCacheBustingSearchParamWithHash`: drop `_rsc=…` pairs, append the new one, keep the rest raw.
fn with_hash(path: &str, query: &str, hash: &str) -> String {
    let mut pairs: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("_rsc="))
        .collect();
    let fresh = if hash.is_empty() {
        RSC_QUERY.to_owned()
    } else {
        format!("{RSC_QUERY}={hash}")
    };
    pairs.push(&fresh);
    format!("{path}?{}", pairs.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("value"));
        }
        h
    }

    #[test]
    fn no_router_headers_means_an_empty_hash() {
        assert_eq!(expected_hash(&headers(&[("rsc", "1")])), None);
        assert_eq!(with_hash("/isr", "", ""), "/isr?_rsc");
        assert_eq!(
            with_hash("/isr", "a=%20b&_rsc=zz", "h"),
            "/isr?a=%20b&_rsc=h"
        );
    }

    #[test]
    fn hashes_match_nextjs() {
        // Values computed with next 16.4.6's own computeCacheBustingSearchParam /
        // computeLegacyCacheBustingSearchParam for prefetch "1", segment "/_tree".
        let h = headers(&[
            ("next-router-prefetch", "1"),
            ("next-router-segment-prefetch", "/_tree"),
        ]);
        assert_eq!(hash_input(&h).as_deref(), Some("1,/_tree,0,0"));
        assert_eq!(expected_hash(&h).as_deref(), Some(NEXT_EXPECTED));
        assert_eq!(legacy_hash(&h).as_deref(), Some(NEXT_LEGACY));
    }

    const NEXT_EXPECTED: &str = "_i_aeImnuN6u1u1r";
    const NEXT_LEGACY: &str = "1r34m";
}
