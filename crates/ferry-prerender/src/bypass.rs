//! `bypassFor` conditions of a prerender (`has`-style: header / cookie / query / host, with an
//! optional JavaScript regex the whole value must match).

use ferry_manifest::{HasKind, RouteHas};
use http::HeaderMap;

use crate::PrerenderError;

/// One compiled `bypassFor` condition.
#[derive(Debug, Clone)]
pub struct BypassRule {
    kind: HasKind,
    key: Option<String>,
    value: Option<regress::Regex>,
}

/// Longest value a condition regex is run on (backtracking engine: bound the input).
const MAX_MATCH_LEN: usize = 4096;

impl BypassRule {
    /// Compiles a condition; its value is a JS regex anchored to the whole value.
    pub fn compile(pathname: &str, has: &RouteHas) -> Result<Self, PrerenderError> {
        let value = match &has.value {
            None => None,
            Some(v) => Some(regress::Regex::new(&format!("^(?:{v})$")).map_err(|e| {
                PrerenderError::BadRegex {
                    pathname: pathname.to_owned(),
                    pattern: v.clone(),
                    message: e.to_string(),
                }
            })?),
        };
        Ok(BypassRule {
            kind: has.kind,
            key: has.key.as_ref().map(|k| k.to_ascii_lowercase()),
            value,
        })
    }

    fn value_matches(&self, v: &str) -> bool {
        match &self.value {
            None => true,
            Some(re) => v.len() <= MAX_MATCH_LEN && re.find(v).is_some(),
        }
    }

    /// Whether the request meets the condition.
    pub fn matches<B>(&self, req: &http::Request<B>) -> bool {
        let headers = req.headers();
        match self.kind {
            HasKind::Header => {
                let Some(key) = &self.key else { return false };
                headers
                    .get_all(key.as_str())
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .any(|v| self.value_matches(v))
            }
            HasKind::Cookie => {
                let Some(key) = &self.key else { return false };
                cookie(headers, key).is_some_and(|v| self.value_matches(v))
            }
            HasKind::Host => headers
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(|h| h.split(':').next().unwrap_or(h))
                .is_some_and(|h| self.value_matches(h)),
            HasKind::Query => {
                let Some(key) = &self.key else { return false };
                req.uri().query().is_some_and(|q| {
                    q.split('&').any(|pair| {
                        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                        k.eq_ignore_ascii_case(key) && self.value_matches(v)
                    })
                })
            }
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(kind: HasKind, key: Option<&str>, value: Option<&str>) -> BypassRule {
        BypassRule::compile(
            "/p",
            &RouteHas {
                kind,
                key: key.map(str::to_owned),
                value: value.map(str::to_owned),
            },
        )
        .expect("compiles")
    }

    #[test]
    fn next_action_and_multipart() {
        let action = rule(HasKind::Header, Some("next-action"), None);
        let multipart = rule(
            HasKind::Header,
            Some("content-type"),
            Some("multipart/form-data;.*"),
        );
        let req = http::Request::post("/")
            .header("Next-Action", "abc")
            .body(())
            .expect("req");
        assert!(action.matches(&req));
        assert!(!multipart.matches(&req));
        let req = http::Request::post("/")
            .header("content-type", "multipart/form-data; boundary=x")
            .body(())
            .expect("req");
        assert!(multipart.matches(&req));
        let req = http::Request::post("/")
            .header("content-type", "text/multipart/form-data; boundary=x")
            .body(())
            .expect("req");
        assert!(!multipart.matches(&req), "anchored at the start");
    }

    #[test]
    fn cookie_query_host() {
        let req = http::Request::get("/x?preview=1&b=2")
            .header("cookie", "a=1; __prerender_bypass=tok")
            .header("host", "example.com:3000")
            .body(())
            .expect("req");
        assert_eq!(cookie(req.headers(), "__prerender_bypass"), Some("tok"));
        assert!(rule(HasKind::Query, Some("preview"), Some("1")).matches(&req));
        assert!(!rule(HasKind::Query, Some("preview"), Some("2")).matches(&req));
        assert!(rule(HasKind::Host, None, Some("example\\.com")).matches(&req));
        assert!(rule(HasKind::Cookie, Some("a"), None).matches(&req));
    }

    #[test]
    fn bad_regex_is_a_typed_error() {
        let err = BypassRule::compile(
            "/p",
            &RouteHas {
                kind: HasKind::Header,
                key: Some("x".into()),
                value: Some("(".into()),
            },
        )
        .expect_err("bad regex");
        assert!(matches!(err, PrerenderError::BadRegex { .. }));
    }
}
