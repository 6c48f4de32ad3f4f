//! Downscaling as sharp 0.35 does it for `resize(width)`: libvips 8.18's `vips_resize` with the
//! lanczos3 kernel, on 8-bit RGB or RGBA, reproduced to the integer so the pixels match sharp's
//! (checked byte for byte against sharp 0.35.5 / libvips 8.18.7 on the bench corpus at widths
//! 1 to 1000; the tests compare with committed sharp output).
//!
//! What sharp runs (lovell/sharp `src/pipeline.cc`, 0.35): the shrink factors are `source /
//! target` on each axis (`ResolveShrink`; with only a width, the vertical factor *is* the
//! horizontal one), an image with alpha is premultiplied first (`premultiply()`, to float, then
//! `cast` back to 8 bits), then `resize(1 / hshrink, vscale: 1 / vshrink, kernel: lanczos3)`,
//! then unpremultiplied (float, cast back to 8 bits).
//!
//! What libvips runs for that (libvips/libvips `libvips/resample/`: `resize.c`, `reducev.cpp`,
//! `reduceh.cpp`, `shrinkv.c`, `shrinkh.c`, `templates.h`, and the Highway kernels 8.18 uses for
//! 8-bit images, `reducev_hwy.cpp`, `reduceh_hwy.cpp`, `shrinkv_hwy.cpp`, `shrinkh_hwy.cpp`
//! (read at commit 3fa53748 for the shrink kernels; the reduce kernels are the Highway-era
//! versions with the `gap` option, 8.13 and later); `conversion/premultiply.c`,
//! `unpremultiply.c`): a vertical reduce, then a horizontal one, each rounding to 8 bits. Each
//! reduce, given a float factor `s` and `vips_resize`'s default `gap` of 2:
//! - sizes its output as `round(n / s)` (C's `VIPS_ROUND_UINT`, halves up);
//! - box-shrinks first by the integer `max(1, floor(n / out / gap))` (`shrinkv` / `shrinkh` with
//!   `ceil`: the last block repeats the edge pixel), which divides `s` and the rounding slack;
//! - then convolves with a lanczos3 mask of `2 * rint(3 * s) + 1` points, centred on
//!   `(i + 0.5) * s - 0.5 - offset` where `offset = (1 + slack) / 2 - 1` (the output grid is
//!   centred on the input), edges extended by copying the edge pixel (`vips_embed` `COPY`);
//! - the mask's fractional position is quantised to 1/64 (`VIPS_TRANSFORM_SCALE`), the 65
//!   masks are normalised in double and truncated to 12-bit fixed point (`short`, scale 4096),
//!   and a pixel is `(2048 + Σ k·p) >> 12`, saturated to 0–255.
//!
//! All of it is integer arithmetic libvips also does in integers, so the result is the same on
//! every CPU; the float parts (mask values, premultiplication) follow the C types. The kernels
//! are plain Rust, compiled a second time for AVX2 and picked at run time as libvips picks its
//! Highway targets; the convolutions and the (un)premultiplication use AVX2 intrinsics there,
//! the way libvips' kernels do.

use std::sync::OnceLock;

/// Why a resample failed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ResampleError {
    /// The buffer does not hold `width * height * channels` bytes, or a size is zero.
    #[error("pixel buffer does not match its size")]
    BadBuffer,
    /// Only 3 (RGB) and 4 (RGBA) channels are handled.
    #[error("unsupported channel count {0}")]
    Channels(usize),
    /// A factor is below 1 (an enlargement) or not finite.
    #[error("resample factor {0} is not a reduction")]
    Factor(f64),
}

/// libvips' reduce gap (`vips_resize`'s default): the box shrink leaves at least this much of
/// the reduction to the lanczos3 kernel.
const GAP: f64 = 2.0;
/// Lobes of the lanczos kernel sharp asks for (`kernel: 'lanczos3'`, its default).
const LOBES: f64 = 3.0;
/// Fractional sample positions are quantised to 1/64 (`VIPS_TRANSFORM_SHIFT` 6).
const POSITIONS: usize = 64;
/// Mask fixed point: 12 fractional bits (`VIPS_INTERPOLATE_SHIFT`).
const SHIFT: u32 = 12;
/// Rounding term added before the shift (`VIPS_INTERPOLATE_SCALE >> 1`).
const HALF: i32 = 1 << (SHIFT - 1);
/// The reduce's line cache hands out blocks of 10 output rows, and the mask position is
/// accumulated by repeated addition within a block (`vips_sequential`'s `tile_height`), so the
/// rows are generated the same way here to get the same rounding of the position.
const ROW_BLOCK: usize = 10;

/// An 8-bit image with interleaved channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Rows top to bottom, `width * channels` bytes each.
    pub pixels: Vec<u8>,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
}

/// (Tests: transform.rs computes sharp's one factor itself, from the upright width.)
/// The factors sharp derives for a resize of `src` to `dst` (both width, height): `src / dst`
/// on each axis, except that sharp computes only one factor when asked for a width (or a
/// height) and uses it for both axes. Since the caller's `dst` came from that one factor, one of
/// the two axes reproduces it exactly; the width's is preferred (the usual `resize(width)`),
/// the height's taken when only it gives back `dst` (a source turned a quarter by its EXIF
/// orientation, where sharp resizes the stored image to the requested height).
#[cfg(test)]
pub(crate) fn sharp_factors(src: (usize, usize), dst: (usize, usize)) -> (f64, f64) {
    let (sw, sh) = (src.0 as f64, src.1 as f64);
    let (dw, dh) = (dst.0 as f64, dst.1 as f64);
    let h = sw / dw;
    let v = sh / dh;
    if output_size(src.1, h) == dst.1 {
        (h, h)
    } else if output_size(src.0, v) == dst.0 {
        (v, v)
    } else {
        (h, v)
    }
}

/// Downscales 8-bit RGB or RGBA `pixels` of `width` x `height` by `hshrink` horizontally and
/// `vshrink` vertically (both ≥ 1) as sharp's `resize` does: see the module comment. The output
/// size is libvips', `round(size / shrink)` on each axis (at least 1).
pub fn resize(
    mut pixels: Vec<u8>,
    channels: usize,
    (width, height): (usize, usize),
    (hshrink, vshrink): (f64, f64),
) -> Result<Image, ResampleError> {
    if channels != 3 && channels != 4 {
        return Err(ResampleError::Channels(channels));
    }
    if width == 0
        || height == 0
        || width
            .checked_mul(height)
            .and_then(|n| n.checked_mul(channels))
            != Some(pixels.len())
    {
        return Err(ResampleError::BadBuffer);
    }
    for f in [hshrink, vshrink] {
        if !f.is_finite() || f < 1.0 {
            return Err(ResampleError::Factor(f));
        }
    }
    // vips_resize takes scales: sharp passes 1 / shrink, and reduce turns them back into
    // shrinks, with an axis never going below one pixel.
    let hscale = (1.0 / hshrink).max(1.0 / width as f64);
    let vscale = (1.0 / vshrink).max(1.0 / height as f64);
    if channels == 4 {
        premultiply(&mut pixels);
    }
    let mut img = Image {
        pixels,
        width,
        height,
    };
    let mut cache = MaskCache::default();
    if vscale < 1.0 {
        img = reducev(&img, channels, 1.0 / vscale, &mut cache);
    }
    if hscale < 1.0 {
        img = reduceh(&img, channels, 1.0 / hscale, &mut cache);
    }
    if channels == 4 {
        unpremultiply(&mut img.pixels);
    }
    Ok(img)
}

