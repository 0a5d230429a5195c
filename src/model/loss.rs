//! The reference's training loss: per stage `(1 − w)·BCE + w·Dice` (Dice over the whole batch
//! at once, smoothed), stages weighted `mask1_parm` and `1 − mask1_parm`.

use burn::tensor::Tensor;
use burn::tensor::activation::{log_sigmoid, sigmoid};

use super::config::LossConfig;

/// The loss and its parts (each a scalar tensor `[1]`).
#[derive(Clone, Debug)]
pub struct LossParts {
    /// Weighted total.
    pub total: Tensor<1>,
    /// Stage-1 mean BCE.
    pub l1_bce: Tensor<1>,
    /// Stage-1 soft Dice loss.
    pub l1_dice: Tensor<1>,
    /// Stage-2 mean BCE.
    pub l2_bce: Tensor<1>,
    /// Stage-2 soft Dice loss.
    pub l2_dice: Tensor<1>,
}

/// Mean binary cross-entropy with logits (numerically stable form).
pub fn bce_with_logits<const D: usize>(logits: Tensor<D>, target: Tensor<D>) -> Tensor<1> {
    // −[y·log σ(x) + (1 − y)·log σ(−x)]
    let pos = log_sigmoid(logits.clone());
    let neg = log_sigmoid(logits.neg());
    let per = (target.clone() * pos + (target.neg() + 1.0) * neg).neg();
    per.mean()
}

/// `1 − (2·Σσ(x)y + s)/(Σσ(x) + Σy + s)` over all elements.
pub fn dice_loss<const D: usize>(logits: Tensor<D>, target: Tensor<D>, smooth: f64) -> Tensor<1> {
    let p = sigmoid(logits);
    let inter = (p.clone() * target.clone()).sum();
    let denom = p.sum() + target.sum() + smooth;
    ((inter * 2.0 + smooth) / denom).neg() + 1.0
}

/// The reference loss for both stages. `logits*` are `[B, 1, S, S]`, `target` `[B, 1, S, S]`
/// in {0, 1}.
pub fn sam4em_loss(logits1: Tensor<4>, logits2: Tensor<4>, target: Tensor<4>, config: &LossConfig) -> LossParts {
    let l1_bce = bce_with_logits(logits1.clone(), target.clone());
    let l1_dice = dice_loss(logits1, target.clone(), config.dice_smooth);
    let l2_bce = bce_with_logits(logits2.clone(), target.clone());
    let l2_dice = dice_loss(logits2, target, config.dice_smooth);
    let w = config.dice_parm;
    let stage1 = l1_bce.clone() * (1.0 - w) + l1_dice.clone() * w;
    let stage2 = l2_bce.clone() * (1.0 - w) + l2_dice.clone() * w;
    let total = stage1 * config.mask1_parm + stage2 * (1.0 - config.mask1_parm);
    LossParts { total, l1_bce, l1_dice, l2_bce, l2_dice }
}

/// [`sam4em_loss`] restricted to the pixels a person vouched for: `weight` `[B, 1, S, S]` is 1
/// where the label is trusted and 0 elsewhere. BCE is the mean over vouched pixels, Dice sums
/// over vouched pixels only; with every weight 1 this is exactly the reference loss. Pixels
/// nobody looked at (e.g. an unedited class on a corrected slice) then neither reward nor
/// punish the model.
pub fn masked_sam4em_loss(
    logits1: Tensor<4>,
    logits2: Tensor<4>,
    target: Tensor<4>,
    weight: Tensor<4>,
    config: &LossConfig,
) -> LossParts {
    let count = weight.clone().sum().clamp_min(1.0);
    let bce = |logits: Tensor<4>| {
        let pos = log_sigmoid(logits.clone());
        let neg = log_sigmoid(logits.neg());
        let per = (target.clone() * pos + (target.clone().neg() + 1.0) * neg).neg();
        (per * weight.clone()).sum() / count.clone()
    };
    let dice = |logits: Tensor<4>| {
        let p = sigmoid(logits) * weight.clone();
        let y = target.clone() * weight.clone();
        let inter = (p.clone() * y.clone()).sum();
        let denom = p.sum() + y.sum() + config.dice_smooth;
        ((inter * 2.0 + config.dice_smooth) / denom).neg() + 1.0
    };
    let (l1_bce, l1_dice) = (bce(logits1.clone()), dice(logits1));
    let (l2_bce, l2_dice) = (bce(logits2.clone()), dice(logits2));
    let w = config.dice_parm;
    let stage1 = l1_bce.clone() * (1.0 - w) + l1_dice.clone() * w;
    let stage2 = l2_bce.clone() * (1.0 - w) + l2_dice.clone() * w;
    let total = stage1 * config.mask1_parm + stage2 * (1.0 - config.mask1_parm);
    LossParts { total, l1_bce, l1_dice, l2_bce, l2_dice }
}
