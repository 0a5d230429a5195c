//! Writes the seed corpora of the fuzz targets (`.fuzz/corpus/<target>/`): real files, made by
//! the program's own writers (projects, journals, mask slices, adapter sets, class tables) or by
//! the libraries that write the formats we read (PNG, TIFF, HDF5), plus the test TIFFs and
//! pytorch-reader's test checkpoints. Run from the repository root:
//!
//!     cargo run --manifest-path .fuzz/seeds/Cargo.toml
//!
//! then minimise (README "Fuzzing"). Nothing here is random: the same seeds every run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hdf5_pure::FileBuilder;
use image::{DynamicImage, ImageBuffer, ImageFormat, Luma, LumaA, Rgb, Rgba};
use sam4em::io::session::{Project, StackRef};
use sam4em::model::adapter::{
    AdapterSet, AdapterSetMeta, BaseCheckpoint, SET_FORMAT, SET_FORMAT_VERSION, TrainingRecord,
};
use sam4em::model::config::{HieraSize, Sam4emConfig};
use sam4em::model::weights::{HostTensor, StateDict};
use sam4em::state::{
    ClassId, ClassTable, DType, MaskVolume, Provenance, ReviewState, SliceIndex, SliceMask, VolumeInfo,
};

/// The separator `fuzz_targets/common.rs` splits a folder's files by.
const SEPARATOR: &[u8] = b"\n--sam4em-fuzz-part--\n";

fn main() {
    let corpus = PathBuf::from(".fuzz/corpus");
    assert!(Path::new("Cargo.toml").is_file() && Path::new(".fuzz").is_dir(), "run from the repository root");
    let scratch = std::env::temp_dir().join(format!("sam4em-seeds-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    tiff_seeds(&corpus.join("tiff"));
    png_seeds(&corpus.join("png"));
    hdf5_seeds(&corpus.join("hdf5"), &scratch);
    slice_folder_seeds(&corpus.join("slice_folder"));
    project_seeds(&corpus, &scratch);
    label_map_seeds(&corpus.join("label_map_sidecar"));
    checkpoint_seeds(&corpus.join("checkpoint"), &scratch);
    adapter_seeds(&corpus.join("adapter_set"), &scratch);
    std::fs::remove_dir_all(&scratch).unwrap();
}

fn put(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

/// The test TIFFs: every layout, byte order, compression and metadata the reader handles.
fn tiff_seeds(dir: &Path) {
    for entry in std::fs::read_dir("tests/data/tiff").unwrap() {
        let path = entry.unwrap().path();
        put(dir, &path.file_name().unwrap().to_string_lossy(), &std::fs::read(&path).unwrap());
    }
}

fn png_bytes(img: DynamicImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png).unwrap();
    out.into_inner()
}

fn gradient(w: u32) -> impl Fn(u32, u32) -> u8 {
    move |x, y| ((x * 255 / w.max(1) + y * 7) % 256) as u8
}

fn png_images() -> Vec<(&'static str, Vec<u8>)> {
    let (w, h) = (37, 23);
    let g = gradient(w);
    vec![
        ("gray8.png", png_bytes(DynamicImage::ImageLuma8(ImageBuffer::from_fn(w, h, |x, y| Luma([g(x, y)]))))),
        (
            "gray16.png",
            png_bytes(DynamicImage::ImageLuma16(ImageBuffer::from_fn(w, h, |x, y| Luma([u16::from(g(x, y)) * 257])))),
        ),
        (
            "gray_alpha.png",
            png_bytes(DynamicImage::ImageLumaA8(ImageBuffer::from_fn(w, h, |x, y| LumaA([g(x, y), 200])))),
        ),
        ("rgb8.png", png_bytes(DynamicImage::ImageRgb8(ImageBuffer::from_fn(w, h, |x, y| Rgb([g(x, y), 0, 9]))))),
        (
            "rgba8_mask.png",
            png_bytes(DynamicImage::ImageRgba8(ImageBuffer::from_fn(w, h, |x, y| {
                Rgba([0, 0, if (x + y) % 3 == 0 { 255 } else { 0 }, 255])
            }))),
        ),
        ("one_px.png", png_bytes(DynamicImage::ImageLuma8(ImageBuffer::from_fn(1, 1, |_, _| Luma([7]))))),
    ]
}

fn png_seeds(dir: &Path) {
    for (name, bytes) in png_images() {
        put(dir, name, &bytes);
    }
}

/// HDF5 as h5py, ilastik and FlyEM write it: the layouts and filters the reader handles.
fn hdf5_seeds(dir: &Path, scratch: &Path) {
    let (d, h, w) = (3usize, 6usize, 5usize);
    let u16s: Vec<u16> = (0..d * h * w).map(|i| (i * 997 % 65536) as u16).collect();
    let u8s: Vec<u8> = (0..d * h * w).map(|i| (i * 31 % 256) as u8).collect();
    let labels: Vec<i32> = (0..d * h * w).map(|i| (i % 7) as i32 * 1000).collect();
    let floats: Vec<f32> = (0..h * w).map(|i| i as f32 * 0.25 - 3.0).collect();
    let shape = [d as u64, h as u64, w as u64];
    let write = |name: &str, b: FileBuilder| {
        let path = scratch.join(name);
        b.write(&path).unwrap();
        put(dir, name, &std::fs::read(&path).unwrap());
    };
    let mut b = FileBuilder::new();
    let mut volumes = b.create_group("volumes");
    volumes
        .create_dataset("raw")
        .with_u16_data(&u16s)
        .with_shape(&shape)
        .with_chunks(&[2, 4, 4])
        .with_shuffle()
        .with_deflate(6);
    b.add_group(volumes.finish());
    write("volumes_raw_u16_shuffle_deflate.h5", b);
    let mut b = FileBuilder::new();
    b.create_dataset("gt").with_i32_data(&labels).with_shape(&shape).with_chunks(&[1, 6, 5]).with_lzf();
    write("labels_i32_lzf.h5", b);
    let mut b = FileBuilder::new();
    b.create_dataset("image").with_f32_data(&floats).with_shape(&[h as u64, w as u64]);
    write("image_f32_2d.h5", b);
    let mut b = FileBuilder::new();
    b.create_dataset("stack").with_u8_data(&u8s).with_shape(&shape);
    b.create_dataset("table").with_f32_data(&[1.0, 2.0]);
    write("stack_u8_contiguous.h5", b);
}

fn tiff_page(w: u32, h: u32, u16_values: bool) -> Vec<u8> {
    use tiff::encoder::{TiffEncoder, colortype};
    let mut out = std::io::Cursor::new(Vec::new());
    let mut enc = TiffEncoder::new(&mut out).unwrap();
    let g = gradient(w);
    if u16_values {
        let data: Vec<u16> = (0..w * h).map(|i| u16::from(g(i % w, i / w)) * 100).collect();
        enc.write_image::<colortype::Gray16>(w, h, &data).unwrap();
    } else {
        let data: Vec<u8> = (0..w * h).map(|i| g(i % w, i / w)).collect();
        enc.write_image::<colortype::Gray8>(w, h, &data).unwrap();
    }
    out.into_inner()
}

fn joined(files: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, f) in files.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(SEPARATOR);
        }
        out.extend_from_slice(f);
    }
    out
}

