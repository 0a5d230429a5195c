//! Stride-1 convolutions for burn's CPU backend (Flex): the forward pass and both gradients,
//! each as one matrix product per kernel tap on a zero-padded channels-last copy, with no
//! im2col buffer.
//!
//! The input is copied once into channels-last rows of the padded width `Wp`. At that width
//! the input under kernel tap `(i, j)` for every output position is one contiguous block of
//! rows, starting `i·Wp + j` rows in, so
//! - the **output** is `Σ_tap X_tap·W_tap`, each `[positions × C]·[C × O]`, accumulated in
//!   place ([`flex_conv2d`]);
//! - the **input gradient** is the same convolution of the output gradient with the kernel
//!   flipped and its channel axes swapped ([`flex_conv2d_x_grad`]);
//! - the **weight gradient** of tap `(i, j)` is `Gᵀ·X_tap`, `[O × positions]·[positions × C]`,
//!   with `G` the output gradient at the same padded width, zero in the extra columns
//!   ([`flex_conv2d_weight_grad`]).
//!
//! Each output row has `Wp − Wo` extra positions, computed and dropped (2 of 130 at the fusion
//! head's 3×3 convolutions). 3×3 kernels with 32 channels or more on both sides (the fusion
//! head's) go through Winograd's F(2×2, 3×3) instead, forward and input gradient ([`winograd`]):
//! 2.25× fewer multiply-adds. Flex's own kernels copy the input into im2col tiles of `C·k²`
//! columns: at Hiera-B+'s fusion head (3×3, 256→256, 128²) its forward ran 1.5× and its
//! backward 2.5× slower than PyTorch's (`sam4em bench ops`, 2026-12-05).
//!
//! Every function returns `None` for what it does not handle (1×1 kernels, padding as large as
//! the kernel, other dtypes, negative strides, or when `SAM4EM_CPU_KERNELS_OFF` names `conv`);
//! the caller then runs Flex's kernel. Strides, dilation and groups are the caller's to check.

use burn::backend::flex::FlexTensor;
use rayon::prelude::*;

use super::cpu_kernels::{Kernel, contiguous_f32, sgemm, view4};

/// Output positions (rows of the padded-width output) per parallel task of [`flex_conv2d`].
const CONV_TILE: usize = 1024;

/// Output channels per parallel task of the copy back to NCHW: each position's block is one
/// 64-byte cache line read.
const CONV_CHANNEL_BLOCK: usize = 16;

/// Channels per pass of the copy into channels-last rows: each pixel's block is one 32-byte
/// write.
const CHANNELS_LAST_BLOCK: usize = 8;

/// Fewest positions a task of [`flex_conv2d_weight_grad`] sums: below this the partial sums
/// cost more than the split saves.
const WEIGHT_GRAD_POSITIONS_MIN: usize = 256;

/// The shape of one stride-1 convolution, in the terms of the padded-width layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geometry {
    /// Images.
    b: usize,
    /// Input channels.
    c: usize,
    /// Input rows and columns.
    h: usize,
    w: usize,
    /// Output channels.
    o: usize,
    /// Kernel rows and columns.
    kh: usize,
    kw: usize,
    /// Zero rows above and columns left of the input.
    top: usize,
    left: usize,
    /// Padded width (the row stride of the channels-last copy and of the wide output).
    wp: usize,
    /// Output rows and columns.
    ho: usize,
    wo: usize,
}

impl Geometry {
    /// The geometry of `[b, c, h, w]` under an `[o, c, kh, kw]` kernel with `padding`; `None`
    /// for 1×1 kernels (Flex's GEMM is already the whole convolution), padding as large as the
    /// kernel, empty tensors and kernels larger than the padded input.
    fn new([b, c, h, w]: [usize; 4], [o, kh, kw]: [usize; 3], padding: [(usize, usize); 2]) -> Option<Self> {
        let [(top, bottom), (left, right)] = padding;
        let within = |pad: usize, k: usize| pad < k;
        let kernel_ok = kh * kw >= 2 && within(top, kh) && within(bottom, kh) && within(left, kw) && within(right, kw);
        let (hp, wp) = (h + top + bottom, w + left + right);
        if !kernel_ok || b * c * h * w * o == 0 || hp < kh || wp < kw {
            return None;
        }
        Some(Geometry { b, c, h, w, o, kh, kw, top, left, wp, ho: hp - kh + 1, wo: wp - kw + 1 })
    }

