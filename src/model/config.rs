//! Model configuration: the Hiera sizes of SAM 2, the SAM4EM heads, LoRA, streaming and loss
//! settings. Plain serde data; [`Sam4emConfig::from_reference_json`] reads the `config.json` the
//! reference fixtures are described by, and [`Sam4emConfig::sam4em`] gives the paper's model for
//! any of the four official SAM 2 sizes.
//!
//! Nothing here depends on burn, so the CLI can describe a configuration without a device.

use serde::{Deserialize, Serialize};

/// The four official SAM 2 Hiera sizes (`sam2_hiera_{t,s,b+,l}` / `sam2.1_hiera_…`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HieraSize {
    /// Hiera-T, 96 wide, 12 blocks.
    Tiny,
    /// Hiera-S, 96 wide, 16 blocks.
    Small,
    /// Hiera-B+, 112 wide, 24 blocks: the size SAM4EM uses.
    BasePlus,
    /// Hiera-L, 144 wide, 48 blocks.
    Large,
}

impl HieraSize {
    /// All sizes, smallest first.
    pub const ALL: [HieraSize; 4] = [HieraSize::Tiny, HieraSize::Small, HieraSize::BasePlus, HieraSize::Large];

    /// The name used in official checkpoint file names (`sam2_hiera_<name>.pt`).
    pub fn file_stem(self) -> &'static str {
        match self {
            HieraSize::Tiny => "tiny",
            HieraSize::Small => "small",
            HieraSize::BasePlus => "base_plus",
            HieraSize::Large => "large",
        }
    }

    /// The trunk configuration of this size, as in SAM 2's `sam2_hiera_*.yaml`.
    pub fn hiera(self) -> HieraConfig {
        let (embed_dim, num_heads, stages, global_att_blocks, window_spec, bkg) = match self {
            HieraSize::Tiny => (96, 1, vec![1, 2, 7, 2], vec![5, 7, 9], vec![8, 4, 14, 7], 7),
            HieraSize::Small => (96, 1, vec![1, 2, 11, 2], vec![7, 10, 13], vec![8, 4, 14, 7], 7),
            HieraSize::BasePlus => (112, 2, vec![2, 3, 16, 3], vec![12, 16, 20], vec![8, 4, 14, 7], 14),
            HieraSize::Large => (144, 2, vec![2, 6, 36, 4], vec![23, 33, 43], vec![8, 4, 16, 8], 7),
        };
        HieraConfig {
            embed_dim,
            num_heads,
            stages,
            global_att_blocks,
            window_spec,
            window_pos_embed_bkg_spatial_size: [bkg, bkg],
            q_pool: 3,
            q_stride: [2, 2],
            dim_mul: 2.0,
            head_mul: 2.0,
            mlp_ratio: 4.0,
        }
    }
}

/// Hiera trunk (SAM 2 `hieradet.Hiera`). Field names follow the reference constructor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HieraConfig {
    /// Width of the first stage.
    pub embed_dim: usize,
    /// Attention heads of the first stage.
    pub num_heads: usize,
    /// Blocks per stage (four stages).
    pub stages: Vec<usize>,
    /// Blocks that attend globally instead of in windows.
    pub global_att_blocks: Vec<usize>,
    /// Window size per stage; a stage's first block still uses the previous stage's window.
    pub window_spec: Vec<usize>,
    /// Size of the learned background position embedding, interpolated to the token grid.
    pub window_pos_embed_bkg_spatial_size: [usize; 2],
    /// How many stage transitions pool the queries.
    pub q_pool: usize,
    /// Pooling stride of those transitions.
    pub q_stride: [usize; 2],
    /// Width multiplier per stage.
    pub dim_mul: f64,
    /// Head-count multiplier per stage.
    pub head_mul: f64,
    /// MLP hidden width as a multiple of the block width.
    pub mlp_ratio: f64,
}

