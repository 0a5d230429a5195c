//! Proofreading tools as a state machine over pointer events (Graphite's tool design): a press
//! opens an edit transaction, moves extend it, the release commits it — one drag, one undo
//! step — and an abort (Esc) restores what the drag changed. One-shot operations (fill holes,
//! copy a neighbouring slice, interpolate between edited slices, accept a prediction) are
//! single transactions too.
//!
//! Tools work in a slice (XY) or in an orthogonal plane (XZ, YZ: the plane is assembled from
//! the slices, edited, and its changed pixels written back slice by slice in the same
//! transaction), on pixel coordinates of that plane; the UI converts pointer positions. Pure
//! Rust: depends only on the other `state` modules.

use super::bitplane::{BitPlane, Connectivity, PixelBox, brush_radius_px, component_3d, interpolate_many};
use super::classes::ClassId;
use super::edit::{Commit, Dirty, EditError, Editor};
use super::mask::{MaskVolume, Provenance, ReviewState, SliceMask, SliceMeta};
use super::volume::SliceIndex;

/// Smallest and largest brush diameters, pixels.
pub const BRUSH_DIAMETER_RANGE_PX: (u32, u32) = (1, 512);

/// Lasso points closer than this to the previous one are skipped, pixels.
const LASSO_MIN_STEP_PX: f32 = 0.75;

/// The active tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tool {
    /// Pointer drags pan, clicks move the cursor.
    Navigate,
    /// Round brush that sets the active class (secondary button erases).
    Brush,
    /// Round brush that clears the active class.
    Eraser,
    /// Flood fill of the clicked region (secondary button clears the clicked component).
    Fill,
    /// Freehand polygon filled on release (secondary button clears inside it).
    Lasso,
    /// Click clears the connected component under the pointer (in 2D or through slices).
    DeleteComponent,
    /// Clicks prompt the model on this slice (primary: object here, secondary: not here);
    /// the refined prediction replaces the prediction layer. Masks change only on accept.
    Refine,
}

impl Tool {
    /// Every tool, in toolbar order.
    pub const ALL: [Tool; 7] =
        [Tool::Navigate, Tool::Brush, Tool::Eraser, Tool::Fill, Tool::Lasso, Tool::DeleteComponent, Tool::Refine];

    /// Name shown in the toolbar and the Edit menu.
    pub fn label(self) -> &'static str {
        match self {
            Tool::Navigate => "Navigate",
            Tool::Brush => "Brush",
            Tool::Eraser => "Eraser",
            Tool::Fill => "Fill",
            Tool::Lasso => "Lasso",
            Tool::DeleteComponent => "Delete object",
            Tool::Refine => "Refine (clicks)",
        }
    }
}

/// A pointer event in XY image pixel coordinates (pixel (x, y) covers [x, x+1) × [y, y+1)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PointerEvent {
    /// Button pressed at a position; `alternate` is the secondary button (erase / clear).
    Press {
        /// Position.
        at: [f32; 2],
        /// Secondary button (or a modifier) held.
        alternate: bool,
    },
    /// Pointer moved while pressed.
    Move {
        /// Position.
        to: [f32; 2],
    },
    /// Button released.
    Release,
    /// Esc: drop the drag in progress.
    Abort,
}

/// Tool settings and the drag in progress.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolState {
    /// Active tool.
    pub tool: Tool,
    /// Brush and eraser diameter, pixels.
    pub brush_diameter_px: u32,
    /// Connectivity of fill and component delete.
    pub connectivity: Connectivity,
    /// Component delete follows the object through the slices above and below.
    pub delete_in_3d: bool,
    /// Slice spacing over pixel size: in XZ and YZ the brush spans `1 / z_aspect` as many
    /// slices as pixels, so it stays round in the sample (and on screen).
    pub z_aspect: f32,
    drag: Option<Drag>,
}

