//! Exporting masks: per class a binary multi-page TIFF (uint8 0/255, voxel size in ImageJ
//! metadata and resolution tags) or a PNG sequence, and a label-map TIFF of class ids with a
//! `.classes.json` sidecar naming them. All outputs of one export are staged and renamed into
//! place together (see [`super::atomic`]).

use std::borrow::Cow;
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};

use tiff::encoder::colortype::{ColorType, Gray8, Gray16};
use tiff::encoder::{Compression, DeflateLevel, Rational, TiffEncoder, TiffKind, TiffValue};
use tiff::tags::{ResolutionUnit, Tag};

use super::atomic::StagedWrites;
use super::error::{IoError, describe_io};
use crate::state::mask::SliceMask;
use crate::state::{ClassDef, ClassId, ClassTable, MaskVolume, SliceIndex, VoxelSize};

/// The binary masks an export writes, read one slice at a time: a [`MaskVolume`] in memory, or
/// pages kept elsewhere (`sam4em predict` keeps its masks in a temporary file, so that a deep
/// stack of large slices needs one slice's masks in memory rather than the stack's).
pub trait MaskPages {
    /// Slice width and height in pixels, and the number of slices.
    fn size(&self) -> (usize, usize, usize);

    /// The mask of `class` on slice `z`, `None` where nothing is stored (all background); an
    /// error says why the page could not be read.
    fn page(&self, class: ClassId, z: SliceIndex) -> Result<Option<Cow<'_, SliceMask>>, String>;
}

impl MaskPages for MaskVolume {
    fn size(&self) -> (usize, usize, usize) {
        (self.width(), self.height(), self.depth())
    }

    fn page(&self, class: ClassId, z: SliceIndex) -> Result<Option<Cow<'_, SliceMask>>, String> {
        Ok(self.mask(class, z).map(Cow::Borrowed))
    }
}

/// TIFF compression for exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TiffCompression {
    /// No compression: largest, readable everywhere.
    None,
    /// LZW.
    Lzw,
    /// Deflate (zip): small and lossless; ImageJ, Fiji, napari and tifffile read it.
    #[default]
    Deflate,
    /// PackBits run-length coding.
    Packbits,
}

impl TiffCompression {
    fn to_tiff(self) -> Compression {
        match self {
            TiffCompression::None => Compression::Uncompressed,
            TiffCompression::Lzw => Compression::Lzw,
            TiffCompression::Deflate => Compression::Deflate(DeflateLevel::Balanced),
            TiffCompression::Packbits => Compression::Packbits,
        }
    }
}

/// What to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// One binary multi-page TIFF per class: `<export name>.tif`.
    Tiff,
    /// One folder of binary PNGs per class: `<export name>/<export name>_0000.png`.
    Png,
    /// One label-map TIFF of class ids, `labels.tif`, plus `labels.classes.json`.
    Labels,
}

/// Export settings.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// TIFF compression.
    pub compression: TiffCompression,
    /// Voxel size to record; `None` writes no calibration.
    pub voxel_size: Option<VoxelSize>,
    /// The model adapter the masks' predictions came from (version and file), recorded in
    /// the manifest; `None`: none in use.
    pub adapter: Option<String>,
}

/// What an export wrote.
#[derive(Debug, Clone, Default)]
pub struct ExportReport {
    /// Files and folders written, in order.
    pub outputs: Vec<PathBuf>,
    /// Label-map pixels claimed by more than one class (the class later in the table wins).
    pub overlapping_px: u64,
}

/// File name of the label map inside the output folder.
pub const LABELS_FILE: &str = "labels.tif";
/// What an export wrote, written last: a folder with this file, whose files match it, holds
/// a complete export.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Format tag of [`MANIFEST_FILE`].
pub const MANIFEST_FORMAT: &str = "sam4em-export";

/// [`MANIFEST_FILE`]: every file of one export with its size and sha256, so that a reader can
/// tell a complete export from a torn one (no manifest, or files that do not match it).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: String,
    /// 1.
    pub format_version: u32,
    /// When the export finished, seconds since the Unix epoch.
    pub created_unix_s: u64,
    /// The adapter the masks' predictions came from, if any.
    pub adapter: Option<String>,
    /// Every file, relative to the export folder (`/`-separated), sorted.
    pub files: Vec<ManifestEntry>,
}

/// One file of a [`Manifest`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ManifestEntry {
    /// Relative path.
    pub path: String,
    /// Size in bytes.
    pub bytes: u64,
    /// sha256 of its content, lowercase hex.
    pub sha256: String,
}

