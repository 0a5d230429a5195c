//! Projects: save and reopen exactly, recover journalled edits after a crash, survive a torn
//! journal tail, refuse damaged files, find a moved stack, and keep edits when a save fails.

use std::fs;
use std::path::{Path, PathBuf};

use sam4em::io::session::{ModelRef, OpenedProject, Project, StackRef, autosession_dir};
use sam4em::state::bitplane::{BitPlane, PixelBox};
use sam4em::state::edit::Editor;
use sam4em::state::{
    ClassId, ClassTable, DType, MaskVolume, Provenance, ReviewState, SliceIndex, SliceMask, SliceMeta, SliceWrite,
    VolumeInfo,
};

// Odd sizes: edge tiles are partial in both directions.
const W: usize = 150;
const H: usize = 70;
const D: usize = 6;

fn info(path: &Path, depth: usize, dtype: DType) -> VolumeInfo {
    VolumeInfo {
        path: path.to_owned(),
        format: "test".into(),
        width: W,
        height: H,
        depth,
        dtype,
        voxel_size: None,
        size_on_disk_bytes: 0,
    }
}

/// A temporary folder with a (dummy) stack file and the path a project in it would get.
struct Fixture {
    tmp: tempfile::TempDir,
    stack: PathBuf,
    dir: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let stack = tmp.path().join("stack.tif");
    fs::write(&stack, b"not really a tiff").unwrap();
    let dir = tmp.path().join("proj");
    Fixture { tmp, stack, dir }
}

fn create(f: &Fixture) -> (Project, MaskVolume) {
    let project =
        Project::create(&f.dir, StackRef::from_info(&info(&f.stack, D, DType::U8)), &ClassTable::default()).unwrap();
    (project, MaskVolume::new(W, H, D))
}

fn open(dir: &Path) -> OpenedProject {
    Project::open(dir).unwrap_or_else(|e| panic!("open failed: {e}"))
}

fn rect(x0: usize, y0: usize, x1: usize, y1: usize) -> PixelBox {
    PixelBox { x0, y0, x1, y1 }
}

/// One committed stroke filling (or erasing) `area` of `class` at `z`; returns its writes.
fn stroke(
    ed: &mut Editor,
    masks: &mut MaskVolume,
    class: u16,
    z: usize,
    area: PixelBox,
    value: bool,
) -> Vec<SliceWrite> {
    ed.begin("brush").unwrap();
    ed.paint(masks, ClassId(class), SliceIndex(z), |p: &mut BitPlane| p.fill_rect(area, value)).unwrap();
    ed.commit(masks).expect("the stroke changed something").writes
}

/// A stroke of single pixels (the other bit plane path) on two slices at once.
fn dots(ed: &mut Editor, masks: &mut MaskVolume) -> Vec<SliceWrite> {
    ed.begin("dots").unwrap();
    for (class, z) in [(3, 5), (1, 2)] {
        ed.paint(masks, ClassId(class), SliceIndex(z), |p: &mut BitPlane| {
            for i in 0..20 {
                p.set((i * 37) % W, (i * 11) % H, true);
            }
            rect(0, 0, W, H)
        })
        .unwrap();
    }
    ed.commit(masks).unwrap().writes
}

fn accept(ed: &mut Editor, masks: &mut MaskVolume, class: u16, z: usize) -> Vec<SliceWrite> {
    ed.begin("accept").unwrap();
    let meta = SliceMeta { provenance: masks.provenance(ClassId(class), SliceIndex(z)), review: ReviewState::Accepted };
    ed.set_meta(masks, ClassId(class), SliceIndex(z), meta).unwrap();
    ed.commit(masks).unwrap().writes
}

