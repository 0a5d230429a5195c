//! The desktop app: the only module that sees all others. It owns the open stack, its masks
//! and the viewer state; drains the loader's events in [`eframe::App::logic`]; uploads
//! changed content to the GPU and lays out the UI in [`eframe::App::ui`].
//!
//! Threads: the UI thread never waits on I/O. Opening and importing run as one-shot named
//! jobs, slices come from the `stack-loader` thread ([`loader`]), file dialogs run on a
//! `file-dialog` thread.

mod document;
pub mod gpu;
mod jobs;
pub mod loader;
mod model;
pub mod recent;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use crossbeam_channel::bounded;
use eframe::egui::{self, Vec2};
use eframe::egui_wgpu::RenderState;

use crate::render::{self, DeviceCaps};
use crate::state::tools::{self as edit_tools, EditPlane, EditTarget, PointerEvent, Tool, ToolState};
use crate::state::{ClassId, ClassTable, MaskVolume, Provenance, ReviewState, SliceIndex};
use crate::ui::panels::{self, HoverInfo, UiAction};
use crate::ui::tools::{self as tools_ui, EditAction, EditStatus};
use crate::ui::viewer::{self, Plane, ViewerState};
use document::Document;
pub use document::image_pixels;
use jobs::{DialogKind, JobResult, Jobs, OpenFailure, import_labels, open_job, open_prediction, open_project_job};
use loader::Loader;
use recent::RecentFiles;

/// A stack to open and what to import with it. Kept in the recent-files list.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OpenRequest {
    /// Multi-page TIFF, PNG/TIFF file or folder of slices.
    pub stack: PathBuf,
    /// A label map to import (values mapped to classes by `label_map`).
    #[serde(default)]
    pub labels: Option<PathBuf>,
    /// `VALUE=CLASS,...`; default: the label map's `.classes.json` sidecar, else value N =
    /// class id N.
    #[serde(default)]
    pub label_map: Option<String>,
    /// Binary masks per class: (class export name, stack).
    #[serde(default)]
    pub masks: Vec<(String, PathBuf)>,
    /// A probability map stack (the prediction layer).
    #[serde(default)]
    pub prediction: Option<PathBuf>,
}

impl OpenRequest {
    /// Just a stack.
    pub fn stack(path: impl Into<PathBuf>) -> Self {
        Self { stack: path.into(), labels: None, label_map: None, masks: Vec::new(), prediction: None }
    }

    /// The bundled sample with its labels.
    pub fn sample() -> Self {
        Self {
            labels: Some(PathBuf::from(crate::io::sample::SAMPLE_LABELS)),
            label_map: Some(crate::io::sample::SAMPLE_LABEL_MAPPING.to_owned()),
            ..Self::stack(crate::io::sample::SAMPLE_STACK)
        }
    }
}

/// How the app starts.
#[derive(Debug, Clone, Default)]
pub struct LaunchOptions {
    /// What to open first; `None` opens nothing.
    pub open: Option<OpenRequest>,
    /// Save a screenshot here once the first stack is shown, then quit.
    pub screenshot: Option<PathBuf>,
    /// Where the recent-files list lives (`None`: [`recent::default_config_dir`]).
    pub config_dir: Option<PathBuf>,
    /// Keep no recent-files list (tests).
    pub no_recent: bool,
    /// Where sessions (journals of edits to stacks opened without a project) live (`None`:
    /// `io::session::default_data_dir`).
    pub data_dir: Option<PathBuf>,
    /// Run the model on the CPU even where the display GPU could run it (also set by
    /// `SAM4EM_MODEL_DEVICE=cpu`).
    pub cpu_model: bool,
}

/// Runs the app window until it is closed.
pub fn run(options: LaunchOptions) -> Result<()> {
    let wgpu_options = eframe::egui_wgpu::WgpuConfiguration {
        wgpu_setup: gpu::display_setup(cpu_model_asked(&options)),
        ..Default::default()
    };
    let native = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("SAM4EM Studio")
            .with_inner_size([1400.0, 900.0])
            .with_min_inner_size([640.0, 420.0])
            .with_drag_and_drop(true),
        renderer: eframe::Renderer::Wgpu,
        wgpu_options,
        ..Default::default()
    };
    eframe::run_native("SAM4EM Studio", native, Box::new(move |cc| Ok(Box::new(StudioApp::new(cc, options)))))
        .map_err(|e| anyhow::anyhow!("cannot start the window: {e}"))
}

/// The app.
pub struct StudioApp {
    render_state: Option<RenderState>,
    device_note: String,
    model_device: Option<burn::tensor::Device>,
    classes: ClassTable,
    doc: Option<Document>,
    opening: Option<OpenRequest>,
    jobs: Jobs,
    recent: RecentFiles,
    errors: Vec<String>,
    screenshot: Option<PathBuf>,
    screenshot_requested: bool,
    screenshot_done: Arc<std::sync::atomic::AtomicBool>,
    frames: u64,
    central_area: Option<egui::Rect>,
    tools: ToolState,
    active_class: ClassId,
    data_dir: Option<PathBuf>,
    /// A project whose stack moved, and the message saying so: the user is asked where it is.
    locate: Option<(PathBuf, String)>,
    /// The model: checkpoint, workers, predictions, adapter versions.
    model: model::ModelCtl,
    /// The refine tool's press position, current position and button, while pressed.
    refine_drag: Option<([f32; 2], [f32; 2], bool)>,
}

