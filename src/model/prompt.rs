//! SAM's prompt encoder: dense embeddings of a mask prompt (what SAM4EM feeds, binary), sparse
//! embeddings of points and boxes (what the app's clicks feed), and the random-Fourier image
//! position encoding both decoders use.

use super::ops::gelu;
use burn::tensor::Tensor;

use super::nn::{Conv2d, Init, Kind, LayerNorm2d, Slot, Visitor, from_vec, key, to_vec};
use super::pe;

/// A click: position in input pixels (x, y) and whether it marks foreground.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PointPrompt {
    /// Column in input-image pixels.
    pub x_px: f64,
    /// Row in input-image pixels.
    pub y_px: f64,
    /// Foreground (true) or background (false) click.
    pub foreground: bool,
}

/// A box in input pixels: (x0, y0) top-left, (x1, y1) bottom-right.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BoxPrompt {
    /// Left.
    pub x0_px: f64,
    /// Top.
    pub y0_px: f64,
    /// Right.
    pub x1_px: f64,
    /// Bottom.
    pub y1_px: f64,
}

/// The prompt encoder.
#[derive(Clone, Debug)]
pub struct PromptEncoder {
    /// Embedding width d.
    pub embed_dim: usize,
    /// Input side S in pixels.
    pub input_size: usize,
    /// `pe_layer.positional_encoding_gaussian_matrix` `[2, d/2]` (buffer).
    pub gaussian: Tensor<2>,
    /// `point_embeddings.{0..3}`: negative point, positive point, box corners.
    pub point_embeddings: [Tensor<2>; 4],
    /// `not_a_point_embed` `[1, d]`.
    pub not_a_point_embed: Tensor<2>,
    /// `no_mask_embed` `[1, d]`.
    pub no_mask_embed: Tensor<2>,
    /// `mask_downscaling.0`: 2×2 stride 2, 1 → c/4.
    pub down0: Conv2d,
    /// `mask_downscaling.1`.
    pub norm1: LayerNorm2d,
    /// `mask_downscaling.3`: 2×2 stride 2, c/4 → c.
    pub down3: Conv2d,
    /// `mask_downscaling.4`.
    pub norm4: LayerNorm2d,
    /// `mask_downscaling.6`: 1×1, c → d.
    pub down6: Conv2d,
}

impl PromptEncoder {
    /// PyTorch-default initialised encoder (embeddings and the Gaussian matrix ~ N(0, 1)).
    pub fn new(embed_dim: usize, input_size: usize, mask_in_chans: usize, init: &Init) -> Self {
        let n = || init.normal([1, embed_dim], 1.0);
        let q = mask_in_chans / 4;
        PromptEncoder {
            embed_dim,
            input_size,
            gaussian: init.normal([2, embed_dim / 2], 1.0),
            point_embeddings: [n(), n(), n(), n()],
            not_a_point_embed: n(),
            no_mask_embed: n(),
            down0: Conv2d::new(1, q, 2, 2, 0, init),
            norm1: LayerNorm2d::new(q, 1e-6, init),
            down3: Conv2d::new(q, mask_in_chans, 2, 2, 0, init),
            norm4: LayerNorm2d::new(mask_in_chans, 1e-6, init),
            down6: Conv2d::new(mask_in_chans, embed_dim, 1, 1, 0, init),
        }
    }

    /// Dense embedding of a mask prompt.
    ///
    /// # Shapes
    /// `[B, 1, S, S]` → `[B, d, S/4, S/4]`.
    pub fn embed_mask(&self, mask: Tensor<4>) -> Tensor<4> {
        let x = gelu(self.norm1.forward(self.down0.forward(mask)));
        let x = gelu(self.norm4.forward(self.down3.forward(x)));
        self.down6.forward(x)
    }

