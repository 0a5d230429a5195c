//! Real EM data from `../shared/data`: shapes, pixel values at known positions (read with
//! Pillow/tifffile when the test was written), numeric slice order, RGBA vs L labels, label-map
//! import with the Drosophila VNC mapping.

use crate::common;

use sam4em::io::{OpenOptions, import_binary_masks, import_label_map, open_stack, parse_label_mapping};
use sam4em::state::{ClassId, ClassTable, DType, MaskVolume, SliceIndex, Volume};

fn open(path: &std::path::Path) -> Volume {
    open_stack(path, &OpenOptions::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn value(v: &Volume, z: usize, y: usize, x: usize) -> f64 {
    v.slice(SliceIndex(z)).unwrap().value_at(x, y)
}

#[test]
fn drosophila_vnc_big_endian_tiffs() {
    let Some(shared) = common::shared() else { return };
    let dir = shared.join("data/drosophila-vnc-sstem/stack1/raw");
    let one = open(&dir.join("07.tif"));
    assert!(one.info().format.starts_with("TIFF (big-endian, uncompressed, strips"), "{}", one.info().format);
    assert_eq!((one.depth(), one.height(), one.width(), one.info().dtype), (1, 1024, 1024, DType::U8));
    let v = open(&dir);
    assert_eq!((v.depth(), v.height(), v.width()), (20, 1024, 1024));
    assert_eq!(
        v.info().size_on_disk_bytes,
        (0..20).map(|i| dir.join(format!("{i:02}.tif")).metadata().unwrap().len()).sum::<u64>()
    );
    for (z, y, x, want) in [
        (7, 0, 0, 190.0),
        (7, 100, 200, 158.0),
        (7, 1023, 1023, 167.0),
        (7, 512, 3, 186.0),
        (19, 0, 0, 155.0),
        (19, 100, 200, 33.0),
        (19, 1023, 1023, 77.0),
    ] {
        assert_eq!(value(&v, z, y, x), want, "z={z} y={y} x={x}");
    }
}

#[test]
fn drosophila_vnc_label_map_import() {
    let Some(shared) = common::shared() else { return };
    let labels = shared.join("data/drosophila-vnc-sstem/stack1/labels");
    let classes = ClassTable::default();
    let mapping = parse_label_mapping("159=glia,191=mitochondria,223=psd", &classes).unwrap();
    let mut masks = MaskVolume::new(1024, 1024, 20);
    let report = import_label_map(&labels, &mapping, &mut masks, &OpenOptions::default()).unwrap();
    // Counts from numpy over labels00000000.png … labels00000019.png.
    assert_eq!(report.foreground_px[&ClassId(1)], 597_185);
    assert_eq!(report.foreground_px[&ClassId(2)], 1_127_679);
    assert_eq!(report.foreground_px[&ClassId(3)], 117_147);
    // Membranes (0…128) and intracellular (255) are not mapped; 0 is background.
    let unmapped: Vec<u64> = report.unmapped_values.keys().copied().collect();
    assert_eq!(unmapped, [32, 64, 96, 128, 255]);
}

#[test]
fn lucchi_numeric_order_and_rgba_vs_l_labels() {
    let Some(shared) = common::shared() else { return };
    let test_in = open(&shared.join("data/lucchi-pp-test-z000-049/Test_In"));
    assert_eq!((test_in.depth(), test_in.height(), test_in.width(), test_in.info().dtype), (50, 768, 1024, DType::U8));
    for (z, want) in [
        (0, [145.0, 91.0, 181.0]),
        (9, [134.0, 152.0, 182.0]),
        (10, [134.0, 151.0, 173.0]),
        (49, [181.0, 100.0, 158.0]),
    ] {
        let got = [value(&test_in, z, 0, 0), value(&test_in, z, 100, 200), value(&test_in, z, 767, 1023)];
        assert_eq!(got, want, "mask{z:04}.png");
    }
    // Test_Out: RGBA 0.png … 49.png; slice 10 must be 10.png, not the third name in byte order.
    let mut masks = MaskVolume::new(1024, 768, 50);
    let rgba = shared.join("data/lucchi-pp-test-z000-049/Test_Out");
    let report = import_binary_masks(&rgba, ClassId(2), &mut masks, &OpenOptions::default()).unwrap();
    assert_eq!(report.foreground_px[&ClassId(2)], 3_378_095);
    let per_slice = |m: &MaskVolume, z| m.mask(ClassId(2), SliceIndex(z)).unwrap().count_ones();
    assert_eq!(
        [per_slice(&masks, 0), per_slice(&masks, 2), per_slice(&masks, 10), per_slice(&masks, 11)],
        [77_457, 79_777, 77_269, 77_513]
    );
    // Train_Out: single-channel L.
    let mut masks = MaskVolume::new(1024, 768, 50);
    let l = shared.join("data/lucchi-pp-train-z000-049/Train_Out");
    let report = import_binary_masks(&l, ClassId(2), &mut masks, &OpenOptions::default()).unwrap();
    assert_eq!(report.foreground_px[&ClassId(2)], 3_993_504);
    assert_eq!([per_slice(&masks, 0), per_slice(&masks, 10)], [81_903, 77_250]);
}

#[test]
fn flyem_png_stack() {
    let Some(shared) = common::shared() else { return };
    let v = open(&shared.join("data/flyem-medulla-fibsem-neuroproof-sample2/grayscale_maps"));
    assert_eq!((v.depth(), v.height(), v.width(), v.info().dtype), (250, 250, 250, DType::U8));
    assert_eq!([value(&v, 0, 0, 0), value(&v, 0, 100, 200), value(&v, 0, 249, 249)], [89.0, 188.0, 172.0]);
    assert_eq!([value(&v, 100, 0, 0), value(&v, 100, 100, 200), value(&v, 249, 249, 249)], [90.0, 84.0, 165.0]);
}

#[test]
fn gala_hdf5_images_and_lzf_labels() {
    let Some(shared) = common::shared() else { return };
    let gala = shared.join("data/gala-fibsem-mini");
    for (split, ids) in [("train", 88usize), ("test", 133)] {
        let image = open(&gala.join(format!("{split}-image.h5")));
        assert_eq!((image.depth(), image.height(), image.width()), (50, 100, 200), "{split}");
        assert_eq!(image.info().dtype, sam4em::state::DType::U8);
        assert!(image.info().format.contains("/stack"), "{}", image.info().format);
        // Real EM: slices differ and use much of the 8-bit range.
        let (s0, s1) = (image.slice(SliceIndex(0)).unwrap(), image.slice(SliceIndex(1)).unwrap());
        assert_ne!(s0.data, s1.data);
        let gt = open(&gala.join(format!("{split}-gt.lzf.h5")));
        assert_eq!((gt.depth(), gt.height(), gt.width()), (50, 100, 200));
        assert!(gt.info().format.contains("LZF"), "{}", gt.info().format);
        // The README's count of distinct ids (0 = boundary included) over the whole volume.
        let mut seen = std::collections::BTreeSet::new();
        for z in 0..gt.depth() {
            let s = gt.slice(SliceIndex(z)).unwrap();
            seen.extend((0..s.data.len()).map(|i| s.data.value_f64(i) as u64));
        }
        assert_eq!(seen.len(), ids, "{split}: distinct label ids");
    }
}
