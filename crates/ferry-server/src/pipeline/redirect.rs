//! Redirects from `redirects()`, trailing-slash normalization and middleware, answered like
//! `next start`: the status, `Location`, and a short body (`headers()` rules are not applied).

use ferry_http::Body;
use http::{HeaderValue, Response, StatusCode, header};

use super::route::header_map;

/// The redirect response.
pub fn respond(
    status: u16,
    location: Option<&str>,
    headers: &[(String, String)],
) -> Response<Body> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::TEMPORARY_REDIRECT);
    let body = location.unwrap_or_default().to_owned();
    let mut res = Response::new(ferry_http::full(body));
    *res.status_mut() = status;
    let map = res.headers_mut();
    for (name, value) in header_map(headers) {
        if let Some(name) = name {
            map.append(name, value);
        }
    }
    if let Some(loc) = location
        && let Ok(value) = super::route::latin1_header(loc)
    {
        map.insert(header::LOCATION, value);
    }
    if status == StatusCode::PERMANENT_REDIRECT {
        // Old clients do not know 308: next start adds a Refresh header for them.
        if let Some(loc) = location
            && let Ok(value) = HeaderValue::from_str(&format!("0;url={loc}"))
        {
            map.insert(header::REFRESH, value);
        }
    }
    res
}

/// resolve-routes.js's first step for every request (before the middleware, rules and files): a path
/// with repeated slashes or backslashes is answered 308 to its cleaned form
/// (`normalizeRepeatedSlashes`), with that URL as the body.
pub fn repeated_slashes(uri: &http::Uri) -> Option<Response<Body>> {
    let path = uri.path();
    if !path.contains("//") && !path.contains('\\') {
        return None;
    }
    let mut clean = String::with_capacity(path.len());
    for c in path.chars() {
        let c = if c == '\\' { '/' } else { c };
        if c == '/' && clean.ends_with('/') {
            continue;
        }
        clean.push(c);
    }
    if let Some(query) = uri.query().filter(|q| !q.is_empty()) {
        clean.push('?');
        clean.push_str(query);
    }
    let mut res = respond(308, Some(&clean), &[]);
    // `res.redirect(url, 308).body(url).send()` sets no Content-Type.
    res.headers_mut().remove(header::CONTENT_TYPE);
    Some(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_slashes_redirect_to_the_clean_path() {
        let uri: http::Uri = "//double//slashes?a=1".parse().unwrap_or_default();
        let res = repeated_slashes(&uri);
        let res = res.unwrap_or_else(|| panic!("expected a redirect"));
        assert_eq!(res.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(
            res.headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok()),
            Some("/double/slashes?a=1")
        );
        let root: http::Uri = "//".parse().unwrap_or_default();
        assert_eq!(
            repeated_slashes(&root)
                .and_then(|r| r.headers().get(header::LOCATION).cloned())
                .and_then(|v| v.to_str().ok().map(str::to_owned)),
            Some("/".to_owned())
        );
        let fine: http::Uri = "/a/b?x=//".parse().unwrap_or_default();
        assert!(repeated_slashes(&fine).is_none());
    }
}
