//! WHATWG URL operations `@next/routing` performs with Node's `URL` / `URLSearchParams`.

use crate::rurl::Url;

/// The query and fragment of the routed URL and of a `url::Url`.
pub(crate) trait QueryFragment {
    fn query(&self) -> Option<&str>;
    fn fragment(&self) -> Option<&str>;
}

impl QueryFragment for Url {
    fn query(&self) -> Option<&str> {
        Url::query(self)
    }
    fn fragment(&self) -> Option<&str> {
        Url::fragment(self)
    }
}

impl QueryFragment for url::Url {
    fn query(&self) -> Option<&str> {
        url::Url::query(self)
    }
    fn fragment(&self) -> Option<&str> {
        url::Url::fragment(self)
    }
}

/// `url.search`: `"?query"`, or `""` when the query is absent or empty.
pub(crate) fn search(u: &impl QueryFragment) -> String {
    match u.query() {
        Some(q) if !q.is_empty() => format!("?{q}"),
        _ => String::new(),
    }
}

/// `url.hash`: `"#fragment"`, or `""`.
fn hash(u: &impl QueryFragment) -> String {
    match u.fragment() {
        Some(f) if !f.is_empty() => format!("#{f}"),
        _ => String::new(),
    }
}

/// `for (const [k, v] of new URLSearchParams(q)) url.searchParams.set(k, v)`.
pub(crate) fn set_search_params(u: &mut Url, q: &str) {
    let new: Vec<(String, String)> = url::form_urlencoded::parse(q.as_bytes())
        .into_owned()
        .collect();
    if new.is_empty() {
        return;
    }
    let mut pairs: Vec<(String, String)> = u.query_pairs().into_owned().collect();
    for (k, v) in new {
        match pairs.iter().position(|(pk, _)| *pk == k) {
            Some(i) => {
                pairs[i].1 = v;
                let mut idx = 0;
                pairs.retain(|(pk, _)| {
                    let keep = idx <= i || *pk != k;
                    idx += 1;
                    keep
                });
            }
            None => pairs.push((k, v)),
        }
    }
    let serialized = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    u.set_query((!serialized.is_empty()).then_some(serialized.as_str()));
}

/// `applyDestination` for an internal destination: set the pathname, merge the query.
pub(crate) fn apply_internal_destination(u: &Url, dest: &str) -> Url {
    let mut n = u.clone();
    let mut parts = dest.split('?');
    n.set_path(parts.next().unwrap_or_default());
    if let Some(q) = parts.next().filter(|q| !q.is_empty()) {
        set_search_params(&mut n, q);
    }
    n
}

/// `mergeDestinationQueryIntoUrl`.
pub(crate) fn merge_destination_query(u: &Url, dest: &str) -> Url {
    let mut n = u.clone();
    if let Some(q) = dest.split('?').nth(1).filter(|q| !q.is_empty()) {
        set_search_params(&mut n, q);
    }
    n
}

/// `resolveRedirectLocationWithRequestQuery`: carry the request query onto a `Location` that
/// has none.
pub(crate) fn redirect_location_with_query(location: &str, u: &Url) -> String {
    let s = search(u);
    if s.is_empty() {
        return location.to_string();
    }
    let Ok(mut n) = u.join(location) else {
        return location.to_string();
    };
    if !search(&n).is_empty() {
        return location.to_string();
    }
    n.set_query(Some(&s[1..]));
    if n.origin() != u.origin() {
        return n.to_string();
    }
    format!("{}{}{}", n.path(), search(&n), hash(&n))
}