/// Compares two mask volumes slice by slice (mask, touched, provenance, review), a missing
/// slice counting as an untouched one; versions are not compared.
fn assert_same(got: &MaskVolume, want: &MaskVolume) {
    assert_eq!((got.width(), got.height(), got.depth()), (want.width(), want.height(), want.depth()));
    let mut keys: Vec<(ClassId, SliceIndex)> = Vec::new();
    for v in [got, want] {
        for c in v.classes() {
            keys.extend(v.slices(c).map(|(z, _)| (c, z)));
        }
    }
    keys.sort();
    keys.dedup();
    let empty = SliceMask::new(W, H);
    for (c, z) in keys {
        let layers = |v: &MaskVolume| {
            let e = v.entry(c, z);
            (e.map_or(&empty, |e| &e.mask).clone(), e.map_or(&empty, |e| &e.touched).clone(), v.meta(c, z))
        };
        assert_eq!(layers(got), layers(want), "class {c} slice {z}");
    }
}

fn slice_file(dir: &Path, class: u16, z: usize) -> PathBuf {
    dir.join("masks").join(class.to_string()).join(format!("{z:06}.s4m"))
}

#[test]
fn save_and_reopen_is_exact() {
    let f = fixture();
    let (mut project, mut masks) = create(&f);
    let mut ed = Editor::default();
    project.append(&stroke(&mut ed, &mut masks, 1, 0, rect(10, 5, 140, 66), true)).unwrap();
    project.append(&stroke(&mut ed, &mut masks, 1, 0, rect(60, 20, 80, 30), false)).unwrap();
    project.append(&stroke(&mut ed, &mut masks, 2, 3, rect(0, 0, W, H), true)).unwrap();
    project.append(&dots(&mut ed, &mut masks)).unwrap();
    project.append(&accept(&mut ed, &mut masks, 2, 3)).unwrap();
    // Model output (not journalled) on a slice nobody drew.
    masks.put(ClassId(3), SliceIndex(1), SliceMask::from_fn(W, H, |i| i % 3 == 0), Provenance::Model).unwrap();
    project.mark_changed(ClassId(3), SliceIndex(1));
    let mut classes = ClassTable::default();
    classes.add("vesicle", "vesicle").unwrap();
    let model = ModelRef {
        checkpoint: Some("/models/sam4em.pt".into()),
        checkpoint_sha256: Some("ab".repeat(32)),
        adapter: None,
    };
    project.set_model(model.clone()).unwrap();
    project.set_view_z(SliceIndex(4));
    assert!(project.has_unsaved_changes());
    project.save(&masks, &classes).unwrap();
    assert!(!project.has_unsaved_changes());
    assert!(slice_file(&f.dir, 1, 0).is_file() && slice_file(&f.dir, 3, 1).is_file());
    assert!(!slice_file(&f.dir, 1, 1).exists(), "untouched slices have no file");
    let stack = project.stack().clone();
    drop(project);

    let opened = open(&f.dir);
    assert_eq!(opened.recovery.replayed_records, 0);
    assert!(!opened.recovery.torn_tail_dropped);
    assert_same(&opened.masks, &masks);
    assert_eq!(opened.project.classes(), &classes);
    assert_eq!(opened.project.stack(), &stack);
    assert_eq!(stack.path, f.stack);
    assert_eq!(stack.relative.as_deref(), Some(Path::new("../stack.tif")));
    assert_eq!(opened.project.file().model, model);
    assert_eq!(opened.project.file().view.map(|v| v.z), Some(4));
    assert_eq!(opened.masks.meta(ClassId(2), SliceIndex(3)).review, ReviewState::Accepted);
    assert!(opened.masks.mask(ClassId(1), SliceIndex(0)).unwrap().count_ones() > 0);
}

#[test]
fn create_refuses_a_non_empty_folder_and_an_existing_project() {
    let f = fixture();
    let stack = StackRef::from_info(&info(&f.stack, D, DType::U8));
    let e = Project::create(f.tmp.path(), stack.clone(), &ClassTable::default()).unwrap_err();
    assert!(e.to_string().contains("empty folder"), "{e}");
    create(&f);
    let e = Project::create(&f.dir, stack, &ClassTable::default()).unwrap_err();
    assert!(e.to_string().contains("already holds a project"), "{e}");
}

