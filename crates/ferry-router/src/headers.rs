//! A header list with the semantics of the WHATWG `Headers` class, which `@next/routing` uses
//! for request headers and the resolved (response) headers.

use std::borrow::Cow;

/// An ordered list of headers behaving like JavaScript's `Headers`: names are lowercased, values
/// trimmed of HTTP whitespace, `get` joins repeated values with `", "`, `set` replaces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderList {
    entries: Vec<(String, String)>,
}

fn trim_http_ws(v: &str) -> &str {
    v.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r'))
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
            entries: Vec::with_capacity(pairs.size_hint().0),
        };
        for (k, v) in pairs {
            h.append(k, v);
        }
        h
    }

    /// Appends a value (`Headers.append`).
    pub fn append(&mut self, name: &str, value: &str) {
        self.entries
            .push((name.to_ascii_lowercase(), trim_http_ws(value).to_string()));
    }

    /// Replaces every value of `name` with `value` (`Headers.set`), keeping the first position.
    pub fn set(&mut self, name: &str, value: &str) {
        let value = trim_http_ws(value);
        match self
            .entries
            .iter()
            .position(|(k, _)| k.eq_ignore_ascii_case(name))
        {
            Some(i) => {
                let slot = &mut self.entries[i].1;
                slot.clear();
                slot.push_str(value);
                if self.entries[i + 1..]
                    .iter()
                    .any(|(k, _)| k.eq_ignore_ascii_case(name))
                {
                    let mut idx = 0;
                    self.entries.retain(|(k, _)| {
                        let keep = idx <= i || !k.eq_ignore_ascii_case(name);
                        idx += 1;
                        keep
                    });
                }
            }
            None => self
                .entries
                .push((name.to_ascii_lowercase(), value.to_string())),
        }
    }

    /// Removes every value of `name` (`Headers.delete`).
    pub fn delete(&mut self, name: &str) {
        let name = name.to_ascii_lowercase();
        self.entries.retain(|(k, _)| *k != name);
    }

    /// Whether `name` is present (`Headers.has`).
    pub fn has(&self, name: &str) -> bool {
        self.entries
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(name))
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
            .entries
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
        &self.entries
    }

    /// The raw entries, consuming the list.
    pub fn into_raw(self) -> Vec<(String, String)> {
        self.entries
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Iteration as `Headers.forEach` does it: names sorted, values of a name combined with
    /// `", "`, except `set-cookie` whose values come one by one.
    pub fn sorted_combined(&self) -> Vec<(String, String)> {
        if self.names_unique() {
            let mut out = self.entries.clone();
            out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            return out;
        }
        self.combined_slow()
    }

    /// [`HeaderList::sorted_combined`], consuming the list (no copies when every name is
    /// unique, the usual case).
    pub fn into_sorted_combined(mut self) -> Vec<(String, String)> {
        if self.names_unique() {
            self.entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            return self.entries;
        }
        self.combined_slow()
    }

    /// Whether no name appears twice (then sorting the entries is the whole iteration).
    fn names_unique(&self) -> bool {
        let e = &self.entries;
        (1..e.len()).all(|i| e[..i].iter().all(|(k, _)| *k != e[i].0))
    }

    fn combined_slow(&self) -> Vec<(String, String)> {
        let mut names: Vec<&str> = self.entries.iter().map(|(k, _)| k.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            if n == "set-cookie" {
                for (k, v) in &self.entries {
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
