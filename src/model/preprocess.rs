//! Slice preprocessing as the reference does it: OpenCV `INTER_LINEAR` resize of the 8-bit
//! slice to S×S (aspect ratio not kept), nearest resize of label masks, then
//! `(x/255 − 0.485)/0.229` copied into three channels.
//!
//! The resize reproduces OpenCV's fixed-point arithmetic (11-bit coefficients, and the
//! rounding of its SIMD vertical pass), so the model sees the same grey levels the reference
//! saw.

/// Mean and standard deviation the reference normalises with (the same for all channels).
pub const NORM_MEAN: f32 = 0.485;
/// See [`NORM_MEAN`].
pub const NORM_STD: f32 = 0.229;

const COEF_BITS: u32 = 11;
const COEF_SCALE: f32 = (1 << COEF_BITS) as f32;

/// Per output index: source index and the two fixed-point weights, as OpenCV computes them.
fn linear_taps(n_in: usize, n_out: usize) -> Vec<(usize, [i32; 2])> {
    let scale = n_in as f64 / n_out as f64;
    (0..n_out)
        .map(|d| {
            let mut f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let mut s = f.floor() as i64;
            f -= s as f32;
            if s < 0 {
                f = 0.0;
                s = 0;
            }
            if s >= n_in as i64 - 1 {
                f = 0.0;
                s = n_in as i64 - 1;
            }
            let a0 = ((1.0 - f) * COEF_SCALE).round_ties_even() as i32;
            let a1 = (f * COEF_SCALE).round_ties_even() as i32;
            (s as usize, [a0, a1])
        })
        .collect()
}

/// OpenCV `cv::resize(src, (w_out, h_out), INTER_LINEAR)` for an 8-bit single-channel image.
pub fn resize_linear_u8(src: &[u8], w: usize, h: usize, w_out: usize, h_out: usize) -> Vec<u8> {
    assert_eq!(src.len(), w * h, "image buffer does not match {w}×{h}");
    let tx = linear_taps(w, w_out);
    let ty = linear_taps(h, h_out);
    // Horizontal pass into 2^11-scaled integers, one row per source row that is needed.
    let hrow = |y: usize| -> Vec<i32> {
        let row = &src[y * w..(y + 1) * w];
        tx.iter()
            .map(|&(s, [a0, a1])| {
                let next = row[(s + 1).min(w - 1)] as i32;
                row[s] as i32 * a0 + next * a1
            })
            .collect()
    };
    let mut out = vec![0u8; w_out * h_out];
    for (dy, &(sy, [b0, b1])) in ty.iter().enumerate() {
        let r0 = hrow(sy);
        let r1 = hrow((sy + 1).min(h - 1));
        for dx in 0..w_out {
            // OpenCV's vectorised vertical pass: 16-bit high multiplies, then round by 2 bits.
            let t0 = ((r0[dx] >> 4) * b0) >> 16;
            let t1 = ((r1[dx] >> 4) * b1) >> 16;
            out[dy * w_out + dx] = ((t0 + t1 + 2) >> 2).clamp(0, 255) as u8;
        }
    }
    out
}

/// OpenCV `INTER_NEAREST` resize (source index ⌊d·in/out⌋), for label masks.
pub fn resize_nearest_u8(src: &[u8], w: usize, h: usize, w_out: usize, h_out: usize) -> Vec<u8> {
    let (sx, sy) = (w as f64 / w_out as f64, h as f64 / h_out as f64);
    let mut out = vec![0u8; w_out * h_out];
    for y in 0..h_out {
        let iy = ((y as f64 * sy).floor() as usize).min(h - 1);
        for x in 0..w_out {
            let ix = ((x as f64 * sx).floor() as usize).min(w - 1);
            out[y * w_out + x] = src[iy * w + ix];
        }
    }
    out
}

/// The model input for one resized slice: `[3, S, S]` values `(x/255 − 0.485)/0.229`.
pub fn normalise(resized: &[u8]) -> Vec<f32> {
    let one = normalise_one(resized);
    let mut out = Vec::with_capacity(one.len() * 3);
    for _ in 0..3 {
        out.extend_from_slice(&one);
    }
    out
}