#[derive(Debug, Clone, PartialEq)]
enum Drag {
    Brush { last: [f32; 2], value: bool, class: ClassId, at: EditPlane },
    Lasso { points: Vec<[f32; 2]>, value: bool, class: ClassId, at: EditPlane },
}

/// The plane a tool works in. Pointer positions are in that plane's pixels: (x, y) in a
/// slice; (x, z) in XZ through row `y`; (z, y) in YZ through column `x` — the layout the
/// orthogonal views draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EditPlane {
    /// Slice z.
    Xy(SliceIndex),
    /// Row y through every slice.
    Xz {
        /// The row.
        y: usize,
    },
    /// Column x through every slice.
    Yz {
        /// The column.
        x: usize,
    },
}

/// The bits of `class` in an orthogonal plane, laid out as [`EditPlane`] says.
fn ortho_plane(masks: &MaskVolume, class: ClassId, at: EditPlane) -> BitPlane {
    let (w, h, d) = (masks.width(), masks.height(), masks.depth());
    match at {
        EditPlane::Xy(z) => masks.mask(class, z).map_or_else(|| BitPlane::new(w, h), SliceMask::to_plane),
        EditPlane::Xz { y } => {
            let mut p = BitPlane::new(w, d);
            for z in 0..d {
                if let Some(m) = masks.mask(class, SliceIndex(z)) {
                    (0..w).filter(|&x| m.get(x, y)).for_each(|x| p.set(x, z, true));
                }
            }
            p
        }
        EditPlane::Yz { x } => {
            let mut p = BitPlane::new(d, h);
            for z in 0..d {
                if let Some(m) = masks.mask(class, SliceIndex(z)) {
                    (0..h).filter(|&y| m.get(x, y)).for_each(|y| p.set(z, y, true));
                }
            }
            p
        }
    }
}

/// Applies `op` to `class` in the plane `at` inside the open transaction: in a slice directly,
/// in an orthogonal plane on a copy of it whose changed pixels are then written into each
/// slice they belong to. Returns the regions to redraw, per slice.
fn paint_in(
    editor: &mut Editor,
    masks: &mut MaskVolume,
    class: ClassId,
    at: EditPlane,
    op: impl FnOnce(&mut BitPlane) -> PixelBox,
) -> Result<Vec<Dirty>, EditError> {
    if let EditPlane::Xy(z) = at {
        let area = editor.paint(masks, class, z, op)?;
        return Ok(vec![Dirty { class, z, area }]);
    }
    let before = ortho_plane(masks, class, at);
    let mut after = before.clone();
    let area = op(&mut after);
    let mut dirty = Vec::new();
    // Changed plane pixels (u, v), grouped by the slice they belong to, as (x, y, value).
    let mut by_slice: std::collections::BTreeMap<usize, Vec<([usize; 2], bool)>> = Default::default();
    for v in area.y0..area.y1 {
        for u in area.x0..area.x1 {
            let value = after.get(u, v);
            if before.get(u, v) != value {
                let (z, px) = match at {
                    EditPlane::Xz { y } => (v, [u, y]),
                    EditPlane::Yz { x } => (u, [x, v]),
                    EditPlane::Xy(_) => unreachable!("handled above"),
                };
                by_slice.entry(z).or_default().push((px, value));
            }
        }
    }
    for (z, changes) in by_slice {
        let area = editor.paint(masks, class, SliceIndex(z), |p| {
            let mut b = PixelBox::default();
            for &([x, y], value) in &changes {
                p.set(x, y, value);
                b = b.union(PixelBox { x0: x, y0: y, x1: x + 1, y1: y + 1 });
            }
            b
        })?;
        dirty.push(Dirty { class, z: SliceIndex(z), area });
    }
    Ok(dirty)
}

impl Default for ToolState {
    fn default() -> Self {
        Self {
            tool: Tool::Navigate,
            brush_diameter_px: 10,
            connectivity: Connectivity::Four,
            delete_in_3d: false,
            z_aspect: 1.0,
            drag: None,
        }
    }
}