impl StudioApp {
    /// Sets up the renderer on eframe's device, shares the device with the model where it can,
    /// and starts opening `options.open`.
    pub fn new(cc: &eframe::CreationContext<'_>, options: LaunchOptions) -> Self {
        let render_state = cc.wgpu_render_state.clone();
        let mut device_note = "no wgpu renderer: slices cannot be drawn".to_owned();
        let mut model_device = None;
        let mut model_note = "no wgpu renderer".to_owned();
        if let Some(rs) = &render_state {
            render::callback::install(rs, 1);
            let caps = DeviceCaps::of(&rs.adapter, &rs.device);
            device_note = format!("display: {}", caps.summary());
            let (device, note) = gpu::model_device_for(rs, &caps, cpu_model_asked(&options));
            model_device = Some(device);
            device_note = format!("{device_note}; model: {note}");
            model_note = note;
        }
        tracing::info!("{device_note}");
        let (tx, rx) = bounded(16);
        let config_dir = options.config_dir.clone().or_else(recent::default_config_dir);
        let recent = if options.no_recent { RecentFiles::default() } else { RecentFiles::load(config_dir.as_deref()) };
        let classes = ClassTable::default();
        let active_class = classes.iter().nth(1).or(classes.iter().next()).map_or(ClassId(1), |c| c.id);
        let model_device_copy = model_device.clone();
        let mut app = Self {
            render_state,
            device_note,
            model_device,
            classes,
            doc: None,
            opening: None,
            jobs: Jobs { tx, rx, running: Vec::new() },
            recent,
            errors: Vec::new(),
            screenshot: options.screenshot,
            screenshot_requested: false,
            screenshot_done: Arc::default(),
            frames: 0,
            central_area: None,
            tools: ToolState::default(),
            active_class,
            data_dir: options.data_dir.clone().or_else(crate::io::session::default_data_dir),
            locate: None,
            model: model::ModelCtl::new(config_dir, options.data_dir, model_device_copy, model_note),
            refine_drag: None,
        };
        app.model.start(&app.classes, &cc.egui_ctx);
        if let Some(request) = options.open {
            app.open(request, &cc.egui_ctx);
        }
        app
    }

    /// Starts opening a stack in the background; the current one stays until it is ready.
    pub fn open(&mut self, request: OpenRequest, ctx: &egui::Context) {
        let classes = self.classes.clone();
        let data_dir = self.data_dir.clone();
        self.opening = Some(request.clone());
        self.jobs.spawn("stack-open", ctx, move || JobResult::Opened(Box::new(open_job(request, classes, data_dir))));
    }

    /// Whether anything is still loading (open jobs, slices, orthogonal planes).
    pub fn is_busy(&self) -> bool {
        self.opening.is_some() || self.jobs.busy() || self.doc.as_ref().is_some_and(Document::is_loading)
    }

    /// Whether the model is loading, predicting, training or downloading.
    pub fn model_busy(&self) -> bool {
        self.model.is_busy()
    }

    /// Applies a model-panel action (what its buttons do).
    pub fn model_action(&mut self, action: crate::ui::model::ModelAction, ctx: &egui::Context) {
        if let Some(kind) = self.model.act(action, self.doc.as_mut(), &self.classes, &mut self.errors, ctx) {
            self.pick(kind, ctx);
        }
    }

    /// The model panel's settings (epochs per Retrain, prediction radius).
    pub fn model_panel_settings(&mut self) -> &mut crate::ui::model::ModelPanelSettings {
        &mut self.model.panel
    }

    /// What the model panel shows.
    pub fn model_view(&self) -> crate::ui::model::ModelView {
        self.model.view(self.doc.as_ref())
    }

    /// The model's prediction of `class` on slice `z` (probabilities scaled to 0–255).
    pub fn model_prediction(&self, class: ClassId, z: SliceIndex) -> Option<Arc<Vec<u8>>> {
        self.model.prediction(class, z)
    }

    /// Uses `checkpoint` (with a model configuration for checkpoints that are not a SAM 2
    /// size) from now on, as the checkpoint dialog does, and loads it.
    pub fn choose_checkpoint(&mut self, checkpoint: PathBuf, config: Option<PathBuf>, ctx: &egui::Context) {
        self.model.choose_checkpoint_with(checkpoint, config, &self.classes, &mut self.errors, ctx);
    }

    /// The viewer state of the open stack.
    pub fn viewer(&self) -> Option<&ViewerState> {
        self.doc.as_ref().map(|d| &d.view)
    }

    /// Mutable viewer state (tests drive it).
    pub fn viewer_mut(&mut self) -> Option<&mut ViewerState> {
        self.doc.as_mut().map(|d| &mut d.view)
    }

    /// The open stack's path.
    pub fn stack_path(&self) -> Option<&Path> {
        self.doc.as_ref().map(|d| d.volume.path())
    }

    /// The area the views were laid out in last frame (split by [`viewer::layout`]).
    pub fn last_central_area(&self) -> Option<egui::Rect> {
        self.central_area
    }

    /// Errors shown to the user and not yet dismissed.
    pub fn errors(&self) -> &[String] {
        &self.errors
    }

    /// The display / model device line of the status bar.
    pub fn device_note(&self) -> &str {
        &self.device_note
    }

    /// The burn device the model runs on (shared with the display where possible).
    pub fn model_device(&self) -> Option<&burn::tensor::Device> {
        self.model_device.as_ref()
    }

    /// The masks of the open stack.
    pub fn masks(&self) -> Option<&MaskVolume> {
        self.doc.as_ref().map(|d| &d.masks)
    }

