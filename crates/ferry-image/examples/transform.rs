//! Runs the optimizer's transform on one file, as `/_next/image` would, for each output type
//! (JPEG, PNG, WebP, AVIF):
//! `transform <input> <out-dir> <width> <quality> [repeats]`. Prints one line per type
//! (`type bytes median_ms`) and writes `<out-dir>/ferry.<ext>`.

use std::time::Instant;

use ferry_image::{config, detect, transform};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, input, out, width, quality, rest @ ..] = args.as_slice() else {
        return Err("usage: transform <input> <out-dir> <width> <quality> [repeats]".into());
    };
    let repeats: usize = rest.first().map_or(Ok(5), |r| r.parse())?;
    let bytes = std::fs::read(input)?;
    let (width, quality): (u32, u8) = (width.parse()?, quality.parse()?);
    // FERRY_TYPES=webp,jpeg limits the output types (profiling one codec).
    let only = std::env::var("FERRY_TYPES").unwrap_or_default();
    for ty in [detect::JPEG, detect::PNG, detect::WEBP, detect::AVIF] {
        let ext = detect::extension(ty).unwrap_or("bin");
        if !only.is_empty() && !only.split(',').any(|t| t == ext) {
            continue;
        }
        let mut times = Vec::new();
        let mut output = Vec::new();
        for _ in 0..repeats.max(1) {
            let start = Instant::now();
            output =
                transform::optimize(&bytes, ty, width, quality, config::DEFAULT_MAX_INPUT_PIXELS)?;
            times.push(start.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        std::fs::write(format!("{out}/ferry.{ext}"), &output)?;
        println!("{ext} {} {:.1}", output.len(), times[times.len() / 2]);
    }
    Ok(())
}
