//! SAM 2's Hiera image trunk (`hieradet.py`) with SAM4EM's LoRA on the fused qkv, and the FPN
//! neck (`image_encoder.py`).
//!
//! Tensors inside the trunk are NHWC `[B, H, W, C]`, as in the reference; stage outputs and
//! neck levels are NCHW.

use burn::tensor::Tensor;
use burn::tensor::module::{interpolate, max_pool2d};
use burn::tensor::ops::{InterpolateMode, InterpolateOptions, MaxPoolOptions};

use super::config::{BlockLayout, HieraConfig, NeckConfig};
use super::nn::{Act, Conv2d, Init, Kind, LayerNorm, Linear, Mlp, Slot, Visitor, attention, from_vec, key, to_vec};
use super::pe;

/// The fused qkv projection with SAM4EM's LoRA (`LoRa_image_encoder2.py`):
/// `out = W x + b; out[:d_in] += B_q A_q x; out[3·d_out − d_in:] += B_v A_v x`, no scaling.
/// In the width-doubling blocks (d_out = 2·d_in) that touches only the first half of q and the
/// last half of v, which is what the reference does.
#[derive(Clone, Debug)]
pub struct LoraQkv {
    /// The frozen projection `d_in → 3·d_out`.
    pub qkv: Linear,
    /// A_q `[d_in, r]` (burn layout).
    pub a_q: Tensor<2>,
    /// B_q `[r, d_in]`.
    pub b_q: Tensor<2>,
    /// A_v `[d_in, r]`.
    pub a_v: Tensor<2>,
    /// B_v `[r, d_in]`.
    pub b_v: Tensor<2>,
    /// Set once the adapters have been added into `qkv`; the forward then skips them.
    pub merged: bool,
}

impl LoraQkv {
    /// Reference init: A ~ U(±1/√d_in) (kaiming_uniform a = √5), B = 0.
    pub fn new(d_in: usize, d_out: usize, rank: usize, init: &Init) -> Self {
        let bound = 1.0 / (d_in as f64).sqrt();
        LoraQkv {
            qkv: Linear::new(d_in, 3 * d_out, true, init),
            a_q: init.uniform([d_in, rank], bound),
            b_q: init.zeros([rank, d_in]),
            a_v: init.uniform([d_in, rank], bound),
            b_v: init.zeros([rank, d_in]),
            merged: false,
        }
    }

    fn dims(&self) -> (usize, usize) {
        let [d_in, three_out] = self.qkv.weight.dims();
        (d_in, three_out / 3)
    }

    /// The adapters' contribution as a `[d_in, 3·d_out]` weight delta.
    fn delta(&self) -> Tensor<2> {
        let (d_in, d_out) = self.dims();
        let dq = self.a_q.clone().matmul(self.b_q.clone());
        let dv = self.a_v.clone().matmul(self.b_v.clone());
        let mid = Tensor::zeros([d_in, 3 * d_out - 2 * d_in], &dq.device());
        Tensor::cat(vec![dq, mid, dv], 1)
    }

    /// # Shapes
    /// `[…, d_in]` → `[…, 3·d_out]`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let out = self.qkv.forward(x.clone());
        if self.merged {
            return out;
        }
        let (d_in, d_out) = self.dims();
        let q = x.clone().matmul_last(&self.a_q).matmul_last(&self.b_q);
        let v = x.matmul_last(&self.a_v).matmul_last(&self.b_v);
        let mut mid_shape = q.dims();
        mid_shape[D - 1] = 3 * d_out - 2 * d_in;
        let mid = Tensor::zeros(mid_shape, &q.device());
        out + Tensor::cat(vec![q, mid, v], D - 1)
    }

    /// Adds the adapters into the frozen weight; afterwards the forward costs no more than
    /// plain SAM 2. The adapters are kept (for saving) but no longer applied.
    pub fn merge(&mut self) {
        if !self.merged {
            self.qkv.weight = self.qkv.weight.clone() + self.delta();
            self.merged = true;
        }
    }

    /// Lists `qkv.*` (frozen) and `linear_{a,b}_{q,v}.weight` (the adapters).
    pub fn visit(&mut self, prefix: &str, v: &mut dyn Visitor) {
        self.qkv.visit(&key(prefix, "qkv"), v);
        v.visit(&key(prefix, "linear_a_q.weight"), Kind::Param, Slot::Linear(&mut self.a_q));
        v.visit(&key(prefix, "linear_b_q.weight"), Kind::Param, Slot::Linear(&mut self.b_q));
        v.visit(&key(prefix, "linear_a_v.weight"), Kind::Param, Slot::Linear(&mut self.a_v));
        v.visit(&key(prefix, "linear_b_v.weight"), Kind::Param, Slot::Linear(&mut self.b_v));
    }
}

