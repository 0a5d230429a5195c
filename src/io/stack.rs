//! Opening stacks: a multi-page TIFF/BigTIFF file, a single PNG, or a folder of PNG/TIFF slices
//! ordered by the numbers in their names. Everything comes back as a [`Volume`] that decodes
//! slices on demand.

use std::cmp::Ordering;
use std::fs::File;
use std::io::{BufReader, Cursor, Read, Seek};
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

use super::error::{IoError, describe_io};
use super::options::{ColorToGray, OpenOptions, to_gray};
use super::tiff;
use crate::state::{DType, SliceData, SliceError, SliceIndex, SliceSource, Volume, VolumeInfo, VoxelSize};

/// Which container a file holds, from its first bytes (never from its name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signature {
    Tiff { big: bool },
    Png,
    Hdf5,
}

fn signature(head: &[u8]) -> Option<Signature> {
    match head {
        [b'I', b'I', 42, 0, ..] | [b'M', b'M', 0, 42, ..] => Some(Signature::Tiff { big: false }),
        [b'I', b'I', 43, 0, ..] | [b'M', b'M', 0, 43, ..] => Some(Signature::Tiff { big: true }),
        [0x89, b'P', b'N', b'G', ..] => Some(Signature::Png),
        [0x89, b'H', b'D', b'F', b'\r', b'\n', 0x1a, b'\n', ..] => Some(Signature::Hdf5),
        _ => None,
    }
}

fn sniff(path: &Path) -> Result<(File, u64, Signature), IoError> {
    let mut file = File::open(path).map_err(|e| IoError::read(path, describe_io(&e)))?;
    let len = file.metadata().map_err(|e| IoError::read(path, describe_io(&e)))?.len();
    if len == 0 {
        return Err(IoError::read(path, "empty file"));
    }
    let mut head = [0u8; 8];
    let n = file.read(&mut head).map_err(|e| IoError::read(path, describe_io(&e)))?;
    file.rewind().map_err(|e| IoError::read(path, describe_io(&e)))?;
    let sig = signature(&head[..n]).ok_or_else(|| unknown_format(path, &head[..n]))?;
    Ok((file, len, sig))
}

/// Said of formats we recognise but do not read yet.
const READ_FOR_NOW: &str = "stacks are read from TIFF, PNG or HDF5 for now";

/// The error for a file that is neither TIFF nor PNG, naming what it is when we can tell, so
/// the user knows to convert it rather than suspect a broken file.
fn unknown_format(path: &Path, head: &[u8]) -> IoError {
    let known = match head {
        [0x1f, 0x8b, ..] => Some("gzip-compressed"),
        [0xff, 0xd8, 0xff, ..] => Some("JPEG"),
        [b'P', b'K', 3, 4, ..] => Some("ZIP"),
        [b'N', b'R', b'R', b'D', ..] => Some("NRRD"),
        _ => None,
    };
    match known {
        Some(kind) => IoError::unsupported(path, format!("file type: {kind} ({READ_FOR_NOW})")),
        None => IoError::read(path, "not a TIFF, PNG or HDF5 file (unrecognised file signature)"),
    }
}

/// Opens a stack: a TIFF/BigTIFF file (all pages), an HDF5 file (its image dataset), a PNG
/// file (one slice) or a folder of PNG/TIFF slices. Reads metadata only; slices decode when first asked for.
pub fn open_stack(path: &Path, opts: &OpenOptions) -> Result<Volume, IoError> {
    let meta = std::fs::metadata(path).map_err(|e| IoError::read(path, describe_io(&e)))?;
    if meta.is_dir() {
        return open_sequence(path, opts);
    }
    let (file, len, sig) = sniff(path)?;
    match sig {
        Signature::Tiff { big } => {
            let (info, source) = tiff::open(BufReader::new(file), path, len, big, opts)?;
            Ok(Volume::new(volume_info(path, info, len), Box::new(source), opts.cache_budget_bytes))
        }
        Signature::Png => open_files(path, vec![path.to_owned()], opts),
        Signature::Hdf5 => {
            drop(file);
            // Streaming: metadata now, then only the chunks each slice touches.
            let h5 = hdf5_pure::File::open_streaming(path)
                .map_err(|e| IoError::read(path, format!("corrupt or unreadable HDF5: {e}")))?;
            let (info, source) = super::hdf5::open(h5, path, len, opts)?;
            Ok(Volume::new(info, Box::new(source), opts.cache_budget_bytes))
        }
    }
}

