//! Headless editing sessions: tools driven by pointer events through the editor, checked
//! against exact expected masks; undo/redo, abort, the memory cap, provenance and review.

use sam4em::state::bitplane::{BitPlane, Connectivity, PixelBox};
use sam4em::state::edit::Editor;
use sam4em::state::tools::{
    self, EditPlane, EditTarget, PointerEvent, Tool, ToolState, accept_predictions, next_unreviewed, set_review,
    slice_review,
};
use sam4em::state::{ClassId, MaskVolume, Provenance, ReviewState, SliceIndex, SliceMask};

const MITO: ClassId = ClassId(2);
const GLIA: ClassId = ClassId(1);

/// `#` set, `.` unset.
fn ascii(rows: &[&str]) -> SliceMask {
    let w = rows[0].len();
    let bytes: Vec<bool> = rows.iter().flat_map(|r| r.chars().map(|c| c == '#')).collect();
    SliceMask::from_fn(w, rows.len(), |i| bytes[i])
}

fn show(m: Option<&SliceMask>, w: usize, h: usize) -> Vec<String> {
    (0..h).map(|y| (0..w).map(|x| if m.is_some_and(|m| m.get(x, y)) { '#' } else { '.' }).collect()).collect()
}

fn mask_of(masks: &MaskVolume, class: ClassId, z: usize) -> SliceMask {
    masks.mask(class, SliceIndex(z)).cloned().unwrap_or_else(|| SliceMask::new(masks.width(), masks.height()))
}

struct Session {
    masks: MaskVolume,
    editor: Editor,
    tools: ToolState,
    class: ClassId,
    z: SliceIndex,
    commits: usize,
}

impl Session {
    fn new(w: usize, h: usize, d: usize) -> Self {
        Self {
            masks: MaskVolume::new(w, h, d),
            editor: Editor::default(),
            tools: ToolState::default(),
            class: MITO,
            z: SliceIndex(0),
            commits: 0,
        }
    }

    fn send(&mut self, event: PointerEvent) {
        let target = EditTarget { masks: &mut self.masks, editor: &mut self.editor, class: self.class, z: self.z };
        let out = self.tools.handle(event, target).expect("tool event");
        self.commits += usize::from(out.committed.is_some());
    }

    fn drag(&mut self, points: &[[f32; 2]], alternate: bool) {
        self.send(PointerEvent::Press { at: points[0], alternate });
        for &p in &points[1..] {
            self.send(PointerEvent::Move { to: p });
        }
        self.send(PointerEvent::Release);
    }

    fn click(&mut self, at: [f32; 2], alternate: bool) {
        self.drag(&[at], alternate);
    }

    fn target(&mut self) -> EditTarget<'_> {
        EditTarget { masks: &mut self.masks, editor: &mut self.editor, class: self.class, z: self.z }
    }

    fn shown(&self) -> Vec<String> {
        show(self.masks.mask(self.class, self.z), self.masks.width(), self.masks.height())
    }
}

