//! `Range: bytes=…` parsing, following `next start` (its `send` + `range-parser` with
//! `combine: true`) except where that is a bug against RFC 9110.
//!
//! - A unit other than `bytes` is ignored (200), as next start does.
//! - Overlapping or adjacent ranges are combined; if more than one range is left, the header is
//!   ignored and the whole file sent with 200 (next start does the same; we never send
//!   `multipart/byteranges`).
//! - No satisfiable range (start past the end, `5-3`, junk) → 416 with `Content-Range: bytes */N`.
//! - Deviation: a suffix range longer than the file (`bytes=-99999` on a 15 KB file) selects the
//!   whole file (206) as RFC 9110 §14.1.3 says; next start answers 416 there.

/// What to do with a request's `Range` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeDecision {
    /// Ignore it and send the whole representation (200).
    Full,
    /// Send bytes `start..=end` (206).
    Partial {
        /// First byte offset.
        start: u64,
        /// Last byte offset, inclusive.
        end: u64,
    },
    /// 416 with `Content-Range: bytes */size`.
    Unsatisfiable,
}

/// More range specs than this are not worth combining: the header is ignored (anti-abuse).
const MAX_SPECS: usize = 64;

/// Decides how to answer `Range: <header>` for a representation of `size` bytes.
pub fn parse_range(header: &str, size: u64) -> RangeDecision {
    let header = header.trim();
    let Some((unit, specs)) = header.split_once('=') else {
        return RangeDecision::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return RangeDecision::Full;
    }
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for (i, spec) in specs.split(',').enumerate() {
        if i >= MAX_SPECS {
            return RangeDecision::Full;
        }
        if let Some(r) = parse_spec(spec.trim(), size) {
            ranges.push(r);
        }
    }
    if ranges.is_empty() {
        return RangeDecision::Unsatisfiable;
    }
    ranges.sort_unstable();
    let mut combined: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (s, e) in ranges {
        match combined.last_mut() {
            Some(last) if s <= last.1.saturating_add(1) => last.1 = last.1.max(e),
            _ => combined.push((s, e)),
        }
    }
    match combined.as_slice() {
        [(start, end)] => RangeDecision::Partial {
            start: *start,
            end: *end,
        },
        _ => RangeDecision::Full,
    }
}

/// One `first-last` / `first-` / `-suffix` spec, clamped to the file; `None` if unsatisfiable.
fn parse_spec(spec: &str, size: u64) -> Option<(u64, u64)> {
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if a.is_empty() {
        if !digits(b) {
            return None;
        }
        let n: u64 = b.parse().ok()?;
        if n == 0 || size == 0 {
            return None;
        }
        return Some((size.saturating_sub(n), size - 1));
    }
    if !digits(a) {
        return None;
    }
    let start: u64 = a.parse().ok()?;
    let end: u64 = if b.is_empty() {
        size.checked_sub(1)?
    } else if digits(b) {
        // Very long digit strings saturate: the end is clamped to the file anyway.
        b.parse::<u64>().unwrap_or(u64::MAX)
    } else {
        return None;
    };
    if start >= size || start > end {
        return None;
    }
    Some((start, end.min(size - 1)))
}

#[cfg(test)]
mod tests {
    use super::RangeDecision::*;
    use super::*;

    const N: u64 = 15725;

    #[test]
    fn single_ranges_measured_from_next_start() {
        // Values measured from next start 16.4.6 on a 15725-byte chunk.
        assert_eq!(parse_range("bytes=0-9", N), Partial { start: 0, end: 9 });
        assert_eq!(
            parse_range("bytes=-5", N),
            Partial {
                start: 15720,
                end: 15724
            }
        );
        assert_eq!(
            parse_range("bytes=15720-", N),
            Partial {
                start: 15720,
                end: 15724
            }
        );
        assert_eq!(
            parse_range("bytes=0-99999", N),
            Partial {
                start: 0,
                end: 15724
            }
        );
    }

    #[test]
    fn multiple_ranges_combine_or_fall_back_to_full() {
        assert_eq!(parse_range("bytes=0-9,20-29", N), Full);
        assert_eq!(parse_range("bytes=0-0,-1", N), Full);
        assert_eq!(
            parse_range("bytes=0-9, 5-20", N),
            Partial { start: 0, end: 20 }
        );
        assert_eq!(
            parse_range("bytes=10-19,0-9", N),
            Partial { start: 0, end: 19 }
        );
    }

    #[test]
    fn unsatisfiable_and_ignored() {
        assert_eq!(parse_range("bytes=99999-", N), Unsatisfiable);
        assert_eq!(parse_range("bytes=20000-30000", N), Unsatisfiable);
        assert_eq!(parse_range("bytes=5-3", N), Unsatisfiable);
        assert_eq!(parse_range("bytes=abc", N), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", N), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
        assert_eq!(parse_range("items=0-5", N), Full);
        assert_eq!(parse_range("garbage", N), Full);
        assert_eq!(
            parse_range("bytes=99999999999999999999999-", N),
            Unsatisfiable
        );
    }

    #[test]
    fn suffix_longer_than_file_is_whole_file_per_rfc() {
        assert_eq!(
            parse_range("bytes=-99999", N),
            Partial {
                start: 0,
                end: N - 1
            }
        );
    }
}
