//! Path-only resolutions: static files whose routing outcome depends on nothing but their path,
//! resolved once when the router is built so a request for them skips the routing phases.
//!
//! A static file's resolution depends only on its path when, for that path, no rule that could
//! match it reads the request (`has` / `missing`), rewrites or redirects it, no dynamic route
//! or middleware matcher could claim it, and i18n is off (locale detection reads headers and
//! the host). What is left is the `headers()` rules and `onMatch` headers that apply to every
//! request for the path, which [`Router::resolve`] computes once here. The RSC header and the
//! query are the request's only other inputs: the caller uses these outputs only for requests
//! without either ([`Router::path_only_output`]).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use crate::rurl::Url;
use ferry_manifest::Manifest;

use crate::matcher::{CompiledRoute, js_is_match};
use crate::{HeaderList, Output, RequestInfo, Resolution, Router, urls};

/// The build's path tables (pathnames, path-only outputs): keys fixed when the router is built.
pub(crate) type PathSet = HashSet<String, BuildHasherDefault<PathHasher>>;
/// [`PathSet`] with a value per path.
pub(crate) type PathMap<V> = HashMap<String, V, BuildHasherDefault<PathHasher>>;

/// A fast hash for short paths (8 bytes a step, a 64-bit finalizer so hashbrown's top and low
/// bits both vary). The tables' keys are the build's own, so SipHash's resistance to chosen
/// keys buys nothing here, and it was a good part of a lookup.
#[derive(Default, Clone, Copy)]
pub(crate) struct PathHasher(u64);

impl Hasher for PathHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut h = self.0 ^ (bytes.len() as u64).wrapping_mul(K);
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            h = (h ^ w).wrapping_mul(K).rotate_left(29);
        }
        let mut tail = 0u64;
        for (i, b) in chunks.remainder().iter().enumerate() {
            tail |= u64::from(*b) << (8 * i);
        }
        self.0 = (h ^ tail).wrapping_mul(K).rotate_left(29);
    }

    fn finish(&self) -> u64 {
        // murmur3's fmix64.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        h ^= h >> 33;
        h = h.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
        h ^ (h >> 33)
    }
}

impl Router {
    /// The output every `GET`/`HEAD` request for `path` resolves to when it has no query and no
    /// RSC header ([`Router::rsc_header`]), for static files whose routing reads nothing else.
    /// Its `request_headers` are empty: the caller forwards the request's own.
    pub fn path_only_output(&self, path: &str) -> Option<&Output> {
        self.path_only.get(path)
    }

