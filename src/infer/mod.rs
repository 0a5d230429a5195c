//! Inference over a stack: which slices to predict in which order (streaming passes that
//! start at the slices a person corrected or accepted and run outwards in both z directions),
//! the model input for any sample type, the predictor that runs one encoder pass per slice for
//! every class (or per tile, at a chosen scale) and turns logits into full-resolution
//! probabilities, click refinement from
//! cached embeddings, and the `inference` worker thread the app talks to.
//!
//! Depends on `model`, `state` and `worker`; knows nothing of the UI or the renderer.

pub mod plan;
pub mod predictor;
pub mod tile;
pub mod worker;

pub use plan::{Pass, plan_passes};
pub use predictor::{
    FillIn, Flow, InferError, Predictor, Progress, Prompts, RefineTarget, Seed, SlicePrediction, StackRequest,
    probabilities_on_device, probabilities_on_host,
};
pub use tile::{Scale, TileGrid};

use std::sync::{Arc, OnceLock};

use crate::state::{Slice, SliceData, SliceIndex, Volume};
use crate::worker::SharedImages;

/// A stack's slices as the model sees them, the one way the app and the command line prepare
/// them: one intensity window for the whole stack ([`model_window`] of the middle slice,
/// worked out on first use, so on a worker thread), every slice mapped with it
/// ([`slice_to_u8`]).
pub struct ModelImages {
    volume: Arc<Volume>,
    window: OnceLock<Result<Option<(f64, f64)>, String>>,
}

impl ModelImages {
    /// The images of `volume`.
    pub fn new(volume: Arc<Volume>) -> Self {
        Self { volume, window: OnceLock::new() }
    }

    /// The stack-wide window (`None` for 8-bit stacks); an error names the middle slice when
    /// it cannot be read.
    pub fn window(&self) -> Result<Option<(f64, f64)>, String> {
        self.window
            .get_or_init(|| {
                let middle = SliceIndex(self.volume.depth() / 2);
                let slice = self.volume.slice(middle).map_err(|e| {
                    format!("cannot read slice {middle}, which sets the stack's intensity window for the model: {e}")
                })?;
                Ok(model_window(&slice))
            })
            .clone()
    }

    /// Slice `z` as the model's 8-bit image (`width × height`).
    pub fn image(&self, z: SliceIndex) -> Result<Vec<u8>, String> {
        let window = self.window()?;
        let slice = self.volume.slice(z).map_err(|e| e.to_string())?;
        Ok(slice_to_u8(&slice, window))
    }

    /// The same for a worker thread.
    pub fn shared(self) -> SharedImages {
        Arc::new(move |z| self.image(z))
    }
}

/// The 8-bit image the model sees for a slice. 8-bit stacks go in unchanged (what the
/// reference trains on); other sample types are mapped linearly from `window` (low, high) to
/// 0–255, so one stack-wide window keeps every slice on the same scale.
pub fn slice_to_u8(slice: &Slice, window: Option<(f64, f64)>) -> Vec<u8> {
    let map = |v: f64, (lo, hi): (f64, f64)| -> u8 {
        if !v.is_finite() {
            return 0;
        }
        let t = if hi > lo { (v - lo) / (hi - lo) } else { 0.0 };
        (t.clamp(0.0, 1.0) * 255.0).round() as u8
    };
    match (&slice.data, window) {
        (SliceData::U8(v), _) => v.clone(),
        (data, w) => {
            let w = w.unwrap_or((0.0, 255.0));
            (0..data.len()).map(|i| map(data.value_f64(i), w)).collect()
        }
    }
}

/// The window [`slice_to_u8`] uses for a stack: none for 8-bit data, else the auto-contrast
/// percentiles of a reference slice (the middle one, usually).
pub fn model_window(reference: &Slice) -> Option<(f64, f64)> {
    match reference.data {
        SliceData::U8(_) => None,
        ref data => {
            let (lo, hi) = crate::state::view::AUTO_CONTRAST_PERCENTILES;
            crate::state::view::percentile_window(data, lo, hi)
        }
    }
}

/// Bilinear resize of a row-major `f32` image (half-pixel centres, edge clamped), used to bring
/// S×S probabilities back to the slice size.
pub fn resize_bilinear_f32(src: &[f32], w: usize, h: usize, w_out: usize, h_out: usize) -> Vec<f32> {
    assert_eq!(src.len(), w * h, "image buffer does not match {w}×{h}");
    let taps = |n_in: usize, n_out: usize| -> Vec<(usize, usize, f32)> {
        let scale = n_in as f64 / n_out as f64;
        (0..n_out)
            .map(|d| {
                let f = ((d as f64 + 0.5) * scale - 0.5).max(0.0);
                let i0 = (f.floor() as usize).min(n_in - 1);
                let i1 = (i0 + 1).min(n_in - 1);
                (i0, i1, (f - i0 as f64).clamp(0.0, 1.0) as f32)
            })
            .collect()
    };
    let tx = taps(w, w_out);
    let ty = taps(h, h_out);
    let mut out = Vec::with_capacity(w_out * h_out);
    for &(y0, y1, fy) in &ty {
        let (r0, r1) = (&src[y0 * w..(y0 + 1) * w], &src[y1 * w..(y1 + 1) * w]);
        for &(x0, x1, fx) in &tx {
            let top = r0[x0] + (r0[x1] - r0[x0]) * fx;
            let bottom = r1[x0] + (r1[x1] - r1[x0]) * fx;
            out.push(top + (bottom - top) * fy);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilinear_keeps_constants_and_interpolates_between_pixels() {
        assert!(resize_bilinear_f32(&[0.25; 4], 2, 2, 5, 3).iter().all(|&v| (v - 0.25).abs() < 1e-6));
        let up = resize_bilinear_f32(&[0.0, 1.0], 2, 1, 4, 1);
        assert_eq!(up, vec![0.0, 0.25, 0.75, 1.0]);
    }

    #[test]
    fn sixteen_bit_slices_map_through_the_window() {
        let s = Slice { width: 3, height: 1, data: SliceData::U16(vec![100, 300, 500]) };
        assert_eq!(slice_to_u8(&s, Some((100.0, 500.0))), vec![0, 128, 255]);
        let s = Slice { width: 2, height: 1, data: SliceData::U8(vec![7, 9]) };
        assert_eq!(slice_to_u8(&s, Some((0.0, 1.0))), vec![7, 9]);
    }
}
