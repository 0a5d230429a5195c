//! Proofreading as a user does it, on the real app in a kittest harness: pick a tool in the
//! panel, drag on the XY view, undo / redo, abort with Esc; and the crash test: a child
//! process edits the sample, is killed with SIGKILL in the middle of a stroke, and everything
//! but that stroke comes back.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use eframe::egui::{Key, Modifiers, Pos2, Vec2};
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use sam4em::app::{AppCommand, LaunchOptions, OpenRequest, StudioApp};
use sam4em::state::tools::Tool;
use sam4em::state::{ClassId, MaskVolume, SliceIndex, SliceMask};
use sam4em::ui::Plane;
use sam4em::ui::viewer::layout;

use super::viewer::{harness_with, settle};

const SIZE: Vec2 = Vec2::new(1400.0, 900.0);
const MITO: ClassId = ClassId(2);

/// Screen position of image pixel centre (x, y) in the XY view.
fn screen_at(h: &Harness<'static, StudioApp>, x: f32, y: f32) -> Pos2 {
    let v = h.state().viewer().unwrap();
    let rect = layout(h.state().last_central_area().unwrap(), v).into_iter().find(|(p, _)| *p == Plane::Xy).unwrap().1;
    let cam = v.camera.unwrap();
    let (scale, offset) = cam.screen_from_image([rect.min.x, rect.min.y], [rect.width(), rect.height()], 1.0);
    Pos2::new(x * scale[0] + offset[0], y * scale[1] + offset[1])
}

fn mito(h: &Harness<'static, StudioApp>, z: usize) -> SliceMask {
    let m = h.state().masks().unwrap();
    m.mask(MITO, SliceIndex(z)).cloned().unwrap_or_else(|| SliceMask::new(m.width(), m.height()))
}

/// Presses at the first image point, moves through the others (a frame each), and releases
/// unless `release` is false.
fn stroke(h: &mut Harness<'static, StudioApp>, points: &[[f32; 2]], release: bool) {
    let p0 = screen_at(h, points[0][0], points[0][1]);
    h.hover_at(p0);
    h.step();
    h.drag_at(p0);
    h.step();
    for p in &points[1..] {
        h.hover_at(screen_at(h, p[0], p[1]));
        h.step();
    }
    if release {
        let last = points[points.len() - 1];
        h.drop_at(screen_at(h, last[0], last[1]));
        h.step();
        h.step();
    }
}

