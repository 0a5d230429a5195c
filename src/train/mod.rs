//! Fine-tuning: training samples made from a person's corrections (image, per-class labels
//! and which pixels the person vouched for), the bounded queue they wait in, and the training
//! loop (burn autodiff, AdamW, the reference's BCE + Dice loss restricted to vouched pixels,
//! batches of consecutive slices with the slice memory carried through them), with held-out
//! Dice, pause/stop and a guard that keeps the last good weights when the loss or the weights
//! turn NaN (every update is checked, the last one included).
//!
//! Depends on `model` and `state`; knows nothing of the UI.

pub mod memory;
pub mod worker;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use burn::tensor::{Tensor, TensorData};

use crate::model::adapter::BaseCheckpoint;
use crate::model::adapter::{AdapterSet, AdapterSetMeta, SET_FORMAT, SET_FORMAT_VERSION, TrainingRecord, in_adapter};
use crate::model::backprop::{Activations, batch_gradients};
use crate::model::config::OptimizerConfig;
use crate::model::loss::masked_sam4em_loss;
use crate::model::metrics::Overlap;
use crate::model::multi::{MultiModel, is_shared};
use crate::model::optim::{AdamW, prepare_for_training};
use crate::model::preprocess::Window;
use crate::model::{StreamMode, sam4em::logit};
use crate::state::SliceIndex;
use crate::state::bitplane::BitPlane;
use crate::state::scale::Scale;

/// One slice to learn from.
#[derive(Clone, Debug)]
pub struct TrainSample {
    /// The slice in the stack.
    pub z: SliceIndex,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// The 8-bit image the model sees (see `infer::slice_to_u8`).
    pub image: Arc<Vec<u8>>,
    /// Per class (model order): the mask.
    pub labels: Vec<BitPlane>,
    /// Per class: the pixels a person vouched for (drew, erased, passed over, or the whole
    /// slice once accepted). Only these count in the loss.
    pub vouched: Vec<BitPlane>,
}

impl TrainSample {
    /// Whether any class has a vouched pixel.
    pub fn has_vouched_pixels(&self) -> bool {
        self.vouched.iter().any(|v| !v.is_empty())
    }
}

/// Corrected slices waiting for the next training run: one sample per slice (a newer
/// correction replaces the older one), at most `capacity`; the oldest leave first.
#[derive(Clone, Debug)]
pub struct SampleQueue {
    capacity: usize,
    samples: VecDeque<TrainSample>,
}

impl SampleQueue {
    /// An empty queue holding at most `capacity` slices.
    pub fn new(capacity: usize) -> Self {
        SampleQueue { capacity: capacity.max(1), samples: VecDeque::new() }
    }

    /// Adds or replaces the sample of `sample.z`; returns the slice that had to leave, if any.
    pub fn push(&mut self, sample: TrainSample) -> Option<SliceIndex> {
        self.samples.retain(|s| s.z != sample.z);
        self.samples.push_back(sample);
        (self.samples.len() > self.capacity).then(|| self.samples.pop_front().map(|s| s.z)).flatten()
    }

    /// Removes slice `z`.
    pub fn remove(&mut self, z: SliceIndex) {
        self.samples.retain(|s| s.z != z);
    }

    /// Slices queued, in stack order.
    pub fn slices(&self) -> Vec<SliceIndex> {
        let mut z: Vec<SliceIndex> = self.samples.iter().map(|s| s.z).collect();
        z.sort_unstable();
        z
    }

    /// Number of slices queued.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The samples, in stack order.
    pub fn samples(&self) -> Vec<TrainSample> {
        let mut v: Vec<TrainSample> = self.samples.iter().cloned().collect();
        v.sort_by_key(|s| s.z);
        v
    }
}

/// Learning-rate schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Schedule {
    /// The same rate every epoch (the app's short runs).
    Constant,
    /// The reference's linear warm-up then cosine decay over the run, with its off-by-one
    /// (epoch 0 at the full rate).
    Paper,
}

