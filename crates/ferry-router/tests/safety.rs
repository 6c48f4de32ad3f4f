//! Safety: pathological route regexes a user might write in `next.config` (nested quantifiers,
//! lookahead-heavy middleware matchers, catastrophic `has` values) combined with hostile
//! requests (long runs of one character, 8 KB paths, many `%xx`, many slashes, huge headers and
//! cookies) must route within a time bound and never panic. Also replays the fuzz corpus
//! (`fuzz/corpus/route/`) through the fuzz target's own function, so CI exercises it on stable.
//!
//! Before `src/bounded.rs`, `^(?:\/((?:a+)+))(?=b)` on `/aaaa…` (8 KB) ran for minutes.

#[path = "../../../fuzz/src/lib.rs"]
mod harness;

use std::path::Path;
use std::time::{Duration, Instant};

use ferry_router::{MAX_PATH_LEN, RequestInfo, Resolution, Router};
use serde_json::{Value, json};

/// Per-request bound. Each routing phase stops at its first regex over the step budget
/// (`src/bounded.rs`); the harness runs five phases per request (`resolve`, then `start`,
/// middleware matching, `finish`), each ~0.1-0.2 s at worst in a debug build on a quiet
/// 2-core machine (release: ~100x less), but 3.6 s was seen for one request with other builds
/// and tests sharing both cores (a 3 s bound failed CI once). A runaway regex takes minutes to
/// centuries, so a bound well above any scheduling noise still tells the two apart.
const BOUND: Duration = Duration::from_secs(20);

/// Catastrophic shapes as `next build` compiles user patterns (`/:a((?:a+)+)b`, custom groups,
/// lookaheads) and as users write `has` values.
const PATHOLOGICAL: &[&str] = &[
    r"^(?:\/((?:a+)+))b(?:\/)?$",
    r"^(?:\/((?:a+)+))(?=b)",
    r"^\/(?:(.*)*x)$",
    r"^\/((?:(?!x).)*)*y$",
    r"^\/((?:a|aa)+)$",
    r"^\/((?:a|a)+)(?!a|$)",
    r"^\/(.*a){20}$",
    r"^(.*)(.*)(.*)(.*)(?=q)",
    r"^(?:\/((?:[^\/]+?)(?:\/(?:[^\/]+?))*))?(?=\/zz)",
    r"^\/((?:\w+\s?)+)$",
    r"^\/((?:a*)*)(?<=b)$",
    r"^(?:\/((?!_next\/static|_next\/image|favicon.ico)(?:[^/]+\/?)*))(?=x)",
];

