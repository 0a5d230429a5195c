//! Per-class binary masks over a stack, stored sparsely.
//!
//! A [`SliceMask`] is a grid of 64×64-pixel bit tiles of which only the non-empty ones are
//! allocated; a [`MaskVolume`] holds, per class, only the slices someone touched. Memory therefore
//! grows with touched slices and painted area, not with the stack. Each stored slice carries
//! its provenance, review state and a version counter that later drives re-upload, undo and
//! stale-result checks.
//!
//! Pure Rust: this module must not depend on any other module of the crate but `state`.

use std::collections::BTreeMap;

use super::bitplane::{BitPlane, PixelBox};
use super::classes::ClassId;
use super::volume::SliceIndex;

/// Side of a mask tile in pixels. One tile row is one `u64`.
pub const TILE_PX: usize = 64;

/// One 64×64 tile: row `r` is a `u64` whose bit `c` is pixel (x0 + c, y0 + r).
pub type Tile = [u64; TILE_PX];

/// A binary mask of one slice, tiled and sparse. The tile index itself is allocated only when
/// the first tile is (an empty mask — most "touched" layers of model output — costs nothing).
#[derive(Clone)]
pub struct SliceMask {
    width: usize,
    height: usize,
    tiles_x: usize,
    /// Empty, or one slot per tile of the grid.
    tiles: Vec<Option<Box<Tile>>>,
}

impl std::fmt::Debug for SliceMask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SliceMask({}x{}, {} px set)", self.width, self.height, self.count_ones())
    }
}

impl PartialEq for SliceMask {
    /// Equal when the same pixels are set (an allocated all-zero tile equals a missing one).
    fn eq(&self, other: &Self) -> bool {
        let zero = [0u64; TILE_PX];
        self.width == other.width
            && self.height == other.height
            && (0..self.tile_count()).all(|i| self.tile(i).unwrap_or(&zero) == other.tile(i).unwrap_or(&zero))
    }
}

impl Eq for SliceMask {}

impl SliceMask {
    /// An empty mask; allocates only the tile index.
    pub fn new(width: usize, height: usize) -> Self {
        let tiles_x = width.div_ceil(TILE_PX);
        Self { width, height, tiles_x, tiles: Vec::new() }
    }

    /// The tile index, allocated on first use.
    fn grid(&mut self) -> &mut Vec<Option<Box<Tile>>> {
        if self.tiles.is_empty() {
            self.tiles = vec![None; self.tile_count()];
        }
        &mut self.tiles
    }

