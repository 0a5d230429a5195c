//! The whole SAM4EM model: encoder (Hiera + neck + sine PE + fusion head), slice memory, two
//! prompt encoders and two mask decoders; the `embed` / `decode` split; streaming over a stack;
//! and loading the three checkpoint kinds.
//!
//! # Streaming modes
//! - [`StreamMode::Faithful`] reproduces the reference's validation loop: slices go in batches
//!   of `stream.batch_size`; inside a batch the next slice is prompted with the stage-2 mask at
//!   0.5, across a batch boundary with the stage-1 mask at 0.4 (the reported prediction); the
//!   first slice is prompted with the seed (the reference uses its ground truth).
//! - [`StreamMode::Clean`] drops the batch-boundary rule (every slice is prompted with the
//!   previous slice's stage-2 mask at 0.5, so results do not depend on a batch size), starts
//!   from the seed the user gives or from an empty mask, and always starts with fresh memory.
//!   Loading SAM 2 weights the clean way ([`Sam2Mapping::BothStages`]) also fixes the
//!   reference's bug that left the stage-1 decoder random.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use burn::tensor::{Device, Tensor};

use super::config::Sam4emConfig;
use super::decoder::MaskDecoder;
use super::fusion::FusionHead;
use super::hiera::{FpnNeck, Hiera};
use super::memory::{MemoryModule, MemoryState};
use super::nn::{AnyTensor, Init, Kind, Slot, Visitor, from_vec};
use super::pe;
use super::prompt::PromptEncoder;
use super::weights::{HostTensor, StateDict, WeightsError};

/// Everything the encoder produced for a batch, for golden tests and debugging.
#[derive(Clone, Debug, Default)]
pub struct EncoderTrace {
    /// Named intermediate tensors: `patch_embed`, `block.{i}` (NHWC), `trunk.{k}`, `neck.{k}`
    /// (NCHW, all four levels before `scalp`).
    pub tensors: Vec<(String, Tensor<4>)>,
}

/// What decoding one slice produced.
#[derive(Clone, Debug)]
pub struct SliceOutput {
    /// Stage-1 logits `[1, 1, S, S]` (the reference's reported output, thresholded at 0.4).
    pub logits1: Tensor<4>,
    /// Stage-2 logits `[1, 1, S, S]`.
    pub logits2: Tensor<4>,
    /// Dense prompt embedding of the mask the slice was conditioned on `[1, d, g, g]`.
    pub dense: Tensor<4>,
    /// Memory module output `[1, d, g, g]`.
    pub enhanced: Tensor<4>,
    /// Stage-1 upscaled features `[1, d/8, S, S]`.
    pub upscaled1: Tensor<4>,
    /// Stage-1 transformer token outputs `[1, T, d]`.
    pub tokens1: Tensor<3>,
    /// Stage-1 transformer image outputs `[1, g², d]`.
    pub keys1: Tensor<3>,
}

/// What the training forward of a batch gives for one class (see `MultiModel::forward_train`).
#[derive(Clone, Debug)]
pub struct TrainBatch {
    /// Stage-1 logits `[B, 1, S, S]`.
    pub logits1: Tensor<4>,
    /// Stage-2 logits `[B, 1, S, S]`.
    pub logits2: Tensor<4>,
    /// Prompt for the first slice of the next batch `[1, 1, S, S]`.
    pub next_prompt: Tensor<4>,
}

/// How a stack is streamed; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamMode {
    /// The reference's rules, batch boundaries included.
    Faithful,
    /// Batch-independent rules: every slice prompted by the previous stage-2 mask at 0.5.
    Clean,
}

/// Direction of a streaming pass in z.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Increasing slice index.
    Forward,
    /// Decreasing slice index.
    Reverse,
}

/// The streaming state between slices: memory and the prompt for the next slice.
#[derive(Clone, Debug)]
pub struct StreamState {
    /// Slice memory.
    pub memory: MemoryState,
    /// Binary mask prompting the next slice `[1, 1, S, S]`.
    pub prompt: Tensor<4>,
    /// Slices decoded so far in this pass.
    pub position: usize,
}

