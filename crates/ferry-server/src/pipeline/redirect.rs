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
