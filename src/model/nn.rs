//! Building blocks shared by the SAM4EM modules (linear, convolutions, norms, MLPs) and the
//! named-parameter walk that loading, saving, counting and the optimiser all go through.
//!
//! Parameters are plain burn tensors owned by the modules. Each module lists its tensors under
//! the reference's key names in `visit`, so the names exist in exactly one place and loaders
//! need no remap table for our own format. Linear weights are stored `[in, out]` (burn's
//! layout); the walk marks them so that checkpoints, which store `[out, in]`, are transposed
//! on the way in and out.

use super::ops::linear;
use burn::tensor::activation::{relu, softmax};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Device, Distribution, FloatDType, Tensor, TensorData};

use super::ops::{conv_transpose2x2, conv2d, gelu};

/// Whether a tensor is learned (a PyTorch parameter) or derived state (a buffer: BatchNorm
/// running statistics, the slice memory, fixed position encodings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A parameter.
    Param,
    /// A buffer: saved with the model, never trained.
    Buffer,
}

/// A mutable reference to one tensor of the model, by rank. `Linear` is a rank-2 weight
/// stored transposed with respect to the checkpoint layout.
pub enum Slot<'a> {
    /// Rank 1.
    T1(&'a mut Tensor<1>),
    /// Rank 2, same layout as the checkpoint.
    T2(&'a mut Tensor<2>),
    /// Rank 2 linear weight, stored `[in, out]`, checkpoint `[out, in]`.
    Linear(&'a mut Tensor<2>),
    /// Rank 3.
    T3(&'a mut Tensor<3>),
    /// Rank 4.
    T4(&'a mut Tensor<4>),
}

impl Slot<'_> {
    /// The shape in checkpoint (PyTorch) order.
    pub fn checkpoint_shape(&self) -> Vec<usize> {
        match self {
            Slot::T1(t) => t.dims().to_vec(),
            Slot::T2(t) => t.dims().to_vec(),
            Slot::Linear(t) => {
                let [i, o] = t.dims();
                vec![o, i]
            }
            Slot::T3(t) => t.dims().to_vec(),
            Slot::T4(t) => t.dims().to_vec(),
        }
    }

    /// Number of values.
    pub fn numel(&self) -> usize {
        self.checkpoint_shape().iter().product()
    }

    /// Replaces the value with `data` given in checkpoint layout (shape already checked).
    pub fn set_from_host(&mut self, data: Vec<f32>, device: &Device) {
        let shape = self.checkpoint_shape();
        match self {
            Slot::T1(t) => **t = Tensor::from_data(TensorData::new(data, [shape[0]]), device),
            Slot::T2(t) => **t = Tensor::from_data(TensorData::new(data, [shape[0], shape[1]]), device),
            Slot::Linear(t) => {
                **t = Tensor::<2>::from_data(TensorData::new(data, [shape[0], shape[1]]), device).transpose();
                // A transposed view would make every matmul strided; store it contiguous.
                **t = Tensor::from_data(t.to_data(), device);
            }
            Slot::T3(t) => **t = Tensor::from_data(TensorData::new(data, [shape[0], shape[1], shape[2]]), device),
            Slot::T4(t) => {
                **t = Tensor::from_data(TensorData::new(data, [shape[0], shape[1], shape[2], shape[3]]), device)
            }
        }
    }

    /// The value in checkpoint layout, read back to the host.
    pub fn to_host(&self) -> Vec<f32> {
        let data = match self {
            Slot::T1(t) => t.to_data(),
            Slot::T2(t) => t.to_data(),
            Slot::Linear(t) => (**t).clone().transpose().to_data(),
            Slot::T3(t) => t.to_data(),
            Slot::T4(t) => t.to_data(),
        };
        data.convert::<f32>().try_into_vec::<f32>().unwrap_or_default()
    }

    /// Applies `f` to the tensor whatever its rank (used by the optimiser, which works on
    /// burn-layout values).
    pub fn map_any(&mut self, f: &mut dyn FnMut(AnyTensor) -> AnyTensor) {
        match self {
            Slot::T1(t) => **t = f(AnyTensor::T1(t.clone())).into_t1(),
            Slot::T2(t) | Slot::Linear(t) => **t = f(AnyTensor::T2(t.clone())).into_t2(),
            Slot::T3(t) => **t = f(AnyTensor::T3(t.clone())).into_t3(),
            Slot::T4(t) => **t = f(AnyTensor::T4(t.clone())).into_t4(),
        }
    }
}

/// A tensor of rank 1–4, for code that treats every parameter alike.
#[derive(Clone, Debug)]
pub enum AnyTensor {
    /// Rank 1.
    T1(Tensor<1>),
    /// Rank 2.
    T2(Tensor<2>),
    /// Rank 3.
    T3(Tensor<3>),
    /// Rank 4.
    T4(Tensor<4>),
}

impl AnyTensor {
    fn into_t1(self) -> Tensor<1> {
        match self {
            AnyTensor::T1(t) => t,
            other => panic!("rank changed in a parameter update: {other:?}"),
        }
    }
    fn into_t2(self) -> Tensor<2> {
        match self {
            AnyTensor::T2(t) => t,
            other => panic!("rank changed in a parameter update: {other:?}"),
        }
    }
    fn into_t3(self) -> Tensor<3> {
        match self {
            AnyTensor::T3(t) => t,
            other => panic!("rank changed in a parameter update: {other:?}"),
        }
    }
    fn into_t4(self) -> Tensor<4> {
        match self {
            AnyTensor::T4(t) => t,
            other => panic!("rank changed in a parameter update: {other:?}"),
        }
    }
}

/// Receives every tensor of a module with its full key.
pub trait Visitor {
    /// Called once per tensor.
    fn visit(&mut self, key: &str, kind: Kind, slot: Slot<'_>);
}

/// Joins a key prefix and a name with a dot.
pub fn key(prefix: &str, name: &str) -> String {
    if prefix.is_empty() { name.to_string() } else { format!("{prefix}.{name}") }
}

/// How new tensors are filled: with the reference's random initialisation, or left
/// unfilled when only the model's structure (names, shapes, counts) is wanted — building
/// Hiera-L that way costs no time and no touched memory.
#[derive(Clone, Debug)]
pub struct Init {
    /// Device the tensors live on.
    pub device: Device,
    /// Skip filling values (structure only).
    pub shapes_only: bool,
}

impl Init {
    /// Random initialisation on `device`.
    pub fn random(device: &Device) -> Self {
        Init { device: device.clone(), shapes_only: false }
    }

    /// Structure only: tensors are allocated lazily and hold arbitrary values.
    pub fn shapes_only(device: &Device) -> Self {
        Init { device: device.clone(), shapes_only: true }
    }

    fn fill<const D: usize>(&self, shape: [usize; D], dist: Distribution) -> Tensor<D> {
        if self.shapes_only { Tensor::empty(shape, &self.device) } else { Tensor::random(shape, dist, &self.device) }
    }

    /// U(−bound, bound).
    pub fn uniform<const D: usize>(&self, shape: [usize; D], bound: f64) -> Tensor<D> {
        self.fill(shape, Distribution::Uniform(-bound, bound))
    }

    /// PyTorch's default for Linear/Conv weights and biases: U(±1/√fan_in) (kaiming_uniform
    /// with a = √5 gives the same bound).
    pub fn fan_in_uniform<const D: usize>(&self, shape: [usize; D], fan_in: usize) -> Tensor<D> {
        self.uniform(shape, 1.0 / (fan_in.max(1) as f64).sqrt())
    }

    /// N(0, std²).
    pub fn normal<const D: usize>(&self, shape: [usize; D], std: f64) -> Tensor<D> {
        self.fill(shape, Distribution::Normal(0.0, std))
    }

    /// Zeros.
    pub fn zeros<const D: usize>(&self, shape: [usize; D]) -> Tensor<D> {
        if self.shapes_only { Tensor::empty(shape, &self.device) } else { Tensor::zeros(shape, &self.device) }
    }

    /// Ones.
    pub fn ones<const D: usize>(&self, shape: [usize; D]) -> Tensor<D> {
        if self.shapes_only { Tensor::empty(shape, &self.device) } else { Tensor::ones(shape, &self.device) }
    }
}

/// `nn.Linear`: weight stored `[in, out]`.
#[derive(Clone, Debug)]
pub struct Linear {
    /// Weight `[d_in, d_out]`.
    pub weight: Tensor<2>,
    /// Bias `[d_out]`.
    pub bias: Option<Tensor<1>>,
}

impl Linear {
    /// PyTorch-default initialised layer.
    pub fn new(d_in: usize, d_out: usize, bias: bool, init: &Init) -> Self {
        Linear {
            weight: init.fan_in_uniform([d_in, d_out], d_in),
            bias: bias.then(|| init.fan_in_uniform([d_out], d_in)),
        }
    }

    /// `x @ W + b` over the last dimension. A bias being trained on a cubecl device is added
    /// through [`per_feature`] (its gradient a matrix product); otherwise the fused form.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        match &self.bias {
            Some(b) if b.is_tracked() && !super::device::is_cpu(&b.device()) => {
                let y = linear(x, self.weight.clone(), None);
                let dims = y.dims();
                y + per_feature(b, dims)
            }
            bias => linear(x, self.weight.clone(), bias.clone()),
        }
    }

    /// Lists `weight` and `bias`.
    pub fn visit(&mut self, prefix: &str, v: &mut dyn Visitor) {
        v.visit(&key(prefix, "weight"), Kind::Param, Slot::Linear(&mut self.weight));
        if let Some(b) = &mut self.bias {
            v.visit(&key(prefix, "bias"), Kind::Param, Slot::T1(b));
        }
    }
}

/// `nn.Conv2d` with square kernel, stride and symmetric padding.
#[derive(Clone, Debug)]
pub struct Conv2d {
    /// Weight `[out, in, k, k]`.
    pub weight: Tensor<4>,
    /// Bias `[out]`.
    pub bias: Option<Tensor<1>>,
    /// Stride in pixels.
    pub stride: usize,
    /// Zero padding in pixels on every side.
    pub padding: usize,
}

impl Conv2d {
    /// PyTorch-default initialised convolution.
    pub fn new(c_in: usize, c_out: usize, kernel: usize, stride: usize, padding: usize, init: &Init) -> Self {
        let fan_in = c_in * kernel * kernel;
        Conv2d {
            weight: init.fan_in_uniform([c_out, c_in, kernel, kernel], fan_in),
            bias: Some(init.fan_in_uniform([c_out], fan_in)),
            stride,
            padding,
        }
    }

    /// Kaiming-normal (fan_out, ReLU gain) weights and zero bias, as SAM4EM's fusion head
    /// initialises its convolutions.
    pub fn kaiming_normal_fan_out(c_in: usize, c_out: usize, kernel: usize, padding: usize, init: &Init) -> Self {
        let std = (2.0 / (c_out * kernel * kernel) as f64).sqrt();
        Conv2d {
            weight: init.normal([c_out, c_in, kernel, kernel], std),
            bias: Some(init.zeros([c_out])),
            stride: 1,
            padding,
        }
    }

    /// # Shapes
    /// `[B, in, H, W]` → `[B, out, H', W']`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let options = ConvOptions::new([self.stride; 2], [self.padding; 2], [1, 1], 1);
        let y = conv2d(x, self.weight.clone(), options);
        match &self.bias {
            Some(b) => add_channel_bias(y, b),
            None => y,
        }
    }

    /// Lists `weight` and `bias`.
    pub fn visit(&mut self, prefix: &str, v: &mut dyn Visitor) {
        v.visit(&key(prefix, "weight"), Kind::Param, Slot::T4(&mut self.weight));
        if let Some(b) = &mut self.bias {
            v.visit(&key(prefix, "bias"), Kind::Param, Slot::T1(b));
        }
    }
}

/// `y + bias` per channel of an NCHW tensor, the bias added outside the convolution kernels
/// through [`per_channel`] (see there).
fn add_channel_bias(y: Tensor<4>, bias: &Tensor<1>) -> Tensor<4> {
    let [_, _, h, w] = y.dims();
    y + per_channel(bias, h, w)
}

/// One value per channel `[C]` as a `[1, C, H, W]` term to broadcast over the batch of an NCHW
/// tensor. A parameter being trained is repeated along columns, then rows, so that its
/// gradient is summed one axis at a time (batch, rows, columns: each as long as that side);
/// burn would sum a plain `[1, C, 1, 1]` broadcast over batch·rows·columns at once, and over a
/// 512² map that reduction is one kernel looping over 262,144 values per invocation, which
/// lavapipe cuts short (see `ops`). Values are exactly those of the plain broadcast.
pub fn per_channel(v: &Tensor<1>, h: usize, w: usize) -> Tensor<4> {
    let c = v.dims()[0];
    let trained = v.is_tracked();
    let v = v.clone().reshape([1, c, 1, 1]);
    if trained { v.repeat_dim(3, w).repeat_dim(2, h) } else { v }
}

/// One value per feature `[C]` to broadcast over a `[…, C]` tensor of shape `dims`. A parameter
/// being trained is spread as the outer product `1·vᵀ` over the rows, so that its gradient is
/// the matrix product `1ᵀ·grad` (tiled like every matmul) rather than one reduction over all
/// rows (B·g² tokens: the same lavapipe limit as [`per_channel`]). `1·vᵀ` holds `v` exactly in
/// every row.
pub fn per_feature<const D: usize>(v: &Tensor<1>, dims: [usize; D]) -> Tensor<D> {
    if !v.is_tracked() {
        return v.clone().unsqueeze();
    }
    let (rows, c) = (dims[..D - 1].iter().product(), dims[D - 1]);
    Tensor::<2>::ones([rows, 1], &v.device()).matmul(v.clone().reshape([1, c])).reshape(dims)
}

/// `nn.ConvTranspose2d(kernel 2, stride 2)`, the upscaler of the mask decoder.
#[derive(Clone, Debug)]
pub struct ConvTranspose2x2 {
    /// Weight `[in, out, 2, 2]` (PyTorch layout).
    pub weight: Tensor<4>,
    /// Bias `[out]`.
    pub bias: Tensor<1>,
}

impl ConvTranspose2x2 {
    /// PyTorch-default initialised layer (fan_in is computed from dim 1, as PyTorch does).
    pub fn new(c_in: usize, c_out: usize, init: &Init) -> Self {
        let fan_in = c_out * 4;
        ConvTranspose2x2 {
            weight: init.fan_in_uniform([c_in, c_out, 2, 2], fan_in),
            bias: init.fan_in_uniform([c_out], fan_in),
        }
    }

    /// # Shapes
    /// `[B, in, H, W]` → `[B, out, 2H, 2W]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        add_channel_bias(conv_transpose2x2(x, self.weight.clone()), &self.bias)
    }

    /// Lists `weight` and `bias`.
    pub fn visit(&mut self, prefix: &str, v: &mut dyn Visitor) {
        v.visit(&key(prefix, "weight"), Kind::Param, Slot::T4(&mut self.weight));
        v.visit(&key(prefix, "bias"), Kind::Param, Slot::T1(&mut self.bias));
    }
}

