//! `sam4em bench ops`: the model's building blocks one at a time, at the shapes SAM4EM-B+ runs
//! them at (512², batch 1), forward and forward + backward, so that each kernel's speed can be
//! compared with PyTorch's on the same machine in the same run (`tests/bench/ops_torch.py`
//! times the same cases; the CLI interleaves the two sides run by run).
//!
//! Our side calls the model's own code (`nn::LayerNorm`, `nn::Linear`, `nn::Conv2d`,
//! `nn::attention`, `ops::gelu`), so a faster kernel shows here exactly as the model gets it.

use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};
use serde::{Deserialize, Serialize};

use crate::model::nn::{Conv2d, Init, LayerNorm, Linear, attention};
use crate::model::ops::gelu;

/// What one case computes. The same description is sent to the PyTorch side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Exact (erf) GELU on `[rows, cols]`.
    Gelu {
        /// Rows (tokens).
        rows: usize,
        /// Columns (features).
        cols: usize,
    },
    /// LayerNorm (ε 1e-6, affine) over the last dimension of `[rows, dim]`.
    LayerNorm {
        /// Rows (tokens).
        rows: usize,
        /// Normalised width.
        dim: usize,
    },
    /// Linear layer with bias, `[rows, d_in] → [rows, d_out]`.
    Linear {
        /// Rows (tokens).
        rows: usize,
        /// Input width.
        d_in: usize,
        /// Output width.
        d_out: usize,
    },
    /// Softmax attention with `batch × heads` heads of `tokens` queries and keys, width `head_dim`.
    Attention {
        /// Windows (or images).
        batch: usize,
        /// Heads.
        heads: usize,
        /// Tokens per window.
        tokens: usize,
        /// Width per head.
        head_dim: usize,
    },
    /// 3×3 convolution with bias, padding 1, `channels → channels` on a `side²` image.
    Conv3x3 {
        /// Input and output channels.
        channels: usize,
        /// Image side in pixels.
        side: usize,
    },
}

/// One benchmark case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct OpCase {
    /// Short name ("gelu, stage 3 MLP").
    pub name: &'static str,
    /// The operation and its shapes.
    pub op: Op,
    /// Forward and backward (gradients of every input and parameter) instead of forward only.
    pub backward: bool,
}

/// The cases: where SAM4EM-B+ at 512² spends its time (Hiera's stage 1, 128² tokens of width
/// 112, and stage 3, 32² tokens of width 448 with 8 heads; the fusion head's 3×3 convolutions
/// at 128²), each forward only and forward + backward.
pub fn cases() -> Vec<OpCase> {
    let ops = [
        ("gelu, stage 1 MLP", Op::Gelu { rows: 128 * 128, cols: 448 }),
        ("gelu, stage 3 MLP", Op::Gelu { rows: 32 * 32, cols: 1792 }),
        ("layer norm, stage 1", Op::LayerNorm { rows: 128 * 128, dim: 112 }),
        ("layer norm, stage 3", Op::LayerNorm { rows: 32 * 32, dim: 448 }),
        ("linear + bias, stage 1 qkv", Op::Linear { rows: 128 * 128, d_in: 112, d_out: 336 }),
        ("linear + bias, stage 3 MLP in", Op::Linear { rows: 32 * 32, d_in: 448, d_out: 1792 }),
        ("window attention, stage 1", Op::Attention { batch: 256, heads: 2, tokens: 64, head_dim: 56 }),
        ("window attention, stage 3", Op::Attention { batch: 9, heads: 8, tokens: 196, head_dim: 56 }),
        ("global attention, stage 3", Op::Attention { batch: 1, heads: 8, tokens: 1024, head_dim: 56 }),
        ("conv 3×3 256→256, 128²", Op::Conv3x3 { channels: 256, side: 128 }),
    ];
    [false, true]
        .iter()
        .flat_map(|&backward| ops.iter().map(move |&(name, op)| OpCase { name, op, backward }))
        .collect()
}

/// A case's inputs and parameters, made once on a device, and the code that runs it.
pub struct Prepared {
    run: Box<dyn Fn()>,
    device: Device,
}

