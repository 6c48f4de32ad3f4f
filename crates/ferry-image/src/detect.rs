//! Source sniffing: next's `detectContentType` (magic bytes) and `is-animated`.

/// `image/jpeg`.
pub const JPEG: &str = "image/jpeg";
/// `image/png`.
pub const PNG: &str = "image/png";
/// `image/gif`.
pub const GIF: &str = "image/gif";
/// `image/webp`.
pub const WEBP: &str = "image/webp";
/// `image/avif`.
pub const AVIF: &str = "image/avif";
/// `image/svg+xml`.
pub const SVG: &str = "image/svg+xml";
/// `image/x-icon`.
pub const ICO: &str = "image/x-icon";
/// `image/x-icns`.
pub const ICNS: &str = "image/x-icns";
/// `image/tiff`.
pub const TIFF: &str = "image/tiff";
/// `image/bmp`.
pub const BMP: &str = "image/bmp";
/// `image/jxl`.
pub const JXL: &str = "image/jxl";
/// `image/heic`.
pub const HEIC: &str = "image/heic";
/// `image/jp2`.
pub const JP2: &str = "image/jp2";

/// Types served as they are (never transformed), as next's `BYPASS_TYPES`.
pub const BYPASS: &[&str] = &[SVG, ICO, ICNS, BMP, JXL, HEIC];

/// `ftyp` box with a plausible size and the given major brand.
fn has_ftyp(b: &[u8], brand: &[u8; 4]) -> bool {
    if b.len() < 12 {
        return false;
    }
    let size = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    size >= 16 && size <= b.len() && &b[4..8] == b"ftyp" && &b[8..12] == brand
}

/// The source's content type from its first bytes (next's `detectContentType`); `None` when
/// it is no known type (next then answers 400).
pub fn content_type(b: &[u8]) -> Option<&'static str> {
    if b.is_empty() {
        return None;
    }
    let sw = |m: &[u8]| b.starts_with(m);
    if sw(&[0xff, 0xd8, 0xff]) {
        return Some(JPEG);
    }
    if sw(b"\x89PNG\r\n\x1a\n") {
        return Some(PNG);
    }
    if sw(b"GIF8") {
        return Some(GIF);
    }
    if b.len() >= 12 && &b[0..4] == b"RIFF" && &b[8..12] == b"WEBP" {
        return Some(WEBP);
    }
    if sw(b"<?xml") || sw(b"<svg") {
        return Some(SVG);
    }
    if has_ftyp(b, b"avif") {
        return Some(AVIF);
    }
    if sw(&[0, 0, 1, 0]) {
        return Some(ICO);
    }
    if sw(b"icns") {
        return Some(ICNS);
    }
    if sw(&[0x49, 0x49, 0x2a, 0x00]) {
        return Some(TIFF);
    }
    if sw(b"BM") {
        return Some(BMP);
    }
    if sw(&[0xff, 0x0a]) || sw(b"\x00\x00\x00\x0cJXL \r\n\x87\n") {
        return Some(JXL);
    }
    if has_ftyp(b, b"heic") {
        return Some(HEIC);
    }
    if sw(b"%PDF-") {
        return Some("application/pdf");
    }
    if sw(b"\x00\x00\x00\x0cjP  \r\n\x87\n") {
        return Some(JP2);
    }
    // next's fallback detector: big-endian TIFF and SVG after a BOM, whitespace or doctype.
    if sw(&[0x4d, 0x4d, 0x00, 0x2a]) {
        return Some(TIFF);
    }
    let head = &b[..b.len().min(1024)];
    let text = String::from_utf8_lossy(head);
    let text = text.trim_start_matches('\u{feff}').trim_start();
    if text.starts_with("<svg") || (text.starts_with('<') && text.contains("<svg")) {
        return Some(SVG);
    }
    None
}

/// next's `is-animated`: a multi-frame GIF, an APNG, or a WebP with an `ANIM` chunk.
pub fn is_animated(b: &[u8]) -> bool {
    if b.starts_with(b"GIF") {
        return gif_animated(b);
    }
    if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        return png_animated(b);
    }
    if b.get(8..12) == Some(b"WEBP") {
        return b.windows(4).any(|w| w == b"ANIM");
    }
    false
}