/// Training settings. Defaults follow the paper: AdamW lr 5e-4, weight decay 0.01, batches of
/// 8 consecutive slices.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    /// Passes over the samples.
    pub epochs: usize,
    /// Consecutive slices per batch.
    pub batch_size: usize,
    /// Optimiser (learning rate, betas, eps, weight decay).
    pub optimizer: OptimizerConfig,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Random flips and transposes (the same for every slice of a batch, so consecutive slices
    /// stay aligned).
    pub augment: bool,
    /// Seed of the augmentation draws.
    pub seed: u64,
    /// Whether the backward pass keeps every activation or recomputes them block by block
    /// (the same gradients with far less memory; see `model::backprop`). [`memory::plan`]
    /// chooses it from the memory available.
    pub activations: Activations,
    /// How slices meet the model input: [`Scale::Fit`] resizes each whole slice (the paper);
    /// at a number, each run of consecutive slices is trained on one crop of the model input
    /// at that scale, centred on a pixel a person vouched for, drawn anew for each run.
    #[serde(default)]
    pub scale: Scale,
}

impl TrainConfig {
    /// The paper's recipe for `epochs` epochs.
    pub fn paper(optimizer: OptimizerConfig, epochs: usize) -> Self {
        TrainConfig {
            epochs,
            batch_size: 8,
            optimizer,
            schedule: Schedule::Paper,
            augment: true,
            seed: 2024,
            activations: Activations::Keep,
            scale: Scale::Fit,
        }
    }

    /// Learning rate of `epoch` given `iterations` optimiser steps per epoch.
    pub fn lr_at(&self, epoch: usize, iterations: usize) -> f64 {
        let base = self.optimizer.lr;
        match self.schedule {
            Schedule::Constant => base,
            Schedule::Paper => {
                if epoch == 0 {
                    return base;
                }
                let k = (epoch - 1) as f64;
                let w = (250 / iterations.max(1)) as f64;
                let total = self.epochs.max(2) as f64;
                let f = if k < w {
                    5e-6 + (k / w) * (base - 5e-6)
                } else {
                    1e-6 + (base - 1e-6) * 0.5 * (1.0 + (std::f64::consts::PI * (k - w) / (total - w).max(1.0)).cos())
                };
                f.max(1e-6)
            }
        }
    }
}

/// Asks a running loop to pause, stop, or yield to the UI.
#[derive(Debug, Default)]
pub struct Control {
    /// Stop after the current step (the weights so far are kept).
    pub stop: AtomicBool,
    /// Wait between steps until cleared.
    pub pause: AtomicBool,
    /// Someone interactive needs the device (a stroke, a visible-slice prediction): wait
    /// between steps while set.
    pub yield_to_ui: AtomicBool,
}

/// What the loop reports as it goes.
#[derive(Clone, Debug, PartialEq)]
pub enum TrainEvent {
    /// One optimiser step.
    Step {
        /// Epoch (0-based).
        epoch: usize,
        /// Step (1-based, over the run).
        step: u64,
        /// Steps the run will take.
        total_steps: u64,
        /// Loss of the step (summed over the classes with vouched pixels).
        loss: f64,
        /// Learning rate used.
        lr: f64,
    },
    /// Held-out Dice after an epoch, per class with held-out labels.
    Validation {
        /// Epoch (0-based).
        epoch: usize,
        /// Class name → the reference's per-slice mean Dice over vouched pixels.
        dice: BTreeMap<String, f64>,
    },
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Ended {
    /// Every epoch ran.
    Finished,
    /// Stopped on request; the weights of the last completed step are kept.
    Stopped,
    /// The loss, or the weights after the update, became NaN or infinite at this step; the
    /// weights are restored to those from before the last update that kept them finite. No
    /// adapter is written from such a run (the version in use stays).
    NonFinite {
        /// The step.
        step: u64,
    },
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Finished => write!(f, "finished"),
            Ended::Stopped => write!(f, "stopped by the user"),
            Ended::NonFinite { step } => write!(
                f,
                "stopped: the loss or the weights became NaN or infinite at step {step} (try a lower learning rate)"
            ),
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainOutcome {
    /// How it ended.
    pub ended: Ended,
    /// Steps taken (not counting a rejected non-finite one).
    pub steps: u64,
    /// Loss of every step.
    pub losses: Vec<f64>,
    /// Mean loss of the last completed epoch.
    pub final_loss: f64,
    /// Held-out Dice per class after the last epoch.
    pub validation_dice: BTreeMap<String, f64>,
    /// Wall time.
    pub seconds: f64,
}

/// Why training could not run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Nothing to learn from.
    #[error("no training slices with vouched pixels: correct or accept at least one slice first")]
    NoSamples,
    /// A sample does not fit the model.
    #[error("training slice {z} does not fit the model ({reason})")]
    BadSample {
        /// The slice.
        z: SliceIndex,
        /// Why.
        reason: String,
    },
}

/// Batches of consecutive slices: runs of adjacent z, cut into `batch_size` pieces. Each run
/// starts with fresh memory and its first slice prompted by its own label (the reference's
/// training rule).
pub fn batches(samples: &[TrainSample], batch_size: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..samples.len()).collect();
    order.sort_by_key(|&i| samples[i].z);
    let mut runs: Vec<Vec<usize>> = Vec::new();
    for i in order {
        match runs.last_mut() {
            Some(run) if samples[*run.last().expect("runs are never empty")].z.0 + 1 == samples[i].z.0 => run.push(i),
            _ => runs.push(vec![i]),
        }
    }
    runs.into_iter().flat_map(|run| run.chunks(batch_size.max(1)).map(<[usize]>::to_vec).collect::<Vec<_>>()).collect()
}

