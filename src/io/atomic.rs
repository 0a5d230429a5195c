//! Atomic output: every file is written to a temporary beside its target and renamed into
//! place only once all outputs of an operation are complete, so a failure (full disk, a
//! permission error, a crash) leaves what was there before untouched.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use tempfile::{NamedTempFile, TempDir};

use super::error::{IoError, describe_io};

/// Outputs written to temporaries, waiting for [`StagedWrites::commit`]. Dropping it without
/// committing deletes the temporaries.
#[derive(Default)]
pub struct StagedWrites {
    files: Vec<(NamedTempFile, PathBuf)>,
    dirs: Vec<(TempDir, PathBuf)>,
}

fn parent_of(target: &Path) -> Result<&Path, IoError> {
    let parent = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(IoError::write(target, "the folder it goes into does not exist"));
    }
    Ok(parent)
}

fn hidden_prefix(target: &Path) -> String {
    format!(".{}.", target.file_name().unwrap_or_default().to_string_lossy())
}

impl StagedWrites {
    /// Nothing staged yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes one file through `write` into a temporary next to `target`. The writer is
    /// buffered and seekable (TIFF encoders need to seek).
    pub fn file(
        &mut self,
        target: &Path,
        write: impl FnOnce(&mut BufWriter<&mut File>) -> Result<(), String>,
    ) -> Result<(), IoError> {
        if target.is_dir() {
            return Err(IoError::write(target, "a folder of that name is in the way"));
        }
        let parent = parent_of(target)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(&hidden_prefix(target))
            .suffix(".partial")
            .tempfile_in(parent)
            .map_err(|e| IoError::write(target, describe_io(&e)))?;
        {
            let mut w = BufWriter::new(tmp.as_file_mut());
            write(&mut w).map_err(|p| IoError::write(target, p))?;
            w.flush().map_err(|e| IoError::write(target, describe_io(&e)))?;
        }
        tmp.as_file().sync_all().map_err(|e| IoError::write(target, describe_io(&e)))?;
        self.files.push((tmp, target.to_owned()));
        Ok(())
    }

    /// Creates a temporary folder next to `target` whose contents `fill` writes (e.g. a PNG
    /// sequence); the folder replaces `target` as a whole on commit.
    pub fn dir(&mut self, target: &Path, fill: impl FnOnce(&Path) -> Result<(), IoError>) -> Result<(), IoError> {
        if target.exists() && !target.is_dir() {
            return Err(IoError::write(target, "a file of that name is in the way"));
        }
        let parent = parent_of(target)?;
        let tmp = tempfile::Builder::new()
            .prefix(&hidden_prefix(target))
            .suffix(".partial")
            .tempdir_in(parent)
            .map_err(|e| IoError::write(target, describe_io(&e)))?;
        fill(tmp.path())?;
        self.dirs.push((tmp, target.to_owned()));
        Ok(())
    }

    /// Renames every staged output into place.
    pub fn commit(self) -> Result<Vec<PathBuf>, IoError> {
        let mut done = Vec::new();
        for (tmp, target) in self.files {
            tmp.persist(&target).map_err(|e| IoError::write(&target, describe_io(&e.error)))?;
            done.push(target);
        }
        for (tmp, target) in self.dirs {
            let staged = tmp.keep();
            // A folder cannot be renamed over a non-empty one: move the old one aside first and
            // delete it only once the new one is in place.
            let old = if target.exists() {
                let aside = target.with_file_name(format!("{}old", hidden_prefix(&target)));
                let _ = std::fs::remove_dir_all(&aside);
                std::fs::rename(&target, &aside).map_err(|e| IoError::write(&target, describe_io(&e)))?;
                Some(aside)
            } else {
                None
            };
            if let Err(e) = std::fs::rename(&staged, &target) {
                if let Some(aside) = &old {
                    let _ = std::fs::rename(aside, &target);
                }
                let _ = std::fs::remove_dir_all(&staged);
                return Err(IoError::write(&target, describe_io(&e)));
            }
            if let Some(aside) = old {
                let _ = std::fs::remove_dir_all(aside);
            }
            done.push(target);
        }
        Ok(done)
    }
}

/// Writes one file atomically.
pub fn write_file_atomic(
    target: &Path,
    write: impl FnOnce(&mut BufWriter<&mut File>) -> Result<(), String>,
) -> Result<(), IoError> {
    let mut staged = StagedWrites::new();
    staged.file(target, write)?;
    staged.commit().map(|_| ())
}