/// What a tool event did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ToolOutcome {
    /// Regions to redraw.
    pub dirty: Vec<Dirty>,
    /// A transaction that was committed (to journal).
    pub committed: Option<Commit>,
}

/// The mask volume, its editor, and where the tools act.
pub struct EditTarget<'a> {
    /// Masks.
    pub masks: &'a mut MaskVolume,
    /// Transactions and undo.
    pub editor: &'a mut Editor,
    /// Active class.
    pub class: ClassId,
    /// Shown slice.
    pub z: SliceIndex,
}

/// Width and height of the plane `at`, pixels.
fn ortho_plane_size(masks: &MaskVolume, at: EditPlane) -> [usize; 2] {
    match at {
        EditPlane::Xy(_) => [masks.width(), masks.height()],
        EditPlane::Xz { .. } => [masks.width(), masks.depth()],
        EditPlane::Yz { .. } => [masks.depth(), masks.height()],
    }
}

/// The pixel of a `size` plane containing the point, if it is inside.
fn pixel_in(size: [usize; 2], p: [f32; 2]) -> Option<[usize; 2]> {
    let (x, y) = (p[0].floor(), p[1].floor());
    (x >= 0.0 && y >= 0.0 && (x as usize) < size[0] && (y as usize) < size[1]).then_some([x as usize, y as usize])
}

impl ToolState {
    /// Whether a drag is in progress.
    pub fn dragging(&self) -> bool {
        self.drag.is_some()
    }

    /// Forgets the drag in progress (its transaction was aborted elsewhere, e.g. by undo).
    pub fn cancel_drag(&mut self) {
        self.drag = None;
    }

    /// The lasso outline drawn so far, image pixels (for the preview).
    pub fn lasso_points(&self) -> &[[f32; 2]] {
        match &self.drag {
            Some(Drag::Lasso { points, .. }) => points,
            _ => &[],
        }
    }

    /// Changes the brush diameter by `steps` (`]` = +1, `[` = -1): ±1 px below 10 px, then
    /// ±10 % so that large brushes change at a usable rate.
    pub fn resize_brush(&mut self, steps: i32) {
        let d = self.brush_diameter_px as f32;
        let factor = if d < 10.0 { (d + steps as f32) / d } else { 1.1f32.powi(steps) };
        let next = (d * factor).round() as u32;
        let next = if next == self.brush_diameter_px {
            (self.brush_diameter_px as i64 + i64::from(steps)).max(1) as u32
        } else {
            next
        };
        self.brush_diameter_px = next.clamp(BRUSH_DIAMETER_RANGE_PX.0, BRUSH_DIAMETER_RANGE_PX.1);
    }

    /// How the brush is scaled in plane `at` (see [`BitPlane::stroke_segment_scaled`]).
    pub fn brush_scale(&self, at: EditPlane) -> [f32; 2] {
        let a = if self.z_aspect.is_finite() && self.z_aspect > 0.0 { self.z_aspect } else { 1.0 };
        match at {
            EditPlane::Xy(_) => [1.0, 1.0],
            EditPlane::Xz { .. } => [1.0, a],
            EditPlane::Yz { .. } => [a, 1.0],
        }
    }

    /// Handles one pointer event with the active tool on the slice `target.z`.
    pub fn handle(&mut self, event: PointerEvent, target: EditTarget<'_>) -> Result<ToolOutcome, EditError> {
        let at = EditPlane::Xy(target.z);
        self.handle_in(event, target, at)
    }