    /// The whole resolution of `req` when it is a `GET`/`HEAD` for a path-only static file
    /// without a query or RSC header: the memoized output with the request's own headers.
    /// Only in `@next/routing` mode, which the memo was computed in.
    pub(crate) fn memo_resolution(&self, req: &RequestInfo) -> Option<Resolution> {
        if self.next_start
            || self.path_only.is_empty()
            || !matches!(req.method.as_str(), "GET" | "HEAD")
            || req.query.as_deref().is_some_and(|q| !q.is_empty())
        {
            return None;
        }
        let output = self.path_only.get(&req.path)?;
        let rsc = self.rsc.header.as_str();
        if req.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(rsc)) {
            return None;
        }
        let headers = HeaderList::from_shared(&req.headers);
        Some(Resolution::Output(Output {
            request_headers: headers.into_shared(),
            ..output.clone()
        }))
    }

    /// The request header that marks an RSC request (`rsc`).
    pub fn rsc_header(&self) -> &str {
        &self.rsc.header
    }

    /// Resolves every static file of `manifest` whose routing depends only on its path.
    pub(crate) fn path_only_outputs(&self, manifest: &Manifest) -> PathMap<Output> {
        if self.i18n.is_some() {
            return PathMap::default();
        }
        manifest
            .static_files
            .iter()
            .filter(|file| self.depends_only_on_path(&file.pathname))
            .filter_map(|file| {
                let req = RequestInfo {
                    method: "GET".into(),
                    path: file.pathname.clone(),
                    query: None,
                    headers: Default::default(),
                    host: None,
                    secure: false,
                    init_origin: None,
                };
                match self.resolve(&req) {
                    Resolution::Output(output) if output.pathname == file.pathname => {
                        Some((file.pathname.clone(), output))
                    }
                    _ => None,
                }
            })
            .collect()
    }

    /// Whether no routing step for `path` reads anything but the path (see the module docs).
    fn depends_only_on_path(&self, path: &str) -> bool {
        // The path must reach the rules unchanged (no dot segments or characters the URL
        // parser re-encodes), and must be a file the filesystem phase finds.
        let Ok(mut url) = Url::parse("http://localhost/") else {
            return false;
        };
        url.set_path(path);
        if url.path() != path || !self.pathnames.contains(path) {
            return false;
        }
        if self.should_normalize_next_data && path.starts_with(&self.next_data_prefix()) {
            return false;
        }
        let touches = |routes: &[CompiledRoute]| routes.iter().any(|r| matches(r, path));
        // A condition on the RSC header alone is decided for the requests these outputs serve
        // (they carry no RSC header), like Next's deployment-id `onMatch` rule.
        let rsc = self.rsc.header.as_str();
        let reads_request = |r: &CompiledRoute| {
            r.has
                .iter()
                .chain(&r.missing)
                .any(|c| !c.reads_only_header(rsc))
        };
        let changes_path = |r: &CompiledRoute| r.destination.is_some() || r.status.is_some();
        let phases_ok = [&self.before_middleware, &self.before_files]
            .into_iter()
            .flatten()
            .filter(|r| matches(r, path))
            .all(|r| !reads_request(r) && !changes_path(r));
        let on_match_ok = self
            .on_match
            .iter()
            .filter(|r| matches(r, path))
            .all(|r| !reads_request(r));
        let decoded = urls::decode_uri_component(path);
        let middleware_matches = self.middleware.iter().any(|m| {
            js_is_match(&m.re, path) || decoded.as_deref().is_some_and(|d| js_is_match(&m.re, d))
        });
        phases_ok && on_match_ok && !touches(&self.dynamic_routes) && !middleware_matches
    }
}

fn matches(route: &CompiledRoute, path: &str) -> bool {
    js_is_match(&route.re, path)
}

#[cfg(test)]
mod tests {
    use ferry_manifest::{MANIFEST_VERSION, Route, RouteHas, RuntimeConfig, StaticFile};

    use super::*;

    fn route(source_regex: &str) -> Route {
        serde_json::from_value(serde_json::json!({ "sourceRegex": source_regex }))
            .expect("route json")
    }

    fn manifest(files: &[&str]) -> Manifest {
        let mut m: Manifest = serde_json::from_value(serde_json::json!({
            "version": MANIFEST_VERSION,
            "ferryVersion": "test",
            "nextVersion": "16.4.6",
            "kind": "server",
            "buildId": "b",
            "config": serde_json::to_value(RuntimeConfig::default()).expect("config"),
            "routing": {},
        }))
        .expect("manifest json");
        m.static_files = files
            .iter()
            .map(|p| {
                serde_json::from_value::<StaticFile>(serde_json::json!({
                    "pathname": p, "file": p, "source": "output", "contentType": "text/plain",
                    "size": 0, "hash": ""
                }))
                .expect("static file json")
            })
            .collect();
        m
    }

