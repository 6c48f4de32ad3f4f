//! Oracle test: Ferry's router against `@next/routing@16.4.3` (the reference implementation of
//! Next.js routing for adapters), run in one long-lived Node process (`tests/oracle/oracle.js`).
//!
//! Tables: `fixtures/showcase.json` (the real routing table and pathnames of the example app's
//! build), `fixtures/rules.json` (has/missing of every kind, params, interpolation, external
//! rewrites, redirects, middleware matchers with lookahead) and `fixtures/intl.json` (basePath,
//! i18n with domains and detection, trailingSlash rules, `_next/data`). Thousands of seeded
//! generated requests plus hand-written ones; every divergence fails the test.
//!
//! The harness (oracle process, normalization, the deliberate middleware difference) is shared
//! with `generated.rs` in `common/mod.rs`.

mod common;

use std::collections::BTreeMap;

use common::{
    Case, Fixture, Oracle, Rng, TableInfo, case, check, check_next_start, kind, load, manifest,
    middleware_responses, next_start_router, prepare,
};
use ferry_router::{RequestInfo, Router};
use serde_json::json;

const EXTRA_PATHS: &[&str] = &[
    "/",
    "/nope",
    "/a%20b",
    "/blog/%E2%9C%93",
    "/blog/a%2Fb",
    "/x/../ssr",
    "/./isr",
    "//double",
    "/index",
    "/%2e%2e/ssr",
    "/blog/hello.segments/_tree.segment.rsc",
    "/BLOG/Hello",
    "/blog/é",
    "/old/one",
    "/user/42",
    "/user/abc",
    "/hdr/x",
    "/go-ext",
    "/dest-redirect/q",
    "/refresh",
    "/cookie-gate",
    "/docs",
    "/docs/hello",
    "/proxy/a/b",
    "/tenant",
    "/teapot",
    "/q",
    "/after/p",
    "/after/p/q",
    "/to-dynamic/hello",
    "/to-dynamic/other",
    "/missing-only",
    "/ext-after",
    "/after-redirect",
    "/shop/a/b/c",
    "/opt",
    "/opt/a/b",
    "/posts/7",
    "/fb",
    "/fb/x/y",
    "/_next/static/mw-only",
    "/_next/data/BUILD1/about.json",
    "/_next/data/BUILD1/index.json",
    "/_next/data/BUILD1/blog/hello.json",
    "/_next/data/BUILD1/blog/new.json",
    "/_next/data/OTHER/a.json",
    "/old-blog/abc",
    "/temp-redirect",
    "/beta",
    "/hello-rewrite",
    "/fallback/a/b",
    "/proxy-redirect",
    "/proxy-rewrite",
    "/ssr",
    "/legacy/ssr",
    "/_next/data/QieQYEuOxgI6b6eZkxrtM/legacy/ssr.json",
    "/_next/data/QieQYEuOxgI6b6eZkxrtM/legacy/static.json",
    "/_next/data/QieQYEuOxgI6b6eZkxrtM/index.json",
    "/blog/new-post",
    "/blog/new-post.rsc",
    "/blog/x.segments/blog/$d$slug/__PAGE__.segment.rsc",
    "/base",
    "/base/",
    "/base/fr",
    "/base/fr/",
    "/base/about",
    "/base/about/",
    "/base/fr/about/",
    "/base/nl-NL/about/",
    "/base/NL-nl/about/",
    "/base/item/5/",
    "/base/fr/item/5/",
    "/base/fr/old/x",
    "/base/alias/",
    "/base/fr/alias/",
    "/base/rw/9/",
    "/base/de/rw/9/",
    "/base/robots.txt",
    "/base/robots.txt/",
    "/base/.well-known/x",
    "/base/api/ping",
    "/base/_next/data/B2/en-US/about.json",
    "/base/_next/data/B2/fr/about.json",
    "/base/_next/data/B2/en-US/item/3.json",
    "/base/_next/data/B2/en-US.json",
    "/base/_next/static/chunks/c.js",
    "/basement",
    "/base/a.b/",
];
const SEGMENTS: &[&str] = &[
    "x",
    "hello",
    "a b",
    "%20",
    "%2F",
    "%E2%9C%93",
    "é",
    "..",
    ".",
    "",
    "index",
    "a.json",
    "b.rsc",
    "[slug]",
    "(x)",
    "~u",
    "a:b",
    "a@b",
    "a!$&'()*+,;=",
    "%",
    "%zz",
    "UPPER",
    "_next",
    "api",
    "{x}",
    "a|b",
    "a^b",
    "`",
    "\"q\"",
    "<t>",
];
const QUERIES: &[&str] = &[
    "debug=1",
    "a=1&a=2",
    "x=%20y+z",
    "term=foo",
    "mode=a",
    "mode=c",
    "hide=1",
    "beta=1",
    "nxtPslug=zzz",
    "_rsc=abc",
    "q=%E2%9C%93&q=2",
    "=empty&k",
    "k=",
    "a=b=c",
    "%zz=1",
    "from=x",
];
const HOSTS: &[&str] = &[
    "localhost:3000",
    "example.com",
    "acme.example.com",
    "hidden.example",
    "dev.local",
    "example.fr",
    "example.nl:8080",
    "EXAMPLE.FR",
    "[::1]:3000",
    "127.0.0.1",
    "Shop.Example.Com",
];
const HEADERS: &[(&str, &str)] = &[
    ("cookie", "beta=yes"),
    ("cookie", "session=abc123"),
    ("cookie", "session=ABC; hide=1"),
    ("cookie", "mw=1; NEXT_LOCALE=fr"),
    ("cookie", "NEXT_LOCALE=nl-nl"),
    ("cookie", "bad=%E0; NEXT_LOCALE=fr"),
    ("accept-language", "fr-CA,fr;q=0.9,en;q=0.8"),
    ("accept-language", "nl"),
    ("accept-language", "de, en-US;q=0.5"),
    ("accept-language", "en"),
    ("x-id-mode", "num"),
    ("x-id-mode", "integer"),
    ("x-bypass", "1"),
    ("x-catch-all", "yes"),
    ("x-want-blog", "1"),
    ("rsc", "1"),
    ("next-router-prefetch", "1"),
    ("purpose", "prefetch"),
    ("x-prerender-revalidate", "95f2a3120001eb0bdd4bc2e02af789dc"),
    ("next-router-segment-prefetch", "/_tree"),
];