/// `x @ W` over the last dimension for a rank-D tensor and a rank-2 weight.
trait MatmulLast<const D: usize> {
    fn matmul_last(self, w: &Tensor<2>) -> Tensor<D>;
}

impl<const D: usize> MatmulLast<D> for Tensor<D> {
    fn matmul_last(self, w: &Tensor<2>) -> Tensor<D> {
        super::ops::linear(self, w.clone(), None)
    }
}

/// One `MultiScaleBlock`.
#[derive(Clone, Debug)]
pub struct HieraBlock {
    /// Widths, heads, window and pooling of this block.
    pub layout: BlockLayout,
    /// Query/shortcut pooling stride.
    pub q_stride: [usize; 2],
    /// Pre-attention norm (ε 1e-6).
    pub norm1: LayerNorm,
    /// Fused qkv with LoRA.
    pub qkv: LoraQkv,
    /// Attention output projection.
    pub attn_proj: Linear,
    /// Pre-MLP norm.
    pub norm2: LayerNorm,
    /// GELU MLP.
    pub mlp: Mlp,
    /// Shortcut projection when the width changes.
    pub proj: Option<Linear>,
}

fn max_pool_nhwc(x: Tensor<4>, stride: [usize; 2]) -> Tensor<4> {
    let x = x.permute([0, 3, 1, 2]);
    max_pool2d(x, MaxPoolOptions::new(stride)).permute([0, 2, 3, 1])
}

/// Pads `[B, H, W, C]` at the bottom/right to multiples of `ws` with `fill` (`[C]`) and splits
/// it into `[B·nW, ws, ws, C]` windows.
fn window_partition(x: Tensor<4>, ws: usize, fill: Tensor<1>) -> (Tensor<4>, [usize; 2]) {
    let [b, h, w, c] = x.dims();
    let (ph, pw) = ((ws - h % ws) % ws, (ws - w % ws) % ws);
    let fill: Tensor<4> = fill.reshape([1, 1, 1, c]);
    let mut x = x;
    if ph > 0 {
        x = Tensor::cat(vec![x, fill.clone().expand([b, ph, w, c])], 1);
    }
    if pw > 0 {
        x = Tensor::cat(vec![x, fill.expand([b, h + ph, pw, c])], 2);
    }
    let (hp, wp) = (h + ph, w + pw);
    let x: Tensor<6> = x.reshape([b, hp / ws, ws, wp / ws, ws, c]);
    let x = x.permute([0, 1, 3, 2, 4, 5]).reshape([b * (hp / ws) * (wp / ws), ws, ws, c]);
    (x, [hp, wp])
}

/// Inverse of [`window_partition`], cropping the padding.
fn window_unpartition(x: Tensor<4>, ws: usize, padded: [usize; 2], hw: [usize; 2]) -> Tensor<4> {
    let [n, _, _, c] = x.dims();
    let [hp, wp] = padded;
    let b = n / ((hp / ws) * (wp / ws));
    let x: Tensor<6> = x.reshape([b, hp / ws, wp / ws, ws, ws, c]);
    let x: Tensor<4> = x.permute([0, 1, 3, 2, 4, 5]).reshape([b, hp, wp, c]);
    if hp > hw[0] || wp > hw[1] { x.slice([0..b, 0..hw[0], 0..hw[1], 0..c]) } else { x }
}

