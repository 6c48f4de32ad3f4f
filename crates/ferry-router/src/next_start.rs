//! `next start`'s own routing rules where they differ from `@next/routing` (opt-in with
//! [`crate::Router::with_next_start_semantics`]). Each function names the Next.js 16.4.6 code it
//! follows (`server/lib/router-server.js`, `server/lib/router-utils/resolve-routes.js`,
//! `filesystem.js`, `shared/lib/i18n/*`, `shared/lib/router/utils/prepare-destination.js`).

use std::collections::HashSet;

use crate::rurl::Url;
use ferry_manifest::{HasKind, I18nConfig, RouteHas};

use crate::matcher::{
    Captures, CompiledRoute, NsParams, RegexMatch, js_match, replace_destination,
};

use crate::i18n::{detect_domain_locale, normalize_locale_path};
use crate::urls::decode_uri_component;

/// `pathHasPrefix`: `path` is `prefix` or starts with `prefix/` (an empty prefix always holds
/// for an absolute path).
pub(crate) fn has_prefix(path: &str, prefix: &str) -> bool {
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// `removePathPrefix`.
pub(crate) fn remove_prefix<'a>(path: &'a str, prefix: &str) -> std::borrow::Cow<'a, str> {
    if prefix.is_empty() || !has_prefix(path, prefix) {
        return path.into();
    }
    let rest = &path[prefix.len()..];
    if rest.starts_with('/') {
        rest.into()
    } else {
        format!("/{rest}").into()
    }
}

/// `addPathPrefix`.
pub(crate) fn add_prefix(path: &str, prefix: &str) -> String {
    if !path.starts_with('/') || prefix.is_empty() {
        return path.to_string();
    }
    format!("{prefix}{path}")
}

/// `maybeAddTrailingSlash` (resolve-routes.js).
pub(crate) fn maybe_add_trailing_slash(path: String, trailing_slash: bool) -> String {
    if trailing_slash && !path.ends_with('/') {
        format!("{path}/")
    } else {
        path
    }
}

/// `getHostname`: the `Host` header's name, lowercase, without the port.
pub(crate) fn hostname(host: Option<&str>) -> Option<String> {
    host.map(|h| h.split(':').next().unwrap_or_default().to_lowercase())
}

/// The default locale for a host (`domainLocale?.defaultLocale || i18n.defaultLocale`).
pub(crate) fn default_locale<'a>(i18n: &'a I18nConfig, host: Option<&str>) -> &'a str {
    detect_domain_locale(&i18n.domains, host, None)
        .map(|d| d.default_locale.as_str())
        .filter(|l| !l.is_empty())
        .unwrap_or(&i18n.default_locale)
}

/// `acceptLanguage(header, locales)[0]` (server/accept-header.js, `prefixMatch`): `None` when
/// nothing matches or the header is one next rejects (it throws and next ignores the header).
pub(crate) fn accept_language<'a>(header: &str, locales: &'a [String]) -> Option<&'a str> {
    // lowercased preference (and its `-`-prefixes) → (configured spelling, position)
    let mut lowers: Vec<(String, &'a str, usize)> = Vec::new();
    let mut pos = 0;
    for l in locales {
        let lower = l.to_lowercase();
        if let Some(e) = lowers.iter_mut().find(|(k, _, _)| *k == lower) {
            // Map.set overwrites the value in place.
            *e = (lower.clone(), l.as_str(), pos);
        } else {
            lowers.push((lower.clone(), l.as_str(), pos));
        }
        pos += 1;
        let mut parts: Vec<&str> = lower.split('-').collect();
        loop {
            parts.pop();
            if parts.is_empty() {
                break;
            }
            let joined = parts.join("-");
            if !lowers.iter().any(|(k, _, _)| *k == joined) {
                lowers.push((joined, l.as_str(), pos));
                pos += 1;
            }
        }
    }
    struct Sel {
        token: String,
        pos: usize,
        q: f64,
        pref: Option<usize>,
    }
    let mut selections: Vec<Sel> = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for (i, part) in header.split(',').enumerate() {
        if part.is_empty() {
            continue;
        }
        let params: Vec<&str> = part.split(';').collect();
        if params.len() > 2 {
            return None;
        }
        let token = params[0].to_lowercase();
        if token.is_empty() {
            return None;
        }
        let pref = lowers
            .iter()
            .find(|(k, _, _)| *k == token)
            .map(|(_, _, p)| *p);
        seen.push(token.clone());
        let mut q = 1.0;
        if let Some(qp) = params.get(1) {
            let mut kv = qp.split('=');
            let key = kv.next().unwrap_or_default();
            let value = kv.next().unwrap_or_default();
            if value.is_empty() || (key != "q" && key != "Q") {
                return None;
            }
            let score = js_parse_float(value);
            if score == 0.0 {
                continue;
            }
            if score.is_finite() && (0.001..=1.0).contains(&score) {
                q = score;
            }
        }
        selections.push(Sel {
            token,
            pos: i,
            q,
            pref,
        });
    }
    selections.sort_by(|a, b| {
        use std::cmp::Ordering;
        if b.q != a.q {
            return b.q.partial_cmp(&a.q).unwrap_or(Ordering::Equal);
        }
        if b.pref != a.pref {
            return match (a.pref, b.pref) {
                (None, _) => Ordering::Greater,
                (_, None) => Ordering::Less,
                (Some(x), Some(y)) => x.cmp(&y),
            };
        }
        a.pos.cmp(&b.pos)
    });
    for s in &selections {
        if s.token == "*" {
            if let Some((_, orig, _)) = lowers.iter().find(|(k, _, _)| !seen.contains(k)) {
                return Some(orig);
            }
        } else if let Some((_, orig, _)) = lowers.iter().find(|(k, _, _)| *k == s.token) {
            return Some(orig);
        }
    }
    None
}

