//! Palette reduction for PNG output, standing in for libimagequant (sharp's `png({ quality })`,
//! whose Rust port is GPL-3). Like libimagequant 2.x (the C version sharp bundles) it uses the
//! colours the error target `quality` sets calls for, not always 256: a median cut over a
//! colour histogram stops once its boxes' error is within the budget, and k-means refines the
//! palette (leaving it under the target, as libimagequant's usually is). The error is
//! libimagequant's measure (gamma-adjusted premultiplied RGB, over black and over white),
//! weighted by how flat each pixel's surroundings are (errors hide in texture) with no colour
//! above a tenth of the image. At quality 100 an image of at most 256 colours keeps them
//! exactly (below 100 libimagequant reduces those too, and so does this). Pixels are remapped
//! with serpentine Floyd–Steinberg error diffusion on all four channels, in flat areas and
//! gradients only (not on edges, where it only scatters noise). The palette itself lives in
//! premultiplied luma / colour differences / alpha, taken from libimagequant's working gamma
//! (sRGB values to the power 1.21, where the error budget is measured too), and two colours
//! differ by the larger of their differences composited over black and over white
//! (libimagequant's idea): what a half-transparent pixel looks like on a page, not its stored
//! channels, is what counts.

// Four-channel arithmetic reads clearest with one index over the channels.
#![allow(clippy::needless_range_loop)]

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// PNG palettes hold at most 256 entries (sharp's default `colours`).
const MAX_COLORS: usize = 256;

/// k-means passes after the median cut (each moves every entry to its nearest colour's mean).
const KMEANS_PASSES: usize = 4;

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
/// 40 + 41 + 41; 0.7: 44 + 43 + 42; 1.0: 43 + 42 + 34 (SSIM sees only luma).
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
    let contrast = contrast_map(rgba, width);
    let flat = flatness(&contrast, width);
    let hist = match exact {
        // Below 100 libimagequant reduces even an image of few colours (libimagequant.c
        // `pngquant_quantize`).
        Some((colors, indices)) => exact_histogram(&colors, &indices, &flat),
        None => histogram(rgba, &flat),
    };
    drop(flat);
    let palette = palette_within(&hist, target_error(quality) * hist.weight);
    let mut colors: Vec<[u8; 4]> = palette.iter().map(|p| to_rgba(*p)).collect();
    colors.sort_unstable_by_key(|c| (c[3], c[1], c[0], c[2]));
    colors.dedup();
    let indices = remap(rgba, width, &colors, &dither_strength(&contrast, width));
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

