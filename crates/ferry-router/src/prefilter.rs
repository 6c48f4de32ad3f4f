//! A linear-time prefilter for JavaScript regexes.
//!
//! `regress` gives exact JavaScript semantics but backtracks, and most route regexes do not match
//! most requests. Each route regex is also translated into a `regex` crate pattern whose language
//! is a SUPERSET of the JavaScript one: lookarounds are dropped (that only removes constraints),
//! case-insensitivity uses full Unicode simple case folding (a superset of JavaScript's
//! non-unicode canonicalization), `.`, `\d`, `\w` and `\s` are spelled out exactly, `\b` / `\B`
//! are dropped like lookarounds. So "the prefilter does not match" is exact and skips regress;
//! "it matches" still runs regress for the real answer and the captures. The translation is
//! `bounded.rs`'s exact one in its superset mode; what it cannot translate (backreferences,
//! `\s` in a class, `[^]`, a quantified lookaround, ...) gets no prefilter and always runs
//! regress.
//!
//! Two cheaper rejects live here too: [`literal_prefix`] (the literal an `^`-anchored regex starts
//! with, compared before any automaton) and [`RuleSet`] (one multi-pattern scan per routing phase
//! over every rule's exact or superset pattern, so a phase's cost does not grow with its rules).

/// The superset pattern of one JavaScript regex, when one could be built.
#[derive(Debug, Clone)]
pub(crate) struct Prefilter(Option<regex::Regex>);

impl Prefilter {
    /// Builds the prefilter for a JavaScript regex source (`i` flag when `case_insensitive`).
    pub(crate) fn new(js_source: &str, case_insensitive: bool) -> Self {
        let translated = translate(js_source).and_then(|pattern| {
            regex::RegexBuilder::new(&pattern)
                .case_insensitive(case_insensitive)
                .size_limit(1 << 20)
                .build()
                .ok()
        });
        Prefilter(translated)
    }

    /// `false` only when the JavaScript regex cannot match `input`.
    pub(crate) fn may_match(&self, input: &str) -> bool {
        self.0.as_ref().is_none_or(|re| re.is_match(input))
    }

    /// The superset pattern with its flags inline, for a phase's multi-pattern scan.
    pub(crate) fn pattern(&self, case_insensitive: bool) -> Option<String> {
        let re = self.0.as_ref()?;
        Some(if case_insensitive {
            format!("(?i){}", re.as_str())
        } else {
            re.as_str().to_string()
        })
    }

    /// Whether a prefilter was built (for tests).
    #[cfg(test)]
    pub(crate) fn is_active(&self) -> bool {
        self.0.is_some()
    }
}

/// The ASCII literal every match of a `^`-anchored JavaScript regex starts with (`/old-blog` for
/// `^\/old-blog(?:\/([^\/]+?))(?:\/)?$`), or `""`: a reject cheaper than any automaton. Under
/// the `i` flag it compares ASCII-case-insensitively, which is exact: JavaScript's non-unicode
/// canonicalization never maps a non-ASCII character to an ASCII one.
pub(crate) fn literal_prefix(src: &str) -> String {
    let chars: Vec<char> = src.chars().collect();
    let mut out = String::new();
    if chars.first() != Some(&'^') || has_top_level_alternation(&chars) {
        return out;
    }
    let mut i = 1;
    loop {
        let (c, next) = match chars.get(i) {
            // `\/`, `\-`, `\.`: identity escapes of punctuation.
            Some('\\') => match chars.get(i + 1) {
                Some(&e) if e.is_ascii_punctuation() => (e, i + 2),
                _ => break,
            },
            Some(&c) if c.is_ascii_graphic() && !"^$\\.*+?()[]{}|".contains(c) => (c, i + 1),
            _ => break,
        };
        // A quantified character is not required (or not alone): stop before it.
        if matches!(chars.get(next), Some('?' | '*' | '+' | '{')) {
            break;
        }
        out.push(c);
        i = next;
    }
    out
}