/// One trunk block's layout, derived from [`HieraConfig`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockLayout {
    /// Input width.
    pub dim: usize,
    /// Output width (twice `dim` in the first block of stages 2–4).
    pub dim_out: usize,
    /// Attention heads.
    pub heads: usize,
    /// Window size in tokens; 0 means global attention.
    pub window: usize,
    /// Whether the block pools its queries (and its shortcut) by `q_stride`.
    pub q_pool: bool,
}

impl HieraConfig {
    /// Index of the last block of each stage.
    pub fn stage_ends(&self) -> Vec<usize> {
        let mut total = 0;
        self.stages
            .iter()
            .map(|&n| {
                total += n;
                total - 1
            })
            .collect()
    }

    /// Per-block layout, following `Hiera.__init__` (including the window "lag": the first
    /// block of a stage keeps the previous stage's window).
    pub fn blocks(&self) -> Vec<BlockLayout> {
        let stage_ends = self.stage_ends();
        let q_pool_blocks: Vec<usize> = stage_ends.iter().take(self.q_pool).map(|e| e + 1).collect();
        let depth: usize = self.stages.iter().sum();
        let mut embed_dim = self.embed_dim;
        let mut num_heads = self.num_heads;
        let mut cur_stage = 1;
        let mut out = Vec::with_capacity(depth);
        for i in 0..depth {
            let mut dim_out = embed_dim;
            let mut window = self.window_spec[cur_stage - 1];
            if self.global_att_blocks.contains(&i) {
                window = 0;
            }
            if i > 0 && stage_ends.contains(&(i - 1)) {
                dim_out = (embed_dim as f64 * self.dim_mul) as usize;
                num_heads = (num_heads as f64 * self.head_mul) as usize;
                cur_stage += 1;
            }
            out.push(BlockLayout {
                dim: embed_dim,
                dim_out,
                heads: num_heads,
                window,
                q_pool: q_pool_blocks.contains(&i),
            });
            embed_dim = dim_out;
        }
        out
    }

    /// Channel widths of the four stage outputs, finest first.
    pub fn stage_dims(&self) -> Vec<usize> {
        let blocks = self.blocks();
        self.stage_ends().iter().map(|&e| blocks[e].dim_out).collect()
    }
}

/// SAM 2 `FpnNeck` plus the sine position encoding SAM4EM adds to its levels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NeckConfig {
    /// Output width of every level (256 in SAM 2).
    pub d_model: usize,
    /// Levels that receive the upsampled coarser level (SAM 2: `[2, 3]`).
    pub fpn_top_down_levels: Vec<usize>,
    /// Upsampling mode of the top-down path; SAM 2 uses `"nearest"`.
    pub fpn_interp_model: String,
    /// `"sum"` or `"avg"`.
    pub fuse_type: String,
    /// How many of the coarsest levels are dropped (SAM 2: 1).
    pub scalp: usize,
    /// Sine position-encoding temperature: 1000 in SAM4EM, 10000 in SAM 2.
    pub pe_temperature: f64,
    /// Whether positions are normalised to (0, 2π].
    pub pe_normalize: bool,
}

/// SAM4EM's `LightweightMemoryEncoder`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryConfig {
    /// Memory width C_m (128 in SAM4EM).
    pub memory_dim: usize,
    /// Hidden width of the mask encoder (32).
    pub mask_hidden: usize,
    /// Memory slots M (8 in SAM4EM; every slot holds the same value, see `memory.rs`).
    pub slots: usize,
    /// EMA rate α of the memory update (0.3).
    pub alpha: f64,
}

/// SAM prompt encoder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PromptEncoderConfig {
    /// Hidden width of the mask down-scaler (16 in SAM 2).
    pub mask_in_chans: usize,
}

/// SAM mask decoder and its two-way transformer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecoderConfig {
    /// Transformer layers.
    pub depth: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// MLP hidden width.
    pub mlp_dim: usize,
    /// Width divisor of the cross-attention layers.
    pub attention_downsample_rate: usize,
    /// Multimask outputs; SAM4EM uses 1 (so 2 mask tokens).
    pub num_multimask_outputs: usize,
    /// Depth of the IoU head.
    pub iou_head_depth: usize,
    /// Hidden width of the IoU head.
    pub iou_head_hidden_dim: usize,
}

