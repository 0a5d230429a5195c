//! Per-operation gradient sweep: every operation on SAM4EM's training path, differentiated by
//! burn's autodiff on the CPU backend and on wgpu, against an independent float64 reference
//! written here (the forward by its textbook formula, the gradient by central finite differences
//! of that float64 forward, or, for long sums, its analytic float64 value). It exists because
//! the golden training step on wgpu showed two gaps only as a few gradients off (issue 15):
//! burn's cubecl backend differentiated GELU with the tanh approximation's derivative, and on
//! lavapipe burn's convolution, transposed convolution, norm and linear parameter gradients
//! over ≥ 131,072 positions came from kernels whose loops lavapipe cuts short. Each now fails here, named by operation, if it
//! comes back (`model::ops` has the fixes).
//!
//! Each case computes `L = Σ w ⊙ f(x, params)` with fixed random weights `w`, so every output
//! element's gradient path is exercised with a different sign and size. Inputs are f32 values;
//! the reference sees exactly those values in f64.
//!
//! Tolerance: |ours − ref| ≤ 2e-5·(1 + |ref|) for gradients and forward values of the small
//! cases, where every reduction has at most a few hundred terms and f32 rounding stays near
//! 1e-6 (the GELU gap is 8.7e-4, 40× over the bound). Long sums may in addition be off by
//! 4·u·Σ|terms| (see [`compare_sum`]).
#![cfg(feature = "model")]

use crate::common;

use burn::tensor::activation::{log_sigmoid, relu, sigmoid, softmax};
use burn::tensor::module::{interpolate, max_pool2d};
use burn::tensor::ops::{InterpolateMode, InterpolateOptions, MaxPoolOptions};
use burn::tensor::{Device, Tensor};
use sam4em::model::nn::{
    BatchNorm2d, BilinearResize, Conv2d, ConvTranspose2x2, LayerNorm, LayerNorm2d, Linear, from_vec, to_vec,
};
use sam4em::model::ops;

const TOL: f64 = 2e-5;

/// The burn side of a case: flat leaves in, a flat output.
type BurnFn = Box<dyn Fn(&[Tensor<1>]) -> Tensor<1>>;
/// A float64 forward: flat inputs in, a flat output.
type ReferenceFn = Box<dyn Fn(&[Vec<f64>]) -> Vec<f64>>;
/// float64 gradients of `Σ w ⊙ f` given `(inputs, w)`, one entry per input (`None`: unchecked).
type GradientsFn = Box<dyn Fn(&[Vec<f64>], &[f64]) -> Vec<Option<Summed>>>;

/// One operation under test: named inputs (flat, row-major), the burn computation over flat
/// leaves, and the float64 reference.
struct Case {
    name: &'static str,
    inputs: Vec<(&'static str, Vec<f32>)>,
    burn: BurnFn,
    reference: ReferenceFn,
}

/// xorshift64*: reproducible inputs without a dependency.
struct Rng(u64);

impl Rng {
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let u = (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }

    fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }

    /// `n` distinct values 0.01 apart in a random order (no ties for max pooling, no kink of
    /// ReLU within a finite-difference step).
    fn distinct(&mut self, n: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..n).map(|i| (i as f32 - n as f32 / 2.0) * 0.01 + 0.005).collect();
        for i in (1..n).rev() {
            let j = (self.uniform(0.0, 1.0) * (i + 1) as f32) as usize;
            v.swap(i, j.min(i));
        }
        v
    }
}

fn grid(n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|i| lo + (hi - lo) * i as f32 / (n - 1) as f32).collect()
}

fn t4(t: &Tensor<1>, shape: [usize; 4]) -> Tensor<4> {
    t.clone().reshape(shape)
}

fn flat<const D: usize>(t: Tensor<D>) -> Tensor<1> {
    let n: usize = t.dims().iter().product();
    t.reshape([n])
}

/// `x`, `weight` and `bias` of a layer: inputs in [−1, 1], weights and biases in [−½, ½].
fn layer_inputs(rng: &mut Rng, x: usize, weight: usize, bias: usize) -> Vec<(&'static str, Vec<f32>)> {
    vec![("x", rng.vec(x, -1.0, 1.0)), ("weight", rng.vec(weight, -0.5, 0.5)), ("bias", rng.vec(bias, -0.5, 0.5))]
}

/// `x`, `weight` and `bias` of a norm: inputs in [lo, hi], scales in [½, 1½], shifts in [−½, ½].
fn norm_inputs(rng: &mut Rng, x: usize, c: usize, (lo, hi): (f32, f32)) -> Vec<(&'static str, Vec<f32>)> {
    vec![("x", rng.vec(x, lo, hi)), ("weight", rng.vec(c, 0.5, 1.5)), ("bias", rng.vec(c, -0.5, 0.5))]
}

