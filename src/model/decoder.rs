//! SAM's mask decoder (two-way transformer, upscaler, hypernetwork heads) with SAM4EM's
//! `skip_connect`, which lets the stage-2 decoder fuse the stage-1 upscaled features.

use burn::tensor::Tensor;

use super::config::DecoderConfig;
use super::nn::{
    Act, Conv2d, ConvTranspose2x2, Init, Kind, LayerNorm, LayerNorm2d, Linear, Mlp, Slot, Visitor, attention, key,
};
use super::ops::gelu;

/// SAM's `Attention`: projections to an internal width, multi-head softmax attention, output
/// projection.
#[derive(Clone, Debug)]
pub struct Attention {
    /// Heads.
    pub heads: usize,
    /// `q_proj`.
    pub q_proj: Linear,
    /// `k_proj`.
    pub k_proj: Linear,
    /// `v_proj`.
    pub v_proj: Linear,
    /// `out_proj`.
    pub out_proj: Linear,
}

impl Attention {
    fn new(d: usize, heads: usize, downsample: usize, init: &Init) -> Self {
        let inner = d / downsample;
        Attention {
            heads,
            q_proj: Linear::new(d, inner, true, init),
            k_proj: Linear::new(d, inner, true, init),
            v_proj: Linear::new(d, inner, true, init),
            out_proj: Linear::new(inner, d, true, init),
        }
    }

    fn split(&self, x: Tensor<3>) -> Tensor<4> {
        let [b, n, c] = x.dims();
        x.reshape([b, n, self.heads, c / self.heads]).swap_dims(1, 2)
    }

    /// # Shapes
    /// `q [B, Nq, d]`, `k [B, Nk, d]`, `v [B, Nk, d]` → `[B, Nq, d]`.
    pub fn forward(&self, q: Tensor<3>, k: Tensor<3>, v: Tensor<3>) -> Tensor<3> {
        let q = self.split(self.q_proj.forward(q));
        let k = self.split(self.k_proj.forward(k));
        let v = self.split(self.v_proj.forward(v));
        let [b, h, nq, hd] = q.dims();
        self.out_proj.forward(attention(q, k, v).swap_dims(1, 2).reshape([b, nq, h * hd]))
    }

    fn visit(&mut self, prefix: &str, v: &mut dyn Visitor) {
        self.q_proj.visit(&key(prefix, "q_proj"), v);
        self.k_proj.visit(&key(prefix, "k_proj"), v);
        self.v_proj.visit(&key(prefix, "v_proj"), v);
        self.out_proj.visit(&key(prefix, "out_proj"), v);
    }
}

/// `TwoWayAttentionBlock`.
#[derive(Clone, Debug)]
pub struct TwoWayBlock {
    /// Layer 0 skips the PE in its self-attention and its residual.
    pub skip_first_layer_pe: bool,
    /// Token self-attention.
    pub self_attn: Attention,
    /// After self-attention.
    pub norm1: LayerNorm,
    /// Tokens → image.
    pub cross_token_to_image: Attention,
    /// After it.
    pub norm2: LayerNorm,
    /// ReLU MLP on tokens.
    pub mlp: Mlp,
    /// After it.
    pub norm3: LayerNorm,
    /// After image → tokens.
    pub norm4: LayerNorm,
    /// Image → tokens.
    pub cross_image_to_token: Attention,
}

impl TwoWayBlock {
    fn new(d: usize, heads: usize, mlp_dim: usize, downsample: usize, skip_first_layer_pe: bool, init: &Init) -> Self {
        TwoWayBlock {
            skip_first_layer_pe,
            self_attn: Attention::new(d, heads, 1, init),
            norm1: LayerNorm::new(d, 1e-5, init),
            cross_token_to_image: Attention::new(d, heads, downsample, init),
            norm2: LayerNorm::new(d, 1e-5, init),
            mlp: Mlp::new(d, mlp_dim, d, 2, Act::Relu, init),
            norm3: LayerNorm::new(d, 1e-5, init),
            norm4: LayerNorm::new(d, 1e-5, init),
            cross_image_to_token: Attention::new(d, heads, downsample, init),
        }
    }

    fn forward(
        &self,
        queries: Tensor<3>,
        keys: Tensor<3>,
        query_pe: &Tensor<3>,
        key_pe: &Tensor<3>,
    ) -> (Tensor<3>, Tensor<3>) {
        let queries = if self.skip_first_layer_pe {
            self.self_attn.forward(queries.clone(), queries.clone(), queries)
        } else {
            let q = queries.clone() + query_pe.clone();
            queries.clone() + self.self_attn.forward(q.clone(), q, queries)
        };
        let queries = self.norm1.forward(queries);
        let q = queries.clone() + query_pe.clone();
        let k = keys.clone() + key_pe.clone();
        let queries = self.norm2.forward(queries + self.cross_token_to_image.forward(q, k.clone(), keys.clone()));
        let queries = self.norm3.forward(queries.clone() + self.mlp.forward(queries));
        let q = queries.clone() + query_pe.clone();
        let keys = self.norm4.forward(keys + self.cross_image_to_token.forward(k, q, queries.clone()));
        (queries, keys)
    }

