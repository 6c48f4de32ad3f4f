//! libwebp 1.6 (the version sharp ships: same bitstream for the same settings, and its encoder
//! is faster than 1.3's) called through its C API, with a safe API on top.
//!
//! Why `unsafe`: libwebp is C. This module is the only place in the crate that calls it; the
//! rest of the crate sees [`encode`], [`decode`] and [`features`], which take and return plain
//! Rust values.
//!
//! Contract kept here:
//! - every input slice is checked against the width, height and stride libwebp is told about
//!   before a pointer to it is passed (libwebp reads `stride * height` bytes);
//! - every libwebp return value and status is checked (`WebPEncode`'s and `picture.error_code`,
//!   `WebPDecode`'s status, the init functions' ABI checks);
//! - memory libwebp allocates (the picture's planes) is freed by a guard's `Drop`, on success,
//!   error and unwind alike; the encoded bytes go straight into a Rust `Vec` through a writer
//!   callback (no C buffer to free), and decoded pixels into a `Vec` this module allocated
//!   (`is_external_memory`), sized and strided as libwebp is told;
//! - the writer callback never unwinds into C: it reports allocation failure by returning 0,
//!   which makes `WebPEncode` fail with `VP8_ENC_ERROR_BAD_WRITE`.
#![allow(unsafe_code)]

use std::ffi::c_int;
use std::mem::MaybeUninit;

use libwebp_sys as sys;

/// Why libwebp failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebpError {
    /// Width, height or buffer length do not describe a valid image for libwebp.
    #[error("invalid image: {0}")]
    Invalid(&'static str),
    /// The linked libwebp refused this module's ABI version or the configuration.
    #[error("libwebp setup failed: {0}")]
    Setup(&'static str),
    /// `WebPEncode` failed.
    #[error("libwebp encode failed: {0:?}")]
    Encode(sys::WebPEncodingError),
    /// `WebPGetFeatures` or `WebPDecode` failed.
    #[error("libwebp decode failed: {0:?}")]
    Decode(sys::VP8StatusCode),
}

/// Channel layout of 8-bit interleaved pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// R, G, B.
    Rgb,
    /// R, G, B, A (straight alpha).
    Rgba,
}

impl Layout {
    /// The layout of packed pixels with `channels` bytes each: RGBA for 4, RGB otherwise.
    pub fn from_channels(channels: usize) -> Layout {
        if channels == 4 {
            Layout::Rgba
        } else {
            Layout::Rgb
        }
    }

    /// Bytes per pixel.
    pub fn channels(self) -> usize {
        match self {
            Layout::Rgb => 3,
            Layout::Rgba => 4,
        }
    }
}

/// libwebp's limit on either dimension (`WEBP_MAX_DIMENSION`).
const MAX_DIMENSION: u32 = 16383;

/// Row stride in bytes and total length for `width` x `height` pixels of `layout`, checked
/// against libwebp's dimension limit and `c_int`.
fn geometry(width: u32, height: u32, layout: Layout) -> Result<(c_int, usize), WebpError> {
    if width == 0 || height == 0 || width > MAX_DIMENSION || height > MAX_DIMENSION {
        return Err(WebpError::Invalid("dimensions out of range"));
    }
    let stride = width as usize * layout.channels();
    let len = stride * height as usize;
    let stride = c_int::try_from(stride).map_err(|_| WebpError::Invalid("stride too large"))?;
    Ok((stride, len))
}