/// JavaScript `parseFloat` (leading decimal number; `NaN` when there is none).
fn js_parse_float(s: &str) -> f64 {
    let s = s.trim_start();
    let mut end = 0;
    let mut dot = false;
    for (i, c) in s.char_indices() {
        match c {
            '0'..='9' => end = i + 1,
            '.' if !dot => dot = true,
            '+' | '-' if i == 0 => {}
            _ => break,
        }
    }
    s[..end].parse().unwrap_or(f64::NAN)
}

/// A cookie as next start reads it (the `cookie` package: the first occurrence wins, values
/// are URI-decoded when they can be, one pair of quotes is stripped).
pub(crate) fn cookie_value(cookie: Option<&str>, wanted: &str) -> Option<String> {
    for part in cookie?.split(';') {
        let Some((name, v)) = part.split_once('=') else {
            continue;
        };
        if name.trim() != wanted {
            continue;
        }
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|x| x.strip_suffix('"'))
            .unwrap_or(v);
        return Some(decode_uri_component(v).unwrap_or_else(|| v.to_string()));
    }
    None
}

/// The `NEXT_LOCALE` cookie as next start reads it, matched case-insensitively to a locale.
fn cookie_locale<'a>(cookie: Option<&str>, locales: &'a [String]) -> Option<&'a str> {
    let wanted = cookie_value(cookie, "NEXT_LOCALE")
        .filter(|v| !v.is_empty())?
        .to_lowercase();
    locales
        .iter()
        .find(|l| l.to_lowercase() == wanted)
        .map(String::as_str)
}

/// The inputs of router-server's locale redirect.
pub(crate) struct LocaleRequest<'a> {
    /// `req.url`'s path, raw.
    pub path: &'a str,
    /// The raw query, if any.
    pub query: Option<&'a str>,
    /// The `Host` header.
    pub host: Option<&'a str>,
    /// The `Cookie` header.
    pub cookie: Option<&'a str>,
    /// The `Accept-Language` header.
    pub accept_language: Option<&'a str>,
}

/// router-server.js + `getLocaleRedirect`: the locale redirect next start answers before any
/// routing (root path only): to the preferred locale's domain (without the basePath), or to
/// `<basePath>/<locale>[/]` on this host (a relative `Location`).
pub(crate) fn locale_redirect(
    i18n: &I18nConfig,
    base_path: &str,
    trailing_slash: bool,
    req: &LocaleRequest<'_>,
) -> Option<String> {
    if i18n.locale_detection == Some(false) {
        return None;
    }
    let url_no_query = remove_prefix(req.path, base_path);
    // getNextPathnameInfo strips the basePath a second time when it is there.
    let info_path = remove_prefix(&url_no_query, base_path);
    let (_, path_locale) = normalize_locale_path(&info_path, &i18n.locales);
    let host = hostname(req.host);
    let domain_locale = detect_domain_locale(&i18n.domains, host.as_deref(), None);
    let default = domain_locale
        .map(|d| d.default_locale.as_str())
        .filter(|l| !l.is_empty())
        .unwrap_or(&i18n.default_locale);
    let pathname = match path_locale {
        Some(l) => format!("/{l}{url_no_query}"),
        None => url_no_query.into_owned(),
    };
    // denormalizePagePath(pathname) === '/'
    if !matches!(pathname.as_str(), "/" | "/index" | "/index/") {
        return None;
    }
    let preferred = req
        .accept_language
        .and_then(|h| accept_language(h, &i18n.locales));
    let detected = path_locale
        .or(domain_locale
            .map(|d| d.default_locale.as_str())
            .filter(|l| !l.is_empty()))
        .or_else(|| cookie_locale(req.cookie, &i18n.locales))
        .or(preferred)
        .unwrap_or(&i18n.default_locale);
    let preferred_domain =
        preferred.and_then(|p| detect_domain_locale(&i18n.domains, None, Some(p)));
    if let (Some(dl), Some(pd)) = (domain_locale, preferred_domain) {
        let is_p_domain = pd.domain == dl.domain;
        let is_p_locale = Some(pd.default_locale.as_str()) == preferred;
        if !is_p_domain || !is_p_locale {
            let scheme = if pd.http == Some(true) {
                "http"
            } else {
                "https"
            };
            let rlocale = if is_p_locale {
                ""
            } else {
                preferred.unwrap_or_default()
            };
            return Some(format!("{scheme}://{}/{rlocale}", pd.domain));
        }
    }
    if detected.to_lowercase() != default.to_lowercase() {
        let slash = if trailing_slash { "/" } else { "" };
        let search = req
            .query
            .filter(|q| !q.is_empty())
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        return Some(format!("{base_path}/{detected}{slash}{search}"));
    }
    None
}