/// `nn.LayerNorm` over the last dimension.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    /// Scale.
    pub weight: Tensor<1>,
    /// Shift.
    pub bias: Tensor<1>,
    /// ε inside the square root.
    pub eps: f64,
}

impl LayerNorm {
    /// Identity-initialised norm.
    pub fn new(dim: usize, eps: f64, init: &Init) -> Self {
        LayerNorm { weight: init.ones([dim]), bias: init.zeros([dim]), eps }
    }

    /// Normalises the last dimension (biased variance, as PyTorch).
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        // On the CPU backend: Flex's fused kernel (one vectorised pass per row, rows in
        // parallel, the same centred variance) instead of a chain of six passes, and our
        // one-pass backward (`ops::FastLayerNorm`). GPU backends keep the composition, whose
        // per-feature gradients are summed as matrix products (see `per_feature`).
        if super::device::is_cpu(&x.device()) {
            return super::ops::layer_norm(x, self.weight.clone(), self.bias.clone(), self.eps);
        }
        let x = standardized(x, D - 1, self.eps);
        let dims = x.dims();
        x * per_feature(&self.weight, dims) + per_feature(&self.bias, dims)
    }

    /// Lists `weight` and `bias`.
    pub fn visit(&mut self, prefix: &str, v: &mut dyn Visitor) {
        v.visit(&key(prefix, "weight"), Kind::Param, Slot::T1(&mut self.weight));
        v.visit(&key(prefix, "bias"), Kind::Param, Slot::T1(&mut self.bias));
    }
}