/// Lossy WebP of `pixels` (`width` x `height`, rows packed, `layout`) at `quality` (0–100),
/// with libwebp's default preset and `method` 4 — what sharp's `webp({ quality })` sets (its
/// `effort` 4); alpha, if any, compressed losslessly at alpha quality 100 (sharp's `alphaQuality`
/// default).
pub fn encode(
    pixels: &[u8],
    layout: Layout,
    width: u32,
    height: u32,
    quality: f32,
) -> Result<Vec<u8>, WebpError> {
    let (stride, len) = geometry(width, height, layout)?;
    if pixels.len() != len {
        return Err(WebpError::Invalid(
            "pixel buffer length does not match the size",
        ));
    }
    let config = config(quality)?;

    let mut picture = Picture::new()?;
    let pic = &mut picture.0;
    // YUV is made at import (libvips' choice without smart subsampling): no ARGB copy.
    pic.use_argb = 0;
    // Both fit: checked against MAX_DIMENSION.
    pic.width = width as c_int;
    pic.height = height as c_int;
    // SAFETY: `pixels` holds exactly `stride * height` bytes (checked above) and outlives the
    // call; libwebp copies them into the picture's own planes.
    let imported = unsafe {
        match layout {
            Layout::Rgb => sys::WebPPictureImportRGB(pic, pixels.as_ptr(), stride),
            Layout::Rgba => sys::WebPPictureImportRGBA(pic, pixels.as_ptr(), stride),
        }
    };
    if imported == 0 {
        return Err(WebpError::Encode(
            sys::WebPEncodingError::VP8_ENC_ERROR_OUT_OF_MEMORY,
        ));
    }

    let mut out: Vec<u8> = Vec::new();
    pic.writer = Some(write_to_vec);
    pic.custom_ptr = (&raw mut out).cast();
    // SAFETY: `config` was validated; `pic` holds planes of its declared size; `custom_ptr`
    // points at `out`, which lives until after the call and is only touched by `write_to_vec`
    // during it.
    let ok = unsafe { sys::WebPEncode(&config, pic) };
    pic.writer = None;
    pic.custom_ptr = std::ptr::null_mut();
    if ok == 0 {
        let code = pic.error_code;
        return Err(WebpError::Encode(
            if code == sys::WebPEncodingError::VP8_ENC_OK {
                // A failure without a code: report it as a failed write, never as success.
                sys::WebPEncodingError::VP8_ENC_ERROR_BAD_WRITE
            } else {
                code
            },
        ));
    }
    Ok(out)
}

/// The encoder settings: default preset at `quality`, method 4, lossy.
fn config(quality: f32) -> Result<sys::WebPConfig, WebpError> {
    let mut config = MaybeUninit::<sys::WebPConfig>::zeroed();
    // SAFETY: a zeroed WebPConfig is a valid value (integers, a float, enums whose 0 is a
    // variant); the init function fills every field or returns 0.
    let init = unsafe {
        sys::WebPConfigInitInternal(
            config.as_mut_ptr(),
            sys::WebPPreset::WEBP_PRESET_DEFAULT,
            quality.clamp(0.0, 100.0),
            sys::WEBP_ENCODER_ABI_VERSION as c_int,
        )
    };
    if init == 0 {
        return Err(WebpError::Setup("WebPConfigInit: ABI mismatch"));
    }
    // SAFETY: zeroed, then initialised above.
    let mut config = unsafe { config.assume_init() };
    config.lossless = 0;
    config.method = 4;
    config.alpha_compression = 1;
    config.alpha_quality = 100;
    // A second thread for the alpha plane (encoded at the same time as the colour) and for
    // half of the analysis pass: the bytes are the same, only the latency drops when a core
    // is free. The lossless alpha plane is most of an alpha image's time: 5 of 6.6 ms for
    // alpha.png at 240 px, 48 of 62 ms for a 640 px photo cut-out with soft edges.
    config.thread_level = 1;
    // SAFETY: `config` is a valid, initialised struct.
    if unsafe { sys::WebPValidateConfig(&config) } == 0 {
        return Err(WebpError::Setup("WebPValidateConfig refused the settings"));
    }
    Ok(config)
}

/// A `WebPPicture` whose planes are freed on drop.
struct Picture(sys::WebPPicture);

impl Picture {
    fn new() -> Result<Self, WebpError> {
        let mut pic = MaybeUninit::<sys::WebPPicture>::zeroed();
        // SAFETY: a zeroed WebPPicture is valid (null pointers, zero sizes, enums at their 0
        // variants); the init function sets the defaults or returns 0.
        let init = unsafe {
            sys::WebPPictureInitInternal(pic.as_mut_ptr(), sys::WEBP_ENCODER_ABI_VERSION as c_int)
        };
        if init == 0 {
            return Err(WebpError::Setup("WebPPictureInit: ABI mismatch"));
        }
        // SAFETY: zeroed, then initialised above.
        Ok(Picture(unsafe { pic.assume_init() }))
    }
}

impl Drop for Picture {
    fn drop(&mut self) {
        // SAFETY: the picture was initialised; WebPPictureFree frees what libwebp allocated in
        // it (nothing when the import failed) and leaves it empty.
        unsafe { sys::WebPPictureFree(&mut self.0) }
    }
}