#[test]
fn pick_a_tool_drag_on_the_view_undo_redo_and_abort() {
    let mut h =
        harness_with(LaunchOptions { open: Some(OpenRequest::sample()), no_recent: true, ..Default::default() }, SIZE);
    settle(&mut h);
    h.get_by_label("Brush").click();
    h.step();
    assert_eq!(h.state().tools().tool, Tool::Brush);
    assert_eq!(h.state().active_class(), MITO);
    let before = mito(&h, 0);
    // A horizontal stroke at y = 60 from x = 100 to 180 (image pixels) with the 10 px brush.
    stroke(&mut h, &[[100.5, 60.5], [140.5, 60.5], [180.5, 60.5]], true);
    let after = mito(&h, 0);
    for x in 100..=180 {
        assert!(after.get(x, 60), "pixel ({x}, 60) under the stroke");
    }
    // Nothing changed 8 px or more away from the stroke's centre line.
    for x in 0..512 {
        for y in (0..52).chain(69..512) {
            assert_eq!(after.get(x, y), before.get(x, y), "({x}, {y}) is outside the brush");
        }
    }
    assert_eq!(h.state().undo_label(), Some("brush"), "one drag, one undo step");

    h.key_press_modifiers(Modifiers::COMMAND, Key::Z);
    h.step();
    assert_eq!(mito(&h, 0), before, "undo restores the slice exactly");
    assert_eq!(h.state().undo_label(), None);
    h.key_press_modifiers(Modifiers::COMMAND | Modifiers::SHIFT, Key::Z);
    h.step();
    assert_eq!(mito(&h, 0), after, "redo brings the stroke back");

    // The eraser (napari's 1) with Esc in the middle of the stroke: nothing happens.
    h.key_press(Key::Num1);
    h.step();
    assert_eq!(h.state().tools().tool, Tool::Eraser);
    stroke(&mut h, &[[120.5, 60.5], [160.5, 60.5]], false);
    assert_ne!(mito(&h, 0), after, "the eraser erases while dragging");
    h.key_press(Key::Escape);
    h.step();
    assert_eq!(mito(&h, 0), after, "Esc restores what the stroke erased");
    h.drop_at(screen_at(&h, 160.5, 60.5));
    h.step();
    assert_eq!(mito(&h, 0), after, "releasing after Esc does nothing");
    assert_eq!(h.state().undo_label(), Some("brush"), "the aborted stroke left no undo step");

    // The Navigate tool pans again instead of painting.
    h.key_press(Key::Num6);
    h.step();
    let cam = h.state().viewer().unwrap().camera.unwrap();
    stroke(&mut h, &[[200.5, 200.5], [240.5, 220.5]], true);
    assert_eq!(mito(&h, 0), after);
    assert_ne!(h.state().viewer().unwrap().camera.unwrap().center, cam.center);
    assert!(h.state().errors().is_empty(), "{:?}", h.state().errors());

    // File ▸ Export masks writes what was drawn, bit for bit.
    let out = tempfile::tempdir().unwrap();
    let ctx = h.ctx.clone();
    h.state_mut().apply(AppCommand::ExportMasks(out.path().to_owned()), &ctx);
    settle(&mut h);
    assert!(h.state().errors().is_empty(), "{:?}", h.state().errors());
    let exported = sam4em::io::open_stack(&out.path().join("mitochondria.tif"), &Default::default()).unwrap();
    let slice = exported.slice(SliceIndex(0)).unwrap();
    let sam4em::state::SliceData::U8(px) = &slice.data else { panic!("binary masks are uint8") };
    assert!(px.iter().enumerate().all(|(i, &v)| (v == 255) == after.get(i % 512, i / 512)));
}

#[test]
fn review_keys_accept_and_jump_to_the_next_unreviewed_slice() {
    let mut h =
        harness_with(LaunchOptions { open: Some(OpenRequest::sample()), no_recent: true, ..Default::default() }, SIZE);
    settle(&mut h);
    let classes: Vec<ClassId> = h.state().classes().iter().map(|c| c.id).collect();
    h.key_press(Key::A);
    h.step();
    let masks = h.state().masks().unwrap();
    assert!(classes.iter().all(|&c| masks.review(c, SliceIndex(0)) == sam4em::state::ReviewState::Accepted));
    h.key_press(Key::N);
    settle(&mut h);
    assert_eq!(h.state().viewer().unwrap().cursor.z, SliceIndex(1), "next unreviewed after 0");
    h.get_by_label("Accept slice").click();
    h.step();
    h.key_press(Key::Home);
    h.step();
    h.key_press(Key::N);
    h.step();
    assert_eq!(h.state().viewer().unwrap().cursor.z, SliceIndex(2), "0 and 1 are accepted");
    h.key_press_modifiers(Modifiers::COMMAND, Key::Z);
    h.step();
    assert_eq!(h.state().undo_label(), Some("accept slice"));
}

/// Every stored mask of the three classes, densely, in a fixed order: what the test compares.
fn dump(masks: &MaskVolume) -> Vec<u8> {
    let mut out = Vec::new();
    for class in 1..=3u16 {
        for z in 0..masks.depth() {
            match masks.mask(ClassId(class), SliceIndex(z)) {
                Some(m) => out.extend(m.to_dense(1)),
                None => out.extend(std::iter::repeat_n(0, masks.width() * masks.height())),
            }
        }
    }
    out
}

const CHILD_DIR: &str = "SAM4EM_CRASH_CHILD_DIR";