impl HieraBlock {
    /// A PyTorch-default initialised block.
    pub fn new(layout: BlockLayout, q_stride: [usize; 2], mlp_ratio: f64, rank: usize, init: &Init) -> Self {
        let (dim, dim_out) = (layout.dim, layout.dim_out);
        let hidden = (dim_out as f64 * mlp_ratio) as usize;
        HieraBlock {
            norm1: LayerNorm::new(dim, 1e-6, init),
            qkv: LoraQkv::new(dim, dim_out, rank, init),
            attn_proj: Linear::new(dim_out, dim_out, true, init),
            norm2: LayerNorm::new(dim_out, 1e-6, init),
            mlp: Mlp::new(dim_out, hidden, dim_out, 2, Act::Gelu, init),
            proj: (dim != dim_out).then(|| Linear::new(dim, dim_out, true, init)),
            layout,
            q_stride,
        }
    }

    /// Multi-scale attention on `[N, h, w, 3·dim_out]` windows of qkv (or the whole grid when
    /// global), before the output projection.
    fn attention(&self, qkv: Tensor<4>) -> Tensor<4> {
        let [n, h, w, _] = qkv.dims();
        let (heads, d_out) = (self.layout.heads, self.layout.dim_out);
        let hd = d_out / heads;
        let qkv: Tensor<5> = qkv.reshape([n, h * w, 3, heads, hd]);
        let take = |i: usize| -> Tensor<4> { qkv.clone().narrow(2, i, 1).reshape([n, h * w, heads, hd]) };
        let (mut q, k, v) = (take(0), take(1), take(2));
        let (mut hq, mut wq) = (h, w);
        if self.layout.q_pool {
            let pooled = max_pool_nhwc(q.reshape([n, h, w, d_out]), self.q_stride);
            let [_, ph, pw, _] = pooled.dims();
            (hq, wq) = (ph, pw);
            q = pooled.reshape([n, hq * wq, heads, hd]);
        }
        let (q, k, v) = (q.swap_dims(1, 2), k.swap_dims(1, 2), v.swap_dims(1, 2));
        attention(q, k, v).swap_dims(1, 2).reshape([n, hq, wq, d_out])
    }

    /// # Shapes
    /// `[B, H, W, dim]` → `[B, H', W', dim_out]` (H' = H/2 in q-pool blocks).
    ///
    /// The reference zero-pads the normed grid to whole windows and runs qkv and the output
    /// projection on every padded row. Here qkv runs on the real rows only and the windows are
    /// padded with what qkv gives a zero row — its bias, LoRA adding nothing to zero — so the
    /// attention sees the same keys and values; the projection runs after the padding is
    /// cropped (it acts on each row alone). At 512², Hiera-B+'s stage-3 grid of 32² pads to
    /// 42² (72 % more rows) and stage 4's 16² to 21².
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let shortcut = x.clone();
        let x = self.norm1.forward(x);
        let shortcut = match &self.proj {
            Some(proj) => {
                let s = proj.forward(x.clone());
                if self.layout.q_pool { max_pool_nhwc(s, self.q_stride) } else { s }
            }
            None => shortcut,
        };
        let [_, h, w, _] = x.dims();
        let ws = self.layout.window;
        let qkv = self.qkv.forward(x);
        let x = if ws > 0 {
            let fill = match &self.qkv.qkv.bias {
                Some(bias) => bias.clone(),
                None => Tensor::zeros([qkv.dims()[3]], &qkv.device()),
            };
            let (windows, padded) = window_partition(qkv, ws, fill);
            let out = self.attention(windows);
            let [_, sh, sw, _] = shortcut.dims();
            if self.layout.q_pool {
                // Pooled queries: windows shrink by the stride and the grid is the shortcut's.
                let ws = ws / self.q_stride[0];
                let padded = [sh + (ws - sh % ws) % ws, sw + (ws - sw % ws) % ws];
                window_unpartition(out, ws, padded, [sh, sw])
            } else {
                window_unpartition(out, ws, padded, [h, w])
            }
        } else {
            self.attention(qkv)
        };
        let x = shortcut + self.attn_proj.forward(x);
        x.clone() + self.mlp.forward(self.norm2.forward(x))
    }

    /// Lists the block's tensors under the reference names.
    pub fn visit(&mut self, prefix: &str, v: &mut dyn Visitor) {
        self.norm1.visit(&key(prefix, "norm1"), v);
        self.qkv.visit(&key(prefix, "attn.qkv"), v);
        self.attn_proj.visit(&key(prefix, "attn.proj"), v);
        self.norm2.visit(&key(prefix, "norm2"), v);
        self.mlp.visit(&key(prefix, "mlp"), v);
        if let Some(p) = &mut self.proj {
            p.visit(&key(prefix, "proj"), v);
        }
    }
}

