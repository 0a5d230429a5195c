//! The model in the app: which checkpoint (remembered in `model.json` beside the recent-files
//! list), the `inference` and `trainer` workers, the model's predictions per class and slice,
//! adapter versions (files in the project's `adapters/` folder), the training queue and
//! held-out slices, and checkpoint downloads.
//!
//! Every asynchronous result carries its request generation and adapter version; results of
//! a superseded request or an older adapter are dropped here.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use burn::tensor::Device;
use eframe::egui;

use super::document::Document;
use crate::infer::worker::{InferCommand, InferEvent, InferenceWorker, SharedImages};
use crate::infer::{Seed, StackRequest, model_window, slice_to_u8};
use crate::io::download::{self, Phase};
use crate::io::session::ModelRef;
use crate::model::Sam4emConfig;
use crate::model::adapter::BaseCheckpoint;
use crate::model::checkpoints::{OFFICIAL, Sha256Known};
use crate::model::device::{Precision, device_at, half_precision_available};
use crate::model::footprint::TrainingMemoryModel;
use crate::model::multi::{AdapterSet, AdapterSetMeta, ModelSource};
use crate::model::prompt::{BoxPrompt, PointPrompt};
use crate::state::bitplane::{BitPlane, PixelBox};
use crate::state::{ClassId, ClassTable, Provenance, ReviewState, SliceIndex, Volume};
use crate::train::memory::{ActivationsChoice, Available};
use crate::train::worker::{PendingSample, TrainJob, TrainerEvent, TrainerWorker};
use crate::train::{Control, Schedule, TrainConfig, TrainEvent};
use crate::ui::model::{ModelAction, ModelPanelSettings, ModelView, TrainingView, VersionRow};

/// What the user chose, remembered between runs.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelSettings {
    /// The SAM 2 checkpoint.
    pub checkpoint: Option<PathBuf>,
    /// A model configuration (reference JSON) for checkpoints that are not a SAM 2 size.
    #[serde(default)]
    pub config: Option<PathBuf>,
    /// The first-run dialog was answered ("Not now" or a choice).
    #[serde(default)]
    pub first_run_done: bool,
    /// The numbers predictions are computed with (f16 only on a GPU that has them; training
    /// always computes in f32).
    #[serde(default)]
    pub precision: Precision,
}

impl ModelSettings {
    fn path(config_dir: Option<&Path>) -> Option<PathBuf> {
        config_dir.map(|d| d.join("model.json"))
    }

    fn load(config_dir: Option<&Path>) -> Self {
        Self::path(config_dir)
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    /// The model configuration file, parsed (`None` when there is none).
    fn read_config(&self) -> Result<Option<Sam4emConfig>, String> {
        let Some(p) = &self.config else { return Ok(None) };
        let text = std::fs::read_to_string(p)
            .map_err(|e| format!("cannot read the model configuration: {e}: {}", p.display()))?;
        Sam4emConfig::from_reference_json(&text).map(Some).map_err(|e| format!("{e}: {}", p.display()))
    }

    fn save(&self, config_dir: Option<&Path>) -> Result<(), String> {
        let Some(path) = Self::path(config_dir) else { return Ok(()) };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot save the model choice: {e}: {}", dir.display()))?;
        }
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        std::fs::write(&path, text).map_err(|e| format!("cannot save the model choice: {e}: {}", path.display()))
    }
}

/// Where the model stands.
#[derive(Clone, Debug, PartialEq)]
enum Status {
    NoCheckpoint,
    Loading,
    Ready,
    Failed(String),
}

/// The model's output for the open stack.
#[derive(Debug, Default)]
pub(super) struct Predictions {
    /// (class index in model order, z) → probabilities 0–255, `width × height`.
    slices: HashMap<(usize, usize), Arc<Vec<u8>>>,
    /// Adapter version of each stored slice.
    versions: HashMap<(usize, usize), u64>,
    /// Bumped on every change (display keys).
    pub(super) stamp: u64,
}

/// Most bytes of model predictions kept in memory; beyond it the slices farthest from the
/// one on screen are forgotten (they can be predicted again).
const PREDICTION_BUDGET_BYTES: usize = 2 << 30;

impl Predictions {
    /// Stores one class's prediction of slice `z`, evicting far slices over the budget.
    fn insert(&mut self, class: usize, z: usize, version: u64, probabilities: Vec<u8>, z_now: usize) {
        self.slices.insert((class, z), Arc::new(probabilities));
        self.versions.insert((class, z), version);
        self.stamp += 1;
        let mut bytes: usize = self.slices.values().map(|p| p.len()).sum();
        if bytes <= PREDICTION_BUDGET_BYTES {
            return;
        }
        let mut keys: Vec<(usize, usize)> = self.slices.keys().copied().collect();
        keys.sort_by_key(|(_, kz)| std::cmp::Reverse(kz.abs_diff(z_now)));
        for key in keys {
            if bytes <= PREDICTION_BUDGET_BYTES || key.1 == z_now {
                break;
            }
            if let Some(p) = self.slices.remove(&key) {
                bytes -= p.len();
                self.versions.remove(&key);
            }
        }
    }
}

struct Predicting {
    generation: u64,
    done: usize,
    total: usize,
    slices_per_s: f64,
    eta_s: Option<f64>,
}

