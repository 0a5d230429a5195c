//! Fixed position encodings and the trunk's position-embedding resize, computed on the host in
//! f64 (they depend only on shapes and frozen weights, so they are built once at load time).

use std::f64::consts::PI;

/// PyTorch's cubic-convolution weights (A = −0.75) for fractional offset `t`.
fn cubic_weights(t: f64) -> [f64; 4] {
    const A: f64 = -0.75;
    let w0 = ((A * (t + 1.0) - 5.0 * A) * (t + 1.0) + 8.0 * A) * (t + 1.0) - 4.0 * A;
    let w1 = ((A + 2.0) * t - (A + 3.0)) * t * t + 1.0;
    let s = 1.0 - t;
    let w2 = ((A + 2.0) * s - (A + 3.0)) * s * s + 1.0;
    let s2 = 2.0 - t;
    let w3 = ((A * s2 - 5.0 * A) * s2 + 8.0 * A) * s2 - 4.0 * A;
    [w0, w1, w2, w3]
}

/// One axis of `F.interpolate(mode="bicubic", align_corners=False)`: for each output index,
/// the four clamped source indices and their weights.
fn bicubic_taps(n_in: usize, n_out: usize) -> Vec<([usize; 4], [f64; 4])> {
    let scale = n_in as f64 / n_out as f64;
    (0..n_out)
        .map(|o| {
            if n_in == n_out {
                return ([o, o, o, o], [0.0, 1.0, 0.0, 0.0]);
            }
            // PyTorch does not clamp the source coordinate for cubic, only the taps.
            let src = (o as f64 + 0.5) * scale - 0.5;
            let i0 = src.floor();
            let t = src - i0;
            let clamp = |i: f64| i.clamp(0.0, (n_in - 1) as f64) as usize;
            ([clamp(i0 - 1.0), clamp(i0), clamp(i0 + 1.0), clamp(i0 + 2.0)], cubic_weights(t))
        })
        .collect()
}

/// Bicubic resize of a `[C, H, W]` array to `[C, h_out, w_out]` (PyTorch semantics).
pub fn bicubic_resize(data: &[f32], c: usize, h: usize, w: usize, h_out: usize, w_out: usize) -> Vec<f64> {
    let ty = bicubic_taps(h, h_out);
    let tx = bicubic_taps(w, w_out);
    let mut out = vec![0.0f64; c * h_out * w_out];
    let mut row = vec![0.0f64; w_out];
    for ch in 0..c {
        let plane = &data[ch * h * w..(ch + 1) * h * w];
        for (oy, (iy, wy)) in ty.iter().enumerate() {
            row.iter_mut().for_each(|v| *v = 0.0);
            for k in 0..4 {
                let src = &plane[iy[k] * w..(iy[k] + 1) * w];
                for (ox, (ix, wx)) in tx.iter().enumerate() {
                    let v: f64 = (0..4).map(|j| src[ix[j]] as f64 * wx[j]).sum();
                    row[ox] += wy[k] * v;
                }
            }
            out[(ch * h_out + oy) * w_out..(ch * h_out + oy + 1) * w_out].copy_from_slice(&row);
        }
    }
    out
}

/// The trunk's position embedding for a `grid`² token grid, NHWC `[grid, grid, C]`:
/// bicubic-resized background embedding `[C, bh, bw]` plus the window embedding `[C, ww, ww]`
/// tiled over the grid.
pub fn trunk_pos_embed(
    bkg: &[f32],
    bkg_hw: [usize; 2],
    window: &[f32],
    window_hw: [usize; 2],
    c: usize,
    grid: usize,
) -> Vec<f32> {
    let resized = bicubic_resize(bkg, c, bkg_hw[0], bkg_hw[1], grid, grid);
    let mut out = vec![0.0f32; grid * grid * c];
    for y in 0..grid {
        for x in 0..grid {
            for ch in 0..c {
                let wv = window[(ch * window_hw[0] + y % window_hw[0]) * window_hw[1] + x % window_hw[1]] as f64;
                out[(y * grid + x) * c + ch] = (resized[(ch * grid + y) * grid + x] + wv) as f32;
            }
        }
    }
    out
}