/// The size libvips' reduce gives `n` pixels shrunk by `shrink`: `VIPS_ROUND_UINT(n / shrink)`,
/// at least 1 (the caller caps the shrink at `n`).
fn output_size(n: usize, shrink: f64) -> usize {
    ((n as f64 / shrink + 0.5) as usize).max(1)
}

/// The geometry of one axis' reduce, shared by the vertical and horizontal passes.
struct Plan {
    /// Output pixels.
    out: usize,
    /// Integer box shrink done first (1 for none).
    box_shrink: usize,
    /// The lanczos3 factor left after the box shrink (1.0 for none).
    shrink: f64,
    /// How far the output grid is moved into the input to centre it (`(1 + slack) / 2 - 1`).
    offset: f64,
}

impl Plan {
    /// Where output pixel `i`'s centre falls in the box-shrunk input: `(i + 0.5) s - 0.5 -
    /// offset`, the sample position reducev_hwy / reduceh_hwy start from.
    fn position(&self, i: usize) -> f64 {
        (i as f64 + 0.5) * self.shrink - 0.5 - self.offset
    }
}

/// reducev.cpp / reduceh.cpp `build`: output size, the gap's integer part, the centring offset.
fn plan(n: usize, shrink: f64) -> Plan {
    let out = output_size(n, shrink);
    let mut extra = out as f64 * shrink - n as f64;
    let mut shrink = shrink;
    let box_shrink = ((n as f64 / out as f64 / GAP).floor() as usize).max(1);
    if box_shrink > 1 {
        shrink /= box_shrink as f64;
        extra /= box_shrink as f64;
    }
    Plan {
        out,
        box_shrink,
        shrink,
        offset: (1.0 + extra) / 2.0 - 1.0,
    }
}

/// The lanczos3 window (templates.h): `a sin(πx) sin(πx/a) / (π²x²)` inside ±a, 1 at 0.
fn lanczos3(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else if !(-LOBES..=LOBES).contains(&x) {
        0.0
    } else {
        let px = std::f64::consts::PI * x;
        LOBES * px.sin() * (px / LOBES).sin() / (px * px)
    }
}

/// Number of mask points for a lanczos3 reduce by `shrink` (reduceh.cpp
/// `vips_reduce_get_points`): `2 * rint(3 * shrink) + 1`, C's `rint` rounding halves to even.
fn points(shrink: f64) -> usize {
    2 * (LOBES * shrink).round_ties_even() as usize + 1
}

/// The 65 fixed-point masks of `n` points, one per 1/64 of a pixel of sample position
/// (templates.h `calculate_coefficients_lanczos`, reducev.cpp table build): normalised to sum
/// 1 in double, then each truncated towards zero to 12 bits as a C `(short)` cast does.
fn masks(n: usize, shrink: f64) -> Vec<Vec<i16>> {
    (0..=POSITIONS)
        .map(|t| {
            // `(float) t / VIPS_TRANSFORM_SCALE`: exact, 64 is a power of two.
            let x = t as f64 / POSITIONS as f64;
            let half = x + n as f64 / 2.0 - 1.0;
            let mask: Vec<f64> = (0..n)
                .map(|i| lanczos3((i as f64 - half) / shrink))
                .collect();
            let sum: f64 = mask.iter().sum();
            mask.iter()
                .map(|c| (c / sum * f64::from(1u16 << SHIFT)) as i16)
                .collect()
        })
        .collect()
}

/// The masks of the last reduce, kept for the next: the horizontal reduce usually has the
/// vertical one's factor (sharp gives both axes one factor), and building the 65 masks costs
/// two `sin` per point.
#[derive(Default)]
struct MaskCache {
    /// Points and factor (as bits) the masks are for.
    key: Option<(usize, u64)>,
    masks: Vec<Vec<i16>>,
}

impl MaskCache {
    fn get(&mut self, n: usize, shrink: f64) -> &[Vec<i16>] {
        let key = Some((n, shrink.to_bits()));
        if self.key != key {
            self.masks = masks(n, shrink);
            self.key = key;
        }
        &self.masks
    }
}

/// Splits a sample position into its pixel and its mask (reducev_hwy / reduceh_hwy: `(int) X`,
/// and the position in 1/128ths rounded to 1/64ths, 64 meaning the next pixel's mask 0 taken
/// from this pixel).
fn locate(pos: f64) -> (usize, usize) {
    let pixel = pos as usize;
    let sub = ((pos * (POSITIONS * 2) as f64) as i64 & (POSITIONS as i64 * 2 - 1)) as usize;
    (pixel, (sub + 1) >> 1)
}

/// `(sum + k / 2) / k` for a box of `k` 8-bit values as the Highway shrink kernels compute it:
/// times `floor(2^32 / (256 k))` in 32 bits, then the top 8 bits. (It is not exact division:
/// for k = 3 a sum of exactly 3m − 1 gives m − 1.)
struct BoxAverage {
    amend: u32,
    multiplier: u32,
}

impl BoxAverage {
    fn new(k: usize) -> Self {
        Self {
            amend: (k / 2) as u32,
            multiplier: ((1u64 << 32) / (256 * k as u64)) as u32,
        }
    }

    fn of(&self, sum: u32) -> u8 {
        ((sum + self.amend).wrapping_mul(self.multiplier) >> 24) as u8
    }
}

/// Vertical reduce (reducev.cpp): box shrink by the gap's integer part, then lanczos3.
fn reducev(img: &Image, channels: usize, shrink: f64, cache: &mut MaskCache) -> Image {
    let p = plan(img.height, shrink);
    let row = img.width * channels;
    let shrunk;
    let (src, src_h) = if p.box_shrink > 1 {
        shrunk = shrinkv(&img.pixels, row, img.height, p.box_shrink);
        (shrunk.as_slice(), img.height.div_ceil(p.box_shrink))
    } else {
        (img.pixels.as_slice(), img.height)
    };
    if p.shrink == 1.0 {
        return Image {
            pixels: src.to_vec(),
            width: img.width,
            height: src_h,
        };
    }
    let n = points(p.shrink);
    let masks = cache.get(n, p.shrink);
    let reach = n / 2;
    let mut out = vec![0u8; row * p.out];
    let mut offsets = Vec::with_capacity(n);
    let mut y = 0.0;
    for (j, dst) in out.chunks_exact_mut(row).enumerate() {
        if j % ROW_BLOCK == 0 {
            y = p.position(j);
        }
        let (pixel, t) = locate(y);
        // Where the taps' rows start, the edge rows repeated past either end.
        offsets.clear();
        offsets.extend((0..n).map(|i| (pixel + i).saturating_sub(reach).min(src_h - 1) * row));
        convolve_rows(src, &offsets, &masks[t], dst);
        y += p.shrink;
    }
    Image {
        pixels: out,
        width: img.width,
        height: p.out,
    }
}

/// One output row of the vertical lanczos: `dst[x] = (2048 + Σ k_i src[offsets_i + x]) >> 12`.
/// Columns go in fixed-size chunks so that the chunk loop unrolls into the tap loop's body
/// (the multiply then sees both operands' widths), and taps go in pairs, which compiles to the
/// multiply-add-pairs instruction libvips' Highway kernel uses.
fn convolve_rows(src: &[u8], offsets: &[usize], mask: &[i16], dst: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above), the only requirement of the function.
        #[allow(unsafe_code)]
        return unsafe { avx2::convolve_rows(src, offsets, mask, dst) };
    }
    convolve_rows_any(src, offsets, mask, dst);
}