/// The refine tool's prompts on one slice and class.
struct Clicks {
    z: usize,
    class: ClassId,
    points: Vec<PointPrompt>,
    bbox: Option<BoxPrompt>,
    /// What the last refined result came from, for the panel.
    done: Option<String>,
}

struct TrainingRun {
    control: Arc<Control>,
    view: TrainingView,
}

struct DownloadJob {
    file: String,
    progress: Arc<Mutex<Option<download::Progress>>>,
    cancel: Arc<AtomicBool>,
    result: crossbeam_channel::Receiver<Result<PathBuf, String>>,
}

/// The model side of the app.
pub(super) struct ModelCtl {
    settings: ModelSettings,
    config_dir: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    device: Option<Device>,
    device_note: String,
    /// The precision predictions run at, and why it is not the one asked for when it is not.
    precision_note: String,
    status: Status,
    inference: Option<InferenceWorker>,
    trainer: Option<TrainerWorker>,
    /// Model class names (the class table's export names) and their ids.
    classes: Vec<(String, ClassId)>,
    base: Option<BaseCheckpoint>,
    warning: Option<String>,
    pub(super) predictions: Predictions,
    predicting: Option<Predicting>,
    /// Versions in the project's `adapters/` folder.
    versions: Vec<(AdapterSetMeta, PathBuf)>,
    active_version: u64,
    /// The adapter-set file in use.
    active_set: Option<PathBuf>,
    /// Slices that should be predicted again once a new version is in use.
    refresh_after_swap: bool,
    training: Option<TrainingRun>,
    last_run: Option<String>,
    held_out: BTreeSet<usize>,
    download: Option<DownloadJob>,
    download_error: Option<String>,
    pub(super) panel: ModelPanelSettings,
    /// What is shown in the prediction layer: (z, class, stamp).
    shown: Option<(usize, ClassId, u64)>,
    /// The refine tool's prompts so far.
    clicks: Option<Clicks>,
    /// The loaded model's sizes for training memory estimates.
    memory_model: Option<TrainingMemoryModel>,
}

/// Most slices one Retrain learns from (the nearest to the current slice are kept).
const QUEUE_CAPACITY: usize = 256;

impl ModelCtl {
    pub(super) fn new(
        config_dir: Option<PathBuf>,
        data_dir: Option<PathBuf>,
        device: Option<Device>,
        device_note: String,
    ) -> Self {
        let settings = ModelSettings::load(config_dir.as_deref());
        ModelCtl {
            status: if settings.checkpoint.is_some() { Status::Loading } else { Status::NoCheckpoint },
            settings,
            config_dir,
            data_dir,
            device,
            device_note,
            precision_note: String::new(),
            inference: None,
            trainer: None,
            classes: Vec::new(),
            base: None,
            warning: None,
            predictions: Predictions::default(),
            predicting: None,
            versions: Vec::new(),
            active_version: 0,
            active_set: None,
            refresh_after_swap: false,
            training: None,
            last_run: None,
            held_out: BTreeSet::new(),
            download: None,
            download_error: None,
            panel: ModelPanelSettings::default(),
            shown: None,
            clicks: None,
            memory_model: None,
        }
    }

    /// Whether background model work is running (the UI keeps repainting).
    pub(super) fn is_busy(&self) -> bool {
        self.predicting.is_some()
            || self.training.is_some()
            || self.download.is_some()
            || self.status == Status::Loading
            || self.refresh_after_swap
    }

    /// Whether the first-run dialog should show.
    pub(super) fn wants_first_run(&self) -> bool {
        self.settings.checkpoint.is_none() && !self.settings.first_run_done
    }

    /// The class index (model order) of a class id.
    fn index_of(&self, class: ClassId) -> Option<usize> {
        self.classes.iter().position(|(_, id)| *id == class)
    }

    /// Whether the model has predictions for `class` (any slice).
    pub(super) fn has_predictions(&self, class: ClassId) -> bool {
        self.index_of(class).is_some_and(|c| self.predictions.slices.keys().any(|(k, _)| *k == c))
    }

    /// The model's prediction of `class` on slice `z` (probabilities 0–255).
    pub(super) fn prediction(&self, class: ClassId, z: usize) -> Option<Arc<Vec<u8>>> {
        let c = self.index_of(class)?;
        self.predictions.slices.get(&(c, z)).cloned()
    }

    /// Thresholded model predictions of `class` on `slices` (those that have one).
    pub(super) fn planes(
        &self,
        class: ClassId,
        slices: &[SliceIndex],
        threshold: f32,
        width: usize,
    ) -> Vec<(SliceIndex, BitPlane)> {
        let cut = (threshold * 255.0).round() as u8;
        slices
            .iter()
            .filter_map(|&z| {
                let p = self.prediction(class, z.0)?;
                let height = p.len() / width.max(1);
                let mut plane = BitPlane::new(width, height);
                for (i, _) in p.iter().enumerate().filter(|(_, v)| **v >= cut) {
                    plane.set(i % width, i / width, true);
                }
                Some((z, plane))
            })
            .collect()
    }