    /// Builds a mask from a row-major predicate over pixel indices (`y * width + x`), one
    /// 64-pixel tile row at a time so that only non-empty tiles are allocated.
    pub fn from_fn(width: usize, height: usize, mut is_set: impl FnMut(usize) -> bool) -> Self {
        let mut m = Self::new(width, height);
        for y in 0..height {
            for tx in 0..m.tiles_x {
                let x0 = tx * TILE_PX;
                let mut bits = 0u64;
                for c in 0..TILE_PX.min(width - x0) {
                    if is_set(y * width + x0 + c) {
                        bits |= 1 << c;
                    }
                }
                if bits != 0 {
                    let tile = (y / TILE_PX) * m.tiles_x + tx;
                    m.grid()[tile].get_or_insert_with(|| Box::new([0; TILE_PX]))[y % TILE_PX] = bits;
                }
            }
        }
        m
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    fn locate(&self, x: usize, y: usize) -> (usize, usize, u64) {
        assert!(x < self.width && y < self.height, "pixel ({x}, {y}) outside {}x{}", self.width, self.height);
        let tile = (y / TILE_PX) * self.tiles_x + x / TILE_PX;
        (tile, y % TILE_PX, 1u64 << (x % TILE_PX))
    }

    /// Whether pixel (x, y) is set.
    pub fn get(&self, x: usize, y: usize) -> bool {
        let (tile, row, bit) = self.locate(x, y);
        self.tiles.get(tile).and_then(Option::as_ref).is_some_and(|t| t[row] & bit != 0)
    }

    /// Sets or clears pixel (x, y). A tile that becomes empty is freed.
    pub fn set(&mut self, x: usize, y: usize, value: bool) {
        let (tile, row, bit) = self.locate(x, y);
        if !value && self.tiles.is_empty() {
            return;
        }
        match (&mut self.grid()[tile], value) {
            (Some(t), true) => t[row] |= bit,
            (slot @ None, true) => {
                let mut t = Box::new([0u64; TILE_PX]);
                t[row] = bit;
                *slot = Some(t);
            }
            (slot @ Some(_), false) => {
                let t = slot.as_mut().expect("matched Some");
                t[row] &= !bit;
                if t[row] == 0 && t.iter().all(|&r| r == 0) {
                    *slot = None;
                }
            }
            (None, false) => {}
        }
    }

    /// Number of set pixels.
    pub fn count_ones(&self) -> u64 {
        self.tiles.iter().flatten().map(|t| t.iter().map(|r| u64::from(r.count_ones())).sum::<u64>()).sum()
    }

    /// True when no pixel is set.
    pub fn is_empty(&self) -> bool {
        self.tiles.iter().flatten().all(|t| t.iter().all(|&r| r == 0))
    }

    /// Row-major bytes: `on` where set, 0 elsewhere.
    pub fn to_dense(&self, on: u8) -> Vec<u8> {
        let mut out = vec![0u8; self.width * self.height];
        self.paint_into(&mut out, on);
        out
    }

    /// Writes `value` into a row-major `width * height` buffer wherever the mask is set; other
    /// pixels are left alone.
    pub fn paint_into<T: Copy>(&self, out: &mut [T], value: T) {
        assert_eq!(out.len(), self.width * self.height, "buffer size");
        self.for_each_set(|i| out[i] = value);
    }

    /// Calls `f` with the row-major index (`y * width + x`) of every set pixel, tile by tile.
    pub fn for_each_set(&self, mut f: impl FnMut(usize)) {
        for (i, tile) in self.tiles.iter().enumerate() {
            let Some(tile) = tile else { continue };
            let x0 = (i % self.tiles_x) * TILE_PX;
            let y0 = (i / self.tiles_x) * TILE_PX;
            for (r, &bits) in tile.iter().enumerate() {
                let mut bits = bits;
                while bits != 0 {
                    let c = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    f((y0 + r) * self.width + x0 + c);
                }
            }
        }
    }

    /// Bytes allocated on the heap by this mask.
    pub fn heap_bytes(&self) -> usize {
        self.tiles.capacity() * std::mem::size_of::<Option<Box<Tile>>>()
            + self.tiles.iter().flatten().count() * std::mem::size_of::<Tile>()
    }

    /// Number of tiles in the grid (allocated or not).
    pub fn tile_count(&self) -> usize {
        self.tiles_x * self.height.div_ceil(TILE_PX)
    }

    /// Tiles per row of the grid.
    pub fn tiles_x(&self) -> usize {
        self.tiles_x
    }

    /// Tile `index` (row-major in the tile grid); `None` when it is empty.
    pub fn tile(&self, index: usize) -> Option<&Tile> {
        assert!(index < self.tile_count(), "tile {index} outside the {} tiles", self.tile_count());
        self.tiles.get(index).and_then(Option::as_deref)
    }

    /// Replaces tile `index`. An all-zero tile is stored as missing, and bits outside the
    /// slice (in edge tiles) are cleared, so equal content always has equal storage.
    pub fn set_tile(&mut self, index: usize, tile: Option<Box<Tile>>) {
        let (x0, y0) = ((index % self.tiles_x) * TILE_PX, (index / self.tiles_x) * TILE_PX);
        let (width, height) = (self.width, self.height);
        let tile = tile.and_then(|mut t| {
            let cols = (width - x0).min(TILE_PX);
            let keep = if cols == TILE_PX { u64::MAX } else { (1u64 << cols) - 1 };
            let rows = (height - y0).min(TILE_PX);
            for (r, row) in t.iter_mut().enumerate() {
                *row = if r < rows { *row & keep } else { 0 };
            }
            t.iter().any(|&r| r != 0).then_some(t)
        });
        match tile {
            Some(t) => self.grid()[index] = Some(t),
            None => {
                if let Some(slot) = self.tiles.get_mut(index) {
                    *slot = None;
                }
            }
        }
    }

    /// Indices of the allocated (non-empty) tiles.
    pub fn allocated_tiles(&self) -> impl Iterator<Item = usize> + '_ {
        self.tiles.iter().enumerate().filter(|(_, t)| t.is_some()).map(|(i, _)| i)
    }