/// Parameter groups. Everything but the frozen encoder is trained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ParamGroup {
    /// SAM 2's trunk and neck weights (frozen).
    FrozenEncoder,
    /// LoRA adapters on the trunk's qkv.
    Lora,
    /// The fusion head.
    Fusion,
    /// The slice memory.
    Memory,
    /// Both prompt encoders.
    PromptEncoders,
    /// Both mask decoders.
    Decoders,
}

/// Where SAM 2's mask decoder and prompt encoder go when loading an official checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sam2Mapping {
    /// As the reference: into the stage-2 modules only (stage 1 stays random).
    Stage2Only,
    /// Into both stages (the clean mode).
    BothStages,
}

/// What a load did, by key.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    /// Model key ← checkpoint key, for every tensor set.
    pub loaded: BTreeMap<String, String>,
    /// Checkpoint keys deliberately discarded (SAM 2's video memory, heads of other shapes).
    pub ignored: Vec<String>,
    /// Model keys the checkpoint did not provide (kept at their initial values).
    pub not_provided: Vec<String>,
}

/// The SAM4EM model.
#[derive(Clone, Debug)]
pub struct Sam4em {
    /// Configuration.
    pub config: Sam4emConfig,
    /// `image_encoder.trunk`.
    pub trunk: Hiera,
    /// `image_encoder.neck`.
    pub neck: FpnNeck,
    /// `fpn`.
    pub fusion: FusionHead,
    /// `mem`.
    pub memory: MemoryModule,
    /// `prompt_encoder` (stage 1; its Gaussian matrix serves both decoders).
    pub prompt_encoder: PromptEncoder,
    /// `prompt_encoder2` (its embeddings are computed and discarded by the reference; kept
    /// for loading and counting).
    pub prompt_encoder2: PromptEncoder,
    /// `mask_decoder` (stage 1).
    pub mask_decoder: MaskDecoder,
    /// `mask_decoder2` (stage 2, with the skip fusion).
    pub mask_decoder2: MaskDecoder,
    /// Sine position encodings of the three kept neck levels (fixed).
    pub neck_pe: Vec<Tensor<4>>,
    /// `prompt_encoder.get_dense_pe()` (derived from the Gaussian matrix).
    pub image_pe: Tensor<4>,
}

/// Logit of a probability threshold: sigmoid(x) > t ⇔ x > logit(t).
pub fn logit(t: f64) -> f64 {
    (t / (1.0 - t)).ln()
}

impl Sam4em {
    /// Builds the model with the reference's random initialisation (or structure only).
    pub fn new(config: &Sam4emConfig, init: &Init) -> Self {
        let g = config.grid();
        let d = config.neck.d_model;
        let stage_dims = config.hiera.stage_dims();
        let device = &init.device;
        let neck_pe = (0..3)
            .map(|k| {
                let s = g >> k;
                let data = pe::sine_pe(d, s, s, config.neck.pe_temperature, config.neck.pe_normalize);
                from_vec(data, [1, d, s, s], device)
            })
            .collect();
        let prompt_encoder = PromptEncoder::new(d, config.image_size, config.prompt_encoder.mask_in_chans, init);
        let image_pe = if init.shapes_only { Tensor::zeros([1, d, g, g], device) } else { prompt_encoder.dense_pe(g) };
        Sam4em {
            trunk: Hiera::new(&config.hiera, config.lora.rank, g, init),
            neck: FpnNeck::new(&config.neck, &stage_dims, init),
            fusion: FusionHead::new(d, g, init),
            memory: MemoryModule::new(&config.memory, d, g, init),
            prompt_encoder,
            prompt_encoder2: PromptEncoder::new(d, config.image_size, config.prompt_encoder.mask_in_chans, init),
            mask_decoder: MaskDecoder::new(d, &config.decoder, init),
            mask_decoder2: MaskDecoder::new(d, &config.decoder, init),
            neck_pe,
            image_pe,
            config: config.clone(),
        }
    }

    /// The device the model lives on.
    pub fn device(&self) -> Device {
        self.image_pe.device()
    }

    /// Lists every tensor under the reference's bare module names (no `sam.` prefix; LoRA
    /// wrapped qkv as `attn.qkv.qkv.*`).
    pub fn visit(&mut self, v: &mut dyn Visitor) {
        self.trunk.visit("image_encoder.trunk", v);
        self.neck.visit("image_encoder.neck", v);
        self.prompt_encoder.visit("prompt_encoder", v);
        self.mask_decoder.visit("mask_decoder", v);
        self.prompt_encoder2.visit("prompt_encoder2", v);
        self.mask_decoder2.visit("mask_decoder2", v);
        self.fusion.visit("fpn", v);
        self.memory.visit("mem", v);
    }

