//! Mask import and export: round trips are bit-identical, voxel sizes survive, outputs are
//! replaced atomically, label maps compose classes, bad outputs fail without damage.

use std::path::Path;

use sam4em::io::export::{LABELS_FILE, classes_sidecar};
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
        let opts = ExportOptions { compression, voxel_size: Some(voxel) };
        let formats = [ExportFormat::Tiff, ExportFormat::Png, ExportFormat::Labels];
        let report = export_masks(&masks, &classes, out.path(), &formats, &opts).unwrap();
        assert_eq!(report.outputs.len(), 3 + 3 + 2, "{:?}", report.outputs);
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
        ["glia", "glia.tif", "labels.classes.json", "labels.tif", "mitochondria", "mitochondria.tif", "psd", "psd.tif"]
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
