//! Edit transactions and undo/redo over a [`MaskVolume`].
//!
//! Every change a person makes goes through an [`Editor`]: a drag opens a transaction
//! ([`Editor::begin`]), each pointer move applies a tool to a working bit plane of the slice
//! ([`Editor::paint`]) and writes back only the tiles that changed, and the release commits
//! ([`Editor::commit`]) — one drag, one undo step — while Esc restores the tiles recorded at the
//! start ([`Editor::abort`]). A committed step keeps the before and after content of the tiles it
//! changed (64×64-pixel tile diffs), and the undo history is capped by the bytes those diffs take,
//! not by a number of steps. Each commit, undo and redo hands back the [`SliceWrite`]s it made so
//! the caller can journal them (see `io::session`).
//!
//! Pure Rust: depends only on the other `state` modules.

use std::collections::{BTreeMap, VecDeque};

use super::bitplane::{BitPlane, PixelBox};
use super::classes::ClassId;
use super::mask::{
    Layer, MaskError, MaskVolume, Provenance, ReviewState, SliceMeta, SliceWrite, TILE_PX, Tile, TileWrite,
};
use super::volume::SliceIndex;

/// Default cap on the memory the undo history may hold.
pub const DEFAULT_UNDO_CAP_BYTES: usize = 512 << 20;

/// Why an edit was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// [`Editor::paint`] outside a transaction.
    #[error("no edit is in progress")]
    NoTransaction,
    /// [`Editor::begin`] while another edit is still open.
    #[error("an edit ({0}) is already in progress")]
    Busy(String),
    /// The mask store refused (slice out of range, wrong size).
    #[error(transparent)]
    Mask(#[from] MaskError),
}

/// A region of a slice of a class that changed and must be redrawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dirty {
    /// Class.
    pub class: ClassId,
    /// Slice.
    pub z: SliceIndex,
    /// Pixels that may have changed.
    pub area: PixelBox,
}

/// What a commit, undo or redo changed: the writes to journal and the regions to redraw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// What the step is called in the Edit menu ("brush", "fill", …).
    pub label: String,
    /// The new state of every slice part that changed, in the order to apply them.
    pub writes: Vec<SliceWrite>,
    /// Regions to redraw.
    pub dirty: Vec<Dirty>,
}

/// One tile's change in an undo step: layer, tile index, and its content [before, after].
type TileChange = (Layer, u32, [Option<Box<Tile>>; 2]);

/// One slice's part of an undo step: provenance/review and tile contents before and after.
#[derive(Debug, Clone)]
struct SliceStep {
    class: ClassId,
    z: SliceIndex,
    meta: [SliceMeta; 2],
    tiles: Vec<TileChange>,
}

/// One undo step.
#[derive(Debug, Clone)]
struct Step {
    label: String,
    slices: Vec<SliceStep>,
    bytes: usize,
}

/// What an open transaction remembers about one slice it touched.
struct Recorded {
    meta_before: SliceMeta,
    /// Tile contents before the transaction, recorded the first time a tile changes.
    before: BTreeMap<(Layer, u32), Option<Box<Tile>>>,
    /// Working copy of the slice's mask, and the slice version it matches (another writer,
    /// e.g. model output, makes it stale).
    plane: Option<(BitPlane, u64)>,
    /// Working copy of the touched layer. Only this transaction changes that layer while it
    /// is open (model output never does), so it cannot go stale.
    touched_plane: Option<BitPlane>,
    dirty: PixelBox,
}

struct Open {
    label: String,
    slices: BTreeMap<(ClassId, SliceIndex), Recorded>,
}

/// Transactions and the undo/redo history of one mask volume.
pub struct Editor {
    open: Option<Open>,
    undo: VecDeque<Step>,
    redo: Vec<Step>,
    history_bytes: usize,
    cap_bytes: usize,
}

impl Default for Editor {
    fn default() -> Self {
        Self::new(DEFAULT_UNDO_CAP_BYTES)
    }
}

fn tile_bytes(t: &Option<Box<Tile>>) -> usize {
    std::mem::size_of::<Option<Box<Tile>>>() + t.as_ref().map_or(0, |_| std::mem::size_of::<Tile>())
}

