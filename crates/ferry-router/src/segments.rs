//! An exact matcher for the shape of Next's dynamic-route regexes (`getNamedRouteRegex`):
//! `^`, literal path text, `[^/]+?` / `[^/]{1,}` params, `[/]?` / `(?:/)?`, the RSC suffix group
//! `(\.rsc|\.segments/.+\.segment\.rsc|)` and `$`, e.g.
//! `^[/]?/blog/(?<nxtPslug>[^/]+?)(\.rsc|\.segments/.+\.segment\.rsc|)(?:/)?$`.
//!
//! A general capture search (the `regex` crate's backtracker) spends ~1.3k instructions on
//! `/blog/x`; this walks the pattern's few choice points in JavaScript's backtracking order
//! (greedy `?` present first, lazy `+?` shortest first, alternatives left to right) and gives
//! the same match and groups for an ASCII text (any other text is left to the general
//! engines). A pattern of any other shape is not compiled here. The cost stays linear: a param
//! followed by a `/` literal can only end at the next `/`, only the last param may be open, and
//! the suffix group's `.+` is tried at the few ends where `.segment.rsc` fits.

use std::ops::Range;
use std::sync::Arc;

use crate::matcher::RegexMatch;

/// A pattern element.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// Literal bytes (compared ASCII-case-insensitively when the regex has the `i` flag).
    Lit(Box<[u8]>),
    /// `[/]?` / `(?:/)?` / `(?:\/)?`: a greedy optional `/`.
    OptSlash,
    /// `([^/]+?)` (lazy) or `([^/]{1,})` (greedy), capturing into `group`.
    Param { group: usize, lazy: bool },
    /// `(\.rsc|\.segments/.+\.segment\.rsc|)`, capturing into `group`.
    RscSuffix { group: usize },
}

/// A compiled dynamic-route regex of the supported shape (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct SegmentRegex {
    toks: Vec<Tok>,
    /// Capturing groups, group 0 included.
    groups: usize,
    /// Named groups in pattern order: (group index, name).
    names: Arc<[(usize, Arc<str>)]>,
    case_insensitive: bool,
}

const RSC_SUFFIX: &str = r"(\.rsc|\.segments/.+\.segment\.rsc|)";

/// A literal byte the source may spell without an escape (no regex syntax, ASCII).
fn plain_literal(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"/_-~%@,;=:!&'\"<>#`".contains(&b)
}

impl SegmentRegex {
    /// Compiles `source` when it has the supported shape; `None` otherwise (the general
    /// engines then run it).
    pub(crate) fn new(source: &str, case_insensitive: bool) -> Option<Self> {
        let mut s = source.strip_prefix('^')?.strip_suffix('$')?;
        if s.ends_with('\\') {
            return None; // the `$` was escaped
        }
        let mut toks: Vec<Tok> = Vec::new();
        let mut lit: Vec<u8> = Vec::new();
        let mut groups = 1;
        let mut names: Vec<(usize, Arc<str>)> = Vec::new();
        let flush = |lit: &mut Vec<u8>, toks: &mut Vec<Tok>| {
            if !lit.is_empty() {
                toks.push(Tok::Lit(std::mem::take(lit).into_boxed_slice()));
            }
        };
        while !s.is_empty() {
            if let Some(rest) = ["[/]?", "(?:/)?", r"(?:\/)?"]
                .iter()
                .find_map(|p| s.strip_prefix(p))
            {
                flush(&mut lit, &mut toks);
                toks.push(Tok::OptSlash);
                s = rest;
            } else if let Some(rest) = s.strip_prefix(RSC_SUFFIX) {
                flush(&mut lit, &mut toks);
                toks.push(Tok::RscSuffix { group: groups });
                groups += 1;
                s = rest;
            } else if let Some(after) = s.strip_prefix('(') {
                // A param group: `(` [`?<name>`] `[^/]` (`+?` | `{1,}`) `)`.
                let (name, body) = match after.strip_prefix("?<") {
                    Some(n) => {
                        let end = n.find('>')?;
                        let name = &n[..end];
                        let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'$';
                        if name.is_empty()
                            || name.as_bytes()[0].is_ascii_digit()
                            || !name.bytes().all(ident)
                            || names.iter().any(|(_, k)| &**k == name)
                        {
                            return None;
                        }
                        (Some(name), &n[end + 1..])
                    }
                    None => (None, after),
                };
                let body = body
                    .strip_prefix("[^/]")
                    .or_else(|| body.strip_prefix(r"[^\/]"))?;
                let (lazy, rest) = if let Some(r) = body.strip_prefix("+?)") {
                    (true, r)
                } else if let Some(r) = body.strip_prefix("{1,})") {
                    (false, r)
                } else {
                    return None;
                };
                flush(&mut lit, &mut toks);
                if let Some(name) = name {
                    names.push((groups, Arc::from(name)));
                }
                toks.push(Tok::Param {
                    group: groups,
                    lazy,
                });
                groups += 1;
                s = rest;
            } else {
                let b = s.as_bytes()[0];
                if b == b'\\' {
                    // An identity escape of ASCII punctuation (`\/`, `\.`, `\-`).
                    let c = *s.as_bytes().get(1)?;
                    if !c.is_ascii_graphic() || c.is_ascii_alphanumeric() {
                        return None;
                    }
                    lit.push(c);
                    s = &s[2..];
                } else if plain_literal(b) {
                    lit.push(b);
                    s = &s[1..];
                } else {
                    return None;
                }
            }
        }
        flush(&mut lit, &mut toks);
        // Linear cost: a param followed by a `/` literal ends at the next `/`; any other param
        // must be the last (nothing after it may choose again but `[/]?` and the suffix).
        let n_params = toks
            .iter()
            .filter(|t| matches!(t, Tok::Param { .. }))
            .count();
        let mut seen = 0;
        for (i, t) in toks.iter().enumerate() {
            if let Tok::Param { lazy, .. } = t {
                seen += 1;
                let forced = matches!(toks.get(i + 1), Some(Tok::Lit(l)) if l[0] == b'/');
                if !forced && (seen < n_params || !lazy) {
                    return None;
                }
            }
        }
        let opt = toks.iter().filter(|t| **t == Tok::OptSlash).count();
        let suffixes = toks
            .iter()
            .filter(|t| matches!(t, Tok::RscSuffix { .. }))
            .count();
        if opt > 3 || suffixes > 1 {
            return None;
        }
        Some(Self {
            toks,
            groups,
            names: names.into(),
            case_insensitive,
        })
    }

