//! Projects: a folder that holds everything needed to reopen a proofreading session exactly
//! (stack reference, class table, masks with their touched layers, review states, model and
//! adapter references), plus a journal so that a crash or `kill -9` loses at most the stroke in
//! progress.
//!
//! # Folder layout
//!
//! ```text
//! <project>/
//!   project.json               stack reference, classes, model refs, view; written atomically
//!   masks/<class id>/<z>.s4m   one file per stored slice of a class (z as 6+ digits), atomic each
//!   journal.s4j                append-only log of the edits made since the last save
//! ```
//!
//! `project.json`: `{ "format": 1, "stack": { "path", "relative"?, "width", "height", "depth",
//! "dtype" }, "classes": <ClassTable>, "model": { "checkpoint", "checkpoint_sha256", "adapter" },
//! "view"?: { "z" }, "saved_at_unix_s" }`. `path` is the stack as opened (absolute); `relative`
//! is the same file relative to the project folder, so a project moved together with its stack
//! still finds it.
//!
//! `*.s4m` (all integers little-endian): magic `S4EMMASK`, u16 format version (1), u32 width,
//! u32 height, u8 provenance, u8 review state, then for the mask layer and then the touched
//! layer: u32 tile count, and per tile a u32 tile index and 64 × u64 rows; last, the CRC-32 of
//! everything before it. A slice nobody touched has no file.
//!
//! `journal.s4j`: magic `S4EMJRNL`, u16 format version (1), then records
//! `[u32 payload length][u32 CRC-32 of payload][payload]`. A payload is the `Vec<SliceWrite>` of
//! one commit, undo or redo: u32 write count, then per write u16 class id, u32 z, u8 provenance,
//! u8 review state, u32 tile count, and per tile u8 layer (0 mask, 1 touched), u32 tile index,
//! u8 present, then 64 × u64 rows when present.
//!
//! Codes: provenance Empty 0, Model 1, Imported 2, User 3; review Unseen 0, Predicted 1,
//! Corrected 2, Accepted 3.
//!
//! # Durability
//!
//! A journal record is handed to the OS with one `write_all` (no user-space buffer holds it
//! back), so it survives the process being killed; [`Project::set_sync_appends`] also asks the
//! disk to persist each record (power loss). Opening replays every complete record over the
//! saved slices. The first record that is incomplete or fails its checksum ends the replay:
//! the journal as it was is copied beside it (`journal.s4j.damaged-<unix seconds>`) and then
//! cut back to its good part, and [`Recovery`] says what was lost (an incomplete last edit, or
//! a damaged record and the intact ones after it). [`Project::open_read_only`] replays the
//! same way and writes nothing.
//!
//! Depends on `state` (and the `io` error/atomic helpers) only.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::atomic::{sync_dir, write_file_atomic};
use super::error::{IoError, describe_io};
use crate::state::mask::TILE_PX;
use crate::state::{
    ClassId, ClassTable, DType, Layer, MaskVolume, Provenance, ReviewState, SliceEntry, SliceIndex, SliceMask,
    SliceMeta, SliceWrite, Tile, TileWrite, VolumeInfo,
};

/// Most slices a project's stack may have (16.7 million): more is a damaged `project.json`.
pub const MAX_PROJECT_DEPTH: usize = 1 << 24;

/// Version of `project.json` this program writes and reads.
pub const PROJECT_FORMAT: u32 = 1;
/// The file that makes a folder a project.
pub const PROJECT_FILE: &str = "project.json";
const JOURNAL_FILE: &str = "journal.s4j";
const MASKS_DIR: &str = "masks";
const SLICE_MAGIC: &[u8; 8] = b"S4EMMASK";
const JOURNAL_MAGIC: &[u8; 8] = b"S4EMJRNL";
const BINARY_VERSION: u16 = 1;
const JOURNAL_HEADER_BYTES: usize = 10;

/// Why a project could not be created, opened or saved. Messages say what failed and name the
/// file, path last.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// A project file could not be read, or its content is damaged.
    #[error("cannot read {what}: {problem}: {}", path.display())]
    Read {
        /// Which file, e.g. `mask slice`.
        what: &'static str,
        /// What went wrong, e.g. `checksum mismatch`.
        problem: String,
        /// The file concerned.
        path: PathBuf,
    },
    /// A project file could not be written. The masks in memory are untouched.
    #[error("cannot write {what}: {problem}: {}", path.display())]
    Write {
        /// Which file.
        what: &'static str,
        /// What went wrong, e.g. `No space left on device`.
        problem: String,
        /// The file concerned.
        path: PathBuf,
    },
    /// A new project cannot go into this folder.
    #[error("{problem}: {}", path.display())]
    Folder {
        /// Why not.
        problem: String,
        /// The folder.
        path: PathBuf,
    },
    /// Neither the stack's recorded path nor its path relative to the project exists.
    #[error("the stack {} of project {} was not found; choose its new location", stack.display(), project.display())]
    StackMissing {
        /// The project folder.
        project: PathBuf,
        /// The stack path recorded in the project.
        stack: PathBuf,
    },
    /// A stack offered as the new location of the project's stack has another shape.
    #[error("the stack is {found} but the project's stack is {expected}: {}", path.display())]
    ShapeMismatch {
        /// Shape recorded in the project, e.g. `512x512x40 uint8`.
        expected: String,
        /// Shape of the offered stack.
        found: String,
        /// The offered stack.
        path: PathBuf,
    },
    /// An atomic write failed.
    #[error(transparent)]
    Io(#[from] IoError),
}

impl SessionError {
    /// The file or folder the error is about.
    pub fn path(&self) -> &Path {
        match self {
            SessionError::Read { path, .. }
            | SessionError::Write { path, .. }
            | SessionError::Folder { path, .. }
            | SessionError::ShapeMismatch { path, .. } => path,
            SessionError::StackMissing { stack, .. } => stack,
            SessionError::Io(e) => e.path(),
        }
    }
}

fn read_err(what: &'static str, path: &Path, problem: impl Into<String>) -> SessionError {
    SessionError::Read { what, problem: problem.into(), path: path.to_owned() }
}

