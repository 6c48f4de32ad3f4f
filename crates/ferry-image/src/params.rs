//! Request validation: next's `ImageOptimizerCache.validateParams`, message for message.

use url::Url;

use crate::config::{ImageConfig, LocalPattern, RemotePattern};

/// A validated `/_next/image` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// The source: the `url` as given when local, the normalized URL when absolute.
    pub href: String,
    /// Whether `href` is an absolute (remote) URL.
    pub is_absolute: bool,
    /// Whether `href` is a hashed build asset (`/_next/static/media/...`): immutable headers.
    pub is_static: bool,
    /// Requested width.
    pub width: u32,
    /// Requested quality (1..=100).
    pub quality: u8,
    /// Output type negotiated from `Accept` and `formats`; empty for "the source's type".
    pub mime_type: String,
}

/// One query value: node's querystring gives a string, or an array for a repeated key.
enum Value {
    One(String),
    Many,
}

/// node's `querystring.parse`: `+` is a space, repeated keys make arrays.
fn query_value(query: &str, key: &str) -> Option<Value> {
    let mut found: Option<Value> = None;
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if k == key {
            found = Some(match found {
                None => Value::One(v.into_owned()),
                Some(_) => Value::Many,
            });
        }
    }
    found
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Validates the query of a `/_next/image` request the way next start does; the error is the
/// 400 body next sends.
pub fn validate(
    query: &str,
    accept: Option<&str>,
    config: &ImageConfig,
    base_path: &str,
) -> Result<Params, String> {
    let err = |m: &str| Err(m.to_owned());
    let url = match query_value(query, "url") {
        None => return err("\"url\" parameter is required"),
        Some(Value::One(u)) if u.is_empty() => return err("\"url\" parameter is required"),
        Some(Value::Many) => return err("\"url\" parameter cannot be an array"),
        Some(Value::One(u)) => u,
    };
    // JS string length counts UTF-16 units.
    if url.encode_utf16().count() > 3072 {
        return err("\"url\" parameter is too long");
    }
    if url.starts_with("//") {
        return err("\"url\" parameter cannot be a protocol-relative URL (//)");
    }
    let (href, is_absolute) = if url.starts_with('/') {
        let parsed = local_url(&url);
        let pathname = parsed.as_ref().map(|u| u.path()).unwrap_or_default();
        let decoded = percent_encoding::percent_decode_str(pathname).decode_utf8_lossy();
        if is_recursive(&decoded) {
            return err("\"url\" parameter cannot be recursive");
        }
        if let Some(patterns) = &config.local_patterns {
            let allowed = parsed
                .as_ref()
                .is_some_and(|u| patterns.iter().any(|p| local_match(p, u)));
            if !allowed {
                return err("\"url\" parameter is not allowed");
            }
        }
        (url.clone(), false)
    } else {
        let Ok(parsed) = Url::parse(&url) else {
            return err("\"url\" parameter is invalid");
        };
        if !matches!(parsed.scheme(), "http" | "https") {
            return err("\"url\" parameter is invalid");
        }
        let host = parsed.host_str().unwrap_or_default();
        let allowed = config.domains.iter().any(|d| d == host)
            || config
                .remote_patterns
                .iter()
                .any(|p| remote_match(p, &parsed));
        if !allowed {
            return err("\"url\" parameter is not allowed");
        }
        (parsed.to_string(), true)
    };
    let w = match query_value(query, "w") {
        None => return err("\"w\" parameter (width) is required"),
        Some(Value::One(w)) if w.is_empty() => return err("\"w\" parameter (width) is required"),
        Some(Value::Many) => return err("\"w\" parameter (width) cannot be an array"),
        Some(Value::One(w)) if !all_digits(&w) => {
            return err("\"w\" parameter (width) must be an integer greater than 0");
        }
        Some(Value::One(w)) => w,
    };
    let q = match query_value(query, "q") {
        None => return err("\"q\" parameter (quality) is required"),
        Some(Value::One(q)) if q.is_empty() => return err("\"q\" parameter (quality) is required"),
        Some(Value::Many) => return err("\"q\" parameter (quality) cannot be an array"),
        Some(Value::One(q)) if !all_digits(&q) => {
            return err("\"q\" parameter (quality) must be an integer between 1 and 100");
        }
        Some(Value::One(q)) => q,
    };
    // Digits only: a parse failure is an overflow, which JS reads as a huge (disallowed) number.
    let width = w.parse::<u64>().unwrap_or(u64::MAX);
    if width == 0 {
        return err("\"w\" parameter (width) must be an integer greater than 0");
    }
    let allowed_width = config
        .device_sizes
        .iter()
        .chain(&config.image_sizes)
        .any(|&s| u64::from(s) == width);
    let width = match u32::try_from(width) {
        Ok(w) if allowed_width => w,
        _ => return Err(format!("\"w\" parameter (width) of {w} is not allowed")),
    };
    let quality = q.parse::<u64>().unwrap_or(u64::MAX);
    if !(1..=100).contains(&quality) {
        return err("\"q\" parameter (quality) must be an integer between 1 and 100");
    }
    if let Some(qualities) = &config.qualities
        && !qualities.iter().any(|&x| u64::from(x) == quality)
    {
        return Err(format!("\"q\" parameter (quality) of {q} is not allowed"));
    }
    let mime_type = supported_mime_type(&config.formats, accept.unwrap_or(""));
    let is_static = url.starts_with(&format!("{base_path}/_next/static/media"))
        || url.starts_with(&format!("{base_path}/_next/static/immutable/media"));
    Ok(Params {
        href,
        is_absolute,
        is_static,
        width,
        quality: u8::try_from(quality).unwrap_or(100),
        mime_type,
    })
}

