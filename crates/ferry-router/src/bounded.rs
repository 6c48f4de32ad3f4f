//! Bounded regex execution: no request can make a route regex run away.
//!
//! `regress` is JavaScript-exact but a plain backtracker: a user's `/:a((?:a+)+)(?=b)` or a
//! lookahead-heavy matcher takes exponential time on a hostile path, and the linear prefilter
//! cannot help when the regex has lookarounds (they are dropped there, so the superset matches).
//! Here each JavaScript regex is also translated EXACTLY (lookarounds and groups kept, `.`,
//! `\d`, `\w` and classes spelled out as in JavaScript) for `fancy-regex`, which runs
//! lookaround-free parts in the linear `regex` crate and counts its own backtracking steps. A
//! translation without lookarounds runs on the `regex` crate's engine directly (what fancy-regex
//! would wrap anyway): linear, no budget, and no superset prefilter in front of it (same scan).
//! Its answer decides:
//! - no match: exact (same language), regress is skipped;
//! - a match: used as it is. Its captures agree with JavaScript's except for a capture group
//!   repeated or inside a repeated / nullable optional group (JavaScript resets those per
//!   iteration; here the last participating value stays): rare in routes, and asking regress
//!   instead would reopen the runaway;
//! - over [`BACKTRACK_LIMIT`] steps: no match, and the routing phase it ran in is answered by
//!   [`budget_guard`]'s fallback instead (the request is refused with 400: for a hostile
//!   request no answer is safe, e.g. "no match" would skip a middleware guarding the path);
//! - no bounded engine (a construct without an exact translation: backreferences, `\s` inside
//!   a class, `[^]`, quantified lookarounds, variable-length lookbehind, a non-ASCII
//!   case-insensitive pattern): regress alone, unbounded. Next never emits these; a user's
//!   pattern with them stays a risk (known gap).
//!
//! Case-insensitive patterns must be ASCII (where Unicode simple case folding and JavaScript's
//! non-unicode canonicalization agree, except for U+212A KELVIN SIGN and U+017F LONG S in the
//! text, which are swapped for uncased stand-ins).

use std::borrow::Cow;
use std::cell::Cell;
use std::sync::Arc;

use crate::matcher::RegexMatch;
use crate::prefilter::{
    DOT, braced_quantifier, escape_outside_class, has_top_level_alternation, skip_group,
    translate_class,
};

/// Backtracking steps one regex execution may take before it counts as not matching. Next's own
/// lookahead matchers on the longest accepted path (8 KB of short segments) need under 100k;
/// 200k steps take a few ms in release.
pub(crate) const BACKTRACK_LIMIT: usize = 200_000;

thread_local! {
    /// Set when a regex ran out of its step budget during the current routing phase.
    static EXCEEDED: Cell<bool> = const { Cell::new(false) };
}

/// Runs one routing phase `f`; when a regex in it went over [`BACKTRACK_LIMIT`], the phase's
/// answer is `on_exceeded(reason)` instead. Phases are synchronous, so a thread-local suffices.
pub(crate) fn budget_guard<T>(f: impl FnOnce() -> T, on_exceeded: impl FnOnce(String) -> T) -> T {
    let outer = EXCEEDED.with(|e| e.replace(false));
    let out = f();
    let exceeded = EXCEEDED.with(|e| e.replace(outer));
    if exceeded {
        on_exceeded(format!(
            "a routing regex needed more than {BACKTRACK_LIMIT} backtracking steps"
        ))
    } else {
        out
    }
}

/// An exact translation compiled for the engine it needs.
#[derive(Debug)]
enum Engine {
    /// Lookaround-free: the `regex` crate's engine runs it exactly, in linear time
    /// (fancy-regex would only wrap the same automaton).
    Plain(Plain),
    /// With lookarounds: fancy-regex, counting its backtracking steps.
    Fancy(fancy_regex::Regex),
}

/// A lookaround-free translation on the `regex` crate's own engine.
#[derive(Debug)]
struct Plain {
    re: regex_automata::meta::Regex,
    /// For an anchored pattern, the same regex without the lazy DFA, for capture searches:
    /// the meta engine would first run the DFA to find the match and then the backtracker on
    /// it, where one anchored backtracker run finds both (same leftmost-first captures).
    captures_re: Option<regex_automata::meta::Regex>,
    /// The pattern (`(?i)` included), for a phase's multi-pattern scan.
    pattern: Box<str>,
    /// The named groups: (group index, name).
    names: Arc<[(usize, Arc<str>)]>,
    /// Every match starts at the text's start (`^…` without a top-level `|`): searches are
    /// anchored, so the engine tries one start position instead of scanning for one.
    anchored: bool,
}

