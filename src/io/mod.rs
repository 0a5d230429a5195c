//! Files in and out: EM stacks (multi-page TIFF/BigTIFF, HDF5, PNG/TIFF sequences), mask import and
//! export, atomic writes, projects (saved sessions with a crash journal).
//!
//! Depends on `state` only (it produces `Volume`s and fills `MaskVolume`s); never on the UI,
//! the renderer or the model.

pub mod atomic;
#[cfg(feature = "model")]
pub mod download;
pub mod error;
pub mod export;
mod hdf5;
pub mod import;
pub mod meta;
pub mod options;
pub mod sample;
pub mod session;
pub mod stack;
mod tiff;

pub use error::IoError;
pub use export::{ExportFormat, ExportOptions, ExportReport, TiffCompression, export_masks};
pub use import::{ImportReport, import_binary_masks, import_label_map, parse_label_mapping, sidecar_mapping};
pub use options::{ColorToGray, OpenOptions};
pub use session::{OpenedProject, Project, Recovery, SessionError, StackRef, autosession_dir, default_data_dir};
pub use stack::{open_stack, open_stack_bytes};
