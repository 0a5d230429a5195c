//! How much memory a training run will need, predicted from the model configuration, the
//! number of classes, the batch size and the device before anything runs, for both ways of
//! computing gradients (`backprop::Activations`).
//!
//! # The model of the peak
//! A training step's memory is what the autodiff graph keeps for the backward pass plus the
//! short-lived buffers of the operation running at the peak (matrix-product packing, im2col,
//! gradient temporaries). Both are proportional to the tensors a piece of the model works on,
//! so each piece's bytes are a sum of its natural sizes (tokens × width, attention scores,
//! full-resolution maps …) times a count of copies:
//!
//! - **Keep**: every piece's kept activations for the whole batch, alive together at the end
//!   of the forward pass, plus the largest transient of the backward pass.
//! - **Recompute**: the kept inputs of every piece for the whole batch (block inputs, fused
//!   features, prompts, logits), plus the largest single piece (its activations and
//!   transients): a Hiera block or the fusion head for the whole batch, or one slice's decode.
//! - Both add what lives through the run: gradients, AdamW's two moments, the updated
//!   parameters and the last good copy the NaN guard keeps, for every trained parameter.
//!
//! The copy counts were measured on the CPU backend with a counting allocator, one piece at a
//! time (a block, the fusion head, one decode; 2026-12-04): for Hiera blocks over the
//! 100 blocks of the tiny, small, base-plus and large trunks and the micro reference
//! configuration (kept activations fitted within 4 % per trunk, 15 % for the worst block);
//! for the fusion head and the decoders over eight configurations varying image size, width,
//! memory slots and memory width. `tests/train_memory.rs` checks whole runs against the
//! estimate. On a GPU the same tensors are allocated (cubecl rounds them up to its memory
//! pages, which the estimate does not model); the CPU's im2col and packing buffers are
//! replaced by the kernels' own, smaller, workspaces.

use burn::tensor::Device;
use serde::Serialize;

use super::config::{BlockLayout, Sam4emConfig};
use super::multi::is_shared;
use super::nn::{Init, Kind};
use super::sam4em::Sam4em;

const F32_BYTES: f64 = 4.0;

/// Predicted peak memory of a training run, in bytes above what the process holds when it
/// starts (the loaded model included).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct TrainingFootprint {
    /// Every activation kept for one backward pass over the batch.
    pub keep_bytes: u64,
    /// Block-level recomputation (`backprop::Activations::Recompute`).
    pub recompute_bytes: u64,
    /// The model's weights (the frozen trunk and every class's heads), for a caller that has
    /// not loaded the model yet (the app's trainer loads its own copy on its first run).
    pub weights_bytes: u64,
}

impl TrainingFootprint {
    /// The estimate of a run over batches of `batch` slices of `classes` classes.
    pub fn estimate(config: &Sam4emConfig, device: &Device, classes: usize, batch: usize) -> Self {
        TrainingMemoryModel::new(config, device).footprint(classes, batch)
    }

    /// The bytes for one way of computing gradients.
    pub fn bytes(&self, recompute: bool) -> u64 {
        if recompute { self.recompute_bytes } else { self.keep_bytes }
    }
}

/// The sizes the estimate needs from a configuration, worked out once (counting the model's
/// parameters builds it without values: milliseconds, but not for every frame); then
/// [`TrainingMemoryModel::footprint`] is arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct TrainingMemoryModel {
    /// Elements all trunk blocks keep, per slice.
    trunk_kept: f64,
    /// The largest block piece (kept + backward transients), per slice.
    trunk_peak: f64,
    /// The neck and fusion head, kept in a one-graph step and peak as a recomputed piece, per
    /// slice.
    fusion_kept: f64,
    fusion_peak: f64,
    /// One slice's decode for one class, kept and peak.
    decode_kept: f64,
    decode_peak: f64,
    /// What a recomputing step keeps per slice (block inputs, fused features), and per class
    /// and slice (prompt, both logits).
    inputs_kept: f64,
    inputs_kept_per_class: f64,
    /// The batch's own data per slice (image) and per class and slice (target, weight,
    /// gradients of the loss).
    data: f64,
    data_per_class: f64,
    /// Trained parameters with gradients: shared, and per class.
    trained_shared: f64,
    trained_per_class: f64,
    /// Every tensor of a one-class model, and the heads each further class adds.
    weights: f64,
    weights_per_class: f64,
}