fn write_err(what: &'static str, path: &Path, problem: impl Into<String>) -> SessionError {
    SessionError::Write { what, problem: problem.into(), path: path.to_owned() }
}

/// Where the project's stack is and what shape it has (to check a relinked stack against).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackRef {
    /// The stack as opened, absolute.
    pub path: PathBuf,
    /// The stack relative to the project folder, when both are on one file system root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relative: Option<PathBuf>,
    /// Slice width in pixels.
    pub width: usize,
    /// Slice height in pixels.
    pub height: usize,
    /// Number of slices.
    pub depth: usize,
    /// Sample type.
    #[serde(with = "dtype_name")]
    pub dtype: DType,
}

impl StackRef {
    /// The reference to an opened stack (the relative path is filled in when the project is
    /// written).
    pub fn from_info(info: &VolumeInfo) -> Self {
        let path = std::path::absolute(&info.path).unwrap_or_else(|_| info.path.clone());
        Self { path, relative: None, width: info.width, height: info.height, depth: info.depth, dtype: info.dtype }
    }

    fn shape(&self) -> String {
        format!("{}x{}x{} {}", self.width, self.height, self.depth, self.dtype)
    }
}

mod dtype_name {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::state::DType;

    pub fn serialize<S: Serializer>(dtype: &DType, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(dtype.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DType, D::Error> {
        let name = String::deserialize(d)?;
        [DType::U8, DType::U16, DType::U32, DType::F32]
            .into_iter()
            .find(|t| t.name() == name)
            .ok_or_else(|| D::Error::custom(format!("unknown sample type `{name}`")))
    }
}

/// The model a project was proofread with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRef {
    /// Base checkpoint file.
    pub checkpoint: Option<PathBuf>,
    /// SHA-256 of the checkpoint (hex), to notice a different file at the same path.
    pub checkpoint_sha256: Option<String>,
    /// Fine-tuned adapter file.
    pub adapter: Option<PathBuf>,
}

/// Where the viewer was.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewState {
    /// Slice shown.
    pub z: usize,
}

/// Content of `project.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectFile {
    /// [`PROJECT_FORMAT`].
    pub format: u32,
    /// The stack.
    pub stack: StackRef,
    /// The class table.
    pub classes: ClassTable,
    /// Model and adapter.
    pub model: ModelRef,
    /// Viewer state, when recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view: Option<ViewState>,
    /// When `project.json` was last written, seconds since the Unix epoch.
    pub saved_at_unix_s: u64,
}

/// What opening a project recovered from its journal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Journal records (commits, undos, redos since the last save) replayed.
    pub replayed_records: usize,
    /// Whether an incomplete or damaged record ended the replay (and, unless the project was
    /// opened read-only, was cut off the journal with everything after it).
    pub torn_tail_dropped: bool,
    /// Bytes not replayed, from the first bad record to the journal's end.
    pub dropped_bytes: u64,
    /// Intact records found after a damaged one, not replayed (each edit depends on those
    /// before it): 0 when only the last record was incomplete.
    pub lost_records: usize,
    /// Where the journal as it was before the cut is kept (`None`: nothing was cut).
    pub kept_as: Option<PathBuf>,
}

impl Recovery {
    /// Whether edits that had been saved to the journal whole were lost (a damaged record
    /// with intact ones after it), as opposed to an edit cut short by a crash.
    pub fn lost_edits(&self) -> bool {
        self.lost_records > 0
    }
}

impl std::fmt::Display for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "recovered {} edits since the last save", self.replayed_records)?;
        if self.lost_records > 0 {
            write!(
                f,
                "; journal record {} is damaged: it and the {} edits after it ({} bytes) were not replayed",
                self.replayed_records + 1,
                self.lost_records,
                self.dropped_bytes
            )?;
        } else if self.torn_tail_dropped {
            write!(f, "; an incomplete last edit ({} bytes) was dropped", self.dropped_bytes)?;
        }
        if let Some(kept) = &self.kept_as {
            write!(f, "; the journal as it was is kept as {}", kept.display())?;
        }
        Ok(())
    }
}

/// A project opened for editing: the project, its masks as they were at the last journalled
/// edit, and what the journal recovered.
#[derive(Debug)]
pub struct OpenedProject {
    /// The project, ready to journal and save.
    pub project: Project,
    /// The masks: saved slices plus every journalled edit since.
    pub masks: MaskVolume,
    /// What was replayed from the journal.
    pub recovery: Recovery,
}

/// An open project folder: journals edits as they are committed and saves masks on request.
#[derive(Debug)]
pub struct Project {
    dir: PathBuf,
    file: ProjectFile,
    /// `None` when opened read-only.
    journal: Option<File>,
    journal_len_bytes: u64,
    /// Slices whose file is out of date.
    dirty: BTreeSet<(ClassId, SliceIndex)>,
    /// Changed slices whose change is not in the journal (see [`Project::mark_changed`]).
    unjournalled: BTreeSet<(ClassId, SliceIndex)>,
    sync_appends: bool,
}

impl Project {
    /// Creates a project in `dir` (created when missing; an existing folder must be empty):
    /// writes `project.json` and an empty journal.
    pub fn create(dir: &Path, mut stack: StackRef, classes: &ClassTable) -> Result<Project, SessionError> {
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
        prepare_empty_dir(&dir)?;
        stack.relative = relative_path(&dir, &stack.path);
        let file = ProjectFile {
            format: PROJECT_FORMAT,
            stack,
            classes: classes.clone(),
            model: ModelRef::default(),
            view: None,
            saved_at_unix_s: 0,
        };
        let mut project = Project {
            journal: Some(fresh_journal(&dir)?),
            journal_len_bytes: JOURNAL_HEADER_BYTES as u64,
            dir,
            file,
            dirty: BTreeSet::new(),
            unjournalled: BTreeSet::new(),
            sync_appends: false,
        };
        project.write_project_file()?;
        Ok(project)
    }

    /// Opens the project in `dir`: loads its saved slices, replays the journal over them and
    /// cuts a bad record off the journal (keeping a copy of it as it was) so new edits follow
    /// good data.
    pub fn open(dir: &Path) -> Result<OpenedProject, SessionError> {
        Self::open_with(dir, true)
    }

