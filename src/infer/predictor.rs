//! The predictor: runs the planned passes with one encoder pass per slice for every class,
//! keeps recent slice embeddings for click refinement and repeated passes, and returns
//! full-resolution probabilities.

use std::num::NonZeroUsize;
use std::ops::Range;
use std::time::Instant;

use burn::tensor::{Tensor, TensorData};
use lru::LruCache;

use super::plan::{Pass, plan_passes};
use crate::model::multi::{MultiModel, sigmoid};
use crate::model::preprocess::{preprocess_u8, resize_nearest_u8};
use crate::model::prompt::{BoxPrompt, PointPrompt};
use crate::model::{SliceOutput, StreamMode};
use crate::state::bitplane::BitPlane;

/// A slice with a person's masks: where streaming starts.
#[derive(Clone, Debug)]
pub struct Seed {
    /// Slice index.
    pub z: usize,
    /// One mask per model class (in the model's class order); `None` prompts that class with
    /// an empty mask.
    pub masks: Vec<Option<BitPlane>>,
}

/// What to predict.
#[derive(Clone, Debug)]
pub struct StackRequest {
    /// Slice width in pixels.
    pub width: usize,
    /// Slice height in pixels.
    pub height: usize,
    /// Slices to predict.
    pub range: Range<usize>,
    /// The slice on screen (predicted as early as the plan allows).
    pub visible: usize,
    /// Slices with a person's masks.
    pub seeds: Vec<Seed>,
    /// Farthest a seed may be from the slices it serves (see [`plan_passes`]).
    pub max_warmup_slices: usize,
}

/// One predicted slice.
#[derive(Clone, Debug, PartialEq)]
pub struct SlicePrediction {
    /// Slice index.
    pub z: usize,
    /// Per class (model order), `width × height` probabilities scaled to 0–255 (the reported
    /// prediction is `p > cross_batch_threshold`, 0.4 in SAM4EM).
    pub probabilities: Vec<Vec<u8>>,
}

/// How far a request has come.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Progress {
    /// Slices reported so far.
    pub done: usize,
    /// Slices the request reports in all.
    pub total: usize,
    /// Seconds since the request started.
    pub elapsed_s: f64,
}

impl Progress {
    /// Throughput so far.
    pub fn slices_per_s(&self) -> f64 {
        if self.elapsed_s > 0.0 { self.done as f64 / self.elapsed_s } else { 0.0 }
    }

    /// Estimated seconds left at the current throughput.
    pub fn eta_s(&self) -> Option<f64> {
        let rate = self.slices_per_s();
        (rate > 0.0).then(|| (self.total - self.done) as f64 / rate)
    }
}

/// What the caller wants after a slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Go on.
    Continue,
    /// Stop (cancelled or superseded).
    Stop,
}

/// Why a prediction failed.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// A slice image could not be read.
    #[error("cannot read slice {z} for prediction: {reason}")]
    Image {
        /// Slice index.
        z: usize,
        /// Why.
        reason: String,
    },
    /// A seed mask has the wrong size or class count.
    #[error("seed mask of slice {z} does not fit the stack ({reason})")]
    Seed {
        /// Slice index.
        z: usize,
        /// Why.
        reason: String,
    },
}

/// Source of 8-bit slice images (`width × height`, see [`super::slice_to_u8`]).
pub type ImageFetch<'a> = dyn FnMut(usize) -> Result<Vec<u8>, String> + 'a;

/// Runs a [`MultiModel`] (with merged LoRA) over stacks.
pub struct Predictor {
    model: MultiModel,
    embeddings: LruCache<usize, Tensor<4>>,
}

impl Predictor {
    /// Wraps `model` (merged here for speed; the caller keeps the unmerged one), keeping the
    /// embeddings of the last `cached_slices` slices.
    pub fn new(model: &MultiModel, cached_slices: usize) -> Self {
        Predictor {
            model: model.merged(),
            embeddings: LruCache::new(NonZeroUsize::new(cached_slices.max(1)).expect("at least one")),
        }
    }

