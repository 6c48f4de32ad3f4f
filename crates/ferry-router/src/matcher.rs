//! Compiled routes: JavaScript regexes (via `regress`), `has` / `missing` conditions and
//! `$1` / `$name` interpolation, mirroring `@next/routing`'s `matchRoute`, `checkHasConditions`
//! and `replaceDestination`.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;

use crate::rurl::Url;
use ferry_manifest::{HasKind, Route, RouteHas};
use regress::Regex;

use crate::bounded::{Bounded, Verdict};
use crate::headers::HeaderList;
use crate::prefilter::{
    Candidates, Prefilter, RuleSet, contains_literal, literal_prefix, required_literals,
};
use crate::segments::SegmentRegex;

/// Longest string a regex is run against. Regexes backtrack; bounding the input bounds the time
/// a hostile request can spend in them. Longer values never match.
pub(crate) const MAX_REGEX_INPUT: usize = 8 * 1024;

/// The result of matching a regex: the numbered groups (index 0 = whole match) and the named
/// ones, as ranges of the text matched (no copy of the values; a match with few groups and
/// names shared with its regex allocates nothing).
#[derive(Debug, Clone)]
pub(crate) struct RegexMatch<'t> {
    text: &'t str,
    /// `match[i]`, `None` when the group did not take part.
    groups: Groups,
    /// `match.groups`: every named group in pattern order.
    named: Named,
}

/// Group ranges: inline up to [`INLINE_GROUPS`].
#[derive(Debug, Clone)]
enum Groups {
    Inline(u8, [Option<(u32, u32)>; INLINE_GROUPS]),
    Heap(Vec<Option<Range<usize>>>),
}

const INLINE_GROUPS: usize = 6;

/// Named groups: the regex's own (group index, name) list, or name and range pairs.
#[derive(Debug, Clone)]
enum Named {
    Indexed(Arc<[(usize, Arc<str>)]>),
    Ranges(Vec<(Arc<str>, Option<Range<usize>>)>),
}

impl<'t> RegexMatch<'t> {
    /// A match of `text` (every range a char-boundary range of it).
    pub(crate) fn new(
        text: &'t str,
        groups: Vec<Option<Range<usize>>>,
        named: Vec<(Arc<str>, Option<Range<usize>>)>,
    ) -> Self {
        Self {
            text,
            groups: Groups::Heap(groups),
            named: Named::Ranges(named),
        }
    }

    /// A match of `text` whose named groups are `names` (group index, name).
    pub(crate) fn with_names(
        text: &'t str,
        groups: impl ExactSizeIterator<Item = Option<Range<usize>>>,
        names: &Arc<[(usize, Arc<str>)]>,
    ) -> Self {
        // Texts are at most MAX_REGEX_INPUT long: offsets fit in `u32`.
        let groups = if groups.len() <= INLINE_GROUPS && text.len() <= u32::MAX as usize {
            let mut a = [None; INLINE_GROUPS];
            let n = groups.len() as u8;
            for (slot, g) in a.iter_mut().zip(groups) {
                *slot = g.map(|r| (r.start as u32, r.end as u32));
            }
            Groups::Inline(n, a)
        } else {
            Groups::Heap(groups.collect())
        };
        Self {
            text,
            groups,
            named: Named::Indexed(Arc::clone(names)),
        }
    }

    fn range(&self, i: usize) -> Option<Range<usize>> {
        match &self.groups {
            Groups::Inline(n, a) => a[..usize::from(*n)]
                .get(i)
                .copied()
                .flatten()
                .map(|(s, e)| s as usize..e as usize),
            Groups::Heap(v) => v.get(i).cloned().flatten(),
        }
    }

    /// `match[i]` (`None` also past the last group).
    pub(crate) fn group(&self, i: usize) -> Option<&'t str> {
        let text = self.text;
        self.range(i).and_then(|r| text.get(r))
    }

    /// `match.length`: the groups, the whole match included.
    pub(crate) fn group_count(&self) -> usize {
        match &self.groups {
            Groups::Inline(n, _) => usize::from(*n),
            Groups::Heap(v) => v.len(),
        }
    }

    fn named_len(&self) -> usize {
        match &self.named {
            Named::Indexed(n) => n.len(),
            Named::Ranges(v) => v.len(),
        }
    }

    /// The `j`th named group: its name and value.
    fn named_at(&self, j: usize) -> Option<(&Arc<str>, Option<&'t str>)> {
        match &self.named {
            Named::Indexed(n) => n.get(j).map(|(i, k)| (k, self.group(*i))),
            Named::Ranges(v) => {
                let text = self.text;
                v.get(j)
                    .map(|(k, r)| (k, r.clone().and_then(|r| text.get(r))))
            }
        }
    }

    /// `match.groups` entries, in pattern order.
    pub(crate) fn named(&self) -> impl Iterator<Item = (&Arc<str>, Option<&'t str>)> + '_ {
        (0..self.named_len()).filter_map(move |j| self.named_at(j))
    }

    /// Whether the regex has named groups.
    pub(crate) fn has_named(&self) -> bool {
        self.named_len() > 0
    }
}