/// ASCII literals every match of a JavaScript regex contains, read off its top-level sequence:
/// `required`, the longest run of literal characters the match must contain somewhere
/// (`/blog/` for `^[/]?/blog/(?<slug>[^/]+?)…`, which has no [`literal_prefix`]), and `suffix`,
/// the literal run right before a final `$` (every match of `^(?:\/(…))\/$` ends the input
/// with `/`). Empty when there is none; both are compared ASCII-case-insensitively under the
/// `i` flag (exact for the same reason as [`literal_prefix`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct RequiredLiterals {
    pub required: String,
    pub suffix: String,
}

/// One top-level item of a pattern for [`required_literals`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Item {
    /// A literal ASCII character matched exactly once.
    Lit(u8),
    /// Anything else (a class, group, escape set, quantified item, anchor).
    Other,
    /// `$`.
    End,
}

/// See [`RequiredLiterals`].
pub(crate) fn required_literals(src: &str) -> RequiredLiterals {
    let chars: Vec<char> = src.chars().collect();
    if has_top_level_alternation(&chars) {
        return RequiredLiterals::default();
    }
    let Some(items) = top_level_items(&chars) else {
        return RequiredLiterals::default();
    };
    let run = |items: &[Item]| -> String {
        items
            .iter()
            .map(|it| match it {
                Item::Lit(b) => char::from(*b),
                _ => '\0',
            })
            .collect()
    };
    let mut required: &[Item] = &[];
    for r in items.split(|it| !matches!(it, Item::Lit(_))) {
        if r.len() > required.len() {
            required = r;
        }
    }
    let suffix = match items.split_last() {
        Some((Item::End, before)) => {
            let n = before
                .iter()
                .rev()
                .take_while(|it| matches!(it, Item::Lit(_)))
                .count();
            &before[before.len() - n..]
        }
        _ => &[],
    };
    RequiredLiterals {
        required: run(required),
        suffix: run(suffix),
    }
}

/// The pattern's top-level items, or `None` for an escape whose length is not certain
/// (`\x`, `\u`, `\c`, backreferences: nothing is claimed then).
fn top_level_items(chars: &[char]) -> Option<Vec<Item>> {
    let mut items = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' => {
                let e = *chars.get(i + 1)?;
                if e.is_ascii_punctuation() {
                    items.push(Item::Lit(e as u8));
                } else if "dDwWsSbBnrtfv".contains(e) {
                    items.push(Item::Other);
                } else {
                    return None;
                }
                i += 2;
            }
            '[' => {
                items.push(Item::Other);
                i = class_end(chars, i)?;
            }
            '(' => {
                items.push(Item::Other);
                i = skip_group(chars, i)?;
            }
            '*' | '+' | '?' => {
                // The quantified item is not required as a literal (and `??` / `*?` are lazy).
                if let Some(last) = items.last_mut() {
                    *last = Item::Other;
                }
                i += 1;
                if chars.get(i) == Some(&'?') {
                    i += 1;
                }
            }
            '{' => match braced_quantifier(chars, i) {
                Some(end) => {
                    if let Some(last) = items.last_mut() {
                        *last = Item::Other;
                    }
                    i = end;
                    if chars.get(i) == Some(&'?') {
                        i += 1;
                    }
                }
                None => {
                    items.push(Item::Other);
                    i += 1;
                }
            },
            '$' => {
                items.push(Item::End);
                i += 1;
            }
            c if c.is_ascii_graphic() && !"^.()[]{}|".contains(c) => {
                items.push(Item::Lit(c as u8));
                i += 1;
            }
            _ => {
                items.push(Item::Other);
                i += 1;
            }
        }
    }
    Some(items)
}

