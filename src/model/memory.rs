//! SAM4EM's slice memory (`LightweightMemoryEncoder`): an exponential moving average of past
//! slices' projected features and mask encodings, read back through a slot "attention".
//!
//! Every slot receives the same update, so all slots always hold the same value and the
//! softmax over slots is uniform whatever the query: the read-out is exactly
//! `value_proj(memory)`. [`MemoryModule::forward`] computes the reference's full slot attention
//! (needed to reproduce its training noise and to load its checkpoints);
//! [`MemoryState::single`] keeps one slot and skips the query, key and softmax, and is proven
//! equal at inference by a test.

use burn::tensor::activation::{relu, softmax};
use burn::tensor::{Device, Tensor};

use super::config::MemoryConfig;
use super::nn::{Conv2d, Init, Kind, Slot, Visitor, from_vec, key};
use super::pe;

/// The memory buffer carried from slice to slice.
#[derive(Clone, Debug)]
pub struct MemoryState {
    /// `[M, C_m, g, g]`; M = 1 on the single-slot path.
    pub memory: Tensor<4>,
}

impl MemoryState {
    /// All-zero memory with `slots` slots, as at the start of a pass.
    pub fn zeros(slots: usize, channels: usize, grid: usize, device: &Device) -> Self {
        MemoryState { memory: Tensor::zeros([slots, channels, grid, grid], device) }
    }

    /// One-slot memory: the fast inference path.
    pub fn single(channels: usize, grid: usize, device: &Device) -> Self {
        Self::zeros(1, channels, grid, device)
    }

    /// Number of slots held.
    pub fn slots(&self) -> usize {
        self.memory.dims()[0]
    }
}

/// The memory module's layers and fixed position encoding.
#[derive(Clone, Debug)]
pub struct MemoryModule {
    /// Configuration.
    pub config: MemoryConfig,
    /// `mask_encoder.0`: 3×3 stride 2, 1 → hidden.
    pub mask_enc0: Conv2d,
    /// `mask_encoder.3`: 3×3 stride 2, hidden → C_m.
    pub mask_enc3: Conv2d,
    /// `feature_proj.0`: 1×1, d → C_m.
    pub feature_proj: Conv2d,
    /// `query_proj.0`.
    pub query_proj: Conv2d,
    /// `key_proj.0`.
    pub key_proj: Conv2d,
    /// `value_proj.0`.
    pub value_proj: Conv2d,
    /// `output_proj.0`: 1×1, C_m → d.
    pub output_proj: Conv2d,
    /// `positional_encoding` buffer `[1, C_m, g, g]`.
    pub positional_encoding: Tensor<4>,
    /// The checkpoint's `memory` buffer `[M, C_m, g, g]` (its slot count is what a checkpoint
    /// carries; a pass starts from zeros, see [`MemoryState`]).
    pub memory: Tensor<4>,
}

impl MemoryModule {
    /// PyTorch-default initialised module for feature width `d` on a `grid`² map.
    pub fn new(config: &MemoryConfig, d: usize, grid: usize, init: &Init) -> Self {
        let (cm, hid) = (config.memory_dim, config.mask_hidden);
        MemoryModule {
            config: config.clone(),
            mask_enc0: Conv2d::new(1, hid, 3, 2, 1, init),
            mask_enc3: Conv2d::new(hid, cm, 3, 2, 1, init),
            feature_proj: Conv2d::new(d, cm, 1, 1, 0, init),
            query_proj: Conv2d::new(cm, cm, 1, 1, 0, init),
            key_proj: Conv2d::new(cm, cm, 1, 1, 0, init),
            value_proj: Conv2d::new(cm, cm, 1, 1, 0, init),
            output_proj: Conv2d::new(cm, d, 1, 1, 0, init),
            positional_encoding: from_vec(pe::memory_pe(cm, grid), [1, cm, grid, grid], &init.device),
            memory: init.zeros([config.slots, cm, grid, grid]),
        }
    }

    /// The combined code `c = feature_proj(F) + mask_encoder(m) + PE` that the memory stores.
    fn code(&self, features: Tensor<4>, mask: Tensor<4>) -> Tensor<4> {
        let p = relu(self.feature_proj.forward(features));
        let mk = relu(self.mask_enc3.forward(relu(self.mask_enc0.forward(mask))));
        p + mk + self.positional_encoding.clone()
    }

    /// One slice: returns `F + output_proj(read-out)` and the updated memory.
    ///
    /// With more than one slot this is the reference's attention over slots (query from the
    /// current slice, keys and values from the memory); with one slot the read-out is
    /// `value_proj(memory)` directly, which equals the reference whenever the slots agree
    /// (always, at inference).
    ///
    /// # Shapes
    /// `features [1, d, g, g]`, `mask [1, 1, S, S]` (binary) → `[1, d, g, g]`.
    pub fn forward(&self, features: Tensor<4>, mask: Tensor<4>, state: &MemoryState) -> (Tensor<4>, MemoryState) {
        let c = self.code(features.clone(), mask);
        let mem = state.memory.clone();
        let [m, cm, g, _] = mem.dims();
        let readout = if m == 1 {
            self.value_proj.forward(mem.clone())
        } else {
            let pe = self.positional_encoding.clone();
            let q = self.query_proj.forward(c.clone()) + pe.clone(); // [1, cm, g, g]
            let k = self.key_proj.forward(mem.clone()) + pe; // [m, cm, g, g]
            let v = self.value_proj.forward(mem.clone());
            let scores = (k * q).sum_dim(1) * (1.0 / (cm as f64).sqrt()); // [m, 1, g, g]
            let attn = super::nn::in_f32(scores, |s| softmax(s, 0));
            (attn * v).sum_dim(0) // [1, cm, g, g]
        };
        let out = features + relu(self.output_proj.forward(readout));
        let [b, _, _, _] = c.dims();
        // The update is detached: no gradient crosses slices.
        let mean_c = c.detach().sum_dim(0) / b as f64;
        let alpha = self.config.alpha;
        let next = mem.detach() * (1.0 - alpha) + mean_c.expand([m, cm, g, g]) * alpha;
        (out, MemoryState { memory: next })
    }

    /// Lists the layers and buffers under `prefix` (`mem`).
    pub fn visit(&mut self, prefix: &str, v: &mut dyn Visitor) {
        self.mask_enc0.visit(&key(prefix, "mask_encoder.0"), v);
        self.mask_enc3.visit(&key(prefix, "mask_encoder.3"), v);
        self.feature_proj.visit(&key(prefix, "feature_proj.0"), v);
        self.query_proj.visit(&key(prefix, "query_proj.0"), v);
        self.key_proj.visit(&key(prefix, "key_proj.0"), v);
        self.value_proj.visit(&key(prefix, "value_proj.0"), v);
        self.output_proj.visit(&key(prefix, "output_proj.0"), v);
        v.visit(&key(prefix, "memory"), Kind::Buffer, Slot::T4(&mut self.memory));
        v.visit(&key(prefix, "positional_encoding"), Kind::Buffer, Slot::T4(&mut self.positional_encoding));
    }
}
