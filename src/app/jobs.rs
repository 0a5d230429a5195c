//! One-shot background jobs (named threads): opening a stack with what comes with it,
//! importing a label map, opening a probability map, native file dialogs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::Receiver;
use eframe::egui;

use super::OpenRequest;
use crate::io::{self, OpenOptions};
use crate::state::{ClassTable, MaskVolume, Volume};

/// A finished open job.
pub(super) struct Opened {
    pub(super) request: OpenRequest,
    pub(super) volume: Arc<Volume>,
    pub(super) masks: MaskVolume,
    pub(super) prediction: Option<Arc<Volume>>,
    pub(super) notes: Vec<String>,
}

/// What a background job sends back.
pub(super) enum JobResult {
    Opened(Result<Opened, String>),
    Imported(Result<(MaskVolume, Vec<String>), String>),
    Prediction(Result<Arc<Volume>, String>),
    Picked(DialogKind, Option<PathBuf>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DialogKind {
    OpenFile,
    OpenFolder,
    ImportLabels,
    OpenPrediction,
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

/// Opens a stack and imports what comes with it (runs on a job thread).
pub(super) fn open_job(request: OpenRequest, classes: ClassTable) -> Result<Opened, String> {
    let opts = OpenOptions::default();
    let volume = io::open_stack(&request.stack, &opts).map_err(|e| e.to_string())?;
    let mut masks = MaskVolume::new(volume.width(), volume.height(), volume.depth());
    let mut notes = Vec::new();
    if let Some(labels) = &request.labels {
        notes.extend(import_labels(labels, request.label_map.as_deref(), &classes, &mut masks)?);
    }
    for (class, path) in &request.masks {
        let Some(def) = classes.find(class) else {
            return Err(format!("no class `{class}` for the masks in {}", path.display()));
        };
        io::import_binary_masks(path, def.id, &mut masks, &opts).map_err(|e| e.to_string())?;
        notes.push(format!("{} imported", def.name));
    }
    let prediction = match &request.prediction {
        Some(p) => Some(open_prediction(p, &volume)?),
        None => None,
    };
    Ok(Opened { request, volume: Arc::new(volume), masks, prediction, notes })
}

pub(super) fn import_labels(
    labels: &Path,
    map: Option<&str>,
    classes: &ClassTable,
    masks: &mut MaskVolume,
) -> Result<Vec<String>, String> {
    let mapping = match map {
        Some(spec) => io::parse_label_mapping(spec, classes).map_err(|e| format!("label mapping `{spec}`: {e}"))?,
        None => match io::sidecar_mapping(labels, classes).map_err(|e| e.to_string())? {
            Some(m) => m,
            None => classes.iter().map(|c| (u64::from(c.id.0), c.id)).collect(),
        },
    };
    let report = io::import_label_map(labels, &mapping, masks, &OpenOptions::default()).map_err(|e| e.to_string())?;
    let mut notes = vec![format!("labels from {}", labels.file_name().unwrap_or_default().to_string_lossy())];
    if !report.unmapped_values.is_empty() {
        let values: Vec<String> = report.unmapped_values.keys().take(6).map(|v| v.to_string()).collect();
        notes.push(format!("unmapped label values: {}", values.join(", ")));
    }
    Ok(notes)
}

pub(super) fn open_prediction(path: &Path, volume: &Volume) -> Result<Arc<Volume>, String> {
    let p = io::open_stack(path, &OpenOptions { cache_budget_bytes: 256 << 20, ..Default::default() })
        .map_err(|e| e.to_string())?;
    if (p.width(), p.height(), p.depth()) != (volume.width(), volume.height(), volume.depth()) {
        return Err(format!(
            "the probability map is {}x{} px x {} slices but the stack is {}x{} px x {} slices: {}",
            p.width(),
            p.height(),
            p.depth(),
            volume.width(),
            volume.height(),
            volume.depth(),
            path.display()
        ));
    }
    Ok(Arc::new(p))
}
