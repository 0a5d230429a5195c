//! The error type of the I/O layer. Every variant names the file it is about, last, so a user
//! can act on the one-line message alone.

use std::path::{Path, PathBuf};

use crate::state::{MaskError, SliceError};

/// A failure to read or write a stack, mask or export.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// The file or folder could not be read or decoded.
    #[error("{problem}: {}", path.display())]
    Read {
        /// What went wrong, e.g. `truncated TIFF: page 3 data ends at byte 812 of 500`.
        problem: String,
        /// The file concerned.
        path: PathBuf,
    },
    /// The file is readable but uses something this program does not handle.
    #[error("unsupported {what}: {}", path.display())]
    Unsupported {
        /// What is unsupported, e.g. `sample type: 16-bit signed integer`.
        what: String,
        /// The file concerned.
        path: PathBuf,
    },
    /// Files that must agree do not (slice sizes in a folder, mask vs stack shape).
    #[error("{problem}: {}", path.display())]
    Mismatch {
        /// How they disagree.
        problem: String,
        /// The odd file.
        path: PathBuf,
    },
    /// An output could not be written; nothing was replaced.
    #[error("cannot write: {problem}: {}", path.display())]
    Write {
        /// What went wrong.
        problem: String,
        /// The output concerned.
        path: PathBuf,
    },
    /// A slice failed to decode.
    #[error(transparent)]
    Slice(#[from] SliceError),
    /// Masks did not fit the stack.
    #[error("{source}: {}", path.display())]
    Mask {
        /// The mask store's complaint.
        source: MaskError,
        /// The mask file.
        path: PathBuf,
    },
}

impl IoError {
    pub(crate) fn read(path: &Path, problem: impl Into<String>) -> Self {
        IoError::Read { problem: problem.into(), path: path.to_owned() }
    }

    pub(crate) fn unsupported(path: &Path, what: impl Into<String>) -> Self {
        IoError::Unsupported { what: what.into(), path: path.to_owned() }
    }

    pub(crate) fn mismatch(path: &Path, problem: impl Into<String>) -> Self {
        IoError::Mismatch { problem: problem.into(), path: path.to_owned() }
    }

    pub(crate) fn write(path: &Path, problem: impl Into<String>) -> Self {
        IoError::Write { problem: problem.into(), path: path.to_owned() }
    }

    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            IoError::Read { path, .. }
            | IoError::Unsupported { path, .. }
            | IoError::Mismatch { path, .. }
            | IoError::Write { path, .. }
            | IoError::Mask { path, .. } => path,
            IoError::Slice(e) => &e.path,
        }
    }
}

/// Describes an OS error the way users expect (`No such file or directory`), without the
/// `(os error 2)` suffix.
pub(crate) fn describe_io(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}