/// The child of [`a_kill_9_loses_only_the_stroke_in_progress`]: edits the sample with the
/// real app and waits in the middle of a stroke to be killed.
#[test]
#[ignore = "run by a_kill_9_loses_only_the_stroke_in_progress as a child process"]
fn crash_child() {
    let dir = PathBuf::from(std::env::var_os(CHILD_DIR).expect("run by the crash test"));
    let options = LaunchOptions {
        open: Some(OpenRequest::sample()),
        no_recent: true,
        data_dir: Some(dir.clone()),
        ..Default::default()
    };
    let mut h = harness_with(options, SIZE);
    settle(&mut h);
    h.key_press(Key::Num2); // brush
    h.step();
    stroke(&mut h, &[[60.5, 300.5], [120.5, 310.5], [200.5, 330.5]], true);
    h.key_press(Key::ArrowUp); // slice 1
    settle(&mut h);
    stroke(&mut h, &[[300.5, 100.5], [320.5, 180.5]], true);
    h.key_press(Key::Num1); // eraser, over slice 0's stroke
    h.key_press(Key::ArrowDown);
    settle(&mut h);
    stroke(&mut h, &[[100.5, 300.5], [150.5, 320.5]], true);
    h.key_press(Key::A); // accept slice 0: a review change is journalled too
    h.step();
    std::fs::write(dir.join("committed.bin"), dump(h.state().masks().unwrap())).unwrap();
    // The stroke in progress: painted on screen, not committed.
    h.key_press(Key::Num2);
    h.step();
    stroke(&mut h, &[[400.5, 400.5], [450.5, 420.5], [480.5, 480.5]], false);
    std::fs::write(dir.join("in_progress.bin"), dump(h.state().masks().unwrap())).unwrap();
    std::fs::write(dir.join("ready"), b"").unwrap();
    // Wait to be killed (the parent gives up after two minutes anyway).
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(300) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn session_of_sample(data_dir: &Path) -> PathBuf {
    let sessions: Vec<PathBuf> =
        std::fs::read_dir(data_dir.join("sessions")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    sessions[0].clone()
}

#[test]
fn a_kill_9_loses_only_the_stroke_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "editing::crash_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir.path())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !dir.path().join("ready").exists() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the editing child exited before it was killed: {status}");
        }
        assert!(start.elapsed() < Duration::from_secs(240), "the editing child never got ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SIGKILL: no destructor, no exit handler, no save runs.
    child.kill().unwrap();
    child.wait().unwrap();
    let committed = std::fs::read(dir.path().join("committed.bin")).unwrap();
    let in_progress = std::fs::read(dir.path().join("in_progress.bin")).unwrap();
    assert_ne!(committed, in_progress, "the child had a stroke in progress when it was killed");

    // The session on disk: every committed edit, not the stroke in progress.
    let session = session_of_sample(dir.path());
    let opened = sam4em::io::session::Project::open(&session).unwrap();
    assert!(opened.recovery.replayed_records >= 4, "{}", opened.recovery);
    assert!(dump(&opened.masks) == committed, "the recovered masks differ from the committed ones");
    assert_eq!(opened.masks.review(MITO, SliceIndex(0)), sam4em::state::ReviewState::Accepted);
    drop(opened);

    // The app restores it when the sample is opened again.
    let options = LaunchOptions {
        open: Some(OpenRequest::sample()),
        no_recent: true,
        data_dir: Some(dir.path().to_owned()),
        ..Default::default()
    };
    let mut h = harness_with(options, SIZE);
    settle(&mut h);
    assert!(dump(h.state().masks().unwrap()) == committed, "the app did not restore the session");
    assert!(h.state().errors().is_empty(), "{:?}", h.state().errors());
}

