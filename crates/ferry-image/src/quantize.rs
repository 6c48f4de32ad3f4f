//! Palette reduction for PNG output, standing in for libimagequant (sharp's `png({ quality })`,
//! whose Rust port is GPL-3). Like libimagequant 2.4.1 (the C version sharp bundles, at the
//! speed sharp asks for) it uses the colours the error target `quality` sets calls for, not
//! always 256: its median cut over a colour histogram (how boxes are ranked, split and given a
//! colour) stops once its boxes' error is within the budget, the cut is repeated with the
//! weights of badly served colours raised while a smaller palette still meets the target, and
//! k-means refines the result. The error is libimagequant's measure (gamma-adjusted
//! premultiplied RGB, over black and over white), weighted by how flat each pixel's
//! surroundings are (errors hide in texture) with no colour above a tenth of the image. At
//! quality 100 an image of at most 256 colours keeps them exactly (below 100 libimagequant
//! reduces those too, and so does this). Pixels are remapped with serpentine Floyd–Steinberg
//! error diffusion on all four channels, in flat areas and gradients only (not on edges, where
//! it only scatters noise), in Ferry's own space: premultiplied luma / colour differences /
//! alpha, from libimagequant's working gamma (sRGB values to the power 1.21), where two colours
//! differ by the larger of their differences composited over black and over white
//! (libimagequant's idea): what a half-transparent pixel looks like on a page, not its stored
//! channels, is what counts.

// Four-channel arithmetic reads clearest with one index over the channels.
#![allow(clippy::needless_range_loop)]

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// PNG palettes hold at most 256 entries (sharp's default `colours`).
const MAX_COLORS: usize = 256;

/// k-means steps after the palette search, at most (libimagequant.c `liq_set_speed` at
/// sharp's speed 4).
const VORONOI_STEPS: usize = 12;

/// Median cuts `find_best_palette` may try (libimagequant.c `liq_set_speed` at speed 4: each
/// kept palette costs one, each rejected one six).
const FEEDBACK_TRIALS: i32 = 20;

/// Distinct colours up to which the histogram keeps every colour apart, as libimagequant's
/// does; an image with more (a photo) is counted in 6-bit buckets, which bounds the work of
/// the repeated cuts (`photo.jpg` at 640 px: ~236 000 exact colours, ~67 000 buckets).
const EXACT_COLORS: usize = 1 << 15;

/// libimagequant weighs no colour above a tenth of the image (pam.c
/// `pam_acolorhashtoacolorhist`), so a large flat background neither drowns the error of
/// everything else nor pulls every palette colour its way.
const MAX_SHARE: f64 = 0.1;

/// Largest error carried to a neighbour, per channel (scaled units, 0–1): bounds the smear a
/// palette far from some colour would leave behind it.
const MAX_CARRY: f32 = 0.12;

/// Share of each pixel's error passed on: full Floyd–Steinberg leaves visible noise on smooth
/// gradients (SSIM on `alpha.png` at 128 px: 15/16 → 0.915, 0.75 → 0.928; sharp 0.931; measured
/// before dithering was limited to flat areas and the palette to what the quality needs).
const DITHER: f32 = 0.75;

/// Squared carried error under which a pixel takes none (about 2.8 levels of 255): areas close
/// to a palette colour stay flat, which compresses better and leaves less noise, at the price
/// of faint bands like those in sharp's output (`alpha.png` at 128 px: 6016 → 5362 bytes, SSIM
/// 0.928 → 0.937, measured with the earlier always-256-colour palette).
const MIN_CARRY2: f32 = 8.0 / 65536.0;

/// Local contrast (8-bit levels) at which a pixel takes and passes on no error (see
/// `dither_strength`): 64 keeps dithering in gradients and off anti-aliased edges and texture
/// (`photo.jpg` at 900 px, dithered everywhere: 174 kB, SSIM 0.813; 128: 163 kB, 0.826; 64:
/// 151 kB, 0.838; sharp 184 kB, 0.664).
const EDGE: f32 = 64.0;

/// Weight of the two colour differences against luma in the distance: luma errors are the
/// ones a viewer sees first, but too little weight leaves the palette poor in colour, which
/// the error budget counts in full (more entries for the same target). Cases passing in the
/// PNG corpus bench (`bench/image-corpus.sh`, q 50 + 75 + 90, 49 each), all else as now: 0.5:
/// 40 + 41 + 41; 0.7: 44 + 43 + 42; 1.0: 43 + 42 + 34 (SSIM sees only luma). Measured when
/// the palette was built in this space too; now only the remapping is.
const CHROMA: f32 = 0.7;

/// A pixel in the quantizer's space: premultiplied luma, blue and red differences (times
/// `CHROMA`) and alpha, all in 0–1 (differences in ±0.5), from channel values in
/// libimagequant's working gamma (`gamma_lut`).
type Px = [f32; 4];

/// A palette (RGBA entries) and one index per pixel of `rgba` (`width` pixels per row), with as
/// few colours as `quality` (0–100, sharp's `png({ quality })`) allows.
pub fn quantize(rgba: &[u8], width: usize, quality: u8) -> (Vec<[u8; 4]>, Vec<u8>) {
    let width = width.max(1);
    let exact = exact_palette(rgba);
    if quality >= 100
        && let Some(exact) = exact
    {
        return exact;
    }
    let flat = flatness(rgba, width);
    let hist = match exact {
        // Below 100 libimagequant reduces even an image of few colours (libimagequant.c
        // `pngquant_quantize`).
        Some((colors, indices)) => exact_histogram(&colors, &indices, &flat),
        None => histogram(rgba, &flat),
    };
    drop(flat);
    let mut hist = hist;
    let palette = palette_within(&mut hist, target_error(quality));
    let mut colors: Vec<[u8; 4]> = palette.iter().map(|p| to_rgba(*p)).collect();
    colors.sort_unstable_by_key(|c| (c[3], c[1], c[0], c[2]));
    colors.dedup();
    let strength = dither_strength(&contrast_map(rgba, width), width);
    let indices = remap(rgba, width, &colors, &strength);
    (colors, indices)
}

/// libimagequant's mean error allowed at `quality` (libimagequant.c `quality_to_mse`, 2.x as
/// sharp bundles it): none at 100, a curve its author fitted to libjpeg's qualities below, with
/// extra slack under 10. Its unit is `liq_diff`'s.
fn target_error(quality: u8) -> f64 {
    match quality {
        100.. => 0.0,
        // libimagequant's "any error" (`MAX_DIFF`): two colours.
        0 => 1e20,
        q => {
            let q = f64::from(q);
            let below_10 = (0.016 / (q + 0.001) - 0.001).max(0.0);
            below_10 + 2.5 * (100.1 - q) / 100.0 / (210.0 + q).powf(1.2)
        }
    }
}

/// The palette for `hist` at the mean error `target` (`target_error`), as libimagequant 2.4.1
/// finds it at sharp's speed 4 (libimagequant.c `pngquant_quantize`): `find_best_palette`'s
/// repeated median cuts, then up to `VORONOI_STEPS` k-means steps until the error settles,
/// then one more with the entries weighed by their pixel counts (the Voronoi step of
/// `remap_to_palette`, which sets the colours written out). PNG corpus bench, q 50 + 75 + 90,
/// against the earlier cut (own ranking and split, 4 k-means steps in the quantizer's space,
/// no search): 57 + 53 + 49 → 53 + 55 + 57.
fn palette_within(hist: &mut Histogram, target: f64) -> Vec<Px> {
    let mut liq = find_best_palette(hist, target);
    let mut previous = f64::INFINITY;
    for _ in 0..VORONOI_STEPS {
        let error = voronoi(hist, &mut liq, false, false);
        // libimagequant's `voronoi_iteration_limit` at speed 4.
        if (previous - error).abs() < 1.0 / f64::from(1u32 << 19) {
            break;
        }
        previous = error;
    }
    voronoi(hist, &mut liq, false, true);
    liq.iter().map(|c| from_premul(*c, c[3])).collect()
}

/// The image's own palette when it has at most 256 distinct colours.
fn exact_palette(rgba: &[u8]) -> Option<(Vec<[u8; 4]>, Vec<u8>)> {
    let mut map: HashMap<[u8; 4], u8, FastHash> = HashMap::default();
    let mut palette = Vec::new();
    let mut indices = Vec::with_capacity(rgba.len() / 4);
    let mut last: Option<([u8; 4], u8)> = None;
    for px in rgba.chunks_exact(4) {
        let key = [px[0], px[1], px[2], px[3]];
        // Runs of one colour are common in the images this path is for.
        if let Some((k, i)) = last
            && k == key
        {
            indices.push(i);
            continue;
        }
        let idx = match map.get(&key) {
            Some(&i) => i,
            None => {
                let i = u8::try_from(palette.len()).ok()?;
                palette.push(key);
                map.insert(key, i);
                i
            }
        };
        last = Some((key, idx));
        indices.push(idx);
    }
    Some((palette, indices))
}

/// Multiply–shift hashing for the packed colour keys (SipHash would be a third of the time).
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u32(&mut self, v: u32) {
        self.0 = (u64::from(v) ^ self.0).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 16;
    }
}

/// The hasher builder of the quantizer's maps.
type FastHash = BuildHasherDefault<KeyHasher>;

/// A colour of the quantizer's space (`lut`: `gamma_lut`).
fn to_px(lut: &[f32; 256], c: [u8; 4]) -> Px {
    let a = f32::from(c[3]) / 255.0;
    from_premul(c.map(|v| lut[usize::from(v)] * a), a)
}

/// Premultiplied RGB (0–1) and alpha to the quantizer's space: luma, two colour differences
/// and alpha, each times its weight.
fn from_premul(c: [f32; 4], a: f32) -> Px {
    let y = 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2];
    [
        y,
        (c[2] - y) * (0.5 / 0.886) * CHROMA,
        (c[0] - y) * (0.5 / 0.701) * CHROMA,
        a,
    ]
}

/// The quantizer's space back to premultiplied RGB (0–1) and alpha.
fn to_premul(p: Px) -> ([f32; 3], f32) {
    let y = p[0];
    let b = y + p[1] / CHROMA * (0.886 / 0.5);
    let r = y + p[2] / CHROMA * (0.701 / 0.5);
    let g = (y - 0.299 * r - 0.114 * b) / 0.587;
    ([r, g, b], p[3])
}

/// Back to straight (not premultiplied) sRGB RGBA8; fully transparent is transparent black.
/// Like libimagequant (pam.h `to_rgb`), each value in 0–1 is scaled by 256 and truncated
/// (255 at most): the steps fall at multiples of 1/256, so a palette colour comes out up to
/// half a level darker in the shadows and brighter in the highlights than rounding to the
/// nearest of 255 levels would make it, and each level's own value (k / 255) stays k.
fn to_rgba(p: Px) -> [u8; 4] {
    let (rgb, a) = to_premul(p);
    let a = a.clamp(0.0, 1.0);
    if a < 1.0 / 256.0 {
        return [0; 4];
    }
    let level = |v: f64| (v * 256.0).min(255.0) as u8;
    let c = |i: usize| level(f64::from((rgb[i] / a).clamp(0.0, 1.0)).powf(1.0 / LIQ_GAMMA));
    [c(0), c(1), c(2), level(f64::from(a))]
}

