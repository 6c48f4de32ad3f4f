//! Palette reduction for PNG output, standing in for libimagequant (sharp's `png({ quality })`,
//! whose Rust port is GPL-3): exact when the image has at most 256 colours; else a
//! variance-minimising median cut over a colour histogram, refined by k-means, then remapped
//! with serpentine Floyd–Steinberg error diffusion on all four channels. Colours live in
//! premultiplied luma / colour differences / alpha, and two colours differ by the larger of
//! their differences composited over black and over white (libimagequant's idea): what a
//! half-transparent pixel looks like on a page, not its stored channels, is what counts.

// Four-channel arithmetic reads clearest with one index over the channels.
#![allow(clippy::needless_range_loop)]

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// PNG palettes hold at most 256 entries (sharp's default `colours`).
const MAX_COLORS: usize = 256;

/// k-means passes after the median cut (each moves every entry to its nearest colour's mean).
const KMEANS_PASSES: usize = 4;

/// Largest error carried to a neighbour, per channel (scaled units, 0–1): bounds the smear a
/// palette far from some colour would leave behind it.
const MAX_CARRY: f32 = 0.12;

/// Share of each pixel's error passed on: full Floyd–Steinberg leaves visible noise on smooth
/// gradients (SSIM on `alpha.png` at 128 px: 15/16 → 0.915, 0.75 → 0.928; sharp 0.931).
const DITHER: f32 = 0.75;

/// Squared carried error under which a pixel takes none (about 2.8 levels of 255): areas close
/// to a palette colour stay flat, which compresses better and leaves less noise, at the price
/// of faint bands like those in sharp's output (`alpha.png` at 128 px: 6016 → 5362 bytes, SSIM
/// 0.928 → 0.937).
const MIN_CARRY2: f32 = 8.0 / 65536.0;

/// Weight of the two colour differences against luma in the distance: luma errors are the
/// ones a viewer sees first.
const CHROMA: f32 = 0.5;

/// A pixel in the quantizer's space: premultiplied luma, blue and red differences (times
/// `CHROMA`) and alpha, all in 0–1 (differences in ±0.5).
type Px = [f32; 4];