    /// The model in use.
    pub fn model(&self) -> &MultiModel {
        &self.model
    }

    /// Forgets cached embeddings (the image or the model changed).
    pub fn clear_cache(&mut self) {
        self.embeddings.clear();
    }

    /// The embedding of slice `z`, from the cache or one encoder pass.
    fn embedding(
        &mut self,
        z: usize,
        width: usize,
        height: usize,
        fetch: &mut ImageFetch<'_>,
    ) -> Result<Tensor<4>, InferError> {
        if let Some(t) = self.embeddings.get(&z) {
            return Ok(t.clone());
        }
        let image = fetch(z).map_err(|reason| InferError::Image { z, reason })?;
        if image.len() != width * height {
            return Err(InferError::Image {
                z, reason: format!("{} samples, expected {width}×{height}", image.len())
            });
        }
        let s = self.model.config().image_size;
        let x = Tensor::from_data(
            TensorData::new(preprocess_u8(&image, width, height, s), [1, 3, s, s]),
            &self.model.device(),
        );
        let fused = self.model.embed(x);
        self.embeddings.put(z, fused.clone());
        Ok(fused)
    }

    fn mask_tensor(&self, mask: &BitPlane) -> Tensor<4> {
        let s = self.model.config().image_size;
        let (w, h) = (mask.width(), mask.height());
        let mut bytes = vec![0u8; w * h];
        for y in 0..h {
            for x in 0..w {
                bytes[y * w + x] = u8::from(mask.get(x, y));
            }
        }
        let resized: Vec<f32> = resize_nearest_u8(&bytes, w, h, s, s).into_iter().map(f32::from).collect();
        Tensor::from_data(TensorData::new(resized, [1, 1, s, s]), &self.model.device())
    }

    fn probabilities(&self, outs: &[SliceOutput], width: usize, height: usize) -> Vec<Vec<u8>> {
        let s = self.model.config().image_size;
        let logits: Vec<Tensor<4>> = outs.iter().map(|o| self.model.reported_logits(o).0).collect();
        // One read-back for every class.
        let host = Tensor::cat(logits, 0).into_data().convert::<f32>().try_into_vec::<f32>().unwrap_or_default();
        host.chunks(s * s)
            .map(|l| {
                let p: Vec<f32> = l.iter().map(|&v| sigmoid(v)).collect();
                super::resize_bilinear_f32(&p, s, s, width, height)
                    .into_iter()
                    .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
                    .collect()
            })
            .collect()
    }

