//! The slice views: XY with XZ and YZ beside it, their navigation (wheel and keys through
//! slices, zoom about the pointer, pan, fit, 1:1), the linked cursor and the crosshair.
//!
//! Only egui and `state`; draws through `render`'s paint callback with plain parameters.

use eframe::egui::{self, Event, Key, Modifiers, MouseWheelUnit, PointerButton, Pos2, Rect, Sense, Stroke, Vec2};

use crate::render::{
    ClassStyle, Magnification, OverlayParams, PredictionParams, ScreenFromImage, SliceViewCallback, ViewId, ViewParams,
};
use crate::state::bitplane::PixelBox;
use crate::state::palette;
use crate::state::tools::{EditPlane, PointerEvent, Tool, ToolState};
use crate::state::view::Camera;
use crate::state::{Contrast, Cursor, SliceIndex};

/// Zoom step of one wheel notch or `+`/`-` press.
pub const ZOOM_STEP: f32 = 1.2;
/// Slices per PgUp/PgDn.
pub const PAGE_SLICES: usize = 10;
/// Screen points of smooth (touchpad) scrolling per slice.
pub const SCROLL_POINTS_PER_SLICE: f32 = 40.0;

/// The three planes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plane {
    /// The slice itself: x across, y down.
    Xy,
    /// Row y through all slices: x across, z down.
    Xz,
    /// Column x through all slices: z across, y down.
    Yz,
}

impl Plane {
    /// The renderer's view id.
    pub fn view_id(self) -> ViewId {
        match self {
            Plane::Xy => ViewId(0),
            Plane::Xz => ViewId(1),
            Plane::Yz => ViewId(2),
        }
    }

    /// Label drawn in the view's corner.
    pub fn label(self) -> &'static str {
        match self {
            Plane::Xy => "XY",
            Plane::Xz => "XZ",
            Plane::Yz => "YZ",
        }
    }
}

/// Per-class display settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassView {
    /// Drawn or hidden.
    pub visible: bool,
    /// 0..1.
    pub opacity: f32,
}

impl Default for ClassView {
    fn default() -> Self {
        Self { visible: true, opacity: 0.45 }
    }
}

/// Everything about how the stack is shown; owned by the app, edited by the UI.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewerState {
    /// Stack size: width, height, depth.
    pub shape: [usize; 3],
    /// Screen height of one slice step in the orthogonal views, relative to a pixel's width.
    pub z_aspect: f32,
    /// Pixel width in nm, when the file says (for the scale bar).
    pub pixel_size_nm: Option<f64>,
    /// XY camera; `None` until the first frame fits the image to the view.
    pub camera: Option<Camera>,
    /// The shared cursor.
    pub cursor: Cursor,
    /// Contrast.
    pub contrast: Contrast,
    /// Magnification filter.
    pub magnification: Magnification,
    /// Class overlay on/off.
    pub overlay_visible: bool,
    /// Outline instead of fill.
    pub outline: bool,
    /// Outline width, screen pixels.
    pub outline_width_px: u32,
    /// Per class slot (the class table's order).
    pub classes: Vec<ClassView>,
    /// Prediction layer.
    pub prediction: PredictionParams,
    /// XZ and YZ views shown.
    pub orthogonal: bool,
    /// Shortcut help shown.
    pub help: bool,
    /// Image position under the pointer and its plane, if any.
    pub hover: Option<(Plane, [f32; 2])>,
    /// Fractional slice steps from smooth scrolling not yet applied.
    scroll_accum: f32,
    /// The view size and camera of the last fit: while the camera is unchanged the image stays
    /// fitted when the window is resized.
    fitted: Option<(Vec2, Camera)>,
    /// The XY view's size in the last frame (what [`ViewerState::visible_xy`] measures).
    xy_size: Option<Vec2>,
}