    /// Opens the project in `dir` to read it (export, listing): the same masks as
    /// [`Project::open`], and nothing in the folder is written, not even a damaged journal
    /// cut back. Saving or journalling the result is refused.
    pub fn open_read_only(dir: &Path) -> Result<OpenedProject, SessionError> {
        Self::open_with(dir, false)
    }

    fn open_with(dir: &Path, writable: bool) -> Result<OpenedProject, SessionError> {
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
        let file = read_project_file(&dir.join(PROJECT_FILE))?;
        let s = &file.stack;
        let mut masks = MaskVolume::new(s.width, s.height, s.depth);
        load_slices(&dir, &file.classes, &mut masks)?;
        let mut dirty = BTreeSet::new();
        let (recovery, journal_len_bytes) = replay_journal(&dir, &file.classes, &mut masks, &mut dirty, writable)?;
        let path = dir.join(JOURNAL_FILE);
        let journal = if writable {
            let mut journal =
                OpenOptions::new().write(true).open(&path).map_err(|e| write_err("journal", &path, describe_io(&e)))?;
            journal
                .seek(SeekFrom::Start(journal_len_bytes))
                .map_err(|e| write_err("journal", &path, describe_io(&e)))?;
            Some(journal)
        } else {
            None
        };
        let project = Project {
            dir,
            file,
            journal,
            journal_len_bytes,
            dirty,
            unjournalled: BTreeSet::new(),
            sync_appends: false,
        };
        Ok(OpenedProject { project, masks, recovery })
    }

    /// The project folder (absolute).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The content of `project.json` as it is in memory.
    pub fn file(&self) -> &ProjectFile {
        &self.file
    }

    /// The class table as last saved or set.
    pub fn classes(&self) -> &ClassTable {
        &self.file.classes
    }

