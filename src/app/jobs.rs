//! One-shot background jobs (named threads): opening a stack with what comes with it (its
//! automatic session, restored or started), importing a label map, opening a probability map,
//! thresholding predictions to accept, and the native file dialogs `files` asks for. Each
//! sends one [`JobResult`] back, failures as a typed [`JobError`] naming the file. Runs off the
//! UI thread on plain data: may use `io`, `state` and the notices' types, never the app.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::Receiver;
use eframe::egui;

use super::OpenRequest;
use super::command::DialogKind;
use crate::io::session::{self, Project, SessionError, StackRef};
use crate::io::{self, IoError, OpenOptions};
use crate::state::bitplane::BitPlane;
use crate::state::{ClassId, ClassTable, MaskVolume, SliceError, SliceIndex, Volume};
use crate::ui::notify::Notice;

/// A finished open job.
pub(super) struct Opened {
    pub(super) request: OpenRequest,
    pub(super) volume: Arc<Volume>,
    pub(super) masks: MaskVolume,
    pub(super) prediction: Option<Arc<Volume>>,
    /// What the user is told about the opening (project restored, labels imported, edits
    /// not journalled).
    pub(super) notes: Vec<Notice>,
    /// Where edits are journalled.
    pub(super) session: Option<Project>,
    /// The class table of a reopened project or session (replaces the app's).
    pub(super) classes: Option<ClassTable>,
}

/// Why a background job did not do what was asked. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub(super) enum JobError {
    /// A stack, label map or export could not be read or written.
    #[error(transparent)]
    Io(#[from] IoError),
    /// A project or session could not be read or written.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// A slice of a probability map could not be read.
    #[error(transparent)]
    Slice(#[from] SliceError),
    /// A `VALUE=CLASS,...` mapping that does not parse.
    #[error("label mapping `{spec}`: {problem}")]
    LabelMapping {
        /// The mapping as given.
        spec: String,
        /// What is wrong with it.
        problem: String,
    },
    /// Masks given for a class the table does not have.
    #[error("no class `{class}` for the masks in {}", path.display())]
    UnknownClass {
        /// The class name given.
        class: String,
        /// The mask stack.
        path: PathBuf,
    },
    /// A probability map whose shape is not the stack's.
    #[error(
        "the probability map is {}x{} px x {} slices but the stack is {}x{} px x {} slices: {}",
        map[0], map[1], map[2], stack[0], stack[1], stack[2], path.display()
    )]
    PredictionShape {
        /// Width, height, depth of the map.
        map: [usize; 3],
        /// Width, height, depth of the stack.
        stack: [usize; 3],
        /// The map's file.
        path: PathBuf,
    },
}

/// Why an open job did not produce a document.
pub(super) enum OpenFailure {
    /// Shown as an error.
    Error(JobError),
    /// A project whose stack is not where it was: ask the user for its new location.
    StackMissing { project: PathBuf, message: String },
}

impl<E: Into<JobError>> From<E> for OpenFailure {
    fn from(e: E) -> Self {
        OpenFailure::Error(e.into())
    }
}

/// What a background job sends back.
pub(super) enum JobResult {
    Opened(Box<Result<Opened, OpenFailure>>),
    Imported(Result<(MaskVolume, Vec<Notice>), JobError>),
    Prediction(Result<Arc<Volume>, JobError>),
    /// Thresholded prediction slices to accept into a class.
    PredictionPlanes(PlanesFor),
    /// A finished export: what was written.
    Exported(Result<Vec<PathBuf>, JobError>),
    Picked(DialogKind, Option<PathBuf>),
}

/// One-shot jobs in flight.
pub(super) struct Jobs {
    pub(super) tx: crossbeam_channel::Sender<JobResult>,
    pub(super) rx: Receiver<JobResult>,
    pub(super) running: Vec<JoinHandle<()>>,
}

impl Jobs {
    pub(super) fn spawn(&mut self, name: &str, ctx: &egui::Context, f: impl FnOnce() -> JobResult + Send + 'static) {
        let tx = self.tx.clone();
        let ctx = ctx.clone();
        match std::thread::Builder::new().name(name.to_owned()).spawn(move || {
            let _ = tx.send(f());
            ctx.request_repaint();
        }) {
            Ok(h) => self.running.push(h),
            Err(e) => tracing::error!("cannot start the {name} thread: {e}"),
        }
        self.running.retain(|h| !h.is_finished());
    }

    pub(super) fn busy(&self) -> bool {
        self.running.iter().any(|h| !h.is_finished())
    }
}

/// Whether `path` is a project folder (rather than a folder of slices).
pub(super) fn is_project(path: &Path) -> bool {
    path.join(session::PROJECT_FILE).is_file()
}