    /// Handles one pointer event with the active tool in the plane `at` (a slice or an
    /// orthogonal plane; `target.z` is then not used). A drag stays in the plane it started in.
    pub fn handle_in(
        &mut self,
        event: PointerEvent,
        target: EditTarget<'_>,
        at: EditPlane,
    ) -> Result<ToolOutcome, EditError> {
        let EditTarget { masks, editor, class, .. } = target;
        let mut out = ToolOutcome::default();
        let radius = brush_radius_px(self.brush_diameter_px);
        let size = ortho_plane_size(masks, at);
        // The plane of the drag in progress, else the one pressed in.
        let scale = self.brush_scale(match &self.drag {
            Some(Drag::Brush { at, .. } | Drag::Lasso { at, .. }) => *at,
            None => at,
        });
        match (event, self.drag.take()) {
            (PointerEvent::Press { at: p, alternate }, None) => match self.tool {
                Tool::Navigate | Tool::Refine => {}
                Tool::Brush | Tool::Eraser => {
                    let value = (self.tool == Tool::Brush) != alternate;
                    editor.begin(if value { "brush" } else { "erase" })?;
                    out.dirty =
                        paint_in(editor, masks, class, at, |b| b.stroke_segment_scaled(p, p, radius, scale, value))?;
                    if let EditPlane::Xy(z) = at {
                        editor.touch(masks, class, z, |t| t.stroke_segment(p, p, radius, true))?;
                    }
                    self.drag = Some(Drag::Brush { last: p, value, class, at });
                }
                Tool::Lasso => {
                    self.drag = Some(Drag::Lasso { points: vec![p], value: !alternate, class, at });
                }
                Tool::Fill => {
                    if let Some(seed) = pixel_in(size, p) {
                        let conn = self.connectivity;
                        editor.begin(if alternate { "clear region" } else { "fill" })?;
                        out.dirty = paint_in(editor, masks, class, at, |b| b.flood_fill(seed, !alternate, conn))?;
                        out.committed = editor.commit(masks);
                    }
                }
                Tool::DeleteComponent => {
                    if let Some(seed) = pixel_in(size, p) {
                        out = self.delete_component(masks, editor, class, at, seed)?;
                    }
                }
            },
            (PointerEvent::Move { to }, Some(Drag::Brush { last, value, class, at })) => {
                out.dirty =
                    paint_in(editor, masks, class, at, |b| b.stroke_segment_scaled(last, to, radius, scale, value))?;
                if let EditPlane::Xy(z) = at {
                    editor.touch(masks, class, z, |t| t.stroke_segment(last, to, radius, true))?;
                }
                self.drag = Some(Drag::Brush { last: to, value, class, at });
            }
            (PointerEvent::Move { to }, Some(Drag::Lasso { mut points, value, class, at })) => {
                let last = *points.last().expect("lasso starts with a point");
                if (to[0] - last[0]).hypot(to[1] - last[1]) >= LASSO_MIN_STEP_PX {
                    points.push(to);
                }
                self.drag = Some(Drag::Lasso { points, value, class, at });
            }
            (PointerEvent::Release, Some(Drag::Brush { .. })) => {
                out.committed = editor.commit(masks);
            }
            (PointerEvent::Release, Some(Drag::Lasso { points, value, class, at })) => {
                editor.begin(if value { "lasso" } else { "lasso erase" })?;
                out.dirty = paint_in(editor, masks, class, at, |b| b.fill_polygon(&points, value))?;
                if let EditPlane::Xy(z) = at {
                    editor.touch(masks, class, z, |t| t.fill_polygon(&points, true))?;
                }
                out.committed = editor.commit(masks);
            }
            (PointerEvent::Abort, Some(Drag::Brush { .. })) => {
                out.dirty = editor.abort(masks);
            }
            (PointerEvent::Abort, Some(Drag::Lasso { .. })) => {}
            // A press while dragging (a second button) or a move/release without a drag: keep
            // whatever state there was.
            (_, drag) => self.drag = drag,
        }
        Ok(out)
    }

