//! The model in the app (the model-in-the-loop): the `inference` and `trainer` workers and
//! the model's lifecycle (which checkpoint, on which device and precision, loading it
//! again when the classes or the precision change), with one room per part, each owning its
//! own state:
//!
//! - [`settings`]: what the user chose, remembered in `model.json`;
//! - [`heads`]: the class ↔ head table, the one place class ids become head indices;
//! - [`predictions`]: the predictions per head and slice, the running request, what the
//!   prediction layer shows;
//! - [`versions`]: the project's adapter versions and the one in use;
//! - [`training`]: Retrain's samples, memory plan and live view;
//! - [`refine`]: the refine tool's clicks and boxes;
//! - [`download`]: checkpoint downloads.
//!
//! This file routes the panel's actions and the workers' events to them. Every asynchronous
//! result carries its request generation and adapter version; results of a superseded
//! request or an older adapter are dropped here. May use `infer`, `train`, `model`, `io`,
//! `state`, `worker` and `ui`'s model panel types; nothing above `app`.

mod download;
mod error;
mod heads;
mod predictions;
mod refine;
mod settings;
mod training;
mod versions;

use std::path::PathBuf;
use std::sync::Arc;

use burn::tensor::Device;
use eframe::egui;

use super::document::Document;
use crate::infer::worker::{InferCommand, InferEvent, InferenceWorker};
use crate::infer::{FillIn, ModelImages, Scale, StackRequest};
use crate::io::session::ModelRef;
use crate::model::adapter::BaseCheckpoint;
use crate::model::device::{Precision, device_at, half_precision_available};
use crate::model::footprint::TrainingMemoryModel;
use crate::model::source::ModelSource;
use crate::state::bitplane::BitPlane;
use crate::state::{ClassId, ClassTable, SliceIndex, Volume};
use crate::train::Control;
use crate::train::worker::{TrainJob, TrainerEvent, TrainerWorker};
use crate::ui::model::{ModelAction, ModelPanelSettings, ModelView};
use crate::ui::notify::Notices;
use crate::worker::SharedImages;

use download::Download;
pub(super) use error::ModelError;
use heads::Heads;
use predictions::{PartialSlice, Predictions};
use refine::Refine;
use settings::ModelSettings;
use training::Training;
use versions::Versions;

/// Where the model stands.
#[derive(Clone, Debug, PartialEq)]
enum Status {
    NoCheckpoint,
    Loading,
    Ready,
    Failed(String),
}

