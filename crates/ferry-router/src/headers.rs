//! A header list with the semantics of the WHATWG `Headers` class, which `@next/routing` uses
//! for request headers and the resolved (response) headers.

use std::borrow::Cow;
use std::sync::Arc;

/// Header pairs shared between the request and the routing result (names lowercase, one entry
/// per value): routing that leaves the request headers alone hands the caller's list back
/// without copying it.
pub type SharedHeaders = Arc<Vec<(String, String)>>;

/// An ordered list of headers behaving like JavaScript's `Headers`: names are lowercased, values
/// trimmed of HTTP whitespace, `get` joins repeated values with `", "`, `set` replaces.
#[derive(Debug, Clone)]
pub struct HeaderList {
    entries: Entries,
}

/// The list's pairs: its own, or (until the first change) a caller's already normalized ones.
#[derive(Debug, Clone)]
enum Entries {
    Owned(Vec<(String, String)>),
    Shared(SharedHeaders),
}

impl Default for HeaderList {
    fn default() -> Self {
        Self {
            entries: Entries::Owned(Vec::new()),
        }
    }
}

impl PartialEq for HeaderList {
    fn eq(&self, other: &Self) -> bool {
        self.raw() == other.raw()
    }
}

impl Eq for HeaderList {}

/// Whether `b` has a byte `A`..=`Z`: eight bytes at a time (header names are checked on every
/// request).
fn has_ascii_uppercase(b: &[u8]) -> bool {
    const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let x = <[u8; 8]>::try_from(c).map_or(0, u64::from_ne_bytes);
        // Per byte, without carries between bytes (the high bit is masked off first): the
        // high bit of `y + (0x80 - b'A')` is set from `A` up, that of `y + (0x80 - b'Z' - 1)`
        // from past `Z`; bytes with the high bit set are not ASCII.
        let y = x & LOW7;
        let ge_a = y.wrapping_add(0x3F3F_3F3F_3F3F_3F3F);
        let gt_z = y.wrapping_add(0x2525_2525_2525_2525);
        if ge_a & !gt_z & !x & HIGH != 0 {
            return true;
        }
    }
    chunks.remainder().iter().any(u8::is_ascii_uppercase)
}

fn trim_http_ws(v: &str) -> &str {
    // Byte scans (the four are ASCII, so the ends stay char boundaries): `trim_matches` with a
    // char predicate decodes every char.
    let ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let b = v.as_bytes();
    let start = b.iter().position(|c| !ws(c)).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !ws(c)).map_or(start, |e| e + 1);
    &v[start..end]
}

/// Whether `Headers.set(name, value)` accepts the pair (undici throws a `TypeError`
/// otherwise): the name is an HTTP token, the value a ByteString (no char above U+00FF) without
/// NUL, CR or LF once trimmed.
pub(crate) fn valid_header(name: &str, value: &str) -> bool {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    !name.is_empty()
        && name.bytes().all(token)
        && trim_http_ws(value)
            .chars()
            .all(|c| (c as u32) <= 0xFF && !matches!(c, '\0' | '\r' | '\n'))
}

