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

    /// Whether a prefilter was built (for tests).
    #[cfg(test)]
    pub(crate) fn is_active(&self) -> bool {
        self.0.is_some()
    }
}

/// JavaScript's `.` outside the `s` flag: anything but line terminators.
const DOT: &str = r"[^\n\r\x{2028}\x{2029}]";

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
fn escape_outside_class(c: char) -> Option<String> {
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
fn translate_class(chars: &[char], start: usize) -> Option<(String, usize)> {
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
fn braced_quantifier(chars: &[char], i: usize) -> Option<usize> {
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
