//! The routed URL: an `http(s)` WHATWG URL kept as its origin plus the parts routing changes
//! (path, query, fragment), so that setting a pathname or query the URL parser would leave as
//! it is costs a byte scan instead of a parse.
//!
//! Every value is exactly what `url::Url` (the WHATWG parser `@next/routing` gets through
//! Node's `URL`) holds after the same operations: an input with anything the parser could
//! change (percent-encoded characters, dot segments, backslashes, tabs and newlines, non-ASCII)
//! takes the `url` crate's own setter on a copy of the origin; the unit tests compare both
//! paths on such inputs.

use std::fmt;
use std::sync::{Arc, OnceLock};

/// A hierarchical `http` / `https` URL (see the module docs); same method names and results as
/// the `url::Url` methods routing uses.
#[derive(Clone)]
pub(crate) struct Url {
    /// `scheme://[userinfo@]host[:port]/`: path `/`, no query, no fragment.
    base: Arc<url::Url>,
    path: String,
    query: Option<String>,
    fragment: Option<String>,
    /// The serialization, built on first use (every setter clears it).
    serialized: OnceLock<String>,
}

impl fmt::Debug for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq for Url {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path
            && self.query == other.query
            && self.fragment == other.fragment
            && (Arc::ptr_eq(&self.base, &other.base) || self.base == other.base)
    }
}

impl Eq for Url {}

/// Whether the path setter of a special URL keeps byte `b` as it is: printable ASCII outside
/// the path percent-encode set (`"`, `#`, `<`, `>`, `?`, `` ` ``, `{`, `}`) and other than the
/// separator `\`.
const fn path_byte_kept(b: u8) -> bool {
    matches!(b, 0x21..=0x7E)
        && !matches!(
            b,
            b'"' | b'#' | b'<' | b'>' | b'?' | b'`' | b'{' | b'}' | b'\\'
        )
}

/// Whether the query setter of a special URL keeps byte `b` as it is: printable ASCII outside
/// the special-query percent-encode set (`"`, `#`, `<`, `>`, `'`).
const fn query_byte_kept(b: u8) -> bool {
    matches!(b, 0x21..=0x7E) && !matches!(b, b'"' | b'#' | b'<' | b'>' | b'\'')
}

/// Byte tables of the two predicates.
const PATH_KEPT: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = path_byte_kept(i as u8);
        i += 1;
    }
    t
};
const QUERY_KEPT: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = query_byte_kept(i as u8);
        i += 1;
    }
    t
};

/// Whether `url::Url::set_path(p)` on a special URL makes the path `p` itself: it starts with
/// `/`, every byte is kept, and no segment could be a dot segment (`.`, `..` or a
/// `%2e` spelling: any short segment starting with `.` or `%` is left to the parser).
fn path_kept(p: &str) -> bool {
    let b = p.as_bytes();
    if b.first() != Some(&b'/') || !b.iter().all(|&c| PATH_KEPT[usize::from(c)]) {
        return false;
    }
    // A `.` or `%` starting a segment (after a `/`; `b[0]` is one, so `i >= 1`): only when the
    // segment is longer than any dot-segment spelling.
    memchr::memchr2_iter(b'.', b'%', b).all(|i| {
        b[i - 1] != b'/'
            || b[i..]
                .iter()
                .position(|&c| c == b'/')
                .unwrap_or(b.len() - i)
                > 6
    })
}

/// Whether `url::Url::set_query(Some(q))` on a special URL makes the query `q` itself.
fn query_kept(q: &str) -> bool {
    q.bytes().all(|c| QUERY_KEPT[usize::from(c)])
}

