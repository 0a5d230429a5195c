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

use super::classes::ClassId;
use super::volume::SliceIndex;

/// Side of a mask tile in pixels. One tile row is one `u64`.
pub const TILE_PX: usize = 64;

type Tile = [u64; TILE_PX];

/// A binary mask of one slice, tiled and sparse.
#[derive(Clone)]
pub struct SliceMask {
    width: usize,
    height: usize,
    tiles_x: usize,
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
            && self
                .tiles
                .iter()
                .zip(&other.tiles)
                .all(|(a, b)| a.as_deref().unwrap_or(&zero) == b.as_deref().unwrap_or(&zero))
    }
}

impl Eq for SliceMask {}

impl SliceMask {
    /// An empty mask; allocates only the tile index.
    pub fn new(width: usize, height: usize) -> Self {
        let tiles_x = width.div_ceil(TILE_PX);
        let tiles_y = height.div_ceil(TILE_PX);
        Self { width, height, tiles_x, tiles: vec![None; tiles_x * tiles_y] }
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
                    m.tiles[tile].get_or_insert_with(|| Box::new([0; TILE_PX]))[y % TILE_PX] = bits;
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
        self.tiles[tile].as_ref().is_some_and(|t| t[row] & bit != 0)
    }

    /// Sets or clears pixel (x, y). A tile that becomes empty is freed.
    pub fn set(&mut self, x: usize, y: usize, value: bool) {
        let (tile, row, bit) = self.locate(x, y);
        match (&mut self.tiles[tile], value) {
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
    /// Where they came from.
    pub provenance: Provenance,
    /// Review state.
    pub review: ReviewState,
    /// Incremented on every change to this slice of this class (0 = never stored).
    pub version: u64,
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
}

/// Per-class, per-slice binary masks for one stack. Slices nobody touched take no memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskVolume {
    width: usize,
    height: usize,
    depth: usize,
    classes: BTreeMap<ClassId, BTreeMap<SliceIndex, SliceEntry>>,
}

impl MaskVolume {
    /// Empty masks for a `width × height × depth` stack.
    pub fn new(width: usize, height: usize, depth: usize) -> Self {
        Self { width, height, depth, classes: BTreeMap::new() }
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
        let slices = self.classes.entry(class).or_default();
        let version = slices.get(&z).map_or(0, |e| e.version) + 1;
        slices.insert(z, SliceEntry { mask, provenance, review, version });
        Ok(version)
    }

    /// Sets the review state of a stored slice (a slice with nothing stored is stored empty,
    /// so that accepting an empty slice is remembered).
    pub fn set_review(&mut self, class: ClassId, z: SliceIndex, review: ReviewState) -> Result<(), MaskError> {
        if z.0 >= self.depth {
            return Err(MaskError::SliceOutOfRange { z, depth: self.depth });
        }
        let (w, h) = (self.width, self.height);
        let e = self.classes.entry(class).or_default().entry(z).or_insert_with(|| SliceEntry {
            mask: SliceMask::new(w, h),
            provenance: Provenance::Empty,
            review: ReviewState::Unseen,
            version: 0,
        });
        e.review = review;
        e.version += 1;
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
            .map(|e| e.mask.heap_bytes() + std::mem::size_of::<SliceEntry>())
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
        // One touched slice with one tile: the tile index (4096 entries) plus one 512-byte tile.
        assert!(one < 64 * 1024, "{one} bytes for one touched slice");
        v.put(ClassId(2), SliceIndex(5), m, Provenance::Model).unwrap();
        assert_eq!(v.heap_bytes(), 2 * one);
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
        assert!(matches!(
            v.put(c, SliceIndex(3), SliceMask::new(8, 8), Provenance::User),
            Err(MaskError::SliceOutOfRange { .. })
        ));
        assert!(matches!(v.put(c, z, SliceMask::new(9, 8), Provenance::User), Err(MaskError::SizeMismatch { .. })));
    }
}
