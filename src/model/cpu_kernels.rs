//! Kernels for burn's CPU backend (Flex) where Flex's own are slow: exact-erf GELU forward and
//! backward, linear layers, attention and LayerNorm's backward (convolutions are in
//! `cpu_conv`). Each was measured against PyTorch with
//! `sam4em bench ops` (README, "Speed on the CPU") and is checked against Flex's own kernel or
//! float64 in the tests below; the golden tests run the model through them.
//!
//! **GELU.** Flex computes GELU one element at a time on one thread with a scalar, branchy
//! `erff` (libm's). Hiera-B+ at 512² has 7.3 M GELU inputs per stage-1 block and 1.8 M per
//! stage-3 block (16 of them), which made GELU a large share of an encoder pass. Here the
//! normal distribution is computed branch-free with polynomials whose coefficients were fitted
//! for this module, so the compiler vectorises the loop; macerator (the SIMD dispatcher Flex
//! itself uses) compiles it once per instruction set and picks the best the CPU has at run
//! time; rayon spreads chunks over the cores. Accuracy (`tests::normal_cdf_is_accurate`,
//! against float64): relative error of Φ ≤ 8 f32 ulp (worst measured 5.1) wherever Φ is a
//! normal `f32`, including the far negative tail, where `½(1 + erf(x/√2))` — the formula Flex
//! and PyTorch use — loses its digits to cancellation.
//!
//! **Linear layers**, **attention** and **LayerNorm**: see [`flex_linear`],
//! [`flex_attention`] and [`flex_layer_norm_backward`].

use burn::backend::flex::{FlexTensor, Layout};
use burn::tensor::{Bytes, DType};

/// The kernels of this module, each of which `SAM4EM_CPU_KERNELS_OFF` can turn off (a
/// comma-separated list of names, read once) so that Flex's own runs instead: for side-by-side
/// timings of the whole model with and without one of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// [`flex_gelu`] and [`flex_gelu_backward`].
    Gelu,
    /// [`flex_attention`].
    Attention,
    /// `cpu_conv::flex_conv2d` and its gradients.
    Conv,
    /// The Winograd F(2×2, 3×3) path of `cpu_conv::flex_conv2d` and its input gradient
    /// (3×3 kernels then run as nine per-tap products).
    Winograd,
    /// [`flex_linear`] and [`flex_linear_weight_grad`].
    Linear,
    /// [`flex_layer_norm_backward`].
    LayerNorm,
}

impl Kernel {
    /// Its name in `SAM4EM_CPU_KERNELS_OFF`.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Gelu => "gelu",
            Kernel::Attention => "attention",
            Kernel::Conv => "conv",
            Kernel::Winograd => "winograd",
            Kernel::Linear => "linear",
            Kernel::LayerNorm => "layernorm",
        }
    }

    /// Whether it runs (it does unless `SAM4EM_CPU_KERNELS_OFF` names it).
    pub fn enabled(self) -> bool {
        static OFF: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        let off = OFF.get_or_init(|| {
            std::env::var("SAM4EM_CPU_KERNELS_OFF")
                .map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()).collect())
                .unwrap_or_default()
        });
        !off.iter().any(|name| name == self.name())
    }
}

/// `1/√2`.
const FRAC_1_SQRT_2: f32 = core::f32::consts::FRAC_1_SQRT_2;
/// `1/√(2π)`, the normal density at 0.
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// `erf(z)/z = A(z²)` for `|z| ≤ 1`: least-squares fit in relative error on Chebyshev nodes
/// (degree 5 in z²), worst relative error of the resulting `erf` 1.4 ulp. The constant term is
/// one f32 ulp below 2/√π (erf's slope at 0): the fit traded it against the other terms, and
/// setting it to 2/√π makes Φ 10 ulp off near x = −1.37.
#[allow(clippy::approx_constant)]
const ERF_SMALL: [f32; 6] =
    [1.128_379_1, -0.376_123_2, 0.112_801_29, -0.026_709_927, 0.004_915_998_3, -0.000_562_529_8];

/// `erfcx(z) = exp(z²)·erfc(z) = B(t)`, `t = 1/(1 + z/2)`, for `1 ≤ z ≤ 10`: least-squares fit
/// in relative error (degree 8 in t); worst relative error 2.8 ulp.
const ERFCX_LARGE: [f32; 9] = [
    -2.720_462_1e-6,
    0.282_163_68,
    0.281_381_16,
    0.250_614_05,
    0.166_607_14,
    0.086_047_64,
    0.051_362_958,
    -0.204_911_8,
    0.087_272_55,
];

/// Polynomial `c[0] + c[1]·t + …` by Horner's rule.
#[inline(always)]
fn horner<const N: usize>(c: &[f32; N], t: f32) -> f32 {
    let mut p = c[N - 1];
    let mut i = N - 1;
    while i > 0 {
        i -= 1;
        p = p * t + c[i];
    }
    p
}

/// `exp(y)` for `y ≤ 0`, branch-free. See [`exp_split`].
#[inline(always)]
fn exp_nonpositive(y: f32) -> f32 {
    exp_split(y, 0.0)
}

/// `e^(-x²/2)` to a few ulp for every `x`. Rounding `x²` to `f32` first would cost
/// `x²/2` ulp (80 at x = 13): `x` is split so that the leading part squares exactly.
#[inline(always)]
fn exp_neg_half_square(x: f32) -> f32 {
    // Beyond 14 the result is 0 anyway; clamping keeps ±∞ (and NaN) from making ∞ − ∞ below.
    let x = if x.abs() < 14.0 { x } else { 14.0 };
    // 12 significant bits: the square's 24 fit an f32 exactly.
    let head = f32::from_bits(x.to_bits() & 0xFFFF_F000);
    exp_split(-0.5 * head * head, -0.5 * (x - head) * (x + head))
}

/// `exp(hi + lo)` for `hi + lo ≤ 0`, `|lo|` small, branch-free: `2ⁿ·e^r` with
/// `n = round((hi + lo)/ln 2)`, `r` reduced in two parts (Cody–Waite; `hi − n·ln2_hi` is
/// exact) and `e^r` from its degree-7 Taylor polynomial (|r| ≤ ln 2 / 2, truncation error
/// 5e-9). Results below `e^-86` are 0: the smallest normal `f32` is `e^-87.3`, and closer to it
/// `e^r·2ⁿ` would round as a subnormal.
///
/// `n` is rounded by adding 1.5·2²³, which leaves it in the low bits of the sum's mantissa,
/// and `2ⁿ` is built from those bits: float-to-integer conversion (`as i32`, which saturates
/// and maps NaN to 0) would keep the compiler from vectorising the loops this is inlined into.
#[inline(always)]
fn exp_split(hi: f32, lo: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUNDER: f32 = 12_582_912.0; // 1.5·2²³
    let underflow = hi + lo < -86.0;
    let (hi, lo) = if underflow { (-86.0, 0.0) } else { (hi, lo) };
    let shifted = (hi + lo) * core::f32::consts::LOG2_E + ROUNDER;
    let n = shifted - ROUNDER;
    let r = ((hi - n * LN2_HI) + lo) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (1.0 / 2.0
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // The low bits of `shifted` hold n (two's complement, -124 ≤ n ≤ 0); 2ⁿ has exponent n + 127.
    let scale = f32::from_bits(shifted.to_bits().wrapping_sub(ROUNDER.to_bits()).wrapping_add(127) << 23);
    if underflow { 0.0 } else { p * scale }
}

/// The standard normal distribution at `x`: `(Φ(x), e^(-x²/2))`, the cumulative probability and
/// the unnormalised density (`φ(x) = e^(-x²/2)/√(2π)`).
///
/// Near the middle (`|x| ≤ √2`) Φ comes from `erf`'s odd series; in the tails from the upper-tail
/// probability `½·e^(-x²/2)·erfcx(|x|/√2)`, never from `1 + erf`, so the negative tail keeps its
/// relative accuracy. Both are computed and one selected, which keeps the loop branch-free.
#[inline(always)]
fn normal_cdf(x: f32) -> (f32, f32) {
    let z = x * FRAC_1_SQRT_2;
    let az = z.abs();
    let density = exp_neg_half_square(x);
    let middle = 0.5 + 0.5 * z * horner(&ERF_SMALL, z * z);
    let clamped = if az < 10.0 { az } else { 10.0 };
    let upper_tail = 0.5 * density * horner(&ERFCX_LARGE, 1.0 / (1.0 + 0.5 * clamped));
    let tail = if x > 0.0 { 1.0 - upper_tail } else { upper_tail };
    (if az <= 1.0 { middle } else { tail }, density)
}

/// `x·Φ(x)`, GELU with the exact normal CDF.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    x * normal_cdf(x).0
}