/// Multi-head softmax attention, `softmax(q kᵀ / √d) v` per head: the one attention kernel of
/// the model (Hiera's blocks, the mask decoders' transformer), so that making it faster makes
/// every caller faster.
///
/// # Shapes
/// `q [B, H, Nq, d]`, `k [B, H, Nk, d]`, `v [B, H, Nk, d]` → `[B, H, Nq, d]`.
pub fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    // On the CPU backend: our kernels (`cpu_kernels::flex_attention` and its backward pass:
    // GEMMs on the strided q/k/v views, a vectorised softmax) instead of passes over a score
    // tensor. GPU backends keep the composition below, whose backward pass the golden
    // gradients were checked with, until burn's fused kernel is checked on lavapipe (issue 18).
    if super::device::is_cpu(&q.device()) {
        return super::ops::fast_attention(q, k, v);
    }
    let hd = q.dims()[3];
    let scores = q.matmul(k.swap_dims(2, 3)) * (1.0 / (hd as f64).sqrt());
    in_f32(scores, |s| softmax(s, 3)).matmul(v)
}

/// SAM's `LayerNorm2d`: normalises the channel dimension of an NCHW tensor.
#[derive(Clone, Debug)]
pub struct LayerNorm2d {
    /// Scale per channel.
    pub weight: Tensor<1>,
    /// Shift per channel.
    pub bias: Tensor<1>,
    /// ε (1e-6 in SAM).
    pub eps: f64,
}

