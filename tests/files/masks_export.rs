//! Mask import and export: round trips are bit-identical, voxel sizes survive, outputs are
//! replaced atomically, label maps compose classes, bad outputs fail without damage.

use std::path::Path;

use sam4em::io::export::{LABELS_FILE, MANIFEST_FILE, Manifest, classes_sidecar};
use sam4em::io::{
    ExportFormat, ExportOptions, OpenOptions, TiffCompression, export_masks, import_binary_masks, import_label_map,
    open_stack, parse_label_mapping, sidecar_mapping,
};
use sam4em::state::{ClassId, ClassTable, MaskVolume, Provenance, SliceIndex, SliceMask, VoxelSize};

/// Builds a mask pixel by pixel with `set`, independently of the bulk paths under test.
fn mask_from(w: usize, h: usize, is_set: impl Fn(usize, usize) -> bool) -> SliceMask {
    let mut m = SliceMask::new(w, h);
    for y in 0..h {
        for x in 0..w {
            if is_set(x, y) {
                m.set(x, y, true);
            }
        }
    }
    m
}

/// Three classes of pseudo-random blobs on a 70 x 45 x 5 stack (odd sizes cross tile edges);
/// slice 3 is left untouched and PSD is empty on slice 1.
fn sample_masks() -> MaskVolume {
    let (w, h, d) = (70, 45, 5);
    let mut m = MaskVolume::new(w, h, d);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for z in [0usize, 1, 2, 4] {
        for class in [1u16, 2, 3] {
            if class == 3 && z == 1 {
                continue;
            }
            let (cx, cy, r) = ((rnd() % w as u64) as i64, (rnd() % h as u64) as i64, 4 + (rnd() % 12) as i64);
            let mask = mask_from(w, h, |x, y| (x as i64 - cx).pow(2) + (y as i64 - cy).pow(2) <= r * r);
            m.put(ClassId(class), SliceIndex(z), mask, Provenance::User).unwrap();
        }
    }
    m
}

fn assert_same_pixels(a: &MaskVolume, b: &MaskVolume, class: ClassId) {
    for z in (0..a.depth()).map(SliceIndex) {
        let empty = SliceMask::new(a.width(), a.height());
        let (ma, mb) = (a.mask(class, z).unwrap_or(&empty), b.mask(class, z).unwrap_or(&empty));
        assert!(ma == mb, "class {class} slice {z}: {ma:?} vs {mb:?}");
    }
}