/// `grad·(Φ(x) + x·φ(x))`, the gradient of [`gelu`].
#[inline(always)]
pub fn gelu_backward(x: f32, grad: f32) -> f32 {
    let (cdf, density) = normal_cdf(x);
    grad * (cdf + x * FRAC_1_SQRT_2PI * density)
}

/// [`gelu`] over a slice, compiled for each SIMD instruction set and dispatched at run time.
// `with_simd` needs the instruction-set parameter; the body is plain Rust, which the compiler
// vectorises for the instruction set it is compiled for.
#[allow(clippy::extra_unused_type_parameters)]
#[macerator::with_simd]
fn gelu_slice<S: macerator::Simd>(src: &[f32], dst: &mut [f32]) {
    for (o, &x) in dst.iter_mut().zip(src) {
        *o = gelu(x);
    }
}

/// [`gelu`] in place, compiled like [`gelu_slice`].
#[allow(clippy::extra_unused_type_parameters)]
#[macerator::with_simd]
fn gelu_slice_in_place<S: macerator::Simd>(values: &mut [f32]) {
    for v in values.iter_mut() {
        *v = gelu(*v);
    }
}

/// [`gelu_backward`] over slices, compiled like [`gelu_slice`].
// `with_simd` needs the instruction-set parameter; the body is plain Rust, which the compiler
// vectorises for the instruction set it is compiled for.
#[allow(clippy::extra_unused_type_parameters)]
#[macerator::with_simd]
fn gelu_backward_slice<S: macerator::Simd>(x: &[f32], grad: &[f32], dst: &mut [f32]) {
    for ((o, &x), &g) in dst.iter_mut().zip(x).zip(grad) {
        *o = gelu_backward(x, g);
    }
}

/// A contiguous `f32` Flex tensor of `shape` over `values`.
pub(super) fn contiguous_f32(values: Vec<f32>, shape: burn::tensor::Shape) -> FlexTensor {
    FlexTensor::new(Bytes::from_elems(values), Layout::contiguous(shape), DType::F32)
}

/// Elements per parallel task: large enough to amortise scheduling and SIMD dispatch, small
/// enough to balance the cores.
const CHUNK: usize = 1 << 15;

/// GELU of a contiguous `f32` Flex tensor; `None` for any other tensor (or when turned off).
pub fn flex_gelu(x: &FlexTensor) -> Option<FlexTensor> {
    use rayon::prelude::*;
    if !Kernel::Gelu.enabled() {
        return None;
    }
    let src = x.as_slice::<f32>()?;
    let mut out = vec![0f32; src.len()];
    out.par_chunks_mut(CHUNK).zip(src.par_chunks(CHUNK)).for_each(|(o, s)| gelu_slice(s, o));
    Some(contiguous_f32(out, x.layout().shape().clone()))
}

/// GELU written over `x` itself when no other tensor shares its buffer and it is contiguous
/// `f32` (at inference, the MLP's hidden layer: no new buffer of its size to allocate and
/// fault in); `x` back untouched otherwise. The values are [`flex_gelu`]'s, bit for bit.
pub fn flex_gelu_in_place(mut x: FlexTensor) -> Result<FlexTensor, FlexTensor> {
    use rayon::prelude::*;
    let layout = x.layout();
    let (start, count) = (layout.start_offset(), layout.num_elements());
    if !Kernel::Gelu.enabled() || x.dtype() != DType::F32 || !x.is_contiguous() || !x.is_unique() {
        return Err(x);
    }
    let values = &mut x.storage_mut::<f32>()[start..start + count];
    values.par_chunks_mut(CHUNK).for_each(gelu_slice_in_place);
    Ok(x)
}

/// GELU's input gradient from contiguous `f32` Flex tensors of one shape; `None` for any other
/// pair.
pub fn flex_gelu_backward(x: &FlexTensor, grad: &FlexTensor) -> Option<FlexTensor> {
    use rayon::prelude::*;
    if !Kernel::Gelu.enabled() || x.layout().shape() != grad.layout().shape() {
        return None;
    }
    let (sx, sg) = (x.as_slice::<f32>()?, grad.as_slice::<f32>()?);
    let mut out = vec![0f32; sx.len()];
    out.par_chunks_mut(CHUNK)
        .zip(sx.par_chunks(CHUNK).zip(sg.par_chunks(CHUNK)))
        .for_each(|(o, (x, g))| gelu_backward_slice(x, g, o));
    Some(contiguous_f32(out, x.layout().shape().clone()))
}

/// `dst = scale·lhs·rhs` (or `dst += scale·lhs·rhs` when `accumulate`), single-threaded, on
/// the `gemm` crate that burn's Flex backend runs its matmuls on. `lhs` is `m×k` with element
/// `(i, p)` at `lhs[i·lhs_rs + p·lhs_cs]`, `rhs` is `k×n` with `(p, j)` at
/// `rhs[p·rhs_rs + j·rhs_cs]`, `dst` is `m×n` with `(i, j)` at `dst[i·dst_rs + j]`. Strided
/// operands cost nothing extra (gemm packs them), so callers pass views instead of copies.
///
/// # Panics
/// When an index the strides reach is outside its slice.
pub fn sgemm(
    dims: [usize; 3],
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    lhs: (&[f32], usize, usize),
    rhs: (&[f32], usize, usize),
    scale: f32,
) {
    gemm_with(dims, dst, dst_rs, accumulate, lhs, rhs, scale, gemm::Parallelism::None);
}