impl TrainingMemoryModel {
    /// Works out the sizes of `config` for training on `device`. The CPU backend's attention
    /// recomputes its scores in the backward pass (`cpu_kernels::flex_attention_backward`);
    /// burn's composition, which cubecl devices run, keeps them.
    pub fn new(config: &Sam4emConfig, device: &Device) -> Self {
        let kernels = if super::device::is_cpu(device) { Kernels::Cpu } else { Kernels::Burn };
        let trunk = trunk_elements(config, kernels);
        let (fusion_kept, fusion_peak) = fusion_elements(config, kernels);
        let (decode_kept, decode_peak) = decode_elements(config, kernels);
        let counts = parameter_counts(config);
        let g2 = (config.grid() * config.grid()) as f64;
        let s2 = (config.image_size * config.image_size) as f64;
        TrainingMemoryModel {
            trunk_kept: trunk.kept,
            trunk_peak: trunk.peak_max,
            fusion_kept,
            fusion_peak,
            decode_kept,
            decode_peak,
            inputs_kept: block_inputs_elements(config) + config.neck.d_model as f64 * g2,
            inputs_kept_per_class: 3.0 * s2,
            data: 3.0 * s2,
            data_per_class: 6.0 * s2,
            trained_shared: counts.trained_shared,
            trained_per_class: counts.trained_per_class,
            weights: counts.all,
            weights_per_class: counts.heads,
        }
    }

    /// The estimate of a run over batches of `batch` slices of `classes` classes.
    pub fn footprint(&self, classes: usize, batch: usize) -> TrainingFootprint {
        let b = batch.max(1) as f64;
        let k = classes.max(1) as f64;
        // Gradients, AdamW's two moments, the updated values and the NaN guard's last good
        // copy of every trained parameter.
        let lasting = 5.0 * (self.trained_shared + k * self.trained_per_class);
        let data = self.data + k * self.data_per_class;
        // The peak of a one-graph step comes as the backward pass starts, in the decoders.
        let keep = lasting
            + b * (self.trunk_kept + self.fusion_kept + k * self.decode_kept + data)
            + (self.decode_peak - self.decode_kept);
        let largest_piece = (b * self.trunk_peak).max(b * self.fusion_peak).max(self.decode_peak);
        let recompute = lasting + b * (self.inputs_kept + k * self.inputs_kept_per_class + data) + largest_piece;
        TrainingFootprint {
            keep_bytes: (keep * F32_BYTES) as u64,
            recompute_bytes: (recompute * F32_BYTES) as u64,
            weights_bytes: ((self.weights + (k - 1.0) * self.weights_per_class) * F32_BYTES) as u64,
        }
    }
}

/// Which kernels a training step runs, which decides what it keeps for the backward pass and
/// how large its transients are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernels {
    /// burn's (cubecl devices): attention as matmul, softmax, matmul, whose scores, softmax
    /// in and out, are kept; burn's convolutions.
    Burn,
    /// The CPU's (`cpu_kernels`, `cpu_conv`): attention keeps q, k and v and recomputes the
    /// scores, one head at a time per thread; convolutions as per-tap or Winograd products.
    Cpu,
}

/// Per-slice elements of the trunk's blocks.
struct Trunk {
    /// Kept by all blocks together for the backward pass.
    kept: f64,
    /// The largest block's kept activations plus its backward transients.
    peak_max: f64,
}