/// Squared distance in the quantizer's space: the larger luma difference of the two colours
/// composited over black and over white (white is luma 1 where alpha is 0), plus the colour
/// differences (the same over either background). Never less than the difference along any of
/// the first three axes, which the nearest search relies on.
fn dist(a: &Px, b: &Px) -> f32 {
    let d = [a[0] - b[0], a[1] - b[1], a[2] - b[2], a[3] - b[3]];
    let over_white = d[0] - d[3];
    (d[0] * d[0]).max(over_white * over_white) + d[1] * d[1] + d[2] * d[2]
}

/// One histogram entry (a colour, or a bucket of them): the mean colour of its pixels in
/// libimagequant's space, and how much they weigh.
#[derive(Clone, Copy, Default)]
struct Entry {
    /// The pixels' `importance_weight`s summed, capped at `MAX_SHARE` of the image.
    weight: f32,
    /// Mean in libimagequant's space (`liq_px`).
    lq: [f32; 4],
    /// `weight` as the palette search adjusts it (libimagequant's `adjusted_weight`).
    adjusted: f32,
    /// Pixels in the bucket.
    count: f32,
    /// The palette index this entry last went to: where the nearest search starts.
    hint: u16,
}

/// The colour histogram and the totals the error budget is measured against.
struct Histogram {
    entries: Vec<Entry>,
    /// Sum of the entries' weights.
    weight: f64,
    /// Weighted error of every pixel against its own bucket's mean (libimagequant's measure):
    /// what no palette built from the buckets can remove.
    spread: f64,
}

/// A bucket being filled. Colours are kept as the first pixel's and sums of the others'
/// differences from it, which stay exact in `f32` however many pixels repeat a colour (plain
/// sums over a few million pixels drift by whole levels).
struct Bucket {
    count: u32,
    /// First pixel, in libimagequant's space.
    liq_first: [f32; 4],
    /// Sums of the differences from `liq_first` and of their `liq_diff`s, each times the
    /// pixel's `importance_weight`.
    liq_diff: [f32; 4],
    liq_diff2: f32,
    /// Sum of the pixels' `importance_weight`s.
    weight: f64,
}

/// The image's colours, each with its pixels' summed weight (`flat`: `flatness` of each
/// pixel), as libimagequant's pam.c `pam_computeacolorhash` counts them; beyond
/// `EXACT_COLORS` distinct colours, in buckets of 6 bits per colour channel, each keeping its
/// pixels' exact mean (far finer than a 256-colour palette). PNG corpus bench, q 50 + 75 + 90,
/// with the palette search as now: 55 + 54 + 48 pass with buckets always, 53 + 55 + 57 with
/// exact colours (graphics' anti-aliasing steps stay apart).
fn histogram(rgba: &[u8], flat: &[u8]) -> Histogram {
    histogram_keyed(rgba, flat, true, EXACT_COLORS)
        .or_else(|| histogram_keyed(rgba, flat, false, usize::MAX))
        .unwrap_or(Histogram {
            entries: Vec::new(),
            weight: 0.0,
            spread: 0.0,
        })
}

/// `histogram` with each colour its own entry (`exact_keys`; none once there are more than
/// `limit`), or in buckets of 6 bits per colour channel.
fn histogram_keyed(rgba: &[u8], flat: &[u8], exact_keys: bool, limit: usize) -> Option<Histogram> {
    let lut = gamma_lut();
    // Buckets in the order they were made, found by key through `index` (the map's order,
    // which is the histogram's, is the one a map of the buckets themselves would have).
    let mut index: HashMap<u32, u32, FastHash> = HashMap::default();
    let mut buckets: Vec<Bucket> = Vec::new();
    // The last pixel's key and bucket: graphics repeat colours in runs.
    let mut last: Option<(u32, usize)> = None;
    for (c, &f) in rgba.chunks_exact(4).zip(flat) {
        // Every fully transparent pixel is the same colour.
        let c = if c[3] == 0 {
            [0; 4]
        } else {
            [c[0], c[1], c[2], c[3]]
        };
        // Alpha keeps all 8 bits: a faint shadow (alpha 1, 2, 3 over white) would otherwise
        // share one bucket with transparent, and no palette entry could tell them apart
        // (`icon.png`'s shadow at 256 px banded in steps of 5; PNG corpus bench, q 50 + 75 +
        // 90: 44 + 43 + 40 pass with 6-bit alpha, 44 + 43 + 42 with 8).
        let key = if exact_keys {
            u32::from_le_bytes(c)
        } else {
            u32::from_le_bytes([c[0] >> 2, c[1] >> 2, c[2] >> 2, c[3]])
        };
        let bi = match last {
            Some((k, i)) if k == key => i,
            _ => {
                let i = *index.entry(key).or_insert_with(|| {
                    buckets.push(Bucket {
                        count: 0,
                        liq_first: liq_px(lut, c),
                        liq_diff: [0.0; 4],
                        liq_diff2: 0.0,
                        weight: 0.0,
                    });
                    (buckets.len() - 1) as u32
                }) as usize;
                last = Some((key, i));
                i
            }
        };
        let b = &mut buckets[bi];
        let w = importance_weight(f);
        // With exact keys every pixel is its bucket's first colour: the differences would
        // all be zero (and add nothing).
        if !exact_keys {
            let l = liq_px(lut, c);
            let d: [f32; 4] = std::array::from_fn(|i| l[i] - b.liq_first[i]);
            for i in 0..4 {
                b.liq_diff[i] += w * d[i];
            }
            b.liq_diff2 += w * liq_diff(&d);
        }
        b.weight += f64::from(w);
        b.count += 1;
        if index.len() > limit {
            return None;
        }
    }
    let cap = max_weight(rgba.len() / 4);
    let (mut weight, mut spread) = (0f64, 0f64);
    let entries = index
        .into_values()
        .map(|i| {
            let b = &buckets[i as usize];
            let w = b.weight as f32;
            let capped = w.min(cap);
            let d = b.liq_diff.map(|v| v / w);
            // Squared differences about the mean, from those about the first pixel.
            let own = (b.liq_diff2 - w * liq_diff(&d)).max(0.0);
            weight += f64::from(capped);
            spread += f64::from(own * (capped / w));
            Entry {
                weight: capped,
                lq: std::array::from_fn(|i| b.liq_first[i] + d[i]),
                adjusted: capped,
                count: b.count as f32,
                ..Entry::default()
            }
        })
        .collect();
    Some(Histogram {
        entries,
        weight,
        spread,
    })
}

/// The histogram of an image with `colors` exactly (`indices` into them, `flat` the
/// `flatness` of each pixel): one entry per colour used.
fn exact_histogram(colors: &[[u8; 4]], indices: &[u8], flat: &[u8]) -> Histogram {
    // Pixel counts and summed flatness: the summed `importance_weight`s, exactly.
    let mut sums = vec![(0u32, 0u64); colors.len()];
    for (&i, &f) in indices.iter().zip(flat) {
        let s = &mut sums[usize::from(i)];
        *s = (s.0 + 1, s.1 + u64::from(f));
    }
    let weights = sums
        .into_iter()
        .map(|(n, f)| (0.5 * f64::from(n) + f as f64 / 255.0, n));
    let lut = gamma_lut();
    let cap = max_weight(indices.len());
    let mut weight = 0f64;
    let entries = colors
        .iter()
        .zip(weights)
        .filter(|&(_, (w, _))| w > 0.0)
        .map(|(&c, (w, n))| {
            let c = if c[3] == 0 { [0; 4] } else { c };
            let w = (w as f32).min(cap);
            weight += f64::from(w);
            Entry {
                weight: w,
                lq: liq_px(lut, c),
                adjusted: w,
                count: n as f32,
                ..Entry::default()
            }
        })
        .collect();
    Histogram {
        entries,
        weight,
        spread: 0.0,
    }
}

/// The most one colour of an image of `pixels` may weigh (`MAX_SHARE`).
fn max_weight(pixels: usize) -> f32 {
    (MAX_SHARE * pixels as f64).max(1.0) as f32
}

/// How much a pixel counts, from its `flatness` (libimagequant's importance map, pam.c
/// `pam_computeacolorhash`): from a half in busy texture, where errors hide, to one and a
/// half in flat areas.
fn importance_weight(flat: u8) -> f32 {
    0.5 + f32::from(flat) / 255.0
}

/// Each pixel's second differences, the largest over the channels, across and down (clamped
/// to 255; rows of `width`, clamped at the sides), in 8-bit sRGB levels: the local contrast
/// `dither_strength` works from (`flatness` measures its own in libimagequant's space). Every
/// fully transparent pixel counts as transparent black.
fn contrast_map(rgba: &[u8], width: usize) -> Vec<[u8; 2]> {
    let n = width * 4;
    let height = rgba.len() / n;
    let mut out = Vec::with_capacity(width * height);
    if height == 0 {
        return out;
    }
    // Rows as i16 channel values, transparent pixels zeroed.
    let load = |y: usize, buf: &mut Vec<i16>| {
        let row = &rgba[y * n..(y + 1) * n];
        buf.clear();
        buf.extend(row.iter().map(|&v| i16::from(v)));
        for (p, c) in buf.chunks_exact_mut(4).zip(row.chunks_exact(4)) {
            if c[3] == 0 {
                p.fill(0);
            }
        }
    };
    let (mut up, mut cur, mut down) = (Vec::new(), Vec::new(), Vec::new());
    load(0, &mut cur);
    up.clone_from(&cur);
    load(1.min(height - 1), &mut down);
    let (mut across, mut along) = (vec![0u16; n], vec![0u16; n]);
    for y in 0..height {
        if y > 0 {
            std::mem::swap(&mut up, &mut cur);
            std::mem::swap(&mut cur, &mut down);
            load((y + 1).min(height - 1), &mut down);
        }
        // Plain loops over slices, which the compiler vectorises; at the sides the missing
        // neighbour is the pixel itself.
        if width > 1 {
            let inner = across[4..n - 4].iter_mut().zip(&cur[..n - 8]);
            for ((a, &l), (&c, &r)) in inner.zip(cur[4..n - 4].iter().zip(&cur[8..])) {
                *a = (l + r - 2 * c).unsigned_abs();
            }
            for i in 0..4 {
                across[i] = (cur[i + 4] - cur[i]).unsigned_abs();
                across[n - 4 + i] = (cur[n - 8 + i] - cur[n - 4 + i]).unsigned_abs();
            }
        } else {
            across.fill(0);
        }
        for ((a, &u), (&c, &d)) in along.iter_mut().zip(&up).zip(cur.iter().zip(&down)) {
            *a = (u + d - 2 * c).unsigned_abs();
        }
        for (a, d) in across.chunks_exact(4).zip(along.chunks_exact(4)) {
            let (a, d) = (
                a[0].max(a[1]).max(a[2]).max(a[3]),
                d[0].max(d[1]).max(d[2]).max(d[3]),
            );
            out.push([a.min(255) as u8, d.min(255) as u8]);
        }
    }
    out
}