/// [`sgemm`] with gemm's own split of the product over rayon's threads: for products too
/// short in rows to split by rows.
#[allow(clippy::too_many_arguments)]
fn gemm_with(
    [m, n, k]: [usize; 3],
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    (lhs, lhs_rs, lhs_cs): (&[f32], usize, usize),
    (rhs, rhs_rs, rhs_cs): (&[f32], usize, usize),
    scale: f32,
    parallelism: gemm::Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!((m - 1) * dst_rs + n <= dst.len(), "sgemm: dst {m}×{n} (row stride {dst_rs}) exceeds {}", dst.len());
    if k > 0 {
        assert!((m - 1) * lhs_rs + (k - 1) * lhs_cs < lhs.len(), "sgemm: lhs {m}×{k} exceeds {}", lhs.len());
        assert!((k - 1) * rhs_rs + (n - 1) * rhs_cs < rhs.len(), "sgemm: rhs {k}×{n} exceeds {}", rhs.len());
    }
    let stride = |s: usize| isize::try_from(s).expect("stride fits isize");
    // SAFETY: gemm reads lhs(i, p), rhs(p, j) and reads/writes dst(i, j) exactly at the offsets
    // the strides give for i < m, j < n, p < k; the asserts above keep every one of them inside
    // its slice. `dst` is borrowed mutably and the operands shared, so nothing aliases.
    #[allow(unsafe_code)]
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            stride(dst_rs),
            accumulate,
            lhs.as_ptr(),
            stride(lhs_cs),
            stride(lhs_rs),
            rhs.as_ptr(),
            stride(rhs_cs),
            stride(rhs_rs),
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Rows of the output per parallel task of [`flex_linear`] at most: a block of the input this
/// tall stays in L2 while gemm sweeps the weight (measured at Hiera-B+'s stage-1 qkv,
/// 16,384 × 112 → 336: 64 to 512 rows all run at 175–200 GFLOPS on two cores, 256 best).
const LINEAR_ROWS_MAX: usize = 256;

/// Fewest rows per task of [`flex_linear`]: below this, gemm's own split over columns wins.
const LINEAR_ROWS_MIN: usize = 32;

/// Products smaller than this many multiply-adds run on one thread (splitting costs more).
const LINEAR_SERIAL_MACS: usize = 1 << 21;

/// A rank-2 `f32` Flex tensor as `(values from its first element, row stride, column
/// stride)`; `None` for other dtypes, ranks or negative strides.
fn matrix(t: &FlexTensor) -> Option<(&[f32], [usize; 2], usize, usize)> {
    let l = t.layout();
    if t.dtype() != DType::F32 || l.num_dims() != 2 || !l.has_positive_strides() {
        return None;
    }
    let dims = [l.shape()[0], l.shape()[1]];
    let [rs, cs] = [l.strides()[0].unsigned_abs(), l.strides()[1].unsigned_abs()];
    Some((&t.storage::<f32>()[l.start_offset()..], dims, rs, cs))
}

/// `x·W (+ b)` over the last dimension of a contiguous `f32` Flex tensor `x [.., d_in]`, with
/// `weight [d_in, d_out]` in any (positive) strides, so that a transposed view costs nothing,
/// and an optional contiguous `bias [d_out]`.
///
/// Flex runs a linear layer as a matmul into a new tensor and then adds the bias in a second
/// pass. Its matmul output comes from `FlexTensor::empty`, which zero-fills a byte vector and
/// then copies it into a fresh aligned buffer (burn-flex 0.22.1), so a layer's output is
/// written three times before the product and faulted in twice: at Hiera-B+'s stage-1 qkv
/// (16,384 × 112 → 336) the layer took 24 ms where the product alone takes 6.5 ms
/// (`sam4em bench ops`, 2026-12-05). Here each task writes the bias into its own block of
/// output rows (or nothing, the buffer being zeroed pages) and accumulates its product onto
/// it while the block is in cache; tasks are blocks of rows, so the weight is packed once
/// per block and no two tasks touch one output line. Short products (fewer rows than two
/// blocks per core) use gemm's split over columns instead. `None` for anything else, which
/// Flex then runs.
pub fn flex_linear(x: &FlexTensor, weight: &FlexTensor, bias: Option<&FlexTensor>) -> Option<FlexTensor> {
    if !Kernel::Linear.enabled() {
        return None;
    }
    let xs = x.as_slice::<f32>()?;
    let (w, [d_in, d_out], w_rs, w_cs) = matrix(weight)?;
    let shape = x.layout().shape();
    let last = shape.num_dims().checked_sub(1)?;
    if shape[last] != d_in || d_in == 0 || d_out == 0 {
        return None;
    }
    let bias = match bias {
        Some(b) => Some(b.as_slice::<f32>().filter(|b| b.len() == d_out)?),
        None => None,
    };
    let rows = xs.len() / d_in;
    let out = linear_rows(xs, rows, d_in, (w, w_rs, w_cs), d_out, bias);
    let mut dims = shape.clone();
    dims[last] = d_out;
    Some(contiguous_f32(out, dims))
}

/// `x [rows × d_in] · w [d_in × d_out] (+ bias)` into a new row-major buffer (see
/// [`flex_linear`]).
fn linear_rows(
    x: &[f32],
    rows: usize,
    d_in: usize,
    w: (&[f32], usize, usize),
    d_out: usize,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    use rayon::prelude::*;
    let mut out = vec![0f32; rows * d_out];
    let fill = |dst: &mut [f32]| {
        if let Some(b) = bias {
            dst.chunks_exact_mut(d_out).for_each(|row| row.copy_from_slice(b));
        }
    };
    let threads = rayon::current_num_threads().max(1);
    let macs = rows * d_in * d_out;
    let block = rows.div_ceil(4 * threads).clamp(LINEAR_ROWS_MIN, LINEAR_ROWS_MAX);
    if macs < LINEAR_SERIAL_MACS || threads == 1 || rows < 2 * threads * LINEAR_ROWS_MIN {
        fill(&mut out);
        let parallelism = if macs < LINEAR_SERIAL_MACS { gemm::Parallelism::None } else { gemm::Parallelism::Rayon(0) };
        gemm_with([rows, d_out, d_in], &mut out, d_out, bias.is_some(), (x, d_in, 1), w, 1.0, parallelism);
        return out;
    }
    out.par_chunks_mut(block * d_out).enumerate().for_each(|(i, dst)| {
        fill(dst);
        let r = dst.len() / d_out;
        sgemm([r, d_out, d_in], dst, d_out, bias.is_some(), (&x[i * block * d_in..], d_in, 1), w, 1.0);
    });
    out
}

/// The weight gradient of a linear layer, `xᵀ·g` summed over every row: `x [.., d_in]` and
/// `grad [.., d_out]` contiguous `f32` Flex tensors with the same rows → `[d_in, d_out]`.
///
/// The sum runs over all rows (32,768 for Hiera-B+'s stage 1 in a 2-slice step) into a small
/// matrix; gemm splits a product over its output only, which leaves the cores little to share
/// here. The rows are cut into one range per core instead, each summed into its own partial
/// matrix, and the partials added. `None` for anything else.
pub fn flex_linear_weight_grad(x: &FlexTensor, grad: &FlexTensor) -> Option<FlexTensor> {
    use rayon::prelude::*;
    if !Kernel::Linear.enabled() {
        return None;
    }
    let (xs, gs) = (x.as_slice::<f32>()?, grad.as_slice::<f32>()?);
    let (xl, gl) = (x.layout().shape(), grad.layout().shape());
    let (d_in, d_out) = (xl[xl.num_dims().checked_sub(1)?], gl[gl.num_dims().checked_sub(1)?]);
    if d_in == 0 || d_out == 0 || xs.len() / d_in != gs.len() / d_out {
        return None;
    }
    let rows = xs.len() / d_in;
    let threads = rayon::current_num_threads().max(1);
    let parts = if rows * d_in * d_out < LINEAR_SERIAL_MACS { 1 } else { threads.min(rows / LINEAR_ROWS_MAX).max(1) };
    let per_part = rows.div_ceil(parts);
    // lhs = xᵀ: element (i, r) at x[r·d_in + i]; rhs = g: (r, j) at g[r·d_out + j].
    let partial = |r0: usize, dst: &mut [f32]| {
        let r = per_part.min(rows - r0);
        sgemm([d_in, d_out, r], dst, d_out, false, (&xs[r0 * d_in..], 1, d_in), (&gs[r0 * d_out..], d_out, 1), 1.0);
    };
    let mut sums: Vec<Vec<f32>> = (0..parts)
        .into_par_iter()
        .map(|p| {
            let mut dst = vec![0f32; d_in * d_out];
            if p * per_part < rows {
                partial(p * per_part, &mut dst);
            }
            dst
        })
        .collect();
    let mut total = sums.swap_remove(0);
    for part in &sums {
        total.iter_mut().zip(part).for_each(|(t, p)| *t += p);
    }
    Some(contiguous_f32(total, [d_in, d_out].into()))
}

/// Each row of `scores` (`rows × n`) replaced by `exp(s − max s)`; `sums` gets each row's sum.
/// The caller divides after multiplying by V, which costs a row of V's width instead of a row
/// of scores.
// `with_simd` needs the instruction-set parameter; the body is plain Rust, which the compiler
// vectorises for the instruction set it is compiled for.
#[allow(clippy::extra_unused_type_parameters)]
#[macerator::with_simd]
fn exp_rows<S: macerator::Simd>(scores: &mut [f32], n: usize, sums: &mut [f32]) {
    for (row, sum) in scores.chunks_exact_mut(n).zip(sums.iter_mut()) {
        let max = lane_fold(row, f32::NEG_INFINITY, |m, s| if s > m { s } else { m });
        for s in row.iter_mut() {
            *s = exp_nonpositive(*s - max);
        }
        *sum = lane_fold(row, 0.0, |a, s| a + s);
    }
}

/// Lanes of a reduction: folding into 16 independent accumulators (then folding those) lets the
/// compiler vectorise reductions it must otherwise keep in order, one element at a time.
const LANES: usize = 16;

/// `f` folded over `values` from `init`, in [`LANES`] interleaved partial results.
#[inline(always)]
fn lane_fold(values: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for i in 0..LANES {
            acc[i] = f(acc[i], chunk[i]);
        }
    }
    let mut total = tail.iter().fold(init, |a, &v| f(a, v));
    for a in acc {
        total = f(total, a);
    }
    total
}