/// LoRA on the trunk's fused qkv.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// Rank r (SAM4EM's `--lora`, 100 by default).
    pub rank: usize,
}

/// Streaming over slices, as the reference's validation loop does it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamConfig {
    /// Consecutive slices per batch; the prompt rule changes at batch boundaries.
    pub batch_size: usize,
    /// Threshold of the stage-2 mask that prompts the next slice inside a batch.
    pub intra_batch_threshold: f64,
    /// Threshold of the stage-1 mask that prompts the first slice of the next batch (and the
    /// reported prediction).
    pub cross_batch_threshold: f64,
    /// What prompts the first slice of a pass (the reference uses its ground truth).
    #[serde(default)]
    pub first_prompt: String,
    /// Prompt across batches with the mean of both stages' logits (`--use_two_mask`).
    pub use_two_mask: bool,
}

/// Loss weights (`--dice_parm`, `--mask1_parm`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossConfig {
    /// Weight of Dice inside each stage's loss (BCE gets 1 − it).
    pub dice_parm: f64,
    /// Weight of stage 1 (stage 2 gets 1 − it).
    pub mask1_parm: f64,
    /// Dice smoothing term.
    pub dice_smooth: f64,
}

/// AdamW settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimizerConfig {
    /// Optimiser name; only `"AdamW"` is implemented.
    pub name: String,
    /// Learning rate.
    pub lr: f64,
    /// Adam β₁, β₂.
    pub betas: [f64; 2],
    /// Adam ε.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

/// The whole SAM4EM model and its training recipe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sam4emConfig {
    /// Input side S in pixels (512 in SAM4EM); features live on an S/4 grid.
    pub image_size: usize,
    /// Encoder trunk.
    pub hiera: HieraConfig,
    /// Encoder neck.
    pub neck: NeckConfig,
    /// Slice memory.
    pub memory: MemoryConfig,
    /// Prompt encoders.
    pub prompt_encoder: PromptEncoderConfig,
    /// Mask decoders.
    pub decoder: DecoderConfig,
    /// LoRA.
    pub lora: LoraConfig,
    /// Streaming rules.
    pub stream: StreamConfig,
    /// Loss weights.
    pub loss: LossConfig,
    /// Optimiser.
    pub optimizer: OptimizerConfig,
}

/// Why a configuration was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The JSON did not parse.
    #[error("model configuration does not parse: {0}")]
    Parse(#[from] serde_json::Error),
    /// A value is out of range.
    #[error("model configuration is invalid: {0}")]
    Invalid(String),
}

/// The largest model input side a configuration may ask for (SAM 2 uses 1024; 4096 leaves
/// room for experiments without letting a damaged file ask for terabytes).
pub const MAX_IMAGE_SIZE: usize = 4096;
/// The widest layer a configuration may ask for (SAM 2 Large's widest is 1152).
pub const MAX_WIDTH: usize = 8192;
/// The deepest trunk stage a configuration may ask for (SAM 2 Large's deepest has 36 blocks).
pub const MAX_STAGE_DEPTH: usize = 256;
/// The most memory slots, stream batch slices or extra mask outputs a configuration may ask
/// for (SAM4EM: 8, 8 and 3).
pub const MAX_SLOTS: usize = 1024;

