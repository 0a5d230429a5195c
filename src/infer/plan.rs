//! Which slices a prediction request decodes, in which order. Plain logic, no model.
//!
//! SAM4EM carries context from slice to slice: a slice is decoded with the slice memory and
//! the previous slice's mask as its prompt. The best start is a slice whose mask a person
//! drew or accepted (the seed): there the prompt is right. Each requested slice is therefore
//! assigned to its nearest seed, and each seed streams outwards through the slices assigned
//! to it, forwards and backwards in z. Without any seed, the visible slice is the start, with
//! an empty prompt.

use std::ops::Range;

/// One streaming pass: slices in decoding order. The first `warmup` slices are decoded only to
/// carry memory and prompt (the seed itself when a second pass re-starts from it, or slices
/// between a seed and the requested range); the rest are reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pass {
    /// The seed slice the pass starts from (prompted by its mask), or `None` for an empty
    /// prompt on `order[0]`.
    pub seed: Option<usize>,
    /// Slice indices in decoding order.
    pub order: Vec<usize>,
    /// How many leading slices of `order` are not reported.
    pub warmup: usize,
}

impl Pass {
    /// The slices this pass reports.
    pub fn reported(&self) -> &[usize] {
        &self.order[self.warmup..]
    }
}

/// Plans the passes that predict every slice of `range` once.
///
/// `seeds`: slices with a person's masks (any order, duplicates allowed). A seed farther than
/// `max_warmup_slices` from the slices it would serve is not used for them (decoding the gap
/// would cost more than the seed is worth); they start from an empty prompt instead.
/// `visible`: the slice on screen; the pass that reaches it soonest runs first, and the other
/// passes follow by distance from it.
pub fn plan_passes(range: Range<usize>, seeds: &[usize], visible: usize, max_warmup_slices: usize) -> Vec<Pass> {
    if range.is_empty() {
        return Vec::new();
    }
    let mut anchors: Vec<usize> = seeds.to_vec();
    anchors.sort_unstable();
    anchors.dedup();
    let seeded = !anchors.is_empty();
    if !seeded {
        anchors.push(visible.clamp(range.start, range.end - 1));
    }
    // Each slice goes to its nearest anchor (the lower one on ties): contiguous cells.
    let nearest = |z: usize| -> usize {
        let i = anchors.partition_point(|&a| a < z);
        match (i.checked_sub(1).map(|j| anchors[j]), anchors.get(i).copied()) {
            (Some(lo), Some(hi)) => {
                if z - lo <= hi - z {
                    lo
                } else {
                    hi
                }
            }
            (Some(lo), None) => lo,
            (None, Some(hi)) => hi,
            (None, None) => unreachable!("at least one anchor"),
        }
    };
    let mut cells: Vec<(usize, usize, usize)> = Vec::new(); // (anchor, lo, hi)
    for z in range.clone() {
        let a = nearest(z);
        match cells.last_mut() {
            Some((last, _, hi)) if *last == a => *hi = z,
            _ => cells.push((a, z, z)),
        }
    }
    let mut passes = Vec::new();
    for (a, lo, hi) in cells {
        let seed = seeded.then_some(a);
        if a < lo {
            // Seed below the cell: one forward pass, warming up through the gap.
            if lo - a <= max_warmup_slices {
                passes.push(Pass { seed, order: (a..=hi).collect(), warmup: lo - a });
            } else {
                passes.push(Pass { seed: None, order: (lo..=hi).collect(), warmup: 0 });
            }
        } else if a > hi {
            if a - hi <= max_warmup_slices {
                passes.push(Pass { seed, order: (lo..=a).rev().collect(), warmup: a - hi });
            } else {
                passes.push(Pass { seed: None, order: (lo..=hi).rev().collect(), warmup: 0 });
            }
        } else {
            let forward = Pass { seed, order: (a..=hi).collect(), warmup: 0 };
            let backward = (lo < a).then(|| Pass { seed, order: (lo..=a).rev().collect(), warmup: 1 });
            // The direction towards the visible slice goes first.
            match backward {
                Some(b) if visible < a => {
                    passes.push(b);
                    passes.push(forward);
                }
                Some(b) => {
                    passes.push(forward);
                    passes.push(b);
                }
                None => passes.push(forward),
            }
        }
    }
    // Stable sort by how soon each pass reaches the visible slice (or by its distance).
    let cost = |p: &Pass| -> usize {
        match p.order.iter().position(|&z| z == visible) {
            Some(i) if i >= p.warmup => i,
            _ => {
                let d = p.reported().iter().map(|&z| z.abs_diff(visible)).min().unwrap_or(usize::MAX);
                p.order.len().saturating_add(d)
            }
        }
    };
    passes.sort_by_key(|p| cost(p));
    passes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reported(passes: &[Pass]) -> Vec<usize> {
        let mut all: Vec<usize> = passes.iter().flat_map(|p| p.reported().to_vec()).collect();
        all.sort_unstable();
        all
    }

    #[test]
    fn without_seeds_the_visible_slice_starts_both_directions() {
        let p = plan_passes(0..6, &[], 2, 16);
        assert_eq!(p[0], Pass { seed: None, order: vec![2, 3, 4, 5], warmup: 0 });
        assert_eq!(p[1], Pass { seed: None, order: vec![2, 1, 0], warmup: 1 });
        assert_eq!(reported(&p), (0..6).collect::<Vec<_>>());
    }

    #[test]
    fn each_slice_streams_from_its_nearest_seed() {
        let p = plan_passes(0..10, &[7, 2, 2], 8, 16);
        assert_eq!(reported(&p), (0..10).collect::<Vec<_>>(), "every slice exactly once");
        // Slices 0..=4 belong to seed 2 (4 is a tie → the lower seed), 5..=9 to seed 7.
        assert!(p.contains(&Pass { seed: Some(2), order: vec![2, 3, 4], warmup: 0 }));
        assert!(p.contains(&Pass { seed: Some(2), order: vec![2, 1, 0], warmup: 1 }));
        assert!(p.contains(&Pass { seed: Some(7), order: vec![7, 6, 5], warmup: 1 }));
        // The visible slice 8 is reached first, by seed 7's forward pass.
        assert_eq!(p[0], Pass { seed: Some(7), order: vec![7, 8, 9], warmup: 0 });
    }

    #[test]
    fn a_seed_outside_the_range_warms_up_through_the_gap_unless_too_far() {
        let p = plan_passes(5..6, &[2], 5, 16);
        assert_eq!(p, vec![Pass { seed: Some(2), order: vec![2, 3, 4, 5], warmup: 3 }]);
        let p = plan_passes(5..6, &[9], 5, 16);
        assert_eq!(p, vec![Pass { seed: Some(9), order: vec![9, 8, 7, 6, 5], warmup: 4 }]);
        let p = plan_passes(40..42, &[2], 41, 16);
        assert_eq!(p, vec![Pass { seed: None, order: vec![40, 41], warmup: 0 }]);
        assert!(plan_passes(3..3, &[1], 3, 16).is_empty());
    }
}