    /// Whether a parameter is trained: everything outside the image encoder, plus the LoRA
    /// adapters inside it (the reference freezes the encoder before adding them).
    pub fn is_trainable(key: &str) -> bool {
        Self::group(key) != ParamGroup::FrozenEncoder
    }

    /// Which group a tensor belongs to (for per-group learning rates, freezing, reporting).
    pub fn group(key: &str) -> ParamGroup {
        if key.starts_with("image_encoder.") {
            if key.contains(".linear_a_") || key.contains(".linear_b_") {
                ParamGroup::Lora
            } else {
                ParamGroup::FrozenEncoder
            }
        } else if key.starts_with("fpn.") {
            ParamGroup::Fusion
        } else if key.starts_with("mem.") {
            ParamGroup::Memory
        } else if key.starts_with("prompt_encoder") {
            ParamGroup::PromptEncoders
        } else {
            ParamGroup::Decoders
        }
    }

    /// Parameter count per group (buffers excluded).
    pub fn group_counts(&mut self) -> BTreeMap<ParamGroup, usize> {
        let mut counts = BTreeMap::new();
        for (key, kind, shape) in self.schema() {
            if kind == Kind::Param {
                *counts.entry(Self::group(&key)).or_insert(0) += shape.iter().product::<usize>();
            }
        }
        counts
    }

    /// (total, trainable) parameter counts, buffers excluded — what the reference prints.
    pub fn param_counts(&mut self) -> (usize, usize) {
        struct Count(usize, usize);
        impl Visitor for Count {
            fn visit(&mut self, key: &str, kind: Kind, slot: Slot<'_>) {
                if kind == Kind::Param {
                    self.0 += slot.numel();
                    if Sam4em::is_trainable(key) {
                        self.1 += slot.numel();
                    }
                }
            }
        }
        let mut c = Count(0, 0);
        self.visit(&mut c);
        (c.0, c.1)
    }

    /// Every tensor's key, kind and checkpoint-layout shape.
    pub fn schema(&mut self) -> Vec<(String, Kind, Vec<usize>)> {
        struct Collect(Vec<(String, Kind, Vec<usize>)>);
        impl Visitor for Collect {
            fn visit(&mut self, key: &str, kind: Kind, slot: Slot<'_>) {
                self.0.push((key.to_string(), kind, slot.checkpoint_shape()));
            }
        }
        let mut c = Collect(Vec::new());
        self.visit(&mut c);
        c.0
    }

    /// Recomputes what derives from loaded tensors: the trunk's interpolated position
    /// embedding and the decoders' image position encoding.
    pub fn refresh_derived(&mut self) {
        let g = self.config.grid();
        self.trunk.refresh_pos_embed(g);
        self.image_pe = self.prompt_encoder.dense_pe(g);
    }

    /// Folds the LoRA adapters into the frozen qkv weights (inference only).
    pub fn merge_lora(&mut self) {
        for b in &mut self.trunk.blocks {
            b.qkv.merge();
        }
    }

