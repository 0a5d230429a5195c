//! Pure application state: the volume abstraction, the class table, the mask store and the
//! viewer's camera / contrast / cursor.
//!
//! Depends on nothing else in this crate, and on no GPU, UI or model library: everything here is
//! plain data that the other modules read and edit.

pub mod classes;
pub mod mask;
pub mod palette;
pub mod view;
pub mod volume;

pub use classes::{ClassDef, ClassError, ClassId, ClassTable, Rgb};
pub use mask::{MaskError, MaskVolume, Provenance, ReviewState, SliceEntry, SliceMask};
pub use view::{Camera, Contrast, Cursor};
pub use volume::{
    CacheStats, DType, Slice, SliceData, SliceError, SliceIndex, SliceSource, Volume, VolumeInfo, VoxelSize,
};
