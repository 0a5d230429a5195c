//! The frame's layout: menu bar, status bar, the tool / model / display panel, the views, the
//! toasts and log, and the windows that ask a question (where did the project's stack go,
//! which checkpoint on first run). Reads the app's state and edits view settings in place;
//! everything else it turns into [`AppCommand`]s for [`StudioApp::apply`].

use eframe::egui::{self, Vec2};

use super::command::{AppCommand, DialogKind};
use super::{StudioApp, model};
use crate::state::tools as edit_tools;
use crate::state::{ClassId, ReviewState, SliceIndex};
use crate::ui::notify;
use crate::ui::panels;
use crate::ui::tools::{self as tools_ui, EditStatus};
use crate::ui::viewer::{self, Plane};

impl StudioApp {
    /// Lays out one frame and returns what the user asked for in it. Keyboard edits are
    /// applied at once, before the views see the pointer, so that Esc drops a stroke before a
    /// release in the same frame could commit it.
    pub(super) fn frame_ui(&mut self, ui: &mut egui::Ui) -> Vec<AppCommand> {
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
                self.apply(AppCommand::Edit(e), &ctx);
            }
        }
        let mut edits = Vec::new();
        let hover = self.doc.as_ref().map(|d| d.hover_info(&self.classes)).unwrap_or_default();
        egui::Panel::bottom("status").show(ui, |ui| {
            ui.horizontal(|ui| {
                match &self.doc {
                    Some(doc) => {
                        let voxel =
                            doc.volume.info().voxel_size.map_or_else(|| "unknown".to_owned(), |v| v.to_string());
                        let opening = self.opening.as_ref().map(|r| format!("opening {}…", r.stack.display()));
                        panels::status_bar_ui(ui, &doc.view, &hover, &voxel, opening.as_deref().unwrap_or(""));
                    }
                    None => {
                        ui.label(&self.device_note);
                    }
                }
                ui.separator();
                notify::status_ui(ui, &mut self.notices);
            });
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
                        // Any prediction on screen: a loaded map or the model's.
                        doc.prediction.is_some()
                            || doc.probabilities.is_some()
                            || self.model.has_predictions(self.active_class),
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
                doc.upload(rs, &self.classes, &mut self.notices);
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
        let mut commands: Vec<AppCommand> =
            pointer.into_iter().map(|(plane, e)| AppCommand::Pointer(plane, e)).collect();
        commands.extend(edits.into_iter().map(AppCommand::Edit));
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
                Some(Some(kind)) => commands.push(AppCommand::Pick(kind)),
                Some(None) => commands.push(AppCommand::CancelLocate),
                None => {}
            }
        }
        notify::notices_ui(&ctx, &mut self.notices);
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
        commands.extend(model_actions.into_iter().map(AppCommand::Model));
        commands.extend(actions.into_iter().map(AppCommand::Menu));
        if !commands.is_empty() {
            // Applied after this frame's upload: the next frame shows them (a lasso released
            // with a still mouse would otherwise wait for the next input).
            ctx.request_repaint();
        }
        commands
    }
}