/// A tiny deterministic generator for augmentation draws (SplitMix64); `sam4em bench model`
/// draws its random labels with it too.
pub(crate) struct Draws(pub(crate) u64);

impl Draws {
    /// The next draw.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// One of the 8 flips/transposes of an S×S image: bit 0 flips x, bit 1 flips y, bit 2
/// transposes.
fn dihedral<T: Copy>(src: &[T], s: usize, t: u8) -> Vec<T> {
    let mut out = Vec::with_capacity(src.len());
    for y in 0..s {
        for x in 0..s {
            let (mut sx, mut sy) = if t & 4 != 0 { (y, x) } else { (x, y) };
            if t & 1 != 0 {
                sx = s - 1 - sx;
            }
            if t & 2 != 0 {
                sy = s - 1 - sy;
            }
            out.push(src[sy * s + sx]);
        }
    }
    out
}

/// A sample brought to the model input (the whole slice resized, or a crop): the image `[S·S]`
/// normalised (one channel; 0 in any padding), and per class label and weight `[S·S]` in
/// {0, 1} (weight 0 in the padding).
struct Prepared {
    image: Vec<f32>,
    labels: Vec<Vec<u8>>,
    weights: Vec<Vec<u8>>,
}

/// Checks that a sample's image and planes fit its size and the classes.
fn check_sample(sample: &TrainSample, classes: usize) -> Result<(), TrainError> {
    let bad = |reason: String| TrainError::BadSample { z: sample.z, reason };
    let (w, h) = (sample.width, sample.height);
    if sample.image.len() != w * h {
        return Err(bad(format!("{} image samples for {w}×{h}", sample.image.len())));
    }
    if sample.labels.len() != classes || sample.vouched.len() != classes {
        return Err(bad(format!(
            "{} label and {} vouched planes for {classes} classes",
            sample.labels.len(),
            sample.vouched.len()
        )));
    }
    if let Some(p) = sample.labels.iter().chain(&sample.vouched).find(|p| (p.width(), p.height()) != (w, h)) {
        return Err(bad(format!("a {}×{} mask on a {w}×{h} slice", p.width(), p.height())));
    }
    Ok(())
}

/// The whole slice as the model input window ([`Scale::Fit`]).
fn whole_slice(sample: &TrainSample, s: usize) -> Window {
    Window { x0: 0, y0: 0, width: sample.width, height: sample.height, model_width: s, model_height: s }
}

/// `plane`'s pixels under `window`, 0 or 1, row by row.
fn plane_window(plane: &BitPlane, window: &Window) -> Vec<u8> {
    let mut out = Vec::with_capacity(window.width * window.height);
    for y in window.y0..window.y0 + window.height {
        for x in window.x0..window.x0 + window.width {
            out.push(u8::from(plane.get(x, y)));
        }
    }
    out
}

/// `sample` under `window`, at the model input of side `s`.
fn prepare(sample: &TrainSample, s: usize, classes: usize, window: &Window) -> Result<Prepared, TrainError> {
    check_sample(sample, classes)?;
    Ok(Prepared {
        image: window.model_image(window.crop(&sample.image, sample.width), s),
        labels: sample.labels.iter().map(|p| window.model_mask(plane_window(p, window), s)).collect(),
        weights: sample.vouched.iter().map(|p| window.model_mask(plane_window(p, window), s)).collect(),
    })
}

/// The `index`-th vouched pixel of `plane` (row-major), if there are that many.
fn nth_set_pixel(plane: &BitPlane, mut index: u64) -> Option<(usize, usize)> {
    let per_row = plane.words_per_row();
    for (i, &word) in plane.words().iter().enumerate() {
        let ones = u64::from(word.count_ones());
        if index < ones {
            let mut w = word;
            for _ in 0..index {
                w &= w - 1;
            }
            let x = (i % per_row) * 64 + w.trailing_zeros() as usize;
            return Some((x, i / per_row));
        }
        index -= ones;
    }
    None
}

/// A crop window at `scale` for a run of `batch` slices: centred on one pixel drawn uniformly
/// from every pixel a person vouched for in those slices (any class), so crops never come
/// from unvouched areas alone.
fn draw_window(batch: &[&TrainSample], s: usize, scale: f64, draws: &mut Draws) -> Window {
    let planes: Vec<&BitPlane> = batch.iter().flat_map(|t| &t.vouched).collect();
    let total: u64 = planes.iter().map(|p| p.count_ones()).sum();
    let first = batch[0];
    let (mut cx, mut cy) = (first.width / 2, first.height / 2);
    if total > 0 {
        let mut k = draws.next() % total;
        for p in &planes {
            let n = p.count_ones();
            if k < n {
                if let Some((x, y)) = nth_set_pixel(p, k) {
                    (cx, cy) = (x, y);
                }
                break;
            }
            k -= n;
        }
    }
    Window::centred(first.width, first.height, s, scale, cx, cy)
}

/// The window a validation slice is scored in at `scale`: the whole slice at
/// [`Scale::Fit`], else a crop centred on the middle of the pixels vouched for in it.
fn validation_window(sample: &TrainSample, s: usize, scale: Scale) -> Window {
    match scale {
        Scale::Fit => whole_slice(sample, s),
        Scale::Factor(f) => {
            let bounds =
                sample.vouched.iter().map(BitPlane::bounds).filter(|b| !b.is_empty()).reduce(|a, b| a.union(b));
            let (cx, cy) =
                bounds.map_or((sample.width / 2, sample.height / 2), |b| ((b.x0 + b.x1) / 2, (b.y0 + b.y1) / 2));
            Window::centred(sample.width, sample.height, s, f, cx, cy)
        }
    }
}

fn to_tensor(values: Vec<f32>, shape: [usize; 4], model: &MultiModel) -> Tensor<4> {
    Tensor::from_data(TensorData::new(values, shape), &model.device())
}

/// Trains `model` (living on an autodiff device) on `samples`, validating on `validation`
/// after every epoch. Returns when the epochs are done, `control.stop` is set, or the loss
/// turns non-finite (then the weights from before that step are restored).
pub fn train(
    model: &mut MultiModel,
    samples: &[TrainSample],
    validation: &[TrainSample],
    config: &TrainConfig,
    control: &Control,
    on_event: &mut dyn FnMut(TrainEvent),
) -> Result<TrainOutcome, TrainError> {
    let started = Instant::now();
    let classes = model.heads.len();
    let s = model.config().image_size;
    let samples: Vec<&TrainSample> = samples.iter().filter(|t| t.has_vouched_pixels()).collect();
    if samples.is_empty() {
        return Err(TrainError::NoSamples);
    }
    // At fit every sample is resized once; at a scale, crops are cut per run of batches.
    let resized: Vec<Prepared> = match config.scale {
        Scale::Fit => samples.iter().map(|t| prepare(t, s, classes, &whole_slice(t, s))).collect::<Result<_, _>>()?,
        Scale::Factor(_) => {
            samples.iter().try_for_each(|t| check_sample(t, classes))?;
            Vec::new()
        }
    };
    let owned: Vec<TrainSample> = samples.iter().map(|t| (*t).clone()).collect();
    let plan = batches(&owned, config.batch_size);
    let total_steps = (plan.len() * config.epochs) as u64;

    prepare_for_training(&mut model.encoder);
    for h in &mut model.heads {
        prepare_for_training(&mut h.model);
    }
    let mut opt_encoder = AdamW::new(config.optimizer.clone());
    let mut opt_heads: Vec<AdamW> = (0..classes).map(|_| AdamW::new(config.optimizer.clone())).collect();
    let mut draws = Draws(config.seed);
    let loss_config = model.config().loss.clone();

    let mut outcome = TrainOutcome {
        ended: Ended::Finished,
        steps: 0,
        losses: Vec::new(),
        final_loss: f64::NAN,
        validation_dice: BTreeMap::new(),
        seconds: 0.0,
    };
    // The weights of the last step whose loss was finite, from before that step's update:
    // an update that makes the weights NaN only shows in the next step's loss.
    let mut last_good: Option<MultiModel> = None;
    'epochs: for epoch in 0..config.epochs {
        let lr = config.lr_at(epoch, plan.len());
        opt_encoder.config.lr = lr;
        for o in &mut opt_heads {
            o.config.lr = lr;
        }
        let mut epoch_losses = Vec::new();
        let mut memories = model.zero_memories();
        let mut prompts: Option<Vec<Tensor<4>>> = None;
        let mut previous_last_z: Option<SliceIndex> = None;
        let mut previous_t = 0u8;
        let mut window: Option<Window> = None;
        for batch in &plan {
            while control.pause.load(Ordering::Relaxed) || control.yield_to_ui.load(Ordering::Relaxed) {
                if control.stop.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if control.stop.load(Ordering::Relaxed) {
                outcome.ended = Ended::Stopped;
                break 'epochs;
            }
            let first_z = owned[batch[0]].z;
            // A new run of consecutive slices: fresh memory, prompted by its first label.
            let continues = previous_last_z.is_some_and(|z| z.0 + 1 == first_z.0);
            if !continues {
                memories = model.zero_memories();
                prompts = None;
            }
            // A run's crop stays put while the run continues, so the memory it carries and
            // the prompts line up with the slices it sees.
            if let Scale::Factor(f) = config.scale
                && (!continues || window.is_none())
            {
                let run: Vec<&TrainSample> = batch.iter().map(|&i| &owned[i]).collect();
                window = Some(draw_window(&run, s, f, &mut draws));
            }
            let t = if config.augment { (draws.next() % 8) as u8 } else { 0 };
            let b = batch.len();
            let mut x = Vec::with_capacity(b * 3 * s * s);
            let mut targets: Vec<Vec<f32>> = vec![Vec::with_capacity(b * s * s); classes];
            let mut weights: Vec<Vec<f32>> = vec![Vec::with_capacity(b * s * s); classes];
            for &i in batch {
                let crop;
                let r = match &window {
                    Some(w) => {
                        crop = prepare(&owned[i], s, classes, w)?;
                        &crop
                    }
                    None => &resized[i],
                };
                let image = dihedral(&r.image, s, t);
                for _ in 0..3 {
                    x.extend_from_slice(&image);
                }
                for c in 0..classes {
                    targets[c].extend(dihedral(&r.labels[c], s, t).into_iter().map(f32::from));
                    weights[c].extend(dihedral(&r.weights[c], s, t).into_iter().map(f32::from));
                }
            }
            let first_prompts = match prompts.take() {
                Some(p) if continues && t == previous_t => p,
                _ => (0..classes).map(|c| to_tensor(targets[c][..s * s].to_vec(), [1, 1, s, s], model)).collect(),
            };
            let snapshot = model.clone();
            let x = to_tensor(x, [b, 3, s, s], model);
            let device = model.device();
            let mut class_loss = |c: usize, logits1: Tensor<4>, logits2: Tensor<4>| {
                if weights[c].iter().all(|&w| w == 0.0) {
                    return None;
                }
                let target = Tensor::from_data(TensorData::new(std::mem::take(&mut targets[c]), [b, 1, s, s]), &device);
                let weight = Tensor::from_data(TensorData::new(std::mem::take(&mut weights[c]), [b, 1, s, s]), &device);
                Some(masked_sam4em_loss(logits1, logits2, target, weight, &loss_config).total)
            };
            let result = batch_gradients(model, x, first_prompts, &mut memories, config.activations, &mut class_loss);
            let Some(value) = result.loss else { continue };
            let step = outcome.steps + 1;
            let Some(grads) = result.grads else {
                *model = last_good.take().unwrap_or(snapshot);
                outcome.ended = Ended::NonFinite { step };
                break 'epochs;
            };
            last_good = Some(snapshot);
            opt_encoder.step(&mut model.encoder, &grads.encoder);
            for ((h, o), g) in model.heads.iter_mut().zip(&mut opt_heads).zip(&grads.heads) {
                o.step(&mut h.model, g);
            }
            let next_prompts = result.next_prompts;
            outcome.steps = step;
            outcome.losses.push(value);
            epoch_losses.push(value);
            on_event(TrainEvent::Step { epoch, step, total_steps, loss: value, lr });
            prompts = Some(next_prompts);
            previous_t = t;
            previous_last_z = Some(owned[*batch.last().expect("batches are never empty")].z);
        }
        if !epoch_losses.is_empty() {
            outcome.final_loss = epoch_losses.iter().sum::<f64>() / epoch_losses.len() as f64;
        }
        if !validation.is_empty() {
            let dice = validate(model, &owned, validation, config.scale)?;
            outcome.validation_dice = dice.clone();
            on_event(TrainEvent::Validation { epoch, dice });
        }
    }
    // Every update so far showed in the next step's loss but the last one: check its weights.
    // (After a non-finite loss `last_good` is already spent on restoring.)
    if let Some(before_last) = last_good
        && !trained_weights_finite(model)
    {
        *model = before_last;
        outcome.ended = Ended::NonFinite { step: outcome.steps };
        outcome.steps -= 1;
        outcome.losses.pop();
    }
    outcome.seconds = started.elapsed().as_secs_f64();
    Ok(outcome)
}

/// Whether every tensor training changes (the LoRA factors and trainable encoder tensors, every
/// head) holds finite values.
fn trained_weights_finite(model: &mut MultiModel) -> bool {
    let finite = |dict: std::collections::BTreeMap<String, crate::model::HostTensor>| {
        dict.values().all(|t| t.data.iter().all(|v| v.is_finite()))
    };
    finite(model.encoder.state_dict(&|k, kind| is_shared(k) && in_adapter(k, kind)))
        && model.heads.iter_mut().all(|h| finite(h.model.state_dict(&|k, kind| !is_shared(k) && in_adapter(k, kind))))
}

/// What a finished run is recorded with in its adapter set, beside the run's own figures.
pub struct RunRecord<'a> {
    /// The slices learned from.
    pub samples: &'a [TrainSample],
    /// The held-out slices.
    pub validation: &'a [TrainSample],
    /// The run's settings.
    pub config: &'a TrainConfig,
    /// The base checkpoint it was trained on.
    pub base: BaseCheckpoint,
    /// Its version number, and the version it started from.
    pub version: u64,
    /// The version it started from (`None`: the bare base model).
    pub parent: Option<u64>,
    /// The device it ran on, in words.
    pub device: String,
    /// The training stack's pixel size in nanometres, where the stack said.
    pub pixel_size_nm: Option<f64>,
}

