//! Retrain: which slices a run learns from (every slice a person corrected or accepted, up to
//! [`QUEUE_CAPACITY`], nearest first, without the held-out ones) and what it may learn from on
//! each (the pixels a person vouched for), the memory plan, the job for the `trainer` worker,
//! and the run's live view (loss, held-out Dice, pause and stop).

use super::ModelError;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use burn::tensor::Device;

use super::super::document::Document;
use super::heads::Heads;
use crate::model::footprint::TrainingMemoryModel;
use crate::state::bitplane::{BitPlane, PixelBox};
use crate::state::scale::Scale;
use crate::state::{Provenance, ReviewState, SliceIndex};
use crate::train::memory::{ActivationsChoice, Available, MemoryPlan};
use crate::train::worker::{PendingSample, TrainerEvent};
use crate::train::{Control, Schedule, TrainConfig, TrainEvent};
use crate::ui::model::TrainingView;

/// Most slices one Retrain learns from (the nearest to the current slice are kept).
pub(super) const QUEUE_CAPACITY: usize = 256;

/// Most consecutive slices in one training batch (the paper's batch).
const BATCH: usize = 8;

/// A run on the trainer.
struct Run {
    control: Arc<Control>,
    view: TrainingView,
}

/// Retrain's state: the run in progress, the last run's outcome, the held-out slices.
#[derive(Default)]
pub(super) struct Training {
    run: Option<Run>,
    last_run: Option<String>,
    /// Slices scored after each epoch instead of learned from.
    held_out: BTreeSet<SliceIndex>,
}

/// What a new run learns from, ready for the trainer.
pub(super) struct Plan {
    /// Slices to learn from, in stack order.
    pub(super) samples: Vec<PendingSample>,
    /// Held-out slices.
    pub(super) validation: Vec<PendingSample>,
    /// Settings.
    pub(super) config: TrainConfig,
    /// Keep or recompute activations, with the memory figures.
    pub(super) memory: MemoryPlan,
}

impl Training {
    /// Whether a run is in progress.
    pub(super) fn is_running(&self) -> bool {
        self.run.is_some()
    }

    /// Holds slice `z` out of training (or takes it back).
    pub(super) fn toggle_held_out(&mut self, z: SliceIndex) {
        if !self.held_out.remove(&z) {
            self.held_out.insert(z);
        }
    }

    /// Forgets the held-out slices (a new stack).
    pub(super) fn clear_held_out(&mut self) {
        self.held_out.clear();
    }

    /// Slices held out, and whether `z` is one.
    pub(super) fn held_out(&self, z: Option<SliceIndex>) -> (usize, bool) {
        (self.held_out.len(), z.is_some_and(|z| self.held_out.contains(&z)))
    }

    /// Slices a Retrain would learn from now.
    pub(super) fn queued(&self, doc: &Document, heads: &Heads) -> usize {
        reviewed_slices(doc, heads).iter().filter(|z| !self.held_out.contains(z)).count()
    }