    /// Rows of one padded channels-last image: the padded rows, then `kw − 1` spare zero rows
    /// so that the last tap's block of rows stays inside.
    fn image_rows(&self) -> usize {
        (self.ho + self.kh - 1) * self.wp + self.kw - 1
    }

    /// Rows of one image's wide output (`Wp` positions per output row).
    fn positions(&self) -> usize {
        self.ho * self.wp
    }
}

/// Copies `[B, C, H, W]` (`values` with `strides`) into `rows_per_image` channels-last rows
/// per image, row `(y + top)·wp + x + left` holding pixel `(y, x)`; the rest stays zero.
fn channels_last(
    (values, [b, c, h, w], strides): (&[f32], [usize; 4], [usize; 4]),
    (top, left, wp): (usize, usize, usize),
    rows_per_image: usize,
) -> Vec<f32> {
    let mut out = vec![0f32; b * rows_per_image * c];
    out.par_chunks_mut(rows_per_image * c).enumerate().for_each(|(bi, image)| {
        for y in 0..h {
            let row = &mut image[((y + top) * wp + left) * c..((y + top) * wp + left + w) * c];
            // Blocks of channels, so that each pixel's write is one run of consecutive values
            // rather than one value per cache line.
            for c0 in (0..c).step_by(CHANNELS_LAST_BLOCK) {
                let n = CHANNELS_LAST_BLOCK.min(c - c0);
                let base = bi * strides[0] + c0 * strides[1] + y * strides[2];
                for (xi, pixel) in row.chunks_exact_mut(c).enumerate() {
                    let at = base + xi * strides[3];
                    for (k, v) in pixel[c0..c0 + n].iter_mut().enumerate() {
                        *v = values[at + k * strides[1]];
                    }
                }
            }
        }
    });
    out
}

/// A kernel tap's weights as a `[C × O]` matrix: `(values from its first element, row
/// stride, column stride)`.
type TapMatrix<'a> = (&'a [f32], usize, usize);

/// The wide output, per image `positions × o` rows: `Σ_tap X_tap·W_tap` over the padded
/// channels-last images, in parallel over tiles of positions.
fn wide_output<'a>(padded: &[f32], g: &Geometry, tap: impl Fn(usize, usize) -> TapMatrix<'a> + Sync) -> Vec<f32> {
    let (positions, image_rows, o, c) = (g.positions(), g.image_rows(), g.o, g.c);
    let mut out = vec![0f32; g.b * positions * o];
    let tiles: Vec<(usize, usize)> =
        (0..g.b).flat_map(|bi| (0..positions.div_ceil(CONV_TILE)).map(move |t| (bi, t * CONV_TILE))).collect();
    let mut chunks: Vec<&mut [f32]> = Vec::with_capacity(tiles.len());
    for image in out.chunks_mut(positions * o) {
        chunks.extend(image.chunks_mut(CONV_TILE * o));
    }
    chunks.into_par_iter().zip(tiles).for_each(|(dst, (bi, first))| {
        let rows = dst.len() / o;
        let image = &padded[bi * image_rows * c..(bi + 1) * image_rows * c];
        for i in 0..g.kh {
            for j in 0..g.kw {
                let start = (first + i * g.wp + j) * c;
                sgemm([rows, o, c], dst, o, i + j > 0, (&image[start..], c, 1), tap(i, j), 1.0);
            }
        }
    });
    out
}

