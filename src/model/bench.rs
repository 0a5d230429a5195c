//! `sam4em bench model`: per-slice encoder and full-model times at the model's input size on a
//! chosen device, with random weights (timing does not depend on the values), optionally next
//! to the official `sam2` PyTorch image encoder timed by `tests/bench/sam2_image_encoder.py`
//! in the same run on the same machine.

use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};

use super::config::Sam4emConfig;
use super::nn::Init;
use super::sam4em::{Sam4em, StreamMode};

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

fn median(mut v: Vec<f64>) -> f64 {
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