/// The natural sizes of one Hiera block for one slice, in elements.
struct BlockSizes {
    /// Input tokens × input width.
    input: f64,
    /// Output tokens × MLP hidden width.
    hidden: f64,
    /// Tokens after window padding × 3 × output width (the fused q, k, v).
    qkv: f64,
    /// Attention scores: windows × heads × query tokens × key tokens.
    scores: f64,
    /// Tokens after padding × LoRA rank.
    lora: f64,
    /// Key tokens of one attention window (all tokens for global attention).
    key_tokens: f64,
    /// Output tokens × output width.
    output: f64,
}

fn block_sizes(l: &BlockLayout, side: usize, q_stride: usize, rank: usize, mlp_ratio: f64) -> BlockSizes {
    let tokens_in = (side * side) as f64;
    let side_out = if l.q_pool { side / q_stride.max(1) } else { side };
    let tokens_out = (side_out * side_out) as f64;
    let (windows, query_tokens, key_tokens, padded) = if l.window == 0 {
        (1.0, tokens_out, tokens_in, tokens_in)
    } else {
        let padded_side = side.div_ceil(l.window) * l.window;
        let per_side = (padded_side / l.window) as f64;
        let key = (l.window * l.window) as f64;
        let query = if l.q_pool { key / (q_stride * q_stride).max(1) as f64 } else { key };
        (per_side * per_side, query, key, (padded_side * padded_side) as f64)
    };
    BlockSizes {
        input: tokens_in * l.dim as f64,
        hidden: tokens_out * l.dim_out as f64 * mlp_ratio,
        qkv: padded * 3.0 * l.dim_out as f64,
        scores: windows * l.heads as f64 * query_tokens * key_tokens,
        lora: padded * rank as f64,
        key_tokens,
        output: tokens_out * l.dim_out as f64,
    }
}

/// Copies of each size a block keeps for its backward pass (least-squares fits).
///
/// With burn's kernels (fitted 2026-12-04, see the module docs): its input (layer norms, the
/// residual, the LoRA and window reshapes), the MLP's hidden layer, q/k/v, the attention
/// scores (softmax in and out), and the LoRA's rank-r products.
///
/// With the CPU's (whose LayerNorm, linear and attention steps keep only their inputs):
/// 5.87 copies of the input and 1.06 of q/k/v, a non-negative least-squares fit to
/// `tests/train_memory.rs`' `hiera_block_kept_and_peak` over the 108 blocks of the tiny, small,
/// B+ and large trunks at 256² (LoRA r 100) and the micro reference configuration: every
/// block within −7.7 % and +2.3 %, each trunk's sum within 2.6 % (2026-12-05). The fit before
/// these kernels counted 48 % more over those blocks.
fn block_kept(s: &BlockSizes, kernels: Kernels) -> f64 {
    match kernels {
        Kernels::Burn => 6.82 * s.input + 0.549 * s.hidden + 1.337 * s.qkv + 3.0 * s.scores + 2.125 * s.lora,
        Kernels::Cpu => 5.868 * s.input + 1.059 * s.qkv,
    }
}

/// What a block's backward pass allocates on top of what it kept: gradient temporaries of the
/// block's width (8 copies of the output), more the smaller the attention windows (547 copies
/// of the output per key token of a window: 42 in 4×4 windows, 8 in 8×8 ones), and 1.7
/// copies of the attention scores where burn's composition differentiates them (the CPU's
/// kernel holds one head's scores per thread). Within 40 % of the measured peak of each
/// block; the largest piece of a recomputing step is the fusion head (B+, tiny, large at
/// 512²) or one slice's decode, not a block. With the CPU's kernels and their own kept counts,
/// the largest block's estimated peak is within +4.5 % of the largest measured in each of the
/// five trunks of [`block_kept`]'s fit (single blocks range from −58 % to +9 %: small blocks
/// whose attention scratch is large for their size).
fn block_transient(s: &BlockSizes, kernels: Kernels) -> f64 {
    let score_grads = if kernels == Kernels::Burn { 1.7 * s.scores } else { 0.0 };
    8.0 * s.output + 547.0 * s.output / s.key_tokens + score_grads
}

