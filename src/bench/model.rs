//! `sam4em bench model`: per-slice encoder, decoder and whole-stream times at the model's input
//! size on a chosen device, with random weights (timing does not depend on the values). Each
//! figure is one timed run per call, so that the CLI can interleave it with the original
//! PyTorch code run by run (`tests/bench/model_torch.py`).

use std::collections::BTreeMap;
use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};

use crate::model::config::{HieraSize, Sam4emConfig};
use crate::model::multi::MultiModel;
use crate::model::nn::Init;
use crate::model::sam4em::{Sam4em, StreamMode, StreamState};
use crate::model::weights::HostTensor;

/// A figure of `bench model` on our side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Figure {
    /// Hiera trunk + FPN neck: SAM 2's image encoder.
    TrunkNeck,
    /// Trunk + neck + SAM4EM's fusion head.
    Encoder,
    /// Memory + both decoders for one class, from a cached embedding.
    Decode,
    /// A whole stream step for one class: encoder + memory + both decoders (the reference's
    /// forward at batch 1).
    Full,
    /// A stream step as the app runs it: one encoder pass, then memory + both decoders for
    /// each of three classes.
    App,
}

impl Figure {
    /// Every figure, in the order they are printed.
    pub const ALL: [Figure; 5] = [Figure::TrunkNeck, Figure::Encoder, Figure::Decode, Figure::Full, Figure::App];

    /// The figure's name in JSON reports (`trunk_neck`, …).
    pub fn name(self) -> &'static str {
        match self {
            Figure::TrunkNeck => "trunk_neck",
            Figure::Encoder => "encoder",
            Figure::Decode => "decode",
            Figure::Full => "full",
            Figure::App => "app",
        }
    }

    /// A short description for tables.
    pub fn describe(self) -> &'static str {
        match self {
            Figure::TrunkNeck => "trunk + neck (SAM 2's image encoder)",
            Figure::Encoder => "encoder (trunk + neck + fusion)",
            Figure::Decode => "decode (memory + 2 decoders), 1 class",
            Figure::Full => "full stream step, 1 class",
            Figure::App => "full stream step as the app runs it, 3 classes",
        }
    }
}

/// Classes of the [`Figure::App`] run: the app's three.
pub const APP_CLASSES: [&str; 3] = ["glia", "mitochondria", "psd"];

/// A randomly initialised model with merged LoRA, its streams started with the checkpoint's
/// memory slots (as the reference and the app run), ready to time one slice per call.
pub struct ModelBench {
    one: Sam4em,
    one_state: StreamState,
    app: MultiModel,
    app_states: Vec<StreamState>,
    x: Tensor<4>,
    device: Device,
}

impl ModelBench {
    /// Builds the models and runs every figure once (kernel compilation and autotuning on GPU
    /// devices, first-touch allocations on the CPU).
    pub fn new(config: &Sam4emConfig, device: &Device) -> anyhow::Result<Self> {
        let mut base = Sam4em::new(config, &Init::random(device));
        base.merge_lora();
        let names: Vec<String> = APP_CLASSES.iter().map(|c| c.to_string()).collect();
        // The app's classes share the encoder and have a decoder each; the weights' values do
        // not change the cost.
        let app = MultiModel::new(base.clone(), &names);
        let s = config.image_size;
        let mut bench = ModelBench {
            one_state: base.start_stream(None, false),
            app_states: app.start_streams(vec![None; names.len()]),
            one: base,
            app,
            x: Tensor::random([1, 3, s, s], Distribution::Normal(0.0, 1.0), device),
            device: device.clone(),
        };
        for figure in Figure::ALL {
            bench.time_ms(figure)?;
        }
        Ok(bench)
    }

    /// The model's input side in pixels.
    pub fn image_size(&self) -> usize {
        self.one.config.image_size
    }

    /// One timed run of `figure`, in milliseconds (the result read back to the host, as a
    /// caller would).
    pub fn time_ms(&mut self, figure: Figure) -> anyhow::Result<f64> {
        let sync = |d: &Device| d.sync().map_err(|e| anyhow::anyhow!("device error: {e:?}"));
        let x = self.x.clone();
        let fused = match figure {
            Figure::Decode => {
                let fused = self.one.embed(x.clone());
                sync(&self.device)?;
                Some(fused)
            }
            _ => None,
        };
        let t = Instant::now();
        match figure {
            Figure::TrunkNeck => {
                let levels = self.one.trunk_and_neck(x);
                let _ = levels.last().map(|l| l.clone().into_data());
            }
            Figure::Encoder => {
                let _ = self.one.embed(x).into_data();
            }
            Figure::Decode | Figure::Full => {
                let fused = fused.unwrap_or_else(|| self.one.embed(x));
                let out = self.one.stream_step(fused, &mut self.one_state, StreamMode::Clean);
                let _ = out.logits1.into_data();
            }
            Figure::App => {
                let fused = self.app.embed(x);
                for out in self.app.stream_step(fused, &mut self.app_states, StreamMode::Clean) {
                    let _ = self.app.reported_logits(&out).0.into_data();
                }
            }
        }
        sync(&self.device)?;
        Ok(t.elapsed().as_secs_f64() * 1e3)
    }
}

