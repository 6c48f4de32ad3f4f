//! `next start`'s ETag: `generateETag` from `next/dist/server/lib/etag.js`, a 52-bit FNV-1a over
//! the body's UTF-16 code units (the body is a JS string there), printed in base 36, followed by
//! the string length in base 36. Byte-identical to next's for identical bodies.

/// FNV-1a, 52-bit variant, over UTF-16 code units (a port of next's `fnv1a52`).
pub fn fnv1a52(units: impl IntoIterator<Item = u16>) -> u64 {
    let (mut v0, mut v1, mut v2, mut v3): (u64, u64, u64, u64) = (0x2325, 0x8422, 0x9ce4, 0xcbf2);
    for c in units {
        v0 ^= u64::from(c);
        let t0 = v0 * 435;
        let mut t1 = v1 * 435;
        let mut t2 = v2 * 435;
        let mut t3 = v3 * 435;
        t2 += v0 << 8;
        t3 += v1 << 8;
        t1 += t0 >> 16;
        v0 = t0 & 65535;
        t2 += t1 >> 16;
        v1 = t1 & 65535;
        v3 = (t3 + (t2 >> 16)) & 65535;
        v2 = t2 & 65535;
    }
    (v3 & 15) * 281_474_976_710_656 + v2 * 4_294_967_296 + v1 * 65536 + (v0 ^ (v3 >> 4))
}

/// `n.toString(36)`.
fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    if n == 0 {
        return "0".into();
    }
    let mut out = Vec::with_capacity(12);
    while n > 0 {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// The strong ETag next start sends for `body` (`"…"`, quotes included). The body is decoded as
/// UTF-8 with replacement characters, as Node's `Buffer#toString()` does.
pub fn generate_etag(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut len: u64 = 0;
    let hash = fnv1a52(text.encode_utf16().inspect(|_| len += 1));
    format!("\"{}{}\"", base36(hash), base36(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_next_generate_etag() {
        // Expected values computed with next 16.4.6's own `generateETag` in Node.
        assert_eq!(
            generate_etag("héllo wörld ✓ 😀".as_bytes()),
            "\"ouz8mbtl1ng\""
        );
        assert_eq!(generate_etag(b""), "\"78p3gz236i0\"");
        assert_eq!(generate_etag(&[0x61, 0xff, 0xfe, 0x62]), "\"1vydl1wci24\"");
        assert_eq!(
            generate_etag("a".repeat(100_000).as_bytes()),
            "\"xif2w3ca6i255s\""
        );
    }
}