#[test]
fn export_then_import_is_bit_identical_in_every_format() {
    let masks = sample_masks();
    let classes = ClassTable::default();
    let out = tempfile::tempdir().unwrap();
    let voxel = VoxelSize { x_nm: 4.6, y_nm: 4.6, z_nm: Some(45.0) };
    for compression in
        [TiffCompression::Deflate, TiffCompression::None, TiffCompression::Lzw, TiffCompression::Packbits]
    {
        let opts = ExportOptions { compression, voxel_size: Some(voxel), adapter: None };
        let formats = [ExportFormat::Tiff, ExportFormat::Png, ExportFormat::Labels];
        let report = export_masks(&masks, &classes, out.path(), &formats, &opts).unwrap();
        // Three TIFFs, three PNG folders, the label map and its sidecar, the manifest.
        assert_eq!(report.outputs.len(), 3 + 3 + 2 + 1, "{:?}", report.outputs);
        let read = OpenOptions::default();
        for c in classes.iter() {
            // Binary TIFF: uint8 0/255, calibrated.
            let tif = out.path().join(format!("{}.tif", c.export_name));
            let v = open_stack(&tif, &read).unwrap();
            assert_eq!(v.info().dtype, sam4em::state::DType::U8);
            let vs = v.info().voxel_size.expect("voxel size kept");
            assert!((vs.x_nm - 4.6).abs() < 1e-6 && (vs.z_nm.unwrap() - 45.0).abs() < 1e-9, "{vs:?}");
            let s = v.slice(SliceIndex(0)).unwrap();
            assert!((0..s.data.len()).all(|i| matches!(s.data.value_f64(i), 0.0 | 255.0)));
            let mut back = MaskVolume::new(70, 45, 5);
            import_binary_masks(&tif, c.id, &mut back, &read).unwrap();
            assert_same_pixels(&masks, &back, c.id);
            // PNG sequence.
            let mut back = MaskVolume::new(70, 45, 5);
            import_binary_masks(&out.path().join(&c.export_name), c.id, &mut back, &read).unwrap();
            assert_same_pixels(&masks, &back, c.id);
            assert_eq!(back.provenance(c.id, SliceIndex(0)), Provenance::Imported);
        }
        // Label map, mapped back through its sidecar.
        let labels = out.path().join(LABELS_FILE);
        assert!(classes_sidecar(&labels).exists());
        let mapping = sidecar_mapping(&labels, &classes).unwrap().expect("sidecar");
        let mut back = MaskVolume::new(70, 45, 5);
        let report = import_label_map(&labels, &mapping, &mut back, &read).unwrap();
        assert!(report.unmapped_values.is_empty());
        for c in classes.iter() {
            // Classes overlap in a few pixels; the later class wins in a label map.
            let mut expected = masks.clone();
            for z in (0..5).map(SliceIndex) {
                let Some(mine) = masks.mask(c.id, z) else { continue };
                let later: Vec<&SliceMask> =
                    classes.iter().filter(|o| o.id > c.id).filter_map(|o| masks.mask(o.id, z)).collect();
                let (w, h) = (mine.width(), mine.height());
                let kept = mask_from(w, h, |x, y| mine.get(x, y) && !later.iter().any(|m| m.get(x, y)));
                expected.put(c.id, z, kept, Provenance::User).unwrap();
            }
            assert_same_pixels(&expected, &back, c.id);
        }
    }
    // Only the outputs are left: no temporaries.
    let mut names: Vec<String> =
        std::fs::read_dir(out.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "glia",
            "glia.tif",
            "labels.classes.json",
            "labels.tif",
            "manifest.json",
            "mitochondria",
            "mitochondria.tif",
            "psd",
            "psd.tif"
        ]
    );
    assert_eq!(std::fs::read_dir(out.path().join("psd")).unwrap().count(), 5);
}

#[test]
fn failed_export_replaces_nothing() {
    let masks = sample_masks();
    let classes = ClassTable::default();
    let out = tempfile::tempdir().unwrap();
    std::fs::write(out.path().join("glia.tif"), b"earlier export").unwrap();
    // A folder where psd.tif must go: the third output cannot be written.
    std::fs::create_dir(out.path().join("psd.tif")).unwrap();
    let err = export_masks(&masks, &classes, out.path(), &[ExportFormat::Tiff], &ExportOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("cannot write") && msg.ends_with("psd.tif"), "{msg}");
    assert_eq!(std::fs::read(out.path().join("glia.tif")).unwrap(), b"earlier export");
    assert!(!out.path().join("mitochondria.tif").exists());
    let leftovers: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // An output folder that cannot exist (its parent is a file).
    let blocker = out.path().join("blocker");
    std::fs::write(&blocker, b"").unwrap();
    let msg = export_masks(&masks, &classes, &blocker.join("out"), &[ExportFormat::Tiff], &ExportOptions::default())
        .unwrap_err()
        .to_string();
    assert!(msg.starts_with("cannot write") && msg.ends_with("out"), "{msg}");
}

#[test]
fn re_export_replaces_png_folders_whole() {
    let masks = sample_masks();
    let classes = ClassTable::default();
    let out = tempfile::tempdir().unwrap();
    std::fs::create_dir(out.path().join("glia")).unwrap();
    std::fs::write(out.path().join("glia/stale_9999.png"), b"old").unwrap();
    export_masks(&masks, &classes, out.path(), &[ExportFormat::Png], &ExportOptions::default()).unwrap();
    assert!(!out.path().join("glia/stale_9999.png").exists());
    assert!(out.path().join("glia/glia_0004.png").exists());
    assert!(!out.path().join(".glia.old").exists());
}

