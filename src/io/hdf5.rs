//! HDF5 stacks (h5py, ilastik, FlyEM / gala files): one 3-D `(z, y, x)` or 2-D `(y, x)`
//! numeric dataset, read a slice at a time through `hdf5-pure` (pure Rust; contiguous and
//! chunked layouts with deflate, shuffle and LZF), so only the chunks a slice touches are read.
//!
//! Which dataset: the one named by the conventions of EM tools (`stack`, `raw`, `data`,
//! `volumes/raw`, `image`, `main`) when present, else the only or largest 3-D numeric dataset.
//! Sample types: 8/16-bit unsigned as they are; 32/64-bit integers (label maps) as unsigned
//! 32-bit when every value fits; floats as 32-bit floats. Signed 8/16-bit images are refused
//! as they are for TIFF.

use std::path::{Path, PathBuf};

use hdf5_pure::{DType as H5Type, Dataset, File};

use super::error::IoError;
use super::options::OpenOptions;
use crate::state::{DType, SliceData, SliceError, SliceIndex, SliceSource, VolumeInfo};

/// Dataset names EM tools use for the image, most specific first.
const PREFERRED: [&str; 6] = ["stack", "raw", "volumes/raw", "data", "image", "main"];

fn h5_error(path: &Path, e: impl std::fmt::Display) -> IoError {
    IoError::read(path, format!("corrupt or unreadable HDF5: {e}"))
}

/// Every dataset under `group`, as full paths without the leading `/`.
fn list_datasets(file: &File, group: &str, out: &mut Vec<String>, depth: usize) -> Result<(), hdf5_pure::Error> {
    let g = if group.is_empty() { file.root() } else { file.group(group)? };
    let prefix = if group.is_empty() { String::new() } else { format!("{group}/") };
    for d in g.datasets()? {
        out.push(format!("{prefix}{d}"));
    }
    // Deep hierarchies are unusual for image volumes; a bound keeps hostile files cheap.
    if depth < 4 {
        for sub in g.groups()? {
            list_datasets(file, &format!("{prefix}{sub}"), out, depth + 1)?;
        }
    }
    Ok(())
}

fn is_numeric(t: &H5Type) -> bool {
    matches!(
        t,
        H5Type::U8
            | H5Type::U16
            | H5Type::U32
            | H5Type::U64
            | H5Type::I8
            | H5Type::I16
            | H5Type::I32
            | H5Type::I64
            | H5Type::F32
            | H5Type::F64
    )
}