    /// Whether some slices changed since the last save.
    pub fn has_unsaved_changes(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Whether each journal record is also forced to disk (`fsync`), which survives power loss
    /// at the cost of one disk flush per stroke. Off by default: a record handed to the OS
    /// already survives the program crashing or being killed. [`Project::save`] always syncs.
    pub fn set_sync_appends(&mut self, sync: bool) {
        self.sync_appends = sync;
    }

    /// Journals the writes of one commit, undo or redo (`Commit::writes` of `state::edit`).
    /// On failure the journal is cut back to its last complete record.
    pub fn append(&mut self, writes: &[SliceWrite]) -> Result<(), SessionError> {
        if writes.is_empty() {
            return Ok(());
        }
        let payload = encode_writes(writes);
        let path = self.dir.join(JOURNAL_FILE);
        let len = u32::try_from(payload.len()).map_err(|_| write_err("journal", &path, "edit too large to journal"))?;
        let mut record = Vec::with_capacity(payload.len() + 8);
        record.extend_from_slice(&len.to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        record.extend_from_slice(&payload);
        let (sync, good_len) = (self.sync_appends, self.journal_len_bytes);
        let journal = self.writable_journal()?;
        // One write of the whole record: no buffer of ours holds part of it back.
        let result = journal.write_all(&record).and_then(|()| journal.flush());
        let result = result.and_then(|()| if sync { journal.sync_data() } else { Ok(()) });
        if let Err(e) = result {
            // Leave no partial record for later ones to follow.
            let _ = journal.set_len(good_len);
            let _ = journal.seek(SeekFrom::Start(good_len));
            return Err(write_err("journal", &path, describe_io(&e)));
        }
        self.journal_len_bytes += record.len() as u64;
        self.dirty.extend(writes.iter().map(|w| (w.class, w.z)));
        Ok(())
    }

    /// Journals the whole current content of one slice of a class (for changes made outside
    /// an editor that must survive a crash, e.g. an import or a review state).
    pub fn append_slice(&mut self, masks: &MaskVolume, class: ClassId, z: SliceIndex) -> Result<(), SessionError> {
        self.append(&[full_write(masks, class, z)])
    }

    /// Records that a slice changed without a journal record (model output): it is written at
    /// the next save, and journalled in full just before, but a crash before that save loses
    /// the change.
    pub fn mark_changed(&mut self, class: ClassId, z: SliceIndex) {
        self.dirty.insert((class, z));
        self.unjournalled.insert((class, z));
    }

    /// Saves: rewrites the file of every slice changed since the last save, then
    /// `project.json`, then replaces the journal with an empty one.
    ///
    /// A crash at any point reopens to the state at the call. Every journal record holds the
    /// new *content* (and review state) of what it names, not a difference, so replay is
    /// idempotent and the last record naming a tile decides its value. The masks saved here
    /// are the result of all records, so a slice file written by this save already holds
    /// those last values: replaying the journal over it changes nothing, and replaying it over
    /// the file from before this save gives the same state. Any mix of old and new slice
    /// files plus the old journal therefore reopens identically; only once all files are in
    /// place is the journal emptied. Changes known only through [`Project::mark_changed`] are
    /// journalled in full first so that the argument covers them too. On an error nothing is
    /// lost: the journal still holds every edit and the caller's masks are untouched.
    pub fn save(&mut self, masks: &MaskVolume, classes: &ClassTable) -> Result<(), SessionError> {
        self.check_shape(masks)?;
        if !self.unjournalled.is_empty() {
            let writes: Vec<_> = self.unjournalled.iter().map(|&(c, z)| full_write(masks, c, z)).collect();
            self.append(&writes)?;
            self.unjournalled.clear();
        }
        let path = self.dir.join(JOURNAL_FILE);
        self.writable_journal()?.sync_data().map_err(|e| write_err("journal", &path, describe_io(&e)))?;
        for &(class, z) in &self.dirty {
            if classes.get(class).is_some() {
                write_slice(&self.dir, class, z, masks.entry(class, z))?;
            }
        }
        self.file.classes = classes.clone();
        self.write_project_file()?;
        self.journal = Some(fresh_journal(&self.dir)?);
        self.journal_len_bytes = JOURNAL_HEADER_BYTES as u64;
        self.dirty.clear();
        remove_dropped_classes(&self.dir, classes);
        sync_dir(&self.dir);
        Ok(())
    }

    /// Writes a complete copy of the project (every stored slice) into `new_dir` (created
    /// when missing, else it must be empty) and continues in it. The old folder keeps its last
    /// save and journal.
    pub fn save_as(&mut self, new_dir: &Path, masks: &MaskVolume, classes: &ClassTable) -> Result<(), SessionError> {
        self.check_shape(masks)?;
        let new_dir = std::path::absolute(new_dir).unwrap_or_else(|_| new_dir.to_owned());
        let created = !new_dir.exists();
        prepare_empty_dir(&new_dir)?;
        let mut file = self.file.clone();
        file.classes = classes.clone();
        if let Ok(stack) = self.stack_path() {
            file.stack.path = stack;
        }
        file.stack.relative = relative_path(&new_dir, &file.stack.path);
        let result = (|| {
            for class in classes.iter() {
                for (z, entry) in masks.slices(class.id) {
                    write_slice(&new_dir, class.id, z, Some(entry))?;
                }
            }
            let journal = fresh_journal(&new_dir)?;
            write_project_json(&new_dir, &mut file)?;
            Ok(journal)
        })();
        match result {
            Ok(journal) => {
                sync_dir(&new_dir);
                *self = Project {
                    dir: new_dir,
                    file,
                    journal: Some(journal),
                    journal_len_bytes: JOURNAL_HEADER_BYTES as u64,
                    dirty: BTreeSet::new(),
                    unjournalled: BTreeSet::new(),
                    sync_appends: self.sync_appends,
                };
                Ok(())
            }
            Err(e) => {
                // The folder was empty: everything in it is ours.
                if created {
                    let _ = fs::remove_dir_all(&new_dir);
                } else {
                    let _ = fs::remove_dir_all(new_dir.join(MASKS_DIR));
                    let _ = fs::remove_file(new_dir.join(JOURNAL_FILE));
                }
                Err(e)
            }
        }
    }

    /// The model and adapter the project uses.
    pub fn model(&self) -> &ModelRef {
        &self.file.model
    }

    /// Records the model and adapter in use; written to `project.json` at once.
    pub fn set_model(&mut self, model: ModelRef) -> Result<(), SessionError> {
        self.file.model = model;
        self.write_project_file()
    }

    /// Records the slice shown; written to `project.json` at the next save (it changes too
    /// often to write on every change).
    pub fn set_view_z(&mut self, z: SliceIndex) {
        self.file.view = Some(ViewState { z: z.0 });
    }

    /// Records an edited class table; written to `project.json` at once, so that journalled
    /// edits of a new class survive a crash (journal records of classes missing from the table
    /// are skipped on open: they belong to a removed class).
    pub fn set_classes(&mut self, classes: &ClassTable) -> Result<(), SessionError> {
        self.file.classes = classes.clone();
        self.write_project_file()
    }

    /// The stack recorded in the project.
    pub fn stack(&self) -> &StackRef {
        &self.file.stack
    }

    /// Where the stack is now: its recorded path, else its path relative to the project
    /// folder (project and stack moved together).
    pub fn stack_path(&self) -> Result<PathBuf, SessionError> {
        let stack = &self.file.stack;
        if stack.path.exists() {
            return Ok(stack.path.clone());
        }
        if let Some(rel) = &stack.relative {
            let moved = self.dir.join(rel);
            if moved.exists() {
                return Ok(moved);
            }
        }
        Err(SessionError::StackMissing { project: self.dir.clone(), stack: stack.path.clone() })
    }

    /// Points the project at a stack that moved: accepted only when `info` (the stack opened
    /// at `new_path`) has the recorded width, height, depth and sample type. Written to
    /// `project.json` at once.
    pub fn relink(&mut self, new_path: &Path, info: &VolumeInfo) -> Result<(), SessionError> {
        let mut offered = StackRef::from_info(info);
        offered.path = std::path::absolute(new_path).unwrap_or_else(|_| new_path.to_owned());
        let s = &self.file.stack;
        if (s.width, s.height, s.depth, s.dtype) != (offered.width, offered.height, offered.depth, offered.dtype) {
            return Err(SessionError::ShapeMismatch {
                expected: s.shape(),
                found: offered.shape(),
                path: offered.path,
            });
        }
        offered.relative = relative_path(&self.dir, &offered.path);
        let old = std::mem::replace(&mut self.file.stack, offered);
        self.write_project_file().inspect_err(|_| self.file.stack = old)
    }

    fn check_shape(&self, masks: &MaskVolume) -> Result<(), SessionError> {
        let s = &self.file.stack;
        if (masks.width(), masks.height(), masks.depth()) == (s.width, s.height, s.depth) {
            return Ok(());
        }
        let problem = format!(
            "the masks are {}x{}x{} but the project's stack is {}x{}x{}",
            masks.width(),
            masks.height(),
            masks.depth(),
            s.width,
            s.height,
            s.depth
        );
        Err(write_err("project", &self.dir, problem))
    }

    fn write_project_file(&mut self) -> Result<(), SessionError> {
        self.writable_journal()?;
        write_project_json(&self.dir, &mut self.file)
    }

    /// The journal to append to; an error for a project opened read-only.
    fn writable_journal(&mut self) -> Result<&mut File, SessionError> {
        let path = self.dir.join(JOURNAL_FILE);
        self.journal.as_mut().ok_or_else(|| write_err("journal", &path, "the project was opened read-only"))
    }
}

fn write_project_json(dir: &Path, file: &mut ProjectFile) -> Result<(), SessionError> {
    let path = dir.join(PROJECT_FILE);
    file.saved_at_unix_s =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let json = serde_json::to_vec_pretty(file).map_err(|e| write_err("project file", &path, e.to_string()))?;
    write_file_atomic(&path, |w| w.write_all(&json).map_err(|e| describe_io(&e)))?;
    Ok(())
}

/// Reads a project's `project.json` without opening the project (no journal replay, nothing
/// written): for listing sessions.
pub fn read_project_summary(dir: &Path) -> Result<ProjectFile, SessionError> {
    read_project_file(&dir.join(PROJECT_FILE))
}

fn read_project_file(path: &Path) -> Result<ProjectFile, SessionError> {
    let text = fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => read_err("project file", path, "not found (is this a project folder?)"),
        _ => read_err("project file", path, describe_io(&e)),
    })?;
    let file: ProjectFile = serde_json::from_slice(&text)
        .map_err(|e| read_err("project file", path, format!("not a valid project ({e})")))?;
    if file.format != PROJECT_FORMAT {
        let problem = format!("format {} is not supported (made by a newer version?)", file.format);
        return Err(read_err("project file", path, problem));
    }
    // The stack's shape sizes the mask store: checked like a stack header before it is used.
    let s = &file.stack;
    if s.width == 0 || s.height == 0 || s.depth == 0 || s.depth > MAX_PROJECT_DEPTH {
        let problem = format!(
            "the stack is {}x{} px x {} slices: not a shape a project can have (1 to {MAX_PROJECT_DEPTH} slices)",
            s.width, s.height, s.depth
        );
        return Err(read_err("project file", path, problem));
    }
    let limit = super::options::default_max_slice_bytes();
    super::options::slice_bytes_within(s.width as u64, s.height as u64, s.dtype.size_bytes() as u64, limit)
        .map_err(|problem| read_err("project file", path, problem))?;
    Ok(file)
}

