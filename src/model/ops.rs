//! Tensor operations whose derivative must be the same on every burn backend, written as burn
//! backend extensions: one trait, an implementation per backend, and a hand-written backward
//! step for autodiff.
//!
//! **GELU.** Hiera's MLPs, the prompt encoder's mask downscaler and both mask decoders' upscalers
//! use the exact GELU, `x·Φ(x) = x·½(1 + erf(x/√2))`. burn's autodiff differentiates it through
//! the backend's `gelu_backward`: the CPU backend (Flex) implements the exact derivative
//! `Φ(x) + x·φ(x)`, but the cubecl backend (wgpu, CUDA, …) inherits burn's default, which is the
//! derivative of the *tanh approximation* — off by up to 8.7e-4 per element (at x ≈ 2), summed
//! into every gradient upstream. On the golden training step (wgpu, lavapipe) the exact
//! derivative alone moves `grad mask_decoder.output_upscaling.3.bias[3]` from 0.99946 to
//! 0.99967 (reference 1.00176; the rest of that gap is lavapipe's, below; issue 15). [`gelu`]
//! routes through [`ExactGelu`], whose derivative is exact on every backend.
//! `tests/model/op_gradients.rs` checks it, and the other operations of the training path, against
//! float64 references on the CPU and on wgpu.
//!
//! **Convolution weight gradients in bounded pieces.** A convolution's weight gradient sums,
//! for every weight, over every output position of the batch: B·H·W terms (131,072 for the
//! micro reference's full-resolution decoder convolutions, 2 M for B+ at 512² in batches of 8).
//! cubecl's autotuner may pick a kernel in which one invocation loops over all of them. Mesa's
//! lavapipe, the Vulkan device CI tests wgpu on, silently ends every shader invocation's loops
//! after 65,535 iterations in total (`LP_MAX_TGSI_LOOP_ITERATIONS`), so such a kernel returns a
//! partial or garbage sum there (issue 15: `skip_connect.{0,3}.weight` off by up to 1.6); on a
//! GPU one invocation summing millions of terms would be slow as well. [`conv2d`]
//! is burn's convolution with a hand-written backward step whose weight gradient is summed
//! from pieces of at most [`CONV_WEIGHT_GRAD_TERMS_MAX`] output positions (whole images, or
//! bands of rows) on cubecl; the CPU backend keeps one call. Biases are added outside the
//! convolution (see `nn::Conv2d`).
//!
//! [`conv_transpose2x2`] does the same for the decoders' 2×2 upscaling. Per-channel and
//! per-feature parameters being trained (biases, norms' scales and shifts) are broadcast so
//! that their gradients are summed one axis at a time or as a matrix product (`nn::per_channel`,
//! `nn::per_feature`).
//!
//! **Linear layers** ([`linear`]) run on the CPU as one kernel with the bias inside
//! (`cpu_kernels::flex_linear`), their gradients too; other backends keep burn's.
//!
//! The rest of the crate calls [`gelu`], [`linear`], [`conv2d`] and [`conv_transpose2x2`],
//! never burn's `gelu`, `linear`, `conv2d` or `conv_transpose2d` (clippy `disallowed-methods`
//! rules in `.clippy.toml`).

use core::f64::consts::{FRAC_1_SQRT_2, PI};
use core::marker::PhantomData;

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::retro_forward::RetroForward;
use burn::backend::autodiff::checkpoint::state::BackwardStates;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::ops::{ActivationOps, ConvOptions, ConvTransposeOptions, ModuleOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Cube, Dispatch, Flex, Slice, TensorMetadata, backend_extension};
use burn::tensor::Tensor;

/// Exact (erf) GELU, differentiated exactly on every backend.
///
/// The default bodies compose the backend's own element-wise operations (cubecl's `erf` is
/// accurate to 1.5e-7); backends with a faster exact kernel override them.
#[backend_extension(Cube, Flex, Autodiff)]
pub trait ExactGelu: Backend {
    /// `x·½(1 + erf(x/√2))`.
    fn exact_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let phi = Self::float_mul_scalar(
            Self::float_add_scalar(
                Self::float_erf(Self::float_mul_scalar(x.clone(), FRAC_1_SQRT_2.into())),
                1.0.into(),
            ),
            0.5.into(),
        );
        Self::float_mul(x, phi)
    }

    /// `grad·(Φ(x) + x·φ(x))`, with Φ the standard normal CDF and φ its density.
    fn exact_gelu_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        let cdf = Self::float_mul_scalar(
            Self::float_add_scalar(
                Self::float_erf(Self::float_mul_scalar(x.clone(), FRAC_1_SQRT_2.into())),
                1.0.into(),
            ),
            0.5.into(),
        );
        let pdf = Self::float_mul_scalar(
            Self::float_exp(Self::float_mul_scalar(Self::float_mul(x.clone(), x.clone()), (-0.5).into())),
            (1.0 / (2.0 * PI).sqrt()).into(),
        );
        Self::float_mul(grad, Self::float_add(cdf, Self::float_mul(x, pdf)))
    }
}

