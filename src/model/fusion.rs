//! SAM4EM's `FPNFusionResidual` (the paper's "Feature Enhancer Block"): fuses the three neck
//! levels (plus their sine position encodings) into one map at the finest level.

use burn::tensor::Tensor;
use burn::tensor::activation::relu;

use super::nn::{BatchNorm2d, BilinearResize, Conv2d, Init, RunningStats, Visitor, key};

/// Conv3×3 → BatchNorm, the repeated unit of the head.
#[derive(Clone, Debug)]
pub struct ConvBn {
    /// Convolution.
    pub conv: Conv2d,
    /// Its BatchNorm.
    pub bn: BatchNorm2d,
}

impl ConvBn {
    fn new(c_in: usize, c_out: usize, kernel: usize, init: &Init) -> Self {
        ConvBn {
            conv: Conv2d::kaiming_normal_fan_out(c_in, c_out, kernel, kernel / 2, init),
            bn: BatchNorm2d::new(c_out, init),
        }
    }

    /// With `stats` (training) the BatchNorm uses batch statistics and its updated running
    /// statistics are pushed there. Without, the BatchNorm (a per-channel affine map then) is
    /// folded into the convolution's weights and bias: one pass over the output instead of
    /// the norm's own five.
    fn forward(&self, x: Tensor<4>, stats: Option<&mut Vec<RunningStats>>) -> Tensor<4> {
        match stats {
            Some(stats) => {
                let (y, s) = self.bn.forward_train(self.conv.forward(x));
                stats.push(s);
                y
            }
            None => {
                let (scale, shift) = self.bn.eval_scale_shift();
                let c = scale.dims()[0];
                let folded = Conv2d {
                    weight: self.conv.weight.clone() * scale.clone().reshape([c, 1, 1, 1]),
                    bias: Some(match &self.conv.bias {
                        Some(b) => b.clone() * scale + shift,
                        None => shift,
                    }),
                    ..self.conv.clone()
                };
                folded.forward(x)
            }
        }
    }

    /// Lists the conv at `prefix.{i}` and the norm at `prefix.{i+1}` (Sequential indices).
    fn visit(&mut self, prefix: &str, i: usize, v: &mut dyn Visitor) {
        self.conv.visit(&key(prefix, &i.to_string()), v);
        self.bn.visit(&key(prefix, &(i + 1).to_string()), v);
    }
}

/// The fusion head. Its `downsampling_128/64` branches exist in the reference's checkpoints
/// but are never called; they are kept so that its checkpoints load and parameter counts
/// match, and they never run.
#[derive(Clone, Debug)]
pub struct FusionHead {
    /// `smooth_32` (Conv3×3 → BN → ReLU): refines the upsampled coarsest level.
    pub smooth_32: ConvBn,
    /// `smooth_64`: refines the upsampled middle level.
    pub smooth_64: ConvBn,
    /// `fusion.{0,1}`, `{3,4}`, `{6,7}`: 1×1 (3d → d) then two 3×3.
    pub fusion: [ConvBn; 3],
    /// `out_proj.0`: final 1×1.
    pub out_proj: Conv2d,
    /// Unused `downsampling_128.{0,1,3,4}`.
    pub downsampling_128: [ConvBn; 2],
    /// Unused `downsampling_64.{0,1,3,4}`.
    pub downsampling_64: [ConvBn; 2],
    /// Bilinear g/4 → g.
    pub up_from_quarter: BilinearResize,
    /// Bilinear g/2 → g.
    pub up_from_half: BilinearResize,
}

impl FusionHead {
    /// Initialised as the reference does (kaiming-normal fan-out convolutions, zero biases).
    pub fn new(d: usize, grid: usize, init: &Init) -> Self {
        FusionHead {
            up_from_quarter: BilinearResize::new(grid / 4, grid / 4, grid, grid, &init.device),
            up_from_half: BilinearResize::new(grid / 2, grid / 2, grid, grid, &init.device),
            smooth_32: ConvBn::new(d, d, 3, init),
            smooth_64: ConvBn::new(d, d, 3, init),
            fusion: [ConvBn::new(3 * d, d, 1, init), ConvBn::new(d, d, 3, init), ConvBn::new(d, d, 3, init)],
            out_proj: Conv2d::kaiming_normal_fan_out(d, d, 1, 0, init),
            downsampling_128: [ConvBn::new(d, d, 3, init), ConvBn::new(d, d, 3, init)],
            downsampling_64: [ConvBn::new(d, d, 3, init), ConvBn::new(d, d, 3, init)],
        }
    }

    /// Inference: BatchNorm with the running statistics.
    ///
    /// # Shapes
    /// `p3 [B, d, g, g]`, `p4 [B, d, g/2, g/2]`, `p5 [B, d, g/4, g/4]` → `[B, d, g, g]`.
    pub fn forward(&self, p3: Tensor<4>, p4: Tensor<4>, p5: Tensor<4>) -> Tensor<4> {
        self.run(p3, p4, p5, None)
    }

    /// Training: BatchNorm with the batch statistics; the running statistics are updated.
    pub fn forward_train(&mut self, p3: Tensor<4>, p4: Tensor<4>, p5: Tensor<4>) -> Tensor<4> {
        let mut stats = Vec::with_capacity(5);
        let y = self.run(p3, p4, p5, Some(&mut stats));
        let mut stats = stats.into_iter();
        for unit in [&mut self.smooth_32, &mut self.smooth_64].into_iter().chain(self.fusion.iter_mut()) {
            unit.bn.set_running(stats.next().expect("one update per BatchNorm"));
        }
        y
    }

    fn run(&self, p3: Tensor<4>, p4: Tensor<4>, p5: Tensor<4>, mut stats: Option<&mut Vec<RunningStats>>) -> Tensor<4> {
        let u32_ = self.up_from_quarter.forward(p5);
        // smooth_* end in a ReLU of their own, inside the residual.
        let u32_ = relu(u32_.clone() + relu(self.smooth_32.forward(u32_, stats.as_deref_mut())));
        let u64_ = self.up_from_half.forward(p4);
        let u64_ = relu(u64_.clone() + relu(self.smooth_64.forward(u64_, stats.as_deref_mut())));
        let c = Tensor::cat(vec![p3.clone(), u64_, u32_], 1);
        let y = relu(self.fusion[0].forward(c, stats.as_deref_mut()));
        let y = relu(self.fusion[1].forward(y, stats.as_deref_mut()));
        let y = self.fusion[2].forward(y, stats);
        let y = relu(y + p3);
        self.out_proj.forward(y)
    }

    /// Lists the head's tensors under `prefix` (`fpn`).
    pub fn visit(&mut self, prefix: &str, v: &mut dyn Visitor) {
        self.smooth_32.visit(&key(prefix, "smooth_32"), 0, v);
        self.smooth_64.visit(&key(prefix, "smooth_64"), 0, v);
        for (i, f) in self.fusion.iter_mut().enumerate() {
            f.visit(&key(prefix, "fusion"), 3 * i, v);
        }
        self.out_proj.visit(&key(prefix, "out_proj.0"), v);
        for (i, f) in self.downsampling_128.iter_mut().enumerate() {
            f.visit(&key(prefix, "downsampling_128"), 3 * i, v);
        }
        for (i, f) in self.downsampling_64.iter_mut().enumerate() {
            f.visit(&key(prefix, "downsampling_64"), 3 * i, v);
        }
    }
}
