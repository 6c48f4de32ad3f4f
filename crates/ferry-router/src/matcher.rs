//! Compiled routes: JavaScript regexes (via `regress`), `has` / `missing` conditions and
//! `$1` / `$name` interpolation, mirroring `@next/routing`'s `matchRoute`, `checkHasConditions`
//! and `replaceDestination`.

use ferry_manifest::{HasKind, Route, RouteHas};
use regress::Regex;
use url::Url;

use crate::headers::HeaderList;
use crate::prefilter::Prefilter;

/// Longest string a regex is run against. Regexes backtrack; bounding the input bounds the time
/// a hostile request can spend in them. Longer values never match.
pub(crate) const MAX_REGEX_INPUT: usize = 8 * 1024;

/// The result of matching a regex: the numbered groups (index 0 = whole match) and the named ones.
#[derive(Debug, Clone, Default)]
pub(crate) struct RegexMatch {
    /// `match[i]`, `None` when the group did not take part.
    pub groups: Vec<Option<String>>,
    /// `match.groups`: every named group in pattern order.
    pub named: Vec<(String, Option<String>)>,
}

/// A compiled JavaScript regex with its linear-time prefilter.
#[derive(Debug)]
pub(crate) struct JsRegex {
    re: Regex,
    prefilter: Prefilter,
}

/// Runs `re` on `text` the way `String.prototype.match` (non-global) does.
pub(crate) fn js_match(re: &JsRegex, text: &str) -> Option<RegexMatch> {
    if text.len() > MAX_REGEX_INPUT || !re.prefilter.may_match(text) {
        return None;
    }
    let m = re.re.find(text)?;
    let mut groups = Vec::with_capacity(m.captures.len() + 1);
    groups.push(Some(text[m.range()].to_string()));
    for c in &m.captures {
        groups.push(c.clone().map(|r| text[r].to_string()));
    }
    let named = m
        .named_groups()
        .map(|(n, r)| (n.to_string(), r.map(|r| text[r].to_string())))
        .collect();
    Some(RegexMatch { groups, named })
}

/// Compiles a route regex with `@next/routing`'s flags (case-insensitive unless configured).
pub(crate) fn compile(source: &str, case_sensitive: bool) -> Result<JsRegex, regress::Error> {
    Ok(JsRegex {
        re: Regex::with_flags(source, if case_sensitive { "" } else { "i" })?,
        prefilter: Prefilter::new(source, !case_sensitive),
    })
}

/// How a condition's `value` is tested.
#[derive(Debug)]
enum CondValue {
    /// `new RegExp("^(?:v)$")` then `new RegExp(v)`.
    Regex {
        anchored: Box<JsRegex>,
        plain: Box<JsRegex>,
    },
    /// The value is not a valid regex: JS falls back to string equality.
    Literal(String),
}

/// A compiled `has` / `missing` condition.
#[derive(Debug)]
pub(crate) struct Condition {
    kind: HasKind,
    key: String,
    /// `normalizeCaptureKey(key)`: the name its value is captured under.
    capture_key: String,
    value: Option<CondValue>,
}

impl Condition {
    fn new(h: &RouteHas) -> Self {
        let value = h.value.as_ref().map(|v| {
            match (compile(&format!("^(?:{v})$"), true), compile(v, true)) {
                (Ok(anchored), Ok(plain)) => CondValue::Regex {
                    anchored: Box::new(anchored),
                    plain: Box::new(plain),
                },
                _ => CondValue::Literal(v.clone()),
            }
        });
        let key = h.key.clone().unwrap_or_default();
        let capture_key = key.chars().filter(|c| c.is_ascii_alphabetic()).collect();
        Self {
            kind: h.kind,
            key,
            capture_key,
            value,
        }
    }
}

/// The outcome of `matchesCondition`.
struct CondMatch {
    captured: String,
    named: Vec<(String, String)>,
}

fn matches_condition(actual: Option<&str>, value: Option<&CondValue>) -> Option<CondMatch> {
    let actual = actual?;
    let Some(value) = value else {
        return Some(CondMatch {
            captured: actual.to_string(),
            named: vec![],
        });
    };
    match value {
        CondValue::Regex { anchored, plain } => {
            let m = js_match(anchored, actual).or_else(|| js_match(plain, actual))?;
            let named = m
                .named
                .into_iter()
                .filter_map(|(k, v)| v.filter(|v| !v.is_empty()).map(|v| (k, v)))
                .collect();
            Some(CondMatch {
                captured: m.groups[0].clone().unwrap_or_default(),
                named,
            })
        }
        CondValue::Literal(v) => (v == actual).then(|| CondMatch {
            captured: actual.to_string(),
            named: vec![],
        }),
    }
}

