//! The proofreading UI: the tool panel (tools, brush size, active class, slice actions, undo),
//! the editing shortcuts (napari's where napari has one), the review strip under the slice
//! slider, and the tool previews drawn over the XY view.
//!
//! Only egui and `state`: widgets edit [`ToolState`] and return [`EditAction`]s that the app
//! applies to the masks.

use eframe::egui::{self, Color32, Key, Modifiers, Pos2, Rect, RichText, Sense, Stroke, Vec2};

use crate::state::bitplane::Connectivity;
use crate::state::palette;
use crate::state::tools::{BRUSH_DIAMETER_RANGE_PX, Tool, ToolState};
use crate::state::{ClassId, ClassTable, ReviewState};

/// An editing command for the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EditAction {
    /// Undo the last step (or drop the stroke in progress).
    Undo,
    /// Redo the last undone step.
    Redo,
    /// Drop the stroke in progress (Esc).
    Abort,
    /// Fill the holes of the active class on the shown slice.
    FillHoles,
    /// Copy the active class from the slice `delta` away (−1 previous, +1 next).
    CopyFrom(isize),
    /// Interpolate the active class between the edited slices around the shown one.
    Interpolate,
    /// Mark the shown slice accepted for every class.
    AcceptSlice,
    /// Put the shown slice back to unreviewed (its state follows its content).
    UnacceptSlice,
    /// Accept the prediction layer into the active class: the shown slice, or every
    /// unreviewed slice.
    AcceptPrediction {
        /// All unreviewed slices instead of the shown one.
        all_unreviewed: bool,
    },
    /// Jump to the next (or previous) slice that is not accepted.
    NextUnreviewed {
        /// Towards higher z.
        forward: bool,
    },
    /// Make this class the one the tools edit.
    SetActiveClass(ClassId),
    /// Compact the journal into the project's files now.
    Save,
    /// Save the project into another folder.
    SaveAsDialog,
    /// Open a project folder.
    OpenProjectDialog,
}

/// Editing shortcuts, in the order the help window lists them.
pub const EDIT_SHORTCUTS: &[(&str, &str)] = &[
    ("2 / B", "brush (right button erases)"),
    ("1 / E", "eraser"),
    ("3", "lasso (right button clears inside)"),
    ("4", "fill (right button clears the region)"),
    ("5 / D", "delete object under the click"),
    ("6 / Space", "navigate (hold Space to pan with any tool)"),
    ("7", "refine the prediction: click, right click (not here), drag a box"),
    ("[ / ]", "smaller / larger brush"),
    ("Alt + 1…9", "active class"),
    ("Ctrl+Z / Ctrl+Shift+Z", "undo / redo (Ctrl+Y too)"),
    ("Esc", "drop the stroke in progress"),
    ("Shift+F", "fill holes on this slice"),
    ("C / Shift+C", "copy the class from the previous / next slice"),
    ("Shift+I", "interpolate drawn objects between edited slices"),
    ("A / Shift+U", "accept this slice / back to unreviewed"),
    ("Shift+A", "accept the prediction on this slice"),
    ("N / Shift+N", "next / previous unreviewed slice"),
    ("Ctrl+S", "save the project"),
];