/// The wide output as a contiguous `[B, O, Ho, Wo]` tensor without its extra columns, blocks
/// of channels in parallel. What follows a convolution (bias, norms, residual adds) then runs
/// on contiguous tensors, which Flex does in vectorised passes; on a channels-last view it
/// falls to a scalar strided loop (measured: such adds were 4 % of a whole B+ stream step).
fn wide_to_nchw(wide: &[f32], g: &Geometry) -> FlexTensor {
    let (positions, plane, o) = (g.positions(), g.ho * g.wo, g.o);
    let mut nchw = vec![0f32; g.b * o * plane];
    nchw.par_chunks_mut(o * plane).enumerate().for_each(|(bi, image)| {
        let wide = &wide[bi * positions * o..(bi + 1) * positions * o];
        image.par_chunks_mut(CONV_CHANNEL_BLOCK * plane).enumerate().for_each(|(block, dst)| {
            let (first, count) = (block * CONV_CHANNEL_BLOCK, dst.len() / plane);
            for y in 0..g.ho {
                for x in 0..g.wo {
                    let src = &wide[(y * g.wp + x) * o + first..][..count];
                    for (k, &v) in src.iter().enumerate() {
                        dst[k * plane + y * g.wo + x] = v;
                    }
                }
            }
        });
    });
    contiguous_f32(nchw, [g.b, o, g.ho, g.wo].into())
}

/// Output tiles per parallel task of [`winograd`], at most (whole rows of tiles per task).
const WINOGRAD_TILES: usize = 512;

/// Fewest input and output channels for which [`winograd`] runs: with fewer, its transforms
/// cost more than the multiplications it saves.
const WINOGRAD_CHANNELS_MIN: usize = 32;

/// Whether a convolution goes through [`winograd`]: 3×3 kernels with enough channels.
fn winograd_pays(g: &Geometry) -> bool {
    g.kh == 3 && g.kw == 3 && g.c >= WINOGRAD_CHANNELS_MIN && g.o >= WINOGRAD_CHANNELS_MIN && Kernel::Winograd.enabled()
}

/// A 3×3 kernel in the Winograd domain of F(2×2, 3×3): `U = G·g·Gᵀ` per (input channel,
/// output channel), laid out `[16][C][O]` (element `r·4 + s` of U first) for the 16 matrix
/// products. `g(c, o, i, j)` is the kernel's tap `(i, j)` from input channel `c` to output
/// channel `o`.
fn winograd_weights(c: usize, o: usize, g: impl Fn(usize, usize, usize, usize) -> f32 + Sync) -> Vec<f32> {
    let mut u = vec![0f32; 16 * c * o];
    let plane = c * o;
    // The 16 values of each (input, output) channel pair in parallel, then scattered into the
    // 16 planes.
    let rows: Vec<[f32; 16]> = (0..c * o)
        .into_par_iter()
        .map(|idx| {
            let (ci, oi) = (idx / o, idx % o);
            let k = |i: usize, j: usize| g(ci, oi, i, j);
            // s = G·g (4×3), then U = s·Gᵀ (4×4).
            let column = |j: usize| {
                let (a, b, d) = (k(0, j), k(1, j), k(2, j));
                [a, 0.5 * (a + b + d), 0.5 * (a - b + d), d]
            };
            let columns = [column(0), column(1), column(2)];
            let s: [[f32; 3]; 4] = std::array::from_fn(|r| columns.map(|col| col[r]));
            let mut out = [0f32; 16];
            for r in 0..4 {
                let [a, b, d] = s[r];
                out[r * 4] = a;
                out[r * 4 + 1] = 0.5 * (a + b + d);
                out[r * 4 + 2] = 0.5 * (a - b + d);
                out[r * 4 + 3] = d;
            }
            out
        })
        .collect();
    for (idx, row) in rows.iter().enumerate() {
        for (k, &v) in row.iter().enumerate() {
            u[k * plane + idx] = v;
        }
    }
    u
}

/// `dst = a + b` lane by lane (a loop the compiler vectorises).
#[inline(always)]
fn add_into(dst: &mut [f32], a: &[f32], b: &[f32]) {
    for ((d, &x), &y) in dst.iter_mut().zip(a).zip(b) {
        *d = x + y;
    }
}

/// `dst = a − b` lane by lane.
#[inline(always)]
fn sub_into(dst: &mut [f32], a: &[f32], b: &[f32]) {
    for ((d, &x), &y) in dst.iter_mut().zip(a).zip(b) {
        *d = x - y;
    }
}