/// `getConditionValue`.
fn condition_value(c: &Condition, url: &Url, headers: &HeaderList) -> Option<String> {
    match c.kind {
        HasKind::Header => headers.get(&c.key).filter(|v| !v.is_empty()),
        HasKind::Cookie => {
            let cookie = headers.get("cookie").filter(|v| !v.is_empty())?;
            // Later cookies of the same name win, values are not decoded.
            let mut found = None;
            for part in cookie.split(';') {
                let part = part.trim();
                let mut it = part.split('=');
                let name = it.next().unwrap_or_default();
                if !name.is_empty() && name == c.key {
                    let rest: Vec<&str> = it.collect();
                    found = Some(rest.join("="));
                }
            }
            found
        }
        HasKind::Query => url
            .query_pairs()
            .find(|(k, _)| *k == c.key)
            .map(|(_, v)| v.into_owned())
            .filter(|v| !v.is_empty()),
        HasKind::Host => Some(url.host_str().unwrap_or_default().to_string()),
    }
}

/// Captures collected from `has` conditions, in insertion order (keys unique).
pub(crate) type Captures = Vec<(String, String)>;

fn set_capture(caps: &mut Captures, k: String, v: String) {
    match caps.iter_mut().find(|(ck, _)| *ck == k) {
        Some(slot) => slot.1 = v,
        None => caps.push((k, v)),
    }
}

/// `checkHasConditions`: `None` when a condition fails, else the captures.
pub(crate) fn check_has(conds: &[Condition], url: &Url, headers: &HeaderList) -> Option<Captures> {
    let mut caps = Captures::new();
    for c in conds {
        let actual = condition_value(c, url, headers);
        let m = matches_condition(actual.as_deref(), c.value.as_ref())?;
        for (k, v) in m.named {
            set_capture(&mut caps, k, v);
        }
        if c.kind != HasKind::Host {
            set_capture(&mut caps, c.capture_key.clone(), m.captured);
        }
    }
    Some(caps)
}

/// `checkMissingConditions`: true when none of the conditions holds.
pub(crate) fn check_missing(conds: &[Condition], url: &Url, headers: &HeaderList) -> bool {
    conds.iter().all(|c| {
        let actual = condition_value(c, url, headers);
        matches_condition(actual.as_deref(), c.value.as_ref()).is_none()
    })
}