impl Prepared {
    /// Builds `case`'s random inputs and parameters on `device` (its autodiff twin when the
    /// case has a backward pass).
    pub fn new(case: &OpCase, device: &Device) -> Self {
        let backward = case.backward;
        let device = if backward { device.clone().autodiff() } else { device.clone() };
        let init = Init::random(&device);
        let input = |shape: [usize; 2]| -> Tensor<2> {
            let t = Tensor::random(shape, Distribution::Normal(0.0, 1.0), &device);
            if backward { t.require_grad() } else { t }
        };
        // Gradient of the output: the backward pass is `Σ y ⊙ g`'s, as on the PyTorch side.
        let finish = move |y: Tensor<2>, g: &Tensor<2>| {
            if backward {
                let _ = (y * g.clone()).sum().backward();
            } else {
                let _ = y;
            }
        };
        let run: Box<dyn Fn()> = match case.op {
            Op::Gelu { rows, cols } => {
                let (x, g) = (input([rows, cols]), Tensor::ones([rows, cols], &device));
                Box::new(move || finish(gelu(x.clone()), &g))
            }
            Op::LayerNorm { rows, dim } => {
                let (x, g) = (input([rows, dim]), Tensor::ones([rows, dim], &device));
                let norm = trained(LayerNorm::new(dim, 1e-6, &init), backward, |n| {
                    n.weight = n.weight.clone().require_grad();
                    n.bias = n.bias.clone().require_grad();
                });
                Box::new(move || finish(norm.forward(x.clone()), &g))
            }
            Op::Linear { rows, d_in, d_out } => {
                let (x, g) = (input([rows, d_in]), Tensor::ones([rows, d_out], &device));
                let layer = trained(Linear::new(d_in, d_out, true, &init), backward, |l| {
                    l.weight = l.weight.clone().require_grad();
                    l.bias = l.bias.clone().map(Tensor::require_grad);
                });
                Box::new(move || finish(layer.forward(x.clone()), &g))
            }
            Op::Attention { batch, heads, tokens, head_dim } => {
                let shape = [batch, heads, tokens, head_dim];
                let qkv = |_| input([batch * heads * tokens, head_dim]);
                let (q, k, v): (Tensor<2>, Tensor<2>, Tensor<2>) = (qkv(0), qkv(1), qkv(2));
                let g = Tensor::ones([batch * heads * tokens, head_dim], &device);
                Box::new(move || {
                    let out = attention(q.clone().reshape(shape), k.clone().reshape(shape), v.clone().reshape(shape));
                    finish(out.reshape([batch * heads * tokens, head_dim]), &g)
                })
            }
            Op::Conv3x3 { channels, side } => {
                let x = input([channels, side * side]);
                let g = Tensor::ones([channels, side * side], &device);
                let conv = trained(Conv2d::new(channels, channels, 3, 1, 1, &init), backward, |c| {
                    c.weight = c.weight.clone().require_grad();
                    c.bias = c.bias.clone().map(Tensor::require_grad);
                });
                Box::new(move || {
                    let y = conv.forward(x.clone().reshape([1, channels, side, side]));
                    finish(y.reshape([channels, side * side]), &g)
                })
            }
        };
        Prepared { run, device }
    }

    /// Runs the case once and waits for the device: milliseconds.
    pub fn time_ms(&self) -> anyhow::Result<f64> {
        let t = Instant::now();
        (self.run)();
        self.device.sync().map_err(|e| anyhow::anyhow!("device error: {e:?}"))?;
        Ok(t.elapsed().as_secs_f64() * 1e3)
    }
}

/// `module` with its parameters marked for gradients when the case has a backward pass.
fn trained<M>(mut module: M, backward: bool, mark: impl FnOnce(&mut M)) -> M {
    if backward {
        mark(&mut module);
    }
    module
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_case_runs_and_round_trips_as_json() {
        let device = Device::flex();
        for case in cases() {
            let json = serde_json::to_string(&case.op).unwrap();
            let back: Op = serde_json::from_str(&json).unwrap();
            assert_eq!(back, case.op, "{json}");
            // A small version of each case runs on our side.
            let small = OpCase { op: shrink(case.op), ..case };
            let ms = Prepared::new(&small, &device).time_ms().unwrap();
            assert!(ms.is_finite() && ms >= 0.0, "{}: {ms}", case.name);
        }
    }

    fn shrink(op: Op) -> Op {
        match op {
            Op::Gelu { cols, .. } => Op::Gelu { rows: 4, cols },
            Op::LayerNorm { dim, .. } => Op::LayerNorm { rows: 4, dim },
            Op::Linear { d_in, d_out, .. } => Op::Linear { rows: 4, d_in, d_out },
            Op::Attention { heads, head_dim, .. } => Op::Attention { batch: 2, heads, tokens: 5, head_dim },
            Op::Conv3x3 { .. } => Op::Conv3x3 { channels: 4, side: 6 },
        }
    }
}