/// A palette (RGBA entries) and one index per pixel of `rgba` (`width` pixels per row).
pub fn quantize(rgba: &[u8], width: usize) -> (Vec<[u8; 4]>, Vec<u8>) {
    if let Some(exact) = exact_palette(rgba) {
        return exact;
    }
    let entries = histogram(rgba);
    let mut palette = median_cut(entries.clone(), MAX_COLORS);
    for _ in 0..KMEANS_PASSES {
        if !kmeans_pass(&entries, &mut palette) {
            break;
        }
    }
    let mut colors: Vec<[u8; 4]> = palette.iter().map(|p| to_rgba(*p)).collect();
    colors.sort_unstable_by_key(|c| (c[3], c[1], c[0], c[2]));
    colors.dedup();
    let indices = remap(rgba, width.max(1), &colors);
    (colors, indices)
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

/// A colour of the quantizer's space.
fn to_px(c: [u8; 4]) -> Px {
    let a = f32::from(c[3]) / 255.0;
    from_premul(c.map(|v| f32::from(v) / 255.0 * a), a)
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

/// Back to straight (not premultiplied) RGBA8; fully transparent is transparent black.
fn to_rgba(p: Px) -> [u8; 4] {
    let (rgb, a) = to_premul(p);
    let a = a.clamp(0.0, 1.0);
    let a8 = (a * 255.0).round() as u8;
    if a8 == 0 {
        return [0; 4];
    }
    let c = |i: usize| ((rgb[i] / a).clamp(0.0, 1.0) * 255.0).round() as u8;
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

/// One histogram bucket: the mean colour of its pixels and how many there are.
#[derive(Clone, Copy)]
struct Entry {
    px: Px,
    weight: f32,
}

/// Colours counted in buckets of 6 bits per channel, each keeping its pixels' exact mean (the
/// buckets are far finer than a 256-colour palette, and bound the work on a photo).
fn histogram(rgba: &[u8]) -> Vec<Entry> {
    let mut buckets: HashMap<u32, ([f32; 4], u32), FastHash> = HashMap::default();
    for c in rgba.chunks_exact(4) {
        // Every fully transparent pixel is the same colour.
        let c = if c[3] == 0 {
            [0; 4]
        } else {
            [c[0], c[1], c[2], c[3]]
        };
        let key = u32::from_le_bytes(c.map(|v| v >> 2));
        let e = buckets.entry(key).or_insert(([0.0; 4], 0));
        let p = to_px(c);
        for i in 0..4 {
            e.0[i] += p[i];
        }
        e.1 += 1;
    }
    buckets
        .into_values()
        .map(|(sum, n)| {
            let w = n as f32;
            Entry {
                px: sum.map(|s| s / w),
                weight: w,
            }
        })
        .collect()
}

/// A box of the median cut: a range of entries and its weighted squared error.
struct CutBox {
    start: usize,
    end: usize,
    error: f64,
}

/// Weighted sum of squared deviations from the mean of `entries`, over all channels.
fn box_error(entries: &[Entry]) -> f64 {
    let (mut w, mut s, mut s2) = (0f64, [0f64; 4], 0f64);
    for e in entries {
        let ew = f64::from(e.weight);
        w += ew;
        for i in 0..4 {
            let v = f64::from(e.px[i]);
            s[i] += ew * v;
            s2 += ew * v * v;
        }
    }
    if w == 0.0 {
        return 0.0;
    }
    s2 - s.iter().map(|v| v * v).sum::<f64>() / w
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

/// Splits the box with the largest error until there are `colors` boxes (or none can split):
/// along its widest channel, at the point that leaves the least error on the two sides.
fn median_cut(mut entries: Vec<Entry>, colors: usize) -> Vec<Px> {
    let mut boxes = vec![CutBox {
        start: 0,
        end: entries.len(),
        error: box_error(&entries),
    }];
    while boxes.len() < colors {
        let Some((bi, _)) = boxes
            .iter()
            .enumerate()
            .filter(|(_, b)| b.end - b.start > 1 && b.error > 0.0)
            .max_by(|a, b| a.1.error.total_cmp(&b.1.error))
        else {
            break;
        };
        let (start, end) = (boxes[bi].start, boxes[bi].end);
        let slice = &mut entries[start..end];
        let axis = widest_axis(slice, 4);
        slice.sort_unstable_by(|a, b| a.px[axis].total_cmp(&b.px[axis]));
        let at = best_split(slice, axis);
        let left = box_error(&slice[..at]);
        let right = box_error(&slice[at..]);
        boxes[bi] = CutBox {
            start,
            end: start + at,
            error: left,
        };
        boxes.push(CutBox {
            start: start + at,
            end,
            error: right,
        });
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
            .map(|&px| Entry { px, weight: 1.0 })
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

/// Maps every pixel to a palette index with Floyd–Steinberg error diffusion (serpentine rows,
/// all four channels, each carried error bounded by `MAX_CARRY`). Fully transparent pixels map
/// to the nearest of transparent black and neither take nor pass on error.
fn remap(rgba: &[u8], width: usize, colors: &[[u8; 4]]) -> Vec<u8> {
    let palette: Vec<Px> = colors.iter().map(|&c| to_px(c)).collect();
    let search = Nearest::new(&palette);
    let clear = search.find(&[0.0; 4], 0);
    let pixels = rgba.len() / 4;
    let mut indices = vec![0u8; pixels];
    // Error for the current and the next row, one slot of margin on each side.
    let mut cur = vec![[0f32; 4]; width + 2];
    let mut next = vec![[0f32; 4]; width + 2];
    let mut hint = 0;
    for (y, row) in rgba.chunks_exact(width * 4).enumerate() {
        let rtl = y % 2 == 1;
        for step in 0..width {
            let x = if rtl { width - 1 - step } else { step };
            let c = [row[x * 4], row[x * 4 + 1], row[x * 4 + 2], row[x * 4 + 3]];
            if c[3] == 0 {
                indices[y * width + x] = clear as u8;
                continue;
            }
            let src = to_px(c);
            let mut e = cur[x + 1];
            if e.iter().map(|v| v * v).sum::<f32>() < MIN_CARRY2 {
                e = [0.0; 4];
            }
            let want: Px = std::array::from_fn(|i| src[i] + e[i].clamp(-MAX_CARRY, MAX_CARRY));
            // Into the colours that exist: alpha in 0–1, a premultiplied colour within its alpha.
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
            indices[y * width + x] = hint as u8;
            let got = palette[hint];
            let err: Px = std::array::from_fn(|i| (want[i] - got[i]) * DITHER);
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
        let (pal, idx) = quantize(&px, 3);
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

    #[test]
    fn many_colours_fit_256() {
        let px = many_colours();
        let (pal, idx) = quantize(&px, 64);
        assert!(pal.len() <= 256 && pal.len() > 16);
        assert_eq!(idx.len(), 64 * 64);
        assert!(idx.iter().all(|&i| usize::from(i) < pal.len()));
        // An opaque image gets an opaque palette (no tRNS chunk).
        assert!(pal.iter().all(|c| c[3] == 255), "{pal:?}");
    }

    #[test]
    fn nearest_search_matches_a_full_scan() {
        let px = many_colours();
        let palette = median_cut(histogram(&px), 200);
        let search = Nearest::new(&palette);
        let mut hint = 0;
        for c in px.chunks_exact(4).step_by(7) {
            let q = to_px([c[2], c[0], c[1], c[3] / 2 + 1]);
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
        let (pal, idx) = quantize(&px, 64);
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