/// [`convolve_rows`] for whichever instruction set it is inlined into.
#[inline(always)]
fn convolve_rows_any(src: &[u8], offsets: &[usize], mask: &[i16], dst: &mut [u8]) {
    const CHUNK: usize = 32;
    let row = dst.len();
    let line = |offset: usize, x0: usize| -> &[u8; CHUNK] {
        src[offset + x0..][..CHUNK]
            .try_into()
            .unwrap_or(&[0; CHUNK])
    };
    let mut x0 = 0;
    while x0 + CHUNK <= row {
        let mut acc = [HALF; CHUNK];
        let mut pairs = offsets.chunks_exact(2).zip(mask.chunks_exact(2));
        for (o, k) in pairs.by_ref() {
            let (a, b) = (line(o[0], x0), line(o[1], x0));
            let (ka, kb) = (i32::from(k[0]), i32::from(k[1]));
            for l in 0..CHUNK {
                acc[l] += i32::from(a[l]) * ka + i32::from(b[l]) * kb;
            }
        }
        if let (Some(&o), Some(&k)) = (offsets.get(mask.len() - 1), mask.last())
            && mask.len() % 2 == 1
        {
            let a = line(o, x0);
            for l in 0..CHUNK {
                acc[l] += i32::from(a[l]) * i32::from(k);
            }
        }
        for (d, a) in dst[x0..x0 + CHUNK].iter_mut().zip(acc) {
            *d = (a >> SHIFT).clamp(0, 255) as u8;
        }
        x0 += CHUNK;
    }
    convolve_rows_tail(src, offsets, mask, dst, x0);
}

/// [`convolve_rows`] one column at a time, from column `x0` on: the tail after the chunks.
fn convolve_rows_tail(src: &[u8], offsets: &[usize], mask: &[i16], dst: &mut [u8], x0: usize) {
    for (x, d) in dst.iter_mut().enumerate().skip(x0) {
        let mut a = HALF;
        for (&o, &k) in offsets.iter().zip(mask) {
            a += i32::from(src[o + x]) * i32::from(k);
        }
        *d = (a >> SHIFT).clamp(0, 255) as u8;
    }
}

/// shrinkv with `ceil`: each output row averages `k` input rows, the last rows repeated.
fn shrinkv(src: &[u8], row: usize, height: usize, k: usize) -> Vec<u8> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above), the only requirement of the function.
        #[allow(unsafe_code)]
        return unsafe { avx2::shrinkv(src, row, height, k) };
    }
    shrinkv_any(src, row, height, k)
}

/// [`shrinkv`] for whichever instruction set it is inlined into.
#[inline(always)]
fn shrinkv_any(src: &[u8], row: usize, height: usize, k: usize) -> Vec<u8> {
    let out_h = height.div_ceil(k);
    let avg = BoxAverage::new(k);
    let mut out = vec![0u8; row * out_h];
    // Up to 257 rows of 8-bit values sum in 16 bits, twice as many lanes per instruction.
    let mut sum16 = vec![0u16; if k <= 257 { row } else { 0 }];
    let mut sum32 = vec![0u32; if k <= 257 { 0 } else { row }];
    for (j, dst) in out.chunks_exact_mut(row).enumerate() {
        let lines = (0..k).map(|i| {
            let r = (j * k + i).min(height - 1);
            &src[r * row..(r + 1) * row]
        });
        if k <= 257 {
            sum16.fill(0);
            for line in lines {
                for (s, &v) in sum16.iter_mut().zip(line) {
                    *s += u16::from(v);
                }
            }
            for (d, &s) in dst.iter_mut().zip(&sum16) {
                *d = avg.of(u32::from(s));
            }
        } else {
            sum32.fill(0);
            for line in lines {
                for (s, &v) in sum32.iter_mut().zip(line) {
                    *s += u32::from(v);
                }
            }
            for (d, &s) in dst.iter_mut().zip(&sum32) {
                *d = avg.of(s);
            }
        }
    }
    out
}

/// Horizontal reduce (reduceh.cpp): box shrink by the gap's integer part, then lanczos3.
fn reduceh(img: &Image, channels: usize, shrink: f64, cache: &mut MaskCache) -> Image {
    let p = plan(img.width, shrink);
    let shrunk;
    let (src, src_w) = if p.box_shrink > 1 {
        shrunk = shrinkh(img, channels, p.box_shrink);
        (shrunk.as_slice(), img.width.div_ceil(p.box_shrink))
    } else {
        (img.pixels.as_slice(), img.width)
    };
    if p.shrink == 1.0 {
        return Image {
            pixels: src.to_vec(),
            width: src_w,
            height: img.height,
        };
    }
    let n = points(p.shrink);
    // Masks padded with zeros to a whole number of 4-pixel groups and spread to one weight per
    // byte of 4-byte pixels (RGB rows are widened to RGBX for this), in the order the kernel
    // multiplies them: see `spread`.
    let group = n.div_ceil(4) * 4;
    let paired = wide();
    let spread: Vec<Vec<i16>> = cache
        .get(n, p.shrink)
        .iter()
        .map(|m| spread(m, group, paired))
        .collect();
    // Per output pixel: the first tap's pixel in the row padded by `reach` copies of the edge
    // pixel (`vips_embed` `COPY`), and its mask. The position is accumulated by addition along
    // the row, as reduceh_hwy does.
    let reach = n / 2;
    let mut x = p.position(0);
    let taps: Vec<(usize, usize)> = (0..p.out)
        .map(|_| {
            let (pixel, t) = locate(x);
            x += p.shrink;
            (pixel, t)
        })
        .collect();
    let row_in = src_w * channels;
    let row_out = p.out * channels;
    let mut padded = vec![0u8; (reach + src_w + group) * 4];
    let mut out = vec![0u8; row_out * img.height];
    for (line, dst) in src.chunks_exact(row_in).zip(out.chunks_exact_mut(row_out)) {
        match channels {
            3 => {
                pad_row::<3>(line, reach, &mut padded);
                convolve_row::<3>(&padded, &taps, &spread, dst);
            }
            _ => {
                pad_row::<4>(line, reach, &mut padded);
                convolve_row::<4>(&padded, &taps, &spread, dst);
            }
        }
    }
    Image {
        pixels: out,
        width: p.out,
        height: img.height,
    }
}

/// Whether the AVX2 kernels run (checked once by the standard library, then cached).
fn wide() -> bool {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        return true;
    }
    false
}

/// A mask of `n` ≤ `group` taps laid out for the horizontal kernel, one weight per byte of a
/// 4-byte pixel and zeros past `n`: tap by tap (`k0 k0 k0 k0 k1 …`, the portable kernel), or,
/// `paired`, taps 0 and 1, 2 and 3 of each 4 interleaved channel by channel (`k0 k1 k0 k1 …`,
/// the AVX2 kernel, which multiplies and adds adjacent pairs in one instruction).
fn spread(mask: &[i16], group: usize, paired: bool) -> Vec<i16> {
    let tap = |i: usize| mask.get(i).copied().unwrap_or(0);
    (0..group * 4)
        .map(|j| {
            if paired {
                // j = 16 g + 8 h + 2 c + e: pixel 4 g + 2 h + e, channel c.
                tap(j / 16 * 4 + (j / 8 % 2) * 2 + j % 2)
            } else {
                tap(j / 4)
            }
        })
        .collect()
}