/// Folders of slices: matching PNGs, matching TIFFs, and the mismatches users make (sizes,
/// types, formats mixed).
fn slice_folder_seeds(dir: &Path) {
    let pngs: BTreeMap<&str, Vec<u8>> = png_images().into_iter().collect();
    let gray = &pngs["gray8.png"];
    put(dir, "pngs", &joined(&[gray, gray, gray]));
    let t8 = tiff_page(21, 13, false);
    put(dir, "tiffs", &joined(&[&t8, &t8]));
    put(dir, "tiffs_u16_u8", &joined(&[&tiff_page(21, 13, true), &t8]));
    put(dir, "pngs_sizes_differ", &joined(&[gray, &pngs["one_px.png"]]));
    put(dir, "pngs_types_differ", &joined(&[gray, &pngs["gray16.png"], &pngs["rgb8.png"]]));
    put(dir, "png_and_tiff", &joined(&[gray, &tiff_page(37, 23, false)]));
}

/// A real project as the app makes it (100 x 70 px x 3 slices, the default classes; the size
/// the `journal` and `mask_slice` targets' project has): its `project.json`, journals of real
/// edits and its saved slice files.
fn project_seeds(corpus: &Path, scratch: &Path) {
    let info = VolumeInfo {
        path: scratch.join("stack.tif"),
        format: "TIFF".into(),
        width: 100,
        height: 70,
        depth: 3,
        dtype: DType::U8,
        voxel_size: None,
        size_on_disk_bytes: 0,
    };
    let classes = ClassTable::default();
    let dir = scratch.join("project");
    let mut project = Project::create(&dir, StackRef::from_info(&info), &classes).unwrap();
    let journal = || std::fs::read(dir.join("journal.s4j")).unwrap();
    put(&corpus.join("journal"), "empty", &journal());
    let mut masks = MaskVolume::new(100, 70, 3);
    let disc = |cx: f64, cy: f64, r: f64| {
        SliceMask::from_fn(100, 70, move |i| {
            let (x, y) = ((i % 100) as f64, (i / 100) as f64);
            (x - cx).powi(2) + (y - cy).powi(2) <= r * r
        })
    };
    masks.put(ClassId(1), SliceIndex(0), disc(20.0, 30.0, 12.0), Provenance::User).unwrap();
    project.append_slice(&masks, ClassId(1), SliceIndex(0)).unwrap();
    put(&corpus.join("journal"), "one_edit", &journal());
    masks.put(ClassId(2), SliceIndex(1), disc(80.0, 60.0, 30.0), Provenance::Model).unwrap();
    project.append_slice(&masks, ClassId(2), SliceIndex(1)).unwrap();
    masks.set_review(ClassId(2), SliceIndex(1), ReviewState::Accepted).unwrap();
    project.append_slice(&masks, ClassId(2), SliceIndex(1)).unwrap();
    put(&corpus.join("journal"), "three_edits_two_tiles", &journal());
    masks.put(ClassId(3), SliceIndex(2), disc(66.0, 2.0, 3.0), Provenance::User).unwrap();
    project.mark_changed(ClassId(3), SliceIndex(2));
    project.save(&masks, &classes).unwrap();
    put(&corpus.join("project_json"), "saved", &std::fs::read(dir.join("project.json")).unwrap());
    for (class, z) in [(1, 0), (2, 1), (3, 2)] {
        let path = dir.join("masks").join(class.to_string()).join(format!("{z:06}.s4m"));
        put(&corpus.join("mask_slice"), &format!("class{class}_z{z}"), &std::fs::read(path).unwrap());
    }
}