fn generate(rng: &mut Rng, fx: &Fixture, n: usize) -> Vec<Case> {
    let mut paths: Vec<String> = fx.pathnames.clone();
    paths.extend(EXTRA_PATHS.iter().map(|s| s.to_string()));
    let mws = middleware_responses();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut path = rng.pick(&paths).clone();
        match rng.below(10) {
            0 => path.push('/'),
            1 => path = path.to_uppercase(),
            2 => {
                path.push('/');
                let seg: &&str = rng.pick(SEGMENTS);
                path.push_str(seg);
            }
            3 => {
                let at = path.rfind('/').unwrap_or(0);
                let seg = rng.pick(SEGMENTS);
                path.replace_range(at.., &format!("/{seg}"));
            }
            4 => path = path.replace('/', "//"),
            5 => path.push_str(".rsc"),
            _ => {}
        }
        let query = rng.chance(40).then(|| {
            let mut q = rng.pick(QUERIES).to_string();
            if rng.chance(30) {
                q.push('&');
                let more: &&str = rng.pick(QUERIES);
                q.push_str(more);
            }
            q
        });
        let mut headers = Vec::new();
        for _ in 0..rng.below(4) {
            let (k, v) = *rng.pick(HEADERS);
            headers.push((k.to_string(), v.to_string()));
        }
        let host = rng.pick(HOSTS).to_string();
        let mw = rng.chance(50).then(|| {
            let (s, h) = rng.pick(&mws);
            (
                *s,
                h.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        });
        out.push(Case {
            req: RequestInfo {
                method: "GET".into(),
                path,
                query,
                headers: headers.into(),
                host: Some(host),
                secure: rng.chance(10),
                init_origin: None,
            },
            mw,
        });
    }
    out
}

