//! Named regressions of `next start` mode ([`Router::with_next_start_semantics`]) on the real
//! routing table of `tests/fixtures/routing-app` (basePath `/docs`, trailingSlash, i18n en-US /
//! fr / nl-NL with domains, middleware; `/posts/[id]` is `fallback: false` with en-US 1, 2 and
//! fr 1 prerendered). Each was a difference from `next start` 16.4.6 the differential suite
//! (`crates/ferry-cli/tests/differential.rs`, routing-app corpus) showed; the expected values
//! are what `next start` answers there.

mod common;

use ferry_manifest::{Manifest, StaticSource};
use ferry_router::{Output, RequestInfo, Resolution, Router};

/// The routing-app table with the functions and prerenders of `/posts/[id]` as the adapter
/// describes them (`fallback: false` pages are found through their prerenders).
fn manifest() -> Manifest {
    let (raw, fx) = common::load("routing-app");
    let mut m = common::manifest(&fx);
    m.config.trailing_slash = raw["trailingSlash"].as_bool().unwrap_or(false);
    let public: Vec<String> = serde_json::from_value(raw["publicFiles"].clone()).expect("public");
    for f in &mut m.static_files {
        if public.contains(&f.pathname) {
            f.source = StaticSource::Public;
        }
    }
    let mut functions = vec![];
    let mut prerenders = vec![];
    for locale in ["en-US", "fr", "nl-NL"] {
        let id = format!("/{locale}/posts/[id]");
        functions.push(serde_json::json!({"id": id, "kind": "PAGES",
            "pathname": format!("/docs{id}"), "sourcePage": "/posts/[id]",
            "entry": "p.js", "runtime": "nodejs"}));
        for n in ["1", "2"] {
            let p = format!("/docs/{locale}/posts/{n}");
            if fx.pathnames.contains(&p) {
                prerenders.push(serde_json::json!({"pathname": p, "parentOutputId": id,
                    "groupId": 1, "route": "/posts/[id]", "seed": null,
                    "parentFallbackMode": false}));
            }
        }
    }
    m.functions = serde_json::from_value(functions.into()).expect("functions");
    m.prerenders = serde_json::from_value(prerenders.into()).expect("prerenders");
    m
}

fn router() -> Router {
    Router::new(&manifest())
        .expect("router")
        .with_next_start_data_urls(true)
        .with_next_start_semantics(true)
}

fn build_id() -> String {
    common::load("routing-app").1.build_id
}

fn get(path: &str, query: Option<&str>, headers: &[(&str, &str)]) -> RequestInfo {
    common::case(path, query, headers, "localhost:3000").req
}

