//! Menus, the display side panel (contrast, classes, prediction), the status bar and the
//! shortcut help. Widgets edit [`ViewerState`] / the class table directly and return
//! [`UiAction`]s for everything that needs the app (files, dialogs).

use std::path::PathBuf;

use eframe::egui::{self, RichText};

use super::viewer::ViewerState;
use crate::render::Magnification;
use crate::state::{ClassTable, Rgb};

/// Something the app must do for the UI.
#[derive(Debug, Clone, PartialEq)]
pub enum UiAction {
    /// File > Open stack (a file).
    OpenFileDialog,
    /// File > Open folder of slices.
    OpenFolderDialog,
    /// File > Import label map.
    ImportLabelsDialog,
    /// File > Open probability map.
    OpenPredictionDialog,
    /// Open a recent entry (index into the list shown).
    OpenRecent(usize),
    /// Re-run auto-contrast on the shown slice.
    AutoContrast,
    /// File > Open project.
    OpenProjectDialog,
    /// File > Save project.
    SaveProject,
    /// File > Save project as.
    SaveProjectAsDialog,
    /// File > Export masks.
    ExportMasksDialog,
    /// Quit.
    Quit,
}

/// The menu bar. `recent` lists display names of recent stacks.
pub fn menu_bar_ui(ui: &mut egui::Ui, state: Option<&mut ViewerState>, recent: &[String], actions: &mut Vec<UiAction>) {
    egui::MenuBar::new().ui(ui, |ui| {
        ui.menu_button("File", |ui| {
            if ui.button("Open stack…").clicked() {
                actions.push(UiAction::OpenFileDialog);
            }
            if ui.button("Open folder of slices…").clicked() {
                actions.push(UiAction::OpenFolderDialog);
            }
            if ui.button("Open project…").clicked() {
                actions.push(UiAction::OpenProjectDialog);
            }
            ui.menu_button("Open recent", |ui| {
                if recent.is_empty() {
                    ui.label("Nothing yet");
                }
                for (i, name) in recent.iter().enumerate() {
                    if ui.button(name).clicked() {
                        actions.push(UiAction::OpenRecent(i));
                    }
                }
            });
            ui.separator();
            if ui.button("Save project (Ctrl+S)").clicked() {
                actions.push(UiAction::SaveProject);
            }
            if ui.button("Save project as…").clicked() {
                actions.push(UiAction::SaveProjectAsDialog);
            }
            if ui.button("Export masks…").clicked() {
                actions.push(UiAction::ExportMasksDialog);
            }
            ui.separator();
            if ui.button("Import label map…").clicked() {
                actions.push(UiAction::ImportLabelsDialog);
            }
            if ui.button("Open probability map…").clicked() {
                actions.push(UiAction::OpenPredictionDialog);
            }
            ui.separator();
            if ui.button("Quit").clicked() {
                actions.push(UiAction::Quit);
            }
        });
        if let Some(state) = state {
            ui.menu_button("View", |ui| {
                ui.checkbox(&mut state.orthogonal, "Orthogonal views (T)");
                ui.checkbox(&mut state.overlay_visible, "Class overlay (M)");
                ui.checkbox(&mut state.outline, "Outlines only (O)");
                ui.checkbox(&mut state.prediction.visible, "Prediction layer (P)");
                ui.separator();
                if ui.button("Fit (F)").clicked() {
                    // Refitted to the view's size on the next frame.
                    state.camera = None;
                }
                if ui.button("1:1 (0)").clicked() {
                    state.one_to_one(ui.ctx().pixels_per_point());
                }
            });
            ui.menu_button("Help", |ui| {
                if ui.button("Keyboard and mouse (F1)").clicked() {
                    state.help = true;
                }
            });
        }
    });
}