    /// Sets tensors from `dict` through `map` (model key → checkpoint key). Keys `map` sends
    /// nowhere stay as they are. Shapes are checked; the first mismatch is an error.
    fn apply(
        &mut self,
        dict: &StateDict,
        map: &dyn Fn(&str) -> Option<String>,
        report: &mut LoadReport,
    ) -> Result<(), WeightsError> {
        struct Apply<'a> {
            dict: &'a StateDict,
            map: &'a dyn Fn(&str) -> Option<String>,
            device: Device,
            report: &'a mut LoadReport,
            error: Option<WeightsError>,
        }
        impl Visitor for Apply<'_> {
            fn visit(&mut self, key: &str, _kind: Kind, mut slot: Slot<'_>) {
                if self.error.is_some() {
                    return;
                }
                let Some(ck) = (self.map)(key) else {
                    self.report.not_provided.push(key.to_string());
                    return;
                };
                let Some(t) = self.dict.tensors.get(&ck) else {
                    self.report.not_provided.push(key.to_string());
                    return;
                };
                let expected = slot.checkpoint_shape();
                if t.shape != expected {
                    self.error = Some(WeightsError::Shape {
                        key: ck,
                        expected,
                        found: t.shape.clone(),
                        path: self.dict.source.clone(),
                    });
                    return;
                }
                if !t.is_declared() {
                    if t.data.iter().any(|v| !v.is_finite()) {
                        self.error = Some(WeightsError::NonFinite { key: ck, path: self.dict.source.clone() });
                        return;
                    }
                    slot.set_from_host(t.data.clone(), &self.device);
                }
                self.report.loaded.insert(key.to_string(), ck);
            }
        }
        let device = self.device();
        let mut a = Apply { dict, map, device, report, error: None };
        self.visit(&mut a);
        if let Some(e) = a.error {
            return Err(e);
        }
        if !dict.tensors.values().any(HostTensor::is_declared) {
            self.refresh_derived();
        }
        Ok(())
    }

    /// Loads a checkpoint in the original SAM4EM trainer's key format (`sam.` prefix, also
    /// under DDP's `module.`): every model tensor must be present, and every float tensor of
    /// the file must find a place.
    pub fn load_sam4em_state(&mut self, dict: &StateDict) -> Result<LoadReport, WeightsError> {
        self.load_subset(dict, &|_, _| true)
    }

    /// Loads exactly the model tensors `select` picks, from trainer-format keys (`sam.`, or
    /// `module.sam.` as DDP saves them): each must be present, and the file may hold nothing
    /// else (whole trainer checkpoints, adapter files).
    pub fn load_subset(
        &mut self,
        dict: &StateDict,
        select: &dyn Fn(&str, Kind) -> bool,
    ) -> Result<LoadReport, WeightsError> {
        let wanted: BTreeSet<String> =
            self.schema().into_iter().filter(|(k, kind, _)| select(k, *kind)).map(|(k, _, _)| k).collect();
        let prefix = if dict.tensors.keys().any(|k| k.starts_with("module.sam.")) { "module.sam." } else { "sam." };
        let mut report = LoadReport::default();
        self.apply(dict, &|k| wanted.contains(k).then(|| format!("{prefix}{k}")), &mut report)?;
        let missing: Vec<String> = report.not_provided.iter().filter(|k| wanted.contains(*k)).cloned().collect();
        if !missing.is_empty() {
            return Err(WeightsError::Missing { keys: missing, path: dict.source.clone() });
        }
        let used: BTreeSet<&String> = report.loaded.values().collect();
        let unknown: Vec<String> = dict.tensors.keys().filter(|k| !used.contains(k)).cloned().collect();
        if !unknown.is_empty() {
            return Err(WeightsError::Unexpected { keys: unknown, path: dict.source.clone() });
        }
        Ok(report)
    }

    /// Reads a SAM4EM trainer checkpoint (`.pth` with `model_state_dict`, or safetensors with
    /// the same keys) and loads it.
    pub fn load_sam4em_file(&mut self, path: &Path) -> Result<LoadReport, WeightsError> {
        let dict = StateDict::read(path)?;
        self.load_sam4em_state(&dict)
    }

    /// Loads an official SAM 2 / SAM 2.1 state dict: the trunk and neck 1:1 (fused qkv into the
    /// LoRA wrapper), the prompt encoder and mask decoder into stage 2 (or both stages), minus
    /// SAM 2's heads whose shapes differ (`mask_tokens`, hypernetwork MLPs, IoU head); SAM 2's
    /// video-memory modules are discarded. Trunk or neck tensors missing from the file, and
    /// unknown keys under the three used prefixes, are errors naming them.
    pub fn load_sam2_state(&mut self, dict: &StateDict, mapping: Sam2Mapping) -> Result<LoadReport, WeightsError> {
        const EXCLUDED: [&str; 3] = ["mask_tokens.", "output_hypernetworks_mlps.", "iou_prediction_head."];
        if !dict.tensors.is_empty()
            && dict.tensors.keys().all(|k| k.starts_with("sam.") || k.starts_with("module.sam."))
        {
            return Err(WeightsError::Format {
                reason: "this is a SAM4EM trainer checkpoint, not an official SAM 2 one; load it as a SAM4EM model"
                    .into(),
                path: dict.source.clone(),
            });
        }
        let map = move |k: &str| -> Option<String> {
            if let Some(rest) = k.strip_prefix("image_encoder.") {
                if k.contains(".linear_a_") || k.contains(".linear_b_") {
                    return None;
                }
                return Some(format!("image_encoder.{}", rest.replace(".attn.qkv.qkv.", ".attn.qkv.")));
            }
            let (stage2, rest, is_decoder) = if let Some(r) = k.strip_prefix("prompt_encoder2.") {
                (true, r, false)
            } else if let Some(r) = k.strip_prefix("mask_decoder2.") {
                (true, r, true)
            } else if let Some(r) = k.strip_prefix("prompt_encoder.") {
                (false, r, false)
            } else if let Some(r) = k.strip_prefix("mask_decoder.") {
                (false, r, true)
            } else {
                return None;
            };
            if !stage2 && mapping == Sam2Mapping::Stage2Only {
                return None;
            }
            if is_decoder {
                if EXCLUDED.iter().any(|e| rest.starts_with(e)) || rest.starts_with("skip_connect.") {
                    return None;
                }
                Some(format!("sam_mask_decoder.{rest}"))
            } else {
                Some(format!("sam_prompt_encoder.{rest}"))
            }
        };
        let mut report = LoadReport::default();
        self.apply(dict, &map, &mut report)?;
        let missing: Vec<String> = report
            .not_provided
            .iter()
            .filter(|k| k.starts_with("image_encoder.") && !k.contains(".linear_"))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(WeightsError::Missing { keys: missing, path: dict.source.clone() });
        }
        let used: BTreeSet<&String> = report.loaded.values().collect();
        let mut unknown = Vec::new();
        let all_keys = dict.tensors.keys().chain(dict.other.keys());
        for k in all_keys {
            if used.contains(k) {
                continue;
            }
            let known_prefix =
                ["image_encoder.", "sam_prompt_encoder.", "sam_mask_decoder."].iter().any(|p| k.starts_with(p));
            let deliberately_dropped = k.starts_with("sam_mask_decoder.")
                && (EXCLUDED.iter().any(|e| k["sam_mask_decoder.".len()..].starts_with(e))
                    || ["conv_s0.", "conv_s1.", "obj_score_token.", "pred_obj_score_head."]
                        .iter()
                        .any(|e| k["sam_mask_decoder.".len()..].starts_with(e)));
            if !known_prefix || deliberately_dropped {
                report.ignored.push(k.clone());
            } else {
                unknown.push(k.clone());
            }
        }
        if !unknown.is_empty() {
            return Err(WeightsError::Unexpected { keys: unknown, path: dict.source.clone() });
        }
        Ok(report)
    }

    /// Reads an official SAM 2 `.pt` (or safetensors with its keys) and loads it.
    pub fn load_sam2_file(&mut self, path: &Path, mapping: Sam2Mapping) -> Result<LoadReport, WeightsError> {
        let dict = StateDict::read(path)?;
        self.load_sam2_state(&dict, mapping)
    }

    /// Every tensor (parameters and buffers) under the trainer's key names, for saving.
    pub fn state_dict(&mut self, filter: &dyn Fn(&str, Kind) -> bool) -> BTreeMap<String, HostTensor> {
        struct Collect<'a>(BTreeMap<String, HostTensor>, &'a dyn Fn(&str, Kind) -> bool);
        impl Visitor for Collect<'_> {
            fn visit(&mut self, key: &str, kind: Kind, slot: Slot<'_>) {
                if (self.1)(key, kind) {
                    self.0.insert(format!("sam.{key}"), HostTensor::new(slot.checkpoint_shape(), slot.to_host()));
                }
            }
        }
        let mut c = Collect(BTreeMap::new(), filter);
        self.visit(&mut c);
        c.0
    }

    /// Encoder + neck + position encodings + fusion head, in eval mode.
    ///
    /// # Shapes
    /// `[B, 3, S, S]` (normalised, see `preprocess`) → `[B, d, g, g]`.
    pub fn embed(&self, x: Tensor<4>) -> Tensor<4> {
        let (p3, p4, p5) = self.fusion_inputs(x, &mut |_, _| {});
        self.fusion.forward(p3, p4, p5)
    }

    /// As [`Sam4em::embed`], in training mode (BatchNorm on batch statistics, running
    /// statistics updated).
    pub fn embed_train(&mut self, x: Tensor<4>) -> Tensor<4> {
        let stages = self.trunk.forward_traced(x, &mut |_, _| {});
        self.fuse_train(&stages)
    }

    /// As [`Sam4em::embed`], recording every intermediate.
    pub fn embed_traced(&self, x: Tensor<4>) -> (Tensor<4>, EncoderTrace) {
        let mut trace = EncoderTrace::default();
        let (p3, p4, p5) = self.fusion_inputs(x, &mut |name, t| trace.tensors.push((name.to_string(), t.clone())));
        (self.fusion.forward(p3, p4, p5), trace)
    }

    /// The trunk and the neck only (SAM 2's image encoder): the four neck levels, finest
    /// first, before `scalp`.
    pub fn trunk_and_neck(&self, x: Tensor<4>) -> Vec<Tensor<4>> {
        let stages = self.trunk.forward_traced(x, &mut |_, _| {});
        self.neck.forward(&stages)
    }

    /// Trunk, neck and the neck levels' position encodings: the fusion head's three inputs.
    fn fusion_inputs(
        &self,
        x: Tensor<4>,
        trace: &mut dyn FnMut(&str, &Tensor<4>),
    ) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        let stages = self.trunk.forward_traced(x, trace);
        for (k, s) in stages.iter().enumerate() {
            trace(&format!("trunk.{k}"), s);
        }
        self.neck_with_pe(&stages, trace)
    }

    /// The neck levels of the trunk's four stage outputs (NCHW, finest first) plus their
    /// position encodings: the fusion head's three inputs.
    fn neck_with_pe(
        &self,
        stages: &[Tensor<4>],
        trace: &mut dyn FnMut(&str, &Tensor<4>),
    ) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        let levels = self.neck.forward(stages);
        for (k, l) in levels.iter().enumerate() {
            trace(&format!("neck.{k}"), l);
        }
        let [b, d, _, _] = levels[0].dims();
        let with_pe = |k: usize| {
            let [_, _, h, w] = levels[k].dims();
            levels[k].clone() + self.neck_pe[k].clone().expand([b, d, h, w])
        };
        (with_pe(0), with_pe(1), with_pe(2))
    }

    /// Neck, position encodings and fusion head in training mode, from the trunk's four stage
    /// outputs (NCHW, finest first): BatchNorm on the batch statistics, running statistics
    /// updated. The second half of [`Sam4em::embed_train`], on its own for a backward pass
    /// that recomputes the encoder in pieces (`model::backprop`).
    ///
    /// # Shapes
    /// Stage outputs `[B, C_k, g/2^k, g/2^k]` → `[B, d, g, g]`.
    pub fn fuse_train(&mut self, stages: &[Tensor<4>]) -> Tensor<4> {
        let (p3, p4, p5) = self.neck_with_pe(stages, &mut |_, _| {});
        self.fusion.forward_train(p3, p4, p5)
    }

    /// A copy of the model whose tensors live on the device's plain backend, without autodiff:
    /// running it records no graph and keeps nothing for a backward pass (the first,
    /// forward-only pass of a recomputing training step). Tensors share storage with `self`.
    pub fn without_autodiff(&self) -> Self {
        struct Plain;
        impl Visitor for Plain {
            fn visit(&mut self, _key: &str, _kind: Kind, mut slot: Slot<'_>) {
                slot.map_any(&mut |t| match t {
                    AnyTensor::T1(t) => AnyTensor::T1(t.inner()),
                    AnyTensor::T2(t) => AnyTensor::T2(t.inner()),
                    AnyTensor::T3(t) => AnyTensor::T3(t.inner()),
                    AnyTensor::T4(t) => AnyTensor::T4(t.inner()),
                });
            }
        }
        let mut plain = self.clone();
        plain.visit(&mut Plain);
        // Derived tensors the walk does not list.
        plain.trunk.pos_cache = plain.trunk.pos_cache.inner();
        plain.neck_pe = plain.neck_pe.into_iter().map(Tensor::inner).collect();
        plain.image_pe = plain.image_pe.inner();
        plain.fusion.up_from_half = plain.fusion.up_from_half.without_autodiff();
        plain.fusion.up_from_quarter = plain.fusion.up_from_quarter.without_autodiff();
        plain
    }

    /// Memory + both decoders for one slice, conditioned on a binary `prompt` mask.
    ///
    /// # Shapes
    /// `fused [1, d, g, g]`, `prompt [1, 1, S, S]` → logits `[1, 1, S, S]` ×2.
    pub fn decode(&self, fused: Tensor<4>, prompt: Tensor<4>, memory: &MemoryState) -> (SliceOutput, MemoryState) {
        let (enhanced, next) = self.memory.forward(fused, prompt.clone(), memory);
        let dense = self.prompt_encoder.embed_mask(prompt);
        let d1 = self.mask_decoder.forward(enhanced.clone(), &self.image_pe, None, dense.clone(), None);
        let d2 = self.mask_decoder2.forward(
            enhanced.clone(),
            &self.image_pe,
            None,
            dense.clone(),
            Some(d1.upscaled.clone()),
        );
        let out = SliceOutput {
            logits1: d1.logits,
            logits2: d2.logits,
            dense,
            enhanced,
            upscaled1: d1.upscaled,
            tokens1: d1.tokens,
            keys1: d1.keys,
        };
        (out, next)
    }

    /// A fresh streaming state: zero memory with the checkpoint's slot count (or one slot
    /// when `single_slot`) and `seed` (binary `[1, 1, S, S]`) or an empty mask as the first
    /// prompt.
    pub fn start_stream(&self, seed: Option<Tensor<4>>, single_slot: bool) -> StreamState {
        let device = self.device();
        let (s, g, cm) = (self.config.image_size, self.config.grid(), self.config.memory.memory_dim);
        let slots = if single_slot { 1 } else { self.config.memory.slots };
        StreamState {
            memory: MemoryState::zeros(slots, cm, g, &device),
            prompt: seed.unwrap_or_else(|| Tensor::zeros([1, 1, s, s], &device)),
            position: 0,
        }
    }

    /// Decodes the next slice of a pass and advances the state by the mode's prompt rule.
    pub fn stream_step(&self, fused: Tensor<4>, state: &mut StreamState, mode: StreamMode) -> SliceOutput {
        let (out, memory) = self.decode(fused, state.prompt.clone(), &state.memory);
        state.memory = memory;
        state.position += 1;
        let st = &self.config.stream;
        let batch_end = state.position.is_multiple_of(st.batch_size);
        state.prompt = if mode == StreamMode::Faithful && batch_end {
            self.predict_mask(out.logits1.clone(), out.logits2.clone())
        } else {
            out.logits2.clone().greater_elem(logit(st.intra_batch_threshold)).float()
        };
        out
    }

    /// The reported prediction of a slice: stage-1 logits above the cross-batch threshold
    /// (0.4), or the mean of both stages with `use_two_mask`.
    pub fn prediction(&self, out: &SliceOutput) -> Tensor<4> {
        self.predict_mask(out.logits1.clone(), out.logits2.clone())
    }

    /// [`Sam4em::prediction`] from the two stages' logits.
    pub fn predict_mask(&self, logits1: Tensor<4>, logits2: Tensor<4>) -> Tensor<4> {
        let st = &self.config.stream;
        let l = if st.use_two_mask { (logits1 + logits2) * 0.5 } else { logits1 };
        l.greater_elem(logit(st.cross_batch_threshold)).float()
    }

    /// Streams `embeddings` (one `[1, d, g, g]` per slice, in stack order) in `direction`,
    /// returning the outputs in stack order.
    pub fn stream(
        &self,
        embeddings: &[Tensor<4>],
        seed: Option<Tensor<4>>,
        mode: StreamMode,
        direction: Direction,
        single_slot: bool,
    ) -> Vec<SliceOutput> {
        let mut state = self.start_stream(seed, single_slot);
        let order: Vec<usize> = match direction {
            Direction::Forward => (0..embeddings.len()).collect(),
            Direction::Reverse => (0..embeddings.len()).rev().collect(),
        };
        let mut outs: Vec<Option<SliceOutput>> = vec![None; embeddings.len()];
        for i in order {
            outs[i] = Some(self.stream_step(embeddings[i].clone(), &mut state, mode));
        }
        outs.into_iter().map(|o| o.expect("every slice decoded")).collect()
    }
}