    fn request(path: &str, headers: &[(&str, &str)]) -> RequestInfo {
        RequestInfo {
            method: "GET".into(),
            path: path.into(),
            query: None,
            headers: std::sync::Arc::new(
                headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            host: Some("example.com".into()),
            secure: false,
            init_origin: None,
        }
    }

    #[test]
    fn header_rules_are_resolved_once_and_equal_a_full_resolution() {
        let mut m = manifest(&["/_next/static/chunks/a.js", "/robots.txt"]);
        let mut all = route("^(?:\\/(.*))?$");
        all.headers = Some([("x-all".to_string(), "$1".to_string())].into());
        m.routing.before_middleware = vec![all];
        let mut immutable = route("/_next/static/chunks/.+");
        immutable.headers = Some([("cache-control".to_string(), "immutable".to_string())].into());
        m.routing.on_match = vec![immutable];
        let router = Router::new(&m).expect("router");
        for path in ["/_next/static/chunks/a.js", "/robots.txt"] {
            let memo = router.path_only_output(path).expect("path-only");
            let full = match router.resolve(&request(path, &[("cookie", "a=b"), ("x-y", "z")])) {
                Resolution::Output(o) => o,
                other => panic!("expected an output, got {other:?}"),
            };
            assert_eq!(memo.headers, full.headers, "{path}");
            assert_eq!(memo.pathname, full.pathname);
            assert_eq!(memo.invocation_path, full.invocation_path);
            assert!(memo.request_headers.is_empty());
        }
        let chunk = router
            .path_only_output("/_next/static/chunks/a.js")
            .expect("chunk");
        assert!(
            chunk
                .headers
                .contains(&("cache-control".into(), "immutable".into()))
        );
    }

    #[test]
    fn a_rule_that_reads_the_request_or_rewrites_disqualifies_the_path() {
        let mut m = manifest(&["/a.txt", "/b.txt", "/c.txt", "/d.txt", "/ok.txt"]);
        let mut has_cookie = route("^/a\\.txt$");
        has_cookie.has = Some(vec![
            serde_json::from_value::<RouteHas>(serde_json::json!({"type": "cookie", "key": "k"}))
                .expect("has"),
        ]);
        has_cookie.headers = Some([("x".to_string(), "y".to_string())].into());
        let mut rewrite = route("^/b\\.txt$");
        rewrite.destination = Some("/ok.txt".into());
        let mut redirect = route("^/c\\.txt$");
        redirect.headers = Some([("Location".to_string(), "/".to_string())].into());
        redirect.status = Some(308);
        m.routing.before_middleware = vec![has_cookie, redirect];
        m.routing.before_files = vec![rewrite];
        m.routing.dynamic_routes = vec![route("^/(?<name>[^/]+?)\\.txt$")];
        let router = Router::new(&m).expect("router");
        for path in ["/a.txt", "/b.txt", "/c.txt", "/d.txt", "/ok.txt"] {
            assert!(router.path_only_output(path).is_none(), "{path}");
        }
        m.routing.dynamic_routes.clear();
        let router = Router::new(&m).expect("router");
        assert!(router.path_only_output("/d.txt").is_some());
        assert!(router.path_only_output("/ok.txt").is_some());
        assert!(router.path_only_output("/a.txt").is_none());
    }

    #[test]
    fn a_condition_on_the_rsc_header_alone_does_not_disqualify() {
        // next build's deployment-id rule: `/:path*` with `has: [{ type: header, key: rsc }]`.
        let mut m = manifest(&["/_next/static/chunks/a.js"]);
        let mut deployment = route("^(?:\\/(.*))?$");
        deployment.headers = Some([("x-nextjs-deployment-id".to_string(), "d".to_string())].into());
        deployment.has = Some(vec![
            serde_json::from_value::<RouteHas>(
                serde_json::json!({"type": "header", "key": "rsc", "value": "1"}),
            )
            .expect("has"),
        ]);
        m.routing.on_match = vec![deployment];
        let router = Router::new(&m).expect("router");
        let memo = router
            .path_only_output("/_next/static/chunks/a.js")
            .expect("path-only");
        assert!(memo.headers.is_empty(), "{:?}", memo.headers);
        assert_eq!(router.rsc_header(), "rsc");
    }

    #[test]
    fn i18n_and_middleware_matchers_disqualify() {
        let mut m = manifest(&["/_next/static/x.js", "/public.txt"]);
        m.middleware = Some(
            serde_json::from_value(serde_json::json!({
                "entry": "mw.js", "runtime": "nodejs",
                "matchers": [{"sourceRegex": "^/((?!_next/static).*)$"}]
            }))
            .expect("middleware"),
        );
        let router = Router::new(&m).expect("router");
        assert!(router.path_only_output("/_next/static/x.js").is_some());
        assert!(router.path_only_output("/public.txt").is_none());
        m.config.i18n = Some(
            serde_json::from_value(
                serde_json::json!({"locales": ["en", "fr"], "defaultLocale": "en"}),
            )
            .expect("i18n"),
        );
        let router = Router::new(&m).expect("router");
        assert!(router.path_only_output("/_next/static/x.js").is_none());
    }
}
