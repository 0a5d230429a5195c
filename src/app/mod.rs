//! The desktop app: a thin shell that owns the open stack, the model and the window's
//! pieces, and routes. Every input becomes an [`AppCommand`] ([`command`]) applied by
//! [`StudioApp::apply`] to the room that owns what it changes:
//!
//! - `editing`: the proofreading tools and review commands on the open document;
//! - `files`: opening, importing, exporting, saving, file dialogs and their jobs' results;
//! - `model`: the model in the loop (its own rooms, each owning its state);
//! - `ui`: the frame's layout, turning clicks and keys into commands;
//! - `document`: the open stack's masks, journal and GPU uploads; `loader`: its slices;
//! - `screenshot`: `--screenshot`; `recent`: the recent-files list; `gpu`: the shared device;
//!   `relaunch`: a new process when the window's GPU is lost.
//!
//! Messages to the user go through one [`Notices`] log (status bar, toasts, log window).
//! [`eframe::App::logic`] drains the jobs', loader's and workers' results; [`eframe::App::ui`]
//! lays out the frame and applies the commands it returns.
//!
//! Threads: the UI thread never waits on I/O. Opening and importing run as one-shot named
//! jobs, slices come from the `stack-loader` thread ([`loader`]), file dialogs run on a
//! `file-dialog` thread.

mod command;
mod document;
mod editing;
mod files;
pub mod gpu;
mod jobs;
pub mod loader;
mod model;
pub mod recent;
pub mod relaunch;
mod screenshot;
mod ui;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use crossbeam_channel::bounded;
use eframe::egui;
use eframe::egui_wgpu::RenderState;

pub use command::{AppCommand, DialogKind};
use document::Document;
pub use document::{RectEditError, image_pixels};
use jobs::Jobs;
use recent::RecentFiles;
use screenshot::Screenshot;

use crate::render::{self, DeviceCaps};
use crate::state::tools::ToolState;
use crate::state::{ClassId, ClassTable, MaskVolume, SliceIndex};
use crate::ui::notify::Notices;
use crate::ui::panels::{self, HoverInfo};
use crate::ui::viewer::{Plane, ViewerState};

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
    /// The slice to show first (clamped to the stack).
    pub slice: Option<usize>,
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
    /// Run the model on this device instead of choosing one (tests that bring a device of
    /// their own, e.g. one they make fail).
    pub model_device: Option<burn::tensor::Device>,
    /// This process replaces one whose window's GPU was lost ([`relaunch::Resume::from_env`]).
    pub resume: Option<relaunch::Resume>,
    /// Where the window leaves a restart when its GPU is lost (`None`: the app cannot restart
    /// itself and says so; [`run`] gives one).
    pub successor: Option<relaunch::Successor>,
}