#[test]
fn crash_before_save_replays_the_journal() {
    let f = fixture();
    let (mut project, mut masks) = create(&f);
    let mut ed = Editor::default();
    project.append(&stroke(&mut ed, &mut masks, 1, 2, rect(3, 3, 100, 60), true)).unwrap();
    project.append(&dots(&mut ed, &mut masks)).unwrap();
    project.append(&accept(&mut ed, &mut masks, 3, 5)).unwrap();
    drop(project); // "kill -9": nothing saved.

    let OpenedProject { mut project, masks: mut reopened, recovery } = open(&f.dir);
    assert_eq!(recovery.replayed_records, 3);
    assert!(!recovery.torn_tail_dropped);
    assert!(recovery.to_string().contains("recovered 3 edits"), "{recovery}");
    assert_same(&reopened, &masks);
    assert!(project.has_unsaved_changes(), "replayed slices must be written by the next save");

    // Save, edit more, crash again.
    project.save(&reopened, &ClassTable::default()).unwrap();
    let mut ed = Editor::default();
    project.append(&stroke(&mut ed, &mut reopened, 1, 2, rect(0, 0, 20, 20), false)).unwrap();
    project.append(&stroke(&mut ed, &mut reopened, 2, 0, rect(64, 0, 128, 64), true)).unwrap();
    drop(project);
    let again = open(&f.dir);
    assert_eq!(again.recovery.replayed_records, 2);
    assert_same(&again.masks, &reopened);
}

/// The strokes the killed child of [`kill_9_loses_no_committed_edit`] journals.
fn child_strokes(ed: &mut Editor, masks: &mut MaskVolume) -> Vec<Vec<SliceWrite>> {
    vec![
        stroke(ed, masks, 1, 0, rect(5, 5, 90, 40), true),
        dots(ed, masks),
        stroke(ed, masks, 1, 0, rect(20, 10, 30, 20), false),
    ]
}

#[test]
fn kill_9_loses_no_committed_edit() {
    const CHILD: &str = "SAM4EM_SESSION_TEST_CHILD";
    if let Some(dir) = std::env::var_os(CHILD) {
        // The child: journal the strokes, say so, and wait to be killed.
        let OpenedProject { mut project, mut masks, .. } = open(Path::new(&dir));
        for writes in child_strokes(&mut Editor::default(), &mut masks) {
            project.append(&writes).unwrap();
        }
        println!("journalled");
        std::io::Write::flush(&mut std::io::stdout()).unwrap();
        std::thread::sleep(std::time::Duration::from_secs(60));
        return;
    }
    let f = fixture();
    let (project, mut masks) = create(&f);
    drop(project);
    // This test's name as the test binary knows it (its module path below the crate).
    let module = module_path!().split_once("::").map(|(_, m)| format!("{m}::")).unwrap_or_default();
    let name = format!("{module}kill_9_loses_no_committed_edit");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name.as_str(), "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, &f.dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let ready = std::io::BufRead::lines(stdout).any(|l| l.is_ok_and(|l| l.contains("journalled")));
    child.kill().unwrap(); // SIGKILL on Unix: no destructor, no flush runs.
    child.wait().unwrap();
    assert!(ready, "the child did not journal its strokes");

    child_strokes(&mut Editor::default(), &mut masks);
    let opened = open(&f.dir);
    assert_eq!((opened.recovery.replayed_records, opened.recovery.torn_tail_dropped), (3, false));
    assert_same(&opened.masks, &masks);
}

