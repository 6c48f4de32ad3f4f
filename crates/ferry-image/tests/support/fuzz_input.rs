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

/// The run's parameters and body.
pub fn split(data: &[u8]) -> Option<(&'static str, u32, u8, &[u8])> {
    let (head, body) = data.split_at_checked(4)?;
    let mime = MIME_TYPES[usize::from(head[0]) % MIME_TYPES.len()];
    let width = u32::from(u16::from_le_bytes([head[1], head[2]])) % 4096 + 1;
    let quality = head[3] % 100 + 1;
    Some((mime, width, quality, body))
}

/// Runs one input; the result is ignored (errors are answers), only panics and hangs count.
pub fn run(data: &[u8]) {
    if let Some((mime, width, quality, body)) = split(data) {
        let _ = ferry_image::transform_source(body, mime, width, quality, FUZZ_MAX_PIXELS);
    }
}