#[test]
fn brush_drag_is_one_undo_step_with_exact_pixels() {
    let mut s = Session::new(14, 11, 2);
    s.tools.tool = Tool::Brush;
    s.tools.brush_diameter_px = 3;
    s.drag(&[[5.5, 5.5], [10.5, 5.5], [10.5, 8.5]], false);
    let expected = [
        "..............",
        "..............",
        "..............",
        "..............",
        "....########..",
        "....########..",
        "....########..",
        ".........###..",
        ".........###..",
        ".........###..",
        "..............",
    ];
    assert_eq!(s.shown(), expected);
    assert_eq!((s.commits, s.editor.undo_len()), (1, 1), "one drag, one undo step");
    // A person drew it: provenance, review state, and every pixel is vouched for.
    let e = s.masks.entry(MITO, SliceIndex(0)).unwrap();
    assert_eq!((e.provenance, e.review), (Provenance::User, ReviewState::Corrected));
    assert_eq!(e.touched, e.mask);
    // Another class and slice are untouched.
    assert!(s.masks.mask(GLIA, SliceIndex(0)).is_none() && s.masks.mask(MITO, SliceIndex(1)).is_none());

    // The secondary button erases with the brush; the eraser tool erases with the primary.
    s.drag(&[[10.5, 5.5], [10.5, 8.5]], true);
    s.tools.tool = Tool::Eraser;
    s.tools.brush_diameter_px = 1;
    s.click([4.2, 4.9], false);
    let erased = [
        "..............",
        "..............",
        "..............",
        "..............",
        ".....####.....",
        "....#####.....",
        "....#####.....",
        "..............",
        "..............",
        "..............",
        "..............",
    ];
    assert_eq!(s.shown(), erased);
    assert_eq!(s.editor.undo_len(), 3);

    // Undo, undo: back to the first stroke; redo: the erase is back; undo x3: nothing stored.
    assert!(s.editor.undo(&mut s.masks).is_some());
    assert!(s.editor.undo(&mut s.masks).is_some());
    assert_eq!(s.shown(), expected);
    assert!(s.editor.redo(&mut s.masks).is_some());
    let after_erase: Vec<String> = expected
        .iter()
        .enumerate()
        .map(|(y, r)| {
            r.chars().enumerate().map(|(x, c)| if x >= 9 && (4..=9).contains(&y) { '.' } else { c }).collect()
        })
        .collect();
    assert_eq!(s.shown(), after_erase);
    for _ in 0..2 {
        s.editor.undo(&mut s.masks).unwrap();
    }
    assert!(s.masks.mask(MITO, SliceIndex(0)).is_none_or(SliceMask::is_empty));
    assert_eq!(s.masks.meta(MITO, SliceIndex(0)).provenance, Provenance::Empty, "provenance is undone too");
    assert!(s.editor.undo(&mut s.masks).is_none());
    // A new edit drops what could have been redone.
    s.tools.tool = Tool::Brush;
    s.click([1.5, 1.5], false);
    assert!(s.editor.redo(&mut s.masks).is_none());
}

#[test]
fn escape_aborts_the_stroke_in_progress_only() {
    let mut s = Session::new(16, 16, 1);
    s.tools.tool = Tool::Brush;
    s.tools.brush_diameter_px = 2;
    s.drag(&[[2.0, 2.0], [6.0, 2.0]], false);
    let before = mask_of(&s.masks, MITO, 0);
    let touched_before = s.masks.entry(MITO, SliceIndex(0)).unwrap().touched.clone();
    s.send(PointerEvent::Press { at: [8.0, 8.0], alternate: false });
    s.send(PointerEvent::Move { to: [14.0, 14.0] });
    assert_ne!(mask_of(&s.masks, MITO, 0), before, "the stroke paints while it is drawn");
    s.send(PointerEvent::Abort);
    assert_eq!(mask_of(&s.masks, MITO, 0), before);
    assert_eq!(s.masks.entry(MITO, SliceIndex(0)).unwrap().touched, touched_before);
    assert_eq!(s.editor.undo_len(), 1, "an aborted stroke leaves no undo step");
    // A release after the abort does nothing; the next stroke works.
    s.send(PointerEvent::Release);
    s.click([12.0, 3.0], false);
    assert_eq!(s.editor.undo_len(), 2);
    // Undo during a stroke drops the stroke (and counts as the undo).
    s.send(PointerEvent::Press { at: [1.0, 12.0], alternate: false });
    let c = s.editor.undo(&mut s.masks).unwrap();
    assert!(c.writes.is_empty());
    s.tools.cancel_drag();
    assert_eq!(s.editor.undo_len(), 2);
    assert!(!mask_of(&s.masks, MITO, 0).get(1, 12));
}