fn gif_animated(b: &[u8]) -> bool {
    let at = |i: usize| b.get(i).copied().unwrap_or(0) as usize;
    let blocks = |mut i: usize| {
        let start = i;
        while at(i) != 0 {
            i += at(i) + 1;
        }
        i - start + 1
    };
    let mut i = 13;
    if at(10) & 0x80 != 0 {
        i += 3 * (1 << ((at(10) & 7) + 1));
    }
    let mut frames = 0;
    while frames < 2 && i < b.len() {
        match at(i) {
            0x2c => {
                frames += 1;
                let packed = at(i + 9);
                i += 10;
                if packed & 0x80 != 0 {
                    i += 3 * (1 << ((packed & 7) + 1));
                }
                i += blocks(i + 1) + 1;
            }
            0x21 => {
                i += 2;
                i += blocks(i);
            }
            _ => break,
        }
    }
    frames > 1
}

fn png_animated(b: &[u8]) -> bool {
    let (mut actl, mut idat, mut fdat) = (false, false, false);
    let mut prev: &[u8] = b"";
    let mut i = 8;
    while i + 8 <= b.len() {
        let len = u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]) as usize;
        let kind = &b[i + 4..i + 8];
        match kind {
            b"acTL" => actl = true,
            b"IDAT" => {
                if !actl || (prev != b"fcTL" && prev != b"IDAT") {
                    return false;
                }
                idat = true;
            }
            b"fdAT" => {
                if !idat || (prev != b"fcTL" && prev != b"fdAT") {
                    return false;
                }
                fdat = true;
            }
            _ => {}
        }
        prev = kind;
        i = i.saturating_add(12).saturating_add(len);
    }
    actl && idat && fdat
}

/// The file extension next's `send` mime table gives a content type (`getExtension`).
pub fn extension(content_type: &str) -> Option<&'static str> {
    Some(match content_type {
        JPEG => "jpeg",
        PNG => "png",
        GIF => "gif",
        WEBP => "webp",
        AVIF => "avif",
        SVG => "svg",
        ICO => "ico",
        ICNS => "icns",
        TIFF => "tiff",
        BMP => "bmp",
        JXL => "jxl",
        HEIC => "heic",
        JP2 => "jp2",
        _ => return None,
    })
}

/// The content type of an extension (`getContentType`), for cached entries.
pub fn from_extension(ext: &str) -> Option<&'static str> {
    Some(match ext {
        "jpeg" | "jpg" => JPEG,
        "png" => PNG,
        "gif" => GIF,
        "webp" => WEBP,
        "avif" => AVIF,
        "svg" => SVG,
        "ico" => ICO,
        "icns" => ICNS,
        "tiff" | "tif" => TIFF,
        "bmp" => BMP,
        "jxl" => JXL,
        "heic" => HEIC,
        "jp2" => JP2,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_magic_bytes() {
        assert_eq!(content_type(b"\xff\xd8\xff\xe0"), Some(JPEG));
        assert_eq!(content_type(b"RIFF\0\0\0\0WEBPVP8 "), Some(WEBP));
        assert_eq!(content_type(b"<svg xmlns=''/>"), Some(SVG));
        assert_eq!(content_type(b"  \n<!DOCTYPE svg><svg/>"), Some(SVG));
        assert_eq!(content_type(b"<!--ftypavif--><svg/>"), Some(SVG));
        assert_eq!(content_type(b"User-agent: *"), None);
        assert_eq!(content_type(b""), None);
        assert_eq!(content_type(b"%PDF-1.4"), Some("application/pdf"));
    }

    #[test]
    fn detects_animation() {
        assert!(is_animated(b"RIFF\0\0\0\0WEBPVP8X....ANIM"));
        assert!(!is_animated(b"RIFF\0\0\0\0WEBPVP8 ...."));
        // GIF header, no color table, two image descriptors with empty data.
        let mut gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00".to_vec();
        for _ in 0..2 {
            gif.extend_from_slice(&[0x2c, 0, 0, 0, 0, 1, 0, 1, 0, 0, 2, 0]);
        }
        gif.push(0x3b);
        assert!(is_animated(&gif));
        let single = [&gif[..25], &[0x3b]].concat();
        assert!(!is_animated(&single));
    }
}