/// Editing shortcuts, unless a text field has the keyboard. Tool changes go to `tools`,
/// everything else is returned.
pub fn handle_edit_keys(ctx: &egui::Context, tools: &mut ToolState, classes: &ClassTable) -> Vec<EditAction> {
    let mut actions = Vec::new();
    if ctx.egui_wants_keyboard_input() {
        return actions;
    }
    let ctrl = Modifiers::COMMAND;
    ctx.input_mut(|i| {
        // Shortcuts with modifiers first, so that their plain keys are not taken by the plain
        // bindings below.
        if i.consume_key(ctrl | Modifiers::SHIFT, Key::Z) || i.consume_key(ctrl, Key::Y) {
            actions.push(EditAction::Redo);
        }
        if i.consume_key(ctrl, Key::Z) {
            actions.push(EditAction::Undo);
        }
        if i.consume_key(ctrl, Key::S) {
            actions.push(EditAction::Save);
        }
        for (slot, key) in
            [Key::Num1, Key::Num2, Key::Num3, Key::Num4, Key::Num5, Key::Num6, Key::Num7, Key::Num8, Key::Num9]
                .into_iter()
                .enumerate()
        {
            if i.consume_key(Modifiers::ALT, key)
                && let Some(c) = classes.iter().nth(slot)
            {
                actions.push(EditAction::SetActiveClass(c.id));
            }
        }
        let shift = |i: &mut egui::InputState, key| i.consume_key(Modifiers::SHIFT, key);
        if shift(i, Key::F) {
            actions.push(EditAction::FillHoles);
        }
        if shift(i, Key::C) {
            actions.push(EditAction::CopyFrom(1));
        }
        if shift(i, Key::I) {
            actions.push(EditAction::Interpolate);
        }
        if shift(i, Key::A) {
            actions.push(EditAction::AcceptPrediction { all_unreviewed: false });
        }
        if shift(i, Key::U) {
            actions.push(EditAction::UnacceptSlice);
        }
        if shift(i, Key::N) {
            actions.push(EditAction::NextUnreviewed { forward: false });
        }
        let mut pressed = |key| i.consume_key(Modifiers::NONE, key);
        for (keys, tool) in [
            (&[Key::Num1, Key::E][..], Tool::Eraser),
            (&[Key::Num2, Key::B], Tool::Brush),
            (&[Key::Num3], Tool::Lasso),
            (&[Key::Num4], Tool::Fill),
            (&[Key::Num5, Key::D], Tool::DeleteComponent),
            (&[Key::Num6], Tool::Navigate),
            (&[Key::Num7], Tool::Refine),
        ] {
            if keys.iter().any(|&k| pressed(k)) {
                tools.tool = tool;
            }
        }
        if pressed(Key::OpenBracket) {
            tools.resize_brush(-1);
        }
        if pressed(Key::CloseBracket) {
            tools.resize_brush(1);
        }
        if pressed(Key::C) {
            actions.push(EditAction::CopyFrom(-1));
        }
        if pressed(Key::A) {
            actions.push(EditAction::AcceptSlice);
        }
        if pressed(Key::N) {
            actions.push(EditAction::NextUnreviewed { forward: true });
        }
        if tools.dragging() && pressed(Key::Escape) {
            actions.push(EditAction::Abort);
        }
    });
    actions
}

/// What the tool panel shows about the edit history and the slice.
#[derive(Debug, Clone, Default)]
pub struct EditStatus {
    /// Label of the step undo would undo.
    pub undo: Option<String>,
    /// Label of the step redo would redo.
    pub redo: Option<String>,
    /// Bytes the undo history holds.
    pub history_bytes: usize,
    /// Review state of the shown slice.
    pub review: Option<ReviewState>,
    /// Where edits are journalled (`None`: not journalled).
    pub project: Option<String>,
    /// A prediction layer is open.
    pub has_prediction: bool,
}