/// The display panel: contrast, classes, prediction.
pub fn display_panel_ui(
    ui: &mut egui::Ui,
    state: &mut ViewerState,
    classes: &mut ClassTable,
    data_range: (f64, f64),
    has_prediction: bool,
    actions: &mut Vec<UiAction>,
) {
    ui.heading("Contrast");
    let (lo, hi) = data_range;
    ui.add(egui::Slider::new(&mut state.contrast.low, lo..=hi).text("black"));
    ui.add(egui::Slider::new(&mut state.contrast.high, lo..=hi).text("white"));
    ui.add(egui::Slider::new(&mut state.contrast.gamma, 0.2..=5.0).logarithmic(true).text("gamma"));
    ui.horizontal(|ui| {
        ui.checkbox(&mut state.contrast.invert, "invert (I)");
        if ui.button("Auto").on_hover_text("0.35–99.65 percentiles of the shown slice").clicked() {
            actions.push(UiAction::AutoContrast);
        }
    });
    ui.horizontal(|ui| {
        ui.label("magnify");
        ui.selectable_value(&mut state.magnification, Magnification::Nearest, "nearest");
        ui.selectable_value(&mut state.magnification, Magnification::Linear, "linear");
    });

    ui.separator();
    ui.heading("Classes");
    ui.horizontal(|ui| {
        ui.checkbox(&mut state.overlay_visible, "overlay (M)");
        ui.checkbox(&mut state.outline, "outline (O)");
    });
    if state.outline {
        ui.add(egui::Slider::new(&mut state.outline_width_px, 1..=6).text("outline px"));
    }
    let ids: Vec<_> = classes.iter().map(|c| (c.id, c.name.clone(), c.color)).collect();
    state.classes.resize(ids.len(), Default::default());
    egui::Grid::new("class table").num_columns(3).show(ui, |ui| {
        for (slot, (id, name, color)) in ids.into_iter().enumerate() {
            let view = &mut state.classes[slot];
            let mut rgb = [color.0, color.1, color.2];
            let colour = ui.color_edit_button_srgb(&mut rgb);
            if colour.changed() {
                let _ = classes.set_color(id, Rgb(rgb[0], rgb[1], rgb[2]));
            }
            let shown = ui.checkbox(&mut view.visible, &name).on_hover_text("show / hide");
            colour.labelled_by(shown.id);
            ui.add(egui::Slider::new(&mut view.opacity, 0.0..=1.0).show_value(false))
                .labelled_by(shown.id)
                .on_hover_text(format!("{name} opacity"));
            ui.end_row();
        }
    });
    if classes.len() > crate::render::CLASS_SLOTS {
        ui.label(RichText::new(format!("Only the first {} classes are drawn.", crate::render::CLASS_SLOTS)).weak());
    }

    ui.separator();
    ui.heading("Prediction");
    if has_prediction {
        let p = &mut state.prediction;
        ui.checkbox(&mut p.visible, "show (P)");
        ui.add(egui::Slider::new(&mut p.threshold, 0.0..=1.0).text("threshold")).on_hover_text(
            "foreground above this probability: what the layer shows and Accept takes (default: the model's)",
        );
        ui.add(egui::Slider::new(&mut p.opacity, 0.0..=1.0).text("opacity"));
        ui.horizontal(|ui| {
            ui.checkbox(&mut p.soft, "opacity follows probability");
            ui.color_edit_button_srgb(&mut p.tint);
        });
    }
    if ui.button("Open probability map…").clicked() {
        actions.push(UiAction::OpenPredictionDialog);
    }
}

/// What the status bar shows about the point under the pointer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HoverInfo {
    /// Voxel (x, y, z) under the pointer.
    pub voxel: Option<[usize; 3]>,
    /// Its raw value, when the slice holding it is loaded.
    pub value: Option<f64>,
    /// Classes covering it.
    pub classes: Vec<String>,
    /// Probability there, when a prediction is shown.
    pub probability: Option<f32>,
}