impl ViewerState {
    /// Initial state for a `width × height × depth` stack.
    pub fn new(shape: [usize; 3], z_aspect: f32, contrast: Contrast, classes: usize) -> Self {
        Self {
            shape,
            z_aspect,
            pixel_size_nm: None,
            camera: None,
            cursor: Cursor { x: shape[0] / 2, y: shape[1] / 2, z: SliceIndex(0) },
            contrast,
            magnification: Magnification::Nearest,
            overlay_visible: true,
            outline: false,
            outline_width_px: 2,
            classes: vec![ClassView::default(); classes],
            prediction: PredictionParams::default(),
            orthogonal: true,
            help: false,
            hover: None,
            scroll_accum: 0.0,
            fitted: None,
            xy_size: None,
        }
    }

    /// Moves to slice `z` (clamped).
    pub fn set_slice(&mut self, z: isize) {
        let last = self.shape[2].saturating_sub(1) as isize;
        self.cursor.z = SliceIndex(z.clamp(0, last) as usize);
    }

    /// Moves `delta` slices.
    pub fn step_slices(&mut self, delta: isize) {
        self.set_slice(self.cursor.z.0 as isize + delta);
    }

    /// Image size of `plane`, texels, and the screen height of a texel relative to its width.
    pub fn plane_geometry(&self, plane: Plane) -> ([f32; 2], f32) {
        let [w, h, d] = self.shape.map(|v| v as f32);
        match plane {
            Plane::Xy => ([w, h], 1.0),
            Plane::Xz => ([w, d], self.z_aspect),
            Plane::Yz => ([d, h], 1.0 / self.z_aspect),
        }
    }

    /// The camera of `plane`: XY's own; the orthogonal views share XY's zoom along their
    /// in-plane axis and centre on the shown slice along z, or on the whole depth when it fits.
    pub fn plane_camera(&self, plane: Plane, view_size: Vec2) -> Option<(Camera, f32)> {
        let cam = self.camera?;
        let d = self.shape[2] as f32;
        let z_center = |extent_pts: f32, zoom_z: f32| {
            if d * zoom_z <= extent_pts {
                d / 2.0
            } else {
                let half = extent_pts / 2.0 / zoom_z;
                (self.cursor.z.0 as f32 + 0.5).clamp(half, d - half)
            }
        };
        Some(match plane {
            Plane::Xy => (cam, 1.0),
            Plane::Xz => {
                let zc = z_center(view_size.y, cam.zoom * self.z_aspect);
                (Camera { zoom: cam.zoom, center: [cam.center[0], zc] }, self.z_aspect)
            }
            Plane::Yz => {
                // Across is z: its zoom is XY's times the aspect; down is y at XY's zoom.
                let zoom = cam.zoom * self.z_aspect;
                let zc = z_center(view_size.x, zoom);
                (Camera { zoom, center: [zc, cam.center[1]] }, 1.0 / self.z_aspect)
            }
        })
    }

    /// Render parameters of `plane` placed in `rect`, with class colours from `colors`.
    pub fn view_params(&self, plane: Plane, rect: Rect, colors: &[[u8; 3]]) -> Option<ViewParams> {
        let (cam, aspect) = self.plane_camera(plane, rect.size())?;
        let (scale, offset) = cam.screen_from_image([rect.min.x, rect.min.y], [rect.width(), rect.height()], aspect);
        let mut overlay = OverlayParams {
            visible: self.overlay_visible,
            outline: self.outline,
            outline_width_px: self.outline_width_px,
            ..Default::default()
        };
        for (slot, (view, rgb)) in self.classes.iter().zip(colors).take(overlay.classes.len()).enumerate() {
            overlay.classes[slot] = ClassStyle { rgb: *rgb, opacity: view.opacity, visible: view.visible };
        }
        Some(ViewParams {
            screen_from_image: ScreenFromImage { scale, offset },
            window: [self.contrast.low as f32, self.contrast.high as f32],
            gamma: self.contrast.gamma,
            invert: self.contrast.invert,
            magnification: self.magnification,
            overlay,
            prediction: self.prediction,
        })
    }