/// How flat each pixel's surroundings are, 0 (busy) to 255 (flat), as libimagequant's noise
/// map (libimagequant.c `contrast_maps`) makes it: each pixel's second differences across and
/// down, the largest over the channels of libimagequant's space (`liq_px`), and one minus
/// their mean, to the fourth power; then busy lines up to 4 pixels wide (edges, strokes of
/// text) made flat, blurred, and busy areas grown by 2 pixels. Measured in that space (not in
/// 8-bit sRGB), contrast near white counts up to a fifth more and in the shadows less, as it
/// does for libimagequant; and, as there, a difference beyond the scale (a lone pixel against
/// its opposite, mean above 1) comes back towards flat.
fn flatness(rgba: &[u8], width: usize) -> Vec<u8> {
    let lut = gamma_lut();
    let height = rgba.len() / 4 / width;
    if height == 0 {
        return Vec::new();
    }
    let load = |y: usize, buf: &mut Vec<[f32; 4]>| {
        buf.clear();
        buf.extend(
            rgba[y * width * 4..(y + 1) * width * 4]
                .chunks_exact(4)
                .map(|c| {
                    liq_px(
                        lut,
                        if c[3] == 0 {
                            [0; 4]
                        } else {
                            [c[0], c[1], c[2], c[3]]
                        },
                    )
                }),
        );
    };
    // Second difference of three values, the largest over the channels.
    let second = |l: &[f32; 4], c: &[f32; 4], r: &[f32; 4]| {
        let d = |i: usize| (l[i] + r[i] - 2.0 * c[i]).abs();
        d(0).max(d(1)).max(d(2)).max(d(3))
    };
    // One minus the mean of the two, to the fourth power (busy pixels count as busy).
    let level = |across: f32, along: f32| {
        let z = 1.0 - (across + along) / 2.0;
        (z * z * z * z * 256.0).min(255.0) as u8
    };
    let mut raw = vec![0u8; width * height];
    let (mut up, mut cur, mut down) = (Vec::new(), Vec::new(), Vec::new());
    load(0, &mut cur);
    up.clone_from(&cur);
    load(1.min(height - 1), &mut down);
    for (y, out) in raw.chunks_exact_mut(width).enumerate() {
        if y > 0 {
            std::mem::swap(&mut up, &mut cur);
            std::mem::swap(&mut cur, &mut down);
            load((y + 1).min(height - 1), &mut down);
        }
        // At the sides the missing neighbour is the pixel itself. Inside, plain loops over
        // slices (no index clamping or bounds checks in the way of the compiler).
        let at = |x: usize| {
            let (l, r) = (x.saturating_sub(1), (x + 1).min(width - 1));
            level(
                second(&cur[l], &cur[x], &cur[r]),
                second(&up[x], &cur[x], &down[x]),
            )
        };
        out[0] = at(0);
        if width > 2 {
            let across = cur.windows(3);
            let along = up[1..].iter().zip(&down[1..]);
            for ((o, c), (u, d)) in out[1..width - 1].iter_mut().zip(across).zip(along) {
                *o = level(second(&c[0], &c[1], &c[2]), second(u, &c[1], d));
            }
        }
        out[width - 1] = at(width - 1);
    }
    // Each step takes a pixel and its four direct neighbours (libimagequant's `liq_max3`,
    // `liq_min3`, blur.c), so growing and shrinking go by diamonds, not squares.
    let grow = |src: &[u8]| plus_neighbourhood(src, width, u8::max);
    let shrink = |src: &[u8]| plus_neighbourhood(src, width, u8::min);
    let thin_lines_gone = grow(&grow(&raw));
    let blurred = liq_blur(&thin_lines_gone, width);
    // Busy areas grow: flat ones shrink by 3 after growing by 1.
    shrink(&shrink(&shrink(&grow(&blurred))))
}

/// `src` (rows of `width`) with each value replaced by `pick` over it and its four direct
/// neighbours, clamped at the sides (libimagequant's blur.c `liq_max3` / `liq_min3`).
fn plus_neighbourhood(src: &[u8], width: usize, pick: impl Fn(u8, u8) -> u8 + Copy) -> Vec<u8> {
    let height = src.len() / width;
    let mut out = vec![0u8; src.len()];
    for (y, o) in out.chunks_exact_mut(width).enumerate() {
        let row = &src[y * width..(y + 1) * width];
        let up = &src[y.saturating_sub(1) * width..][..width];
        let down = &src[(y + 1).min(height - 1) * width..][..width];
        // Up and down, then left and right (plain loops over slices, which vectorise).
        for ((v, &c), (&u, &d)) in o.iter_mut().zip(row).zip(up.iter().zip(down)) {
            *v = pick(c, pick(u, d));
        }
        if width > 1 {
            for ((v, &l), &r) in o[1..width - 1].iter_mut().zip(row).zip(&row[2..]) {
                *v = pick(*v, pick(l, r));
            }
            o[0] = pick(o[0], row[1]);
            o[width - 1] = pick(o[width - 1], row[width - 2]);
        }
    }
    out
}

/// libimagequant's blur of its noise map (blur.c `liq_blur` at size 3): each value the mean of
/// the 6 from 2 before it to 3 after it (clamped at the sides, truncated to an integer), across
/// then down; images under 7 pixels either way stay as they are.
fn liq_blur(src: &[u8], width: usize) -> Vec<u8> {
    const BEFORE: usize = 2;
    const AFTER: usize = 3;
    const N: u32 = (BEFORE + AFTER + 1) as u32;
    let height = src.len() / width;
    if width < 7 || height < 7 {
        return src.to_vec();
    }
    // Across: a running sum along each row.
    let mut across = vec![0u8; src.len()];
    for (row, o) in src.chunks_exact(width).zip(across.chunks_exact_mut(width)) {
        let at = |i: usize| u32::from(row[i.min(width - 1)]);
        let mut sum: u32 =
            (1..=BEFORE).map(|_| at(0)).sum::<u32>() + (0..AFTER).map(at).sum::<u32>();
        for (x, v) in o.iter_mut().enumerate() {
            sum += at(x + AFTER);
            *v = (sum / N) as u8;
            sum -= at(x.saturating_sub(BEFORE));
        }
    }
    // Down: running sums of whole rows.
    let row = |y: usize| &across[y.min(height - 1) * width..][..width];
    let mut sum = vec![0u32; width];
    for y in (0..BEFORE).map(|_| 0).chain(0..AFTER) {
        for (s, &v) in sum.iter_mut().zip(row(y)) {
            *s += u32::from(v);
        }
    }
    let mut out = vec![0u8; src.len()];
    for (y, o) in out.chunks_exact_mut(width).enumerate() {
        for ((s, &e), v) in sum.iter_mut().zip(row(y + AFTER)).zip(o.iter_mut()) {
            *s += u32::from(e);
            *v = (*s / N) as u8;
        }
        for (s, &l) in sum.iter_mut().zip(row(y.saturating_sub(BEFORE))) {
            *s -= u32::from(l);
        }
    }
    out
}

/// How much each pixel may be dithered, 0–1 (libimagequant's idea, libimagequant.c
/// `contrast_maps`, `remap_to_palette_floyd`): error diffusion is for flat areas and smooth
/// gradients, where a palette would leave bands; on edges and anti-aliasing it only scatters
/// noise around lines and text (worse to look at, and to compress). From the largest
/// `contrast` over each pixel's 3×3 neighbourhood (so the pixels of a ramp between two flat
/// areas count too), falling linearly to none at `EDGE`.
fn dither_strength(contrast: &[[u8; 2]], width: usize) -> Vec<u8> {
    if contrast.is_empty() {
        return Vec::new();
    }
    let edge: Vec<u8> = contrast.iter().map(|&[a, b]| a.max(b)).collect();
    neighbourhood(&edge, width, 1, u8::max)
        .into_iter()
        .map(|e| ((1.0 - f32::from(e) / EDGE).max(0.0) * 255.0) as u8)
        .collect()
}

/// `src` (rows of `width`) with each value replaced by `pick` over its (2r + 1)²
/// neighbourhood, clamped at the sides: a dilation with `max`, an erosion with `min`.
fn neighbourhood(src: &[u8], width: usize, r: usize, pick: impl Fn(u8, u8) -> u8) -> Vec<u8> {
    let height = src.len() / width;
    let mut rows = src.to_vec();
    for (row, o) in src.chunks_exact(width).zip(rows.chunks_exact_mut(width)) {
        for d in 1..=r.min(width - 1) {
            // Two passes, each a plain loop over slices the compiler vectorises.
            for (v, &n) in o[..width - d].iter_mut().zip(&row[d..]) {
                *v = pick(*v, n);
            }
            for (v, &n) in o[d..].iter_mut().zip(&row[..width - d]) {
                *v = pick(*v, n);
            }
        }
    }
    let mut out = rows.clone();
    for (y, o) in out.chunks_exact_mut(width).enumerate() {
        for d in 1..=r {
            for n in [y.saturating_sub(d), (y + d).min(height - 1)] {
                for (v, &m) in o.iter_mut().zip(&rows[n * width..(n + 1) * width]) {
                    *v = pick(*v, m);
                }
            }
        }
    }
    out
}

/// libimagequant's working gamma over the sRGB gamma it assumes (pam.h `internal_gamma`
/// 0.5499, images at 0.45455): its colours are 8-bit values over 255 to this power.
const LIQ_GAMMA: f64 = 0.5499 / 0.45455;

/// Each 8-bit channel value in libimagequant's working gamma (before premultiplying), the
/// space of both the quantizer and the error budget. Colours placed and compared there get
/// libimagequant's share of the levels: more near white (where the power stretches the
/// scale), fewer in the shadows. PNG corpus bench, q 50 + 75 + 90, all else as now: sRGB
/// values 44 + 42 + 40 pass, this gamma 44 + 43 + 42.
fn gamma_lut() -> &'static [f32; 256] {
    static LUT: std::sync::LazyLock<[f32; 256]> = std::sync::LazyLock::new(|| {
        std::array::from_fn(|i| (i as f64 / 255.0).powf(LIQ_GAMMA) as f32)
    });
    &LUT
}

/// A colour in libimagequant's space: gamma-adjusted premultiplied RGB, then alpha.
fn liq_px(lut: &[f32; 256], c: [u8; 4]) -> [f32; 4] {
    let a = f32::from(c[3]) / 255.0;
    [
        lut[usize::from(c[0])] * a,
        lut[usize::from(c[1])] * a,
        lut[usize::from(c[2])] * a,
        a,
    ]
}

/// libimagequant's colour difference for a difference `d` of two colours in its space (pam.h
/// `colordifference`): over r, g and b, the squared difference of the two composited over
/// black plus that over white. A quadratic form, which `box_error` relies on.
fn liq_diff(d: &[f32; 4]) -> f32 {
    let mut s = 0.0;
    for i in 0..3 {
        let over_white = d[i] - d[3];
        s += d[i] * d[i] + over_white * over_white;
    }
    s
}