#[test]
fn fill_stays_inside_the_boundary_and_respects_connectivity() {
    let ring = ["..........", ".######...", ".#....#...", ".#....#...", ".#...#....", ".####.....", ".........."];
    let mut s = Session::new(10, 7, 1);
    s.masks.put(MITO, SliceIndex(0), ascii(&ring), Provenance::Model).unwrap();
    s.tools.tool = Tool::Fill;
    s.tools.connectivity = Connectivity::Four;
    s.click([3.5, 3.5], false);
    let filled = ["..........", ".######...", ".######...", ".######...", ".#####....", ".####.....", ".........."];
    assert_eq!(s.shown(), filled);
    s.editor.undo(&mut s.masks).unwrap();
    // With 8-neighbours the background leaks through the diagonal gap at (5, 5)-(6, 4).
    s.tools.connectivity = Connectivity::Eight;
    s.click([3.5, 3.5], false);
    assert!(s.shown().iter().all(|r| !r.contains('.')), "{:?}", s.shown());
    s.editor.undo(&mut s.masks).unwrap();
    assert_eq!(s.shown(), ring);
    // The secondary button clears the clicked region (the ring is 8-connected: its corner at
    // (5, 4)-(6, 3) is diagonal); a click outside the image does nothing.
    s.click([1.5, 1.5], true);
    assert!(s.shown().iter().all(|r| !r.contains('#')));
    s.click([-3.0, 2.0], false);
    assert_eq!(s.editor.undo_len(), 1);
}

#[test]
fn lasso_fills_the_polygon_and_abort_drops_it() {
    let mut s = Session::new(12, 10, 1);
    s.tools.tool = Tool::Lasso;
    // A rectangle with pixel centres 2.5..7.5 × 2.5..5.5 inside.
    s.drag(&[[2.0, 2.0], [8.0, 2.0], [8.0, 6.0], [2.0, 6.0]], false);
    let expected = [
        "............",
        "............",
        "..#######...",
        "..#######...",
        "..#######...",
        "..#######...",
        "..#######...",
        "............",
        "............",
        "............",
    ];
    assert_eq!(s.shown(), expected);
    assert_eq!(s.editor.undo_len(), 1);
    // The secondary button clears inside.
    s.drag(&[[3.0, 3.0], [6.0, 3.0], [6.0, 5.0], [3.0, 5.0]], true);
    let cleared = s.shown();
    assert_eq!(cleared[4], "..#....##...");
    // Esc while drawing: nothing happens at all.
    s.send(PointerEvent::Press { at: [0.0, 0.0], alternate: false });
    s.send(PointerEvent::Move { to: [11.0, 0.0] });
    s.send(PointerEvent::Move { to: [11.0, 9.0] });
    assert_eq!(s.tools.lasso_points().len(), 3);
    s.send(PointerEvent::Abort);
    s.send(PointerEvent::Release);
    assert_eq!(s.shown(), cleared);
    assert_eq!(s.editor.undo_len(), 2);
}

#[test]
fn delete_component_in_2d_and_through_slices() {
    // Slice 0: two blobs; slice 1 bridges them; slice 2 continues the left one only.
    let z0 = ["##....##", "##....##", "........"];
    let z1 = ["........", "########", "........"];
    let z2 = ["........", "........", "##......"];
    let z3 = ["##......", "........", "........"];
    let mut s = Session::new(8, 3, 4);
    for (z, rows) in [z0, z1, z2, z3].iter().enumerate() {
        s.masks.put(MITO, SliceIndex(z), ascii(rows), Provenance::Imported).unwrap();
    }
    s.tools.tool = Tool::DeleteComponent;
    s.click([0.5, 0.5], false);
    assert_eq!(s.shown(), ["......##", "......##", "........"], "2D: only the left blob");
    s.editor.undo(&mut s.masks).unwrap();
    s.tools.delete_in_3d = true;
    s.click([0.5, 0.5], false);
    // Left blob → bridge on z1 → right blob on z0 too; z2 touches the bridge at (0..2, 2)? No:
    // z2's pixels are in row 2, the bridge in row 1, so z2 is not connected; z3 touches z2 only.
    assert_eq!(show(s.masks.mask(MITO, SliceIndex(0)), 8, 3), ["........"; 3]);
    assert_eq!(show(s.masks.mask(MITO, SliceIndex(1)), 8, 3), ["........"; 3]);
    assert_eq!(show(s.masks.mask(MITO, SliceIndex(2)), 8, 3), z2);
    assert_eq!(show(s.masks.mask(MITO, SliceIndex(3)), 8, 3), z3);
    assert_eq!(s.editor.undo_len(), 1, "a 3D delete is one undo step");
    s.editor.undo(&mut s.masks).unwrap();
    assert_eq!(show(s.masks.mask(MITO, SliceIndex(1)), 8, 3), z1);
    assert_eq!(show(s.masks.mask(MITO, SliceIndex(0)), 8, 3), z0);
    // Clicking background deletes nothing and makes no undo step.
    s.click([3.5, 0.5], false);
    assert_eq!(s.editor.undo_len(), 0);
}