/// Opens a project folder: its masks (saved slices + journal) and its stack, at `relocated`
/// when the user has just said where the stack moved (runs on a job thread).
pub(super) fn open_project_job(dir: &Path, relocated: Option<PathBuf>) -> Result<Opened, OpenFailure> {
    let session::OpenedProject { mut project, masks, recovery } = Project::open(dir)?;
    let missing =
        |project: &Project, message: String| OpenFailure::StackMissing { project: project.dir().to_owned(), message };
    let volume = match relocated {
        // The user's answer to "where is the stack now?": a wrong answer asks again.
        Some(path) => {
            let volume =
                io::open_stack(&path, &OpenOptions::default()).map_err(|e| missing(&project, e.to_string()))?;
            project.relink(&path, volume.info()).map_err(|e| missing(&project, e.to_string()))?;
            volume
        }
        None => {
            let path = match project.stack_path() {
                Ok(p) => p,
                Err(e @ SessionError::StackMissing { .. }) => return Err(missing(&project, e.to_string())),
                Err(e) => return Err(e.into()),
            };
            let volume = io::open_stack(&path, &OpenOptions::default())?;
            let (s, info) = (project.stack(), volume.info());
            if (s.width, s.height, s.depth, s.dtype) != (info.width, info.height, info.depth, info.dtype) {
                // Same place, other content: the project's masks do not fit it.
                let message = format!(
                    "the stack at {} is now {}x{}x{} {} but the project was made for {}x{}x{} {}; choose the right stack",
                    path.display(),
                    info.width,
                    info.height,
                    info.depth,
                    info.dtype,
                    s.width,
                    s.height,
                    s.depth,
                    s.dtype
                );
                return Err(missing(&project, message));
            }
            volume
        }
    };
    let mut notes = vec![Notice::info(format!("project {}", project.dir().display()))];
    notes.extend(recovery_notice(&recovery));
    let classes = Some(project.classes().clone());
    Ok(Opened {
        request: OpenRequest::stack(project.dir()),
        volume: Arc::new(volume),
        masks,
        prediction: None,
        notes,
        session: Some(project),
        classes,
    })
}

/// What the user is told about a journal's replay: nothing when there was nothing to
/// replay, a warning when whole edits were lost to a damaged record.
fn recovery_notice(recovery: &session::Recovery) -> Option<Notice> {
    let text = recovery.to_string();
    if recovery.lost_edits() {
        Some(Notice::warning(text))
    } else {
        (recovery.replayed_records > 0 || recovery.torn_tail_dropped).then(|| Notice::info(text))
    }
}

/// Opens a stack and imports what comes with it (runs on a job thread). Edits to a stack
/// opened without a project are journalled to its automatic session under `data_dir`; when
/// that session already holds masks (edits of an earlier run, maybe one that crashed) they
/// are restored instead of importing again.
pub(super) fn open_job(
    request: OpenRequest,
    classes: ClassTable,
    data_dir: Option<PathBuf>,
) -> Result<Opened, OpenFailure> {
    if is_project(&request.stack) {
        return open_project_job(&request.stack, None);
    }
    let opts = OpenOptions::default();
    let volume = io::open_stack(&request.stack, &opts)?;
    let mut notes = Vec::new();
    let (mut session, restored) = match &data_dir {
        Some(data) => autosession(data, &volume, &classes, &mut notes),
        None => {
            notes.push(Notice::warning("no data folder (set SAM4EM_DATA_DIR or HOME): edits are not journalled"));
            (None, None)
        }
    };
    if let Some((masks, session_classes)) = restored {
        if request.labels.is_some() || !request.masks.is_empty() {
            notes.push(Notice::info(
                "labels not imported again: the session has masks (File > Import label map adds them)",
            ));
        }
        let prediction = match &request.prediction {
            Some(p) => Some(open_prediction(p, &volume)?),
            None => None,
        };
        return Ok(Opened {
            request,
            volume: Arc::new(volume),
            masks,
            prediction,
            notes,
            session,
            classes: Some(session_classes),
        });
    }
    let mut masks = MaskVolume::new(volume.width(), volume.height(), volume.depth());
    if let Some(labels) = &request.labels {
        notes.extend(import_labels(labels, request.label_map.as_deref(), &classes, &mut masks)?);
    }
    for (class, path) in &request.masks {
        let Some(def) = classes.find(class) else {
            return Err(JobError::UnknownClass { class: class.clone(), path: path.clone() }.into());
        };
        io::import_binary_masks(path, def.id, &mut masks, &opts)?;
        notes.push(Notice::info(format!("{} imported", def.name)));
    }
    let prediction = match &request.prediction {
        Some(p) => Some(open_prediction(p, &volume)?),
        None => None,
    };
    // Imports are not journalled edits: write them into the fresh session's files.
    if let Some(project) = &mut session {
        for class in masks.classes().collect::<Vec<_>>() {
            for z in masks.slices(class).map(|(z, _)| z).collect::<Vec<_>>() {
                project.mark_changed(class, z);
            }
        }
        if let Err(e) = project.save(&masks, &classes) {
            notes.push(Notice::from_error(&e).context("edits are not journalled"));
            session = None;
        }
    }
    Ok(Opened { request, volume: Arc::new(volume), masks, prediction, notes, session, classes: None })
}

