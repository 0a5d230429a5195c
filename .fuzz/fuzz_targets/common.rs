//! What the targets share: small limits, decoding a stack's first slices, and a scratch folder
//! in memory for the parsers that read files by path.

#![allow(dead_code)] // each target uses some of it

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sam4em::io::{ColorToGray, OpenOptions};
use sam4em::state::{SliceIndex, Volume};

/// Limits small enough to keep each run fast; the checks they exercise are the ones the
/// defaults go through.
pub fn options(color: ColorToGray) -> OpenOptions {
    OpenOptions { cache_budget_bytes: 0, color, max_slice_bytes: 16 << 20 }
}

/// Decodes the first slices, as the viewer does when a stack opens.
pub fn decode_some(v: &Volume) {
    for z in 0..v.depth().min(4) {
        let _ = v.slice(SliceIndex(z));
    }
}

/// Opens `data` as a stack file named `name` (in both colour modes) and decodes its first
/// slices: what the `tiff`, `png` and `hdf5` targets do, each seeded with its own format.
pub fn open_stack_file_bytes(data: &[u8], name: &str) {
    for color in [ColorToGray::Luma, ColorToGray::AnyChannel] {
        if let Ok(v) = sam4em::io::open_stack_bytes(data.to_vec(), Path::new(name), &options(color)) {
            decode_some(&v);
        }
    }
}

/// This process's scratch folder (in `/dev/shm` where it exists, so writing an input costs
/// no disk I/O).
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = Path::new("/dev/shm");
        let base = if base.is_dir() { base.to_owned() } else { std::env::temp_dir() };
        let dir = base.join(format!("sam4em-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch folder");
        dir
    })
}

/// Splits an input into the files of a folder: parts are separated by [`SEPARATOR`] (the
/// seed generator joins real files with it).
pub const SEPARATOR: &[u8] = b"\n--sam4em-fuzz-part--\n";

/// The parts of `data` between separators, at most `max`.
pub fn parts(data: &[u8], max: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while out.len() + 1 < max {
        match rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
            Some(i) => {
                out.push(&rest[..i]);
                rest = &rest[i + SEPARATOR.len()..];
            }
            None => break,
        }
    }
    out.push(rest);
    out
}

/// A project of 100 x 70 px x 3 `u8` slices with the default classes, made in the scratch
/// folder under `name` by the code that makes a user's (`Project::create`).
pub fn small_project(name: &str) -> PathBuf {
    use sam4em::io::session::{Project, StackRef};
    use sam4em::state::{ClassTable, DType, VolumeInfo};
    let dir = scratch().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    let info = VolumeInfo {
        path: scratch().join("stack.tif"),
        format: "TIFF".into(),
        width: 100,
        height: 70,
        depth: 3,
        dtype: DType::U8,
        voxel_size: None,
        size_on_disk_bytes: 0,
    };
    Project::create(&dir, StackRef::from_info(&info), &ClassTable::default()).expect("scratch project");
    dir
}

/// `data` with its last 4 bytes replaced by the little-endian CRC-32 of the bytes before them
/// (a `.s4m` slice file's layout), or `None` when it is too short to have one.
pub fn with_trailing_crc(data: &[u8]) -> Option<Vec<u8>> {
    let body = data.len().checked_sub(4)?;
    let mut out = data[..body].to_vec();
    out.extend_from_slice(&crc32fast::hash(&data[..body]).to_le_bytes());
    Some(out)
}

/// A journal (`header_bytes` of header, then `[u32 length][u32 CRC-32][payload]` records) with
/// every complete record's checksum recomputed over its payload.
pub fn with_record_crcs(data: &[u8], header_bytes: usize) -> Vec<u8> {
    let mut out = data.to_vec();
    let mut pos = header_bytes;
    while pos + 8 <= out.len() {
        let len = u32::from_le_bytes(out[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        let Some(end) = (pos + 8).checked_add(len).filter(|&e| e <= out.len()) else { break };
        let crc = crc32fast::hash(&out[pos + 8..end]);
        out[pos + 4..pos + 8].copy_from_slice(&crc.to_le_bytes());
        pos = end;
    }
    out
}
