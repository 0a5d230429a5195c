//! Editing: the proofreading commands (tool panel, shortcuts, pointer events in the views,
//! scripted rectangles) applied to the open document's masks, each committed step journalled.
//! May touch the document, the tool state, the model's predictions (Accept prediction, the
//! refine tool) and the notices; the file shortcuts it passes on as the files' commands.

use eframe::egui;

use super::StudioApp;
use super::command::{AppCommand, DialogKind};
use super::document::Document;
use super::jobs::{self, JobResult};
use crate::render;
use crate::state::tools::{self as edit_tools, EditPlane, EditTarget, PointerEvent, Tool};
use crate::state::{ClassId, MaskVolume, Provenance, ReviewState, SliceIndex};
use crate::ui::notify::Notice;
use crate::ui::tools::EditAction;
use crate::ui::viewer::Plane;

impl StudioApp {
    /// Applies an editing command (what the panel buttons and shortcuts do).
    pub(super) fn edit(&mut self, action: EditAction, ctx: &egui::Context) {
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
            self.notices.warn(format!("{}: finish the stroke first", action_name(action)));
            return;
        }
        let outcome = match action {
            EditAction::Undo => {
                self.tools.cancel_drag();
                if let Some(c) = doc.editor.undo(&mut doc.masks) {
                    doc.undo_redo(&c, &mut self.notices);
                }
                return;
            }
            EditAction::Redo => {
                if let Some(c) = doc.editor.redo(&mut doc.masks) {
                    doc.undo_redo(&c, &mut self.notices);
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
                    self.notices.error("no prediction is loaded for this slice".to_owned());
                    return;
                };
                let [w, h, _] = doc.view.shape;
                let plane = p.plane(w, h, doc.view.prediction.threshold);
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
                    None => self.notices.info("every slice is accepted".to_owned()),
                }
                return;
            }
            EditAction::SetActiveClass(c) => {
                self.active_class = c;
                return;
            }
            // The file shortcuts (Ctrl+S, Ctrl+Shift+S, Ctrl+O) are the files' commands.
            EditAction::Save => return self.apply(AppCommand::Save, ctx),
            EditAction::SaveAsDialog => return self.apply(AppCommand::Pick(DialogKind::SaveProjectAs), ctx),
            EditAction::OpenProjectDialog => return self.apply(AppCommand::Pick(DialogKind::OpenProject), ctx),
        };
        match outcome {
            Ok(o) => doc.apply_outcome(o, &mut self.notices),
            Err(e) => self.notices.push(Notice::from_error(&e).context(action_name(action))),
        }
    }

    /// Sends one pointer event, in the pixels of view `plane`, to the active tool: the XY
    /// view edits the slice it shows, XZ and YZ the row and column through the cursor. Nothing
    /// happens while the view still shows something else (a slice on its way).
    pub(super) fn pointer_in(&mut self, plane: Plane, event: PointerEvent) {
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
                        self.model.refine_click(doc, self.active_class, from, to, !alternate, &mut self.notices);
                    }
                }
                (_, PointerEvent::Abort) => self.refine_drag = None,
                _ => {}
            }
            return;
        }
        let target = EditTarget { masks: &mut doc.masks, editor: &mut doc.editor, class: self.active_class, z: c.z };
        match self.tools.handle_in(event, target, at) {
            Ok(o) => doc.apply_outcome(o, &mut self.notices),
            Err(e) => self.notices.push(Notice::from_error(&e).context(self.tools.tool.label())),
        }
    }

    /// Sets `class` to `value` inside `rect` of slice `z` as one undo step; only the
    /// rectangle is uploaded to the GPU again.
    pub(super) fn paint_rect(&mut self, class: ClassId, z: SliceIndex, rect: render::PixelRect, value: bool) {
        let Some(doc) = &mut self.doc else {
            self.notices.error("rectangle edit: no stack is open");
            return;
        };
        if let Err(e) = doc.edit_rect(class, z, rect, value, &mut self.notices) {
            self.notices.push(Notice::from_error(&e).context("rectangle edit"));
        }
    }
}

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

/// How an editing command is named in messages.
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