/// The pathname an `internal` route (the trailing-slash redirects, `priority` in the routing
/// table) is matched against (resolve-routes.js `handleRoute`): the default locale and, when
/// the request had it, the basePath are taken out of the locale-prefixed pathname again.
pub(crate) fn internal_route_path(
    path: &str,
    base_path: &str,
    i18n: &I18nConfig,
    default_locale: &str,
    trailing_slash: bool,
) -> String {
    let had_trailing_slash = path.ends_with('/');
    let cur = remove_prefix(path, base_path);
    let had_base_path = cur != path;
    let (lp, detected) = normalize_locale_path(&cur, &i18n.locales);
    let is_default = detected == Some(default_locale);
    let bp = if had_base_path { base_path } else { "" };
    let out = if is_default {
        if lp == "/" && had_base_path {
            base_path.to_string()
        } else {
            add_prefix(&lp, bp)
        }
    } else if had_base_path {
        if cur == "/" {
            base_path.to_string()
        } else {
            add_prefix(&cur, base_path)
        }
    } else {
        cur.into_owned()
    };
    if (is_default || had_base_path) && had_trailing_slash {
        maybe_add_trailing_slash(out, trailing_slash)
    } else {
        out
    }
}

/// A `source` pattern's params in order (path-to-regexp tokens): the name (unnamed groups are
/// numbered from 0 like path-to-regexp does) and its modifier (`?`, `*`, `+`), if any.
pub(crate) fn source_params(source: &str) -> Vec<(String, Option<char>)> {
    let b = source.as_bytes();
    let mut out = Vec::new();
    let mut unnamed = 0;
    let mut i = 0;
    // Skips a balanced `(...)` starting at `i`; returns the index after it.
    let skip_group = |mut i: usize| -> usize {
        let mut depth = 0;
        while i < b.len() {
            match b[i] {
                b'\\' => i += 1,
                b'(' => depth += 1,
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        return i + 1;
                    }
                }
                _ => {}
            }
            i += 1;
        }
        i
    };
    let modifier = |i: usize| match b.get(i) {
        Some(&c @ (b'?' | b'*' | b'+')) => Some(c as char),
        _ => None,
    };
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b':' => {
                let start = i + 1;
                let mut j = start;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                    j += 1;
                }
                if j == start {
                    i += 1;
                    continue;
                }
                let name = source[start..j].to_string();
                if b.get(j) == Some(&b'(') {
                    j = skip_group(j);
                }
                out.push((name, modifier(j)));
                i = j;
            }
            b'(' => {
                let j = skip_group(i);
                out.push((unnamed.to_string(), modifier(j)));
                unnamed += 1;
                i = j;
            }
            _ => i += 1,
        }
    }
    out
}

/// Rewrites a redirect `Location` template before interpolation so an unmatched optional param
/// comes out the way next start's `prepareDestination` compiles it: in the path its `/$n`
/// segment disappears (path-to-regexp `compile` omits an absent optional token with its
/// prefix), in the query it stays a literal `:name` (`compileNonPath` only fills known params).
pub(crate) fn redirect_template(
    template: &str,
    groups: &RegexMatch<'_>,
    params: &[(String, Option<char>)],
) -> String {
    let query_at = template.find('?').unwrap_or(template.len());
    let b = template.as_bytes();
    let mut out = String::with_capacity(template.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' {
            let start = i + 1;
            let mut j = start;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            if j > start
                && let Ok(n) = template[start..j].parse::<usize>()
                && n > 0
                && n < groups.group_count()
                && groups.group(n).is_none()
                && let Some((name, modifier)) = params.get(n - 1)
            {
                if i < query_at {
                    if out.ends_with('/') && matches!(b.get(j), None | Some(b'/' | b'?' | b'#')) {
                        out.pop();
                    }
                } else {
                    out.push(':');
                    out.push_str(name);
                    // A repeated param must be spelled `:name*` / `:name+` in a destination
                    // (next start throws `invalid-multi-match` otherwise); an optional one is
                    // assumed spelled bare (the adapter's `$n` no longer says).
                    if let Some(m @ ('*' | '+')) = modifier {
                        out.push(*m);
                    }
                }
                i = j;
                continue;
            }
        }
        // Copy one UTF-8 character.
        let ch_len = template[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&template[i..i + ch_len]);
        i += ch_len;
    }
    out
}