/// `replaceDestination`: substitutes `$1`, `$name` (regex groups) and `$key` (has captures).
pub(crate) fn replace_destination(dest: &str, m: Option<&RegexMatch>, caps: &Captures) -> String {
    if !dest.contains('$') {
        return dest.to_string();
    }
    // The keys, in the order JS builds them, then sorted longest first (a stable sort).
    let mut keys: Vec<(String, bool)> = caps.iter().map(|(k, _)| (k.clone(), false)).collect();
    if let Some(m) = m {
        for i in 1..m.groups.len() {
            keys.push((i.to_string(), true));
        }
        keys.extend(m.named.iter().map(|(k, _)| (k.clone(), false)));
    }
    if keys.is_empty() {
        return dest.to_string();
    }
    keys.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
    let mut out = String::with_capacity(dest.len() + 16);
    let mut rest = dest;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        // The first key (in alternation order) that matches here wins, like the JS regex.
        let hit = keys.iter().find(|(k, numeric)| {
            after.starts_with(k.as_str())
                && !(*numeric
                    && after[k.len()..]
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_digit()))
        });
        match hit {
            Some((k, numeric)) => {
                out.push_str(&lookup(k, *numeric, m, caps));
                rest = &after[k.len()..];
            }
            None => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn lookup(key: &str, numeric: bool, m: Option<&RegexMatch>, caps: &Captures) -> String {
    if let Some(m) = m {
        if numeric
            && let Ok(i) = key.parse::<usize>()
            && i > 0
            && i < m.groups.len()
        {
            return m.groups[i].clone().unwrap_or_default();
        }
        if let Some((_, v)) = m.named.iter().find(|(k, _)| k == key) {
            return v.clone().unwrap_or_default();
        }
    }
    if let Some((_, v)) = caps.iter().find(|(k, _)| k == key) {
        return v.clone();
    }
    format!("${key}")
}

/// A route compiled once at construction.
#[derive(Debug)]
pub(crate) struct CompiledRoute {
    pub re: JsRegex,
    pub has: Vec<Condition>,
    pub missing: Vec<Condition>,
    pub destination: Option<String>,
    pub headers: Vec<(String, String)>,
    pub status: Option<u16>,
}

/// A successful `matchRoute`.
pub(crate) struct RouteMatch {
    pub destination: Option<String>,
    pub headers: Option<Vec<(String, String)>>,
}

impl CompiledRoute {
    /// Compiles a manifest route.
    pub fn new(r: &Route, case_sensitive: bool) -> Result<Self, regress::Error> {
        Ok(Self {
            re: compile(&r.source_regex, case_sensitive)?,
            has: conditions(r.has.as_deref()),
            missing: conditions(r.missing.as_deref()),
            destination: r.destination.clone(),
            headers: r
                .headers
                .as_ref()
                .map(|h| h.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
            status: r.status.filter(|s| *s != 0),
        })
    }

    /// Whether the route carries a `headers` object (JS `route.headers` truthy).
    fn has_headers(&self) -> bool {
        !self.headers.is_empty()
    }

    /// `matchRoute`.
    pub fn match_route(&self, url: &Url, headers: &HeaderList) -> Option<RouteMatch> {
        let regex = js_match(&self.re, url.path())?;
        let captures = check_has(&self.has, url, headers)?;
        if !check_missing(&self.missing, url, headers) {
            return None;
        }
        let destination = self
            .destination
            .as_ref()
            .map(|d| replace_destination(d, Some(&regex), &captures));
        let headers = self.has_headers().then(|| {
            self.headers
                .iter()
                .map(|(k, v)| {
                    (
                        replace_destination(k, Some(&regex), &captures),
                        replace_destination(v, Some(&regex), &captures),
                    )
                })
                .collect()
        });
        Some(RouteMatch {
            destination,
            headers,
        })
    }

    /// `matchDynamicRoute` plus its has/missing check, on a pathname.
    pub fn match_dynamic(&self, url: &Url, headers: &HeaderList) -> Option<(RegexMatch, Captures)> {
        let regex = js_match(&self.re, url.path())?;
        let captures = check_has(&self.has, url, headers)?;
        if !check_missing(&self.missing, url, headers) {
            return None;
        }
        Some((regex, captures))
    }
}

/// Compiles `has` / `missing` lists.
pub(crate) fn conditions(list: Option<&[RouteHas]>) -> Vec<Condition> {
    list.unwrap_or_default()
        .iter()
        .map(Condition::new)
        .collect()
}

/// `routeMatches` of a dynamic route match: defined numbered groups, then named groups.
pub(crate) fn route_params(m: &RegexMatch) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (i, g) in m.groups.iter().enumerate().skip(1) {
        if let Some(g) = g {
            out.push((i.to_string(), g.clone()));
        }
    }
    for (k, v) in &m.named {
        // `Object.assign` copies undefined too; JSON (and our map) drops it.
        out.retain(|(ok, _)| ok != k);
        if let Some(v) = v {
            out.push((k.clone(), v.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(re: &str, text: &str) -> RegexMatch {
        js_match(&compile(re, false).expect("compiles"), text).expect("matches")
    }

    #[test]
    fn interpolates_numbered_named_and_captures() {
        let rm = m(r"^/blog/(?<slug>[^/]+?)(\.rsc|)(?:/)?$", "/blog/hello.rsc");
        let caps = vec![("token".to_string(), "abc".to_string())];
        assert_eq!(
            replace_destination("/b/[slug]$2?s=$slug&t=$token&x=$10&$", Some(&rm), &caps),
            "/b/[slug].rsc?s=hello&t=abc&x=$10&$"
        );
        // `$1` must not eat the digit of `$12` when there is no 12th group.
        assert_eq!(replace_destination("$12", Some(&rm), &caps), "$12");
        // Unmatched optional group becomes empty.
        let rm = m(r"^/a(?:/(x))?$", "/a");
        assert_eq!(replace_destination("/b/$1/", Some(&rm), &vec![]), "/b//");
    }

    #[test]
    fn longest_key_wins() {
        let caps = vec![
            ("a".to_string(), "1".to_string()),
            ("ab".to_string(), "2".to_string()),
        ];
        assert_eq!(replace_destination("$ab$a$abc", None, &caps), "212c");
    }

    #[test]
    fn conditions_follow_js() {
        let url = Url::parse("http://Example.COM:3000/p?q=v%20x&e=").expect("url");
        let headers = HeaderList::from_pairs([
            ("x-a", "hello"),
            ("cookie", "a=1; b=x=y; a=2"),
            ("x-a", "world"),
        ]);
        let c = |kind, key: Option<&str>, value: Option<&str>| {
            Condition::new(&RouteHas {
                kind,
                key: key.map(str::to_string),
                value: value.map(str::to_string),
            })
        };
        let caps = check_has(
            &[
                c(HasKind::Header, Some("x-a"), Some("hello, (?<w>wor)ld")),
                c(HasKind::Cookie, Some("a"), None),
                c(HasKind::Cookie, Some("b"), Some("x=y")),
                c(HasKind::Query, Some("q"), Some("v x")),
                c(HasKind::Host, None, Some("example.com")),
            ],
            &url,
            &headers,
        )
        .expect("all hold");
        assert_eq!(
            caps,
            vec![
                ("w".to_string(), "wor".to_string()),
                ("xa".to_string(), "hello, world".to_string()),
                ("a".to_string(), "2".to_string()),
                ("b".to_string(), "x=y".to_string()),
                ("q".to_string(), "v x".to_string()),
            ]
        );
        // Empty query values count as absent; unanchored fallback matches a substring.
        assert!(check_has(&[c(HasKind::Query, Some("e"), None)], &url, &headers).is_none());
        let caps = check_has(
            &[c(HasKind::Header, Some("x-a"), Some("wor"))],
            &url,
            &headers,
        )
        .expect("substring");
        assert_eq!(caps[0].1, "wor");
        // An invalid regex falls back to equality.
        assert!(
            check_has(
                &[c(HasKind::Header, Some("x-a"), Some("("))],
                &url,
                &headers
            )
            .is_none()
        );
        assert!(check_missing(
            &[c(HasKind::Header, Some("x-b"), None)],
            &url,
            &headers
        ));
    }
}
