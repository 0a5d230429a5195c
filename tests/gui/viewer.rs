//! The viewer driven as a user drives it, headless: the eframe app in an `egui_kittest`
//! harness rendering with wgpu on the app's kind of device (lavapipe in CI). Snapshots,
//! navigation by keys / wheel / pointer, uploads only on change, opening real stacks.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eframe::egui::{self, Event, Key, Modifiers, MouseWheelUnit, Pos2, Vec2};
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use sam4em::app::{AppCommand, LaunchOptions, OpenRequest, StudioApp};
use sam4em::render::PixelRect;
use sam4em::state::SliceIndex;
use sam4em::ui::Plane;
use sam4em::ui::viewer::layout;

const SIZE: Vec2 = Vec2::new(1400.0, 900.0);

pub fn harness_with(mut options: LaunchOptions, size: Vec2) -> Harness<'static, StudioApp> {
    // Every harness journals its edits into a folder of its own (never the user's data folder,
    // and never one another test restores from), unless the test names one.
    if options.data_dir.is_none() {
        // Inside cargo's per-target temporary folder, which `cargo clean` empties.
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temporary data folder");
        options.data_dir = Some(dir.keep());
    }
    // Nor the user's model choice: a fresh settings folder where the first-run dialog was
    // answered (tests/gui/model.rs checks the dialog itself).
    if options.config_dir.is_none() {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temporary config folder").keep();
        std::fs::write(dir.join("model.json"), r#"{"first_run_done": true}"#).expect("model settings");
        options.config_dir = Some(dir);
    }
    // kittest's setup (software adapters first, so snapshots match across machines) with the
    // app's device descriptor.
    let mut setup = egui_kittest::wgpu::default_wgpu_setup();
    if let eframe::egui_wgpu::WgpuSetup::CreateNew(c) = &mut setup {
        c.device_descriptor = Arc::new(sam4em::render::device::device_descriptor);
    }
    Harness::builder().with_size(size).wgpu_setup(setup).build_eframe(move |cc| StudioApp::new(cc, options))
}

fn harness(open: OpenRequest) -> Harness<'static, StudioApp> {
    harness_with(LaunchOptions { open: Some(open), no_recent: true, ..Default::default() }, SIZE)
}

/// Steps until nothing is loading (the loader and jobs run on their own threads).
pub fn settle(h: &mut Harness<'static, StudioApp>) {
    let start = Instant::now();
    loop {
        h.step();
        if !h.state().is_busy() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "still loading after 2 minutes");
        std::thread::sleep(Duration::from_millis(3));
    }
    h.step();
    h.step();
}

fn z(h: &Harness<'static, StudioApp>) -> usize {
    h.state().viewer().expect("a stack is open").cursor.z.0
}

/// The XY view's rect as the app lays it out.
fn xy_rect(h: &Harness<'static, StudioApp>) -> egui::Rect {
    let v = h.state().viewer().unwrap();
    // Layout of the central area is recomputed from the same function the app uses; find the
    // area by asking for the XY plane at the harness size: the central panel starts right of
    // the side panel and below the slider.
    let planes = layout(central_area(h), v);
    planes.iter().find(|(p, _)| *p == Plane::Xy).unwrap().1
}

fn central_area(h: &Harness<'static, StudioApp>) -> egui::Rect {
    h.state().last_central_area().expect("a frame was laid out")
}

fn wheel(h: &Harness<'static, StudioApp>, at: Pos2, lines: f32, modifiers: Modifiers) {
    h.hover_at(at);
    h.event(Event::MouseWheel {
        unit: MouseWheelUnit::Line,
        delta: Vec2::new(0.0, lines),
        phase: egui::TouchPhase::Move,
        source: egui::MouseWheelSource::Wheel,
        modifiers,
    });
}