#[test]
fn torn_journal_tail_is_dropped_and_cut_off() {
    let f = fixture();
    let (mut project, mut masks) = create(&f);
    let journal = f.dir.join("journal.s4j");
    let mut ed = Editor::default();
    project.append(&stroke(&mut ed, &mut masks, 1, 0, rect(5, 5, 50, 50), true)).unwrap();
    project.append(&stroke(&mut ed, &mut masks, 2, 1, rect(70, 10, 149, 69), true)).unwrap();
    let after_two = masks.clone();
    let good_len = fs::metadata(&journal).unwrap().len();
    project.append(&stroke(&mut ed, &mut masks, 1, 0, rect(0, 0, W, H), false)).unwrap();
    let full_len = fs::metadata(&journal).unwrap().len();
    drop(project);
    // The third record was being written when the power went.
    let file = fs::OpenOptions::new().write(true).open(&journal).unwrap();
    file.set_len(good_len + (full_len - good_len) / 2).unwrap();
    drop(file);

    let torn = fs::read(&journal).unwrap();
    let OpenedProject { mut project, masks: mut reopened, recovery } = open(&f.dir);
    assert_eq!(recovery.replayed_records, 2);
    assert!(recovery.torn_tail_dropped);
    assert_eq!(recovery.dropped_bytes, (full_len - good_len) / 2);
    assert_eq!(recovery.lost_records, 0, "only the edit being written is lost");
    assert!(recovery.to_string().contains("an incomplete last edit"), "{recovery}");
    assert_same(&reopened, &after_two);
    assert_eq!(fs::metadata(&journal).unwrap().len(), good_len, "journal cut back to its good part");
    let kept = recovery.kept_as.clone().expect("a copy is kept");
    assert_eq!(fs::read(&kept).unwrap(), torn, "the copy is the journal as it was");
    assert_eq!(kept.parent(), journal.parent());

    // New edits follow the good records and are found again.
    let mut ed = Editor::default();
    project.append(&stroke(&mut ed, &mut reopened, 3, 4, rect(1, 1, 2, 2), true)).unwrap();
    drop(project);
    let again = open(&f.dir);
    assert_eq!((again.recovery.replayed_records, again.recovery.torn_tail_dropped), (3, false));
    assert_same(&again.masks, &reopened);
}

#[test]
fn damaged_last_record_ends_the_replay() {
    let f = fixture();
    let (mut project, mut masks) = create(&f);
    let mut ed = Editor::default();
    project.append(&stroke(&mut ed, &mut masks, 1, 0, rect(5, 5, 50, 50), true)).unwrap();
    let after_one = masks.clone();
    project.append(&stroke(&mut ed, &mut masks, 1, 1, rect(5, 5, 50, 50), true)).unwrap();
    drop(project);
    let journal = f.dir.join("journal.s4j");
    let mut bytes = fs::read(&journal).unwrap();
    let last = bytes.len() - 100;
    bytes[last] ^= 0x40;
    fs::write(&journal, &bytes).unwrap();
    let opened = open(&f.dir);
    assert_eq!((opened.recovery.replayed_records, opened.recovery.torn_tail_dropped), (1, true));
    assert_same(&opened.masks, &after_one);
}

#[test]
fn a_damaged_record_in_the_middle_keeps_a_copy_replays_what_precedes_and_says_what_was_lost() {
    let f = fixture();
    let (mut project, mut masks) = create(&f);
    let mut ed = Editor::default();
    project.append(&stroke(&mut ed, &mut masks, 1, 0, rect(5, 5, 50, 50), true)).unwrap();
    let after_one = masks.clone();
    let journal = f.dir.join("journal.s4j");
    let one_len = fs::metadata(&journal).unwrap().len() as usize;
    project.append(&stroke(&mut ed, &mut masks, 1, 1, rect(5, 5, 50, 50), true)).unwrap();
    project.append(&stroke(&mut ed, &mut masks, 2, 2, rect(1, 1, 9, 9), true)).unwrap();
    project.append(&stroke(&mut ed, &mut masks, 3, 3, rect(1, 1, 9, 9), true)).unwrap();
    drop(project);
    // A bit flips inside record 2's payload (a bad sector, a bad copy): records 3 and 4 are
    // intact but follow it.
    let mut bytes = fs::read(&journal).unwrap();
    bytes[one_len + 20] ^= 0x01;
    fs::write(&journal, &bytes).unwrap();
    let project_json = fs::read(f.dir.join("project.json")).unwrap();

    // Read-only (an export): the same masks, and nothing in the folder changes.
    let ro = Project::open_read_only(&f.dir).unwrap();
    assert_eq!((ro.recovery.replayed_records, ro.recovery.lost_records), (1, 2));
    assert_eq!(ro.recovery.kept_as, None);
    assert_same(&ro.masks, &after_one);
    let mut ro_project = ro.project;
    let e = ro_project.append(&stroke(&mut ed, &mut masks, 1, 5, rect(1, 1, 2, 2), true)).unwrap_err();
    assert!(e.to_string().contains("read-only"), "{e}");
    assert_eq!(fs::read(&journal).unwrap(), bytes, "a read-only open never rewrites the journal");
    assert_eq!(fs::read(f.dir.join("project.json")).unwrap(), project_json);
    let entries = || fs::read_dir(&f.dir).unwrap().map(|e| e.unwrap().file_name()).collect::<Vec<_>>();
    assert!(!entries().iter().any(|n| n.to_string_lossy().contains("damaged")), "{:?}", entries());

    // For editing: what precedes the damage is replayed, the user is told which records were
    // lost, and the journal as it was is kept beside the cut one.
    let OpenedProject { masks: reopened, recovery, .. } = open(&f.dir);
    assert_same(&reopened, &after_one);
    assert_eq!((recovery.replayed_records, recovery.lost_records), (1, 2));
    assert!(recovery.lost_edits());
    let text = recovery.to_string();
    assert!(text.contains("journal record 2 is damaged: it and the 2 edits after it"), "{text}");
    let kept = recovery.kept_as.clone().unwrap();
    assert!(text.contains(&kept.display().to_string()), "{text}");
    assert_eq!(fs::read(&kept).unwrap(), bytes);
    assert_eq!(fs::metadata(&journal).unwrap().len() as usize, one_len, "cut after record 1");
}

