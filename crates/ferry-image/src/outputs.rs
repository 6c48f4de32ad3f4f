//! One transform per distinct output: requests whose cache keys differ but whose optimized bytes
//! cannot (the same source asked for at several widths at or above its own, which
//! `next/image`'s `srcset` does for every image narrower than the largest device size) share
//! one decode + encode, coalesced while it runs and remembered within a byte budget after.
//!
//! next start transforms each cache key on its own; each key still gets its own cache entry
//! here (next's disk layout), only the work is shared. The output is a function of the source
//! bytes, the output type, the quality and the width actually produced (`min(w, upright source
//! width)`, never upscaled), so the key is built from exactly those.

use std::future::Future;
use std::io::Cursor;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use image::{ImageDecoder, ImageReader};
use tokio::sync::OnceCell;

use crate::cache::Lru;
use crate::fetch;

/// Bytes of finished outputs remembered for later requests with the same output key (they are
/// mostly the same `Bytes` as the memory tier's entries, so this costs little on top).
pub const REMEMBERED_BYTES: u64 = 16 * 1024 * 1024;

/// What a transform gave, shareable between the requests that wait for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The optimized bytes and their ETag (base64url SHA-256, next's `getImageEtag`).
    Encoded {
        /// The output.
        bytes: Bytes,
        /// Its ETag.
        etag: String,
    },
    /// The source is over the pixel limit (the message says by how much).
    TooLarge(String),
    /// The transform failed (or panicked): the source is served as it is.
    Failed(String),
}

impl Outcome {
    /// An encoded output with its ETag computed.
    pub fn encoded(bytes: Bytes) -> Self {
        let etag = fetch::hash(&[&bytes]);
        Self::Encoded { bytes, etag }
    }
}

/// What identifies one output: source, produced width, quality and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputKey(String);

impl OutputKey {
    /// The key for `source` (fetched from `href` with upstream ETag `etag`) transformed into
    /// `content_type` at request width `width` and `quality`; `None` when the source's header
    /// cannot be read (the transform then runs on its own and reports the error).
    ///
    /// `href` and `etag` are both in it: an ETag alone can be the same for two files (a weak
    /// size-and-mtime validator), and the same `href` can serve new bytes.
    pub fn new(
        href: &str,
        etag: &str,
        source: &[u8],
        content_type: &str,
        width: u32,
        quality: u8,
    ) -> Option<Self> {
        let produced = width.min(upright_width(source)?).max(1);
        Some(Self(fetch::hash(&[
            href.as_bytes(),
            b"\n",
            etag.as_bytes(),
            b"\n",
            &(source.len() as u64).to_le_bytes(),
            content_type.as_bytes(),
            b"\n",
            &produced.to_le_bytes(),
            &[quality],
        ])))
    }
}

/// The source's width once turned upright (EXIF orientation), from its header alone.
fn upright_width(source: &[u8]) -> Option<u32> {
    let mut decoder = ImageReader::new(Cursor::new(source))
        .with_guessed_format()
        .ok()?
        .into_decoder()
        .ok()?;
    let (w, h) = decoder.dimensions();
    let quarter_turn = decoder
        .orientation()
        .ok()
        .is_some_and(crate::transform::swaps_axes);
    Some(if quarter_turn { h } else { w })
}

type Cell = Arc<OnceCell<Outcome>>;

/// Running and recently finished transforms by [`OutputKey`].
#[derive(Default)]
pub struct Outputs {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    cells: std::collections::HashMap<String, Cell>,
    /// Finished outputs by size and recency, within [`REMEMBERED_BYTES`].
    lru: Lru,
}

impl Outputs {
    /// The outcome for `key`: a remembered one, the one being made, or `make`'s (run here when
    /// nobody else is making it). Without a key, `make` runs on its own.
    pub async fn get_or_make<F, Fut>(&self, key: Option<OutputKey>, make: F) -> Outcome
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Outcome>,
    {
        let Some(OutputKey(key)) = key else {
            return make().await;
        };
        let cell = {
            let Ok(mut state) = self.state.lock() else {
                return make().await;
            };
            state.lru.touch(&key);
            Arc::clone(state.cells.entry(key.clone()).or_default())
        };
        let mut made = false;
        let outcome = cell
            .get_or_init(|| {
                made = true;
                make()
            })
            .await
            .clone();
        if made {
            self.finished(&key, &cell, &outcome);
        }
        outcome
    }