/// Creates `dir` or checks that it is empty.
fn prepare_empty_dir(dir: &Path) -> Result<(), SessionError> {
    let folder_err = |problem: &str| SessionError::Folder { problem: problem.to_owned(), path: dir.to_owned() };
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if dir.join(PROJECT_FILE).exists() {
                return Err(folder_err("this folder already holds a project; open it instead"));
            }
            if entries.next().is_some() {
                return Err(folder_err("a new project needs an empty folder"));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(dir).map_err(|e| write_err("project folder", dir, describe_io(&e)))
        }
        Err(e) => Err(write_err("project folder", dir, describe_io(&e))),
    }
}

fn journal_header() -> Vec<u8> {
    let mut h = JOURNAL_MAGIC.to_vec();
    h.extend_from_slice(&BINARY_VERSION.to_le_bytes());
    h
}

/// Replaces the journal with an empty one (atomically) and returns it open for appending.
fn fresh_journal(dir: &Path) -> Result<File, SessionError> {
    let path = dir.join(JOURNAL_FILE);
    let err = |e: std::io::Error| write_err("journal", &path, describe_io(&e));
    let mut tmp = tempfile::Builder::new().prefix(".journal.s4j.").suffix(".partial").tempfile_in(dir).map_err(err)?;
    tmp.write_all(&journal_header()).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    // The handle stays valid across the rename and is positioned after the header.
    tmp.persist(&path).map_err(|e| err(e.error))
}

/// Best effort: makes renames in `dir` durable (power loss); only Unix can open a folder.
fn slice_path(dir: &Path, class: ClassId, z: SliceIndex) -> PathBuf {
    dir.join(MASKS_DIR).join(class.0.to_string()).join(format!("{:06}.s4m", z.0))
}

fn untouched(e: &SliceEntry) -> bool {
    e.provenance == Provenance::Empty && e.review == ReviewState::Unseen && e.mask.is_empty() && e.touched.is_empty()
}

/// Writes (atomically) or deletes the file of one slice of a class.
fn write_slice(dir: &Path, class: ClassId, z: SliceIndex, entry: Option<&SliceEntry>) -> Result<(), SessionError> {
    let path = slice_path(dir, class, z);
    match entry.filter(|e| !untouched(e)) {
        Some(e) => {
            let parent = path.parent().expect("slice files are in a folder");
            fs::create_dir_all(parent).map_err(|e| write_err("mask folder", parent, describe_io(&e)))?;
            let bytes = encode_slice(e);
            write_file_atomic(&path, |w| w.write_all(&bytes).map_err(|e| describe_io(&e)))?;
        }
        None => match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(write_err("mask slice", &path, describe_io(&e)));
            }
            _ => {}
        },
    }
    Ok(())
}