    /// What a new run of `epochs` epochs, numbered `version`, learns from, or why it cannot
    /// start. `memory_model` and `available` size the batch's memory; `heads` maps classes.
    pub(super) fn plan(
        &self,
        doc: &Document,
        heads: &Heads,
        memory_model: &TrainingMemoryModel,
        available: Option<Available>,
        epochs: usize,
        version: u64,
    ) -> Result<Plan, ModelError> {
        let z_now = doc.view.cursor.z;
        let mut queued: Vec<SliceIndex> =
            reviewed_slices(doc, heads).into_iter().filter(|z| !self.held_out.contains(z)).collect();
        queued.sort_by_key(|z| z.0.abs_diff(z_now.0));
        queued.truncate(QUEUE_CAPACITY);
        queued.sort_unstable();
        let samples: Vec<PendingSample> = queued.iter().map(|&z| pending(doc, heads, z)).collect();
        if samples.is_empty() {
            return Err(ModelError::NothingToLearn);
        }
        let validation: Vec<PendingSample> = self.held_out.iter().map(|&z| pending(doc, heads, z)).collect();
        // Memory: the batch is the longest run of consecutive queued slices, up to 8; the run
        // keeps its activations when that fits, recomputes them when not, and does not start
        // when even that would not fit (the trainer may have to load its own copy of the
        // model, so the weights are counted too).
        let batch = longest_run(&queued).min(BATCH);
        let classes = heads.len();
        let memory = crate::train::memory::plan(ActivationsChoice::Auto, batch, false, available, &|b| {
            memory_model.footprint(classes, b)
        })
        .map_err(|refusal| ModelError::DoesNotFit(refusal.sentence))?;
        // The paper's optimiser (the configuration's, which every SAM4EM configuration shares).
        let optimizer = crate::model::config::OptimizerConfig {
            name: "AdamW".into(),
            lr: 5e-4,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 0.01,
        };
        let config = TrainConfig {
            epochs,
            batch_size: BATCH,
            optimizer,
            schedule: Schedule::Constant,
            augment: true,
            activations: memory.activations,
            seed: version,
            scale: Scale::Fit,
        };
        Ok(Plan { samples, validation, config, memory })
    }

    /// The trainer took a run of `slices` slices, numbered `version`.
    pub(super) fn started(&mut self, control: Arc<Control>, version: u64, slices: usize, memory: &MemoryPlan) {
        self.run = Some(Run {
            control,
            view: TrainingView {
                status: format!("training v{version} on {slices} slice(s) · {}", memory.summary()),
                ..Default::default()
            },
        });
    }

    /// Pauses or resumes the run.
    pub(super) fn pause(&mut self, paused: bool) {
        if let Some(t) = &mut self.run {
            t.control.pause.store(paused, Ordering::Relaxed);
            t.view.paused = paused;
        }
    }

    /// Stops the run after its current step (it writes what it learned so far).
    pub(super) fn stop(&self) {
        if let Some(t) = &self.run {
            t.control.pause.store(false, Ordering::Relaxed);
            t.control.stop.store(true, Ordering::Relaxed);
        }
    }

    /// Tells the run that someone is drawing (it waits between steps meanwhile).
    pub(super) fn set_interactive(&self, interactive: bool) {
        if let Some(t) = &self.run {
            t.control.yield_to_ui.store(interactive, Ordering::Relaxed);
        }
    }

    /// A trainer event; a finished run hands back its new version.
    pub(super) fn on_event(
        &mut self,
        event: TrainerEvent,
    ) -> Option<(crate::model::adapter::AdapterSetMeta, std::path::PathBuf)> {
        match event {
            TrainerEvent::Loading => {
                if let Some(t) = &mut self.run {
                    t.view.status = "building the training model".into();
                }
            }
            TrainerEvent::Progress(TrainEvent::Step { step, total_steps, loss, .. }) => {
                if let Some(t) = &mut self.run {
                    t.view.losses.push(loss);
                    t.view.total_steps = total_steps;
                    t.view.status = format!("step {step}/{total_steps}, loss {loss:.4}");
                }
            }
            TrainerEvent::Progress(TrainEvent::Validation { dice, .. }) => {
                if let Some(t) = &mut self.run {
                    t.view.dice = dice.into_iter().collect();
                }
            }
            TrainerEvent::Finished { path, meta } => {
                self.run = None;
                let t = &meta.training;
                self.last_run = Some(format!(
                    "v{}: {} ({} steps, {:.0} s, loss {:.4}{})",
                    meta.version,
                    t.ended,
                    t.steps,
                    t.seconds,
                    t.final_loss,
                    t.dice_summary().map(|d| format!(", held-out Dice {d}")).unwrap_or_default()
                ));
                return Some((*meta, path));
            }
            TrainerEvent::Failed(m) => {
                self.run = None;
                self.last_run = Some(format!("training ended without a new version: {m}"));
            }
            TrainerEvent::DeviceLost { message } => {
                self.run = None;
                self.last_run = Some(format!(
                    "training stopped without a new version: the GPU failed ({message}); Retrain runs on the CPU"
                ));
            }
        }
        None
    }

