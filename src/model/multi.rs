//! Several classes from one encoder pass: SAM4EM's encoder side (frozen Hiera trunk with its
//! LoRA adapters, neck, fusion head) is shared by every class, and each class (glia,
//! mitochondria, PSD…) has its own heads (slice memory, both prompt encoders, both mask
//! decoders). The reference trains one whole model per structure; sharing the encoder is what
//! lets the app segment three classes for the price of one encoder pass per slice, and lets
//! corrections of any class improve the shared features.
//!
//! The adapter-set file (what a fine-tuning run changes) is `adapter`'s; building the model
//! from a SAM 2 checkpoint is `source`'s.
//!
//! Depends on burn and the rest of `model` only.

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::tensor::{Device, Tensor};

use super::config::Sam4emConfig;
use super::memory::MemoryState;
use super::nn::Init;
use super::sam4em::{Sam4em, SliceOutput, StreamMode, StreamState, TrainBatch, logit};
use super::weights::{StateDict, WeightsError};

/// Whether a model tensor belongs to the shared encoder side (trunk, LoRA, neck, fusion head)
/// rather than to a class's heads.
pub fn is_shared(key: &str) -> bool {
    key.starts_with("image_encoder.") || key.starts_with("fpn.")
}

/// One class's heads. `model` shares its encoder tensors with [`MultiModel::encoder`] (clones
/// of burn tensors share storage); only its memory, prompt encoders and decoders are used.
#[derive(Clone, Debug)]
pub struct ClassHead {
    /// Class name (the class table's name, e.g. "mitochondria").
    pub name: String,
    /// The model whose heads this class uses.
    pub model: Sam4em,
}

/// Which of a [`MultiModel`]'s class heads: the class's position in the model's class list
/// ([`super::source::ModelSource::classes`], [`MultiModel::heads`]), the order predictions come back in. The
/// app maps its class ids to heads in one place (`app::model`'s head table); past that
/// boundary, a head is never confused with a slice index or a class id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HeadIndex(pub usize);

impl std::fmt::Display for HeadIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// SAM4EM with one shared encoder and per-class heads.
#[derive(Clone, Debug)]
pub struct MultiModel {
    /// The encoder side (its heads are not used).
    pub encoder: Sam4em,
    /// One entry per class, in the order predictions are returned.
    pub heads: Vec<ClassHead>,
}

impl MultiModel {
    /// Every class starts from the same heads (those of `base`); training tells them apart.
    pub fn new(base: Sam4em, classes: &[String]) -> Self {
        let heads = classes.iter().map(|name| ClassHead { name: name.clone(), model: base.clone() }).collect();
        MultiModel { encoder: base, heads }
    }

    /// The model configuration (the same for every class).
    pub fn config(&self) -> &Sam4emConfig {
        &self.encoder.config
    }

    /// The device the tensors live on.
    pub fn device(&self) -> Device {
        self.encoder.device()
    }

    /// Class names in prediction order.
    pub fn class_names(&self) -> Vec<String> {
        self.heads.iter().map(|h| h.name.clone()).collect()
    }

    /// A copy with the LoRA adapters folded into the frozen weights, for inference: the
    /// encoder then costs what SAM 2's does. `self` stays unmerged, so new adapters can be
    /// applied to it later.
    pub fn merged(&self) -> Self {
        let mut m = self.clone();
        m.encoder.merge_lora();
        m
    }

    /// A copy on the device's plain backend, without autodiff (see
    /// [`Sam4em::without_autodiff`]); tensors are shared, not copied.
    pub fn without_autodiff(&self) -> Self {
        MultiModel {
            encoder: self.encoder.without_autodiff(),
            heads: self
                .heads
                .iter()
                .map(|h| ClassHead { name: h.name.clone(), model: h.model.without_autodiff() })
                .collect(),
        }
    }

    /// The shared encoder pass (eval mode).
    ///
    /// # Shapes
    /// `[B, 3, S, S]` → `[B, d, g, g]`.
    pub fn embed(&self, x: Tensor<4>) -> Tensor<4> {
        self.encoder.embed(x)
    }

    /// Fresh streaming states, one per class, each prompted by its seed (binary `[1, 1, S, S]`)
    /// or an empty mask.
    pub fn start_streams(&self, seeds: Vec<Option<Tensor<4>>>) -> Vec<StreamState> {
        assert_eq!(seeds.len(), self.heads.len(), "one seed (or None) per class");
        self.heads.iter().zip(seeds).map(|(h, seed)| h.model.start_stream(seed, false)).collect()
    }