/// Deletes the slice folders of classes no longer in the table (best effort: open skips them).
fn remove_dropped_classes(dir: &Path, classes: &ClassTable) {
    let Ok(entries) = fs::read_dir(dir.join(MASKS_DIR)) else { return };
    for entry in entries.flatten() {
        let id = entry.file_name().to_str().and_then(|n| n.parse::<u16>().ok());
        if id.is_some_and(|id| classes.get(ClassId(id)).is_none()) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Loads every slice file of the classes in the table.
fn load_slices(dir: &Path, classes: &ClassTable, masks: &mut MaskVolume) -> Result<(), SessionError> {
    let root = dir.join(MASKS_DIR);
    let list = |path: &Path| -> Result<Vec<(String, PathBuf)>, SessionError> {
        let entries = match fs::read_dir(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            r => r.map_err(|e| read_err("mask folder", path, describe_io(&e)))?,
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| read_err("mask folder", path, describe_io(&e)))?;
            if let Some(name) = entry.file_name().to_str() {
                out.push((name.to_owned(), entry.path()));
            }
        }
        out.sort();
        Ok(out)
    };
    for (name, class_dir) in list(&root)? {
        // Folders of classes no longer in the table are leftovers of a removed class.
        let Some(class) = name.parse::<u16>().ok().map(ClassId).filter(|&c| classes.get(c).is_some()) else {
            continue;
        };
        for (name, path) in list(&class_dir)? {
            // Temporaries of interrupted atomic writes start with a dot.
            let Some(z) = name.strip_suffix(".s4m").filter(|s| !s.starts_with('.')).and_then(|s| s.parse().ok()) else {
                continue;
            };
            let bytes = fs::read(&path).map_err(|e| read_err("mask slice", &path, describe_io(&e)))?;
            let (mask, touched, meta) = decode_slice(&bytes, masks.width(), masks.height())
                .map_err(|problem| read_err("mask slice", &path, problem))?;
            masks
                .restore(class, SliceIndex(z), mask, touched, meta)
                .map_err(|e| read_err("mask slice", &path, e.to_string()))?;
        }
    }
    Ok(())
}

/// Where each record of a journal's bytes (after the header) lies, as far as they are intact.
#[derive(Debug, PartialEq, Eq)]
struct JournalScan {
    /// Payload ranges of the intact records before the first bad one.
    good: Vec<std::ops::Range<usize>>,
    /// Where the first bad (incomplete or damaged) record starts, if any.
    bad_at: Option<usize>,
    /// Intact records found after the bad one by following its length field (0 when its
    /// length cannot be trusted or nothing intact follows).
    intact_after: usize,
}

/// The record at `pos` of `data`: its payload range when it is complete and its checksum
/// holds; `Err(true)` when it runs past the end (cut short), `Err(false)` when damaged.
fn record_at(data: &[u8], pos: usize) -> Result<std::ops::Range<usize>, bool> {
    let rest = &data[pos..];
    if rest.len() < 8 {
        return Err(true);
    }
    let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
    if len > rest.len() - 8 {
        return Err(true);
    }
    if len < 4 || crc32fast::hash(&rest[8..8 + len]) != crc {
        return Err(false);
    }
    Ok(pos + 8..pos + 8 + len)
}

/// Splits a journal's records into the intact ones before the first bad record and counts
/// the intact ones after it.
fn scan_journal(data: &[u8]) -> JournalScan {
    let mut scan = JournalScan { good: Vec::new(), bad_at: None, intact_after: 0 };
    let mut pos = JOURNAL_HEADER_BYTES;
    while pos < data.len() {
        match record_at(data, pos) {
            Ok(payload) => {
                pos = payload.end;
                scan.good.push(payload);
            }
            Err(cut_short) => {
                scan.bad_at = Some(pos);
                if !cut_short {
                    // Damaged, not cut short: its length field may still say where the next
                    // record starts.
                    let len = u32::from_le_bytes(data[pos..pos + 4].try_into().expect("4 bytes")) as usize;
                    let mut next = pos + 8 + len;
                    while next < data.len() {
                        let Ok(payload) = record_at(data, next) else { break };
                        next = payload.end;
                        scan.intact_after += 1;
                    }
                }
                break;
            }
        }
    }
    scan
}

/// Replays the journal over `masks`, up to its first bad record. With `writable`, a missing
/// journal is started afresh and a bad record is cut off with everything after it, after the
/// journal as it was is copied beside it. Returns the report and the length of the good part.
fn replay_journal(
    dir: &Path,
    classes: &ClassTable,
    masks: &mut MaskVolume,
    dirty: &mut BTreeSet<(ClassId, SliceIndex)>,
    writable: bool,
) -> Result<(Recovery, u64), SessionError> {
    let path = dir.join(JOURNAL_FILE);
    let data = match fs::read(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // No journal: nothing to replay (e.g. deleted by hand); start a new one.
            if writable {
                drop(fresh_journal(dir)?);
            }
            return Ok((Recovery::default(), JOURNAL_HEADER_BYTES as u64));
        }
        r => r.map_err(|e| read_err("journal", &path, describe_io(&e)))?,
    };
    if data.len() < JOURNAL_HEADER_BYTES || data[..JOURNAL_HEADER_BYTES] != journal_header()[..] {
        let problem = if data.starts_with(JOURNAL_MAGIC) { "unsupported journal version" } else { "not a journal" };
        return Err(read_err(
            "journal",
            &path,
            format!("{problem} (bad header; move the file away to open the project as last saved)"),
        ));
    }
    let scan = scan_journal(&data);
    let mut recovery = Recovery::default();
    for (i, payload) in scan.good.iter().enumerate() {
        let n = i + 1;
        let writes = decode_writes(&data[payload.clone()])
            .map_err(|p| read_err("journal", &path, format!("record {n}: {p}")))?;
        for w in writes.iter().filter(|w| classes.get(w.class).is_some()) {
            masks.apply(w).map_err(|e| read_err("journal", &path, format!("record {n}: {e}")))?;
            dirty.insert((w.class, w.z));
        }
        recovery.replayed_records = n;
    }
    let good_len = scan.good.last().map_or(JOURNAL_HEADER_BYTES, |r| r.end);
    if let Some(bad_at) = scan.bad_at {
        recovery.torn_tail_dropped = true;
        recovery.dropped_bytes = (data.len() - bad_at) as u64;
        recovery.lost_records = scan.intact_after;
        if writable {
            // Keep what is about to be cut: the damaged bytes may still be worth a look.
            let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let kept = dir.join(format!("{JOURNAL_FILE}.damaged-{secs}"));
            fs::write(&kept, &data).map_err(|e| write_err("copy of the damaged journal", &kept, describe_io(&e)))?;
            let cut = OpenOptions::new().write(true).open(&path).and_then(|f| {
                f.set_len(good_len as u64)?;
                f.sync_data()
            });
            cut.map_err(|e| write_err("journal", &path, describe_io(&e)))?;
            recovery.kept_as = Some(kept);
        }
    }
    Ok((recovery, good_len as u64))
}

/// A write that sets every tile and the meta of a slice to its current content.
fn full_write(masks: &MaskVolume, class: ClassId, z: SliceIndex) -> SliceWrite {
    let count = masks.width().div_ceil(TILE_PX) * masks.height().div_ceil(TILE_PX);
    let entry = masks.entry(class, z);
    let mut tiles = Vec::new();
    for layer in [Layer::Mask, Layer::Touched] {
        let plane = entry.map(|e| if layer == Layer::Mask { &e.mask } else { &e.touched });
        for index in 0..count {
            let tile = plane.and_then(|p| p.tile(index)).map(|t| Box::new(*t));
            tiles.push(TileWrite { layer, index: index as u32, tile });
        }
    }
    SliceWrite { class, z, meta: masks.meta(class, z), tiles }
}

fn provenance_code(p: Provenance) -> u8 {
    match p {
        Provenance::Empty => 0,
        Provenance::Model => 1,
        Provenance::Imported => 2,
        Provenance::User => 3,
    }
}

fn review_code(r: ReviewState) -> u8 {
    match r {
        ReviewState::Unseen => 0,
        ReviewState::Predicted => 1,
        ReviewState::Corrected => 2,
        ReviewState::Accepted => 3,
    }
}