    /// Indices of the tiles overlapping a pixel box (clipped to the slice).
    pub fn tiles_in(&self, area: PixelBox) -> impl Iterator<Item = usize> + '_ {
        let x1 = area.x1.min(self.width);
        let y1 = area.y1.min(self.height);
        let empty = area.x0 >= x1 || area.y0 >= y1;
        let (tx0, tx1) = if empty { (0, 0) } else { (area.x0 / TILE_PX, x1.div_ceil(TILE_PX)) };
        let (ty0, ty1) = if empty { (0, 0) } else { (area.y0 / TILE_PX, y1.div_ceil(TILE_PX)) };
        let tiles_x = self.tiles_x;
        (ty0..ty1).flat_map(move |ty| (tx0..tx1).map(move |tx| ty * tiles_x + tx))
    }

    /// The mask as a dense bit plane. The plane's rows are `tiles_x` words long, one word per
    /// tile column, so the conversion copies words.
    pub fn to_plane(&self) -> BitPlane {
        let wpr = self.tiles_x;
        let mut words = vec![0u64; wpr * self.height];
        for (i, tile) in self.tiles.iter().enumerate() {
            let Some(tile) = tile else { continue };
            let (tx, y0) = (i % self.tiles_x, (i / self.tiles_x) * TILE_PX);
            for (r, &bits) in tile.iter().enumerate().take(self.height - y0) {
                words[(y0 + r) * wpr + tx] = bits;
            }
        }
        BitPlane::from_words(self.width, self.height, words)
    }

    /// Tile `index` as it is in `plane` (same size as this mask).
    pub fn plane_tile(&self, plane: &BitPlane, index: usize) -> Option<Box<Tile>> {
        let (tx, y0) = (index % self.tiles_x, (index / self.tiles_x) * TILE_PX);
        let wpr = plane.words_per_row();
        let words = plane.words();
        let mut t = [0u64; TILE_PX];
        for (r, row) in t.iter_mut().enumerate().take(self.height - y0) {
            *row = words[(y0 + r) * wpr + tx];
        }
        t.iter().any(|&r| r != 0).then(|| Box::new(t))
    }

    /// A mask with the content of `plane`.
    pub fn from_plane(plane: &BitPlane) -> Self {
        let mut m = Self::new(plane.width(), plane.height());
        for i in 0..m.tile_count() {
            if let Some(t) = m.plane_tile(plane, i) {
                m.grid()[i] = Some(t);
            }
        }
        m
    }
}

/// Where the pixels of a stored slice mask came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provenance {
    /// Nothing stored yet.
    Empty,
    /// Predicted by the model.
    Model,
    /// Read from a segmentation made elsewhere (import). Protected from model output like
    /// user edits: someone vouched for it outside this program.
    Imported,
    /// Drawn or corrected by a person.
    User,
}

/// How far a person has reviewed a slice of a class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewState {
    /// Nobody has looked at it.
    Unseen,
    /// Holds a model prediction nobody has reviewed.
    Predicted,
    /// A person edited it.
    Corrected,
    /// A person accepted it as correct.
    Accepted,
}

/// One stored slice of one class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceEntry {
    /// The pixels.
    pub mask: SliceMask,
    /// Pixels a person drew or erased: model output never overwrites them, and they are the
    /// pixels a person vouched for when the slice becomes a training sample.
    pub touched: SliceMask,
    /// Where they came from.
    pub provenance: Provenance,
    /// Review state.
    pub review: ReviewState,
    /// Changes on every change to this slice of this class (0 = never stored). Drawn from a
    /// counter of the whole volume, so a version is never reused, not even after an undo.
    pub version: u64,
}