/// Prediction of whole slices larger than the model input at native resolution, as
/// `sam4em predict --scale 1` runs it: every tile encoded, decoded with its own stream for one
/// class, and blended.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct TiledFigure {
    /// Slice side in pixels.
    pub slice_px: usize,
    /// Tiles per slice.
    pub tiles_per_slice: usize,
    /// Slices timed.
    pub slices: usize,
    /// Their wall time.
    pub seconds: f64,
    /// Tiles per second.
    pub tiles_per_s: f64,
    /// Slices per second.
    pub slices_per_s: f64,
}

/// Times `slices` slices of `slice_px × slice_px` predicted at scale 1 with a randomly
/// initialised model of `config` on `device` (after a warm-up on one slice of the model input,
/// which compiles a GPU's kernels).
pub fn tiled_slices(
    config: &Sam4emConfig,
    device: &Device,
    slice_px: usize,
    slices: usize,
) -> anyhow::Result<TiledFigure> {
    use crate::infer::{Flow, Predictor, Scale, StackRequest, TileGrid};
    use crate::state::SliceIndex;
    let mut base = Sam4em::new(config, &Init::random(device));
    base.merge_lora();
    let model = MultiModel::new(base, &["mitochondria".to_string()]);
    let s = config.image_size;
    let run = |side: usize, depth: usize| -> anyhow::Result<f64> {
        // Any image costs the same; this one is not flat, so the masks are not trivial.
        let image: Vec<u8> = (0..side * side).map(|i| ((i % side) * 7 + (i / side) * 13) as u8).collect();
        let request = StackRequest {
            width: side,
            height: side,
            range: 0..depth,
            visible: SliceIndex(0),
            seeds: Vec::new(),
            max_warmup_slices: 0,
            scale: Scale::NATIVE,
            fill: None,
        };
        let mut predictor = Predictor::new(&model, 1);
        let t = Instant::now();
        predictor.predict(&request, &mut |_| Ok(image.clone()), &mut |_, _| Flow::Continue)?;
        Ok(t.elapsed().as_secs_f64())
    };
    run(s, 1)?;
    let seconds = run(slice_px, slices)?;
    let tiles_per_slice = TileGrid::new(slice_px, slice_px, s, Scale::NATIVE).len();
    Ok(TiledFigure {
        slice_px,
        tiles_per_slice,
        slices,
        seconds,
        tiles_per_s: (tiles_per_slice * slices) as f64 / seconds.max(1e-9),
        slices_per_s: slices as f64 / seconds.max(1e-9),
    })
}

/// The tensors of an official SAM 2 checkpoint of `size` (SAM 2's key names, checkpoint
/// layout) with SAM4EM's random initialisation: the trunk and neck, and the prompt encoder and
/// mask decoder that SAM4EM takes from SAM 2 (SAM 2's video-memory modules and the decoder
/// heads SAM4EM replaces are left out; the loader does not use them). For memory and speed runs
/// where no official file can be downloaded: loading, training and predicting cost exactly
/// what they cost with the official file.
pub fn random_sam2_checkpoint(size: HieraSize, seed: u64) -> BTreeMap<String, HostTensor> {
    let device = Device::flex();
    device.seed(seed);
    let mut model = Sam4em::new(&Sam4emConfig::sam4em(size), &Init::random(&device));
    let replaced = ["mask_tokens", "output_hypernetworks_mlps.", "iou_prediction_head.", "skip_connect."];
    model
        .state_dict(&|_, _| true)
        .into_iter()
        .filter_map(|(key, t)| {
            let key = key.strip_prefix("sam.")?;
            let name = if let Some(rest) = key.strip_prefix("image_encoder.") {
                if rest.contains(".linear_a_") || rest.contains(".linear_b_") {
                    return None;
                }
                format!("image_encoder.{}", rest.replace(".attn.qkv.qkv.", ".attn.qkv."))
            } else if let Some(rest) = key.strip_prefix("prompt_encoder.") {
                format!("sam_prompt_encoder.{rest}")
            } else if let Some(rest) = key.strip_prefix("mask_decoder.") {
                if replaced.iter().any(|r| rest.starts_with(r)) {
                    return None;
                }
                format!("sam_mask_decoder.{rest}")
            } else {
                return None;
            };
            Some((name, t))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Sam2Mapping, StateDict};

    #[test]
    fn a_random_checkpoint_loads_as_an_official_one_does() {
        let tensors = random_sam2_checkpoint(HieraSize::Tiny, 7);
        let dict = StateDict { tensors, ..Default::default() }.declared_only();
        let mut model = Sam4em::new(&Sam4emConfig::sam4em(HieraSize::Tiny), &Init::shapes_only(&Device::flex()));
        let report = model.load_sam2_state(&dict, Sam2Mapping::BothStages).unwrap();
        assert!(report.ignored.is_empty(), "{:?}", report.ignored);
        let used: std::collections::BTreeSet<&String> = report.loaded.values().collect();
        assert_eq!(used.len(), dict.tensors.len(), "every tensor of the file is used");
        assert!(report.loaded.keys().any(|k| k.starts_with("mask_decoder.")), "stage 1 too");
    }
}