/// A finished run as the adapter set to save: what `model` learned, with the configuration,
/// the base checkpoint, the classes and the run's record (the one way the app's trainer and
/// `sam4em train` write their results).
pub fn adapter_set(model: &mut MultiModel, outcome: &TrainOutcome, run: RunRecord<'_>) -> AdapterSet {
    let training = TrainingRecord {
        steps: outcome.steps,
        slices: run.samples.iter().map(|s| s.z.0).collect(),
        validation_slices: run.validation.iter().map(|s| s.z.0).collect(),
        final_loss: outcome.final_loss,
        validation_dice: outcome.validation_dice.clone(),
        seconds: outcome.seconds,
        device: run.device,
        ended: outcome.ended.to_string(),
        batch_size: batches(run.samples, run.config.batch_size).iter().map(Vec::len).max().unwrap_or(0),
        activations: run.config.activations.name().into(),
        scale: run.config.scale,
        pixel_size_nm: run.pixel_size_nm,
    };
    let meta = AdapterSetMeta {
        format: SET_FORMAT.into(),
        format_version: SET_FORMAT_VERSION,
        config: model.config().clone(),
        base: run.base,
        classes: model.class_names(),
        version: run.version,
        parent_version: run.parent,
        created_unix_s: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        training,
    };
    AdapterSet::from_model(model, meta)
}