    fn visit(&mut self, prefix: &str, v: &mut dyn Visitor) {
        self.self_attn.visit(&key(prefix, "self_attn"), v);
        self.norm1.visit(&key(prefix, "norm1"), v);
        self.cross_token_to_image.visit(&key(prefix, "cross_attn_token_to_image"), v);
        self.norm2.visit(&key(prefix, "norm2"), v);
        self.mlp.visit(&key(prefix, "mlp"), v);
        self.norm3.visit(&key(prefix, "norm3"), v);
        self.norm4.visit(&key(prefix, "norm4"), v);
        self.cross_image_to_token.visit(&key(prefix, "cross_attn_image_to_token"), v);
    }
}

/// What one decoder call produced.
#[derive(Clone, Debug)]
pub struct DecoderOutput {
    /// Mask logits of mask token 0 `[B, 1, S, S]`.
    pub logits: Tensor<4>,
    /// Upscaled image features (before any skip fusion) `[B, d/8, S, S]`: stage 1's go to
    /// stage 2's `skip_connect`.
    pub upscaled: Tensor<4>,
    /// Predicted IoU per mask token `[B, T]` (computed, unused by SAM4EM).
    pub iou: Tensor<2>,
    /// Transformer token outputs `[B, tokens, d]`.
    pub tokens: Tensor<3>,
    /// Transformer image outputs `[B, g², d]`.
    pub keys: Tensor<3>,
}

/// SAM4EM's `MaskDecoder`.
#[derive(Clone, Debug)]
pub struct MaskDecoder {
    /// Width d.
    pub d: usize,
    /// `transformer.layers.*`.
    pub layers: Vec<TwoWayBlock>,
    /// `transformer.final_attn_token_to_image`.
    pub final_attn: Attention,
    /// `transformer.norm_final_attn`.
    pub norm_final: LayerNorm,
    /// `iou_token` `[1, d]`.
    pub iou_token: Tensor<2>,
    /// `mask_tokens` `[T, d]`.
    pub mask_tokens: Tensor<2>,
    /// `output_upscaling.0`: d → d/4.
    pub up0: ConvTranspose2x2,
    /// `output_upscaling.1`.
    pub up_norm: LayerNorm2d,
    /// `output_upscaling.3`: d/4 → d/8.
    pub up3: ConvTranspose2x2,
    /// `output_hypernetworks_mlps.{i}`: d → d → d → d/8.
    pub hypernetworks: Vec<Mlp>,
    /// `iou_prediction_head`.
    pub iou_head: Mlp,
    /// `skip_connect.0`: 1×1, d/4 → d/8.
    pub skip0: Conv2d,
    /// `skip_connect.1`.
    pub skip_norm1: LayerNorm2d,
    /// `skip_connect.3`: 3×3, d/8 → d/8.
    pub skip3: Conv2d,
    /// `skip_connect.4`.
    pub skip_norm4: LayerNorm2d,
}

impl MaskDecoder {
    /// PyTorch-default initialised decoder of width `d`.
    pub fn new(d: usize, config: &DecoderConfig, init: &Init) -> Self {
        let tokens = config.num_multimask_outputs + 1;
        let layers = (0..config.depth)
            .map(|i| {
                TwoWayBlock::new(d, config.num_heads, config.mlp_dim, config.attention_downsample_rate, i == 0, init)
            })
            .collect();
        let emb = |n: usize| init.normal([n, d], 1.0);
        MaskDecoder {
            d,
            layers,
            final_attn: Attention::new(d, config.num_heads, config.attention_downsample_rate, init),
            norm_final: LayerNorm::new(d, 1e-5, init),
            iou_token: emb(1),
            mask_tokens: emb(tokens),
            up0: ConvTranspose2x2::new(d, d / 4, init),
            up_norm: LayerNorm2d::new(d / 4, 1e-6, init),
            up3: ConvTranspose2x2::new(d / 4, d / 8, init),
            hypernetworks: (0..tokens).map(|_| Mlp::new(d, d, d / 8, 3, Act::Relu, init)).collect(),
            iou_head: Mlp::new(d, config.iou_head_hidden_dim, tokens, config.iou_head_depth, Act::Relu, init),
            skip0: Conv2d::new(d / 4, d / 8, 1, 1, 0, init),
            skip_norm1: LayerNorm2d::new(d / 8, 1e-6, init),
            skip3: Conv2d::new(d / 8, d / 8, 3, 1, 1, init),
            skip_norm4: LayerNorm2d::new(d / 8, 1e-6, init),
        }
    }