/// Rows per parallel task of [`flex_layer_norm_backward`] at least (each task keeps its own
/// partial sums of the scale and shift gradients).
const LAYER_NORM_ROWS_MIN: usize = 64;

/// The gradients of LayerNorm over the last dimension, `y = (x − μ)/√(σ² + ε)·γ + β` with the
/// biased variance, for `f32` Flex tensors: `(dx, dγ, dβ)`. One pass per row recomputes μ and
/// σ² (two-pass, as the forward), `x̂` and `g·γ`, then
/// `dx = (g·γ − mean(g·γ) − x̂·mean(g·γ·x̂))/√(σ² + ε)`; `dγ = Σ g·x̂` and `dβ = Σ g` over the
/// rows, summed per task and then across tasks. burn differentiates the forward's six
/// operations one by one (about 3× PyTorch's time at Hiera-B+'s stage 1, `sam4em bench ops`,
/// 2026-12-05). Non-contiguous inputs are copied first; `None` for other dtypes or shapes.
///
/// # Shapes
/// `x [.., d]`, `gamma [d]`, `grad` as `x` → `x`'s shape, `[d]`, `[d]`.
pub fn flex_layer_norm_backward(
    x: &FlexTensor,
    gamma: &FlexTensor,
    grad: &FlexTensor,
    eps: f64,
) -> Option<(FlexTensor, FlexTensor, FlexTensor)> {
    use rayon::prelude::*;
    if !Kernel::LayerNorm.enabled() || [x, gamma, grad].iter().any(|t| t.dtype() != DType::F32) {
        return None;
    }
    let shape = x.layout().shape().clone();
    let d = *shape.last()?;
    if grad.layout().shape() != &shape || gamma.layout().shape().num_elements() != d || d == 0 {
        return None;
    }
    let contiguous = |t: &FlexTensor| {
        if t.is_contiguous() && t.layout().start_offset() == 0 { t.clone() } else { t.to_contiguous() }
    };
    let (x, grad, gamma) = (contiguous(x), contiguous(grad), contiguous(gamma));
    let (xs, gs, gammas) = (
        &x.storage::<f32>()[..shape.num_elements()],
        &grad.storage::<f32>()[..shape.num_elements()],
        &gamma.storage::<f32>()[..d],
    );
    let rows = xs.len() / d;
    let per_task = rows.div_ceil(rayon::current_num_threads().max(1)).max(LAYER_NORM_ROWS_MIN);
    let mut dx = vec![0f32; xs.len()];
    let partials: Vec<Vec<f32>> = dx
        .par_chunks_mut(per_task * d)
        .zip(xs.par_chunks(per_task * d).zip(gs.par_chunks(per_task * d)))
        .map(|(dx, (x, g))| {
            // dγ then dβ.
            let mut sums = vec![0f32; 2 * d];
            let (dgamma, dbeta) = sums.split_at_mut(d);
            layer_norm_backward_rows(x, g, gammas, dx, dgamma, dbeta, eps as f32);
            sums
        })
        .collect();
    let mut sums = vec![0f32; 2 * d];
    for p in &partials {
        sums.iter_mut().zip(p).for_each(|(s, v)| *s += v);
    }
    let dbeta = sums.split_off(d);
    let param = |v: Vec<f32>| contiguous_f32(v, [d].into());
    Some((contiguous_f32(dx, shape), param(sums), param(dbeta)))
}

/// [`flex_layer_norm_backward`] over whole rows of `x` and `g` (each `d = gamma.len()` wide),
/// adding into `dgamma` and `dbeta`; compiled for each SIMD instruction set and dispatched at
/// run time.
#[allow(clippy::extra_unused_type_parameters, clippy::too_many_arguments)]
#[macerator::with_simd]
fn layer_norm_backward_rows<S: macerator::Simd>(
    x: &[f32],
    g: &[f32],
    gamma: &[f32],
    dx: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
    eps: f32,
) {
    let d = gamma.len();
    let inv_d = 1.0 / d as f32;
    for ((x, g), dx) in x.chunks_exact(d).zip(g.chunks_exact(d)).zip(dx.chunks_exact_mut(d)) {
        let mean = lane_fold(x, 0.0, |a, v| a + v) * inv_d;
        // dx first holds x − μ.
        for (c, &v) in dx.iter_mut().zip(x) {
            *c = v - mean;
        }
        let var = lane_dot(dx, dx) * inv_d;
        let rstd = 1.0 / (var + eps).sqrt();
        // mean(g·γ) and mean(g·γ·x̂), with x̂ = (x − μ)·rstd; dγ and dβ on the way.
        let (mut sum_gy, mut sum_gy_xhat) = ([0f32; LANES], [0f32; LANES]);
        let mut k = 0;
        while k + LANES <= d {
            for i in 0..LANES {
                let j = k + i;
                let xhat = dx[j] * rstd;
                let gy = g[j] * gamma[j];
                sum_gy[i] += gy;
                sum_gy_xhat[i] += gy * xhat;
                dgamma[j] += g[j] * xhat;
                dbeta[j] += g[j];
            }
            k += LANES;
        }
        let (mut a, mut b) = (0f32, 0f32);
        for j in k..d {
            let xhat = dx[j] * rstd;
            let gy = g[j] * gamma[j];
            a += gy;
            b += gy * xhat;
            dgamma[j] += g[j] * xhat;
            dbeta[j] += g[j];
        }
        let a = (a + sum_gy.iter().sum::<f32>()) * inv_d;
        let b = (b + sum_gy_xhat.iter().sum::<f32>()) * inv_d;
        for ((c, &gj), &gm) in dx.iter_mut().zip(g).zip(gamma) {
            let xhat = *c * rstd;
            *c = (gj * gm - a - xhat * b) * rstd;
        }
    }
}