#[test]
fn label_map_ids_past_255_use_16_bits() {
    let mut classes = ClassTable::default();
    for i in 0..300 {
        let id = classes.add(&format!("c{i}"), &format!("c{i}")).unwrap();
        if i < 297 {
            classes.remove(id).unwrap();
        }
    }
    let last = classes.iter().last().unwrap().id;
    assert!(last.0 > 255);
    let mut masks = MaskVolume::new(8, 8, 1);
    let mut m = SliceMask::new(8, 8);
    m.set(3, 4, true);
    masks.put(last, SliceIndex(0), m, Provenance::User).unwrap();
    let out = tempfile::tempdir().unwrap();
    export_masks(&masks, &classes, out.path(), &[ExportFormat::Labels], &ExportOptions::default()).unwrap();
    let v = open_stack(&out.path().join(LABELS_FILE), &OpenOptions::default()).unwrap();
    assert_eq!(v.info().dtype, sam4em::state::DType::U16);
    assert_eq!(v.slice(SliceIndex(0)).unwrap().value_at(3, 4), f64::from(last.0));
}

#[test]
fn mapping_parser_reports_mistakes() {
    let classes = ClassTable::default();
    let m = parse_label_mapping("159=glia, 191=mitochondria,223=PSD", &classes).unwrap();
    assert_eq!(m, [(159, ClassId(1)), (191, ClassId(2)), (223, ClassId(3))]);
    assert!(parse_label_mapping("159=axon", &classes).unwrap_err().contains("no class `axon`"));
    assert!(parse_label_mapping("x=glia", &classes).unwrap_err().contains("not a label value"));
    assert!(parse_label_mapping("1=glia,1=psd", &classes).unwrap_err().contains("mapped twice"));
}

#[test]
fn masks_must_match_the_stack_shape() {
    let masks = sample_masks();
    let out = tempfile::tempdir().unwrap();
    export_masks(&masks, &ClassTable::default(), out.path(), &[ExportFormat::Tiff], &ExportOptions::default()).unwrap();
    let mut wrong = MaskVolume::new(70, 45, 6);
    let err = import_binary_masks(&out.path().join("glia.tif"), ClassId(1), &mut wrong, &OpenOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("masks are 70x45 px x 5 slices but the stack is 70x45 px x 6 slices"), "{err}");
    assert!(Path::new(&err.rsplit(": ").next().unwrap()).ends_with("glia.tif"), "{err}");
}

/// The mode a new file gets in `dir` from this process (0666 less the umask), as any program's.
#[cfg(unix)]
fn normal_file_mode(dir: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    let probe = dir.join("probe");
    std::fs::File::create(&probe).unwrap();
    let mode = std::fs::metadata(&probe).unwrap().permissions().mode() & 0o777;
    std::fs::remove_file(probe).unwrap();
    mode
}

#[test]
fn a_new_folder_appears_whole_with_a_manifest_and_normal_permissions() {
    let masks = sample_masks();
    let parent = tempfile::tempdir().unwrap();
    let out = parent.path().join("export");
    let opts = ExportOptions { adapter: Some("v3 (adapters/v003.safetensors)".into()), ..Default::default() };
    let formats = [ExportFormat::Tiff, ExportFormat::Png, ExportFormat::Labels];
    let report = export_masks(&masks, &ClassTable::default(), &out, &formats, &opts).unwrap();
    assert!(report.outputs.iter().all(|p| p.starts_with(&out)), "{:?}", report.outputs);
    assert!(report.outputs.iter().all(|p| p.exists()), "{:?}", report.outputs);
    // Built as a hidden sibling and renamed into place: nothing else is left beside it.
    let beside: Vec<_> = std::fs::read_dir(parent.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(beside, ["export"]);
    let manifest = Manifest::verify(&out).unwrap();
    assert_eq!(manifest.adapter.as_deref(), Some("v3 (adapters/v003.safetensors)"));
    let names: Vec<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
    assert!(names.contains(&"glia.tif") && names.contains(&LABELS_FILE), "{names:?}");
    assert!(names.iter().any(|n| n.starts_with("mitochondria/") && n.ends_with(".png")), "{names:?}");
    assert!(manifest.files.iter().all(|f| f.sha256.len() == 64 && f.bytes > 0));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let normal = normal_file_mode(parent.path());
        for f in &manifest.files {
            let mode = std::fs::metadata(out.join(&f.path)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, normal, "{}: {mode:o}, a new file here gets {normal:o}", f.path);
        }
        let dir_mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode & 0o444, normal & 0o444, "the folder is as readable as the files: {dir_mode:o}");
    }
}