/// The tool panel.
pub fn tool_panel_ui(
    ui: &mut egui::Ui,
    tools: &mut ToolState,
    active: &mut ClassId,
    classes: &ClassTable,
    status: &EditStatus,
    actions: &mut Vec<EditAction>,
) {
    ui.heading("Proofreading");
    ui.horizontal_wrapped(|ui| {
        for tool in Tool::ALL {
            ui.selectable_value(&mut tools.tool, tool, tool.label());
        }
    });
    ui.horizontal(|ui| {
        ui.label("edit");
        for c in classes.iter() {
            let text = RichText::new(&c.name).color(super::color(c.color));
            if ui.selectable_label(*active == c.id, text).clicked() {
                actions.push(EditAction::SetActiveClass(c.id));
            }
        }
    });
    match tools.tool {
        Tool::Brush | Tool::Eraser => {
            let (lo, hi) = BRUSH_DIAMETER_RANGE_PX;
            ui.add(egui::Slider::new(&mut tools.brush_diameter_px, lo..=hi).logarithmic(true).text("brush px"));
        }
        Tool::Fill | Tool::DeleteComponent => {
            ui.horizontal(|ui| {
                ui.label("neighbours");
                ui.selectable_value(&mut tools.connectivity, Connectivity::Four, "4");
                ui.selectable_value(&mut tools.connectivity, Connectivity::Eight, "8");
            });
            if tools.tool == Tool::DeleteComponent {
                ui.checkbox(&mut tools.delete_in_3d, "through slices (3D)");
            }
        }
        Tool::Lasso | Tool::Navigate => {}
        Tool::Refine => {
            ui.label(
                egui::RichText::new(
                    "click: object here · right click: not here · drag: a box around it · Shift+A accepts",
                )
                .small(),
            );
        }
    }
    ui.horizontal_wrapped(|ui| {
        if ui.button("Fill holes").on_hover_text("Shift+F").clicked() {
            actions.push(EditAction::FillHoles);
        }
        if ui.button("Copy from previous").on_hover_text("copy from the previous slice (C)").clicked() {
            actions.push(EditAction::CopyFrom(-1));
        }
        if ui.button("Copy from next").on_hover_text("copy from the next slice (Shift+C)").clicked() {
            actions.push(EditAction::CopyFrom(1));
        }
        if ui.button("Interpolate").on_hover_text("between the edited slices around this one (Shift+I)").clicked() {
            actions.push(EditAction::Interpolate);
        }
    });
    ui.horizontal(|ui| {
        let undo = ui.add_enabled(status.undo.is_some(), egui::Button::new("Undo"));
        if undo.on_hover_text(status.undo.clone().unwrap_or_default()).clicked() {
            actions.push(EditAction::Undo);
        }
        let redo = ui.add_enabled(status.redo.is_some(), egui::Button::new("Redo"));
        if redo.on_hover_text(status.redo.clone().unwrap_or_default()).clicked() {
            actions.push(EditAction::Redo);
        }
        ui.label(RichText::new(format!("history {:.1} MiB", status.history_bytes as f64 / (1 << 20) as f64)).weak());
    });

    ui.separator();
    ui.heading("Review");
    if let Some(review) = status.review {
        ui.horizontal(|ui| {
            ui.label("this slice:");
            ui.label(RichText::new(review_label(review)).color(review_color(review)));
        });
    }
    ui.horizontal_wrapped(|ui| {
        if ui.button("Accept slice").on_hover_text("A").clicked() {
            actions.push(EditAction::AcceptSlice);
        }
        if ui.button("Next unreviewed").on_hover_text("N (Shift+N: previous)").clicked() {
            actions.push(EditAction::NextUnreviewed { forward: true });
        }
    });
    if status.has_prediction {
        ui.horizontal_wrapped(|ui| {
            if ui.button("Accept prediction").on_hover_text("into the active class, this slice (Shift+A)").clicked() {
                actions.push(EditAction::AcceptPrediction { all_unreviewed: false });
            }
            if ui.button("… all unreviewed").on_hover_text("into the active class, every unreviewed slice").clicked()
            {
                actions.push(EditAction::AcceptPrediction { all_unreviewed: true });
            }
        });
    }
    // The folder only on hover: automatic sessions have hashed names that say little.
    match &status.project {
        Some(p) => ui.label(RichText::new("every edit is journalled").small().weak()).on_hover_text(p),
        None => ui.label(
            RichText::new("edits are not journalled (no data folder)").small().color(ui.visuals().warn_fg_color),
        ),
    };
}

