//! Proofreading tools as a state machine over pointer events (Graphite's tool design): a press
//! opens an edit transaction, moves extend it, the release commits it — one drag, one undo
//! step — and an abort (Esc) restores what the drag changed. One-shot operations (fill holes,
//! copy a neighbouring slice, interpolate between edited slices, accept a prediction) are
//! single transactions too.
//!
//! Everything works on image pixel coordinates of the XY plane; the UI converts pointer
//! positions. Pure Rust: depends only on the other `state` modules.

use super::bitplane::{BitPlane, Connectivity, PixelBox, brush_radius_px, component_3d, interpolate_many};
use super::classes::ClassId;
use super::edit::{Commit, Dirty, EditError, Editor};
use super::mask::{MaskVolume, Provenance, ReviewState, SliceMeta};
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
}

impl Tool {
    /// Every tool, in toolbar order.
    pub const ALL: [Tool; 6] =
        [Tool::Navigate, Tool::Brush, Tool::Eraser, Tool::Fill, Tool::Lasso, Tool::DeleteComponent];

    /// Name shown in the toolbar and the Edit menu.
    pub fn label(self) -> &'static str {
        match self {
            Tool::Navigate => "Navigate",
            Tool::Brush => "Brush",
            Tool::Eraser => "Eraser",
            Tool::Fill => "Fill",
            Tool::Lasso => "Lasso",
            Tool::DeleteComponent => "Delete object",
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
    drag: Option<Drag>,
}

#[derive(Debug, Clone, PartialEq)]
enum Drag {
    Brush { last: [f32; 2], value: bool, class: ClassId, z: SliceIndex },
    Lasso { points: Vec<[f32; 2]>, value: bool, class: ClassId, z: SliceIndex },
}

impl Default for ToolState {
    fn default() -> Self {
        Self {
            tool: Tool::Navigate,
            brush_diameter_px: 10,
            connectivity: Connectivity::Four,
            delete_in_3d: false,
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

fn pixel_at(masks: &MaskVolume, at: [f32; 2]) -> Option<[usize; 2]> {
    let (x, y) = (at[0].floor(), at[1].floor());
    (x >= 0.0 && y >= 0.0 && (x as usize) < masks.width() && (y as usize) < masks.height())
        .then_some([x as usize, y as usize])
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

    /// Handles one pointer event with the active tool.
    pub fn handle(&mut self, event: PointerEvent, target: EditTarget<'_>) -> Result<ToolOutcome, EditError> {
        let EditTarget { masks, editor, class, z } = target;
        let mut out = ToolOutcome::default();
        let radius = brush_radius_px(self.brush_diameter_px);
        match (event, self.drag.take()) {
            (PointerEvent::Press { at, alternate }, None) => match self.tool {
                Tool::Navigate => {}
                Tool::Brush | Tool::Eraser => {
                    let value = (self.tool == Tool::Brush) != alternate;
                    editor.begin(if value { "brush" } else { "erase" })?;
                    let area = editor.paint(masks, class, z, |p| p.stroke_segment(at, at, radius, value))?;
                    editor.touch(masks, class, z, |t| t.stroke_segment(at, at, radius, true))?;
                    out.dirty.push(Dirty { class, z, area });
                    self.drag = Some(Drag::Brush { last: at, value, class, z });
                }
                Tool::Lasso => {
                    self.drag = Some(Drag::Lasso { points: vec![at], value: !alternate, class, z });
                }
                Tool::Fill => {
                    if let Some(seed) = pixel_at(masks, at) {
                        let conn = self.connectivity;
                        editor.begin(if alternate { "clear region" } else { "fill" })?;
                        let area = editor.paint(masks, class, z, |p| p.flood_fill(seed, !alternate, conn))?;
                        out.dirty.push(Dirty { class, z, area });
                        out.committed = editor.commit(masks);
                    }
                }
                Tool::DeleteComponent => {
                    if let Some(seed) = pixel_at(masks, at) {
                        out = self.delete_component(masks, editor, class, z, seed)?;
                    }
                }
            },
            (PointerEvent::Move { to }, Some(Drag::Brush { last, value, class, z })) => {
                let area = editor.paint(masks, class, z, |p| p.stroke_segment(last, to, radius, value))?;
                editor.touch(masks, class, z, |t| t.stroke_segment(last, to, radius, true))?;
                out.dirty.push(Dirty { class, z, area });
                self.drag = Some(Drag::Brush { last: to, value, class, z });
            }
            (PointerEvent::Move { to }, Some(Drag::Lasso { mut points, value, class, z })) => {
                let last = *points.last().expect("lasso starts with a point");
                if (to[0] - last[0]).hypot(to[1] - last[1]) >= LASSO_MIN_STEP_PX {
                    points.push(to);
                }
                self.drag = Some(Drag::Lasso { points, value, class, z });
            }
            (PointerEvent::Release, Some(Drag::Brush { .. })) => {
                out.committed = editor.commit(masks);
            }
            (PointerEvent::Release, Some(Drag::Lasso { points, value, class, z })) => {
                editor.begin(if value { "lasso" } else { "lasso erase" })?;
                let area = editor.paint(masks, class, z, |p| p.fill_polygon(&points, value))?;
                editor.touch(masks, class, z, |t| t.fill_polygon(&points, true))?;
                out.dirty.push(Dirty { class, z, area });
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
        z: SliceIndex,
        seed: [usize; 2],
    ) -> Result<ToolOutcome, EditError> {
        let mut out = ToolOutcome::default();
        if !masks.mask(class, z).is_some_and(|m| m.get(seed[0], seed[1])) {
            return Ok(out);
        }
        editor.begin("delete object")?;
        if self.delete_in_3d {
            let parts = {
                let m: &MaskVolume = masks;
                let mut plane_of = |zi: usize| m.mask(class, SliceIndex(zi)).map(|s| s.to_plane());
                component_3d(&mut plane_of, m.depth(), [seed[0], seed[1], z.0], self.connectivity)
            };
            for (zi, part) in parts {
                let zi = SliceIndex(zi);
                let area = editor.paint(masks, class, zi, |p| clear_where(p, &part))?;
                out.dirty.push(Dirty { class, z: zi, area });
            }
        } else {
            let conn = self.connectivity;
            let area = editor.paint(masks, class, z, |p| p.delete_component(seed, conn))?;
            out.dirty.push(Dirty { class, z, area });
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
    let meta = masks.meta(class, z);
    matches!(meta.review, ReviewState::Corrected | ReviewState::Accepted)
        || matches!(meta.provenance, Provenance::User | Provenance::Imported)
}

/// Shape-based interpolation of the class around slice `z`: between the nearest key slices
/// (edited or accepted by a person) below and above `z` when `z` itself is not one, else in
/// the gaps on both sides of `z`. Slices strictly between two keys are replaced by the
/// signed-distance interpolation of the keys; a gap without a key on one side is left alone.
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
    let plane_of = |m: &MaskVolume, zi: usize| match m.mask(class, SliceIndex(zi)) {
        Some(s) => s.to_plane(),
        None => BitPlane::new(m.width(), m.height()),
    };
    editor.begin("interpolate")?;
    let mut dirty = Vec::new();
    for (a, b) in gaps {
        let between = interpolate_many(&plane_of(masks, a), &plane_of(masks, b), b - a - 1);
        for (i, plane) in between.into_iter().enumerate() {
            let zi = SliceIndex(a + 1 + i);
            let area = editor.paint(masks, class, zi, |p| replace_with(p, &plane))?;
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