impl Url {
    /// `url::Url::parse`, for `http` / `https` URLs only (the origins and absolute destinations
    /// routing parses); anything else is an error.
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        let u = url::Url::parse(s).map_err(|e| e.to_string())?;
        Self::from_url(u)
    }

    /// Splits a parsed `http` / `https` URL.
    pub(crate) fn from_url(u: url::Url) -> Result<Self, String> {
        if !matches!(u.scheme(), "http" | "https") || u.cannot_be_a_base() {
            return Err(format!("not an http(s) URL: {u}"));
        }
        let path = u.path().to_string();
        let query = u.query().map(str::to_string);
        let fragment = u.fragment().map(str::to_string);
        let mut base = u;
        base.set_path("/");
        base.set_query(None);
        base.set_fragment(None);
        Ok(Self {
            base: Arc::new(base),
            path,
            query,
            fragment,
            serialized: OnceLock::new(),
        })
    }

    /// Moves the URL out, leaving this one with an empty path and no query or fragment (no
    /// allocation: for a state done with its URL).
    pub(crate) fn take(&mut self) -> Self {
        let empty = Self {
            base: Arc::clone(&self.base),
            path: String::new(),
            query: None,
            fragment: None,
            serialized: OnceLock::new(),
        };
        std::mem::replace(self, empty)
    }

    /// The URL as `url::Url` (for `join`).
    pub(crate) fn to_url(&self) -> url::Url {
        url::Url::parse(self.as_str()).unwrap_or_else(|_| (*self.base).clone())
    }

    /// The path (`url.pathname`).
    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// The query without `?`, `None` when absent.
    pub(crate) fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// The fragment without `#`, `None` when absent.
    pub(crate) fn fragment(&self) -> Option<&str> {
        self.fragment.as_deref()
    }

    /// The host (`url.hostname`).
    pub(crate) fn host_str(&self) -> Option<&str> {
        self.base.host_str()
    }

    /// The origin.
    pub(crate) fn origin(&self) -> url::Origin {
        self.base.origin()
    }

    /// `url::Url::set_path`.
    pub(crate) fn set_path(&mut self, p: &str) {
        self.serialized = OnceLock::new();
        if !path_kept(p) {
            self.path = self.parsed_path(p);
        } else if self.path.capacity() >= p.len() {
            self.path.clear();
            self.path.push_str(p);
        } else {
            self.path = p.to_owned();
        }
    }

    /// This URL's origin with the path `p` set (`url::Url::set_path`), no query or fragment.
    pub(crate) fn with_path(&self, p: &str) -> Self {
        Self {
            base: Arc::clone(&self.base),
            path: if path_kept(p) {
                p.to_owned()
            } else {
                self.parsed_path(p)
            },
            query: None,
            fragment: None,
            serialized: OnceLock::new(),
        }
    }

    /// The path `url::Url::set_path(p)` makes, by the `url` crate itself.
    fn parsed_path(&self, p: &str) -> String {
        let mut u = (*self.base).clone();
        u.set_path(p);
        u.path().to_owned()
    }

    /// `url::Url::set_query`.
    pub(crate) fn set_query(&mut self, q: Option<&str>) {
        self.serialized = OnceLock::new();
        self.query = match q {
            None => None,
            Some(q) if query_kept(q) => Some(q.to_string()),
            Some(q) => {
                let mut u = (*self.base).clone();
                u.set_query(Some(q));
                u.query().map(str::to_string)
            }
        };
    }

    /// `url::Url::set_fragment`.
    pub(crate) fn set_fragment(&mut self, f: Option<&str>) {
        self.serialized = OnceLock::new();
        self.fragment = f.and_then(|f| {
            let mut u = (*self.base).clone();
            u.set_fragment(Some(f));
            u.fragment().map(str::to_string)
        });
    }

    /// `url::Url::query_pairs`.
    pub(crate) fn query_pairs(&self) -> url::form_urlencoded::Parse<'_> {
        url::form_urlencoded::parse(self.query().unwrap_or_default().as_bytes())
    }

    /// `url::Url::join`.
    pub(crate) fn join(&self, input: &str) -> Result<url::Url, url::ParseError> {
        self.to_url().join(input)
    }

    /// The serialization (`url.href`).
    pub(crate) fn as_str(&self) -> &str {
        self.serialized.get_or_init(|| {
            let origin = self.base.as_str();
            let origin = origin.strip_suffix('/').unwrap_or(origin);
            let mut s = String::with_capacity(
                origin.len()
                    + self.path.len()
                    + self.query.as_ref().map_or(0, |q| q.len() + 1)
                    + self.fragment.as_ref().map_or(0, |f| f.len() + 1),
            );
            s.push_str(origin);
            s.push_str(&self.path);
            if let Some(q) = &self.query {
                s.push('?');
                s.push_str(q);
            }
            if let Some(f) = &self.fragment {
                s.push('#');
                s.push_str(f);
            }
            s
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both ways of setting each input agree with `url::Url`'s setters, serialization included.
    #[test]
    fn setters_match_the_url_crate() {
        let paths = [
            "/",
            "",
            "a",
            "/a/b",
            "/_next/static/chunks/0cz1d0mv5g_q7.js",
            "/a/./b",
            "/a/../b",
            "/a/%2e/b",
            "/a/%2E%2e/b",
            "/a/.%2e",
            "/a/..",
            "/.well-known/x",
            "/.",
            "/%",
            "/%zz",
            "/a%20b",
            "/a b",
            "/a\tb",
            "/a\nb",
            "\\a\\b",
            "/a\\b",
            "/é",
            "/a?b",
            "/a#b",
            "/a{b}",
            "/a`b",
            "/a\"b<c>",
            "/a^b|c[d]",
            "//x//y",
            "/a/...",
            "/a/.../b",
            "/~!$&'()*+,;=:@",
            "/\u{7f}",
        ];
        let queries = [
            "", "a=1", "a=1&b=2", "a b", "a'b", "a\"b", "a#b", "a<b>", "é=1", "a\tb", "%zz",
            "a=%20", "?x", "a=1+2",
        ];
        for origin in ["http://localhost:3000/", "https://u:p@Example.COM/"] {
            let real = url::Url::parse(origin).expect("origin");
            let mine = Url::parse(origin).expect("origin");
            assert_eq!(mine.as_str(), real.as_str());
            for p in paths {
                for q in queries.iter().map(Some).chain([None]) {
                    let mut r = real.clone();
                    r.set_path(p);
                    r.set_query(q.copied());
                    let mut m = mine.clone();
                    m.set_path(p);
                    m.set_query(q.copied());
                    let mut w = mine.with_path(p);
                    w.set_query(q.copied());
                    assert_eq!(w, m);
                    assert_eq!(m.path(), r.path(), "{p:?}");
                    assert_eq!(m.query(), r.query(), "{q:?}");
                    assert_eq!(m.as_str(), r.as_str(), "{p:?} {q:?}");
                    assert_eq!(m.to_url(), r);
                    let pairs: Vec<_> = m.query_pairs().collect();
                    let real_pairs: Vec<_> = r.query_pairs().collect();
                    assert_eq!(pairs, real_pairs);
                }
            }
        }
    }

    #[test]
    fn fragment_join_and_origin_follow_the_url_crate() {
        let real = url::Url::parse("http://h:1/a/b?x=1#f g").expect("url");
        let mine = Url::parse(real.as_str()).expect("url");
        assert_eq!(mine.fragment(), real.fragment());
        assert_eq!(mine.as_str(), real.as_str());
        assert_eq!(mine.origin(), real.origin());
        assert_eq!(mine.host_str(), Some("h"));
        assert_eq!(
            mine.join("../c?y").expect("join"),
            real.join("../c?y").expect("join")
        );
        let mut m = mine.clone();
        m.set_fragment(Some("a b"));
        let mut r = real.clone();
        r.set_fragment(Some("a b"));
        assert_eq!(m.as_str(), r.as_str());
        m.set_fragment(None);
        r.set_fragment(None);
        assert_eq!(m.as_str(), r.as_str());
        assert!(Url::parse("mailto:x@y").is_err());
    }

    /// A setter clears the cached serialization.
    #[test]
    fn serialization_follows_changes() {
        let mut m = Url::parse("http://h/a").expect("url");
        assert_eq!(m.as_str(), "http://h/a");
        m.set_path("/b");
        assert_eq!(m.as_str(), "http://h/b");
        m.set_query(Some("q"));
        assert_eq!(m.as_str(), "http://h/b?q");
        assert_eq!(m, Url::parse("http://h/b?q").expect("url"));
        let taken = m.take();
        assert_eq!(taken.as_str(), "http://h/b?q");
        assert_eq!(m.as_str(), "http://h");
    }
}