impl SliceEntry {
    /// Whether a person vouched for pixel (x, y): the whole slice once accepted or imported,
    /// else the pixels they drew or erased.
    pub fn vouched(&self, x: usize, y: usize) -> bool {
        matches!(self.review, ReviewState::Accepted)
            || self.provenance == Provenance::Imported
            || self.touched.get(x, y)
    }
}

/// Provenance and review state of one stored slice: the part of a [`SliceEntry`] that is not
/// pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct SliceMeta {
    /// Where the pixels came from.
    pub provenance: Provenance,
    /// How far a person reviewed it.
    pub review: ReviewState,
}

impl SliceMeta {
    /// What a slice nobody touched has.
    pub const UNTOUCHED: Self = Self { provenance: Provenance::Empty, review: ReviewState::Unseen };
}

/// Which bit layer of a stored slice a tile belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Layer {
    /// The mask itself.
    Mask,
    /// The pixels a person drew or erased.
    Touched,
}

/// The new content of one tile of one layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TileWrite {
    /// Layer.
    pub layer: Layer,
    /// Index in the slice's tile grid (row-major).
    pub index: u32,
    /// Content; `None` = empty.
    pub tile: Option<Box<Tile>>,
}

/// The new state of parts of one stored slice: what an edit, an undo or a redo wrote. Applying
/// it twice gives the same result as once, so a journal of these can be replayed over a
/// snapshot that already contains some of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceWrite {
    /// Class.
    pub class: ClassId,
    /// Slice.
    pub z: SliceIndex,
    /// Provenance and review state after the write.
    pub meta: SliceMeta,
    /// Tiles whose content changed, with their new content.
    pub tiles: Vec<TileWrite>,
}

/// Why a mask operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaskError {
    /// The mask does not have the volume's slice size.
    #[error("mask is {got_w}x{got_h} px but the stack's slices are {want_w}x{want_h} px")]
    SizeMismatch {
        /// Width given.
        got_w: usize,
        /// Height given.
        got_h: usize,
        /// Width expected.
        want_w: usize,
        /// Height expected.
        want_h: usize,
    },
    /// The slice index is beyond the stack.
    #[error("slice {z} is outside the stack (0..{depth})")]
    SliceOutOfRange {
        /// Slice asked for.
        z: SliceIndex,
        /// Number of slices.
        depth: usize,
    },
    /// A tile index is beyond the slice's tile grid (a damaged record).
    #[error("tile {index} is outside the slice's {count} tiles")]
    TileOutOfRange {
        /// Tile asked for.
        index: u32,
        /// Tiles per slice.
        count: usize,
    },
}

/// Per-class, per-slice binary masks for one stack. Slices nobody touched take no memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskVolume {
    width: usize,
    height: usize,
    depth: usize,
    classes: BTreeMap<ClassId, BTreeMap<SliceIndex, SliceEntry>>,
    /// Last version handed out (see [`SliceEntry::version`]).
    last_version: u64,
}

impl MaskVolume {
    /// Empty masks for a `width × height × depth` stack.
    pub fn new(width: usize, height: usize, depth: usize) -> Self {
        Self { width, height, depth, classes: BTreeMap::new(), last_version: 0 }
    }

    fn next_version(&mut self) -> u64 {
        self.last_version += 1;
        self.last_version
    }

    /// Slice width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Slice height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Number of slices.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// The stored slice of a class, if any.
    pub fn entry(&self, class: ClassId, z: SliceIndex) -> Option<&SliceEntry> {
        self.classes.get(&class)?.get(&z)
    }

    /// The mask of a class at a slice, if stored.
    pub fn mask(&self, class: ClassId, z: SliceIndex) -> Option<&SliceMask> {
        self.entry(class, z).map(|e| &e.mask)
    }