    /// Keeps a successful output within the budget; forgets a failure (a later request tries
    /// again, as next would).
    fn finished(&self, key: &str, cell: &Cell, outcome: &Outcome) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        // Only the cell this flight made: an evicted key may have a newer one by now.
        if !state.cells.get(key).is_some_and(|c| Arc::ptr_eq(c, cell)) {
            return;
        }
        let size = match outcome {
            Outcome::Encoded { bytes, .. } => bytes.len() as u64,
            Outcome::TooLarge(_) | Outcome::Failed(_) => 0,
        };
        match state.lru.insert(key, size, REMEMBERED_BYTES) {
            Some(evicted) => {
                for old in evicted {
                    state.cells.remove(&old);
                }
            }
            // A failure, or an output larger than the whole budget.
            None => {
                state.cells.remove(key);
            }
        }
    }

    /// How many outputs are remembered or being made.
    pub fn len(&self) -> usize {
        self.state.lock().map_or(0, |s| s.cells.len())
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let mut out = Vec::new();
        image::RgbImage::from_pixel(w, h, image::Rgb([10, 20, 30]))
            .write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
            .expect("png");
        out
    }

    fn key(source: &[u8], width: u32) -> Option<OutputKey> {
        OutputKey::new("/a.png", "etag", source, "image/webp", width, 75)
    }

    #[test]
    fn widths_at_or_above_the_source_share_a_key_and_smaller_ones_do_not() {
        let src = png(300, 200);
        let at = key(&src, 300);
        assert!(at.is_some());
        assert_eq!(key(&src, 640), at);
        assert_eq!(key(&src, 3840), at);
        assert_ne!(key(&src, 256), at);
        assert_ne!(key(&src, 256), key(&src, 128));
        // Anything else that changes the bytes changes the key.
        let other = |href, etag, ct, q| OutputKey::new(href, etag, &src, ct, 640, q);
        assert_ne!(other("/b.png", "etag", "image/webp", 75), at);
        assert_ne!(other("/a.png", "etag2", "image/webp", 75), at);
        assert_ne!(other("/a.png", "etag", "image/avif", 75), at);
        assert_ne!(other("/a.png", "etag", "image/webp", 76), at);
        assert_ne!(key(&png(301, 200), 640), at);
        // No readable header: no key.
        assert_eq!(key(b"not an image", 640), None);
    }

    #[test]
    fn a_quarter_turn_caps_at_the_upright_width() {
        // rotated.jpg: 900x600 with EXIF orientation 6 (a quarter turn), 600 px wide upright.
        let src = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/rotated.jpg"
        ))
        .expect("fixture");
        let (w, h) = crate::transform::dimensions(&src).expect("header");
        assert_eq!(upright_width(&src), Some(w.min(h)));
        assert!(w != h);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_and_later_requests_share_one_make() {
        let outputs = Arc::new(Outputs::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let src = png(300, 200);
        let mut tasks = Vec::new();
        for width in [300, 640, 750, 828, 3840] {
            let (outputs, runs, k) = (outputs.clone(), runs.clone(), key(&src, width));
            tasks.push(tokio::spawn(async move {
                outputs
                    .get_or_make(k, || async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        Outcome::encoded(Bytes::from_static(b"out"))
                    })
                    .await
            }));
        }
        for t in tasks {
            assert_eq!(
                t.await.expect("task"),
                Outcome::encoded(Bytes::from_static(b"out"))
            );
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // Later: remembered.
        let again = outputs
            .get_or_make(key(&src, 1080), || async { Outcome::Failed("ran".into()) })
            .await;
        assert_eq!(again, Outcome::encoded(Bytes::from_static(b"out")));
        // A smaller width is another output.
        let small = outputs
            .get_or_make(key(&src, 256), || async {
                Outcome::encoded(Bytes::from_static(b"small"))
            })
            .await;
        assert_eq!(small, Outcome::encoded(Bytes::from_static(b"small")));
        assert_eq!(outputs.len(), 2);
    }

    #[tokio::test]
    async fn failures_are_not_remembered_and_the_budget_holds() {
        let outputs = Outputs::default();
        let src = png(300, 200);
        let failed = outputs
            .get_or_make(key(&src, 640), || async { Outcome::Failed("boom".into()) })
            .await;
        assert_eq!(failed, Outcome::Failed("boom".into()));
        assert!(outputs.is_empty());
        let retried = outputs
            .get_or_make(key(&src, 640), || async {
                Outcome::encoded(Bytes::from_static(b"ok"))
            })
            .await;
        assert_eq!(retried, Outcome::encoded(Bytes::from_static(b"ok")));
        // Outputs past the budget push the oldest out.
        let big = Bytes::from(vec![0u8; (REMEMBERED_BYTES / 2) as usize]);
        for width in [10, 20, 30] {
            let b = big.clone();
            outputs
                .get_or_make(key(&src, width), || async move { Outcome::encoded(b) })
                .await;
        }
        assert_eq!(outputs.len(), 2);
        // Larger than the whole budget: served, not kept.
        let huge = Bytes::from(vec![0u8; REMEMBERED_BYTES as usize + 1]);
        outputs
            .get_or_make(key(&src, 40), || async move { Outcome::encoded(huge) })
            .await;
        assert_eq!(outputs.len(), 2);
        // Without a key, nothing is shared.
        let runs = AtomicUsize::new(0);
        for _ in 0..2 {
            outputs
                .get_or_make(None, || async {
                    runs.fetch_add(1, Ordering::SeqCst);
                    Outcome::Failed("x".into())
                })
                .await;
        }
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }
}