    /// The capturing groups, group 0 included.
    pub(crate) fn group_count(&self) -> usize {
        self.groups
    }

    /// The named groups: (group index, name), in pattern order.
    pub(crate) fn names(&self) -> &[(usize, Arc<str>)] {
        &self.names
    }

    /// Matches `text` (`String.prototype.match`); `Ok(None)` on no match, `Err(())` for a
    /// non-ASCII text (not decided here).
    pub(crate) fn captures<'t>(&self, text: &'t str) -> Result<Option<RegexMatch<'t>>, ()> {
        if !text.is_ascii() {
            return Err(());
        }
        // Few groups: the walk's slots live on the stack (a text that does not match allocates
        // nothing).
        let mut stack: [Option<Range<usize>>; 8] = Default::default();
        let mut heap;
        let caps = if self.groups <= stack.len() {
            &mut stack[..self.groups]
        } else {
            heap = vec![None; self.groups];
            &mut heap[..]
        };
        if !self.walk(&self.toks, text.as_bytes(), 0, caps) {
            return Ok(None);
        }
        caps[0] = Some(0..text.len());
        Ok(Some(RegexMatch::with_names(
            text,
            caps.iter().cloned(),
            &self.names,
        )))
    }

    /// Whether `lit` is at `t[at..]`.
    fn lit_at(&self, t: &[u8], at: usize, lit: &[u8]) -> bool {
        t.get(at..at + lit.len()).is_some_and(|w| {
            if self.case_insensitive {
                w.eq_ignore_ascii_case(lit)
            } else {
                w == lit
            }
        })
    }

    /// Backtracking walk of `toks` from `t[pos..]` in JavaScript's order; `caps` holds the
    /// groups of the first full match.
    fn walk(&self, toks: &[Tok], t: &[u8], pos: usize, caps: &mut [Option<Range<usize>>]) -> bool {
        let Some((tok, rest)) = toks.split_first() else {
            return pos == t.len();
        };
        match tok {
            Tok::Lit(l) => self.lit_at(t, pos, l) && self.walk(rest, t, pos + l.len(), caps),
            Tok::OptSlash => {
                (t.get(pos) == Some(&b'/') && self.walk(rest, t, pos + 1, caps))
                    || self.walk(rest, t, pos, caps)
            }
            Tok::Param { group, lazy } => {
                let seg_end = t[pos..]
                    .iter()
                    .position(|&b| b == b'/')
                    .map_or(t.len(), |n| pos + n);
                if seg_end == pos {
                    return false;
                }
                let forced = matches!(rest.first(), Some(Tok::Lit(l)) if l[0] == b'/');
                let try_end = |end: usize, caps: &mut [Option<Range<usize>>]| {
                    caps[*group] = Some(pos..end);
                    self.walk(rest, t, end, caps)
                };
                let found = if forced {
                    try_end(seg_end, caps)
                } else if *lazy {
                    (pos + 1..=seg_end).any(|end| try_end(end, caps))
                } else {
                    (pos + 1..=seg_end).rev().any(|end| try_end(end, caps))
                };
                if !found {
                    caps[*group] = None;
                }
                found
            }
            Tok::RscSuffix { group } => {
                let g = *group;
                // `\.rsc`
                if self.lit_at(t, pos, b".rsc") {
                    caps[g] = Some(pos..pos + 4);
                    if self.walk(rest, t, pos + 4, caps) {
                        return true;
                    }
                }
                // `\.segments/.+\.segment\.rsc`: `.+` greedy, no line terminators.
                if self.lit_at(t, pos, b".segments/") {
                    let from = pos + 10;
                    let max_end = t[from..]
                        .iter()
                        .position(|&b| b == b'\n' || b == b'\r')
                        .map_or(t.len(), |n| from + n);
                    for end in (from + 1..=max_end).rev() {
                        if self.lit_at(t, end, b".segment.rsc") {
                            caps[g] = Some(pos..end + 12);
                            if self.walk(rest, t, end + 12, caps) {
                                return true;
                            }
                        }
                    }
                }
                // The empty alternative.
                caps[g] = Some(pos..pos);
                if self.walk(rest, t, pos, caps) {
                    return true;
                }
                caps[g] = None;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATTERNS: &[&str] = &[
        r"^/_next/data/QieQYEuOxgI6b6eZkxrtM[/]?/legacy/ssr\.json(?:/)?$",
        r"^[/]?/blog/(?<nxtPslug>[^/]+?)(\.rsc|\.segments/.+\.segment\.rsc|)(?:/)?$",
        r"^/_next/data/BUILD1/blog/(?<nxtPslug>[^/]+?)\.json$",
        r"^/posts/(?<nxtPid>[^/]+?)(?:/)?$",
        r"^/t/(?<nxtPtenant>[^/]+?)/home(?:/)?$",
        r"^/base/_next/data/B2/(?<nextLocale>[^/]{1,})/item/(?<nxtPid>[^/]+?)\.json$",
        r"^/docs[/]?(?<nextLocale>[^/]{1,})/blog/(?<nxtPslug>[^/]+?)(?:/)?$",
        r"^/docs/_next/data/ymHm0shXg12zlmwPfZQj0[/]?(?<nextLocale>[^/]{1,})/blog/(?<nxtPslug>[^/]+?)\.json(?:/)?$",
        r"^[/]?/(?<nxtPa>[^/]+?)/(?<nxtPb>[^/]+?)(\.rsc|\.segments/.+\.segment\.rsc|)(?:/)?$",
        r"^[/]?/x\-y/([^/]+?)(\.rsc|\.segments/.+\.segment\.rsc|)(?:\/)?$",
        r"^/a/(?<p>[^/]+?)$",
    ];

    const NOT_SUPPORTED: &[&str] = &[
        r"^/shop/(?<nxtPparts>.+?)(?:/)?$",
        r"^/opt(?:/(?<nxtPrest>.+?))?(?:/)?$",
        r"^\/old-blog(?:\/([^\/]+?))(?:\/)?$",
        r"^/docs/_next/data/ymHm0shXg12zlmwPfZQj0/(?<nextLocale>[^/]{1,}).json",
        r"^/a/(?<p>[^/]{1,})x$",
        r"^/a/(?<p>[^/]+?)(?<q>[^/]+?)$",
        r"^/a|b$",
    ];

    /// Texts built from pieces that exercise every choice point.
    fn texts() -> Vec<String> {
        let pieces = [
            "",
            "blog",
            "BLOG",
            "x",
            "x.rsc",
            "x.RSC",
            "hello",
            "a.segments",
            "b.segment.rsc",
            ".segments",
            ".segment.rsc",
            "x.segments",
            "c.segment.rsc.segment.rsc",
            "ssr.json",
            "legacy",
            "_next",
            "data",
            "QieQYEuOxgI6b6eZkxrtM",
            "en",
            "docs",
            "docsen",
            "item",
            "base",
            "B2",
            "t",
            "home",
            "posts",
            "a",
            "x-y",
            "q\nz",
            "BUILD1",
            "x.json",
            ".rsc",
            "ymHm0shXg12zlmwPfZQj0",
            "%2F",
            "é",
        ];
        let mut out = vec![String::new(), "/".into(), "//".into()];
        // A deterministic walk over joins of up to 6 pieces.
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..60_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let n = (seed % 7) as usize;
            let mut s = String::new();
            let mut r = seed;
            if r.is_multiple_of(5) {
                s.push('/');
            }
            for _ in 0..n {
                r = r.rotate_left(9) ^ 0x5851_F42D_4C95_7F2D;
                s.push('/');
                s.push_str(pieces[(r % pieces.len() as u64) as usize]);
            }
            if r.is_multiple_of(3) {
                s.push('/');
            }
            out.push(s);
        }
        // Whole paths each pattern matches, as they are, upper-cased, with a piece inserted
        // before or after the end, or with the end doubled.
        let seeds = [
            "/_next/data/QieQYEuOxgI6b6eZkxrtM/legacy/ssr.json",
            "/_next/data/QieQYEuOxgI6b6eZkxrtM//legacy/ssr.json/",
            "/blog/x",
            "//blog/x.rsc/",
            "/blog/x.segments/a/b.segment.rsc",
            "/blog/x.segments/a.segment.rsc/b.segment.rsc/",
            "/blog/x.segments/.segment.rsc",
            "/blog/x.segments/a\n.segment.rsc",
            "/_next/data/BUILD1/blog/x.json",
            "/posts/1",
            "/t/a/home/",
            "/base/_next/data/B2/en/item/1.json",
            "/docs/en/blog/x",
            "/docsen/blog/x/",
            "/docs/_next/data/ymHm0shXg12zlmwPfZQj0/en/blog/x.json",
            "/docs/_next/data/ymHm0shXg12zlmwPfZQj0en/blog/x.json/",
            "/a/b",
            "/a/b.rsc",
            "/a/b/c.segments/d.segment.rsc",
            "/x-y/z",
            "/x-y/z.RSC",
        ];
        for (i, seed) in seeds.iter().enumerate() {
            out.push(seed.to_string());
            out.push(seed.to_ascii_uppercase());
            out.push(format!("{seed}{seed}"));
            for (j, p) in pieces.iter().enumerate() {
                out.push(format!("{seed}{p}"));
                out.push(format!("{seed}/{p}"));
                if (i + j) % 3 == 0 {
                    let cut = seed.len() * j / pieces.len();
                    if seed.is_char_boundary(cut) {
                        out.push(format!("{}{p}{}", &seed[..cut], &seed[cut..]));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn agrees_with_regress_on_every_supported_pattern() {
        let texts = texts();
        for &p in PATTERNS {
            for ci in [true, false] {
                let seg = SegmentRegex::new(p, ci).unwrap_or_else(|| panic!("{p} not compiled"));
                let re = regress::Regex::with_flags(p, if ci { "i" } else { "" }).expect(p);
                let mut matched = 0;
                for t in &texts {
                    let Ok(got) = seg.captures(t) else {
                        assert!(!t.is_ascii());
                        continue;
                    };
                    let want = re.find(t);
                    match (got, want) {
                        (None, None) => {}
                        (Some(got), Some(m)) => {
                            matched += 1;
                            let want_groups: Vec<_> =
                                m.groups().map(|r| r.map(|r| &t[r])).collect();
                            let got_groups: Vec<_> =
                                (0..got.group_count()).map(|i| got.group(i)).collect();
                            assert_eq!(got_groups, want_groups, "{p} (ci {ci}) on {t:?}");
                            let want_named: Vec<_> = m
                                .named_groups()
                                .map(|(n, r)| (n.to_string(), r.map(|r| &t[r])))
                                .collect();
                            let got_named: Vec<_> =
                                got.named().map(|(n, v)| (n.to_string(), v)).collect();
                            assert_eq!(got_named, want_named, "{p} (ci {ci}) on {t:?}");
                        }
                        (got, want) => panic!(
                            "{p} (ci {ci}) on {t:?}: segments {:?}, regress {:?}",
                            got.map(|g| g.group(0)),
                            want.map(|m| m.range())
                        ),
                    }
                }
                assert!(matched > 0, "{p}: no text matched (ci {ci})");
            }
        }
    }

    #[test]
    fn other_shapes_are_left_to_the_general_engines() {
        for &p in NOT_SUPPORTED {
            assert!(SegmentRegex::new(p, true).is_none(), "{p}");
        }
    }

    #[test]
    fn suffix_search_is_linear() {
        let seg = SegmentRegex::new(PATTERNS[1], true).expect("compiles");
        let long = format!("/blog/x.segments/{}", ".segment.rs".repeat(700));
        let start = std::time::Instant::now();
        assert!(matches!(seg.captures(&long), Ok(None)));
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
    }
}
