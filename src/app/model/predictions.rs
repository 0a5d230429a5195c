//! The model's output for the open stack: probabilities per head and slice (kept up to a byte
//! budget, the slices farthest from the one on screen forgotten first), the request running
//! on the `inference` worker with its progress, and which prediction the prediction layer
//! shows. Results of a superseded request or an older adapter version never get here: the
//! caller checks generation and version first.

use std::collections::HashMap;
use std::sync::Arc;

use super::heads::Heads;
use crate::app::document::{Document, LayerProbabilities};
use crate::infer::{Progress, Seed};
use crate::model::HeadIndex;
use crate::state::bitplane::{BitPlane, PixelBox};
use crate::state::{ClassId, SliceIndex};

/// Most bytes of model predictions kept in memory; beyond it the slices farthest from the
/// one on screen are forgotten (they can be predicted again).
const PREDICTION_BUDGET_BYTES: usize = 2 << 30;

/// A prediction request on the worker.
struct Running {
    generation: u64,
    done: usize,
    total: usize,
    /// Slices done, with the decoded fraction of a slice in progress.
    done_slices: f64,
    /// Tiles decoded and in all of a tiled slice in progress.
    slice_tiles: Option<(usize, usize)>,
    slices_per_s: f64,
    eta_s: Option<f64>,
}

/// The model's predictions of the open stack.
#[derive(Default)]
pub(super) struct Predictions {
    /// Probabilities 0–255, `width × height`, per head and slice.
    slices: HashMap<(HeadIndex, SliceIndex), Arc<Vec<u8>>>,
    /// The adapter version of each stored slice.
    versions: HashMap<(HeadIndex, SliceIndex), u64>,
    /// Bumped on every change (what the prediction layer shows is keyed by it).
    stamp: u64,
    running: Option<Running>,
    /// What the prediction layer shows: (slice, class, stamp).
    shown: Option<(SliceIndex, ClassId, u64)>,
}

impl Predictions {
    /// Stores one head's prediction of slice `z`, evicting far slices over the budget (never
    /// `z_now`'s, the slice on screen).
    pub(super) fn insert(
        &mut self,
        head: HeadIndex,
        z: SliceIndex,
        version: u64,
        probabilities: Vec<u8>,
        z_now: SliceIndex,
    ) {
        self.slices.insert((head, z), Arc::new(probabilities));
        self.versions.insert((head, z), version);
        self.stamp += 1;
        let mut bytes: usize = self.slices.values().map(|p| p.len()).sum();
        if bytes <= PREDICTION_BUDGET_BYTES {
            return;
        }
        let mut keys: Vec<(HeadIndex, SliceIndex)> = self.slices.keys().copied().collect();
        keys.sort_by_key(|(_, kz)| std::cmp::Reverse(kz.0.abs_diff(z_now.0)));
        for key in keys {
            if bytes <= PREDICTION_BUDGET_BYTES || key.1 == z_now {
                break;
            }
            if let Some(p) = self.slices.remove(&key) {
                bytes -= p.len();
                self.versions.remove(&key);
            }
        }
    }

    /// Copies part of a slice (the tiles decoded so far of a slice in progress, or the rows of
    /// a band of tiles) into head `head`'s prediction of slice `z`, keeping the rest (an
    /// earlier prediction, shown until its part comes); without one, the rest is 0 (nothing
    /// shown there).
    pub(super) fn insert_part(&mut self, head: HeadIndex, z: SliceIndex, part: PartialSlice<'_>, z_now: SliceIndex) {
        let PartialSlice { version, probabilities, width, height, rows, tiles } = part;
        if rows.end > height || probabilities.len() != rows.len() * width {
            return; // not this stack's
        }
        let whole = [PixelBox { x0: 0, y0: rows.start, x1: width, y1: rows.end }];
        let boxes = tiles.unwrap_or(&whole);
        let fresh = self.slices.get(&(head, z)).is_none_or(|m| m.len() != width * height);
        if fresh {
            self.slices.insert((head, z), Arc::new(vec![0; width * height]));
        }
        let map = Arc::make_mut(self.slices.get_mut(&(head, z)).expect("inserted above"));
        for t in boxes.iter().filter(|t| t.x1 <= width) {
            for y in t.y0.max(rows.start)..t.y1.min(rows.end) {
                let (to, from) = (y * width, (y - rows.start) * width);
                map[to + t.x0..to + t.x1].copy_from_slice(&probabilities[from + t.x0..from + t.x1]);
            }
        }
        if fresh {
            // Stored like a whole slice (version, budget), now that it holds something.
            let map = self.slices.remove(&(head, z)).map(Arc::unwrap_or_clone).unwrap_or_default();
            self.insert(head, z, version, map, z_now);
        } else {
            self.stamp += 1;
        }
    }