impl Editor {
    /// An editor whose undo history holds at most `cap_bytes` of tile diffs (the newest step
    /// is always kept, however large).
    pub fn new(cap_bytes: usize) -> Self {
        Self { open: None, undo: VecDeque::new(), redo: Vec::new(), history_bytes: 0, cap_bytes }
    }

    /// Whether a transaction is open (a stroke in progress).
    pub fn in_progress(&self) -> bool {
        self.open.is_some()
    }

    /// Opens a transaction named `label`.
    pub fn begin(&mut self, label: impl Into<String>) -> Result<(), EditError> {
        if let Some(open) = &self.open {
            return Err(EditError::Busy(open.label.clone()));
        }
        self.open = Some(Open { label: label.into(), slices: BTreeMap::new() });
        Ok(())
    }

    /// Applies `op` to the mask of `class` at slice `z` inside the open transaction. `op` gets
    /// a working plane of the slice and returns the box it may have changed; the tiles of
    /// that box that did change are written back, the pixels that changed are marked as
    /// touched by a person, and the slice becomes `User` / `Corrected`. Returns the region to
    /// redraw (empty when nothing changed).
    pub fn paint(
        &mut self,
        masks: &mut MaskVolume,
        class: ClassId,
        z: SliceIndex,
        op: impl FnOnce(&mut BitPlane) -> PixelBox,
    ) -> Result<PixelBox, EditError> {
        let open = self.open.as_mut().ok_or(EditError::NoTransaction)?;
        if z.0 >= masks.depth() {
            return Err(MaskError::SliceOutOfRange { z, depth: masks.depth() }.into());
        }
        let rec = open.slices.entry((class, z)).or_insert_with(|| Recorded {
            meta_before: masks.meta(class, z),
            before: BTreeMap::new(),
            plane: None,
            touched_plane: None,
            dirty: PixelBox::default(),
        });
        let version = masks.version(class, z);
        let mut plane = match rec.plane.take() {
            Some((p, v)) if v == version && version != 0 => p,
            _ => match masks.mask(class, z) {
                Some(m) => m.to_plane(),
                None => BitPlane::new(masks.width(), masks.height()),
            },
        };
        let area = op(&mut plane);
        // No version bump unless pixels change: a stroke over pixels that already have its
        // value must not make the display re-upload.
        let entry = masks.entry_mut(class, z)?;
        let mut changed = PixelBox::default();
        let tiles: Vec<usize> = entry.mask.tiles_in(area).collect();
        for index in tiles {
            let new = entry.mask.plane_tile(&plane, index);
            let old = entry.mask.tile(index).copied();
            if new.as_deref() == old.as_ref() {
                continue;
            }
            rec.before.entry((Layer::Mask, index as u32)).or_insert_with(|| old.map(Box::new));
            let touched_old = entry.touched.tile(index).copied();
            rec.before.entry((Layer::Touched, index as u32)).or_insert_with(|| touched_old.map(Box::new));
            // Every pixel that changed is now one a person vouched for.
            let zero = [0u64; TILE_PX];
            let (a, b) = (old.as_ref().unwrap_or(&zero), new.as_deref().unwrap_or(&zero));
            let mut touched = touched_old.unwrap_or(zero);
            for ((t, a), b) in touched.iter_mut().zip(a).zip(b) {
                *t |= a ^ b;
            }
            if let Some(tp) = &mut rec.touched_plane {
                let (wpr, tx, y0) =
                    (tp.words_per_row(), index % entry.mask.tiles_x(), (index / entry.mask.tiles_x()) * TILE_PX);
                let rows = (entry.mask.height() - y0).min(TILE_PX);
                for (r, &bits) in touched.iter().enumerate().take(rows) {
                    tp.words_mut()[(y0 + r) * wpr + tx] = bits;
                }
            }
            entry.touched.set_tile(index, Some(Box::new(touched)));
            entry.mask.set_tile(index, new);
            changed = changed.union(tile_box_px(entry.mask.width(), entry.mask.height(), index));
        }
        if !changed.is_empty() {
            entry.provenance = Provenance::User;
            if entry.review != ReviewState::Accepted {
                entry.review = ReviewState::Corrected;
            }
            masks.bump_version(class, z);
        }
        rec.plane = Some((plane, masks.version(class, z)));
        let changed = intersect(changed, area);
        rec.dirty = rec.dirty.union(changed);
        Ok(changed)
    }

