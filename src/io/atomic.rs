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

pub(crate) fn hidden_prefix(target: &Path) -> String {
    format!(".{}.", target.file_name().unwrap_or_default().to_string_lossy())
}

/// A temporary's builder whose files and folders get the mode any program's output gets (0666
/// or 0777 less the user's umask), not tempfile's owner-only 0600 / 0700: what we write is the
/// user's, and a colleague on the lab server can read it like anything else they make.
pub(crate) fn staging(prefix: &str, dir: bool) -> tempfile::Builder<'_, 'static> {
    let mut b = tempfile::Builder::new();
    b.prefix(prefix).suffix(".partial");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        b.permissions(std::fs::Permissions::from_mode(if dir { 0o777 } else { 0o666 }));
    }
    #[cfg(not(unix))]
    let _ = dir;
    b
}

/// Asks the disk to persist a folder's entries (the renames into it): without it, a power
/// loss right after an export can leave a folder that lacks files already reported written.
pub(crate) fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
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
        let mut tmp = staging(&hidden_prefix(target), false)
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
        let tmp = staging(&hidden_prefix(target), true)
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
        let folders: std::collections::BTreeSet<&Path> = done.iter().filter_map(|p| p.parent()).collect();
        for folder in folders {
            sync_dir(folder);
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