#[test]
fn undo_and_redo_are_journalled() {
    let f = fixture();
    let (mut project, mut masks) = create(&f);
    let mut ed = Editor::default();
    project.append(&stroke(&mut ed, &mut masks, 1, 0, rect(5, 5, 50, 50), true)).unwrap();
    project.append(&stroke(&mut ed, &mut masks, 1, 0, rect(30, 30, 120, 60), true)).unwrap();
    project.append(&stroke(&mut ed, &mut masks, 2, 4, rect(0, 0, 9, 9), true)).unwrap();
    project.save(&masks, &ClassTable::default()).unwrap();
    // Undo the third and second strokes, redo the second, undo it again: the first remains,
    // and class 2 slice 4 is back to nothing…
    for _ in 0..2 {
        project.append(&ed.undo(&mut masks).unwrap().writes).unwrap();
    }
    project.append(&ed.redo(&mut masks).unwrap().writes).unwrap();
    project.append(&ed.undo(&mut masks).unwrap().writes).unwrap();
    assert!(masks.mask(ClassId(1), SliceIndex(0)).unwrap().count_ones() > 0);
    drop(project);

    let OpenedProject { mut project, masks: reopened, recovery } = open(&f.dir);
    assert_eq!(recovery.replayed_records, 4);
    assert_same(&reopened, &masks);
    assert_eq!(reopened.meta(ClassId(2), SliceIndex(4)), SliceMeta::UNTOUCHED);
    // …so saving deletes its file.
    assert!(slice_file(&f.dir, 2, 4).is_file());
    project.save(&reopened, &ClassTable::default()).unwrap();
    assert!(!slice_file(&f.dir, 2, 4).exists());
    drop(project);
    assert_same(&open(&f.dir).masks, &masks);
}