    /// Sets `class` to `value` inside `rect` of slice `z`, as a person's edit (the primitive
    /// the proofreading tools build on). Only the rectangle is re-uploaded to the GPU.
    pub fn edit_rect(
        &mut self,
        class: ClassId,
        z: SliceIndex,
        rect: render::PixelRect,
        value: bool,
    ) -> Result<(), String> {
        let Some(doc) = &mut self.doc else { return Err("no stack is open".to_owned()) };
        doc.edit_rect(class, z, rect, value, &mut self.errors)
    }

    /// The tool settings (tests pick tools through them or through the panel).
    pub fn tools(&self) -> &ToolState {
        &self.tools
    }

    /// The class the tools edit.
    pub fn active_class(&self) -> ClassId {
        self.active_class
    }

    /// Label of the step undo would undo.
    pub fn undo_label(&self) -> Option<&str> {
        self.doc.as_ref().and_then(|d| d.editor.undo_label())
    }

    /// The folder the open stack's edits are journalled to.
    pub fn session_dir(&self) -> Option<&Path> {
        self.doc.as_ref().and_then(|d| d.session.as_ref()).map(|s| s.dir())
    }

    /// Applies an editing command (what the panel buttons and shortcuts do).
    pub fn edit(&mut self, action: EditAction, ctx: &egui::Context) {
        let Some(doc) = &mut self.doc else { return };
        let class = self.active_class;
        let z = doc.view.cursor.z;
        let slots: Vec<ClassId> = self.classes.iter().map(|c| c.id).collect();
        fn target(doc: &mut Document, class: ClassId, z: SliceIndex) -> EditTarget<'_> {
            EditTarget { masks: &mut doc.masks, editor: &mut doc.editor, class, z }
        }
        let changes_masks = matches!(
            action,
            EditAction::FillHoles
                | EditAction::CopyFrom(_)
                | EditAction::Interpolate
                | EditAction::AcceptSlice
                | EditAction::UnacceptSlice
                | EditAction::AcceptPrediction { .. }
        );
        if changes_masks && doc.editor.in_progress() {
            // A key pressed mid-stroke: the stroke is one transaction, finish it first.
            doc.notes.push(format!("{}: finish the stroke first", action_name(action)));
            return;
        }
        let outcome = match action {
            EditAction::Undo => {
                self.tools.cancel_drag();
                if let Some(c) = doc.editor.undo(&mut doc.masks) {
                    doc.undo_redo(&c, &mut self.errors);
                }
                return;
            }
            EditAction::Redo => {
                if let Some(c) = doc.editor.redo(&mut doc.masks) {
                    doc.undo_redo(&c, &mut self.errors);
                }
                return;
            }
            EditAction::Abort => {
                let event = PointerEvent::Abort;
                self.tools.handle(event, target(doc, class, z))
            }
            EditAction::FillHoles => edit_tools::fill_holes(target(doc, class, z)),
            EditAction::CopyFrom(delta) => edit_tools::copy_slice(target(doc, class, z), z.0 as isize + delta),
            EditAction::Interpolate => edit_tools::interpolate(target(doc, class, z)),
            EditAction::AcceptSlice => {
                edit_tools::set_review(&mut doc.masks, &mut doc.editor, &slots, z, ReviewState::Accepted)
            }
            EditAction::UnacceptSlice => edit_tools::unaccept(&mut doc.masks, &mut doc.editor, &slots, z),
            EditAction::AcceptPrediction { all_unreviewed: false } => {
                let Some((pz, p)) = doc.probabilities.clone().filter(|(pz, _)| *pz == z) else {
                    self.errors.push("no prediction is loaded for this slice".to_owned());
                    return;
                };
                let [w, h, _] = doc.view.shape;
                let plane = jobs::threshold_plane(w, h, &p, doc.view.prediction.threshold);
                edit_tools::accept_predictions(&mut doc.masks, &mut doc.editor, class, &[(pz, plane)])
            }
            EditAction::AcceptPrediction { all_unreviewed: true } if self.model.has_predictions(class) => {
                // The model's predictions: already in memory, thresholded here.
                let unreviewed = unreviewed_slices(&doc.masks, class, doc.view.shape[2]);
                let planes = self.model.planes(class, &unreviewed, doc.view.prediction.threshold, doc.view.shape[0]);
                edit_tools::accept_predictions(&mut doc.masks, &mut doc.editor, class, &planes)
            }
            EditAction::AcceptPrediction { all_unreviewed: true } => {
                let Some(prediction) = doc.prediction.clone() else { return };
                let unreviewed = unreviewed_slices(&doc.masks, class, doc.view.shape[2]);
                let threshold = doc.view.prediction.threshold;
                self.jobs.spawn("prediction-accept", ctx, move || {
                    JobResult::PredictionPlanes((class, jobs::prediction_planes(&prediction, unreviewed, threshold)))
                });
                return;
            }
            EditAction::NextUnreviewed { forward } => {
                match edit_tools::next_unreviewed(&doc.masks, &slots, doc.view.cursor.z, forward) {
                    Some(next) => doc.view.set_slice(next.0 as isize),
                    None => doc.notes.push("every slice is accepted".to_owned()),
                }
                return;
            }
            EditAction::SetActiveClass(c) => {
                self.active_class = c;
                return;
            }
            EditAction::Save => {
                self.save_session();
                return;
            }
            EditAction::SaveAsDialog => {
                self.pick(DialogKind::SaveProjectAs, ctx);
                return;
            }
            EditAction::OpenProjectDialog => {
                self.pick(DialogKind::OpenProject, ctx);
                return;
            }
        };
        match outcome {
            Ok(o) => doc.apply_outcome(o, &mut self.errors),
            Err(e) => self.errors.push(format!("{}: {e}", action_name(action))),
        }
    }

    /// Sends one pointer event to the active tool on the shown slice (tests drive tools with
    /// these as the views do).
    pub fn pointer(&mut self, event: PointerEvent) {
        self.pointer_in(Plane::Xy, event);
    }

    /// Sends one pointer event, in the pixels of view `plane`, to the active tool: the XY
    /// view edits the slice it shows, XZ and YZ the row and column through the cursor. Nothing
    /// happens while the view still shows something else (a slice on its way).
    pub fn pointer_in(&mut self, plane: Plane, event: PointerEvent) {
        let Some(doc) = &mut self.doc else { return };
        let c = doc.view.cursor;
        let at = match plane {
            Plane::Xy => match doc.gpu.xy_image {
                Some(z) => EditPlane::Xy(z),
                None => return,
            },
            _ if doc.gpu.ortho_image != Some([c.x, c.y]) => return,
            Plane::Xz => EditPlane::Xz { y: c.y },
            Plane::Yz => EditPlane::Yz { x: c.x },
        };
        self.tools.z_aspect = doc.view.z_aspect;
        if self.tools.tool == Tool::Refine {
            // A click is a point prompt, a drag a box, both on the XY slice.
            match (at, event) {
                (EditPlane::Xy(_), PointerEvent::Press { at, alternate }) => {
                    self.refine_drag = Some((at, at, alternate))
                }
                (_, PointerEvent::Move { to }) => {
                    if let Some((_, end, _)) = &mut self.refine_drag {
                        *end = to;
                    }
                }
                (_, PointerEvent::Release) => {
                    if let Some((from, to, alternate)) = self.refine_drag.take() {
                        let dragged = (to[0] - from[0]).abs().max((to[1] - from[1]).abs()) > 4.0;
                        let to = dragged.then_some(to);
                        self.model.refine_click(doc, self.active_class, from, to, !alternate, &mut self.errors);
                    }
                }
                (_, PointerEvent::Abort) => self.refine_drag = None,
                _ => {}
            }
            return;
        }
        let target = EditTarget { masks: &mut doc.masks, editor: &mut doc.editor, class: self.active_class, z: c.z };
        match self.tools.handle_in(event, target, at) {
            Ok(o) => doc.apply_outcome(o, &mut self.errors),
            Err(e) => self.errors.push(format!("{}: {e}", self.tools.tool.label())),
        }
    }

    /// Writes the journalled edits into the project's files (the journal starts empty again).
    pub fn save_session(&mut self) {
        let Some(doc) = &mut self.doc else { return };
        if let Some(session) = &mut doc.session {
            match session.save(&doc.masks, &self.classes) {
                Ok(()) => doc.notes.push(format!("saved {}", session.dir().display())),
                Err(e) => self.errors.push(e.to_string()),
            }
        }
    }

    /// Texture uploads so far (tests check that unchanged content is not re-uploaded).
    pub fn upload_stats(&self) -> Option<render::UploadStats> {
        self.render_state.as_ref().and_then(|rs| render::callback::with_renderer(rs, |r, _, _| r.upload_stats()))
    }

    /// Whether the XY view has a prediction layer on the GPU.
    pub fn prediction_on_gpu(&self) -> bool {
        self.render_state
            .as_ref()
            .and_then(|rs| render::callback::with_renderer(rs, |r, _, _| r.has_prediction(Plane::Xy.view_id())))
            .unwrap_or(false)
    }

    /// What the status bar says about the voxel under the pointer.
    pub fn hover_info(&self) -> HoverInfo {
        self.doc.as_ref().map(|d| d.hover_info(&self.classes)).unwrap_or_default()
    }

    /// The class table.
    pub fn classes(&self) -> &ClassTable {
        &self.classes
    }

    /// The recent-files list.
    pub fn recent(&self) -> &[OpenRequest] {
        &self.recent.entries
    }

    fn pick(&mut self, kind: DialogKind, ctx: &egui::Context) {
        let start = self.doc.as_ref().and_then(|d| d.volume.path().parent().map(Path::to_path_buf));
        self.jobs.spawn("file-dialog", ctx, move || {
            let mut dialog = rfd::FileDialog::new();
            if let Some(dir) = start {
                dialog = dialog.set_directory(dir);
            }
            let images = ["tif", "tiff", "png", "h5", "hdf5", "hdf"];
            let path = match kind {
                DialogKind::OpenFolder => dialog.set_title("Open a folder of slices").pick_folder(),
                DialogKind::OpenFile => dialog.set_title("Open a stack").add_filter("EM stacks", &images).pick_file(),
                DialogKind::ImportLabels => {
                    dialog.set_title("Import a label map").add_filter("Label maps", &images).pick_file()
                }
                DialogKind::OpenPrediction => {
                    dialog.set_title("Open a probability map").add_filter("Probability maps", &images).pick_file()
                }
                DialogKind::OpenProject => dialog.set_title("Open a project folder").pick_folder(),
                DialogKind::ExportMasks => dialog.set_title("Export masks into a folder").pick_folder(),
                DialogKind::SaveProjectAs => dialog.set_title("Save the project into a new folder").pick_folder(),
                DialogKind::LocateStack => {
                    dialog.set_title("Where is the project's stack now?").add_filter("EM stacks", &images).pick_file()
                }
                DialogKind::LocateStackFolder => {
                    dialog.set_title("Where is the project's folder of slices now?").pick_folder()
                }
                DialogKind::Checkpoint => dialog
                    .set_title("Choose a SAM 2 checkpoint")
                    .add_filter("SAM 2 checkpoints", &["pt", "safetensors"])
                    .pick_file(),
            };
            JobResult::Picked(kind, path)
        });
    }

    /// Shows a freshly opened stack (or project) in place of the current one.
    fn adopt(&mut self, mut opened: jobs::Opened, ctx: &egui::Context) {
        // The stack being replaced: compact its journal into its project files.
        self.save_session();
        if let Some(classes) = opened.classes.take() {
            if !classes.iter().any(|c| c.id == self.active_class) {
                self.active_class = classes.iter().next().map_or(self.active_class, |c| c.id);
            }
            self.classes = classes;
        }
        self.tools.cancel_drag();
        self.recent.push(&opened.request);
        ctx.send_viewport_cmd(egui::ViewportCommand::Title(format!(
            "SAM4EM Studio — {}",
            opened.volume.path().display()
        )));
        // Nothing of the previous stack may show over the new one.
        if let Some(rs) = &self.render_state {
            render::callback::with_renderer(rs, |r, _, _| {
                for plane in [Plane::Xy, Plane::Xz, Plane::Yz] {
                    r.forget_view(plane.view_id());
                }
            });
        }
        let doc = Document::new(opened, &self.classes, ctx);
        self.model.classes_changed(&self.classes, ctx);
        self.model.on_document(&doc);
        self.doc = Some(doc);
    }

    fn handle_job(&mut self, result: JobResult, ctx: &egui::Context) {
        match result {
            JobResult::Opened(opened) => {
                self.opening = None;
                match *opened {
                    Ok(opened) => self.adopt(opened, ctx),
                    Err(OpenFailure::Error(e)) => self.errors.push(e),
                    Err(OpenFailure::StackMissing { project, message }) => self.locate = Some((project, message)),
                }
            }
            JobResult::Imported(Ok((imported, notes))) => {
                if let Some(doc) = &mut self.doc {
                    for class in imported.classes().collect::<Vec<_>>() {
                        for (z, entry) in imported.slices(class) {
                            if let Err(e) = doc.masks.put(class, z, entry.mask.clone(), Provenance::Imported) {
                                self.errors.push(e.to_string());
                                break;
                            }
                        }
                    }
                    doc.unnoted_change = true;
                    // Undo steps recorded before the import would write over it.
                    doc.editor.clear();
                    doc.notes.extend(notes);
                    // An import is not a journalled edit: write it into the project at once.
                    if let Some(session) = &mut doc.session {
                        for class in imported.classes().collect::<Vec<_>>() {
                            for (z, _) in imported.slices(class) {
                                session.mark_changed(class, z);
                            }
                        }
                        if let Err(e) = session.save(&doc.masks, &self.classes) {
                            self.errors.push(e.to_string());
                        }
                    }
                }
            }
            JobResult::Imported(Err(e)) | JobResult::Prediction(Err(e)) => self.errors.push(e),
            JobResult::Prediction(Ok(p)) => {
                if let Some(doc) = &mut self.doc {
                    let wake = ctx.clone();
                    doc.prediction = Some(Arc::clone(&p));
                    doc.loader = Loader::spawn(Arc::clone(&doc.volume), Some(p), move || wake.request_repaint());
                    doc.requested_slice = None;
                    doc.requested_ortho = None;
                    doc.requested_prediction = None;
                    doc.failed.clear();
                    doc.probabilities = None;
                    doc.gpu.prediction = None;
                }
            }
            JobResult::PredictionPlanes((class, Ok(planes))) => {
                if let Some(doc) = &mut self.doc {
                    if planes.is_empty() {
                        doc.notes.push("no unreviewed slices to accept".to_owned());
                    }
                    match edit_tools::accept_predictions(&mut doc.masks, &mut doc.editor, class, &planes) {
                        Ok(o) => doc.apply_outcome(o, &mut self.errors),
                        Err(e) => self.errors.push(format!("accept predictions: {e}")),
                    }
                }
            }
            JobResult::PredictionPlanes((_, Err(e))) => self.errors.push(e),
            JobResult::Exported(Ok(outputs)) => {
                if let Some(doc) = &mut self.doc {
                    doc.notes.push(format!("exported {} files", outputs.len()));
                }
            }
            JobResult::Exported(Err(e)) => self.errors.push(e),
            JobResult::Picked(_, None) => {}
            JobResult::Picked(kind, Some(path)) => self.picked(kind, path, ctx),
        }
    }

    fn picked(&mut self, kind: DialogKind, path: PathBuf, ctx: &egui::Context) {
        match kind {
            DialogKind::OpenFile | DialogKind::OpenFolder => self.open(OpenRequest::stack(path), ctx),
            DialogKind::ImportLabels => {
                let Some(doc) = &self.doc else { return };
                let (w, h, d) = (doc.volume.width(), doc.volume.height(), doc.volume.depth());
                let classes = self.classes.clone();
                self.jobs.spawn("mask-import", ctx, move || {
                    let mut masks = MaskVolume::new(w, h, d);
                    JobResult::Imported(import_labels(&path, None, &classes, &mut masks).map(|notes| (masks, notes)))
                });
            }
            DialogKind::OpenPrediction => {
                let Some(doc) = &self.doc else { return };
                let volume = Arc::clone(&doc.volume);
                self.jobs.spawn("prediction-open", ctx, move || JobResult::Prediction(open_prediction(&path, &volume)));
            }
            DialogKind::OpenProject => {
                if jobs::is_project(&path) {
                    self.open(OpenRequest::stack(path), ctx);
                } else {
                    self.errors.push(format!("not a SAM4EM project (it has no project.json): {}", path.display()));
                }
            }
            DialogKind::SaveProjectAs => self.save_project_as(&path),
            DialogKind::ExportMasks => self.export_masks(path, ctx),
            DialogKind::LocateStack | DialogKind::LocateStackFolder => self.locate_stack(path, ctx),
            DialogKind::Checkpoint => self.model.choose_checkpoint(path, &self.classes, &mut self.errors, ctx),
        }
    }

    /// The project being opened whose stack was not found, if any (the app is asking where
    /// the stack went).
    pub fn stack_to_locate(&self) -> Option<(&Path, &str)> {
        self.locate.as_ref().map(|(p, m)| (p.as_path(), m.as_str()))
    }

    /// The answer to "where is the project's stack now?": opens the project with its stack at
    /// `path` (refused, with an error, when the shape differs from the project's).
    pub fn locate_stack(&mut self, path: PathBuf, ctx: &egui::Context) {
        let Some((project, _)) = self.locate.take() else { return };
        self.opening = Some(OpenRequest::stack(&project));
        self.jobs.spawn("stack-open", ctx, move || JobResult::Opened(Box::new(open_project_job(&project, Some(path)))));
    }

    /// Exports every class of the open stack's masks into `dir` (one binary TIFF per class and
    /// a label map) on a job thread.
    pub fn export_masks(&mut self, dir: PathBuf, ctx: &egui::Context) {
        let Some(doc) = &self.doc else { return };
        let masks = doc.masks.clone();
        let classes = self.classes.clone();
        let voxel_size = doc.volume.info().voxel_size;
        self.jobs.spawn("mask-export", ctx, move || {
            let opts = crate::io::ExportOptions { voxel_size, ..Default::default() };
            let formats = [crate::io::ExportFormat::Tiff, crate::io::ExportFormat::Labels];
            JobResult::Exported(
                crate::io::export_masks(&masks, &classes, &dir, &formats, &opts)
                    .map(|r| r.outputs)
                    .map_err(|e| e.to_string()),
            )
        });
    }

    /// Saves the open stack's masks as a project in `dir` (a new or empty folder) and
    /// journals further edits there.
    pub fn save_project_as(&mut self, dir: &Path) {
        let Some(doc) = &mut self.doc else { return };
        let result = match &mut doc.session {
            Some(session) => session.save_as(dir, &doc.masks, &self.classes),
            None => {
                let stack = crate::io::session::StackRef::from_info(doc.volume.info());
                crate::io::session::Project::create(dir, stack, &self.classes).and_then(|mut p| {
                    for class in doc.masks.classes().collect::<Vec<_>>() {
                        for z in doc.masks.slices(class).map(|(z, _)| z).collect::<Vec<_>>() {
                            p.mark_changed(class, z);
                        }
                    }
                    p.save(&doc.masks, &self.classes)?;
                    doc.session = Some(p);
                    Ok(())
                })
            }
        };
        match result {
            Ok(()) => {
                doc.notes.push(format!("saved as {}", dir.display()));
                self.recent.push(&OpenRequest::stack(dir));
            }
            Err(e) => self.errors.push(e.to_string()),
        }
    }

    fn act(&mut self, action: UiAction, ctx: &egui::Context) {
        match action {
            UiAction::OpenFileDialog => self.pick(DialogKind::OpenFile, ctx),
            UiAction::OpenFolderDialog => self.pick(DialogKind::OpenFolder, ctx),
            UiAction::ImportLabelsDialog => self.pick(DialogKind::ImportLabels, ctx),
            UiAction::OpenPredictionDialog => self.pick(DialogKind::OpenPrediction, ctx),
            UiAction::OpenRecent(i) => {
                if let Some(r) = self.recent.entries.get(i).cloned() {
                    self.open(r, ctx);
                }
            }
            UiAction::AutoContrast => {
                if let Some(doc) = &mut self.doc {
                    doc.auto_contrast();
                }
            }
            UiAction::Quit => ctx.send_viewport_cmd(egui::ViewportCommand::Close),
            UiAction::OpenProjectDialog => self.edit(EditAction::OpenProjectDialog, ctx),
            UiAction::SaveProject => self.edit(EditAction::Save, ctx),
            UiAction::SaveProjectAsDialog => self.edit(EditAction::SaveAsDialog, ctx),
            UiAction::ExportMasksDialog => self.pick(DialogKind::ExportMasks, ctx),
        }
    }

    fn screenshot_logic(&mut self, ctx: &egui::Context) {
        let Some(path) = self.screenshot.clone() else { return };
        if self.screenshot_done.load(std::sync::atomic::Ordering::Acquire) {
            self.screenshot = None;
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
            return;
        }
        if !self.screenshot_requested
            && self.frames > 5
            && !self.is_busy()
            && (self.doc.is_some() || !self.errors.is_empty())
        {
            self.screenshot_requested = true;
            let done = Arc::clone(&self.screenshot_done);
            let wake = ctx.clone();
            ctx.request_screenshot(move |image| {
                let [w, h] = image.size;
                let rgba: Vec<u8> = image.pixels.iter().flat_map(|c| c.to_array()).collect();
                match image::save_buffer(&path, &rgba, w as u32, h as u32, image::ExtendedColorType::Rgba8) {
                    Ok(()) => eprintln!("screenshot saved to {}", path.display()),
                    Err(e) => eprintln!("error: cannot save the screenshot: {e}: {}", path.display()),
                }
                done.store(true, std::sync::atomic::Ordering::Release);
                wake.request_repaint();
            });
        }
        ctx.request_repaint();
    }
}

