//! The binary form of a [`CachedEntry`] on disk and in Redis.
//!
//! Layout (integers big-endian): `FRYC`, a version byte, then the fields (pathname, status,
//! headers, tags, revalidate, expire, created in ns since the epoch, etag, the PPR postponed
//! state, body), each string or byte field length-prefixed, and last a 64-bit checksum of
//! everything before it. Versions:
//!
//! - `3` (written now): the postponed state is an optional field (flag byte, then the value);
//!   the checksum is XXH3-64, which checks a page at memory speed (a disk hit without a memory
//!   tier decodes the file on every request; FNV-1a, one multiply per byte, was most of it).
//! - `1` (no postponed state) and `2` (with one, no flag byte), checksum FNV-1a 64: written by
//!   earlier Ferry versions, still read, so a store survives the upgrade.
//!
//! A truncated or corrupt value fails to decode (a cache miss), it never panics.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::CachedEntry;

const MAGIC: &[u8; 4] = b"FRYC";
/// Earlier entries without a postponed state (FNV-1a checksum; read only).
const VERSION_1: u8 = 1;
/// Earlier entries with a PPR postponed state before the body (FNV-1a checksum; read only).
const VERSION_2: u8 = 2;
/// Entries written now: optional postponed state, XXH3-64 checksum.
const VERSION: u8 = 3;

/// Why a stored value could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not an entry of this format or version.
    #[error("not a Ferry cache entry (bad magic or version)")]
    Format,
    /// Ends before its fields do.
    #[error("truncated cache entry")]
    Truncated,
    /// The checksum does not match.
    #[error("corrupt cache entry (checksum mismatch)")]
    Checksum,
    /// A field holds an invalid value (status, header, UTF-8).
    #[error("invalid cache entry field: {0}")]
    Field(&'static str),
}

/// FNV-1a 64: the checksum of versions 1 and 2, and the entry file name hash.
pub(crate) fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Nanoseconds since the epoch (0 before it).
pub(crate) fn to_nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The inverse of [`to_nanos`].
pub(crate) fn from_nanos(n: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(n)
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u64).to_be_bytes());
    out.extend_from_slice(b);
}

fn put_opt(out: &mut Vec<u8>, v: Option<u64>) {
    match v {
        Some(v) => {
            out.push(1);
            out.extend_from_slice(&v.to_be_bytes());
        }
        None => out.push(0),
    }
}

/// Encodes an entry.
pub fn encode(e: &CachedEntry) -> Vec<u8> {
    let mut out = Vec::with_capacity(e.body.len() + 512);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    put_bytes(&mut out, e.pathname.as_bytes());
    out.extend_from_slice(&e.status.as_u16().to_be_bytes());
    out.extend_from_slice(&(e.headers.len() as u64).to_be_bytes());
    for (k, v) in &e.headers {
        put_bytes(&mut out, k.as_str().as_bytes());
        put_bytes(&mut out, v.as_bytes());
    }
    out.extend_from_slice(&(e.tags.len() as u64).to_be_bytes());
    for t in &e.tags {
        put_bytes(&mut out, t.as_bytes());
    }
    put_opt(&mut out, e.revalidate);
    put_opt(&mut out, e.expire);
    out.extend_from_slice(&to_nanos(e.created).to_be_bytes());
    match e.etag() {
        Some(v) => {
            out.push(1);
            put_bytes(&mut out, v.as_bytes());
        }
        None => out.push(0),
    }
    match &e.postponed {
        Some(p) => {
            out.push(1);
            put_bytes(&mut out, p.as_bytes());
        }
        None => out.push(0),
    }
    put_bytes(&mut out, &e.body);
    let sum = checksum(VERSION, &out);
    out.extend_from_slice(&sum.to_be_bytes());
    out
}

/// The checksum a version uses: XXH3-64 (against truncation and bit rot, not tampering) from
/// version 3 on, FNV-1a 64 before.
fn checksum(version: u8, data: &[u8]) -> u64 {
    if version >= VERSION {
        xxhash_rust::xxh3::xxh3_64(data)
    } else {
        fnv1a64(data)
    }
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        let s = self.data.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = usize::try_from(self.u64()?).map_err(|_| DecodeError::Truncated)?;
        self.take(n)
    }
    fn string(&mut self) -> Result<String, DecodeError> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| DecodeError::Field("utf-8"))
    }
    fn opt(&mut self) -> Result<Option<u64>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.u64()?)),
            _ => Err(DecodeError::Field("option flag")),
        }
    }
}