    fn delete_component(
        &self,
        masks: &mut MaskVolume,
        editor: &mut Editor,
        class: ClassId,
        at: EditPlane,
        seed: [usize; 2],
    ) -> Result<ToolOutcome, EditError> {
        let mut out = ToolOutcome::default();
        if !ortho_plane(masks, class, at).get(seed[0], seed[1]) {
            return Ok(out);
        }
        editor.begin("delete object")?;
        if self.delete_in_3d {
            // The same object whichever view it was clicked in: follow it through the slices.
            let [x, y, z] = match at {
                EditPlane::Xy(z) => [seed[0], seed[1], z.0],
                EditPlane::Xz { y } => [seed[0], y, seed[1]],
                EditPlane::Yz { x } => [x, seed[1], seed[0]],
            };
            let parts = {
                let m: &MaskVolume = masks;
                let mut plane_of = |zi: usize| m.mask(class, SliceIndex(zi)).map(|s| s.to_plane());
                component_3d(&mut plane_of, m.depth(), [x, y, z], self.connectivity)
            };
            for (zi, part) in parts {
                let zi = SliceIndex(zi);
                let area = editor.paint(masks, class, zi, |p| clear_where(p, &part))?;
                out.dirty.push(Dirty { class, z: zi, area });
            }
        } else {
            let conn = self.connectivity;
            out.dirty = paint_in(editor, masks, class, at, |p| p.delete_component(seed, conn))?;
        }
        out.committed = editor.commit(masks);
        Ok(out)
    }
}

/// Clears in `plane` every pixel set in `part`; returns the bounding box of `part`.
fn clear_where(plane: &mut BitPlane, part: &BitPlane) -> PixelBox {
    let wpr = plane.words_per_row();
    let mut area = PixelBox::default();
    for (i, (p, &q)) in plane.words_mut().iter_mut().zip(part.words()).enumerate() {
        if q != 0 {
            *p &= !q;
            let (y, k) = (i / wpr, i % wpr);
            let x0 = k * 64 + q.trailing_zeros() as usize;
            let x1 = k * 64 + 64 - q.leading_zeros() as usize;
            area = area.union(PixelBox { x0, y0: y, x1, y1: y + 1 });
        }
    }
    area
}

/// Replaces `plane` with `new`; returns the whole plane's box.
fn replace_with(plane: &mut BitPlane, new: &BitPlane) -> PixelBox {
    plane.words_mut().copy_from_slice(new.words());
    PixelBox { x0: 0, y0: 0, x1: plane.width(), y1: plane.height() }
}

fn single(editor: &mut Editor, masks: &MaskVolume, dirty: Vec<Dirty>) -> ToolOutcome {
    ToolOutcome { dirty, committed: editor.commit(masks) }
}

/// Fills the holes of the class's mask on a slice (background not connected to the border).
pub fn fill_holes(target: EditTarget<'_>) -> Result<ToolOutcome, EditError> {
    let EditTarget { masks, editor, class, z } = target;
    editor.begin("fill holes")?;
    let area = editor.paint(masks, class, z, BitPlane::fill_holes)?;
    Ok(single(editor, masks, vec![Dirty { class, z, area }]))
}

/// Replaces the class's mask on slice `z` with the one of slice `from` (the previous or next
/// slice). Nothing happens when `from` is outside the stack.
pub fn copy_slice(target: EditTarget<'_>, from: isize) -> Result<ToolOutcome, EditError> {
    let EditTarget { masks, editor, class, z } = target;
    if from < 0 || from as usize >= masks.depth() || from as usize == z.0 {
        return Ok(ToolOutcome::default());
    }
    let source = match masks.mask(class, SliceIndex(from as usize)) {
        Some(m) => m.to_plane(),
        None => BitPlane::new(masks.width(), masks.height()),
    };
    editor.begin("copy slice")?;
    let area = editor.paint(masks, class, z, |p| replace_with(p, &source))?;
    Ok(single(editor, masks, vec![Dirty { class, z, area }]))
}

/// Whether a person edited or accepted this slice of the class (an interpolation key).
fn is_key_slice(masks: &MaskVolume, class: ClassId, z: SliceIndex) -> bool {
    matches!(masks.review(class, z), ReviewState::Corrected | ReviewState::Accepted)
}