    /// Provenance of a slice of a class ([`Provenance::Empty`] when nothing is stored).
    pub fn provenance(&self, class: ClassId, z: SliceIndex) -> Provenance {
        self.entry(class, z).map_or(Provenance::Empty, |e| e.provenance)
    }

    /// Review state of a slice of a class ([`ReviewState::Unseen`] when nothing is stored).
    pub fn review(&self, class: ClassId, z: SliceIndex) -> ReviewState {
        self.entry(class, z).map_or(ReviewState::Unseen, |e| e.review)
    }

    /// Version of a slice of a class (0 when nothing was ever stored).
    pub fn version(&self, class: ClassId, z: SliceIndex) -> u64 {
        self.entry(class, z).map_or(0, |e| e.version)
    }

    fn check(&self, z: SliceIndex, mask: &SliceMask) -> Result<(), MaskError> {
        if z.0 >= self.depth {
            return Err(MaskError::SliceOutOfRange { z, depth: self.depth });
        }
        if mask.width() != self.width || mask.height() != self.height {
            return Err(MaskError::SizeMismatch {
                got_w: mask.width(),
                got_h: mask.height(),
                want_w: self.width,
                want_h: self.height,
            });
        }
        Ok(())
    }

    /// Stores the whole mask of a class at a slice and bumps its version. The review state
    /// follows from the provenance: model output is `Predicted`, a person's edit `Corrected`,
    /// an import `Unseen`.
    pub fn put(
        &mut self,
        class: ClassId,
        z: SliceIndex,
        mask: SliceMask,
        provenance: Provenance,
    ) -> Result<u64, MaskError> {
        self.check(z, &mask)?;
        let review = match provenance {
            Provenance::Empty | Provenance::Imported => ReviewState::Unseen,
            Provenance::Model => ReviewState::Predicted,
            Provenance::User => ReviewState::Corrected,
        };
        let version = self.next_version();
        let touched = match provenance {
            // A whole-slice write by a person vouches at least for the pixels they set (all of
            // them would cost a full tile grid per slice; editors record exact pixels instead).
            Provenance::User => mask.clone(),
            _ => SliceMask::new(self.width, self.height),
        };
        self.classes.entry(class).or_default().insert(z, SliceEntry { mask, touched, provenance, review, version });
        Ok(version)
    }

    /// Stores model output for a slice of a class without overwriting what a person vouched
    /// for: vouched pixels keep their value, the others take the model's. A slice a person
    /// edited stays theirs (`User`, its review state kept); otherwise it becomes `Model` /
    /// `Predicted`. Accepted and imported slices are left alone. Returns the slice's version.
    pub fn put_model(&mut self, class: ClassId, z: SliceIndex, predicted: &BitPlane) -> Result<u64, MaskError> {
        let mask = SliceMask::from_plane(predicted);
        self.check(z, &mask)?;
        let version = self.next_version();
        let (w, h) = (self.width, self.height);
        let slices = self.classes.entry(class).or_default();
        match slices.get_mut(&z) {
            Some(e) if e.review == ReviewState::Accepted || e.provenance == Provenance::Imported => {
                // Fully vouched for: the model has nothing to add.
                return Ok(e.version);
            }
            Some(e) => {
                let mut plane = predicted.clone();
                let current = e.mask.to_plane();
                let touched = e.touched.to_plane();
                for ((p, &c), &t) in plane.words_mut().iter_mut().zip(current.words()).zip(touched.words()) {
                    *p = (*p & !t) | (c & t);
                }
                e.mask = SliceMask::from_plane(&plane);
                e.version = version;
                if e.provenance != Provenance::User {
                    e.provenance = Provenance::Model;
                    e.review = ReviewState::Predicted;
                }
            }
            None => {
                slices.insert(
                    z,
                    SliceEntry {
                        mask,
                        touched: SliceMask::new(w, h),
                        provenance: Provenance::Model,
                        review: ReviewState::Predicted,
                        version,
                    },
                );
            }
        }
        Ok(version)
    }

