//! The model panel: checkpoint, prediction (slice / range / stack, progress, cancel), the
//! training queue with Retrain, pause and stop, a live loss plot with held-out Dice, and the
//! adapter versions with their records. Also the first-run dialog that gets a checkpoint.
//!
//! egui only: it shows plain data and returns actions; it never touches the model.

use eframe::egui::{self, Pos2, Rect, Sense, Stroke, Vec2};

use crate::state::scale::Scale;

/// One adapter version in the list.
#[derive(Clone, Debug, PartialEq)]
pub struct VersionRow {
    /// Version number (0 = the base checkpoint without an adapter).
    pub version: u64,
    /// Short label ("v3 · 120 steps").
    pub label: String,
    /// Details on hover (slices, loss, Dice, time).
    pub detail: String,
}

/// A training run as the panel shows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrainingView {
    /// Loss of every step so far.
    pub losses: Vec<f64>,
    /// Steps the run will take.
    pub total_steps: u64,
    /// Held-out Dice per class after the last epoch.
    pub dice: Vec<(String, f64)>,
    /// Whether it is paused.
    pub paused: bool,
    /// A one-line state ("loading the model", "step 12/40").
    pub status: String,
}

/// What the panel shows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelView {
    /// Checkpoint file name, when one is chosen.
    pub checkpoint: Option<String>,
    /// One line: loading / ready on which device / failed.
    pub status: String,
    /// The model can predict.
    pub ready: bool,
    /// A warning about the checkpoint (unofficial file, hash mismatch).
    pub warning: Option<String>,
    /// A running download: fraction done and a line of text.
    pub downloading: Option<(f32, String)>,
    /// A running prediction: fraction done and "12/165 slices · 3.1 slices/s · 50 s left".
    pub predicting: Option<(f32, String)>,
    /// Version the shown predictions come from, and whether a newer one is on its way.
    pub predictions: Option<String>,
    /// The last refinement by clicks: "refined slice 5 with 2 click(s) and a box".
    pub refined: Option<String>,
    /// Corrected or accepted slices that Retrain would learn from.
    pub queued: usize,
    /// Slices held out for validation.
    pub held_out: usize,
    /// Whether the current slice is held out.
    pub current_held_out: bool,
    /// The run in progress.
    pub training: Option<TrainingView>,
    /// What the last run ended with.
    pub last_run: Option<String>,
    /// Versions, newest first.
    pub versions: Vec<VersionRow>,
    /// The version in use.
    pub active_version: u64,
    /// Predictions are asked to run in half precision (f16).
    pub half_precision: bool,
    /// Why this device cannot predict in f16 (`None`: it can).
    pub half_precision_unavailable: Option<String>,
    /// The scale chosen (`None`: automatic).
    pub scale: Option<Scale>,
    /// What predictions use on this stack, in words ("automatic: 1 (native), 6 × 4 tiles of
    /// 256² per slice").
    pub scale_line: String,
    /// The scale differs from the one the adapter in use was trained at.
    pub scale_warning: Option<String>,
}

/// Editable settings of the panel.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelPanelSettings {
    /// Epochs per Retrain.
    pub epochs: usize,
    /// "Predict nearby" covers this many slices on each side.
    pub radius_slices: usize,
    /// Most memory a Retrain may use, in GiB (0: whatever is free).
    pub memory_limit_gib: f64,
}

impl Default for ModelPanelSettings {
    fn default() -> Self {
        ModelPanelSettings { epochs: 20, radius_slices: 10, memory_limit_gib: 0.0 }
    }
}