    /// Marks pixels as vouched for by a person without changing the mask (what a brush or
    /// lasso passed over, even where the mask already had the value it paints): `op` sets the
    /// pixels on a working plane of the slice's touched layer and returns their box.
    pub fn touch(
        &mut self,
        masks: &mut MaskVolume,
        class: ClassId,
        z: SliceIndex,
        op: impl FnOnce(&mut BitPlane) -> PixelBox,
    ) -> Result<(), EditError> {
        let open = self.open.as_mut().ok_or(EditError::NoTransaction)?;
        let meta_before = masks.meta(class, z);
        // No version bump: the mask (what is drawn) does not change.
        let entry = masks.entry_mut(class, z)?;
        let rec = open.slices.entry((class, z)).or_insert_with(|| Recorded {
            meta_before,
            before: BTreeMap::new(),
            plane: None,
            touched_plane: None,
            dirty: PixelBox::default(),
        });
        let plane = rec.touched_plane.get_or_insert_with(|| entry.touched.to_plane());
        let area = op(plane);
        let tiles: Vec<usize> = entry.touched.tiles_in(area).collect();
        for index in tiles {
            let new = entry.touched.plane_tile(plane, index);
            let old = entry.touched.tile(index).copied();
            if new.as_deref() != old.as_ref() {
                rec.before.entry((Layer::Touched, index as u32)).or_insert_with(|| old.map(Box::new));
                entry.touched.set_tile(index, new);
            }
        }
        Ok(())
    }

    /// Sets the provenance and review state of a slice inside the open transaction.
    pub fn set_meta(
        &mut self,
        masks: &mut MaskVolume,
        class: ClassId,
        z: SliceIndex,
        meta: SliceMeta,
    ) -> Result<(), EditError> {
        let open = self.open.as_mut().ok_or(EditError::NoTransaction)?;
        let before = masks.meta(class, z);
        let entry = masks.edit_entry(class, z)?;
        open.slices.entry((class, z)).or_insert_with(|| Recorded {
            meta_before: before,
            before: BTreeMap::new(),
            plane: None,
            touched_plane: None,
            dirty: PixelBox::default(),
        });
        entry.provenance = meta.provenance;
        entry.review = meta.review;
        Ok(())
    }

    /// Closes the open transaction. Returns what it changed (to journal and redraw), or
    /// `None` when it changed nothing (no undo step is made then).
    pub fn commit(&mut self, masks: &MaskVolume) -> Option<Commit> {
        let open = self.open.take()?;
        let mut slices = Vec::new();
        for ((class, z), rec) in open.slices {
            let entry = masks.entry(class, z);
            let meta_after = masks.meta(class, z);
            let tiles: Vec<_> = rec
                .before
                .into_iter()
                .filter_map(|((layer, index), before)| {
                    let layer_mask = entry.map(|e| match layer {
                        Layer::Mask => &e.mask,
                        Layer::Touched => &e.touched,
                    });
                    let after = layer_mask.and_then(|m| m.tile(index as usize)).map(|t| Box::new(*t));
                    (after != before).then_some((layer, index, [before, after]))
                })
                .collect();
            if tiles.is_empty() && meta_after == rec.meta_before {
                continue;
            }
            slices.push(SliceStep { class, z, meta: [rec.meta_before, meta_after], tiles });
        }
        if slices.is_empty() {
            return None;
        }
        let bytes = slices
            .iter()
            .map(|s| {
                std::mem::size_of::<SliceStep>()
                    + s.tiles.iter().map(|(_, _, t)| 8 + tile_bytes(&t[0]) + tile_bytes(&t[1])).sum::<usize>()
            })
            .sum();
        let step = Step { label: open.label, slices, bytes };
        let commit = Self::describe(masks, &step, 1);
        self.redo.clear();
        self.push_undo(step);
        Some(commit)
    }

    fn push_undo(&mut self, step: Step) {
        self.history_bytes += step.bytes;
        self.undo.push_back(step);
        while self.history_bytes + self.redo_bytes() > self.cap_bytes && self.undo.len() > 1 {
            let dropped = self.undo.pop_front().expect("len > 1");
            self.history_bytes -= dropped.bytes;
        }
    }

    fn redo_bytes(&self) -> usize {
        self.redo.iter().map(|s| s.bytes).sum()
    }