/// Runs the app window until it is closed.
pub fn run(mut options: LaunchOptions) -> Result<()> {
    let successor = relaunch::Successor::default();
    options.successor = Some(successor.clone());
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
    // A panic under the window is caught only to tell a device lost in the middle of a frame
    // (egui's renderer panics when it cannot write its buffers) from a bug; the app state is
    // dropped as the panic unwinds, and nothing of it is used afterwards.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        eframe::run_native("SAM4EM Studio", native, Box::new(move |cc| Ok(Box::new(StudioApp::new(cc, options)))))
    }));
    let handoff = std::mem::take(&mut *successor.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    let next = match outcome {
        // The window is closed and the app dropped (its session saved and closed): a window
        // whose GPU was lost is replaced by a new process.
        Ok(closed) => {
            closed.map_err(|e| anyhow::anyhow!("cannot start the window: {e}"))?;
            handoff.after_close()
        }
        Err(panic) => match handoff.after_panic() {
            Some(next) => {
                // Every committed edit is in the session's journal: the new process replays it.
                eprintln!(
                    "{} while the window drew a frame: its edits are in the session's journal",
                    next.resume.reason
                );
                Some(next)
            }
            None => std::panic::resume_unwind(panic),
        },
    };
    match next {
        Some(next) => next.run(),
        None => Ok(()),
    }
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
    /// Every message to the user: the status bar, toasts and the log window.
    notices: Notices,
    screenshot: Screenshot,
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
    /// Watching the window's device, and restarting when it is lost.
    relaunch: relaunch::RelaunchState,
    /// The slice to show once the first stack is open (`--slice`; a restart's).
    first_slice: Option<usize>,
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
            let (device, note) = match options.model_device.clone() {
                Some(d) => (d, "given by the caller".to_owned()),
                None => gpu::model_device_for(rs, &caps, cpu_model_asked(&options)),
            };
            let note = match &options.resume {
                Some(r) => format!("CPU ({} under the window; the app restarted)", r.reason),
                None => note,
            };
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
        let relaunch =
            relaunch::RelaunchState::new(render_state.as_ref(), options.successor.clone(), options.resume.as_ref());
        let mut app = Self {
            render_state,
            device_note,
            model_device,
            classes,
            doc: None,
            opening: None,
            jobs: Jobs { tx, rx, running: Vec::new() },
            recent,
            notices: Notices::default(),
            screenshot: Screenshot::new(options.screenshot),
            frames: 0,
            central_area: None,
            tools: ToolState::default(),
            active_class,
            data_dir: options.data_dir.clone().or_else(crate::io::session::default_data_dir),
            locate: None,
            model: model::ModelCtl::new(config_dir, options.data_dir, model_device_copy, model_note),
            refine_drag: None,
            relaunch,
            first_slice: options.slice,
        };
        if let Some(r) = &options.resume {
            app.notices.warn(r.notice());
        }
        app.model.start(&app.classes, &cc.egui_ctx);
        if let Some(request) = options.open {
            app.apply(AppCommand::Open(request), &cc.egui_ctx);
        }
        app
    }

    /// Whether anything is still loading (open jobs, slices, orthogonal planes).
    pub fn is_busy(&self) -> bool {
        self.opening.is_some() || self.jobs.busy() || self.doc.as_ref().is_some_and(Document::is_loading)
    }

    /// Whether the model is loading, predicting, training or downloading.
    pub fn model_busy(&self) -> bool {
        self.model.is_busy()
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

    /// The messages of errors shown to the user and not yet dismissed.
    pub fn errors(&self) -> Vec<String> {
        self.notices.errors()
    }

    /// Every message to the user so far (the log window's content).
    pub fn notices(&self) -> &Notices {
        &self.notices
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

    /// The project being opened whose stack was not found, if any (the app is asking where
    /// the stack went).
    pub fn stack_to_locate(&self) -> Option<(&Path, &str)> {
        self.locate.as_ref().map(|(p, m)| (p.as_path(), m.as_str()))
    }
}

/// The environment variable that puts the model on the CPU (`cpu`); a restart sets it.
const MODEL_DEVICE_VAR: &str = "SAM4EM_MODEL_DEVICE";

/// Whether the model was asked to run on the CPU (`--cpu-model` or `SAM4EM_MODEL_DEVICE=cpu`).
fn cpu_model_asked(options: &LaunchOptions) -> bool {
    options.cpu_model || std::env::var(MODEL_DEVICE_VAR).is_ok_and(|v| v == "cpu")
}

impl eframe::App for StudioApp {
    fn on_exit(&mut self) {
        // The journal already holds every committed edit; this folds it into the project's
        // files so the next start does not have to replay it.
        self.save_session();
    }

    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        if self.relaunch_logic(ctx) {
            return;
        }
        while let Ok(result) = self.jobs.rx.try_recv() {
            self.handle_job(result, ctx);
        }
        for path in panels::dropped_paths(ctx) {
            self.apply(AppCommand::Open(OpenRequest::stack(path)), ctx);
        }
        if let Some(doc) = &mut self.doc {
            doc.logic(&mut self.notices);
        }
        self.model.logic(self.doc.as_mut(), &self.classes, self.active_class, &mut self.notices, ctx);
        // The trainer waits between steps while a stroke is drawn.
        self.model.set_interactive(self.doc.as_ref().is_some_and(|d| d.editor.in_progress()));
        let shown = self.doc.is_some() || !self.notices.errors().is_empty();
        // A window whose device is to be destroyed (a test of the restart) leaves the
        // screenshot to the process that replaces it.
        let faulty = self.relaunch.fault != relaunch::Fault::None;
        self.screenshot.logic(ctx, self.frames > 5 && !self.is_busy() && shown && !faulty);
        self.frames += 1;
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        if self.relaunch.started {
            // The window's device is lost (`relaunch`): nothing is drawn on it.
            return;
        }
        let ctx = ui.ctx().clone();
        for command in self.frame_ui(ui) {
            self.apply(command, &ctx);
        }
        self.inject_fault_in_frame();
        if self.is_busy() || self.model.is_busy() {
            ctx.request_repaint_after(std::time::Duration::from_millis(30));
        }
    }
}

/// Runs the app on `request` (the bundled sample when `None`) showing slice `slice` first; the
/// `sam4em [PATH]` entry point.
pub fn launch(request: Option<OpenRequest>, slice: Option<usize>, screenshot: Option<PathBuf>) -> Result<()> {
    let open = Some(request.unwrap_or_else(OpenRequest::sample));
    if let Some(p) = &screenshot
        && let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    run(LaunchOptions { open, slice, screenshot, resume: relaunch::Resume::from_env(), ..Default::default() })
}