#[test]
fn fill_holes_copy_and_interpolate() {
    let mut s = Session::new(9, 9, 5);
    let ring = [
        ".........",
        ".#######.",
        ".#.....#.",
        ".#.....#.",
        ".#.....#.",
        ".#.....#.",
        ".#######.",
        ".........",
        ".........",
    ];
    s.masks.put(MITO, SliceIndex(0), ascii(&ring), Provenance::User).unwrap();
    tools::fill_holes(s.target()).unwrap();
    let solid = [
        ".........",
        ".#######.",
        ".#######.",
        ".#######.",
        ".#######.",
        ".#######.",
        ".#######.",
        ".........",
        ".........",
    ];
    assert_eq!(s.shown(), solid);

    // Copy slice 0 into slice 1 (from the previous slice).
    s.z = SliceIndex(1);
    tools::copy_slice(s.target(), 0).unwrap();
    assert_eq!(s.shown(), solid);
    // Out of range: nothing.
    s.z = SliceIndex(0);
    let out = tools::copy_slice(s.target(), -1).unwrap();
    assert!(out.committed.is_none());

    // Interpolate between a 7x6 block on slice 1 and a 1x1 dot on slice 4: slices 2 and 3
    // shrink monotonically and stay inside the block.
    let dot = [
        ".........",
        ".........",
        ".........",
        "....#....",
        ".........",
        ".........",
        ".........",
        ".........",
        ".........",
    ];
    s.masks.put(MITO, SliceIndex(4), ascii(&dot), Provenance::User).unwrap();
    // An imported object on slice 3 (nobody edited it): it stays as it is, and it does not
    // make slice 3 a key.
    let mut corner = SliceMask::new(9, 9);
    corner.set(8, 0, true);
    s.masks.put(MITO, SliceIndex(3), corner.clone(), Provenance::Imported).unwrap();
    s.z = SliceIndex(3);
    let out = tools::interpolate(s.target()).unwrap();
    assert_eq!(out.dirty.len(), 2, "slices 2 and 3");
    assert!(mask_of(&s.masks, MITO, 3).get(8, 0), "the imported object is kept");
    let n = |z| mask_of(&s.masks, MITO, z).count_ones();
    // Slice 3 also holds its imported corner pixel: not part of the interpolated shape.
    let interpolated_3 = n(3) - 1;
    assert!(
        n(1) > n(2) && n(2) > interpolated_3 && interpolated_3 >= n(4),
        "{} {} {interpolated_3} {}",
        n(1),
        n(2),
        n(4)
    );
    for z in [2, 3] {
        let m = mask_of(&s.masks, MITO, z);
        assert!(m.get(4, 3), "the shapes' common centre stays set on slice {z}");
        let block = mask_of(&s.masks, MITO, 1);
        let mut outside = 0;
        m.for_each_set(|i| outside += usize::from(!block.get(i % 9, i / 9) && i != 8));
        assert_eq!(outside, 0);
    }
    assert_eq!(s.masks.review(MITO, SliceIndex(2)), ReviewState::Corrected);
    // One undo step for the whole interpolation.
    s.editor.undo(&mut s.masks).unwrap();
    assert_eq!(mask_of(&s.masks, MITO, 2).count_ones(), 0);
    assert_eq!(mask_of(&s.masks, MITO, 3), corner);

    // Only the objects a person worked on are interpolated: an imported block on the keys
    // that nobody touched is not carried into the slice between them.
    let mut k = Session::new(9, 9, 3);
    let block_and_blob = [
        "##.......",
        "##.......",
        ".........",
        ".........",
        "....###..",
        "....###..",
        "....###..",
        ".........",
        ".........",
    ];
    k.masks.put(MITO, SliceIndex(0), ascii(&block_and_blob), Provenance::Imported).unwrap();
    k.masks.put(MITO, SliceIndex(2), ascii(&block_and_blob), Provenance::Imported).unwrap();
    k.tools.tool = Tool::Brush;
    k.tools.brush_diameter_px = 1;
    for z in [0, 2] {
        // A brush over the blob: nothing changes, but a person vouched for it.
        k.z = SliceIndex(z);
        k.click([5.5, 5.5], false);
    }
    assert_eq!(k.masks.review(MITO, SliceIndex(0)), ReviewState::Unseen);
    set_review(&mut k.masks, &mut k.editor, &[MITO], SliceIndex(0), ReviewState::Accepted).unwrap();
    set_review(&mut k.masks, &mut k.editor, &[MITO], SliceIndex(2), ReviewState::Accepted).unwrap();
    k.z = SliceIndex(1);
    tools::interpolate(k.target()).unwrap();
    let blob_only = [
        ".........",
        ".........",
        ".........",
        ".........",
        "....###..",
        "....###..",
        "....###..",
        ".........",
        ".........",
    ];
    assert_eq!(show(k.masks.mask(MITO, SliceIndex(1)), 9, 9), blob_only);
}