/// A box of libimagequant's median cut (mediancut.c `struct box`): a range of entries, its
/// representative colour (`average_colour`) in libimagequant's space, the per-channel spread
/// that picks the axis and ranks it, its summed weight and its error.
struct CutBox {
    start: usize,
    end: usize,
    /// Its colour and its entries' sums about it (the spread weighted per channel).
    stats: BoxStats,
}

impl CutBox {
    fn new(entries: &[Entry], start: usize, end: usize, center: [f32; 4]) -> Self {
        let items = &entries[start..end];
        let mut stats = BoxStats::new(average_colour(items, center));
        for e in items {
            stats.add(e);
        }
        stats.finish(start, end)
    }

    /// `new` for the two halves of a split box, `start..at` and `at..end`, whose colours
    /// `split_box` has worked out: each summed in its own order as `new` sums it (the same
    /// bits), but side by side, so that the two chains of additions (each waits on its last
    /// result) overlap.
    fn pair(
        entries: &[Entry],
        start: usize,
        at: usize,
        end: usize,
        colors: [[f32; 4]; 2],
    ) -> [Self; 2] {
        let (left, right) = (&entries[start..at], &entries[at..end]);
        let mut stats = colors.map(BoxStats::new);
        for (a, b) in left.iter().zip(right) {
            stats[0].add(a);
            stats[1].add(b);
        }
        let both = left.len().min(right.len());
        for e in &left[both..] {
            stats[0].add(e);
        }
        for e in &right[both..] {
            stats[1].add(e);
        }
        let [l, r] = stats;
        [l.finish(start, at), r.finish(at, end)]
    }

    /// How urgently the box wants splitting (mediancut.c `best_splittable_box`): its weight
    /// times its largest channel spread (which is the one it would be split along), so heavy
    /// boxes split first; 0 for a box that cannot split.
    fn priority(&self, max_mse: f64) -> f64 {
        if self.end - self.start < 2 {
            return 0.0;
        }
        let s = &self.stats;
        let v = &s.variance;
        let p = s.sum * v[0].max(v[1]).max(v[2]).max(v[3]);
        // A box holding a colour far from its own splits sooner (an odd green pixel gets a
        // colour of its own).
        if s.max_error > max_mse {
            p * s.max_error / max_mse
        } else {
            p
        }
    }
}

/// `CutBox`'s sums over its entries, about its colour.
struct BoxStats {
    /// Representative colour, premultiplied r, g, b and alpha in libimagequant's gamma.
    color: [f32; 4],
    /// Spread per channel (r, g, b, a; `box_variance`), weighted per channel by `finish`.
    variance: [f64; 4],
    /// Sum of the entries' weights.
    sum: f64,
    /// Weighted `liq_diff` of the entries from `color`.
    error: f64,
    /// The largest `liq_diff` of an entry from `color`.
    max_error: f64,
}

impl BoxStats {
    fn new(color: [f32; 4]) -> Self {
        Self {
            color,
            variance: [0.0; 4],
            sum: 0.0,
            error: 0.0,
            max_error: 0.0,
        }
    }

    #[inline(always)]
    fn add(&mut self, e: &Entry) {
        // Differences under these count a quarter (mediancut.c `variance_diff`): a box whose
        // colours are all within a level of each other is not worth splitting.
        const GOOD: [f32; 4] = [1.0 / 256.0, 1.0 / 256.0, 1.0 / 256.0, 2.0 / 256.0];
        let w = f64::from(e.adjusted);
        self.sum += w;
        let d: [f32; 4] = std::array::from_fn(|i| e.lq[i] - self.color[i]);
        for i in 0..4 {
            let d2 = f64::from(d[i] * d[i]);
            let d2 = if d[i].abs() < GOOD[i] { d2 * 0.25 } else { d2 };
            self.variance[i] += d2 * w;
        }
        let diff = f64::from(liq_diff(&d));
        self.error += f64::from(e.weight) * diff;
        self.max_error = self.max_error.max(diff);
    }

    fn finish(mut self, start: usize, end: usize) -> CutBox {
        // mediancut.c `box_variance`: green counts most, alpha least.
        const CHANNEL: [f64; 4] = [7.0 / 16.0, 9.0 / 16.0, 5.0 / 16.0, 4.0 / 16.0];
        for i in 0..4 {
            self.variance[i] *= CHANNEL[i];
        }
        CutBox {
            start,
            end,
            stats: self,
        }
    }
}

/// `average_colour`'s sums, one entry at a time.
#[derive(Default)]
struct Average {
    aw: f64,
    asum: f64,
    amax: f32,
    sum: f64,
    rgb: [f64; 3],
}

impl Average {
    #[inline(always)]
    fn add(&mut self, e: &Entry, center: [f32; 4]) {
        self.aw += f64::from(e.adjusted);
        self.asum += f64::from(e.adjusted) * f64::from(e.lq[3]);
        self.amax = self.amax.max(e.lq[3]);
        let mut w = 1.0;
        for i in 0..3 {
            let d = f64::from(center[i] - e.lq[i]);
            w += d * d;
        }
        w *= f64::from(e.adjusted);
        self.sum += w;
        for i in 0..3 {
            let straight = if e.lq[3] > 0.0 {
                e.lq[i] / e.lq[3]
            } else {
                e.lq[i]
            };
            self.rgb[i] += f64::from(straight) * w;
        }
    }

    fn finish(self) -> [f32; 4] {
        let Self {
            aw,
            asum,
            amax,
            sum,
            mut rgb,
        } = self;
        let mut a = if aw > 0.0 { asum / aw } else { 0.0 };
        // A mean that reaches opaque (libimagequant's `min_opaque_val`, 1 at sharp's settings)
        // is exactly opaque when an opaque colour is among them.
        if a >= 1.0 && amax >= 255.0 / 256.0 {
            a = 1.0;
        }
        if sum > 0.0 {
            rgb = rgb.map(|v| v / sum);
        }
        [
            (rgb[0] * a) as f32,
            (rgb[1] * a) as f32,
            (rgb[2] * a) as f32,
            a as f32,
        ]
    }
}

/// A box's representative colour, as libimagequant's mediancut.c `averagepixels` makes it:
/// the weighted mean alpha, and the mean of the straight (not premultiplied) colours at that
/// alpha, each entry weighing more the further it is from `center` (the parent box's colour),
/// which keeps a box from fading towards grey: saturated and extreme colours pull harder.
fn average_colour(items: &[Entry], center: [f32; 4]) -> [f32; 4] {
    let mut avg = Average::default();
    for e in items {
        avg.add(e, center);
    }
    avg.finish()
}

/// Sorts a box's entries for splitting and returns where to split (mediancut.c
/// `prepare_sort`, `get_median`, `hist_item_sort_halfvar`): in the order of the channel of the
/// largest spread, highest first (ties by a mix of the others), at the point where the
/// entries' "colour weights" (distance from the box's median entry times a weight that grows
/// as the square root of the entry's) reach half their sum. A split there balances popularity
/// against spread, rather than entry counts. Only as much is sorted as that point needs. Also
/// returns the two halves' `average_colour`s about `center` (the box's colour), summed while
/// the entries are put in order.
fn split_box(
    entries: &mut [Entry],
    variance: &[f64; 4],
    center: [f32; 4],
    scratch: &mut Split,
) -> (usize, [[f32; 4]; 2]) {
    let mut order = [0usize, 1, 2, 3];
    // Stable: ties keep r, g, b, a order.
    order.sort_by(|&a, &b| variance[b].total_cmp(&variance[a]));
    // The selections move small stand-ins, not the entries: the standard library's selection
    // moves elements by comparisons alone, so they end in the order the entries would have.
    let items = &mut scratch.items;
    items.clear();
    items.extend(entries.iter().enumerate().map(|(i, e)| {
        let primary = (e.lq[order[0]] * 65535.0) as u32;
        let rest = (e.lq[order[2]] + e.lq[order[1]] / 2.0 + e.lq[order[3]] / 4.0) * 65535.0;
        SplitItem {
            key: (primary << 16) | rest as u32,
            cw: 0.0,
            index: i as u32,
        }
    }));
    let n = items.len();
    let mid = (n - 1) / 2;
    let desc = |a: &SplitItem, b: &SplitItem| b.key.cmp(&a.key);
    items.select_nth_unstable_by(mid, desc);
    let at_item = |x: &SplitItem| entries[x.index as usize];
    let median = if n % 2 == 1 {
        at_item(&items[mid]).lq
    } else {
        // The next in order: the highest key after `mid`.
        let next = items[mid + 1..]
            .iter()
            .max_by_key(|x| x.key)
            .map_or(at_item(&items[mid]), at_item);
        average_colour(&[at_item(&items[mid]), next], [0.5; 4])
    };
    // Worked out in the entries' order (reading them in turn), then summed in the items'.
    let cw = &mut scratch.cw;
    cw.clear();
    cw.extend(entries.iter().map(|e| {
        let d: [f32; 4] = std::array::from_fn(|i| median[i] - e.lq[i]);
        let mut diff = liq_diff(&d);
        // Colours within a level of the median count half.
        if diff < 2.0 / 65536.0 {
            diff /= 2.0;
        }
        diff.sqrt() * ((1.0 + e.adjusted).sqrt() - 1.0)
    }));
    let mut half = 0f64;
    for x in items.iter_mut() {
        x.cw = cw[x.index as usize];
        half += f64::from(x.cw);
    }
    half /= 2.0;
    // Weighted selection: the first entry (in order) at which the running sum of `cw`
    // reaches `half`.
    let (mut lo, mut hi) = (0, n);
    let at = loop {
        if hi - lo <= 1 {
            break lo;
        }
        let p = (hi - lo - 1) / 2;
        items[lo..hi].select_nth_unstable_by(p, desc);
        let left: f64 = items[lo..=lo + p].iter().map(|x| f64::from(x.cw)).sum();
        if left >= half {
            // Within [lo, lo + p]: the pivot itself if the part before it falls short.
            hi = lo + p + 1;
        } else {
            half -= left;
            lo += p + 1;
            if lo >= hi {
                break n;
            }
        }
    };
    let split = (at + 1).min(n - 1);
    // The entries put in order, each half's `average_colour` summed on the way (the halves
    // side by side, so that their chains of additions overlap).
    let mut avg = [Average::default(), Average::default()];
    let [left, right] = &mut scratch.entries;
    left.clear();
    right.clear();
    let (first, second) = items.split_at(split);
    for (a, b) in first.iter().zip(second) {
        let (a, b) = (at_item(a), at_item(b));
        avg[0].add(&a, center);
        avg[1].add(&b, center);
        left.push(a);
        right.push(b);
    }
    let both = first.len().min(second.len());
    for (half, part, out) in [(0, &first[both..], &mut *left), (1, &second[both..], right)] {
        out.extend(part.iter().map(|x| {
            let e = at_item(x);
            avg[half].add(&e, center);
            e
        }));
    }
    entries[..split].copy_from_slice(&scratch.entries[0]);
    entries[split..].copy_from_slice(&scratch.entries[1]);
    (split, avg.map(Average::finish))
}