fn hand_written() -> Vec<(&'static str, Case)> {
    let mut v = vec![
        (
            "showcase",
            case("/old-blog/abc", None, &[], "localhost:3000"),
        ),
        (
            "showcase",
            case("/old-blog/abc", Some("x=1"), &[], "localhost:3000"),
        ),
        (
            "showcase",
            case("/blog/hello/", None, &[], "localhost:3000"),
        ),
        (
            "showcase",
            case("/beta", None, &[("cookie", "beta=yes")], "localhost:3000"),
        ),
        ("showcase", case("/docs/hello", None, &[], "localhost:3000")),
        ("showcase", case("/blog/new", None, &[], "localhost:3000")),
        (
            "showcase",
            case("/blog/new.rsc", None, &[("rsc", "1")], "localhost:3000"),
        ),
        (
            "showcase",
            case("/ssr", Some("debug"), &[], "localhost:3000"),
        ),
        ("showcase", case("/fallback/x", None, &[], "localhost:3000")),
        (
            "showcase",
            case("/hello-rewrite", None, &[], "localhost:3000"),
        ),
        (
            "showcase",
            case(
                "/_next/static/chunks/0cz1d0mv5g_q7.js",
                None,
                &[],
                "localhost:3000",
            ),
        ),
        (
            "showcase",
            case(
                "/_next/data/QieQYEuOxgI6b6eZkxrtM/legacy/ssr.json",
                None,
                &[],
                "localhost:3000",
            ),
        ),
        (
            "rules",
            case("/user/42", None, &[("x-id-mode", "num")], "localhost"),
        ),
        ("rules", case("/hdr/abc", Some("mode=b"), &[], "localhost")),
        ("rules", case("/go-ext", None, &[], "dev.local")),
        ("rules", case("/tenant", None, &[], "acme.example.com")),
        (
            "rules",
            case(
                "/q",
                Some("term=x"),
                &[("accept-language", "fr-CA")],
                "localhost",
            ),
        ),
        ("rules", case("/after/a", None, &[], "localhost")),
        ("rules", case("/to-dynamic/hello", None, &[], "localhost")),
        (
            "rules",
            case("/missing-only", Some("hide=2"), &[], "localhost"),
        ),
        ("rules", case("/opt", None, &[], "localhost")),
        ("rules", case("/shop/a/b", None, &[], "localhost")),
        (
            "rules",
            case("/_next/data/BUILD1/blog/hi.json", None, &[], "localhost"),
        ),
        (
            "intl",
            case("/base", None, &[("accept-language", "fr")], "localhost"),
        ),
        (
            "intl",
            case("/base/", None, &[("accept-language", "nl")], "localhost"),
        ),
        ("intl", case("/base/", None, &[], "example.fr")),
        ("intl", case("/base/fr/about/", None, &[], "example.com")),
        (
            "intl",
            case(
                "/base/about/",
                None,
                &[("cookie", "NEXT_LOCALE=fr")],
                "localhost",
            ),
        ),
        (
            "intl",
            case("/base/_next/data/B2/fr/about.json", None, &[], "localhost"),
        ),
        ("intl", case("/base/item/7/", None, &[], "example.nl:8080")),
    ];
    let mut with_mw = case("/ssr", None, &[], "localhost:3000");
    with_mw.mw = Some((200, vec![("x-middleware-rewrite".into(), "/isr".into())]));
    v.push(("showcase", with_mw));
    v
}

#[test]
fn matches_next_routing_oracle() {
    let mut oracle = Oracle::start();
    let mut rng = Rng(0x5eed_f00d_dead_beef);
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    let tables = ["showcase", "rules", "intl"];
    let mut routers = BTreeMap::new();
    let mut fixtures = BTreeMap::new();
    let mut ns_routers = BTreeMap::new();
    for t in tables {
        let (raw, fx) = load(t);
        let ok = oracle.ask(&json!({"define": t, "table": raw}));
        assert_eq!(ok["ok"], true);
        routers.insert(t, Router::new(&manifest(&fx)).expect("router builds"));
        ns_routers.insert(t, (next_start_router(&fx), TableInfo::of(&fx)));
        fixtures.insert(t, fx);
    }
    let mut cases: Vec<(&str, Case)> = hand_written();
    for t in tables {
        for c in generate(&mut rng, &fixtures[t], 1500) {
            cases.push((t, c));
        }
    }
    let prepared: Vec<_> = cases
        .iter()
        .map(|(t, c)| prepare(&routers[t], t, c))
        .collect();
    let msgs: Vec<_> = prepared.iter().map(|p| p.msg.clone()).collect();
    let answers = oracle.ask_many(&msgs);
    let mut failures = Vec::new();
    let mut ns_agree: BTreeMap<&str, usize> = BTreeMap::new();
    let mut ns_classes: BTreeMap<&str, usize> = BTreeMap::new();
    for (((t, c), p), theirs) in cases.iter().zip(&prepared).zip(&answers) {
        *kinds.entry(kind(&p.ours)).or_default() += 1;
        if let Some(f) = check(t, c, p, theirs) {
            failures.push(f);
        }
        // next start mode: the same answer, or a documented difference (common::NEXT_START_CLASSES).
        let (ns, info) = &ns_routers[t];
        match check_next_start(ns, info, t, c, &p.ours) {
            Ok(None) => *ns_agree.entry(*t).or_default() += 1,
            Ok(Some(class)) => *ns_classes.entry(class).or_default() += 1,
            Err(f) => failures.push(f),
        }
    }
    eprintln!(
        "oracle: next-start mode agrees per table {ns_agree:?}; documented differences {ns_classes:?}"
    );
    let total = cases.len();
    eprintln!(
        "oracle: {total} cases, outcomes {kinds:?}, {} divergences",
        failures.len()
    );
    for f in failures.iter().take(15) {
        eprintln!("{f}");
    }
    assert!(
        failures.is_empty(),
        "{} divergences from @next/routing",
        failures.len()
    );
    // Make sure the generator exercises every outcome kind.
    for k in ["redirect", "external", "output", "notfound", "respond"] {
        assert!(
            kinds.get(k).copied().unwrap_or(0) > 0,
            "no {k} cases generated"
        );
    }
}