impl LayerNorm2d {
    /// Identity-initialised norm.
    pub fn new(channels: usize, eps: f64, init: &Init) -> Self {
        LayerNorm2d { weight: init.ones([channels]), bias: init.zeros([channels]), eps }
    }

    /// # Shapes
    /// `[B, C, H, W]` → same.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = standardized(x, 1, self.eps);
        let [_, _, h, w] = x.dims();
        x * per_channel(&self.weight, h, w) + per_channel(&self.bias, h, w)
    }

    /// Lists `weight` and `bias`.
    pub fn visit(&mut self, prefix: &str, v: &mut dyn Visitor) {
        v.visit(&key(prefix, "weight"), Kind::Param, Slot::T1(&mut self.weight));
        v.visit(&key(prefix, "bias"), Kind::Param, Slot::T1(&mut self.bias));
    }
}

/// `nn.BatchNorm2d` (ε 1e-5, momentum 0.1) with its running statistics.
#[derive(Clone, Debug)]
pub struct BatchNorm2d {
    /// γ.
    pub weight: Tensor<1>,
    /// β.
    pub bias: Tensor<1>,
    /// Running mean (buffer).
    pub running_mean: Tensor<1>,
    /// Running variance, unbiased (buffer).
    pub running_var: Tensor<1>,
}