/// How an editing command is named in error messages.
/// Slices of `class` a prediction may be accepted into: not reviewed by a person, not
/// imported.
fn unreviewed_slices(masks: &MaskVolume, class: ClassId, depth: usize) -> Vec<SliceIndex> {
    (0..depth)
        .map(SliceIndex)
        .filter(|&z| {
            matches!(masks.review(class, z), ReviewState::Unseen | ReviewState::Predicted)
                && masks.provenance(class, z) != Provenance::Imported
        })
        .collect()
}

fn action_name(action: EditAction) -> &'static str {
    match action {
        EditAction::Undo => "undo",
        EditAction::Redo => "redo",
        EditAction::Abort => "abort",
        EditAction::FillHoles => "fill holes",
        EditAction::CopyFrom(_) => "copy slice",
        EditAction::Interpolate => "interpolate",
        EditAction::AcceptSlice | EditAction::UnacceptSlice => "review",
        EditAction::AcceptPrediction { .. } => "accept prediction",
        EditAction::NextUnreviewed { .. } => "next unreviewed",
        EditAction::SetActiveClass(_) => "active class",
        EditAction::Save | EditAction::SaveAsDialog => "save project",
        EditAction::OpenProjectDialog => "open project",
    }
}

/// Whether the model was asked to run on the CPU (`--cpu-model` or `SAM4EM_MODEL_DEVICE=cpu`).
fn cpu_model_asked(options: &LaunchOptions) -> bool {
    options.cpu_model || std::env::var("SAM4EM_MODEL_DEVICE").is_ok_and(|v| v == "cpu")
}