/// The names the adapter's `collectHasSegments` (@vercel/routing-utils) interpolates from `has`
/// items: a key without a value, the value's named groups, `host` for a host item with a value.
fn has_segments(has: &[RouteHas]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |n: String| {
        if !out.contains(&n) {
            out.push(n);
        }
    };
    for h in has {
        match (&h.value, &h.key) {
            (None, Some(k)) => add(k.clone()),
            (Some(v), _) => {
                for part in v.split("(?<").skip(1) {
                    let name: String = part
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric())
                        .collect();
                    if part[name.len()..].starts_with('>')
                        && name.starts_with(|c: char| c.is_ascii_alphabetic())
                    {
                        add(name);
                    }
                }
                if h.kind == HasKind::Host {
                    add("host".into());
                }
            }
            _ => {}
        }
    }
    out
}

/// The param names a converted template interpolates (`$2` → the source's 2nd param).
fn placeholder_names(template: &str, params: &[(String, Option<char>)]) -> Vec<String> {
    let mut out = Vec::new();
    for part in template.split('$').skip(1) {
        let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
        if !digits.is_empty() {
            if let Some((name, _)) = digits
                .parse::<usize>()
                .ok()
                .and_then(|n| n.checked_sub(1))
                .and_then(|i| params.get(i))
            {
                out.push(name.clone());
            }
            continue;
        }
        let name: String = part
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.push(name);
        }
    }
    out
}

/// The locale param next start leaves out of a rewrite's query (prepare-destination.js).
const INTERNAL_LOCALE: &str = "nextInternalLocale";

/// Whether a param name is path-to-regexp's number for an unnamed group (removed by next start).
fn unnamed(name: &str) -> bool {
    name.bytes().all(|b| b.is_ascii_digit())
}

fn query_key(pair: &str) -> &str {
    pair.split('=').next().unwrap_or_default()
}

/// How many of a converted rewrite destination's query pairs the user wrote. The adapter
/// (`replaceSegments` of @vercel/routing-utils) appends `name=$n` for every source param and
/// `has` segment the user's query lacks, when no param but the locale is in the destination
/// path: the longest tail that is exactly that list is taken for it.
pub(crate) fn user_query_len(
    dest: &str,
    params: &[(String, Option<char>)],
    has: &[RouteHas],
) -> usize {
    let Some((path, query)) = dest.split_once('?') else {
        return 0;
    };
    let query = query.split('#').next().unwrap_or_default();
    let pairs: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    let mut segments: Vec<(String, String)> = params
        .iter()
        .enumerate()
        .filter(|(_, (n, _))| !unnamed(n))
        .map(|(i, (n, _))| (n.clone(), format!("${}", i + 1)))
        .collect();
    for h in has_segments(has) {
        match segments.iter_mut().find(|(n, _)| *n == h) {
            Some(slot) => slot.1 = format!("${h}"),
            None => segments.push((h.clone(), format!("${h}"))),
        }
    }
    let in_path = placeholder_names(path, params);
    if segments
        .iter()
        .any(|(n, _)| n != INTERNAL_LOCALE && in_path.contains(n))
    {
        return pairs.len();
    }
    for k in (1..=pairs.len()).rev() {
        let (user, tail) = pairs.split_at(pairs.len() - k);
        let expected: Vec<&(String, String)> = segments
            .iter()
            .filter(|(n, _)| !user.iter().any(|p| query_key(p) == n))
            .collect();
        if expected.len() == tail.len()
            && expected
                .iter()
                .zip(tail)
                .all(|((n, ph), pair)| *pair == format!("{n}={ph}"))
        {
            return user.len();
        }
    }
    pairs.len()
}

/// A param as next start's path matcher gives it: a `*` / `+` param is an array of segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ParamValue {
    One(String),
    Many(Vec<String>),
    /// A `has` named group that did not take part (the key exists, `undefined`).
    Undefined,
}

/// A rewrite destination as next start's `prepareDestination` (appendParamsToQuery) builds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PreparedRewrite {
    /// The destination path (an absolute URL without query for an external rewrite).
    pub path: String,
    /// `destQuery`: the user's query compiled with the params, then the params it appends, by
    /// key in order (several values: an array; `true`: an array even with one value, a repeated
    /// param's segments).
    /// key in order (several values: an array).
    pub query: Vec<(String, Vec<String>, bool)>,
}