/// The class table an exported label map carries, and mappings as users type them.
fn label_map_seeds(dir: &Path) {
    put(dir, "default_classes.json", serde_json::to_string_pretty(&ClassTable::default()).unwrap().as_bytes());
    put(dir, "mapping_vnc", b"159=glia,191=mitochondria,223=psd");
    put(dir, "mapping_two_values", b"1=mitochondria, 2=mitochondria");
}

/// pytorch-reader's own test checkpoints (every container layout PyTorch writes: zip, legacy,
/// tar, shared storages, views, dtypes; MIT / Apache-2.0, from the crate in Cargo's registry)
/// and safetensors written by our writer.
fn checkpoint_seeds(dir: &Path, scratch: &Path) {
    let registry = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap()
        .join("registry/src");
    let crate_dir = std::fs::read_dir(&registry)
        .unwrap()
        .map(|e| e.unwrap().path().join("pytorch-reader-0.22.1/src/tests/test_data"))
        .find(|p| p.is_dir())
        .expect("pytorch-reader 0.22.1 in Cargo's registry (build the main crate first)");
    for entry in std::fs::read_dir(crate_dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        if path.extension().is_some_and(|x| x == "pt" || x == "pth") && bytes.len() <= 16 << 10 {
            put(dir, &path.file_name().unwrap().to_string_lossy(), &bytes);
        }
    }
    let mut tensors = BTreeMap::new();
    tensors.insert("image_encoder.trunk.pos_embed".to_string(), HostTensor::new(vec![1, 2, 3], vec![0.5; 6]));
    tensors
        .insert("sam_mask_decoder.iou_token.weight".to_string(), HostTensor::new(vec![4], vec![-1.0, 0.0, 1.0, 2.0]));
    let path = scratch.join("small.safetensors");
    StateDict::write_safetensors(&tensors, BTreeMap::new(), &path).unwrap();
    put(dir, "small.safetensors", &std::fs::read(&path).unwrap());
}

/// Adapter sets as the trainer writes them (metadata with a whole configuration, a training
/// record, lineage), and configurations as `--config` reads them.
fn adapter_seeds(dir: &Path, scratch: &Path) {
    for size in [HieraSize::Tiny, HieraSize::BasePlus] {
        let config = Sam4emConfig::sam4em(size);
        put(
            dir,
            &format!("config_{}.json", size.file_stem()),
            serde_json::to_string_pretty(&config).unwrap().as_bytes(),
        );
    }
    let meta = AdapterSetMeta {
        format: SET_FORMAT.into(),
        format_version: SET_FORMAT_VERSION,
        config: Sam4emConfig::sam4em(HieraSize::Tiny),
        base: BaseCheckpoint {
            file_name: "sam2.1_hiera_tiny.pt".into(),
            bytes: 155_906_050,
            sha256: "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69".into(),
            mapping: "stage2_only".into(),
        },
        classes: vec!["glia".into(), "mitochondria".into()],
        version: 2,
        parent_version: Some(1),
        created_unix_s: 1_796_000_000,
        training: TrainingRecord {
            steps: 40,
            slices: vec![0, 1, 2, 5],
            validation_slices: vec![9],
            final_loss: 0.31,
            validation_dice: [("glia".to_string(), 0.8), ("mitochondria".to_string(), 0.7)].into(),
            seconds: 12.5,
            device: "CPU".into(),
            ended: "finished".into(),
            batch_size: 2,
            activations: "keep".into(),
            scale: sam4em::state::scale::Scale::Factor(1.0),
            pixel_size_nm: Some(4.6),
        },
    };
    let mut tensors = BTreeMap::new();
    tensors.insert(
        "encoder/sam.image_encoder.trunk.blocks.0.attn.qkv.lora_a".to_string(),
        HostTensor::new(vec![2, 3], vec![0.25; 6]),
    );
    tensors.insert("class/glia/sam.mem.w".to_string(), HostTensor::new(vec![3], vec![1.0, -1.0, 0.5]));
    let path = scratch.join("v002.safetensors");
    AdapterSet { meta, tensors }.save(&path).unwrap();
    put(dir, "v002.safetensors", &std::fs::read(&path).unwrap());
}
