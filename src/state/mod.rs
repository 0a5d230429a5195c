//! Pure application state: the volume abstraction, the class table, the mask store, editing
//! (bit-plane raster operations, transactions with undo, the proofreading tools) and the
//! viewer's camera / contrast / cursor.
//!
//! Depends on nothing else in this crate, and on no GPU, UI or model library: everything here is
//! plain data that the other modules read and edit.

pub mod bitplane;
pub mod classes;
pub mod edit;
pub mod mask;
pub mod palette;
pub mod scale;
pub mod tools;
pub mod view;
pub mod volume;

pub use classes::{ClassDef, ClassError, ClassId, ClassTable};
pub use mask::{
    Layer, MaskError, MaskVolume, Provenance, ReviewState, SliceEntry, SliceMask, SliceMeta, SliceWrite, Tile,
    TileWrite,
};
pub use palette::{Rgb, Rgba};
pub use view::{Camera, Contrast, Cursor, probability_cut};
pub use volume::{
    CacheStats, DType, Slice, SliceData, SliceError, SliceIndex, SliceSource, Volume, VolumeInfo, VoxelSize,
};