/// `prepareDestination({ appendParamsToQuery: true, ... })` over the adapter's converted
/// destination: the path compiled like path-to-regexp (an absent optional param goes with its
/// `/`), query values with `compileNonPath` (an absent param stays `:name`), then — when no
/// matched param other than the locale is in the path — every param the query lacks, arrays
/// for repeated params, no locale. `regex` is the source's match, `has` next start's
/// `matchHas` params.
pub(crate) fn prepare_rewrite(
    dest: &str,
    regex: &RegexMatch<'_>,
    params: &[(String, Option<char>)],
    user_query: usize,
    has: NsParams,
) -> PreparedRewrite {
    // `route.match` then `Object.assign(params, hasParams)`.
    let mut values: Vec<(String, ParamValue)> = Vec::new();
    for (i, (name, modifier)) in params.iter().enumerate() {
        let Some(v) = regex.group(i + 1) else {
            continue;
        };
        if unnamed(name) {
            continue;
        }
        let v = if matches!(modifier, Some('*' | '+')) {
            ParamValue::Many(v.split('/').map(str::to_string).collect())
        } else {
            ParamValue::One(v.to_string())
        };
        values.push((name.clone(), v));
    }
    for (k, v) in has.iter().cloned() {
        let v = v.map_or(ParamValue::Undefined, ParamValue::One);
        match values.iter_mut().find(|(n, _)| *n == k) {
            Some(slot) => slot.1 = v,
            None => values.push((k, v)),
        }
    }
    let caps: Captures = has
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
    let (path_t, query_t) = dest.split_once('?').unwrap_or((dest, ""));
    let query_t = query_t.split('#').next().unwrap_or_default();
    let path = replace_destination(
        &redirect_template(path_t, regex, params),
        Some(regex),
        &caps,
    );
    let mut query: Vec<(String, Vec<String>, bool)> = Vec::new();
    for pair in query_t
        .split('&')
        .filter(|p| !p.is_empty())
        .take(user_query)
    {
        let Some((k, v)) = url::form_urlencoded::parse(pair.as_bytes()).next() else {
            continue;
        };
        let v = redirect_template(&format!("?{v}"), regex, params);
        let v = replace_destination(&v[1..], Some(regex), &caps);
        match query.iter_mut().find(|(qk, _, _)| *qk == k) {
            Some(slot) => slot.1.push(v),
            None => query.push((k.into_owned(), vec![v], false)),
        }
    }
    let in_path = placeholder_names(path_t, params);
    let append = !values
        .iter()
        .any(|(k, _)| k != INTERNAL_LOCALE && in_path.contains(k));
    if append {
        for (k, v) in values {
            if k == INTERNAL_LOCALE || query.iter().any(|(qk, _, _)| *qk == k) {
                continue;
            }
            match v {
                ParamValue::One(v) => query.push((k, vec![v], false)),
                ParamValue::Many(v) => query.push((k, v, true)),
                ParamValue::Undefined => {}
            }
        }
    }
    PreparedRewrite { path, query }
}

impl crate::Router {
    /// next start's `getItem` (filesystem.js) also tries the decoded spelling of a path, so
    /// `/st%61tic` finds the page `/static`; the page is invoked, but next-server's render
    /// (base-server.js `renderToResponseImpl`) matches no page at `/st%61tic` and answers the
    /// 404 page itself, without the private Cache-Control of the router's own 404. Returns the
    /// output that answers like that: the pages router's 404 page in the request's locale (the
    /// path's, else the host's default). `None` when the path does not name a page only by its
    /// decoded spelling, or the app has no pages-router 404 page.
    pub(crate) fn decoded_page_not_found(&self, path: &str, host: Option<&str>) -> Option<String> {
        let bp = self.base_path.as_str();
        // Pages-router apps only: with the app router, `/_not-found` renders 404s (and its
        // prerendered dynamic paths are no page files either); that case is not modelled.
        if !has_prefix(path, bp) || self.pathnames.contains(&format!("{bp}/_not-found")) {
            return None;
        }
        let mut item = remove_prefix(path, bp).into_owned();
        if item.is_empty() {
            item = "/".into();
        }
        if item != "/" && item.ends_with('/') {
            item.pop();
        }
        let decoded = decode_uri_component(&item).filter(|d| *d != item)?;
        // Page files only: not the files of `public/` and `.next/static`, not the prerendered
        // paths of dynamic pages or data JSON (getItem knows `/blog/[slug]`, not `/blog/hello`).
        let page = |p: &str| {
            self.pathnames.contains(p)
                && !self.asset_paths.contains(p)
                && !self.dynamic_page_prerenders.contains(p)
                && !p.contains("/_next/")
        };
        let full = |p: &str| {
            if p == "/" {
                if bp.is_empty() {
                    "/".to_string()
                } else {
                    bp.to_string()
                }
            } else {
                format!("{bp}{p}")
            }
        };
        let (raw_locale, found) = match &self.i18n {
            None => (None, page(&full(&decoded))),
            Some(i18n) => {
                // The locale as the request spells it (getItem's handleLocale runs on the raw
                // path), the page part decoded.
                let (_, raw_locale) = normalize_locale_path(&item, &i18n.locales);
                let (lp, locale) = normalize_locale_path(&decoded, &i18n.locales);
                // `/404` is a page file too (the page renders the 404 either way).
                if lp != "/404" && crate::next_start_unroutable(&lp) {
                    return None;
                }
                let found = page(&full(&decoded))
                    || locale.is_some_and(|l| {
                        let canonical = if lp == "/" {
                            format!("{bp}/{l}")
                        } else {
                            format!("{bp}/{l}{lp}")
                        };
                        page(&canonical) || page(&full(&lp))
                    });
                (raw_locale, found)
            }
        };
        if !found
            || (self.i18n.is_none() && decoded != "/404" && crate::next_start_unroutable(&decoded))
        {
            return None;
        }
        let candidates = match &self.i18n {
            Some(i18n) => {
                let host = hostname(host);
                let locale = raw_locale.unwrap_or_else(|| default_locale(i18n, host.as_deref()));
                vec![format!("{bp}/{locale}/404"), format!("{bp}/404")]
            }
            None => vec![format!("{bp}/404")],
        };
        candidates.into_iter().find(|p| self.pathnames.contains(p))
    }
}