/// A compiled JavaScript regex with its cheap rejects (literal prefix, linear-time prefilter).
#[derive(Debug)]
pub(crate) struct JsRegex {
    re: Regex,
    prefilter: Prefilter,
    bounded: Bounded,
    /// Every match starts with this (see [`literal_prefix`]).
    prefix: Literal,
    /// Every match contains this (see [`required_literals`]; empty when the prefix says as
    /// much).
    required: Box<str>,
    /// Every match ends the text with this (see [`required_literals`]).
    suffix: Literal,
    case_insensitive: bool,
    /// The regex is path-to-regexp's `/:path*` ([`CATCH_ALL`]): a match is decided without it.
    catch_all: bool,
    /// For a middleware matcher (`^` + [`DATA_GROUP`] + the rest): the literal every match of
    /// the rest starts with (a `/` and more), right at the text's start or after the
    /// `/_next/data/<segment>` the optional group takes (with `/_next/data/` as a [`Literal`]).
    after_data: Option<(Literal, Literal)>,
    /// The exact matcher for Next's dynamic-route shape (`src/segments.rs`), when it applies.
    segments: Option<SegmentRegex>,
}

/// A literal a text is compared with at a known position: ASCII-case-insensitively (as a
/// JavaScript regex with the `i` flag compares an ASCII literal) when built so.
#[derive(Debug)]
struct Literal {
    /// The bytes, lowercase when case-insensitive.
    bytes: Box<[u8]>,
    /// Per byte: `0x20` where a letter folds (`b | 0x20` is the lowercase letter exactly when
    /// `b` is that letter in either case; no other byte, ASCII or not, gives it), else `0`.
    fold: Box<[u8]>,
    /// The first byte other than `/` (texts are paths: a `/` tells little): its index, the
    /// byte (lowercase when it folds) and its fold bit; `usize::MAX` for the empty literal.
    probe: usize,
    probe_byte: u8,
    probe_fold: u8,
}

impl Literal {
    fn new(s: &str, case_insensitive: bool) -> Self {
        let bytes: Box<[u8]> = if case_insensitive {
            s.to_ascii_lowercase().into_bytes().into()
        } else {
            s.as_bytes().into()
        };
        let fold: Box<[u8]> = bytes
            .iter()
            .map(|b| {
                if case_insensitive && b.is_ascii_lowercase() {
                    0x20
                } else {
                    0
                }
            })
            .collect();
        let probe = bytes.iter().position(|&b| b != b'/').unwrap_or(0);
        let (probe_byte, probe_fold) = match (bytes.get(probe), fold.get(probe)) {
            (Some(&b), Some(&f)) => (b, f),
            _ => (0, 0),
        };
        Self {
            probe: if bytes.is_empty() { usize::MAX } else { probe },
            bytes,
            fold,
            probe_byte,
            probe_fold,
        }
    }

    /// A quick reject, inlined into the callers: `false` only when the literal cannot be at
    /// `t[at..]` because its probe byte is not there (`true` for the empty literal; `at` may
    /// be a wrapped-around offset for a text shorter than the literal, which the full
    /// comparison then rejects).
    #[inline(always)]
    fn probe_at(&self, t: &[u8], at: usize) -> bool {
        self.probe == usize::MAX
            || t.get(at.wrapping_add(self.probe))
                .is_some_and(|&c| c | self.probe_fold == self.probe_byte)
    }

    fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether `w` (of the literal's length) is the literal: eight bytes at a time.
    fn matches(&self, w: &[u8]) -> bool {
        if w.len() != self.bytes.len() {
            return false;
        }
        let word =
            |s: &[u8], i: usize| <[u8; 8]>::try_from(&s[i..i + 8]).map_or(0, u64::from_ne_bytes);
        let mut i = 0;
        while i + 8 <= w.len() {
            if word(w, i) | word(&self.fold, i) != word(&self.bytes, i) {
                return false;
            }
            i += 8;
        }
        (i..w.len()).all(|i| w[i] | self.fold[i] == self.bytes[i])
    }
}

/// The optional group Next puts in front of every middleware matcher's regex.
const DATA_GROUP: &str = r"^(?:\/(_next\/data\/[^/]{1,}))?";

/// path-to-regexp's regex for `/:path*` (a `headers()` rule for every path): it matches the
/// empty string and every `/`-led text without an empty segment (`//`) but a trailing `/`.
const CATCH_ALL: &str = r"^(?:\/((?:[^\/]+?)(?:\/(?:[^\/]+?))*))?(?:\/)?$";

/// What [`CATCH_ALL`] matches (no case to fold: its only literal is `/`).
fn catch_all_matches(text: &str) -> bool {
    text.is_empty() || (text.starts_with('/') && !text.contains("//"))
}

impl JsRegex {
    /// The literal prefix and suffix checks: `false` only when the regex cannot match `text`.
    #[inline(always)]
    fn ends_may_match(&self, text: &str) -> bool {
        // One byte of each literal first, inlined (most rules' texts fail there).
        let t = text.as_bytes();
        self.prefix.probe_at(t, 0)
            && self
                .suffix
                .probe_at(t, t.len().wrapping_sub(self.suffix.len()))
            && self.after_data_probe(t)
            && self.ends_match(text)
    }

