//! `Accept-Encoding` negotiation.
//!
//! Rules (RFC 9110 §12.5.3, decided like a careful server):
//! - a coding is acceptable when it is listed with q > 0, or `*` is listed with q > 0 and the coding
//!   is not listed itself; `q=0` always excludes;
//! - the highest q wins; at equal q Brotli beats gzip (smaller, and every browser that sends `br`
//!   decodes it);
//! - `identity` listed explicitly with a q strictly higher than the best coding wins (no coding);
//! - `x-gzip` is an alias of `gzip`; tokens are case-insensitive; a q value that does not parse
//!   as a number excludes its token (safer than guessing).

use ferry_manifest::Encoding;

/// One parsed `Accept-Encoding` element.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Pref<'a> {
    coding: &'a str,
    q: f32,
}

fn parse(accept_encoding: &str) -> impl Iterator<Item = Pref<'_>> {
    accept_encoding.split(',').filter_map(|part| {
        let mut params = part.split(';');
        let coding = params.next()?.trim();
        if coding.is_empty() {
            return None;
        }
        let mut q = 1.0_f32;
        for p in params {
            let p = p.trim();
            if let Some((k, v)) = p.split_once('=')
                && k.trim().eq_ignore_ascii_case("q")
            {
                // An unparsable q excludes the token rather than guessing.
                q = v.trim().parse::<f32>().unwrap_or(0.0).clamp(0.0, 1.0);
            }
        }
        Some(Pref { coding, q })
    })
}

fn matches(coding: &str, enc: Encoding) -> bool {
    match enc {
        Encoding::Br => coding.eq_ignore_ascii_case("br"),
        Encoding::Gzip => {
            coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip")
        }
    }
}

/// The q value the client gives `enc`: its own entry, else `*`, else 0.
fn q_for(accept_encoding: &str, enc: Encoding) -> f32 {
    let mut star = None;
    let mut own: Option<f32> = None;
    for p in parse(accept_encoding) {
        if matches(p.coding, enc) {
            // Several entries for one coding: the highest wins.
            own = Some(own.map_or(p.q, |o| o.max(p.q)));
        } else if p.coding == "*" {
            star = Some(p.q);
        }
    }
    own.or(star).unwrap_or(0.0)
}

/// Picks the content coding to send among `available`, or `None` for identity.
pub fn negotiate(accept_encoding: &str, available: &[Encoding]) -> Option<Encoding> {
    if accept_encoding.trim().is_empty() || available.is_empty() {
        return None;
    }
    let mut best: Option<(Encoding, f32)> = None;
    // Brotli first so it wins ties.
    for enc in [Encoding::Br, Encoding::Gzip] {
        if !available.contains(&enc) {
            continue;
        }
        let q = q_for(accept_encoding, enc);
        if q > 0.0 && best.is_none_or(|(_, bq)| q > bq) {
            best = Some((enc, q));
        }
    }
    let (enc, q) = best?;
    let identity_q = parse(accept_encoding)
        .filter(|p| p.coding.eq_ignore_ascii_case("identity"))
        .map(|p| p.q)
        .fold(None, |acc: Option<f32>, q| {
            Some(acc.map_or(q, |a| a.max(q)))
        });
    match identity_q {
        Some(iq) if iq > q => None,
        _ => Some(enc),
    }
}

/// The coding `next start` applies to a dynamic response: its `compression` middleware offers only
/// gzip (and deflate, which Ferry does not implement), never Brotli. Measured on next 16.4.6:
/// `Accept-Encoding: br` alone gets identity, `gzip;q=0.5, br;q=1` gets gzip.
pub fn negotiate_dynamic(accept_encoding: &str) -> Option<Encoding> {
    negotiate(accept_encoding, &[Encoding::Gzip])
}

#[cfg(test)]
mod tests {
    use super::*;
    use Encoding::{Br, Gzip};

    const BOTH: &[Encoding] = &[Gzip, Br];

    #[test]
    fn prefers_br_at_equal_q() {
        assert_eq!(negotiate("gzip, deflate, br", BOTH), Some(Br));
        assert_eq!(negotiate("br, gzip", BOTH), Some(Br));
        assert_eq!(negotiate("*", BOTH), Some(Br));
    }

    #[test]
    fn honours_q_values() {
        assert_eq!(negotiate("br;q=0.5, gzip;q=0.8", BOTH), Some(Gzip));
        assert_eq!(negotiate("gzip;q=0.5, br;q=1", BOTH), Some(Br));
        assert_eq!(negotiate("br;q=0, gzip", BOTH), Some(Gzip));
        assert_eq!(negotiate("br;q=0", BOTH), None);
        assert_eq!(negotiate("*;q=0", BOTH), None);
        assert_eq!(negotiate("*;q=0.1, br;q=0", BOTH), Some(Gzip));
        assert_eq!(negotiate("gzip; q=0.000", BOTH), None);
        assert_eq!(negotiate("GZIP;Q=0.3", BOTH), Some(Gzip));
        assert_eq!(negotiate("x-gzip", BOTH), Some(Gzip));
        assert_eq!(negotiate("br;q=abc, gzip", BOTH), Some(Gzip));
    }

    #[test]
    fn identity_and_absent_codings() {
        assert_eq!(negotiate("identity", BOTH), None);
        assert_eq!(negotiate("", BOTH), None);
        assert_eq!(negotiate("deflate", BOTH), None);
        assert_eq!(negotiate("gzip;q=0.5, identity", BOTH), None);
        assert_eq!(negotiate("gzip, identity;q=0.5", BOTH), Some(Gzip));
        assert_eq!(negotiate("br", &[Gzip]), None);
        assert_eq!(negotiate("gzip, br", &[]), None);
    }

    #[test]
    fn dynamic_mirrors_next_start_gzip_only() {
        // Measured from next start 16.4.6 on a compressible chunk.
        assert_eq!(negotiate_dynamic("br"), None);
        assert_eq!(negotiate_dynamic("br, gzip"), Some(Gzip));
        assert_eq!(negotiate_dynamic("gzip;q=0.5, br;q=1"), Some(Gzip));
        assert_eq!(negotiate_dynamic("*"), Some(Gzip));
        assert_eq!(negotiate_dynamic("gzip;q=0"), None);
    }
}
