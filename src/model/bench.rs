//! `sam4em bench model`: per-slice encoder and full-model times at the model's input size on a
//! chosen device, with random weights (timing does not depend on the values), optionally next
//! to the official `sam2` PyTorch image encoder timed by `tests/bench/sam2_image_encoder.py`
//! in the same run on the same machine.

use std::collections::BTreeMap;
use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};

use super::config::{HieraSize, Sam4emConfig};
use super::nn::Init;
use super::sam4em::{Sam4em, StreamMode};
use super::weights::HostTensor;

/// Timings of one benchmark run, in milliseconds per slice (median over the timed runs).
#[derive(Clone, Debug, serde::Serialize)]
pub struct ModelTimes {
    /// Input side in pixels.
    pub image_size: usize,
    /// Trunk + neck per slice: the part that corresponds to SAM 2's image encoder.
    pub trunk_neck_ms: f64,
    /// Encoder (trunk + neck + fusion head) per slice.
    pub encoder_ms: f64,
    /// Memory + both decoders per slice, from a cached embedding.
    pub decode_ms: f64,
    /// Whole stream step (encoder + decode) per slice.
    pub full_ms: f64,
    /// Timed runs per figure.
    pub runs: usize,
}

/// The median of `v` (upper median for an even count; `NaN` when empty).
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Times `runs` slices (after one warm-up) of a randomly initialised model with merged LoRA
/// and one memory slot, as inference uses it.
pub fn time_model(config: &Sam4emConfig, device: &Device, runs: usize) -> anyhow::Result<ModelTimes> {
    let mut model = Sam4em::new(config, &Init::random(device));
    model.merge_lora();
    let s = config.image_size;
    let x: Tensor<4> = Tensor::random([1, 3, s, s], Distribution::Normal(0.0, 1.0), device);
    let sync = || device.sync().map_err(|e| anyhow::anyhow!("device error: {e:?}"));
    let mut state = model.start_stream(None, true);
    // Warm-up: kernel compilation and autotuning on GPU devices.
    let fused = model.embed(x.clone());
    let _ = model.stream_step(fused.clone(), &mut state, StreamMode::Clean);
    sync()?;
    let (mut trunk, mut enc, mut dec, mut full) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let levels = model.trunk_and_neck(x.clone());
        let _ = levels.last().map(|l| l.clone().into_data());
        trunk.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let fused = model.embed(x.clone());
        sync()?;
        enc.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let out = model.stream_step(fused, &mut state, StreamMode::Clean);
        let _ = out.logits1.clone().into_data();
        dec.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let fused = model.embed(x.clone());
        let out = model.stream_step(fused, &mut state, StreamMode::Clean);
        let _ = out.logits1.into_data();
        full.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(ModelTimes {
        image_size: s,
        trunk_neck_ms: median(trunk),
        encoder_ms: median(enc),
        decode_ms: median(dec),
        full_ms: median(full),
        runs: runs.max(1),
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
