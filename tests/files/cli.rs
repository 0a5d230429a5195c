//! The `sam4em` binary as a user runs it: `info` on every shared dataset, `export` of the
//! bundled sample's labels, `--help` everywhere, and bad input → one line, exit code 2.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};

fn sam4em(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sam4em")).args(args).env("RUST_BACKTRACE", "1").output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs a command that must fail the way users are promised: exit code 2, one line on stderr
/// that starts with `error:` and ends with the file, and no panic.
fn fails_cleanly(args: &[&str], file: &Path, problem: &str) {
    let o = sam4em(args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(problem), "{args:?}: expected `{problem}` in {err}");
    assert!(err.trim_end().ends_with(&*file.to_string_lossy()), "{args:?}: should end with {}: {err}", file.display());
}

#[test]
fn info_on_every_shared_dataset() {
    let Some(shared) = common::shared() else { return };
    let data = shared.join("data");
    for (path, shape, dtype) in [
        ("drosophila-vnc-sstem/stack1/raw", "20 x 1024 x 1024", "uint8"),
        ("drosophila-vnc-sstem/stack1/labels", "20 x 1024 x 1024", "uint8"),
        ("drosophila-vnc-sstem/stack2/raw/00.tif", "1 x 1024 x 1024", "uint8"),
        ("lucchi-pp-test-z000-049/Test_In", "50 x 768 x 1024", "uint8"),
        ("lucchi-pp-test-z000-049/Test_Out", "50 x 768 x 1024", "uint8"),
        ("lucchi-pp-train-z000-049/Train_In", "50 x 768 x 1024", "uint8"),
        ("lucchi-pp-train-z000-049/Train_Out", "50 x 768 x 1024", "uint8"),
        ("flyem-medulla-fibsem-neuroproof-sample2/grayscale_maps", "250 x 250 x 250", "uint8"),
        ("gala-fibsem-mini/train-image.h5", "50 x 100 x 200", "uint8"),
        ("gala-fibsem-mini/test-gt.lzf.h5", "50 x 100 x 200", "uint32"),
    ] {
        let o = sam4em(&["info", data.join(path).to_str().unwrap()]);
        assert!(o.status.success(), "{path}: {}", stderr(&o));
        let out = stdout(&o);
        assert!(out.contains(&format!("shape:        {shape} (z, y, x)")), "{path}: {out}");
        assert!(out.contains(&format!("dtype:        {dtype}")), "{path}: {out}");
        assert!(out.contains("size on disk:"), "{out}");
    }
    // JSON for scripts.
    let o = sam4em(&["info", "--json", data.join("lucchi-pp-test-z000-049/Test_In").to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["shape_zyx"], serde_json::json!([50, 768, 1024]));
    assert_eq!(v[0]["slices"], 50);
}

#[test]
fn export_sample_labels_per_class() {
    let out = tempfile::tempdir().unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let labels = format!("{root}/assets/sample/labels.tif");
    let o = sam4em(&[
        "export",
        "--labels",
        &labels,
        "--map",
        "159=glia,191=mitochondria,223=psd",
        "--format",
        "tiff,labels",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    // Pixel counts of the sample crop (see assets/sample/README.md).
    for line in [
        "glia                     77624 foreground voxels",
        "mitochondria             235293",
        "post-synaptic density    28316",
    ] {
        assert!(text.contains(line), "{text}");
    }
    assert!(stderr(&o).contains("label values not mapped"), "membrane and intracellular values are reported");
    let info = stdout(&sam4em(&["info", out.path().join("mitochondria.tif").to_str().unwrap()]));
    assert!(
        info.contains("shape:        10 x 512 x 512") && info.contains("voxel size:   4.6 x 4.6 x 50 nm"),
        "{info}"
    );
    // The exported label map re-imports through its sidecar, and binary masks re-import too.
    let again = tempfile::tempdir().unwrap();
    let o = sam4em(&[
        "export",
        "--labels",
        out.path().join("labels.tif").to_str().unwrap(),
        "--mask",
        &format!("psd={}", out.path().join("psd.tif").display()),
        "--format",
        "png",
        "--out",
        again.path().to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("mitochondria             235293"), "{}", stdout(&o));
    assert_eq!(std::fs::read_dir(again.path().join("mitochondria")).unwrap().count(), 10);
    // A --stack without calibration (a PNG folder): the labels' voxel size is kept.
    let third = tempfile::tempdir().unwrap();
    let o = sam4em(&[
        "export",
        "--stack",
        again.path().join("mitochondria").to_str().unwrap(),
        "--labels",
        &labels,
        "--map",
        "191=mitochondria",
        "--out",
        third.path().to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let info = stdout(&sam4em(&["info", third.path().join("mitochondria.tif").to_str().unwrap()]));
    assert!(info.contains("voxel size:   4.6 x 4.6 x 50 nm"), "{info}");
}

#[test]
fn every_subcommand_has_help() {
    for args in [vec!["--help"], vec!["info", "--help"], vec!["export", "--help"], vec!["classes", "--help"]] {
        let o = sam4em(&args);
        assert!(o.status.success(), "{args:?}");
        assert!(stdout(&o).contains("Usage: sam4em"), "{args:?}");
    }
    let o = sam4em(&["classes"]);
    let table: sam4em::state::ClassTable = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(table, sam4em::state::ClassTable::default());
}

#[test]
fn bad_input_is_one_line_and_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tiff = std::fs::read(common::test_data("tiff/u8_le_none_strips.tif")).unwrap();
    let truncated = d.join("truncated.tif");
    std::fs::write(&truncated, &tiff[..tiff.len() / 2]).unwrap();
    let text = d.join("notes.png");
    std::fs::write(&text, "these are not pixels").unwrap();
    let i16 = common::test_data("tiff/i16.tif");
    let mixed = d.join("mixed");
    std::fs::create_dir(&mixed).unwrap();
    for (i, (w, h)) in [(8u32, 8u32), (8, 8), (9, 8)].into_iter().enumerate() {
        image::save_buffer(
            mixed.join(format!("{i}.png")),
            &vec![0u8; (w * h) as usize],
            w,
            h,
            image::ExtendedColorType::L8,
        )
        .unwrap();
    }
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    // `info` reads metadata only, so the truncated TIFF is caught by the data-extent check.
    fails_cleanly(&["info", &s(&truncated)], &truncated, "truncated TIFF");
    fails_cleanly(&["info", &s(&text)], &text, "not a TIFF, PNG or HDF5 file");
    let h5 = d.join("stack.h5");
    std::fs::write(&h5, b"\x89HDF\r\n\x1a\n\0\0\0\0").unwrap();
    fails_cleanly(&["info", &s(&h5)], &h5, "corrupt or unreadable HDF5");

    fails_cleanly(&["info", &s(&i16)], &i16, "unsupported bit depth: 16-bit signed integer");
    fails_cleanly(&["info", &s(&mixed)], &mixed.join("2.png"), "slice 2 is 9x8 px");
    fails_cleanly(&["info", &s(&d.join("nope.tif"))], &d.join("nope.tif"), "No such file or directory");
    // The bare app command too.
    fails_cleanly(&[&s(&truncated)], &truncated, "truncated TIFF");
    // One allocation policy: a header asking for more than the slice limit (here lowered with
    // --max-slice-gib) is refused before anything is allocated, naming the shape and limit.
    let tiles = common::test_data("tiff/u16_le_deflate_tiles.tif");
    fails_cleanly(
        &["info", &s(&tiles), "--max-slice-gib", "0.000001"],
        &tiles,
        "slice size: 40x24 px of 2 bytes (1920 bytes) exceeds the 1073 bytes slice limit",
    );
    // A project whose project.json declares an absurd stack shape.
    let stack = sam4em::io::open_stack(&tiles, &Default::default()).unwrap();
    let project = d.join("project");
    sam4em::io::session::Project::create(
        &project,
        sam4em::io::StackRef::from_info(stack.info()),
        &sam4em::state::ClassTable::default(),
    )
    .unwrap();
    let json = project.join("project.json");
    let text = std::fs::read_to_string(&json).unwrap().replace("\"width\": 40", "\"width\": 4000000000000");
    assert!(text.contains("4000000000000"), "{text}");
    std::fs::write(&json, text).unwrap();
    fails_cleanly(
        &["export", "--project", &s(&project), "--out", &s(&d.join("never"))],
        &json,
        "slice size: 4000000000000x24 px",
    );
    assert!(!d.join("never").exists());

    // An unwritable output: the target is a folder. Nothing that was there is touched.
    let labels = format!("{}/assets/sample/labels.tif", env!("CARGO_MANIFEST_DIR"));
    let out = d.join("out");
    std::fs::create_dir_all(out.join("glia.tif")).unwrap();
    std::fs::write(out.join("mitochondria.tif"), b"keep me").unwrap();
    fails_cleanly(
        &["export", "--labels", &labels, "--map", "159=glia,191=mitochondria", "--out", &s(&out)],
        &out.join("glia.tif"),
        "a folder of that name is in the way",
    );
    assert_eq!(std::fs::read(out.join("mitochondria.tif")).unwrap(), b"keep me");
    // A label map whose shape differs from the given stack.
    fails_cleanly(
        &[
            "export",
            "--labels",
            &s(&common::test_data("tiff/u8_le_none_strips.tif")),
            "--stack",
            &labels,
            "--out",
            &s(&d.join("out2")),
        ],
        &common::test_data("tiff/u8_le_none_strips.tif"),
        "masks are 40x24 px x 3 slices but the stack is 512x512 px x 10 slices",
    );
}

#[cfg(feature = "model")]
#[test]
fn checkpoint_command_identifies_files_and_refuses_what_it_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pt");
    std::fs::write(&junk, b"this is not a checkpoint").unwrap();
    fails_cleanly(&["checkpoint", junk.to_str().unwrap()], &junk, "not a readable checkpoint");
    let Some(fixtures) = common::fixtures() else { return };
    let micro = common::fixture_checkpoint(&fixtures);
    let o = sam4em(&["checkpoint", micro.to_str().unwrap()]);
    // Its hash is the file's own (computed here, whichever set is given); its trunk is not an
    // official size.
    let want = {
        use sha2::Digest;
        format!("{:x}", sha2::Sha256::digest(std::fs::read(&micro).unwrap()))
    };
    assert!(stdout(&o).contains(&format!("sha256    {want}")), "{}", stdout(&o));
    assert!(stdout(&o).contains("official  no"));
    fails_cleanly(&["checkpoint", micro.to_str().unwrap()], &micro, "is not a SAM 2 size");
}

/// `xvfb-run`, or why the window test cannot run (a failure under `CI=true`).
fn xvfb_run() -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join("xvfb-run")).find(|f| f.is_file()));
    if found.is_none() {
        let reason = "xvfb-run not found (apt install xvfb xauth)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{reason}");
        eprintln!("skipping: {reason}");
    }
    found
}

/// Runs the bare app under Xvfb until it has saved a screenshot of the sample, with `env` set;
/// returns its output, the screenshot and the folder it kept its settings and sessions in.
fn window_screenshot(xvfb: &Path, env: &[(&str, &str)]) -> (std::process::Output, image::RgbaImage, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (o, img) = window_screenshot_in(xvfb, dir.path(), &[], env, &[]);
    (o, img, dir)
}

/// [`window_screenshot`] with its settings and sessions in `dir`, `args` on its command line and
/// the variables `unset` removed from its environment.
fn window_screenshot_in(
    xvfb: &Path,
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    unset: &[&str],
) -> (std::process::Output, image::RgbaImage) {
    // One X server at a time: `xvfb-run -a` picks the first display without a lock file, and two
    // started together can pick the same one, so one app finds no server (seen in CI, 2026-12-06).
    static ONE_X_SERVER: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _x = ONE_X_SERVER.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let shot = dir.join("window.png");
    let mut command = Command::new(xvfb);
    command
        .args(["-a", "-s", "-screen 0 1600x1000x24"])
        .arg(env!("CARGO_BIN_EXE_sam4em"))
        .args(args)
        .arg("--screenshot")
        .arg(&shot)
        .env("SAM4EM_CONFIG_DIR", dir)
        .env("SAM4EM_DATA_DIR", dir)
        .env("RUST_LOG", "warn,sam4em::app::gpu=info")
        .envs(env.iter().copied());
    for name in unset {
        command.env_remove(name);
    }
    let o = command.output().unwrap();
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("screenshot saved"), "{err}");
    let img = image::open(&shot).unwrap().to_rgba8();
    assert_eq!(img.dimensions(), (1400, 900), "the window's default size");
    (o, img)
}