impl HeaderList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a list from `(name, value)` pairs, appending each (like `new Headers(pairs)`).
    pub fn from_pairs<'a, I: IntoIterator<Item = (&'a str, &'a str)>>(pairs: I) -> Self {
        let pairs = pairs.into_iter();
        let mut h = Self {
            entries: Entries::Owned(Vec::with_capacity(pairs.size_hint().0)),
        };
        for (k, v) in pairs {
            h.append(k, v);
        }
        h
    }

    /// [`HeaderList::from_pairs`] over a shared list: no copy when it is already what
    /// `from_pairs` would make of it (lowercase names, trimmed values), the usual request.
    pub fn from_shared(pairs: &SharedHeaders) -> Self {
        let normalized = pairs
            .iter()
            .all(|(k, v)| !has_ascii_uppercase(k.as_bytes()) && trim_http_ws(v).len() == v.len());
        if normalized {
            Self {
                entries: Entries::Shared(Arc::clone(pairs)),
            }
        } else {
            Self::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        }
    }

    /// The pairs to change (copied first if they are shared).
    fn entries_mut(&mut self) -> &mut Vec<(String, String)> {
        match &mut self.entries {
            Entries::Owned(v) => v,
            Entries::Shared(s) => Arc::make_mut(s),
        }
    }

    /// Appends a value (`Headers.append`).
    pub fn append(&mut self, name: &str, value: &str) {
        self.entries_mut()
            .push((name.to_ascii_lowercase(), trim_http_ws(value).to_string()));
    }

    /// Replaces every value of `name` with `value` (`Headers.set`), keeping the first position.
    pub fn set(&mut self, name: &str, value: &str) {
        let value = trim_http_ws(value);
        let entries = self.entries_mut();
        match entries
            .iter()
            .position(|(k, _)| k.eq_ignore_ascii_case(name))
        {
            Some(i) => {
                let slot = &mut entries[i].1;
                slot.clear();
                slot.push_str(value);
                if entries[i + 1..]
                    .iter()
                    .any(|(k, _)| k.eq_ignore_ascii_case(name))
                {
                    let mut idx = 0;
                    entries.retain(|(k, _)| {
                        let keep = idx <= i || !k.eq_ignore_ascii_case(name);
                        idx += 1;
                        keep
                    });
                }
            }
            None => entries.push((name.to_ascii_lowercase(), value.to_string())),
        }
    }

    /// Removes every value of `name` (`Headers.delete`).
    pub fn delete(&mut self, name: &str) {
        let name = name.to_ascii_lowercase();
        if self.raw().iter().any(|(k, _)| *k == name) {
            self.entries_mut().retain(|(k, _)| *k != name);
        }
    }

    /// Whether `name` is present (`Headers.has`).
    pub fn has(&self, name: &str) -> bool {
        self.raw().iter().any(|(k, _)| k.eq_ignore_ascii_case(name))
    }

    /// The combined value of `name` (`Headers.get`): repeated values joined with `", "`, except
    /// `cookie` whose values undici (Node's `Headers`) joins with `"; "`, as Node's HTTP parser
    /// does for `req.headers.cookie`.
    pub fn get(&self, name: &str) -> Option<String> {
        self.get_str(name).map(Cow::into_owned)
    }

    /// [`HeaderList::get`], borrowing the value when `name` has only one.
    pub(crate) fn get_str(&self, name: &str) -> Option<Cow<'_, str>> {
        let mut found = self
            .raw()
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name));
        let (_, first) = found.next()?;
        let Some((_, second)) = found.next() else {
            return Some(Cow::Borrowed(first));
        };
        let sep = if name.eq_ignore_ascii_case("cookie") {
            "; "
        } else {
            ", "
        };
        let mut out = format!("{first}{sep}{second}");
        for (_, v) in found {
            out.push_str(sep);
            out.push_str(v);
        }
        Some(Cow::Owned(out))
    }

    /// The raw entries in insertion order (names lowercased, one entry per appended value).
    pub fn raw(&self) -> &[(String, String)] {
        match &self.entries {
            Entries::Owned(v) => v,
            Entries::Shared(s) => s,
        }
    }

    /// The raw entries, consuming the list.
    pub fn into_raw(self) -> Vec<(String, String)> {
        match self.entries {
            Entries::Owned(v) => v,
            Entries::Shared(s) => Arc::unwrap_or_clone(s),
        }
    }

    /// The raw entries as a shared list, consuming the list (no copy when they are still the
    /// caller's).
    pub fn into_shared(self) -> SharedHeaders {
        match self.entries {
            Entries::Owned(v) => Arc::new(v),
            Entries::Shared(s) => s,
        }
    }

    /// The raw entries as a shared list (no copy when they are still the caller's).
    pub fn to_shared(&self) -> SharedHeaders {
        match &self.entries {
            Entries::Owned(v) => Arc::new(v.clone()),
            Entries::Shared(s) => Arc::clone(s),
        }
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.raw().is_empty()
    }

    /// Iteration as `Headers.forEach` does it: names sorted, values of a name combined with
    /// `", "`, except `set-cookie` whose values come one by one.
    pub fn sorted_combined(&self) -> Vec<(String, String)> {
        if self.names_unique() {
            let mut out = self.raw().to_vec();
            out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            return out;
        }
        self.combined_slow()
    }

    /// [`HeaderList::sorted_combined`], consuming the list (no copies when every name is
    /// unique, the usual case).
    pub fn into_sorted_combined(self) -> Vec<(String, String)> {
        if self.names_unique() {
            let mut entries = self.into_raw();
            entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            return entries;
        }
        self.combined_slow()
    }

    /// Whether no name appears twice (then sorting the entries is the whole iteration).
    fn names_unique(&self) -> bool {
        let e = self.raw();
        (1..e.len()).all(|i| e[..i].iter().all(|(k, _)| *k != e[i].0))
    }

    fn combined_slow(&self) -> Vec<(String, String)> {
        let mut names: Vec<&str> = self.raw().iter().map(|(k, _)| k.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            if n == "set-cookie" {
                for (k, v) in self.raw() {
                    if k == n {
                        out.push((k.clone(), v.clone()));
                    }
                }
            } else if let Some(v) = self.get(n) {
                out.push((n.to_string(), v));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uppercase_scan_matches_the_byte_test() {
        for len in 0..20usize {
            for b in 0..=255u8 {
                for at in [0, len / 2, len.saturating_sub(1)] {
                    let mut v = vec![b'x'; len];
                    if len > 0 {
                        v[at] = b;
                    }
                    // Neighbours that could carry into the byte under test.
                    if at + 1 < len {
                        v[at + 1] = 0xFF;
                    }
                    assert_eq!(
                        has_ascii_uppercase(&v),
                        v.iter().any(u8::is_ascii_uppercase),
                        "{v:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn behaves_like_js_headers() {
        let mut h = HeaderList::from_pairs([("A", " 1 "), ("b", "2"), ("a", "3")]);
        assert_eq!(h.get("a").as_deref(), Some("1, 3"));
        h.set("A", "x");
        assert_eq!(
            h.raw(),
            &[("a".into(), "x".into()), ("b".into(), "2".into())]
        );
        h.append("set-cookie", "s=1");
        h.append("set-cookie", "t=2");
        assert_eq!(h.sorted_combined().len(), 4);
        h.delete("B");
        assert!(!h.has("b"));
    }

    #[test]
    fn repeated_cookie_headers_join_with_semicolon() {
        let h =
            HeaderList::from_pairs([("cookie", "a=1"), ("Cookie", "b=2"), ("x", "1"), ("x", "2")]);
        assert_eq!(h.get("cookie").as_deref(), Some("a=1; b=2"));
        assert_eq!(h.get("x").as_deref(), Some("1, 2"));
    }

    #[test]
    fn trims_http_whitespace_only() {
        for v in [
            "",
            " ",
            " \t\r\n ",
            "a",
            " a ",
            "\ta b\n",
            "\u{a0}a\u{a0}",
            " é ",
            "\x0bx\x0b",
        ] {
            let expect = v.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r'));
            assert_eq!(trim_http_ws(v), expect, "{v:?}");
        }
    }

    #[test]
    fn header_validity_follows_undici() {
        assert!(valid_header("x-a", "v é"));
        assert!(!valid_header("x-a/b", "v"));
        assert!(!valid_header("", "v"));
        assert!(!valid_header("x", "a\u{2713}"));
        assert!(!valid_header("x", "a\0b"));
        assert!(!valid_header("x", "a\nb"));
        assert!(valid_header("x", " a\n"));
    }
}