/// Name of a review state.
pub fn review_label(review: ReviewState) -> &'static str {
    match review {
        ReviewState::Unseen => "unseen",
        ReviewState::Predicted => "predicted",
        ReviewState::Corrected => "corrected",
        ReviewState::Accepted => "accepted",
    }
}

/// Colour of a review state in the navigator.
pub fn review_color(review: ReviewState) -> Color32 {
    let c = match review {
        ReviewState::Unseen => palette::REVIEW_UNSEEN,
        ReviewState::Predicted => palette::REVIEW_PREDICTED,
        ReviewState::Corrected => palette::REVIEW_CORRECTED,
        ReviewState::Accepted => palette::REVIEW_ACCEPTED,
    };
    super::color(c)
}

/// The slice navigator: one cell per slice coloured by its review state, the shown slice
/// marked; a click or drag jumps there. Returns the slice asked for.
pub fn review_strip_ui(ui: &mut egui::Ui, states: &[ReviewState], shown: usize) -> Option<usize> {
    let n = states.len();
    if n < 2 {
        return None;
    }
    let height = 10.0;
    let (rect, response) = ui.allocate_exact_size(Vec2::new(ui.available_width(), height), Sense::click_and_drag());
    let response = response.on_hover_text(
        "review state per slice: grey unseen, blue predicted, orange corrected, green accepted (N: next unreviewed)",
    );
    let painter = ui.painter_at(rect);
    let cell = rect.width() / n as f32;
    // Runs of equal state are drawn as one rectangle: thousands of slices stay cheap.
    let mut start = 0;
    for i in 1..=n {
        if i == n || states[i] != states[start] {
            let r = Rect::from_min_max(
                Pos2::new(rect.left() + start as f32 * cell, rect.top()),
                Pos2::new(rect.left() + i as f32 * cell, rect.bottom()),
            );
            painter.rect_filled(r, 0.0, review_color(states[start]));
            start = i;
        }
    }
    let x = rect.left() + (shown as f32 + 0.5) * cell;
    painter.line_segment(
        [Pos2::new(x, rect.top() - 1.0), Pos2::new(x, rect.bottom() + 1.0)],
        Stroke::new(2.0, super::color(palette::OVERLAY_LINE)),
    );
    if (response.clicked() || response.dragged())
        && let Some(p) = response.interact_pointer_pos()
    {
        let z = ((p.x - rect.left()) / cell).floor().clamp(0.0, (n - 1) as f32) as usize;
        return Some(z);
    }
    None
}

/// Draws the brush outline at the pointer and the lasso drawn so far over a view.
/// `screen_from_image` maps plane pixel coordinates to screen points; `points_per_pixel` is the
/// view's scale along each axis (the orthogonal views stretch z), so the brush is an ellipse
/// there.
pub fn tool_preview_ui(
    painter: &egui::Painter,
    tools: &ToolState,
    hover_image: Option<[f32; 2]>,
    screen_from_image: impl Fn([f32; 2]) -> Pos2,
    points_per_pixel: Vec2,
) {
    let stroke = Stroke::new(1.5, super::color(palette::OVERLAY_LINE));
    let shadow = Stroke::new(3.0, super::color_alpha(palette::OVERLAY_HALO));
    if matches!(tools.tool, Tool::Brush | Tool::Eraser)
        && let Some(at) = hover_image
    {
        let r = (tools.brush_diameter_px as f32 / 2.0 * points_per_pixel).max(Vec2::splat(1.5));
        let c = screen_from_image(at);
        painter.add(egui::Shape::ellipse_stroke(c, r, shadow));
        painter.add(egui::Shape::ellipse_stroke(c, r, stroke));
    }
    let points: Vec<Pos2> = tools.lasso_points().iter().map(|&p| screen_from_image(p)).collect();
    if points.len() > 1 {
        painter.add(egui::Shape::line(points.clone(), shadow));
        painter.add(egui::Shape::line(points, stroke));
    }
}