/// cubecl: the composed default bodies (burn's own cubecl GELU forward is the same composition).
impl ExactGelu for Cube {}

/// Flex: both directions vectorised and split across the cores (`cpu_kernels`): Flex's own
/// GELU is scalar and single-threaded, and Hiera-B+'s GELUs at 512² were a large share of an
/// encoder pass. Tensors that are not contiguous `f32` go to Flex's own kernels.
impl ExactGelu for Flex {
    fn exact_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let x = match super::cpu_kernels::flex_gelu_in_place(x) {
            Ok(y) => return y,
            Err(x) => x,
        };
        match super::cpu_kernels::flex_gelu(&x) {
            Some(y) => y,
            None => <Flex as ActivationOps<Flex>>::gelu(x),
        }
    }

    fn exact_gelu_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        match super::cpu_kernels::flex_gelu_backward(&x, &grad) {
            Some(g) => g,
            None => <Flex as ActivationOps<Flex>>::gelu_backward(x, grad),
        }
    }
}

/// The backward step: the gradient of the input from the saved (or recomputed) input.
#[derive(Debug)]
struct ExactGeluStep;

impl<B: ExactGelu> Backward<B, 1> for ExactGeluStep {
    type State = NodeId;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let input: FloatTensor<B> = checkpointer.retrieve_node_output(ops.state);
        unary::<B, _>(ops.parents, ops.node, grads, |grad| B::exact_gelu_backward(input, grad));
    }
}

/// Recomputes the output from the input when a checkpointing strategy dropped it (GELU is
/// element-wise, cheap to redo: it is registered memory-bound, like burn's own activations).
#[derive(Debug)]
struct RetroExactGelu<B> {
    input: NodeId,
    _backend: PhantomData<B>,
}

impl<B: ExactGelu> RetroForward for RetroExactGelu<B> {
    fn forward(&self, states: &mut BackwardStates, out_node: NodeId) {
        let input: FloatTensor<B> = states.get_state(&self.input);
        states.save(out_node, B::exact_gelu(input));
    }
}

impl<B: ExactGelu, C: CheckpointStrategy> ExactGelu for Autodiff<B, C> {
    fn exact_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let retro = RetroExactGelu::<B> { input: x.id(), _backend: PhantomData };
        match ExactGeluStep.prepare::<C>([x.node()]).memory_bound().retro_forward(retro).parents([&x]).stateful() {
            OpsKind::Tracked(mut prep) => {
                let state = prep.checkpoint(&x);
                prep.finish(state, B::exact_gelu(x.primitive().clone()))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::exact_gelu(x.into_primitive())),
        }
    }
    // `exact_gelu_backward` keeps the default body: composed of differentiable operations, it
    // is itself differentiable (nothing here takes second derivatives).
}

/// Exact GELU with an exact derivative on every backend (see the module docs).
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as ExactGelu>::exact_gelu(x.into_dispatch()))
}

/// The GELU derivative applied to `grad`, as the backward pass computes it (tests compare it
/// with float64 values; the model never calls it directly).
pub fn gelu_backward<const D: usize>(x: Tensor<D>, grad: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as ExactGelu>::exact_gelu_backward(x.into_dispatch(), grad.into_dispatch()))
}

/// Multi-head attention `softmax(q kᵀ/√d) v`, with a fast kernel for the forward pass and
/// the three gradients where the backend has one (the CPU's; `nn::attention` calls it there
/// only).
#[backend_extension(Cube, Flex, Autodiff)]
pub trait FastAttention: Backend {
    /// `q [B, H, Nq, d]`, `k [B, H, Nk, d]`, `v [B, H, Nk, dv]` → `[B, H, Nq, dv]`.
    fn fast_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::attention(q, k, v, None, None, Default::default())
    }

    /// The gradients of q, k and v for the output gradient `grad [B, H, Nq, dv]`.
    fn fast_attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        attention_backward_composed::<Self>(q, k, v, grad)
    }
}

/// The attention gradients from the backend's own operations: `P = softmax(s·q·kᵀ)`,
/// `dV = Pᵀ·dO`, `dP = dO·Vᵀ`, `dS = P ⊙ (dP − rowsum(P ⊙ dP))`, `dQ = s·dS·K`, `dK = s·dSᵀ·Q`.
fn attention_backward_composed<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    grad: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let scale = 1.0 / (q.shape()[3] as f64).sqrt();
    let scores = B::float_mul_scalar(B::float_matmul(q.clone(), B::float_swap_dims(k.clone(), 2, 3)), scale.into());
    let max = B::float_max_dim(scores.clone(), 3);
    let exp = B::float_exp(B::float_sub(scores, max));
    let p = B::float_div(exp.clone(), B::float_sum_dim(exp, 3));
    let dv = B::float_matmul(B::float_swap_dims(p.clone(), 2, 3), grad.clone());
    let dp = B::float_matmul(grad, B::float_swap_dims(v, 2, 3));
    let dot = B::float_sum_dim(B::float_mul(p.clone(), dp.clone()), 3);
    let ds = B::float_mul(p, B::float_sub(dp, dot));
    let dq = B::float_mul_scalar(B::float_matmul(ds.clone(), k), scale.into());
    let dk = B::float_mul_scalar(B::float_matmul(B::float_swap_dims(ds, 2, 3), q), scale.into());
    (dq, dk, dv)
}