fn push_tile(buf: &mut Vec<u8>, tile: &Tile) {
    for row in tile {
        buf.extend_from_slice(&row.to_le_bytes());
    }
}

fn encode_slice(e: &SliceEntry) -> Vec<u8> {
    let mut buf = SLICE_MAGIC.to_vec();
    buf.extend_from_slice(&BINARY_VERSION.to_le_bytes());
    buf.extend_from_slice(&(e.mask.width() as u32).to_le_bytes());
    buf.extend_from_slice(&(e.mask.height() as u32).to_le_bytes());
    buf.push(provenance_code(e.provenance));
    buf.push(review_code(e.review));
    for layer in [&e.mask, &e.touched] {
        let tiles: Vec<usize> = layer.allocated_tiles().collect();
        buf.extend_from_slice(&(tiles.len() as u32).to_le_bytes());
        for i in tiles {
            buf.extend_from_slice(&(i as u32).to_le_bytes());
            push_tile(&mut buf, layer.tile(i).expect("allocated"));
        }
    }
    let crc = crc32fast::hash(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    buf
}

/// Little-endian reader whose errors are user-facing problems.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len()).ok_or("truncated")?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn tile(&mut self) -> Result<Box<Tile>, String> {
        let bytes = self.take(TILE_PX * 8)?;
        let mut t = Box::new([0u64; TILE_PX]);
        for (row, b) in t.iter_mut().zip(bytes.chunks_exact(8)) {
            *row = u64::from_le_bytes(b.try_into().expect("8 bytes"));
        }
        Ok(t)
    }
    fn meta(&mut self) -> Result<SliceMeta, String> {
        const PROVENANCE: [Provenance; 4] =
            [Provenance::Empty, Provenance::Model, Provenance::Imported, Provenance::User];
        const REVIEW: [ReviewState; 4] =
            [ReviewState::Unseen, ReviewState::Predicted, ReviewState::Corrected, ReviewState::Accepted];
        let p = self.u8()?;
        let r = self.u8()?;
        let provenance = *PROVENANCE.get(usize::from(p)).ok_or(format!("unknown provenance code {p}"))?;
        let review = *REVIEW.get(usize::from(r)).ok_or(format!("unknown review state code {r}"))?;
        Ok(SliceMeta { provenance, review })
    }
}

fn decode_slice(bytes: &[u8], width: usize, height: usize) -> Result<(SliceMask, SliceMask, SliceMeta), String> {
    if !bytes.starts_with(SLICE_MAGIC) {
        return Err("not a SAM4EM mask slice (bad magic)".into());
    }
    if bytes.len() < SLICE_MAGIC.len() + 2 + 4 + 4 + 2 + 4 + 4 + 4 {
        return Err("truncated".into());
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("4 bytes")) {
        return Err("checksum mismatch (the file is damaged or truncated)".into());
    }
    let mut r = Reader { data: body, pos: SLICE_MAGIC.len() };
    let version = r.u16()?;
    if version != BINARY_VERSION {
        return Err(format!("format version {version} is not supported"));
    }
    let (w, h) = (r.u32()? as usize, r.u32()? as usize);
    if (w, h) != (width, height) {
        return Err(format!("slice is {w}x{h} px but the project's stack is {width}x{height} px"));
    }
    let meta = r.meta()?;
    let mut layers = [SliceMask::new(width, height), SliceMask::new(width, height)];
    for layer in &mut layers {
        let count = r.u32()?;
        if count as usize > layer.tile_count() {
            return Err(format!("{count} tiles in a slice of {}", layer.tile_count()));
        }
        for _ in 0..count {
            let index = r.u32()? as usize;
            if index >= layer.tile_count() {
                return Err(format!("tile {index} is outside the slice's {} tiles", layer.tile_count()));
            }
            layer.set_tile(index, Some(r.tile()?));
        }
    }
    if r.pos != body.len() {
        return Err(format!("{} unexpected bytes at the end", body.len() - r.pos));
    }
    let [mask, touched] = layers;
    Ok((mask, touched, meta))
}

fn encode_writes(writes: &[SliceWrite]) -> Vec<u8> {
    let mut buf = Vec::new();
    buf.extend_from_slice(&(writes.len() as u32).to_le_bytes());
    for w in writes {
        buf.extend_from_slice(&w.class.0.to_le_bytes());
        // Slices beyond u32 cannot exist in a stack whose masks fit in memory.
        buf.extend_from_slice(&(w.z.0 as u32).to_le_bytes());
        buf.push(provenance_code(w.meta.provenance));
        buf.push(review_code(w.meta.review));
        buf.extend_from_slice(&(w.tiles.len() as u32).to_le_bytes());
        for t in &w.tiles {
            buf.push(match t.layer {
                Layer::Mask => 0,
                Layer::Touched => 1,
            });
            buf.extend_from_slice(&t.index.to_le_bytes());
            buf.push(u8::from(t.tile.is_some()));
            if let Some(tile) = &t.tile {
                push_tile(&mut buf, tile);
            }
        }
    }
    buf
}

fn decode_writes(payload: &[u8]) -> Result<Vec<SliceWrite>, String> {
    let mut r = Reader { data: payload, pos: 0 };
    let count = r.u32()?;
    let mut writes = Vec::new();
    for _ in 0..count {
        let class = ClassId(r.u16()?);
        let z = SliceIndex(r.u32()? as usize);
        let meta = r.meta()?;
        let n = r.u32()?;
        let mut tiles = Vec::new();
        for _ in 0..n {
            let layer = match r.u8()? {
                0 => Layer::Mask,
                1 => Layer::Touched,
                l => return Err(format!("unknown layer code {l}")),
            };
            let index = r.u32()?;
            let tile = match r.u8()? {
                0 => None,
                1 => Some(r.tile()?),
                p => return Err(format!("bad tile flag {p}")),
            };
            tiles.push(TileWrite { layer, index, tile });
        }
        writes.push(SliceWrite { class, z, meta, tiles });
    }
    if r.pos != payload.len() {
        return Err(format!("{} unexpected bytes at the end", payload.len() - r.pos));
    }
    Ok(writes)
}