    /// The writes that put the slices of `step` into state `side` (0 = before, 1 = after).
    fn describe(masks: &MaskVolume, step: &Step, side: usize) -> Commit {
        let mut writes = Vec::new();
        let mut dirty = Vec::new();
        for s in &step.slices {
            let tiles = s
                .tiles
                .iter()
                .map(|(layer, index, t)| TileWrite { layer: *layer, index: *index, tile: t[side].clone() })
                .collect();
            writes.push(SliceWrite { class: s.class, z: s.z, meta: s.meta[side], tiles });
            let area =
                s.tiles.iter().filter(|(l, _, _)| *l == Layer::Mask).fold(PixelBox::default(), |a, (_, i, _)| {
                    a.union(tile_box_px(masks.width(), masks.height(), *i as usize))
                });
            // A review change alone must still refresh the navigator, so report the slice.
            dirty.push(Dirty { class: s.class, z: s.z, area });
        }
        Commit { label: step.label.clone(), writes, dirty }
    }

    /// Drops the open transaction and restores everything it changed. Returns the regions
    /// to redraw.
    pub fn abort(&mut self, masks: &mut MaskVolume) -> Vec<Dirty> {
        let Some(open) = self.open.take() else { return Vec::new() };
        let mut dirty = Vec::new();
        for ((class, z), rec) in open.slices {
            let tiles = rec.before.into_iter().map(|((layer, index), tile)| TileWrite { layer, index, tile }).collect();
            let write = SliceWrite { class, z, meta: rec.meta_before, tiles };
            // The tiles were read from this very volume, so they fit it.
            if masks.apply(&write).is_ok() {
                dirty.push(Dirty { class, z, area: rec.dirty });
            }
        }
        dirty
    }

    /// Undoes the newest step (an open transaction is aborted first and counts as the undo).
    /// Returns what changed, or `None` when there is nothing to undo.
    pub fn undo(&mut self, masks: &mut MaskVolume) -> Option<Commit> {
        if self.open.is_some() {
            let dirty = self.abort(masks);
            return Some(Commit { label: "stroke in progress".into(), writes: Vec::new(), dirty });
        }
        let step = self.undo.pop_back()?;
        self.history_bytes -= step.bytes;
        let commit = Self::describe(masks, &step, 0);
        for w in &commit.writes {
            // Steps were recorded on this volume; applying them back cannot fail.
            let _ = masks.apply(w);
        }
        self.redo.push(step);
        Some(commit)
    }

    /// Redoes the newest undone step. Returns what changed, or `None`.
    pub fn redo(&mut self, masks: &mut MaskVolume) -> Option<Commit> {
        if self.open.is_some() {
            return None;
        }
        let step = self.redo.pop()?;
        let commit = Self::describe(masks, &step, 1);
        for w in &commit.writes {
            let _ = masks.apply(w);
        }
        self.push_undo(step);
        Some(commit)
    }

    /// Label of the step [`Editor::undo`] would undo.
    pub fn undo_label(&self) -> Option<&str> {
        self.undo.back().map(|s| s.label.as_str())
    }

    /// Label of the step [`Editor::redo`] would redo.
    pub fn redo_label(&self) -> Option<&str> {
        self.redo.last().map(|s| s.label.as_str())
    }

    /// Number of undo steps held.
    pub fn undo_len(&self) -> usize {
        self.undo.len()
    }

    /// Bytes held by the undo and redo history.
    pub fn history_bytes(&self) -> usize {
        self.history_bytes + self.redo_bytes()
    }

    /// Forgets all history (a new stack was opened).
    pub fn clear(&mut self) {
        self.open = None;
        self.undo.clear();
        self.redo.clear();
        self.history_bytes = 0;
    }
}

fn tile_box_px(width: usize, height: usize, index: usize) -> PixelBox {
    let tiles_x = width.div_ceil(TILE_PX);
    let (x0, y0) = ((index % tiles_x) * TILE_PX, (index / tiles_x) * TILE_PX);
    PixelBox { x0, y0, x1: (x0 + TILE_PX).min(width), y1: (y0 + TILE_PX).min(height) }
}

fn intersect(a: PixelBox, b: PixelBox) -> PixelBox {
    let r = PixelBox { x0: a.x0.max(b.x0), y0: a.y0.max(b.y0), x1: a.x1.min(b.x1), y1: a.y1.min(b.y1) };
    if r.x0 >= r.x1 || r.y0 >= r.y1 { PixelBox::default() } else { r }
}