/// The status bar.
pub fn status_bar_ui(ui: &mut egui::Ui, state: &ViewerState, hover: &HoverInfo, voxel_size: &str, notes: &str) {
    ui.horizontal(|ui| {
        let c = state.cursor;
        match hover.voxel {
            Some([x, y, z]) => {
                ui.monospace(format!("x {x:>5}  y {y:>5}  z {z:>4}"));
                match hover.value {
                    Some(v) if v.fract() == 0.0 => ui.monospace(format!("value {v:>6}")),
                    Some(v) => ui.monospace(format!("value {v:>10.4}")),
                    None => ui.monospace("value      …"),
                };
                if let Some(p) = hover.probability {
                    ui.monospace(format!("p {p:.3}"));
                }
                let classes = if hover.classes.is_empty() { "—".to_owned() } else { hover.classes.join(", ") };
                ui.label(format!("classes: {classes}"));
            }
            None => {
                ui.monospace(format!("slice {} (0–{})", c.z.0, state.shape[2].saturating_sub(1)));
            }
        }
        ui.separator();
        ui.label(format!("voxel {voxel_size}"));
        if let Some(cam) = state.camera {
            ui.separator();
            ui.label(format!("zoom {:.0}%", cam.zoom * ui.ctx().pixels_per_point() * 100.0));
        }
        if !notes.is_empty() {
            ui.separator();
            ui.label(RichText::new(notes).weak());
        }
    });
}

/// The slice slider under the views.
pub fn slice_slider_ui(ui: &mut egui::Ui, state: &mut ViewerState) {
    let depth = state.shape[2];
    if depth < 2 {
        return;
    }
    let mut z = state.cursor.z.0;
    ui.horizontal(|ui| {
        let label = ui.label("z");
        ui.spacing_mut().slider_width = (ui.available_width() - 80.0).max(100.0);
        if ui.add(egui::Slider::new(&mut z, 0..=depth - 1)).labelled_by(label.id).changed() {
            state.set_slice(z as isize);
        }
    });
}

/// Keyboard and mouse shortcuts, in the order the help window lists them.
pub const SHORTCUTS: &[(&str, &str)] = &[
    ("Mouse wheel / ↑ ↓ ← →", "previous / next slice"),
    ("PgUp / PgDn", "10 slices back / forward"),
    ("Home / End", "first / last slice"),
    ("Ctrl + wheel, pinch, + / −", "zoom about the pointer"),
    ("Drag (left or middle button)", "pan (left: Navigate tool only)"),
    ("Click", "move the cursor (Navigate tool; the XZ / YZ views follow)"),
    ("F", "fit the slice to the window"),
    ("0", "1:1 (one image pixel per screen pixel)"),
    ("T", "orthogonal views on / off"),
    ("M", "class overlay on / off"),
    ("O", "filled / outlined classes"),
    ("P", "prediction layer on / off"),
    ("I", "invert contrast"),
    ("L", "nearest / linear magnification"),
    ("F1, ?, H", "this help"),
];

/// The shortcut help overlay.
pub fn help_ui(ctx: &egui::Context, state: &mut ViewerState) {
    let mut open = state.help;
    egui::Window::new("Keyboard and mouse")
        .open(&mut open)
        .collapsible(false)
        .resizable(false)
        .anchor(egui::Align2::CENTER_CENTER, egui::Vec2::ZERO)
        .show(ctx, |ui| {
            ui.horizontal_top(|ui| {
                for (id, list) in [("shortcuts", SHORTCUTS), ("edit shortcuts", super::tools::EDIT_SHORTCUTS)] {
                    egui::Grid::new(id).striped(true).show(ui, |ui| {
                        for (keys, what) in list {
                            ui.label(RichText::new(*keys).monospace());
                            ui.label(*what);
                            ui.end_row();
                        }
                    });
                }
            });
        });
    state.help = open && state.help;
}

/// A short name for a recent entry.
pub fn display_name(path: &std::path::Path) -> String {
    let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    let parent = path.parent().and_then(|p| p.file_name()).map(|p| p.to_string_lossy().into_owned());
    match parent {
        Some(p) => format!("{name}  ({p})"),
        None => name,
    }
}

/// Paths dropped onto the window this frame.
pub fn dropped_paths(ctx: &egui::Context) -> Vec<PathBuf> {
    ctx.input(|i| {
        i.raw.dropped_files.iter().map(|f| f.path().to_path_buf()).filter(|p| !p.as_os_str().is_empty()).collect()
    })
}