/// What the user asked for.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelAction {
    /// Pick a checkpoint file.
    ChooseCheckpoint,
    /// Download an official checkpoint (file name).
    Download(String),
    /// Stop the download (it resumes next time).
    CancelDownload,
    /// Predict the current slice.
    PredictSlice,
    /// Predict the slices around the current one.
    PredictNearby,
    /// Predict the whole stack.
    PredictStack,
    /// Stop predicting.
    CancelPrediction,
    /// Train on the queued slices.
    Retrain,
    /// Pause or resume training.
    PauseTraining(bool),
    /// Stop training (keeping what it learned so far as a new version).
    StopTraining,
    /// Use this version (0 = none): predictions refresh, visible slice first.
    UseVersion(u64),
    /// Hold the current slice out for validation, or take it back.
    ToggleHeldOut,
    /// Close the first-run dialog without a checkpoint.
    DismissFirstRun,
    /// Predict in half precision (f16), or not, from now on (the model is loaded again).
    SetHalfPrecision(bool),
    /// Predict at this scale from now on (`None`: automatic).
    SetScale(Option<Scale>),
}

/// The scales the panel offers besides automatic.
const SCALE_CHOICES: [(Scale, &str); 5] = [
    (Scale::Fit, "fit: the whole slice resized"),
    (Scale::Factor(1.0), "1: native resolution, in tiles"),
    (Scale::Factor(0.5), "0.5: half resolution, in tiles"),
    (Scale::Factor(0.25), "0.25: quarter resolution, in tiles"),
    (Scale::Factor(2.0), "2: twice the resolution, in tiles"),
];

/// The scale predictions are made at: a choice, what it means for this stack, and a warning
/// when it is not the adapter's.
fn scale_ui(ui: &mut egui::Ui, view: &ModelView, actions: &mut Vec<ModelAction>) {
    ui.horizontal(|ui| {
        let mut choice = view.scale;
        let shown = match choice {
            None => "automatic".to_owned(),
            Some(s) => s.to_string(),
        };
        egui::ComboBox::from_label("scale")
            .selected_text(shown)
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut choice, None, "automatic: the adapter's, else by slice size");
                for (s, text) in SCALE_CHOICES {
                    ui.selectable_value(&mut choice, Some(s), text);
                }
            })
            .response
            .on_hover_text(
                "Model pixels per stack pixel. At 1 the model sees the data's own pixels, in overlapping tiles of \
                 its input size blended together, each tile with its own memory along z; fit shrinks each whole \
                 slice to the model input (the paper's mode), which loses thin structures on large slices.",
            );
        if choice != view.scale {
            actions.push(ModelAction::SetScale(choice));
        }
    });
    ui.label(egui::RichText::new(&view.scale_line).small());
    if let Some(w) = &view.scale_warning {
        ui.colored_label(ui.visuals().warn_fg_color, egui::RichText::new(w).small());
    }
}