#[test]
fn damaged_files_are_refused_with_their_name() {
    let f = fixture();
    let (mut project, mut masks) = create(&f);
    let mut ed = Editor::default();
    project.append(&stroke(&mut ed, &mut masks, 1, 3, rect(5, 5, 50, 50), true)).unwrap();
    project.save(&masks, &ClassTable::default()).unwrap();
    drop(project);

    let slice = slice_file(&f.dir, 1, 3);
    let good = fs::read(&slice).unwrap();
    let mut bad = good.clone();
    bad[40] ^= 0x01;
    fs::write(&slice, &bad).unwrap();
    let e = Project::open(&f.dir).unwrap_err().to_string();
    assert!(e.contains("000003.s4m") && e.contains("checksum"), "{e}");
    fs::write(&slice, &good[..good.len() - 10]).unwrap();
    let e = Project::open(&f.dir).unwrap_err().to_string();
    assert!(e.contains("000003.s4m"), "{e}");
    fs::write(&slice, &good).unwrap();

    let journal = f.dir.join("journal.s4j");
    let header = fs::read(&journal).unwrap();
    fs::write(&journal, b"garbage!garbage!").unwrap();
    let e = Project::open(&f.dir).unwrap_err().to_string();
    assert!(e.contains("journal.s4j") && e.contains("header"), "{e}");
    fs::write(&journal, header).unwrap();

    let json = f.dir.join("project.json");
    let text = fs::read_to_string(&json).unwrap();
    fs::write(&json, &text[..text.len() / 2]).unwrap();
    let e = Project::open(&f.dir).unwrap_err().to_string();
    assert!(e.contains("project.json"), "{e}");
    fs::write(&json, text).unwrap();
    assert_same(&open(&f.dir).masks, &masks);
}

#[test]
fn moved_stack_is_found_or_relinked() {
    let f = fixture();
    let (mut project, mut masks) = create(&f);
    let mut ed = Editor::default();
    project.append(&stroke(&mut ed, &mut masks, 1, 0, rect(5, 5, 50, 50), true)).unwrap();
    project.save(&masks, &ClassTable::default()).unwrap();
    assert_eq!(project.stack_path().unwrap(), f.stack);
    drop(project);

    // Project and stack moved together: found through the relative path.
    let moved = f.tmp.path().join("moved");
    fs::create_dir(&moved).unwrap();
    fs::rename(&f.dir, moved.join("proj")).unwrap();
    fs::rename(&f.stack, moved.join("stack.tif")).unwrap();
    let opened = open(&moved.join("proj"));
    assert_eq!(opened.project.stack_path().unwrap(), moved.join("proj/../stack.tif"));
    assert_same(&opened.masks, &masks);
    drop(opened);

    // The stack moved elsewhere: missing until relinked.
    let elsewhere = f.tmp.path().join("elsewhere.tif");
    fs::rename(moved.join("stack.tif"), &elsewhere).unwrap();
    let mut project = open(&moved.join("proj")).project;
    let e = project.stack_path().unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("stack.tif") && msg.contains("choose its new location"), "{msg}");
    let e = project.relink(&elsewhere, &info(&elsewhere, D + 1, DType::U8)).unwrap_err().to_string();
    assert!(e.contains("150x70x6 uint8") && e.contains("150x70x7 uint8") && e.contains("elsewhere.tif"), "{e}");
    let e = project.relink(&elsewhere, &info(&elsewhere, D, DType::U16)).unwrap_err().to_string();
    assert!(e.contains("uint16"), "{e}");
    assert!(project.stack_path().is_err(), "a refused relink changes nothing");
    project.relink(&elsewhere, &info(&elsewhere, D, DType::U8)).unwrap();
    assert_eq!(project.stack_path().unwrap(), elsewhere);
    drop(project);
    let reopened = open(&moved.join("proj"));
    assert_eq!(reopened.project.stack_path().unwrap(), elsewhere);
    assert_eq!(reopened.project.stack().relative.as_deref(), Some(Path::new("../../elsewhere.tif")));
}

#[test]
fn save_as_writes_a_complete_copy() {
    let f = fixture();
    let (mut project, mut masks) = create(&f);
    let mut ed = Editor::default();
    project.append(&stroke(&mut ed, &mut masks, 1, 0, rect(5, 5, 50, 50), true)).unwrap();
    project.save(&masks, &ClassTable::default()).unwrap();
    project.append(&stroke(&mut ed, &mut masks, 2, 5, rect(5, 5, 50, 50), true)).unwrap();
    let copy = f.tmp.path().join("copy");
    project.save_as(&copy, &masks, &ClassTable::default()).unwrap();
    assert_eq!(project.dir(), copy);
    project.append(&stroke(&mut ed, &mut masks, 3, 1, rect(5, 5, 50, 50), true)).unwrap();
    drop(project);
    let opened = open(&copy);
    assert_eq!(opened.recovery.replayed_records, 1);
    assert_same(&opened.masks, &masks);
    assert_eq!(opened.project.stack_path().unwrap(), f.stack);
}