    /// The part of the slice the XY view shows, in slice pixels (clamped to the slice; the
    /// whole slice before the first frame). What a prediction decodes first.
    pub fn visible_xy(&self) -> PixelBox {
        let [w, h, _] = self.shape;
        let whole = PixelBox { x0: 0, y0: 0, x1: w, y1: h };
        let (Some(cam), Some(size)) = (self.camera, self.xy_size) else { return whole };
        let a = cam.visible_area([size.x, size.y], 1.0);
        let clamp = |v: f32, hi: usize| (v.max(0.0) as usize).min(hi);
        let area = PixelBox {
            x0: clamp(a[0].floor(), w),
            y0: clamp(a[1].floor(), h),
            x1: clamp(a[2].ceil(), w),
            y1: clamp(a[3].ceil(), h),
        };
        if area.is_empty() { whole } else { area }
    }

    /// Fits the XY image into a view of `size`.
    pub fn fit(&mut self, size: Vec2) {
        let (image, aspect) = self.plane_geometry(Plane::Xy);
        let cam = Camera::fit([size.x, size.y], image, aspect);
        self.camera = Some(cam);
        self.fitted = Some((size, cam));
    }

    /// Fits when nothing is shown yet, or when the view was fitted, not zoomed or panned since,
    /// and has changed size (window resized, panels moved).
    pub fn keep_fitted(&mut self, size: Vec2) {
        self.xy_size = Some(size);
        let still_fitted = self.fitted.filter(|(_, cam)| Some(*cam) == self.camera);
        if self.camera.is_none() || still_fitted.is_some_and(|(s, _)| s != size) {
            self.fit(size);
        }
    }

    /// One image pixel per physical screen pixel, keeping the centre.
    pub fn one_to_one(&mut self, pixels_per_point: f32) {
        if let Some(cam) = &mut self.camera {
            cam.zoom = 1.0 / pixels_per_point;
        }
    }
}

/// What happened in a view this frame.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ViewResponse {
    /// The view's rect (for fitting).
    pub rect: Option<Rect>,
}

/// Keyboard navigation, unless a text field has the keyboard. Returns whether anything changed.
pub fn handle_keys(ctx: &egui::Context, state: &mut ViewerState, xy_size: Vec2) -> bool {
    // A focused widget (a slider the user just dragged, a text field) owns the keys; clicking
    // into a view takes the focus back.
    if ctx.egui_wants_keyboard_input() || ctx.memory(|m| m.focused().is_some()) {
        return false;
    }
    let ppp = ctx.pixels_per_point();
    let before = state.clone();
    ctx.input_mut(|i| {
        // `?` arrives with Shift held on most layouts.
        let help = i.consume_key(Modifiers::SHIFT, Key::Questionmark);
        let mut pressed = |key| i.consume_key(Modifiers::NONE, key);
        if pressed(Key::ArrowUp) || pressed(Key::ArrowRight) {
            state.step_slices(1);
        }
        if pressed(Key::ArrowDown) || pressed(Key::ArrowLeft) {
            state.step_slices(-1);
        }
        if pressed(Key::PageUp) {
            state.step_slices(PAGE_SLICES as isize);
        }
        if pressed(Key::PageDown) {
            state.step_slices(-(PAGE_SLICES as isize));
        }
        if pressed(Key::Home) {
            state.set_slice(0);
        }
        if pressed(Key::End) {
            state.set_slice(isize::MAX);
        }
        if pressed(Key::F) {
            state.fit(xy_size);
        }
        // 0, not napari's 1, which selects the eraser.
        if pressed(Key::Num0) {
            state.one_to_one(ppp);
        }
        if (pressed(Key::Plus) || pressed(Key::Equals))
            && let Some(c) = &mut state.camera
        {
            c.zoom = (c.zoom * ZOOM_STEP).min(crate::state::view::ZOOM_RANGE.1);
        }
        if pressed(Key::Minus)
            && let Some(c) = &mut state.camera
        {
            c.zoom = (c.zoom / ZOOM_STEP).max(crate::state::view::ZOOM_RANGE.0);
        }
        if pressed(Key::M) {
            state.overlay_visible = !state.overlay_visible;
        }
        if pressed(Key::O) {
            state.outline = !state.outline;
        }
        if pressed(Key::I) {
            state.contrast.invert = !state.contrast.invert;
        }
        if pressed(Key::L) {
            state.magnification = match state.magnification {
                Magnification::Nearest => Magnification::Linear,
                Magnification::Linear => Magnification::Nearest,
            };
        }
        if pressed(Key::P) {
            state.prediction.visible = !state.prediction.visible;
        }
        if pressed(Key::T) {
            state.orthogonal = !state.orthogonal;
        }
        if help || pressed(Key::F1) || pressed(Key::Questionmark) || pressed(Key::H) {
            state.help = !state.help;
        }
        if state.help && pressed(Key::Escape) {
            state.help = false;
        }
    });
    *state != before
}

