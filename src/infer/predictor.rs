//! The predictor: runs the planned passes with one encoder pass per slice for every class (on
//! a GPU one pass per batch of the plan's next slices), keeps recent slice embeddings for click
//! refinement and repeated passes, and returns full-resolution probabilities.

use std::future::Future;
use std::num::NonZeroUsize;
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use burn::tensor::{ExecutionError, Tensor, TensorData};
use lru::LruCache;

use super::plan::{Pass, plan_passes};
use crate::model::multi::{HeadIndex, MultiModel};
use crate::model::nn::BilinearResize;
use crate::model::preprocess::{preprocess_u8, resize_nearest_u8};
use crate::model::prompt::{BoxPrompt, PointPrompt};
use crate::model::{SliceOutput, StreamMode};
use crate::state::SliceIndex;
use crate::state::bitplane::BitPlane;

/// A slice with a person's masks: where streaming starts.
#[derive(Clone, Debug)]
pub struct Seed {
    /// The slice.
    pub z: SliceIndex,
    /// One mask per head ([`HeadIndex`] order); `None` prompts that class with an empty mask.
    pub masks: Vec<Option<BitPlane>>,
}

/// What to predict.
#[derive(Clone, Debug)]
pub struct StackRequest {
    /// Slice width in pixels.
    pub width: usize,
    /// Slice height in pixels.
    pub height: usize,
    /// Slices to predict (slice indices).
    pub range: Range<usize>,
    /// The slice on screen (predicted as early as the plan allows).
    pub visible: SliceIndex,
    /// Slices with a person's masks.
    pub seeds: Vec<Seed>,
    /// Farthest a seed may be from the slices it serves (see [`plan_passes`]).
    pub max_warmup_slices: usize,
}

/// One predicted slice.
#[derive(Clone, Debug, PartialEq)]
pub struct SlicePrediction {
    /// The slice.
    pub z: SliceIndex,
    /// Per head ([`HeadIndex`] order), `width × height` probabilities scaled to 0–255 (the reported
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
        /// The slice.
        z: SliceIndex,
        /// Why.
        reason: String,
    },
    /// A seed mask has the wrong size or class count.
    #[error("seed mask of slice {z} does not fit the stack ({reason})")]
    Seed {
        /// The slice.
        z: SliceIndex,
        /// Why.
        reason: String,
    },
}

/// Source of 8-bit slice images (`width × height`, see [`super::slice_to_u8`]).
pub type ImageFetch<'a> = dyn FnMut(SliceIndex) -> Result<Vec<u8>, String> + 'a;

/// Slices one encoder pass embeds on a GPU: the next slices of the streaming plan go through
/// the encoder together, which keeps a GPU busier than one 512² image does. 4 B+ images at 512²
/// add well under 1 GiB of activations at inference.
pub const GPU_ENCODER_BATCH: usize = 4;

/// Runs a [`MultiModel`] (with merged LoRA) over stacks.
pub struct Predictor {
    model: MultiModel,
    embeddings: LruCache<usize, Tensor<4>>,
    /// Slices embedded per encoder pass (see [`Predictor::with_encoder_batch`]).
    encoder_batch: usize,
    /// Whether sigmoid, the resize to the slice's size and the scaling to 0–255 run on the
    /// model's device (GPU) or on the host (CPU backend, where both are the same cores).
    post_on_device: bool,
    /// The device-side resize for the last slice size, `(width, height)`.
    resize: Option<((usize, usize), BilinearResize)>,
}

impl Predictor {
    /// Wraps `model` (merged here for speed; the caller keeps the unmerged one), keeping the
    /// embeddings of the last `cached_slices` slices. The encoder batch is
    /// [`GPU_ENCODER_BATCH`] on a GPU and 1 on the CPU, where a batch is no faster per slice
    /// (the cores are busy with one image) and only costs memory.
    pub fn new(model: &MultiModel, cached_slices: usize) -> Self {
        let batch = if crate::model::device::is_cpu(&model.device()) { 1 } else { GPU_ENCODER_BATCH };
        Self::with_encoder_batch(model, cached_slices, batch)
    }

    /// As [`Predictor::new`], embedding up to `encoder_batch` slices per encoder pass: when a
    /// slice's embedding is needed, it and the next slices of the pass that are not cached yet
    /// are embedded together (the cache grows to hold them).
    pub fn with_encoder_batch(model: &MultiModel, cached_slices: usize, encoder_batch: usize) -> Self {
        let encoder_batch = encoder_batch.max(1);
        Predictor {
            model: model.merged(),
            embeddings: LruCache::new(NonZeroUsize::new(cached_slices.max(encoder_batch)).expect("at least one")),
            encoder_batch,
            post_on_device: !crate::model::device::is_cpu(&model.device()),
            resize: None,
        }
    }