#[test]
fn failed_save_names_the_file_and_keeps_the_journal() {
    let f = fixture();
    let (mut project, mut masks) = create(&f);
    let mut ed = Editor::default();
    project.append(&stroke(&mut ed, &mut masks, 1, 0, rect(5, 5, 50, 50), true)).unwrap();
    project.save(&masks, &ClassTable::default()).unwrap();
    project.append(&stroke(&mut ed, &mut masks, 1, 0, rect(40, 40, 100, 69), true)).unwrap();
    project.append(&stroke(&mut ed, &mut masks, 2, 1, rect(0, 0, 10, 10), true)).unwrap();

    // A file where class 2's folder must go: the save fails half-way (class 1's slice is
    // already rewritten), whatever the privileges.
    let blocker = f.dir.join("masks").join("2");
    fs::write(&blocker, b"in the way").unwrap();
    let msg = project.save(&masks, &ClassTable::default()).unwrap_err().to_string();
    assert!(msg.starts_with("cannot write") && msg.ends_with(&*blocker.to_string_lossy()), "{msg}");
    assert!(project.has_unsaved_changes());
    fs::remove_file(&blocker).unwrap();
    read_only_save_fails(&f.dir, &mut project, &masks);

    // The journal still holds both edits: a crash now loses nothing.
    let opened = open(&f.dir);
    assert_eq!(opened.recovery.replayed_records, 2);
    assert_same(&opened.masks, &masks);
    drop(opened);
    // And the project saves once the obstacle is gone.
    project.save(&masks, &ClassTable::default()).unwrap();
    drop(project);
    let opened = open(&f.dir);
    assert_eq!(opened.recovery.replayed_records, 0);
    assert_same(&opened.masks, &masks);
}

/// A save into read-only folders fails naming a file in them (skipped where permissions are
/// not enforced, e.g. as root).
#[cfg(unix)]
fn read_only_save_fails(dir: &Path, project: &mut Project, masks: &MaskVolume) {
    use std::os::unix::fs::PermissionsExt;

    let folders = [dir.to_owned(), dir.join("masks"), dir.join("masks/1")];
    let set_mode = |mode| {
        for d in &folders {
            fs::set_permissions(d, fs::Permissions::from_mode(mode)).unwrap();
        }
    };
    set_mode(0o555);
    if fs::write(dir.join("probe"), b"").is_ok() {
        set_mode(0o755);
        fs::remove_file(dir.join("probe")).unwrap();
        eprintln!("skipping the read-only part: permissions are not enforced (root?)");
        return;
    }
    let result = project.save(masks, &ClassTable::default());
    set_mode(0o755);
    let msg = result.unwrap_err().to_string();
    assert!(msg.starts_with("cannot write") && msg.contains(&*dir.to_string_lossy()), "{msg}");
}

#[cfg(not(unix))]
fn read_only_save_fails(_: &Path, _: &mut Project, _: &MaskVolume) {}

#[test]
fn autosession_dir_is_stable_and_distinct() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let a = tmp.path().join("my stack.tif");
    let b = tmp.path().join("sub").join("my stack.tif");
    fs::write(&a, b"x").unwrap();
    let dir_a = autosession_dir(&data, &a);
    assert_eq!(dir_a, autosession_dir(&data, &a));
    // The same file named through another path (`sub/..`) is the same session.
    fs::create_dir(tmp.path().join("sub")).unwrap();
    assert_eq!(dir_a, autosession_dir(&data, &tmp.path().join("sub/../my stack.tif")));
    let dir_b = autosession_dir(&data, &b);
    assert_ne!(dir_a, dir_b);
    assert_eq!(dir_a.parent().unwrap(), data.join("sessions"));
    let name = dir_a.file_name().unwrap().to_str().unwrap();
    let (stem, hash) = name.rsplit_once('-').unwrap();
    assert_eq!(stem, "my_stack.tif");
    assert!(hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()), "{name}");
}