    /// The entry of a slice of a class, created empty (and untouched) when missing. The
    /// version is not bumped: for changes that do not alter what is drawn (the touched layer).
    pub(crate) fn entry_mut(&mut self, class: ClassId, z: SliceIndex) -> Result<&mut SliceEntry, MaskError> {
        if z.0 >= self.depth {
            return Err(MaskError::SliceOutOfRange { z, depth: self.depth });
        }
        let (w, h) = (self.width, self.height);
        Ok(self.classes.entry(class).or_default().entry(z).or_insert_with(|| SliceEntry {
            mask: SliceMask::new(w, h),
            touched: SliceMask::new(w, h),
            provenance: Provenance::Empty,
            review: ReviewState::Unseen,
            version: 0,
        }))
    }

    /// Gives a stored slice a new version (its pixels changed through [`Self::entry_mut`]).
    pub(crate) fn bump_version(&mut self, class: ClassId, z: SliceIndex) {
        let version = self.next_version();
        if let Some(e) = self.classes.get_mut(&class).and_then(|s| s.get_mut(&z)) {
            e.version = version;
        }
    }

    /// Mutable access to a slice of a class for an editor, created when missing; bumps the
    /// version. Callers record what they change (see `state::edit`).
    pub fn edit_entry(&mut self, class: ClassId, z: SliceIndex) -> Result<&mut SliceEntry, MaskError> {
        let version = self.next_version();
        let e = self.entry_mut(class, z)?;
        e.version = version;
        Ok(e)
    }

    /// Applies a recorded write (from an editor or a journal). Idempotent.
    pub fn apply(&mut self, write: &SliceWrite) -> Result<(), MaskError> {
        let count = self.width.div_ceil(TILE_PX) * self.height.div_ceil(TILE_PX);
        if let Some(t) = write.tiles.iter().find(|t| t.index as usize >= count) {
            return Err(MaskError::TileOutOfRange { index: t.index, count });
        }
        let e = self.edit_entry(write.class, write.z)?;
        e.provenance = write.meta.provenance;
        e.review = write.meta.review;
        for t in &write.tiles {
            let layer = match t.layer {
                Layer::Mask => &mut e.mask,
                Layer::Touched => &mut e.touched,
            };
            layer.set_tile(t.index as usize, t.tile.clone());
        }
        Ok(())
    }

    /// Stores a whole entry as read from a saved project (mask, touched pixels, provenance,
    /// review state); the version is assigned here.
    pub fn restore(
        &mut self,
        class: ClassId,
        z: SliceIndex,
        mask: SliceMask,
        touched: SliceMask,
        meta: SliceMeta,
    ) -> Result<(), MaskError> {
        self.check(z, &mask)?;
        self.check(z, &touched)?;
        let version = self.next_version();
        let entry = SliceEntry { mask, touched, provenance: meta.provenance, review: meta.review, version };
        self.classes.entry(class).or_default().insert(z, entry);
        Ok(())
    }

    /// Provenance and review state of a slice of a class.
    pub fn meta(&self, class: ClassId, z: SliceIndex) -> SliceMeta {
        self.entry(class, z).map_or(SliceMeta::UNTOUCHED, |e| SliceMeta { provenance: e.provenance, review: e.review })
    }

    /// Sets the review state of a stored slice (a slice with nothing stored is stored empty,
    /// so that accepting an empty slice is remembered).
    pub fn set_review(&mut self, class: ClassId, z: SliceIndex, review: ReviewState) -> Result<(), MaskError> {
        self.edit_entry(class, z)?.review = review;
        Ok(())
    }