    /// Head `head`'s prediction of slice `z`.
    pub(super) fn get(&self, head: HeadIndex, z: SliceIndex) -> Option<Arc<Vec<u8>>> {
        self.slices.get(&(head, z)).cloned()
    }

    /// Whether head `head` has a prediction on any slice.
    pub(super) fn has_head(&self, head: HeadIndex) -> bool {
        self.slices.keys().any(|(h, _)| *h == head)
    }

    /// Thresholded predictions of head `head` on `slices` (those that have one).
    pub(super) fn planes(
        &self,
        head: HeadIndex,
        slices: &[SliceIndex],
        threshold: f32,
        width: usize,
    ) -> Vec<(SliceIndex, BitPlane)> {
        slices
            .iter()
            .filter_map(|&z| {
                let p = self.get(head, z)?;
                let height = p.len() / width.max(1);
                Some((z, crate::state::view::probability_plane(width, height, &p, threshold)))
            })
            .collect()
    }

    /// The lowest and highest slice with a prediction, if any.
    pub(super) fn span(&self) -> Option<(SliceIndex, SliceIndex)> {
        let lo = self.slices.keys().map(|(_, z)| *z).min()?;
        let hi = self.slices.keys().map(|(_, z)| *z).max()?;
        Some((lo, hi))
    }

    /// "N slice(s) predicted…" for the panel (`None` when nothing is), `heads` heads per slice.
    pub(super) fn summary(&self, heads: usize, active_version: u64) -> Option<String> {
        let n = self.slices.len() / heads.max(1);
        if n == 0 {
            return None;
        }
        let label = if active_version == 0 { "base".to_string() } else { format!("v{active_version}") };
        let stale = self.versions.values().filter(|v| **v != active_version).count() / heads.max(1);
        Some(if stale > 0 {
            format!("{n} slice(s) predicted, {stale} by an older version; model {label}")
        } else {
            format!("{n} slice(s) predicted; model {label}")
        })
    }

    /// Forgets every prediction (a new stack, or a model built again) and any running request;
    /// the prediction layer is cleared at the next [`Predictions::next_shown`].
    pub(super) fn clear(&mut self) {
        *self = Predictions { stamp: self.stamp + 1, shown: self.shown, ..Default::default() };
    }

    /// A new stack: nothing predicted, nothing running, nothing shown (its prediction layer is
    /// its own).
    pub(super) fn new_stack(&mut self) {
        *self = Predictions { stamp: self.stamp + 1, ..Default::default() };
    }

    /// Request `generation` started, reporting `total` slices.
    pub(super) fn started(&mut self, generation: u64, total: usize) {
        self.running = Some(Running {
            generation,
            done: 0,
            total,
            done_slices: 0.0,
            slice_tiles: None,
            slices_per_s: 0.0,
            eta_s: None,
        });
    }

    /// Whether a request is running.
    pub(super) fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// The running request no longer matters (cancelled, failed, superseded).
    pub(super) fn stop_running(&mut self) {
        self.running = None;
    }

    /// Request `generation` reported a slice.
    pub(super) fn progressed(&mut self, generation: u64, progress: &Progress) {
        if let Some(r) = &mut self.running
            && r.generation == generation
        {
            r.done = progress.done;
            r.total = progress.total;
            r.done_slices = progress.done_slices();
            r.slice_tiles = progress.slice_tiles;
            r.slices_per_s = progress.slices_per_s();
            r.eta_s = progress.eta_s();
        }
    }

    /// Request `generation` ended.
    pub(super) fn finished(&mut self, generation: u64) {
        if self.running.as_ref().is_some_and(|r| r.generation == generation) {
            self.running = None;
        }
    }

    /// The progress line of the running request: (fraction, text).
    pub(super) fn progress_line(&self) -> Option<(f32, String)> {
        self.running.as_ref().map(|r| {
            let eta = r.eta_s.map_or(String::new(), |s| format!(" · {s:.0} s left"));
            let tiles = r.slice_tiles.map_or(String::new(), |(d, n)| format!(" (next: {d}/{n} tiles)"));
            (
                (r.done_slices / r.total.max(1) as f64) as f32,
                format!("{}/{} slices{tiles} · {:.2} slices/s{eta}", r.done, r.total, r.slices_per_s),
            )
        })
    }