/// Capture slots kept on the stack (16 groups); more use the heap.
const STACK_SLOTS: usize = 32;

impl Plain {
    /// Compiles a translated pattern, or `None` when the `regex` crate refuses it (lookarounds).
    fn new(pattern: &str, anchored: bool) -> Option<Self> {
        let config = regex_automata::meta::Config::new()
            .nfa_size_limit(Some(1 << 20))
            .onepass_size_limit(Some(1 << 20));
        let re = regex_automata::meta::Regex::builder()
            .configure(config.clone())
            .build(pattern)
            .ok()?;
        let captures_re = anchored
            .then(|| {
                regex_automata::meta::Regex::builder()
                    .configure(config.hybrid(false))
                    .build(pattern)
                    .ok()
            })
            .flatten();
        let names = re
            .group_info()
            .pattern_names(regex_automata::PatternID::ZERO)
            .enumerate()
            .filter_map(|(i, n)| n.map(|n| (i, Arc::from(n))))
            .collect();
        Some(Plain {
            re,
            captures_re,
            pattern: pattern.into(),
            names,
            anchored,
        })
    }

    /// The search input for `hay`.
    fn input<'h>(&self, hay: &'h str) -> regex_automata::Input<'h> {
        let input = regex_automata::Input::new(hay);
        if self.anchored {
            input.anchored(regex_automata::Anchored::Yes)
        } else {
            input
        }
    }

    /// The match of `hay` with its groups sliced from `text` (same offsets).
    fn captures<'t>(&self, text: &'t str, hay: &str) -> Option<RegexMatch<'t>> {
        let len =
            self.re.group_info().implicit_slot_len() + self.re.group_info().explicit_slot_len();
        let mut stack = [None; STACK_SLOTS];
        let mut heap;
        let slots = if len <= STACK_SLOTS {
            &mut stack[..len]
        } else {
            heap = vec![None; len];
            &mut heap[..]
        };
        self.captures_re
            .as_ref()
            .unwrap_or(&self.re)
            .search_slots(&self.input(hay), slots)?;
        let group = |i: usize| match (slots.get(2 * i), slots.get(2 * i + 1)) {
            (Some(Some(a)), Some(Some(b))) => Some(a.get()..b.get()),
            _ => None,
        };
        Some(RegexMatch::with_names(
            text,
            (0..len / 2).map(group),
            &self.names,
        ))
    }
}

/// The bounded engine for one JavaScript regex, when an exact translation exists.
#[derive(Debug)]
pub(crate) struct Bounded {
    re: Option<Engine>,
    /// Its captures equal JavaScript's whenever it matches (else only the match does).
    #[cfg_attr(not(test), allow(dead_code))]
    exact_captures: bool,
    case_insensitive: bool,
}

/// What the bounded engine concluded.
pub(crate) enum Verdict<'t> {
    /// The JavaScript regex does not match (or needs more than the step budget).
    NoMatch,
    /// The JavaScript regex matches, with these captures.
    Match(RegexMatch<'t>),
    /// Ask regress.
    Unsure,
}

impl Bounded {
    /// Builds the bounded engine for a JavaScript regex source (`i` flag when
    /// `case_insensitive`).
    pub(crate) fn new(js_source: &str, case_insensitive: bool) -> Self {
        let none = Bounded {
            re: None,
            exact_captures: false,
            case_insensitive,
        };
        if case_insensitive && !js_source.is_ascii() {
            return none;
        }
        let Some((pattern, exact_captures)) = translate_exact(js_source) else {
            return none;
        };
        // Inline `(?i)`: fancy-regex 0.14's builder flag does not reach inside lookarounds.
        let pattern = if case_insensitive {
            format!("(?i){pattern}")
        } else {
            pattern
        };
        // The `regex` crate refuses lookarounds: what it accepts needs no step budget.
        let chars: Vec<char> = js_source.chars().collect();
        let anchored = chars.first() == Some(&'^') && !has_top_level_alternation(&chars);
        let re = match Plain::new(&pattern, anchored) {
            Some(plain) => Some(Engine::Plain(plain)),
            None => fancy_regex::RegexBuilder::new(&pattern)
                .backtrack_limit(BACKTRACK_LIMIT)
                .delegate_size_limit(1 << 20)
                .build()
                .ok()
                .map(Engine::Fancy),
        };
        Bounded {
            re,
            exact_captures,
            case_insensitive,
        }
    }