/// libwebp's output callback: appends to the `Vec<u8>` in `picture.custom_ptr`. Returns 0 (libwebp
/// then fails with `VP8_ENC_ERROR_BAD_WRITE`) when memory runs out; never unwinds.
unsafe extern "C" fn write_to_vec(
    data: *const u8,
    size: usize,
    picture: *const sys::WebPPicture,
) -> c_int {
    if size == 0 {
        return 1;
    }
    if data.is_null() || picture.is_null() {
        return 0;
    }
    // SAFETY: libwebp passes the picture given to WebPEncode, whose `custom_ptr` `encode` set
    // to a live `Vec<u8>` that nothing else touches during the call; `data` holds `size` bytes.
    let (out, bytes) = unsafe {
        let out = (*picture).custom_ptr.cast::<Vec<u8>>();
        if out.is_null() {
            return 0;
        }
        (&mut *out, std::slice::from_raw_parts(data, size))
    };
    if out.try_reserve(size).is_err() {
        return 0;
    }
    out.extend_from_slice(bytes);
    1
}

/// What a WebP file's header declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Whether it has an alpha channel.
    pub has_alpha: bool,
    /// Whether it is an animation (several frames).
    pub has_animation: bool,
}

/// The header of a WebP file, without decoding pixels.
pub fn features(input: &[u8]) -> Result<Features, WebpError> {
    let mut f = MaybeUninit::<sys::WebPBitstreamFeatures>::zeroed();
    // SAFETY: `input` is a valid slice of `input.len()` bytes; `f` is writable (zeroed ints).
    let status = unsafe {
        sys::WebPGetFeaturesInternal(
            input.as_ptr(),
            input.len(),
            f.as_mut_ptr(),
            sys::WEBP_DECODER_ABI_VERSION as c_int,
        )
    };
    if status != sys::VP8StatusCode::VP8_STATUS_OK {
        return Err(WebpError::Decode(status));
    }
    // SAFETY: zeroed, then filled by libwebp.
    let f = unsafe { f.assume_init() };
    let dim = |v: c_int| u32::try_from(v).ok().filter(|&v| v > 0);
    let (Some(width), Some(height)) = (dim(f.width), dim(f.height)) else {
        return Err(WebpError::Invalid("header declares no size"));
    };
    Ok(Features {
        width,
        height,
        has_alpha: f.has_alpha != 0,
        has_animation: f.has_animation != 0,
    })
}

/// Pixels decoded from a WebP.
#[derive(Debug)]
pub struct Decoded {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// [`Layout::Rgba`] when the file has alpha, else [`Layout::Rgb`].
    pub layout: Layout,
    /// Packed rows.
    pub pixels: Vec<u8>,
}

/// Decodes a still WebP (RGB, or RGBA when it has alpha) at its full size, refusing
/// animations and images over `max_pixels` before any pixel buffer is allocated.
pub fn decode(input: &[u8], max_pixels: u64) -> Result<Decoded, WebpError> {
    decode_at(input, max_pixels, None)
}

/// Decodes a still WebP scaled to `width` x `height` by libwebp's rescaler as it decodes
/// (`options.use_scaling`): what libvips' webpload does when sharp shrinks a WebP on load
/// (`webpload` with `scale`, libvips `foreign/webp2vips.c`), so the pixels are sharp's. Same
/// refusals as [`decode`]; `max_pixels` applies to the size the header declares.
pub fn decode_scaled(
    input: &[u8],
    max_pixels: u64,
    width: u32,
    height: u32,
) -> Result<Decoded, WebpError> {
    decode_at(input, max_pixels, Some((width, height)))
}