/// cubecl: burn's fused attention (not yet called: see `nn::attention`).
impl FastAttention for Cube {}

/// Flex: `cpu_kernels::flex_attention` and `flex_attention_backward` (GEMMs on strided views,
/// vectorised softmax, probabilities recomputed per head in the backward pass).
impl FastAttention for Flex {
    fn fast_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>) -> FloatTensor<Self> {
        match super::cpu_kernels::flex_attention(&q, &k, &v) {
            Some(out) => out,
            None => <Flex as ModuleOps<Flex>>::attention(q, k, v, None, None, Default::default()),
        }
    }

    fn fast_attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        match super::cpu_kernels::flex_attention_backward(&q, &k, &v, &grad) {
            Some(grads) => grads,
            None => attention_backward_composed::<Flex>(q, k, v, grad),
        }
    }
}

/// The backward step of [`FastAttention`] on autodiff: q, k and v are kept (or recomputed by
/// the checkpointing strategy); the probabilities are recomputed from them.
#[derive(Debug)]
struct AttentionStep;

impl<B: FastAttention> Backward<B, 3> for AttentionStep {
    type State = [NodeId; 3];

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let [q, k, v] = ops.state.map(|id| checkpointer.retrieve_node_output::<FloatTensor<B>>(id));
        let (dq, dk, dv) = B::fast_attention_backward(q, k, v, grad);
        for (node, g) in ops.parents.iter().zip([dq, dk, dv]) {
            if let Some(node) = node {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

impl<B: FastAttention, C: CheckpointStrategy> FastAttention for Autodiff<B, C> {
    fn fast_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>) -> FloatTensor<Self> {
        match AttentionStep.prepare::<C>([q.node(), k.node(), v.node()]).compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let state = [prep.checkpoint(&q), prep.checkpoint(&k), prep.checkpoint(&v)];
                let out = B::fast_attention(q.primitive().clone(), k.primitive().clone(), v.primitive().clone());
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::fast_attention(q.into_primitive(), k.into_primitive(), v.into_primitive()))
            }
        }
    }
    // `fast_attention_backward` keeps the default body: nothing here takes second derivatives.
}

/// [`FastAttention`] on `Tensor`s.
pub fn fast_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as FastAttention>::fast_attention(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
    ))
}

/// A linear layer `x·W + b` over the last dimension, with a fast kernel where the backend has
/// one (the CPU's: `cpu_kernels::flex_linear`) for the forward pass and the gradients. On
/// cubecl, `nn::Linear` adds a bias being trained itself (see `nn::per_feature`).
#[backend_extension(Cube, Flex, Autodiff)]
pub trait FastLinear: Backend {
    /// `x [.., d_in]·weight [d_in, d_out] + bias [d_out]`.
    fn fast_linear(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::linear(x, weight, Some(bias))
    }

    /// `x [.., d_in]·weight [d_in, d_out]`.
    fn fast_linear_unbiased(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::linear(x, weight, None)
    }

    /// The input gradient `grad·weightᵀ`.
    fn fast_linear_x_grad(weight: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::linear_x_backward(weight, grad)
    }

    /// The weight gradient `xᵀ·grad`, summed over every leading dimension.
    fn fast_linear_weight_grad(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::linear_weight_backward(x, grad)
    }

    /// The bias gradient, `grad` summed over every leading dimension.
    fn fast_linear_bias_grad(grad: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::linear_bias_backward(grad)
    }
}

/// cubecl: burn's own linear and its gradients (the same calls burn's autodiff makes).
impl FastLinear for Cube {}

/// Flex: `cpu_kernels::flex_linear` (bias written into each block of output rows before its
/// product, blocks of rows in parallel) and `flex_linear_weight_grad` (rows split across the
/// cores); Flex's own kernels for tensors those do not take.
impl FastLinear for Flex {
    fn fast_linear(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        match super::cpu_kernels::flex_linear(&x, &weight, Some(&bias)) {
            Some(y) => y,
            None => <Flex as ModuleOps<Flex>>::linear(x, weight, Some(bias)),
        }
    }

    fn fast_linear_unbiased(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        match super::cpu_kernels::flex_linear(&x, &weight, None) {
            Some(y) => y,
            None => <Flex as ModuleOps<Flex>>::linear(x, weight, None),
        }
    }