/// `to` relative to the folder `from_dir` (through `..` where needed), with symbolic links
/// resolved where the paths exist. `None` when they share no root (another drive).
fn relative_path(from_dir: &Path, to: &Path) -> Option<PathBuf> {
    let resolve = |p: &Path| fs::canonicalize(p).or_else(|_| std::path::absolute(p)).ok();
    let (from, to) = (resolve(from_dir)?, resolve(to)?);
    let (f, t): (Vec<Component>, Vec<Component>) = (from.components().collect(), to.components().collect());
    if f.first() != t.first() {
        return None;
    }
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut rel = PathBuf::new();
    for _ in common..f.len() {
        rel.push("..");
    }
    for c in &t[common..] {
        rel.push(c);
    }
    (!rel.as_os_str().is_empty()).then_some(rel)
}

/// FNV-1a, 64 bits: a hash that stays the same across Rust releases and platforms.
fn fnv1a_64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// Folder where the session of a stack opened without a project is kept:
/// `data_dir/sessions/<file name>-<16 hex digits>`, the digits a stable hash of the stack's
/// canonical path, so the same stack always finds its session and two stacks of one name don't
/// share one.
pub fn autosession_dir(data_dir: &Path, stack: &Path) -> PathBuf {
    let canonical =
        fs::canonicalize(stack).or_else(|_| std::path::absolute(stack)).unwrap_or_else(|_| stack.to_owned());
    let name: String = stack
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' })
        .take(64)
        .collect();
    let name = name.trim_start_matches('.');
    let name = if name.is_empty() { "stack" } else { name };
    let hash = fnv1a_64(canonical.as_os_str().as_encoded_bytes());
    data_dir.join("sessions").join(format!("{name}-{hash:016x}"))
}

/// Where this program keeps its data (autosaved sessions): `$SAM4EM_DATA_DIR`, else the
/// platform's place: `$XDG_DATA_HOME/sam4em` or `~/.local/share/sam4em` (Linux and other
/// Unixes), `%APPDATA%\sam4em` (Windows), `~/Library/Application Support/sam4em` (macOS).
pub fn default_data_dir() -> Option<PathBuf> {
    data_dir_from(|name| std::env::var_os(name))
}

fn data_dir_from(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> Option<PathBuf> {
    let var = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = var("SAM4EM_DATA_DIR") {
        return Some(dir);
    }
    if cfg!(windows) {
        return var("APPDATA").map(|d| d.join("sam4em"));
    }
    if cfg!(target_os = "macos") {
        return var("HOME").map(|h| h.join("Library/Application Support/sam4em"));
    }
    // XDG: a relative XDG_DATA_HOME is invalid and must be ignored.
    if let Some(xdg) = var("XDG_DATA_HOME").filter(|p| p.is_absolute()) {
        return Some(xdg.join("sam4em"));
    }
    var("HOME").map(|h| h.join(".local/share/sam4em"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_entry() -> SliceEntry {
        let mut mask = SliceMask::new(130, 70);
        mask.set(129, 69, true);
        mask.set(3, 4, true);
        let mut touched = SliceMask::new(130, 70);
        touched.set(3, 4, true);
        SliceEntry { mask, touched, provenance: Provenance::User, review: ReviewState::Accepted, version: 9 }
    }

    #[test]
    fn slice_file_round_trips_and_detects_damage() {
        let e = sample_entry();
        let bytes = encode_slice(&e);
        let (mask, touched, meta) = decode_slice(&bytes, 130, 70).unwrap();
        assert_eq!(
            (mask, touched, meta),
            (e.mask.clone(), e.touched.clone(), SliceMeta { provenance: e.provenance, review: e.review })
        );
        let mut bad = bytes.clone();
        bad[20] ^= 1;
        assert!(decode_slice(&bad, 130, 70).unwrap_err().contains("checksum"));
        assert!(decode_slice(&bytes[..bytes.len() - 9], 130, 70).is_err());
        assert!(decode_slice(&bytes, 131, 70).unwrap_err().contains("130x70"));
        assert!(decode_slice(b"S4EMJRNL", 130, 70).unwrap_err().contains("magic"));
    }

    #[test]
    fn writes_round_trip() {
        let mut volume = MaskVolume::new(130, 70, 4);
        let e = sample_entry();
        volume.restore(ClassId(2), SliceIndex(3), e.mask, e.touched, SliceMeta::UNTOUCHED).unwrap();
        let writes =
            vec![full_write(&volume, ClassId(2), SliceIndex(3)), full_write(&volume, ClassId(1), SliceIndex(0))];
        assert_eq!(decode_writes(&encode_writes(&writes)).unwrap(), writes);
        assert!(decode_writes(&encode_writes(&writes)[..30]).is_err());
    }

    #[test]
    fn relative_paths() {
        let base = std::path::absolute("/a/b/proj").unwrap();
        let rel = relative_path(&base, &std::path::absolute("/a/c/stack.tif").unwrap()).unwrap();
        assert_eq!(rel, Path::new("../../c/stack.tif"));
        let rel = relative_path(&base, &base.join("s.tif")).unwrap();
        assert_eq!(rel, Path::new("s.tif"));
    }

    #[test]
    fn fnv_is_the_reference_function() {
        // Reference values of FNV-1a 64.
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn data_dir_precedence() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| std::ffi::OsString::from(v))
        };
        assert_eq!(data_dir_from(env(&[("SAM4EM_DATA_DIR", "/d"), ("HOME", "/h")])), Some(PathBuf::from("/d")));
        if cfg!(all(unix, not(target_os = "macos"))) {
            assert_eq!(
                data_dir_from(env(&[("XDG_DATA_HOME", "/x"), ("HOME", "/h")])),
                Some(PathBuf::from("/x/sam4em"))
            );
            assert_eq!(
                data_dir_from(env(&[("XDG_DATA_HOME", "rel"), ("HOME", "/h")])),
                Some(PathBuf::from("/h/.local/share/sam4em"))
            );
            assert_eq!(data_dir_from(env(&[])), None);
        }
    }
}