/// The cookie the adapter's `dynamicRoutes` rule of a `fallback: false` page requires (only
/// draft mode reaches such a page at a path it did not prerender there).
const PRERENDER_BYPASS_COOKIE: &str = "__prerender_bypass";

/// The `dynamicRoutes` destinations of `fallback: false` pages: rules whose only condition is
/// the prerender-bypass cookie.
pub(crate) fn no_fallback_destinations(routes: &[ferry_manifest::Route]) -> HashSet<String> {
    routes
        .iter()
        .filter(|r| {
            r.missing.as_deref().is_none_or(<[RouteHas]>::is_empty)
                && r.has.as_deref().is_some_and(|h| {
                    h.len() == 1
                        && h[0].kind == HasKind::Cookie
                        && h[0].key.as_deref() == Some(PRERENDER_BYPASS_COOKIE)
                })
        })
        .filter_map(|r| r.destination.clone())
        .collect()
}

impl crate::RoutingState {
    /// The pages earlier passes invoked and that declined (see [`crate::Router::no_fallback_retry`]):
    /// this pass skips their dynamic routes, as router-server.js does with `invokedOutputs`.
    pub fn set_declined(&mut self, pages: Vec<String>) {
        self.declined = pages;
    }
}

impl crate::Router {
    /// How many routing passes router-server.js makes at most (`handleIndex > 5` throws).
    pub const MAX_PASSES: usize = 5;

    /// next start's dynamic routes (filesystem.js) know `fallback: false` pages without the
    /// prerender-bypass cookie the adapter's rule requires: the page is invoked, serves a path it
    /// prerendered and declines any other (`NoFallbackError`). For `route`, when it is such a
    /// rule and its regex matches: the prerendered output, or `NotFound` naming the declined page
    /// (router-server.js then routes the request again, see [`crate::Router::no_fallback_retry`]).
    pub(crate) fn no_fallback_match(
        &self,
        route: &CompiledRoute,
        state: &crate::RoutingState,
        url: &Url,
    ) -> Option<crate::Resolution> {
        if !self.next_start || self.no_fallback.is_empty() {
            return None;
        }
        let dest = route.destination.as_deref()?;
        if !self.no_fallback.contains(dest) {
            return None;
        }
        let m = js_match(&route.re, url.path())?;
        let dest = replace_destination(dest, Some(&m), &Captures::new());
        let page = self
            .match_pathname_locale_fallback(dest.split('?').next().unwrap_or_default())?
            .to_string();
        if state.declined.contains(&page) {
            return None;
        }
        // The page serves what it prerendered, its params decoded (`/posts/%31` is `/posts/1`).
        let decoded = decode_uri_component(url.path());
        if let Some(found) = self
            .next_start_item(url.path())
            .or_else(|| decoded.and_then(|d| self.next_start_item(&d)))
        {
            // Named without the trailing slash next start drops (as the filesystem check does).
            let path = url.path();
            let invocation = path
                .strip_suffix('/')
                .filter(|p| !p.is_empty())
                .unwrap_or(path);
            return Some(self.output(state, url, found, invocation, Vec::new()));
        }
        // next start applies the `onMatch` headers when routing ends on the page.
        match self.output(state, url, &page, url.path(), Vec::new()) {
            crate::Resolution::Output(o) => Some(crate::Resolution::NotFound {
                headers: o.headers,
                request_headers: o.request_headers,
                status: o.status,
                declined: Some(page),
            }),
            other => Some(other),
        }
    }

    /// The request router-server.js routes after a page declined it (`NoFallbackError`:
    /// `handleRequest(handleIndex + 1)` on the same `req`): its URL as next-server left it
    /// (base-server.js `handleRequestImpl` and the route module's `prepare` strip the basePath,
    /// turn a `_next/data` URL into its page path and strip a locale the path names), with the
    /// request headers routing set (`request_headers` of the first pass, e.g. `x-nextjs-data`).
    pub fn no_fallback_retry(
        &self,
        req: &crate::RequestInfo,
        request_headers: &[(String, String)],
    ) -> crate::RequestInfo {
        crate::RequestInfo {
            path: self.declined_request_path(&req.path),
            headers: std::sync::Arc::new(request_headers.to_vec()),
            ..req.clone()
        }
    }

    /// The pathname next start's router resolves `req` from (resolve-routes.js: the default
    /// locale added to a path that names none, with the basePath when the request had it).
    pub fn next_start_pathname(&self, req: &crate::RequestInfo) -> String {
        let Some(i18n) = &self.i18n else {
            return req.path.clone();
        };
        let bp = self.base_path.as_str();
        let had_base_path = has_prefix(&req.path, bp);
        let normalized = if had_base_path {
            remove_prefix(&req.path, bp).into_owned()
        } else {
            req.path.clone()
        };
        let (np, detected) = normalize_locale_path(&normalized, &i18n.locales);
        if detected.is_some() || np.starts_with("/_next/") {
            return req.path.clone();
        }
        let host = hostname(req.host.as_deref());
        let locale = default_locale(i18n, host.as_deref());
        let p = if np == "/" {
            format!("/{locale}")
        } else {
            format!("/{locale}{np}")
        };
        let p = add_prefix(&p, if had_base_path { bp } else { "" });
        if req.path.ends_with('/') {
            maybe_add_trailing_slash(p, self.trailing_slash)
        } else {
            p
        }
    }

