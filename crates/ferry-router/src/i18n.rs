//! Locale detection, mirroring `@next/routing`'s `i18n.ts`.

use ferry_manifest::{I18nConfig, I18nDomain};

use crate::urls::decode_uri_component;

/// `detectDomainLocale`: the domain entry for a host name or a locale.
pub(crate) fn detect_domain_locale<'a>(
    domains: &'a [I18nDomain],
    hostname: Option<&str>,
    detected_locale: Option<&str>,
) -> Option<&'a I18nDomain> {
    let host = hostname.map(str::to_lowercase);
    let loc = detected_locale.map(str::to_lowercase);
    domains.iter().find(|d| {
        let domain_host = d
            .domain
            .split(':')
            .next()
            .unwrap_or_default()
            .to_lowercase();
        host.as_deref() == Some(domain_host.as_str())
            || loc.as_deref() == Some(d.default_locale.to_lowercase().as_str())
            || d.locales.iter().any(|l| Some(l.to_lowercase()) == loc)
    })
}

/// `normalizeLocalePath`: strips a leading locale segment; returns (pathname, locale).
pub(crate) fn normalize_locale_path<'a>(
    pathname: &str,
    locales: &'a [String],
) -> (String, Option<&'a str>) {
    if locales.is_empty() {
        return (pathname.to_string(), None);
    }
    let Some(seg) = pathname.split('/').nth(1).filter(|s| !s.is_empty()) else {
        return (pathname.to_string(), None);
    };
    let seg = seg.to_lowercase();
    let Some(locale) = locales.iter().find(|l| l.to_lowercase() == seg) else {
        return (pathname.to_string(), None);
    };
    // JS slices by the configured locale's UTF-16 length; locales are ASCII in practice.
    let rest = pathname.get(locale.len() + 1..).unwrap_or_default();
    let rest = if rest.is_empty() { "/" } else { rest };
    (rest.to_string(), Some(locale.as_str()))
}

/// JS `parseFloat` on the `[0-9.]+` capture of `q=`.
fn parse_quality(s: &str) -> f64 {
    let mut end = 0;
    let mut seen_dot = false;
    for (i, c) in s.char_indices() {
        if c == '.' && !seen_dot {
            seen_dot = true;
        } else if !c.is_ascii_digit() {
            break;
        }
        end = i + 1;
    }
    s[..end].parse::<f64>().unwrap_or(f64::NAN)
}

/// `getAcceptLanguageLocale`.
pub(crate) fn accept_language_locale<'a>(header: &str, locales: &'a [String]) -> Option<&'a str> {
    if header.is_empty() || locales.is_empty() {
        return None;
    }
    let mut prefs: Vec<(String, f64)> = header
        .split(',')
        .map(|part| {
            let mut pieces = part.trim().split(';');
            let locale = pieces.next().unwrap_or_default().to_string();
            let mut q = 1.0;
            if let Some(p) = pieces.next().filter(|p| !p.is_empty())
                && let Some(i) = p.find("q=")
            {
                {
                    let digits: String = p[i + 2..]
                        .chars()
                        .take_while(|c| c.is_ascii_digit() || *c == '.')
                        .collect();
                    if !digits.is_empty() {
                        q = parse_quality(&digits);
                    }
                }
            }
            (locale, q)
        })
        .filter(|(_, q)| *q > 0.0)
        .collect();
    prefs.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal));
    // A Map keyed by lowercase locale: the last configured spelling wins.
    let lookup = |lc: &str| locales.iter().rev().find(|l| l.to_lowercase() == lc);
    let mut order: Vec<(String, &String)> = Vec::new();
    for l in locales {
        let lc = l.to_lowercase();
        if !order.iter().any(|(k, _)| *k == lc) {
            order.push((lc.clone(), lookup(&lc).unwrap_or(l)));
        }
    }
    for (locale, _) in &prefs {
        if let Some(l) = lookup(&locale.to_lowercase()) {
            return Some(l);
        }
    }
    for (locale, _) in &prefs {
        let lc = locale.to_lowercase();
        let base = lc.split('-').next().unwrap_or_default();
        if let Some(l) = lookup(base) {
            return Some(l);
        }
        let prefix = format!("{base}-");
        if let Some((_, l)) = order.iter().find(|(k, _)| k.starts_with(&prefix)) {
            return Some(l);
        }
    }
    None
}