#[test]
fn undo_history_is_capped_by_memory_not_count() {
    let mut masks = MaskVolume::new(512, 512, 1);
    // A fill of the whole 512² slice records 64 mask + 64 touched tiles (~69 kB): room for two.
    let cap = 150_000;
    let mut editor = Editor::new(cap);
    let mut tools = ToolState::default();
    tools.tool = Tool::Fill;
    for k in 0..6 {
        let target = EditTarget { masks: &mut masks, editor: &mut editor, class: MITO, z: SliceIndex(0) };
        tools.handle(PointerEvent::Press { at: [1.0, 1.0], alternate: k % 2 == 1 }, target).unwrap();
        let target = EditTarget { masks: &mut masks, editor: &mut editor, class: MITO, z: SliceIndex(0) };
        tools.handle(PointerEvent::Release, target).unwrap();
    }
    assert!(editor.undo_len() < 6 && editor.undo_len() >= 2, "{} steps kept", editor.undo_len());
    assert!(editor.history_bytes() <= cap);
    // Many small strokes fit where few big ones did.
    let mut small = Editor::new(cap);
    let mut brush = ToolState::default();
    (brush.tool, brush.brush_diameter_px) = (Tool::Brush, 2);
    for k in 0..40 {
        let at = [(k * 12 % 500) as f32 + 5.0, (k * 12 / 500 * 12) as f32 + 5.0];
        let target = EditTarget { masks: &mut masks, editor: &mut small, class: GLIA, z: SliceIndex(0) };
        brush.handle(PointerEvent::Press { at, alternate: false }, target).unwrap();
        let target = EditTarget { masks: &mut masks, editor: &mut small, class: GLIA, z: SliceIndex(0) };
        brush.handle(PointerEvent::Release, target).unwrap();
    }
    assert_eq!(small.undo_len(), 40);
}