/// Decodes an entry written by [`encode`].
pub fn decode(data: &Bytes) -> Result<CachedEntry, DecodeError> {
    if data.len() < MAGIC.len() + 1 + 8 {
        return Err(DecodeError::Truncated);
    }
    if &data[..4] != MAGIC || !matches!(data[4], VERSION_1 | VERSION_2 | VERSION) {
        return Err(DecodeError::Format);
    }
    let version = data[4];
    let (payload, sum) = data.split_at(data.len() - 8);
    let mut s = [0u8; 8];
    s.copy_from_slice(sum);
    if checksum(version, payload) != u64::from_be_bytes(s) {
        return Err(DecodeError::Checksum);
    }
    let mut r = Reader {
        data: payload,
        pos: 5,
    };
    let pathname = r.string()?;
    let status = StatusCode::from_u16(r.u16()?).map_err(|_| DecodeError::Field("status"))?;
    let n = r.u64()?;
    // Sized up front, bounded: `n` is read from the value before it is proven sane.
    let mut headers = HeaderMap::with_capacity(usize::try_from(n).unwrap_or(0).min(64));
    for _ in 0..n {
        let name =
            HeaderName::from_bytes(r.bytes()?).map_err(|_| DecodeError::Field("header name"))?;
        // Values share the buffer read (no copy per header).
        let value = HeaderValue::from_maybe_shared(data.slice_ref(r.bytes()?))
            .map_err(|_| DecodeError::Field("header value"))?;
        headers.append(name, value);
    }
    let n = r.u64()?;
    let mut tags = Vec::new();
    for _ in 0..n {
        tags.push(r.string()?);
    }
    let revalidate = r.opt()?;
    let expire = r.opt()?;
    let created = from_nanos(r.u64()?);
    let etag = match r.u8()? {
        0 => None,
        1 => Some(
            HeaderValue::from_maybe_shared(data.slice_ref(r.bytes()?))
                .map_err(|_| DecodeError::Field("etag"))?,
        ),
        _ => return Err(DecodeError::Field("etag flag")),
    };
    let has_postponed = match version {
        VERSION_1 => false,
        VERSION_2 => true,
        _ => match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(DecodeError::Field("postponed flag")),
        },
    };
    let postponed = if has_postponed {
        let p = std::str::from_utf8(r.bytes()?).map_err(|_| DecodeError::Field("postponed"))?;
        Some(std::sync::Arc::from(p))
    } else {
        None
    };
    let start = r.pos;
    let len = usize::try_from(r.u64()?).map_err(|_| DecodeError::Truncated)?;
    let body_start = start + 8;
    r.take(len)?;
    if r.pos != payload.len() {
        return Err(DecodeError::Field("trailing bytes"));
    }
    // Zero-copy: the body shares the buffer read from disk or Redis.
    let body = data.slice(body_start..body_start + len);
    Ok(CachedEntry::from_parts(
        &pathname, status, headers, body, tags, revalidate, expire, created, etag,
    )
    .with_postponed(postponed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CachedEntry {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("text/html"));
        h.append("x-a", HeaderValue::from_static("1"));
        h.append("x-a", HeaderValue::from_static("2"));
        CachedEntry::new(
            "/isr",
            StatusCode::OK,
            h,
            Bytes::from_static(b"<html>hello</html>"),
            vec!["_N_T_/isr".into(), "a".into()],
            Some(5),
            Some(31_536_000),
            SystemTime::now(),
            true,
        )
    }

    #[test]
    fn round_trips() {
        let e = sample();
        let d = decode(&Bytes::from(encode(&e))).expect("decode");
        assert_eq!(d.pathname, e.pathname);
        assert_eq!(d.status, e.status);
        assert_eq!(d.headers, e.headers);
        assert_eq!(d.body, e.body);
        assert_eq!(d.tags, e.tags);
        assert_eq!((d.revalidate, d.expire), (e.revalidate, e.expire));
        assert_eq!(d.created, e.created);
        assert_eq!(d.etag(), e.etag());
        assert_eq!(d.cache_control(), e.cache_control());
    }

    #[test]
    fn postponed_state_round_trips_in_version_3() {
        let plain = encode(&sample());
        assert_eq!(plain[4], 3, "entries are written as version 3");
        assert!(
            decode(&Bytes::from(plain))
                .expect("plain")
                .postponed
                .is_none()
        );
        let e = sample().with_postponed(Some("{\"state\":1}é".into()));
        let bytes = encode(&e);
        assert_eq!(bytes[4], 3);
        let d = decode(&Bytes::from(bytes.clone())).expect("with postponed");
        assert_eq!(d.postponed.as_deref(), Some("{\"state\":1}é"));
        assert_eq!(d.body, e.body);
        assert_eq!(d.etag(), e.etag());
        for n in [bytes.len() - 9, bytes.len() / 2] {
            assert!(decode(&Bytes::copy_from_slice(&bytes[..n])).is_err(), "{n}");
        }
    }

    /// A version 3 value must carry an XXH3 checksum: the same bytes with the FNV-1a sum of the
    /// older versions are corrupt, not silently accepted.
    #[test]
    fn version_3_rejects_the_old_checksum() {
        let mut bytes = encode(&sample());
        let end = bytes.len() - 8;
        let fnv = fnv1a64(&bytes[..end]);
        bytes[end..].copy_from_slice(&fnv.to_be_bytes());
        assert!(matches!(
            decode(&Bytes::from(bytes)),
            Err(DecodeError::Checksum)
        ));
    }

    /// A version 2 value (PPR postponed state, FNV-1a) written by an earlier Ferry still decodes.
    #[test]
    fn decodes_a_frozen_version_2_value() {
        let mut v = Vec::new();
        v.extend_from_slice(b"FRYC\x02");
        put_bytes(&mut v, b"/ppr");
        v.extend_from_slice(&200u16.to_be_bytes());
        v.extend_from_slice(&1u64.to_be_bytes()); // headers
        put_bytes(&mut v, b"content-type");
        put_bytes(&mut v, b"text/html");
        v.extend_from_slice(&1u64.to_be_bytes()); // tags
        put_bytes(&mut v, b"t");
        put_opt(&mut v, Some(5));
        put_opt(&mut v, Some(60));
        v.extend_from_slice(&7u64.to_be_bytes()); // created
        v.push(1);
        put_bytes(&mut v, b"\"e\"");
        put_bytes(&mut v, b"{\"s\":1}"); // postponed, no flag byte in version 2
        put_bytes(&mut v, b"shell");
        let sum = fnv1a64(&v);
        v.extend_from_slice(&sum.to_be_bytes());
        let d = decode(&Bytes::from(v)).expect("decode");
        assert_eq!((d.pathname.as_str(), &d.body[..]), ("/ppr", &b"shell"[..]));
        assert_eq!(d.postponed.as_deref(), Some("{\"s\":1}"));
        assert_eq!(d.headers["content-type"], "text/html");
        assert_eq!(d.tags, vec!["t".to_owned()]);
        assert_eq!(d.etag().map(HeaderValue::as_bytes), Some(&b"\"e\""[..]));
    }

    /// A version 1 value written by an earlier Ferry (bytes frozen here) still decodes.
    #[test]
    fn decodes_a_frozen_version_1_value() {
        let mut v = Vec::new();
        v.extend_from_slice(b"FRYC\x01");
        put_bytes(&mut v, b"/p");
        v.extend_from_slice(&200u16.to_be_bytes());
        v.extend_from_slice(&0u64.to_be_bytes()); // headers
        v.extend_from_slice(&0u64.to_be_bytes()); // tags
        put_opt(&mut v, Some(5));
        put_opt(&mut v, None);
        v.extend_from_slice(&7u64.to_be_bytes()); // created
        v.push(0); // no etag
        put_bytes(&mut v, b"shell");
        let sum = fnv1a64(&v);
        v.extend_from_slice(&sum.to_be_bytes());
        let d = decode(&Bytes::from(v)).expect("decode");
        assert_eq!((d.pathname.as_str(), &d.body[..]), ("/p", &b"shell"[..]));
        assert_eq!((d.revalidate, d.postponed), (Some(5), None));
    }

    #[test]
    fn truncated_or_flipped_values_are_errors() {
        let bytes = encode(&sample());
        for n in [0, 3, 5, 20, bytes.len() - 9, bytes.len() - 1] {
            assert!(decode(&Bytes::copy_from_slice(&bytes[..n])).is_err(), "{n}");
        }
        for i in [5, 30, bytes.len() / 2, bytes.len() - 3] {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(decode(&Bytes::from(b)).is_err(), "flip at {i}");
        }
    }
}