/// Held-out Dice: each validation slice is predicted the way the app predicts it, streaming
/// from the nearest training slice (prompted by its label) or from an empty prompt, and scored
/// with the reference's per-slice Dice over the pixels a person vouched for. At a `scale` other
/// than fit, in one window of the model input centred on the validation slice's vouched pixels
/// (the same window of the slice it streams from).
pub fn validate(
    model: &MultiModel,
    train: &[TrainSample],
    validation: &[TrainSample],
    scale: Scale,
) -> Result<BTreeMap<String, f64>, TrainError> {
    // Inference only: without autodiff nothing is recorded for a backward pass (for B+ an
    // encoder pass would otherwise keep gigabytes of activations until it is dropped).
    let model = &model.without_autodiff();
    let classes = model.heads.len();
    let s = model.config().image_size;
    let threshold = logit(model.config().stream.cross_batch_threshold) as f32;
    let mut scores: Vec<Vec<f64>> = vec![Vec::new(); classes];
    for v in validation {
        let window = validation_window(v, s, scale);
        let rv = prepare(v, s, classes, &window)?;
        let seed = train.iter().min_by_key(|t| t.z.0.abs_diff(v.z.0));
        // Slices from the seed to the validation slice, seed first.
        let path: Vec<&TrainSample> = match seed {
            Some(t) if t.z.0.abs_diff(v.z.0) <= 16 => vec![t, v],
            _ => vec![v],
        };
        // The stream goes from the seed straight to the validation slice: the slices between
        // them need not be samples, and bridging the gap only makes the score conservative.
        let seeds: Vec<Option<Tensor<4>>> = if path.len() == 2 {
            let rt = prepare(path[0], s, classes, &window)?;
            (0..classes)
                .map(|c| Some(to_tensor(rt.labels[c].iter().map(|&b| f32::from(b)).collect(), [1, 1, s, s], model)))
                .collect()
        } else {
            vec![None; classes]
        };
        let mut states = model.start_streams(seeds);
        let mut last = Vec::new();
        for sample in &path {
            let r = if std::ptr::eq(*sample, v) { None } else { Some(prepare(sample, s, classes, &window)?) };
            let image = r.as_ref().map_or(&rv.image, |r| &r.image);
            let x = to_tensor(image.repeat(3), [1, 3, s, s], model);
            let fused = model.embed(x);
            last = model.stream_step(fused, &mut states, StreamMode::Clean);
        }
        for (c, out) in last.iter().enumerate() {
            if rv.weights[c].iter().all(|&w| w == 0) {
                continue;
            }
            let (logits, _) = model.reported_logits(out);
            let l = logits.into_data().convert::<f32>().try_into_vec::<f32>().unwrap_or_default();
            let (mut pred, mut truth) = (Vec::new(), Vec::new());
            for ((&logit, &weight), &label) in l.iter().zip(&rv.weights[c]).zip(&rv.labels[c]) {
                if weight != 0 {
                    pred.push(u8::from(logit > threshold));
                    truth.push(label);
                }
            }
            scores[c].push(Overlap::of(&pred, &truth).reference_dice());
        }
    }
    Ok(model
        .heads
        .iter()
        .zip(scores)
        .filter(|(_, v)| !v.is_empty())
        .map(|(h, v)| (h.name.clone(), v.iter().sum::<f64>() / v.len() as f64))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `w × h` slice whose image is its pixel index mod 251, vouched for in `vouched` only,
    /// labelled in its left half.
    fn big_sample(w: usize, h: usize, vouched: crate::state::bitplane::PixelBox) -> TrainSample {
        let mut v = BitPlane::new(w, h);
        v.fill_rect(vouched, true);
        let mut l = BitPlane::new(w, h);
        l.fill_rect(crate::state::bitplane::PixelBox { x0: 0, y0: 0, x1: w / 2, y1: h }, true);
        TrainSample {
            z: SliceIndex(0),
            width: w,
            height: h,
            image: Arc::new((0..w * h).map(|i| (i % 251) as u8).collect()),
            labels: vec![l],
            vouched: vec![v],
        }
    }

    #[test]
    fn crops_are_centred_on_vouched_pixels_and_cut_at_the_scale() {
        use crate::state::bitplane::PixelBox;
        let (w, h, s) = (1000, 800, 128);
        // Only a small area near the bottom-right corner is vouched for.
        let area = PixelBox { x0: 900, y0: 700, x1: 940, y1: 720 };
        let t = big_sample(w, h, area);
        let mut draws = Draws(7);
        for _ in 0..50 {
            let win = draw_window(&[&t], s, 1.0, &mut draws);
            assert_eq!((win.width, win.height, win.model_width, win.model_height), (128, 128, 128, 128));
            assert!(win.x0 + win.width <= w && win.y0 + win.height <= h, "{win:?}");
            let covers =
                win.x0 < area.x1 && area.x0 < win.x0 + win.width && win.y0 < area.y1 && area.y0 < win.y0 + win.height;
            assert!(covers, "a crop away from every vouched pixel: {win:?}");
            // At scale 1 the crop is the slice's own pixels; weights are the vouched ones.
            let p = prepare(&t, s, 1, &win).unwrap();
            let norm = |v: u8| (v as f32 / 255.0 - 0.485) / 0.229;
            assert_eq!(p.image[5 * s + 7], norm(t.image[(win.y0 + 5) * w + win.x0 + 7]));
            let vouched = p.weights[0].iter().filter(|&&v| v == 1).count();
            let expected =
                (area.x1.min(win.x0 + 128) - area.x0.max(win.x0)) * (area.y1.min(win.y0 + 128) - area.y0.max(win.y0));
            assert_eq!(vouched, expected);
        }
        // At 0.5 a crop covers 256 stack pixels, resized to the input.
        let win = draw_window(&[&t], s, 0.5, &mut draws);
        assert_eq!((win.width, win.height, win.model_width), (256, 256, 128));
        // The k-th vouched pixel, row-major.
        assert_eq!(nth_set_pixel(&t.vouched[0], 0), Some((900, 700)));
        assert_eq!(nth_set_pixel(&t.vouched[0], 41), Some((901, 701)));
        assert_eq!(nth_set_pixel(&t.vouched[0], 800), None);
        // Validation is scored in a window around the middle of the vouched pixels.
        let win = validation_window(&t, s, Scale::NATIVE);
        assert!(
            win.x0 <= area.x0 && area.x1 <= win.x0 + 128 && win.y0 <= area.y0 && area.y1 <= win.y0 + 128,
            "{win:?}"
        );
        let whole = validation_window(&t, s, Scale::Fit);
        assert_eq!((whole.width, whole.height, whole.model_width), (w, h, s));
    }

    fn sample(z: usize) -> TrainSample {
        TrainSample {
            z: SliceIndex(z),
            width: 2,
            height: 2,
            image: Arc::new(vec![0; 4]),
            labels: vec![BitPlane::new(2, 2)],
            vouched: vec![BitPlane::new(2, 2)],
        }
    }

    #[test]
    fn batches_are_runs_of_consecutive_slices_cut_to_size() {
        let s: Vec<TrainSample> = [7, 3, 4, 5, 6, 10, 12, 11].into_iter().map(sample).collect();
        let b: Vec<Vec<usize>> =
            batches(&s, 3).into_iter().map(|b| b.into_iter().map(|i| s[i].z.0).collect()).collect();
        assert_eq!(b, vec![vec![3, 4, 5], vec![6, 7], vec![10, 11, 12]]);
    }

    #[test]
    fn the_queue_keeps_one_sample_per_slice_and_drops_the_oldest() {
        let mut q = SampleQueue::new(2);
        assert_eq!(q.push(sample(5)), None);
        assert_eq!(q.push(sample(2)), None);
        assert_eq!(q.push(sample(5)), None, "a newer correction replaces the queued one");
        assert_eq!(q.push(sample(9)), Some(SliceIndex(2)));
        assert_eq!(q.slices(), vec![SliceIndex(5), SliceIndex(9)]);
    }

    #[test]
    fn dihedral_transforms_are_permutations() {
        let img: Vec<u8> = (0..9).collect();
        assert_eq!(dihedral(&img, 3, 1), vec![2, 1, 0, 5, 4, 3, 8, 7, 6]);
        assert_eq!(dihedral(&img, 3, 4), vec![0, 3, 6, 1, 4, 7, 2, 5, 8]);
        for t in 0..8 {
            let mut d = dihedral(&img, 3, t);
            d.sort_unstable();
            assert_eq!(d, img);
        }
    }

    #[test]
    fn the_paper_schedule_matches_the_spec() {
        let opt =
            OptimizerConfig { name: "AdamW".into(), lr: 5e-4, betas: [0.9, 0.999], eps: 1e-8, weight_decay: 0.01 };
        let c = TrainConfig { epochs: 50, ..TrainConfig::paper(opt, 50) };
        // Lucchi: 21 iterations per epoch → W = 11 (sam4em-spec §12).
        let lr: Vec<f64> = [0, 1, 2, 5, 11, 12, 20, 30, 40, 49].iter().map(|&e| c.lr_at(e, 21)).collect();
        let want = [5.0e-4, 5.0e-6, 5.0e-5, 1.85e-4, 4.55e-4, 5.0e-4, 4.5e-4, 2.8e-4, 9.3e-5, 4.2e-6];
        for (e, (a, b)) in lr.iter().zip(want).enumerate() {
            assert!((a - b).abs() <= 0.02 * b, "epoch index {e}: {a} vs {b}");
        }
    }
}