#[test]
fn sample_opens_with_overlays_on_the_shared_device() {
    let mut h = harness(OpenRequest::sample());
    settle(&mut h);
    let app = h.state();
    assert!(app.errors().is_empty(), "{:?}", app.errors());
    assert_eq!(app.stack_path(), Some(Path::new(sam4em::io::sample::SAMPLE_STACK)));
    let v = app.viewer().unwrap();
    assert_eq!(v.shape, [512, 512, 10]);
    // Auto-contrast ran on the first slice.
    assert!(v.contrast.low > 0.0 && v.contrast.high < 255.0, "{:?}", v.contrast);
    let masks = app.masks().unwrap();
    assert_eq!(masks.classes().count(), 3, "glia, mitochondria and PSD imported");
    // Display and model share a GPU; on a software adapter (lavapipe, as in CI) the model runs
    // on the CPU backend instead and the note says why.
    let note = app.device_note();
    if note.contains("(Vulkan, Cpu)") || note.contains("(Gl, Cpu)") {
        assert!(note.contains("model: CPU (the display adapter is a software renderer"), "{note}");
        assert!(format!("{:?}", app.model_device().unwrap()).contains("Flex"), "{note}");
    } else {
        assert!(note.contains("model: shares the display GPU"), "{note}");
    }
    // kittest's run() also checks that every widget has an accessible name.
    h.run();
    h.snapshot_options("viewer_sample", &crate::common::snapshot_options());
}

#[test]
fn keys_and_wheel_move_through_slices() {
    let mut h = harness(OpenRequest::sample());
    settle(&mut h);
    assert_eq!(z(&h), 0);
    for (key, want) in [
        (Key::ArrowUp, 1),
        (Key::ArrowRight, 2),
        (Key::ArrowDown, 1),
        (Key::PageUp, 9),
        (Key::ArrowUp, 9),
        (Key::Home, 0),
        (Key::End, 9),
        (Key::PageDown, 0),
    ] {
        h.key_press(key);
        h.step();
        assert_eq!(z(&h), want, "after {key:?}");
    }
    let center = xy_rect(&h).center();
    wheel(&h, center, -3.0, Modifiers::NONE);
    h.step();
    assert_eq!(z(&h), 3, "wheel down three notches: three slices on");
    wheel(&h, center, 1.0, Modifiers::NONE);
    h.step();
    assert_eq!(z(&h), 2, "wheel up: one back");
    settle(&mut h);
    // The slice shown is the one selected (the loader delivered it).
    assert!(!h.state().is_busy());
}

#[test]
fn zoom_about_the_pointer_pan_fit_and_one_to_one() {
    let mut h = harness(OpenRequest::sample());
    settle(&mut h);
    let rect = xy_rect(&h);
    let cam0 = h.state().viewer().unwrap().camera.unwrap();
    let anchor = rect.center() + Vec2::new(100.0, -60.0);
    let image_at = |cam: sam4em::state::Camera, p: Pos2| {
        cam.image_from_screen([p.x, p.y], [rect.min.x, rect.min.y], [rect.width(), rect.height()], 1.0)
    };
    let before = image_at(cam0, anchor);
    wheel(&h, anchor, 2.0, Modifiers::CTRL);
    h.step();
    let cam1 = h.state().viewer().unwrap().camera.unwrap();
    assert!(
        (cam1.zoom / cam0.zoom - 1.2f32.powi(2)).abs() < 1e-4,
        "two notches zoom in 1.2² ({} → {})",
        cam0.zoom,
        cam1.zoom
    );
    let after = image_at(cam1, anchor);
    assert!(
        (before[0] - after[0]).abs() < 1e-3 && (before[1] - after[1]).abs() < 1e-3,
        "{before:?} moved to {after:?}"
    );
    assert_eq!(z(&h), 0, "Ctrl+wheel zooms, it does not change slice");

    // Drag pans: the image point under the pointer follows it.
    let start = rect.center();
    let grabbed = image_at(cam1, start);
    h.drag_at(start);
    h.step();
    for i in 1..=5 {
        h.hover_at(start + Vec2::new(8.0 * i as f32, 5.0 * i as f32));
        h.step();
    }
    h.drop_at(start + Vec2::new(40.0, 25.0));
    h.step();
    let cam2 = h.state().viewer().unwrap().camera.unwrap();
    let now = image_at(cam2, start + Vec2::new(40.0, 25.0));
    assert!((now[0] - grabbed[0]).abs() < 0.5 && (now[1] - grabbed[1]).abs() < 0.5, "{grabbed:?} vs {now:?}");

    h.key_press(Key::Num0);
    h.step();
    assert_eq!(h.state().viewer().unwrap().camera.unwrap().zoom, 1.0);
    h.key_press(Key::F);
    h.step();
    let fitted = h.state().viewer().unwrap().camera.unwrap();
    assert!((fitted.zoom - cam0.zoom).abs() < 1e-5 && fitted.center == [256.0, 256.0], "{fitted:?} vs {cam0:?}");
}