    /// The quick reject of `after_data`: its literal's probe byte at the start, or a `d` in
    /// either case where `/_next/data/` has its `d`.
    #[inline(always)]
    fn after_data_probe(&self, t: &[u8]) -> bool {
        self.after_data
            .as_ref()
            .is_none_or(|(lit, _)| lit.probe_at(t, 0) || t.get(7).is_some_and(|c| c | 0x20 == b'd'))
    }

    /// [`JsRegex::ends_may_match`] in full.
    fn ends_match(&self, text: &str) -> bool {
        if text.len() > MAX_REGEX_INPUT {
            return false;
        }
        let t = text.as_bytes();
        let (p, s) = (&self.prefix, &self.suffix);
        t.len() >= p.len().max(s.len())
            && p.matches(&t[..p.len()])
            && s.matches(&t[t.len() - s.len()..])
            && self.after_data.as_ref().is_none_or(|(lit, data)| {
                let starts = |t: &[u8]| t.len() >= lit.len() && lit.matches(&t[..lit.len()]);
                // `[^/]{1,}` then the literal's `/`: the segment ends at the first `/`.
                starts(t)
                    || (t.len() > data.len()
                        // A quick reject first (`d` in either case: a superset).
                        && t.get(7).is_some_and(|c| c | 0x20 == b'd')
                        && data.matches(&t[..data.len()])
                        && t[data.len()..]
                            .iter()
                            .position(|&b| b == b'/')
                            .is_some_and(|n| n > 0 && starts(&t[data.len() + n..])))
            })
    }

    /// The cheap checks after [`JsRegex::ends_may_match`]: `false` only when the regex cannot
    /// match `text`.
    fn rest_may_match(&self, text: &str) -> bool {
        // A `regex`-crate engine is exact and as fast as the prefilter: skip the second scan.
        contains_literal(text, &self.required, self.case_insensitive)
            && (self.bounded.is_plain() || self.prefilter.may_match(text))
    }
}

/// Whether `re` matches `text` (`RegExp.prototype.test`), without building the captures.
pub(crate) fn js_is_match(re: &JsRegex, text: &str) -> bool {
    if re.catch_all {
        return text.len() <= MAX_REGEX_INPUT && catch_all_matches(text);
    }
    if !re.ends_may_match(text) || !re.rest_may_match(text) {
        return false;
    }
    match re.bounded.is_match(text) {
        Some(m) => m,
        None => re.re.find(text).is_some(),
    }
}

/// Runs `re` on `text` the way `String.prototype.match` (non-global) does.
pub(crate) fn js_match<'t>(re: &JsRegex, text: &'t str) -> Option<RegexMatch<'t>> {
    if !re.ends_may_match(text) {
        return None;
    }
    // Next's dynamic-route shape: walked directly (exact, linear), no capture search.
    if let Some(Ok(found)) = re.segments.as_ref().map(|s| s.captures(text)) {
        return found;
    }
    if !re.rest_may_match(text) {
        return None;
    }
    // Bounded first (src/bounded.rs): regress alone may backtrack exponentially.
    match re.bounded.run(text) {
        Verdict::NoMatch => return None,
        Verdict::Match(m) => return Some(m),
        Verdict::Unsure => {}
    }
    let m = re.re.find(text)?;
    let mut groups = Vec::with_capacity(m.captures.len() + 1);
    groups.push(Some(m.range()));
    groups.extend(m.captures.iter().cloned());
    let named = m.named_groups().map(|(n, r)| (Arc::from(n), r)).collect();
    Some(RegexMatch::new(text, groups, named))
}

impl JsRegex {
    /// A pattern for a phase's multi-pattern scan ([`RuleSet`]): the exact one when the
    /// `regex` crate runs it, else the superset prefilter, else none.
    fn set_pattern(&self) -> Option<String> {
        match self.bounded.plain_pattern() {
            Some(p) => Some(p.to_string()),
            None => self.prefilter.pattern(self.case_insensitive),
        }
    }
}

/// Compiles a route regex with `@next/routing`'s flags (case-insensitive unless configured).
pub(crate) fn compile(source: &str, case_sensitive: bool) -> Result<JsRegex, regress::Error> {
    let prefix = literal_prefix(source);
    let mut literals = required_literals(source);
    if prefix.contains(&literals.required) {
        literals.required.clear();
    }
    Ok(JsRegex {
        re: Regex::with_flags(source, if case_sensitive { "" } else { "i" })?,
        prefilter: Prefilter::new(source, !case_sensitive),
        bounded: Bounded::new(source, !case_sensitive),
        prefix: Literal::new(&prefix, !case_sensitive),
        required: literals.required.into_boxed_str(),
        suffix: Literal::new(&literals.suffix, !case_sensitive),
        case_insensitive: !case_sensitive,
        catch_all: source == CATCH_ALL,
        after_data: source
            .strip_prefix(DATA_GROUP)
            .map(|rest| literal_prefix(&format!("^{rest}")))
            .filter(|lit| lit.len() > 1 && lit.starts_with('/'))
            .map(|lit| {
                (
                    Literal::new(&lit, !case_sensitive),
                    Literal::new("/_next/data/", !case_sensitive),
                )
            }),
        segments: SegmentRegex::new(source, !case_sensitive),
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
    /// Whether the condition tests only the request header `name` (lowercase).
    pub fn reads_only_header(&self, name: &str) -> bool {
        self.kind == HasKind::Header && self.key.eq_ignore_ascii_case(name)
    }

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
                .named()
                .filter_map(|(k, v)| {
                    v.filter(|v| !v.is_empty())
                        .map(|v| (k.to_string(), v.to_string()))
                })
                .collect();
            Some(CondMatch {
                captured: m.group(0).unwrap_or_default().to_string(),
                named,
            })
        }
        CondValue::Literal(v) => (v == actual).then(|| CondMatch {
            captured: actual.to_string(),
            named: vec![],
        }),
    }
}