    /// The text to run on: the two characters Unicode simple case folding ties to ASCII
    /// letters and JavaScript's non-unicode `i` does not behave, for an ASCII pattern, like any
    /// uncased non-ASCII character, so they are swapped for same-length stand-ins (offsets
    /// still slice the original).
    fn haystack<'t>(&self, text: &'t str) -> Cow<'t, str> {
        if self.case_insensitive && !text.is_ascii() && text.contains(['\u{212A}', '\u{17F}']) {
            Cow::Owned(
                text.replace('\u{212A}', "\u{2122}")
                    .replace('\u{17F}', "\u{A9}"),
            )
        } else {
            Cow::Borrowed(text)
        }
    }

    /// Whether the JavaScript regex matches `text`: `None` when there is no bounded engine.
    /// Over the step budget counts as no match (and marks the phase, see [`budget_guard`]).
    pub(crate) fn is_match(&self, text: &str) -> Option<bool> {
        // The phase is refused anyway: spend no more on it.
        if EXCEEDED.with(Cell::get) {
            return Some(false);
        }
        let hay = self.haystack(text);
        match self.re.as_ref()? {
            Engine::Plain(p) => Some(p.re.is_match(p.input(&hay))),
            Engine::Fancy(re) => Some(re.is_match(&hay).unwrap_or_else(|_| {
                EXCEEDED.with(|e| e.set(true));
                false
            })),
        }
    }

    /// Runs the bounded engine on `text`.
    pub(crate) fn run<'t>(&self, text: &'t str) -> Verdict<'t> {
        // The phase is refused anyway: spend no more on it.
        if EXCEEDED.with(Cell::get) {
            return Verdict::NoMatch;
        }
        let Some(re) = &self.re else {
            return Verdict::Unsure;
        };
        let hay = self.haystack(text);
        // Captures of repeated groups may differ from JavaScript's (`exact_captures`); the
        // match itself does not. Running regress for them would reopen the runaway.
        match re {
            Engine::Plain(p) => p
                .captures(text, &hay)
                .map_or(Verdict::NoMatch, Verdict::Match),
            Engine::Fancy(re) => match re.captures(&hay) {
                Err(_) => {
                    EXCEEDED.with(|e| e.set(true));
                    Verdict::NoMatch
                }
                Ok(None) => Verdict::NoMatch,
                Ok(Some(c)) => {
                    let at = |i: usize| c.get(i).map(|m| m.range());
                    let groups = (0..c.len()).map(at).collect();
                    let named = re
                        .capture_names()
                        .enumerate()
                        .filter_map(|(i, n)| n.map(|n| (Arc::from(n), at(i))))
                        .collect();
                    Verdict::Match(RegexMatch::new(text, groups, named))
                }
            },
        }
    }

    /// The exact `regex`-crate pattern (`(?i)` included), when the engine is [`Engine::Plain`].
    pub(crate) fn plain_pattern(&self) -> Option<&str> {
        match &self.re {
            Some(Engine::Plain(p)) => Some(&p.pattern),
            _ => None,
        }
    }

    /// Whether the exact engine is the `regex` crate alone (then a superset prefilter in front
    /// of it would only scan the text twice).
    pub(crate) fn is_plain(&self) -> bool {
        matches!(self.re, Some(Engine::Plain(_)))
    }

    /// Whether an exact bounded engine was built (for tests).
    #[cfg(test)]
    fn is_active(&self) -> bool {
        self.re.is_some()
    }
}

/// JavaScript's `\s`: WhiteSpace and LineTerminator.
const JS_SPACE: &str = r"[\t\n\x0B\x0C\r \xA0\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}\x{FEFF}]";

#[derive(Clone, Copy, PartialEq, Eq)]
enum GroupKind {
    Capture,
    NonCapture,
    Look,
}

struct OpenGroup {
    kind: GroupKind,
    /// Where the group starts in the output.
    out_start: usize,
    /// Capture groups opened before this one.
    captures_before: usize,
}

/// A group that just closed (a quantifier may follow).
struct ClosedGroup {
    out_start: usize,
    /// Capture groups it contains, itself included.
    captures: usize,
}

/// What [`translate`] produces.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Translation {
    /// The same language and groups, lookarounds kept (for fancy-regex or the `regex` crate).
    Exact,
    /// A superset language for the `regex` crate: lookarounds and `\b` / `\B` dropped (that
    /// only removes constraints), every group non-capturing (see `prefilter.rs`).
    Superset,
}