/// `dst = a + b + c` lane by lane.
#[inline(always)]
fn add3_into(dst: &mut [f32], a: &[f32], b: &[f32], c: &[f32]) {
    for (((d, &x), &y), &z) in dst.iter_mut().zip(a).zip(b).zip(c) {
        *d = x + y + z;
    }
}

/// `dst = a − b − c` lane by lane.
#[inline(always)]
fn sub2_into(dst: &mut [f32], a: &[f32], b: &[f32], c: &[f32]) {
    for (((d, &x), &y), &z) in dst.iter_mut().zip(a).zip(b).zip(c) {
        *d = x - y - z;
    }
}

/// `V = Bᵀ·d·B` for one tile, every channel at once: `d[r·4 + s]` is the tile's input pixel
/// `(r, s)` (its C channels), `vt` the tile's `[16][C]` block of V, `rows` a `[16][C]`
/// scratch for `Bᵀ·d`. Each step is a vectorised pass over the channels; compiled for each
/// SIMD instruction set and dispatched at run time (as `cpu_kernels`' GELU is).
// `with_simd` needs the lifetime named (it adds one of its own).
#[allow(clippy::extra_unused_type_parameters, clippy::needless_lifetimes)]
#[macerator::with_simd]
fn input_transform_tile<'a, S: macerator::Simd>(d: &[&'a [f32]; 16], vt: &mut [f32], rows: &mut [f32], c: usize) {
    // Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1], applied to the rows of d, then to the
    // rows of the result (·B).
    let mut t = rows.chunks_exact_mut(c);
    let rows_of: [&mut [f32]; 16] = std::array::from_fn(|_| t.next().expect("16 rows"));
    for s in 0..4 {
        sub_into(rows_of[s], d[s], d[8 + s]);
        add_into(rows_of[4 + s], d[4 + s], d[8 + s]);
        sub_into(rows_of[8 + s], d[8 + s], d[4 + s]);
        sub_into(rows_of[12 + s], d[4 + s], d[12 + s]);
    }
    let mut v = vt.chunks_exact_mut(c);
    let out: [&mut [f32]; 16] = std::array::from_fn(|_| v.next().expect("16 rows"));
    for r in 0..4 {
        let q = |k: usize| &*rows_of[r * 4 + k];
        sub_into(out[r * 4], q(0), q(2));
        add_into(out[r * 4 + 1], q(1), q(2));
        sub_into(out[r * 4 + 2], q(2), q(1));
        sub_into(out[r * 4 + 3], q(1), q(3));
    }
}

/// `Y = Aᵀ·M·A` for one tile, every output channel at once: `mt` is the tile's `[16][O]`
/// block of M, `rows` a `[8][O]` scratch for `Aᵀ·M`. Writes the `rows × cols` (≤ 2 × 2)
/// outputs that lie inside the image: output `(r, s)` at `dst[r·row_stride + s·O ..]`.
/// Compiled like [`input_transform_tile`].
#[allow(clippy::extra_unused_type_parameters)]
#[macerator::with_simd]
fn output_transform_tile<S: macerator::Simd>(
    mt: &[f32],
    dst: &mut [f32],
    scratch: &mut [f32],
    o: usize,
    rows_cols: [usize; 2],
    row_stride: usize,
) {
    let [rows, cols] = rows_cols;
    let m = |k: usize| &mt[k * o..(k + 1) * o];
    // Aᵀ = [1 1 1 0; 0 1 −1 −1]: two rows of four.
    let (a0, a1) = scratch.split_at_mut(4 * o);
    for s in 0..4 {
        add3_into(&mut a0[s * o..(s + 1) * o], m(s), m(4 + s), m(8 + s));
        sub2_into(&mut a1[s * o..(s + 1) * o], m(4 + s), m(8 + s), m(12 + s));
    }
    for (r, a) in [&*a0, &*a1].into_iter().enumerate().take(rows) {
        let q = |k: usize| &a[k * o..(k + 1) * o];
        let row = &mut dst[r * row_stride..];
        add3_into(&mut row[..o], q(0), q(1), q(2));
        if cols == 2 {
            sub2_into(&mut row[o..2 * o], q(1), q(2), q(3));
        }
    }
}