    fn fast_linear_x_grad(weight: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        // `grad·Wᵀ` is a linear layer with the transposed view of W as its weight.
        match super::cpu_kernels::flex_linear(&grad, &weight.transpose(0, 1), None) {
            Some(g) => g,
            None => <Flex as ModuleOps<Flex>>::linear_x_backward(weight, grad),
        }
    }

    fn fast_linear_weight_grad(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        match super::cpu_kernels::flex_linear_weight_grad(&x, &grad) {
            Some(g) => g,
            None => <Flex as ModuleOps<Flex>>::linear_weight_backward(x, grad),
        }
    }
}

/// The backward step of [`FastLinear`] on autodiff: the input's gradient from the weight, the
/// weight's from the input, each kept only when the other side is being trained (as burn's
/// own linear does), and the bias's from the output gradient alone. `N` is 2 without a bias
/// among the parents, 3 with one.
#[derive(Debug)]
struct LinearStep<const N: usize>;

impl<B: FastLinear, const N: usize> Backward<B, N> for LinearStep<N> {
    type State = (Option<NodeId>, Option<NodeId>);

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let (x_state, weight_state) = ops.state;
        if let (Some(node), Some(state)) = (&ops.parents[0], weight_state) {
            let weight: FloatTensor<B> = checkpointer.retrieve_node_output(state);
            grads.register::<B>(node.id, B::fast_linear_x_grad(weight, grad.clone()));
        }
        if let (Some(node), Some(state)) = (&ops.parents[1], x_state) {
            let x: FloatTensor<B> = checkpointer.retrieve_node_output(state);
            grads.register::<B>(node.id, B::fast_linear_weight_grad(x, grad.clone()));
        }
        if let Some(Some(node)) = ops.parents.get(2) {
            grads.register::<B>(node.id, B::fast_linear_bias_grad(grad));
        }
    }
}

/// Runs `forward` on the inner backend's tensors, recording [`LinearStep`] over `parents`
/// (x, weight and, where there is one, the bias) when any of them is tracked.
fn linear_on_autodiff<B: FastLinear, C: CheckpointStrategy, const N: usize>(
    parents: [&FloatTensor<Autodiff<B, C>>; N],
    forward: impl FnOnce([FloatTensor<B>; N]) -> FloatTensor<B>,
) -> FloatTensor<Autodiff<B, C>> {
    let (x, weight) = (parents[0], parents[1]);
    let inner = parents.map(|t| t.primitive().clone());
    match LinearStep::<N>.prepare::<C>(parents.map(|t| t.node())).compute_bound().stateful() {
        OpsKind::Tracked(mut prep) => {
            // x is needed only for the weight's gradient, and the weight only for x's.
            let x_state = weight.is_tracked().then(|| prep.checkpoint(x));
            let weight_state = x.is_tracked().then(|| prep.checkpoint(weight));
            prep.finish((x_state, weight_state), forward(inner))
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(inner)),
    }
}

impl<B: FastLinear, C: CheckpointStrategy> FastLinear for Autodiff<B, C> {
    fn fast_linear(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        linear_on_autodiff::<B, C, 3>([&x, &weight, &bias], |[x, w, b]| B::fast_linear(x, w, b))
    }

    fn fast_linear_unbiased(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        linear_on_autodiff::<B, C, 2>([&x, &weight], |[x, w]| B::fast_linear_unbiased(x, w))
    }
    // The gradients keep their default bodies (burn's differentiable ones): nothing here takes
    // second derivatives.
}

/// [`FastLinear`] on `Tensor`s: `x [.., d_in]·weight [d_in, d_out] (+ bias [d_out])`.
pub fn linear<const D: usize>(x: Tensor<D>, weight: Tensor<2>, bias: Option<Tensor<1>>) -> Tensor<D> {
    let (x, weight) = (x.into_dispatch(), weight.into_dispatch());
    Tensor::from_dispatch(match bias {
        Some(b) => <Dispatch as FastLinear>::fast_linear(x, weight, b.into_dispatch()),
        None => <Dispatch as FastLinear>::fast_linear_unbiased(x, weight),
    })
}

/// LayerNorm over the last dimension, `(x − μ)/√(σ² + ε)·γ + β` with the biased variance (as
/// PyTorch), with a fast kernel for the forward pass and the gradients where the backend has
/// one: the CPU's (`nn::LayerNorm` calls this there only; on cubecl it keeps its composition,
/// whose per-feature gradients are summed as matrix products because of lavapipe's loop limit).
#[backend_extension(Cube, Flex, Autodiff)]
pub trait FastLayerNorm: Backend {
    /// `x [.., d]`, `gamma [d]`, `beta [d]` → `x`'s shape.
    fn fast_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        Self::layer_norm(x, gamma, Some(beta), eps)
    }

    /// The gradients of `x`, `gamma` and `beta` for the output gradient `grad` (`x`'s shape).
    fn fast_layer_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        layer_norm_backward_composed::<Self>(x, gamma, grad, eps)
    }
}