/// The palette for `hist` whose error stays within `allowed` (a sum over the histogram's
/// weights; 0: as many colours as the cut finds): the median cut stops once its boxes' error
/// and `hist.spread` are within it (never when `allowed` isn't above the spread), then k-means
/// refines the colours, lowering the error further. As in libimagequant, the cut's colours,
/// before the refinement, set how many there are: its result is then usually well under the
/// target. Aiming the cut higher by what k-means gains (libimagequant.c `find_best_palette`
/// does a little of that) gave fewer colours than sharp's for the same `quality`; PNG corpus
/// bench, q 50 + 75 + 90, all else as now: 43 + 40 + 38 pass with that search (up to 4 more
/// cuts), 44 + 43 + 42 without.
fn palette_within(hist: &Histogram, allowed: f64) -> Vec<Px> {
    let mut palette = median_cut(hist.entries.clone(), MAX_COLORS, allowed - hist.spread);
    for _ in 0..KMEANS_PASSES {
        if !kmeans_pass(&hist.entries, &mut palette) {
            break;
        }
    }
    palette
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
fn to_rgba(p: Px) -> [u8; 4] {
    let (rgb, a) = to_premul(p);
    let a = a.clamp(0.0, 1.0);
    let a8 = (a * 255.0).round() as u8;
    if a8 == 0 {
        return [0; 4];
    }
    let c = |i: usize| {
        let v = f64::from((rgb[i] / a).clamp(0.0, 1.0)).powf(1.0 / LIQ_GAMMA);
        (v * 255.0).round() as u8
    };
    [c(0), c(1), c(2), a8]
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

/// One histogram bucket: the mean colour of its pixels, in the quantizer's space and in
/// libimagequant's, and how much they weigh.
#[derive(Clone, Copy)]
struct Entry {
    px: Px,
    /// The pixels' `importance_weight`s summed, capped at `MAX_SHARE` of the image.
    weight: f32,
    /// Mean in libimagequant's space (`liq_px`).
    lq: [f32; 4],
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
    /// First pixel, in the quantizer's space.
    first: Px,
    /// Sum of the differences from `first`.
    diff: [f32; 4],
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

/// Colours counted in buckets of 6 bits per channel, each keeping its pixels' exact mean (the
/// buckets are far finer than a 256-colour palette, and bound the work on a photo); `flat` is
/// `flatness` of each pixel.
fn histogram(rgba: &[u8], flat: &[u8]) -> Histogram {
    let lut = gamma_lut();
    let mut buckets: HashMap<u32, Bucket, FastHash> = HashMap::default();
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
        let key = u32::from_le_bytes([c[0] >> 2, c[1] >> 2, c[2] >> 2, c[3]]);
        let p = to_px(lut, c);
        let l = liq_px(lut, c);
        let b = buckets.entry(key).or_insert(Bucket {
            first: p,
            diff: [0.0; 4],
            count: 0,
            liq_first: l,
            liq_diff: [0.0; 4],
            liq_diff2: 0.0,
            weight: 0.0,
        });
        let w = importance_weight(f);
        let d: [f32; 4] = std::array::from_fn(|i| l[i] - b.liq_first[i]);
        for i in 0..4 {
            b.diff[i] += p[i] - b.first[i];
            b.liq_diff[i] += w * d[i];
        }
        b.liq_diff2 += w * liq_diff(&d);
        b.weight += f64::from(w);
        b.count += 1;
    }
    let cap = max_weight(rgba.len() / 4);
    let (mut weight, mut spread) = (0f64, 0f64);
    let entries = buckets
        .into_values()
        .map(|b| {
            let w = b.weight as f32;
            let capped = w.min(cap);
            let d = b.liq_diff.map(|v| v / w);
            // Squared differences about the mean, from those about the first pixel.
            let own = (b.liq_diff2 - w * liq_diff(&d)).max(0.0);
            weight += f64::from(capped);
            spread += f64::from(own * (capped / w));
            Entry {
                px: std::array::from_fn(|i| b.first[i] + b.diff[i] / b.count as f32),
                weight: capped,
                lq: std::array::from_fn(|i| b.liq_first[i] + d[i]),
            }
        })
        .collect();
    Histogram {
        entries,
        weight,
        spread,
    }
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
        .map(|(n, f)| 0.5 * f64::from(n) + f as f64 / 255.0);
    let lut = gamma_lut();
    let cap = max_weight(indices.len());
    let mut weight = 0f64;
    let entries = colors
        .iter()
        .zip(weights)
        .filter(|&(_, w)| w > 0.0)
        .map(|(&c, w)| {
            let c = if c[3] == 0 { [0; 4] } else { c };
            let w = (w as f32).min(cap);
            weight += f64::from(w);
            Entry {
                px: to_px(lut, c),
                weight: w,
                lq: liq_px(lut, c),
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
/// to 255; rows of `width`, clamped at the sides): the local contrast `flatness` and
/// `dither_strength` work from. Every fully transparent pixel counts as transparent black.
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

/// How flat each pixel's surroundings are, 0 (busy) to 255 (flat), after libimagequant's noise
/// map (libimagequant.c `contrast_maps`): from `contrast` (a straight edge, busy one way only,
/// counts half), then with busy lines up to 4 pixels wide (edges, strokes of text) made flat,
/// blurred, and busy areas grown by 2 pixels.
fn flatness(contrast: &[[u8; 2]], width: usize) -> Vec<u8> {
    if contrast.is_empty() {
        return Vec::new();
    }
    let raw: Vec<u8> = contrast
        .iter()
        .map(|&[across, along]| {
            let z = 1.0 - f32::from(u16::from(across) + u16::from(along)) / 510.0;
            // To the fourth power: busy pixels count as busy.
            (z * z * z * z * 255.0) as u8
        })
        .collect();
    let thin_lines_gone = neighbourhood(&raw, width, 2, u8::max);
    let blurred = box_blur(&thin_lines_gone, width, 3);
    // Busy areas grow: flat ones shrink by 3 after growing by 1.
    let widened = neighbourhood(&blurred, width, 1, u8::max);
    neighbourhood(&widened, width, 3, u8::min)
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

/// `src` (rows of `width`) averaged over each value's (2r + 1)² neighbourhood, clamped at the
/// sides (running sums across, then down).
fn box_blur(src: &[u8], width: usize, r: usize) -> Vec<u8> {
    let height = src.len() / width;
    let n = 2 * r + 1;
    let (last_x, last_y) = (width - 1, height - 1);
    let mut rows = vec![0u16; src.len()];
    for (row, o) in src.chunks_exact(width).zip(rows.chunks_exact_mut(width)) {
        let at = |x: usize| u16::from(row[x.min(last_x)]);
        let mut sum: u16 = (0..n).map(|k| at(k.saturating_sub(r))).sum();
        for (x, v) in o.iter_mut().enumerate() {
            *v = sum;
            sum = sum + at(x + r + 1) - at(x.saturating_sub(r));
        }
    }
    let row = |y: usize| &rows[y.min(last_y) * width..(y.min(last_y) + 1) * width];
    let mut sum = vec![0u32; width];
    for k in 0..n {
        for (s, &v) in sum.iter_mut().zip(row(k.saturating_sub(r))) {
            *s += u32::from(v);
        }
    }
    let area = (n * n) as u32;
    let mut out = vec![0u8; src.len()];
    for (y, o) in out.chunks_exact_mut(width).enumerate() {
        for (v, &s) in o.iter_mut().zip(&sum) {
            *v = (s / area) as u8;
        }
        let (enter, leave) = (row(y + r + 1), row(y.saturating_sub(r)));
        for ((s, &e), &l) in sum.iter_mut().zip(enter).zip(leave) {
            *s = *s + u32::from(e) - u32::from(l);
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

/// A box of the median cut: a range of entries, its error in libimagequant's measure
/// (`box_error`), and how urgently it wants splitting.
struct CutBox {
    start: usize,
    end: usize,
    error: f64,
    priority: f64,
}

impl CutBox {
    fn new(entries: &[Entry], start: usize, end: usize) -> Self {
        let (error, weight) = box_error(&entries[start..end]);
        Self {
            start,
            end,
            error,
            // Error times weight, as libimagequant's variance times weight
            // (mediancut.c `best_splittable_box`): heavy boxes split first, which gives the
            // large areas of a graphic, and the ramps at their edges, colours of their own.
            priority: error * weight,
        }
    }
}

/// The weighted error of `entries` against their weighted mean, in libimagequant's measure
/// and space, and their weight.
fn box_error(entries: &[Entry]) -> (f64, f64) {
    let (mut w, mut s, mut s2) = (0f64, [0f64; 4], 0f64);
    for e in entries {
        let ew = f64::from(e.weight);
        w += ew;
        for i in 0..4 {
            s[i] += ew * f64::from(e.lq[i]);
        }
        s2 += ew * f64::from(liq_diff(&e.lq));
    }
    if w == 0.0 {
        return (0.0, 0.0);
    }
    // `liq_diff` is a quadratic form, so the sum about the mean is the sum about zero less the
    // total weight times the mean's.
    let mean = s.map(|v| (v / w) as f32);
    ((s2 - w * f64::from(liq_diff(&mean))).max(0.0), w)
}

/// Weighted mean colour of `entries`.
fn mean(entries: &[Entry]) -> Px {
    let (mut w, mut s) = (0f64, [0f64; 4]);
    for e in entries {
        let ew = f64::from(e.weight);
        w += ew;
        for i in 0..4 {
            s[i] += ew * f64::from(e.px[i]);
        }
    }
    let w = w.max(f64::MIN_POSITIVE);
    s.map(|v| (v / w) as f32)
}

/// Splits the box that most wants it (`CutBox::priority`) until there are `colors` boxes, none
/// can split, or (when `budget` is positive) the boxes' errors sum to at most `budget`: along
/// its widest channel, at the point that leaves the least error on the two sides.
fn median_cut(mut entries: Vec<Entry>, colors: usize, budget: f64) -> Vec<Px> {
    let mut boxes = vec![CutBox::new(&entries, 0, entries.len())];
    let mut total = boxes[0].error;
    while boxes.len() < colors {
        let Some((bi, _)) = boxes
            .iter()
            .enumerate()
            .filter(|(_, b)| b.end - b.start > 1 && b.error > 0.0)
            .max_by(|a, b| a.1.priority.total_cmp(&b.1.priority))
        else {
            break;
        };
        let (start, end) = (boxes[bi].start, boxes[bi].end);
        let slice = &mut entries[start..end];
        let axis = widest_axis(slice, 4);
        slice.sort_unstable_by(|a, b| a.px[axis].total_cmp(&b.px[axis]));
        let at = start + best_split(slice, axis);
        total -= boxes[bi].error;
        boxes[bi] = CutBox::new(&entries, start, at);
        boxes.push(CutBox::new(&entries, at, end));
        total += boxes[bi].error + boxes[boxes.len() - 1].error;
        if budget > 0.0 && total <= budget {
            break;
        }
    }
    boxes
        .iter()
        .map(|b| mean(&entries[b.start..b.end]))
        .collect()
}

/// The channel along which `entries` vary most (weighted variance).
fn widest_axis(entries: &[Entry], axes: usize) -> usize {
    let m = mean(entries);
    let mut var = [0f64; 4];
    for e in entries {
        for i in 0..4 {
            let d = f64::from(e.px[i] - m[i]);
            var[i] += f64::from(e.weight) * d * d;
        }
    }
    (0..axes)
        .max_by(|&a, &b| var[a].total_cmp(&var[b]))
        .unwrap_or(0)
}

/// Where to cut `entries` (sorted along `axis`) so the two sides' errors along it sum least;
/// always leaves both sides non-empty.
fn best_split(entries: &[Entry], axis: usize) -> usize {
    let (mut tw, mut ts, mut ts2) = (0f64, 0f64, 0f64);
    for e in entries {
        let (w, v) = (f64::from(e.weight), f64::from(e.px[axis]));
        tw += w;
        ts += w * v;
        ts2 += w * v * v;
    }
    let (mut w, mut s, mut s2) = (0f64, 0f64, 0f64);
    let (mut best, mut best_err) = (1, f64::INFINITY);
    for (i, e) in entries[..entries.len() - 1].iter().enumerate() {
        let (ew, v) = (f64::from(e.weight), f64::from(e.px[axis]));
        w += ew;
        s += ew * v;
        s2 += ew * v * v;
        let rw = tw - w;
        if rw <= 0.0 {
            break;
        }
        let err = (s2 - s * s / w) + ((ts2 - s2) - (ts - s) * (ts - s) / rw);
        if err < best_err {
            best_err = err;
            best = i + 1;
        }
    }
    best
}

/// Moves every palette colour to the mean of the entries nearest to it; whether any moved.
fn kmeans_pass(entries: &[Entry], palette: &mut [Px]) -> bool {
    let search = Nearest::new(palette);
    let mut sums = vec![([0f64; 4], 0f64); palette.len()];
    let mut hint = 0;
    for e in entries {
        hint = search.find(&e.px, hint);
        let (s, w) = &mut sums[hint];
        for i in 0..4 {
            s[i] += f64::from(e.weight) * f64::from(e.px[i]);
        }
        *w += f64::from(e.weight);
    }
    let mut moved = false;
    for (p, (s, w)) in palette.iter_mut().zip(sums) {
        // An entry nearest to nothing keeps its colour.
        if w > 0.0 {
            let next = s.map(|v| (v / w) as f32);
            moved |= dist(p, &next) > 1e-7;
            *p = next;
        }
    }
    moved
}

/// Nearest-colour search: the palette sorted along its widest channel, scanned outwards from
/// the query until the distance along that channel alone exceeds the best found.
struct Nearest {
    /// Palette colours, in `order`.
    sorted: Vec<Px>,
    /// Palette index of each sorted colour.
    order: Vec<usize>,
    /// Where each palette index sits in `sorted`.
    rank: Vec<usize>,
    axis: usize,
}

impl Nearest {
    /// Indexes `palette` (not empty).
    fn new(palette: &[Px]) -> Self {
        let entries: Vec<Entry> = palette
            .iter()
            .map(|&px| Entry {
                px,
                weight: 1.0,
                lq: [0.0; 4],
            })
            .collect();
        let axis = widest_axis(&entries[..], 3);
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
        }
    }

    /// The palette index nearest to `q`; `hint` (a likely answer, e.g. the previous pixel's)
    /// only speeds the search up.
    fn find(&self, q: &Px, hint: usize) -> usize {
        let Some(&start) = self.rank.get(hint) else {
            return 0;
        };
        let mut best = start;
        let mut best_d = dist(q, &self.sorted[start]);
        let key = q[self.axis];
        let pos = self.sorted.partition_point(|p| p[self.axis] < key);
        for i in pos..self.sorted.len() {
            let d_axis = self.sorted[i][self.axis] - key;
            if d_axis * d_axis >= best_d {
                break;
            }
            let d = dist(q, &self.sorted[i]);
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
            let d = dist(q, &self.sorted[i]);
            if d < best_d {
                best_d = d;
                best = i;
            }
        }
        self.order[best]
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

/// Maps every pixel to a palette index with Floyd–Steinberg error diffusion (serpentine rows,
/// all four channels, each carried error bounded by `MAX_CARRY`, and the error taken and passed
/// on by each pixel scaled by its `strength`, 0–255). Fully transparent pixels map to the
/// nearest of transparent black and neither take nor pass on error.
fn remap(rgba: &[u8], width: usize, colors: &[[u8; 4]], strength: &[u8]) -> Vec<u8> {
    let lut = gamma_lut();
    let palette: Vec<Px> = colors.iter().map(|&c| to_px(lut, c)).collect();
    let search = Nearest::new(&palette);
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
                        hint = search.find(&src, hint);
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
        // Left half a checkerboard, right half white with a black vertical line at x = 36.
        let px: Vec<u8> = (0..w * h)
            .flat_map(|i| {
                let (x, y) = (i % w, i / w);
                let v = if x < 24 {
                    if (x + y) % 2 == 0 { 0 } else { 255 }
                } else if x == 36 {
                    0
                } else {
                    255
                };
                [v, v, v, 255]
            })
            .collect();
        let flat = flatness(&contrast_map(&px, w), w);
        let at = |x: usize, y: usize| flat[y * w + x];
        assert!(at(8, 24) < 30, "texture {}", at(8, 24));
        assert_eq!(at(36, 24), 255, "line");
        assert_eq!(at(44, 24), 255, "flat");
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
        let palette = median_cut(histogram(&px, &vec![255; 64 * 64]).entries, 200, 0.0);
        let search = Nearest::new(&palette);
        let mut hint = 0;
        for c in px.chunks_exact(4).step_by(7) {
            let q = to_px(gamma_lut(), [c[2], c[0], c[1], c[3] / 2 + 1]);
            hint = search.find(&q, hint);
            let best = palette
                .iter()
                .map(|p| dist(&q, p))
                .fold(f32::INFINITY, f32::min);
            assert!((dist(&q, &palette[hint]) - best).abs() < 1e-6);
        }
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