/// Opens a stack held in memory (a TIFF or PNG file's bytes). `name` appears in messages. Used
/// by the fuzz target and by tests; behaves exactly like [`open_stack`] on a file.
pub fn open_stack_bytes(bytes: Vec<u8>, name: &Path, opts: &OpenOptions) -> Result<Volume, IoError> {
    let len = bytes.len() as u64;
    match signature(&bytes) {
        Some(Signature::Tiff { big }) => {
            let (info, source) = tiff::open(Cursor::new(bytes), name, len, big, opts)?;
            Ok(Volume::new(volume_info(name, info, len), Box::new(source), opts.cache_budget_bytes))
        }
        Some(Signature::Png) => {
            let probe = probe_png(Cursor::new(&bytes), name, opts)?;
            let info = VolumeInfo {
                path: name.to_owned(),
                format: "PNG".into(),
                width: probe.width,
                height: probe.height,
                depth: 1,
                dtype: probe.dtype,
                voxel_size: None,
                size_on_disk_bytes: len,
            };
            let source = PngBytes { bytes, name: name.to_owned(), opts: opts.clone() };
            Ok(Volume::new(info, Box::new(source), opts.cache_budget_bytes))
        }
        Some(Signature::Hdf5) => {
            let h5 = hdf5_pure::File::from_bytes(bytes)
                .map_err(|e| IoError::read(name, format!("corrupt or unreadable HDF5: {e}")))?;
            let (info, source) = super::hdf5::open(h5, name, len, opts)?;
            Ok(Volume::new(info, Box::new(source), opts.cache_budget_bytes))
        }
        None => Err(unknown_format(name, &bytes[..bytes.len().min(8)])),
    }
}

fn volume_info(path: &Path, t: tiff::TiffInfo, len: u64) -> VolumeInfo {
    VolumeInfo {
        path: path.to_owned(),
        format: t.format,
        width: t.width,
        height: t.height,
        depth: t.depth,
        dtype: t.dtype,
        voxel_size: t.voxel_size,
        size_on_disk_bytes: len,
    }
}

/// Orders names the way people number slices: runs of digits compare as numbers, so
/// `2.png < 10.png` and `mask0009.png < mask0010.png`; ties fall back to plain byte order.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    fn chunks(s: &str) -> impl Iterator<Item = (bool, &str)> {
        let mut rest = s;
        std::iter::from_fn(move || {
            let first = rest.chars().next()?;
            let digit = first.is_ascii_digit();
            let end = rest.find(|c: char| c.is_ascii_digit() != digit).unwrap_or(rest.len());
            let (chunk, tail) = rest.split_at(end);
            rest = tail;
            Some((digit, chunk))
        })
    }
    let mut ca = chunks(a);
    let mut cb = chunks(b);
    loop {
        match (ca.next(), cb.next()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some((true, x)), Some((true, y))) => {
                let (xt, yt) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
                let ord = xt.len().cmp(&yt.len()).then_with(|| xt.cmp(yt));
                if ord != Ordering::Equal {
                    return ord;
                }
            }
            (Some((_, x)), Some((_, y))) => {
                let ord = x.cmp(y);
                if ord != Ordering::Equal {
                    return ord;
                }
            }
        }
    }
}

/// The image files of a folder, in slice order. Hidden files (`.DS_Store`, macOS `._*`
/// companions) and other extensions are ignored.
pub fn list_slice_files(dir: &Path) -> Result<Vec<PathBuf>, IoError> {
    let entries = std::fs::read_dir(dir).map_err(|e| IoError::read(dir, describe_io(&e)))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| IoError::read(dir, describe_io(&e)))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let ext = Path::new(name).extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        if name.starts_with('.') || !matches!(ext.as_str(), "png" | "tif" | "tiff") {
            continue;
        }
        if entry.path().is_file() {
            files.push(entry.path());
        }
    }
    files.sort_by(|a, b| {
        natural_cmp(
            &a.file_name().unwrap_or_default().to_string_lossy(),
            &b.file_name().unwrap_or_default().to_string_lossy(),
        )
    });
    if files.is_empty() {
        return Err(IoError::read(dir, "no PNG or TIFF slices in this folder"));
    }
    Ok(files)
}

