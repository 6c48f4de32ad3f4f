//! Replays the `image_decode` fuzz corpus (`fuzz/corpus/image_decode/`) through the same harness
//! as the fuzz target, on stable: every input must finish without a panic, in bounded time.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod support {
    pub mod fuzz_input;
}
use support::fuzz_input;

/// Per input, generous for an unoptimized build (the fuzzer enforces its own `-timeout`).
const PER_INPUT: Duration = Duration::from_secs(60);

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/image_decode")
}

/// Runs `data` on its own thread: `Err` on a panic or when it takes longer than `PER_INPUT`.
fn run_bounded(data: Vec<u8>) -> Result<Duration, String> {
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    std::thread::spawn(move || {
        let ok = std::panic::catch_unwind(|| fuzz_input::run(&data)).is_ok();
        let _ = tx.send(ok);
    });
    match rx.recv_timeout(PER_INPUT) {
        Ok(true) => Ok(start.elapsed()),
        Ok(false) => Err("panicked".into()),
        Err(_) => Err(format!("took longer than {PER_INPUT:?}")),
    }
}

#[test]
fn fuzz_corpus_replays() {
    let mut entries: Vec<_> = std::fs::read_dir(corpus_dir())
        .expect("corpus directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    assert!(
        entries.len() >= 20,
        "corpus too small: {} files",
        entries.len()
    );
    let mut failures = Vec::new();
    for path in &entries {
        let data = std::fs::read(path).expect("corpus file");
        if let Err(why) = run_bounded(data) {
            failures.push(format!("{}: {why}", path.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "corpus failures:\n{}",
        failures.join("\n")
    );
}

#[test]
fn harness_transforms_a_seed() {
    // The harness really reaches the encoder (a corpus of early rejections would prove little).
    let png = {
        let img = image::RgbaImage::from_fn(16, 8, |x, y| {
            image::Rgba([x as u8 * 16, y as u8 * 32, 7, 200])
        });
        let mut out = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .expect("encode png");
        out
    };
    let mut data = vec![1, 7, 0, 74]; // webp, width 8, quality 75
    data.extend_from_slice(&png);
    let (mime, width, quality, body) = fuzz_input::split(&data).expect("header");
    assert_eq!((mime, width, quality), ("image/webp", 8, 75));
    let out =
        ferry_image::transform_source(body, mime, width, quality, fuzz_input::FUZZ_MAX_PIXELS)
            .expect("transform")
            .expect("transformed, not served as is");
    assert_eq!(out.1, "image/webp");
    let decoded = image::load_from_memory(&out.0).expect("decode output");
    assert_eq!((decoded.width(), decoded.height()), (8, 4));
}
