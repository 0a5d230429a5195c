//! Segmentation metrics on binary masks: the reference's per-slice foreground IoU/Dice (a
//! slice scores 0 when the prediction or the ground truth is empty, even when both are) and
//! the standard volume-level IoU/Dice. Plain host code.

use serde::Serialize;

/// Overlap counts of one binary slice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Overlap {
    /// |P ∩ G|.
    pub intersection: u64,
    /// |P|.
    pub predicted: u64,
    /// |G|.
    pub truth: u64,
}

impl Overlap {
    /// Counts over two equally long masks (non-zero = foreground).
    pub fn of(pred: &[u8], truth: &[u8]) -> Self {
        assert_eq!(pred.len(), truth.len(), "prediction and ground truth differ in size");
        let mut o = Overlap::default();
        for (&p, &t) in pred.iter().zip(truth) {
            let (p, t) = (p != 0, t != 0);
            o.predicted += p as u64;
            o.truth += t as u64;
            o.intersection += (p && t) as u64;
        }
        o
    }

    /// |P ∪ G|.
    pub fn union(&self) -> u64 {
        self.predicted + self.truth - self.intersection
    }

    /// The reference's slice IoU (medpy `jc`, 0 when either mask is empty).
    pub fn reference_iou(&self) -> f64 {
        if self.predicted == 0 || self.truth == 0 { 0.0 } else { self.intersection as f64 / self.union() as f64 }
    }

    /// The reference's slice Dice (medpy `dc`, 0 when either mask is empty).
    pub fn reference_dice(&self) -> f64 {
        if self.predicted == 0 || self.truth == 0 {
            0.0
        } else {
            2.0 * self.intersection as f64 / (self.predicted + self.truth) as f64
        }
    }
}

/// Metrics over a stack of slices.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StackMetrics {
    /// The reference's IoU per slice.
    pub per_slice_iou: Vec<f64>,
    /// The reference's Dice per slice.
    pub per_slice_dice: Vec<f64>,
    /// Mean of `per_slice_iou`: the paper's "mIoU".
    pub mean_iou: f64,
    /// Mean of `per_slice_dice`.
    pub mean_dice: f64,
    /// IoU over the whole volume (1 when both are empty).
    pub volume_iou: f64,
    /// Dice over the whole volume (1 when both are empty).
    pub volume_dice: f64,
}

impl StackMetrics {
    /// Computes every metric from per-slice overlaps.
    pub fn from_overlaps(slices: &[Overlap]) -> Self {
        let n = slices.len().max(1) as f64;
        let per_slice_iou: Vec<f64> = slices.iter().map(Overlap::reference_iou).collect();
        let per_slice_dice: Vec<f64> = slices.iter().map(Overlap::reference_dice).collect();
        let total = slices.iter().fold(Overlap::default(), |a, o| Overlap {
            intersection: a.intersection + o.intersection,
            predicted: a.predicted + o.predicted,
            truth: a.truth + o.truth,
        });
        let (volume_iou, volume_dice) = if total.union() == 0 {
            (1.0, 1.0)
        } else {
            (
                total.intersection as f64 / total.union() as f64,
                2.0 * total.intersection as f64 / (total.predicted + total.truth) as f64,
            )
        };
        StackMetrics {
            mean_iou: per_slice_iou.iter().sum::<f64>() / n,
            mean_dice: per_slice_dice.iter().sum::<f64>() / n,
            per_slice_iou,
            per_slice_dice,
            volume_iou,
            volume_dice,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_slices_score_zero_like_the_reference_but_not_in_the_volume() {
        let o = Overlap::of(&[0, 0], &[0, 0]);
        assert_eq!((o.reference_iou(), o.reference_dice()), (0.0, 0.0));
        let m = StackMetrics::from_overlaps(&[o]);
        assert_eq!((m.volume_iou, m.volume_dice), (1.0, 1.0));
        let o = Overlap::of(&[1, 1, 0, 0], &[0, 1, 1, 0]);
        assert!((o.reference_iou() - 1.0 / 3.0).abs() < 1e-12);
        assert!((o.reference_dice() - 0.5).abs() < 1e-12);
    }
}