    /// Starts the workers and loads the remembered checkpoint (at start-up, or after a new
    /// choice).
    pub(super) fn start(&mut self, classes: &ClassTable, ctx: &egui::Context) {
        let Some(checkpoint) = self.settings.checkpoint.clone() else {
            self.status = Status::NoCheckpoint;
            return;
        };
        let Some(device) = self.device.clone() else {
            self.status = Status::Failed("no compute device".into());
            return;
        };
        let config = match self.settings.read_config() {
            Ok(c) => c,
            Err(e) => {
                self.status = Status::Failed(e);
                return;
            }
        };
        // Predictions at the chosen precision; training (`source`) stays on the f32 device.
        let asked = self.settings.precision;
        let device = match device_at(&device, asked) {
            Ok(d) => {
                self.precision_note = asked.to_string();
                d
            }
            Err(e) => {
                self.precision_note = format!("f32 ({e})");
                device
            }
        };
        self.classes = classes.iter().map(|c| (c.export_name.clone(), c.id)).collect();
        if self.inference.is_none() {
            let wake = ctx.clone();
            match InferenceWorker::spawn(move || wake.request_repaint()) {
                Ok(w) => self.inference = Some(w),
                Err(e) => {
                    self.status = Status::Failed(format!("cannot start the inference thread: {e}"));
                    return;
                }
            }
        }
        if self.trainer.is_none() {
            let wake = ctx.clone();
            match TrainerWorker::spawn(move || wake.request_repaint()) {
                Ok(w) => self.trainer = Some(w),
                Err(e) => {
                    self.status = Status::Failed(format!("cannot start the trainer thread: {e}"));
                    return;
                }
            }
        }
        let source =
            ModelSource { checkpoint, config, classes: self.classes.iter().map(|(n, _)| n.clone()).collect(), device };
        if let Some(w) = &self.inference {
            w.next_generation();
            w.send(InferCommand::Load(Box::new(source)));
        }
        self.predicting = None;
        self.predictions = Predictions::default();
        self.base = None;
        self.status = Status::Loading;
    }

    fn source(&self) -> Option<ModelSource> {
        let config = self.settings.read_config().ok()?;
        Some(ModelSource {
            checkpoint: self.settings.checkpoint.clone()?,
            config,
            classes: self.classes.iter().map(|(n, _)| n.clone()).collect(),
            device: self.device.clone()?,
        })
    }

    /// The class table changed (a project with its own classes): the model's heads follow it,
    /// so the model is built again for the new classes.
    pub(super) fn classes_changed(&mut self, classes: &ClassTable, ctx: &egui::Context) {
        let names: Vec<&str> = classes.iter().map(|c| c.export_name.as_str()).collect();
        let ours: Vec<&str> = self.classes.iter().map(|(n, _)| n.as_str()).collect();
        if names != ours && self.settings.checkpoint.is_some() {
            self.start(classes, ctx);
        } else {
            self.classes = classes.iter().map(|c| (c.export_name.clone(), c.id)).collect();
        }
    }

    /// A new stack is open: forget the old one's predictions, list this one's versions and
    /// use the version its project records.
    pub(super) fn on_document(&mut self, doc: &Document) {
        if let Some(w) = &self.inference {
            w.next_generation();
        }
        self.predicting = None;
        self.predictions = Predictions::default();
        self.held_out.clear();
        self.shown = None;
        self.versions = adapters_dir(doc).map(|d| list_versions(&d)).unwrap_or_default();
        let recorded = doc.session.as_ref().and_then(|s| s.model().adapter.clone());
        let version =
            recorded.and_then(|p| self.versions.iter().find(|(_, vp)| *vp == p).map(|(m, _)| m.version)).unwrap_or(0);
        self.active_version = u64::MAX; // force the swap
        self.use_version(version, None, &mut Vec::new());
    }

    fn use_version(&mut self, version: u64, doc: Option<&mut Document>, errors: &mut Vec<String>) {
        if version == self.active_version {
            return;
        }
        let path = if version == 0 {
            None
        } else {
            let Some((_, path)) = self.versions.iter().find(|(m, _)| m.version == version) else {
                errors.push(format!("no adapter version {version} in this project"));
                return;
            };
            Some(path.clone())
        };
        self.active_version = version;
        self.active_set = path.clone();
        if let Some(w) = &self.inference {
            w.next_generation();
            self.predicting = None;
            w.send(InferCommand::UseAdapter { path, version });
        }
        if let Some(doc) = doc {
            if let Some(project) = &mut doc.session {
                let model = ModelRef {
                    checkpoint: self.settings.checkpoint.clone(),
                    checkpoint_sha256: self.base.as_ref().map(|b| b.sha256.clone()),
                    adapter: self.active_set.clone(),
                };
                if let Err(e) = project.set_model(model) {
                    errors.push(e.to_string());
                }
            }
            // Predictions follow once the worker has swapped (only a running worker will).
            self.refresh_after_swap = self.inference.is_some();
        }
    }

    /// Images of the open stack for the workers, mapped the way the model sees them.
    fn images(volume: &Arc<Volume>) -> SharedImages {
        let volume = Arc::clone(volume);
        let window: Arc<OnceLock<Option<(f64, f64)>>> = Arc::new(OnceLock::new());
        Arc::new(move |z: usize| {
            let window = *window
                .get_or_init(|| volume.slice(SliceIndex(volume.depth() / 2)).ok().and_then(|s| model_window(&s)));
            volume.slice(SliceIndex(z)).map(|s| slice_to_u8(&s, window)).map_err(|e| e.to_string())
        })
    }