/// Pixels of the mitochondria overlay (vermillion, 213 94 0 at 45 % over grey): they cover a
/// good part of the sample's first slice; grey EM alone has no such pixels.
fn mitochondria_tinted(img: &image::RgbaImage) -> usize {
    img.pixels().filter(|p| p[0] > 140 && i32::from(p[0]) - i32::from(p[2]) > 80 && p[1] < p[0]).count()
}

#[test]
fn bare_sam4em_opens_a_window_on_the_sample_with_overlays() {
    // The real thing: winit window on an X server, eframe's wgpu surface on the device burn's
    // runtime made for the model, the sample and its labels loaded, a screenshot of what a user
    // would see.
    let Some(xvfb) = xvfb_run() else { return };
    let (o, img, dir) = window_screenshot(&xvfb, &[]);
    let err = stderr(&o);
    assert!(err.contains("the window draws on the model's device"), "{err}");
    let tinted = mitochondria_tinted(&img);
    assert!(tinted > 5_000, "{tinted} mitochondria-tinted pixels");
    // The recent-files list remembers the sample.
    assert!(dir.path().join("recent.json").is_file());
    // Its automatic session was created in the data folder, with the imported labels saved.
    let sessions: Vec<_> = std::fs::read_dir(dir.path().join("sessions")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let opened = sam4em::io::session::Project::open(&sessions[0]).unwrap();
    assert!(opened.masks.classes().count() >= 2, "the sample's labels are in the session");
}

#[test]
fn the_window_makes_its_own_device_when_the_model_gpu_cannot_be_set_up() {
    // burn's runtime told to use a GPU this machine does not have (as on a machine without
    // Vulkan, or whose driver refuses the device cubecl asks for): the window still opens, on a
    // device of its own, and shows the same picture.
    let Some(xvfb) = xvfb_run() else { return };
    let (o, img, _dir) = window_screenshot(&xvfb, &[("CUBECL_WGPU_DEFAULT_DEVICE", "DiscreteGpu(9)")]);
    let err = stderr(&o);
    assert!(err.contains("the window makes its own device: the GPU could not be set up for the model"), "{err}");
    let tinted = mitochondria_tinted(&img);
    assert!(tinted > 5_000, "{tinted} mitochondria-tinted pixels");
}

#[test]
fn a_window_whose_gpu_is_lost_restarts_with_the_model_on_the_cpu_and_every_edit() {
    // The window's own wgpu device destroyed (`wgpu::Device::destroy`, as a driver reset would
    // leave it) once the sample is shown: the app saves, closes, and starts again as a new
    // process on a new device with the model on the CPU, the same stack open with its session
    // at the same slice, and that process takes the screenshot.
    use sam4em::io::session::{Project, StackRef, autosession_dir};
    use sam4em::state::bitplane::PixelBox;
    use sam4em::state::edit::Editor;
    use sam4em::state::{ClassId, ClassTable, MaskVolume, SliceIndex};

    let Some(xvfb) = xvfb_run() else { return };
    let dir = tempfile::tempdir().unwrap();
    // The sample's automatic session holds one edit in its journal only (as after a crash): a
    // mitochondria rectangle over the left part of slice 3, the slice in view.
    let sample = Path::new(sam4em::io::sample::SAMPLE_STACK);
    let volume = sam4em::io::open_stack(sample, &Default::default()).unwrap();
    let (w, h, d) = (volume.width(), volume.height(), volume.depth());
    let journal_one_edit = |data: &Path| {
        let session = autosession_dir(data, sample);
        std::fs::create_dir_all(session.parent().unwrap()).unwrap();
        let mut project =
            Project::create(&session, StackRef::from_info(volume.info()), &ClassTable::default()).unwrap();
        let (mut masks, mut editor) = (MaskVolume::new(w, h, d), Editor::default());
        editor.begin("rectangle").unwrap();
        let rect = PixelBox { x0: 0, y0: 0, x1: w / 3, y1: h };
        editor.paint(&mut masks, ClassId(2), SliceIndex(3), |p| p.fill_rect(rect, true)).unwrap();
        project.append(&editor.commit(&masks).unwrap().writes).unwrap();
        session
    };
    let session = journal_one_edit(dir.path());

    let log = "warn,sam4em::app=info,sam4em::ui::notify=debug";
    let sample_arg = sample.to_str().unwrap();
    let env = [("SAM4EM_FAULT", "lose-display-gpu"), ("RUST_LOG", log)];
    let (o, img) = window_screenshot_in(&xvfb, dir.path(), &[sample_arg, "--slice", "3"], &env, &[]);
    let err = stderr(&o);
    assert!(err.contains("destroying the window's device"), "{err}");
    assert!(err.contains("the GPU was lost (Destroyed) under the window: restarting"), "{err}");
    assert!(err.contains("the app restarted on a new device, with the model on the CPU"), "{err}");
    assert!(err.contains("the window makes its own device: the model runs on the CPU"), "{err}");
    assert!(err.contains("recovered 1 edits since the last save"), "{err}");
    assert_eq!(err.matches("screenshot saved").count(), 1, "{err}");
    // The new window shows slice 3 with the edit (the labels of the sample are not imported
    // again: the session restores its masks instead).
    let tinted = mitochondria_tinted(&img);
    assert!(tinted > 10_000, "{tinted} mitochondria-tinted pixels");
    // The session holds it, folded into its files: one session, nothing moved aside.
    let sessions: Vec<_> = std::fs::read_dir(dir.path().join("sessions")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(sessions, std::slice::from_ref(&session));
    let opened = Project::open(&session).unwrap();
    assert_eq!(opened.recovery.replayed_records, 0, "the journal was folded into the files on the way out");
    let mask = opened.masks.mask(ClassId(2), SliceIndex(3)).expect("the edit");
    assert_eq!(mask.count_ones(), ((w / 3) * h) as u64);
    drop(opened);

    // The same when the window has a device of its own (burn's runtime could not make one).
    let env =
        [("SAM4EM_FAULT", "lose-display-gpu"), ("RUST_LOG", log), ("CUBECL_WGPU_DEFAULT_DEVICE", "DiscreteGpu(9)")];
    let (o, img) = window_screenshot_in(&xvfb, dir.path(), &[sample_arg, "--slice", "3"], &env, &[]);
    let err = stderr(&o);
    assert!(err.contains("the window makes its own device: the GPU could not be set up"), "{err}");
    assert!(err.contains("the GPU was lost (Destroyed) under the window: restarting"), "{err}");
    let tinted = mitochondria_tinted(&img);
    assert!(tinted > 10_000, "{tinted} mitochondria-tinted pixels");

    // Without a data folder nothing is journalled: the sample's imported labels are saved as a
    // recovery project in the temporary folder, and the new process opens that.
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let env = [("SAM4EM_FAULT", "lose-display-gpu"), ("RUST_LOG", log), ("TMPDIR", tmp.to_str().unwrap())];
    let unset = ["SAM4EM_DATA_DIR", "XDG_DATA_HOME", "HOME"];
    let (o, img) = window_screenshot_in(&xvfb, dir.path(), &[], &env, &unset);
    let err = stderr(&o);
    assert!(err.contains("no data folder"), "{err}");
    let recovered: Vec<_> = std::fs::read_dir(&tmp).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(recovered.len(), 1, "{recovered:?}\n{err}");
    assert!(recovered[0].file_name().unwrap().to_string_lossy().starts_with("sam4em-recovered-"));
    let opened = Project::open(&recovered[0]).unwrap();
    assert!(opened.masks.classes().count() >= 2, "the sample's labels are in the recovery project");
    let tinted = mitochondria_tinted(&img);
    assert!(tinted > 5_000, "{tinted} mitochondria-tinted pixels: the new window shows the labels");

    // Lost in the middle of a frame, after its check: egui's renderer panics drawing on the
    // lost device; the panic is told from a bug by asking the device, and the new process
    // replays the journal (nothing was saved on the way out).
    let dir = tempfile::tempdir().unwrap();
    let session = journal_one_edit(dir.path());
    let env = [("SAM4EM_FAULT", "lose-display-gpu-in-frame"), ("RUST_LOG", log)];
    let (o, img) = window_screenshot_in(&xvfb, dir.path(), &[sample_arg, "--slice", "3"], &env, &[]);
    let err = stderr(&o);
    assert!(err.contains("destroying the window's device"), "{err}");
    assert!(err.contains("panicked"), "the frame drew on the lost device: {err}");
    assert!(
        err.contains(
            "the GPU was lost (Destroyed) while the window drew a frame: its edits are in the session's journal"
        ),
        "{err}"
    );
    assert!(err.contains("the app restarted on a new device, with the model on the CPU"), "{err}");
    assert!(err.contains("recovered 1 edits since the last save"), "{err}");
    assert_eq!(err.matches("screenshot saved").count(), 1, "{err}");
    let tinted = mitochondria_tinted(&img);
    assert!(tinted > 10_000, "{tinted} mitochondria-tinted pixels");
    let opened = Project::open(&session).unwrap();
    assert_eq!(opened.masks.mask(ClassId(2), SliceIndex(3)).expect("the edit").count_ones(), ((w / 3) * h) as u64);
}

#[test]
fn sessions_lists_projects_and_export_reads_one_with_its_journal() {
    use sam4em::io::session::{Project, StackRef};
    use sam4em::state::bitplane::PixelBox;
    use sam4em::state::edit::Editor;
    use sam4em::state::{ClassId, ClassTable, DType, MaskVolume, SliceIndex};

    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("sessions").join("em.tif-0123456789abcdef");
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    let stack = StackRef {
        path: data.path().join("em.tif"),
        relative: None,
        width: 40,
        height: 30,
        depth: 3,
        dtype: DType::U8,
    };
    let mut project = Project::create(&dir, stack, &ClassTable::default()).unwrap();
    // Edits that exist only in the journal (as after a crash): export must include them.
    let (mut masks, mut editor) = (MaskVolume::new(40, 30, 3), Editor::default());
    editor.begin("rectangle").unwrap();
    let rect = PixelBox { x0: 5, y0: 6, x1: 15, y1: 10 };
    editor.paint(&mut masks, ClassId(2), SliceIndex(1), |p| p.fill_rect(rect, true)).unwrap();
    project.append(&editor.commit(&masks).unwrap().writes).unwrap();
    drop(project);

    let o = sam4em(&["sessions", "--data-dir", &data.path().to_string_lossy()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains(&*dir.to_string_lossy()) && out.contains("em.tif (40x30x3 uint8)"), "{out}");

    let masks_out = data.path().join("masks");
    let o = sam4em(&["export", "--project", &dir.to_string_lossy(), "--out", &masks_out.to_string_lossy()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("mitochondria             40 foreground voxels"), "{}", stdout(&o));
    let v = sam4em::io::open_stack(&masks_out.join("mitochondria.tif"), &Default::default()).unwrap();
    let s = v.slice(SliceIndex(1)).unwrap();
    let sam4em::state::SliceData::U8(px) = &s.data else { panic!("uint8 masks") };
    let set: Vec<usize> = px.iter().enumerate().filter(|(_, v)| **v == 255).map(|(i, _)| i).collect();
    let expected: Vec<usize> = (6..10).flat_map(|y| (5..15).map(move |x| y * 40 + x)).collect();
    assert_eq!(set, expected);
}

/// Four Lucchi++ slices (20–23) and their labels as small stacks in `dir`, and the micro model
/// configuration at 128² (fast on a CPU).
fn lucchi_quad(shared: &Path, dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let data = shared.join("data/lucchi-pp-train-z000-049");
    let (img, lab) = (dir.join("img"), dir.join("lab"));
    std::fs::create_dir_all(&img).unwrap();
    std::fs::create_dir_all(&lab).unwrap();
    for z in 20..24 {
        std::fs::copy(data.join(format!("Train_In/mask{z:04}.png")), img.join(format!("{z}.png"))).unwrap();
        std::fs::copy(data.join(format!("Train_Out/{z}.png")), lab.join(format!("{z}.png"))).unwrap();
    }
    let config = common::reduced_config_json(&common::fixtures().expect("the shared data holds the fixtures"));
    let cfg = dir.join("reduced.json");
    std::fs::write(&cfg, config.to_string()).unwrap();
    (img, lab, cfg)
}

/// Writes slices `zs` of the stack at `from`, each repeated across and down to `side × side`
/// (8-bit), as the multi-page TIFF `to`: a large stack from real EM.
fn tiled_stack(from: &Path, zs: std::ops::Range<usize>, side: usize, to: &Path) {
    use sam4em::state::SliceIndex;
    let raw = sam4em::io::open_stack(from, &Default::default()).unwrap();
    let (w, h) = (raw.width(), raw.height());
    let pages: Vec<Vec<u8>> = zs
        .map(|z| {
            let p = sam4em::infer::slice_to_u8(&raw.slice(SliceIndex(z)).unwrap(), None);
            (0..side * side).map(|i| p[(i / side % h) * w + i % side % w]).collect()
        })
        .collect();
    sam4em::io::export::write_u8_stack(to, side, side, &pages).unwrap();
}

/// Tiles per slice (across, down) of a `width × height` stack at scale 1 for the model input of
/// the configuration file `cfg` (the fixture set's, reduced).
fn native_tiles(cfg: &Path, width: usize, height: usize) -> (usize, usize) {
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(cfg).unwrap()).unwrap();
    let input = json["image_size"].as_u64().unwrap() as usize;
    sam4em::infer::TileGrid::new(width, height, input, sam4em::infer::Scale::NATIVE).columns_rows()
}

#[test]
fn train_predict_and_eval_end_to_end_on_lucchi_slices() {
    let Some(shared) = common::shared() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (img, lab, cfg) = lucchi_quad(&shared, tmp.path());
    let Some(set) = common::fixtures() else { return };
    let pt = common::fixture_checkpoint(&set);
    let adapter = tmp.path().join("mito-v1.safetensors");
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let labels = format!("mitochondria={}", s(&lab));
    let (pt_s, img_s, cfg_s) = (s(&pt), s(&img), s(&cfg));
    let common_model = ["--checkpoint", &pt_s, "--device", "cpu"];

    // train: slices 0–2, slice 3 held out; 3 epochs of batches [0, 1] and [2].
    let mut args = vec!["train", "--images", &img_s, "--labels", &labels, "--config", &cfg_s];
    args.extend(common_model);
    let out_s = s(&adapter);
    args.extend(["--epochs", "3", "--batch-size", "2", "--validation", "3", "--out", &out_s, "--json"]);
    let o = sam4em(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["training"]["steps"], 6, "{v}");
    assert_eq!(v["training"]["slices"], serde_json::json!([0, 1, 2]));
    let dice = v["training"]["validation_dice"]["mitochondria"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&dice), "{v}");
    assert!(v["losses"].as_array().unwrap().iter().all(|l| l.as_f64().unwrap().is_finite()));
    assert!(adapter.is_file());
    // The run fits in this machine's memory with every activation kept, and says so.
    assert_eq!(v["memory"]["activations"], "keep", "{v}");
    assert_eq!(v["training"]["activations"], "keep");
    assert_eq!(v["training"]["batch_size"], 2);
    assert!(v["memory"]["estimated_bytes"].as_u64().unwrap() > 0, "{v}");
    // 1024 × 768 slices are more than twice the 128² input: trained at scale 1, on crops of
    // 128² centred on labelled pixels; the adapter says so (the PNGs state no pixel size).
    assert_eq!((v["training"]["scale"].as_str(), v["training"]["pixel_size_nm"].as_f64()), (Some("1"), None), "{v}");

    // Recomputing activations block by block computes the same gradients: the same losses.
    let recomputed = tmp.path().join("mito-recomputed.safetensors");
    let mut again = args.clone();
    let rec_s = s(&recomputed);
    *again.iter_mut().find(|a| **a == out_s.as_str()).unwrap() = &rec_s;
    again.extend(["--activations", "recompute"]);
    let o = sam4em(&again);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(r["training"]["activations"], "recompute");
    for (a, b) in v["losses"].as_array().unwrap().iter().zip(r["losses"].as_array().unwrap()) {
        let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
        assert!((a - b).abs() <= 1e-4 * a.abs().max(1.0), "losses {a} (kept) and {b} (recomputed) differ");
    }

    // A run that does not fit the memory it may use is refused before it starts, in one
    // sentence that names the numbers; nothing is written.
    let refused = tmp.path().join("refused.safetensors");
    let ref_s = s(&refused);
    let mut small = args.clone();
    *small.iter_mut().find(|a| **a == out_s.as_str()).unwrap() = &ref_s;
    small.extend(["--memory-limit", "0.001"]);
    let o = sam4em(&small);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    // (The micro checkpoint is not an official one: a warning line comes first.)
    let err = err.trim_end().lines().last().unwrap_or_default();
    assert!(
        err.starts_with("error: Training 2 slices per batch needs about")
            && err.contains("even with recomputation")
            && err.contains("but only 1 MiB of the --memory-limit is available"),
        "{err}"
    );
    assert!(!refused.exists(), "a refused run writes nothing");

    // A run that diverges (a NaN learning rate makes the first update NaN) writes no adapter:
    // one line says at which step and what to try.
    let diverged = tmp.path().join("diverged.safetensors");
    let div_s = s(&diverged);
    let mut nan = args.clone();
    *nan.iter_mut().find(|a| **a == out_s.as_str()).unwrap() = &div_s;
    nan.extend(["--lr", "NaN"]);
    let o = sam4em(&nan);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let err = err.trim_end().lines().last().unwrap_or_default();
    assert!(err.contains("became NaN or infinite at step 2") && err.contains("no adapter written"), "{}", stderr(&o));
    assert!(!diverged.exists(), "a diverged run writes nothing");

    // predict with the adapter (its configuration and classes come with it), seeded on slice 0.
    let pred = tmp.path().join("pred");
    let seed = format!("mitochondria={}", s(&lab));
    let pred_s = s(&pred);
    let mut args = vec!["predict", &img_s as &str];
    args.extend(common_model);
    args.extend(["--adapter", &out_s, "--out", &pred_s, "--seed-slice", "0", "--seed-mask", &seed, "--probabilities"]);
    let o = sam4em(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("predicted 4 slices") && text.contains("mitochondria.tif"), "{text}");
    // The adapter's scale by default, the one it was trained at: 11 × 8 tiles of 128² per slice
    // on the published set.
    let (across, down) = native_tiles(&cfg, 1024, 768);
    assert!(text.contains(&format!("scale 1 ({} tiles per slice)", across * down)), "{text}");
    let info = sam4em(&["info", &s(&pred.join("mitochondria.tif"))]);
    assert!(stdout(&info).contains("4 x 768 x 1024"), "{}", stdout(&info));
    assert!(pred.join("mitochondria_probability.tif").is_file());
    // The whole slice resized instead, with a warning that the adapter learnt at another scale.
    let fit = tmp.path().join("pred-fit");
    let fit_s = s(&fit);
    let mut args = vec!["predict", &img_s as &str];
    args.extend(common_model);
    args.extend(["--adapter", &out_s, "--out", &fit_s, "--slices", "0..1", "--scale", "fit", "--json"]);
    let o = sam4em(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("warning: predicting at scale fit, but the adapter was trained at scale 1"),
        "{}",
        stderr(&o)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["tiles"], serde_json::json!({ "per_slice": 1, "columns": 1, "rows": 1, "bands": 1 }), "{v}");
    assert_eq!((v["scale"].as_str(), v["slices"].as_u64()), (Some("fit"), Some(1)), "{v}");
    // Half precision is for GPUs; on the CPU it is refused before anything is read or written.
    let refused = tmp.path().join("pred-f16");
    let refused_s = s(&refused);
    let mut args = vec!["predict", &img_s as &str];
    args.extend(common_model);
    args.extend(["--adapter", &out_s, "--out", &refused_s, "--precision", "f16"]);
    let o = sam4em(&args);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--precision f16: half precision (f16) runs on a GPU only"), "{}", stderr(&o));
    assert!(!refused.exists(), "a refused run writes nothing");

    // eval: both metrics, text and JSON.
    let mask = s(&pred.join("mitochondria.tif"));
    let o = sam4em(&["eval", "--prediction", &mask, "--truth", &s(&lab), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["slices"].as_array().unwrap().len(), 4);
    for k in ["mean_dice", "mean_iou", "volume_dice", "volume_iou"] {
        assert!((0.0..=1.0).contains(&v[k].as_f64().unwrap()), "{k}: {v}");
    }
    let o = sam4em(&["eval", "--prediction", &mask, "--truth", &s(&lab)]);
    let text = stdout(&o);
    assert!(text.contains("per-slice mean") && text.contains("volume: Dice"), "{text}");
    // Ground truth against itself scores 1 everywhere.
    let o = sam4em(&["eval", "--prediction", &s(&lab), "--truth", &s(&lab), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!((v["mean_dice"].as_f64(), v["volume_iou"].as_f64()), (Some(1.0), Some(1.0)), "{v}");

    // A mismatched truth stack names the file.
    let one = tmp.path().join("one");
    std::fs::create_dir_all(&one).unwrap();
    std::fs::copy(lab.join("20.png"), one.join("20.png")).unwrap();
    fails_cleanly(&["eval", "--prediction", &mask, "--truth", &s(&one)], &one, "is 1024×768×1");
}

#[test]
fn predict_at_scale_one_tiles_a_large_stack_in_bounded_memory() {
    // Four 1024² slices: 11 × 11 tiles per slice with the published micro model at 128².
    tiled_prediction(1024);
}

/// The size: four 4096² slices, 43 × 43 tiles of 128² per slice (about 6 minutes on 2
/// cores; `.ci/extended` part `tiles` runs it and the README gives its figures).
#[test]
#[ignore = "6 minutes: run by .ci/extended (part tiles)"]
fn predict_at_scale_one_tiles_a_4096_stack_in_bounded_memory() {
    tiled_prediction(4096);
}

/// `sam4em predict --json` on four `side²` slices (Lucchi++ slices tiled) with the fixture set's
/// micro model (its input reduced, 128² on the published set), without an adapter: at scale 1
/// by default, with the tiles of that input per slice, the whole run under 2 GiB peak RSS;
/// `fit` is one tile; a scale that is not one is refused.
fn tiled_prediction(side: usize) {
    use sam4em::state::SliceIndex;
    let Some(shared) = common::shared() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (img, _, cfg) = lucchi_quad(&shared, tmp.path());
    let Some(set) = common::fixtures() else { return };
    let stack = tmp.path().join("big.tif");
    tiled_stack(&img, 0..4, side, &stack);
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let (stack_s, pt_s, cfg_s, out_s) =
        (s(&stack), s(&common::fixture_checkpoint(&set)), s(&cfg), s(&tmp.path().join("out")));
    let run_into = |out: &str, extra: &[&str]| {
        let mut args = vec!["predict", &stack_s, "--checkpoint", &pt_s, "--config", &cfg_s, "--device", "cpu"];
        args.extend(["--out", out, "--json"]);
        args.extend(extra);
        let o = sam4em(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_str::<serde_json::Value>(&stdout(&o)).unwrap()
    };
    let run = |scale: Option<&str>| match scale {
        Some(scale) => run_into(&out_s, &["--scale", scale]),
        None => run_into(&out_s, &["--probabilities"]),
    };
    // Without an adapter, a slice more than twice the model input is predicted at scale 1.
    let v = run(None);
    eprintln!("{v}");
    assert_eq!(v["scale"], "1", "{v}");
    let (across, _) = native_tiles(&cfg, side, side);
    assert_eq!(
        v["tiles"],
        serde_json::json!({ "per_slice": across * across, "columns": across, "rows": across, "bands": 1 }),
        "{v}"
    );
    assert_eq!(v["slices"], 4);
    let peak = v["peak_rss_bytes"].as_u64().expect("Linux reports the peak");
    assert!(peak < 2 << 30, "peak RSS {peak} bytes");
    // (The bare micro model's heads are untrained: its masks say little, their size is what counts.)
    assert!(v["foreground_voxels"]["mitochondria"].as_u64().is_some(), "{v}");
    let masks = sam4em::io::open_stack(&tmp.path().join("out/mitochondria.tif"), &Default::default()).unwrap();
    assert_eq!((masks.width(), masks.height(), masks.depth()), (side, side, 4));
    if side <= 1024 {
        // Streams allowed one tile row at a time: a band per tile row, each through the stack,
        // the same masks and probabilities (the probabilities spooled to a temporary file).
        let banded = s(&tmp.path().join("banded"));
        let v = run_into(&banded, &["--probabilities", "--stream-memory-gib", "1e-9"]);
        assert_eq!(v["tiles"]["bands"], across, "{v}");
        for name in ["mitochondria.tif", "mitochondria_probability.tif"] {
            let [a, b] = [&out_s, &banded]
                .map(|d| sam4em::io::open_stack(&Path::new(d).join(name), &Default::default()).unwrap());
            assert_eq!(b.depth(), 4);
            for z in 0..4 {
                let [pa, pb] = [&a, &b].map(|v| v.slice(SliceIndex(z)).unwrap().data.clone());
                assert!(pa == pb, "{name}, slice {z}: the bands differ from one band");
            }
        }
        // The masks are written from a temporary file page by page: each page is its slice's
        // probabilities at the threshold, also for a seeded range streamed backwards from its
        // seed (pages out of order), and the slices outside the range are empty.
        let cut = sam4em::state::view::probability_cut(v["threshold"].as_f64().unwrap() as f32);
        let seed = format!("mitochondria={}", s(&Path::new(&out_s).join("mitochondria.tif")));
        let seeded = s(&tmp.path().join("seeded"));
        let w = run_into(&seeded, &["--probabilities", "--slices", "1..4", "--seed-slice", "2", "--seed-mask", &seed]);
        assert_eq!(w["slices"], 3, "{w}");
        for (dir, range) in [(&out_s, 0..4), (&banded, 0..4), (&seeded, 1..4)] {
            let [masks, probs] = ["mitochondria.tif", "mitochondria_probability.tif"]
                .map(|name| sam4em::io::open_stack(&Path::new(dir).join(name), &Default::default()).unwrap());
            let mut foreground = 0;
            for z in 0..4 {
                let [m, p] = [&masks, &probs].map(|v| v.slice(SliceIndex(z)).unwrap().data.clone());
                let (sam4em::state::SliceData::U8(m), sam4em::state::SliceData::U8(p)) = (m, p) else {
                    panic!("8-bit pages expected")
                };
                let expected: Vec<u8> = match range.contains(&z) {
                    true => p.iter().map(|&v| if i32::from(v) > cut { 255 } else { 0 }).collect(),
                    false => vec![0; side * side],
                };
                assert!(m == expected, "{dir}, slice {z}: the mask is not the probabilities at the threshold");
                foreground += m.iter().filter(|&&v| v != 0).count() as u64;
            }
            let report = if dir == &seeded { &w } else { &v };
            if dir != &out_s {
                assert_eq!(report["foreground_voxels"]["mitochondria"].as_u64(), Some(foreground), "{report}");
            }
        }
        let o = sam4em(&["predict", &stack_s, "--checkpoint", &pt_s, "--out", &banded, "--stream-memory-gib", "0"]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("--stream-memory-gib 0 is not a positive number"), "{}", stderr(&o));
    }
    // `fit`: the paper's whole-slice resize, one tile.
    let v = run(Some("fit"));
    assert_eq!((v["scale"].as_str(), v["tiles"]["per_slice"].as_u64()), (Some("fit"), Some(1)), "{v}");
    // A scale that is not one: refused with one line.
    let o = sam4em(&["predict", &stack_s, "--checkpoint", &pt_s, "--out", &out_s, "--scale", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("scale 0 is outside (0, 8]"), "{}", stderr(&o));
}

/// Bounded stream memory with B+ (issue 21): two 2048² slices (Lucchi++ tiled) at scale 1, 5 × 5
/// tiles of 512², one class, a B+ with random weights: with one tile row per band the peak RSS
/// drops by about the 20 tiles' streams (9 MiB each) and the band buffer, and the masks and
/// probabilities are byte for byte those of one band. About 11 minutes on a 2-core machine:
/// `.ci/extended` part `bands` runs it and the README gives its figures.
#[test]
#[ignore = "11 minutes: run by .ci/extended (part bands)"]
fn bplus_in_bands_of_tile_rows_saves_the_streams_memory() {
    let Some(shared) = common::shared() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let ckpt = tmp.path().join("bplus.safetensors");
    let o = sam4em(&["bench", "checkpoint", "--size", "base_plus", "--out", &s(&ckpt)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stack = tmp.path().join("s2048.tif");
    tiled_stack(&shared.join("data/lucchi-pp-train-z000-049/Train_In"), 20..22, 2048, &stack);
    let run = |name: &str, gib: &str| {
        let out = s(&tmp.path().join(name));
        let args = ["predict", &s(&stack), "--checkpoint", &s(&ckpt), "--device", "cpu", "--scale", "1"];
        let o =
            sam4em(&[&args[..], &["--out", &out, "--json", "--probabilities", "--stream-memory-gib", gib]].concat());
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        println!("{{\"run\": \"{name}\", \"stream_memory_gib\": {gib}, \"report\": {v}}}");
        v
    };
    let one = run("one-band", "4");
    // 0.0088 GiB holds one tile's streams (9 MiB for one class), less than a row: a band is one
    // tile row, the least there is.
    let banded = run("banded", "0.0088");
    assert_eq!((one["tiles"]["bands"].as_u64(), banded["tiles"]["bands"].as_u64()), (Some(1), Some(5)));
    let peak = |v: &serde_json::Value| v["peak_rss_bytes"].as_u64().expect("Linux reports the peak") as f64;
    let saved_mib = (peak(&one) - peak(&banded)) / f64::from(1 << 20);
    // The formula: 20 tiles' streams (180 MiB) and 12 MiB of blend buffer.
    assert!((120.0..=260.0).contains(&saved_mib), "bands saved {saved_mib:.0} MiB, the formula 192 MiB");
    for name in ["mitochondria.tif", "mitochondria_probability.tif"] {
        let [a, b] = ["one-band", "banded"].map(|d| std::fs::read(tmp.path().join(d).join(name)).unwrap());
        assert!(a == b, "{name}: the bands differ from one band");
    }
}

/// A stand-in for the Python that runs the original SAM4EM: it records its arguments and
/// answers every request of `tests/bench/model_torch.py`'s protocol with 2 ms, so that the
/// interleaving, the ratios and the report are checked without PyTorch (CI has none). With
/// `die_after`, it exits after that many replies, as a crashed reference would.
fn fake_reference_python(dir: &Path, die_after: Option<usize>) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let log = dir.join("args.txt");
    let limit = die_after.map_or(String::new(), |n| format!("[ \"$n\" -ge {n} ] && exit 3\n"));
    let script = format!(
        "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}'\n\
         echo '{{\"torch\": \"fake\", \"threads\": 2, \"device\": \"cpu\"}}'\n\
         n=0\nwhile read -r line; do\n{limit}  n=$((n+1))\n  echo \"$line\" >> '{}'\n\
           echo '{{\"ms\": 2.0, \"peak_rss_gib\": 0.5}}'\ndone\n",
        log.display(),
        dir.join("requests.txt").display()
    );
    let path = dir.join("python");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn bench_model_interleaves_with_the_reference_and_reports_ratios() {
    let dir = tempfile::tempdir().unwrap();
    let checkout = dir.path().join("SAM4EM");
    std::fs::create_dir_all(checkout.join("sam2")).unwrap();
    let tool = dir.path().join("sam4em_torch_reference.py");
    std::fs::write(&tool, "# stand-in\n").unwrap();
    let python = fake_reference_python(dir.path(), None);
    let (checkout_s, tool_s, python_s) = (checkout.to_str().unwrap(), tool.to_str().unwrap(), python.to_str().unwrap());
    // Hiera-T at 128² with LoRA rank 4 against the given reference, `runs` timed runs.
    let bench = |runs: &str, train_slices: &str, tiled_px: &str, python: &str, json: bool| {
        let mut args = vec![
            "bench",
            "model",
            "--size",
            "tiny",
            "--image-size",
            "128",
            "--rank",
            "4",
            "--runs",
            runs,
            "--train-slices",
            train_slices,
            "--tiled-px",
            tiled_px,
            "--reference",
            checkout_s,
            "--reference-tool",
            tool_s,
            "--python",
            python,
        ];
        if json {
            args.push("--json");
        }
        sam4em(&args)
    };
    // The tiled figure on a 300² slice: 3 × 3 tiles of 128² at scale 1.
    let o = bench("2", "1", "300", python_s, true);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let figures = v["figures"].as_array().unwrap();
    let names: Vec<&str> = figures.iter().map(|f| f["figure"].as_str().unwrap()).collect();
    assert_eq!(names, ["trunk_neck", "encoder", "decode", "full", "app", "train_1"]);
    for f in figures {
        let ours = f["ours_ms"].as_f64().unwrap();
        assert!(ours > 0.0 && ours.is_finite(), "{f}");
        let compared = ["trunk_neck", "encoder", "full", "train_1"].contains(&f["figure"].as_str().unwrap());
        if compared {
            assert_eq!(f["reference_ms"].as_f64(), Some(2.0), "{f}");
            assert!((f["ratio"].as_f64().unwrap() - ours / 2.0).abs() < 1e-9, "{f}");
        } else {
            assert!(f["reference_ms"].is_null() && f["ratio"].is_null(), "no reference figure: {f}");
        }
    }
    assert_eq!(v["image_size"], 128);
    assert_eq!(v["training"]["reference_peak_gib"].as_f64(), Some(0.5));
    let tiled = &v["tiled"];
    assert_eq!((tiled["slice_px"].as_u64(), tiled["tiles_per_slice"].as_u64()), (Some(300), Some(9)), "{tiled}");
    let (tiles_per_s, slices_per_s) = (tiled["tiles_per_s"].as_f64().unwrap(), tiled["slices_per_s"].as_f64().unwrap());
    assert!(tiles_per_s > 0.0 && (tiles_per_s / slices_per_s - 9.0).abs() < 1e-6, "{tiled}");
    // One warm-up and two timed runs per compared figure, run by run: a training step each
    // time first, then encoder figures in turn.
    let requests = std::fs::read_to_string(dir.path().join("requests.txt")).unwrap();
    let figure_of =
        |l: &str| serde_json::from_str::<serde_json::Value>(l).unwrap()["figure"].as_str().unwrap().to_string();
    let order: Vec<String> = requests.lines().map(figure_of).collect();
    let model = ["trunk_neck", "encoder", "full"];
    let mut expected: Vec<&str> = vec!["train"; 3];
    for _ in 0..3 {
        expected.extend(model);
    }
    assert_eq!(order, expected);
    // The reference is built with our configuration (same size, rank and input).
    let args = std::fs::read_to_string(dir.path().join("args.txt")).unwrap();
    let lines: Vec<&str> = args.lines().collect();
    let config = lines[lines.iter().position(|l| *l == "--config").unwrap() + 1];
    let config: serde_json::Value = serde_json::from_str(config).unwrap();
    assert_eq!((config["image_size"].as_u64(), config["lora"]["rank"].as_u64()), (Some(128), Some(4)));
    assert_eq!(config["hiera"]["stages"], serde_json::json!([1, 2, 7, 2]), "Hiera-T");
    assert!(lines.contains(&checkout_s) && lines.contains(&tool_s), "{args}");

    // A reference that dies mid-run: one line naming its script, exit code 2.
    let python = fake_reference_python(dir.path(), Some(2));
    let o = bench("1", "0", "0", python.to_str().unwrap(), false);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("the PyTorch side stopped") && err.trim_end().ends_with("model_torch.py"), "{err}");
    // Not a checkout: refused before anything runs.
    fails_cleanly(
        &["bench", "model", "--size", "tiny", "--reference", dir.path().to_str().unwrap(), "--reference-tool", tool_s],
        dir.path(),
        "not a checkout of the original SAM4EM code",
    );
}