/// The LayerNorm gradients from the backend's own operations: `x̂ = (x − μ)·r` with
/// `r = 1/√(σ² + ε)`, `dx = r·(g·γ − mean(g·γ) − x̂·mean(g·γ·x̂))`, `dγ = Σ g·x̂`, `dβ = Σ g`
/// (sums over every leading dimension).
fn layer_norm_backward_composed<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    grad: FloatTensor<B>,
    eps: f64,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let shape = x.shape();
    let last = shape.num_dims() - 1;
    let d = shape[last];
    let rows = shape.num_elements() / d.max(1);
    let mean = B::float_mean_dim(x.clone(), last);
    let centered = B::float_sub(x, mean);
    let var = B::float_mean_dim(B::float_mul(centered.clone(), centered.clone()), last);
    let rstd = B::float_recip(B::float_sqrt(B::float_add_scalar(var, eps.into())));
    let xhat = B::float_mul(centered, rstd.clone());
    let mut gamma_shape = vec![1; last];
    gamma_shape.push(d);
    let gy = B::float_mul(grad.clone(), B::float_reshape(gamma, gamma_shape.into()));
    let a = B::float_mean_dim(gy.clone(), last);
    let b = B::float_mean_dim(B::float_mul(gy.clone(), xhat.clone()), last);
    let dx = B::float_mul(B::float_sub(B::float_sub(gy, a), B::float_mul(xhat.clone(), b)), rstd);
    let over_rows =
        |t: FloatTensor<B>| B::float_reshape(B::float_sum_dim(B::float_reshape(t, [rows, d].into()), 0), [d].into());
    let dgamma = over_rows(B::float_mul(grad.clone(), xhat));
    (dx, dgamma, over_rows(grad))
}

/// cubecl: burn's layer norm and the composed gradients.
impl FastLayerNorm for Cube {}

/// Flex: its fused forward kernel (one vectorised pass per row, rows in parallel) and
/// `cpu_kernels::flex_layer_norm_backward`.
impl FastLayerNorm for Flex {
    fn fast_layer_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        match super::cpu_kernels::flex_layer_norm_backward(&x, &gamma, &grad, eps) {
            Some(grads) => grads,
            None => layer_norm_backward_composed::<Flex>(x, gamma, grad, eps),
        }
    }
}

/// The backward step of [`FastLayerNorm`] on autodiff: every gradient from the kept input
/// and scale (μ and σ² are recomputed, one pass per row).
#[derive(Debug)]
struct LayerNormStep;

impl<B: FastLayerNorm> Backward<B, 3> for LayerNormStep {
    type State = (NodeId, NodeId, f64);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let (x_state, gamma_state, eps) = ops.state;
        let x: FloatTensor<B> = checkpointer.retrieve_node_output(x_state);
        let gamma: FloatTensor<B> = checkpointer.retrieve_node_output(gamma_state);
        let (dx, dgamma, dbeta) = B::fast_layer_norm_backward(x, gamma, grad, eps);
        for (parent, g) in ops.parents.into_iter().zip([dx, dgamma, dbeta]) {
            if let Some(node) = parent {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

impl<B: FastLayerNorm, C: CheckpointStrategy> FastLayerNorm for Autodiff<B, C> {
    fn fast_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        let inner = [&x, &gamma, &beta].map(|t| t.primitive().clone());
        let forward = |[x, g, b]: [FloatTensor<B>; 3]| B::fast_layer_norm(x, g, b, eps);
        match LayerNormStep.prepare::<C>([x.node(), gamma.node(), beta.node()]).compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let gamma_state = prep.checkpoint(&gamma);
                prep.finish((x_state, gamma_state, eps), forward(inner))
            }
            OpsKind::UnTracked(prep) => prep.finish(forward(inner)),
        }
    }
    // The backward keeps its default body (the composed gradients): nothing here takes second
    // derivatives.
}

/// [`FastLayerNorm`] on `Tensor`s: `x [.., d]` normalised over `d`, scaled by `gamma [d]`,
/// shifted by `beta [d]`.
pub fn layer_norm<const D: usize>(x: Tensor<D>, gamma: Tensor<1>, beta: Tensor<1>, eps: f64) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as FastLayerNorm>::fast_layer_norm(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        eps,
    ))
}

/// The most output positions (batch × rows × columns) one convolution weight-gradient kernel
/// sums over on the cubecl backend. Measured on lavapipe (Mesa 22.3.6, 2026-12-03, one image
/// per call): burn's direct weight-gradient kernel, which loops over every position of the
/// image in one invocation, is exact for 129² = 16,641 positions and wrong from 150² = 22,500;
/// 2¹⁴ stays below the first. On a GPU the pieces cost one launch each (128 for B+ at 512² in
/// batches of 8), and the two-level sum (within pieces, then of pieces) rounds less than one
/// sequential sum over millions of terms.
pub const CONV_WEIGHT_GRAD_TERMS_MAX: usize = 1 << 14;