    /// What the prediction layer should show for `class` (head `head`) on slice `z`:
    /// `Some(Some(p))` a new prediction, `Some(None)` nothing any more (the shown one is gone),
    /// `None` no change.
    #[allow(clippy::option_option)]
    pub(super) fn next_shown(
        &mut self,
        class: ClassId,
        head: Option<HeadIndex>,
        z: SliceIndex,
    ) -> Option<Option<Arc<Vec<u8>>>> {
        let key = (z, class, self.stamp);
        if self.shown == Some(key) {
            return None;
        }
        match head.and_then(|h| self.get(h, z)) {
            Some(p) => {
                self.shown = Some(key);
                Some(Some(p))
            }
            None if self.shown.is_some() => {
                self.shown = None;
                Some(None)
            }
            None => None,
        }
    }

    /// Puts the model's prediction of `active` (head `head`) on the visible slice into the
    /// document's prediction layer, or takes a prediction that is gone out of it.
    pub(super) fn show(&mut self, doc: &mut Document, active: ClassId, head: Option<HeadIndex>) {
        let z = doc.view.cursor.z;
        match self.next_shown(active, head, z) {
            Some(Some(p)) => {
                doc.prediction = None; // the model's layer replaces a loaded probability map
                doc.probabilities = Some((z, LayerProbabilities::Bytes(p)));
                doc.gpu.prediction = None;
            }
            Some(None) => {
                doc.probabilities = None;
                doc.clear_prediction = true;
            }
            None => {}
        }
    }
}

/// Part of a slice (see [`Predictions::insert_part`]).
pub(super) struct PartialSlice<'a> {
    /// The adapter version predicting it.
    pub(super) version: u64,
    /// One head's probabilities 0–255 of `rows` (`width` each), meaningful inside `tiles` only
    /// when there are tiles.
    pub(super) probabilities: &'a [u8],
    /// Slice width.
    pub(super) width: usize,
    /// Slice height.
    pub(super) height: usize,
    /// The rows `probabilities` covers.
    pub(super) rows: std::ops::Range<usize>,
    /// The tiles decoded so far of a slice in progress; `None`: all of `rows`.
    pub(super) tiles: Option<&'a [PixelBox]>,
}