/// [`decode`], at the header's size or at `scaled`.
fn decode_at(
    input: &[u8],
    max_pixels: u64,
    scaled: Option<(u32, u32)>,
) -> Result<Decoded, WebpError> {
    let f = features(input)?;
    if f.has_animation {
        return Err(WebpError::Decode(
            sys::VP8StatusCode::VP8_STATUS_UNSUPPORTED_FEATURE,
        ));
    }
    if u64::from(f.width) * u64::from(f.height) > max_pixels {
        return Err(WebpError::Invalid("more pixels than allowed"));
    }
    let layout = if f.has_alpha {
        Layout::Rgba
    } else {
        Layout::Rgb
    };
    let (width, height) = scaled.unwrap_or((f.width, f.height));
    let (stride, len) = geometry(width, height, layout)?;
    let mut pixels = vec![0u8; len];

    let mut config = MaybeUninit::<sys::WebPDecoderConfig>::zeroed();
    // SAFETY: a zeroed WebPDecoderConfig is valid (ints, null pointers, MODE_RGB = 0); the init
    // function sets the defaults or returns 0.
    let init = unsafe {
        sys::WebPInitDecoderConfigInternal(
            config.as_mut_ptr(),
            sys::WEBP_DECODER_ABI_VERSION as c_int,
        )
    };
    if init == 0 {
        return Err(WebpError::Setup("WebPInitDecoderConfig: ABI mismatch"));
    }
    // SAFETY: zeroed, then initialised above.
    let mut config = unsafe { config.assume_init() };
    config.output.colorspace = match layout {
        Layout::Rgb => sys::WEBP_CSP_MODE::MODE_RGB,
        Layout::Rgba => sys::WEBP_CSP_MODE::MODE_RGBA,
    };
    if scaled.is_some() {
        // `geometry` has checked the size is positive and fits a C int.
        config.options.use_scaling = 1;
        config.options.scaled_width = width as c_int;
        config.options.scaled_height = height as c_int;
    }
    // Decode straight into `pixels`: libwebp writes `stride * height` bytes at most, checked
    // against `size` by libwebp itself (it refuses a buffer too small for the image).
    config.output.is_external_memory = 1;
    config.output.u.RGBA = sys::WebPRGBABuffer {
        rgba: pixels.as_mut_ptr(),
        stride,
        size: pixels.len(),
    };
    // SAFETY: `input` is a valid slice; `config.output` points at `pixels`, exactly
    // `stride * height` bytes for the size decoded (the header's, or the scaled size libwebp
    // is told), alive and not otherwise borrowed during the call.
    let status = unsafe { sys::WebPDecode(input.as_ptr(), input.len(), &mut config) };
    // Decoder-owned memory (none with an external buffer, but the API asks for it) is freed on
    // every path.
    let (out_w, out_h) = (config.output.width, config.output.height);
    // SAFETY: `config.output` was initialised by WebPInitDecoderConfig and used by WebPDecode.
    unsafe { sys::WebPFreeDecBuffer(&mut config.output) };
    if status != sys::VP8StatusCode::VP8_STATUS_OK {
        return Err(WebpError::Decode(status));
    }
    if u32::try_from(out_w).ok() != Some(width) || u32::try_from(out_h).ok() != Some(height) {
        return Err(WebpError::Invalid(
            "decoded size differs from the one asked for",
        ));
    }
    Ok(Decoded {
        width,
        height,
        layout,
        pixels,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A textured gradient, so an encoder has something to do (RGBA: a horizontal alpha ramp).
    /// Shared with aom.rs's tests.
    pub(crate) fn gradient(w: u32, h: u32, layout: Layout) -> Vec<u8> {
        let mut px = Vec::new();
        for y in 0..h {
            for x in 0..w {
                let t = ((x / 4 + y / 4) % 2 * 30) as u8;
                px.extend_from_slice(&[(x * 200 / w) as u8 + t, (y * 200 / h) as u8, 100 + t]);
                if layout == Layout::Rgba {
                    px.push((x * 255 / w) as u8);
                }
            }
        }
        px
    }

    #[test]
    fn encodes_and_decodes_rgb() -> Result<(), WebpError> {
        let px = gradient(120, 80, Layout::Rgb);
        let out = encode(&px, Layout::Rgb, 120, 80, 75.0)?;
        assert!(out.starts_with(b"RIFF") && &out[8..12] == b"WEBP");
        let f = features(&out)?;
        assert_eq!(
            (f.width, f.height, f.has_alpha, f.has_animation),
            (120, 80, false, false)
        );
        let d = decode(&out, 1 << 20)?;
        assert_eq!((d.width, d.height, d.layout), (120, 80, Layout::Rgb));
        assert_eq!(d.pixels.len(), 120 * 80 * 3);
        // Lossy but close (a smooth image: the texture above loses chroma to 4:2:0).
        let smooth: Vec<u8> = (0..80u32)
            .flat_map(|y| (0..120u32).flat_map(move |x| [(x * 2) as u8, (y * 3) as u8, 90]))
            .collect();
        let back = decode(&encode(&smooth, Layout::Rgb, 120, 80, 75.0)?, 1 << 20)?;
        let diff: u64 = back
            .pixels
            .iter()
            .zip(&smooth)
            .map(|(a, b)| u64::from(a.abs_diff(*b)))
            .sum();
        assert!(
            diff < 3 * smooth.len() as u64,
            "mean difference {}",
            diff / smooth.len() as u64
        );
        // Lower quality, fewer bytes.
        assert!(encode(&px, Layout::Rgb, 120, 80, 20.0)?.len() < out.len());
        Ok(())
    }

    #[test]
    fn keeps_alpha() -> Result<(), WebpError> {
        let px = gradient(64, 48, Layout::Rgba);
        let out = encode(&px, Layout::Rgba, 64, 48, 75.0)?;
        assert!(features(&out)?.has_alpha);
        let d = decode(&out, 1 << 20)?;
        assert_eq!(d.layout, Layout::Rgba);
        // Alpha is lossless at alpha quality 100.
        let alpha = |p: &[u8]| p.chunks_exact(4).map(|c| c[3]).collect::<Vec<_>>();
        assert_eq!(alpha(&d.pixels), alpha(&px));
        // Opaque RGBA carries no alpha chunk.
        let opaque: Vec<u8> = [200, 100, 50, 255].repeat(16 * 16);
        assert!(!features(&encode(&opaque, Layout::Rgba, 16, 16, 75.0)?)?.has_alpha);
        Ok(())
    }

    #[test]
    fn refuses_bad_sizes_and_buffers() {
        let px = vec![0u8; 10 * 10 * 3];
        assert!(matches!(
            encode(&px, Layout::Rgb, 10, 9, 75.0),
            Err(WebpError::Invalid(_))
        ));
        assert!(matches!(
            encode(&px, Layout::Rgba, 10, 10, 75.0),
            Err(WebpError::Invalid(_))
        ));
        assert!(matches!(
            encode(&[], Layout::Rgb, 0, 0, 75.0),
            Err(WebpError::Invalid(_))
        ));
        let wide = vec![0u8; 16384 * 3];
        assert!(matches!(
            encode(&wide, Layout::Rgb, 16384, 1, 75.0),
            Err(WebpError::Invalid(_))
        ));
        // Out-of-range quality is clamped, not refused.
        assert!(encode(&px, Layout::Rgb, 10, 10, 250.0).is_ok());
    }

    #[test]
    fn refuses_broken_and_oversized_input() -> Result<(), WebpError> {
        assert!(matches!(decode(b"", 1 << 20), Err(WebpError::Decode(_))));
        assert!(matches!(
            decode(b"RIFF\0\0\0\0WEBPVP8 ", 1 << 20),
            Err(WebpError::Decode(_))
        ));
        let out = encode(
            &gradient(100, 100, Layout::Rgb),
            Layout::Rgb,
            100,
            100,
            75.0,
        )?;
        // Truncated: the header parses, the data does not.
        assert!(decode(&out[..out.len() / 2], 1 << 20).is_err());
        // Over the pixel limit: refused from the header.
        assert_eq!(
            decode(&out, 9_999).map(|d| d.width),
            Err(WebpError::Invalid("more pixels than allowed"))
        );
        // Every prefix fails cleanly or decodes the right size (no crash, no overrun).
        for cut in (0..out.len()).step_by(7) {
            if let Ok(d) = decode(&out[..cut], 1 << 20) {
                assert_eq!(d.pixels.len(), 100 * 100 * 3);
            }
        }
        Ok(())
    }

    #[test]
    fn decodes_the_fixture_like_the_pure_rust_decoder() -> Result<(), Box<dyn std::error::Error>> {
        let input = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/photo.webp"
        ))?;
        let d = decode(&input, 1 << 24)?;
        let reference = image::load_from_memory(&input)?.into_rgb8();
        assert_eq!((d.width, d.height), reference.dimensions());
        // Both upsample chroma ("fancy" upsampling); allow rounding differences.
        let diff: u64 = d
            .pixels
            .iter()
            .zip(reference.as_raw())
            .map(|(a, b)| u64::from(a.abs_diff(*b)))
            .sum();
        assert!(diff * 10 / (d.pixels.len() as u64) < 20);
        Ok(())
    }

    #[test]
    fn decodes_scaled_to_the_size_asked_for() -> Result<(), Box<dyn std::error::Error>> {
        let input = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/photo.webp"
        ))?;
        let full = decode(&input, 1 << 24)?;
        let d = decode_scaled(&input, 1 << 24, 128, 85)?;
        assert_eq!((d.width, d.height, d.layout), (128, 85, Layout::Rgb));
        assert_eq!(d.pixels.len(), 128 * 85 * 3);
        // libwebp's rescaler averages areas: the mean colour survives the shrink.
        let mean = |p: &[u8]| p.iter().map(|&v| f64::from(v)).sum::<f64>() / p.len() as f64;
        assert!((mean(&d.pixels) - mean(&full.pixels)).abs() < 1.0);
        // The pixel limit applies to the source, before anything is decoded.
        assert_eq!(
            decode_scaled(&input, 100, 16, 11).err(),
            Some(WebpError::Invalid("more pixels than allowed"))
        );
        assert!(decode_scaled(&input, 1 << 24, 0, 11).is_err());
        Ok(())
    }
}