/// Draws `plane` in `rect` and handles its pointer input: wheel through slices (XY), Ctrl +
/// wheel or pinch to zoom about the pointer, drag (primary or middle button) to pan, click to
/// move the shared cursor. With `tools` and a tool other than Navigate, primary and secondary
/// presses and drags become [`PointerEvent`]s in the plane's pixels (returned), the middle
/// button or Space + drag still pan, and the tool's preview is drawn.
pub fn plane_ui(
    ui: &mut egui::Ui,
    rect: Rect,
    plane: Plane,
    state: &mut ViewerState,
    colors: &[[u8; 3]],
    has_image: bool,
    tools: Option<&ToolState>,
) -> Vec<PointerEvent> {
    let mut events_out = Vec::new();
    let response = ui.interact(rect, egui::Id::unique(("plane view", plane.label())), Sense::click_and_drag());
    let painter = ui.painter_at(rect);
    painter.rect_filled(rect, 0.0, ui.visuals().extreme_bg_color);
    let Some((cam, aspect)) = state.plane_camera(plane, rect.size()) else { return events_out };
    let (image_size, _) = state.plane_geometry(plane);
    let view_min = [rect.min.x, rect.min.y];
    let view_size = [rect.width(), rect.height()];
    let image_at = |p: Pos2| cam.image_from_screen([p.x, p.y], view_min, view_size, aspect);

    // Pointer: hover position for the status bar.
    if let Some(p) = response.hover_pos() {
        state.hover = Some((plane, image_at(p)));
    } else if state.hover.is_some_and(|(pl, _)| pl == plane) {
        state.hover = None;
    }

    // Wheel and pinch.
    if response.hovered() {
        let (events, zoom_delta) = ui.input(|i| (i.events.clone(), i.zoom_delta()));
        let anchor = response.hover_pos().unwrap_or(rect.center());
        for e in &events {
            if let Event::MouseWheel { unit, delta, modifiers, .. } = e {
                if modifiers.command || modifiers.ctrl {
                    let notches = match unit {
                        MouseWheelUnit::Point => delta.y / SCROLL_POINTS_PER_SLICE,
                        MouseWheelUnit::Line => delta.y,
                        MouseWheelUnit::Page => delta.y * 3.0,
                    };
                    zoom_plane(state, plane, ZOOM_STEP.powf(notches), anchor, rect);
                } else {
                    let slices = match unit {
                        MouseWheelUnit::Point => {
                            state.scroll_accum += delta.y / SCROLL_POINTS_PER_SLICE;
                            let whole = state.scroll_accum.trunc();
                            state.scroll_accum -= whole;
                            whole
                        }
                        MouseWheelUnit::Line => delta.y,
                        MouseWheelUnit::Page => delta.y * PAGE_SLICES as f32,
                    };
                    // Wheel down (towards the user, negative y) goes to the next slice, as in
                    // Fiji.
                    state.step_slices(-(slices.round() as isize));
                }
            }
        }
        // Pinch gestures (egui reports Ctrl+wheel as zoom too; those were handled above).
        let pinch = events.iter().any(|e| matches!(e, Event::Zoom(_)));
        if pinch && zoom_delta != 1.0 {
            zoom_plane(state, plane, zoom_delta, anchor, rect);
        }
    }

    if (response.clicked() || response.drag_started())
        && let Some(focused) = ui.memory(|m| m.focused())
    {
        ui.memory_mut(|m| m.surrender_focus(focused));
    }

    let space_held = ui.input(|i| i.key_down(Key::Space));
    let editing = tools.filter(|t| t.tool != Tool::Navigate && has_image && !space_held);
    if let Some(t) = editing {
        events_out = tool_events(ui, &response, t, image_at);
    }

    // Pan.
    let primary_pans = editing.is_none();
    if (primary_pans && response.dragged_by(PointerButton::Primary)) || response.dragged_by(PointerButton::Middle) {
        let d = response.drag_delta();
        if let Some(c) = &mut state.camera {
            match plane {
                Plane::Xy => c.pan_by([d.x, d.y], 1.0),
                Plane::Xz => c.pan_by([d.x, 0.0], 1.0),
                Plane::Yz => c.pan_by([0.0, d.y], 1.0),
            }
        }
    }

    // Click moves the cursor (and so what the other views show).
    if response.clicked()
        && editing.is_none()
        && let Some(p) = response.interact_pointer_pos()
    {
        let [u, v] = image_at(p);
        if u >= 0.0 && v >= 0.0 && u < image_size[0] && v < image_size[1] {
            let (u, v) = (u as usize, v as usize);
            match plane {
                Plane::Xy => (state.cursor.x, state.cursor.y) = (u, v),
                Plane::Xz => {
                    state.cursor.x = u;
                    state.set_slice(v as isize);
                }
                Plane::Yz => {
                    state.cursor.y = v;
                    state.set_slice(u as isize);
                }
            }
        }
    }

    // The image (a paint callback, recomputed after input so it shows this frame's camera).
    if has_image && let Some(params) = state.view_params(plane, rect, colors) {
        painter.add(SliceViewCallback { view: plane.view_id(), params }.shape(rect));
    }

    // Crosshair through the cursor.
    if state.orthogonal
        && let Some((cam, aspect)) = state.plane_camera(plane, rect.size())
    {
        let (scale, offset) = cam.screen_from_image(view_min, view_size, aspect);
        let c = state.cursor;
        let (u, v) = match plane {
            Plane::Xy => (c.x as f32 + 0.5, c.y as f32 + 0.5),
            Plane::Xz => (c.x as f32 + 0.5, c.z.0 as f32 + 0.5),
            Plane::Yz => (c.z.0 as f32 + 0.5, c.y as f32 + 0.5),
        };
        let sx = u * scale[0] + offset[0];
        let sy = v * scale[1] + offset[1];
        let stroke = Stroke::new(1.0, super::color_alpha(palette::CROSSHAIR));
        painter.line_segment([Pos2::new(sx, rect.top()), Pos2::new(sx, rect.bottom())], stroke);
        painter.line_segment([Pos2::new(rect.left(), sy), Pos2::new(rect.right(), sy)], stroke);
    }
    if plane == Plane::Xy
        && has_image
        && let Some(nm) = state.pixel_size_nm
    {
        scale_bar(&painter, rect, cam.zoom, nm);
    }
    if let Some(t) = tools {
        let (scale, offset) = cam.screen_from_image(view_min, view_size, aspect);
        let hover = response.hover_pos().map(image_at);
        let to_screen = |p: [f32; 2]| Pos2::new(p[0] * scale[0] + offset[0], p[1] * scale[1] + offset[1]);
        // The brush is round in the sample: per plane pixel it covers 1 / brush scale.
        let at = match plane {
            Plane::Xy => EditPlane::Xy(state.cursor.z),
            Plane::Xz => EditPlane::Xz { y: state.cursor.y },
            Plane::Yz => EditPlane::Yz { x: state.cursor.x },
        };
        let [bx, by] = t.brush_scale(at);
        super::tools::tool_preview_ui(&painter, t, hover, to_screen, Vec2::new(scale[0] / bx, scale[1] / by));
    }
    painter.text(
        rect.left_top() + Vec2::new(6.0, 4.0),
        egui::Align2::LEFT_TOP,
        plane.label(),
        egui::FontId::proportional(12.0),
        ui.visuals().strong_text_color(),
    );
    events_out
}