/// Updated BatchNorm running statistics.
#[derive(Clone, Debug)]
pub struct RunningStats {
    /// Running mean.
    pub mean: Tensor<1>,
    /// Running (unbiased) variance.
    pub var: Tensor<1>,
}

const BN_EPS: f64 = 1e-5;
const BN_MOMENTUM: f64 = 0.1;

impl BatchNorm2d {
    /// γ = 1, β = 0, mean 0, variance 1.
    pub fn new(channels: usize, init: &Init) -> Self {
        BatchNorm2d {
            weight: init.ones([channels]),
            bias: init.zeros([channels]),
            running_mean: init.zeros([channels]),
            running_var: init.ones([channels]),
        }
    }

    fn affine(&self, x: Tensor<4>, mean: Tensor<4>, var: Tensor<4>) -> Tensor<4> {
        let [_, _, h, w] = x.dims();
        (x - mean) / (var + BN_EPS).sqrt() * per_channel(&self.weight, h, w) + per_channel(&self.bias, h, w)
    }

    /// Inference, which normalises with the running statistics, as a per-channel
    /// `(scale, shift)`: `x·scale + shift`, so that the convolution before it absorbs it (see
    /// `fusion::ConvBn`).
    pub fn eval_scale_shift(&self) -> (Tensor<1>, Tensor<1>) {
        let dtype = self.weight.dtype();
        // In f32 (then rounded to the weights' type): ε = 1e-5 is below f16's resolution next
        // to a variance of 0.03 or more.
        let f32 = |t: &Tensor<1>| t.clone().cast(FloatDType::F32);
        let scale = f32(&self.weight) / (f32(&self.running_var) + BN_EPS).sqrt();
        let shift = f32(&self.bias) - f32(&self.running_mean) * scale.clone();
        (scale.cast(FloatDType::from(dtype)), shift.cast(FloatDType::from(dtype)))
    }