fn trunk_elements(config: &Sam4emConfig, kernels: Kernels) -> Trunk {
    let h = &config.hiera;
    let mut side = config.grid();
    let mut trunk = Trunk { kept: 0.0, peak_max: 0.0 };
    for l in h.blocks() {
        let s = block_sizes(&l, side, h.q_stride[0], config.lora.rank, h.mlp_ratio);
        let (kept, transient) = (block_kept(&s, kernels), block_transient(&s, kernels));
        trunk.kept += kept;
        trunk.peak_max = trunk.peak_max.max(kept + transient);
        if l.q_pool {
            side /= h.q_stride[0].max(1);
        }
    }
    trunk
}

/// Per-slice elements the neck and fusion head keep in a one-graph step, 36.2 maps of d × g²
/// (five 3×3 or 1×1 convolutions with BatchNorm at the finest level, the upsampled coarser
/// levels and their concatenation; fitted 2026-12-04), and their peak as one recomputed piece:
/// 39.2 maps with burn's convolutions (fitted 2026-12-04 on the CPU with Flex's, which copy
/// the input into im2col tiles; kept for cubecl, unmeasured there), 30.6 maps with
/// `cpu_conv`'s, the largest that `tests/train_memory.rs`' `neck_and_fusion_head_peak_in_maps`
/// measured over five configurations (27.2–30.6, 2026-12-05).
fn fusion_elements(config: &Sam4emConfig, kernels: Kernels) -> (f64, f64) {
    let map = (config.neck.d_model * config.grid() * config.grid()) as f64;
    let piece = if kernels == Kernels::Cpu { 30.6 } else { 39.2 };
    (36.2 * map, piece * map)
}

/// Elements one slice's decode (memory, both prompt encoders, both decoders) keeps, and its
/// peak with the backward pass: about 90 maps of d × g² (the two-way transformers over g²
/// tokens, the upscalers to full resolution and the stage-2 skip fusion), full-resolution maps
/// that do not depend on d (the mask prompt, logits, losses: 476 and, at the peak, 1,016
/// maps of g²), the prompt encoder's mask downscaling (12 per mask channel), 3.6 copies of the
/// slot memory, and the cross-attention scores (per head) where they are kept. Least-squares
/// fit over twelve configurations (scores kept), every one within 1.1 %.
///
/// The peak also stands for a recomputing step's decode piece, which it overstates on the
/// CPU: measured alone (`tests/train_memory.rs`' `decode_peak_per_grid_cell`, 2026-12-05),
/// that piece is 2,095 elements per g² at the micro configuration with the CPU's kernels
/// (34.3 MB; `g² (59.0 d + 180 + 3.30 M)` over eight configurations, M the slot memory's
/// channels × slots, before the CPU's LayerNorm backward, which took 7–8 % off), 49 % of
/// this. But a recomputing run of that configuration at batch 2 peaks at 66 MB, about 20 MB
/// above the estimate's other terms plus that piece; heaptrack puts the peak inside the
/// second pass's decode piece, spread over many buffers of the memory module and decoders
/// rather than one. Until that is understood this figure stands in for the piece: +24 % at
/// batch 2, which errs on the safe side.
///
/// The fit's configurations all had two-way transformers of depth 2 (SAM's). Each layer of
/// depth (in both decoders together) keeps 10.3 maps of d × g² and adds 10.25 at the peak,
/// and its cross-attentions (two per layer, plus the final one) their scores: measured on the
/// CPU with `tests/train_memory.rs` at the second reference configuration of
/// `tests/reference/other-config.json` (320², d 48) with depth 1 and depth 2 (2026-12-06:
/// one layer less took 99.7 MB off a batch of 8 with every activation kept, 12.6 MB off the
/// peak of a recomputing batch of 2). Without it, depth 1 was overestimated by 19 % and 37 %.
fn decode_elements(config: &Sam4emConfig, kernels: Kernels) -> (f64, f64) {
    let g2 = (config.grid() * config.grid()) as f64;
    let d = config.neck.d_model as f64;
    let mask_channels = config.prompt_encoder.mask_in_chans as f64;
    let memory = (config.memory.slots * config.memory.memory_dim) as f64;
    let depth = config.decoder.depth as f64;
    // The fitted depth-2 figures' scores were those of 5 cross-attentions per decoder.
    let attentions = (2.0 * depth + 1.0) / 5.0;
    let heads = if kernels == Kernels::Burn { config.decoder.num_heads as f64 } else { 0.0 };
    let kept =
        g2 * ((68.05 + 10.3 * depth) * d + 476.2 + 12.13 * mask_channels + 3.58 * memory + 107.9 * heads * attentions);
    let peak = g2
        * ((72.12 + 10.25 * depth) * d + 1016.4 + 12.04 * mask_channels + 3.58 * memory + 39.75 * heads * attentions);
    (kept, peak)
}

