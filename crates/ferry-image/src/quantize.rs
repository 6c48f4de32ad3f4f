//! Palette reduction for PNG output: exact when the image has at most 256 colours, else
//! NeuQuant with Floyd–Steinberg error diffusion.

use std::collections::HashMap;

/// Error diffusion strength (colour channels only: dithered alpha makes noisy edges).
const DITHER: f32 = 0.5;

/// A palette (RGBA entries) and one index per pixel of `rgba` (`width` pixels per row).
pub fn quantize(rgba: &[u8], width: usize) -> (Vec<[u8; 4]>, Vec<u8>) {
    if let Some(exact) = exact_palette(rgba) {
        return exact;
    }
    let nq = color_quant::NeuQuant::new(10, 256, rgba);
    let palette: Vec<[u8; 4]> = nq
        .color_map_rgba()
        .chunks_exact(4)
        .map(|c| [c[0], c[1], c[2], c[3]])
        .collect();
    let width = width.max(1);
    let mut indices = Vec::with_capacity(rgba.len() / 4);
    // Error carried to the current and the next row, per channel.
    let mut cur = vec![[0f32; 4]; width + 2];
    let mut next = vec![[0f32; 4]; width + 2];
    for (i, px) in rgba.chunks_exact(4).enumerate() {
        let x = i % width;
        if x == 0 && i > 0 {
            std::mem::swap(&mut cur, &mut next);
            next.iter_mut().for_each(|e| *e = [0.0; 4]);
        }
        let mut want = [0u8; 4];
        for c in 0..4 {
            want[c] = (f32::from(px[c]) + cur[x + 1][c]).round().clamp(0.0, 255.0) as u8;
        }
        let idx = nq.index_of(&want).min(palette.len().saturating_sub(1));
        indices.push(idx as u8);
        let got = palette.get(idx).copied().unwrap_or([0; 4]);
        for c in 0..3 {
            let e = (f32::from(want[c]) - f32::from(got[c])) * DITHER;
            cur[x + 2][c] += e * 7.0 / 16.0;
            next[x][c] += e * 3.0 / 16.0;
            next[x + 1][c] += e * 5.0 / 16.0;
            next[x + 2][c] += e / 16.0;
        }
    }
    (palette, indices)
}

/// The image's own palette when it has at most 256 distinct colours.
fn exact_palette(rgba: &[u8]) -> Option<(Vec<[u8; 4]>, Vec<u8>)> {
    let mut map: HashMap<[u8; 4], u8> = HashMap::new();
    let mut palette = Vec::new();
    let mut indices = Vec::with_capacity(rgba.len() / 4);
    for px in rgba.chunks_exact(4) {
        let key = [px[0], px[1], px[2], px[3]];
        let idx = match map.get(&key) {
            Some(&i) => i,
            None => {
                let i = u8::try_from(palette.len()).ok()?;
                palette.push(key);
                map.insert(key, i);
                i
            }
        };
        indices.push(idx);
    }
    Some((palette, indices))
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

    #[test]
    fn many_colours_fit_256() {
        let px: Vec<u8> = (0..64 * 64)
            .flat_map(|i: u32| {
                [
                    (i % 256) as u8,
                    (i / 16 % 256) as u8,
                    (i * 7 % 256) as u8,
                    255,
                ]
            })
            .collect();
        let (pal, idx) = quantize(&px, 64);
        assert!(pal.len() <= 256 && pal.len() > 16);
        assert_eq!(idx.len(), 64 * 64);
        assert!(idx.iter().all(|&i| usize::from(i) < pal.len()));
    }
}