    /// Training: normalises with the batch statistics (biased variance) and returns the
    /// running statistics moved towards them (unbiased variance), as PyTorch does; apply them
    /// with [`BatchNorm2d::set_running`].
    pub fn forward_train(&self, x: Tensor<4>) -> (Tensor<4>, RunningStats) {
        let [b, c, h, w] = x.dims();
        let n = b * h * w;
        // Two-level reductions (rows, then rows of rows) keep f32 rounding of these long sums
        // near what PyTorch's pairwise reductions give; one flat sum over B·H·W values drifts
        // enough to show in the logits.
        let grouped: Tensor<3> = x.clone().swap_dims(0, 1).reshape([c, b * h, w]);
        let mean = grouped.clone().mean_dim(2).mean_dim(1); // [c, 1, 1]
        let centred = grouped - mean.clone();
        let var = (centred.clone() * centred).mean_dim(2).mean_dim(1);
        let (var, mean): (Tensor<2>, Tensor<2>) = (var.reshape([c, 1]), mean.reshape([c, 1]));
        let mean1: Tensor<1> = mean.clone().reshape([c]).detach();
        let unbiased: Tensor<1> = var.clone().reshape([c]).detach() * (n as f64 / (n.max(2) - 1) as f64);
        let stats = RunningStats {
            mean: self.running_mean.clone() * (1.0 - BN_MOMENTUM) + mean1 * BN_MOMENTUM,
            var: self.running_var.clone() * (1.0 - BN_MOMENTUM) + unbiased * BN_MOMENTUM,
        };
        (self.affine(x, mean.reshape([1, c, 1, 1]), var.reshape([1, c, 1, 1])), stats)
    }

    /// Replaces the running statistics (after a training forward).
    pub fn set_running(&mut self, stats: RunningStats) {
        self.running_mean = stats.mean;
        self.running_var = stats.var;
    }

    /// Lists γ, β and the running statistics.
    pub fn visit(&mut self, prefix: &str, v: &mut dyn Visitor) {
        v.visit(&key(prefix, "weight"), Kind::Param, Slot::T1(&mut self.weight));
        v.visit(&key(prefix, "bias"), Kind::Param, Slot::T1(&mut self.bias));
        v.visit(&key(prefix, "running_mean"), Kind::Buffer, Slot::T1(&mut self.running_mean));
        v.visit(&key(prefix, "running_var"), Kind::Buffer, Slot::T1(&mut self.running_var));
    }
}

/// Activation between the layers of an [`Mlp`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// ReLU (SAM decoder).
    Relu,
    /// Exact (erf) GELU (Hiera).
    Gelu,
}

impl Act {
    /// Applies the activation.
    pub fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Act::Relu => relu(x),
            Act::Gelu => gelu(x),
        }
    }
}

/// SAM's `MLP`: `layers.{i}` linears with an activation between them (none after the last).
#[derive(Clone, Debug)]
pub struct Mlp {
    /// The linears.
    pub layers: Vec<Linear>,
    /// Activation between them.
    pub act: Act,
}

impl Mlp {
    /// `num_layers` linears: d_in → hidden → … → d_out.
    pub fn new(d_in: usize, hidden: usize, d_out: usize, num_layers: usize, act: Act, init: &Init) -> Self {
        let layers = (0..num_layers)
            .map(|i| {
                let a = if i == 0 { d_in } else { hidden };
                let b = if i + 1 == num_layers { d_out } else { hidden };
                Linear::new(a, b, true, init)
            })
            .collect();
        Mlp { layers, act }
    }

    /// Runs the layers.
    pub fn forward<const D: usize>(&self, mut x: Tensor<D>) -> Tensor<D> {
        let n = self.layers.len();
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x);
            if i + 1 < n {
                x = self.act.apply(x);
            }
        }
        x
    }

    /// Lists `layers.{i}.*`.
    pub fn visit(&mut self, prefix: &str, v: &mut dyn Visitor) {
        for (i, l) in self.layers.iter_mut().enumerate() {
            l.visit(&key(prefix, &format!("layers.{i}")), v);
        }
    }
}