/// [`translate`] exactly.
fn translate_exact(src: &str) -> Option<(String, bool)> {
    translate(src, Translation::Exact)
}

/// Translates a JavaScript (non-unicode-mode) regex into a `regex` / `fancy-regex` pattern:
/// `(pattern, captures exact)`, or `None` when some construct has no equivalent
/// (backreferences, `\s` in a class, `[^]`, quantified lookarounds ...). `.`, `\d`, `\w`,
/// `\s` and classes are spelled out as JavaScript means them in both modes.
pub(crate) fn translate(src: &str, mode: Translation) -> Option<(String, bool)> {
    let superset = mode == Translation::Superset;
    let chars: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len() + 16);
    let mut stack: Vec<OpenGroup> = Vec::new();
    let mut captures = 0usize;
    let mut exact = true;
    let mut quantifiable = false;
    let mut closed: Option<ClosedGroup> = None;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let just_closed = closed.take();
        match c {
            '\\' => {
                let e = *chars.get(i + 1)?;
                match e {
                    // A dropped assertion: the superset only loses a constraint.
                    'b' | 'B' if superset => {}
                    // JavaScript's WhiteSpace and LineTerminator code points.
                    's' => out.push_str(JS_SPACE),
                    'S' => out.push_str(&JS_SPACE.replacen('[', "[^", 1)),
                    // ASCII word boundaries (`\w` is ASCII in non-unicode mode).
                    'b' => out.push_str(
                        r"(?:(?<=[A-Za-z0-9_])(?![A-Za-z0-9_])|(?<![A-Za-z0-9_])(?=[A-Za-z0-9_]))",
                    ),
                    'B' => out.push_str(
                        r"(?:(?<=[A-Za-z0-9_])(?=[A-Za-z0-9_])|(?<![A-Za-z0-9_])(?![A-Za-z0-9_]))",
                    ),
                    'x' | 'u' => {
                        let n = if e == 'x' { 2 } else { 4 };
                        let hex: String = chars.get(i + 2..i + 2 + n)?.iter().collect();
                        let code = u32::from_str_radix(&hex, 16).ok()?;
                        let ch = char::from_u32(code)?;
                        out.push_str(&regex::escape(&ch.to_string()));
                        i += n;
                    }
                    _ => out.push_str(&escape_outside_class(e)?),
                }
                if matches!(e, 'b' | 'B') {
                    // An assertion: JavaScript rejects a quantifier on it.
                    i += 2;
                    quantifiable = false;
                    continue;
                }
                i += 2;
                quantifiable = true;
            }
            '[' => {
                let (class, end) = translate_class(&chars, i)?;
                out.push_str(&class);
                i = end;
                quantifiable = true;
            }
            '(' => {
                let look = chars.get(i + 1) == Some(&'?')
                    && match chars.get(i + 2) {
                        Some('=' | '!') => true,
                        Some('<') => matches!(chars.get(i + 3), Some('=' | '!')),
                        _ => false,
                    };
                if superset && look {
                    // Dropped whole; a quantifier after it is refused below.
                    i = skip_group(&chars, i)?;
                    quantifiable = false;
                    continue;
                }
                let in_look = stack.iter().any(|g| g.kind == GroupKind::Look);
                let (kind, text, len) = if chars.get(i + 1) != Some(&'?') {
                    let text = if superset { "(?:" } else { "(" };
                    (GroupKind::Capture, text.to_string(), 1)
                } else {
                    match (chars.get(i + 2), chars.get(i + 3)) {
                        (Some(':'), _) => (GroupKind::NonCapture, "(?:".to_string(), 3),
                        (Some('='), _) => (GroupKind::Look, "(?=".to_string(), 3),
                        (Some('!'), _) => (GroupKind::Look, "(?!".to_string(), 3),
                        (Some('<'), Some('=')) => (GroupKind::Look, "(?<=".to_string(), 4),
                        (Some('<'), Some('!')) => (GroupKind::Look, "(?<!".to_string(), 4),
                        (Some('<'), _) => {
                            let close = chars[i..].iter().position(|&ch| ch == '>')? + i;
                            let name: String = chars[i + 3..close].iter().collect();
                            let valid = name
                                .chars()
                                .next()
                                .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
                                && name
                                    .chars()
                                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_');
                            if !valid {
                                return None;
                            }
                            let text = if superset {
                                "(?:".to_string()
                            } else {
                                format!("(?P<{name}>")
                            };
                            (GroupKind::Capture, text, close + 1 - i)
                        }
                        _ => return None,
                    }
                };
                if kind == GroupKind::Capture && in_look {
                    // JavaScript's captures inside lookarounds have their own rules.
                    exact = false;
                }
                stack.push(OpenGroup {
                    kind,
                    out_start: out.len(),
                    captures_before: captures,
                });
                if kind == GroupKind::Capture {
                    captures += 1;
                }
                out.push_str(&text);
                i += len;
                quantifiable = false;
            }
            ')' => {
                let g = stack.pop()?;
                out.push(')');
                i += 1;
                quantifiable = g.kind != GroupKind::Look;
                if quantifiable {
                    closed = Some(ClosedGroup {
                        out_start: g.out_start,
                        captures: captures - g.captures_before,
                    });
                }
            }
            '.' => {
                out.push_str(DOT);
                i += 1;
                quantifiable = true;
            }
            '*' | '+' | '?' | '{' => {
                let (end, min0, max_gt1) = if c == '{' {
                    match braced_quantifier(&chars, i) {
                        Some(end) => {
                            let body: String = chars[i + 1..end - 1].iter().collect();
                            let mut parts = body.split(',');
                            let min = parts.next().unwrap_or_default();
                            let max = parts.next();
                            let max_gt1 = match max {
                                None => !min.parse::<u64>().is_ok_and(|n| n <= 1),
                                Some("") => true,
                                Some(m) => !m.parse::<u64>().is_ok_and(|n| n <= 1),
                            };
                            (end, min.parse::<u64>().is_ok_and(|n| n == 0), max_gt1)
                        }
                        None => {
                            // Annex B: a `{` that starts no quantifier is a literal.
                            out.push_str(r"\{");
                            i += 1;
                            quantifiable = true;
                            continue;
                        }
                    }
                } else {
                    (i + 1, c != '+', c != '?')
                };
                if !quantifiable {
                    return None;
                }
                if let Some(g) = just_closed.filter(|g| g.captures > 0 && !superset) {
                    if max_gt1 {
                        exact = false;
                    } else if min0 {
                        // JavaScript rejects an optional iteration that matches empty (its
                        // captures stay undefined); the `regex` crate takes it.
                        let body = &out[g.out_start..];
                        let nullable = regex::Regex::new(&format!("^(?:{body})$"))
                            .map(|r| r.is_match(""))
                            .unwrap_or(true);
                        if nullable {
                            exact = false;
                        }
                    }
                }
                out.extend(&chars[i..end]);
                i = end;
                if chars.get(i) == Some(&'?') {
                    out.push('?');
                    i += 1;
                }
                quantifiable = false;
            }
            '^' | '$' | '|' => {
                out.push(c);
                i += 1;
                quantifiable = false;
            }
            _ => {
                out.push_str(&regex::escape(&c.to_string()));
                i += 1;
                quantifiable = true;
            }
        }
    }
    if !stack.is_empty() {
        return None;
    }
    Some((out, exact))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// Next's own shapes and hand-made ones: the bounded engine must agree with regress on
    /// whether they match and, when it answers alone, on every capture.
    const PATTERNS: &[&str] = &[
        r"^(?:\/((?:[^\/]+?)(?:\/(?:[^\/]+?))*))?(?:\/)?$",
        r"^(?:\/((?:[^\/]+?)(?:\/(?:[^\/]+?))*))\/$",
        r"^(?:\/(_next\/data\/[^/]{1,}))?\/blog(?:\/((?:[^\/#\?]+?)(?:\/(?:[^\/#\?]+?))*))?(\.json|\.rsc|\.segments\/.+\.segment\.rsc)?[\/#\?]?$",
        r"^[/]?/blog/(?<nxtPslug>[^/]+?)(\.rsc|\.segments/.+\.segment\.rsc|)(?:/)?$",
        r"/_next/static/(?:[^/]+/pages|pages|chunks|immutable|runtime|css|image|media|B1d)/.+",
        r"^(?:\/(_next\/data\/[^/]{1,}))?(?:\/((?!_next\/static|_next\/image|favicon.ico).*))(\.json)?[\/#\?]?$",
        r"^\/post\/(\d+)(?:\/)?$",
        r"^\/u\/(\w{2,5})\/x{1}$",
        r"^\/a{b$",
        r"^(?:(a*))?b",
        r"^(?:(a)|b)+$",
        r"^(a*)*$",
        r"(?<lang>[a-z]{2}).*",
        r"^(?:(?<mode>num|int))$",
        r"^\/((?=a)\w+)(?<!z)$",
        r"^(?:\/((?!\.well-known(?:\/.*)?)(?:[^/]+\/)*[^/]+\.\w+))\/$",
        r"^\/((?:\w+\s?)+)$",
        r"\bb\B.\x41\u00e9\S",
        r"^\/(kelvin)\/([^a]|s)$",
    ];
    const INPUTS: &[&str] = &[
        "/",
        "/x/",
        "/blog/Hello.rsc",
        "/_next/data/abc/blog/a/b.json",
        "/blog/x.segments/_tree.segment.rsc",
        "/_next/static/chunks/a.js",
        "/favicon.ico",
        "/post/123",
        "/u/ab_9/x",
        "/a{b",
        "b",
        "ab",
        "aab",
        "",
        "en-US,en;q=0.9",
        "int",
        "/abc",
        "/abz",
        "/h\u{e9}llo/\u{212A}",
        "/.WELL-KNOWN/SECURITY.TXT/",
        "/a/b.txt/",
        "/ab c",
        "a bbxA\u{e9}z",
        "bbxAéz",
        "/kelvin/s",
    ];

    #[test]
    fn agrees_with_regress() {
        for p in PATTERNS {
            for ci in [false, true] {
                let b = Bounded::new(p, ci);
                assert!(b.is_active(), "no bounded engine for {p}");
                let js = regress::Regex::with_flags(p, if ci { "i" } else { "" }).expect("js");
                for input in INPUTS {
                    let want = js.find(input);
                    match b.run(input) {
                        Verdict::NoMatch => assert!(want.is_none(), "{p} on {input:?}"),
                        Verdict::Unsure => {}
                        Verdict::Match(m) => {
                            let want = want.unwrap_or_else(|| panic!("{p} on {input:?}"));
                            let mut groups = vec![Some(input[want.range()].to_string())];
                            groups.extend(
                                want.captures
                                    .iter()
                                    .map(|c| c.clone().map(|r| input[r].to_string())),
                            );
                            let got: Vec<Option<String>> = (0..m.group_count())
                                .map(|i| m.group(i).map(str::to_string))
                                .collect();
                            if b.exact_captures {
                                assert_eq!(got, groups, "{p} on {input:?}");
                            } else {
                                assert_eq!(got[0], groups[0], "{p} on {input:?}");
                            }
                        }
                    }
                }
            }
        }
    }

    /// Checked against Node 20 (`/(?<lang>[a-z]{2}).*/i.exec("/\u212Aelvin/\u017f")`); regress
    /// 0.12 lets U+212A match `[a-z]` here, V8 does not.
    #[test]
    fn kelvin_sign_and_long_s_follow_v8() {
        let b = Bounded::new(r"(?<lang>[a-z]{2}).*", true);
        let Verdict::Match(m) = b.run("/\u{212A}elvin/\u{17F}") else {
            panic!("matches");
        };
        assert_eq!(m.group(0), Some("elvin/\u{17F}"));
        let named: Vec<_> = m.named().collect();
        assert_eq!(named, vec![(&Arc::from("lang"), Some("el"))]);
        let b = Bounded::new(r"^\/(kelvin)\/([^a]|s)$", true);
        assert!(matches!(b.run("/\u{212A}elvin/s"), Verdict::NoMatch));
    }

    #[test]
    fn captures_js_resets_are_flagged_inexact() {
        for p in [r"^(?:(a)|b)+$", r"^(a*)*$", r"^(?:(a*))?b"] {
            let (_, exact) = translate_exact(p).expect("translates");
            assert!(!exact, "{p}");
        }
        let (_, exact) = translate_exact(PATTERNS[2]).expect("translates");
        assert!(exact);
    }

    #[test]
    fn catastrophic_patterns_stop_at_the_budget() {
        let text = format!("/{}", "a".repeat(8000));
        for p in [
            r"^\/((?:a+)+)(?=b)",
            r"^(?:\/((?:(?!x).)*)*y)$",
            r"^\/((?:a|a)+)(?=b)",
        ] {
            let b = Bounded::new(p, true);
            let t = Instant::now();
            assert!(matches!(b.run(&text), Verdict::NoMatch), "{p}");
            assert!(
                t.elapsed() < Duration::from_secs(2),
                "{p}: {:?}",
                t.elapsed()
            );
        }
    }
}