    /// Whether next start's filesystem check finds a page at `path` only by its decoded spelling
    /// (see `decoded_page_not_found`): the page is invoked and renders a 404, or for a
    /// `_next/data` request of an app with middleware answers `{}` (base-server.js
    /// `renderToResponseImpl`).
    pub fn names_page_by_decoded_spelling(&self, path: &str, host: Option<&str>) -> bool {
        self.decoded_page_not_found(path, host).is_some()
    }

    /// The configured locale `pathname` names after the basePath, if any.
    pub fn path_locale(&self, pathname: &str) -> Option<String> {
        let i18n = self.i18n.as_ref()?;
        let rest = remove_prefix(pathname, &self.base_path);
        normalize_locale_path(&rest, &i18n.locales)
            .1
            .map(str::to_string)
    }

    /// `req.url`'s path once next-server and the pages route module handled it (see
    /// [`crate::Router::no_fallback_retry`]).
    fn declined_request_path(&self, raw: &str) -> String {
        let bp = self.base_path.as_str();
        // base-server.js: `parseUrl(req.url.replace(/^\/+/, '/'))`, getNextPathnameInfo.
        let trimmed = raw.trim_start_matches('/');
        let path = format!("/{trimmed}");
        let mut url = if !bp.is_empty() && has_prefix(&path, bp) {
            remove_prefix(&path, bp).into_owned()
        } else {
            path
        };
        if let Some(i18n) = &self.i18n {
            let data_page = url
                .strip_prefix("/_next/data/")
                .filter(|r| r.ends_with(".json"))
                .and_then(|r| r.split_once('/').map(|(_, p)| format!("/{p}")));
            match data_page {
                // A data URL keeps its path here (getNextPathnameInfo without `parseData`).
                Some(_) => {}
                None => {
                    let (p, locale) = normalize_locale_path(&url, &i18n.locales);
                    if locale.is_some() {
                        url = p;
                    }
                }
            }
        }
        // route-module.js `prepare`: the basePath again, `normalizeDataPath`, the locale.
        let mut out = if bp.is_empty() {
            url
        } else {
            remove_prefix(&url, bp).into_owned()
        };
        let mut pathname = out.clone();
        if has_prefix(&pathname, "/_next/data") {
            let rest = &pathname["/_next/data".len()..];
            // `.replace(/\/_next\/data\/[^/]{1,}/, '')`
            let rest = match rest.strip_prefix('/') {
                Some(r) if !r.is_empty() && !r.starts_with('/') => {
                    let end = r.find('/').unwrap_or(r.len());
                    &r[end..]
                }
                _ => rest,
            };
            let rest = rest.strip_suffix(".json").unwrap_or(rest);
            pathname = if rest == "/index" {
                "/".into()
            } else {
                rest.to_string()
            };
        }
        if let Some(i18n) = &self.i18n {
            let (p, locale) = normalize_locale_path(&pathname, &i18n.locales);
            if locale.is_some() {
                out = p;
            }
        }
        out
    }

    /// Every pass router-server.js makes without middleware: [`crate::Router::resolve`], then
    /// again while a page declines the path (see [`crate::Router::no_fallback_retry`]). The
    /// headers of every pass are kept (next start sets them on the one response), later passes
    /// winning.
    pub fn resolve_all_passes(&self, req: &crate::RequestInfo) -> crate::Resolution {
        let mut req = req.clone();
        let mut declined: Vec<String> = Vec::new();
        let mut earlier: Vec<(String, String)> = Vec::new();
        loop {
            let r = match self.start(&req) {
                crate::Step::Done(r) => r,
                crate::Step::Continue(mut state) => {
                    state.set_declined(declined.clone());
                    self.finish(state)
                }
            };
            match r {
                crate::Resolution::NotFound {
                    headers,
                    request_headers,
                    declined: Some(page),
                    ..
                } if declined.len() + 1 < Self::MAX_PASSES => {
                    crate::Resolution::merge_headers(&mut earlier, headers);
                    declined.push(page);
                    req = self.no_fallback_retry(&req, &request_headers);
                }
                r => return r.with_earlier_headers(earlier),
            }
        }
    }
}

impl crate::Resolution {
    /// Sets `later` over `earlier` by name (next start's `res.setHeader` per routing pass).
    pub fn merge_headers(earlier: &mut Vec<(String, String)>, later: Vec<(String, String)>) {
        for (k, v) in later {
            earlier.retain(|(ek, _)| !ek.eq_ignore_ascii_case(&k));
            earlier.push((k, v));
        }
    }