/// Turns this frame's pointer input on a view into tool events: a click is a press and a
/// release at one point; a drag is a press where the button went down, a move for every
/// pointer position egui saw this frame (so fast strokes stay continuous), and a release.
fn tool_events(
    ui: &egui::Ui,
    response: &egui::Response,
    tools: &ToolState,
    image_at: impl Fn(Pos2) -> [f32; 2],
) -> Vec<PointerEvent> {
    let mut out = Vec::new();
    let alternate = |r: &egui::Response| r.dragged_by(PointerButton::Secondary) || r.secondary_clicked();
    let tool_button =
        |r: &egui::Response| r.dragged_by(PointerButton::Primary) || r.dragged_by(PointerButton::Secondary);
    let started = response.drag_started() && tool_button(response);
    if started && let Some(origin) = ui.input(|i| i.pointer.press_origin()) {
        out.push(PointerEvent::Press { at: image_at(origin), alternate: alternate(response) });
    }
    if (tools.dragging() || started) && tool_button(response) {
        let moves: Vec<Pos2> = ui.input(|i| {
            i.events.iter().filter_map(|e| if let egui::Event::PointerMoved(p) = e { Some(*p) } else { None }).collect()
        });
        let moves = if moves.is_empty() { response.interact_pointer_pos().into_iter().collect() } else { moves };
        out.extend(moves.into_iter().map(|p| PointerEvent::Move { to: image_at(p) }));
    }
    if response.drag_stopped() {
        out.push(PointerEvent::Release);
    }
    if (response.clicked() || response.secondary_clicked())
        && let Some(p) = response.interact_pointer_pos()
    {
        out.push(PointerEvent::Press { at: image_at(p), alternate: alternate(response) });
        out.push(PointerEvent::Release);
    }
    out
}