/// Elements of every block's input for one slice (what a recomputing step keeps of the trunk).
fn block_inputs_elements(config: &Sam4emConfig) -> f64 {
    let h = &config.hiera;
    let mut side = config.grid();
    let mut total = 0.0;
    for l in h.blocks() {
        total += (side * side * l.dim) as f64;
        if l.q_pool {
            side /= h.q_stride[0].max(1);
        }
    }
    total
}

/// Parameter and tensor counts of a configuration.
struct Counts {
    /// Trained parameters that receive gradients on the shared encoder side (LoRA, fusion
    /// head).
    trained_shared: f64,
    /// The same per class (memory, prompt encoder, both decoders).
    trained_per_class: f64,
    /// Every tensor of a one-class model.
    all: f64,
    /// The tensors of one class's heads.
    heads: f64,
}

/// Counted from the model's own tensor list (the model built without values).
fn parameter_counts(config: &Sam4emConfig) -> Counts {
    let mut model = Sam4em::new(config, &Init::shapes_only(&Device::flex()));
    let mut c = Counts { trained_shared: 0.0, trained_per_class: 0.0, all: 0.0, heads: 0.0 };
    for (key, kind, shape) in model.schema() {
        let n = shape.iter().product::<usize>() as f64;
        c.all += n;
        if !is_shared(&key) {
            c.heads += n;
        }
        // The fusion head's downsampling branches and the second prompt encoder are never
        // run, so they get no gradient and no optimiser state.
        let unused = key.starts_with("fpn.downsampling") || key.starts_with("prompt_encoder2.");
        if kind != Kind::Param || !Sam4em::is_trainable(&key) || unused {
            continue;
        }
        if is_shared(&key) {
            c.trained_shared += n;
        } else {
            c.trained_per_class += n;
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::HieraSize;

    #[test]
    fn recomputation_grows_slower_with_the_batch_than_keeping_everything() {
        let c = Sam4emConfig::sam4em(HieraSize::BasePlus);
        let one = TrainingFootprint::estimate(&c, &Device::flex(), 1, 1);
        let eight = TrainingFootprint::estimate(&c, &Device::flex(), 1, 8);
        assert!(one.recompute_bytes < one.keep_bytes);
        let keep_growth = eight.keep_bytes - one.keep_bytes;
        let recompute_growth = eight.recompute_bytes - one.recompute_bytes;
        assert!(recompute_growth * 4 < keep_growth, "{eight:?} vs {one:?}");
        // More classes cost decodes, not encoder passes.
        let three = TrainingFootprint::estimate(&c, &Device::flex(), 3, 8);
        assert!(three.keep_bytes > eight.keep_bytes && three.recompute_bytes >= eight.recompute_bytes);
    }

    #[test]
    fn parameters_are_counted_from_the_model() {
        let c = Sam4emConfig::sam4em(HieraSize::BasePlus);
        let mut model = Sam4em::new(&c, &Init::shapes_only(&Device::flex()));
        let (total, trainable) = model.param_counts();
        let counts = parameter_counts(&c);
        let trained = counts.trained_shared + counts.trained_per_class;
        // Those that get gradients are the trainable ones minus the never-run branches.
        assert!(trained < trainable as f64 && trained > 0.7 * trainable as f64, "{trained}");
        assert!(counts.all >= total as f64, "buffers come on top of the parameters");
    }
}