#[test]
fn a_project_whose_stack_moved_asks_where_it_is_and_checks_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let stack = dir.path().join("em.tif");
    std::fs::copy(sam4em::io::sample::SAMPLE_STACK, &stack).unwrap();
    let open = |path: &Path| LaunchOptions {
        open: Some(OpenRequest::stack(path)),
        no_recent: true,
        data_dir: Some(dir.path().join("data")),
        ..Default::default()
    };
    let mut h = harness_with(open(&stack), SIZE);
    settle(&mut h);
    let rect = sam4em::render::PixelRect { x0: 10, y0: 10, x1: 40, y1: 30 };
    crate::apply(&mut h, AppCommand::PaintRect { class: MITO, z: SliceIndex(3), rect, value: true });
    assert!(h.state().errors().is_empty(), "{:?}", h.state().errors());
    let project = dir.path().join("project");
    crate::apply(&mut h, AppCommand::SaveProjectAs(project.clone()));
    assert!(h.state().errors().is_empty(), "{:?}", h.state().errors());
    assert_eq!(h.state().session_dir(), Some(project.as_path()));
    let expected = dump(h.state().masks().unwrap());
    drop(h);

    // The stack moves where neither its path nor its path relative to the project leads.
    std::fs::create_dir(dir.path().join("moved")).unwrap();
    let moved = dir.path().join("moved").join("em.tif");
    std::fs::rename(&stack, &moved).unwrap();
    let mut h = harness_with(open(&project), SIZE);
    settle(&mut h);
    let (asking, message) = h.state().stack_to_locate().unwrap();
    assert_eq!(asking, project.as_path());
    assert!(message.contains("em.tif"), "{message}");
    assert!(h.state().masks().is_none());
    h.get_by_label("Locate stack file…");

    // A stack of another shape is refused, naming it, and the question is asked again.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    image::save_buffer(other.join("0.png"), &[0u8; 64], 8, 8, image::ExtendedColorType::L8).unwrap();
    let ctx = h.ctx.clone();
    h.state_mut().apply(AppCommand::LocateStack(other.clone()), &ctx);
    settle(&mut h);
    let (_, message) = h.state().stack_to_locate().expect("asked again");
    assert!(message.contains("8x8x1") && message.contains("other"), "{message}");
    assert!(h.state().masks().is_none());

    // The right answer opens the project; the new place is remembered.
    h.state_mut().apply(AppCommand::LocateStack(moved.clone()), &ctx);
    settle(&mut h);
    assert!(h.state().errors().is_empty(), "{:?}", h.state().errors());
    assert!(dump(h.state().masks().unwrap()) == expected, "the project's masks");
    drop(h);
    let reopened = sam4em::io::session::Project::open(&project).unwrap();
    assert_eq!(reopened.project.stack_path().unwrap(), std::path::absolute(&moved).unwrap());
}

/// Screen position of plane pixel centre (u, v) in view `plane`.
fn screen_in(h: &Harness<'static, StudioApp>, plane: Plane, u: f32, v: f32) -> Pos2 {
    let view = h.state().viewer().unwrap();
    let rect = layout(h.state().last_central_area().unwrap(), view).into_iter().find(|(p, _)| *p == plane).unwrap().1;
    let (cam, aspect) = view.plane_camera(plane, rect.size()).unwrap();
    let (scale, offset) = cam.screen_from_image([rect.min.x, rect.min.y], [rect.width(), rect.height()], aspect);
    Pos2::new(u * scale[0] + offset[0], v * scale[1] + offset[1])
}

#[test]
fn the_brush_paints_in_the_xz_view_through_the_cursor_row() {
    let mut h =
        harness_with(LaunchOptions { open: Some(OpenRequest::sample()), no_recent: true, ..Default::default() }, SIZE);
    settle(&mut h);
    h.key_press(Key::Num2);
    h.step();
    let y = h.state().viewer().unwrap().cursor.y;
    let before: Vec<SliceMask> = (0..10).map(|z| mito(&h, z)).collect();
    // Along x at z = 6 in XZ: x 150 → 250.
    let (a, b) = (screen_in(&h, Plane::Xz, 150.5, 6.5), screen_in(&h, Plane::Xz, 250.5, 6.5));
    h.hover_at(a);
    h.step();
    h.drag_at(a);
    h.step();
    h.hover_at(b);
    h.step();
    h.drop_at(b);
    h.step();
    h.step();
    let after = mito(&h, 6);
    assert!((150..=250).all(|x| after.get(x, y)), "row {y} of slice 6 painted from x 150 to 250");
    // The 10 px brush is round in the sample: 46 nm of 50 nm slices, so slice 6 only.
    for z in (0..10).filter(|&z| z != 6) {
        assert_eq!(mito(&h, z), before[z], "slice {z} is beyond the 10 px brush");
    }
    assert_eq!(h.state().undo_label(), Some("brush"));
    h.key_press_modifiers(Modifiers::COMMAND, Key::Z);
    h.step();
    assert_eq!(mito(&h, 6), before[6]);
}