/// Whether `text` contains `lit` (ASCII), ignoring ASCII case when `ci`.
pub(crate) fn contains_literal(text: &str, lit: &str, ci: bool) -> bool {
    let (t, l) = (text.as_bytes(), lit.as_bytes());
    if l.is_empty() {
        return true;
    }
    if t.len() < l.len() {
        return false;
    }
    let same = |i: usize| {
        let w = &t[i..i + l.len()];
        if ci {
            w.eq_ignore_ascii_case(l)
        } else {
            w == l
        }
    };
    // Scan for one byte of the literal, then check the literal around it. Preferred: one case
    // cannot change and other than `/` (paths are full of `/`), else the last byte other than
    // `/` (compared case-folded when `ci`: for `/ssr` against `/_next/static/…` few hits, where
    // `/` would hit every segment).
    let at = l
        .iter()
        .position(|b| !b.is_ascii_alphabetic() && *b != b'/')
        .or_else(|| l.iter().rposition(|b| *b != b'/'))
        .unwrap_or(0);
    let needle = l[at];
    let window = &t[at..=t.len() - l.len() + at];
    let lower = needle.to_ascii_lowercase();
    let folded = ci && needle.is_ascii_alphabetic();
    if window.len() < 24 {
        // Short: a byte loop beats `memchr`'s per-call setup. `b | 0x20` is the lowercase
        // letter exactly when `b` is that letter in either case.
        return window.iter().enumerate().any(|(start, &b)| {
            (if folded {
                b | 0x20 == lower
            } else {
                b == needle
            }) && same(start)
        });
    }
    // Longer: `memchr` scans a vector at a time.
    if folded {
        memchr::memchr2_iter(lower, needle.to_ascii_uppercase(), window).any(same)
    } else {
        memchr::memchr_iter(needle, window).any(same)
    }
}

/// Whether the pattern has a `|` outside every group (then `^` anchors one branch only).
pub(crate) fn has_top_level_alternation(chars: &[char]) -> bool {
    let mut i = 0;
    while i < chars.len() {
        i = match chars[i] {
            '\\' => i + 2,
            '[' => class_end(chars, i).unwrap_or(chars.len()),
            // An unclosed group holds the rest: nothing after it is at the top level.
            '(' => skip_group(chars, i).unwrap_or(chars.len()),
            '|' => return true,
            _ => i + 1,
        };
    }
    false
}

/// The index after the character class that starts at `chars[start] == '['`. JavaScript ends
/// it at the first unescaped `]` after an optional `^` (`[]` is the empty class).
fn class_end(chars: &[char], start: usize) -> Option<usize> {
    let mut j = start + 1;
    if chars.get(j) == Some(&'^') {
        j += 1;
    }
    loop {
        match chars.get(j)? {
            '\\' => j += 2,
            ']' => return Some(j + 1),
            _ => j += 1,
        }
    }
}

/// One scan for a whole routing phase: a multi-pattern automaton over every rule's exact or
/// superset pattern tells which rules may match a path, instead of one scan per rule (the cost
/// of a phase no longer grows with its number of rules). Rules without such a pattern are
/// always candidates.
#[derive(Debug)]
pub(crate) struct RuleSet {
    re: regex_automata::meta::Regex,
    /// Rule index of each pattern in `re`.
    rules: Vec<usize>,
    /// Rules with no pattern in `re`.
    always: Vec<usize>,
}

/// Which rules of a phase may match one path (see [`RuleSet::candidates`]).
#[derive(Debug)]
pub(crate) enum Candidates {
    /// No filtering: rules `0..n`.
    All(usize),
    /// These rules, ascending.
    Only(Vec<usize>),
}

impl Candidates {
    /// The first candidate rule at or after `from`.
    pub(crate) fn next(&self, from: usize) -> Option<usize> {
        match self {
            Candidates::All(n) => (from < *n).then_some(from),
            Candidates::Only(v) => v.iter().copied().find(|&i| i >= from),
        }
    }
}

