//! Content types and build-time compression of static files.

use std::io::Write as _;
use std::path::Path;

use ferry_manifest::Encoding;

/// Files at or below this size are not precompressed (the saving does not pay for a second
/// lookup and the headers).
pub const MIN_COMPRESS_SIZE: u64 = 1024;

/// The `Content-Type` `next start` sends for a file served by name (`.next/static`, `public/`).
///
/// `next start` serves those through `send`: the base type from the `mime` database, plus
/// `; charset=UTF-8` for `text/*`, `application/javascript` and `application/json`.
pub fn content_type_for(name: &str) -> String {
    let ext = extension(name);
    let base = match ext.as_str() {
        // `mime_guess` says `text/javascript`; `next start` sends `application/javascript`.
        "js" | "mjs" => "application/javascript".to_string(),
        "map" => "application/json".to_string(),
        "ico" => "image/x-icon".to_string(),
        "rsc" => "text/x-component".to_string(),
        "webmanifest" => "application/manifest+json".to_string(),
        _ => mime_guess::from_ext(&ext)
            .first()
            .map(|m| m.essence_str().to_string())
            .unwrap_or_else(|| "application/octet-stream".to_string()),
    };
    with_charset(base)
}

/// The `Content-Type` of an adapter static output (`/404`, `/500`, `*.rsc` fallbacks), which
/// `next start` renders itself rather than serving by name.
pub fn content_type_for_output(pathname: &str, file: &Path) -> String {
    if pathname.ends_with(".rsc") {
        return "text/x-component".to_string();
    }
    let file_name = file.to_string_lossy();
    match extension(&file_name).as_str() {
        "html" | "htm" => "text/html; charset=utf-8".to_string(),
        "json" => "application/json".to_string(),
        _ => content_type_for(&file_name),
    }
}

fn with_charset(base: String) -> String {
    if base.starts_with("text/") || base == "application/javascript" || base == "application/json" {
        format!("{base}; charset=UTF-8")
    } else {
        base
    }
}

fn extension(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => ext.to_ascii_lowercase(),
        _ => String::new(),
    }
}

/// Whether a body of this type gains from compression (the list `next start` compresses).
pub use ferry_http::is_compressible;

/// Brotli at quality 11 (build time, so the slowest, smallest setting).
pub fn brotli(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len() / 3);
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 64 * 1024, 11, 22);
        w.write_all(data)?;
        w.flush()?;
    }
    Ok(out)
}

/// Gzip at level 9.
pub fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 3),
        flate2::Compression::best(),
    );
    enc.write_all(data)?;
    enc.finish()
}

/// Compresses `data` in both encodings and returns the variants that are smaller than it.
pub fn variants(data: &[u8]) -> std::io::Result<Vec<(Encoding, Vec<u8>)>> {
    let mut out = Vec::new();
    for enc in [Encoding::Br, Encoding::Gzip] {
        let packed = match enc {
            Encoding::Br => brotli(data)?,
            Encoding::Gzip => gzip(data)?,
        };
        if packed.len() < data.len() {
            out.push((enc, packed));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    #[test]
    fn content_types_match_next_start() {
        // Values observed from `next start` 16.4.6 (curl) and its `send` mime table.
        assert_eq!(
            content_type_for("/_next/static/chunks/0a.js"),
            "application/javascript; charset=UTF-8"
        );
        assert_eq!(content_type_for("a.css"), "text/css; charset=UTF-8");
        assert_eq!(content_type_for("/ferry.png"), "image/png");
        assert_eq!(content_type_for("/robots.txt"), "text/plain; charset=UTF-8");
        assert_eq!(
            content_type_for("/data.json"),
            "application/json; charset=UTF-8"
        );
        assert_eq!(content_type_for("/logo.svg"), "image/svg+xml");
        assert_eq!(content_type_for("/favicon.ico"), "image/x-icon");
        assert_eq!(content_type_for("/f.woff2"), "font/woff2");
        assert_eq!(content_type_for("/noext"), "application/octet-stream");
        assert_eq!(
            content_type_for_output("/404", Path::new("/x/404.html")),
            "text/html; charset=utf-8"
        );
        assert_eq!(
            content_type_for_output("/a.rsc", Path::new("/x/rsc-fallback.json")),
            "text/x-component"
        );
    }

    #[test]
    fn compressibility() {
        assert!(is_compressible("application/javascript; charset=UTF-8"));
        assert!(is_compressible("image/svg+xml"));
        assert!(is_compressible("application/manifest+json"));
        assert!(!is_compressible("image/png"));
        assert!(!is_compressible("font/woff2"));
    }

    #[test]
    fn variants_round_trip_and_skip_incompressible_data() {
        let text = "export const x = 'hello world';\n".repeat(200);
        let vs = variants(text.as_bytes()).expect("compress");
        assert_eq!(vs.len(), 2);
        for (enc, packed) in vs {
            let mut back = Vec::new();
            match enc {
                Encoding::Br => {
                    brotli::Decompressor::new(&packed[..], 4096)
                        .read_to_end(&mut back)
                        .expect("br");
                }
                Encoding::Gzip => {
                    flate2::read::GzDecoder::new(&packed[..])
                        .read_to_end(&mut back)
                        .expect("gz");
                }
            }
            assert_eq!(back, text.as_bytes());
        }
        let mut noise = vec![0u8; 4096];
        crate::ids::random_bytes(&mut noise).expect("random");
        assert!(variants(&noise).expect("compress").is_empty());
    }
}
