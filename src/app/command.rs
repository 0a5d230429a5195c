//! Every input the app acts on is one [`AppCommand`]: menu entries, panel buttons, keyboard
//! shortcuts, pointer events in the views, the model panel, file-dialog answers, and the
//! scripted calls of tests and benchmarks. [`StudioApp::apply`] is the one place commands
//! change the app, routing each to the room that owns what it changes (`editing`, `files`,
//! `model`). View settings that a widget edits in place (contrast, zoom, the tool's radius)
//! are not commands: they change nothing but how the view looks.

use std::path::PathBuf;

use eframe::egui;

use super::{OpenRequest, StudioApp};
use crate::render::PixelRect;
use crate::state::tools::PointerEvent;
use crate::state::{ClassId, SliceIndex};
use crate::ui::model::ModelAction;
use crate::ui::panels::UiAction;
use crate::ui::tools::EditAction;
use crate::ui::viewer::Plane;

/// What a native file dialog is asked for (its answer comes back as a path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogKind {
    /// A stack file to open.
    OpenFile,
    /// A folder of slices to open.
    OpenFolder,
    /// A label map to import into the open stack.
    ImportLabels,
    /// A probability map to show over the open stack.
    OpenPrediction,
    /// A project folder to open.
    OpenProject,
    /// A new folder to save the project into.
    SaveProjectAs,
    /// The stack of a project moved: where is it now (a file)?
    LocateStack,
    /// … or a folder of slices?
    LocateStackFolder,
    /// File > Export masks: the output folder.
    ExportMasks,
    /// The model's SAM 2 checkpoint file.
    Checkpoint,
}

/// One input to the app.
#[derive(Debug, Clone)]
pub enum AppCommand {
    /// Open a stack (and what to import with it) in the background; the current one stays
    /// until it is ready.
    Open(OpenRequest),
    /// A menu entry.
    Menu(UiAction),
    /// An editing command (tool panel buttons and shortcuts).
    Edit(EditAction),
    /// A pointer event, in the pixels of view `plane`, for the active tool: the XY view edits
    /// the slice it shows, XZ and YZ the row and column through the cursor.
    Pointer(Plane, PointerEvent),
    /// A person's edit without a tool: sets `class` to `value` inside `rect` of slice `z` as
    /// one undo step (scripts, tests and benchmarks; the primitive the tools build on).
    PaintRect {
        /// The class edited.
        class: ClassId,
        /// The slice edited.
        z: SliceIndex,
        /// The pixels set.
        rect: PixelRect,
        /// Set (`true`) or cleared.
        value: bool,
    },
    /// A model panel action.
    Model(ModelAction),
    /// Use `checkpoint` from now on and load it (with a model configuration for checkpoints
    /// that are not a SAM 2 size), as the checkpoint dialog does.
    ChooseCheckpoint {
        /// The `.pt` or `.safetensors` file.
        checkpoint: PathBuf,
        /// Its configuration (`None`: detected from the checkpoint).
        config: Option<PathBuf>,
    },
    /// Ask the user for a path with a native dialog; the answer comes back as
    /// [`AppCommand::Picked`].
    Pick(DialogKind),
    /// A file dialog's answer.
    Picked(DialogKind, PathBuf),
    /// The answer to "where is the project's stack now?": opens the project with its stack
    /// at this path (asked again when the stack's shape differs from the project's).
    LocateStack(PathBuf),
    /// The user gave up locating a project's stack.
    CancelLocate,
    /// Export every class's masks into this folder (one binary TIFF per class and a label map).
    ExportMasks(PathBuf),
    /// Save the open stack's masks as a project in this (new or empty) folder and journal
    /// further edits there.
    SaveProjectAs(PathBuf),
    /// Fold the journalled edits into the project's files.
    Save,
}

impl StudioApp {
    /// Applies one command.
    pub fn apply(&mut self, command: AppCommand, ctx: &egui::Context) {
        match command {
            AppCommand::Open(request) => self.open(request, ctx),
            AppCommand::Menu(action) => self.menu(action, ctx),
            AppCommand::Edit(action) => self.edit(action, ctx),
            AppCommand::Pointer(plane, event) => self.pointer_in(plane, event),
            AppCommand::PaintRect { class, z, rect, value } => self.paint_rect(class, z, rect, value),
            AppCommand::Model(action) => {
                let picked = self.model.act(action, self.doc.as_mut(), &self.classes, &mut self.notices, ctx);
                if let Some(kind) = picked {
                    self.pick(kind, ctx);
                }
            }
            AppCommand::ChooseCheckpoint { checkpoint, config } => {
                self.model.choose_checkpoint_with(checkpoint, config, &self.classes, &mut self.notices, ctx)
            }
            AppCommand::Pick(kind) => self.pick(kind, ctx),
            AppCommand::Picked(kind, path) => self.picked(kind, path, ctx),
            AppCommand::LocateStack(path) => self.locate_stack(path, ctx),
            AppCommand::CancelLocate => self.locate = None,
            AppCommand::ExportMasks(dir) => self.export_masks(dir, ctx),
            AppCommand::SaveProjectAs(dir) => self.save_project_as(&dir),
            AppCommand::Save => self.save_session(),
        }
    }

    /// A menu entry.
    fn menu(&mut self, action: UiAction, ctx: &egui::Context) {
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
            UiAction::OpenProjectDialog => self.pick(DialogKind::OpenProject, ctx),
            UiAction::SaveProject => self.save_session(),
            UiAction::SaveProjectAsDialog => self.pick(DialogKind::SaveProjectAs, ctx),
            UiAction::ExportMasksDialog => self.pick(DialogKind::ExportMasks, ctx),
        }
    }
}