/// [`matches_condition`] when only whether it holds matters.
fn condition_holds(actual: Option<&str>, value: Option<&CondValue>) -> bool {
    let Some(actual) = actual else {
        return false;
    };
    match value {
        None => true,
        Some(CondValue::Regex { anchored, plain }) => {
            js_is_match(anchored, actual) || js_is_match(plain, actual)
        }
        Some(CondValue::Literal(v)) => v == actual,
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

/// [`check_has`] without the captures: whether every condition holds.
pub(crate) fn has_holds(conds: &[Condition], url: &Url, headers: &HeaderList) -> bool {
    conds.iter().all(|c| {
        let actual = condition_value(c, url, headers);
        condition_holds(actual.as_deref(), c.value.as_ref())
    })
}

/// `checkMissingConditions`: true when none of the conditions holds.
pub(crate) fn check_missing(conds: &[Condition], url: &Url, headers: &HeaderList) -> bool {
    conds.iter().all(|c| {
        let actual = condition_value(c, url, headers);
        !condition_holds(actual.as_deref(), c.value.as_ref())
    })
}

/// `replaceDestination`: substitutes `$1`, `$name` (regex groups) and `$key` (has captures).
///
/// JavaScript builds one alternation of every key (the has captures, the group numbers, the
/// group names), sorted longest first with a stable sort, so at each `$` the longest key that
/// matches wins, ties going to the earlier one. A number key must not be followed by a digit,
/// so it matches exactly the digit run after `$` (written without a leading zero).
pub(crate) fn replace_destination(
    dest: &str,
    m: Option<&RegexMatch<'_>>,
    caps: &Captures,
) -> String {
    // Destinations are short: byte scans beat `str::find`'s per-call setup.
    if !dest.as_bytes().contains(&b'$') {
        return dest.to_string();
    }
    let mut out = String::with_capacity(dest.len() + 16);
    let mut rest = dest;
    while let Some(pos) = rest.bytes().position(|b| b == b'$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        match key_at(after, m, caps) {
            Some((len, value)) => {
                out.push_str(value);
                rest = &after[len..];
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

/// The key [`replace_destination`] substitutes at the start of `after`: its length and value.
fn key_at<'v>(
    after: &str,
    m: Option<&'v RegexMatch<'v>>,
    caps: &'v Captures,
) -> Option<(usize, &'v str)> {
    // (key length, value); a later key only wins when strictly longer.
    let mut best: Option<(usize, &str)> = None;
    let mut consider = |len: usize, value: &'v str| {
        if best.is_none_or(|(l, _)| len > l) {
            best = Some((len, value));
        }
    };
    // A key that is both a has capture and a group name reads the group (`lookup` order).
    let named_value = |k: &str| -> Option<&'v str> {
        let m = m?;
        (0..m.named_len())
            .filter_map(|j| m.named_at(j))
            .find(|(n, _)| &***n == k)
            .map(|(_, v)| v.unwrap_or_default())
    };
    for (k, v) in caps {
        if after.starts_with(k.as_str()) {
            consider(k.len(), named_value(k).unwrap_or(v));
        }
    }
    if let Some(m) = m {
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0
            && !after.starts_with('0')
            && let Ok(i) = after[..digits].parse::<usize>()
            && i < m.group_count()
        {
            consider(digits, m.group(i).unwrap_or_default());
        }
        for j in 0..m.named_len() {
            if let Some((k, v)) = m.named_at(j)
                && after.starts_with(&**k)
            {
                consider(k.len(), v.unwrap_or_default());
            }
        }
    }
    best
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
    /// The destination or a header interpolates (`$…`): only then are captures built.
    interpolates: bool,
    /// Every header of the rule as written is one `Headers.set` accepts (checked once, for
    /// the matches that use the rule's own headers).
    pub headers_valid: bool,
    /// The destination as literal runs and group references, resolved at build
    /// ([`DestPiece`]): for a rule without `has` (no captures but the regex's) whose regex has
    /// a known group layout.
    dest_pieces: Option<Vec<DestPiece>>,
    /// The destination pathname is a `[param]` template for every request: the literal part
    /// before any `$` substitution and any `?` already is one (substitutions only append to
    /// it, and a `?` a substituted value brings comes after it).
    pub dest_always_template: bool,
}

/// A piece of a destination whose `$` keys are resolved once (see
/// [`CompiledRoute::destination_for`]).
#[derive(Debug, Clone, PartialEq, Eq)]
enum DestPiece {
    /// Destination text as it is: `dest[range]`.
    Lit(Range<usize>),
    /// The value of a group (`""` when it did not take part).
    Group(usize),
}

/// [`replace_destination`] resolved against a regex's group layout alone (no `has` captures):
/// at each `$` the same longest key [`key_at`] picks, as a group index.
fn dest_pieces(dest: &str, groups: usize, names: &[(usize, Arc<str>)]) -> Vec<DestPiece> {
    let mut out = Vec::new();
    let (mut lit_start, mut i) = (0, 0);
    let b = dest.as_bytes();
    while i < b.len() {
        if b[i] != b'$' {
            i += 1;
            continue;
        }
        let after = &dest[i + 1..];
        // (key length, group); a later key only wins when strictly longer (as in `key_at`).
        let mut best: Option<(usize, usize)> = None;
        let mut consider = |len: usize, g: usize| {
            if best.is_none_or(|(l, _)| len > l) {
                best = Some((len, g));
            }
        };
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0
            && !after.starts_with('0')
            && let Ok(n) = after[..digits].parse::<usize>()
            && n < groups
        {
            consider(digits, n);
        }
        for (g, k) in names {
            if after.starts_with(&**k) {
                consider(k.len(), *g);
            }
        }
        match best {
            Some((len, g)) => {
                out.push(DestPiece::Lit(lit_start..i));
                out.push(DestPiece::Group(g));
                i += 1 + len;
                lit_start = i;
            }
            None => i += 1,
        }
    }
    out.push(DestPiece::Lit(lit_start..b.len()));
    out.retain(|p| !matches!(p, DestPiece::Lit(r) if r.is_empty()));
    out
}

/// A successful `matchRoute`.
pub(crate) struct RouteMatch<'a> {
    pub destination: Option<Cow<'a, str>>,
    pub headers: Option<Cow<'a, [(String, String)]>>,
}

impl CompiledRoute {
    /// Compiles a manifest route.
    pub fn new(r: &Route, case_sensitive: bool) -> Result<Self, regress::Error> {
        let headers: Vec<(String, String)> = r
            .headers
            .as_ref()
            .map(|h| h.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let interpolates = r.destination.as_deref().is_some_and(|d| d.contains('$'))
            || headers
                .iter()
                .any(|(k, v)| k.contains('$') || v.contains('$'));
        let headers_valid = headers
            .iter()
            .all(|(k, v)| crate::headers::valid_header(k, v));
        let dest_always_template = r.destination.as_deref().is_some_and(|d| {
            let end = d.bytes().position(|b| b == b'$' || b == b'?');
            crate::is_dynamic_template(&d[..end.unwrap_or(d.len())])
        });
        let re = compile(&r.source_regex, case_sensitive)?;
        let dest_pieces = match (&r.destination, &re.segments) {
            (Some(d), Some(seg)) if r.has.as_deref().is_none_or(<[_]>::is_empty) => {
                Some(dest_pieces(d, seg.group_count(), seg.names()))
            }
            _ => None,
        };
        Ok(Self {
            re,
            dest_pieces,
            has: conditions(r.has.as_deref()),
            missing: conditions(r.missing.as_deref()),
            destination: r.destination.clone(),
            headers,
            status: r.status.filter(|s| *s != 0),
            interpolates,
            headers_valid,
            dest_always_template,
        })
    }

    /// Whether the route carries a `headers` object (JS `route.headers` truthy).
    fn has_headers(&self) -> bool {
        !self.headers.is_empty()
    }

    /// `matchRoute`.
    pub fn match_route(&self, url: &Url, headers: &HeaderList) -> Option<RouteMatch<'_>> {
        if !self.interpolates {
            // Nothing to interpolate: no captures to build, the rule's own strings answer.
            let holds = js_is_match(&self.re, url.path())
                && has_holds(&self.has, url, headers)
                && check_missing(&self.missing, url, headers);
            return holds.then(|| RouteMatch {
                destination: self.destination.as_deref().map(Cow::Borrowed),
                headers: self
                    .has_headers()
                    .then_some(Cow::Borrowed(&self.headers[..])),
            });
        }
        let regex = js_match(&self.re, url.path())?;
        let captures = check_has(&self.has, url, headers)?;
        if !check_missing(&self.missing, url, headers) {
            return None;
        }
        Some(self.interpolated(&regex, &captures))
    }

    /// The rule's destination and headers with `regex`'s groups and the `has` captures
    /// substituted (`replaceDestination`).
    pub fn interpolated(&self, regex: &RegexMatch<'_>, captures: &Captures) -> RouteMatch<'_> {
        let replace = |s: &str| replace_destination(s, Some(regex), captures);
        RouteMatch {
            destination: self.destination.as_deref().map(|d| Cow::Owned(replace(d))),
            headers: self.has_headers().then(|| {
                Cow::Owned(
                    self.headers
                        .iter()
                        .map(|(k, v)| (replace(k), replace(v)))
                        .collect(),
                )
            }),
        }
    }

    /// The destination with `regex`'s groups and the `has` captures substituted
    /// ([`replace_destination`]); `None` without a destination.
    pub fn destination_for(&self, regex: &RegexMatch<'_>, captures: &Captures) -> Option<String> {
        let dest = self.destination.as_deref()?;
        match &self.dest_pieces {
            // No `has`: no captures; the keys were resolved when the rule was compiled.
            Some(pieces) if captures.is_empty() => {
                let mut out = String::with_capacity(dest.len() + 16);
                for p in pieces {
                    match p {
                        DestPiece::Lit(r) => out.push_str(dest.get(r.clone()).unwrap_or_default()),
                        DestPiece::Group(g) => out.push_str(regex.group(*g).unwrap_or_default()),
                    }
                }
                Some(out)
            }
            _ => Some(replace_destination(dest, Some(regex), captures)),
        }
    }

    /// `matchDynamicRoute` plus its has/missing check, on a pathname.
    pub fn match_dynamic<'u>(
        &self,
        url: &'u Url,
        headers: &HeaderList,
    ) -> Option<(RegexMatch<'u>, Captures)> {
        let regex = js_match(&self.re, url.path())?;
        let captures = check_has(&self.has, url, headers)?;
        if !check_missing(&self.missing, url, headers) {
            return None;
        }
        Some((regex, captures))
    }
}

/// Phases with fewer rules scan each rule (literal-prefix rejects are cheaper than a set scan).
const SET_MIN_RULES: usize = 8;

/// The rules of one routing phase, with a multi-pattern scan over them ([`RuleSet`]).
#[derive(Debug, Default)]
pub(crate) struct RouteList {
    routes: Vec<CompiledRoute>,
    set: Option<RuleSet>,
}

impl RouteList {
    /// Wraps a phase's compiled rules; `always[i]`: rule `i` is always a candidate (next start
    /// matches its internal rules against another path than the phase's).
    pub fn new(routes: Vec<CompiledRoute>, always: &[bool]) -> Self {
        let set = (routes.len() >= SET_MIN_RULES)
            .then(|| {
                let patterns: Vec<Option<String>> = routes
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        if always.get(i).copied().unwrap_or(false) {
                            None
                        } else {
                            r.re.set_pattern()
                        }
                    })
                    .collect();
                RuleSet::new(&patterns)
            })
            .flatten();
        Self { routes, set }
    }

    /// The rules that may match `path` (every rule for a small phase); walk them with
    /// [`Candidates::next`].
    pub fn candidates(&self, path: &str) -> Candidates {
        match &self.set {
            Some(set) if path.len() <= MAX_REGEX_INPUT => set.candidates(path),
            _ => Candidates::All(self.routes.len()),
        }
    }

    /// The rules that may match `path`, in order.
    pub fn matching<'a>(&'a self, path: &str) -> impl Iterator<Item = &'a CompiledRoute> + 'a {
        let candidates = self.candidates(path);
        let mut from = 0;
        std::iter::from_fn(move || {
            let i = candidates.next(from)?;
            from = i + 1;
            self.routes.get(i)
        })
    }
}