thread_local! {
    /// Per-thread transformed inputs and products of [`winograd`] (tiles × 16 × channels each).
    static WINOGRAD_SCRATCH: core::cell::RefCell<(Vec<f32>, Vec<f32>, Vec<f32>)> =
        const { core::cell::RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
}

/// A 3×3 stride-1 convolution by Winograd's minimal filtering F(2×2, 3×3) (Lavin & Gray,
/// 2016): each 2×2 block of outputs comes from a 4×4 patch of input as
/// `Y = Aᵀ·[Σ_c U_c ⊙ (Bᵀ·d_c·B)]·A`, so that the channel sums are 16 matrix products of
/// `[tiles × C]·[C × O]`, 2.25× fewer multiply-adds than the 9 per-tap products. Per task
/// (whole rows of tiles, at most [`WINOGRAD_TILES`] tiles): the input transform into
/// `V [tiles][16][C]`, the 16 products into `M [tiles][16][O]`, the output transform into
/// channels-last rows; then one copy to NCHW. The transforms use only additions and halvings,
/// which in `f32` round about as a direct sum of the same terms does.
///
/// `u` is [`winograd_weights`]' layout; `g` must be a 3×3 geometry.
fn winograd((values, shape, strides): (&[f32], [usize; 4], [usize; 4]), g: &Geometry, u: &[f32]) -> FlexTensor {
    let (c, o) = (g.c, g.o);
    let (th, tw) = (g.ho.div_ceil(2), g.wo.div_ceil(2));
    // The padded input, large enough for whole tiles: (2·th + 2) × (2·tw + 2) pixels.
    let (hq, wq) = (2 * th + 2, 2 * tw + 2);
    let padded = channels_last((values, shape, strides), (g.top, g.left, wq), hq * wq);
    let out_rows = g.ho * g.wo;
    let mut out = vec![0f32; g.b * out_rows * o];
    let band = (WINOGRAD_TILES / tw).max(1);
    // Tasks: (image, first tile row), each owning output rows 2·ty0 .. 2·ty1 of its image.
    let mut tasks: Vec<(usize, usize, &mut [f32])> = Vec::new();
    for (bi, image) in out.chunks_mut(out_rows * o).enumerate() {
        for (k, rows) in image.chunks_mut(2 * band * g.wo * o).enumerate() {
            tasks.push((bi, k * band, rows));
        }
    }
    tasks.into_par_iter().for_each(|(bi, ty0, dst)| {
        let ty1 = (ty0 + band).min(th);
        let tiles = (ty1 - ty0) * tw;
        let image = &padded[bi * hq * wq * c..(bi + 1) * hq * wq * c];
        WINOGRAD_SCRATCH.with_borrow_mut(|(v, m, scratch)| {
            v.resize(tiles * 16 * c, 0.0);
            m.resize(tiles * 16 * o, 0.0);
            scratch.resize(16 * c.max(o), 0.0);
            // Input transform: V = Bᵀ·d·B per tile, channels in lanes.
            for (t, vt) in v.chunks_exact_mut(16 * c).enumerate() {
                let (ty, tx) = (ty0 + t / tw, t % tw);
                let d: [&[f32]; 16] =
                    std::array::from_fn(|k| &image[((2 * ty + k / 4) * wq + 2 * tx + k % 4) * c..][..c]);
                input_transform_tile(&d, vt, scratch, c);
            }
            // M[k] = V[k]·U[k]; V and M hold the 16 matrices interleaved by tile ([tiles][16][·]),
            // so each is a strided view.
            for k in 0..16 {
                let uk = &u[k * c * o..(k + 1) * c * o];
                sgemm([tiles, o, c], &mut m[k * o..], 16 * o, false, (&v[k * c..], 16 * c, 1), (uk, o, 1), 1.0);
            }
            // Output transform: Y = Aᵀ·M·A, the 2×2 outputs that lie inside the image.
            for (t, mt) in m.chunks_exact(16 * o).enumerate() {
                let (ty, tx) = (t / tw, t % tw);
                let rows = (g.ho - 2 * (ty0 + ty)).min(2);
                let cols = (g.wo - 2 * tx).min(2);
                let first = ((2 * ty) * g.wo + 2 * tx) * o;
                output_transform_tile(mt, &mut dst[first..], scratch, o, [rows, cols], g.wo * o);
            }
        });
    });
    wide_to_nchw(&out, &Geometry { wp: g.wo, ..*g })
}

/// The convolution of `input` under `g` whose tap `(i, j)` is the `[C × O]` matrix
/// `tap(i, j)`: through [`winograd`] where it pays, else as one product per tap on the padded
/// channels-last copy. [`flex_conv2d`] and [`flex_conv2d_x_grad`] differ only in `tap`.
fn convolve<'a>(
    input: (&[f32], [usize; 4], [usize; 4]),
    g: &Geometry,
    tap: impl Fn(usize, usize) -> TapMatrix<'a> + Sync,
) -> FlexTensor {
    if winograd_pays(g) {
        let u = winograd_weights(g.c, g.o, |ci, oi, i, j| {
            let (w, rs, cs) = tap(i, j);
            w[ci * rs + oi * cs]
        });
        return winograd(input, g, &u);
    }
    let padded = channels_last(input, (g.top, g.left, g.wp), g.image_rows());
    wide_to_nchw(&wide_output(&padded, g, tap), g)
}