/// next start's redirect query (resolve-routes.js: `prepareDestination` gives
/// `{...requestQuery, ...destinationQuery}`, then `stringifyQuery`): the request's pairs in
/// order, a key the destination also has taking the destination's values in its place, then
/// the destination's other pairs. Values stay as they are spelled.
pub(crate) fn merge_request_query(location: &str, u: &Url) -> String {
    let Some(req) = u.query().filter(|q| !q.is_empty()) else {
        return location.to_string();
    };
    let (base, hash) = match location.find('#') {
        Some(i) => location.split_at(i),
        None => (location, ""),
    };
    let (path, dest) = base.split_once('?').unwrap_or((base, ""));
    let key = |pair: &str| {
        let k = pair.split('=').next().unwrap_or_default();
        url::form_urlencoded::parse(k.as_bytes())
            .next()
            .map(|(k, _)| k.into_owned())
            .unwrap_or_default()
    };
    let dest_pairs: Vec<&str> = dest.split('&').filter(|p| !p.is_empty()).collect();
    let mut keys: Vec<String> = Vec::new();
    let mut out: Vec<&str> = Vec::new();
    for pair in req.split('&').filter(|p| !p.is_empty()) {
        let k = key(pair);
        if keys.contains(&k) {
            // A repeated key: its values were placed with its first occurrence.
            continue;
        }
        keys.push(k.clone());
        let from_dest: Vec<&str> = dest_pairs.iter().copied().filter(|p| key(p) == k).collect();
        if from_dest.is_empty() {
            out.extend(req.split('&').filter(|p| !p.is_empty() && key(p) == k));
        } else {
            out.extend(from_dest);
        }
    }
    for pair in &dest_pairs {
        if !keys.contains(&key(pair)) {
            out.push(pair);
        }
    }
    format!("{path}?{}{hash}", out.join("&"))
}

/// A destination path (or absolute URL) with next start's `destQuery` serialized after it.
pub(crate) fn with_dest_query(path: &str, query: &[(String, Vec<String>, bool)]) -> String {
    let grouped: Vec<(String, Vec<String>)> = query
        .iter()
        .map(|(k, vs, _)| (k.clone(), vs.clone()))
        .collect();
    let serialized = serialize_grouped(&grouped);
    if serialized.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{serialized}")
    }
}

fn serialize_grouped(query: &[(String, Vec<String>)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, vs) in query {
        for v in vs {
            s.append_pair(k, v);
        }
    }
    s.finish()
}

/// next start's internal rewrite (resolve-routes.js): `parsedUrl.pathname = destination`,
/// `Object.assign(parsedUrl.query, destQuery)`: a key the request has keeps its place and takes
/// the destination's values (all of them: an array), new keys follow in order. The keys whose
/// one value next start holds as an array are kept with the URL (see [`query_arrays`]).
pub(crate) fn assign_destination(
    u: &Url,
    path: &str,
    query: &[(String, Vec<String>, bool)],
) -> Url {
    let mut n = u.clone();
    n.set_path(path);
    let mut arrays = query_arrays(u);
    arrays.retain(|a| !query.iter().any(|(k, _, _)| k == a));
    arrays.extend(
        query
            .iter()
            .filter(|(_, _, array)| *array)
            .map(|(k, _, _)| k.clone()),
    );
    set_query_arrays(&mut n, &arrays);
    let mut grouped: Vec<(String, Vec<String>)> = Vec::new();
    for (k, v) in u.query_pairs().into_owned() {
        match grouped.iter_mut().find(|(gk, _)| *gk == k) {
            Some(slot) => slot.1.push(v),
            None => grouped.push((k, vec![v])),
        }
    }
    for (k, vs, _) in query {
        match grouped.iter_mut().find(|(gk, _)| gk == k) {
            Some(slot) => slot.1 = vs.clone(),
            None => grouped.push((k.clone(), vs.clone())),
        }
    }
    let serialized = serialize_grouped(&grouped);
    n.set_query((!serialized.is_empty()).then_some(serialized.as_str()));
    n
}

/// `getRelativeURL`: same-origin URLs become path + search + hash.
pub(crate) fn relative_url(target: &str, base: &Url) -> String {
    let Ok(n) = base.join(target) else {
        return target.to_string();
    };
    if n.origin() == base.origin() {
        format!("{}{}{}", n.path(), search(&n), hash(&n))
    } else {
        n.to_string()
    }
}

/// Where the routed URL keeps the query keys next start holds as arrays although they have
/// one value (a repeated param a rewrite appended: `path: ["x"]`): its fragment, which requests
/// never carry and routing never reads, so the flag travels with the URL through every phase.
const ARRAYS_FRAGMENT: &str = "ferry-query-arrays&";