/// The objects of `class` on slice `z` a person worked on: the 8-connected components of its
/// mask that contain a pixel they drew, erased or filled.
fn edited_objects(masks: &MaskVolume, class: ClassId, z: SliceIndex) -> BitPlane {
    let mut out = BitPlane::new(masks.width(), masks.height());
    let Some(e) = masks.entry(class, z) else { return out };
    let (mask, touched) = (e.mask.to_plane(), e.touched.to_plane());
    let wpr = mask.words_per_row();
    for i in 0..mask.words().len() {
        let mut seeds = mask.words()[i] & touched.words()[i] & !out.words()[i];
        while seeds != 0 {
            let seed = [(i % wpr) * 64 + seeds.trailing_zeros() as usize, i / wpr];
            let (object, _) = mask.region(seed, Connectivity::Eight);
            for (o, &c) in out.words_mut().iter_mut().zip(object.words()) {
                *o |= c;
            }
            seeds &= !out.words()[i];
        }
    }
    out
}

/// Shape-based interpolation of the class around slice `z`, between the nearest key slices (a
/// person edited or accepted them) below and above `z` when `z` is not one, else in the gaps
/// on both sides of `z`. What is interpolated is the objects a person worked on in the keys
/// (components with touched pixels), blended by signed distance; the result is added to the
/// slices strictly between the keys, so nothing already there — other objects, imported or
/// predicted — is removed. A gap without a key on one side is left alone.
pub fn interpolate(target: EditTarget<'_>) -> Result<ToolOutcome, EditError> {
    let EditTarget { masks, editor, class, z } = target;
    let keys: Vec<usize> = (0..masks.depth()).filter(|&zi| is_key_slice(masks, class, SliceIndex(zi))).collect();
    let below = keys.iter().rev().find(|&&k| k < z.0).copied();
    let above = keys.iter().find(|&&k| k > z.0).copied();
    let mut gaps = Vec::new();
    if keys.contains(&z.0) {
        gaps.extend(below.map(|b| (b, z.0)));
        gaps.extend(above.map(|a| (z.0, a)));
    } else if let (Some(b), Some(a)) = (below, above) {
        gaps.push((b, a));
    }
    gaps.retain(|(a, b)| b - a > 1);
    if gaps.is_empty() {
        return Ok(ToolOutcome::default());
    }
    editor.begin("interpolate")?;
    let mut dirty = Vec::new();
    for (a, b) in gaps {
        let (from, to) = (edited_objects(masks, class, SliceIndex(a)), edited_objects(masks, class, SliceIndex(b)));
        for (i, plane) in interpolate_many(&from, &to, b - a - 1).into_iter().enumerate() {
            let zi = SliceIndex(a + 1 + i);
            let area = editor.paint(masks, class, zi, |p| {
                for (w, &q) in p.words_mut().iter_mut().zip(plane.words()) {
                    *w |= q;
                }
                plane.bounds()
            })?;
            dirty.push(Dirty { class, z: zi, area });
        }
    }
    Ok(single(editor, masks, dirty))
}

/// Accepts model output into the class's masks: for each `(z, predicted)`, pixels a person
/// vouched for keep their value, the others take the prediction, and the slice becomes
/// `Accepted`. One undo step for all of them.
pub fn accept_predictions(
    masks: &mut MaskVolume,
    editor: &mut Editor,
    class: ClassId,
    predicted: &[(SliceIndex, BitPlane)],
) -> Result<ToolOutcome, EditError> {
    editor.begin(if predicted.len() == 1 { "accept prediction" } else { "accept predictions" })?;
    let mut dirty = Vec::new();
    for (z, pred) in predicted {
        let merged = match masks.entry(class, *z) {
            Some(e) => {
                let mut merged = pred.clone();
                let (current, touched) = (e.mask.to_plane(), e.touched.to_plane());
                let all = e.review == ReviewState::Accepted || e.provenance == Provenance::Imported;
                for ((m, &c), &t) in merged.words_mut().iter_mut().zip(current.words()).zip(touched.words()) {
                    let keep = if all { u64::MAX } else { t };
                    *m = (*m & !keep) | (c & keep);
                }
                merged
            }
            None => pred.clone(),
        };
        let area = match editor.paint(masks, class, *z, |p| replace_with(p, &merged)) {
            Ok(a) => a,
            Err(e) => {
                editor.abort(masks);
                return Err(e);
            }
        };
        editor.set_meta(masks, class, *z, SliceMeta { provenance: Provenance::User, review: ReviewState::Accepted })?;
        dirty.push(Dirty { class, z: *z, area });
    }
    Ok(single(editor, masks, dirty))
}