#[test]
fn click_moves_the_cursor_and_the_orthogonal_views_follow() {
    let mut h = harness(OpenRequest::sample());
    settle(&mut h);
    let rect = xy_rect(&h);
    let cam = h.state().viewer().unwrap().camera.unwrap();
    let p = rect.center() + Vec2::new(-120.0, 80.0);
    let [u, v] = cam.image_from_screen([p.x, p.y], [rect.min.x, rect.min.y], [rect.width(), rect.height()], 1.0);
    h.hover_at(p);
    h.step();
    h.drag_at(p);
    h.step();
    h.drop_at(p);
    h.step();
    let c = h.state().viewer().unwrap().cursor;
    assert_eq!((c.x, c.y), (u as usize, v as usize));
    // The XZ / YZ planes through the new cursor get built and shown.
    settle(&mut h);
    assert!(!h.state().is_busy());

    // Outline mode on slice 5, zoomed in, as a proofreader would look.
    h.key_press(Key::O);
    for _ in 0..5 {
        h.key_press(Key::ArrowUp);
    }
    wheel(&h, p, 3.0, Modifiers::CTRL);
    h.remove_cursor();
    settle(&mut h);
    assert_eq!(z(&h), 5);
    assert!(h.state().viewer().unwrap().outline);
    h.snapshot_options("viewer_outline_zoomed_slice5", &crate::common::snapshot_options());
}

#[test]
fn unchanged_frames_upload_nothing_and_a_slice_change_uploads_one_slice() {
    let mut h = harness(OpenRequest::sample());
    settle(&mut h);
    let before = h.state().upload_stats().unwrap();
    let rect = xy_rect(&h);
    for i in 0..10 {
        h.hover_at(rect.center() + Vec2::new(i as f32 * 7.0, 3.0));
        h.step();
    }
    assert_eq!(h.state().upload_stats().unwrap(), before, "hovering re-uploaded textures");
    h.key_press(Key::ArrowUp);
    settle(&mut h);
    let after = h.state().upload_stats().unwrap();
    assert_eq!(after.writes - before.writes, 2, "the slice and its masks");
    assert_eq!(after.bytes - before.bytes, 512 * 512 + 512 * 512 * 2, "u8 image + 16-bit class bits");
}

#[test]
fn a_mask_edit_uploads_its_rectangle_and_shows_under_the_cursor() {
    let mut h = harness(OpenRequest::sample());
    settle(&mut h);
    let glia = h.state().classes().find("glia").unwrap().id;
    let before = h.state().upload_stats().unwrap();
    let rect = PixelRect { x0: 20, y0: 30, x1: 30, y1: 35 };
    crate::apply(&mut h, AppCommand::PaintRect { class: glia, z: SliceIndex(0), rect, value: true });
    assert!(h.state().errors().is_empty(), "{:?}", h.state().errors());
    settle(&mut h);
    let after = h.state().upload_stats().unwrap();
    // XY: the 10x5 rectangle only; XZ and YZ (512 x 10 each) are rebuilt whole.
    assert_eq!(after.writes - before.writes, 3);
    assert_eq!(after.bytes - before.bytes, 10 * 5 * 2 + 2 * 512 * 10 * 2);
    assert!(h.state().masks().unwrap().mask(glia, SliceIndex(0)).unwrap().get(25, 32));
    // Out-of-slice rectangles are refused, nothing changes.
    let bad = PixelRect { x0: 500, y0: 0, x1: 600, y1: 4 };
    crate::apply(&mut h, AppCommand::PaintRect { class: glia, z: SliceIndex(0), rect: bad, value: true });
    let errors = h.state().errors();
    assert!(errors.len() == 1 && errors[0].contains("outside the 512x512 px slice"), "{errors:?}");
}