/// The slices with a person's masks, per head: where streaming starts.
pub(super) fn seeds(doc: &Document, heads: &Heads) -> Vec<Seed> {
    let (w, h) = (doc.volume.width(), doc.volume.height());
    super::training::reviewed_slices(doc, heads)
        .into_iter()
        .map(|z| Seed {
            z,
            masks: heads
                .iter()
                .map(|(_, class)| Some(doc.masks.mask(class, z).map_or_else(|| BitPlane::new(w, h), |m| m.to_plane())))
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predictions_are_kept_per_head_and_slice_and_summarised() {
        let mut p = Predictions::default();
        p.insert(HeadIndex(1), SliceIndex(4), 2, vec![0, 255, 128, 10], SliceIndex(4));
        p.insert(HeadIndex(0), SliceIndex(4), 2, vec![1; 4], SliceIndex(4));
        p.insert(HeadIndex(0), SliceIndex(6), 1, vec![1; 4], SliceIndex(4));
        assert!(p.has_head(HeadIndex(1)) && !p.has_head(HeadIndex(2)));
        assert_eq!(p.get(HeadIndex(1), SliceIndex(4)).as_deref(), Some(&vec![0, 255, 128, 10]));
        assert_eq!(p.get(HeadIndex(1), SliceIndex(6)), None);
        assert_eq!(p.span(), Some((SliceIndex(4), SliceIndex(6))));
        // Threshold 0.5 → 128 and up.
        let planes = p.planes(HeadIndex(1), &[SliceIndex(4), SliceIndex(6)], 0.5, 2);
        assert_eq!(planes.len(), 1);
        let (z, plane) = &planes[0];
        assert_eq!(*z, SliceIndex(4));
        assert_eq!([plane.get(0, 0), plane.get(1, 0), plane.get(0, 1), plane.get(1, 1)], [false, true, true, false]);
        assert_eq!(p.summary(2, 2).unwrap(), "1 slice(s) predicted; model v2");
        p.insert(HeadIndex(1), SliceIndex(6), 1, vec![1; 4], SliceIndex(4));
        assert_eq!(p.summary(2, 2).unwrap(), "2 slice(s) predicted, 1 by an older version; model v2");
    }

    #[test]
    fn the_shown_prediction_changes_only_when_it_must() {
        let mut p = Predictions::default();
        let (class, head, z) = (ClassId(2), Some(HeadIndex(1)), SliceIndex(3));
        assert_eq!(p.next_shown(class, head, z), None, "nothing to show, nothing shown");
        p.insert(HeadIndex(1), z, 0, vec![7; 4], z);
        assert_eq!(p.next_shown(class, head, z), Some(Some(Arc::new(vec![7; 4]))));
        assert_eq!(p.next_shown(class, head, z), None, "already shown");
        p.clear();
        assert_eq!(p.next_shown(class, head, z), Some(None), "the shown one is gone");
        assert_eq!(p.next_shown(class, head, z), None);
        p.insert(HeadIndex(1), z, 0, vec![7; 4], z);
        assert!(p.next_shown(class, head, z).is_some());
        p.new_stack();
        assert_eq!(p.next_shown(class, head, z), None, "a new stack's layer is left alone");
    }

    #[test]
    fn parts_of_a_slice_replace_only_their_pixels() {
        let mut p = Predictions::default();
        let (head, z) = (HeadIndex(0), SliceIndex(2));
        let tile = PixelBox { x0: 1, y0: 0, x1: 3, y1: 2 };
        fn tiles<'a>(probabilities: &'a [u8], tiles: &'a [PixelBox]) -> PartialSlice<'a> {
            PartialSlice { version: 1, probabilities, width: 4, height: 3, rows: 0..3, tiles: Some(tiles) }
        }
        // Nothing yet: stored whole (0 outside the tile shows nothing).
        p.insert_part(head, z, tiles(&[0, 9, 9, 0, 0, 9, 9, 0, 0, 0, 0, 0], &[tile]), z);
        assert_eq!(p.get(head, z).as_deref(), Some(&vec![0, 9, 9, 0, 0, 9, 9, 0, 0, 0, 0, 0]));
        // An earlier prediction stays outside the tiles decoded so far; the shown layer updates.
        p.insert(head, z, 0, vec![5; 12], z);
        assert!(p.next_shown(ClassId(1), Some(head), z).is_some());
        p.insert_part(head, z, tiles(&[0, 7, 7, 0, 0, 7, 7, 0, 0, 0, 0, 0], &[tile]), z);
        assert_eq!(p.get(head, z).as_deref(), Some(&vec![5, 7, 7, 5, 5, 7, 7, 5, 5, 5, 5, 5]));
        assert!(p.next_shown(ClassId(1), Some(head), z).is_some(), "the layer shows the new tiles");
        // A tile outside the slice is ignored, not a panic.
        p.insert_part(head, z, tiles(&[1; 12], &[PixelBox { x0: 2, y0: 2, x1: 9, y1: 9 }]), z);
        assert_eq!(p.get(head, z).as_deref(), Some(&vec![5, 7, 7, 5, 5, 7, 7, 5, 5, 5, 5, 5]));
        // The rows of a band of tiles: rows 1 and 2 only.
        let band = PartialSlice { version: 1, probabilities: &[3; 8], width: 4, height: 3, rows: 1..3, tiles: None };
        p.insert_part(head, z, band, z);
        assert_eq!(p.get(head, z).as_deref(), Some(&vec![5, 7, 7, 5, 3, 3, 3, 3, 3, 3, 3, 3]));
        // Rows that do not fit the stack are not taken.
        let wrong = PartialSlice { version: 1, probabilities: &[1; 8], width: 4, height: 3, rows: 2..4, tiles: None };
        p.insert_part(head, z, wrong, z);
        assert_eq!(p.get(head, z).as_deref(), Some(&vec![5, 7, 7, 5, 3, 3, 3, 3, 3, 3, 3, 3]));
    }

    #[test]
    fn progress_is_tracked_for_the_running_request_only() {
        let mut p = Predictions::default();
        p.started(3, 10);
        p.progressed(2, &Progress { done: 9, total: 10, elapsed_s: 1.0, slice_tiles: None, decoded: (9, 10) });
        assert!(p.progress_line().unwrap().1.starts_with("0/10 slices"));
        p.progressed(3, &Progress { done: 5, total: 10, elapsed_s: 2.0, slice_tiles: None, decoded: (5, 10) });
        let (fraction, line) = p.progress_line().unwrap();
        assert_eq!(fraction, 0.5);
        assert!(line.starts_with("5/10 slices · 2.50 slices/s · 2 s left"), "{line}");
        // Half of slice 6's tiles: counted in the fraction and the rate.
        p.progressed(
            3,
            &Progress {
                done: 5,
                total: 10,
                elapsed_s: 2.2,
                slice_tiles: Some((60, 120)),
                decoded: (5 * 120 + 60, 10 * 120),
            },
        );
        let (fraction, line) = p.progress_line().unwrap();
        assert_eq!(fraction, 0.55);
        assert!(line.starts_with("5/10 slices (next: 60/120 tiles) · 2.50 slices/s · 2 s left"), "{line}");
        p.finished(2);
        assert!(p.is_running());
        p.finished(3);
        assert!(!p.is_running());
    }
}
