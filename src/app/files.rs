//! Files: opening stacks and projects, importing label maps and probability maps, exporting
//! masks, saving projects, native file dialogs, and what their background jobs send back.
//! May touch the document (replacing it when a stack opens), the recent-files list, the
//! model's view of the document and the notices.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use eframe::egui;

use super::command::DialogKind;
use super::document::Document;
use super::jobs::{self, JobResult, OpenFailure, import_labels, open_job, open_prediction, open_project_job};
use super::loader::Loader;
use super::{AppCommand, OpenRequest, StudioApp};
use crate::render;
use crate::state::tools as edit_tools;
use crate::state::{MaskVolume, Provenance};
use crate::ui::notify::Notice;
use crate::ui::viewer::Plane;

impl StudioApp {
    /// Starts opening a stack in the background; the current one stays until it is ready.
    pub(super) fn open(&mut self, request: OpenRequest, ctx: &egui::Context) {
        let classes = self.classes.clone();
        let data_dir = self.data_dir.clone();
        self.opening = Some(request.clone());
        self.jobs.spawn("stack-open", ctx, move || JobResult::Opened(Box::new(open_job(request, classes, data_dir))));
    }

    pub(super) fn pick(&mut self, kind: DialogKind, ctx: &egui::Context) {
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
        self.notices.extend(std::mem::take(&mut opened.notes));
        let mut doc = Document::new(opened, &self.classes, ctx);
        if let Some(z) = self.first_slice.take() {
            doc.view.set_slice(isize::try_from(z).unwrap_or(isize::MAX));
        }
        self.model.classes_changed(&self.classes, ctx);
        self.model.on_document(&doc);
        self.doc = Some(doc);
    }

    pub(super) fn handle_job(&mut self, result: JobResult, ctx: &egui::Context) {
        match result {
            JobResult::Opened(opened) => {
                self.opening = None;
                match *opened {
                    Ok(opened) => self.adopt(opened, ctx),
                    Err(OpenFailure::Error(e)) => self.notices.push(Notice::from_error(&e)),
                    Err(OpenFailure::StackMissing { project, message }) => self.locate = Some((project, message)),
                }
            }
            JobResult::Imported(Ok((imported, notes))) => {
                if let Some(doc) = &mut self.doc {
                    for class in imported.classes().collect::<Vec<_>>() {
                        for (z, entry) in imported.slices(class) {
                            if let Err(e) = doc.masks.put(class, z, entry.mask.clone(), Provenance::Imported) {
                                self.notices.push(Notice::from_error(&e).context("label import"));
                                break;
                            }
                        }
                    }
                    doc.unnoted_change = true;
                    // Undo steps recorded before the import would write over it.
                    doc.editor.clear();
                    self.notices.extend(notes);
                    // An import is not a journalled edit: write it into the project at once.
                    if let Some(session) = &mut doc.session {
                        for class in imported.classes().collect::<Vec<_>>() {
                            for (z, _) in imported.slices(class) {
                                session.mark_changed(class, z);
                            }
                        }
                        if let Err(e) = session.save(&doc.masks, &self.classes) {
                            self.notices.push(Notice::from_error(&e).context("the imported labels are not saved"));
                        }
                    }
                }
            }
            JobResult::Imported(Err(e)) | JobResult::Prediction(Err(e)) => self.notices.push(Notice::from_error(&e)),
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
                        self.notices.info("no unreviewed slices to accept".to_owned());
                    }
                    match edit_tools::accept_predictions(&mut doc.masks, &mut doc.editor, class, &planes) {
                        Ok(o) => doc.apply_outcome(o, &mut self.notices),
                        Err(e) => self.notices.push(Notice::from_error(&e).context("accept predictions")),
                    }
                }
            }
            JobResult::PredictionPlanes((_, Err(e))) => {
                self.notices.push(Notice::from_error(&e).context("accept predictions"))
            }
            JobResult::Exported(Ok(outputs)) => {
                let dir = outputs.first().and_then(|p| p.parent()).map(|d| d.display().to_string());
                self.notices.info(format!("exported {} files to {}", outputs.len(), dir.unwrap_or_default()));
            }
            JobResult::Exported(Err(e)) => self.notices.push(Notice::from_error(&e).context("export")),
            JobResult::Picked(_, None) => {}
            JobResult::Picked(kind, Some(path)) => self.apply(AppCommand::Picked(kind, path), ctx),
        }
    }

    pub(super) fn picked(&mut self, kind: DialogKind, path: PathBuf, ctx: &egui::Context) {
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
                    self.notices.error(format!("not a SAM4EM project (it has no project.json): {}", path.display()));
                }
            }
            DialogKind::SaveProjectAs => self.save_project_as(&path),
            DialogKind::ExportMasks => self.export_masks(path, ctx),
            DialogKind::LocateStack | DialogKind::LocateStackFolder => self.locate_stack(path, ctx),
            DialogKind::Checkpoint => self.model.choose_checkpoint(path, &self.classes, &mut self.notices, ctx),
        }
    }

    /// The answer to "where is the project's stack now?": opens the project with its stack at
    /// `path` (refused, with an error, when the shape differs from the project's).
    pub(super) fn locate_stack(&mut self, path: PathBuf, ctx: &egui::Context) {
        let Some((project, _)) = self.locate.take() else { return };
        self.opening = Some(OpenRequest::stack(&project));
        self.jobs.spawn("stack-open", ctx, move || JobResult::Opened(Box::new(open_project_job(&project, Some(path)))));
    }

    /// Exports every class of the open stack's masks into `dir` (one binary TIFF per class and
    /// a label map) on a job thread.
    pub(super) fn export_masks(&mut self, dir: PathBuf, ctx: &egui::Context) {
        let Some(doc) = &self.doc else { return };
        let masks = doc.masks.clone();
        let classes = self.classes.clone();
        let voxel_size = doc.volume.info().voxel_size;
        let adapter = self.model.adapter_in_use();
        self.jobs.spawn("mask-export", ctx, move || {
            let opts = crate::io::ExportOptions { voxel_size, adapter, ..Default::default() };
            let formats = [crate::io::ExportFormat::Tiff, crate::io::ExportFormat::Labels];
            JobResult::Exported(
                crate::io::export_masks(&masks, &classes, &dir, &formats, &opts).map(|r| r.outputs).map_err(Into::into),
            )
        });
    }

    /// Saves the open stack's masks as a project in `dir` (a new or empty folder) and
    /// journals further edits there.
    pub(super) fn save_project_as(&mut self, dir: &Path) {
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
                self.notices.info(format!("saved as {}", dir.display()));
                self.recent.push(&OpenRequest::stack(dir));
            }
            Err(e) => self.notices.push(Notice::from_error(&e).context("save as")),
        }
    }

    /// Writes the journalled edits into the project's files (the journal starts empty again).
    pub(super) fn save_session(&mut self) {
        let Some(doc) = &mut self.doc else { return };
        if let Some(session) = &mut doc.session {
            match session.save(&doc.masks, &self.classes) {
                Ok(()) => self.notices.info(format!("saved {}", session.dir().display())),
                Err(e) => self.notices.push(Notice::from_error(&e).context("save")),
            }
        }
    }
}