#[test]
fn help_overlay_lists_the_shortcuts() {
    let mut h = harness(OpenRequest::sample());
    settle(&mut h);
    h.key_press(Key::F1);
    h.step();
    h.step();
    assert!(h.state().viewer().unwrap().help);
    h.get_by_label("Keyboard and mouse");
    h.get_by_label("first / last slice");
    h.snapshot_options("viewer_help", &crate::common::snapshot_options());
    h.key_press(Key::Escape);
    h.step();
    assert!(!h.state().viewer().unwrap().help);
}

#[test]
fn a_corrupt_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.tif");
    std::fs::write(&bad, b"II*\0garbage that is not a TIFF directory").unwrap();
    let mut h = harness(OpenRequest::stack(&bad));
    settle(&mut h);
    let errors = h.state().errors().to_vec();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains(&bad.display().to_string()), "{}", errors[0]);
    assert!(h.state().stack_path().is_none());
    // A toast says so, without blocking the window, until it is dismissed; the log keeps it.
    h.step();
    h.get_by_label_contains("broken.tif");
    h.get_by_label("Dismiss").click();
    h.step();
    h.step();
    assert!(h.state().errors().is_empty(), "dismissed");
    assert!(h.state().notices().entries().any(|e| e.notice.text.contains("broken.tif")), "kept in the log");
    // The status bar's Log button opens the log window, which still has it.
    h.get_by_label("Log").click();
    h.step();
    h.step();
    h.get_by_label("Copy all");
    h.get_by_label_contains("broken.tif");
}

/// A stack whose slices are wider than this device's largest texture (issue 21) opens and
/// is drawn from tiled textures, its far end included; before, the upload was refused with an
/// error.
#[test]
fn a_slice_wider_than_the_largest_texture_opens_and_draws() {
    let max = sam4em::render::HeadlessGpu::new().unwrap().device.limits().max_texture_dimension_2d as usize;
    let (w, h) = (max + 600, 48);
    // Dark, with a bright block beyond the first texture's reach.
    let page: Vec<u8> = (0..w * h).map(|i| if (max + 200..max + 500).contains(&(i % w)) { 250 } else { 20 }).collect();
    let dir = tempfile::tempdir().unwrap();
    let stack = dir.path().join("wide.tif");
    sam4em::io::export::write_u8_stack(&stack, w, h, &[page.clone(), page]).unwrap();
    let mut h = harness(OpenRequest::stack(&stack));
    settle(&mut h);
    assert!(h.state().errors().is_empty(), "{:?}", h.state().errors());
    assert_eq!(h.state().viewer().unwrap().shape, [w, 48, 2]);
    // Looking 1:1 at the block, then at a dark part of the first texture: the frames differ by
    // the block (300 × 48 texels), which is drawn.
    let mut bright_at = |x: usize| {
        h.state_mut().viewer_mut().unwrap().camera =
            Some(sam4em::state::view::Camera { zoom: 1.0, center: [x as f32, 24.0] });
        h.step();
        h.step();
        let image = h.render().expect("a frame");
        image.pixels().filter(|p| p.0[0] >= 240 && p.0[1] >= 240 && p.0[2] >= 240).count()
    };
    let (block, dark) = (bright_at(max + 350), bright_at(1000));
    assert!(block >= dark + 250 * 40, "{block} bright pixels at the block, {dark} elsewhere");
    assert!(h.state().errors().is_empty(), "{:?}", h.state().errors());
}