#[test]
fn a_torn_or_changed_export_is_told_from_a_complete_one() {
    let masks = sample_masks();
    let out = tempfile::tempdir().unwrap();
    let classes = ClassTable::default();
    std::fs::write(out.path().join("notes.txt"), b"the user's own file").unwrap();
    export_masks(&masks, &classes, out.path(), &[ExportFormat::Tiff], &ExportOptions::default()).unwrap();
    let first = Manifest::verify(out.path()).unwrap();
    assert!(!first.files.iter().any(|f| f.path == "notes.txt"), "only the export's files are listed");
    // Exporting again into the same folder: every file replaced, a fresh manifest last.
    let mut more = masks.clone();
    more.put(ClassId(1), SliceIndex(0), mask_from(70, 45, |_, _| true), Provenance::User).unwrap();
    export_masks(&more, &classes, out.path(), &[ExportFormat::Tiff], &ExportOptions::default()).unwrap();
    let second = Manifest::verify(out.path()).unwrap();
    assert_ne!(first.files, second.files);
    assert_eq!(std::fs::read(out.path().join("notes.txt")).unwrap(), b"the user's own file");
    // A file that no longer matches (a torn later export, a hand edit) is named.
    std::fs::write(out.path().join("glia.tif"), b"half").unwrap();
    let err = Manifest::verify(out.path()).unwrap_err().to_string();
    assert!(err.contains("glia.tif") && err.contains("differs from the export's manifest"), "{err}");
    // No manifest: not a complete export.
    std::fs::remove_file(out.path().join(MANIFEST_FILE)).unwrap();
    let err = Manifest::verify(out.path()).unwrap_err().to_string();
    assert!(err.contains("no complete export here"), "{err}");
}

/// Masks kept outside a [`MaskVolume`] and read one slice at a time (as `sam4em predict` keeps
/// its masks in a temporary file); `fail_at` makes reading that slice fail.
struct PagedMasks {
    volume: MaskVolume,
    fail_at: Option<SliceIndex>,
    reads: std::cell::Cell<usize>,
}

impl sam4em::io::export::MaskPages for PagedMasks {
    fn size(&self) -> (usize, usize, usize) {
        (self.volume.width(), self.volume.height(), self.volume.depth())
    }

    fn page(&self, class: ClassId, z: SliceIndex) -> Result<Option<std::borrow::Cow<'_, SliceMask>>, String> {
        self.reads.set(self.reads.get() + 1);
        if Some(z) == self.fail_at {
            return Err("the disk went away".into());
        }
        // An owned copy, as a page read from a file is.
        Ok(self.volume.mask(class, z).cloned().map(std::borrow::Cow::Owned))
    }
}

#[test]
fn masks_read_page_by_page_export_the_same_files_and_a_failed_read_replaces_nothing() {
    let classes = ClassTable::default();
    let formats = [ExportFormat::Tiff, ExportFormat::Png, ExportFormat::Labels];
    let [from_volume, paged] = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    export_masks(&sample_masks(), &classes, from_volume.path(), &formats, &ExportOptions::default()).unwrap();
    let pages = PagedMasks { volume: sample_masks(), fail_at: None, reads: Default::default() };
    export_masks(&pages, &classes, paged.path(), &formats, &ExportOptions::default()).unwrap();
    // Every page of every class, once per format that writes it (the label map reads all).
    assert_eq!(pages.reads.get(), 3 * 5 * formats.len());
    let [a, b] = [&from_volume, &paged].map(|d| Manifest::verify(d.path()).unwrap().files);
    assert_eq!(a, b, "the same files, byte for byte");

    // A page that cannot be read: the error names the output and the slice, the earlier
    // export stays as it was.
    let failing = PagedMasks { volume: sample_masks(), fail_at: Some(SliceIndex(2)), reads: Default::default() };
    let err = export_masks(&failing, &classes, paged.path(), &formats, &ExportOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("cannot write: slice 2: the disk went away") && msg.ends_with("glia.tif"), "{msg}");
    assert_eq!(Manifest::verify(paged.path()).unwrap().files, b);
}