/// One entry of the box `split_box` splits: its sort key, its "colour weight", and where it
/// was in the box.
#[derive(Clone, Copy)]
struct SplitItem {
    key: u32,
    cw: f32,
    index: u32,
}

/// `split_box`'s buffers, kept across the splits of a cut and the cuts of `find_best_palette`:
/// the box's entries as `SplitItem`s, in the order the split leaves them, their colour
/// weights, and the entries of the two halves being put in that order.
#[derive(Default)]
struct Split {
    items: Vec<SplitItem>,
    /// Each entry's colour weight, in the entries' order.
    cw: Vec<f32>,
    /// The two halves' entries.
    entries: [Vec<Entry>; 2],
}

/// libimagequant's median cut (mediancut.c `mediancut`): splits the box that most wants it
/// (`CutBox::priority`, boxes with an entry further than `max_mse` from their colour boosted,
/// the more so the fewer boxes there are) at `split_box`'s point until there are `colors`
/// boxes, none can split, or (when `budget` is positive) the boxes' errors against their
/// colours sum to at most `budget`. Returns the boxes' `average_colour`s (libimagequant's
/// space), and raises each entry's `adjusted` weight by its distance from its box's colour
/// (mediancut.c `adjust_histogram`) for the next cut of `find_best_palette` (`scratch`:
/// buffers kept from one cut to the next).
fn median_cut(
    entries: &mut [Entry],
    colors: usize,
    budget: f64,
    max_mse: f64,
    scratch: &mut Split,
) -> Vec<[f32; 4]> {
    let n = entries.len();
    if n == 0 {
        return vec![[0.0; 4]];
    }
    let mut boxes = vec![CutBox::new(entries, 0, n, [0.5; 4])];
    let mut total = boxes[0].stats.error;
    while boxes.len() < colors {
        let limit = max_mse + boxes.len() as f64 / colors as f64 * 16.0 * max_mse;
        let (bi, best) = boxes
            .iter()
            .enumerate()
            .map(|(i, b)| (i, b.priority(limit)))
            .fold((0, 0.0), |a, b| if b.1 > a.1 { b } else { a });
        if best <= 0.0 {
            break;
        }
        let (start, end, parent) = (boxes[bi].start, boxes[bi].end, boxes[bi].stats.color);
        let (at, colors) = split_box(
            &mut entries[start..end],
            &boxes[bi].stats.variance,
            parent,
            scratch,
        );
        let at = start + at;
        total -= boxes[bi].stats.error;
        let [left, right] = CutBox::pair(entries, start, at, end, colors);
        boxes[bi] = left;
        boxes.push(right);
        total += boxes[bi].stats.error + boxes[boxes.len() - 1].stats.error;
        if budget > 0.0 && total <= budget {
            break;
        }
    }
    for (bi, b) in boxes.iter().enumerate() {
        for e in &mut entries[b.start..b.end] {
            e.hint = bi as u16;
            let d: [f32; 4] = std::array::from_fn(|i| e.lq[i] - b.stats.color[i]);
            e.adjusted *= (1.0 + liq_diff(&d) / 4.0).sqrt();
        }
    }
    boxes.iter().map(|b| b.stats.color).collect()
}

/// `liq_diff` of two colours of libimagequant's space.
fn liq_dist(a: &Px, b: &Px) -> f32 {
    liq_diff(&std::array::from_fn(|i| a[i] - b[i]))
}

/// One k-means step in libimagequant's space (viter.c `viter_do_iteration`): every entry to
/// its nearest palette colour, every colour to the weighted mean of its entries (by
/// `weight`, or by pixel count with `by_count`). Returns the error before the move, per unit
/// of weight, with the histogram's own spread; with `adjust`, raises each entry's `adjusted`
/// weight by its error (libimagequant.c `adjust_histogram_callback`).
fn voronoi(hist: &mut Histogram, palette: &mut [[f32; 4]], adjust: bool, by_count: bool) -> f64 {
    let search = Neighbours::<true>::new(palette);
    let mut sums = vec![([0f64; 4], 0f64); palette.len()];
    let mut total = hist.spread;
    for e in &mut hist.entries {
        let (i, d) = search.find_with_distance(&e.lq, usize::from(e.hint));
        e.hint = i as u16;
        total += f64::from(d) * f64::from(e.weight);
        let w = f64::from(if by_count { e.count } else { e.weight });
        let (s, sw) = &mut sums[i];
        for c in 0..4 {
            s[c] += w * f64::from(e.lq[c]);
        }
        *sw += w;
        if adjust {
            e.adjusted = (e.weight + e.adjusted) * (1.0 + d).sqrt();
        }
    }
    for (p, (s, w)) in palette.iter_mut().zip(sums) {
        if w > 0.0 {
            *p = s.map(|v| (v / w) as f32);
        }
    }
    total / hist.weight.max(f64::MIN_POSITIVE)
}

/// libimagequant.c `find_best_palette` at sharp's speed (4: 20 trials): repeats the median cut,
/// each time with the entries' weights raised where the last palette was far from them, and
/// aiming higher while the palette (after a k-means step) stays under `target`; keeps the last
/// palette that lowered the error, or met the target with fewer colours (each cut may use one
/// colour more than the last kept). Returns the palette (libimagequant's space) and its error.
fn find_best_palette(hist: &mut Histogram, target: f64) -> Vec<[f32; 4]> {
    let mut max_colors = MAX_COLORS;
    let mut trials = FEEDBACK_TRIALS;
    let mut best: Option<Vec<[f32; 4]>> = None;
    let mut least = 1e20f64;
    // The first cut aims a little over the target (k-means will bring it under).
    let mut overshoot = 1.05;
    // The cuts' buffers, kept from one to the next.
    let mut scratch = Split::default();
    loop {
        let max_mse = (90.0 / 65536.0f64).max(target).max(least) * 1.2;
        let budget = target * overshoot * hist.weight - hist.spread;
        let mut palette = median_cut(&mut hist.entries, max_colors, budget, max_mse, &mut scratch);
        let first_at_target = best.is_none() && target > 0.0;
        let error = voronoi(hist, &mut palette, !first_at_target, false);
        let accept = match &best {
            None => true,
            Some(_) => error < least || (error <= target && palette.len() < max_colors),
        };
        if accept {
            if error < target && error > 0.0 {
                // k-means lowered the error below what the cut aimed for: aim higher.
                overshoot = (overshoot * 1.25).min(target / error);
            }
            least = error;
            max_colors = (palette.len() + 1).min(max_colors);
            trials -= 1;
            best = Some(palette);
        } else {
            for e in &mut hist.entries {
                e.adjusted = (e.weight + e.adjusted) / 2.0;
            }
            overshoot = 1.0;
            trials -= 6;
            if error > least * 4.0 {
                trials -= 3;
            }
        }
        // A palette that filled every entry and still missed the target (a photo): more
        // cuts only shuffle its colours (libimagequant goes on; Ferry saves the time).
        if trials <= 0 || max_colors >= MAX_COLORS {
            break;
        }
    }
    best.unwrap_or_default()
}

/// Which of the first three channels `colors` vary most along.
fn widest_axis(colors: &[Px]) -> usize {
    let n = colors.len().max(1) as f64;
    let mut m = [0f64; 3];
    for c in colors {
        for i in 0..3 {
            m[i] += f64::from(c[i]) / n;
        }
    }
    let mut var = [0f64; 3];
    for c in colors {
        for i in 0..3 {
            let d = f64::from(c[i]) - m[i];
            var[i] += d * d;
        }
    }
    (0..3)
        .max_by(|&a, &b| var[a].total_cmp(&var[b]))
        .unwrap_or(0)
}

/// Nearest-colour search: the palette sorted along its widest channel, scanned outwards from
/// the query until the distance along that channel alone exceeds the best found. With `LIQ`
/// the distance is libimagequant's (`liq_dist`, the palette in its space), else `dist`.
struct Nearest<const LIQ: bool = false> {
    /// Palette colours, in `order`.
    sorted: Vec<Px>,
    /// Palette index of each sorted colour.
    order: Vec<usize>,
    /// Where each palette index sits in `sorted`.
    rank: Vec<usize>,
    axis: usize,
    /// A quarter of each palette colour's distance to its nearest other (by palette index): a
    /// query at most that far from it has it for nearest (both distances are squares of
    /// norms, so the triangle inequality holds; libimagequant's nearest.c uses the same test).
    radius: Vec<f32>,
}

impl<const LIQ: bool> Nearest<LIQ> {
    /// Indexes `palette` (not empty). The searches use `Neighbours`, which builds this with
    /// the radii it has already worked out; the tests compare the two.
    #[cfg(test)]
    fn new(palette: &[Px]) -> Self {
        let radius = palette
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let nearest = palette
                    .iter()
                    .enumerate()
                    .filter(|&(j, _)| j != i)
                    .map(|(_, o)| Self::dist(p, o))
                    .fold(f32::INFINITY, f32::min);
                nearest / 4.0
            })
            .collect();
        Self::with_radius(palette, radius)
    }

    /// `new`, with each colour's `radius` already known.
    fn with_radius(palette: &[Px], radius: Vec<f32>) -> Self {
        let axis = widest_axis(palette);
        let mut order: Vec<usize> = (0..palette.len()).collect();
        order.sort_unstable_by(|&a, &b| palette[a][axis].total_cmp(&palette[b][axis]));
        let mut rank = vec![0; palette.len()];
        for (r, &i) in order.iter().enumerate() {
            rank[i] = r;
        }
        Self {
            sorted: order.iter().map(|&i| palette[i]).collect(),
            order,
            rank,
            axis,
            radius,
        }
    }

    /// The squared distance searched with: never less than the squared difference along any
    /// of the first three channels.
    #[inline(always)]
    fn dist(a: &Px, b: &Px) -> f32 {
        if LIQ { liq_dist(a, b) } else { dist(a, b) }
    }

    /// The palette index nearest to `q`; `hint` (a likely answer, e.g. the previous pixel's)
    /// only speeds the search up, and wins a tie.
    #[cfg(test)]
    fn find(&self, q: &Px, hint: usize) -> usize {
        self.find_with_distance(q, hint).0
    }

    /// `find`, and the distance to the colour found.
    fn find_with_distance(&self, q: &Px, hint: usize) -> (usize, f32) {
        let Some(&start) = self.rank.get(hint) else {
            return (0, 0.0);
        };
        let mut best = start;
        let mut best_d = Self::dist(q, &self.sorted[start]);
        if best_d <= self.radius[hint] {
            return (hint, best_d);
        }
        let key = q[self.axis];
        let pos = self.sorted.partition_point(|p| p[self.axis] < key);
        for i in pos..self.sorted.len() {
            let d_axis = self.sorted[i][self.axis] - key;
            if d_axis * d_axis >= best_d {
                break;
            }
            let d = Self::dist(q, &self.sorted[i]);
            if d < best_d {
                best_d = d;
                best = i;
            }
        }
        for i in (0..pos).rev() {
            let d_axis = key - self.sorted[i][self.axis];
            if d_axis * d_axis >= best_d {
                break;
            }
            let d = Self::dist(q, &self.sorted[i]);
            if d < best_d {
                best_d = d;
                best = i;
            }
        }
        (self.order[best], best_d)
    }
}