/// The Hiera trunk.
#[derive(Clone, Debug)]
pub struct Hiera {
    /// Configuration it was built from.
    pub config: HieraConfig,
    /// 7×7 stride-4 patch embedding.
    pub patch_embed: Conv2d,
    /// Background position embedding `[1, C, bh, bw]`.
    pub pos_embed: Tensor<4>,
    /// Window position embedding `[1, C, w0, w0]` (w0 = the first stage's window).
    pub pos_embed_window: Tensor<4>,
    /// The blocks.
    pub blocks: Vec<HieraBlock>,
    /// Interpolated + tiled position embedding for the current grid, NHWC `[1, g, g, C]`.
    /// Derived from the two embeddings by [`Hiera::refresh_pos_embed`].
    pub pos_cache: Tensor<4>,
}

impl Hiera {
    /// A randomly initialised trunk for a `grid`² token grid.
    pub fn new(config: &HieraConfig, rank: usize, grid: usize, init: &Init) -> Self {
        let c = config.embed_dim;
        let [bh, bw] = config.window_pos_embed_bkg_spatial_size;
        let blocks = config
            .blocks()
            .into_iter()
            .map(|l| HieraBlock::new(l, config.q_stride, config.mlp_ratio, rank, init))
            .collect();
        let mut h = Hiera {
            config: config.clone(),
            patch_embed: Conv2d::new(3, c, 7, 4, 3, init),
            pos_embed: init.normal([1, c, bh, bw], 0.02),
            pos_embed_window: init.normal([1, c, config.window_spec[0], config.window_spec[0]], 0.02),
            blocks,
            pos_cache: init.zeros([1, grid, grid, c]),
        };
        if !init.shapes_only {
            h.refresh_pos_embed(grid);
        }
        h
    }

    /// Recomputes the cached position embedding (after loading weights): bicubic resize of
    /// `pos_embed` to the grid plus `pos_embed_window` tiled, computed on the host in f64.
    pub fn refresh_pos_embed(&mut self, grid: usize) {
        let [_, c, bh, bw] = self.pos_embed.dims();
        let [_, _, wh, ww] = self.pos_embed_window.dims();
        let data =
            pe::trunk_pos_embed(&to_vec(&self.pos_embed), [bh, bw], &to_vec(&self.pos_embed_window), [wh, ww], c, grid);
        self.pos_cache = from_vec(data, [1, grid, grid, c], &self.pos_embed.device());
    }

    /// The patch embedding plus the position embedding: the first block's input.
    ///
    /// # Shapes
    /// `[B, 3, S, S]` → NHWC `[B, g, g, C]`.
    pub fn patch_input(&self, x: Tensor<4>, trace: &mut dyn FnMut(&str, &Tensor<4>)) -> Tensor<4> {
        let x = self.patch_embed.forward(x).permute([0, 2, 3, 1]);
        let [b, h, w, c] = x.dims();
        let [_, gh, gw, _] = self.pos_cache.dims();
        assert!(gh == h && gw == w, "position embedding was built for a {gh}×{gw} grid, the input gives {h}×{w}");
        trace("patch_embed", &x);
        x + self.pos_cache.clone().expand([b, h, w, c])
    }