    /// Slices whose review says a person corrected or accepted them, for any model class.
    fn reviewed_slices(&self, doc: &Document) -> BTreeSet<usize> {
        let mut out = BTreeSet::new();
        for (_, id) in &self.classes {
            for (z, e) in doc.masks.slices(*id) {
                if matches!(e.review, ReviewState::Corrected | ReviewState::Accepted) {
                    out.insert(z.0);
                }
            }
        }
        out
    }

    fn seeds(&self, doc: &Document) -> Vec<Seed> {
        let (w, h) = (doc.volume.width(), doc.volume.height());
        self.reviewed_slices(doc)
            .into_iter()
            .map(|z| Seed {
                z,
                masks: self
                    .classes
                    .iter()
                    .map(|(_, id)| {
                        Some(doc.masks.mask(*id, SliceIndex(z)).map_or_else(|| BitPlane::new(w, h), |m| m.to_plane()))
                    })
                    .collect(),
            })
            .collect()
    }

    fn pending(&self, doc: &Document, z: usize) -> PendingSample {
        let (w, h) = (doc.volume.width(), doc.volume.height());
        let mut labels = Vec::new();
        let mut vouched = Vec::new();
        for (_, id) in &self.classes {
            let entry = doc.masks.entry(*id, SliceIndex(z));
            labels.push(entry.map_or_else(|| BitPlane::new(w, h), |e| e.mask.to_plane()));
            let mut v = BitPlane::new(w, h);
            if let Some(e) = entry {
                if e.review == ReviewState::Accepted || e.provenance == Provenance::Imported {
                    // Accepted or imported: the whole slice.
                    v.fill_rect(PixelBox { x0: 0, y0: 0, x1: w, y1: h }, true);
                } else {
                    v = e.touched.to_plane();
                }
            }
            vouched.push(v);
        }
        PendingSample { z, labels, vouched }
    }

    /// Predicts `range` of the open stack, the visible slice first.
    fn predict(&mut self, doc: &Document, range: std::ops::Range<usize>) {
        let Some(w) = &self.inference else { return };
        let generation = w.next_generation();
        let request = StackRequest {
            width: doc.volume.width(),
            height: doc.volume.height(),
            range: range.clone(),
            visible: doc.view.cursor.z.0,
            seeds: self.seeds(doc),
            max_warmup_slices: 32,
        };
        w.send(InferCommand::Predict { generation, request, images: Self::images(&doc.volume) });
        self.predicting = Some(Predicting { generation, done: 0, total: range.len(), slices_per_s: 0.0, eta_s: None });
    }

    /// Applies a panel action.
    pub(super) fn act(
        &mut self,
        action: ModelAction,
        doc: Option<&mut Document>,
        classes: &ClassTable,
        errors: &mut Vec<String>,
        ctx: &egui::Context,
    ) -> Option<super::jobs::DialogKind> {
        match action {
            ModelAction::ChooseCheckpoint => return Some(super::jobs::DialogKind::Checkpoint),
            ModelAction::Download(file) => self.start_download(&file, ctx, errors),
            ModelAction::CancelDownload => {
                if let Some(d) = &self.download {
                    d.cancel.store(true, Ordering::Relaxed);
                }
            }
            ModelAction::SetHalfPrecision(half) => {
                let precision = if half { Precision::F16 } else { Precision::F32 };
                if precision != self.settings.precision {
                    self.settings.precision = precision;
                    if let Err(e) = self.settings.save(self.config_dir.as_deref()) {
                        errors.push(e);
                    }
                    // The model is built again on the other device; the version in use is
                    // applied again once it is loaded.
                    if self.settings.checkpoint.is_some() {
                        self.start(classes, ctx);
                    }
                }
            }
            ModelAction::DismissFirstRun => {
                self.settings.first_run_done = true;
                if let Err(e) = self.settings.save(self.config_dir.as_deref()) {
                    errors.push(e);
                }
            }
            ModelAction::PredictSlice | ModelAction::PredictNearby | ModelAction::PredictStack => {
                let doc = doc?;
                let (z, depth) = (doc.view.cursor.z.0, doc.volume.depth());
                let r = self.panel.radius_slices;
                let range = match action {
                    ModelAction::PredictSlice => z..z + 1,
                    ModelAction::PredictNearby => z.saturating_sub(r)..(z + r + 1).min(depth),
                    _ => 0..depth,
                };
                self.predict(doc, range);
            }
            ModelAction::CancelPrediction => {
                if let Some(w) = &self.inference {
                    w.next_generation();
                }
                self.predicting = None;
            }
            ModelAction::Retrain => {
                let doc = doc?;
                self.retrain(doc, errors);
            }
            ModelAction::PauseTraining(paused) => {
                if let Some(t) = &mut self.training {
                    t.control.pause.store(paused, Ordering::Relaxed);
                    t.view.paused = paused;
                }
            }
            ModelAction::StopTraining => {
                if let Some(t) = &self.training {
                    t.control.pause.store(false, Ordering::Relaxed);
                    t.control.stop.store(true, Ordering::Relaxed);
                }
            }
            ModelAction::UseVersion(v) => self.use_version(v, doc, errors),
            ModelAction::ToggleHeldOut => {
                let doc = doc?;
                let z = doc.view.cursor.z.0;
                if !self.held_out.remove(&z) {
                    self.held_out.insert(z);
                }
            }
        }
        let _ = classes;
        None
    }