/// How many of each colour's nearest others `Neighbours` keeps in order.
const SORTED: usize = 32;

/// How many of the hint's list `Neighbours` may expect to read before it leaves the query to
/// the axis search.
const FAR: usize = 24;

/// The nearest-colour search of k-means (`voronoi`) and `remap`: every palette colour's
/// others listed nearest first, and each query checked against the colours around its hint
/// (in k-means the entry's colour in the last step, the answer ~95 % of the time) rather than
/// a slab of the whole palette (`photo.jpg` at 640 px, 256 colours: ~50 distances a query
/// along an axis; the transform's median went 181 → 93 ms). Answers exactly as `Nearest`
/// does, ties included (which palette entry an entry goes to decides the output's bytes).
struct Neighbours<'a, const LIQ: bool = false> {
    palette: &'a [Px],
    /// For each palette index, the other `palette.len() - 1` colours, nearest first: the
    /// distance's bits (a non-negative `f32`, so they order as it does) over the index.
    lists: Vec<u64>,
    /// The axis search: its early exit, and the answer when colours tie.
    scan: Nearest<LIQ>,
}

impl<'a, const LIQ: bool> Neighbours<'a, LIQ> {
    /// Indexes `palette` (not empty).
    fn new(palette: &'a [Px]) -> Self {
        let n = palette.len();
        let stride = n.saturating_sub(1);
        // Both distances are symmetric to the bit (they only negate the differences).
        let mut table = vec![0f32; n * n];
        for i in 0..n {
            for j in i + 1..n {
                let d = Nearest::<LIQ>::dist(&palette[i], &palette[j]);
                table[i * n + j] = d;
                table[j * n + i] = d;
            }
        }
        let mut lists = Vec::with_capacity(n * stride);
        let mut radius = Vec::with_capacity(n);
        for i in 0..n {
            let row = &table[i * n..(i + 1) * n];
            let start = lists.len();
            lists.extend(
                (0..n)
                    .filter(|&j| j != i)
                    .map(|j| u64::from(row[j].to_bits()) << 32 | j as u64),
            );
            // Searches rarely read far: only the nearest `SORTED` are put in order.
            let list = &mut lists[start..];
            if list.len() > SORTED {
                list.select_nth_unstable(SORTED);
                list[..SORTED].sort_unstable();
            } else {
                list.sort_unstable();
            }
            // `Nearest::new`'s radius: the least distance to another colour, over 4.
            let nearest = lists[start..]
                .first()
                .map_or(f32::INFINITY, |&x| f32::from_bits((x >> 32) as u32));
            radius.push(nearest / 4.0);
        }
        Self {
            palette,
            lists,
            scan: Nearest::with_radius(palette, radius),
        }
    }

    /// `Nearest::find`.
    fn find(&self, q: &Px, hint: usize) -> usize {
        self.find_with_distance(q, hint).0
    }

    /// `Nearest::find_with_distance`. Another colour can be as near to `q` as the best found
    /// so far only if it is within that distance's root plus `q`'s from the hint (the
    /// triangle inequality: both distances are squared norms), so the hint's list is read
    /// only that far (with a margin for rounding, which can only add colours to check).
    fn find_with_distance(&self, q: &Px, hint: usize) -> (usize, f32) {
        let n = self.palette.len();
        if hint >= n {
            return self.scan.find_with_distance(q, hint);
        }
        let mut best_d = Nearest::<LIQ>::dist(q, &self.palette[hint]);
        if best_d <= self.scan.radius[hint] {
            return (hint, best_d);
        }
        let to_hint = best_d.sqrt();
        let reach = |d: f32| {
            let r = to_hint + d.sqrt();
            r * r * (1.0 + 1.0 / 1024.0) + 1e-30
        };
        let mut limit = reach(best_d);
        let stride = n - 1;
        let list = &self.lists[hint * stride..(hint + 1) * stride];
        // A hint far from `q` (in `remap`, the last pixel's colour across an edge) would have
        // most of its list read: the axis search goes straight to `q`'s part of the palette.
        if list
            .get(FAR)
            .is_some_and(|&x| f32::from_bits((x >> 32) as u32) < limit)
        {
            return self.scan.find_with_distance(q, hint);
        }
        let (mut best, mut tied) = (hint, false);
        for (k, &x) in list.iter().enumerate() {
            if f32::from_bits((x >> 32) as u32) > limit {
                // In order up to `SORTED`: none further on is near enough.
                if k < SORTED {
                    break;
                }
                continue;
            }
            let j = x as u32 as usize;
            let d = Nearest::<LIQ>::dist(q, &self.palette[j]);
            if d < best_d {
                (best, best_d, tied) = (j, d, false);
                limit = reach(d);
            } else if d == best_d && best != hint {
                // The axis search decides between equals (the hint wins every tie).
                tied = true;
            }
        }
        if tied {
            return self.scan.find_with_distance(q, hint);
        }
        (best, best_d)
    }
}

/// The squared size of a carried error `e`, for `MIN_CARRY2`: its colour differences weigh as
/// they did with `CHROMA` at 0.5, where that threshold was measured. At their full weight more
/// pixels take error, for more noise and time (`ferry.png` at 640 px, q 75: 25 → 33 kB, SSIM
/// 0.918 → 0.906, ~8 % more time), and the PNG corpus bench passes the same cases.
fn carried(e: &Px) -> f32 {
    const SCALE: f32 = (0.5 / CHROMA) * (0.5 / CHROMA);
    e[0] * e[0] + e[3] * e[3] + SCALE * (e[1] * e[1] + e[2] * e[2])
}

/// Bits of the index into `remap`'s cache of search answers.
const CACHE_BITS: u32 = 12;

/// Slots in `remap`'s cache of search answers.
const CACHE: usize = 1 << CACHE_BITS;