/// Copies `line` of `C`-byte pixels into `padded` as 4-byte pixels, after `reach` copies of its
/// first pixel and followed by copies of its last (`vips_embed` with `VIPS_EXTEND_COPY`).
fn pad_row<const C: usize>(line: &[u8], reach: usize, padded: &mut [u8]) {
    let mut px = [0u8; 4];
    px[..C].copy_from_slice(&line[..C]);
    let (lead, body) = padded.split_at_mut(reach * 4);
    for d in lead.chunks_exact_mut(4) {
        d.copy_from_slice(&px);
    }
    let (body, tail) = body.split_at_mut(line.len() / C * 4);
    widen::<C>(line, body);
    px[..C].copy_from_slice(&line[line.len() - C..]);
    for d in tail.chunks_exact_mut(4) {
        d.copy_from_slice(&px);
    }
}

/// Copies `C`-byte pixels to 4-byte ones (the fourth byte left as it is, zero).
fn widen<const C: usize>(line: &[u8], out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if C == 3 && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above), the only requirement of the function.
        #[allow(unsafe_code)]
        return unsafe { avx2::widen_rgb(line, out) };
    }
    if C == 4 {
        out.copy_from_slice(line);
        return;
    }
    for (s, d) in line.chunks_exact(C).zip(out.chunks_exact_mut(4)) {
        d[..C].copy_from_slice(s);
    }
}

/// One output row of the horizontal lanczos, writing `C` channels from 4-byte pixels, taken
/// 4 pixels at a time: lane `l` of the accumulator collects channel `l % 4`, folded at the end
/// (integer sums, so the grouping changes nothing). All 4 lanes are computed and stored (an RGB
/// pixel's fourth byte is overwritten by the next pixel): a lane the compiler sees unused
/// turns the vector loop back into scalar code.
fn convolve_row<const C: usize>(
    padded: &[u8],
    taps: &[(usize, usize)],
    spread: &[Vec<i16>],
    dst: &mut [u8],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above), the only requirement of the function.
        #[allow(unsafe_code)]
        return unsafe { avx2::convolve_row::<C>(padded, taps, spread, dst) };
    }
    convolve_row_any::<C>(padded, taps, spread, dst);
}

/// [`convolve_row`] for whichever instruction set it is inlined into.
#[inline(always)]
fn convolve_row_any<const C: usize>(
    padded: &[u8],
    taps: &[(usize, usize)],
    spread: &[Vec<i16>],
    dst: &mut [u8],
) {
    const G: usize = 16;
    for (x, &(pixel, t)) in taps.iter().enumerate() {
        let mask = &spread[t];
        let window = &padded[pixel * 4..pixel * 4 + mask.len()];
        let mut acc = [0i32; G];
        for (w, k) in window.chunks_exact(G).zip(mask.chunks_exact(G)) {
            for l in 0..G {
                acc[l] += i32::from(w[l]) * i32::from(k[l]);
            }
        }
        let mut sum = [HALF; 4];
        for g in 0..G / 4 {
            for c in 0..4 {
                sum[c] += acc[g * 4 + c];
            }
        }
        let px = sum.map(|v| (v >> SHIFT).clamp(0, 255) as u8);
        let at = x * C;
        match dst.get_mut(at..at + 4) {
            Some(d) => d.copy_from_slice(&px),
            None => dst[at..at + C].copy_from_slice(&px[..C]),
        }
    }
}

/// Copies `line` into the start of `padded` and fills the rest with its last pixel.
fn pad_edge(line: &[u8], channels: usize, padded: &mut [u8]) {
    let (body, rest) = padded.split_at_mut(line.len());
    body.copy_from_slice(line);
    for d in rest.chunks_exact_mut(channels) {
        d.copy_from_slice(&line[line.len() - channels..]);
    }
}

/// shrinkh with `ceil`: each output pixel averages `k` input pixels, the last ones repeated.
fn shrinkh(img: &Image, channels: usize, k: usize) -> Vec<u8> {
    match channels {
        3 => shrinkh_n::<3>(img, k),
        _ => shrinkh_n::<4>(img, k),
    }
}

/// [`shrinkh`] for `C` channels.
fn shrinkh_n<const C: usize>(img: &Image, k: usize) -> Vec<u8> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above), the only requirement of the function.
        #[allow(unsafe_code)]
        return unsafe { avx2::shrinkh_n::<C>(img, k) };
    }
    shrinkh_n_any::<C>(img, k)
}

/// [`shrinkh_n`] for whichever instruction set it is inlined into.
#[inline(always)]
fn shrinkh_n_any<const C: usize>(img: &Image, k: usize) -> Vec<u8> {
    let out_w = img.width.div_ceil(k);
    let avg = BoxAverage::new(k);
    let whole = img.width / k;
    let mut out = vec![0u8; out_w * C * img.height];
    // The last, partial box: its pixels then copies of the row's last pixel.
    let mut last = vec![0u8; k * C];
    for (line, dst) in img
        .pixels
        .chunks_exact(img.width * C)
        .zip(out.chunks_exact_mut(out_w * C))
    {
        let (full, rest) = line.split_at(whole * k * C);
        let (dst_full, dst_rest) = dst.split_at_mut(whole * C);
        box_sums::<C>(full, k, &avg, dst_full);
        if !rest.is_empty() {
            pad_edge(rest, C, &mut last);
            box_sums::<C>(&last, k, &avg, dst_rest);
        }
    }
    out
}

/// Averages each `k` consecutive `C`-byte pixels of `line` into one pixel of `dst`.
#[inline(always)]
fn box_sums<const C: usize>(line: &[u8], k: usize, avg: &BoxAverage, dst: &mut [u8]) {
    for (px, block) in dst.chunks_exact_mut(C).zip(line.chunks_exact(k * C)) {
        let mut sum = [0u32; C];
        for p in block.chunks_exact(C) {
            for c in 0..C {
                sum[c] += u32::from(p[c]);
            }
        }
        for c in 0..C {
            px[c] = avg.of(sum[c]);
        }
    }
}

/// sharp's `premultiply()` then `cast(uchar)` (libvips premultiply.c): each colour times
/// `alpha / 255` computed in double and stored as float, then cast to 8 bits (the fraction
/// dropped). That is exactly `colour * alpha / 255` in integers: an exact multiple comes out of
/// the double product a hair off but the float rounds it back, and any other quotient is at
/// least 1/255 from an integer (checked for all 65536 pairs in the tests).
fn premultiply(pixels: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above), the only requirement of the function.
        #[allow(unsafe_code)]
        return unsafe { avx2::premultiply(pixels) };
    }
    premultiply_any(pixels);
}

/// [`premultiply`] for whichever instruction set it is inlined into.
#[inline(always)]
fn premultiply_any(pixels: &mut [u8]) {
    for px in pixels.chunks_exact_mut(4) {
        let alpha = u32::from(px[3]);
        for v in &mut px[..3] {
            *v = div255(u32::from(*v) * alpha);
        }
    }
}

/// `x / 255` for `x` ≤ 255 × 255, without a division.
#[inline(always)]
fn div255(x: u32) -> u8 {
    ((x + 1 + (x >> 8)) >> 8) as u8
}

/// sharp's `unpremultiply()` then `cast(uchar)` (libvips unpremultiply.c): each colour times
/// `255 / alpha` (0 for a transparent pixel) as float, then cast to 8 bits.
fn unpremultiply(pixels: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above), the only requirement of the function.
        #[allow(unsafe_code)]
        return unsafe { avx2::unpremultiply(pixels) };
    }
    unpremultiply_any(pixels);
}