    /// A checkpoint file was picked (or downloaded): remember it and load it.
    pub(super) fn choose_checkpoint(
        &mut self,
        path: PathBuf,
        classes: &ClassTable,
        errors: &mut Vec<String>,
        ctx: &egui::Context,
    ) {
        self.choose_checkpoint_with(path, None, classes, errors, ctx);
    }

    /// As [`ModelCtl::choose_checkpoint`], with a model configuration file.
    pub(super) fn choose_checkpoint_with(
        &mut self,
        path: PathBuf,
        config: Option<PathBuf>,
        classes: &ClassTable,
        errors: &mut Vec<String>,
        ctx: &egui::Context,
    ) {
        self.settings.checkpoint = Some(path);
        self.settings.config = config;
        self.settings.first_run_done = true;
        if let Err(e) = self.settings.save(self.config_dir.as_deref()) {
            errors.push(e);
        }
        self.active_version = 0;
        self.active_set = None;
        self.start(classes, ctx);
    }

    fn retrain(&mut self, doc: &mut Document, errors: &mut Vec<String>) {
        if self.training.is_some() {
            return;
        }
        let (Some(base), Some(mut source)) = (self.base.clone(), self.source()) else {
            errors.push("the model is not loaded yet".into());
            return;
        };
        let Some(dir) = adapters_dir(doc) else {
            errors.push("this stack has no project folder to keep adapter versions in".into());
            return;
        };
        let z_now = doc.view.cursor.z.0;
        let mut queued: Vec<usize> =
            self.reviewed_slices(doc).into_iter().filter(|z| !self.held_out.contains(z)).collect();
        queued.sort_by_key(|z| z.abs_diff(z_now));
        queued.truncate(QUEUE_CAPACITY);
        queued.sort_unstable();
        let samples: Vec<PendingSample> = queued.iter().map(|&z| self.pending(doc, z)).collect();
        if samples.is_empty() {
            errors.push("nothing to learn from: correct or accept at least one slice first (A accepts a slice)".into());
            return;
        }
        let validation: Vec<PendingSample> = self.held_out.iter().map(|&z| self.pending(doc, z)).collect();
        source.device = source.device.autodiff();
        // Memory: the batch is the longest run of consecutive queued slices, up to 8; the run
        // keeps its activations when that fits, recomputes them when not, and does not start
        // when even that would not fit (the trainer may have to load its own copy of the
        // model, so the weights are counted too).
        const BATCH: usize = 8;
        let Some(memory_model) = self.memory_model else {
            errors.push("the model is not loaded yet".into());
            return;
        };
        let batch = longest_run(&queued).min(BATCH);
        let classes = self.classes.len();
        let plan = match crate::train::memory::plan(
            ActivationsChoice::Auto,
            batch,
            false,
            self.training_memory(&source.device),
            &|b| memory_model.footprint(classes, b),
        ) {
            Ok(plan) => plan,
            Err(refusal) => {
                errors.push(refusal.sentence);
                return;
            }
        };
        let version = self.versions.iter().map(|(m, _)| m.version).max().unwrap_or(0) + 1;
        // The paper's optimiser (the configuration's, which every SAM4EM configuration shares).
        let optimizer = crate::model::config::OptimizerConfig {
            name: "AdamW".into(),
            lr: 5e-4,
            betas: [0.9, 0.999],
            eps: 1e-8,
            weight_decay: 0.01,
        };
        let config = TrainConfig {
            epochs: self.panel.epochs,
            batch_size: BATCH,
            optimizer,
            schedule: Schedule::Constant,
            augment: true,
            activations: plan.activations,
            seed: version,
        };
        let control = Arc::new(Control::default());
        let job = TrainJob {
            source,
            start: self.active_set.clone(),
            base,
            samples,
            validation,
            images: Self::images(&doc.volume),
            size: (doc.volume.width(), doc.volume.height()),
            config,
            version,
            out: dir.join(format!("v{version:03}.safetensors")),
            control: Arc::clone(&control),
        };
        let Some(trainer) = &mut self.trainer else { return };
        if trainer.start(job) {
            self.training = Some(TrainingRun {
                control,
                view: TrainingView {
                    status: format!("training v{version} on {} slice(s) · {}", queued.len(), plan.summary()),
                    ..Default::default()
                },
            });
        }
    }

    /// What a Retrain may use: the free memory of the model's device, capped by the panel's
    /// memory limit when one is set.
    fn training_memory(&self, device: &Device) -> Option<Available> {
        let free = crate::train::memory::available_for(device);
        let limit_gib = self.panel.memory_limit_gib;
        if limit_gib <= 0.0 {
            return free;
        }
        let limit = (limit_gib * f64::from(1u32 << 30)) as u64;
        match free {
            Some(f) if f.bytes <= limit => Some(f),
            _ => Some(Available { bytes: limit, what: "the memory limit set in the Model panel".into() }),
        }
    }

