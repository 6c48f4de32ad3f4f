//! A linear-time prefilter for JavaScript regexes.
//!
//! `regress` gives exact JavaScript semantics but backtracks, and most route regexes do not match
//! most requests. Each route regex is also translated into a `regex` crate pattern whose language
//! is a SUPERSET of the JavaScript one: lookarounds are dropped (that only removes constraints),
//! case-insensitivity uses full Unicode simple case folding (a superset of JavaScript's
//! non-unicode canonicalization), `.`, `\d` and `\w` are spelled out exactly. So "the prefilter
//! does not match" is exact and skips regress; "it matches" still runs regress for the real
//! answer and the captures. Anything the translator is not sure about (backreferences, `\s`,
//! `\b`, unicode escapes, `[^]`, ...) gets no prefilter and always runs regress.
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

/// Whether the pattern has a `|` outside every group (then `^` anchors one branch only).
fn has_top_level_alternation(chars: &[char]) -> bool {
    let mut depth = 0usize;
    let mut in_class = false;
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 1,
            '[' if !in_class => in_class = true,
            ']' if in_class => in_class = false,
            '(' if !in_class => depth += 1,
            ')' if !in_class => depth = depth.saturating_sub(1),
            '|' if !in_class && depth == 0 => return true,
            _ => {}
        }
        i += 1;
    }
    false
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

/// Translates a JavaScript (non-unicode-mode) regex into a superset `regex` pattern, or `None`.
fn translate(src: &str) -> Option<String> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len() + 16);
    let mut i = 0;
    // Whether the previous token can take a quantifier (a dropped lookaround cannot).
    let mut quantifiable = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' => {
                let next = *chars.get(i + 1)?;
                out.push_str(&escape_outside_class(next)?);
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
                if chars.get(i + 1) == Some(&'?') {
                    match (chars.get(i + 2), chars.get(i + 3)) {
                        (Some(':'), _) => {
                            out.push_str("(?:");
                            i += 3;
                        }
                        (Some('='), _) | (Some('!'), _) => {
                            i = skip_group(&chars, i)?;
                            quantifiable = false;
                            continue;
                        }
                        (Some('<'), Some('=')) | (Some('<'), Some('!')) => {
                            i = skip_group(&chars, i)?;
                            quantifiable = false;
                            continue;
                        }
                        (Some('<'), _) => {
                            // Named group: the name does not matter for matching.
                            let close = chars[i..].iter().position(|&ch| ch == '>')? + i;
                            out.push_str("(?:");
                            i = close + 1;
                        }
                        _ => return None,
                    }
                } else {
                    out.push_str("(?:");
                    i += 1;
                }
                quantifiable = false;
            }
            ')' => {
                out.push(')');
                i += 1;
                quantifiable = true;
            }
            '.' => {
                out.push_str(DOT);
                i += 1;
                quantifiable = true;
            }
            '*' | '+' | '?' => {
                if !quantifiable {
                    return None;
                }
                out.push(c);
                i += 1;
                if chars.get(i) == Some(&'?') {
                    out.push('?');
                    i += 1;
                }
                quantifiable = false;
            }
            '{' => match braced_quantifier(&chars, i) {
                Some(end) if quantifiable => {
                    out.extend(&chars[i..end]);
                    i = end;
                    if chars.get(i) == Some(&'?') {
                        out.push('?');
                        i += 1;
                    }
                    quantifiable = false;
                }
                Some(_) => return None,
                None => {
                    // Annex B: a `{` that starts no quantifier is a literal.
                    out.push_str(r"\{");
                    i += 1;
                    quantifiable = true;
                }
            },
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
    Some(out)
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
fn skip_group(chars: &[char], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    let mut in_class = false;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 1,
            '[' if !in_class => in_class = true,
            ']' if in_class => in_class = false,
            '(' if !in_class => depth += 1,
            ')' if !in_class => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
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
    fn unsure_constructs_get_no_prefilter() {
        for p in [
            r"^(a)\1$",
            r"^\s+$",
            r"\bword",
            r"^[^]$",
            r"^\u0041$",
            r"(?=a)*",
        ] {
            assert!(!Prefilter::new(p, false).is_active(), "{p}");
        }
    }
}