impl<'a> IntoIterator for &'a RouteList {
    type Item = &'a CompiledRoute;
    type IntoIter = std::slice::Iter<'a, CompiledRoute>;
    fn into_iter(self) -> Self::IntoIter {
        self.routes.iter()
    }
}

impl std::ops::Deref for RouteList {
    type Target = [CompiledRoute];
    fn deref(&self) -> &[CompiledRoute] {
        &self.routes
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
pub(crate) fn route_params(m: &RegexMatch<'_>) -> Vec<(Arc<str>, String)> {
    let mut out: Vec<(Arc<str>, String)> = Vec::with_capacity(m.group_count() + m.named_len());
    for i in 1..m.group_count() {
        if let Some(g) = m.group(i) {
            // Group numbers are small: their keys are shared, not formatted per request.
            let key = GROUP_KEYS
                .get(i)
                .cloned()
                .unwrap_or_else(|| Arc::from(i.to_string()));
            out.push((key, g.to_string()));
        }
    }
    for (k, v) in m.named() {
        // `Object.assign` copies undefined too; JSON (and our map) drops it.
        out.retain(|(ok, _)| **ok != **k);
        if let Some(v) = v {
            out.push((Arc::clone(k), v.to_string()));
        }
    }
    out
}

/// The keys of groups 0 to 15 in [`route_params`].
static GROUP_KEYS: std::sync::LazyLock<Vec<Arc<str>>> =
    std::sync::LazyLock::new(|| (0..16).map(|i| Arc::from(i.to_string())).collect());

// --- next start's `matchHas` (prepare-destination.js), for `Router::with_next_start_semantics`.

/// A `has` / `missing` condition as next start tests it: the value anchored as
/// `new RegExp(`^${value}$`)` (no substring fallback, no group around an alternation), cookies
/// read with the `cookie` package, a repeated query key by its last value.
#[derive(Debug)]
pub(crate) struct NsCondition {
    kind: HasKind,
    key: String,
    /// `None`: no value; `Err`: not a valid regex (compared for equality).
    value: Option<Result<Box<JsRegex>, String>>,
}

impl NsCondition {
    /// Compiles a condition next start's way.
    pub fn new(h: &RouteHas) -> Self {
        let value = h.value.as_ref().map(|v| {
            compile(&format!("^{v}$"), true)
                .map(Box::new)
                .map_err(|_| v.clone())
        });
        Self {
            kind: h.kind,
            key: h.key.clone().unwrap_or_default(),
            value,
        }
    }
}

/// Compiles `has` / `missing` lists next start's way.
pub(crate) fn ns_conditions(list: Option<&[RouteHas]>) -> Vec<NsCondition> {
    list.unwrap_or_default()
        .iter()
        .map(NsCondition::new)
        .collect()
}

/// `matchHas`'s params: `(name, value)` in insertion order, `None` for a named group that did
/// not take part (the key exists with `undefined`).
pub(crate) type NsParams = Vec<(String, Option<String>)>;

fn ns_value(c: &NsCondition, url: &Url, headers: &HeaderList) -> Option<String> {
    let v = match c.kind {
        HasKind::Header => headers.get(&c.key.to_lowercase()),
        HasKind::Cookie => {
            crate::next_start::cookie_value(headers.get("cookie").as_deref(), &c.key)
        }
        HasKind::Query => url
            .query_pairs()
            .filter(|(k, _)| *k == c.key)
            .last()
            .map(|(_, v)| v.into_owned()),
        HasKind::Host => crate::next_start::hostname(headers.get("host").as_deref())
            .or_else(|| url.host_str().map(str::to_lowercase)),
    };
    v.filter(|v| !v.is_empty())
}

fn ns_set(params: &mut NsParams, k: String, v: Option<String>) {
    match params.iter_mut().find(|(pk, _)| *pk == k) {
        Some(slot) => slot.1 = v,
        None => params.push((k, v)),
    }
}

/// `hasMatch` for one item: whether it holds (its params are added to `params`).
fn ns_holds(c: &NsCondition, url: &Url, headers: &HeaderList, params: &mut NsParams) -> bool {
    let Some(actual) = ns_value(c, url, headers) else {
        return false;
    };
    match &c.value {
        None => {
            // `getSafeParamName(key)` (the header key lowercased first).
            let key = if c.kind == HasKind::Header {
                c.key.to_lowercase()
            } else {
                c.key.clone()
            };
            ns_set(
                params,
                key.chars().filter(|c| c.is_ascii_alphabetic()).collect(),
                Some(actual),
            );
            true
        }
        Some(Err(literal)) => *literal == actual,
        Some(Ok(re)) => {
            let Some(m) = js_match(re, &actual) else {
                return false;
            };
            if m.has_named() {
                for (k, v) in m.named() {
                    ns_set(params, k.to_string(), v.map(str::to_string));
                }
            } else if c.kind == HasKind::Host
                && let Some(all) = m.group(0).filter(|a| !a.is_empty())
            {
                ns_set(params, "host".into(), Some(all.to_string()));
            }
            true
        }
    }
}

/// next start's `matchHas(req, query, has, missing)`: `None` when a `has` item fails or a
/// `missing` one holds, else the params it collected.
pub(crate) fn next_start_match_has(
    has: &[NsCondition],
    missing: &[NsCondition],
    url: &Url,
    headers: &HeaderList,
) -> Option<NsParams> {
    let mut params = NsParams::new();
    if !has.iter().all(|c| ns_holds(c, url, headers, &mut params)) {
        return None;
    }
    let mut scratch = NsParams::new();
    if missing
        .iter()
        .any(|c| ns_holds(c, url, headers, &mut scratch))
    {
        return None;
    }
    Some(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A destination resolved at build gives what [`replace_destination`] gives per request.
    #[test]
    fn destination_pieces_match_replace_destination() {
        let re = r"^[/]?/b/(?<slug>[^/]+?)/(?<slug2>[^/]+?)/([^/]+?)(\.rsc|\.segments/.+\.segment\.rsc|)(?:/)?$";
        let route = CompiledRoute::new(
            &Route {
                source: None,
                source_regex: re.into(),
                destination: Some(String::new()),
                headers: None,
                has: None,
                missing: None,
                status: None,
                priority: None,
            },
            false,
        )
        .expect("compiles");
        let seg = route.re.segments.as_ref().expect("segment shape");
        let text = "/b/one/two/three.segments/x.segment.rsc";
        let m = js_match(&route.re, text).expect("matches");
        for dest in [
            "/b/[slug]$4?nxtPslug=$slug&s2=$slug2&n=$3",
            "$slug2$slug$$1$10$0$5$45$",
            "/x$$$",
            "",
            "$",
            "/plain",
            "$1$2$3$4$slug$slug2$slug23",
        ] {
            let pieces = dest_pieces(dest, seg.group_count(), seg.names());
            let mut got = String::new();
            for p in &pieces {
                match p {
                    DestPiece::Lit(r) => got.push_str(&dest[r.clone()]),
                    DestPiece::Group(g) => got.push_str(m.group(*g).unwrap_or_default()),
                }
            }
            assert_eq!(got, replace_destination(dest, Some(&m), &vec![]), "{dest}");
        }
    }

    /// [`Literal::matches`] is `eq_ignore_ascii_case` (or `==`) for every byte pair, at every
    /// length around the eight-byte step.
    #[test]
    fn literal_compare_is_ascii_case_folding() {
        let bytes: Vec<u8> = (0..=255u8).collect();
        for ci in [true, false] {
            for len in [0, 1, 7, 8, 9, 16, 17] {
                for &a in &bytes {
                    for &b in &[
                        b'a', b'A', b'z', b'Z', b'/', b'@', b'[', b'`', b'{', 0xC1, 0xE1,
                    ] {
                        let lit: String = std::iter::repeat_n(b as char, len).collect();
                        let l = Literal::new(&lit, ci);
                        let mut w = lit.clone().into_bytes();
                        if len > 0 {
                            w[len - 1] = a;
                        }
                        let want = if ci {
                            w.eq_ignore_ascii_case(lit.as_bytes())
                        } else {
                            w == lit.as_bytes()
                        };
                        assert_eq!(l.matches(&w), want, "{lit:?} vs {w:?} (ci {ci})");
                    }
                }
            }
        }
    }

    fn m<'t>(re: &str, text: &'t str) -> RegexMatch<'t> {
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
    fn keys_overlapping_between_captures_numbers_and_names() {
        let rm = m(r"^/(?<ab>x)(y)$", "/xy");
        let caps = vec![
            ("a".to_string(), "CAP-A".to_string()),
            ("ab".to_string(), "CAP-AB".to_string()),
            (String::new(), "E".to_string()),
        ];
        // `$ab` is both a capture and a group name: the group's value; `$3` is no group, so
        // the empty capture key takes the `$`.
        assert_eq!(
            replace_destination("$ab|$a|$1|$2|$3|$|$01", Some(&rm), &caps),
            "x|CAP-A|x|y|E3|E|E01"
        );
    }

    #[test]
    fn longest_key_wins() {
        let caps = vec![
            ("a".to_string(), "1".to_string()),
            ("ab".to_string(), "2".to_string()),
        ];
        assert_eq!(replace_destination("$ab$a$abc", None, &caps), "212c");
    }

    /// The `/:path*` shortcut decides exactly what the regex (regress, JS semantics) does.
    #[test]
    fn catch_all_shortcut_agrees_with_the_regex() {
        let ci = compile(CATCH_ALL, false).expect("compile");
        let cs = compile(CATCH_ALL, true).expect("compile");
        assert!(ci.catch_all && cs.catch_all);
        let js = Regex::with_flags(CATCH_ALL, "i").expect("regress");
        for text in [
            "", "/", "//", "/a", "/a/", "/a//", "//a", "/a//b", "/a/b/c", "/a/b/c/", "a", "a/b",
            "/%2F", "/\n/x", "/é/ü", "/.", "/..//", "/a/b//", "///", "/ /",
        ] {
            let expect = js.find(text).is_some();
            assert_eq!(js_is_match(&ci, text), expect, "{text:?}");
            assert_eq!(js_is_match(&cs, text), expect, "{text:?}");
        }
        let long = format!("/{}", "a".repeat(MAX_REGEX_INPUT));
        assert!(!js_is_match(&ci, &long));
    }

    /// The middleware matchers' `/_next/data/<segment>` reject never refuses what the regex
    /// (regress, JS semantics) matches.
    #[test]
    fn middleware_matcher_reject_agrees_with_the_regex() {
        let tail = r"(\.json|\.rsc|\.segments\/.+\.segment\.rsc)?[\/#\?]?$";
        let rest = r"(?:\/((?:[^\/#\?]+?)(?:\/(?:[^\/#\?]+?))*))?";
        let sources = [
            format!(r"{DATA_GROUP}\/ssr{tail}"),
            format!(r"{DATA_GROUP}\/blog{rest}{tail}"),
            format!(r"{DATA_GROUP}\/proxy-redirect{tail}"),
            format!(r"{DATA_GROUP}(?:\/)?$"),
            format!(r"{DATA_GROUP}\/a|\/b"),
        ];
        let texts = [
            "/",
            "/ssr",
            "/SSR",
            "/ssr/",
            "/ssr.json",
            "/ssrx",
            "/x/ssr",
            "/_next/data/b/ssr",
            "/_next/data/b/ssr.json",
            "/_NEXT/DATA/b/SSR",
            "/_next/data//ssr",
            "/_next/data/ssr",
            "/_next/data/b/c/ssr",
            "/_next/data/é/ssr",
            "/blog",
            "/blog/x",
            "/blog/x/y.rsc",
            "/_next/data/id/blog/x.json",
            "/proxy-redirect",
            "/b",
            "/a",
            "/_next/data/x/a",
            "/_next/data/x/b",
            "/nope/at/all",
            "/_next/static/chunks/0cz1d0mv5g_q7.js",
        ];
        for src in &sources {
            for ci in [false, true] {
                let re = compile(src, !ci).expect("compile");
                let js = Regex::with_flags(src, if ci { "i" } else { "" }).expect("regress");
                for text in texts {
                    let expect = js.find(text).is_some();
                    assert_eq!(js_is_match(&re, text), expect, "{src} ci={ci} {text:?}");
                    assert_eq!(js_match(&re, text).is_some(), expect, "{src} {text:?}");
                }
            }
        }
        let re = compile(&sources[0], false).expect("compile");
        assert_eq!(
            re.after_data.as_ref().map(|(l, _)| &l.bytes[..]),
            Some(&b"/ssr"[..])
        );
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