    /// One decode. `sparse` may be `None` (SAM4EM's mask-only prompting); `skip` is stage 1's
    /// upscaled features when this is the stage-2 decoder.
    ///
    /// # Shapes
    /// `image [B, d, g, g]`, `image_pe [1, d, g, g]`, `sparse [B, N, d]`, `dense [B, d, g, g]`,
    /// `skip [B, d/8, 4g, 4g]` → logits `[B, 1, 4g, 4g]`.
    pub fn forward(
        &self,
        image: Tensor<4>,
        image_pe: &Tensor<4>,
        sparse: Option<Tensor<3>>,
        dense: Tensor<4>,
        skip: Option<Tensor<4>>,
    ) -> DecoderOutput {
        let [b, d, h, w] = image.dims();
        let output_tokens: Tensor<3> = Tensor::cat(vec![self.iou_token.clone(), self.mask_tokens.clone()], 0)
            .unsqueeze_dim::<3>(0)
            .expand([b, 1 + self.mask_tokens.dims()[0], d]);
        let tokens = match sparse {
            Some(s) => Tensor::cat(vec![output_tokens, s], 1),
            None => output_tokens,
        };
        let src = image + dense;
        let keys = src.reshape([b, d, h * w]).swap_dims(1, 2);
        let key_pe = image_pe.clone().reshape([1, d, h * w]).swap_dims(1, 2).expand([b, h * w, d]);
        let (mut queries, mut keys) = (tokens.clone(), keys);
        for layer in &self.layers {
            (queries, keys) = layer.forward(queries, keys, &tokens, &key_pe);
        }
        let q = queries.clone() + tokens.clone();
        let k = keys.clone() + key_pe;
        let queries = self.norm_final.forward(queries + self.final_attn.forward(q, k, keys.clone()));

        let src = keys.clone().swap_dims(1, 2).reshape([b, d, h, w]);
        let up = gelu(self.up_norm.forward(self.up0.forward(src)));
        let upscaled = gelu(self.up3.forward(up));
        let fused = match skip {
            Some(s) => {
                let x = Tensor::cat(vec![upscaled.clone(), s], 1);
                let x = gelu(self.skip_norm1.forward(self.skip0.forward(x)));
                gelu(self.skip_norm4.forward(self.skip3.forward(x)))
            }
            None => upscaled.clone(),
        };
        let n_tokens = self.mask_tokens.dims()[0];
        // Only mask token 0's logits are used (multimask_output = False). Every hypernetwork
        // still runs, as in the reference: the others are then in the training graph with a
        // zero gradient, so AdamW's weight decay reaches them exactly as it does there. Only
        // token 0 is multiplied out to full resolution.
        let hyper_all: Vec<Tensor<3>> = self
            .hypernetworks
            .iter()
            .enumerate()
            .map(|(i, m)| m.forward(queries.clone().narrow(1, 1 + i, 1)))
            .collect();
        let hyper = Tensor::cat(hyper_all, 1).narrow(1, 0, 1); // [B, 1, d/8]
        let [_, c8, sh, sw] = fused.dims();
        let logits = hyper.matmul(fused.reshape([b, c8, sh * sw])).reshape([b, 1, sh, sw]);
        let iou = self.iou_head.forward(queries.clone().narrow(1, 0, 1)).reshape([b, n_tokens]);
        DecoderOutput { logits, upscaled, iou, tokens: queries, keys }
    }

    /// Lists the decoder's tensors under `prefix` (`mask_decoder` / `mask_decoder2`).
    pub fn visit(&mut self, prefix: &str, v: &mut dyn Visitor) {
        for (i, l) in self.layers.iter_mut().enumerate() {
            l.visit(&key(prefix, &format!("transformer.layers.{i}")), v);
        }
        self.final_attn.visit(&key(prefix, "transformer.final_attn_token_to_image"), v);
        self.norm_final.visit(&key(prefix, "transformer.norm_final_attn"), v);
        v.visit(&key(prefix, "iou_token.weight"), Kind::Param, Slot::T2(&mut self.iou_token));
        v.visit(&key(prefix, "mask_tokens.weight"), Kind::Param, Slot::T2(&mut self.mask_tokens));
        self.up0.visit(&key(prefix, "output_upscaling.0"), v);
        self.up_norm.visit(&key(prefix, "output_upscaling.1"), v);
        self.up3.visit(&key(prefix, "output_upscaling.3"), v);
        self.skip0.visit(&key(prefix, "skip_connect.0"), v);
        self.skip_norm1.visit(&key(prefix, "skip_connect.1"), v);
        self.skip3.visit(&key(prefix, "skip_connect.3"), v);
        self.skip_norm4.visit(&key(prefix, "skip_connect.4"), v);
        for (i, m) in self.hypernetworks.iter_mut().enumerate() {
            m.visit(&key(prefix, &format!("output_hypernetworks_mlps.{i}")), v);
        }
        self.iou_head.visit(&key(prefix, "iou_prediction_head"), v);
    }
}