#[test]
fn model_output_never_overwrites_what_a_person_drew() {
    let mut s = Session::new(8, 4, 3);
    s.tools.tool = Tool::Brush;
    s.tools.brush_diameter_px = 1;
    s.drag(&[[0.5, 0.5], [3.5, 0.5]], false); // person sets row 0, x 0..=3
    s.tools.tool = Tool::Eraser;
    // The model will claim row 1; the person erased (1, 1) first: it must stay erased.
    s.click([1.5, 1.5], false);
    let predicted = {
        let mut p = BitPlane::new(8, 4);
        p.fill_rect(PixelBox { x0: 0, y0: 1, x1: 8, y1: 2 }, true);
        p.fill_rect(PixelBox { x0: 6, y0: 3, x1: 8, y1: 4 }, true);
        p
    };
    s.masks.put_model(MITO, SliceIndex(0), &predicted).unwrap();
    assert_eq!(s.shown(), ["####....", "#.######", "........", "......##"]);
    assert_eq!(s.masks.provenance(MITO, SliceIndex(0)), Provenance::User, "still the person's slice");
    // On a slice nobody touched the model's output is stored as such.
    s.masks.put_model(MITO, SliceIndex(1), &predicted).unwrap();
    assert_eq!(s.masks.review(MITO, SliceIndex(1)), ReviewState::Predicted);

    // Accepting a prediction merges it the same way, marks the slice accepted, one undo step.
    let mut other = BitPlane::new(8, 4);
    other.fill_rect(PixelBox { x0: 0, y0: 2, x1: 8, y1: 3 }, true);
    let out = accept_predictions(
        &mut s.masks,
        &mut s.editor,
        MITO,
        &[(SliceIndex(0), other.clone()), (SliceIndex(2), other)],
    )
    .unwrap();
    assert!(out.committed.is_some());
    assert_eq!(s.shown(), ["####....", "........", "########", "........"]);
    assert_eq!(s.masks.review(MITO, SliceIndex(0)), ReviewState::Accepted);
    assert_eq!(s.masks.review(MITO, SliceIndex(2)), ReviewState::Accepted);
    // Accepted slices are vouched for entirely: the model can no longer change them.
    s.masks.put_model(MITO, SliceIndex(0), &predicted).unwrap();
    assert_eq!(s.shown(), ["####....", "........", "########", "........"]);
    s.editor.undo(&mut s.masks).unwrap();
    assert_eq!(s.masks.review(MITO, SliceIndex(2)), ReviewState::Unseen);
}

#[test]
fn review_states_and_next_unreviewed() {
    let classes = [GLIA, MITO];
    let mut masks = MaskVolume::new(4, 4, 5);
    let mut editor = Editor::default();
    let z = SliceIndex;
    assert_eq!(slice_review(&masks, &classes, z(0)), ReviewState::Unseen);
    let mut p = BitPlane::new(4, 4);
    p.set(1, 1, true);
    masks.put_model(MITO, z(1), &p).unwrap();
    assert_eq!(slice_review(&masks, &classes, z(1)), ReviewState::Predicted);
    set_review(&mut masks, &mut editor, &classes, z(2), ReviewState::Accepted).unwrap();
    set_review(&mut masks, &mut editor, &classes, z(3), ReviewState::Accepted).unwrap();
    assert_eq!(slice_review(&masks, &classes, z(2)), ReviewState::Accepted);
    // From 1 forward: 2 and 3 are accepted, 4 is next.
    assert_eq!(next_unreviewed(&masks, &classes, z(1), true), Some(z(4)));
    assert_eq!(next_unreviewed(&masks, &classes, z(4), true), Some(z(0)), "wraps around");
    assert_eq!(next_unreviewed(&masks, &classes, z(4), false), Some(z(1)));
    // Accepting is undoable.
    editor.undo(&mut masks).unwrap();
    assert_eq!(slice_review(&masks, &classes, z(3)), ReviewState::Unseen);
    for zi in 0..5 {
        set_review(&mut masks, &mut editor, &classes, z(zi), ReviewState::Accepted).unwrap();
    }
    assert_eq!(next_unreviewed(&masks, &classes, z(0), true), None);
    tools::unaccept(&mut masks, &mut editor, &classes, z(1)).unwrap();
    assert_eq!(masks.review(MITO, z(1)), ReviewState::Predicted, "back to what its content is");
}