/// The model side of the app.
pub(super) struct ModelCtl {
    settings: ModelSettings,
    config_dir: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    /// The f32 device training runs on (and predictions, in f32).
    device: Option<Device>,
    device_note: String,
    /// The precision predictions run at, and why it is not the one asked for when it is not.
    precision_note: String,
    status: Status,
    inference: Option<InferenceWorker>,
    trainer: Option<TrainerWorker>,
    heads: Heads,
    /// The loaded checkpoint's identity and any warning about it.
    base: Option<BaseCheckpoint>,
    warning: Option<String>,
    /// The loaded model's probability threshold (the prediction layer's default).
    threshold: Option<f32>,
    /// The loaded model's sizes for training memory estimates.
    memory_model: Option<TrainingMemoryModel>,
    /// The loaded model's input side in pixels.
    input_px: Option<usize>,
    predictions: Predictions,
    versions: Versions,
    training: Training,
    refine: Refine,
    download: Download,
    pub(super) panel: ModelPanelSettings,
}

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
            heads: Heads::default(),
            base: None,
            warning: None,
            threshold: None,
            memory_model: None,
            input_px: None,
            predictions: Predictions::default(),
            versions: Versions::default(),
            training: Training::default(),
            refine: Refine::default(),
            download: Download::default(),
            panel: ModelPanelSettings::default(),
        }
    }

    /// Whether background model work is running (the UI keeps repainting).
    pub(super) fn is_busy(&self) -> bool {
        self.predictions.is_running()
            || self.training.is_running()
            || self.download.is_running()
            || self.status == Status::Loading
            || self.versions.refresh_after_swap
    }

    /// Whether the first-run dialog should show.
    pub(super) fn wants_first_run(&self) -> bool {
        self.settings.checkpoint.is_none() && !self.settings.first_run_done
    }

    /// Whether the model has predictions for `class` (any slice).
    pub(super) fn has_predictions(&self, class: ClassId) -> bool {
        self.heads.head_of(class).is_some_and(|h| self.predictions.has_head(h))
    }

    /// The model's prediction of `class` on slice `z` (probabilities 0–255).
    pub(super) fn prediction(&self, class: ClassId, z: SliceIndex) -> Option<Arc<Vec<u8>>> {
        self.predictions.get(self.heads.head_of(class)?, z)
    }

    /// Thresholded model predictions of `class` on `slices` (those that have one).
    pub(super) fn planes(
        &self,
        class: ClassId,
        slices: &[SliceIndex],
        threshold: f32,
        width: usize,
    ) -> Vec<(SliceIndex, BitPlane)> {
        self.heads.head_of(class).map_or_else(Vec::new, |h| self.predictions.planes(h, slices, threshold, width))
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
                self.status = Status::Failed(e.to_string());
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
        self.heads = Heads::of(classes);
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
        let source = ModelSource { checkpoint, config, classes: self.heads.names(), device };
        if let Some(w) = &self.inference {
            w.next_generation();
            w.send(InferCommand::Load(Box::new(source)));
        }
        self.predictions.clear();
        self.base = None;
        self.status = Status::Loading;
    }

    /// The model as the trainer builds it: the f32 device, whatever precision predictions use.
    fn source(&self) -> Option<ModelSource> {
        let config = self.settings.read_config().ok()?;
        Some(ModelSource {
            checkpoint: self.settings.checkpoint.clone()?,
            config,
            classes: self.heads.names(),
            device: self.device.clone()?,
        })
    }

    /// The class table changed (a project with its own classes): the model's heads follow it,
    /// so the model is built again for the new classes.
    pub(super) fn classes_changed(&mut self, classes: &ClassTable, ctx: &egui::Context) {
        let heads = Heads::of(classes);
        if heads.names() != self.heads.names() && self.settings.checkpoint.is_some() {
            self.start(classes, ctx);
        } else {
            self.heads = heads;
        }
    }

    /// A new stack is open: forget the old one's predictions, list this one's versions and
    /// use the version its project records.
    pub(super) fn on_document(&mut self, doc: &Document) {
        if let Some(w) = &self.inference {
            w.next_generation();
        }
        self.predictions.new_stack();
        self.training.clear_held_out();
        self.versions = Versions::of(doc);
        let recorded = doc.session.as_ref().and_then(|s| s.model().adapter.clone());
        let version = self.versions.recorded(recorded.as_deref());
        self.use_version(version, None, &mut Notices::default());
    }

    /// Makes `version` the one predictions come from; with `doc`, the project records it and
    /// the slices predicted so far are predicted again once the worker has swapped.
    fn use_version(&mut self, version: u64, doc: Option<&mut Document>, notices: &mut Notices) {
        let path = match self.versions.choose(version) {
            Ok(Some(path)) => path,
            Ok(None) => return,
            Err(e) => {
                notices.report(&e);
                return;
            }
        };
        if let Some(w) = &self.inference {
            w.next_generation();
            self.predictions.stop_running();
            w.send(InferCommand::UseAdapter { path, version });
        }
        if let Some(doc) = doc {
            if let Some(project) = &mut doc.session {
                let model = ModelRef {
                    checkpoint: self.settings.checkpoint.clone(),
                    checkpoint_sha256: self.base.as_ref().map(|b| b.sha256.clone()),
                    adapter: self.versions.in_use_path(),
                };
                if let Err(e) = project.set_model(model) {
                    notices.failed("the project cannot record the adapter version in use", &e);
                }
            }
            // Predictions follow once the worker has swapped (only a running worker will).
            self.versions.refresh_after_swap = self.inference.is_some();
        }
    }

    /// The open stack's slices for the workers, as the model sees them.
    fn images(volume: &Arc<Volume>) -> SharedImages {
        ModelImages::new(Arc::clone(volume)).shared()
    }

    /// Predicts `range` of the open stack, the visible slice first.
    fn predict(&mut self, doc: &Document, range: std::ops::Range<usize>) {
        let Some(w) = &self.inference else { return };
        let generation = w.next_generation();
        let request = StackRequest {
            width: doc.volume.width(),
            height: doc.volume.height(),
            range: range.clone(),
            visible: doc.view.cursor.z,
            seeds: predictions::seeds(doc, &self.heads),
            max_warmup_slices: 32,
            scale: self.scale_for(doc).0,
            // Tiled slices fill in from the part on screen, a report at most twice a second.
            fill: Some(FillIn { view: doc.view.visible_xy(), interval_s: 0.5 }),
        };
        w.send(InferCommand::Predict { generation, request, images: Self::images(&doc.volume) });
        self.predictions.started(generation, range.len());
    }

    /// Applies a panel action.
    pub(super) fn act(
        &mut self,
        action: ModelAction,
        doc: Option<&mut Document>,
        classes: &ClassTable,
        notices: &mut Notices,
        ctx: &egui::Context,
    ) -> Option<super::command::DialogKind> {
        match action {
            ModelAction::ChooseCheckpoint => return Some(super::command::DialogKind::Checkpoint),
            ModelAction::Download(file) => match self.data_dir.clone().or_else(crate::io::session::default_data_dir) {
                Some(dir) => {
                    if let Err(e) = self.download.start(&file, &dir, ctx) {
                        notices.report(&e);
                    }
                }
                None => notices.report(&ModelError::NoDataFolder),
            },
            ModelAction::CancelDownload => self.download.cancel(),
            ModelAction::SetScale(scale) => {
                if scale != self.settings.scale {
                    self.settings.scale = scale;
                    if let Err(e) = self.settings.save(self.config_dir.as_deref()) {
                        notices.report(&e);
                    }
                }
            }
            ModelAction::SetHalfPrecision(half) => {
                let precision = if half { Precision::F16 } else { Precision::F32 };
                if precision != self.settings.precision {
                    self.settings.precision = precision;
                    if let Err(e) = self.settings.save(self.config_dir.as_deref()) {
                        notices.report(&e);
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
                    notices.report(&e);
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
                self.predictions.stop_running();
            }
            ModelAction::Retrain => {
                let doc = doc?;
                if let Err(e) = self.retrain(doc) {
                    notices.report(&e);
                }
            }
            ModelAction::PauseTraining(paused) => self.training.pause(paused),
            ModelAction::StopTraining => self.training.stop(),
            ModelAction::UseVersion(v) => self.use_version(v, doc, notices),
            ModelAction::ToggleHeldOut => self.training.toggle_held_out(doc?.view.cursor.z),
        }
        None
    }

    /// A checkpoint file was picked (or downloaded): remember it and load it.
    pub(super) fn choose_checkpoint(
        &mut self,
        path: PathBuf,
        classes: &ClassTable,
        notices: &mut Notices,
        ctx: &egui::Context,
    ) {
        self.choose_checkpoint_with(path, None, classes, notices, ctx);
    }

    /// As [`ModelCtl::choose_checkpoint`], with a model configuration file.
    pub(super) fn choose_checkpoint_with(
        &mut self,
        path: PathBuf,
        config: Option<PathBuf>,
        classes: &ClassTable,
        notices: &mut Notices,
        ctx: &egui::Context,
    ) {
        self.settings.checkpoint = Some(path);
        self.settings.config = config;
        self.settings.first_run_done = true;
        if let Err(e) = self.settings.save(self.config_dir.as_deref()) {
            notices.report(&e);
        }
        // Adapters belong to the checkpoint they were trained on: a new one starts from its base.
        self.versions.reset_to_base();
        self.start(classes, ctx);
    }

    /// Starts a Retrain on the corrected and accepted slices of `doc`.
    fn retrain(&mut self, doc: &mut Document) -> Result<(), ModelError> {
        if self.training.is_running() {
            return Ok(());
        }
        let (Some(base), Some(mut source), Some(memory_model)) = (self.base.clone(), self.source(), self.memory_model)
        else {
            return Err(ModelError::NotLoaded);
        };
        let Some(dir) = versions::adapters_dir(doc) else {
            return Err(ModelError::NoProject);
        };
        source.device = source.device.autodiff();
        let version = self.versions.next();
        let available = training::training_memory(&source.device, self.panel.memory_limit_gib);
        let mut plan = self.training.plan(doc, &self.heads, &memory_model, available, self.panel.epochs, version)?;
        // Trained at the scale it predicts at: crops of the model input at that scale (the
        // memory plan is the same, a crop being the model input's size).
        plan.config.scale = self.scale_for(doc).0;
        let control = Arc::new(Control::default());
        let slices = plan.samples.len();
        let job = TrainJob {
            source,
            start: self.versions.in_use_path(),
            base,
            samples: plan.samples,
            validation: plan.validation,
            images: Self::images(&doc.volume),
            size: (doc.volume.width(), doc.volume.height()),
            pixel_size_nm: doc.volume.info().voxel_size.map(|v| v.x_nm),
            config: plan.config,
            version,
            out: dir.join(format!("v{version:03}.safetensors")),
            control: Arc::clone(&control),
        };
        let Some(trainer) = &mut self.trainer else { return Ok(()) };
        if trainer.start(job) {
            self.training.started(control, version, slices, &plan.memory);
        }
        Ok(())
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
        notices: &mut Notices,
    ) {
        if self.status != Status::Ready {
            notices.report(&ModelError::RefineNeedsModel);
            return;
        }
        let (Some(head), Some(w)) = (self.heads.head_of(class), &self.inference) else { return };
        let z = doc.view.cursor.z;
        let prompts = self.refine.click(z, class, at, to, foreground);
        w.send(InferCommand::Refine {
            what: prompts.what,
            generation: w.generation(),
            z,
            class: head,
            points: prompts.points,
            boxes: prompts.boxes,
            prior: None,
            size: (doc.volume.width(), doc.volume.height()),
            scale: self.scale_for(doc).0,
            current: self.predictions.get(head, z),
            images: Self::images(&doc.volume),
        });
    }

    /// The GPU failed under the model's work (lost, out of memory, a kernel error) while
    /// `doing`: the model moves to the CPU and is loaded again there; the version in use
    /// follows once it is loaded, and the visible slice is predicted again. Masks and edits
    /// live in the app and are untouched. Said once, however many workers report it.
    fn move_to_cpu(
        &mut self,
        doing: &str,
        message: &str,
        has_doc: bool,
        classes: &ClassTable,
        notices: &mut Notices,
        ctx: &egui::Context,
    ) {
        let cpu = Device::flex();
        if self.device.as_ref() == Some(&cpu) {
            return;
        }
        self.predictions.stop_running();
        notices.warn(format!(
            "the GPU failed while {doing} ({message}); the model runs on the CPU from now on (masks and edits \
             are untouched)"
        ));
        self.device = Some(cpu);
        self.device_note = format!("CPU (the GPU failed: {message})");
        self.versions.refresh_after_swap = has_doc;
        self.start(classes, ctx);
    }

    /// Tells the trainer that someone is drawing (it waits between steps meanwhile).
    pub(super) fn set_interactive(&self, interactive: bool) {
        self.training.set_interactive(interactive);
    }

    /// Drains the workers and the download, stores predictions, and keeps the prediction
    /// layer showing the model's output for the active class on the visible slice.
    pub(super) fn logic(
        &mut self,
        mut doc: Option<&mut Document>,
        classes: &ClassTable,
        active: ClassId,
        notices: &mut Notices,
        ctx: &egui::Context,
    ) {
        if let Some(path) = self.download.poll() {
            self.choose_checkpoint(path, classes, notices, ctx);
        }
        let events = self.inference.as_ref().map(InferenceWorker::events).unwrap_or_default();
        let current = self.inference.as_ref().map_or(0, InferenceWorker::generation);
        for e in events {
            match e {
                InferEvent::Loaded { base, warning, memory, threshold, input_px, .. } => {
                    self.threshold = Some(threshold);
                    self.input_px = Some(input_px);
                    self.status = Status::Ready;
                    self.base = Some(base);
                    self.memory_model = Some(*memory);
                    self.warning = warning;
                    // The new model starts bare: tell it again which version is in use.
                    if doc.is_some() {
                        let version = self.versions.unsent();
                        self.use_version(version, None, notices);
                    }
                }
                InferEvent::DeviceLost { message } => {
                    self.move_to_cpu("the model worked", &message, doc.is_some(), classes, notices, ctx);
                }
                InferEvent::LoadFailed(m) => {
                    self.status = Status::Failed(m);
                    self.predictions.stop_running();
                    self.versions.refresh_after_swap = false;
                }
                InferEvent::AdapterInUse { .. } => {
                    if self.versions.refresh_after_swap
                        && let Some(doc) = doc.as_deref()
                    {
                        self.versions.refresh_after_swap = false;
                        // Visible slice first, then every slice that had a prediction.
                        let z = doc.view.cursor.z;
                        let (lo, hi) = self.predictions.span().unwrap_or((z, z));
                        self.predict(doc, lo.0.min(z.0)..hi.0.max(z.0) + 1);
                    }
                }
                InferEvent::AdapterFailed { message, in_use, .. } => {
                    notices.error(message);
                    // The worker keeps the version it had: so does the panel.
                    self.versions.kept(in_use);
                }
                InferEvent::Slice { generation, version, prediction, progress } => {
                    if generation != current || !self.versions.is_active(version) {
                        continue; // superseded or from an older adapter
                    }
                    let z_now = doc.as_deref().map_or(prediction.z, |d| d.view.cursor.z);
                    // Part of a slice (tiles so far, a band's rows) goes into the stack's maps,
                    // so only while a stack is open.
                    let size = doc.as_deref().map(|d| (d.volume.width(), d.volume.height()));
                    for (head, p) in prediction.probabilities.into_iter().enumerate() {
                        let head = crate::model::HeadIndex(head);
                        let whole = size.is_none_or(|(_, h)| prediction.rows == (0..h));
                        match (&prediction.partial, whole, size) {
                            (None, true, _) => self.predictions.insert(head, prediction.z, version, p, z_now),
                            (_, _, Some((width, height))) => {
                                let part = PartialSlice {
                                    version,
                                    probabilities: &p,
                                    width,
                                    height,
                                    rows: prediction.rows.clone(),
                                    tiles: prediction.partial.as_deref(),
                                };
                                self.predictions.insert_part(head, prediction.z, part, z_now);
                            }
                            (_, _, None) => {}
                        }
                    }
                    self.predictions.progressed(generation, &progress);
                }
                InferEvent::Refined { version, z, class, probabilities, what, .. } => {
                    if self.versions.is_active(version) {
                        self.predictions.insert(class, z, version, probabilities, z);
                        self.refine.done(what);
                    }
                }
                InferEvent::Finished { generation, .. } => self.predictions.finished(generation),
                InferEvent::Failed { generation, message } => {
                    if generation == current {
                        self.predictions.stop_running();
                        notices.error(message);
                    }
                }
            }
        }
        let trainer_events = self.trainer.as_ref().map(TrainerWorker::events).unwrap_or_default();
        for e in trainer_events {
            if let TrainerEvent::DeviceLost { message } = &e {
                self.move_to_cpu("training ran", message, doc.is_some(), classes, notices, ctx);
            }
            if let Some((meta, path)) = self.training.on_event(e) {
                let version = meta.version;
                self.versions.add(meta, path);
                self.use_version(version, doc.as_deref_mut(), notices);
            }
        }
        if let Some(doc) = doc {
            if let Some(t) = self.threshold {
                doc.default_threshold(t);
            }
            self.predictions.show(doc, active, self.heads.head_of(active));
        }
    }

    /// The scale predictions of `doc` are made at, and where it comes from: the panel's choice,
    /// else the adapter in use's, else [`Scale::default_for`] the stack.
    fn scale_for(&self, doc: &Document) -> (Scale, &'static str) {
        if let Some(s) = self.settings.scale {
            return (s, "chosen");
        }
        if let Some(s) = self.versions.trained_scale() {
            return (s, "the adapter's");
        }
        let input = self.input_px.unwrap_or(512);
        (Scale::default_for(doc.volume.width(), doc.volume.height(), input), "automatic")
    }

    /// The panel's line about the scale on `doc`, and a warning when it is not the one the
    /// adapter in use was trained at.
    fn scale_lines(&self, doc: Option<&Document>) -> (String, Option<String>) {
        let (Some(doc), Some(input)) = (doc, self.input_px) else { return (String::new(), None) };
        let (scale, origin) = self.scale_for(doc);
        let (w, h) = (doc.volume.width(), doc.volume.height());
        let grid = crate::infer::TileGrid::new(w, h, input, scale);
        let line = match (scale, grid.columns_rows()) {
            (Scale::Fit, _) => format!("{origin}: fit, each {w}×{h} slice resized to {input}²"),
            (s, (1, 1)) => format!("{origin}: {s}, one {input}² tile per slice"),
            (s, (c, r)) => format!("{origin}: {s}, {c} × {r} tiles of {input}² per slice"),
        };
        let warning = self
            .versions
            .trained_scale()
            .filter(|t| *t != scale)
            .map(|t| format!("the adapter in use was trained at scale {t}; predicting at {scale}"));
        (line, warning)
    }

    /// What the panel shows.
    pub(super) fn view(&self, doc: Option<&Document>) -> ModelView {
        let (scale_line, scale_warning) = self.scale_lines(doc);
        let status = match &self.status {
            Status::NoCheckpoint => "no checkpoint".to_string(),
            Status::Loading => "loading the checkpoint…".to_string(),
            Status::Ready => format!("ready · {} · {}", self.device_note, self.precision_note),
            Status::Failed(m) => format!("failed: {m}"),
        };
        let z = doc.map(|d| d.view.cursor.z);
        let (held_out, current_held_out) = self.training.held_out(z);
        let (training, last_run) = self.training.views();
        ModelView {
            checkpoint: self
                .settings
                .checkpoint
                .as_ref()
                .map(|p| p.file_name().unwrap_or_default().to_string_lossy().into_owned()),
            status,
            ready: self.status == Status::Ready,
            warning: self.warning.clone().or_else(|| self.download.error()),
            downloading: self.download.progress_line(),
            predicting: self.predictions.progress_line(),
            predictions: self.predictions.summary(self.heads.len(), self.versions.in_use()),
            refined: self.refine.last(),
            queued: doc.map_or(0, |d| self.training.queued(d, &self.heads)),
            held_out,
            current_held_out,
            training,
            last_run,
            versions: self.versions.rows(),
            active_version: self.versions.in_use(),
            half_precision: self.settings.precision == Precision::F16,
            half_precision_unavailable: match &self.device {
                Some(d) => half_precision_available(d).err().map(|e| e.to_string()),
                None => Some("no compute device".to_owned()),
            },
            scale: self.settings.scale,
            scale_line,
            scale_warning,
        }
    }

    /// The adapter version predictions come from, in words for an export's manifest (`None`:
    /// the base model).
    pub(super) fn adapter_in_use(&self) -> Option<String> {
        self.versions.in_use_path().map(|p| format!("v{} ({})", self.versions.in_use(), p.display()))
    }

    /// The official files the first-run dialog offers: (file, size, note).
    pub(super) fn official_choices() -> Vec<(String, String, String)> {
        settings::official_choices()
    }

    /// The first-run dialog's download line and last error.
    pub(super) fn first_run_state(&self) -> (Option<(f32, String)>, Option<String>) {
        (self.download.progress_line(), self.download.error())
    }
}