    /// Predicts `request.range`, calling `on_slice` after each reported slice (in decoding
    /// order); `on_slice` returning [`Flow::Stop`] ends the request early. Returns whether it
    /// ran to the end.
    pub fn predict(
        &mut self,
        request: &StackRequest,
        fetch: &mut ImageFetch<'_>,
        on_slice: &mut dyn FnMut(SlicePrediction, Progress) -> Flow,
    ) -> Result<bool, InferError> {
        let classes = self.model.heads.len();
        for seed in &request.seeds {
            if seed.masks.len() != classes {
                return Err(InferError::Seed {
                    z: seed.z,
                    reason: format!("{} masks for {classes} classes", seed.masks.len()),
                });
            }
            if let Some(m) =
                seed.masks.iter().flatten().find(|m| (m.width(), m.height()) != (request.width, request.height))
            {
                return Err(InferError::Seed {
                    z: seed.z,
                    reason: format!(
                        "{}×{} mask on a {}×{} stack",
                        m.width(),
                        m.height(),
                        request.width,
                        request.height
                    ),
                });
            }
        }
        let seed_z: Vec<usize> = request.seeds.iter().map(|s| s.z).collect();
        let passes = plan_passes(request.range.clone(), &seed_z, request.visible, request.max_warmup_slices);
        let total: usize = passes.iter().map(|p| p.reported().len()).sum();
        let start = Instant::now();
        let mut done = 0;
        for pass in &passes {
            if !self.run_pass(pass, request, fetch, &mut |prediction| {
                done += 1;
                on_slice(prediction, Progress { done, total, elapsed_s: start.elapsed().as_secs_f64() })
            })? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn run_pass(
        &mut self,
        pass: &Pass,
        request: &StackRequest,
        fetch: &mut ImageFetch<'_>,
        on_slice: &mut dyn FnMut(SlicePrediction) -> Flow,
    ) -> Result<bool, InferError> {
        let classes = self.model.heads.len();
        let seeds: Vec<Option<Tensor<4>>> = match pass.seed.and_then(|z| request.seeds.iter().find(|s| s.z == z)) {
            Some(seed) => seed.masks.iter().map(|m| m.as_ref().map(|m| self.mask_tensor(m))).collect(),
            None => vec![None; classes],
        };
        let mut states = self.model.start_streams(seeds);
        for (i, &z) in pass.order.iter().enumerate() {
            let fused = self.embedding(z, request.width, request.height, fetch)?;
            let outs = self.model.stream_step(fused, &mut states, StreamMode::Clean);
            if i >= pass.warmup {
                let probabilities = self.probabilities(&outs, request.width, request.height);
                if on_slice(SlicePrediction { z, probabilities }) == Flow::Stop {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Refines class `class` on slice `z` with clicks and boxes (slice pixel coordinates) from
    /// the cached embedding: SAM's point/box prompting on the class's decoders, with `prior`
    /// (e.g. the current prediction) as the dense mask prompt. Returns `width × height`
    /// probabilities scaled to 0–255.
    #[allow(clippy::too_many_arguments)]
    pub fn refine(
        &mut self,
        z: usize,
        class: usize,
        points: &[PointPrompt],
        boxes: &[BoxPrompt],
        prior: Option<&BitPlane>,
        (width, height): (usize, usize),
        fetch: &mut ImageFetch<'_>,
    ) -> Result<Vec<u8>, InferError> {
        let fused = self.embedding(z, width, height, fetch)?;
        let s = self.model.config().image_size as f64;
        let (sx, sy) = (s / width as f64, s / height as f64);
        let points: Vec<PointPrompt> =
            points.iter().map(|p| PointPrompt { x_px: (p.x_px + 0.5) * sx, y_px: (p.y_px + 0.5) * sy, ..*p }).collect();
        let boxes: Vec<BoxPrompt> = boxes
            .iter()
            .map(|b| BoxPrompt {
                x0_px: b.x0_px * sx,
                y0_px: b.y0_px * sy,
                x1_px: (b.x1_px + 1.0) * sx,
                y1_px: (b.y1_px + 1.0) * sy,
            })
            .collect();
        let head = &self.model.heads[class].model;
        let g = self.model.config().grid();
        let sparse = head.prompt_encoder.embed_sparse(&points, &boxes);
        let dense = match prior {
            Some(m) => head.prompt_encoder.embed_mask(self.mask_tensor(m)),
            None => head.prompt_encoder.no_mask_dense(1, g),
        };
        let d1 = head.mask_decoder.forward(fused.clone(), &head.image_pe, Some(sparse.clone()), dense.clone(), None);
        let d2 = head.mask_decoder2.forward(fused, &head.image_pe, Some(sparse), dense, Some(d1.upscaled.clone()));
        let out = SliceOutput {
            logits1: d1.logits,
            logits2: d2.logits,
            dense: Tensor::zeros([1, 1, 1, 1], &self.model.device()),
            enhanced: Tensor::zeros([1, 1, 1, 1], &self.model.device()),
            upscaled1: d1.upscaled,
            tokens1: d1.tokens,
            keys1: d1.keys,
        };
        Ok(self.probabilities(&[out], width, height).remove(0))
    }
}