/// Our `Conv2d` on flat leaves `[x, weight, bias]`.
fn conv2d_on(
    t: &[Tensor<1>],
    [b, ci, h, w]: [usize; 4],
    co: usize,
    k: usize,
    stride: usize,
    padding: usize,
) -> Tensor<1> {
    let conv = Conv2d { weight: t4(&t[1], [co, ci, k, k]), bias: Some(t[2].clone()), stride, padding };
    flat(conv.forward(t4(&t[0], [b, ci, h, w])))
}

/// Our `ConvTranspose2x2` on flat leaves `[x, weight, bias]`.
fn conv_transpose_on(t: &[Tensor<1>], [b, ci, h, w]: [usize; 4], co: usize) -> Tensor<1> {
    let conv = ConvTranspose2x2 { weight: t4(&t[1], [ci, co, 2, 2]), bias: t[2].clone() };
    flat(conv.forward(t4(&t[0], [b, ci, h, w])))
}

fn erf64(x: f64) -> f64 {
    libm::erf(x)
}

fn gelu64(x: f64) -> f64 {
    0.5 * x * (1.0 + erf64(x / std::f64::consts::SQRT_2))
}

fn sigmoid64(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Row-major index of `[a, b, c, d]` in a tensor of shape `s`.
fn at(s: [usize; 4], a: usize, b: usize, c: usize, d: usize) -> usize {
    ((a * s[1] + b) * s[2] + c) * s[3] + d
}

/// LayerNorm over `len` contiguous-or-strided values: `(x − mean)/√(var + eps)·w + b`.
fn normalise(values: &[f64], eps: f64) -> Vec<f64> {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    values.iter().map(|v| (v - mean) / (var + eps).sqrt()).collect()
}

fn pytorch_bilinear_taps(n_in: usize, n_out: usize, o: usize) -> [(usize, f64); 2] {
    // align_corners = False: source coordinate (o + ½)·in/out − ½, clamped at 0.
    let src = ((o as f64 + 0.5) * n_in as f64 / n_out as f64 - 0.5).max(0.0);
    let i0 = (src.floor() as usize).min(n_in - 1);
    let i1 = (i0 + 1).min(n_in - 1);
    let l1 = src - i0 as f64;
    [(i0, 1.0 - l1), (i1, l1)]
}

fn cases(device: &Device) -> Vec<Case> {
    let mut rng = Rng(0x5a4e_4d15);
    let mut cases = Vec::new();

    cases.push(Case {
        name: "erf",
        inputs: vec![("x", grid(161, -4.0, 4.0))],
        burn: Box::new(|t| t[0].clone().erf()),
        reference: Box::new(|x| x[0].iter().map(|&v| erf64(v)).collect()),
    });

    cases.push(Case {
        name: "gelu (exact, model::ops)",
        // Dense over [−5, 5]: the tanh-approximation derivative is worst near x = ±2.
        inputs: vec![("x", grid(201, -5.0, 5.0))],
        burn: Box::new(|t| ops::gelu(t[0].clone())),
        reference: Box::new(|x| x[0].iter().map(|&v| gelu64(v)).collect()),
    });

    {
        let s = [2, 6, 4, 5];
        let n = s.iter().product();
        cases.push(Case {
            name: "LayerNorm2d",
            inputs: norm_inputs(&mut rng, n, 6, (-2.0, 3.0)),
            burn: Box::new(move |t| {
                let norm = LayerNorm2d { weight: t[1].clone(), bias: t[2].clone(), eps: 1e-6 };
                flat(norm.forward(t4(&t[0], s)))
            }),
            reference: Box::new(move |v| {
                let (x, w, b) = (&v[0], &v[1], &v[2]);
                let mut out = vec![0.0; x.len()];
                for bi in 0..s[0] {
                    for h in 0..s[2] {
                        for wi in 0..s[3] {
                            let idx: Vec<usize> = (0..s[1]).map(|c| at(s, bi, c, h, wi)).collect();
                            let vals: Vec<f64> = idx.iter().map(|&i| x[i]).collect();
                            for (c, (&i, nv)) in idx.iter().zip(normalise(&vals, 1e-6)).enumerate() {
                                out[i] = nv * w[c] + b[c];
                            }
                        }
                    }
                }
                out
            }),
        });
    }

    {
        let (rows, c) = (10, 8);
        cases.push(Case {
            name: "LayerNorm (last dim)",
            inputs: norm_inputs(&mut rng, rows * c, c, (-2.0, 2.0)),
            burn: Box::new(move |t| {
                let norm = LayerNorm { weight: t[1].clone(), bias: t[2].clone(), eps: 1e-6 };
                flat(norm.forward(t[0].clone().reshape([rows, c])))
            }),
            reference: Box::new(move |v| {
                v[0].chunks(c)
                    .flat_map(|row| normalise(row, 1e-6).into_iter().enumerate().map(|(j, nv)| nv * v[1][j] + v[2][j]))
                    .collect()
            }),
        });
    }

    {
        let (b, ci, co, h, w) = (2, 4, 3, 3, 3);
        cases.push(Case {
            name: "ConvTranspose2d (2×2, stride 2)",
            inputs: layer_inputs(&mut rng, b * ci * h * w, ci * co * 4, co),
            burn: Box::new(move |t| conv_transpose_on(t, [b, ci, h, w], co)),
            reference: Box::new(move |v| {
                let (x, wt, bias) = (&v[0], &v[1], &v[2]);
                let so = [b, co, 2 * h, 2 * w];
                let mut out = vec![0.0; b * co * 4 * h * w];
                for bi in 0..b {
                    for o in 0..co {
                        for y in 0..2 * h {
                            for xx in 0..2 * w {
                                let mut acc = bias[o];
                                for c in 0..ci {
                                    acc += x[at([b, ci, h, w], bi, c, y / 2, xx / 2)]
                                        * wt[at([ci, co, 2, 2], c, o, y % 2, xx % 2)];
                                }
                                out[at(so, bi, o, y, xx)] = acc;
                            }
                        }
                    }
                }
                out
            }),
        });
    }

    for (k, stride, pad) in [(3usize, 1usize, 1usize), (2, 2, 0)] {
        let (b, ci, co, h, w) = (2, 3, 4, 6, 5);
        cases.push(Case {
            name: if k == 3 { "Conv2d (3×3, padding 1)" } else { "Conv2d (2×2, stride 2)" },
            inputs: layer_inputs(&mut rng, b * ci * h * w, co * ci * k * k, co),
            burn: Box::new(move |t| conv2d_on(t, [b, ci, h, w], co, k, stride, pad)),
            reference: Box::new(move |v| {
                let (x, wt, bias) = (&v[0], &v[1], &v[2]);
                let (ho, wo) = ((h + 2 * pad - k) / stride + 1, (w + 2 * pad - k) / stride + 1);
                let mut out = vec![0.0; b * co * ho * wo];
                for bi in 0..b {
                    for o in 0..co {
                        for y in 0..ho {
                            for xx in 0..wo {
                                let mut acc = bias[o];
                                for c in 0..ci {
                                    for ky in 0..k {
                                        for kx in 0..k {
                                            let (sy, sx) = (
                                                (y * stride + ky) as isize - pad as isize,
                                                (xx * stride + kx) as isize - pad as isize,
                                            );
                                            if sy >= 0 && sx >= 0 && (sy as usize) < h && (sx as usize) < w {
                                                acc += x[at([b, ci, h, w], bi, c, sy as usize, sx as usize)]
                                                    * wt[at([co, ci, k, k], o, c, ky, kx)];
                                            }
                                        }
                                    }
                                }
                                out[at([b, co, ho, wo], bi, o, y, xx)] = acc;
                            }
                        }
                    }
                }
                out
            }),
        });
    }

    {
        let (rows, di, dout) = (15, 6, 4);
        cases.push(Case {
            name: "Linear",
            inputs: layer_inputs(&mut rng, rows * di, di * dout, dout),
            burn: Box::new(move |t| {
                let lin = Linear { weight: t[1].clone().reshape([di, dout]), bias: Some(t[2].clone()) };
                flat(lin.forward(t[0].clone().reshape([3, rows / 3, di])))
            }),
            reference: Box::new(move |v| {
                let mut out = Vec::with_capacity(rows * dout);
                for r in 0..rows {
                    for o in 0..dout {
                        out.push(v[2][o] + (0..di).map(|i| v[0][r * di + i] * v[1][i * dout + o]).sum::<f64>());
                    }
                }
                out
            }),
        });
    }

    for dim in [1usize, 0] {
        let (r, c) = (5, 7);
        cases.push(Case {
            name: if dim == 1 { "softmax (last dim)" } else { "softmax (dim 0)" },
            inputs: vec![("x", rng.vec(r * c, -3.0, 3.0))],
            burn: Box::new(move |t| flat(softmax(t[0].clone().reshape([r, c]), dim))),
            reference: Box::new(move |v| {
                let x = &v[0];
                let mut out = vec![0.0; r * c];
                let (outer, inner) = if dim == 1 { (r, c) } else { (c, r) };
                for o in 0..outer {
                    let idx: Vec<usize> = (0..inner).map(|i| if dim == 1 { o * c + i } else { i * c + o }).collect();
                    let m = idx.iter().map(|&i| x[i]).fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = idx.iter().map(|&i| (x[i] - m).exp()).sum();
                    for &i in &idx {
                        out[i] = (x[i] - m).exp() / z;
                    }
                }
                out
            }),
        });
    }

    {
        let (b, nq, nk, d, dv) = (2, 5, 6, 4, 3);
        cases.push(Case {
            name: "attention (q·kᵀ/√d, softmax, ·v)",
            inputs: vec![
                ("q", rng.vec(b * nq * d, -1.0, 1.0)),
                ("k", rng.vec(b * nk * d, -1.0, 1.0)),
                ("v", rng.vec(b * nk * dv, -1.0, 1.0)),
            ],
            // The model's attention, its `b` batches as heads: on the CPU, the fused kernels
            // of `cpu_kernels` (forward and backward); elsewhere, burn's composition.
            burn: Box::new(move |t| {
                let q: Tensor<4> = t[0].clone().reshape([1, b, nq, d]);
                let k: Tensor<4> = t[1].clone().reshape([1, b, nk, d]);
                let v: Tensor<4> = t[2].clone().reshape([1, b, nk, dv]);
                flat(sam4em::model::nn::attention(q, k, v))
            }),
            reference: Box::new(move |x| {
                let (q, k, v) = (&x[0], &x[1], &x[2]);
                let mut out = Vec::new();
                for bi in 0..b {
                    for i in 0..nq {
                        let s: Vec<f64> = (0..nk)
                            .map(|j| {
                                (0..d).map(|e| q[(bi * nq + i) * d + e] * k[(bi * nk + j) * d + e]).sum::<f64>()
                                    / (d as f64).sqrt()
                            })
                            .collect();
                        let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                        let z: f64 = s.iter().map(|v| (v - m).exp()).sum();
                        for e in 0..dv {
                            out.push((0..nk).map(|j| (s[j] - m).exp() / z * v[(bi * nk + j) * dv + e]).sum());
                        }
                    }
                }
                out
            }),
        });
    }

    {
        let s = [2, 3, 3, 4];
        cases.push(Case {
            name: "interpolate (nearest, 2×)",
            inputs: vec![("x", rng.vec(s.iter().product(), -1.0, 1.0))],
            burn: Box::new(move |t| {
                let opts = InterpolateOptions::new(InterpolateMode::Nearest).with_output_size([2 * s[2], 2 * s[3]]);
                flat(interpolate(t4(&t[0], s), opts))
            }),
            reference: Box::new(move |v| {
                let so = [s[0], s[1], 2 * s[2], 2 * s[3]];
                let mut out = vec![0.0; so.iter().product()];
                for a in 0..so[0] {
                    for c in 0..so[1] {
                        for y in 0..so[2] {
                            for x in 0..so[3] {
                                out[at(so, a, c, y, x)] = v[0][at(s, a, c, y / 2, x / 2)];
                            }
                        }
                    }
                }
                out
            }),
        });
    }

    {
        let (s, ho, wo) = ([2, 2, 4, 3], 9, 7);
        let device = device.clone();
        cases.push(Case {
            name: "bilinear resize (align_corners = False)",
            inputs: vec![("x", rng.vec(s.iter().product(), -1.0, 1.0))],
            burn: Box::new(move |t| {
                let resize = BilinearResize::new(s[2], s[3], ho, wo, &device.clone().autodiff());
                flat(resize.forward(t4(&t[0], s)))
            }),
            reference: Box::new(move |v| {
                let so = [s[0], s[1], ho, wo];
                let mut out = vec![0.0; so.iter().product()];
                for a in 0..s[0] {
                    for c in 0..s[1] {
                        for y in 0..ho {
                            for x in 0..wo {
                                let mut acc = 0.0;
                                for (iy, wy) in pytorch_bilinear_taps(s[2], ho, y) {
                                    for (ix, wx) in pytorch_bilinear_taps(s[3], wo, x) {
                                        acc += wy * wx * v[0][at(s, a, c, iy, ix)];
                                    }
                                }
                                out[at(so, a, c, y, x)] = acc;
                            }
                        }
                    }
                }
                out
            }),
        });
    }

    {
        let s = [2, 3, 4, 6];
        cases.push(Case {
            name: "max_pool2d (2×2)",
            inputs: vec![("x", rng.distinct(s.iter().product()))],
            burn: Box::new(move |t| flat(max_pool2d(t4(&t[0], s), MaxPoolOptions::new([2, 2])))),
            reference: Box::new(move |v| {
                let so = [s[0], s[1], s[2] / 2, s[3] / 2];
                let mut out = vec![0.0; so.iter().product()];
                for a in 0..so[0] {
                    for c in 0..so[1] {
                        for y in 0..so[2] {
                            for x in 0..so[3] {
                                let m = [(0, 0), (0, 1), (1, 0), (1, 1)]
                                    .iter()
                                    .map(|&(dy, dx)| v[0][at(s, a, c, 2 * y + dy, 2 * x + dx)])
                                    .fold(f64::NEG_INFINITY, f64::max);
                                out[at(so, a, c, y, x)] = m;
                            }
                        }
                    }
                }
                out
            }),
        });
    }

    cases.push(Case {
        name: "relu",
        inputs: vec![("x", rng.distinct(64))],
        burn: Box::new(|t| relu(t[0].clone())),
        reference: Box::new(|x| x[0].iter().map(|&v| v.max(0.0)).collect()),
    });

    cases.push(Case {
        name: "sigmoid",
        inputs: vec![("x", grid(81, -8.0, 8.0))],
        burn: Box::new(|t| sigmoid(t[0].clone())),
        reference: Box::new(|x| x[0].iter().map(|&v| sigmoid64(v)).collect()),
    });

    cases.push(Case {
        name: "log_sigmoid",
        inputs: vec![("x", grid(81, -8.0, 8.0))],
        burn: Box::new(|t| log_sigmoid(t[0].clone())),
        reference: Box::new(|x| x[0].iter().map(|&v| sigmoid64(v).ln()).collect()),
    });

    {
        let s = [3, 4, 3, 3];
        let device = device.clone();
        cases.push(Case {
            name: "BatchNorm2d (training: batch statistics)",
            inputs: norm_inputs(&mut rng, s.iter().product(), 4, (-2.0, 2.0)),
            burn: Box::new(move |t| {
                let ad = device.clone().autodiff();
                let mut bn = BatchNorm2d::new(4, &sam4em::model::Init::random(&ad));
                bn.weight = t[1].clone();
                bn.bias = t[2].clone();
                flat(bn.forward_train(t4(&t[0], s)).0)
            }),
            reference: Box::new(move |v| {
                let mut out = vec![0.0; v[0].len()];
                for c in 0..s[1] {
                    let idx: Vec<usize> = (0..s[0])
                        .flat_map(|a| (0..s[2]).flat_map(move |y| (0..s[3]).map(move |x| at(s, a, c, y, x))))
                        .collect();
                    let vals: Vec<f64> = idx.iter().map(|&i| v[0][i]).collect();
                    for (&i, nv) in idx.iter().zip(normalise(&vals, 1e-5)) {
                        out[i] = nv * v[1][c] + v[2][c];
                    }
                }
                out
            }),
        });
    }

    cases
}

/// An operation at the sizes where its gradient is a long sum (B·H·W = 131,072 terms, the micro
/// reference's full-resolution decoder maps): too many inputs for finite differences, so the
/// parameter gradients are checked against their float64 analytic values, and the input's
/// (a short sum per element, covered by [`cases`]) is not.
struct LongCase {
    name: &'static str,
    inputs: Vec<(&'static str, Vec<f32>)>,
    burn: BurnFn,
    /// float64 gradients of `Σ w ⊙ f` for each input given `(inputs, w)`, each element with the
    /// sum of the absolute values of the terms it adds up; `None` = not checked.
    gradients: GradientsFn,
}

/// Long sums in float64: the values, and for each the sum of the absolute values of its terms.
#[derive(Default)]
struct Summed {
    value: Vec<f64>,
    abs: Vec<f64>,
}

impl Summed {
    fn zeros(n: usize) -> Self {
        Summed { value: vec![0.0; n], abs: vec![0.0; n] }
    }

    fn add(&mut self, i: usize, term: f64) {
        self.value[i] += term;
        self.abs[i] += term.abs();
    }
}

/// Weight and bias gradients of a convolution `[b, ci, h, w]` → `[b, co, ho, wo]` for the
/// output weights `wl`: `dW[o,c,ky,kx] = Σ wl[b,o,y,x]·x[b,c,y·s+ky−p,x·s+kx−p]`, `db[o] = Σ wl`.
#[allow(clippy::too_many_arguments)]
fn conv_param_grads(
    x: &[f64],
    wl: &[f64],
    [b, ci, h, w]: [usize; 4],
    co: usize,
    k: usize,
    stride: usize,
    pad: usize,
) -> (Summed, Summed) {
    let (ho, wo) = ((h + 2 * pad - k) / stride + 1, (w + 2 * pad - k) / stride + 1);
    let mut dw = Summed::zeros(co * ci * k * k);
    let mut db = Summed::zeros(co);
    for bi in 0..b {
        for o in 0..co {
            for y in 0..ho {
                for xx in 0..wo {
                    let g = wl[at([b, co, ho, wo], bi, o, y, xx)];
                    db.add(o, g);
                    for c in 0..ci {
                        for ky in 0..k {
                            let sy = (y * stride + ky) as isize - pad as isize;
                            if sy < 0 || sy as usize >= h {
                                continue;
                            }
                            for kx in 0..k {
                                let sx = (xx * stride + kx) as isize - pad as isize;
                                if sx >= 0 && (sx as usize) < w {
                                    let xv = x[at([b, ci, h, w], bi, c, sy as usize, sx as usize)];
                                    dw.add(at([co, ci, k, k], o, c, ky, kx), g * xv);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    (dw, db)
}

fn long_cases() -> Vec<LongCase> {
    let mut rng = Rng(0x1a7e_5a11);
    let mut cases = Vec::new();
    for (k, pad, ci) in [(3usize, 1usize, 4usize), (1, 0, 12)] {
        let (b, co, h, w) = (2, 4, 256, 256);
        cases.push(LongCase {
            name: if k == 3 {
                "Conv2d 3×3 at 2×256² (131,072 positions)"
            } else {
                "Conv2d 1×1 at 2×256² (131,072 positions)"
            },
            inputs: layer_inputs(&mut rng, b * ci * h * w, co * ci * k * k, co),
            burn: Box::new(move |t| conv2d_on(t, [b, ci, h, w], co, k, 1, pad)),
            gradients: Box::new(move |v, wl| {
                let (dw, db) = conv_param_grads(&v[0], wl, [b, ci, h, w], co, k, 1, pad);
                vec![None, Some(dw), Some(db)]
            }),
        });
    }
    {
        let (b, ci, co, h, w) = (2, 8, 4, 256, 256);
        cases.push(LongCase {
            name: "ConvTranspose2d 2×2 from 2×256² (weight over 131,072, bias over 524,288 positions)",
            inputs: layer_inputs(&mut rng, b * ci * h * w, ci * co * 4, co),
            burn: Box::new(move |t| conv_transpose_on(t, [b, ci, h, w], co)),
            gradients: Box::new(move |v, wl| {
                let so = [b, co, 2 * h, 2 * w];
                let mut dw = Summed::zeros(ci * co * 4);
                let mut db = Summed::zeros(co);
                for bi in 0..b {
                    for o in 0..co {
                        for y in 0..2 * h {
                            for xx in 0..2 * w {
                                let g = wl[at(so, bi, o, y, xx)];
                                db.add(o, g);
                                for c in 0..ci {
                                    let xv = v[0][at([b, ci, h, w], bi, c, y / 2, xx / 2)];
                                    dw.add(at([ci, co, 2, 2], c, o, y % 2, xx % 2), g * xv);
                                }
                            }
                        }
                    }
                }
                vec![None, Some(dw), Some(db)]
            }),
        });
    }
    {
        let s = [2, 4, 512, 512];
        cases.push(LongCase {
            name: "LayerNorm2d at 2×4×512² (parameters over 524,288 positions)",
            inputs: norm_inputs(&mut rng, s.iter().product(), s[1], (-2.0, 3.0)),
            burn: Box::new(move |t| {
                let norm = LayerNorm2d { weight: t[1].clone(), bias: t[2].clone(), eps: 1e-6 };
                flat(norm.forward(t4(&t[0], s)))
            }),
            gradients: Box::new(move |v, wl| {
                let (mut dw, mut db) = (Summed::zeros(s[1]), Summed::zeros(s[1]));
                for bi in 0..s[0] {
                    for y in 0..s[2] {
                        for x in 0..s[3] {
                            let idx: Vec<usize> = (0..s[1]).map(|c| at(s, bi, c, y, x)).collect();
                            let vals: Vec<f64> = idx.iter().map(|&i| v[0][i]).collect();
                            for (c, (&i, nv)) in idx.iter().zip(normalise(&vals, 1e-6)).enumerate() {
                                dw.add(c, wl[i] * nv);
                                db.add(c, wl[i]);
                            }
                        }
                    }
                }
                vec![None, Some(dw), Some(db)]
            }),
        });
    }
    {
        let (rows, c) = (131_072, 8);
        cases.push(LongCase {
            name: "LayerNorm (last dim) over 131,072 rows",
            inputs: norm_inputs(&mut rng, rows * c, c, (-2.0, 2.0)),
            burn: Box::new(move |t| {
                let norm = LayerNorm { weight: t[1].clone(), bias: t[2].clone(), eps: 1e-6 };
                flat(norm.forward(t[0].clone().reshape([2, rows / 2, c])))
            }),
            gradients: Box::new(move |v, wl| {
                let (mut dw, mut db) = (Summed::zeros(c), Summed::zeros(c));
                for (r, row) in v[0].chunks(c).enumerate() {
                    for (j, nv) in normalise(row, 1e-6).into_iter().enumerate() {
                        dw.add(j, wl[r * c + j] * nv);
                        db.add(j, wl[r * c + j]);
                    }
                }
                vec![None, Some(dw), Some(db)]
            }),
        });
    }
    {
        let (rows, di, dout) = (131_072, 8, 4);
        cases.push(LongCase {
            name: "Linear over 131,072 rows",
            inputs: layer_inputs(&mut rng, rows * di, di * dout, dout),
            burn: Box::new(move |t| {
                let lin = Linear { weight: t[1].clone().reshape([di, dout]), bias: Some(t[2].clone()) };
                flat(lin.forward(t[0].clone().reshape([2, rows / 2, di])))
            }),
            gradients: Box::new(move |v, wl| {
                let (mut dw, mut db) = (Summed::zeros(di * dout), Summed::zeros(dout));
                for r in 0..rows {
                    for o in 0..dout {
                        let g = wl[r * dout + o];
                        db.add(o, g);
                        for i in 0..di {
                            dw.add(i * dout + o, g * v[0][r * di + i]);
                        }
                    }
                }
                vec![None, Some(dw), Some(db)]
            }),
        });
    }
    cases
}

/// Runs every long case on `device`; returns one line per failing comparison.
fn long_sweep(device: &Device) -> Vec<String> {
    let ad = device.clone().autodiff();
    let mut rng = Rng(0x2026_1203);
    let mut failures = Vec::new();
    for case in long_cases() {
        let inputs64: Vec<Vec<f64>> = case.inputs.iter().map(|(_, v)| v.iter().map(|&x| x as f64).collect()).collect();
        let leaves: Vec<Tensor<1>> =
            case.inputs.iter().map(|(_, v)| from_vec(v.clone(), [v.len()], &ad).require_grad()).collect();
        let y = (case.burn)(&leaves);
        let n = y.dims()[0];
        let w: Vec<f32> = rng.vec(n, -1.0, 1.0);
        let w64: Vec<f64> = w.iter().map(|&v| v as f64).collect();
        let grads = (y * from_vec(w, [n], &ad)).sum().backward();
        for (((input, _), leaf), reference) in case.inputs.iter().zip(&leaves).zip((case.gradients)(&inputs64, &w64)) {
            let Some(reference) = reference else { continue };
            match leaf.grad(&grads) {
                Some(g) => {
                    failures.extend(compare_sum(device, case.name, &format!("d/d{input}"), &to_vec(&g), &reference))
                }
                None => failures.push(format!("{}: no gradient for {input}", case.name)),
            }
        }
    }
    failures
}

/// [`compare`] for long sums: each element may also be off by 4·u·Σ|terms| (u = 2⁻²⁴, f32's unit
/// roundoff). f32 summation of N terms errs by at most (N − 1)·u·Σ|terms| and in practice by a
/// small multiple of u·Σ|terms| (the CPU backend's 3×3 weight gradient here: about 0.5×), while
/// a term missing or counted twice moves the sum by that whole term, some 10⁴× more at these
/// sizes: what a kernel cut short does.
fn compare_sum(device: &Device, case: &str, what: &str, ours: &[f32], reference: &Summed) -> Option<String> {
    let unit_roundoff = f64::from(f32::EPSILON) / 2.0;
    let (mut worst, mut at) = (0.0f64, 0usize);
    for (i, &a) in ours.iter().enumerate() {
        let allowed = TOL * (1.0 + reference.value[i].abs()) + 4.0 * unit_roundoff * reference.abs[i];
        let excess = (a as f64 - reference.value[i]).abs() / allowed;
        let excess = if excess.is_finite() { excess } else { f64::INFINITY };
        if excess > worst {
            (worst, at) = (excess, i);
        }
    }
    if std::env::var_os("GRADIENT_DEBUG").is_some() {
        eprintln!("{device:?} {case}: {what}: max |diff| / allowed = {worst:.2}");
    }
    (worst > 1.0).then(|| {
        format!(
            "{case}: {what}: element {at} is {} but float64 gives {} (|diff| is {worst:.1}× the allowed \
             2e-5·(1 + |ref|) + 4u·Σ|terms| = {:.2e})",
            ours[at],
            reference.value[at],
            TOL * (1.0 + reference.value[at].abs()) + 4.0 * unit_roundoff * reference.abs[at]
        )
    })
}

/// One line naming the worst element when `ours` strays from `reference` by more than
/// [`TOL`]·(1 + |ref|); `None` when it does not. `GRADIENT_DEBUG` prints every margin.
fn compare(device: &Device, case: &str, what: &str, ours: &[f32], reference: &[f64]) -> Option<String> {
    let (mut worst, mut at) = (0.0f64, 0usize);
    for (i, (&a, &r)) in ours.iter().zip(reference).enumerate() {
        let excess = (a as f64 - r).abs() / (1.0 + r.abs());
        let excess = if excess.is_finite() { excess } else { f64::INFINITY };
        if excess > worst {
            (worst, at) = (excess, i);
        }
    }
    if std::env::var_os("GRADIENT_DEBUG").is_some() {
        eprintln!("{device:?} {case}: {what}: max |diff|/(1+|ref|) = {worst:.2e}");
    }
    (worst > TOL).then(|| {
        format!(
            "{case}: {what}: element {at} is {} but float64 gives {} (|diff|/(1+|ref|) = {worst:.2e} > {TOL:.0e})",
            ours[at], reference[at]
        )
    })
}

/// Runs every case on `device`; returns one line per failing comparison.
fn sweep(device: &Device) -> Vec<String> {
    let ad = device.clone().autodiff();
    let mut failures = Vec::new();
    let mut rng = Rng(0x0915_2026);
    for case in cases(device) {
        let inputs64: Vec<Vec<f64>> = case.inputs.iter().map(|(_, v)| v.iter().map(|&x| x as f64).collect()).collect();
        let y64 = (case.reference)(&inputs64);
        let w: Vec<f32> = rng.vec(y64.len(), -1.0, 1.0);
        let w64: Vec<f64> = w.iter().map(|&v| v as f64).collect();
        let loss64 =
            |inputs: &[Vec<f64>]| -> f64 { (case.reference)(inputs).iter().zip(&w64).map(|(y, w)| y * w).sum() };

        let leaves: Vec<Tensor<1>> =
            case.inputs.iter().map(|(_, v)| from_vec(v.clone(), [v.len()], &ad).require_grad()).collect();
        let y = (case.burn)(&leaves);
        let y32 = to_vec(&y);
        assert_eq!(y32.len(), y64.len(), "{}: output size", case.name);
        let grads = (y * from_vec(w, [y64.len()], &ad)).sum().backward();

        failures.extend(compare(device, case.name, "forward", &y32, &y64));
        for (k, ((input, _), leaf)) in case.inputs.iter().zip(&leaves).enumerate() {
            let Some(g) = leaf.grad(&grads) else {
                failures.push(format!("{}: no gradient for {input}", case.name));
                continue;
            };
            let ours = to_vec(&g);
            let mut reference = Vec::with_capacity(ours.len());
            let mut probe = inputs64.clone();
            for j in 0..probe[k].len() {
                let x = inputs64[k][j];
                let h = 1e-6 * x.abs().max(1.0);
                probe[k][j] = x + h;
                let up = loss64(&probe);
                probe[k][j] = x - h;
                let down = loss64(&probe);
                probe[k][j] = x;
                reference.push((up - down) / (2.0 * h));
            }
            failures.extend(compare(device, case.name, &format!("d/d{input}"), &ours, &reference));
        }
    }
    failures
}

fn assert_sweep(device: &Device) {
    let mut failures = sweep(device);
    failures.extend(long_sweep(device));
    assert!(failures.is_empty(), "gradients on {device:?} differ from float64:\n{}", failures.join("\n"));
}

#[test]
fn every_training_op_differentiates_like_float64_on_the_cpu() {
    assert_sweep(&Device::flex());
}

#[test]
fn every_training_op_differentiates_like_float64_on_wgpu() {
    if let Some(device) = common::wgpu_device() {
        assert_sweep(&device);
    }
}

/// The derivative itself, tighter than the sweep: `ops::gelu_backward` is what autodiff calls,
/// and it must be the exact `Φ(x) + x·φ(x)` to f32 precision on every backend (the tanh
/// approximation's derivative misses it by up to 8.7e-4 near x = ±2).
#[test]
fn gelu_derivative_is_exact_to_f32_precision() {
    let x = grid(401, -6.0, 6.0);
    let reference: Vec<f64> = x
        .iter()
        .map(|&v| {
            let v = v as f64;
            0.5 * (1.0 + erf64(v / std::f64::consts::SQRT_2))
                + v * (-0.5 * v * v).exp() / (2.0 * std::f64::consts::PI).sqrt()
        })
        .collect();
    let check = |device: &Device| {
        let g = ops::gelu_backward(from_vec(x.clone(), [x.len()], device), Tensor::ones([x.len()], device));
        let worst = to_vec(&g).iter().zip(&reference).map(|(&a, &r)| (a as f64 - r).abs()).fold(0.0, f64::max);
        assert!(worst < 1e-6, "GELU derivative on {device:?} is off by {worst:.2e}");
    };
    check(&Device::flex());
    if let Some(device) = common::wgpu_device() {
        check(&device);
    }
}

/// The piecewise weight gradient (`ops::conv2d_weight_grad`, what the cubecl backend uses) is
/// the whole sum, for pieces of whole images, of row bands, with stride and padding, checked
/// against float64 on both backends with pieces small enough to cut every image into bands.
#[test]
fn convolution_weight_gradient_in_pieces_is_the_whole_sum() {
    let mut rng = Rng(0x9e37_79b9);
    let (b, ci, co, h, w) = (3, 2, 3, 11, 13);
    let x = rng.vec(b * ci * h * w, -1.0, 1.0);
    let check = |device: &Device, rng: &mut Rng| {
        for (k, stride, pad, max_terms) in
            [(3, 1, 1, 40), (2, 2, 0, 37), (1, 1, 0, 500), (3, 2, 1, 13), (3, 1, 1, 1 << 20)]
        {
            let (ho, wo) = ((h + 2 * pad - k) / stride + 1, (w + 2 * pad - k) / stride + 1);
            let g = rng.vec(b * co * ho * wo, -1.0, 1.0);
            let options = burn::tensor::ops::ConvOptions::new([stride; 2], [pad; 2], [1, 1], 1);
            let ours = to_vec(&ops::conv2d_weight_grad(
                from_vec(x.clone(), [b, ci, h, w], device),
                Tensor::zeros([co, ci, k, k], device),
                from_vec(g.clone(), [b, co, ho, wo], device),
                options,
                max_terms,
            ));
            let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
            let g64: Vec<f64> = g.iter().map(|&v| v as f64).collect();
            let (reference, _) = conv_param_grads(&x64, &g64, [b, ci, h, w], co, k, stride, pad);
            let what = format!("d/dweight, kernel {k}, stride {stride}, padding {pad}, pieces of ≤ {max_terms}");
            assert!(
                compare(device, "piecewise weight gradient", &what, &ours, &reference.value).is_none(),
                "{what} on {device:?}"
            );
        }
    };
    check(&Device::flex(), &mut rng);
    if let Some(device) = common::wgpu_device() {
        check(&device, &mut rng);
    }
}