/// Sets the review state of slice `z` for every class in `classes` (one undo step): accepting
/// a slice means a person looked at all of its classes.
pub fn set_review(
    masks: &mut MaskVolume,
    editor: &mut Editor,
    classes: &[ClassId],
    z: SliceIndex,
    review: ReviewState,
) -> Result<ToolOutcome, EditError> {
    editor.begin(match review {
        ReviewState::Accepted => "accept slice",
        _ => "review state",
    })?;
    let mut dirty = Vec::new();
    for &class in classes {
        let meta = masks.meta(class, z);
        if let Err(e) = editor.set_meta(masks, class, z, SliceMeta { review, ..meta }) {
            editor.abort(masks);
            return Err(e);
        }
        dirty.push(Dirty { class, z, area: PixelBox::default() });
    }
    Ok(single(editor, masks, dirty))
}

/// Takes back the acceptance of slice `z` for every class in `classes` (one undo step): each
/// class's state follows its content again (corrected when a person edited it, predicted
/// when the model filled it, else unseen).
pub fn unaccept(
    masks: &mut MaskVolume,
    editor: &mut Editor,
    classes: &[ClassId],
    z: SliceIndex,
) -> Result<ToolOutcome, EditError> {
    editor.begin("unaccept slice")?;
    let mut dirty = Vec::new();
    for &class in classes {
        let meta = masks.meta(class, z);
        if meta.review != ReviewState::Accepted {
            continue;
        }
        let review = match meta.provenance {
            Provenance::User => ReviewState::Corrected,
            Provenance::Model => ReviewState::Predicted,
            Provenance::Imported | Provenance::Empty => ReviewState::Unseen,
        };
        if let Err(e) = editor.set_meta(masks, class, z, SliceMeta { review, ..meta }) {
            editor.abort(masks);
            return Err(e);
        }
        dirty.push(Dirty { class, z, area: PixelBox::default() });
    }
    Ok(single(editor, masks, dirty))
}

/// The review state of a slice across classes, as the slice navigator shows it: accepted
/// when every class is, corrected when a person edited or accepted any class, predicted when
/// the model filled any, else unseen.
pub fn slice_review(masks: &MaskVolume, classes: &[ClassId], z: SliceIndex) -> ReviewState {
    let states: Vec<ReviewState> = classes.iter().map(|&c| masks.review(c, z)).collect();
    if !states.is_empty() && states.iter().all(|s| *s == ReviewState::Accepted) {
        ReviewState::Accepted
    } else if states.iter().any(|s| matches!(s, ReviewState::Corrected | ReviewState::Accepted)) {
        ReviewState::Corrected
    } else if states.contains(&ReviewState::Predicted) {
        ReviewState::Predicted
    } else {
        ReviewState::Unseen
    }
}

/// The next slice after `from` (going `forward` or back, wrapping around) that is not
/// accepted, if any.
pub fn next_unreviewed(masks: &MaskVolume, classes: &[ClassId], from: SliceIndex, forward: bool) -> Option<SliceIndex> {
    let d = masks.depth();
    (1..=d)
        .map(|k| if forward { (from.0 + k) % d } else { (from.0 + d * k - k) % d })
        .map(SliceIndex)
        .find(|&z| slice_review(masks, classes, z) != ReviewState::Accepted)
}