/// The automatic session of a stack: reopened (with its masks and classes) when it holds
/// any, else created empty (or reused when empty). A session that cannot be read, or was made
/// for a stack of another shape, is moved aside (never deleted) and a new one started.
fn autosession(
    data_dir: &Path,
    volume: &Volume,
    classes: &ClassTable,
    notes: &mut Vec<Notice>,
) -> (Option<Project>, Option<(MaskVolume, ClassTable)>) {
    let dir = session::autosession_dir(data_dir, volume.path());
    if is_project(&dir) {
        match Project::open(&dir) {
            Ok(op) => {
                let s = op.project.stack();
                let same = (s.width, s.height, s.depth, s.dtype)
                    == (volume.width(), volume.height(), volume.depth(), volume.info().dtype);
                if same && op.masks.classes().next().is_some() {
                    notes.push(Notice::info("edits restored from the last session"));
                    notes.extend(recovery_notice(&op.recovery));
                    let classes = op.project.classes().clone();
                    return (Some(op.project), Some((op.masks, classes)));
                }
                if same {
                    return (Some(op.project), None);
                }
                drop(op);
                move_aside(&dir, "made for a stack of another shape", notes);
            }
            Err(e) => move_aside(&dir, &e.to_string(), notes),
        }
    }
    if let Some(parent) = dir.parent()
        && let Err(e) = std::fs::create_dir_all(parent)
    {
        notes.push(Notice::warning(format!("edits are not journalled: cannot create {}: {e}", parent.display())));
        return (None, None);
    }
    match Project::create(&dir, StackRef::from_info(volume.info()), classes) {
        Ok(p) => (Some(p), None),
        Err(e) => {
            notes.push(Notice::from_error(&e).context("edits are not journalled"));
            (None, None)
        }
    }
}

fn move_aside(dir: &Path, why: &str, notes: &mut Vec<Notice>) {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let aside = dir.with_extension(format!("old-{secs}"));
    match std::fs::rename(dir, &aside) {
        Ok(()) => notes
            .push(Notice::warning(format!("the last session could not be used ({why}); kept as {}", aside.display()))),
        Err(e) => {
            notes.push(Notice::warning(format!("the last session could not be used ({why}) nor moved aside: {e}")))
        }
    }
}

/// Thresholded probability slices for accepting a prediction (runs on a job thread).
pub(super) fn prediction_planes(
    prediction: &Volume,
    slices: Vec<SliceIndex>,
    threshold: f32,
) -> Result<Vec<(SliceIndex, BitPlane)>, JobError> {
    slices
        .into_iter()
        .map(|z| {
            let slice = prediction.slice(z)?;
            let p = super::loader::probabilities(&slice.data);
            Ok((z, threshold_plane(prediction.width(), prediction.height(), &p, threshold)))
        })
        .collect()
}

/// The pixels of a probability slice above `threshold` (the rule of `state::probability_cut`).
pub(super) fn threshold_plane(width: usize, height: usize, probabilities: &[f32], threshold: f32) -> BitPlane {
    let mut plane = BitPlane::new(width, height);
    for (i, _) in probabilities.iter().enumerate().filter(|(_, p)| **p > threshold) {
        plane.set(i % width, i / width, true);
    }
    plane
}

/// The class a set of prediction planes is for.
pub(super) type PlanesFor = (ClassId, Result<Vec<(SliceIndex, BitPlane)>, JobError>);

pub(super) fn import_labels(
    labels: &Path,
    map: Option<&str>,
    classes: &ClassTable,
    masks: &mut MaskVolume,
) -> Result<Vec<Notice>, JobError> {
    let mapping = match map {
        Some(spec) => io::parse_label_mapping(spec, classes)
            .map_err(|problem| JobError::LabelMapping { spec: spec.to_owned(), problem })?,
        None => match io::sidecar_mapping(labels, classes)? {
            Some(m) => m,
            None => classes.iter().map(|c| (u64::from(c.id.0), c.id)).collect(),
        },
    };
    let report = io::import_label_map(labels, &mapping, masks, &OpenOptions::default())?;
    let mut notes =
        vec![Notice::info(format!("labels from {}", labels.file_name().unwrap_or_default().to_string_lossy()))];
    if !report.unmapped_values.is_empty() {
        let values: Vec<String> = report.unmapped_values.keys().take(6).map(|v| v.to_string()).collect();
        let text = format!("label values not mapped to a class (left unlabelled): {}", values.join(", "));
        // Expected when the user's mapping leaves them out; a surprise under the default one.
        notes.push(if map.is_some() { Notice::info(text) } else { Notice::warning(text) });
    }
    Ok(notes)
}

pub(super) fn open_prediction(path: &Path, volume: &Volume) -> Result<Arc<Volume>, JobError> {
    let p = io::open_stack(path, &OpenOptions { cache_budget_bytes: 256 << 20, ..Default::default() })?;
    let (map, stack) = ([p.width(), p.height(), p.depth()], [volume.width(), volume.height(), volume.depth()]);
    if map != stack {
        return Err(JobError::PredictionShape { map, stack, path: path.to_owned() });
    }
    Ok(Arc::new(p))
}