    /// This resolution with the headers earlier routing passes set under its own (see
    /// [`crate::Router::no_fallback_retry`]).
    pub fn with_earlier_headers(self, earlier: Vec<(String, String)>) -> Self {
        if earlier.is_empty() {
            return self;
        }
        let under = |own: Vec<(String, String)>| {
            let mut all = earlier.clone();
            Self::merge_headers(&mut all, own);
            all
        };
        use crate::Resolution as R;
        match self {
            R::Redirect {
                status,
                location,
                headers,
                next_start_headers,
            } => R::Redirect {
                status,
                location,
                headers: under(headers),
                next_start_headers: under(next_start_headers),
            },
            R::ExternalRewrite {
                url,
                headers,
                request_headers,
                status,
            } => R::ExternalRewrite {
                url,
                headers: under(headers),
                request_headers,
                status,
            },
            R::Output(mut o) => {
                o.headers = under(std::mem::take(&mut o.headers));
                R::Output(o)
            }
            R::NotFound {
                headers,
                request_headers,
                status,
                declined,
            } => R::NotFound {
                headers: under(headers),
                request_headers,
                status,
                declined,
            },
            r @ R::Rejected { .. } => r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_manifest::I18nDomain;

    fn i18n() -> I18nConfig {
        I18nConfig {
            locales: vec!["en-US".into(), "fr".into(), "nl-NL".into()],
            default_locale: "en-US".into(),
            domains: vec![
                I18nDomain {
                    domain: "example.com".into(),
                    default_locale: "en-US".into(),
                    locales: vec![],
                    http: None,
                },
                I18nDomain {
                    domain: "fr.example.test".into(),
                    default_locale: "fr".into(),
                    locales: vec![],
                    http: Some(true),
                },
            ],
            locale_detection: None,
        }
    }

    fn redirect(path: &str, query: Option<&str>, host: &str, al: Option<&str>) -> Option<String> {
        locale_redirect(
            &i18n(),
            "/docs",
            true,
            &LocaleRequest {
                path,
                query,
                host: Some(host),
                cookie: None,
                accept_language: al,
            },
        )
    }

    #[test]
    fn locale_redirect_is_relative_and_domain_redirects_drop_the_base_path() {
        assert_eq!(
            redirect("/docs/", None, "localhost:3000", Some("nl-NL")).as_deref(),
            Some("/docs/nl-NL/")
        );
        assert_eq!(
            redirect("/docs/", Some("q=1"), "localhost:3000", Some("fr")).as_deref(),
            Some("/docs/fr/?q=1")
        );
        assert_eq!(
            redirect("/docs/", None, "example.com", Some("fr")).as_deref(),
            Some("http://fr.example.test/")
        );
        // The host's domain decides before the cookie and the header.
        assert_eq!(redirect("/docs/", None, "example.com", Some("nl-NL")), None);
        assert_eq!(
            redirect("/docs/fr/", None, "localhost", Some("nl-NL")),
            None
        );
        assert_eq!(
            redirect("/docs/static/", None, "localhost", Some("fr")),
            None
        );
        // next matches Accept-Language tokens untrimmed and rejects malformed headers.
        assert_eq!(accept_language("de, fr", &i18n().locales), None);
        assert_eq!(accept_language("nl", &i18n().locales), Some("nl-NL"));
        assert_eq!(accept_language("fr-FR", &i18n().locales), None);
        assert_eq!(accept_language("fr;x=1", &i18n().locales), None);
        assert_eq!(accept_language("*", &i18n().locales), Some("en-US"));
    }

    #[test]
    fn internal_routes_see_the_path_without_default_locale() {
        let c = i18n();
        let p = |path: &str| internal_route_path(path, "/docs", &c, "en-US", true);
        assert_eq!(p("/docs/en-US"), "/docs");
        assert_eq!(p("/docs/en-US/"), "/docs/");
        assert_eq!(p("/docs/en-US/static"), "/docs/static");
        assert_eq!(p("/docs/fr/static"), "/docs/fr/static");
        assert_eq!(p("/en-US/outside"), "/outside");
        assert_eq!(p("/en-US/outside/"), "/outside/");
    }

    #[test]
    fn unmatched_optional_params_compile_like_prepare_destination() {
        let params = source_params("/docs/en-US/opt/:a/:b?");
        assert_eq!(
            params,
            vec![("a".to_string(), None), ("b".to_string(), Some('?'))]
        );
        let groups = RegexMatch::new("xone", vec![Some(0..1), Some(1..4), None], vec![]);
        assert_eq!(
            redirect_template("/docs/ssr?a=$1&b=$2", &groups, &params),
            "/docs/ssr?a=$1&b=:b"
        );
        let params = source_params("/docs/:nextInternalLocale(en\\-US|fr)/wild/:rest*");
        assert_eq!(params[1], ("rest".to_string(), Some('*')));
        let groups = RegexMatch::new("xfr", vec![Some(0..1), Some(1..3), None], vec![]);
        assert_eq!(
            redirect_template("/docs/$1/catch/$2", &groups, &params),
            "/docs/$1/catch"
        );
    }
}
