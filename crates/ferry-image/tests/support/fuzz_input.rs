//! Fuzz input → one run of the optimizer's synchronous path (`ferry_image::transform_source`),
//! shared by the `image_decode` fuzz target (`fuzz/fuzz_targets/image_decode.rs`) and the corpus
//! replay test (`tests/fuzz_corpus.rs`).
//!
//! Layout: byte 0 picks the negotiated type, bytes 1–2 the width, byte 3 the quality; the rest
//! is the fetched body.

/// Negotiated output types (empty: keep the source's type), as `Accept` negotiation gives them.
pub const MIME_TYPES: [&str; 5] = ["", "image/webp", "image/jpeg", "image/png", "image/avif"];

/// Pixel limit for fuzzing: smaller than sharp's default so a forged header that passes the
/// check still decodes quickly; the check itself is the same code.
pub const FUZZ_MAX_PIXELS: u64 = 1 << 22;

/// Pixel limit when the output is AVIF: AV1 encoding costs ~1 s per 100k pixels unoptimized, and
/// a width cap alone does not bound the output (a 17×64502 source stays 17×64502 at w=128, no
/// upscaling: three corpus inputs took over 60 s each). With the source at most 64k pixels every
/// AVIF run stays short and still reaches the encoder; the limit check is the same code.
pub const FUZZ_MAX_AVIF_PIXELS: u64 = 1 << 16;

/// The run's parameters and body.
pub fn split(data: &[u8]) -> Option<(&'static str, u32, u8, &[u8])> {
    let (head, body) = data.split_at_checked(4)?;
    let mime = MIME_TYPES[usize::from(head[0]) % MIME_TYPES.len()];
    let width = u32::from(u16::from_le_bytes([head[1], head[2]])) % 4096 + 1;
    // Small AVIF outputs keep each run within the fuzzer's timeout (see FUZZ_MAX_AVIF_PIXELS).
    let width = if mime == "image/avif" {
        width.min(128)
    } else {
        width
    };
    let quality = head[3] % 100 + 1;
    Some((mime, width, quality, body))
}

/// The source pixel limit for one output type.
pub fn max_pixels(mime: &str) -> u64 {
    if mime == "image/avif" {
        FUZZ_MAX_AVIF_PIXELS
    } else {
        FUZZ_MAX_PIXELS
    }
}

/// Runs one input; the result is ignored (errors are answers), only panics and hangs count.
pub fn run(data: &[u8]) {
    if let Some((mime, width, quality, body)) = split(data) {
        let _ = ferry_image::transform_source(body, mime, width, quality, max_pixels(mime));
    }
}