/// [`unpremultiply`] without vectors: float rounding decides some exact quotients, so the 65536
/// (colour, alpha) results are computed once, the C way, into a table.
fn unpremultiply_any(pixels: &mut [u8]) {
    static TABLE: OnceLock<Vec<u8>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|i| {
                let (v, alpha) = (i >> 8, i & 0xff);
                float_to_u8(unpremultiply_factor(alpha as u8) * f32::from(v))
            })
            .collect()
    });
    for px in pixels.chunks_exact_mut(4) {
        let alpha = usize::from(px[3]);
        for v in &mut px[..3] {
            *v = table[usize::from(*v) << 8 | alpha];
        }
    }
}

/// libvips' unpremultiply factor, `255 / alpha` in double stored as float, 0 for alpha 0.
fn unpremultiply_factor(alpha: u8) -> f32 {
    if alpha == 0 {
        0.0
    } else {
        (255.0 / f64::from(alpha)) as f32
    }
}

/// libvips' float to uchar cast: clipped to 0–255, the fraction dropped.
fn float_to_u8(v: f32) -> u8 {
    v.clamp(0.0, 255.0) as u8
}

/// The kernels compiled for AVX2 (the same safe Rust, vectorised twice as wide), chosen at run
/// time as libvips' Highway kernels are (`HWY_DYNAMIC_DISPATCH`): the default target is SSE2.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::{
        __m128i, __m256i, _CMP_EQ_OQ, _mm_add_epi32, _mm_cvtsi128_si32, _mm_extract_epi64,
        _mm_packs_epi32, _mm_packus_epi16, _mm_set_epi64x, _mm_set1_epi32, _mm_setr_epi8,
        _mm_shuffle_epi8, _mm_srai_epi32, _mm256_add_epi16, _mm256_add_epi32, _mm256_blendv_epi8,
        _mm256_blendv_ps, _mm256_castsi256_si128, _mm256_cmp_ps, _mm256_cvtepi32_ps,
        _mm256_cvtepu8_epi16, _mm256_cvtepu8_epi32, _mm256_cvttps_epi32, _mm256_div_ps,
        _mm256_extract_epi64, _mm256_extracti128_si256, _mm256_madd_epi16, _mm256_max_ps,
        _mm256_min_ps, _mm256_mul_ps, _mm256_mullo_epi16, _mm256_packs_epi32, _mm256_packus_epi16,
        _mm256_set_epi64x, _mm256_set1_epi16, _mm256_set1_epi32, _mm256_set1_ps, _mm256_setr_epi8,
        _mm256_setr_epi32, _mm256_setzero_ps, _mm256_setzero_si256, _mm256_shuffle_epi8,
        _mm256_shuffle_ps, _mm256_srai_epi32, _mm256_srli_epi16, _mm256_unpackhi_epi8,
        _mm256_unpacklo_epi8,
    };

    use super::Image;

    /// [`super::convolve_rows`], 64 or 32 columns at a time: the taps go in pairs, the two
    /// rows' bytes interleaved so that one multiply-add-pairs does both taps for 8 columns
    /// (libvips reducev_hwy.cpp's `ReorderWidenMulAccumulate` on `InterleaveLower(top,
    /// bottom)`). An odd last tap is paired with a zero weight.
    #[target_feature(enable = "avx2")]
    pub(super) fn convolve_rows(src: &[u8], offsets: &[usize], mask: &[i16], dst: &mut [u8]) {
        let row = dst.len();
        let zero = _mm256_setzero_si256();
        let half = _mm256_set1_epi32(super::HALF);
        // (row offset, weight) pairs, the odd one out padded with a zero weight.
        let pair_at = |i: usize| {
            let second = (offsets.get(i + 1).copied(), mask.get(i + 1).copied());
            let (o1, k1) = match second {
                (Some(o), Some(k)) => (o, k),
                _ => (offsets[i], 0),
            };
            let weights = (i32::from(mask[i]) & 0xffff) | (i32::from(k1) << 16);
            (offsets[i], o1, _mm256_set1_epi32(weights))
        };
        let pairs: Vec<(usize, usize, __m256i)> = (0..mask.len()).step_by(2).map(pair_at).collect();
        let mut x0 = 0;
        // 64 columns per pass over the taps (8 accumulators), then 32, then one by one.
        while x0 + 64 <= row {
            let mut s = [half; 8];
            for &(o0, o1, k) in &pairs {
                for h in 0..2 {
                    let at = x0 + 32 * h;
                    let top = bytes32(&src[o0 + at..o0 + at + 32]);
                    let bottom = bytes32(&src[o1 + at..o1 + at + 32]);
                    let acc = &mut s[4 * h..4 * h + 4];
                    madd_pair(acc, top, bottom, k, zero);
                }
            }
            for h in 0..2 {
                let acc = &s[4 * h..4 * h + 4];
                store32(pack(acc), &mut dst[x0 + 32 * h..x0 + 32 * h + 32]);
            }
            x0 += 64;
        }
        while x0 + 32 <= row {
            let mut s = [half; 4];
            for &(o0, o1, k) in &pairs {
                let top = bytes32(&src[o0 + x0..o0 + x0 + 32]);
                let bottom = bytes32(&src[o1 + x0..o1 + x0 + 32]);
                madd_pair(&mut s, top, bottom, k, zero);
            }
            store32(pack(&s), &mut dst[x0..x0 + 32]);
            x0 += 32;
        }
        if x0 < row {
            super::convolve_rows_tail(src, offsets, mask, dst, x0);
        }
    }

    /// Adds `k`'s two weights times the 32 columns of `top` and `bottom` to `acc`: per 128-bit
    /// lane, columns 0-7 (lo) and 8-15 (hi) of that lane with top and bottom alternating,
    /// widened to 16 bits in fours, one multiply-add-pairs each.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn madd_pair(acc: &mut [__m256i], top: __m256i, bottom: __m256i, k: __m256i, zero: __m256i) {
        let lo = _mm256_unpacklo_epi8(top, bottom);
        let hi = _mm256_unpackhi_epi8(top, bottom);
        let parts = [
            _mm256_unpacklo_epi8(lo, zero),
            _mm256_unpackhi_epi8(lo, zero),
            _mm256_unpacklo_epi8(hi, zero),
            _mm256_unpackhi_epi8(hi, zero),
        ];
        for (a, p) in acc.iter_mut().zip(parts) {
            *a = _mm256_add_epi32(*a, _mm256_madd_epi16(p, k));
        }
    }

    /// The four accumulators of [`madd_pair`] shifted down and packed to 32 bytes with
    /// saturation: the packs undo the unpacks' order lane by lane, so columns come out 0-31 in
    /// order, clamped to 0-255.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn pack(acc: &[__m256i]) -> __m256i {
        let s = |i: usize| _mm256_srai_epi32::<{ super::SHIFT as i32 }>(acc[i]);
        _mm256_packus_epi16(
            _mm256_packs_epi32(s(0), s(1)),
            _mm256_packs_epi32(s(2), s(3)),
        )
    }

    /// 32 bytes as a vector (a plain load once compiled).
    #[target_feature(enable = "avx2")]
    fn bytes32(w: &[u8]) -> __m256i {
        let quad = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&w[i..i + 8]);
            i64::from_le_bytes(b)
        };
        _mm256_set_epi64x(quad(24), quad(16), quad(8), quad(0))
    }

    /// Writes the 32 bytes of `v` to `out`.
    #[target_feature(enable = "avx2")]
    fn store32(v: __m256i, out: &mut [u8]) {
        let quads = [
            _mm256_extract_epi64::<0>(v),
            _mm256_extract_epi64::<1>(v),
            _mm256_extract_epi64::<2>(v),
            _mm256_extract_epi64::<3>(v),
        ];
        for (o, q) in out.chunks_exact_mut(8).zip(quads) {
            o.copy_from_slice(&q.to_le_bytes());
        }
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn shrinkv(src: &[u8], row: usize, height: usize, k: usize) -> Vec<u8> {
        super::shrinkv_any(src, row, height, k)
    }

    /// [`super::convolve_row`] with the masks `paired` (see [`super::spread`]): each 4 pixels
    /// are shuffled so that pixels 0 and 1, 2 and 3 sit side by side channel by channel, and one
    /// multiply-add-pairs does 16 taps × channels (libvips reduceh_hwy.cpp does the same with
    /// its `shuf4` tables).
    #[target_feature(enable = "avx2")]
    pub(super) fn convolve_row<const C: usize>(
        padded: &[u8],
        taps: &[(usize, usize)],
        spread: &[Vec<i16>],
        dst: &mut [u8],
    ) {
        let pair = _mm_setr_epi8(0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15);
        let half = _mm_set1_epi32(super::HALF);
        for (x, &(pixel, t)) in taps.iter().enumerate() {
            let mask = &spread[t];
            let window = &padded[pixel * 4..pixel * 4 + mask.len()];
            let mut acc = _mm256_setzero_si256();
            for (w, k) in window.chunks_exact(16).zip(mask.chunks_exact(16)) {
                let v = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(bytes16(w), pair));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(v, words16(k)));
            }
            // Lanes 0-3: pixels 0 and 1 of each group, by channel; 4-7: pixels 2 and 3.
            let sum = _mm_add_epi32(
                _mm256_castsi256_si128(acc),
                _mm256_extracti128_si256::<1>(acc),
            );
            let sum = _mm_srai_epi32::<{ super::SHIFT as i32 }>(_mm_add_epi32(sum, half));
            // Saturating packs: i32 to i16 to 0-255, the clamp of the portable kernel.
            let packed = _mm_packus_epi16(_mm_packs_epi32(sum, sum), sum);
            let px = _mm_cvtsi128_si32(packed).to_le_bytes();
            let at = x * C;
            match dst.get_mut(at..at + 4) {
                Some(d) => d.copy_from_slice(&px),
                None => dst[at..at + C].copy_from_slice(&px[..C]),
            }
        }
    }

    /// [`super::widen`] for RGB: 4 pixels per shuffle, 16 bytes read (so the last 1-5 pixels,
    /// whose 16 bytes would run past the row, go one by one).
    #[target_feature(enable = "avx2")]
    pub(super) fn widen_rgb(line: &[u8], out: &mut [u8]) {
        let spread = _mm_setr_epi8(0, 1, 2, -1, 3, 4, 5, -1, 6, 7, 8, -1, 9, 10, 11, -1);
        let whole = line.len().saturating_sub(4) / 12;
        for (i, d) in out.chunks_exact_mut(16).take(whole).enumerate() {
            let v = _mm_shuffle_epi8(bytes16(&line[i * 12..i * 12 + 16]), spread);
            d[..8].copy_from_slice(&_mm_extract_epi64::<0>(v).to_le_bytes());
            d[8..].copy_from_slice(&_mm_extract_epi64::<1>(v).to_le_bytes());
        }
        for (s, d) in line
            .chunks_exact(3)
            .zip(out.chunks_exact_mut(4))
            .skip(whole * 4)
        {
            d[..3].copy_from_slice(s);
        }
    }

    /// 16 bytes as a vector (built from two 8-byte halves: a plain load once compiled).
    #[target_feature(enable = "avx2")]
    fn bytes16(w: &[u8]) -> __m128i {
        let half = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&w[i..i + 8]);
            i64::from_le_bytes(b)
        };
        _mm_set_epi64x(half(8), half(0))
    }

    /// 16 `i16` as a vector (a plain load once compiled).
    #[target_feature(enable = "avx2")]
    fn words16(k: &[i16]) -> __m256i {
        let quad = |i: usize| {
            let mut q = 0i64;
            for (j, &v) in k[i..i + 4].iter().enumerate() {
                q |= i64::from(v as u16) << (16 * j);
            }
            q
        };
        _mm256_set_epi64x(quad(12), quad(8), quad(4), quad(0))
    }

    /// [`super::premultiply`], 8 pixels at a time: each colour times its pixel's alpha in 16
    /// bits, divided by 255 as [`super::div255`] does, alpha bytes kept.
    #[target_feature(enable = "avx2")]
    pub(super) fn premultiply(pixels: &mut [u8]) {
        // Each pixel's alpha copied to its four bytes, and the mask of the alpha bytes.
        let spread = _mm256_setr_epi8(
            3, 3, 3, 3, 7, 7, 7, 7, 11, 11, 11, 11, 15, 15, 15, 15, 3, 3, 3, 3, 7, 7, 7, 7, 11, 11,
            11, 11, 15, 15, 15, 15,
        );
        let alpha_bytes = _mm256_set1_epi32(0xff00_0000_u32 as i32);
        let zero = _mm256_setzero_si256();
        let one = _mm256_set1_epi16(1);
        let mut chunks = pixels.chunks_exact_mut(32);
        for chunk in chunks.by_ref() {
            let v = bytes32(chunk);
            let a = _mm256_shuffle_epi8(v, spread);
            let product = |v: __m256i, a: __m256i| {
                let x = _mm256_mullo_epi16(v, a);
                _mm256_srli_epi16::<8>(_mm256_add_epi16(
                    _mm256_add_epi16(x, one),
                    _mm256_srli_epi16::<8>(x),
                ))
            };
            let lo = product(_mm256_unpacklo_epi8(v, zero), _mm256_unpacklo_epi8(a, zero));
            let hi = product(_mm256_unpackhi_epi8(v, zero), _mm256_unpackhi_epi8(a, zero));
            let out = _mm256_blendv_epi8(_mm256_packus_epi16(lo, hi), v, alpha_bytes);
            store32(out, chunk);
        }
        super::premultiply_any(chunks.into_remainder());
    }

    /// [`super::unpremultiply`], 2 pixels per vector in float: `255 / alpha` divided in float
    /// (the same float as the C's double quotient stored as float, for every alpha: see the
    /// tests), times the colour in float, clamped and truncated as the cast does.
    #[target_feature(enable = "avx2")]
    pub(super) fn unpremultiply(pixels: &mut [u8]) {
        let max = _mm256_set1_ps(255.0);
        let zero = _mm256_setzero_ps();
        // Lanes 3 and 7: the two alphas, which keep their input bytes.
        let colour = _mm256_setr_epi32(-1, -1, -1, 0, -1, -1, -1, 0);
        let mut chunks = pixels.chunks_exact_mut(8);
        for two in chunks.by_ref() {
            let mut b = [0u8; 8];
            b.copy_from_slice(two);
            let v = _mm256_cvtepu8_epi32(_mm_set_epi64x(0, i64::from_le_bytes(b)));
            let f = _mm256_cvtepi32_ps(v);
            // Each pixel's alpha across its four lanes (one pixel per 128-bit half).
            let alpha = _mm256_shuffle_ps::<0xff>(f, f);
            let factor = _mm256_div_ps(max, alpha);
            let factor = _mm256_blendv_ps(factor, zero, _mm256_cmp_ps::<_CMP_EQ_OQ>(alpha, zero));
            let q = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(factor, f), zero), max);
            let q = _mm256_blendv_epi8(v, _mm256_cvttps_epi32(q), colour);
            let q = _mm256_packus_epi16(_mm256_packs_epi32(q, q), q);
            let lo = _mm256_castsi256_si128(q);
            let hi = _mm256_extracti128_si256::<1>(q);
            two[..4].copy_from_slice(&_mm_cvtsi128_si32(lo).to_le_bytes());
            two[4..].copy_from_slice(&_mm_cvtsi128_si32(hi).to_le_bytes());
        }
        super::unpremultiply_any(chunks.into_remainder());
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn shrinkh_n<const C: usize>(img: &Image, k: usize) -> Vec<u8> {
        super::shrinkh_n_any::<C>(img, k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic 8-bit test pattern of `w` x `h` x `channels` (no two rows or columns
    /// alike, full range).
    fn pattern(w: usize, h: usize, channels: usize) -> Vec<u8> {
        (0..w * h * channels)
            .map(|i| {
                let (px, c) = (i / channels, i % channels);
                let (x, y) = (px % w, px / w);
                ((x * 37 + y * 101 + c * 59 + (x * y) % 7) % 256) as u8
            })
            .collect()
    }

    #[test]
    fn masks_sum_to_one_in_fixed_point_and_centre_at_half_a_pixel() {
        for shrink in [1.1, 1.5, 2.0, 2.8125, 3.7] {
            let n = points(shrink);
            assert_eq!(n, 2 * (3.0 * shrink).round_ties_even() as usize + 1);
            let masks = masks(n, shrink);
            assert_eq!(masks.len(), POSITIONS + 1);
            for m in &masks {
                assert_eq!(m.len(), n);
                let sum: i32 = m.iter().map(|&k| i32::from(k)).sum();
                // Each of the n truncations towards zero moves the sum by less than one unit
                // (down for the positive lobes, up for the negative ones).
                assert!((sum - 4096).abs() < n as i32, "{shrink}: sum {sum}");
            }
            // Half a pixel: the window is centred on the middle tap.
            let half = &masks[POSITIONS / 2];
            assert!(half.iter().eq(half.iter().rev()), "{shrink}: {half:?}");
            let peak = half.iter().max().copied();
            assert_eq!(peak, Some(half[n / 2]));
        }
    }

    #[test]
    fn points_round_halves_to_even_like_c_rint() {
        // 3 * 1.5 = 4.5 rounds to 4 (not 5), 3 * 2.5 = 7.5 to 8, 3 * 0.5 = 1.5 to 2.
        assert_eq!(points(1.5), 9);
        assert_eq!(points(2.5), 17);
        assert_eq!(points(0.5), 5);
        assert_eq!(points(2.0), 13);
    }

    #[test]
    fn premultiply_is_the_float_computation_of_libvips() {
        // Every (colour, alpha) pair, in one buffer so that the vector path runs too.
        let mut pixels: Vec<u8> = (0..=u16::MAX)
            .flat_map(|i| {
                let (v, alpha) = ((i >> 8) as u8, i as u8);
                [v, 255 - v, v, alpha]
            })
            .collect();
        let mut portable = pixels.clone();
        premultiply(&mut pixels);
        premultiply_any(&mut portable);
        assert_eq!(pixels, portable);
        for (i, px) in (0..=u16::MAX).zip(pixels.chunks_exact(4)) {
            let (v, alpha) = ((i >> 8) as u8, i as u8);
            // premultiply.c: double product, stored as float, cast to uchar.
            let libvips = |c: u8| float_to_u8((f64::from(c) * (f64::from(alpha) / 255.0)) as f32);
            assert_eq!(
                px,
                [libvips(v), libvips(255 - v), libvips(v), alpha],
                "{v} {alpha}"
            );
        }
    }

    #[test]
    fn unpremultiply_vector_path_is_the_float_computation_of_libvips() {
        // The factor divided in float equals the C's double quotient stored as float.
        for alpha in 1..=255u8 {
            assert_eq!(
                unpremultiply_factor(alpha).to_bits(),
                (255.0f32 / f32::from(alpha)).to_bits(),
                "{alpha}"
            );
        }
        let mut pixels: Vec<u8> = (0..=u16::MAX)
            .flat_map(|i| {
                let (v, alpha) = ((i >> 8) as u8, i as u8);
                [v, 255 - v, v / 2, alpha]
            })
            .collect();
        let mut portable = pixels.clone();
        unpremultiply(&mut pixels);
        unpremultiply_any(&mut portable);
        assert_eq!(pixels, portable);
        // Spot values: an opaque pixel is unchanged, a transparent one is black, colour 100 at
        // alpha 200 is 100 × 1.275 = 127.5, truncated.
        let mut px = [9, 8, 7, 255, 9, 8, 7, 0, 100, 100, 100, 200];
        unpremultiply(&mut px);
        assert_eq!(px, [9, 8, 7, 255, 0, 0, 0, 0, 127, 127, 127, 200]);
    }

    #[test]
    fn vector_and_portable_kernels_agree() {
        // The AVX2 kernels (when the CPU has AVX2) against the portable code they replace, on
        // widths that leave tails.
        let (w, h) = (203, 9);
        for channels in [3, 4] {
            let src = pattern(w, h, channels);
            let row = w * channels;
            let offsets: Vec<usize> = [0, 3, 1, 8, 2, 2, 5].iter().map(|r| r * row).collect();
            let mask = [-300i16, 1200, 2500, 900, -150, 40, -90];
            let (mut a, mut b) = (vec![0u8; row], vec![0u8; row]);
            convolve_rows(&src, &offsets, &mask, &mut a);
            convolve_rows_any(&src, &offsets, &mask, &mut b);
            assert_eq!(a, b);
            assert_eq!(shrinkv(&src, row, h, 4), shrinkv_any(&src, row, h, 4));
            let img = Image {
                pixels: src.clone(),
                width: w,
                height: h,
            };
            let (sa, sb) = match channels {
                3 => (shrinkh_n::<3>(&img, 3), shrinkh_n_any::<3>(&img, 3)),
                _ => (shrinkh_n::<4>(&img, 3), shrinkh_n_any::<4>(&img, 3)),
            };
            assert_eq!(sa, sb);
            let mut widened = vec![0u8; w * 4];
            let mut by_hand = vec![0u8; w * 4];
            match channels {
                3 => widen::<3>(&src[..row], &mut widened),
                _ => widen::<4>(&src[..row], &mut widened),
            }
            for (s, d) in src[..row]
                .chunks_exact(channels)
                .zip(by_hand.chunks_exact_mut(4))
            {
                d[..channels].copy_from_slice(s);
            }
            assert_eq!(widened, by_hand);
            // The horizontal kernel takes the masks in its own layout; both layouts of the
            // same masks must give the same row.
            let n = 11;
            let masks = masks(n, 1.7);
            let group = n.div_ceil(4) * 4;
            let taps: Vec<(usize, usize)> = (0..60).map(|x| (x * 3, x % 65)).collect();
            let padded: Vec<u8> = pattern(w + group, 1, 4);
            let layout = |paired| -> Vec<Vec<i16>> {
                masks.iter().map(|m| spread(m, group, paired)).collect()
            };
            let (mut a, mut b) = (vec![0u8; 60 * channels], vec![0u8; 60 * channels]);
            match channels {
                3 => {
                    convolve_row::<3>(&padded, &taps, &layout(wide()), &mut a);
                    convolve_row_any::<3>(&padded, &taps, &layout(false), &mut b);
                }
                _ => {
                    convolve_row::<4>(&padded, &taps, &layout(wide()), &mut a);
                    convolve_row_any::<4>(&padded, &taps, &layout(false), &mut b);
                }
            }
            assert_eq!(a, b);
        }
    }

    #[test]
    fn box_average_has_the_highway_rounding() {
        // k = 2 is exact: (1 + 2 + 1) / 2.
        assert_eq!(BoxAverage::new(2).of(1 + 2), 2);
        // k = 3 truncates the reciprocal: 1 + 2 + 2 = 5 averages to 1, not round(5/3) = 2,
        // and 254 + 255 + 255 to 254, while their neighbours come out as rounding would.
        let three = BoxAverage::new(3);
        assert_eq!(three.of(5), 1);
        assert_eq!(three.of(4), 1);
        assert_eq!(three.of(6), 2);
        assert_eq!(three.of(3 * 255 - 1), 254);
        assert_eq!(three.of(3 * 255), 255);
        assert_eq!(BoxAverage::new(4).of(4 * 255), 255);
    }

    #[test]
    fn box_shrinks_average_blocks_and_repeat_the_edge() {
        // 1 x 5, one channel-triple per pixel: rows 10, 20, 30, 40, 50 shrunk by 2 are
        // (10+20)/2, (30+40)/2 and the last row averaged with itself.
        let column: Vec<u8> = [10u8, 20, 30, 40, 51]
            .iter()
            .flat_map(|&v| [v, v, v])
            .collect();
        let v = shrinkv(&column, 3, 5, 2);
        assert_eq!(v, [15, 15, 15, 35, 35, 35, 51, 51, 51]);
        // The same along a row, 4 channels, by 4: 7 pixels make 2.
        let img = Image {
            pixels: (0..7u8).flat_map(|x| [x * 10, 0, 255, 100]).collect(),
            width: 7,
            height: 1,
        };
        let h = shrinkh(&img, 4, 4);
        // (0+10+20+30)/4 = 15; (40+50+60+60)/4 = 52.5, rounded half up to 53.
        assert_eq!(h, [15, 0, 255, 100, 53, 0, 255, 100]);
    }

    #[test]
    fn output_sizes_are_libvips_rounding() -> Result<(), ResampleError> {
        for (src, dst) in [
            ((720, 477), (256, 170)),
            ((1629, 927), (128, 73)),
            ((900, 600), (640, 427)),
            ((2700, 1800), (500, 333)),
            ((300, 7), (16, 1)),
            ((7, 300), (1, 43)),
            ((5, 5), (5, 5)),
        ] {
            for channels in [3, 4] {
                let f = sharp_factors(src, dst);
                let img = resize(pattern(src.0, src.1, channels), channels, src, f)?;
                assert_eq!((img.width, img.height), dst, "{src:?} -> {dst:?}");
                assert_eq!(img.pixels.len(), dst.0 * dst.1 * channels);
            }
        }
        // One axis only.
        let img = resize(pattern(40, 30, 3), 3, (40, 30), (1.0, 3.0))?;
        assert_eq!((img.width, img.height), (40, 10));
        let img = resize(pattern(40, 30, 3), 3, (40, 30), (4.0, 1.0))?;
        assert_eq!((img.width, img.height), (10, 30));
        Ok(())
    }

    #[test]
    fn same_size_is_the_identity_and_bad_input_is_refused() -> Result<(), ResampleError> {
        let src = pattern(9, 4, 3);
        assert_eq!(resize(src.clone(), 3, (9, 4), (1.0, 1.0))?.pixels, src);
        assert_eq!(
            resize(vec![0; 10], 3, (9, 4), (1.0, 1.0)),
            Err(ResampleError::BadBuffer)
        );
        assert_eq!(
            resize(vec![0; 36], 1, (9, 4), (1.0, 1.0)),
            Err(ResampleError::Channels(1))
        );
        assert_eq!(
            resize(src, 3, (9, 4), (0.5, 1.0)),
            Err(ResampleError::Factor(0.5))
        );
        Ok(())
    }

    #[test]
    fn flat_images_stay_flat() -> Result<(), ResampleError> {
        // The masks lose up to n/4096 to truncation; a flat field must still come back exact
        // at the top of the range after the +2048 rounding, and 0 stay 0.
        for v in [0u8, 1, 128, 254, 255] {
            let img = resize(
                vec![v; 97 * 61 * 3],
                3,
                (97, 61),
                (97.0 / 13.0, 97.0 / 13.0),
            )?;
            assert!(img.pixels.iter().all(|&p| p.abs_diff(v) <= 1), "{v}");
        }
        Ok(())
    }

    #[test]
    fn transparent_pixels_do_not_bleed_colour() -> Result<(), ResampleError> {
        // Left half fully transparent red, right half opaque blue.
        let (w, h) = (60, 20);
        let pixels: Vec<u8> = (0..w * h)
            .flat_map(|i| {
                if i % w < w / 2 {
                    [255, 0, 0, 0]
                } else {
                    [0, 0, 255, 255]
                }
            })
            .collect();
        let img = resize(pixels, 4, (w, h), sharp_factors((w, h), (13, 4)))?;
        let mut partial = 0;
        for px in img.pixels.chunks_exact(4) {
            // No red anywhere: premultiplied, the transparent red weighs nothing.
            assert_eq!(px[0], 0, "{px:?}");
            if px[3] == 0 {
                assert_eq!(px, [0, 0, 0, 0]);
            } else {
                assert!(px[2] >= 250, "{px:?}");
            }
            if px[3] > 0 && px[3] < 255 {
                partial += 1;
            }
        }
        // The edge is blended in alpha, so the test did cross it.
        assert!(partial > 0);
        Ok(())
    }

    /// Decodes a fixture PNG to packed 8-bit pixels of its own channel count.
    fn fixture(name: &str) -> (Vec<u8>, (usize, usize), usize) {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let img = image::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let size = (img.width() as usize, img.height() as usize);
        if img.color().has_alpha() {
            (img.into_rgba8().into_raw(), size, 4)
        } else {
            (img.into_rgb8().into_raw(), size, 3)
        }
    }

    /// Resizes `source` to the width of `reference` (sharp's `resize(width).png()` of it) and
    /// returns the mean absolute difference per byte.
    fn difference_from_sharp(source: &str, reference: &str) -> f64 {
        let (src, size, channels) = fixture(source);
        let (want, dst, want_channels) = fixture(reference);
        assert_eq!(channels, want_channels);
        let got = resize(src, channels, size, sharp_factors(size, dst))
            .unwrap_or_else(|e| panic!("{source}: {e}"));
        assert_eq!((got.width, got.height), dst);
        let total: u64 = got
            .pixels
            .iter()
            .zip(&want)
            .map(|(&a, &b)| u64::from(a.abs_diff(b)))
            .sum();
        total as f64 / want.len() as f64
    }

    #[test]
    fn matches_sharp_on_its_own_output() {
        // References written by sharp 0.35.5 (libvips 8.18.7): `sharp(src).resize(w).png()`.
        // 64 -> 23 is lanczos3 only; 64 -> 9 and 240 -> 37 box-shrink by 3 first; alpha.png
        // goes through premultiplication.
        for (source, reference) in [
            ("resample-rgb.png", "resample-rgb-sharp-w23.png"),
            ("resample-rgb.png", "resample-rgb-sharp-w9.png"),
            ("alpha.png", "alpha-sharp-w37.png"),
        ] {
            let d = difference_from_sharp(source, reference);
            assert!(d < 0.01, "{reference}: mean difference {d}");
        }
    }
}