/// A window of a slice and where it lands in the model's `S × S` input: `width × height` stack
/// pixels at `(x0, y0)` fill the input's top-left `model_width × model_height` pixels (copied
/// where the two sizes agree, resized otherwise); the rest of the input is padding (zero after
/// normalisation, as SAM pads). A tile of a tiled slice, or a training crop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Left edge in stack pixels.
    pub x0: usize,
    /// Top edge in stack pixels.
    pub y0: usize,
    /// Width covered in stack pixels.
    pub width: usize,
    /// Height covered in stack pixels.
    pub height: usize,
    /// Model pixels the covered width fills.
    pub model_width: usize,
    /// Model pixels the covered height fills.
    pub model_height: usize,
}

impl Window {
    /// The window of `scale` model pixels per stack pixel over a `width × height` slice for a
    /// model input of `input_px`, centred on stack pixel `(cx, cy)` as far as the slice allows
    /// (a slice smaller than the window along an axis is covered whole, and padded).
    pub fn centred(width: usize, height: usize, input_px: usize, scale: f64, cx: usize, cy: usize) -> Self {
        let side = ((input_px as f64 / scale).round() as usize).max(1);
        let axis = |len: usize, c: usize| -> (usize, usize, usize) {
            if len <= side {
                (0, len, ((len as f64 * scale).round() as usize).clamp(1, input_px))
            } else {
                (c.saturating_sub(side / 2).min(len - side), side, input_px)
            }
        };
        let ((x0, w, mw), (y0, h, mh)) = (axis(width, cx), axis(height, cy));
        Window { x0, y0, width: w, height: h, model_width: mw, model_height: mh }
    }

    /// The covered pixels of `plane` (a `slice_width`-wide 8-bit plane), row by row.
    pub fn crop(&self, plane: &[u8], slice_width: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.width * self.height);
        for y in self.y0..self.y0 + self.height {
            out.extend_from_slice(&plane[y * slice_width + self.x0..y * slice_width + self.x0 + self.width]);
        }
        out
    }

    /// `crop` (this window's covered pixels) at the model size, with `resize` where the sizes
    /// differ.
    fn at_model_size(&self, crop: Vec<u8>, resize: fn(&[u8], usize, usize, usize, usize) -> Vec<u8>) -> Vec<u8> {
        if (self.width, self.height) == (self.model_width, self.model_height) {
            crop
        } else {
            resize(&crop, self.width, self.height, self.model_width, self.model_height)
        }
    }

    /// The model image `[S·S]` (one channel of the input) from this window's crop of an 8-bit
    /// image: resized bilinearly (OpenCV's) where needed, normalised, 0 in the padding.
    pub fn model_image(&self, crop: Vec<u8>, input_px: usize) -> Vec<f32> {
        let content = self.at_model_size(crop, resize_linear_u8);
        let one = normalise_one(&content);
        let mut out = vec![0.0f32; input_px * input_px];
        for y in 0..self.model_height {
            out[y * input_px..y * input_px + self.model_width]
                .copy_from_slice(&one[y * self.model_width..(y + 1) * self.model_width]);
        }
        out
    }

    /// The model mask `[S·S]` (0/1) from this window's crop of a 0/1 mask: nearest-neighbour
    /// resized where needed, 0 in the padding.
    pub fn model_mask(&self, crop: Vec<u8>, input_px: usize) -> Vec<u8> {
        let content = self.at_model_size(crop, resize_nearest_u8);
        let mut out = vec![0u8; input_px * input_px];
        for y in 0..self.model_height {
            out[y * input_px..y * input_px + self.model_width]
                .copy_from_slice(&content[y * self.model_width..(y + 1) * self.model_width]);
        }
        out
    }
}

/// One channel of [`normalise`].
pub fn normalise_one(resized: &[u8]) -> Vec<f32> {
    resized.iter().map(|&v| (v as f32 / 255.0 - NORM_MEAN) / NORM_STD).collect()
}

/// Resize + normalise an 8-bit slice of `w × h` to the `[3, S, S]` model input.
pub fn preprocess_u8(src: &[u8], w: usize, h: usize, size: usize) -> Vec<f32> {
    normalise(&resize_linear_u8(src, w, h, size, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_size_is_a_copy_and_constant_stays_constant() {
        let src: Vec<u8> = (0..64).map(|v| (v * 3) as u8).collect();
        assert_eq!(resize_linear_u8(&src, 8, 8, 8, 8), src);
        assert!(resize_linear_u8(&[77; 30], 6, 5, 13, 7).iter().all(|&v| v == 77));
    }
}