impl eframe::App for StudioApp {
    fn on_exit(&mut self) {
        // The journal already holds every committed edit; this folds it into the project's
        // files so the next start does not have to replay it.
        self.save_session();
    }

    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        while let Ok(result) = self.jobs.rx.try_recv() {
            self.handle_job(result, ctx);
        }
        for path in panels::dropped_paths(ctx) {
            self.open(OpenRequest::stack(path), ctx);
        }
        if let Some(doc) = &mut self.doc {
            doc.logic(&mut self.errors);
        }
        self.model.logic(self.doc.as_mut(), &self.classes, self.active_class, &mut self.errors, ctx);
        // The trainer waits between steps while a stroke is drawn.
        self.model.set_interactive(self.doc.as_ref().is_some_and(|d| d.editor.in_progress()));
        self.screenshot_logic(ctx);
        self.frames += 1;
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let ctx = ui.ctx().clone();
        let mut actions = Vec::new();
        let recent: Vec<String> = self.recent.entries.iter().map(|r| panels::display_name(&r.stack)).collect();
        egui::Panel::top("menu").show(ui, |ui| {
            panels::menu_bar_ui(ui, self.doc.as_mut().map(|d| &mut d.view), &recent, &mut actions);
        });
        if self.doc.is_some() {
            // Before the viewer's keys: shortcuts with modifiers (Shift+F) must win over the
            // plain keys (F) that egui would otherwise match too. Applied before the views
            // handle the pointer, so that Esc drops a stroke before a release could commit it.
            for e in tools_ui::handle_edit_keys(&ctx, &mut self.tools, &self.classes) {
                self.edit(e, &ctx);
            }
        }
        let mut edits = Vec::new();
        let hover = self.doc.as_ref().map(|d| d.hover_info(&self.classes)).unwrap_or_default();
        egui::Panel::bottom("status").show(ui, |ui| match &self.doc {
            Some(doc) => {
                let voxel = doc.volume.info().voxel_size.map_or_else(|| "unknown".to_owned(), |v| v.to_string());
                let mut notes = doc.notes.join(" · ");
                if let Some(r) = &self.opening {
                    notes = format!("opening {}…", r.stack.display());
                }
                panels::status_bar_ui(ui, &doc.view, &hover, &voxel, &notes);
            }
            None => {
                ui.label(&self.device_note);
            }
        });
        let slots: Vec<ClassId> = self.classes.iter().map(|c| c.id).collect();
        let mut model_actions = Vec::new();
        if let Some(doc) = &mut self.doc {
            egui::Panel::left("display").resizable(true).default_size(270.0).show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| {
                    let status = EditStatus {
                        undo: doc.editor.undo_label().map(str::to_owned),
                        redo: doc.editor.redo_label().map(str::to_owned),
                        history_bytes: doc.editor.history_bytes(),
                        review: Some(edit_tools::slice_review(&doc.masks, &slots, doc.view.cursor.z)),
                        project: doc.session.as_ref().map(|s| s.dir().display().to_string()),
                        has_prediction: doc.prediction.is_some() || self.model.has_predictions(self.active_class),
                    };
                    tools_ui::tool_panel_ui(
                        ui,
                        &mut self.tools,
                        &mut self.active_class,
                        &self.classes,
                        &status,
                        &mut edits,
                    );
                    ui.separator();
                    let view = self.model.view(Some(doc));
                    crate::ui::model::model_panel_ui(ui, &view, &mut self.model.panel, &mut model_actions);
                    ui.separator();
                    panels::display_panel_ui(
                        ui,
                        &mut doc.view,
                        &mut self.classes,
                        doc.data_range,
                        doc.prediction.is_some(),
                        &mut actions,
                    );
                    ui.separator();
                    // The name, not the full path: the panel stays readable (and snapshots do not
                    // depend on where the stack lives); the full path is on hover and in the title.
                    ui.label(egui::RichText::new(panels::display_name(doc.volume.path())).small())
                        .on_hover_text(doc.volume.path().display().to_string());
                    ui.label(egui::RichText::new(&self.device_note).small().weak());
                });
            });
        }
        let mut pointer = Vec::new();
        egui::CentralPanel::default().show(ui, |ui| {
            let Some(doc) = &mut self.doc else {
                ui.centered_and_justified(|ui| match &self.opening {
                    Some(r) => ui.spinner().on_hover_text(format!("opening {}", r.stack.display())),
                    None => ui.label("Open a stack: File > Open stack, or drop a file or folder here."),
                });
                return;
            };
            panels::slice_slider_ui(ui, &mut doc.view);
            let states: Vec<ReviewState> =
                (0..doc.view.shape[2]).map(|z| edit_tools::slice_review(&doc.masks, &slots, SliceIndex(z))).collect();
            if let Some(z) = tools_ui::review_strip_ui(ui, &states, doc.view.cursor.z.0) {
                doc.view.set_slice(z as isize);
            }
            let area = ui.available_rect_before_wrap();
            self.central_area = Some(area);
            let layout = viewer::layout(area, &doc.view);
            let xy_rect = layout[0].1;
            doc.view.keep_fitted(xy_rect.size());
            viewer::handle_keys(&ctx, &mut doc.view, xy_rect.size());
            if let Some(rs) = &self.render_state {
                doc.upload(rs, &self.classes, &mut self.errors);
            }
            let colors: Vec<[u8; 3]> = self.classes.iter().map(|c| [c.color.0, c.color.1, c.color.2]).collect();
            for (plane, rect) in viewer::layout(area, &doc.view) {
                let has_image = match plane {
                    Plane::Xy => doc.gpu.xy_image.is_some(),
                    Plane::Xz | Plane::Yz => doc.gpu.ortho_image.is_some(),
                };
                let has_image = has_image && self.render_state.is_some();
                let events = viewer::plane_ui(ui, rect, plane, &mut doc.view, &colors, has_image, Some(&self.tools));
                pointer.extend(events.into_iter().map(|e| (plane, e)));
            }
            ui.allocate_rect(area, egui::Sense::hover());
            panels::help_ui(&ctx, &mut doc.view);
        });
        if !pointer.is_empty() || !edits.is_empty() {
            // Applied after this frame's upload: the next frame shows them (a lasso released
            // with a still mouse would otherwise wait for the next input).
            ctx.request_repaint();
        }
        for (plane, event) in pointer {
            self.pointer_in(plane, event);
        }
        for e in edits {
            self.edit(e, &ctx);
        }
        if let Some((project, message)) = &self.locate {
            let mut choice = None;
            egui::Window::new("Stack not found")
                .collapsible(false)
                .anchor(egui::Align2::CENTER_CENTER, Vec2::ZERO)
                .show(&ctx, |ui| {
                    ui.label(message);
                    ui.label(egui::RichText::new(format!("project: {}", project.display())).small());
                    ui.horizontal(|ui| {
                        if ui.button("Locate stack file…").clicked() {
                            choice = Some(Some(DialogKind::LocateStack));
                        }
                        if ui.button("Locate folder of slices…").clicked() {
                            choice = Some(Some(DialogKind::LocateStackFolder));
                        }
                        if ui.button("Cancel").clicked() {
                            choice = Some(None);
                        }
                    });
                });
            match choice {
                Some(Some(kind)) => self.pick(kind, &ctx),
                Some(None) => self.locate = None,
                None => {}
            }
        }
        if !self.errors.is_empty() {
            let mut dismiss = false;
            egui::Window::new("Problem")
                .collapsible(false)
                .anchor(egui::Align2::CENTER_TOP, Vec2::new(0.0, 40.0))
                .show(&ctx, |ui| {
                    for e in &self.errors {
                        ui.label(e);
                    }
                    dismiss = ui.button("OK").clicked();
                });
            if dismiss {
                self.errors.clear();
            }
        }
        if self.model.wants_first_run() && self.doc.is_some() {
            let (downloading, error) = self.model.first_run_state();
            crate::ui::model::first_run_ui(
                &ctx,
                &model::ModelCtl::official_choices(),
                downloading.as_ref(),
                error.as_deref(),
                &mut model_actions,
            );
        }
        for a in model_actions {
            self.model_action(a, &ctx);
        }
        for a in actions {
            self.act(a, &ctx);
        }
        if self.is_busy() || self.model.is_busy() {
            ctx.request_repaint_after(std::time::Duration::from_millis(30));
        }
    }
}

/// Runs the app on `request` (the bundled sample when `None`); the `sam4em [PATH]` entry point.
pub fn launch(request: Option<OpenRequest>, screenshot: Option<PathBuf>) -> Result<()> {
    let open = Some(request.unwrap_or_else(OpenRequest::sample));
    if let Some(p) = &screenshot
        && let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    run(LaunchOptions { open, screenshot, config_dir: None, no_recent: false, data_dir: None, cpu_model: false })
}