fn open_sequence(dir: &Path, opts: &OpenOptions) -> Result<Volume, IoError> {
    for (marker, kind) in [(".zarray", "Zarr"), (".zgroup", "Zarr"), ("zarr.json", "Zarr"), ("attributes.json", "N5")] {
        if dir.join(marker).exists() {
            return Err(IoError::unsupported(dir, format!("container: {kind} ({READ_FOR_NOW})")));
        }
    }

    let files = list_slice_files(dir)?;
    open_files(dir, files, opts)
}

/// Size and type of one slice file, read from its header.
struct Probe {
    width: usize,
    height: usize,
    dtype: DType,
    voxel_size: Option<VoxelSize>,
    format: &'static str,
}

fn png_dtype(c: image::ColorType, path: &Path) -> Result<DType, IoError> {
    use image::ColorType as C;
    match c {
        C::L8 | C::La8 | C::Rgb8 | C::Rgba8 => Ok(DType::U8),
        C::L16 | C::La16 | C::Rgb16 | C::Rgba16 => Ok(DType::U16),
        other => Err(IoError::unsupported(path, format!("PNG colour type {other:?}"))),
    }
}

fn image_limits(opts: &OpenOptions) -> image::Limits {
    let mut l = image::Limits::default();
    // Room for the decoded image plus the decoder's own buffers.
    l.max_alloc = Some(opts.max_slice_bytes.saturating_mul(2));
    l
}

fn probe_png<R: std::io::BufRead + Seek>(reader: R, path: &Path, opts: &OpenOptions) -> Result<Probe, IoError> {
    let mut r = ImageReader::with_format(reader, ImageFormat::Png);
    r.limits(image_limits(opts));
    let dec = r.into_decoder().map_err(|e| IoError::read(path, format!("corrupt PNG: {e}")))?;
    let (w, h) = dec.dimensions();
    let dtype = png_dtype(dec.color_type(), path)?;
    opts.check_slice(path, u64::from(w), u64::from(h), u64::from(dec.color_type().bytes_per_pixel()))?;
    Ok(Probe { width: w as usize, height: h as usize, dtype, voxel_size: None, format: "PNG" })
}

fn probe(path: &Path, opts: &OpenOptions) -> Result<Probe, IoError> {
    let (file, len, sig) = sniff(path)?;
    match sig {
        Signature::Hdf5 => Err(IoError::unsupported(path, "HDF5 file inside a slice folder; open it on its own")),
        Signature::Png => probe_png(BufReader::new(file), path, opts),
        Signature::Tiff { big } => {
            let (info, _) = tiff::open(BufReader::new(file), path, len, big, opts)?;
            if info.depth != 1 {
                return Err(IoError::unsupported(
                    path,
                    format!("multi-page TIFF ({} pages) inside a slice folder; open it on its own", info.depth),
                ));
            }
            Ok(Probe {
                width: info.width,
                height: info.height,
                dtype: info.dtype,
                voxel_size: info.voxel_size,
                format: "TIFF",
            })
        }
    }
}

/// Opens a list of single-slice files as a stack, checking that all agree in size and type.
fn open_files(path: &Path, files: Vec<PathBuf>, opts: &OpenOptions) -> Result<Volume, IoError> {
    let first = probe(&files[0], opts)?;
    let mut size_on_disk_bytes = 0;
    let mut formats = vec![first.format];
    for (z, f) in files.iter().enumerate() {
        size_on_disk_bytes += std::fs::metadata(f).map_err(|e| IoError::read(f, describe_io(&e)))?.len();
        if z == 0 {
            continue;
        }
        let p = probe(f, opts)?;
        if (p.width, p.height, p.dtype) != (first.width, first.height, first.dtype) {
            return Err(IoError::mismatch(
                f,
                format!(
                    "slice {z} is {}x{} px {} where the first slice ({}) is {}x{} px {}; all slices must match",
                    p.width,
                    p.height,
                    p.dtype,
                    files[0].file_name().unwrap_or_default().to_string_lossy(),
                    first.width,
                    first.height,
                    first.dtype
                ),
            ));
        }
        if !formats.contains(&p.format) {
            formats.push(p.format);
        }
    }
    let format = if files.len() == 1 && files[0] == path {
        formats[0].to_owned()
    } else {
        format!("{} sequence ({} files)", formats.join("/"), files.len())
    };
    let info = VolumeInfo {
        path: path.to_owned(),
        format,
        width: first.width,
        height: first.height,
        depth: files.len(),
        dtype: first.dtype,
        voxel_size: first.voxel_size,
        size_on_disk_bytes,
    };
    let source = FileSequence { files, opts: opts.clone() };
    Ok(Volume::new(info, Box::new(source), opts.cache_budget_bytes))
}