/// 2-D convolution without bias whose weight gradient is computed in bounded pieces (see the
/// module docs).
#[backend_extension(Cube, Flex, Autodiff)]
pub trait BoundedConv2d: Backend {
    /// burn's convolution, no bias.
    fn conv2d_unbiased(x: FloatTensor<Self>, weight: FloatTensor<Self>, options: ConvOptions<2>) -> FloatTensor<Self> {
        Self::conv2d(x, weight, None, options)
    }

    /// The input gradient: burn's.
    fn conv2d_x_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d_x_backward(x, weight, grad, options)
    }

    /// The weight gradient, summed from pieces of at most [`CONV_WEIGHT_GRAD_TERMS_MAX`]
    /// output positions.
    fn conv2d_weight_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        weight_grad_in_pieces::<Self>(x, weight, grad, options, CONV_WEIGHT_GRAD_TERMS_MAX)
    }
}

impl BoundedConv2d for Cube {}

/// Whether `cpu_conv` handles a convolution with these options (stride 1, no dilation, one
/// group; it checks the rest itself).
fn plain_conv(options: &ConvOptions<2>) -> bool {
    options.stride == [1, 1] && options.dilation == [1, 1] && options.groups == 1
}

/// The CPU backend: stride-1 convolutions and both their gradients as one matrix product per
/// kernel tap (`cpu_conv`); others as Flex runs them. Each weight's gradient is one blocked
/// matrix product, not one long loop, so it needs no pieces.
impl BoundedConv2d for Flex {
    fn conv2d_unbiased(x: FloatTensor<Self>, weight: FloatTensor<Self>, options: ConvOptions<2>) -> FloatTensor<Self> {
        let fast = if plain_conv(&options) { super::cpu_conv::flex_conv2d(&x, &weight, options.padding) } else { None };
        fast.unwrap_or_else(|| <Flex as ModuleOps<Flex>>::conv2d(x, weight, None, options))
    }

    fn conv2d_x_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        let [_, _, height, width] = x.shape().dims();
        let fast = plain_conv(&options)
            .then(|| super::cpu_conv::flex_conv2d_x_grad(&grad, &weight, options.padding, [height, width]))
            .flatten();
        fast.unwrap_or_else(|| <Flex as ModuleOps<Flex>>::conv2d_x_backward(x, weight, grad, options))
    }

    fn conv2d_weight_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        let [_, _, kh, kw] = weight.shape().dims();
        let fast = plain_conv(&options)
            .then(|| super::cpu_conv::flex_conv2d_weight_grad(&x, &grad, options.padding, [kh, kw]))
            .flatten();
        fast.unwrap_or_else(|| <Flex as ModuleOps<Flex>>::conv2d_weight_backward(x, weight, grad, options))
    }
}

/// Where each piece of a weight gradient lies: a range of images and a range of output rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    /// Images `[start, end)`.
    pub images: (usize, usize),
    /// Output rows `[start, end)`.
    pub rows: (usize, usize),
}

/// Splits `batch` images of `rows × cols` output positions into pieces of at most `max_terms`
/// positions: groups of whole images when an image fits, else bands of rows of one image (at
/// least one row each, whatever `max_terms`).
pub fn pieces(batch: usize, rows: usize, cols: usize, max_terms: usize) -> Vec<Piece> {
    let per_image = rows * cols;
    if per_image == 0 || batch * per_image <= max_terms {
        return vec![Piece { images: (0, batch), rows: (0, rows) }];
    }
    if per_image <= max_terms {
        let group = max_terms / per_image;
        return (0..batch)
            .step_by(group)
            .map(|b| Piece { images: (b, (b + group).min(batch)), rows: (0, rows) })
            .collect();
    }
    let band = (max_terms / cols.max(1)).max(1);
    (0..batch)
        .flat_map(|b| {
            (0..rows).step_by(band).map(move |r| Piece { images: (b, b + 1), rows: (r, (r + band).min(rows)) })
        })
        .collect()
}

/// The slice of an NCHW tensor holding `images` and `rows`, all channels and columns.
fn band(images: (usize, usize), rows: (usize, usize)) -> [Slice; 4] {
    let range = |(a, b): (usize, usize)| Slice::new(a as isize, Some(b as isize), 1);
    [range(images), Slice::full(), range(rows), Slice::full()]
}

/// The sum of `part(piece)` over `all` (at least one piece).
fn sum_over<B: Backend>(all: Vec<Piece>, mut part: impl FnMut(Piece) -> FloatTensor<B>) -> FloatTensor<B> {
    all.into_iter().map(&mut part).reduce(B::float_add).expect("at least one piece")
}