impl RuleSet {
    /// Builds the set from each rule's pattern (`None`: no pattern, always a candidate); `None`
    /// when the automaton cannot be built.
    pub(crate) fn new(patterns: &[Option<String>]) -> Option<Self> {
        let mut rules = Vec::new();
        let mut always = Vec::new();
        let mut pats = Vec::new();
        for (i, p) in patterns.iter().enumerate() {
            match p {
                Some(p) => {
                    rules.push(i);
                    pats.push(p.as_str());
                }
                None => always.push(i),
            }
        }
        let re = regex_automata::meta::Regex::builder()
            .configure(
                regex_automata::meta::Config::new()
                    .match_kind(regex_automata::MatchKind::All)
                    .nfa_size_limit(Some(32 << 20))
                    .hybrid_cache_capacity(8 << 20),
            )
            .build_many(&pats)
            .ok()?;
        Some(RuleSet { re, rules, always })
    }

    /// The rules that may match `path`.
    pub(crate) fn candidates(&self, path: &str) -> Candidates {
        let mut found = regex_automata::PatternSet::new(self.re.pattern_len());
        self.re
            .which_overlapping_matches(&regex_automata::Input::new(path), &mut found);
        let mut out: Vec<usize> = found
            .iter()
            .filter_map(|pid| self.rules.get(pid.as_usize()).copied())
            .collect();
        if !self.always.is_empty() {
            out.extend_from_slice(&self.always);
            out.sort_unstable();
        }
        Candidates::Only(out)
    }
}

/// JavaScript's `.` outside the `s` flag: anything but line terminators.
pub(crate) const DOT: &str = r"[^\n\r\x{2028}\x{2029}]";

/// Translates a JavaScript (non-unicode-mode) regex into a superset `regex` pattern, or `None`
/// (the exact translator of `bounded.rs`, lookarounds and word boundaries dropped).
fn translate(src: &str) -> Option<String> {
    crate::bounded::translate(src, crate::bounded::Translation::Superset).map(|(p, _)| p)
}

/// `\x` outside a class.
pub(crate) fn escape_outside_class(c: char) -> Option<String> {
    Some(match c {
        'd' => "[0-9]".into(),
        'D' => "[^0-9]".into(),
        'w' => "[A-Za-z0-9_]".into(),
        'W' => "[^A-Za-z0-9_]".into(),
        'n' => r"\n".into(),
        'r' => r"\r".into(),
        't' => r"\t".into(),
        'f' => r"\x0C".into(),
        'v' => r"\x0B".into(),
        '0' => r"\x00".into(),
        // Backreferences, \s, \b, \x/\u/\c escapes and identity escapes of letters: no prefilter.
        c if c.is_ascii_alphanumeric() => return None,
        c => regex::escape(&c.to_string()),
    })
}

/// One character class starting at `chars[start] == '['`; returns the pattern and the index
/// after its closing `]`.
pub(crate) fn translate_class(chars: &[char], start: usize) -> Option<(String, usize)> {
    let mut i = start + 1;
    let mut out = String::from("[");
    if chars.get(i) == Some(&'^') {
        out.push('^');
        i += 1;
    }
    // `[]` and `[^]` have JavaScript-only meanings.
    if chars.get(i) == Some(&']') {
        return None;
    }
    let mut items = 0;
    loop {
        let c = *chars.get(i)?;
        if c == ']' {
            break;
        }
        let (lo, next) = class_atom(chars, i)?;
        i = next;
        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|&n| n != ']') {
            let (hi, after) = class_atom(chars, i + 1)?;
            let (ClassAtom::Char(lo), ClassAtom::Char(hi)) = (lo, hi) else {
                return None;
            };
            if lo > hi {
                return None;
            }
            out.push_str(&class_char(lo));
            out.push('-');
            out.push_str(&class_char(hi));
            i = after;
        } else {
            match lo {
                ClassAtom::Char(ch) => out.push_str(&class_char(ch)),
                ClassAtom::Set(set) => out.push_str(set),
            }
        }
        items += 1;
    }
    if items == 0 {
        return None;
    }
    out.push(']');
    Some((out, i + 1))
}