/// The model panel.
pub fn model_panel_ui(
    ui: &mut egui::Ui,
    view: &ModelView,
    settings: &mut ModelPanelSettings,
    actions: &mut Vec<ModelAction>,
) {
    ui.heading("Model");
    match &view.checkpoint {
        Some(name) => {
            ui.label(egui::RichText::new(name).small()).on_hover_text(&view.status);
        }
        None => {
            ui.label("No SAM 2 checkpoint chosen yet.");
        }
    }
    ui.label(egui::RichText::new(&view.status).small().weak());
    if let Some(w) = &view.warning {
        ui.label(egui::RichText::new(w).small().color(ui.visuals().warn_fg_color));
    }
    if let Some((fraction, text)) = &view.downloading {
        ui.add(egui::ProgressBar::new(*fraction).text(text.as_str()));
        if ui.button("Cancel download").clicked() {
            actions.push(ModelAction::CancelDownload);
        }
    }
    ui.horizontal_wrapped(|ui| {
        if ui.button("Choose checkpoint…").on_hover_text("An official SAM 2 / SAM 2.1 .pt file").clicked() {
            actions.push(ModelAction::ChooseCheckpoint);
        }
        if view.checkpoint.is_none()
            && view.downloading.is_none()
            && ui
                .button("Download SAM 2 B+")
                .on_hover_text("sam2_hiera_base_plus.pt, 323 MB, what SAM4EM starts from")
                .clicked()
        {
            actions.push(ModelAction::Download("sam2_hiera_base_plus.pt".into()));
        }
    });
    if !view.ready {
        return;
    }
    ui.separator();
    ui.label("Predict");
    ui.horizontal_wrapped(|ui| {
        let idle = view.predicting.is_none();
        if ui.add_enabled(idle, egui::Button::new("This slice")).clicked() {
            actions.push(ModelAction::PredictSlice);
        }
        if ui
            .add_enabled(idle, egui::Button::new(format!("\u{b1}{} slices", settings.radius_slices)))
            .on_hover_text("The slices around this one")
            .clicked()
        {
            actions.push(ModelAction::PredictNearby);
        }
        if ui.add_enabled(idle, egui::Button::new("Whole stack")).clicked() {
            actions.push(ModelAction::PredictStack);
        }
    });
    ui.add(egui::Slider::new(&mut settings.radius_slices, 1..=100).text("slices each side"));
    let mut half = view.half_precision;
    let hover = match &view.half_precision_unavailable {
        None => "Predict with 16-bit floats on the GPU: less memory and memory traffic. Masks agreed with f32 \
                   at Dice ≥ 0.99 on Lucchi++ with a small test model; not yet checked with official weights. \
                   Training always uses 32-bit floats."
            .to_owned(),
        Some(why) => format!("Not available: {why}"),
    };
    // Left enabled when on, so that it can be turned off where f16 is not available.
    let enabled = view.half_precision_unavailable.is_none() || half;
    if ui.add_enabled(enabled, egui::Checkbox::new(&mut half, "Half precision (f16)")).on_hover_text(hover).changed() {
        actions.push(ModelAction::SetHalfPrecision(half));
    }
    scale_ui(ui, view, actions);
    if let Some((fraction, text)) = &view.predicting {
        ui.add(egui::ProgressBar::new(*fraction).text(text.as_str()));
        if ui.button("Cancel prediction").clicked() {
            actions.push(ModelAction::CancelPrediction);
        }
    }
    if let Some(p) = &view.predictions {
        ui.label(egui::RichText::new(p).small());
    }
    if let Some(r) = &view.refined {
        ui.label(egui::RichText::new(r).small());
    }

    ui.separator();
    ui.label("Fine-tune");
    ui.label(
        egui::RichText::new(format!(
            "{} corrected or accepted slice(s) queued, {} held out",
            view.queued, view.held_out
        ))
        .small(),
    );
    let held = if view.current_held_out { "Stop holding out this slice" } else { "Hold out this slice" };
    if ui
        .button(held)
        .on_hover_text("Held-out slices are not trained on; their Dice is shown after each epoch")
        .clicked()
    {
        actions.push(ModelAction::ToggleHeldOut);
    }
    match &view.training {
        None => {
            ui.horizontal(|ui| {
                ui.add(egui::DragValue::new(&mut settings.epochs).range(1..=500).suffix(" epochs"));
                if ui.add_enabled(view.queued > 0, egui::Button::new("Retrain")).clicked() {
                    actions.push(ModelAction::Retrain);
                }
            });
            ui.horizontal(|ui| {
                ui.label(egui::RichText::new("memory limit").small());
                ui.add(
                    egui::DragValue::new(&mut settings.memory_limit_gib)
                        .range(0.0..=4096.0)
                        .speed(0.25)
                        .max_decimals(1)
                        .custom_formatter(|v, _| if v <= 0.0 { "free memory".into() } else { format!("{v:.1} GiB") }),
                )
                .on_hover_text(
                    "Most memory a Retrain may use. Retrain keeps activations when they fit, recomputes them \
                     block by block when not (same result, slower), and does not start when even that would \
                     not fit.",
                );
            });
        }
        Some(t) => {
            ui.label(egui::RichText::new(&t.status).small());
            let fraction = if t.total_steps > 0 { t.losses.len() as f32 / t.total_steps as f32 } else { 0.0 };
            ui.add(egui::ProgressBar::new(fraction));
            loss_plot_ui(ui, &t.losses);
            for (class, d) in &t.dice {
                ui.label(egui::RichText::new(format!("held-out Dice {class}: {d:.3}")).small());
            }
            ui.horizontal(|ui| {
                let pause = if t.paused { "Resume" } else { "Pause" };
                if ui.button(pause).clicked() {
                    actions.push(ModelAction::PauseTraining(!t.paused));
                }
                if ui.button("Stop").on_hover_text("Keeps what was learned so far as a new version").clicked() {
                    actions.push(ModelAction::StopTraining);
                }
            });
        }
    }
    if let Some(last) = &view.last_run {
        ui.label(egui::RichText::new(last).small());
    }
    if !view.versions.is_empty() {
        ui.label("Versions");
        for row in &view.versions {
            let active = row.version == view.active_version;
            let text = if active { format!("{} (in use)", row.label) } else { row.label.clone() };
            if ui.selectable_label(active, text).on_hover_text(&row.detail).clicked() && !active {
                actions.push(ModelAction::UseVersion(row.version));
            }
        }
    }
}