/// The query keys whose single value next start holds as an array (see [`assign_destination`]).
pub(crate) fn query_arrays(u: &Url) -> Vec<String> {
    let Some(list) = u.fragment().and_then(|f| f.strip_prefix(ARRAYS_FRAGMENT)) else {
        return Vec::new();
    };
    url::form_urlencoded::parse(list.as_bytes())
        .map(|(_, k)| k.into_owned())
        .collect()
}

fn set_query_arrays(u: &mut Url, keys: &[String]) {
    if keys.is_empty() {
        if u.fragment().is_some_and(|f| f.starts_with(ARRAYS_FRAGMENT)) {
            u.set_fragment(None);
        }
        return;
    }
    let list = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(keys.iter().map(|k| ("k", k)))
        .finish();
    u.set_fragment(Some(&format!("{ARRAYS_FRAGMENT}{list}")));
}

/// The query as `URLSearchParams` entries (decoded).
pub(crate) fn query_pairs(u: &Url) -> Vec<(String, String)> {
    match u.query() {
        Some(q) => query_str_pairs(q),
        None => Vec::new(),
    }
}

/// [`query_pairs`] of a URL whose query is `q` (as the URL holds it).
pub(crate) fn query_str_pairs(q: &str) -> Vec<(String, String)> {
    // Without `%` or `+` decoding changes nothing: split it as `form_urlencoded::parse` does
    // (on `&`, empty pieces skipped, name and value at the first `=`) without its decoder.
    if q.bytes().any(|b| b == b'%' || b == b'+') {
        return url::form_urlencoded::parse(q.as_bytes())
            .into_owned()
            .collect();
    }
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (p.to_string(), String::new()),
        })
        .collect()
}

/// `decodeURIComponent`: `None` where JS throws (bad escape or invalid UTF-8).
pub(crate) fn decode_uri_component(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_string());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let v = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_split_like_url_search_params() {
        for q in [
            "",
            "a",
            "a=",
            "=b",
            "a=1&b=2",
            "&&a=1&&",
            "a=1=2&a=3",
            "x&y=",
            "k=%41",
            "k=a+b",
            "k=é",
            "k=v?w",
            "%zz=1",
            "a==&=&",
        ] {
            let u = Url::parse(&format!("http://h/p?{q}")).expect("url");
            let expect: Vec<(String, String)> = u.query_pairs().into_owned().collect();
            assert_eq!(query_pairs(&u), expect, "{q:?}");
        }
        let bare = Url::parse("http://h/p").expect("url");
        assert!(query_pairs(&bare).is_empty());
    }

    #[test]
    fn destination_merges_query_like_url_search_params() {
        let u = Url::parse("http://h/a?x=1&y=2&x=3&s=a+b").expect("url");
        let n = apply_internal_destination(&u, "/b/../c d?x=9&z=%2F?ignored");
        assert_eq!(n.path(), "/c%20d");
        assert_eq!(n.query(), Some("x=9&y=2&s=a+b&z=%2F"));
    }

    #[test]
    fn redirect_keeps_request_query_only_when_location_has_none() {
        let u = Url::parse("http://h/a?x=1").expect("url");
        assert_eq!(redirect_location_with_query("/b", &u), "/b?x=1");
        assert_eq!(redirect_location_with_query("/b?y", &u), "/b?y");
        assert_eq!(
            redirect_location_with_query("https://o.com/b", &u),
            "https://o.com/b?x=1"
        );
        let bare = Url::parse("http://h/a").expect("url");
        assert_eq!(redirect_location_with_query("/b/../c", &bare), "/b/../c");
    }

    #[test]
    fn decodes_like_decode_uri_component() {
        assert_eq!(decode_uri_component("a%2Fb").as_deref(), Some("a/b"));
        assert_eq!(decode_uri_component("%E0%A4%A"), None);
        assert_eq!(decode_uri_component("%ff"), None);
    }
}