#[test]
fn a_damaged_session_is_kept_aside_and_a_new_one_started() {
    let data = tempfile::tempdir().unwrap();
    let session = sam4em::io::session::autosession_dir(data.path(), Path::new(sam4em::io::sample::SAMPLE_STACK));
    std::fs::create_dir_all(&session).unwrap();
    std::fs::write(session.join("project.json"), b"{ not json").unwrap();
    std::fs::write(session.join("precious.txt"), b"someone's work").unwrap();
    let options = LaunchOptions {
        open: Some(OpenRequest::sample()),
        no_recent: true,
        data_dir: Some(data.path().to_owned()),
        ..Default::default()
    };
    let mut h = harness_with(options, SIZE);
    settle(&mut h);
    assert!(h.state().errors().is_empty(), "{:?}", h.state().errors());
    assert_eq!(h.state().session_dir(), Some(session.as_path()), "a fresh session in the usual place");
    let kept: Vec<PathBuf> = std::fs::read_dir(data.path().join("sessions"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("precious.txt").is_file())
        .collect();
    assert_eq!(kept.len(), 1, "the damaged session was moved aside, not deleted");
    assert_ne!(kept[0], session);
    // The new session works: an edit is journalled there.
    let rect = sam4em::render::PixelRect { x0: 1, y0: 1, x1: 9, y1: 9 };
    crate::apply(&mut h, AppCommand::PaintRect { class: MITO, z: SliceIndex(0), rect, value: true });
    assert!(h.state().errors().is_empty(), "{:?}", h.state().errors());
    let reopened = sam4em::io::session::Project::open(&session).unwrap();
    assert!(reopened.masks.mask(MITO, SliceIndex(0)).unwrap().get(5, 5));
}

#[test]
fn interpolation_on_the_sample_fills_the_slices_between_two_strokes() {
    let mut h =
        harness_with(LaunchOptions { open: Some(OpenRequest::sample()), no_recent: true, ..Default::default() }, SIZE);
    settle(&mut h);
    h.key_press(Key::Num2);
    let [x, y] = (100..400)
        .step_by(10)
        .flat_map(|y| (100..400).step_by(10).map(move |x| [x, y]))
        .find(|&[x, y]| (2..=6).all(|z| (0..16).all(|d| !mito(&h, z).get(x + d, y) && !mito(&h, z).get(x, y + d))))
        .expect("a spot without mitochondria on slices 2-6");
    let (xf, yf) = (x as f32 + 8.5, y as f32 + 8.5);
    for _ in 0..2 {
        h.key_press(Key::ArrowUp);
    }
    settle(&mut h);
    stroke(&mut h, &[[xf, yf], [xf + 1.0, yf]], true); // slice 2
    for _ in 0..4 {
        h.key_press(Key::ArrowUp);
    }
    settle(&mut h);
    stroke(&mut h, &[[xf, yf], [xf + 1.0, yf]], true); // slice 6
    h.key_press(Key::ArrowDown);
    h.key_press(Key::ArrowDown);
    settle(&mut h);
    assert_eq!(h.state().viewer().unwrap().cursor.z, SliceIndex(4));
    let before: Vec<SliceMask> = (0..10).map(|z| mito(&h, z)).collect();
    h.key_press_modifiers(Modifiers::SHIFT, Key::I);
    h.step();
    for (z, was) in before.iter().enumerate().take(6).skip(3) {
        let now = mito(&h, z);
        assert!(now.get(x + 8, y + 8), "slice {z} got the interpolated stroke");
        // Added, never removed: every pixel that was set stays set.
        let mut lost = 0;
        was.for_each_set(|i| lost += usize::from(!now.get(i % 512, i / 512)));
        assert_eq!(lost, 0, "slice {z}");
    }
    for z in [0, 1, 2, 6, 7, 8, 9] {
        assert_eq!(mito(&h, z), before[z], "slice {z} is outside the gap");
    }
    assert_eq!(h.state().undo_label(), Some("interpolate"));
}