    /// Runs sigmoid, the resize to the slice's size and the scaling to 0–255 on the model's
    /// device (the default on a GPU: only the full-size probabilities come back, and the host
    /// has nothing left to compute) or on the host (the default on the CPU backend). The
    /// results agree to rounding (a test holds them to ±1 of 255).
    pub fn post_process_on_device(mut self, on_device: bool) -> Self {
        self.post_on_device = on_device;
        self
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
        self.embedding_ahead(&[z], width, height, fetch)
    }

    /// The embedding of `upcoming[0]`, from the cache or from one encoder pass that also embeds
    /// the next slices of `upcoming` not cached yet, up to the encoder batch.
    fn embedding_ahead(
        &mut self,
        upcoming: &[usize],
        width: usize,
        height: usize,
        fetch: &mut ImageFetch<'_>,
    ) -> Result<Tensor<4>, InferError> {
        let z = upcoming[0];
        if let Some(t) = self.embeddings.get(&z) {
            return Ok(t.clone());
        }
        let mut batch: Vec<usize> = Vec::with_capacity(self.encoder_batch);
        for &next in upcoming {
            if batch.len() == self.encoder_batch {
                break;
            }
            if !batch.contains(&next) && !self.embeddings.contains(&next) {
                batch.push(next);
            }
        }
        let s = self.model.config().image_size;
        let mut pixels = Vec::with_capacity(batch.len() * 3 * s * s);
        for i in 0..batch.len() {
            let b = batch[i];
            let image = fetch(SliceIndex(b)).map_err(|reason| InferError::Image { z: SliceIndex(b), reason }).and_then(
                |image| {
                    if image.len() == width * height {
                        Ok(image)
                    } else {
                        Err(InferError::Image {
                            z: SliceIndex(b),
                            reason: format!("{} samples, expected {width}×{height}", image.len()),
                        })
                    }
                },
            );
            match image {
                Ok(image) => pixels.extend(preprocess_u8(&image, width, height, s)),
                // A slice read ahead that cannot be read fails when its turn comes, not now.
                Err(_) if i > 0 => {
                    batch.truncate(i);
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        let x = Tensor::from_data(TensorData::new(pixels, [batch.len(), 3, s, s]), &self.model.device());
        let fused = self.model.embed(x);
        // `z` is not cached (see above), so it went into the batch first.
        for (i, &b) in batch.iter().enumerate() {
            self.embeddings.put(b, fused.clone().narrow(0, i, 1));
        }
        Ok(fused.narrow(0, 0, 1))
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

    /// Starts turning a slice's outputs into `width × height` probabilities scaled to 0–255, one
    /// map per class; [`Pending::finish`] waits for them. On the device path the read-back is
    /// started here and the caller queues the next slice's work before waiting, so that the
    /// copy and the host's share overlap that work.
    fn start_probabilities(&mut self, outs: &[SliceOutput], width: usize, height: usize) -> Pending {
        let s = self.model.config().image_size;
        let logits: Vec<Tensor<4>> = outs.iter().map(|o| self.model.reported_logits(o).0).collect();
        let logits = Tensor::cat(logits, 0);
        if self.post_on_device {
            let device = self.model.device();
            let resize = match &self.resize {
                Some((size, r)) if *size == (width, height) => r.clone(),
                _ => {
                    let r = BilinearResize::new(s, s, height, width, &device);
                    self.resize = Some(((width, height), r.clone()));
                    r
                }
            };
            return Pending::read(scaled_on_device(logits, &resize), width * height);
        }
        Pending::Ready(probabilities_on_host(logits, width, height))
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
        let seed_z: Vec<usize> = request.seeds.iter().map(|s| s.z.0).collect();
        let passes = plan_passes(request.range.clone(), &seed_z, request.visible.0, request.max_warmup_slices);
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
        let seeds: Vec<Option<Tensor<4>>> = match pass.seed.and_then(|z| request.seeds.iter().find(|s| s.z.0 == z)) {
            Some(seed) => seed.masks.iter().map(|m| m.as_ref().map(|m| self.mask_tensor(m))).collect(),
            None => vec![None; classes],
        };
        let mut states = self.model.start_streams(seeds);
        // A slice whose probabilities are still being read back: reported once the next slice's
        // work is queued behind the read.
        let mut reading: Option<(usize, Pending)> = None;
        for (i, &z) in pass.order.iter().enumerate() {
            let fused = self.embedding_ahead(&pass.order[i..], request.width, request.height, fetch)?;
            let outs = self.model.stream_step(fused, &mut states, StreamMode::Clean);
            if let Some((previous, pending)) = reading.take()
                && on_slice(SlicePrediction { z: SliceIndex(previous), probabilities: pending.finish() }) == Flow::Stop
            {
                return Ok(false);
            }
            if i >= pass.warmup {
                match self.start_probabilities(&outs, request.width, request.height) {
                    pending @ Pending::Reading { .. } => reading = Some((z, pending)),
                    ready => {
                        if on_slice(SlicePrediction { z: SliceIndex(z), probabilities: ready.finish() }) == Flow::Stop {
                            return Ok(false);
                        }
                    }
                }
            }
        }
        if let Some((previous, pending)) = reading
            && on_slice(SlicePrediction { z: SliceIndex(previous), probabilities: pending.finish() }) == Flow::Stop
        {
            return Ok(false);
        }
        Ok(true)
    }

    /// Refines head `class` on slice `z` with clicks and boxes (slice pixel coordinates) from
    /// the cached embedding: SAM's point/box prompting on the class's decoders, with `prior`
    /// (e.g. the current prediction) as the dense mask prompt. Returns `width × height`
    /// probabilities scaled to 0–255.
    #[allow(clippy::too_many_arguments)]
    pub fn refine(
        &mut self,
        z: SliceIndex,
        class: HeadIndex,
        points: &[PointPrompt],
        boxes: &[BoxPrompt],
        prior: Option<&BitPlane>,
        (width, height): (usize, usize),
        fetch: &mut ImageFetch<'_>,
    ) -> Result<Vec<u8>, InferError> {
        let fused = self.embedding(z.0, width, height, fetch)?;
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
        let head = &self.model.heads[class.0].model;
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
        Ok(self.start_probabilities(&[out], width, height).finish().remove(0))
    }
}

/// Sigmoid, resize (with `resize`, to the slice's size), clamp and scaling to 0–255, rounded,
/// on the logits' device: `[C, 1, S, S]` logits → `[C, 1, height, width]` values 0–255 as
/// floats, ready to read back.
fn scaled_on_device(logits: Tensor<4>, resize: &BilinearResize) -> Tensor<4> {
    resize.forward(burn::tensor::activation::sigmoid(logits)).clamp(0.0, 1.0).mul_scalar(255.0).round()
}

/// `[C, 1, S, S]` logits → one `width × height` map of probabilities scaled to 0–255 per class,
/// computed on the logits' device and read back (the GPU path of [`Predictor`]).
pub fn probabilities_on_device(logits: Tensor<4>, width: usize, height: usize) -> Vec<Vec<u8>> {
    let [_, _, h, w] = logits.dims();
    let resize = BilinearResize::new(h, w, height, width, &logits.device());
    Pending::read(scaled_on_device(logits, &resize), width * height).finish()
}

/// As [`probabilities_on_device`], with the logits read back first and the rest computed on the
/// host (the CPU backend's path of [`Predictor`]).
pub fn probabilities_on_host(logits: Tensor<4>, width: usize, height: usize) -> Vec<Vec<u8>> {
    let [_, _, h, w] = logits.dims();
    let host = logits.into_data().convert::<f32>().try_into_vec::<f32>().unwrap_or_default();
    host.chunks((h * w).max(1))
        .map(|l| {
            let p: Vec<f32> = l.iter().map(|&v| sigmoid(v)).collect();
            super::resize_bilinear_f32(&p, w, h, width, height)
                .into_iter()
                .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
                .collect()
        })
        .collect()
}

/// Probabilities on their way to the host (see [`Predictor::start_probabilities`]).
enum Pending {
    /// Computed on the host already.
    Ready(Vec<Vec<u8>>),
    /// Being read back from the device: the maps, `pixels` values per class, 0–255 as floats.
    Reading { read: Pin<Box<dyn Future<Output = Result<TensorData, ExecutionError>> + Send>>, pixels: usize },
}

impl Pending {
    /// Starts reading `scaled` back. The read-back future is polled once here, which asks the
    /// device for the copy now (burn's futures do nothing until polled) instead of when the
    /// caller waits for it.
    fn read(scaled: Tensor<4>, pixels: usize) -> Self {
        let mut read = Box::pin(scaled.into_data_async());
        match read.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(data) => Pending::Reading { read: Box::pin(std::future::ready(data)), pixels },
            Poll::Pending => Pending::Reading { read, pixels },
        }
    }

    /// Waits for the maps (one per class). A failed read-back gives empty maps, as a failed
    /// synchronous read did.
    fn finish(self) -> Vec<Vec<u8>> {
        match self {
            Pending::Ready(maps) => maps,
            Pending::Reading { read, pixels } => {
                let host = pollster::block_on(read)
                    .ok()
                    .and_then(|d| d.convert::<f32>().try_into_vec::<f32>().ok())
                    .unwrap_or_default();
                host.chunks(pixels.max(1)).map(|c| c.iter().map(|&v| v as u8).collect()).collect()
            }
        }
    }
}

/// A probability from a logit, on the host.
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}