    /// As [`Self::start_streams`] with one memory slot per stream: the same predictions at
    /// inference (every slot holds the same value, see `model::memory`), for a fraction of the
    /// memory (what the predictor uses, one stream per tile and class).
    pub fn start_single_slot_streams(&self, seeds: Vec<Option<Tensor<4>>>) -> Vec<StreamState> {
        assert_eq!(seeds.len(), self.heads.len(), "one seed (or None) per class");
        self.heads.iter().zip(seeds).map(|(h, seed)| h.model.start_stream(seed, true)).collect()
    }

    /// Decodes one slice's embedding for every class and advances each class's stream.
    pub fn stream_step(&self, fused: Tensor<4>, states: &mut [StreamState], mode: StreamMode) -> Vec<SliceOutput> {
        self.heads.iter().zip(states.iter_mut()).map(|(h, s)| h.model.stream_step(fused.clone(), s, mode)).collect()
    }

    /// The logits behind a class's reported prediction (stage 1, or the mean of both stages
    /// with `use_two_mask`) and the probability threshold the reference reports them at.
    pub fn reported_logits(&self, out: &SliceOutput) -> (Tensor<4>, f64) {
        let st = &self.config().stream;
        let l = if st.use_two_mask { (out.logits1.clone() + out.logits2.clone()) * 0.5 } else { out.logits1.clone() };
        (l, st.cross_batch_threshold)
    }

    /// The reference's training forward for a batch of consecutive slices, for every class:
    /// one encoder pass in training mode (BatchNorm on batch statistics), then each class's
    /// decode loop (slice 0 prompted with `prompts[c]`, later slices with the previous slice's
    /// stage-2 mask at 0.5, memory advancing slice by slice).
    ///
    /// # Shapes
    /// `x [B, 3, S, S]`, each prompt `[1, 1, S, S]`; returns per class logits `[B, 1, S, S]`.
    pub fn forward_train(
        &mut self,
        x: Tensor<4>,
        prompts: Vec<Tensor<4>>,
        memories: &mut [MemoryState],
    ) -> Vec<TrainBatch> {
        let fused = self.encoder.embed_train(x);
        let b = fused.dims()[0];
        let threshold = logit(self.config().stream.intra_batch_threshold);
        let mut outs = Vec::with_capacity(self.heads.len());
        for ((head, prompt), memory) in self.heads.iter().zip(prompts).zip(memories.iter_mut()) {
            let (mut l1, mut l2) = (Vec::with_capacity(b), Vec::with_capacity(b));
            let mut prompt = prompt;
            for i in 0..b {
                let (out, next) = head.model.decode(fused.clone().narrow(0, i, 1), prompt, memory);
                *memory = next;
                prompt = out.logits2.clone().detach().greater_elem(threshold).float();
                l1.push(out.logits1);
                l2.push(out.logits2);
            }
            let next_prompt = head.model.predict_mask(l1[b - 1].clone().detach(), l2[b - 1].clone().detach());
            outs.push(TrainBatch { logits1: Tensor::cat(l1, 0), logits2: Tensor::cat(l2, 0), next_prompt });
        }
        outs
    }

    /// Zeroed slice memories, one per class (the checkpoint's slot count).
    pub fn zero_memories(&self) -> Vec<MemoryState> {
        let c = self.config();
        let device = self.device();
        self.heads.iter().map(|_| MemoryState::zeros(c.memory.slots, c.memory.memory_dim, c.grid(), &device)).collect()
    }

    /// The same model on another device (e.g. its autodiff twin for training), copied through
    /// host memory. The heads share the new encoder's tensors again.
    pub fn to_device(&mut self, device: &Device) -> Result<Self, WeightsError> {
        let mut encoder = Sam4em::new(&self.encoder.config, &Init::shapes_only(device));
        let dict = StateDict {
            tensors: self.encoder.state_dict(&|_, _| true),
            other: BTreeMap::new(),
            source: PathBuf::new(),
        };
        encoder.load_sam4em_state(&dict)?;
        let mut heads = Vec::with_capacity(self.heads.len());
        for h in &mut self.heads {
            let mut model = encoder.clone();
            let tensors = h.model.state_dict(&|k, _| !is_shared(k));
            model.load_subset(&StateDict { tensors, other: BTreeMap::new(), source: PathBuf::new() }, &|k, _| {
                !is_shared(k)
            })?;
            heads.push(ClassHead { name: h.name.clone(), model });
        }
        Ok(MultiModel { encoder, heads })
    }
}