impl Manifest {
    /// Reads `dir`'s manifest and checks every file it names against it: the manifest when
    /// the export is complete, an error naming the first file that is missing or differs.
    pub fn verify(dir: &Path) -> Result<Manifest, IoError> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| IoError::read(&path, format!("no complete export here: {}", describe_io(&e))))?;
        let manifest: Manifest = serde_json::from_str(&text).map_err(|e| IoError::read(&path, e.to_string()))?;
        for f in &manifest.files {
            let file = dir.join(&f.path);
            let (bytes, sha256) = file_digest(&file)?;
            if (bytes, sha256.as_str()) != (f.bytes, f.sha256.as_str()) {
                return Err(IoError::read(&file, "differs from the export's manifest (a torn or later export)"));
            }
        }
        Ok(manifest)
    }
}

/// Size and sha256 (lowercase hex) of a file.
fn file_digest(path: &Path) -> Result<(u64, String), IoError> {
    use sha2::Digest;
    let mut f = std::fs::File::open(path).map_err(|e| IoError::read(path, describe_io(&e)))?;
    let mut hasher = sha2::Sha256::new();
    let bytes = std::io::copy(&mut f, &mut hasher).map_err(|e| IoError::read(path, describe_io(&e)))?;
    Ok((bytes, format!("{:x}", hasher.finalize())))
}