    /// A click of the refine tool at slice pixel `at` (`to`: the other corner when the
    /// pointer was dragged, which makes a box prompt): the class's prediction on this slice is
    /// decoded again from the cached embedding with every click so far and the latest box
    /// (clicks on another slice or class start over).
    pub(super) fn refine_click(
        &mut self,
        doc: &Document,
        class: ClassId,
        at: [f32; 2],
        to: Option<[f32; 2]>,
        foreground: bool,
        errors: &mut Vec<String>,
    ) {
        if self.status != Status::Ready {
            errors.push("refining with clicks needs the model: choose a checkpoint in the Model panel".into());
            return;
        }
        let (Some(c), Some(w)) = (self.index_of(class), &self.inference) else { return };
        let z = doc.view.cursor.z.0;
        if self.clicks.as_ref().is_none_or(|r| (r.z, r.class) != (z, class)) {
            self.clicks = Some(Clicks { z, class, points: Vec::new(), bbox: None, done: None });
        }
        let Some(clicks) = &mut self.clicks else { return };
        match to {
            Some(to) => {
                clicks.bbox = Some(BoxPrompt {
                    x0_px: f64::from(at[0].min(to[0])),
                    y0_px: f64::from(at[1].min(to[1])),
                    x1_px: f64::from(at[0].max(to[0])),
                    y1_px: f64::from(at[1].max(to[1])),
                })
            }
            None => clicks.points.push(PointPrompt { x_px: f64::from(at[0]), y_px: f64::from(at[1]), foreground }),
        }
        let what = format!(
            "refined slice {z} with {} click(s){}",
            clicks.points.len(),
            if clicks.bbox.is_some() { " and a box" } else { "" }
        );
        w.send(InferCommand::Refine {
            what,
            generation: w.generation(),
            z,
            class: c,
            points: clicks.points.clone(),
            boxes: clicks.bbox.into_iter().collect(),
            prior: None,
            size: (doc.volume.width(), doc.volume.height()),
            images: Self::images(&doc.volume),
        });
    }

    /// Tells the trainer that someone is drawing (it waits between steps meanwhile).
    pub(super) fn set_interactive(&self, interactive: bool) {
        if let Some(t) = &self.training {
            t.control.yield_to_ui.store(interactive, Ordering::Relaxed);
        }
    }

    fn start_download(&mut self, file: &str, ctx: &egui::Context, errors: &mut Vec<String>) {
        if self.download.is_some() {
            return;
        }
        let Some(official) = OFFICIAL.iter().find(|c| c.file_name == file) else { return };
        let Some(data_dir) = self.data_dir.clone().or_else(crate::io::session::default_data_dir) else {
            errors.push("no data folder to download into: set SAM4EM_DATA_DIR or HOME".into());
            return;
        };
        let dest = data_dir.join("checkpoints").join(file);
        let progress = Arc::new(Mutex::new(None));
        let cancel = Arc::new(AtomicBool::new(false));
        let (tx, rx) = crossbeam_channel::bounded(1);
        let (p, c, wake) = (Arc::clone(&progress), Arc::clone(&cancel), ctx.clone());
        let url = official.url;
        let bytes = official.bytes;
        let sha = match official.sha256 {
            Sha256Known::Full(h) => Some(h),
            Sha256Known::Partial(..) => None,
        };
        let spawned = std::thread::Builder::new().name("download".into()).spawn(move || {
            let request = download::Request { url, dest: &dest, expected_bytes: Some(bytes), expected_sha256: sha };
            let mut last_wake = std::time::Instant::now();
            let result = download::download(
                &request,
                &mut |pr| {
                    if let Ok(mut g) = p.lock() {
                        *g = Some(pr);
                    }
                    if last_wake.elapsed().as_millis() > 100 {
                        wake.request_repaint();
                        last_wake = std::time::Instant::now();
                    }
                },
                &c,
            );
            let _ = tx.send(result.map_err(|e| e.to_string()));
            wake.request_repaint();
        });
        match spawned {
            Ok(_) => {
                self.download_error = None;
                self.download = Some(DownloadJob { file: file.to_string(), progress, cancel, result: rx });
            }
            Err(e) => errors.push(format!("cannot start the download thread: {e}")),
        }
    }