    /// Classes with at least one stored slice.
    pub fn classes(&self) -> impl Iterator<Item = ClassId> + '_ {
        self.classes.keys().copied()
    }

    /// Stored slices of a class, in z order.
    pub fn slices(&self, class: ClassId) -> impl Iterator<Item = (SliceIndex, &SliceEntry)> + '_ {
        self.classes.get(&class).into_iter().flat_map(|s| s.iter().map(|(z, e)| (*z, e)))
    }

    /// Drops every slice of a class (when the class is removed from the table).
    pub fn remove_class(&mut self, class: ClassId) {
        self.classes.remove(&class);
    }

    /// Bytes allocated on the heap by all stored masks.
    pub fn heap_bytes(&self) -> usize {
        self.classes
            .values()
            .flat_map(|s| s.values())
            .map(|e| e.mask.heap_bytes() + e.touched.heap_bytes() + std::mem::size_of::<SliceEntry>())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_and_tile_freeing() {
        let mut m = SliceMask::new(130, 70);
        assert!(m.is_empty());
        m.set(129, 69, true);
        m.set(0, 0, true);
        assert!(m.get(129, 69) && m.get(0, 0) && !m.get(1, 0));
        assert_eq!(m.count_ones(), 2);
        let allocated = m.heap_bytes();
        m.set(129, 69, false);
        assert!(m.heap_bytes() < allocated, "emptied tile must be freed");
        assert_eq!(m.count_ones(), 1);
    }

    #[test]
    fn dense_round_trip_on_odd_sizes() {
        let (w, h) = (97, 65);
        let dense: Vec<u8> = (0..w * h).map(|i| if (i * 7919) % 13 < 4 { 255 } else { 0 }).collect();
        let m = SliceMask::from_fn(w, h, |i| dense[i] != 0);
        assert_eq!(m.to_dense(255), dense);
        let mut labels = vec![0u16; w * h];
        m.paint_into(&mut labels, 7);
        assert!(labels.iter().zip(&dense).all(|(&l, &d)| (l == 7) == (d == 255)));
    }

    #[test]
    fn memory_grows_with_touched_slices_only() {
        let mut v = MaskVolume::new(4096, 4096, 100_000);
        assert_eq!(v.heap_bytes(), 0);
        let mut m = SliceMask::new(4096, 4096);
        m.set(10, 10, true);
        v.put(ClassId(2), SliceIndex(99_999), m.clone(), Provenance::User).unwrap();
        let one = v.heap_bytes();
        // One slice a person drew one pixel on: mask and touched layer, each a tile index
        // (4096 entries) plus one 512-byte tile.
        assert!(one < 70 * 1024, "{one} bytes for one touched slice");
        v.put(ClassId(2), SliceIndex(5), m, Provenance::Model).unwrap();
        // The model's slice has no touched pixels: its touched layer allocates nothing.
        let model = v.heap_bytes() - one;
        assert!(model < one / 2 + 1024, "{model} bytes for a model slice");
    }

    #[test]
    fn provenance_review_and_versions() {
        let mut v = MaskVolume::new(8, 8, 3);
        let (c, z) = (ClassId(1), SliceIndex(1));
        assert_eq!((v.provenance(c, z), v.review(c, z), v.version(c, z)), (Provenance::Empty, ReviewState::Unseen, 0));
        v.put(c, z, SliceMask::new(8, 8), Provenance::Model).unwrap();
        assert_eq!(
            (v.provenance(c, z), v.review(c, z), v.version(c, z)),
            (Provenance::Model, ReviewState::Predicted, 1)
        );
        v.put(c, z, SliceMask::new(8, 8), Provenance::User).unwrap();
        assert_eq!(v.review(c, z), ReviewState::Corrected);
        v.set_review(c, z, ReviewState::Accepted).unwrap();
        assert_eq!((v.review(c, z), v.version(c, z)), (ReviewState::Accepted, 3));
        // Versions come from one counter: another slice's first version is not 1.
        v.put(c, SliceIndex(0), SliceMask::new(8, 8), Provenance::Model).unwrap();
        assert_eq!(v.version(c, SliceIndex(0)), 4);
        assert!(matches!(
            v.put(c, SliceIndex(3), SliceMask::new(8, 8), Provenance::User),
            Err(MaskError::SliceOutOfRange { .. })
        ));
        assert!(matches!(v.put(c, z, SliceMask::new(9, 8), Provenance::User), Err(MaskError::SizeMismatch { .. })));
    }
}
