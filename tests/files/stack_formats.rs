//! Stack input: every TIFF flavour the I/O layer claims, PNG folders, metadata, the slice
//! cache, and bad input. Fixtures in `tests/data/tiff` were written by tifffile.

use crate::common;

use std::io::Write;
use std::path::Path;

use common::{fixture_f32, fixture_u8, fixture_u16, test_data};
use sam4em::io::{ColorToGray, IoError, OpenOptions, open_stack};
use sam4em::state::{DType, SliceIndex, Volume};

fn open(path: &Path) -> Volume {
    open_stack(path, &OpenOptions::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn assert_values(v: &Volume, expected: impl Fn(usize, usize, usize) -> f64) {
    for z in 0..v.depth() {
        let s = v.slice(SliceIndex(z)).unwrap();
        for y in 0..v.height() {
            for x in 0..v.width() {
                assert_eq!(s.value_at(x, y), expected(z, y, x), "{} at z={z} y={y} x={x}", v.path().display());
            }
        }
    }
}

#[test]
fn every_tiff_flavour_decodes_exactly() {
    let mut checked = 0;
    for dtype in ["u8", "u16", "f32"] {
        for order in ["le", "be"] {
            for comp in ["none", "lzw", "deflate", "packbits"] {
                for layout in ["strips", "tiles"] {
                    let path = test_data(&format!("tiff/{dtype}_{order}_{comp}_{layout}.tif"));
                    if !path.exists() {
                        assert_eq!((dtype, comp), ("f32", "packbits"), "fixture missing: {}", path.display());
                        continue;
                    }
                    let v = open(&path);
                    assert_eq!((v.depth(), v.height(), v.width()), (3, 24, 40), "{}", path.display());
                    let (want, f): (DType, fn(usize, usize, usize) -> f64) = match dtype {
                        "u8" => (DType::U8, fixture_u8),
                        "u16" => (DType::U16, fixture_u16),
                        _ => (DType::F32, fixture_f32),
                    };
                    assert_eq!(v.info().dtype, want);
                    let fmt = &v.info().format;
                    assert!(fmt.contains(if order == "be" { "big-endian" } else { "little-endian" }), "{fmt}");
                    assert!(fmt.contains(layout), "{fmt}");
                    assert_values(&v, f);
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 44);
    assert_values(&open(&test_data("tiff/u16_le_lzw_predictor.tif")), fixture_u16);
}

#[test]
fn imagej_metadata_gives_voxel_size() {
    let v = open(&test_data("tiff/imagej_u8.tif"));
    let vs = v.info().voxel_size.expect("ImageJ calibration");
    assert!((vs.x_nm - 4.6).abs() < 1e-6 && (vs.y_nm - 4.6).abs() < 1e-6, "{vs:?}");
    assert!((vs.z_nm.unwrap() - 50.0).abs() < 1e-9, "{vs:?}");
    assert_values(&v, fixture_u8);
}

#[test]
fn imagej_large_stack_layout_reads_all_pages() {
    let v = open(&test_data("tiff/imagej_u16_contiguous.tif"));
    assert_eq!(v.depth(), 3);
    assert!(v.info().format.contains("ImageJ large-stack layout"), "{}", v.info().format);
    assert_values(&v, fixture_u16);
}

#[test]
fn ome_bigtiff_metadata() {
    let v = open(&test_data("tiff/ome_u16_bigtiff.ome.tif"));
    assert!(v.info().format.starts_with("BigTIFF"), "{}", v.info().format);
    let vs = v.info().voxel_size.unwrap();
    assert!((vs.x_nm - 8.0).abs() < 1e-9 && (vs.y_nm - 8.0).abs() < 1e-9 && vs.z_nm == Some(30.0), "{vs:?}");
    assert_values(&v, fixture_u16);
}

#[test]
fn resolution_tags_in_centimetres() {
    let vs = open(&test_data("tiff/u8_resolution_cm.tif")).info().voxel_size.unwrap();
    assert!((vs.x_nm - 5.0).abs() < 1e-9 && vs.z_nm.is_none(), "{vs:?}");
    // No metadata at all: unknown, not a guess.
    assert_eq!(open(&test_data("tiff/u8_le_none_strips.tif")).info().voxel_size, None);
}

#[test]
fn thumbnail_pages_are_skipped() {
    let v = open(&test_data("tiff/u8_with_thumbnail.tif"));
    assert_eq!(v.depth(), 3);
    assert_values(&v, fixture_u8);
}

#[test]
fn bilevel_and_colour_pages() {
    let v = open(&test_data("tiff/bilevel.tif"));
    assert_eq!(v.info().dtype, DType::U8);
    assert_values(&v, |z, y, x| if fixture_u8(z, y, x) > 127.0 { 255.0 } else { 0.0 });
    // Grey stored as RGB: luminance is exact.
    assert_values(&open(&test_data("tiff/rgb8.tif")), fixture_u8);
    // A mask lit only in the blue channel: every lit pixel counts when reading masks.
    let opts = OpenOptions { color: ColorToGray::AnyChannel, ..Default::default() };
    let v = open_stack(&test_data("tiff/rgb8_blue_mask.tif"), &opts).unwrap();
    assert_values(&v, |z, y, x| if fixture_u8(z, y, x) > 127.0 { 1.0 } else { 0.0 });
}

fn open_err(path: &Path) -> IoError {
    match open_stack(path, &OpenOptions::default()) {
        Ok(v) => panic!("{} opened as {:?}", path.display(), v.info()),
        Err(e) => e,
    }
}

#[test]
fn unsupported_sample_types_are_named() {
    let e = open_err(&test_data("tiff/i16.tif"));
    assert!(matches!(e, IoError::Unsupported { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("16-bit signed integer") && msg.ends_with("i16.tif"), "{msg}");
    let msg = open_err(&test_data("tiff/f64.tif")).to_string();
    assert!(msg.contains("64-bit floating point") && msg.ends_with("f64.tif"), "{msg}");
}

#[test]
fn pages_of_different_sizes_are_refused() {
    let msg = open_err(&test_data("tiff/mixed_sizes.tif")).to_string();
    assert!(msg.contains("page 1 is 30x20 px") && msg.contains("page 0 is 40x24 px"), "{msg}");
}

#[test]
fn truncated_and_foreign_files_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let whole = std::fs::read(test_data("tiff/u8_le_none_strips.tif")).unwrap();
    // Cut inside the pixel data, inside the header, and after a few bytes.
    for (name, len) in [("cut_data.tif", whole.len() * 2 / 3), ("cut_header.tif", 10), ("cut_magic.tif", 3)] {
        let p = dir.path().join(name);
        std::fs::write(&p, &whole[..len]).unwrap();
        let msg = match open_stack(&p, &OpenOptions::default()) {
            Err(e) => e.to_string(),
            // Metadata may survive a cut; then decoding the lost slices must fail instead.
            Ok(v) => (0..v.depth())
                .find_map(|z| v.slice(SliceIndex(z)).err())
                .expect("a truncated slice must fail")
                .to_string(),
        };
        assert!(msg.ends_with(name), "{msg}");
        assert!(!msg.contains('\n'));
        if name == "cut_data.tif" {
            assert!(msg.contains("truncated TIFF"), "{msg}");
        }
    }
    let text = dir.path().join("notes.tif");
    std::fs::write(&text, "just some text\n").unwrap();
    assert!(open_err(&text).to_string().contains("not a TIFF, PNG or HDF5 file"));
    let empty = dir.path().join("empty.tif");
    std::fs::write(&empty, "").unwrap();
    assert!(open_err(&empty).to_string().starts_with("empty file"));
    assert!(open_err(&dir.path().join("missing.tif")).to_string().contains("No such file"));
}

#[test]
fn user_written_bigtiff_opens() {
    use tiff::encoder::{TiffEncoder, colortype::Gray16};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("user.btf");
    let mut file = std::fs::File::create(&path).unwrap();
    let mut enc = TiffEncoder::new_big(&mut file).unwrap();
    for z in 0..4usize {
        let data: Vec<u16> = (0..33 * 17).map(|i| fixture_u16(z, i / 33, i % 33) as u16).collect();
        enc.write_image::<Gray16>(33, 17, &data).unwrap();
    }
    file.flush().unwrap();
    let v = open(&path);
    assert!(v.info().format.starts_with("BigTIFF"));
    assert_eq!((v.depth(), v.height(), v.width(), v.info().dtype), (4, 17, 33, DType::U16));
    assert_values(&v, fixture_u16);
}

#[test]
fn stack_larger_than_cache_browses_in_bounded_memory() {
    use tiff::encoder::{TiffEncoder, colortype::Gray8};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.tif");
    let (w, h, d) = (256usize, 256usize, 200usize);
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    {
        let mut enc = TiffEncoder::new(&mut file).unwrap();
        for z in 0..d {
            enc.write_image::<Gray8>(w as u32, h as u32, &vec![z as u8; w * h]).unwrap();
        }
    }
    file.into_inner().unwrap().sync_all().unwrap();

    let budget = 1 << 20; // 16 slices' worth, of a 12.5 MiB stack
    let v = open_stack(&path, &OpenOptions { cache_budget_bytes: budget, ..Default::default() }).unwrap();
    assert_eq!(v.cache_stats().decodes, 0, "opening must not decode slices");
    for pass in 0..2 {
        for z in (0..d).chain((0..d).rev()) {
            let s = v.slice(SliceIndex(z)).unwrap();
            assert_eq!(s.value_at(w - 1, h - 1), z as f64, "pass {pass}");
        }
    }
    let st = v.cache_stats();
    assert!(st.peak_bytes <= budget, "{st:?}");
    assert_eq!(st.slices, budget / (w * h));
    // Going back and forth near the end hits the cache.
    let before = v.cache_stats().decodes;
    for z in 0..16 {
        v.slice(SliceIndex(z)).unwrap();
    }
    assert_eq!(v.cache_stats().decodes, before);
}

fn write_png(path: &Path, w: u32, h: u32, value: u8) {
    image::save_buffer(path, &vec![value; (w * h) as usize], w, h, image::ExtendedColorType::L8).unwrap();
}

#[test]
fn png_folder_is_ordered_by_number() {
    let dir = tempfile::tempdir().unwrap();
    for z in [0u8, 1, 2, 9, 10, 11, 100] {
        write_png(&dir.path().join(format!("{z}.png")), 8, 6, z);
    }
    // Junk that must be ignored.
    std::fs::write(dir.path().join("README.txt"), "x").unwrap();
    std::fs::write(dir.path().join("._0.png"), "macOS resource fork").unwrap();
    std::fs::create_dir(dir.path().join("sub.png")).unwrap();
    let v = open(dir.path());
    assert!(v.info().format.starts_with("PNG sequence (7 files)"), "{}", v.info().format);
    let order: Vec<f64> = (0..v.depth()).map(|z| v.slice(SliceIndex(z)).unwrap().value_at(0, 0)).collect();
    assert_eq!(order, [0.0, 1.0, 2.0, 9.0, 10.0, 11.0, 100.0]);
}

#[test]
fn png_folder_with_an_odd_slice_names_it() {
    let dir = tempfile::tempdir().unwrap();
    for z in 0..4 {
        let (w, h) = if z == 2 { (8, 7) } else { (8, 6) };
        write_png(&dir.path().join(format!("mask{z:04}.png")), w, h, 1);
    }
    let msg = open_err(dir.path()).to_string();
    assert!(msg.contains("slice 2 is 8x7 px") && msg.contains("(mask0000.png) is 8x6 px"), "{msg}");
    assert!(msg.ends_with("mask0002.png"), "{msg}");
    // A corrupt PNG in the folder is named too.
    std::fs::write(dir.path().join("mask0002.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let msg = open_err(dir.path()).to_string();
    assert!(msg.contains("corrupt PNG") && msg.ends_with("mask0002.png"), "{msg}");
    let empty = tempfile::tempdir().unwrap();
    assert!(open_err(empty.path()).to_string().contains("no PNG or TIFF slices"));
}

#[test]
fn sixteen_bit_png_and_tiff_slices() {
    let dir = tempfile::tempdir().unwrap();
    for z in 0..3usize {
        let data: Vec<u16> = (0..40 * 24).map(|i| fixture_u16(z, i / 40, i % 40) as u16).collect();
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_ne_bytes()).collect();
        image::save_buffer(dir.path().join(format!("s{z}.png")), &bytes, 40, 24, image::ExtendedColorType::L16)
            .unwrap();
    }
    let v = open(dir.path());
    assert_eq!(v.info().dtype, DType::U16);
    assert_values(&v, fixture_u16);
    // A folder of single-page TIFFs.
    let tdir = tempfile::tempdir().unwrap();
    let src = open(&test_data("tiff/u16_be_lzw_tiles.tif"));
    for z in 0..3 {
        use tiff::encoder::{TiffEncoder, colortype::Gray16};
        let s = src.slice(SliceIndex(z)).unwrap();
        let sam4em::state::SliceData::U16(data) = &s.data else { panic!() };
        let f = std::fs::File::create(tdir.path().join(format!("z{z}.tif"))).unwrap();
        TiffEncoder::new(f).unwrap().write_image::<Gray16>(40, 24, data).unwrap();
    }
    let v = open(tdir.path());
    assert!(v.info().format.starts_with("TIFF sequence"), "{}", v.info().format);
    assert_values(&v, fixture_u16);
}

#[test]
fn hdf5_stacks_of_every_layout_and_type() {
    use hdf5_pure::FileBuilder;
    let dir = tempfile::tempdir().unwrap();
    let (d, h, w) = (4usize, 6usize, 5usize);
    let u16s: Vec<u16> = (0..d * h * w).map(|i| (i * 997 % 65536) as u16).collect();
    let labels: Vec<i32> = (0..d * h * w).map(|i| (i % 7) as i32 * 1000).collect();
    let floats: Vec<f32> = (0..h * w).map(|i| i as f32 * 0.25 - 3.0).collect();
    let mut b = FileBuilder::new();
    // The image under an EM name, chunked with shuffle + deflate across slice boundaries.
    let mut volumes = b.create_group("volumes");
    volumes
        .create_dataset("raw")
        .with_u16_data(&u16s)
        .with_shape(&[d as u64, h as u64, w as u64])
        .with_chunks(&[3, 4, 4])
        .with_shuffle()
        .with_deflate(6);
    b.add_group(volumes.finish());
    // A decoy: larger, but not named as an image.
    let decoy = vec![0i32; d * h * w * 2];
    b.create_dataset("labels").with_i32_data(&decoy).with_shape(&[d as u64, h as u64, 2 * w as u64]).with_lzf();
    let path = dir.path().join("em.h5");
    b.write(&path).unwrap();
    let v = open(&path);
    assert_eq!((v.depth(), v.height(), v.width(), v.info().dtype), (d, h, w, DType::U16));
    assert!(v.info().format.contains("/volumes/raw") && v.info().format.contains("deflate"), "{}", v.info().format);
    assert_values(&v, |z, y, x| f64::from(u16s[(z * h + y) * w + x]));

    // Labels only: int32 read as uint32, LZF chunks.
    let mut b = FileBuilder::new();
    b.create_dataset("gt")
        .with_i32_data(&labels)
        .with_shape(&[d as u64, h as u64, w as u64])
        .with_chunks(&[2, 6, 5])
        .with_lzf();
    let path = dir.path().join("gt.lzf.h5");
    b.write(&path).unwrap();
    let v = open(&path);
    assert_eq!(v.info().dtype, DType::U32);
    assert!(v.info().format.contains("LZF"), "{}", v.info().format);
    assert_values(&v, |z, y, x| f64::from(labels[(z * h + y) * w + x]));

    // One 2-D float image.
    let mut b = FileBuilder::new();
    b.create_dataset("image").with_f32_data(&floats).with_shape(&[h as u64, w as u64]);
    let path = dir.path().join("one.h5");
    b.write(&path).unwrap();
    let v = open(&path);
    assert_eq!((v.depth(), v.info().dtype), (1, DType::F32));
    assert_values(&v, |_, y, x| f64::from(floats[y * w + x]));

    // Negative labels cannot become uint32: the slice fails, naming the file.
    let mut b = FileBuilder::new();
    let negative: Vec<i32> = vec![-1; d * h * w];
    b.create_dataset("stack").with_i32_data(&negative).with_shape(&[d as u64, h as u64, w as u64]);
    let path = dir.path().join("negative.h5");
    b.write(&path).unwrap();
    let err = open(&path).slice(SliceIndex(0)).unwrap_err().to_string();
    assert!(err.contains("label value -1") && err.ends_with("negative.h5"), "{err}");

    // No image inside: the datasets are listed.
    let mut b = FileBuilder::new();
    b.create_dataset("table").with_f32_data(&[1.0, 2.0]);
    let path = dir.path().join("table.h5");
    b.write(&path).unwrap();
    let err = open_err(&path).to_string();
    assert!(err.contains("no 2-D or 3-D numeric dataset") && err.contains("table"), "{err}");
}

#[test]
fn every_reader_checks_header_sizes_against_one_slice_limit() {
    use hdf5_pure::FileBuilder;
    use sam4em::io::options::DEFAULT_MAX_SLICE_BYTES;
    let dir = tempfile::tempdir().unwrap();
    // 64 x 48 uint16 slices: 6144 bytes each. A limit of 6 KiB - 1 refuses them in HDF5 (whose
    // reader ignored the limit before) and PNG, before anything is decoded, naming the file,
    // the shape and the limit. (TIFF: `truncated_and_foreign_files_fail_cleanly`.)
    let (d, h, w) = (2usize, 48usize, 64usize);
    let data: Vec<u16> = (0..d * h * w).map(|i| i as u16).collect();
    let mut b = FileBuilder::new();
    b.create_dataset("raw")
        .with_u16_data(&data)
        .with_shape(&[d as u64, h as u64, w as u64])
        .with_chunks(&[1, 16, 16])
        .with_deflate(1);
    let h5 = dir.path().join("stack.h5");
    b.write(&h5).unwrap();
    let png = dir.path().join("slice.png");
    image::ImageBuffer::<image::Luma<u16>, _>::from_fn(w as u32, h as u32, |x, y| image::Luma([(x + y) as u16]))
        .save(&png)
        .unwrap();
    let tight = OpenOptions { max_slice_bytes: 6 * 1024 - 1, ..Default::default() };
    for path in [&h5, &png] {
        let err = open_stack(path, &tight).unwrap_err().to_string();
        assert!(
            err.contains("slice size: 64x48 px of 2 bytes (6144 bytes) exceeds the 6143 bytes slice limit")
                && err.contains("SAM4EM_MAX_SLICE_GIB")
                && err.ends_with(&*path.file_name().unwrap().to_string_lossy()),
            "{err}"
        );
        // At the limit it opens.
        let exact = OpenOptions { max_slice_bytes: 6 * 1024, ..Default::default() };
        open_stack(path, &exact).unwrap();
    }
    let tif = test_data("tiff/u16_le_deflate_tiles.tif");
    let err = open_stack(&tif, &OpenOptions { max_slice_bytes: 1919, ..Default::default() }).unwrap_err().to_string();
    assert!(
        err.contains("40x24 px of 2 bytes (1920 bytes) exceeds the 1919 bytes") && err.ends_with("tiles.tif"),
        "{err}"
    );
    // The default is 2 GiB: a 16384² float32 slice (1 GiB) passes, 100 GiB does not, and a
    // shape whose size overflows 64 bits is refused, not wrapped.
    assert_eq!(DEFAULT_MAX_SLICE_BYTES, 2 << 30);
    let check = |w: u64, h: u64, b: u64| OpenOptions::default().check_slice(Path::new("x.h5"), w, h, b);
    if std::env::var_os(sam4em::io::options::MAX_SLICE_ENV).is_none() {
        assert_eq!(check(16384, 16384, 4).unwrap(), 1 << 30);
        let err = check(80_000, 80_000, 1).unwrap_err().to_string();
        assert!(err.contains("80000x80000 px") && err.contains("exceeds the 2 GiB slice limit"), "{err}");
        assert!(err.ends_with("x.h5"), "{err}");
    }
    let err = check(u64::MAX, 3, 1).unwrap_err().to_string();
    assert!(err.contains("more than 16 EiB"), "{err}");
}