/// [`BoundedConv2d::conv2d_weight_grad`] with an explicit piece size (tests use small ones).
fn weight_grad_in_pieces<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    grad: FloatTensor<B>,
    options: ConvOptions<2>,
    max_terms: usize,
) -> FloatTensor<B> {
    let [batch, _, height, _] = x.shape().dims();
    let [_, _, rows, cols] = grad.shape().dims();
    let [_, _, kernel, _] = weight.shape().dims();
    let all = pieces(batch, rows, cols, max_terms);
    if all.len() == 1 {
        return B::conv2d_weight_backward(x, weight, grad, options);
    }
    let (stride, (pad_top, _), dilation) = (options.stride[0], options.padding[0], options.dilation[0]);
    let span = dilation * (kernel - 1) + 1;
    sum_over::<B>(all, |piece| {
        let (r0, r1) = piece.rows;
        // Input rows this band reads, in padded coordinates, then clipped to the image: the
        // clipped part becomes this band's own (asymmetric) padding.
        let first = (r0 * stride) as isize - pad_top as isize;
        let end = ((r1 - 1) * stride + span) as isize - pad_top as isize;
        let (start, stop) = (first.max(0) as usize, (end.min(height as isize)) as usize);
        let band_padding = ((-first).max(0) as usize, (end - height as isize).max(0) as usize);
        let xs = B::float_slice(x.clone(), &band(piece.images, (start, stop)));
        let gs = B::float_slice(grad.clone(), &band(piece.images, piece.rows));
        let band_options = ConvOptions { padding: [band_padding, options.padding[1]], ..options.clone() };
        B::conv2d_weight_backward(xs, weight.clone(), gs, band_options)
    })
}

/// The backward step of [`BoundedConv2d::conv2d_unbiased`] on autodiff.
#[derive(Debug)]
struct Conv2dStep;

impl<B: BoundedConv2d> Backward<B, 2> for Conv2dStep {
    type State = (NodeId, NodeId, ConvOptions<2>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let [node_x, node_weight] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_state, weight_state, options) = ops.state;
        let x: FloatTensor<B> = checkpointer.retrieve_node_output(x_state);
        let weight: FloatTensor<B> = checkpointer.retrieve_node_output(weight_state);
        if let Some(node) = node_x {
            let g = B::conv2d_x_grad(x.clone(), weight.clone(), grad.clone(), options.clone());
            grads.register::<B>(node.id, g);
        }
        if let Some(node) = node_weight {
            grads.register::<B>(node.id, B::conv2d_weight_grad(x, weight, grad, options));
        }
    }
}

impl<B: BoundedConv2d, C: CheckpointStrategy> BoundedConv2d for Autodiff<B, C> {
    fn conv2d_unbiased(x: FloatTensor<Self>, weight: FloatTensor<Self>, options: ConvOptions<2>) -> FloatTensor<Self> {
        match Conv2dStep.prepare::<C>([x.node(), weight.node()]).compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let weight_state = prep.checkpoint(&weight);
                let out = B::conv2d_unbiased(x.primitive().clone(), weight.primitive().clone(), options.clone());
                prep.finish((x_state, weight_state, options), out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::conv2d_unbiased(x.into_primitive(), weight.into_primitive(), options))
            }
        }
    }
    // `conv2d_weight_grad` keeps the default body (burn's differentiable weight backward per
    // piece); nothing here takes second derivatives.
}

/// 2-D convolution without bias, `[B, C, H, W]` × `[O, C, k, k]` → `[B, O, H', W']`, whose
/// backward pass bounds the work of each weight-gradient kernel (see the module docs).
pub fn conv2d(x: Tensor<4>, weight: Tensor<4>, options: ConvOptions<2>) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as BoundedConv2d>::conv2d_unbiased(
        x.into_dispatch(),
        weight.into_dispatch(),
        options,
    ))
}

/// The weight gradient of [`conv2d`] for an output gradient `grad`, summed from pieces of at
/// most `max_terms` output positions on every backend (tests compare piece sizes).
pub fn conv2d_weight_grad(
    x: Tensor<4>,
    weight: Tensor<4>,
    grad: Tensor<4>,
    options: ConvOptions<2>,
    max_terms: usize,
) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as PiecewiseWeightGrad>::conv2d_weight_grad_pieces(
        x.into_dispatch(),
        weight.into_dispatch(),
        grad.into_dispatch(),
        options,
        max_terms,
    ))
}

/// [`weight_grad_in_pieces`] reachable from `Tensor`s, for tests of the piecewise sum itself.
#[backend_extension(Cube, Flex)]
pub trait PiecewiseWeightGrad: Backend {
    /// See [`conv2d_weight_grad`].
    fn conv2d_weight_grad_pieces(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        options: ConvOptions<2>,
        max_terms: usize,
    ) -> FloatTensor<Self> {
        weight_grad_in_pieces::<Self>(x, weight, grad, options, max_terms)
    }
}

impl PiecewiseWeightGrad for Cube {}
impl PiecewiseWeightGrad for Flex {}

/// The options of SAM's upscaling `ConvTranspose2d(kernel 2, stride 2)`: every input pixel
/// writes its own 2×2 block of the output, so row bands of the input map to row bands of the
/// output without overlap.
fn options_2x2() -> ConvTransposeOptions<2> {
    ConvTransposeOptions::new([2, 2], [0, 0], [0, 0], [1, 1], 1)
}