/// `Σ a·b`, in [`LANES`] independent sums so that the compiler vectorises it.
fn lane_dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    tail + acc.iter().sum::<f32>()
}

thread_local! {
    /// Per-thread scores and row sums of [`flex_attention`], kept between calls: a fresh
    /// allocation of this size per task is an `mmap` and a page fault per 4 KiB.
    static SCRATCH: core::cell::RefCell<(Vec<f32>, Vec<f32>)> = const { core::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Score elements per parallel task in [`flex_attention`]: blocks of query rows whose scores
/// (with K and V) stay in a core's L2 cache.
const SCORE_BLOCK: usize = 1 << 16;

/// A rank-4 `f32` Flex tensor as its values from its first element, its shape and its
/// strides; `None` for other dtypes, ranks or negative strides.
pub(super) fn view4(t: &FlexTensor) -> Option<(&[f32], [usize; 4], [usize; 4])> {
    let l = t.layout();
    if t.dtype() != DType::F32 || l.num_dims() != 4 || !l.has_positive_strides() {
        return None;
    }
    let shape = std::array::from_fn(|i| l.shape()[i]);
    let strides = std::array::from_fn(|i| l.strides()[i].unsigned_abs());
    Some((&t.storage::<f32>()[l.start_offset()..], shape, strides))
}

/// `[B, H, Nq, d]`, `Nk` and `dv` of attention operands `q [B, H, Nq, d]`,
/// `k [B, H, Nk, d]`, `v [B, H, Nk, dv]`; `None` when they do not fit together or `Nk` is 0.
fn attention_shape(q: &FlexTensor, k: &FlexTensor, v: &FlexTensor) -> Option<([usize; 4], usize, usize)> {
    let dims = |t: &FlexTensor| -> Option<[usize; 4]> {
        let shape = t.layout().shape();
        (shape.num_dims() == 4).then(|| std::array::from_fn(|i| shape[i]))
    };
    let ([b, h, nq, d], [kb, kh, nk, kd], [vb, vh, vn, dv]) = (dims(q)?, dims(k)?, dims(v)?);
    ((kb, kh, kd) == (b, h, d) && (vb, vh, vn) == (b, h, nk) && nk > 0).then_some(([b, h, nq, d], nk, dv))
}

/// `softmax(q kᵀ/√d) v` per batch and head for `f32` Flex tensors of any strides: Q·Kᵀ (scaled
/// inside the GEMM), a vectorised softmax and P·V, in parallel over heads and blocks of query
/// rows; the score matrix of one block at a time, never the whole. `None` for other dtypes,
/// negative strides or mismatched shapes (Flex's kernel then runs).
///
/// Flex's own kernel computes the softmax with scalar `exp` and, beyond 512 keys, switches to
/// a tiled online softmax of 64-key GEMMs; Hiera-B+'s windowed and global attention at 512²
/// ran 1.9–2.6× slower than PyTorch's through it (`sam4em bench ops`, 2026-12-05).
///
/// # Shapes
/// `q [B, H, Nq, d]`, `k [B, H, Nk, d]`, `v [B, H, Nk, dv]` → `[B, H, Nq, dv]` (contiguous).
pub fn flex_attention(q: &FlexTensor, k: &FlexTensor, v: &FlexTensor) -> Option<FlexTensor> {
    use rayon::prelude::*;
    if !Kernel::Attention.enabled() {
        return None;
    }
    let ([b, h, nq, d], nk, dv) = attention_shape(q, k, v)?;
    let ((q_data, _, qs), (k_data, _, ks), (v_data, _, vs)) = (view4(q)?, view4(k)?, view4(v)?);
    let scale = 1.0 / (d as f32).sqrt();
    let block = (SCORE_BLOCK / nk.max(1)).clamp(1, nq.max(1));
    let blocks_per_head = nq.div_ceil(block);
    let mut out = vec![0f32; b * h * nq * dv];
    if out.is_empty() {
        return Some(contiguous_f32(out, [b, h, nq, dv].into()));
    }
    // One task per (batch, head, block of query rows); its output rows are contiguous.
    let tasks: Vec<(usize, usize, usize)> =
        (0..b * h).flat_map(|bh| (0..blocks_per_head).map(move |blk| (bh / h, bh % h, blk * block))).collect();
    let mut chunks: Vec<&mut [f32]> = Vec::with_capacity(tasks.len());
    for head in out.chunks_mut(nq * dv) {
        chunks.extend(head.chunks_mut(block * dv));
    }
    chunks.into_par_iter().zip(tasks).for_each(|(dst, (bi, hi, row0))| {
        SCRATCH.with_borrow_mut(|(scores, sums)| {
            let rows = dst.len() / dv;
            scores.resize(rows * nk, 0.0);
            sums.resize(rows, 0.0);
            let (scores, sums) = (&mut scores[..rows * nk], &mut sums[..rows]);
            let q0 = bi * qs[0] + hi * qs[1] + row0 * qs[2];
            let (k0, v0) = (bi * ks[0] + hi * ks[1], bi * vs[0] + hi * vs[1]);
            sgemm(
                [rows, nk, d],
                scores,
                nk,
                false,
                (&q_data[q0..], qs[2], qs[3]),
                (&k_data[k0..], ks[3], ks[2]),
                scale,
            );
            exp_rows(scores, nk, sums);
            sgemm([rows, dv, nk], dst, dv, false, (scores, nk, 1), (&v_data[v0..], vs[2], vs[3]), 1.0);
            for (row, &sum) in dst.chunks_exact_mut(dv).zip(sums.iter()) {
                let inv = 1.0 / sum;
                row.iter_mut().for_each(|o| *o *= inv);
            }
        })
    });
    Some(contiguous_f32(out, [b, h, nq, dv].into()))
}

/// The gradients of [`flex_attention`] with respect to `q`, `k` and `v` for the output
/// gradient `grad [B, H, Nq, dv]`, as contiguous `[B, H, N, ·]` tensors; `None` for tensors
/// the forward kernel does not take.
///
/// burn differentiates attention through its composition: two batched matmuls, a scale and a
/// softmax, each saving its output and each gradient a new tensor (ten passes over a score
/// tensor of `B·H·Nq·Nk` values, 64 MB for Hiera-B+'s global attention in a 2-slice step),
/// which ran 2.3–4× slower than PyTorch's (`sam4em bench ops`, 2026-12-05). Here each (batch,
/// head) is one task that recomputes its probabilities from q and k and derives everything
/// with five GEMMs on the strided views, its scores in a per-thread buffer:
/// `P = softmax(s·q·kᵀ)`, `dV = Pᵀ·dO`, `dP = dO·Vᵀ`, `dS = P ⊙ (dP − rowsum(P ⊙ dP))`,
/// `dQ = s·dS·K`, `dK = s·dSᵀ·Q` (`rowsum(P ⊙ dP)` is `rowsum(dO ⊙ O)`, so the output need
/// not be kept).
pub fn flex_attention_backward(
    q: &FlexTensor,
    k: &FlexTensor,
    v: &FlexTensor,
    grad: &FlexTensor,
) -> Option<(FlexTensor, FlexTensor, FlexTensor)> {
    use rayon::prelude::*;
    if !Kernel::Attention.enabled() {
        return None;
    }
    let ([b, h, nq, d], nk, dv) = attention_shape(q, k, v)?;
    let ((q_data, _, qs), (k_data, _, ks), (v_data, _, vs)) = (view4(q)?, view4(k)?, view4(v)?);
    let (g_data, _, gs) = view4(grad)?;
    if grad.layout().shape().to_vec() != [b, h, nq, dv] {
        return None;
    }
    let scale = 1.0 / (d as f32).sqrt();
    let (mut dq, mut dk, mut dvs) =
        (vec![0f32; b * h * nq * d], vec![0f32; b * h * nk * d], vec![0f32; b * h * nk * dv]);
    if nq > 0 && d > 0 && dv > 0 {
        dq.par_chunks_mut(nq * d).zip(dk.par_chunks_mut(nk * d)).zip(dvs.par_chunks_mut(nk * dv)).enumerate().for_each(
            |(task, ((dq, dk), dv_out))| {
                let (bi, hi) = (task / h, task % h);
                let (q0, k0) = (bi * qs[0] + hi * qs[1], bi * ks[0] + hi * ks[1]);
                let (v0, g0) = (bi * vs[0] + hi * vs[1], bi * gs[0] + hi * gs[1]);
                let (q, k, v, g) = (&q_data[q0..], &k_data[k0..], &v_data[v0..], &g_data[g0..]);
                BACKWARD_SCRATCH.with_borrow_mut(|(p, dp, sums)| {
                    p.resize(nq * nk, 0.0);
                    dp.resize(nq * nk, 0.0);
                    sums.resize(nq, 0.0);
                    let (p, dp, sums) = (&mut p[..nq * nk], &mut dp[..nq * nk], &mut sums[..nq]);
                    sgemm([nq, nk, d], p, nk, false, (q, qs[2], qs[3]), (k, ks[3], ks[2]), scale);
                    exp_rows(p, nk, sums);
                    for (row, &sum) in p.chunks_exact_mut(nk).zip(sums.iter()) {
                        let inv = 1.0 / sum;
                        row.iter_mut().for_each(|x| *x *= inv);
                    }
                    sgemm([nq, nk, dv], dp, nk, false, (g, gs[2], gs[3]), (v, vs[3], vs[2]), 1.0);
                    sgemm([nk, dv, nq], dv_out, dv, false, (p, 1, nk), (g, gs[2], gs[3]), 1.0);
                    softmax_grad_rows(p, dp, nk);
                    sgemm([nq, d, nk], dq, d, false, (dp, nk, 1), (k, ks[2], ks[3]), scale);
                    sgemm([nk, d, nq], dk, d, false, (dp, 1, nk), (q, qs[2], qs[3]), scale);
                })
            },
        );
    }
    Some((
        contiguous_f32(dq, [b, h, nq, d].into()),
        contiguous_f32(dk, [b, h, nk, d].into()),
        contiguous_f32(dvs, [b, h, nk, dv].into()),
    ))
}

/// `dP ← P ⊙ (dP − rowsum(P ⊙ dP))` row by row: the softmax's input gradient.
#[allow(clippy::extra_unused_type_parameters)]
#[macerator::with_simd]
fn softmax_grad_rows<S: macerator::Simd>(p: &[f32], dp: &mut [f32], n: usize) {
    for (p, dp) in p.chunks_exact(n).zip(dp.chunks_exact_mut(n)) {
        // In LANES interleaved sums, which the compiler vectorises (see `lane_fold`).
        let mut lanes = [0f32; LANES];
        for (pc, dc) in p.chunks_exact(LANES).zip(dp.chunks_exact(LANES)) {
            lanes.iter_mut().zip(pc.iter().zip(dc)).for_each(|(l, (a, b))| *l += a * b);
        }
        let tail = n / LANES * LANES;
        let dot = lanes.iter().sum::<f32>() + p[tail..].iter().zip(&dp[tail..]).map(|(a, b)| a * b).sum::<f32>();
        dp.iter_mut().zip(p).for_each(|(g, &p)| *g = p * (*g - dot));
    }
}

thread_local! {
    /// Per-thread probabilities, their gradient and row sums of [`flex_attention_backward`].
    static BACKWARD_SCRATCH: core::cell::RefCell<(Vec<f32>, Vec<f32>, Vec<f32>)> =
        const { core::cell::RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Φ(x) in float64 from libm's `erfc`, accurate in both tails.
    fn cdf64(x: f64) -> f64 {
        0.5 * libm::erfc(-x / core::f64::consts::SQRT_2)
    }

    /// Every `f32` in steps of about 1/4096 over ±14 (beyond, Φ is 0 or 1 in `f32`): Φ within
    /// 8 ulp relative wherever it is a normal `f32`, the density within 4 ulp down to `e^-86`
    /// (below which it is 0), at every point.
    #[test]
    fn normal_cdf_is_accurate() {
        let mut worst = (0.0f64, 0.0f32);
        let mut x = -14.0f32;
        while x <= 14.0 {
            let (cdf, density) = normal_cdf(x);
            let want = cdf64(x as f64);
            // Below the smallest normal f32 (x < -13), Φ may flush to 0.
            let rel = if want > f32::MIN_POSITIVE as f64 { ((cdf as f64 - want) / want).abs() } else { 0.0 };
            if rel > worst.0 {
                worst = (rel, x);
            }
            let want_density = (-0.5 * (x as f64) * (x as f64)).exp();
            if want_density >= (-86.0f64).exp() {
                let rel_density = ((density as f64 - want_density) / want_density).abs();
                assert!(rel_density <= 4.0 * f32::EPSILON as f64, "density at {x}: {density} vs {want_density}");
            }
            x += 1.0 / 4096.0 + x.abs() * 1e-5;
        }
        eprintln!("Φ: worst {:.2} ulp at {}", worst.0 / f32::EPSILON as f64, worst.1);
        assert!(
            worst.0 <= 8.0 * f32::EPSILON as f64,
            "Φ off by {:.2} ulp at {}",
            worst.0 / f32::EPSILON as f64,
            worst.1
        );
    }

    /// GELU and its gradient against float64 at points that cross every branch, including
    /// infinities and NaN.
    #[test]
    fn gelu_matches_float64() {
        let density64 = |x: f64| (-0.5 * x * x).exp() / (2.0 * core::f64::consts::PI).sqrt();
        for i in -3000..=3000 {
            let x = i as f32 / 200.0;
            let x64 = x as f64;
            let want = x64 * cdf64(x64);
            // Values within 100 times the smallest normal f32 may flush to 0 (see `exp_split`).
            let tiny = 1e-36;
            assert!((gelu(x) as f64 - want).abs() <= 9.0 * f32::EPSILON as f64 * want.abs() + tiny, "gelu({x})");
            let terms = cdf64(x64).abs() + (x64 * density64(x64)).abs();
            let want_grad = 0.75 * (cdf64(x64) + x64 * density64(x64));
            let err = (gelu_backward(x, 0.75) as f64 - want_grad).abs();
            assert!(
                err <= 8.0 * f32::EPSILON as f64 * terms + tiny,
                "gelu'({x}) = {} vs {want_grad}",
                gelu_backward(x, 0.75)
            );
        }
        assert_eq!(gelu(f32::INFINITY), f32::INFINITY);
        assert!(gelu(f32::NAN).is_nan());
        assert!(gelu_backward(f32::NAN, 1.0).is_nan());
        assert_eq!(gelu(-20.0), 0.0);
    }

    /// Deterministic values in ±1 (the convolution tests use them too).
    pub(in crate::model) fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as u32 ^ seed).wrapping_mul(2_654_435_761) >> 8) as f32 / (1 << 24) as f32 * 2.0 - 1.0)
            .collect()
    }

    /// A contiguous Flex tensor of `shape` over `v`.
    pub(in crate::model) fn flex(v: Vec<f32>, shape: [usize; 4]) -> FlexTensor {
        FlexTensor::from_data(burn::tensor::TensorData::new(v, shape))
    }

    /// `|a − b| ≤ tol·(1 + |b|)` everywhere, same shapes.
    fn assert_close(a: FlexTensor, b: FlexTensor, tol: f32, what: &str) {
        assert_eq!(a.layout().shape(), b.layout().shape(), "{what}: shapes");
        let (a, b) = (a.into_data().try_to_vec::<f32>().expect("f32"), b.into_data().try_to_vec::<f32>().expect("f32"));
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{what}: element {i}: {x} vs {y}");
        }
    }

    /// Attention against Flex's own kernel: short and long key sequences (one and several
    /// blocks of query rows), strided views (q, k, v as slices of one fused tensor), and a
    /// value width different from the key width.
    #[test]
    fn attention_matches_flex() {
        use burn::backend::Flex;
        use burn::backend::ops::ModuleOps;
        for (b, h, nq, nk, d, dv) in [(3, 2, 49, 49, 8, 8), (1, 2, 300, 700, 16, 8), (2, 1, 5, 1, 4, 4)] {
            let q = flex(values(b * h * nq * d, 1), [b, h, nq, d]);
            let k = flex(values(b * h * nk * d, 2), [b, h, nk, d]);
            let v = flex(values(b * h * nk * dv, 3), [b, h, nk, dv]);
            let want =
                <Flex as ModuleOps<Flex>>::attention(q.clone(), k.clone(), v.clone(), None, None, Default::default());
            assert_close(flex_attention(&q, &k, &v).expect("f32"), want, 1e-5, "contiguous");
        }
        // q, k, v as views [B, H, N, d] of a fused [B, N, 3, H, d] tensor, as Hiera slices its qkv.
        let (b, n, h, d) = (2, 64, 2, 8);
        let fused = FlexTensor::from_data(burn::tensor::TensorData::new(values(b * n * 3 * h * d, 4), [b, n, 3, h, d]));
        let take = |i: usize| fused.narrow(2, i, 1).reshape([b, n, h, d].into()).transpose(1, 2);
        let (q, k, v) = (take(0), take(1), take(2));
        assert!(!q.is_contiguous());
        let want =
            <Flex as ModuleOps<Flex>>::attention(q.clone(), k.clone(), v.clone(), None, None, Default::default());
        assert_close(flex_attention(&q, &k, &v).expect("f32"), want, 1e-5, "strided");
    }

    /// Linear layers against Flex's own, on each of the three ways the rows are split (one
    /// thread, gemm's split over columns, blocks of rows with a ragged last block), with and
    /// without a bias, with the weight as a transposed view (the input gradient's case), and
    /// the weight gradient over rows split across partial sums.
    #[test]
    fn linear_matches_flex() {
        use burn::backend::Flex;
        use burn::backend::ops::ModuleOps;
        let matrix = |v: Vec<f32>, shape: [usize; 2]| FlexTensor::from_data(burn::tensor::TensorData::new(v, shape));
        for (rows, d_in, d_out) in [(7, 5, 3), (40, 300, 500), (2 * LINEAR_ROWS_MAX * 4 + 37, 48, 80)] {
            let x = matrix(values(rows * d_in, 10), [rows, d_in]);
            let w = matrix(values(d_in * d_out, 11), [d_in, d_out]);
            let b = FlexTensor::from_data(burn::tensor::TensorData::new(values(d_out, 12), [d_out]));
            let want = <Flex as ModuleOps<Flex>>::linear(x.clone(), w.clone(), Some(b.clone()));
            assert_close(flex_linear(&x, &w, Some(&b)).expect("handled"), want, 1e-5, "with bias");
            let want = <Flex as ModuleOps<Flex>>::linear(x.clone(), w.clone(), None);
            assert_close(flex_linear(&x, &w, None).expect("handled"), want, 1e-5, "without bias");
            // grad·Wᵀ through the transposed view of W.
            let g = matrix(values(rows * d_out, 13), [rows, d_out]);
            let want = <Flex as ModuleOps<Flex>>::linear_x_backward(w.clone(), g.clone());
            assert_close(flex_linear(&g, &w.transpose(0, 1), None).expect("view"), want, 1e-5, "input gradient");
            let want = <Flex as ModuleOps<Flex>>::linear_weight_backward(x.clone(), g.clone());
            assert_close(flex_linear_weight_grad(&x, &g).expect("handled"), want, 1e-4, "weight gradient");
        }
        // Leading dimensions are rows; the output keeps them.
        let x = FlexTensor::from_data(burn::tensor::TensorData::new(values(2 * 3 * 4 * 6, 14), [2, 3, 4, 6]));
        let w = matrix(values(6 * 5, 15), [6, 5]);
        let want = <Flex as ModuleOps<Flex>>::linear(x.clone(), w.clone(), None);
        assert_close(flex_linear(&x, &w, None).expect("handled"), want, 1e-5, "rank 4");
        assert!(flex_linear(&x.clone().transpose(0, 1), &w, None).is_none(), "a strided input is Flex's");
        assert!(flex_linear(&x, &matrix(values(30, 16), [5, 6]), None).is_none(), "width mismatch");
    }

    /// LayerNorm's gradients against float64 arithmetic: widths below, at and above the SIMD
    /// lanes, rows split over several tasks, a strided (transposed) output gradient, an input
    /// with a large mean.
    #[test]
    fn layer_norm_backward_matches_float64() {
        for (rows, d, offset) in [(3, 5, 0.0), (200, 16, 0.0), (130, 37, 100.0), (70, 96, -3.0)] {
            let x: Vec<f32> = values(rows * d, 21).iter().map(|v| v + offset).collect();
            let gamma: Vec<f32> = values(d, 22).iter().map(|v| 1.0 + 0.5 * v).collect();
            let g = values(rows * d, 23);
            let eps = 1e-6;
            let (xt, gt) = (flex(x.clone(), [1, 1, rows, d]), flex(gamma.clone(), [1, 1, 1, d]).reshape([d].into()));
            // The output gradient as a transposed view of a [d, rows] tensor.
            let gd: Vec<f32> = (0..d * rows).map(|k| g[(k % rows) * d + k / rows]).collect();
            let gview = flex(gd, [1, 1, d, rows]).transpose(2, 3);
            let (dx, dgamma, dbeta) = flex_layer_norm_backward(&xt, &gt, &gview, eps).expect("handled");
            let [dx, dgamma, dbeta] = [dx, dgamma, dbeta].map(|t| t.into_data().try_to_vec::<f32>().expect("f32"));
            let (mut want_dgamma, mut want_dbeta) = (vec![0f64; d], vec![0f64; d]);
            for r in 0..rows {
                let row = &x[r * d..(r + 1) * d];
                let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / d as f64;
                let var = row.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / d as f64;
                let rstd = 1.0 / (var + eps).sqrt();
                let xhat: Vec<f64> = row.iter().map(|&v| (f64::from(v) - mean) * rstd).collect();
                let gr = &g[r * d..(r + 1) * d];
                let gy: Vec<f64> = gr.iter().zip(&gamma).map(|(&a, &b)| f64::from(a) * f64::from(b)).collect();
                let a = gy.iter().sum::<f64>() / d as f64;
                let b = gy.iter().zip(&xhat).map(|(p, q)| p * q).sum::<f64>() / d as f64;
                for j in 0..d {
                    let want = rstd * (gy[j] - a - xhat[j] * b);
                    let got = f64::from(dx[r * d + j]);
                    assert!((got - want).abs() <= 1e-4 * (1.0 + want.abs()), "dx[{r}, {j}]: {got} vs {want}");
                    want_dgamma[j] += f64::from(gr[j]) * xhat[j];
                    want_dbeta[j] += f64::from(gr[j]);
                }
            }
            for j in 0..d {
                for (name, got, want) in [("dγ", dgamma[j], want_dgamma[j]), ("dβ", dbeta[j], want_dbeta[j])] {
                    let got = f64::from(got);
                    assert!((got - want).abs() <= 1e-4 * (1.0 + want.abs()), "{name}[{j}]: {got} vs {want}");
                }
            }
        }
    }

    /// The attention gradients against float64 loops, with key lengths on both sides of the
    /// vectorised lanes and q, k, v as strided views of one tensor.
    #[test]
    fn attention_backward_matches_float64() {
        let read = |t: &FlexTensor| -> Vec<f64> {
            t.to_contiguous().into_data().try_to_vec::<f32>().expect("f32").iter().map(|&x| x as f64).collect()
        };
        for (b, h, nq, nk, d, dv) in [(2, 2, 20, 37, 8, 5), (1, 3, 4, 3, 2, 2)] {
            // k and v as views of one [B, H, Nk, d + dv] tensor, q as a transposed view.
            let q = flex(values(b * h * d * nq, 21), [b, h, d, nq]).transpose(2, 3);
            let kv = flex(values(b * h * nk * (d + dv), 22), [b, h, nk, d + dv]);
            let (k, v) = (kv.narrow(3, 0, d), kv.narrow(3, d, dv));
            let g = flex(values(b * h * nq * dv, 23), [b, h, nq, dv]);
            let (dq, dk, dvg) = flex_attention_backward(&q, &k, &v, &g).expect("handled");
            let (qv, kv, vv, gv) = (read(&q), read(&k), read(&v), read(&g));
            let (mut wq, mut wk, mut wv) =
                (vec![0.0; b * h * nq * d], vec![0.0; b * h * nk * d], vec![0.0; b * h * nk * dv]);
            let scale = 1.0 / (d as f64).sqrt();
            for bh in 0..b * h {
                let (q, k) = (&qv[bh * nq * d..], &kv[bh * nk * d..]);
                let (v, g) = (&vv[bh * nk * dv..], &gv[bh * nq * dv..]);
                for i in 0..nq {
                    let s: Vec<f64> =
                        (0..nk).map(|j| scale * (0..d).map(|c| q[i * d + c] * k[j * d + c]).sum::<f64>()).collect();
                    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                    let p: Vec<f64> = s.iter().map(|x| (x - m).exp() / z).collect();
                    let dp: Vec<f64> = (0..nk).map(|j| (0..dv).map(|c| g[i * dv + c] * v[j * dv + c]).sum()).collect();
                    let dot: f64 = p.iter().zip(&dp).map(|(a, b)| a * b).sum();
                    for j in 0..nk {
                        let ds = p[j] * (dp[j] - dot);
                        for c in 0..dv {
                            wv[(bh * nk + j) * dv + c] += p[j] * g[i * dv + c];
                        }
                        for c in 0..d {
                            wq[(bh * nq + i) * d + c] += scale * ds * k[j * d + c];
                            wk[(bh * nk + j) * d + c] += scale * ds * q[i * d + c];
                        }
                    }
                }
            }
            for (name, got, want) in [("dq", read(&dq), wq), ("dk", read(&dk), wk), ("dv", read(&dvg), wv)] {
                for (i, (x, y)) in got.iter().zip(&want).enumerate() {
                    assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{name}[{i}]: {x} vs {y}");
                }
            }
        }
    }

    /// The parallel, dispatched kernels give the scalar function's values over several chunks,
    /// and non-contiguous tensors are left to Flex.
    #[test]
    fn flex_kernels_cover_every_element() {
        use burn::tensor::TensorData;
        let (rows, cols) = (3 * CHUNK / 17 + 5, 17);
        let values = |seed: u32| -> Vec<f32> {
            (0..rows * cols)
                .map(|i| ((i as u32).wrapping_mul(2_654_435_761) ^ seed) as f32 / u32::MAX as f32 * 18.0 - 9.0)
                .collect()
        };
        let (xs, gs) = (values(1), values(7));
        let tensor = |v: &[f32]| FlexTensor::from_data(TensorData::new(v.to_vec(), [rows, cols]));
        let got = |t: FlexTensor| t.into_data().try_to_vec::<f32>().expect("f32");
        let (x, g) = (tensor(&xs), tensor(&gs));
        let forward = got(flex_gelu(&x).expect("contiguous"));
        let backward = got(flex_gelu_backward(&x, &g).expect("contiguous"));
        for i in 0..xs.len() {
            assert_eq!(forward[i].to_bits(), gelu(xs[i]).to_bits(), "forward at {i}");
            assert_eq!(backward[i].to_bits(), gelu_backward(xs[i], gs[i]).to_bits(), "backward at {i}");
        }
        let shared = x.clone();
        let shared = flex_gelu_in_place(shared).expect_err("x still holds the buffer");
        drop(shared);
        let in_place = got(flex_gelu_in_place(tensor(&xs)).expect("unique and contiguous"));
        assert!(in_place.iter().zip(&forward).all(|(a, b)| a.to_bits() == b.to_bits()), "in place = out of place");
        let view = tensor(&xs).transpose(0, 1);
        assert!(flex_gelu_in_place(view).is_err(), "not contiguous");
        // A contiguous view at an offset into a buffer of its own: only its own values change.
        let tail = FlexTensor::from_data(TensorData::new(xs.clone(), [rows * cols])).narrow(0, cols, (rows - 1) * cols);
        let tail = got(flex_gelu_in_place(tail).expect("unique, contiguous at an offset"));
        assert!(tail.iter().zip(&forward[cols..]).all(|(a, b)| a.to_bits() == b.to_bits()));
        assert!(flex_gelu(&x.clone().transpose(0, 1)).is_none());
        assert!(flex_gelu_backward(&x.transpose(0, 1), &g).is_none());
    }
}