/// `f(x)` computed in f32 when `x` is a half-precision tensor (`device::Precision::F16`), the
/// result rounded back to `x`'s type; `f(x)` itself otherwise. For the steps f16 cannot hold:
/// normalisation statistics (a mean of squares over hundreds of channels) and softmax (its
/// exponentials), whose values leave f16's range (±65,504) or lose its 11-bit mantissa.
/// PyTorch's autocast keeps the same operations in f32.
pub fn in_f32<const D: usize, const E: usize>(x: Tensor<D>, f: impl FnOnce(Tensor<D>) -> Tensor<E>) -> Tensor<E> {
    match x.dtype() {
        dtype @ (DType::F16 | DType::BF16) => f(x.cast(FloatDType::F32)).cast(FloatDType::from(dtype)),
        _ => f(x),
    }
}

/// `(x − mean) / √(var + eps)` along `dim` (biased variance, as PyTorch's norms), the
/// statistics in f32 for half-precision tensors ([`in_f32`]): the composition LayerNorm and
/// LayerNorm2d use on cubecl devices.
fn standardized<const D: usize>(x: Tensor<D>, dim: usize, eps: f64) -> Tensor<D> {
    in_f32(x, |x| {
        let (var, mean) = x.clone().var_mean_bias(dim);
        (x - mean) / (var + eps).sqrt()
    })
}

/// Reads a tensor back as f32 values (tests, host-side post-processing).
pub fn to_vec<const D: usize>(t: &Tensor<D>) -> Vec<f32> {
    t.to_data().convert::<f32>().try_into_vec::<f32>().unwrap_or_default()
}

/// Uploads host values as a tensor.
pub fn from_vec<const D: usize>(data: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(data, shape), device)
}

/// `F.interpolate(mode="bilinear", align_corners=False)` as two matrix products with
/// precomputed interpolation weights. The weights are PyTorch's (half-pixel source
/// coordinates clamped at 0, two taps per output); the matmul form has a backward pass on
/// every burn backend (cubecl's bilinear kernel has none) and is cheap at these sizes.
#[derive(Clone, Debug)]
pub struct BilinearResize {
    /// `[h_in, h_out]`: column o holds the weights of output row o.
    rows_t: Tensor<2>,
    /// `[w_in, w_out]`.
    cols_t: Tensor<2>,
}

/// Interpolation matrix `[n_in, n_out]` for one axis.
pub fn bilinear_matrix(n_in: usize, n_out: usize) -> Vec<f32> {
    let mut m = vec![0.0f32; n_in * n_out];
    let scale = n_in as f32 / n_out as f32;
    for o in 0..n_out {
        let src = ((o as f32 + 0.5) * scale - 0.5).max(0.0);
        let i0 = (src.floor() as usize).min(n_in - 1);
        let i1 = (i0 + 1).min(n_in - 1);
        let l1 = src - i0 as f32;
        m[i0 * n_out + o] += 1.0 - l1;
        m[i1 * n_out + o] += l1;
    }
    m
}

impl BilinearResize {
    /// Resizer from `h_in × w_in` to `h_out × w_out`.
    pub fn new(h_in: usize, w_in: usize, h_out: usize, w_out: usize, device: &Device) -> Self {
        BilinearResize {
            rows_t: from_vec(bilinear_matrix(h_in, h_out), [h_in, h_out], device),
            cols_t: from_vec(bilinear_matrix(w_in, w_out), [w_in, w_out], device),
        }
    }

    /// The same resizer with its matrices on the device's plain backend (no autodiff).
    pub fn without_autodiff(self) -> Self {
        BilinearResize { rows_t: self.rows_t.inner(), cols_t: self.cols_t.inner() }
    }

    /// # Shapes
    /// `[B, C, h_in, w_in]` → `[B, C, h_out, w_out]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let [_, wo] = self.cols_t.dims();
        let [_, ho] = self.rows_t.dims();
        let x = x.reshape([b * c * h, w]).matmul(self.cols_t.clone()); // [bch, wo]
        let x = x.reshape([b * c, h, wo]).swap_dims(1, 2).reshape([b * c * wo, h]).matmul(self.rows_t.clone());
        x.reshape([b * c, wo, ho]).swap_dims(1, 2).reshape([b, c, ho, wo])
    }
}
