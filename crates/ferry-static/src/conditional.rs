//! Conditional requests, the way `next start` evaluates them (its compiled `fresh` and `send`
//! packages), so 304 / 412 decisions match byte for byte.

use std::time::SystemTime;

use http::HeaderMap;
use http::header::{
    CACHE_CONTROL, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_UNMODIFIED_SINCE,
};

/// Splits an entity-tag list the way `fresh`'s `parseTokenList` does (commas, trimmed spaces).
fn tokens(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|t| !t.is_empty())
}

/// Weak comparison: `"x"`, `W/"x"` are all equal to either form of our tag.
fn weak_eq(candidate: &str, etag: &str) -> bool {
    strip_weak(candidate) == strip_weak(etag)
}

fn strip_weak(tag: &str) -> &str {
    tag.strip_prefix("W/").unwrap_or(tag)
}

fn header_str(headers: &HeaderMap, name: http::header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `fresh(req, res)`: true when a 304 may be sent. Like `fresh`, a request `Cache-Control:
/// no-cache` forces a full response, `If-None-Match` uses weak comparison (`*` matches anything),
/// and when both validators are present both must pass.
pub fn is_fresh(
    req_headers: &HeaderMap,
    etag: Option<&str>,
    last_modified: Option<SystemTime>,
) -> bool {
    let inm = header_str(req_headers, IF_NONE_MATCH);
    let ims = header_str(req_headers, IF_MODIFIED_SINCE);
    if inm.is_none() && ims.is_none() {
        return false;
    }
    if let Some(cc) = header_str(req_headers, CACHE_CONTROL)
        && tokens(cc).any(|t| t.eq_ignore_ascii_case("no-cache"))
    {
        return false;
    }
    if let Some(inm) = inm
        && inm.trim() != "*"
    {
        let Some(etag) = etag else { return false };
        if !tokens(inm).any(|t| weak_eq(t, etag)) {
            return false;
        }
    }
    if let Some(ims) = ims {
        // `fresh` requires a Last-Modified not later than the date given.
        let (Some(lm), Ok(since)) = (last_modified, httpdate::parse_http_date(ims)) else {
            return false;
        };
        if truncate_secs(lm) > since {
            return false;
        }
    }
    true
}

/// `send`'s `isPreconditionFailure`: `If-Match` (weak comparison, like `send`) or
/// `If-Unmodified-Since` says the client's copy is not ours → 412.
pub fn precondition_failed(
    req_headers: &HeaderMap,
    etag: Option<&str>,
    last_modified: Option<SystemTime>,
) -> bool {
    if let Some(im) = header_str(req_headers, IF_MATCH) {
        if im.trim() == "*" {
            return false;
        }
        return match etag {
            Some(etag) => !tokens(im).any(|t| weak_eq(t, etag)),
            None => true,
        };
    }
    if let Some(ius) = header_str(req_headers, IF_UNMODIFIED_SINCE)
        && let (Ok(since), Some(lm)) = (httpdate::parse_http_date(ius), last_modified)
    {
        return truncate_secs(lm) > since;
    }
    false
}

/// `If-Range`: true when a `Range` may be honoured. An entity tag is compared to ours (our weak
/// tags derive from the content hash of the identity bytes, so equal tags mean equal bytes — the
/// same leniency `send` shows); a date must equal Last-Modified exactly.
pub fn if_range_allows(
    req_headers: &HeaderMap,
    etag: Option<&str>,
    last_modified: Option<SystemTime>,
) -> bool {
    let Some(ir) = header_str(req_headers, http::header::IF_RANGE) else {
        return true;
    };
    let ir = ir.trim();
    if ir.contains('"') {
        return etag.is_some_and(|e| weak_eq(ir, e));
    }
    match (httpdate::parse_http_date(ir), last_modified) {
        (Ok(date), Some(lm)) => truncate_secs(lm) == date,
        _ => false,
    }
}

/// HTTP dates have whole seconds.
pub(crate) fn truncate_secs(t: SystemTime) -> SystemTime {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(d.as_secs()),
        Err(_) => SystemTime::UNIX_EPOCH,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::time::Duration;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_static(v));
        }
        m
    }

    const TAG: &str = "W/\"3d6d-abc\"";

    fn lm() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn if_none_match_weak_comparison() {
        assert!(is_fresh(
            &h(&[("if-none-match", "W/\"3d6d-abc\"")]),
            Some(TAG),
            None
        ));
        assert!(is_fresh(
            &h(&[("if-none-match", "\"3d6d-abc\"")]),
            Some(TAG),
            None
        ));
        assert!(is_fresh(
            &h(&[("if-none-match", "\"x\", W/\"3d6d-abc\"")]),
            Some(TAG),
            None
        ));
        assert!(is_fresh(&h(&[("if-none-match", "*")]), Some(TAG), None));
        assert!(!is_fresh(
            &h(&[("if-none-match", "\"x\"")]),
            Some(TAG),
            None
        ));
        assert!(!is_fresh(&h(&[]), Some(TAG), None));
    }

    #[test]
    fn no_cache_request_forces_full_response() {
        let hm = h(&[
            ("if-none-match", "*"),
            ("cache-control", "max-age=0, no-cache"),
        ]);
        assert!(!is_fresh(&hm, Some(TAG), None));
    }

    #[test]
    fn if_modified_since() {
        let at = httpdate::fmt_http_date(lm());
        let mut hm = HeaderMap::new();
        hm.insert(
            "if-modified-since",
            HeaderValue::from_str(&at).expect("date"),
        );
        assert!(is_fresh(&hm, Some(TAG), Some(lm())));
        assert!(!is_fresh(
            &hm,
            Some(TAG),
            Some(lm() + Duration::from_secs(1))
        ));
        assert!(
            !is_fresh(&hm, Some(TAG), None),
            "no Last-Modified: never fresh by date"
        );
        // Both present: both must pass (fresh semantics, measured on next start).
        hm.insert("if-none-match", HeaderValue::from_static("\"x\""));
        assert!(!is_fresh(&hm, Some(TAG), Some(lm())));
    }

    #[test]
    fn preconditions() {
        assert!(precondition_failed(
            &h(&[("if-match", "\"zz\"")]),
            Some(TAG),
            None
        ));
        assert!(!precondition_failed(
            &h(&[("if-match", "\"3d6d-abc\"")]),
            Some(TAG),
            None
        ));
        assert!(!precondition_failed(
            &h(&[("if-match", "*")]),
            Some(TAG),
            None
        ));
        let hm = h(&[("if-unmodified-since", "Sat, 01 Jan 2000 00:00:00 GMT")]);
        assert!(precondition_failed(&hm, Some(TAG), Some(lm())));
    }

    #[test]
    fn if_range() {
        assert!(if_range_allows(&h(&[]), Some(TAG), None));
        assert!(if_range_allows(
            &h(&[("if-range", "W/\"3d6d-abc\"")]),
            Some(TAG),
            None
        ));
        assert!(!if_range_allows(
            &h(&[("if-range", "\"zz\"")]),
            Some(TAG),
            None
        ));
        let mut hm = HeaderMap::new();
        let d = httpdate::fmt_http_date(lm());
        hm.insert("if-range", HeaderValue::from_str(&d).expect("date"));
        assert!(if_range_allows(&hm, Some(TAG), Some(lm())));
        assert!(!if_range_allows(
            &hm,
            Some(TAG),
            Some(lm() + Duration::from_secs(5))
        ));
    }
}