    /// Runs the trunk; `trace` sees the patch embedding and every block output (NHWC).
    ///
    /// # Shapes
    /// `[B, 3, S, S]` → four stage outputs NCHW, finest first.
    pub fn forward_traced(&self, x: Tensor<4>, trace: &mut dyn FnMut(&str, &Tensor<4>)) -> Vec<Tensor<4>> {
        let mut x = self.patch_input(x, trace);
        let ends = self.config.stage_ends();
        let mut outs = Vec::with_capacity(4);
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward(x);
            trace(&format!("block.{i}"), &x);
            if ends.contains(&i) {
                outs.push(x.clone().permute([0, 3, 1, 2]));
            }
        }
        outs
    }

    /// Lists the trunk's tensors under `prefix` (`image_encoder.trunk`).
    pub fn visit(&mut self, prefix: &str, v: &mut dyn Visitor) {
        self.patch_embed.visit(&key(prefix, "patch_embed.proj"), v);
        v.visit(&key(prefix, "pos_embed"), Kind::Param, Slot::T4(&mut self.pos_embed));
        v.visit(&key(prefix, "pos_embed_window"), Kind::Param, Slot::T4(&mut self.pos_embed_window));
        for (i, b) in self.blocks.iter_mut().enumerate() {
            b.visit(&key(prefix, &format!("blocks.{i}")), v);
        }
    }
}

/// SAM 2's `FpnNeck`: 1×1 lateral convolutions to `d_model` and a nearest top-down path into
/// the levels in `fpn_top_down_levels`.
#[derive(Clone, Debug)]
pub struct FpnNeck {
    /// Configuration.
    pub config: NeckConfig,
    /// `convs.k` applies to stage `3 − k` (deepest first).
    pub convs: Vec<Conv2d>,
}

impl FpnNeck {
    /// Randomly initialised neck for stage widths `stage_dims` (finest first).
    pub fn new(config: &NeckConfig, stage_dims: &[usize], init: &Init) -> Self {
        let convs = stage_dims.iter().rev().map(|&c| Conv2d::new(c, config.d_model, 1, 1, 0, init)).collect();
        FpnNeck { config: config.clone(), convs }
    }

    /// # Shapes
    /// Stage outputs finest first → the same number of `[B, d, H_k, W_k]` levels, finest first
    /// (before `scalp`).
    pub fn forward(&self, xs: &[Tensor<4>]) -> Vec<Tensor<4>> {
        let n = xs.len() - 1;
        let mut out: Vec<Option<Tensor<4>>> = vec![None; xs.len()];
        let mut prev: Option<Tensor<4>> = None;
        for i in (0..=n).rev() {
            let lateral = self.convs[n - i].forward(xs[i].clone());
            let features = match (&prev, self.config.fpn_top_down_levels.contains(&i)) {
                (Some(p), true) => {
                    let [_, _, h, w] = p.dims();
                    let up = interpolate(
                        p.clone(),
                        InterpolateOptions::new(InterpolateMode::Nearest).with_output_size([2 * h, 2 * w]),
                    );
                    let sum = lateral + up;
                    if self.config.fuse_type == "avg" { sum / 2.0 } else { sum }
                }
                _ => lateral,
            };
            prev = Some(features.clone());
            out[i] = Some(features);
        }
        out.into_iter().map(|t| t.expect("every level is set")).collect()
    }

    /// Lists `convs.{k}.conv.*` under `prefix` (`image_encoder.neck`).
    pub fn visit(&mut self, prefix: &str, v: &mut dyn Visitor) {
        for (k, c) in self.convs.iter_mut().enumerate() {
            c.visit(&key(prefix, &format!("convs.{k}.conv")), v);
        }
    }
}