/// `getCookieLocale`: the `NEXT_LOCALE` cookie, if it names a configured locale.
pub(crate) fn cookie_locale<'a>(cookie: Option<&str>, locales: &'a [String]) -> Option<&'a str> {
    let cookie = cookie.filter(|c| !c.is_empty())?;
    if locales.is_empty() {
        return None;
    }
    let mut value: Option<String> = None;
    for part in cookie.split(';') {
        let mut it = part.trim().split('=');
        let name = it.next().unwrap_or_default();
        let rest: Vec<&str> = it.collect();
        if !name.is_empty() && !rest.is_empty() {
            // decodeURIComponent throwing on any cookie aborts the whole lookup in JS.
            let v = decode_uri_component(&rest.join("="))?;
            if name == "NEXT_LOCALE" {
                value = Some(v);
            }
        }
    }
    let wanted = value.filter(|v| !v.is_empty())?.to_lowercase();
    locales
        .iter()
        .find(|l| l.to_lowercase() == wanted)
        .map(String::as_str)
}

/// `detectLocale` (only the locale is needed by the caller).
pub(crate) fn detect_locale<'a>(
    pathname: &str,
    hostname: Option<&str>,
    cookie: Option<&str>,
    accept_language: Option<&str>,
    i18n: &'a I18nConfig,
) -> &'a str {
    if let (_, Some(l)) = normalize_locale_path(pathname, &i18n.locales) {
        return l;
    }
    if i18n.locale_detection == Some(false) {
        return detect_domain_locale(&i18n.domains, hostname, None)
            .map(|d| d.default_locale.as_str())
            .filter(|l| !l.is_empty())
            .unwrap_or(&i18n.default_locale);
    }
    if let Some(l) = cookie_locale(cookie, &i18n.locales) {
        return l;
    }
    if let Some(l) = accept_language_locale(accept_language.unwrap_or_default(), &i18n.locales) {
        return l;
    }
    if let Some(d) = detect_domain_locale(&i18n.domains, hostname, None) {
        return &d.default_locale;
    }
    &i18n.default_locale
}

#[cfg(test)]
mod tests {
    use super::*;

    fn locales() -> Vec<String> {
        vec!["en-US".into(), "fr".into(), "nl-NL".into()]
    }

    #[test]
    fn accept_language_prefers_quality_then_prefix() {
        let l = locales();
        assert_eq!(
            accept_language_locale("de, fr;q=0.5, en-us;q=0.9", &l),
            Some("en-US")
        );
        assert_eq!(accept_language_locale("nl;q=0.8", &l), Some("nl-NL"));
        assert_eq!(accept_language_locale("fr-CA", &l), Some("fr"));
        assert_eq!(accept_language_locale("fr;q=0", &l), None);
    }

    #[test]
    fn locale_path_and_cookie() {
        let l = locales();
        assert_eq!(
            normalize_locale_path("/FR/a", &l),
            ("/a".to_string(), Some("fr"))
        );
        assert_eq!(
            normalize_locale_path("/fr", &l),
            ("/".to_string(), Some("fr"))
        );
        assert_eq!(normalize_locale_path("/de/a", &l).1, None);
        assert_eq!(cookie_locale(Some("a=1; NEXT_LOCALE=FR"), &l), Some("fr"));
        assert_eq!(cookie_locale(Some("a=%E0; NEXT_LOCALE=fr"), &l), None);
    }
}