/// A local url resolved the way next does (`new URL(url, 'http://n')`).
fn local_url(url: &str) -> Option<Url> {
    Url::parse("http://n").ok()?.join(url).ok()
}

/// next's `/\/_next\/image($|\/)/` on the decoded pathname.
fn is_recursive(pathname: &str) -> bool {
    pathname.match_indices("/_next/image").any(|(at, m)| {
        let rest = &pathname[at + m.len()..];
        rest.is_empty() || rest.starts_with('/')
    })
}

/// WHATWG `URL.search`: `""` for no or an empty query.
fn search(url: &Url) -> String {
    match url.query() {
        Some(q) if !q.is_empty() => format!("?{q}"),
        _ => String::new(),
    }
}

fn local_match(p: &LocalPattern, url: &Url) -> bool {
    if let Some(s) = &p.search
        && *s != search(url)
    {
        return false;
    }
    glob_match(p.pathname.as_deref().unwrap_or("**"), url.path())
}

fn remote_match(p: &RemotePattern, url: &Url) -> bool {
    if let Some(proto) = &p.protocol
        && proto.trim_end_matches(':') != url.scheme()
    {
        return false;
    }
    if let Some(port) = &p.port {
        let actual = url.port().map(|p| p.to_string()).unwrap_or_default();
        if *port != actual {
            return false;
        }
    }
    // next throws on a pattern without hostname; such a pattern matches nothing here.
    let Some(host) = &p.hostname else {
        return false;
    };
    if !glob_match(host, url.host_str().unwrap_or_default()) {
        return false;
    }
    if let Some(s) = &p.search
        && *s != search(url)
    {
        return false;
    }
    glob_match(p.pathname.as_deref().unwrap_or("**"), url.path())
}

/// picomatch's glob subset that next documents: `**` spans segments (`/**` also matches
/// nothing), `*` is one non-empty segment or part of one, `?` one character.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let mut re = String::from("^");
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '*' {
            let double = chars.get(i + 1) == Some(&'*');
            let seg_start = i == 0 || chars[i - 1] == '/';
            let after = if double { i + 2 } else { i + 1 };
            let seg_end = after == chars.len() || chars[after] == '/';
            if double && seg_start && seg_end {
                if after == chars.len() {
                    // `/**` at the end: the directory itself or anything below it.
                    if re.ends_with('/') {
                        re.pop();
                        re.push_str("(?:/.*)?");
                    } else {
                        re.push_str(".*");
                    }
                    i = after;
                } else {
                    // `**/`: zero or more whole segments.
                    re.push_str("(?:.*/)?");
                    i = after + 1;
                }
                continue;
            }
            re.push_str(if seg_start && seg_end {
                "[^/]+"
            } else {
                "[^/]*"
            });
            i = after;
            continue;
        }
        if c == '?' {
            re.push_str("[^/]");
        } else {
            let mut buf = [0u8; 4];
            for ch in c.encode_utf8(&mut buf).chars() {
                if "\\^$.|+()[]{}".contains(ch) {
                    re.push('\\');
                }
                re.push(ch);
            }
        }
        i += 1;
    }
    re.push('$');
    regress::Regex::new(&re)
        .map(|r| r.find(text).is_some())
        .unwrap_or(false)
}