/// Maps every pixel to a palette index with Floyd–Steinberg error diffusion (serpentine rows,
/// all four channels, each carried error bounded by `MAX_CARRY`, and the error taken and passed
/// on by each pixel scaled by its `strength`, 0–255). Fully transparent pixels map to the
/// nearest of transparent black and neither take nor pass on error.
fn remap(rgba: &[u8], width: usize, colors: &[[u8; 4]], strength: &[u8]) -> Vec<u8> {
    let lut = gamma_lut();
    let palette: Vec<Px> = colors.iter().map(|&c| to_px(lut, c)).collect();
    let search = Neighbours::<false>::new(&palette);
    let clear = search.find(&[0.0; 4], 0);
    let pixels = rgba.len() / 4;
    let mut indices = vec![0u8; pixels];
    if pixels == 0 {
        return indices;
    }
    // Error for the current and the next row, one slot of margin on each side.
    let mut cur = vec![[0f32; 4]; width + 2];
    let mut next = vec![[0f32; 4]; width + 2];
    let mut hint = 0;
    // The last pixel mapped without carried error: its colour, index, and difference from
    // that index's colour (flat areas repeat one colour: no search).
    let mut last: Option<([u8; 4], usize, Px)> = None;
    // Answers of searches for colours without carried error, by colour and hint (what the
    // answer depends on, ties included): graphics repeat the same steps across edges, text
    // the same anti-aliased colours after the same neighbours. Direct-mapped; a slot holds
    // its key (colour and hint in one `u64`, never all ones) and the answer.
    let mut answers = vec![(u64::MAX, 0u8); CACHE];
    for (y, row) in rgba.chunks_exact(width * 4).enumerate() {
        let rtl = y % 2 == 1;
        for step in 0..width {
            let x = if rtl { width - 1 - step } else { step };
            let c = [row[x * 4], row[x * 4 + 1], row[x * 4 + 2], row[x * 4 + 3]];
            if c[3] == 0 {
                indices[y * width + x] = clear as u8;
                continue;
            }
            let s = f32::from(strength[y * width + x]) / 255.0;
            let e = cur[x + 1].map(|v| v * s);
            let diff = if carried(&e) < MIN_CARRY2 {
                match last {
                    Some((lc, li, ld)) if lc == c => {
                        hint = li;
                        ld
                    }
                    _ => {
                        let src = to_px(lut, c);
                        let key = u64::from(u32::from_le_bytes(c)) | (hint as u64) << 32;
                        let at = key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - CACHE_BITS);
                        let slot = &mut answers[at as usize];
                        hint = if slot.0 == key {
                            usize::from(slot.1)
                        } else {
                            let found = search.find(&src, hint);
                            *slot = (key, found as u8);
                            found
                        };
                        let d = std::array::from_fn(|i| src[i] - palette[hint][i]);
                        last = Some((c, hint, d));
                        d
                    }
                }
            } else {
                let src = to_px(lut, c);
                let want: Px = std::array::from_fn(|i| src[i] + e[i].clamp(-MAX_CARRY, MAX_CARRY));
                // Into the colours that exist: alpha in 0–1, a premultiplied colour within
                // its alpha.
                let (rgb, a) = to_premul(want);
                let a = a.clamp(0.0, 1.0);
                let want = from_premul(
                    [
                        rgb[0].clamp(0.0, a),
                        rgb[1].clamp(0.0, a),
                        rgb[2].clamp(0.0, a),
                        0.0,
                    ],
                    a,
                );
                hint = search.find(&want, hint);
                std::array::from_fn(|i| want[i] - palette[hint][i])
            };
            indices[y * width + x] = hint as u8;
            if s == 0.0 || diff == [0.0; 4] {
                continue;
            }
            let err: Px = diff.map(|d| d * DITHER * s);
            // Ahead (in scan order), behind-below, below, ahead-below.
            let (ahead, behind) = if rtl { (x, x + 2) } else { (x + 2, x) };
            for i in 0..4 {
                cur[ahead][i] += err[i] * (7.0 / 16.0);
                next[behind][i] += err[i] * (3.0 / 16.0);
                next[x + 1][i] += err[i] * (5.0 / 16.0);
                next[ahead][i] += err[i] * (1.0 / 16.0);
            }
        }
        std::mem::swap(&mut cur, &mut next);
        next.iter_mut().for_each(|e| *e = [0.0; 4]);
    }
    indices
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_colours_are_exact() {
        let px = [[255, 0, 0, 255], [0, 0, 255, 128], [255, 0, 0, 255]].concat();
        let (pal, idx) = quantize(&px, 3, 100);
        assert_eq!(pal, vec![[255, 0, 0, 255], [0, 0, 255, 128]]);
        assert_eq!(idx, [0, 1, 0]);
    }

    /// A 64×64 image with 4096 distinct opaque colours.
    fn many_colours() -> Vec<u8> {
        (0..64 * 64)
            .flat_map(|i: u32| {
                [
                    (i % 256) as u8,
                    (i / 16 % 256) as u8,
                    (i * 7 % 256) as u8,
                    255,
                ]
            })
            .collect()
    }

    /// A 160×160 graphic: white, with black, red, blue and yellow discs (two overlapping),
    /// their edges anti-aliased over 1.5 pixels (547 colours in all).
    fn flat_graphic() -> Vec<u8> {
        let discs = [
            (40.3, 41.7, 30.0, [0u8, 0, 0]),
            (110.6, 60.2, 35.0, [220, 30, 40]),
            (70.1, 115.4, 33.3, [30, 60, 200]),
            (95.2, 95.9, 20.5, [250, 200, 30]),
        ];
        (0..160 * 160u32)
            .flat_map(|i| {
                let (x, y) = ((i % 160) as f32 + 0.5, (i / 160) as f32 + 0.5);
                let mut c = [255f32; 3];
                for &(cx, cy, r, colour) in &discs {
                    let d = ((x - cx).powi(2) + (y - cy).powi(2)).sqrt();
                    let cover = ((r - d) / 1.5 + 0.5).clamp(0.0, 1.0);
                    for k in 0..3 {
                        c[k] += (f32::from(colour[k]) - c[k]) * cover;
                    }
                }
                [
                    c[0].round() as u8,
                    c[1].round() as u8,
                    c[2].round() as u8,
                    255,
                ]
            })
            .collect()
    }

    /// Mean absolute difference per channel between `px` and its quantized form.
    fn mean_error(px: &[u8], pal: &[[u8; 4]], idx: &[u8]) -> f64 {
        let total: u64 = px
            .chunks_exact(4)
            .zip(idx)
            .map(|(c, &k)| {
                let q = pal[usize::from(k)];
                (0..4).map(|i| u64::from(c[i].abs_diff(q[i]))).sum::<u64>()
            })
            .sum();
        total as f64 / px.len() as f64
    }

    #[test]
    fn flat_graphic_needs_few_colours_below_100() {
        let px = flat_graphic();
        assert!(exact_palette(&px).is_none(), "more than 256 colours");
        let (pal100, _) = quantize(&px, 160, 100);
        let (pal90, _) = quantize(&px, 160, 90);
        let (pal75, idx75) = quantize(&px, 160, 75);
        // A quarter of a full palette at most (43 today; sharp's are 18–85 on the graphics of
        // bench/image.sh's corpus).
        assert!(pal75.len() <= 64, "{} colours at 75", pal75.len());
        assert!(pal75.len() < pal90.len() && pal90.len() < pal100.len());
        assert!(pal100.len() > 128, "{} colours at 100", pal100.len());
        // Few colours, still close: under 1.5 levels per channel on average.
        let err = mean_error(&px, &pal75, &idx75);
        assert!(err < 1.5, "mean error {err}");
        // The flat white stays one flat colour: no dithering noise spreads from the edges.
        let white = idx75[0];
        assert_eq!(pal75[usize::from(white)], [255; 4]);
        for (c, &k) in px.chunks_exact(4).zip(&idx75) {
            if c == [255; 4] {
                assert_eq!(k, white);
            }
        }
    }

    /// A 128×128 photo-like image: smooth colour gradients with a little grain.
    fn photo_like() -> Vec<u8> {
        (0..128 * 128u32)
            .flat_map(|i| {
                let (x, y) = (i % 128, i / 128);
                let grain = (i.wrapping_mul(2_654_435_761) >> 29) as i32 - 4;
                let c = |v: u32| (v as i32 + grain).clamp(0, 255) as u8;
                [c(x * 2), c(y * 2), c((x + y) / 2 + 60), 255]
            })
            .collect()
    }

    #[test]
    fn photo_like_gradient_keeps_many_colours() {
        let px = photo_like();
        let (pal, idx) = quantize(&px, 128, 75);
        assert!(pal.len() >= 128, "{} colours", pal.len());
        assert!(mean_error(&px, &pal, &idx) < 4.0);
    }

    #[test]
    fn distinct_colours_survive_below_100_and_near_duplicates_merge() {
        // Six very different colours in blocks of 16×16, and a near copy of the first
        // (one level off) in the last block.
        let colours: [[u8; 4]; 7] = [
            [250, 250, 250, 255],
            [0, 0, 0, 255],
            [200, 30, 30, 255],
            [30, 160, 40, 255],
            [40, 60, 200, 255],
            [240, 200, 20, 255],
            [249, 250, 250, 255],
        ];
        let px: Vec<u8> = (0..112 * 16).flat_map(|i| colours[i % 112 / 16]).collect();
        let (pal, _) = quantize(&px, 112, 75);
        assert_eq!(pal.len(), 6, "{pal:?}");
        let (pal, _) = quantize(&px, 112, 100);
        assert_eq!(pal.len(), 7);
    }

    #[test]
    fn target_error_follows_libimagequant() {
        assert_eq!(target_error(100), 0.0);
        // libimagequant's MSE at quality 75, in its 0–1 units.
        assert!(
            (target_error(75) - 7.109e-4).abs() < 1e-6,
            "{}",
            target_error(75)
        );
        for q in 1..100 {
            assert!(target_error(q) > target_error(q + 1), "quality {q}");
        }
    }

    #[test]
    fn flatness_sees_texture_but_not_lines() {
        let (w, h) = (48usize, 48usize);
        // Left half a checkerboard of two greys (`a`, `b`), right half white with a black
        // vertical line at x = 36.
        let image = |a: u8, b: u8| -> Vec<u8> {
            (0..w * h)
                .flat_map(|i| {
                    let (x, y) = (i % w, i / w);
                    let v = if x < 24 {
                        if (x + y) % 2 == 0 { a } else { b }
                    } else if x == 36 {
                        0
                    } else {
                        255
                    };
                    [v, v, v, 255]
                })
                .collect()
        };
        let flat = flatness(&image(100, 160), w);
        let at = |x: usize, y: usize| flat[y * w + x];
        assert!(at(8, 24) < 30, "texture {}", at(8, 24));
        assert_eq!(at(36, 24), 255, "line");
        assert_eq!(at(44, 24), 255, "flat");
        // Black against white, pixel by pixel, is beyond libimagequant's scale (second
        // differences of 2 across and down): its noise map counts it as flat again.
        let flat = flatness(&image(0, 255), w);
        assert_eq!(flat[24 * w + 8], 255);
    }

    #[test]
    fn noise_map_steps_follow_libimagequant() {
        // One bright value in a dark 12×12 field.
        let (w, h) = (12usize, 12usize);
        let mut src = vec![0u8; w * h];
        src[5 * w + 5] = 252;
        // Grown to its four neighbours only (a diamond, not a square).
        let grown = plus_neighbourhood(&src, w, u8::max);
        assert_eq!(grown[4 * w + 5], 252);
        assert_eq!(grown[5 * w + 6], 252);
        assert_eq!(grown[4 * w + 4], 0);
        // Blurred over the 6 values from 2 before each to 3 after it, across then down,
        // truncated (252 / 6 = 42, then 42 / 6 = 7): the bright value reaches 3 back and 2
        // ahead, not 3 each way.
        let blurred = liq_blur(&src, w);
        for y in 0..h {
            for x in 0..w {
                let inside = (2..=7).contains(&x) && (2..=7).contains(&y);
                assert_eq!(blurred[y * w + x], if inside { 7 } else { 0 }, "{x},{y}");
            }
        }
        // Too small to blur.
        assert_eq!(liq_blur(&src[..6 * w], w), &src[..6 * w]);
    }

    #[test]
    fn palette_levels_are_truncated_like_libimagequant() {
        // A grey between two levels, in the quantizer's space.
        let grey = |level: f64| {
            let v = (level / 255.0).powf(LIQ_GAMMA) as f32;
            from_premul([v, v, v, 1.0], 1.0)
        };
        // 100.6 and 200.4 of 255: libimagequant's steps of 1/256 give 100 (not 101) in the
        // shadows and 201 (not 200) in the highlights.
        assert_eq!(to_rgba(grey(100.6)), [100, 100, 100, 255]);
        assert_eq!(to_rgba(grey(200.4)), [201, 201, 201, 255]);
        // Alpha too: under 1/256 is transparent, 1.5/255 is 1.
        let faint = |a: f32| {
            let v = 0.5f32.powf(LIQ_GAMMA as f32) * a;
            from_premul([v, v, v, a], a)
        };
        assert_eq!(to_rgba(faint(0.9 / 256.0)), [0; 4]);
        assert_eq!(to_rgba(faint(1.5 / 255.0))[3], 1);
    }

    #[test]
    fn dithering_stays_off_edges() {
        let w = 32usize;
        // A horizontal ramp on the left (1 level a pixel), a hard edge at x = 24.
        let px: Vec<u8> = (0..w * 8)
            .flat_map(|i| {
                let x = i % w;
                let v = if x < 24 { 100 + x as u8 } else { 255 };
                [v, v, v, 255]
            })
            .collect();
        let strength = dither_strength(&contrast_map(&px, w), w);
        assert_eq!(strength[4 * w + 10], 255, "gradient");
        assert_eq!(strength[4 * w + 23], 0, "edge");
        assert_eq!(strength[4 * w + 24], 0, "edge");
        assert_eq!(strength[4 * w + 30], 255, "flat");
    }

    #[test]
    fn thin_and_tiny_images_quantize() {
        let px = photo_like();
        for (w, h) in [(1, 1), (1, 40), (40, 1), (2, 2)] {
            let (pal, idx) = quantize(&px[..w * h * 4], w, 75);
            assert_eq!(idx.len(), w * h);
            assert!(idx.iter().all(|&i| usize::from(i) < pal.len()));
        }
        // 256 colours or fewer in one row and one column: still reduced, still valid.
        let (pal, idx) = quantize(&px[..128 * 4], 128, 75);
        assert!(idx.iter().all(|&i| usize::from(i) < pal.len()));
    }

    #[test]
    fn gamma_space_round_trips_every_level() {
        let lut = gamma_lut();
        for v in 0..=255u8 {
            for c in [[v, v, v, 255], [v, 255 - v, v / 3, 255], [v, 40, 200, 128]] {
                assert_eq!(to_rgba(to_px(lut, c)), c, "{c:?}");
            }
        }
    }

    #[test]
    fn faint_shadow_keeps_its_own_levels() {
        // A transparent field, a faint black shadow (alpha 1 to 6, each level a band of 8
        // columns) and a photo-like square (over 256 colours: the bucketed histogram). The
        // shadow must not vanish into transparent, as it did when alpha 0 to 3 shared a bucket.
        let photo = photo_like();
        let (w, h) = (176usize, 128usize);
        let px: Vec<u8> = (0..w * h)
            .flat_map(|i| {
                let (x, y) = (i % w, i / w);
                if x >= 48 {
                    let j = (y * 128 + (x - 48)) * 4;
                    [photo[j], photo[j + 1], photo[j + 2], 255]
                } else if y < 64 {
                    [0, 0, 0, (1 + x / 8) as u8]
                } else {
                    [0, 0, 0, 0]
                }
            })
            .collect();
        assert!(exact_palette(&px).is_none());
        let (pal, idx) = quantize(&px, w, 90);
        let alpha_at = |x: usize, y: usize| pal[usize::from(idx[y * w + x])][3];
        for y in 0..64 {
            for x in 8..48 {
                assert_ne!(alpha_at(x, y), 0, "alpha {} at {x},{y}", 1 + x / 8);
            }
        }
        assert_eq!(alpha_at(10, 100), 0);
    }

    #[test]
    fn many_colours_fit_256() {
        let px = many_colours();
        let (pal, idx) = quantize(&px, 64, 100);
        assert!(pal.len() <= 256 && pal.len() > 16);
        assert_eq!(idx.len(), 64 * 64);
        assert!(idx.iter().all(|&i| usize::from(i) < pal.len()));
        // An opaque image gets an opaque palette (no tRNS chunk).
        assert!(pal.iter().all(|c| c[3] == 255), "{pal:?}");
    }

    #[test]
    fn nearest_search_matches_a_full_scan() {
        let px = many_colours();
        let mut hist = histogram(&px, &vec![255; 64 * 64]);
        let liq = median_cut(
            &mut hist.entries,
            200,
            0.0,
            f64::INFINITY,
            &mut Split::default(),
        );
        assert_eq!(liq.len(), 200);
        let palette: Vec<Px> = liq.iter().map(|c| from_premul(*c, c[3])).collect();
        let search = Nearest::<false>::new(&palette);
        let liq_search = Nearest::<true>::new(&liq);
        let (mut hint, mut liq_hint) = (0, 0);
        for c in px.chunks_exact(4).step_by(7) {
            let c = [c[2], c[0], c[1], c[3] / 2 + 1];
            let q = to_px(gamma_lut(), c);
            hint = search.find(&q, hint);
            let best = palette
                .iter()
                .map(|p| dist(&q, p))
                .fold(f32::INFINITY, f32::min);
            assert!((dist(&q, &palette[hint]) - best).abs() < 1e-6);
            let q = liq_px(gamma_lut(), c);
            let (i, d) = liq_search.find_with_distance(&q, liq_hint);
            liq_hint = i;
            let best = liq
                .iter()
                .map(|p| liq_dist(&q, p))
                .fold(f32::INFINITY, f32::min);
            assert!((d - best).abs() < 1e-6 && (liq_dist(&q, &liq[i]) - d).abs() < 1e-6);
        }
    }

    #[test]
    fn neighbour_search_answers_as_the_axis_search_does() {
        let px = many_colours();
        let mut hist = histogram(&px, &vec![255; 64 * 64]);
        let mut liq = median_cut(
            &mut hist.entries,
            120,
            0.0,
            f64::INFINITY,
            &mut Split::default(),
        );
        // Duplicated colours: ties, which only the axis search's order decides.
        for i in (0..liq.len()).step_by(9) {
            liq.push(liq[i]);
        }
        let palette: Vec<Px> = liq.iter().map(|c| from_premul(*c, c[3])).collect();
        let (axis, near) = (
            Nearest::<false>::new(&palette),
            Neighbours::<false>::new(&palette),
        );
        let (liq_axis, liq_near) = (Nearest::<true>::new(&liq), Neighbours::<true>::new(&liq));
        let mut ties = 0;
        for (k, c) in px.chunks_exact(4).enumerate().step_by(3) {
            let c = [c[1], c[2], c[0], c[3] / 3 + 170];
            // Hints near and far (the previous answer, or any colour).
            let hint = if k % 2 == 0 {
                k % palette.len()
            } else {
                near.find(&to_px(gamma_lut(), c), 0)
            };
            for (q, a, b) in [
                (
                    to_px(gamma_lut(), c),
                    axis.find_with_distance(&to_px(gamma_lut(), c), hint),
                    near.find_with_distance(&to_px(gamma_lut(), c), hint),
                ),
                (
                    liq_px(gamma_lut(), c),
                    liq_axis.find_with_distance(&liq_px(gamma_lut(), c), hint),
                    liq_near.find_with_distance(&liq_px(gamma_lut(), c), hint),
                ),
            ] {
                assert_eq!(
                    (a.0, a.1.to_bits()),
                    (b.0, b.1.to_bits()),
                    "{q:?} from {hint}"
                );
            }
            // Queries at a palette colour with a copy: the hint wins, else the axis order.
            let q = liq[k % liq.len()];
            for hint in [k % liq.len(), (k + 1) % liq.len()] {
                let (a, b) = (
                    liq_axis.find_with_distance(&q, hint),
                    liq_near.find_with_distance(&q, hint),
                );
                assert_eq!(
                    (a.0, a.1.to_bits()),
                    (b.0, b.1.to_bits()),
                    "{q:?} from {hint}"
                );
                ties += usize::from(a.1 == 0.0 && a.0 != k % liq.len());
            }
        }
        assert!(ties > 0, "no ties tried");
    }

    /// A histogram entry of colour `c` (8-bit RGBA) weighing `w`.
    fn entry(c: [u8; 4], w: f32) -> Entry {
        Entry {
            weight: w,
            adjusted: w,
            count: w,
            lq: liq_px(gamma_lut(), c),
            ..Entry::default()
        }
    }

    #[test]
    fn split_balances_colour_weight_along_the_widest_channel() {
        // Greys from black to white, and one heavy dark red: the order is by green (the most
        // weighted channel of libimagequant's spread), highest first.
        let mut entries: Vec<Entry> = (0..40u8)
            .map(|i| entry([i * 6, i * 6, i * 6, 255], 1.0))
            .chain([entry([120, 0, 0, 255], 400.0)])
            .collect();
        let b = CutBox::new(&entries, 0, entries.len(), [0.5; 4]);
        let axis = (0..4)
            .max_by(|&x, &y| b.stats.variance[x].total_cmp(&b.stats.variance[y]))
            .unwrap_or(0);
        let mut scratch = Split::default();
        let (at, colors) = split_box(&mut entries, &b.stats.variance, b.stats.color, &mut scratch);
        // The halves' colours, as `average_colour` makes them from the entries as left.
        let expect = [
            average_colour(&entries[..at], b.stats.color),
            average_colour(&entries[at..], b.stats.color),
        ];
        assert_eq!(
            colors.map(|c| c.map(f32::to_bits)),
            expect.map(|c| c.map(f32::to_bits))
        );
        // The reference: a full sort along that channel, highest first, and the first entry
        // at which the running colour weight reaches half of it.
        let mut sorted = scratch.items.clone();
        sorted.sort_by_key(|x| std::cmp::Reverse(x.key));
        let total: f64 = sorted.iter().map(|x| f64::from(x.cw)).sum();
        let mut acc = 0.0;
        let first = sorted
            .iter()
            .position(|x| {
                acc += f64::from(x.cw);
                acc >= total / 2.0
            })
            .unwrap_or(sorted.len());
        assert_eq!(at, first + 1);
        // Every entry before the split is at least as high along it as every one after it.
        let low = entries[..at].iter().map(|e| e.lq[axis]).fold(1.0, f32::min);
        let high = entries[at..].iter().map(|e| e.lq[axis]).fold(0.0, f32::max);
        assert!(low >= high, "{low} < {high}");
        // The heavy colour weighs more than its count: the split is not at the median entry.
        assert_ne!(at, entries.len() / 2);
    }

    #[test]
    fn box_colour_leans_to_colours_far_from_the_parent() {
        // Two colours of equal weight; seen from a parent at the first, the far one pulls
        // harder (libimagequant keeps boxes from fading towards their parent's colour).
        let items = [
            entry([40, 40, 40, 255], 1.0),
            entry([250, 250, 250, 255], 1.0),
        ];
        let mean = (items[0].lq[1] + items[1].lq[1]) / 2.0;
        let c = average_colour(&items, items[0].lq);
        assert!(c[1] > mean + 0.01, "{} vs mean {mean}", c[1]);
        assert_eq!(c[3], 1.0);
        // Half-transparent colours keep their mean alpha, and the colour is premultiplied.
        let items = [entry([255, 0, 0, 255], 1.0), entry([255, 0, 0, 1], 1.0)];
        let c = average_colour(&items, [0.5; 4]);
        assert!((c[3] - 128.0 / 255.0).abs() < 1e-3, "{c:?}");
        assert!((c[0] - c[3]).abs() < 1e-3, "{c:?}");
    }

    #[test]
    fn palette_search_meets_the_target_with_fewer_colours() {
        let px = flat_graphic();
        let flat = vec![255; 160 * 160];
        let target = target_error(75);
        // One cut aimed at the target.
        let mut hist = histogram(&px, &flat);
        let budget = target * hist.weight - hist.spread;
        let one_cut = median_cut(
            &mut hist.entries,
            MAX_COLORS,
            budget,
            f64::INFINITY,
            &mut Split::default(),
        )
        .len();
        // The search: no more colours than that, and within the target once refined.
        let mut hist = histogram(&px, &flat);
        let palette = find_best_palette(&mut hist, target);
        assert!(palette.len() <= one_cut, "{} > {one_cut}", palette.len());
        let mut refined = palette.clone();
        let error = voronoi(&mut hist, &mut refined, false, false);
        assert!(error <= target * 1.05, "{error} > {target}");
    }

    #[test]
    fn histogram_keeps_exact_colours_of_a_graphic() {
        let px = flat_graphic();
        let hist = histogram(&px, &vec![255; 160 * 160]);
        let mut distinct: Vec<[u8; 4]> = px
            .chunks_exact(4)
            .map(|c| [c[0], c[1], c[2], c[3]])
            .collect();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(hist.entries.len(), distinct.len());
        assert_eq!(hist.spread, 0.0);
        // A photo's count of colours falls back to buckets.
        let n = EXACT_COLORS * 2;
        let many: Vec<u8> = (0..n as u32)
            .flat_map(|i| {
                [
                    (i % 251) as u8,
                    (i / 251 % 256) as u8,
                    (i * 7 % 253) as u8,
                    255,
                ]
            })
            .collect();
        let hist = histogram(&many, &vec![255; n]);
        // (`n` distinct colours: the first two channels alone tell every pixel apart.)
        assert!(hist.entries.len() < n * 2 / 3, "{}", hist.entries.len());
        assert!(hist.spread > 0.0);
    }

    #[test]
    fn transparent_pixels_stay_transparent() {
        // Half fully transparent, half a gradient of partial alpha.
        let px: Vec<u8> = (0..64 * 64u32)
            .flat_map(|i| {
                let (x, y) = (i % 64, i / 64);
                if x < 32 {
                    [200, 10, 10, 0]
                } else {
                    [(x * 4) as u8, (y * 4) as u8, 128, (y * 4 + 3) as u8]
                }
            })
            .collect();
        for quality in [75, 100] {
            let (pal, idx) = quantize(&px, 64, quality);
            for (i, &k) in idx.iter().enumerate() {
                if i % 64 < 32 {
                    assert_eq!(pal[usize::from(k)][3], 0);
                }
            }
            // Non-opaque entries first: a short tRNS chunk.
            let first_opaque = pal.iter().position(|c| c[3] == 255).unwrap_or(pal.len());
            assert!(pal[first_opaque..].iter().all(|c| c[3] == 255));
        }
    }
}