/// A stride-1, undilated, ungrouped 2-D convolution without bias for `f32` Flex tensors (see
/// the module docs).
///
/// # Shapes
/// `x [B, C, H, W]`, `weight [O, C, kh, kw]`, padding `[(top, bottom), (left, right)]` →
/// `[B, O, H + top + bottom − kh + 1, W + left + right − kw + 1]`.
pub fn flex_conv2d(x: &FlexTensor, weight: &FlexTensor, padding: [(usize, usize); 2]) -> Option<FlexTensor> {
    if !Kernel::Conv.enabled() {
        return None;
    }
    let (xv, (weights, [o, wc, kh, kw], _)) = (view4(x)?, view4(weight)?);
    if wc != xv.1[1] || !weight.is_contiguous() {
        return None;
    }
    let g = Geometry::new(xv.1, [o, kh, kw], padding)?;
    // W_tap as [C × O]: weight[o, c, i, j] at o·C·kh·kw + c·kh·kw + i·kw + j.
    Some(convolve(xv, &g, |i, j| (&weights[i * kw + j..], kh * kw, g.c * kh * kw)))
}

/// The input gradient of [`flex_conv2d`]: the output gradient convolved with the kernel
/// flipped in both directions and its channel axes swapped, padded by `k − 1 − pad` on each
/// side, which gives back the input's `height × width`.
///
/// # Shapes
/// `grad [B, O, Ho, Wo]`, `weight [O, C, kh, kw]`, the forward's padding and input size →
/// `[B, C, height, width]`.
pub fn flex_conv2d_x_grad(
    grad: &FlexTensor,
    weight: &FlexTensor,
    padding: [(usize, usize); 2],
    [height, width]: [usize; 2],
) -> Option<FlexTensor> {
    if !Kernel::Conv.enabled() {
        return None;
    }
    let (gv, (weights, [o, c, kh, kw], _)) = (view4(grad)?, view4(weight)?);
    let [(top, bottom), (left, right)] = padding;
    if gv.1[1] != o || !weight.is_contiguous() || top >= kh || bottom >= kh || left >= kw || right >= kw {
        return None;
    }
    let flipped = [(kh - 1 - top, kh - 1 - bottom), (kw - 1 - left, kw - 1 - right)];
    let g = Geometry::new(gv.1, [c, kh, kw], flipped)?;
    if [g.ho, g.wo] != [height, width] {
        return None;
    }
    // Tap (i, j) as [O × C]: weight[o, c, kh − 1 − i, kw − 1 − j].
    Some(convolve(gv, &g, |i, j| (&weights[(kh - 1 - i) * kw + (kw - 1 - j)..], c * kh * kw, kh * kw)))
}