#[derive(Debug)]
struct Dropped(PathBuf);

impl egui::DroppedFile for Dropped {
    fn path(&self) -> &Path {
        &self.0
    }

    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}

#[test]
fn dropping_a_stack_opens_it_and_recent_files_remember_it() {
    let config = tempfile::tempdir().unwrap();
    let options = || LaunchOptions { open: None, config_dir: Some(config.path().to_owned()), ..Default::default() };
    let mut h = harness_with(options(), Vec2::new(900.0, 600.0));
    h.step();
    assert!(h.state().stack_path().is_none());
    h.input_mut().dropped_files.push(Arc::new(Dropped(PathBuf::from(sam4em::io::sample::SAMPLE_STACK))));
    settle(&mut h);
    assert_eq!(h.state().stack_path(), Some(Path::new(sam4em::io::sample::SAMPLE_STACK)));
    assert!(config.path().join("recent.json").is_file());
    // A new session lists it under File ▸ Open recent.
    let h2 = harness_with(options(), Vec2::new(900.0, 600.0));
    assert_eq!(
        h2.state().recent().first().map(|r| r.stack.as_path()),
        Some(Path::new(sam4em::io::sample::SAMPLE_STACK))
    );
}

/// Opens `request` and checks the slice, the orthogonal planes and the masks got shown.
fn opens(request: OpenRequest, shape: [usize; 3]) {
    let mut h = harness_with(
        LaunchOptions { open: Some(request.clone()), no_recent: true, ..Default::default() },
        Vec2::new(1000.0, 700.0),
    );
    settle(&mut h);
    let app = h.state();
    assert!(app.errors().is_empty(), "{}: {:?}", request.stack.display(), app.errors());
    assert_eq!(app.viewer().unwrap().shape, shape, "{}", request.stack.display());
    if request.labels.is_some() || !request.masks.is_empty() {
        assert!(app.masks().unwrap().classes().count() > 0, "{}: no masks imported", request.stack.display());
    }
}

#[test]
fn opens_every_shared_stack() {
    let Some(shared) = crate::common::shared() else { return };
    let data = shared.join("data");
    let dros = data.join("drosophila-vnc-sstem/stack1");
    opens(
        OpenRequest {
            labels: Some(dros.join("labels")),
            label_map: Some("159=glia,191=mitochondria,223=psd".into()),
            ..OpenRequest::stack(dros.join("raw"))
        },
        [1024, 1024, 20],
    );
    let lucchi = data.join("lucchi-pp-test-z000-049");
    opens(
        OpenRequest {
            masks: vec![("mitochondria".into(), lucchi.join("Test_Out"))],
            ..OpenRequest::stack(lucchi.join("Test_In"))
        },
        [1024, 768, 50],
    );
    let lucchi_train = data.join("lucchi-pp-train-z000-049");
    opens(
        OpenRequest {
            masks: vec![("mitochondria".into(), lucchi_train.join("Train_Out"))],
            ..OpenRequest::stack(lucchi_train.join("Train_In"))
        },
        [1024, 768, 50],
    );
    opens(OpenRequest::stack(data.join("flyem-medulla-fibsem-neuroproof-sample2/grayscale_maps")), [250, 250, 250]);
    opens(OpenRequest::stack(data.join("gala-fibsem-mini/test-image.h5")), [200, 100, 50]);
}