#[test]
fn tools_work_in_the_orthogonal_planes_too() {
    let mut s = Session::new(8, 6, 5);
    s.tools.tool = Tool::Brush;
    s.tools.brush_diameter_px = 1;
    let send = |s: &mut Session, at: EditPlane, event| {
        let target = EditTarget { masks: &mut s.masks, editor: &mut s.editor, class: MITO, z: SliceIndex(0) };
        s.tools.handle_in(event, target, at).unwrap()
    };
    // XZ through row y = 3: a stroke along x at z = 2, then one down through every slice at x = 6.
    let xz = EditPlane::Xz { y: 3 };
    send(&mut s, xz, PointerEvent::Press { at: [1.5, 2.5], alternate: false });
    send(&mut s, xz, PointerEvent::Move { to: [5.5, 2.5] });
    send(&mut s, xz, PointerEvent::Release);
    assert_eq!(show(s.masks.mask(MITO, SliceIndex(2)), 8, 6)[3], ".#####..");
    assert!((0..5).filter(|&z| z != 2).all(|z| s.masks.mask(MITO, SliceIndex(z)).is_none()));
    send(&mut s, xz, PointerEvent::Press { at: [6.5, 0.5], alternate: false });
    send(&mut s, xz, PointerEvent::Move { to: [6.5, 4.5] });
    let out = send(&mut s, xz, PointerEvent::Release);
    assert_eq!(out.committed.unwrap().writes.len(), 5, "one commit writes all five slices");
    for z in 0..5 {
        let row = &show(s.masks.mask(MITO, SliceIndex(z)), 8, 6)[3];
        assert_eq!(row, if z == 2 { ".######." } else { "......#." }, "slice {z}");
        assert_eq!(s.masks.review(MITO, SliceIndex(z)), ReviewState::Corrected);
    }
    assert_eq!(s.editor.undo_len(), 2);
    s.editor.undo(&mut s.masks).unwrap();
    assert_eq!(show(s.masks.mask(MITO, SliceIndex(0)), 8, 6)[3], "........");
    assert_eq!(show(s.masks.mask(MITO, SliceIndex(2)), 8, 6)[3], ".#####..");

    // YZ through column x = 4: fill the empty plane → column 4 of every slice; delete it again
    // as one object of that plane.
    let yz = EditPlane::Yz { x: 4 };
    s.tools.tool = Tool::Fill;
    send(&mut s, yz, PointerEvent::Press { at: [0.5, 0.5], alternate: false });
    send(&mut s, yz, PointerEvent::Release);
    for z in 0..5 {
        let m = mask_of(&s.masks, MITO, z);
        assert!((0..6).all(|y| m.get(4, y)), "slice {z} column 4");
    }
    // Slice 2 row 3 had x 1..=5 set: the fill added only column 4 elsewhere.
    assert_eq!(mask_of(&s.masks, MITO, 0).count_ones(), 6);
    s.tools.tool = Tool::DeleteComponent;
    send(&mut s, yz, PointerEvent::Press { at: [3.5, 5.5], alternate: false });
    send(&mut s, yz, PointerEvent::Release);
    assert_eq!(show(s.masks.mask(MITO, SliceIndex(2)), 8, 6)[3], ".###.#..");
    assert_eq!(mask_of(&s.masks, MITO, 0).count_ones(), 0);

    // Slices 3 px thick: a 5 px brush in XZ is 5 px across but reaches no neighbouring slice.
    s.tools.tool = Tool::Brush;
    (s.tools.brush_diameter_px, s.tools.z_aspect) = (5, 3.0);
    send(&mut s, xz, PointerEvent::Press { at: [3.5, 0.5], alternate: false });
    send(&mut s, xz, PointerEvent::Release);
    assert_eq!(show(s.masks.mask(MITO, SliceIndex(0)), 8, 6)[3], ".#####..");
    assert_eq!(mask_of(&s.masks, MITO, 0).count_ones(), 5);
    assert_eq!(mask_of(&s.masks, MITO, 1).count_ones(), 0);
}