    /// Dense embedding when no mask is given: `no_mask_embed` broadcast over the grid.
    pub fn no_mask_dense(&self, batch: usize, grid: usize) -> Tensor<4> {
        self.no_mask_embed.clone().reshape([1, self.embed_dim, 1, 1]).expand([batch, self.embed_dim, grid, grid])
    }

    /// `get_dense_pe()`: `[1, d, g, g]`, computed on the host from the Gaussian matrix.
    pub fn dense_pe(&self, grid: usize) -> Tensor<4> {
        let feats = self.embed_dim / 2;
        let data = pe::dense_fourier_pe(&to_vec(&self.gaussian), feats, grid);
        from_vec(data, [1, self.embed_dim, grid, grid], &self.gaussian.device())
    }

    /// Sparse embeddings of clicks and boxes, as SAM 2's `_embed_points` / `_embed_boxes`:
    /// point coordinates shifted to pixel centres, a padding point when there is no box.
    ///
    /// # Shapes
    /// → `[1, N, d]` (N = points + 1 padding, or points + 2 per box).
    pub fn embed_sparse(&self, points: &[PointPrompt], boxes: &[BoxPrompt]) -> Tensor<3> {
        let feats = self.embed_dim / 2;
        let gaussian = to_vec(&self.gaussian);
        let s = self.input_size as f64;
        let norm = |x: f64, y: f64| [(x + 0.5) / s, (y + 0.5) / s];
        let host = |t: &Tensor<2>| to_vec(t);
        let (neg, pos, tl, br) = (
            host(&self.point_embeddings[0]),
            host(&self.point_embeddings[1]),
            host(&self.point_embeddings[2]),
            host(&self.point_embeddings[3]),
        );
        let not_a_point = host(&self.not_a_point_embed);
        let mut rows: Vec<f32> = Vec::new();
        let mut count = 0;
        let mut push = |base: Vec<f32>, add: &[f32]| {
            rows.extend(base.iter().zip(add).map(|(a, b)| a + b));
            count += 1;
        };
        for p in points {
            let e = pe::fourier_pe(&[norm(p.x_px, p.y_px)], &gaussian, feats);
            push(e, if p.foreground { &pos } else { &neg });
        }
        if boxes.is_empty() {
            // SAM pads with a (0, 0) point labelled −1 whose embedding is replaced.
            push(vec![0.0; self.embed_dim], &not_a_point);
        }
        for b in boxes {
            push(pe::fourier_pe(&[norm(b.x0_px, b.y0_px)], &gaussian, feats), &tl);
            push(pe::fourier_pe(&[norm(b.x1_px, b.y1_px)], &gaussian, feats), &br);
        }
        from_vec(rows, [1, count, self.embed_dim], &self.gaussian.device())
    }

    /// Lists the encoder's tensors under `prefix` (`prompt_encoder` / `prompt_encoder2`).
    pub fn visit(&mut self, prefix: &str, v: &mut dyn Visitor) {
        v.visit(
            &key(prefix, "pe_layer.positional_encoding_gaussian_matrix"),
            Kind::Buffer,
            Slot::T2(&mut self.gaussian),
        );
        for (i, e) in self.point_embeddings.iter_mut().enumerate() {
            v.visit(&key(prefix, &format!("point_embeddings.{i}.weight")), Kind::Param, Slot::T2(e));
        }
        v.visit(&key(prefix, "not_a_point_embed.weight"), Kind::Param, Slot::T2(&mut self.not_a_point_embed));
        self.down0.visit(&key(prefix, "mask_downscaling.0"), v);
        self.norm1.visit(&key(prefix, "mask_downscaling.1"), v);
        self.down3.visit(&key(prefix, "mask_downscaling.3"), v);
        self.norm4.visit(&key(prefix, "mask_downscaling.4"), v);
        self.down6.visit(&key(prefix, "mask_downscaling.6"), v);
        v.visit(&key(prefix, "no_mask_embed.weight"), Kind::Param, Slot::T2(&mut self.no_mask_embed));
    }
}