/// The loss of every step as a line, newest on the right.
fn loss_plot_ui(ui: &mut egui::Ui, losses: &[f64]) {
    let (rect, _) = ui.allocate_exact_size(Vec2::new(ui.available_width().min(240.0), 60.0), Sense::hover());
    let painter = ui.painter_at(rect);
    painter.rect_stroke(rect, 2.0, Stroke::new(1.0, ui.visuals().weak_text_color()), egui::StrokeKind::Inside);
    let finite: Vec<f64> = losses.iter().copied().filter(|l| l.is_finite()).collect();
    if finite.len() < 2 {
        return;
    }
    let (lo, hi) = finite.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    let span = (hi - lo).max(1e-9);
    let inner = rect.shrink(3.0);
    let n = finite.len() - 1;
    let points: Vec<Pos2> = finite
        .iter()
        .enumerate()
        .map(|(i, &l)| {
            Pos2::new(
                inner.left() + inner.width() * i as f32 / n as f32,
                inner.bottom() - inner.height() * ((l - lo) / span) as f32,
            )
        })
        .collect();
    painter.add(egui::Shape::line(points, Stroke::new(1.5, ui.visuals().hyperlink_color)));
    painter.text(
        Rect::from_min_size(inner.min, Vec2::ZERO).min,
        egui::Align2::LEFT_TOP,
        format!("loss {:.4}", finite[n]),
        egui::FontId::proportional(10.0),
        ui.visuals().text_color(),
    );
}

/// The first-run dialog: how to get a checkpoint. `official` lists (file name, size text,
/// note); `error` is the last download error (e.g. no network).
pub fn first_run_ui(
    ctx: &egui::Context,
    official: &[(String, String, String)],
    downloading: Option<&(f32, String)>,
    error: Option<&str>,
    actions: &mut Vec<ModelAction>,
) {
    egui::Window::new("Set up the model")
        .collapsible(false)
        .anchor(egui::Align2::CENTER_CENTER, Vec2::ZERO)
        .show(ctx, |ui| {
            ui.label("SAM4EM starts from Meta's SAM 2 image encoder. Choose a checkpoint file you have, or download an official one (Apache-2.0). Everything else works without it.");
            for (file, size, note) in official {
                ui.horizontal(|ui| {
                    let enabled = downloading.is_none();
                    if ui.add_enabled(enabled, egui::Button::new(format!("Download {file}"))).clicked() {
                        actions.push(ModelAction::Download(file.clone()));
                    }
                    ui.label(egui::RichText::new(format!("{size} {note}")).small());
                });
            }
            if let Some((fraction, text)) = downloading {
                ui.add(egui::ProgressBar::new(*fraction).text(text.as_str()));
                if ui.button("Cancel download").clicked() {
                    actions.push(ModelAction::CancelDownload);
                }
            }
            if let Some(e) = error {
                ui.label(egui::RichText::new(e).color(ui.visuals().warn_fg_color));
            }
            ui.horizontal(|ui| {
                if ui.button("Choose file…").clicked() {
                    actions.push(ModelAction::ChooseCheckpoint);
                }
                if ui.button("Not now").clicked() {
                    actions.push(ModelAction::DismissFirstRun);
                }
            });
        });
}