#[test]
fn status_bar_and_prediction_layer_read_the_voxel_under_the_pointer() {
    // The sample's label map doubles as a probability map (8-bit values / 255).
    let request =
        OpenRequest { prediction: Some(PathBuf::from(sam4em::io::sample::SAMPLE_LABELS)), ..OpenRequest::sample() };
    let mut h = harness(request);
    settle(&mut h);
    let labels = sam4em::io::open_stack(Path::new(sam4em::io::sample::SAMPLE_LABELS), &Default::default()).unwrap();
    let raw = sam4em::io::open_stack(Path::new(sam4em::io::sample::SAMPLE_STACK), &Default::default()).unwrap();
    let (l0, r0) = (labels.slice(SliceIndex(0)).unwrap(), raw.slice(SliceIndex(0)).unwrap());
    let i = (0..512 * 512).find(|&i| l0.data.value_f64(i) == 191.0).expect("a mitochondrion on slice 0");
    let (x, y) = (i % 512, i / 512);
    let rect = xy_rect(&h);
    let cam = h.state().viewer().unwrap().camera.unwrap();
    let (scale, offset) = cam.screen_from_image([rect.min.x, rect.min.y], [rect.width(), rect.height()], 1.0);
    let p = Pos2::new((x as f32 + 0.5) * scale[0] + offset[0], (y as f32 + 0.5) * scale[1] + offset[1]);
    h.hover_at(p);
    h.step();
    let info = h.state().hover_info();
    assert_eq!(info.voxel, Some([x, y, 0]));
    assert_eq!(info.value, Some(r0.value_at(x, y)));
    assert_eq!(info.classes, vec!["mitochondria".to_owned()]);
    let prob = info.probability.expect("prediction shown");
    assert!((prob - 191.0 / 255.0).abs() < 1e-6, "{prob}");
    assert!(h.state().prediction_on_gpu());
    // Opening another stack drops the old prediction: it must never show over other data.
    let ctx = h.ctx.clone();
    h.state_mut().apply(AppCommand::Open(OpenRequest::sample()), &ctx);
    settle(&mut h);
    assert!(!h.state().prediction_on_gpu());
    // A probability map of another shape is refused, naming the file.
    let other = OpenRequest {
        prediction: Some(crate::common::test_data("tiff/bilevel.tif")),
        ..OpenRequest::stack(sam4em::io::sample::SAMPLE_STACK)
    };
    let mut h = harness(other);
    settle(&mut h);
    let errors = h.state().errors();
    assert!(
        errors.len() == 1 && errors[0].contains("bilevel.tif") && errors[0].contains("probability map"),
        "{errors:?}"
    );
}

#[test]
fn a_broken_slice_is_reported_once_and_the_rest_still_browses() {
    // Three PNG slices, the middle one cut short after its header.
    let dir = tempfile::tempdir().unwrap();
    let good = image::GrayImage::from_fn(64, 48, |x, y| image::Luma([(x * 3 + y) as u8]));
    for i in 0..3 {
        good.save(dir.path().join(format!("s{i}.png"))).unwrap();
    }
    let broken = dir.path().join("s1.png");
    let bytes = std::fs::read(&broken).unwrap();
    std::fs::write(&broken, &bytes[..bytes.len() / 2]).unwrap();
    let mut h = harness(OpenRequest::stack(dir.path()));
    settle(&mut h);
    // The orthogonal planes need every slice: one error, naming the file.
    let errors = h.state().errors().to_vec();
    assert!(errors.len() == 1 && errors[0].contains("s1.png"), "{errors:?}");
    assert!(!h.state().is_busy(), "waiting forever on planes that cannot load");
    h.key_press(Key::ArrowUp);
    settle(&mut h);
    for _ in 0..20 {
        h.step();
    }
    // The slice itself: one more error, not one per frame (the same message as the planes',
    // so it is counted as a repeat of it).
    let errors = h.state().errors().to_vec();
    assert!(
        errors.len() == 1 && errors[0].contains("cannot read slice 1") && errors[0].contains("s1.png"),
        "{errors:?}"
    );
    let repeats = |h: &Harness<'static, StudioApp>| h.state().notices().entries().last().unwrap().repeats;
    assert_eq!(repeats(&h), 2);
    assert!(!h.state().is_busy(), "waiting forever on a slice that cannot load");
    h.key_press(Key::ArrowUp);
    settle(&mut h);
    assert_eq!(z(&h), 2);
    assert_eq!((h.state().errors().len(), repeats(&h)), (1, 2), "no new errors for a good slice");
}