/// The longest "round" length (1, 2 or 5 × 10^k nm) whose bar is at most `max_pts` long at
/// `points_per_nm`, and its label (nm below 1 µm, else µm).
pub fn scale_bar_length(points_per_nm: f64, max_pts: f64) -> (f64, String) {
    let limit_nm = max_pts / points_per_nm;
    let decade = 10f64.powf(limit_nm.log10().floor());
    // A relative 1e-9 so that a bar that fits exactly is not lost to rounding.
    let nm = [5.0, 2.0, 1.0].into_iter().map(|m| m * decade).find(|&l| l <= limit_nm * (1.0 + 1e-9)).unwrap_or(decade);
    let label = if nm >= 1000.0 { format!("{} µm", nm / 1000.0) } else { format!("{nm} nm") };
    (nm, label)
}

/// A scale bar in the bottom-left corner of the XY view.
fn scale_bar(painter: &egui::Painter, rect: Rect, zoom: f32, pixel_nm: f64) {
    let points_per_nm = f64::from(zoom) / pixel_nm;
    let (nm, label) = scale_bar_length(points_per_nm, 140.0);
    let len = (nm * points_per_nm) as f32;
    let start = rect.left_bottom() + Vec2::new(14.0, -14.0);
    let end = start + Vec2::new(len, 0.0);
    painter.line_segment([start, end], Stroke::new(5.0, super::color_alpha(palette::SCALE_BAR_HALO)));
    painter.line_segment([start, end], Stroke::new(3.0, super::color(palette::OVERLAY_LINE)));
    let font = egui::FontId::proportional(12.0);
    let at = start + Vec2::new(len / 2.0, -5.0);
    painter.text(
        at + Vec2::new(1.0, 1.0),
        egui::Align2::CENTER_BOTTOM,
        &label,
        font.clone(),
        super::color(palette::TEXT_SHADOW),
    );
    painter.text(at, egui::Align2::CENTER_BOTTOM, label, font, super::color(palette::OVERLAY_LINE));
}