/// The manifest of the outputs written into `dir` (files, and the files of folders).
fn manifest(dir: &Path, outputs: &[PathBuf], opts: &ExportOptions) -> Result<Manifest, IoError> {
    let mut files = Vec::new();
    for out in outputs {
        let mut paths = vec![out.clone()];
        if out.is_dir() {
            paths = std::fs::read_dir(out)
                .map_err(|e| IoError::read(out, describe_io(&e)))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
        }
        for p in paths {
            let (bytes, sha256) = file_digest(&p)?;
            let rel = p.strip_prefix(dir).unwrap_or(&p);
            let path = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
            files.push(ManifestEntry { path, bytes, sha256 });
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Manifest {
        format: MANIFEST_FORMAT.into(),
        format_version: 1,
        created_unix_s: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        adapter: opts.adapter.clone(),
        files,
    })
}

/// The sidecar of a label-map TIFF: `labels.tif` → `labels.classes.json`.
pub fn classes_sidecar(label_map: &Path) -> PathBuf {
    let stem = label_map.file_stem().unwrap_or_default().to_string_lossy();
    label_map.with_file_name(format!("{stem}.classes.json"))
}

/// ImageJ's description for a `depth`-slice stack, with the voxel size in nm, so ImageJ/Fiji
/// open the file as a calibrated stack.
fn imagej_description(depth: usize, voxel: Option<&VoxelSize>) -> String {
    let mut d = format!("ImageJ=1.11a\nimages={depth}\nslices={depth}\n");
    if let Some(v) = voxel {
        d.push_str("unit=nm\n");
        if let Some(z) = v.z_nm {
            d.push_str(&format!("spacing={z}\n"));
        }
    }
    d.push_str("loop=false\n");
    d
}

/// Pixels per nm as a TIFF rational, as precise as `u32` allows.
fn per_nm(size_nm: f64) -> Rational {
    let mut scale = 1_000_000.0;
    while size_nm * scale > f64::from(u32::MAX) && scale > 1.0 {
        scale /= 10.0;
    }
    Rational { n: scale as u32, d: (size_nm * scale).round().max(1.0) as u32 }
}

/// Writes `depth` pages produced by `page(z)` as one multi-page TIFF.
fn write_pages<W, K, C>(
    mut enc: TiffEncoder<W, K>,
    width: usize,
    height: usize,
    depth: usize,
    opts: &ExportOptions,
    mut page: impl FnMut(SliceIndex) -> Result<Vec<C::Inner>, String>,
) -> Result<(), String>
where
    W: Write + Seek,
    K: TiffKind,
    C: ColorType,
    [C::Inner]: TiffValue,
{
    let description = imagej_description(depth, opts.voxel_size.as_ref());
    for z in 0..depth {
        let data = page(SliceIndex(z)).map_err(|e| format!("slice {z}: {e}"))?;
        let mut img = enc.new_image::<C>(width as u32, height as u32).map_err(|e| e.to_string())?;
        let dir = img.encoder();
        if z == 0 {
            dir.write_tag(Tag::ImageDescription, description.as_str()).map_err(|e| e.to_string())?;
        }
        if let Some(v) = &opts.voxel_size {
            // ImageJ reads resolution as pixels per `unit` (nm here) with ResolutionUnit none.
            dir.write_tag(Tag::ResolutionUnit, ResolutionUnit::None.to_u16()).map_err(|e| e.to_string())?;
            dir.write_tag(Tag::XResolution, per_nm(v.x_nm)).map_err(|e| e.to_string())?;
            dir.write_tag(Tag::YResolution, per_nm(v.y_nm)).map_err(|e| e.to_string())?;
        }
        img.write_data(&data).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Writes a multi-page TIFF, switching to BigTIFF when the pixels alone could pass 4 GiB.
fn write_stack<W: Write + Seek, C: ColorType>(
    w: W,
    width: usize,
    height: usize,
    depth: usize,
    opts: &ExportOptions,
    page: impl FnMut(SliceIndex) -> Result<Vec<C::Inner>, String>,
) -> Result<(), String>
where
    [C::Inner]: TiffValue,
{
    let raw_bytes = (width * height * depth * std::mem::size_of::<C::Inner>()) as u64;
    let compression = opts.compression.to_tiff();
    if raw_bytes >= (4u64 << 30) - (64 << 20) {
        let enc = TiffEncoder::new_big(w).map_err(|e| e.to_string())?.with_compression(compression);
        write_pages::<_, _, C>(enc, width, height, depth, opts, page)
    } else {
        let enc = TiffEncoder::new(w).map_err(|e| e.to_string())?.with_compression(compression);
        write_pages::<_, _, C>(enc, width, height, depth, opts, page)
    }
}

/// One class as 0/255 bytes for slice `z` (zeros where nothing is stored).
fn binary_page<M: MaskPages + ?Sized>(masks: &M, class: ClassId, z: SliceIndex) -> Result<Vec<u8>, String> {
    let (w, h, _) = masks.size();
    Ok(match masks.page(class, z)? {
        Some(m) => m.to_dense(255),
        None => vec![0; w * h],
    })
}

/// Stages one class as a binary multi-page TIFF.
pub fn stage_class_tiff<M: MaskPages + ?Sized>(
    staged: &mut StagedWrites,
    masks: &M,
    class: ClassId,
    target: &Path,
    opts: &ExportOptions,
) -> Result<(), IoError> {
    let (w, h, d) = masks.size();
    staged.file(target, |out| write_stack::<_, Gray8>(out, w, h, d, opts, |z| binary_page(masks, class, z)))
}

/// Writes an 8-bit multi-page TIFF (e.g. probabilities scaled to 0–255) atomically, one page
/// per entry of `pages` (each `width × height`).
pub fn write_u8_stack(path: &Path, width: usize, height: usize, pages: &[Vec<u8>]) -> Result<(), IoError> {
    let mut staged = StagedWrites::new();
    let opts = ExportOptions::default();
    staged.file(path, |out| {
        write_stack::<_, Gray8>(out, width, height, pages.len(), &opts, |z| Ok(pages[z.0].clone()))
    })?;
    staged.commit()?;
    Ok(())
}

/// As [`write_u8_stack`] with the pages produced one at a time by `page` (so a stack need not
/// be held in memory); the first page `page` fails on fails the write, naming the file, and
/// leaves nothing at `path`.
pub fn write_u8_stack_with(
    path: &Path,
    width: usize,
    height: usize,
    depth: usize,
    page: impl FnMut(SliceIndex) -> Result<Vec<u8>, String>,
) -> Result<(), IoError> {
    let mut staged = StagedWrites::new();
    let opts = ExportOptions::default();
    staged.file(path, |out| write_stack::<_, Gray8>(out, width, height, depth, &opts, page))?;
    staged.commit()?;
    Ok(())
}

/// Stages one class as a folder of binary PNGs named `<export name>_<z>.png`, z zero-padded
/// to at least four digits.
pub fn stage_class_pngs<M: MaskPages + ?Sized>(
    staged: &mut StagedWrites,
    masks: &M,
    class: &ClassDef,
    target: &Path,
) -> Result<(), IoError> {
    let (w, h, d) = masks.size();
    let digits = d.saturating_sub(1).to_string().len().max(4);
    staged.dir(target, |dir| {
        for z in 0..d {
            let name = format!("{}_{z:0digits$}.png", class.export_name);
            let path = dir.join(&name);
            let page =
                binary_page(masks, class.id, SliceIndex(z)).map_err(|e| IoError::write(&target.join(&name), e))?;
            image::save_buffer_with_format(
                &path,
                &page,
                w as u32,
                h as u32,
                image::ExtendedColorType::L8,
                image::ImageFormat::Png,
            )
            .map_err(|e| {
                let problem = match e {
                    image::ImageError::IoError(io) => describe_io(&io),
                    other => other.to_string(),
                };
                IoError::write(&target.join(path.file_name().unwrap_or_default()), problem)
            })?;
        }
        Ok(())
    })
}

/// Stages the label map (class ids; 0 = background; uint8, or uint16 past id 255) and its
/// class sidecar. Returns how many pixels more than one class claimed.
pub fn stage_label_map<M: MaskPages + ?Sized>(
    staged: &mut StagedWrites,
    masks: &M,
    classes: &ClassTable,
    target: &Path,
    opts: &ExportOptions,
) -> Result<u64, IoError> {
    let (w, h, d) = masks.size();
    let mut overlapping_px = 0u64;
    fn compose<T: Copy + Default + PartialEq, M: MaskPages + ?Sized>(
        masks: &M,
        classes: &ClassTable,
        z: SliceIndex,
        id: impl Fn(ClassId) -> T,
        overlaps: &mut u64,
    ) -> Result<Vec<T>, String> {
        let (w, h, _) = masks.size();
        let mut page = vec![T::default(); w * h];
        for class in classes.iter() {
            let Some(m) = masks.page(class.id, z)? else {
                continue;
            };
            let value = id(class.id);
            m.for_each_set(|i| {
                if page[i] != T::default() {
                    *overlaps += 1;
                }
                page[i] = value;
            });
        }
        Ok(page)
    }
    if classes.max_id() <= u16::from(u8::MAX) {
        staged.file(target, |out| {
            write_stack::<_, Gray8>(out, w, h, d, opts, |z| {
                compose(masks, classes, z, |c| c.0 as u8, &mut overlapping_px)
            })
        })?;
    } else {
        staged.file(target, |out| {
            write_stack::<_, Gray16>(out, w, h, d, opts, |z| compose(masks, classes, z, |c| c.0, &mut overlapping_px))
        })?;
    }
    let json = serde_json::to_string_pretty(classes).expect("class tables serialise");
    staged.file(&classes_sidecar(target), |out| out.write_all(json.as_bytes()).map_err(|e| describe_io(&e)))?;
    Ok(overlapping_px)
}

/// The files (`false`) and folders (`true`) an export of `formats` writes into `out_dir`.
pub fn planned_outputs(classes: &ClassTable, out_dir: &Path, formats: &[ExportFormat]) -> Vec<(PathBuf, bool)> {
    let mut out = Vec::new();
    for format in formats {
        match format {
            ExportFormat::Tiff => {
                out.extend(classes.iter().map(|c| (out_dir.join(format!("{}.tif", c.export_name)), false)));
            }
            ExportFormat::Png => out.extend(classes.iter().map(|c| (out_dir.join(&c.export_name), true))),
            ExportFormat::Labels => {
                let labels = out_dir.join(LABELS_FILE);
                out.push((classes_sidecar(&labels), false));
                out.push((labels, false));
            }
        }
    }
    out
}

/// Checks before any work that an export can be written: proves `out_dir` (or, when it does
/// not exist yet, the folder it goes into, created when missing) is writable, and finds
/// outputs blocked by a file or folder of the wrong kind. Long imports call this first so that
/// a bad `--out` fails in a second, not after minutes.
pub fn preflight(classes: &ClassTable, out_dir: &Path, formats: &[ExportFormat]) -> Result<(), IoError> {
    if out_dir.exists() && !out_dir.is_dir() {
        return Err(IoError::write(out_dir, "a file of that name is in the way"));
    }
    let writable = if out_dir.is_dir() { out_dir } else { parent_dir(out_dir) };
    std::fs::create_dir_all(writable).map_err(|e| IoError::write(out_dir, describe_io(&e)))?;
    tempfile::Builder::new()
        .prefix(".sam4em-write-test.")
        .tempfile_in(writable)
        .map_err(|e| IoError::write(out_dir, describe_io(&e)))?;
    for (target, is_dir) in planned_outputs(classes, out_dir, formats) {
        if is_dir && target.exists() && !target.is_dir() {
            return Err(IoError::write(&target, "a file of that name is in the way"));
        }
        if !is_dir && target.is_dir() {
            return Err(IoError::write(&target, "a folder of that name is in the way"));
        }
    }
    Ok(())
}

/// The folder `path` goes into (`.` for a bare name).
fn parent_dir(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Exports every class of `classes` into `out_dir` in each of `formats`, with a
/// [`MANIFEST_FILE`] written last.
///
/// A new folder is built whole as a hidden sibling and renamed into place: it appears
/// complete or not at all. Into an existing folder, every output is written to a temporary
/// first (a failure there leaves the old export as it was, manifest included); then the old
/// manifest goes, every output replaces its old file atomically, and the new manifest comes
/// last: a reader that finds no manifest, or files that differ from it
/// ([`Manifest::verify`]), is looking at a torn export. The folder is synced at the end.
pub fn export_masks<M: MaskPages + ?Sized>(
    masks: &M,
    classes: &ClassTable,
    out_dir: &Path,
    formats: &[ExportFormat],
    opts: &ExportOptions,
) -> Result<ExportReport, IoError> {
    preflight(classes, out_dir, formats)?;
    if out_dir.is_dir() {
        // Everything is written first; only then does the old manifest go, the files replace
        // the old ones, and the new manifest follows. A failure before leaves the old export
        // as it was, manifest included.
        let (staged, mut report) = stage_outputs(masks, classes, out_dir, formats, opts)?;
        let manifest_path = out_dir.join(MANIFEST_FILE);
        match std::fs::remove_file(&manifest_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(IoError::write(&manifest_path, describe_io(&e)));
            }
            _ => {}
        }
        report.outputs = staged.commit()?;
        write_manifest(out_dir, &report.outputs, opts)?;
        report.outputs.push(manifest_path);
        super::atomic::sync_dir(out_dir);
        return Ok(report);
    }
    let parent = parent_dir(out_dir);
    let prefix = super::atomic::hidden_prefix(out_dir);
    let tmp = super::atomic::staging(&prefix, true)
        .tempdir_in(parent)
        .map_err(|e| IoError::write(out_dir, describe_io(&e)))?;
    let (staged, mut report) = stage_outputs(masks, classes, tmp.path(), formats, opts)?;
    report.outputs = staged.commit()?;
    write_manifest(tmp.path(), &report.outputs, opts)?;
    report.outputs.push(tmp.path().join(MANIFEST_FILE));
    super::atomic::sync_dir(tmp.path());
    let staged = tmp.keep();
    if let Err(e) = std::fs::rename(&staged, out_dir) {
        let _ = std::fs::remove_dir_all(&staged);
        return Err(IoError::write(out_dir, describe_io(&e)));
    }
    super::atomic::sync_dir(parent);
    for p in &mut report.outputs {
        if let Ok(rel) = p.strip_prefix(&staged) {
            *p = out_dir.join(rel);
        }
    }
    Ok(report)
}

/// Writes [`MANIFEST_FILE`] of the `outputs` in `dir`, atomically.
fn write_manifest(dir: &Path, outputs: &[PathBuf], opts: &ExportOptions) -> Result<(), IoError> {
    let m = manifest(dir, outputs, opts)?;
    let text = serde_json::to_string_pretty(&m).map_err(|e| IoError::write(&dir.join(MANIFEST_FILE), e.to_string()))?;
    super::atomic::write_file_atomic(&dir.join(MANIFEST_FILE), |w| {
        w.write_all(text.as_bytes()).map_err(|e| e.to_string())
    })
}

/// Writes every output of the export into temporaries in `out_dir`, to be renamed into place
/// by the caller once all are written.
fn stage_outputs<M: MaskPages + ?Sized>(
    masks: &M,
    classes: &ClassTable,
    out_dir: &Path,
    formats: &[ExportFormat],
    opts: &ExportOptions,
) -> Result<(StagedWrites, ExportReport), IoError> {
    let mut staged = StagedWrites::new();

    let mut report = ExportReport::default();
    for format in formats {
        match format {
            ExportFormat::Tiff => {
                for class in classes.iter() {
                    let target = out_dir.join(format!("{}.tif", class.export_name));
                    stage_class_tiff(&mut staged, masks, class.id, &target, opts)?;
                }
            }
            ExportFormat::Png => {
                for class in classes.iter() {
                    stage_class_pngs(&mut staged, masks, class, &out_dir.join(&class.export_name))?;
                }
            }
            ExportFormat::Labels => {
                report.overlapping_px +=
                    stage_label_map(&mut staged, masks, classes, &out_dir.join(LABELS_FILE), opts)?;
            }
        }
    }
    Ok((staged, report))
}