impl Sam4emConfig {
    /// The paper's model on the given SAM 2 size: 512² input, neck PE temperature 1000, 8 memory
    /// slots of width 128, LoRA rank 100, batches of 8, thresholds 0.5/0.4, AdamW 5e-4.
    pub fn sam4em(size: HieraSize) -> Self {
        Sam4emConfig {
            image_size: 512,
            hiera: size.hiera(),
            neck: NeckConfig {
                d_model: 256,
                fpn_top_down_levels: vec![2, 3],
                fpn_interp_model: "nearest".into(),
                fuse_type: "sum".into(),
                scalp: 1,
                pe_temperature: 1000.0,
                pe_normalize: true,
            },
            memory: MemoryConfig { memory_dim: 128, mask_hidden: 32, slots: 8, alpha: 0.3 },
            prompt_encoder: PromptEncoderConfig { mask_in_chans: 16 },
            decoder: DecoderConfig {
                depth: 2,
                num_heads: 8,
                mlp_dim: 2048,
                attention_downsample_rate: 2,
                num_multimask_outputs: 1,
                iou_head_depth: 3,
                iou_head_hidden_dim: 256,
            },
            lora: LoraConfig { rank: 100 },
            stream: StreamConfig {
                batch_size: 8,
                intra_batch_threshold: 0.5,
                cross_batch_threshold: 0.4,
                first_prompt: "ground_truth_of_first_slice".into(),
                use_two_mask: false,
            },
            loss: LossConfig { dice_parm: 0.5, mask1_parm: 0.5, dice_smooth: 1.0 },
            optimizer: OptimizerConfig {
                name: "AdamW".into(),
                lr: 5e-4,
                betas: [0.9, 0.999],
                eps: 1e-8,
                weight_decay: 0.01,
            },
        }
    }