/// `@hapi/accept`'s `mediaType(accept, formats)`, kept only when the winner is spelled out in
/// `Accept` (next's `accept.includes(mimeType)`): `""` otherwise.
pub fn supported_mime_type(formats: &[String], accept: &str) -> String {
    if formats.is_empty() {
        return String::new();
    }
    let ranges: Vec<(String, f32)> = accept
        .split(',')
        .filter_map(|part| {
            let mut it = part.split(';');
            let range = it.next()?.trim().to_ascii_lowercase();
            if range.is_empty() {
                return None;
            }
            let mut q = 1.0f32;
            for p in it {
                if let Some((k, v)) = p.split_once('=')
                    && k.trim().eq_ignore_ascii_case("q")
                {
                    q = v.trim().parse().unwrap_or(0.0);
                }
            }
            Some((range, q))
        })
        .collect();
    let winner = if ranges.is_empty() {
        formats.first().cloned()
    } else {
        // hapi's `mediaType`: the highest q wins, then the more specific range (so
        // `image/webp,*/*` picks WebP over an AVIF that only `*/*` covers), then `formats` order.
        let mut best: Option<(&String, f32, u8)> = None;
        for f in formats {
            let lower = f.to_ascii_lowercase();
            let ty = lower.split('/').next().unwrap_or("");
            // The most specific range that covers the format decides its q.
            let (spec, q) = ranges
                .iter()
                .filter_map(|(r, q)| {
                    let spec = if *r == lower {
                        3u8
                    } else if r.strip_suffix("/*") == Some(ty) {
                        2
                    } else if r == "*/*" {
                        1
                    } else {
                        return None;
                    };
                    Some((spec, *q))
                })
                .max_by_key(|(spec, _)| *spec)
                .unwrap_or((0, 0.0));
            if q > 0.0 && best.is_none_or(|(_, bq, bs)| q > bq || (q == bq && spec > bs)) {
                best = Some((f, q, spec));
            }
        }
        best.map(|(f, _, _)| f.clone())
    };
    match winner {
        Some(m) if accept.contains(m.as_str()) => m,
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ImageConfig {
        ImageConfig {
            local_patterns: Some(vec![LocalPattern {
                pathname: Some("**".into()),
                search: Some(String::new()),
            }]),
            ..ImageConfig::default()
        }
    }

    fn msg(q: &str) -> String {
        validate(q, Some("image/webp"), &cfg(), "").expect_err(q)
    }

    #[test]
    fn messages_match_next() {
        assert_eq!(msg(""), "\"url\" parameter is required");
        assert_eq!(msg("url="), "\"url\" parameter is required");
        assert_eq!(msg("url=/a&url=/b"), "\"url\" parameter cannot be an array");
        assert_eq!(
            msg(&format!("url=/{}", "a".repeat(3072))),
            "\"url\" parameter is too long"
        );
        assert_eq!(
            msg("url=//x.com/a.png&w=640&q=75"),
            "\"url\" parameter cannot be a protocol-relative URL (//)"
        );
        assert_eq!(
            msg("url=%2F_next%2Fimage%3Furl%3D%252Fa.png&w=640&q=75"),
            "\"url\" parameter cannot be recursive"
        );
        assert_eq!(
            msg("url=/a.png%3Fv%3D1&w=640&q=75"),
            "\"url\" parameter is not allowed"
        );
        assert_eq!(msg("url=ftp://x/a.png"), "\"url\" parameter is invalid");
        assert_eq!(msg("url=nope"), "\"url\" parameter is invalid");
        assert_eq!(
            msg("url=https://example.com/a.png"),
            "\"url\" parameter is not allowed"
        );
        assert_eq!(msg("url=/a.png"), "\"w\" parameter (width) is required");
        assert_eq!(
            msg("url=/a.png&w=1&w=2"),
            "\"w\" parameter (width) cannot be an array"
        );
        assert_eq!(
            msg("url=/a.png&w=-1"),
            "\"w\" parameter (width) must be an integer greater than 0"
        );
        assert_eq!(
            msg("url=/a.png&w=640"),
            "\"q\" parameter (quality) is required"
        );
        assert_eq!(
            msg("url=/a.png&w=640&q=x"),
            "\"q\" parameter (quality) must be an integer between 1 and 100"
        );
        assert_eq!(
            msg("url=/a.png&w=0&q=75"),
            "\"w\" parameter (width) must be an integer greater than 0"
        );
        assert_eq!(
            msg("url=/a.png&w=641&q=75"),
            "\"w\" parameter (width) of 641 is not allowed"
        );
        assert_eq!(
            msg("url=/a.png&w=99999999999999999999999&q=75"),
            "\"w\" parameter (width) of 99999999999999999999999 is not allowed"
        );
        assert_eq!(
            msg("url=/a.png&w=640&q=101"),
            "\"q\" parameter (quality) must be an integer between 1 and 100"
        );
        assert_eq!(
            msg("url=/a.png&w=640&q=050"),
            "\"q\" parameter (quality) of 050 is not allowed"
        );
    }

    #[test]
    fn valid_requests() {
        let p = validate(
            "url=%2F_next%2Fstatic%2Fmedia%2Fa.png&w=640&q=75",
            Some("image/avif,image/webp,*/*"),
            &cfg(),
            "",
        )
        .expect("valid");
        assert_eq!(p.href, "/_next/static/media/a.png");
        assert!(p.is_static && !p.is_absolute);
        assert_eq!((p.width, p.quality), (640, 75));
        assert_eq!(p.mime_type, "image/webp");
        let mut c = cfg();
        c.remote_patterns = vec![RemotePattern {
            protocol: Some("https".into()),
            hostname: Some("**.example.com".into()),
            ..RemotePattern::default()
        }];
        let p = validate(
            "url=https://IMG.example.com/a%20b.png&w=32&q=75",
            None,
            &c,
            "",
        )
        .expect("valid remote");
        assert_eq!(p.href, "https://img.example.com/a%20b.png");
        assert!(p.is_absolute);
        assert_eq!(p.mime_type, "");
    }

    #[test]
    fn globs_follow_picomatch() {
        for (p, s, want) in [
            ("/assets/**", "/assets", true),
            ("/assets/**", "/assets/", true),
            ("/assets/**", "/assets/a/b.png", true),
            ("/assets/**", "/assetsx/a.png", false),
            ("/assets/*", "/assets/a/b.png", false),
            ("/assets/*", "/assets/.a.png", true),
            ("/assets/*", "/assets/", false),
            ("**", "/.a/b", true),
            ("*.example.com", "a.b.example.com", true),
            ("*.example.com", "example.com", false),
            ("**.example.com", "a.b.example.com", true),
            ("example.com", "exampleXcom", false),
            ("/a?c", "/abc", true),
            ("/a/**/b.png", "/a/b.png", true),
            ("/a/**/b.png", "/a/x/y/b.png", true),
        ] {
            assert_eq!(glob_match(p, s), want, "{p} vs {s}");
        }
    }

    #[test]
    fn accept_negotiation_follows_hapi() {
        let f = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let both = f(&["image/avif", "image/webp"]);
        for (accept, formats, want) in [
            ("image/avif,image/webp,*/*", &both, "image/avif"),
            ("image/webp,image/avif,*/*", &both, "image/avif"),
            ("image/webp;q=0.9,image/avif;q=0.5", &both, "image/webp"),
            ("image/webp", &both, "image/webp"),
            ("text/html,image/webp;q=0.1", &both, "image/webp"),
            ("image/avif;q=0.5,image/*", &both, ""),
            // Equal q: the more specific range wins (hapi), then `formats` order.
            ("image/webp,*/*", &both, "image/webp"),
            ("image/webp,image/*,*/*;q=0.8", &both, "image/webp"),
            ("image/*;q=0.9,image/webp;q=0.9", &both, "image/webp"),
            ("image/avif;q=0.9,image/webp", &both, "image/webp"),
            ("image/webp,image/avif;q=1", &both, "image/avif"),
            ("*/*", &both, ""),
            ("image/*,image/webp;q=0.5", &both, ""),
            ("*/*", &f(&["image/webp"]), ""),
            ("image/webp;q=0", &f(&["image/webp"]), ""),
            ("IMAGE/WEBP", &f(&["image/webp"]), ""),
            ("", &f(&["image/webp"]), ""),
        ] {
            assert_eq!(supported_mime_type(formats, accept), want, "{accept}");
        }
    }
}