/// SAM 2's `PositionEmbeddingSine(d_model, normalize, temperature)` for an `h × w` level,
/// NCHW `[d_model, h, w]`: channels `0..d/2` encode y, `d/2..d` encode x, alternating sin/cos.
pub fn sine_pe(d_model: usize, h: usize, w: usize, temperature: f64, normalize: bool) -> Vec<f32> {
    let npf = d_model / 2;
    let mut out = vec![0.0f32; d_model * h * w];
    // The reference computes in f32; mirror its rounding of the positions and the frequencies.
    let dim_t: Vec<f32> = (0..npf).map(|k| (temperature as f32).powf((2 * (k / 2)) as f32 / npf as f32)).collect();
    let eps = 1e-6f32;
    let scale = (2.0 * PI) as f32;
    let pos = |i: usize, n: usize| -> f32 {
        let v = (i + 1) as f32;
        if normalize { v / (n as f32 + eps) * scale } else { v }
    };
    for y in 0..h {
        for x in 0..w {
            let (py, px) = (pos(y, h), pos(x, w));
            for k in 0..npf {
                let (vy, vx) = (py / dim_t[k], px / dim_t[k]);
                let (ey, ex) = if k % 2 == 0 { (vy.sin(), vx.sin()) } else { (vy.cos(), vx.cos()) };
                out[(k * h + y) * w + x] = ey;
                out[((npf + k) * h + y) * w + x] = ex;
            }
        }
    }
    out
}

/// SAM4EM memory's fixed 2-D sinusoid `[C, g, g]` over integer pixel indices: channels
/// `0..C/2` encode the row, `C/2..C` the column, with frequencies 10000^(−2k/(C/2)).
pub fn memory_pe(channels: usize, grid: usize) -> Vec<f32> {
    let half = channels / 2;
    let mut out = vec![0.0f32; channels * grid * grid];
    for k in 0..half / 2 {
        let w = 10000f64.powf(-2.0 * k as f64 / half as f64);
        for i in 0..grid {
            let (s, c) = ((i as f64 * w).sin() as f32, (i as f64 * w).cos() as f32);
            for j in 0..grid {
                out[((2 * k) * grid + i) * grid + j] = s;
                out[((2 * k + 1) * grid + i) * grid + j] = c;
                out[((half + 2 * k) * grid + j) * grid + i] = s;
                out[((half + 2 * k + 1) * grid + j) * grid + i] = c;
            }
        }
    }
    out
}

/// SAM's random-Fourier position encoding of points in [0, 1]² (x, y): `[N, 2F]`
/// = `[sin(2π·(2p − 1)·G) ‖ cos(…)]` with `G` `[2, F]`.
pub fn fourier_pe(points_xy: &[[f64; 2]], gaussian: &[f32], feats: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(points_xy.len() * 2 * feats);
    for p in points_xy {
        let (x, y) = (2.0 * p[0] - 1.0, 2.0 * p[1] - 1.0);
        let proj: Vec<f64> =
            (0..feats).map(|f| 2.0 * PI * (x * gaussian[f] as f64 + y * gaussian[feats + f] as f64)).collect();
        out.extend(proj.iter().map(|v| v.sin() as f32));
        out.extend(proj.iter().map(|v| v.cos() as f32));
    }
    out
}

/// `get_dense_pe()`: the Fourier encoding of every cell centre of a `g × g` grid, NCHW
/// `[2F, g, g]`.
pub fn dense_fourier_pe(gaussian: &[f32], feats: usize, grid: usize) -> Vec<f32> {
    let pts: Vec<[f64; 2]> = (0..grid * grid)
        .map(|i| [((i % grid) as f64 + 0.5) / grid as f64, ((i / grid) as f64 + 0.5) / grid as f64])
        .collect();
    let flat = fourier_pe(&pts, gaussian, feats);
    let mut out = vec![0.0f32; 2 * feats * grid * grid];
    for (i, row) in flat.chunks_exact(2 * feats).enumerate() {
        for (ch, v) in row.iter().enumerate() {
            out[ch * grid * grid + i] = *v;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bicubic_same_size_is_identity_and_constant_stays_constant() {
        let data: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let same = bicubic_resize(&data, 1, 3, 4, 3, 4);
        assert!(same.iter().zip(&data).all(|(a, b)| (*a - *b as f64).abs() < 1e-12));
        let up = bicubic_resize(&[2.5; 9], 1, 3, 3, 7, 5);
        assert!(up.iter().all(|v| (v - 2.5).abs() < 1e-12));
    }

    #[test]
    fn memory_pe_row_and_column_halves() {
        let pe = memory_pe(8, 4);
        // Channel 0 is sin(row·1) and does not vary along the row.
        assert_eq!(pe[0], 0.0);
        assert!((pe[4 + 1] - 1f32.sin()).abs() < 1e-7);
        assert!((pe[4 + 2] - 1f32.sin()).abs() < 1e-7);
        // Channel 4 is sin(col·1).
        assert!((pe[4 * 16 + 1] - 1f32.sin()).abs() < 1e-7);
    }
}