    /// Reads a configuration in the reference fixtures' `config.json` layout (extra keys such
    /// as `seed`, `data` and `derived` are ignored) and validates it.
    pub fn from_reference_json(text: &str) -> Result<Self, ConfigError> {
        let config: Sam4emConfig = serde_json::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Side of the feature grid g = S/4.
    pub fn grid(&self) -> usize {
        self.image_size / 4
    }

    /// Checks the constraints the architecture relies on (every configuration, from a file or
    /// from an adapter set, passes here before a module is built from it).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let h = &self.hiera;
        if h.stages.len() != 4 || h.window_spec.len() != 4 {
            return bad("hiera needs exactly four stages and four window sizes".into());
        }
        if self.image_size == 0 || !self.image_size.is_multiple_of(32) {
            return bad(format!("image_size {} is not a positive multiple of 32", self.image_size));
        }
        let grid = self.grid();
        let w0 = h.window_spec[0];
        if w0 == 0 || !grid.is_multiple_of(w0) {
            return bad(format!("the {grid}² token grid does not tile into the {w0}×{w0} position-embedding window"));
        }
        if h.q_pool > 3 {
            return bad("q_pool can pool at most the three stage transitions".into());
        }
        if h.q_stride.contains(&0) || h.embed_dim == 0 || h.num_heads == 0 || h.stages.contains(&0) {
            return bad("q_stride, embed_dim, num_heads and every stage's depth must be positive".into());
        }
        if h.stages.iter().any(|&s| s > MAX_STAGE_DEPTH) || h.embed_dim > MAX_WIDTH || h.num_heads > MAX_WIDTH {
            return bad(format!(
                "stages of more than {MAX_STAGE_DEPTH} blocks or widths over {MAX_WIDTH} are not a SAM 2 trunk"
            ));
        }
        // Widths and heads multiply by these at each stage: a zero or absurd factor builds
        // empty or enormous layers (checked before any tensor is made).
        for (name, v) in [("dim_mul", h.dim_mul), ("head_mul", h.head_mul), ("mlp_ratio", h.mlp_ratio)] {
            if !(v.is_finite() && (0.5..=8.0).contains(&v)) {
                return bad(format!("{name} {v} is outside 0.5 to 8"));
            }
        }
        if self.image_size > MAX_IMAGE_SIZE {
            return bad(format!("image_size {} is larger than {MAX_IMAGE_SIZE}", self.image_size));
        }
        if h.blocks().iter().any(|b| b.dim_out == 0 || b.heads == 0 || b.dim_out > MAX_WIDTH) {
            return bad(format!("a block would be empty or wider than {MAX_WIDTH} channels"));
        }
        for b in h.blocks() {
            if !b.dim_out.is_multiple_of(b.heads) {
                return bad(format!("block width {} is not divisible by {} heads", b.dim_out, b.heads));
            }
        }
        if self.neck.scalp != 1 {
            return bad("the fusion head needs exactly three neck levels (scalp = 1)".into());
        }
        if !matches!(self.neck.fpn_interp_model.as_str(), "nearest") {
            return bad(format!(
                "fpn_interp_model {:?} is not supported (SAM 2 uses nearest)",
                self.neck.fpn_interp_model
            ));
        }
        if !matches!(self.neck.fuse_type.as_str(), "sum" | "avg") {
            return bad(format!("fuse_type {:?} is neither sum nor avg", self.neck.fuse_type));
        }
        // Every other size makes a layer or a buffer: from 1 up to what no SAM 2 model comes
        // near, so that a damaged file is refused here instead of dividing by zero or asking
        // for terabytes when the model is built.
        let (dec, mem) = (&self.decoder, &self.memory);
        let sizes = [
            ("d_model", self.neck.d_model, MAX_WIDTH),
            ("memory_dim", mem.memory_dim, MAX_WIDTH),
            ("mask_hidden", mem.mask_hidden, MAX_WIDTH),
            ("memory slots", mem.slots, MAX_SLOTS),
            ("mask_in_chans", self.prompt_encoder.mask_in_chans, MAX_WIDTH),
            ("decoder depth", dec.depth, MAX_STAGE_DEPTH),
            ("decoder num_heads", dec.num_heads, MAX_WIDTH),
            ("decoder mlp_dim", dec.mlp_dim, MAX_WIDTH),
            ("attention_downsample_rate", dec.attention_downsample_rate, MAX_WIDTH),
            ("iou_head_depth", dec.iou_head_depth, MAX_STAGE_DEPTH),
            ("iou_head_hidden_dim", dec.iou_head_hidden_dim, MAX_WIDTH),
            ("LoRA rank", self.lora.rank, MAX_WIDTH),
            ("stream batch_size", self.stream.batch_size, MAX_SLOTS),
        ];
        for (name, v, max) in sizes {
            if !(1..=max).contains(&v) {
                return bad(format!("{name} {v} is outside 1 to {max}"));
            }
        }
        if dec.num_multimask_outputs > MAX_SLOTS {
            return bad(format!("num_multimask_outputs {} is over {MAX_SLOTS}", dec.num_multimask_outputs));
        }
        let [bh, bw] = h.window_pos_embed_bkg_spatial_size;
        if !(1..=MAX_IMAGE_SIZE).contains(&bh) || !(1..=MAX_IMAGE_SIZE).contains(&bw) {
            return bad(format!("window_pos_embed_bkg_spatial_size {bh}x{bw} is outside 1 to {MAX_IMAGE_SIZE}"));
        }
        // A window larger than its stage's grid pads the grid up to it (SAM 2 does so for
        // small inputs), so only windows past the whole token grid, or 64, are absurd.
        let max_window = grid.max(64);
        if let Some(w) = h.window_spec.iter().find(|&&w| w > max_window) {
            return bad(format!("window {w} is larger than the {grid}² token grid (and than 64)"));
        }
        let d = self.neck.d_model;
        if !d.is_multiple_of(8)
            || !d.is_multiple_of(dec.num_heads)
            || !(d / dec.attention_downsample_rate).is_multiple_of(dec.num_heads)
            || d / dec.attention_downsample_rate == 0
        {
            return bad(format!("d_model {d} does not split into the decoder's heads"));
        }
        if !mem.memory_dim.is_multiple_of(4) || !self.prompt_encoder.mask_in_chans.is_multiple_of(4) {
            return bad("memory_dim and mask_in_chans must be multiples of 4".into());
        }
        let reals = [
            ("pe_temperature", self.neck.pe_temperature),
            ("memory alpha", mem.alpha),
            ("intra_batch_threshold", self.stream.intra_batch_threshold),
            ("cross_batch_threshold", self.stream.cross_batch_threshold),
            ("dice_parm", self.loss.dice_parm),
            ("mask1_parm", self.loss.mask1_parm),
            ("dice_smooth", self.loss.dice_smooth),
            ("lr", self.optimizer.lr),
            ("beta1", self.optimizer.betas[0]),
            ("beta2", self.optimizer.betas[1]),
            ("eps", self.optimizer.eps),
            ("weight_decay", self.optimizer.weight_decay),
        ];
        if let Some((name, v)) = reals.iter().find(|(_, v)| !v.is_finite()) {
            return bad(format!("{name} {v} is not a finite number"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_plus_layout_matches_the_spec_table() {
        let blocks = HieraSize::BasePlus.hiera().blocks();
        assert_eq!(blocks.len(), 24);
        let qpool: Vec<usize> = (0..24).filter(|&i| blocks[i].q_pool).collect();
        assert_eq!(qpool, [2, 5, 21]);
        let global: Vec<usize> = (0..24).filter(|&i| blocks[i].window == 0).collect();
        assert_eq!(global, [12, 16, 20]);
        assert_eq!((blocks[2].dim, blocks[2].dim_out, blocks[2].heads, blocks[2].window), (112, 224, 4, 8));
        assert_eq!((blocks[21].dim, blocks[21].dim_out, blocks[21].heads, blocks[21].window), (448, 896, 16, 14));
        assert_eq!(blocks[22].window, 7);
        assert_eq!(HieraSize::BasePlus.hiera().stage_ends(), [1, 4, 20, 23]);
    }

    #[test]
    fn other_sizes_match_the_published_layouts() {
        let tiny = HieraSize::Tiny.hiera().blocks();
        assert_eq!((0..12).filter(|&i| tiny[i].q_pool).collect::<Vec<_>>(), [1, 3, 10]);
        assert_eq!(tiny[11].window, 7);
        let large = HieraSize::Large.hiera().blocks();
        assert_eq!((0..48).filter(|&i| large[i].q_pool).collect::<Vec<_>>(), [2, 8, 44]);
        assert_eq!(large[44].window, 16);
        assert_eq!(large[45].window, 8);
        assert_eq!(HieraSize::Small.hiera().stage_dims(), [96, 192, 384, 768]);
    }

    #[test]
    fn sizes_that_would_divide_by_zero_or_ask_for_terabytes_are_refused() {
        // Found by the `adapter_set` fuzz target: an attention_downsample_rate of 0 divided
        // by zero inside validate itself.
        type Edit = fn(&mut Sam4emConfig);
        let edits: [(&str, Edit); 8] = [
            ("attention_downsample_rate", |c| c.decoder.attention_downsample_rate = 0),
            ("d_model", |c| c.neck.d_model = 0),
            ("decoder num_heads", |c| c.decoder.num_heads = 0),
            ("memory slots", |c| c.memory.slots = 1 << 40),
            ("mask_hidden", |c| c.memory.mask_hidden = 0),
            ("window", |c| c.hiera.window_spec[2] = 1 << 30),
            ("window_pos_embed_bkg_spatial_size", |c| c.hiera.window_pos_embed_bkg_spatial_size = [0, 14]),
            ("lr", |c| c.optimizer.lr = f64::NAN),
        ];
        for (name, edit) in edits {
            let mut c = Sam4emConfig::sam4em(HieraSize::BasePlus);
            edit(&mut c);
            let err = c.validate().expect_err(name).to_string();
            assert!(err.contains(name), "{name}: {err}");
        }
        for size in HieraSize::ALL {
            Sam4emConfig::sam4em(size).validate().unwrap();
        }
    }

    #[test]
    fn rejects_a_size_the_window_tiling_cannot_cover() {
        let mut c = Sam4emConfig::sam4em(HieraSize::Tiny);
        c.image_size = 500;
        assert!(c.validate().is_err());
        c.image_size = 512;
        assert!(c.validate().is_ok());
    }
}