fn route(source_regex: &str, extra: Value) -> Value {
    let mut r = json!({ "sourceRegex": source_regex });
    if let (Some(o), Some(e)) = (r.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    r
}

/// A table with the given pathological regexes in every phase, as middleware matchers, and as
/// the value of every kind of `has` / `missing` condition.
fn hostile_table(patterns: &[&str]) -> Value {
    let mut before = Vec::new();
    let mut files = Vec::new();
    let mut dynamic = Vec::new();
    let mut on_match = Vec::new();
    let mut matchers = Vec::new();
    for (i, p) in patterns.iter().enumerate() {
        let conds = json!([
            { "type": "header", "key": "x-h", "value": p },
            { "type": "cookie", "key": "c", "value": p },
            { "type": "query", "key": "q", "value": p },
            { "type": "host", "value": p },
        ]);
        before.push(route(p, json!({ "headers": { "x-p": format!("{i}-$1") } })));
        before.push(route(
            r"^(?:\/((?:[^\/]+?)(?:\/(?:[^\/]+?))*))?(?:\/)?$",
            json!({ "headers": { "x-has": "$1" }, "has": conds, "missing": conds }),
        ));
        files.push(route(p, json!({ "destination": "/rewritten/$1" })));
        dynamic.push(route(p, json!({ "destination": "/[slug]?nxtPslug=$1" })));
        on_match.push(route(p, json!({ "headers": { "x-on-match": "1" } })));
        matchers.push(json!({ "sourceRegex": p, "has": conds }));
        matchers.push(json!({
            "sourceRegex": r"^(?:\/(_next\/data\/[^/]{1,}))?(?:\/((?!_next\/static|_next\/image|favicon.ico).*))(\.json)?[\/#\?]?$",
            "missing": conds,
        }));
    }
    json!({
        "buildId": "B",
        "basePath": "",
        "i18n": null,
        "routing": {
            "beforeMiddleware": before,
            "beforeFiles": files.clone(),
            "afterFiles": files.clone(),
            "dynamicRoutes": dynamic,
            "onMatch": on_match,
            "fallback": files,
            "shouldNormalizeNextData": true,
        },
        "middlewareMatchers": matchers,
        "pathnames": ["/", "/[slug]", "/rewritten/a", "/index.rsc"],
    })
}

/// Hostile requests: long runs, 8 KB paths, `%xx` floods, slashes, huge headers and cookies.
fn hostile_requests() -> Vec<RequestInfo> {
    let near = MAX_PATH_LEN - 16;
    let paths = [
        format!("/{}", "a".repeat(near)),
        format!("/{}!", "a".repeat(near - 1)),
        format!("/{}", "a/".repeat(near / 2)),
        format!("/{}", "/".repeat(near)),
        format!("/{}", "%61".repeat(near / 3)),
        format!("/{}", "%".repeat(near)),
        format!("/{}", "%zz".repeat(near / 3)),
        format!("/{}", "%C3%A9".repeat(near / 6)),
        format!("/_next/data/B/{}.json", "a".repeat(near - 20)),
        format!("/blog/{}", "x.segments/".repeat(near / 11 - 1)),
        format!("/{}", "a ".repeat(near / 2)),
        format!(
            "/{}",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab"
        ),
        format!("/{}", "a".repeat(MAX_PATH_LEN * 4)),
    ];
    let big = "a".repeat(16 * 1024);
    let cookie = (0..2000)
        .map(|i| format!("c{i}=a"))
        .collect::<Vec<_>>()
        .join("; ");
    let mut out = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        let mut headers = vec![
            ("x-h".to_string(), big.clone()),
            ("cookie".to_string(), format!("{cookie}; c={big}")),
            ("accept-language".to_string(), "a-".repeat(4000)),
            ("rsc".to_string(), "1".to_string()),
            (
                "next-router-segment-prefetch".to_string(),
                "/_tree".repeat(1000),
            ),
        ];
        // Many small headers too.
        headers.extend((0..200).map(|n| (format!("x-n{n}"), "a".repeat(64))));
        out.push(RequestInfo {
            method: "GET".into(),
            path: p.clone(),
            query: Some(if i % 2 == 0 {
                format!("q={}", "a".repeat(8000))
            } else {
                "&".repeat(8000)
            }),
            headers: headers.into(),
            host: Some(if i % 3 == 0 {
                format!("{}.example", "a".repeat(200))
            } else {
                "localhost:3000".into()
            }),
            secure: i % 2 == 1,
            init_origin: (i % 4 == 0).then(|| "http://127.0.0.1:3000".into()),
        });
    }
    out
}

/// A middleware answer: status and response headers.
type MiddlewareAnswer = (u16, Vec<(String, String)>);

/// The middleware answers the fuzz harness also tries.
fn middleware_answers() -> Vec<Option<MiddlewareAnswer>> {
    let h = |k: &str, v: &str| (k.to_string(), v.to_string());
    let long = format!("/{}", "a".repeat(MAX_PATH_LEN - 8));
    vec![
        None,
        Some((200, vec![h("x-middleware-next", "1")])),
        Some((200, vec![h("x-middleware-rewrite", &long)])),
        Some((307, vec![h("location", &long)])),
        Some((
            200,
            vec![
                h("x-middleware-override-headers", &"x-a,".repeat(500)),
                h("x-middleware-request-x-a", "1"),
            ],
        )),
    ]
}

fn timed(what: &str, bound: Duration, f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    let e = t.elapsed();
    assert!(e < bound, "{what} took {e:?} (bound {bound:?})");
    e
}

fn short(s: &str) -> &str {
    let end = (0..=s.len().min(40))
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0);
    &s[..end]
}

/// One pathological regex (used in every phase, as a matcher and in every condition) per table:
/// every hostile request resolves within [`BOUND`].
#[test]
fn pathological_regexes_and_hostile_requests_are_bounded() {
    let mut worst = Duration::ZERO;
    for p in PATHOLOGICAL {
        let table = hostile_table(&[p]);
        let router = Router::new(&harness::manifest(&table.to_string())).expect("router");
        for req in hostile_requests() {
            for mw in middleware_answers() {
                let e = timed(&format!("{p} / {}", short(&req.path)), BOUND, || {
                    harness::route(&router, &req, mw.as_ref())
                });
                worst = worst.max(e);
            }
        }
    }
    eprintln!("one pathological regex per table: worst resolution {worst:?}");
}

/// All of them in one table: the cost adds up per regex (each stops at its step budget), but
/// every request still finishes.
#[test]
fn a_table_full_of_pathological_regexes_still_finishes() {
    let table = hostile_table(PATHOLOGICAL);
    let router = Router::new(&harness::manifest(&table.to_string())).expect("router");
    let bound = BOUND * 2 * u32::try_from(PATHOLOGICAL.len()).unwrap_or(u32::MAX);
    let mut worst = Duration::ZERO;
    for req in hostile_requests().into_iter().take(3) {
        let e = timed(
            &format!("all patterns / {}", short(&req.path)),
            bound,
            || harness::route(&router, &req, None),
        );
        worst = worst.max(e);
    }
    eprintln!(
        "{} pathological regexes in one table: worst {worst:?}",
        PATHOLOGICAL.len()
    );
}