enum ClassAtom {
    Char(char),
    Set(&'static str),
}

fn class_atom(chars: &[char], i: usize) -> Option<(ClassAtom, usize)> {
    let c = *chars.get(i)?;
    if c != '\\' {
        return Some((ClassAtom::Char(c), i + 1));
    }
    let e = *chars.get(i + 1)?;
    let atom = match e {
        'd' => ClassAtom::Set("0-9"),
        'w' => ClassAtom::Set("A-Za-z0-9_"),
        'n' => ClassAtom::Char('\n'),
        'r' => ClassAtom::Char('\r'),
        't' => ClassAtom::Char('\t'),
        'f' => ClassAtom::Char('\x0C'),
        'v' => ClassAtom::Char('\x0B'),
        '0' => ClassAtom::Char('\0'),
        // `\b` in a class is a backspace; negated sets and others: no prefilter.
        e if e.is_ascii_alphanumeric() => return None,
        e => ClassAtom::Char(e),
    };
    Some((atom, i + 2))
}

/// A class member, escaped when it could mean something to the `regex` crate.
fn class_char(c: char) -> String {
    if c.is_alphanumeric() {
        c.to_string()
    } else if c.is_ascii() && !c.is_ascii_control() {
        format!("\\{c}")
    } else {
        format!("\\x{{{:X}}}", u32::from(c))
    }
}

/// `{n}`, `{n,}` or `{n,m}` at `chars[i]`; the index after `}`.
pub(crate) fn braced_quantifier(chars: &[char], i: usize) -> Option<usize> {
    let mut j = i + 1;
    let digits = |j: &mut usize| {
        let s = *j;
        while chars.get(*j).is_some_and(char::is_ascii_digit) {
            *j += 1;
        }
        *j > s
    };
    if !digits(&mut j) {
        return None;
    }
    if chars.get(j) == Some(&',') {
        j += 1;
        digits(&mut j);
    }
    (chars.get(j) == Some(&'}')).then_some(j + 1)
}

/// The index after the group that starts at `chars[start] == '('`.
pub(crate) fn skip_group(chars: &[char], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    while i < chars.len() {
        i = match chars[i] {
            '\\' => i + 2,
            '[' => class_end(chars, i)?,
            '(' => {
                depth += 1;
                i + 1
            }
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
                i + 1
            }
            _ => i + 1,
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Patterns as `next build` emits them, plus hand-made ones with every construct.
    const PATTERNS: &[&str] = &[
        r"^(?:\/((?:[^\/]+?)(?:\/(?:[^\/]+?))*))?(?:\/)?$",
        r"^\/ssr(?:\/)?$",
        r"^(?:\/((?:[^\/]+?)(?:\/(?:[^\/]+?))*))\/$",
        r"^\/old-blog(?:\/([^\/]+?))(?:\/)?$",
        r"^(?:\/(_next\/data\/[^/]{1,}))?\/ssr(\.json|\.rsc|\.segments\/.+\.segment\.rsc)?[\/#\?]?$",
        r"^(?:\/(_next\/data\/[^/]{1,}))?\/blog(?:\/((?:[^\/#\?]+?)(?:\/(?:[^\/#\?]+?))*))?(\.json|\.rsc|\.segments\/.+\.segment\.rsc)?[\/#\?]?$",
        r"^[/]?/blog/(?<nxtPslug>[^/]+?)(\.rsc|\.segments/.+\.segment\.rsc|)(?:/)?$",
        r"/_next/static/(?:[^/]+/pages|pages|chunks|immutable|runtime|css|image|media|B1d)/.+",
        r"^(?:\/((?!_next\/static|_next\/image|favicon.ico).*))(?:\/)?$",
        r"^\/post\/(\d+)(?:\/)?$",
        r"^\/u\/(\w{2,5})\/x{1}$",
        r"^\/a{b$",
        r"^\/(?<id>[a-z-]+)\/?$",
        r"^a|^b\/c$",
    ];

    const INPUTS: &[&str] = &[
        "/",
        "/ssr",
        "/SSR/",
        "/ssr.rsc",
        "/_next/data/abc/ssr.json",
        "/blog/hello",
        "/blog/Hello.rsc",
        "/blog/x.segments/_tree.segment.rsc",
        "/_next/static/chunks/a.js",
        "/_next/static/B1d/_buildManifest.js",
        "/_next/image",
        "/favicon.ico",
        "/old-blog/x",
        "/post/123",
        "/post/12a",
        "/u/ab_9/x",
        "/a{b",
        "/some-id/",
        "/b/c",
        "/héllo/wörld",
        "/a\u{2028}b",
        "//x",
        "/x/",
        "/\u{212A}elvin",
    ];

    #[test]
    fn prefilters_are_built_for_next_patterns() {
        for p in PATTERNS {
            assert!(Prefilter::new(p, true).is_active(), "no prefilter for {p}");
        }
    }

    #[test]
    fn the_prefilter_never_rejects_a_javascript_match() {
        for p in PATTERNS {
            for ci in [true, false] {
                let js =
                    regress::Regex::with_flags(p, if ci { "i" } else { "" }).expect("js regex");
                let pre = Prefilter::new(p, ci);
                for input in INPUTS {
                    if js.find(input).is_some() {
                        assert!(pre.may_match(input), "{p} (i={ci}) rejects {input:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_prefilter_rejects_what_cannot_match() {
        let pre = Prefilter::new(r"^\/old-blog(?:\/([^\/]+?))(?:\/)?$", true);
        assert!(!pre.may_match("/_next/static/chunks/a.js"));
        assert!(pre.may_match("/OLD-BLOG/x"));
    }

    #[test]
    fn literal_prefixes() {
        for (p, want) in [
            (r"^\/old-blog(?:\/([^\/]+?))(?:\/)?$", "/old-blog"),
            (r"^\/ssr(?:\/)?$", "/ssr"),
            (r"^\/post\/(\d+)(?:\/)?$", "/post/"),
            (r"^\/a{b$", "/"),
            (r"^\/ab?c$", "/a"),
            (r"^\/ab*c$", "/a"),
            (r"^/_next/data/B[/]?/x\.json(?:/)?$", "/_next/data/B"),
            (r"^(?:\/((?:[^\/]+?)(?:\/(?:[^\/]+?))*))?(?:\/)?$", ""),
            (r"^a|^b\/c$", ""),
            (r"^\/x(?:a|b)$", "/x"),
            (r"/_next/static/.+", ""),
            (r"^\/\d", "/"),
            (r"^\/h\u00e9", "/h"),
        ] {
            assert_eq!(literal_prefix(p), want, "{p}");
        }
        // Every JavaScript match starts with the prefix.
        for p in PATTERNS {
            let prefix = literal_prefix(p);
            let js = regress::Regex::with_flags(p, "i").expect("js regex");
            for input in INPUTS {
                if js.find(input).is_some() {
                    assert!(
                        input.len() >= prefix.len()
                            && input.as_bytes()[..prefix.len()]
                                .eq_ignore_ascii_case(prefix.as_bytes()),
                        "{p} matches {input:?} without {prefix:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn required_literals_of_next_patterns() {
        let lits = |p: &str| {
            let r = required_literals(p);
            (r.required, r.suffix)
        };
        let s = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            lits(r"^[/]?/blog/(?<nxtPslug>[^/]+?)(\.rsc|\.segments/.+\.segment\.rsc|)(?:/)?$"),
            s("/blog/", "")
        );
        assert_eq!(
            lits(r"^(?:\/((?:[^\/]+?)(?:\/(?:[^\/]+?))*))\/$"),
            s("/", "/")
        );
        assert_eq!(
            lits(r"^(?:\/(_next\/data\/[^/]{1,}))?\/proxy-redirect(\.json|\.rsc)?[\/#\?]?$"),
            s("/proxy-redirect", "")
        );
        assert_eq!(
            lits(r"/_next/static/(?:[^/]+/pages|pages|chunks)/.+"),
            s("/_next/static/", "")
        );
        assert_eq!(lits(r"^\/ab?c\.txt$"), s("c.txt", "c.txt"));
        assert_eq!(lits(r"^\/a{2}bc$"), s("bc", "bc"));
        assert_eq!(lits(r"^\/x\$$"), s("/x$", "/x$"));
        // Unsure escapes and top-level alternations claim nothing.
        assert_eq!(lits(r"^\/\u0041bc$"), s("", ""));
        assert_eq!(lits(r"^(a)\1xyz$"), s("", ""));
        assert_eq!(lits(r"^abc|^def$"), s("", ""));
        // Every JavaScript match contains the literals (case-insensitively).
        for p in PATTERNS {
            let r = required_literals(p);
            let js = regress::Regex::with_flags(p, "i").expect("js regex");
            for input in INPUTS {
                if js.find(input).is_some() {
                    let t = input.as_bytes();
                    assert!(
                        contains_literal(input, &r.required, true),
                        "{p}: {input:?} lacks {:?}",
                        r.required
                    );
                    assert!(
                        t.len() >= r.suffix.len()
                            && t[t.len() - r.suffix.len()..]
                                .eq_ignore_ascii_case(r.suffix.as_bytes()),
                        "{p}: {input:?} does not end with {:?}",
                        r.suffix
                    );
                }
            }
        }
        assert!(contains_literal("/x/BLOG/y", "/blog/", true));
        assert!(!contains_literal("/x/BLOG/y", "/blog/", false));
        assert!(!contains_literal("/bl", "/blog/", true));
        assert!(contains_literal("/é/a_b", "a_b", false));
        assert!(!contains_literal("/é/a_", "a_b", false));
        assert!(contains_literal("xxABC", "abc", true));
        assert!(!contains_literal("xxAB", "abc", true));
        assert!(contains_literal("/a/b/c", "/c", false));
        // Letter anchors, both cases, ASCII neighbours of letters (`@`, `` ` ``) and all-`/`.
        assert!(contains_literal("/_next/SSR", "/ssr", true));
        assert!(!contains_literal("/_next/SSR", "/ssr", false));
        assert!(contains_literal("/_next/ssr", "/ssr", false));
        assert!(!contains_literal("/_next/ss@", "/ssr", true));
        assert!(!contains_literal("/x/ss`", "/ssR", true));
        assert!(!contains_literal("/x/sr", "/ssr", true));
        assert!(contains_literal("a//b", "//", false));
        assert!(!contains_literal("a/b/", "//", true));
    }

    #[test]
    fn unsure_constructs_get_no_prefilter() {
        for p in [r"^(a)\1$", r"^[^]$", r"(?=a)*", r"^[\s]$", r"\b+"] {
            assert!(!Prefilter::new(p, false).is_active(), "{p}");
        }
    }

    #[test]
    fn escapes_and_boundaries_get_a_superset_prefilter() {
        for (p, yes, no) in [
            (r"^\s+$", " \u{a0}\u{2028}", "a"),
            (r"\bword\B", "a word1", "wor"),
            (r"^\u0041(?=b)$", "A", "B"),
            (r"^(?<n>x)(?<!y)\x41$", "xA", "xB"),
        ] {
            let pre = Prefilter::new(p, false);
            assert!(pre.is_active(), "{p}");
            assert!(pre.may_match(yes), "{p} rejects {yes:?}");
            assert!(!pre.may_match(no), "{p} accepts {no:?}");
        }
    }
}