fn zoom_plane(state: &mut ViewerState, plane: Plane, factor: f32, anchor: Pos2, rect: Rect) {
    // Zoom is shared: keep the XY image point under the pointer fixed for XY, and the in-plane
    // axis point for the orthogonal views.
    let Some((plane_cam, aspect)) = state.plane_camera(plane, rect.size()) else { return };
    let view_min = [rect.min.x, rect.min.y];
    let view_size = [rect.width(), rect.height()];
    let Some(cam) = &mut state.camera else { return };
    match plane {
        Plane::Xy => cam.zoom_about(factor, [anchor.x, anchor.y], view_min, view_size, aspect),
        Plane::Xz | Plane::Yz => {
            let mut c = plane_cam;
            c.zoom_about(factor, [anchor.x, anchor.y], view_min, view_size, aspect);
            let ratio = c.zoom / plane_cam.zoom;
            cam.zoom = (cam.zoom * ratio).clamp(crate::state::view::ZOOM_RANGE.0, crate::state::view::ZOOM_RANGE.1);
            if plane == Plane::Xz {
                cam.center[0] = c.center[0];
            } else {
                cam.center[1] = c.center[1];
            }
        }
    }
}

/// Splits the central area into the XY view and, when shown, YZ to its right and XZ below.
pub fn layout(rect: Rect, state: &ViewerState) -> Vec<(Plane, Rect)> {
    if !state.orthogonal || state.shape[2] < 2 {
        return vec![(Plane::Xy, rect)];
    }
    let gap = 4.0;
    let side = (rect.width() * 0.26).round();
    let bottom = (rect.height() * 0.26).round();
    let xy = Rect::from_min_max(rect.min, Pos2::new(rect.right() - side - gap, rect.bottom() - bottom - gap));
    let yz = Rect::from_min_max(Pos2::new(xy.right() + gap, rect.top()), Pos2::new(rect.right(), xy.bottom()));
    let xz = Rect::from_min_max(Pos2::new(rect.left(), xy.bottom() + gap), Pos2::new(xy.right(), rect.bottom()));
    vec![(Plane::Xy, xy), (Plane::Yz, yz), (Plane::Xz, xz)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_visible_part_of_the_slice_follows_zoom_and_pan() {
        let mut v = ViewerState::new([1000, 800, 3], 1.0, Contrast::full_range(crate::state::DType::U8), 1);
        let whole = PixelBox { x0: 0, y0: 0, x1: 1000, y1: 800 };
        assert_eq!(v.visible_xy(), whole, "before the first frame");
        v.keep_fitted(Vec2::new(500.0, 400.0));
        assert_eq!(v.visible_xy(), whole, "fitted");
        v.camera = Some(Camera { zoom: 2.0, center: [200.0, 600.0] });
        assert_eq!(v.visible_xy(), PixelBox { x0: 75, y0: 500, x1: 325, y1: 700 });
        v.camera = Some(Camera { zoom: 2.0, center: [990.0, 10.0] });
        assert_eq!(v.visible_xy(), PixelBox { x0: 865, y0: 0, x1: 1000, y1: 110 }, "clamped to the slice");
    }

    #[test]
    fn scale_bar_picks_round_lengths() {
        // 4.6 nm pixels at 100 % zoom: 140 points are 644 nm -> a 500 nm bar.
        assert_eq!(scale_bar_length(1.0 / 4.6, 140.0), (500.0, "500 nm".to_owned()));
        // Zoomed out 8x: 5152 nm -> 5 µm.
        assert_eq!(scale_bar_length(1.0 / 4.6 / 8.0, 140.0), (5000.0, "5 µm".to_owned()));
        // 2 µm exactly fits.
        assert_eq!(scale_bar_length(140.0 / 2000.0, 140.0).0, 2000.0);
        assert_eq!(scale_bar_length(140.0 / 1999.0, 140.0).0, 1000.0);
    }
}
