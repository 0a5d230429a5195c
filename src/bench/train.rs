//! The training figure of `sam4em bench model`: one fine-tuning step of N consecutive slices
//! through the app's own training loop ([`crate::train::train`]), with random weights and random
//! labels, timed one step per call so that the CLI can interleave it with the original PyTorch
//! code's training step.

use std::sync::Arc;
use std::time::Instant;

use burn::tensor::Device;

use crate::model::footprint::TrainingMemoryModel;
use crate::model::multi::MultiModel;
use crate::model::{Init, Sam4em, Sam4emConfig};
use crate::state::bitplane::{BitPlane, PixelBox};
use crate::train::memory::{self, ActivationsChoice, DoesNotFit, MemoryPlan};
use crate::train::{Control, Draws, Schedule, TrainConfig, TrainError, TrainSample, train};

/// Why the training figure could not be timed.
#[derive(Debug, thiserror::Error)]
pub enum TrainBenchError {
    /// The step does not fit in the memory available.
    #[error(transparent)]
    DoesNotFit(#[from] DoesNotFit),
    /// The training loop failed.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// The loop ended before its one step (a non-finite loss).
    #[error("the training step did not run: {0}")]
    NoStep(String),
}

/// One class's model on an autodiff device with `slices` random samples, ready to take one
/// training step per call.
pub struct TrainBench {
    model: MultiModel,
    samples: Vec<TrainSample>,
    config: TrainConfig,
    /// How the step computes gradients and what it was expected to need.
    pub plan: MemoryPlan,
}

impl TrainBench {
    /// A randomly initialised model (LoRA unmerged, as training uses it) on `device`'s
    /// autodiff twin, `slices` consecutive 512² slices (for B+; the model's input size in
    /// general) with random images and labels (a fifth of the pixels foreground, as the
    /// reference's benchmark draws them), every pixel vouched for, the paper's optimiser, and
    /// activations kept or recomputed by the memory plan of `choice`.
    pub fn new(
        config: &Sam4emConfig,
        device: &Device,
        slices: usize,
        choice: ActivationsChoice,
    ) -> Result<Self, TrainBenchError> {
        let device = device.clone().autodiff();
        let slices = slices.max(1);
        let available = memory::available_for(&device);
        let memory_model = TrainingMemoryModel::new(config, &device);
        let plan = memory::plan(choice, slices, false, available, &|b| memory_model.footprint(1, b))?;
        let model = MultiModel::new(Sam4em::new(config, &Init::random(&device)), &["mitochondria".to_string()]);
        let s = config.image_size;
        let mut draws = Draws(2024);
        let samples = (0..slices)
            .map(|z| {
                let image: Vec<u8> = (0..s * s).map(|_| (draws.next() >> 56) as u8).collect();
                let mut label = BitPlane::new(s, s);
                for i in 0..s * s {
                    if draws.next().is_multiple_of(5) {
                        label.set(i % s, i / s, true);
                    }
                }
                let mut vouched = BitPlane::new(s, s);
                vouched.fill_rect(PixelBox { x0: 0, y0: 0, x1: s, y1: s }, true);
                TrainSample {
                    z: crate::state::SliceIndex(z),
                    width: s,
                    height: s,
                    image: Arc::new(image),
                    labels: vec![label],
                    vouched: vec![vouched],
                }
            })
            .collect();
        let config = TrainConfig {
            epochs: 1,
            batch_size: slices,
            optimizer: config.optimizer.clone(),
            schedule: Schedule::Constant,
            augment: false,
            seed: 2024,
            activations: plan.activations,
            scale: crate::state::scale::Scale::Fit,
        };
        Ok(TrainBench { model, samples, config, plan })
    }

    /// One timed step in milliseconds: the training loop over the batch, forward, backward
    /// and the AdamW update.
    pub fn step_ms(&mut self) -> Result<f64, TrainBenchError> {
        let t = Instant::now();
        let outcome = train(&mut self.model, &self.samples, &[], &self.config, &Control::default(), &mut |_| {})?;
        if outcome.steps != 1 {
            return Err(TrainBenchError::NoStep(outcome.ended.to_string()));
        }
        Ok(t.elapsed().as_secs_f64() * 1e3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::HieraSize;

    #[test]
    fn a_step_of_two_slices_runs_and_is_timed() {
        // A micro model (the shape of the reference fixtures' one) at 64², so the step is quick.
        let mut config = Sam4emConfig::sam4em(HieraSize::Tiny);
        config.image_size = 64;
        let h = &mut config.hiera;
        (h.embed_dim, h.stages, h.global_att_blocks, h.window_pos_embed_bkg_spatial_size) =
            (16, vec![2, 2, 3, 2], vec![5], [7, 7]);
        config.neck.d_model = 32;
        (config.memory.memory_dim, config.memory.slots) = (16, 3);
        config.prompt_encoder.mask_in_chans = 8;
        let d = &mut config.decoder;
        (d.num_heads, d.mlp_dim, d.iou_head_hidden_dim) = (4, 64, 32);
        config.lora.rank = 4;
        config.validate().unwrap();
        let mut bench = TrainBench::new(&config, &Device::flex(), 2, ActivationsChoice::Keep).unwrap();
        assert_eq!(bench.plan.batch, 2);
        let ms = bench.step_ms().unwrap();
        assert!(ms > 0.0 && ms.is_finite(), "{ms}");
    }
}