fn output(r: Resolution) -> Output {
    match r {
        Resolution::Output(o) => o,
        other => panic!("not an output: {other:?}"),
    }
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// `/docs/fr/posts/2/`: next start invokes `/posts/[id]`, which declines the path
/// (NoFallbackError); router-server routes `/posts/2/` (basePath and locale stripped by
/// next-server) again, which finds nothing: the 404 of the host's default locale.
#[test]
fn fallback_false_miss_is_routed_a_second_time() {
    let r = router();
    let req = get("/docs/fr/posts/2/", None, &[]);
    match r.resolve(&req) {
        Resolution::NotFound {
            declined, headers, ..
        } => {
            assert_eq!(declined.as_deref(), Some("/docs/fr/posts/[id]"));
            assert_eq!(header(&headers, "x-ra-all"), Some("1"));
        }
        other => panic!("first pass: {other:?}"),
    }
    assert_eq!(r.no_fallback_retry(&req, &req.headers).path, "/posts/2/");
    assert_eq!(
        r.no_fallback_retry(&get("/docs/nl-NL/posts/1/", Some("q=1"), &[]), &[])
            .path,
        "/posts/1/"
    );
    for path in [
        "/docs/fr/posts/2/",
        "/docs/nl-NL/posts/1/",
        "/docs/posts/3/",
    ] {
        match r.resolve_all_passes(&get(path, None, &[])) {
            Resolution::NotFound {
                declined, headers, ..
            } => {
                assert_eq!(declined, None, "{path}");
                // The first pass's headers stay on the response.
                assert_eq!(header(&headers, "x-ra-all"), Some("1"), "{path}");
            }
            other => panic!("{path}: {other:?}"),
        }
    }
    // The second pass's URL names no locale: next start renders the default locale's 404.
    assert_eq!(
        r.path_locale(&r.next_start_pathname(&r.no_fallback_retry(&req, &[]))),
        Some("en-US".to_string())
    );
}

/// `/docs/_next/data/<id>/en-US/posts/3.json`: the route module leaves `req.url` at `/posts/3`,
/// whose second pass hits the internal trailing-slash redirect: 308 to `/posts/3/`, with the
/// first pass's headers.
#[test]
fn fallback_false_data_miss_redirects_on_the_second_pass() {
    let r = router();
    let path = format!("/docs/_next/data/{}/en-US/posts/3.json", build_id());
    let req = get(&path, None, &[]);
    assert_eq!(r.no_fallback_retry(&req, &[]).path, "/posts/3");
    match r.resolve_all_passes(&req) {
        Resolution::Redirect {
            status,
            location,
            next_start_headers,
            ..
        } => {
            assert_eq!(status, 308);
            assert_eq!(location.as_deref(), Some("/posts/3/"));
            assert_eq!(header(&next_start_headers, "x-ra-all"), Some("1"));
            assert_eq!(
                header(&next_start_headers, "refresh"),
                Some("0;url=/posts/3/")
            );
        }
        other => panic!("{other:?}"),
    }
}

/// A `fallback: false` page serves what it prerendered, at any spelling of its params, and
/// draft mode (the bypass cookie) reaches the page itself.
#[test]
fn fallback_false_page_serves_its_prerenders() {
    let r = router();
    for path in ["/docs/posts/1/", "/docs/posts/%31/", "/docs/fr/posts/1/"] {
        let o = output(r.resolve_all_passes(&get(path, None, &[])));
        let want = if path.contains("/fr/") {
            "/docs/fr/posts/1"
        } else {
            "/docs/en-US/posts/1"
        };
        assert_eq!(o.pathname, want, "{path}");
    }
    let (raw, _) = common::load("routing-app");
    let bypass = raw["routing"]["dynamicRoutes"]
        .as_array()
        .and_then(|a| a.iter().find_map(|d| d["has"][0]["value"].as_str()))
        .expect("bypass cookie value")
        .to_string();
    let cookie = format!("__prerender_bypass={bypass}");
    let o = output(r.resolve_all_passes(&get("/docs/fr/posts/2/", None, &[("cookie", &cookie)])));
    assert_eq!(o.pathname, "/docs/fr/posts/[id]");
}

/// next start's `getItem` also tries a path's decoded spelling: `/st%61tic` invokes the page
/// `/static`, whose render matches no page at `/st%61tic` and answers the 404 page (of the
/// request's locale, without the router's private Cache-Control).
#[test]
fn decoded_spelling_of_a_page_renders_the_404_page() {
    let r = router();
    for (path, want) in [
        ("/docs/st%61tic/", "/docs/en-US/404"),
        ("/docs/%73tatic/", "/docs/en-US/404"),
        ("/docs/fr/st%61tic/", "/docs/fr/404"),
        ("/docs/ss%72/", "/docs/en-US/404"),
        ("/docs/api/ech%6f/", "/docs/en-US/404"),
        ("/docs/4%304/", "/docs/en-US/404"),
    ] {
        assert_eq!(
            output(r.resolve_all_passes(&get(path, None, &[]))).pathname,
            want,
            "{path}"
        );
    }
    // Not a page file: a prerendered path of a dynamic page, an unknown page.
    for path in ["/docs/p%6fsts/1/", "/docs/n%6fpe/"] {
        assert!(
            matches!(
                r.resolve_all_passes(&get(path, None, &[])),
                Resolution::NotFound { .. }
            ),
            "{path}"
        );
    }
    // The host's default locale when the path names none.
    let o = output(
        r.resolve_all_passes(&common::case("/docs/st%61tic/", None, &[], "fr.example.test").req),
    );
    assert_eq!(o.pathname, "/docs/fr/404");
}

/// fallback `/legacy/:path*` -> `/ssr?legacy=:path*`: next start appends `path` as an array,
/// one segment too (`path: ["x"]`); the output says which keys are arrays.
#[test]
fn catch_all_params_appended_to_a_rewrite_query_are_arrays() {
    let r = router();
    let o = output(r.resolve_all_passes(&get("/docs/fr/legacy/x/", None, &[])));
    assert_eq!(o.pathname, "/docs/fr/ssr");
    assert_eq!(
        o.query,
        vec![
            ("legacy".to_string(), "x".to_string()),
            ("path".to_string(), "x".to_string())
        ]
    );
    assert_eq!(o.query_arrays, vec!["path".to_string()]);
    let o = output(r.resolve_all_passes(&get("/docs/legacy/a/b/", None, &[])));
    assert_eq!(o.query_arrays, vec!["path".to_string()]);
    // The request's own `path` is replaced by the param (Object.assign), still an array.
    let o = output(r.resolve_all_passes(&get("/docs/legacy/x/", Some("path=q&z=1"), &[])));
    assert_eq!(
        o.query,
        vec![
            ("path".to_string(), "x".to_string()),
            ("z".to_string(), "1".to_string()),
            ("legacy".to_string(), "x".to_string())
        ]
    );
    assert_eq!(o.query_arrays, vec!["path".to_string()]);
    // No repeated param, no array.
    let o = output(r.resolve_all_passes(&get("/docs/ssr/", Some("a=1"), &[])));
    assert!(o.query_arrays.is_empty());
}