/// Slices stored one per file.
struct FileSequence {
    files: Vec<PathBuf>,
    opts: OpenOptions,
}

fn decode_png<R: std::io::BufRead + Seek>(reader: R, opts: &OpenOptions) -> Result<SliceData, String> {
    let mut r = ImageReader::with_format(reader, ImageFormat::Png);
    r.limits(image_limits(opts));
    let img = r.decode().map_err(|e| format!("corrupt PNG: {e}"))?;
    dynamic_to_slice(img, opts.color)
}

/// Converts a decoded PNG to grey samples.
fn dynamic_to_slice(img: DynamicImage, mode: ColorToGray) -> Result<SliceData, String> {
    Ok(match img {
        DynamicImage::ImageLuma8(b) => SliceData::U8(b.into_raw()),
        DynamicImage::ImageLumaA8(b) => SliceData::U8(to_gray(b.into_raw(), 2, mode, |x| x as u8)),
        DynamicImage::ImageRgb8(b) => SliceData::U8(to_gray(b.into_raw(), 3, mode, |x| x as u8)),
        DynamicImage::ImageRgba8(b) => SliceData::U8(to_gray(b.into_raw(), 4, mode, |x| x as u8)),
        DynamicImage::ImageLuma16(b) => SliceData::U16(b.into_raw()),
        DynamicImage::ImageLumaA16(b) => SliceData::U16(to_gray(b.into_raw(), 2, mode, |x| x as u16)),
        DynamicImage::ImageRgb16(b) => SliceData::U16(to_gray(b.into_raw(), 3, mode, |x| x as u16)),
        DynamicImage::ImageRgba16(b) => SliceData::U16(to_gray(b.into_raw(), 4, mode, |x| x as u16)),
        other => return Err(format!("unsupported PNG colour type {:?}", other.color())),
    })
}

impl SliceSource for FileSequence {
    fn decode(&self, z: SliceIndex) -> Result<SliceData, SliceError> {
        let path = &self.files[z.0];
        let fail = |problem: String| SliceError { slice: z, problem, path: path.clone() };
        let (file, len, sig) = sniff(path).map_err(|e| fail(e.to_string()))?;
        match sig {
            Signature::Hdf5 => Err(fail("an HDF5 file where a slice image was".into())),
            Signature::Png => decode_png(BufReader::new(file), &self.opts).map_err(fail),
            Signature::Tiff { big } => {
                let (_, source) =
                    tiff::open(BufReader::new(file), path, len, big, &self.opts).map_err(|e| fail(e.to_string()))?;
                source.decode(SliceIndex(0)).map_err(|e| SliceError { slice: z, ..e })
            }
        }
    }
}

/// A single PNG held in memory.
struct PngBytes {
    bytes: Vec<u8>,
    name: PathBuf,
    opts: OpenOptions,
}

impl SliceSource for PngBytes {
    fn decode(&self, z: SliceIndex) -> Result<SliceData, SliceError> {
        decode_png(Cursor::new(&self.bytes), &self.opts).map_err(|problem| SliceError {
            slice: z,
            problem,
            path: self.name.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        let mut names =
            vec!["10.png", "2.png", "1.png", "0.png", "mask0010.png", "mask0009.png", "b.png", "a10b.png", "a9b.png"];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            names,
            ["0.png", "1.png", "2.png", "10.png", "a9b.png", "a10b.png", "b.png", "mask0009.png", "mask0010.png"]
        );
        assert_eq!(natural_cmp("01.png", "1.png"), Ordering::Less, "equal numbers fall back to byte order");
    }
}