    /// The run's live view, and the last run's outcome.
    pub(super) fn views(&self) -> (Option<TrainingView>, Option<String>) {
        (self.run.as_ref().map(|t| t.view.clone()), self.last_run.clone())
    }
}

/// What a Retrain may use: the free memory of `device`, capped by the panel's memory limit
/// (`limit_gib`, 0 for none).
pub(super) fn training_memory(device: &Device, limit_gib: f64) -> Option<Available> {
    let free = crate::train::memory::available_for(device);
    if limit_gib <= 0.0 {
        return free;
    }
    let limit = (limit_gib * f64::from(1u32 << 30)) as u64;
    match free {
        Some(f) if f.bytes <= limit => Some(f),
        _ => Some(Available { bytes: limit, what: "the memory limit set in the Model panel".into() }),
    }
}

/// Slices whose review says a person corrected or accepted them, for any of the model's
/// classes: the seeds of a prediction and what Retrain learns from.
pub(super) fn reviewed_slices(doc: &Document, heads: &Heads) -> BTreeSet<SliceIndex> {
    let mut out = BTreeSet::new();
    for (_, class) in heads.iter() {
        for (z, e) in doc.masks.slices(class) {
            if matches!(e.review, ReviewState::Corrected | ReviewState::Accepted) {
                out.insert(z);
            }
        }
    }
    out
}

/// Slice `z` as a training sample: per head the mask and the pixels a person vouched for
/// (every pixel of an accepted or imported slice; otherwise those drawn, erased or brushed
/// over).
fn pending(doc: &Document, heads: &Heads, z: SliceIndex) -> PendingSample {
    let (w, h) = (doc.volume.width(), doc.volume.height());
    let mut labels = Vec::new();
    let mut vouched = Vec::new();
    for (_, class) in heads.iter() {
        let entry = doc.masks.entry(class, z);
        labels.push(entry.map_or_else(|| BitPlane::new(w, h), |e| e.mask.to_plane()));
        let mut v = BitPlane::new(w, h);
        if let Some(e) = entry {
            if e.review == ReviewState::Accepted || e.provenance == Provenance::Imported {
                v.fill_rect(PixelBox { x0: 0, y0: 0, x1: w, y1: h }, true);
            } else {
                v = e.touched.to_plane();
            }
        }
        vouched.push(v);
    }
    PendingSample { z, labels, vouched }
}

/// The most consecutive slices in `sorted` (ascending): the largest training batch they make.
fn longest_run(sorted: &[SliceIndex]) -> usize {
    let (mut best, mut run) = (0, 0);
    for (i, z) in sorted.iter().enumerate() {
        run = if i > 0 && sorted[i - 1].0 + 1 == z.0 { run + 1 } else { 1 };
        best = best.max(run);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batch_is_the_longest_run_of_consecutive_slices() {
        let z = |v: &[usize]| v.iter().map(|&i| SliceIndex(i)).collect::<Vec<_>>();
        assert_eq!(longest_run(&z(&[])), 0);
        assert_eq!(longest_run(&z(&[4])), 1);
        assert_eq!(longest_run(&z(&[1, 2, 3, 7, 8, 10])), 3);
        assert_eq!(longest_run(&z(&[1, 3, 5])), 1);
    }

    #[test]
    fn held_out_slices_toggle() {
        let mut t = Training::default();
        t.toggle_held_out(SliceIndex(3));
        assert_eq!(t.held_out(Some(SliceIndex(3))), (1, true));
        t.toggle_held_out(SliceIndex(3));
        assert_eq!(t.held_out(Some(SliceIndex(3))), (0, false));
    }
}
