//! Image formats and dimensions read from their headers, so image responses can be compared by
//! what they show (format, size) rather than by bytes: Ferry's encoders are not sharp's.

/// A decoded image's format and dimensions, read from its header.
#[derive(Debug, PartialEq, Eq)]
pub struct ImageInfo {
    /// `jpeg`, `png`, `gif`, `webp` or `avif`.
    pub format: &'static str,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le24(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 3)?;
    Some(u32::from(s[0]) | (u32::from(s[1]) << 8) | (u32::from(s[2]) << 16))
}

/// JPEG dimensions from the first SOFn marker.
fn jpeg_info(b: &[u8]) -> Option<ImageInfo> {
    let mut at = 2;
    while at + 9 < b.len() {
        if b[at] != 0xff {
            return None;
        }
        let marker = b[at + 1];
        let len = usize::from(u16::from_be_bytes([b[at + 2], b[at + 3]]));
        if (0xc0..=0xcf).contains(&marker) && ![0xc4, 0xc8, 0xcc].contains(&marker) {
            let h = u16::from_be_bytes([b[at + 5], b[at + 6]]);
            let w = u16::from_be_bytes([b[at + 7], b[at + 8]]);
            return Some(ImageInfo {
                format: "jpeg",
                width: u32::from(w),
                height: u32::from(h),
            });
        }
        at += 2 + len;
    }
    None
}

/// PNG (IHDR), JPEG (SOF), GIF, WebP (VP8 / VP8L / VP8X) or AVIF (`ispe` box) dimensions.
pub fn image_info(b: &[u8]) -> Option<ImageInfo> {
    if b.starts_with(&[0xff, 0xd8, 0xff]) {
        return jpeg_info(b);
    }
    if b.starts_with(b"GIF8") {
        return Some(ImageInfo {
            format: "gif",
            width: u32::from(u16::from_le_bytes(b.get(6..8)?.try_into().ok()?)),
            height: u32::from(u16::from_le_bytes(b.get(8..10)?.try_into().ok()?)),
        });
    }
    if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Some(ImageInfo {
            format: "png",
            width: be32(b, 16)?,
            height: be32(b, 20)?,
        });
    }
    if b.get(0..4)? == b"RIFF" && b.get(8..12)? == b"WEBP" {
        let (width, height) = match b.get(12..16)? {
            b"VP8 " => {
                let w = u16::from_le_bytes(b.get(26..28)?.try_into().ok()?) & 0x3fff;
                let h = u16::from_le_bytes(b.get(28..30)?.try_into().ok()?) & 0x3fff;
                (u32::from(w), u32::from(h))
            }
            b"VP8L" => {
                let bits = u32::from_le_bytes(b.get(21..25)?.try_into().ok()?);
                ((bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1)
            }
            b"VP8X" => (le24(b, 24)? + 1, le24(b, 27)? + 1),
            _ => return None,
        };
        return Some(ImageInfo {
            format: "webp",
            width,
            height,
        });
    }
    if b.get(4..8)? == b"ftyp" && b.get(8..12)? == b"avif" {
        let at = b.windows(4).position(|w| w == b"ispe")?;
        return Some(ImageInfo {
            format: "avif",
            width: be32(b, at + 8)?,
            height: be32(b, at + 12)?,
        });
    }
    None
}

/// Decodes `bytes` to raw pixels with sharp (the showcase's `node_modules`): width, height and
/// channels. A real decoder, so a file that only looks right in its header fails.
pub fn sharp_decode(bytes: &[u8], work: &std::path::Path) -> anyhow::Result<(u32, u32, u32)> {
    let input = work.join("sharp-decode.in");
    let out = work.join("sharp-decode.log");
    std::fs::write(&input, bytes)?;
    let modules = crate::support::showcase_src().join("node_modules");
    crate::support::ProcessSpec::new("node", work)
        .args([
            "-e",
            "require('sharp')(process.argv[1]).raw().toBuffer({ resolveWithObject: true })\
             .then(({ data, info }) => { if (data.length !== info.width * info.height * info.channels) \
             throw new Error('short'); console.log(info.width, info.height, info.channels) })\
             .catch((e) => { console.error(String(e)); process.exit(1) })",
        ])
        .args([input.display().to_string()])
        .env("NODE_PATH", &modules.display().to_string())
        .run(&out, std::time::Duration::from_secs(60))?;
    let text = std::fs::read_to_string(&out)?;
    let nums: Vec<u32> = text
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    match nums.as_slice() {
        [w, h, c] => Ok((*w, *h, *c)),
        _ => anyhow::bail!("unexpected sharp output {text:?}"),
    }
}

#[cfg(test)]
mod tests {
    use anyhow::{Context, Result, ensure};

    use super::*;

    #[test]
    fn image_info_reads_png_header() -> Result<()> {
        let png = std::fs::read(crate::support::showcase_src().join("public/ferry.png"))?;
        let info = image_info(&png).context("not a PNG")?;
        ensure!(info.format == "png" && info.width > 0 && info.height > 0);
        Ok(())
    }
}