#[test]
fn real_tables_with_hostile_requests_are_bounded() {
    let routers = harness::routers();
    let mut worst = Duration::ZERO;
    for router in &routers {
        for req in hostile_requests() {
            for mw in middleware_answers() {
                let e = timed(
                    &format!("fixture table, {}", short(&req.path)),
                    BOUND,
                    || harness::route(router, &req, mw.as_ref()),
                );
                worst = worst.max(e);
            }
        }
    }
    eprintln!("fixture tables: worst resolution {worst:?}");
}

/// Regression: a lookahead after nested quantifiers (the prefilter drops lookarounds, so it
/// cannot reject) made regress backtrack for minutes on an 8 KB run of `a`. A middleware
/// matcher over its budget counts as matching (the middleware may guard the path).
#[test]
fn lookahead_after_nested_quantifier_is_bounded() {
    let table = json!({
        "buildId": "B", "basePath": "", "i18n": null,
        "routing": { "beforeFiles": [{ "sourceRegex": r"^(?:\/((?:a+)+))(?=b)", "destination": "/x" }] },
        "pathnames": ["/x"],
    });
    let router = Router::new(&harness::manifest(&table.to_string())).expect("router");
    let req = RequestInfo {
        method: "GET".into(),
        path: format!("/{}", "a".repeat(MAX_PATH_LEN - 2)),
        host: Some("localhost".into()),
        ..RequestInfo::default()
    };
    // Over its step budget: the request is refused (no answer would be safe).
    timed("(a+)+(?=b) on /aaaa…", BOUND, || {
        assert!(matches!(
            router.resolve(&req),
            Resolution::Rejected { status: 400, .. }
        ));
    });
    let mw_table = json!({
        "buildId": "B", "basePath": "", "i18n": null, "routing": {},
        "middlewareMatchers": [{ "sourceRegex": r"^(?:\/((?:a+)+))(?=b)" }],
        "pathnames": [],
    });
    let mw_router = Router::new(&harness::manifest(&mw_table.to_string())).expect("router");
    match mw_router.start(&req) {
        ferry_router::Step::Continue(st) => assert!(mw_router.middleware_matches(&st)),
        ferry_router::Step::Done(r) => panic!("{r:?}"),
    }
    // And it still matches what it should.
    let req = RequestInfo {
        path: "/aaab".into(),
        ..req
    };
    match router.resolve(&req) {
        Resolution::Output(o) => assert_eq!(o.pathname, "/x"),
        other => panic!("/aaab must be rewritten to /x: {other:?}"),
    }
}

/// Regression: a middleware matcher with a negative lookahead, case-insensitive, must exclude
/// an upper-case path exactly as JavaScript's `/i` does (`next build`'s trailing-slash rule).
#[test]
fn case_insensitive_lookahead_excludes_upper_case() {
    let table = json!({
        "buildId": "B", "basePath": "", "i18n": null,
        "routing": { "beforeMiddleware": [{
            "sourceRegex": r"^(?:\/((?!\.well-known(?:\/.*)?)(?:[^/]+\/)*[^/]+\.\w+))\/$",
            "headers": { "Location": "/$1" }, "status": 308,
        }] },
        "pathnames": [],
    });
    let router = Router::new(&harness::manifest(&table.to_string())).expect("router");
    let req = |p: &str| RequestInfo {
        method: "GET".into(),
        path: p.into(),
        host: Some("localhost".into()),
        ..RequestInfo::default()
    };
    assert!(matches!(
        router.resolve(&req("/.WELL-KNOWN/SECURITY.TXT/")),
        Resolution::NotFound { .. }
    ));
    assert!(matches!(
        router.resolve(&req("/a/file.TXT/")),
        Resolution::Redirect { status: 308, .. }
    ));
}

/// Every file of the fuzz corpus, through the fuzz target's own function.
#[test]
fn fuzz_corpus_replays() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/route");
    let routers = harness::routers();
    let mut n = 0;
    let mut worst = Duration::ZERO;
    for entry in std::fs::read_dir(&dir).expect("fuzz/corpus/route exists") {
        let path = entry.expect("dir entry").path();
        let data = std::fs::read(&path).expect("corpus file");
        let e = timed(&format!("corpus {}", path.display()), BOUND, || {
            harness::run(&routers, &data)
        });
        worst = worst.max(e);
        n += 1;
    }
    assert!(n > 0, "empty corpus");
    eprintln!("{n} corpus files, worst {worst:?}");
}