/// The weight gradient of [`flex_conv2d`]: per tap `Gᵀ·X_tap` over every output position of
/// every image. The positions are split into one contiguous range per core, each summed into
/// its own partial gradient with long inner products; the partials are then added.
///
/// # Shapes
/// `x [B, C, H, W]`, `grad [B, O, Ho, Wo]`, the forward's padding and kernel size →
/// `[O, C, kh, kw]`.
pub fn flex_conv2d_weight_grad(
    x: &FlexTensor,
    grad: &FlexTensor,
    padding: [(usize, usize); 2],
    [kh, kw]: [usize; 2],
) -> Option<FlexTensor> {
    if !Kernel::Conv.enabled() {
        return None;
    }
    let (xv, gv) = (view4(x)?, view4(grad)?);
    let [b, o, ho, wo] = gv.1;
    let g = Geometry::new(xv.1, [o, kh, kw], padding)?;
    if [b, ho, wo] != [g.b, g.ho, g.wo] {
        return None;
    }
    let (c, positions, image_rows, taps) = (g.c, g.positions(), g.image_rows(), kh * kw);
    let padded = channels_last(xv, (g.top, g.left, g.wp), image_rows);
    // The output gradient at the padded width: zero in the extra columns, which therefore add
    // nothing to any sum.
    let wide_grad = channels_last(gv, (0, 0, g.wp), positions);
    let threads = rayon::current_num_threads().max(1);
    let per_task = (b * positions).div_ceil(threads).max(WEIGHT_GRAD_POSITIONS_MIN);
    let tasks: Vec<(usize, usize, usize)> = (0..b)
        .flat_map(|bi| (0..positions).step_by(per_task).map(move |p| (bi, p, (p + per_task).min(positions))))
        .collect();
    let sum = tasks
        .into_par_iter()
        .map(|(bi, first, end)| {
            let mut partial = vec![0f32; taps * o * c];
            let rows = end - first;
            let gt = &wide_grad[(bi * positions + first) * o..];
            let image = &padded[bi * image_rows * c..(bi + 1) * image_rows * c];
            for (t, dst) in partial.chunks_mut(o * c).enumerate() {
                let start = (first + (t / kw) * g.wp + t % kw) * c;
                // Gᵀ as [O × rows]: G[row, o] at row·O + o.
                sgemm([o, c, rows], dst, c, true, (gt, 1, o), (&image[start..], c, 1), 1.0);
            }
            partial
        })
        .reduce_with(|mut a, b| {
            a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
            a
        })?;
    // [tap, O, C] → [O, C, kh, kw].
    let mut out = vec![0f32; o * c * taps];
    out.par_chunks_mut(c * taps).enumerate().for_each(|(oi, dst)| {
        for (t, block) in sum.chunks(o * c).enumerate() {
            for (ci, &v) in block[oi * c..(oi + 1) * c].iter().enumerate() {
                dst[ci * taps + t] = v;
            }
        }
    });
    Some(contiguous_f32(out, [o, c, kh, kw].into()))
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::backend::ops::{ConvOptions, ModuleOps};

    use super::*;
    use crate::model::cpu_kernels::tests::{flex, values};

    /// `|a − b| ≤ tol·max(1, max |b|)` everywhere, same shapes: a sum's rounding scales with
    /// its terms, not with its value, which cancellation can make small.
    fn assert_close(a: FlexTensor, b: FlexTensor, tol: f32, what: &str) {
        assert_eq!(a.layout().shape(), b.layout().shape(), "{what}: shapes");
        let (a, b) = (a.into_data().try_to_vec::<f32>().expect("f32"), b.into_data().try_to_vec::<f32>().expect("f32"));
        let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!((x - y).abs() <= tol * scale, "{what}: element {i}: {x} vs {y} (largest {scale})");
        }
    }

    fn options(pad: [(usize, usize); 2]) -> ConvOptions<2> {
        ConvOptions { stride: [1, 1], padding: pad, dilation: [1, 1], groups: 1 }
    }

    /// `((B, C, H, W), (O, kh, kw), padding)`.
    type Case = ((usize, usize, usize, usize), (usize, usize, usize), [(usize, usize); 2]);

    /// The cases: 3×3 with symmetric and asymmetric padding, 2×1 and 5×5 kernels, batches,
    /// an image larger than one tile of positions; the last three go through Winograd (3×3,
    /// ≥ 32 channels): odd output sizes, asymmetric padding, several tasks per image.
    const CASES: [Case; 8] = [
        ((2, 5, 7, 9), (4, 3, 3), [(1, 1), (1, 1)]),
        ((1, 3, 6, 5), (2, 3, 3), [(0, 2), (2, 0)]),
        ((1, 2, 9, 4), (3, 2, 1), [(1, 0), (0, 0)]),
        ((1, 4, 40, 37), (6, 5, 5), [(2, 2), (2, 2)]),
        ((3, 3, 45, 41), (2, 3, 3), [(1, 1), (1, 1)]),
        ((2, 32, 13, 11), (40, 3, 3), [(1, 1), (1, 1)]),
        ((1, 33, 9, 8), (32, 3, 3), [(0, 2), (2, 0)]),
        ((1, 32, 70, 66), (32, 3, 3), [(1, 1), (1, 1)]),
    ];

    /// The forward pass against Flex's own, on contiguous inputs and on a channels-last
    /// (strided) view such as Flex's convolution returns, and the cases left to Flex.
    #[test]
    fn conv2d_matches_flex() {
        let run = |x: &FlexTensor, w: &FlexTensor, pad: [(usize, usize); 2]| {
            let want = <Flex as ModuleOps<Flex>>::conv2d(x.clone(), w.clone(), None, options(pad));
            (flex_conv2d(x, w, pad).expect("handled"), want)
        };
        for ((b, c, h, w), (o, kh, kw), pad) in CASES {
            let x = flex(values(b * c * h * w, 5), [b, c, h, w]);
            let weight = flex(values(o * c * kh * kw, 6), [o, c, kh, kw]);
            let (got, want) = run(&x, &weight, pad);
            assert_close(got, want.clone(), 1e-5, "conv");
            // A strided input: Flex's own output as the next input.
            let weight2 = flex(values(o * o * 9, 7), [o, o, 3, 3]);
            let (got2, want2) = run(&want, &weight2, [(1, 1), (1, 1)]);
            assert_close(got2, want2, 1e-5, "conv of a strided input");
        }
        let x = flex(values(2 * 3 * 4 * 4, 8), [2, 3, 4, 4]);
        assert!(flex_conv2d(&x, &flex(values(9, 9), [3, 3, 1, 1]), [(0, 0), (0, 0)]).is_none(), "1×1 is Flex's");
        assert!(flex_conv2d(&x, &flex(values(36, 9), [1, 4, 3, 3]), [(1, 1), (1, 1)]).is_none(), "channel mismatch");
        assert!(flex_conv2d(&x, &flex(values(27, 9), [1, 3, 3, 3]), [(3, 0), (1, 1)]).is_none(), "padding ≥ kernel");
    }

    /// Both gradients against Flex's own backward kernels, with a strided output gradient.
    #[test]
    fn conv2d_gradients_match_flex() {
        for ((b, c, h, w), (o, kh, kw), pad) in CASES {
            let x = flex(values(b * c * h * w, 11), [b, c, h, w]);
            let weight = flex(values(o * c * kh * kw, 12), [o, c, kh, kw]);
            let [ho, wo] = [h + pad[0].0 + pad[0].1 + 1 - kh, w + pad[1].0 + pad[1].1 + 1 - kw];
            let contiguous = flex(values(b * o * ho * wo, 13), [b, o, ho, wo]);
            let channels_last = flex(values(b * o * ho * wo, 14), [b, ho, wo, o]).permute(&[0, 3, 1, 2]);
            for grad in [contiguous, channels_last] {
                let want =
                    <Flex as ModuleOps<Flex>>::conv2d_x_backward(x.clone(), weight.clone(), grad.clone(), options(pad));
                let got = flex_conv2d_x_grad(&grad, &weight, pad, [h, w]).expect("handled");
                assert_close(got, want, 1e-5, "input gradient");
                let want = <Flex as ModuleOps<Flex>>::conv2d_weight_backward(
                    x.clone(),
                    weight.clone(),
                    grad.clone(),
                    options(pad),
                );
                let got = flex_conv2d_weight_grad(&x, &grad, pad, [kh, kw]).expect("handled");
                // Sums of up to B·Ho·Wo = 5,535 terms of size ≤ 1.
                assert_close(got, want, 1e-4, "weight gradient");
            }
        }
    }
}