    /// Drains the workers and the download, stores predictions, and keeps the prediction
    /// layer showing the model's output for the active class on the visible slice.
    pub(super) fn logic(
        &mut self,
        mut doc: Option<&mut Document>,
        classes: &ClassTable,
        active: ClassId,
        errors: &mut Vec<String>,
        ctx: &egui::Context,
    ) {
        if let Some(d) = &self.download
            && let Ok(result) = d.result.try_recv()
        {
            self.download = None;
            match result {
                Ok(path) => self.choose_checkpoint(path, classes, errors, ctx),
                Err(e) => self.download_error = Some(e),
            }
        }
        let events = self.inference.as_ref().map(InferenceWorker::events).unwrap_or_default();
        let current = self.inference.as_ref().map_or(0, InferenceWorker::generation);
        for e in events {
            match e {
                InferEvent::Loaded { base, warning, memory, .. } => {
                    self.status = Status::Ready;
                    self.base = Some(base);
                    self.memory_model = Some(*memory);
                    self.warning = warning;
                    if let Some(doc) = doc.as_deref() {
                        let v = std::mem::replace(&mut self.active_version, u64::MAX);
                        let _ = doc;
                        self.use_version(v, None, errors);
                    }
                }
                InferEvent::LoadFailed(m) => {
                    self.status = Status::Failed(m);
                    self.predicting = None;
                    self.refresh_after_swap = false;
                }
                InferEvent::AdapterInUse { version } => {
                    if self.refresh_after_swap
                        && let Some(doc) = doc.as_deref()
                    {
                        self.refresh_after_swap = false;
                        // Visible slice first, then every slice that had a prediction.
                        let zs: Vec<usize> = self.predictions.slices.keys().map(|(_, z)| *z).collect();
                        let z = doc.view.cursor.z.0;
                        let lo = zs.iter().copied().min().unwrap_or(z).min(z);
                        let hi = zs.iter().copied().max().unwrap_or(z).max(z);
                        self.predict(doc, lo..hi + 1);
                    }
                    let _ = version;
                }
                InferEvent::AdapterFailed { message, in_use, .. } => {
                    errors.push(message);
                    // The worker keeps the version it had: so does the panel.
                    self.active_version = in_use;
                    self.active_set = self.versions.iter().find(|(m, _)| m.version == in_use).map(|(_, p)| p.clone());
                    self.refresh_after_swap = false;
                }
                InferEvent::Slice { generation, version, prediction, progress } => {
                    if generation != current || version != self.active_version {
                        continue; // superseded or from an older adapter
                    }
                    let z_now = doc.as_deref().map_or(prediction.z, |d| d.view.cursor.z.0);
                    for (c, p) in prediction.probabilities.into_iter().enumerate() {
                        self.predictions.insert(c, prediction.z, version, p, z_now);
                    }
                    if let Some(p) = &mut self.predicting
                        && p.generation == generation
                    {
                        p.done = progress.done;
                        p.total = progress.total;
                        p.slices_per_s = progress.slices_per_s();
                        p.eta_s = progress.eta_s();
                    }
                }
                InferEvent::Refined { version, z, class, probabilities, what, .. } => {
                    if version == self.active_version {
                        self.predictions.insert(class, z, version, probabilities, z);
                        if let Some(c) = &mut self.clicks {
                            c.done = Some(what);
                        }
                    }
                }
                InferEvent::Finished { generation, .. } => {
                    if self.predicting.as_ref().is_some_and(|p| p.generation == generation) {
                        self.predicting = None;
                    }
                }
                InferEvent::Failed { generation, message } => {
                    if generation == current {
                        self.predicting = None;
                        errors.push(message);
                    }
                }
            }
        }
        let trainer_events = self.trainer.as_ref().map(TrainerWorker::events).unwrap_or_default();
        for e in trainer_events {
            match e {
                TrainerEvent::Loading => {
                    if let Some(t) = &mut self.training {
                        t.view.status = "building the training model".into();
                    }
                }
                TrainerEvent::Progress(TrainEvent::Step { step, total_steps, loss, .. }) => {
                    if let Some(t) = &mut self.training {
                        t.view.losses.push(loss);
                        t.view.total_steps = total_steps;
                        t.view.status = format!("step {step}/{total_steps}, loss {loss:.4}");
                    }
                }
                TrainerEvent::Progress(TrainEvent::Validation { dice, .. }) => {
                    if let Some(t) = &mut self.training {
                        t.view.dice = dice.into_iter().collect();
                    }
                }
                TrainerEvent::Finished { path, meta } => {
                    self.training = None;
                    let dice: Vec<String> =
                        meta.training.validation_dice.iter().map(|(c, d)| format!("{c} {d:.3}")).collect();
                    self.last_run = Some(format!(
                        "v{}: {} ({} steps, {:.0} s, loss {:.4}{})",
                        meta.version,
                        meta.training.ended,
                        meta.training.steps,
                        meta.training.seconds,
                        meta.training.final_loss,
                        if dice.is_empty() { String::new() } else { format!(", held-out Dice {}", dice.join(", ")) }
                    ));
                    let version = meta.version;
                    self.versions.retain(|(m, _)| m.version != version);
                    self.versions.push((*meta, path));
                    self.versions.sort_by_key(|(m, _)| std::cmp::Reverse(m.version));
                    self.use_version(version, doc.as_deref_mut(), errors);
                }
                TrainerEvent::Failed(m) => {
                    self.training = None;
                    self.last_run = Some(format!("training ended without a new version: {m}"));
                }
            }
        }
        if let Some(doc) = doc {
            self.show(doc, active);
        }
    }

    /// Puts the model's prediction of `active` on the visible slice into the prediction layer.
    fn show(&mut self, doc: &mut Document, active: ClassId) {
        let z = doc.view.cursor.z.0;
        let key = (z, active, self.predictions.stamp);
        if self.shown == Some(key) {
            return;
        }
        match self.prediction(active, z) {
            Some(p) => {
                let probabilities: Vec<f32> = p.iter().map(|&v| f32::from(v) / 255.0).collect();
                doc.prediction = None; // the model's layer replaces a loaded probability map
                doc.probabilities = Some((SliceIndex(z), Arc::new(probabilities)));
                doc.gpu.prediction = None;
                self.shown = Some(key);
            }
            None => {
                if self.shown.is_some() {
                    doc.probabilities = None;
                    doc.clear_prediction = true;
                    self.shown = None;
                }
            }
        }
    }