/// Opens the image dataset of an HDF5 file (already read or opened for streaming).
pub(super) fn open(file: File, path: &Path, len: u64, opts: &OpenOptions) -> Result<(VolumeInfo, Hdf5Source), IoError> {
    let mut names = Vec::new();
    list_datasets(&file, "", &mut names, 0).map_err(|e| h5_error(path, e))?;
    // (name, shape, type) of the numeric 2-D / 3-D datasets.
    let mut candidates = Vec::new();
    for name in &names {
        let Ok(ds) = file.dataset(name) else { continue };
        let (Ok(shape), Ok(t)) = (ds.shape(), ds.dtype()) else { continue };
        if (shape.len() == 2 || shape.len() == 3) && is_numeric(&t) && shape.iter().all(|&s| s > 0) {
            candidates.push((name.clone(), shape, t));
        }
    }
    let chosen = PREFERRED
        .iter()
        .find_map(|p| candidates.iter().find(|(n, s, _)| n == p && s.len() == 3))
        .or_else(|| {
            candidates
                .iter()
                .filter(|(_, s, _)| s.len() == 3)
                // Saturating: shapes come from the file and may be absurd.
                .max_by_key(|(_, s, _)| s.iter().fold(1u64, |a, &d| a.saturating_mul(d)))
        })
        .or_else(|| candidates.first())
        .cloned();
    let Some((name, shape, h5type)) = chosen else {
        let listed = if names.is_empty() { "none".to_owned() } else { names.join(", ") };
        return Err(IoError::read(
            path,
            format!("no 2-D or 3-D numeric dataset in this HDF5 file (datasets: {listed})"),
        ));
    };
    let (depth, height, width) = match shape[..] {
        [z, y, x] => (z, y, x),
        [y, x] => (1, y, x),
        _ => unreachable!("filtered to rank 2 and 3"),
    };
    let dtype = match h5type {
        H5Type::U8 => DType::U8,
        H5Type::U16 => DType::U16,
        H5Type::U32 | H5Type::U64 | H5Type::I32 | H5Type::I64 => DType::U32,
        H5Type::F32 | H5Type::F64 => DType::F32,
        H5Type::I8 => return Err(IoError::unsupported(path, "bit depth: 8-bit signed integer (HDF5 dataset)")),
        H5Type::I16 => return Err(IoError::unsupported(path, "bit depth: 16-bit signed integer (HDF5 dataset)")),
        _ => unreachable!("filtered to numeric types"),
    };
    // The samples as stored and as decoded, whichever is wider, checked before any slice is
    // read (a small compressed file may declare a huge shape).
    let stored_bytes: u64 = match h5type {
        H5Type::U8 | H5Type::I8 => 1,
        H5Type::U16 | H5Type::I16 => 2,
        H5Type::U32 | H5Type::I32 | H5Type::F32 => 4,
        _ => 8,
    };
    opts.check_slice(path, width, height, stored_bytes.max(dtype.size_bytes() as u64))?;
    let ds = file.dataset(&name).map_err(|e| h5_error(path, e))?;
    let filters: Vec<&str> = ds
        .filters()
        .iter()
        .map(|f| match f {
            1 => "deflate",
            2 => "shuffle",
            3 => "fletcher32",
            6 => "scale-offset",
            32000 => "LZF",
            _ => "other filter",
        })
        .collect();
    let layout = if ds.is_chunked() { "chunked" } else { "contiguous" };
    let filters = if filters.is_empty() { String::new() } else { format!(", {}", filters.join("+")) };
    let info = VolumeInfo {
        path: path.to_owned(),
        format: format!("HDF5 (dataset /{name}, {h5type}, {layout}{filters})"),
        width: width as usize,
        height: height as usize,
        depth: depth as usize,
        dtype,
        voxel_size: None,
        size_on_disk_bytes: len,
    };
    Ok((
        info,
        Hdf5Source {
            dataset: ds,
            h5type,
            rank: shape.len(),
            height,
            slice_len: (width * height) as usize,
            path: path.to_owned(),
        },
    ))
}

/// Decodes slices of one HDF5 dataset.
pub(super) struct Hdf5Source {
    dataset: Dataset,
    h5type: H5Type,
    rank: usize,
    height: u64,
    slice_len: usize,
    path: PathBuf,
}

fn text<T>(r: Result<T, hdf5_pure::Error>) -> Result<T, String> {
    r.map_err(|e| e.to_string())
}

impl Hdf5Source {
    fn read(&self, z: u64) -> Result<SliceData, String> {
        let ds = &self.dataset;
        // Rows of the leading dimension: one z plane of a 3-D dataset, or every row (y) of a
        // 2-D one.
        let (start, count) = if self.rank == 2 { (0, self.height) } else { (z, 1) };
        let data =
            match self.h5type {
                H5Type::U8 => SliceData::U8(text(ds.read_u8_rows(start, count))?),
                H5Type::U16 => SliceData::U16(text(ds.read_u16_rows(start, count))?),
                H5Type::U32 => SliceData::U32(text(ds.read_u32_rows(start, count))?),
                H5Type::U64 | H5Type::I32 | H5Type::I64 => {
                    let wide = text(ds.read_i64_rows(start, count))?;
                    let mut out = Vec::with_capacity(wide.len());
                    for v in wide {
                        out.push(u32::try_from(v).map_err(|_| {
                            format!("label value {v} does not fit 0..=4294967295 (negative or too large)")
                        })?);
                    }
                    SliceData::U32(out)
                }
                H5Type::F32 | H5Type::F64 => SliceData::F32(text(ds.read_f32_rows(start, count))?),
                _ => return Err(format!("unsupported HDF5 type {}", self.h5type)),
            };
        if data.len() != self.slice_len {
            return Err(format!("read {} samples where a slice has {}", data.len(), self.slice_len));
        }
        Ok(data)
    }
}

impl SliceSource for Hdf5Source {
    fn decode(&self, z: SliceIndex) -> Result<SliceData, SliceError> {
        self.read(z.0 as u64).map_err(|problem| SliceError {
            slice: z,
            problem: format!("corrupt or unreadable HDF5: {problem}"),
            path: self.path.clone(),
        })
    }
}