/// `ConvTranspose2d(kernel 2, stride 2)` without bias whose weight gradient, a sum over every
/// input position of the batch, is computed in pieces of at most
/// [`CONV_WEIGHT_GRAD_TERMS_MAX`] positions on cubecl, as for [`BoundedConv2d`] (measured on
/// lavapipe, 2026-12-03: burn's one call is wrong from 2×192² inputs).
#[backend_extension(Cube, Flex, Autodiff)]
pub trait BoundedConvTranspose2x2: Backend {
    /// burn's transposed convolution, no bias.
    fn conv_transpose2x2_unbiased(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::conv_transpose2d(x, weight, None, options_2x2())
    }

    /// The weight gradient, summed from pieces of at most [`CONV_WEIGHT_GRAD_TERMS_MAX`] input
    /// positions.
    fn conv_transpose2x2_weight_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let [batch, _, rows, cols] = x.shape().dims();
        sum_over::<Self>(pieces(batch, rows, cols, CONV_WEIGHT_GRAD_TERMS_MAX), |piece| {
            let xs = Self::float_slice(x.clone(), &band(piece.images, piece.rows));
            let gs = Self::float_slice(grad.clone(), &band(piece.images, (2 * piece.rows.0, 2 * piece.rows.1)));
            Self::conv_transpose2d_weight_backward(xs, weight.clone(), gs, options_2x2())
        })
    }
}

impl BoundedConvTranspose2x2 for Cube {}

/// The CPU backend's weight gradient is a blocked matrix product: one call.
impl BoundedConvTranspose2x2 for Flex {
    fn conv_transpose2x2_weight_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        <Flex as ModuleOps<Flex>>::conv_transpose2d_weight_backward(x, weight, grad, options_2x2())
    }
}

/// The backward step of [`BoundedConvTranspose2x2::conv_transpose2x2_unbiased`] on autodiff.
#[derive(Debug)]
struct ConvTranspose2x2Step;

impl<B: BoundedConvTranspose2x2> Backward<B, 2> for ConvTranspose2x2Step {
    type State = (NodeId, NodeId);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let [node_x, node_weight] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_state, weight_state) = ops.state;
        let x: FloatTensor<B> = checkpointer.retrieve_node_output(x_state);
        let weight: FloatTensor<B> = checkpointer.retrieve_node_output(weight_state);
        if let Some(node) = node_x {
            let g = B::conv_transpose2d_x_backward(weight.clone(), grad.clone(), options_2x2());
            grads.register::<B>(node.id, g);
        }
        if let Some(node) = node_weight {
            grads.register::<B>(node.id, B::conv_transpose2x2_weight_grad(x, weight, grad));
        }
    }
}

impl<B: BoundedConvTranspose2x2, C: CheckpointStrategy> BoundedConvTranspose2x2 for Autodiff<B, C> {
    fn conv_transpose2x2_unbiased(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        match ConvTranspose2x2Step.prepare::<C>([x.node(), weight.node()]).compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let weight_state = prep.checkpoint(&weight);
                let out = B::conv_transpose2x2_unbiased(x.primitive().clone(), weight.primitive().clone());
                prep.finish((x_state, weight_state), out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::conv_transpose2x2_unbiased(x.into_primitive(), weight.into_primitive()))
            }
        }
    }
}

/// `ConvTranspose2d(kernel 2, stride 2)` without bias, `[B, C, H, W]` × `[C, O, 2, 2]` →
/// `[B, O, 2H, 2W]`, whose backward pass bounds the work of each weight-gradient kernel.
pub fn conv_transpose2x2(x: Tensor<4>, weight: Tensor<4>) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as BoundedConvTranspose2x2>::conv_transpose2x2_unbiased(
        x.into_dispatch(),
        weight.into_dispatch(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_every_position_once_and_stay_bounded() {
        for (batch, rows, cols, max) in
            [(2, 256, 256, 1 << 15), (8, 512, 512, 1 << 15), (3, 10, 10, 250), (1, 7, 100, 50), (4, 4, 4, 1000)]
        {
            let all = pieces(batch, rows, cols, max);
            let mut seen = vec![0u8; batch * rows];
            for p in &all {
                let terms = (p.images.1 - p.images.0) * (p.rows.1 - p.rows.0) * cols;
                assert!(terms <= max.max(cols), "{p:?} holds {terms} positions, more than {max}");
                for b in p.images.0..p.images.1 {
                    for r in p.rows.0..p.rows.1 {
                        seen[b * rows + r] += 1;
                    }
                }
            }
            assert!(seen.iter().all(|&n| n == 1), "{batch}×{rows}×{cols} by {max}: not covered exactly once");
        }
        assert_eq!(pieces(2, 256, 256, 1 << 14).len(), 8, "four bands of 64 rows per image");
        assert_eq!(pieces(4, 4, 4, 1000).len(), 1);
    }
}