    /// What the panel shows.
    pub(super) fn view(&self, doc: Option<&Document>) -> ModelView {
        let status = match &self.status {
            Status::NoCheckpoint => "no checkpoint".to_string(),
            Status::Loading => "loading the checkpoint…".to_string(),
            Status::Ready => format!("ready · {} · {}", self.device_note, self.precision_note),
            Status::Failed(m) => format!("failed: {m}"),
        };
        let downloading = self.download.as_ref().map(|d| {
            let p = d.progress.lock().ok().and_then(|g| *g);
            match p {
                Some(p) => {
                    let total = p.total_bytes.unwrap_or(0).max(1);
                    let verb = if p.phase == Phase::Verifying { "checking" } else { "downloading" };
                    (
                        p.downloaded_bytes as f32 / total as f32,
                        format!(
                            "{verb} {} {:.0}/{:.0} MB, {:.1} MB/s",
                            d.file,
                            p.downloaded_bytes as f64 / 1e6,
                            total as f64 / 1e6,
                            p.bytes_per_s / 1e6
                        ),
                    )
                }
                None => (0.0, format!("connecting for {}", d.file)),
            }
        });
        let predicting = self.predicting.as_ref().map(|p| {
            let eta = p.eta_s.map_or(String::new(), |s| format!(" · {s:.0} s left"));
            (
                p.done as f32 / p.total.max(1) as f32,
                format!("{}/{} slices · {:.2} slices/s{eta}", p.done, p.total, p.slices_per_s),
            )
        });
        let versions: Vec<VersionRow> = std::iter::once(VersionRow {
            version: 0,
            label: "base (no adapter)".into(),
            detail: "the SAM 2 checkpoint with SAM4EM's fresh heads".into(),
        })
        .chain(self.versions.iter().map(|(m, p)| {
            let dice: Vec<String> = m.training.validation_dice.iter().map(|(c, d)| format!("{c} {d:.3}")).collect();
            VersionRow {
                version: m.version,
                label: format!("v{} · {} steps · loss {:.3}", m.version, m.training.steps, m.training.final_loss),
                detail: format!(
                    "{} slices {:?}; held-out Dice {}; {:.0} s on {}; {}",
                    m.training.slices.len(),
                    m.training.slices,
                    if dice.is_empty() { "none".into() } else { dice.join(", ") },
                    m.training.seconds,
                    m.training.device,
                    p.display()
                ),
            }
        }))
        .collect();
        let queued = doc.map_or(0, |d| self.reviewed_slices(d).iter().filter(|z| !self.held_out.contains(z)).count());
        let n = self.predictions.slices.len() / self.classes.len().max(1);
        ModelView {
            checkpoint: self
                .settings
                .checkpoint
                .as_ref()
                .map(|p| p.file_name().unwrap_or_default().to_string_lossy().into_owned()),
            status,
            ready: self.status == Status::Ready,
            warning: self.warning.clone().or_else(|| self.download_error.clone()),
            downloading,
            predicting,
            predictions: (n > 0).then(|| {
                let label =
                    if self.active_version == 0 { "base".to_string() } else { format!("v{}", self.active_version) };
                let stale = self.predictions.versions.values().filter(|v| **v != self.active_version).count()
                    / self.classes.len().max(1);
                if stale > 0 {
                    format!("{n} slice(s) predicted, {stale} by an older version; model {label}")
                } else {
                    format!("{n} slice(s) predicted; model {label}")
                }
            }),
            refined: self.clicks.as_ref().and_then(|c| c.done.clone()),
            queued,
            held_out: self.held_out.len(),
            current_held_out: doc.is_some_and(|d| self.held_out.contains(&d.view.cursor.z.0)),
            training: self.training.as_ref().map(|t| t.view.clone()),
            last_run: self.last_run.clone(),
            versions,
            active_version: self.active_version,
            half_precision: self.settings.precision == Precision::F16,
            half_precision_unavailable: match &self.device {
                Some(d) => half_precision_available(d).err().map(|e| e.to_string()),
                None => Some("no compute device".to_owned()),
            },
        }
    }

    /// The official files the first-run dialog offers: (file, size, note).
    pub(super) fn official_choices() -> Vec<(String, String, String)> {
        OFFICIAL
            .iter()
            .filter(|c| matches!(c.size, crate::model::HieraSize::BasePlus | crate::model::HieraSize::Tiny))
            .map(|c| {
                let note = if c.file_name == "sam2_hiera_base_plus.pt" {
                    "(what SAM4EM was trained from; recommended)"
                } else if c.size == crate::model::HieraSize::Tiny {
                    "(smallest, fastest)"
                } else {
                    ""
                };
                (c.file_name.to_string(), format!("{:.0} MB", c.bytes as f64 / 1e6), note.to_string())
            })
            .collect()
    }

    /// The first-run dialog's download line and last error.
    pub(super) fn first_run_state(&self) -> (Option<(f32, String)>, Option<String>) {
        (self.view(None).downloading, self.download_error.clone())
    }
}

/// The project's folder of adapter versions.
fn adapters_dir(doc: &Document) -> Option<PathBuf> {
    doc.session.as_ref().map(|s| s.dir().join("adapters"))
}

/// Adapter sets in `dir` (unreadable files are skipped), newest first.
fn list_versions(dir: &Path) -> Vec<(AdapterSetMeta, PathBuf)> {
    let mut out: Vec<(AdapterSetMeta, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .filter_map(|p| AdapterSet::read_meta(&p).ok().map(|m| (m, p)))
        .collect();
    out.sort_by_key(|(m, _)| std::cmp::Reverse(m.version));
    out
}

/// The most consecutive slice indices in `sorted` (ascending): the largest training batch
/// they make.
fn longest_run(sorted: &[usize]) -> usize {
    let (mut best, mut run) = (0, 0);
    for (i, z) in sorted.iter().enumerate() {
        run = if i > 0 && sorted[i - 1] + 1 == *z { run + 1 } else { 1 };
        best = best.max(run);
    }
    best
}
