//! What every stack reader (`stack`, `tiff`, `hdf5`) takes: the options a stack is opened
//! with, the one allocation policy for sizes read from file headers, and the reduction of
//! colour pages to grey. Its own room so that the readers and `stack`, which dispatches to
//! them, need not import each other for it.
//!
//! # Allocation policy
//!
//! A size read from a file (a TIFF page, an HDF5 dataset's shape, a PNG header, a project's
//! stack) is multiplied out with checked arithmetic and compared with
//! [`OpenOptions::max_slice_bytes`] before anything is allocated for it: a few-KB file that
//! declares an 80 000 × 80 000 slice is refused with the file, the shape and the limit named,
//! never an abort. The limit is 2 GiB per decoded slice by default (a 16384² float32 slice,
//! 1 GiB, passes); `SAM4EM_MAX_SLICE_GIB` or the command line's `--max-slice-gib` changes it.

use std::path::Path;
use std::sync::OnceLock;

use super::error::IoError;
use crate::state::volume::DEFAULT_CACHE_BUDGET_BYTES;

/// The default largest decoded slice: 2 GiB.
pub const DEFAULT_MAX_SLICE_BYTES: u64 = 2 << 30;
/// The environment variable that sets the largest decoded slice, in GiB.
pub const MAX_SLICE_ENV: &str = "SAM4EM_MAX_SLICE_GIB";

static MAX_SLICE_OVERRIDE: OnceLock<u64> = OnceLock::new();

/// Sets the largest decoded slice for every stack opened from now on with default options
/// (the command line's `--max-slice-gib`; wins over [`MAX_SLICE_ENV`]). Only the first call
/// counts.
pub fn set_default_max_slice_bytes(bytes: u64) {
    let _ = MAX_SLICE_OVERRIDE.set(bytes);
}

/// Parses a limit in GiB as given on the command line or in [`MAX_SLICE_ENV`].
pub fn parse_gib(text: &str) -> Result<u64, String> {
    match text.trim().parse::<f64>() {
        Ok(g) if g.is_finite() && g > 0.0 && g <= 1e9 => Ok((g * f64::from(1u32 << 30)) as u64),
        _ => Err(format!("`{text}` is not a size in GiB (a positive number, e.g. 2 or 0.5)")),
    }
}

/// The largest decoded slice: `--max-slice-gib`, else [`MAX_SLICE_ENV`], else 2 GiB.
pub fn default_max_slice_bytes() -> u64 {
    if let Some(&b) = MAX_SLICE_OVERRIDE.get() {
        return b;
    }
    match std::env::var(MAX_SLICE_ENV) {
        Ok(v) => parse_gib(&v).unwrap_or_else(|e| {
            tracing::warn!("{MAX_SLICE_ENV}: {e}; using the default 2 GiB");
            DEFAULT_MAX_SLICE_BYTES
        }),
        Err(_) => DEFAULT_MAX_SLICE_BYTES,
    }
}

/// "2 GiB", "1.500 GiB", "512 MiB", "6144 bytes".
pub(crate) fn human_bytes(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.3} GiB", b as f64 / f64::from(1u32 << 30)).replace(".000", ""),
        b if b >= 1 << 20 => format!("{} MiB", b >> 20),
        b => format!("{b} bytes"),
    }
}

/// How colour pages become one grey value per pixel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ColorToGray {
    /// Luminance (Rec. 709 weights), for images. Exact when R = G = B.
    #[default]
    Luma,
    /// The largest of R, G and B, so that any non-zero channel counts: for masks.
    AnyChannel,
}

/// Reduces interleaved samples (`channels` per pixel: grey, grey+alpha, RGB or RGBA) to one
/// grey value per pixel. Alpha never counts: masks saved as RGBA are opaque everywhere.
pub(crate) fn to_gray<T: Copy + Into<u32>>(
    samples: Vec<T>,
    channels: usize,
    mode: ColorToGray,
    from: fn(u32) -> T,
) -> Vec<T> {
    if channels == 1 {
        return samples;
    }
    samples
        .chunks_exact(channels)
        .map(|px| match (channels, mode) {
            (2, _) => px[0],
            (_, ColorToGray::Luma) => {
                let (r, g, b) = (px[0].into(), px[1].into(), px[2].into());
                // Rec. 709 weights in integers; exact when R = G = B, as EM saved as RGB is.
                from((2126 * r + 7152 * g + 722 * b + 5000) / 10_000)
            }
            (_, ColorToGray::AnyChannel) => from(px[..3].iter().map(|&v| v.into()).max().unwrap_or(0)),
        })
        .collect()
}

/// Options for [`open_stack`](super::open_stack).
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Bytes of decoded slices the cache may hold.
    pub cache_budget_bytes: usize,
    /// Colour handling.
    pub color: ColorToGray,
    /// Largest decoded slice accepted; bigger ones are refused instead of exhausting memory
    /// (default: [`default_max_slice_bytes`]).
    pub max_slice_bytes: u64,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            cache_budget_bytes: DEFAULT_CACHE_BUDGET_BYTES,
            color: ColorToGray::Luma,
            max_slice_bytes: default_max_slice_bytes(),
        }
    }
}

impl OpenOptions {
    /// Checks a slice of `width` × `height` pixels of `bytes_per_pixel` bytes, sizes as read
    /// from `path`'s header, against the limit: its size in bytes, or an error naming the
    /// file, the shape and the limit.
    pub fn check_slice(&self, path: &Path, width: u64, height: u64, bytes_per_pixel: u64) -> Result<u64, IoError> {
        check_slice_bytes(path, width, height, bytes_per_pixel, self.max_slice_bytes)
    }
}

/// [`OpenOptions::check_slice`] with an explicit limit (project files, which have no options).
pub fn check_slice_bytes(
    path: &Path,
    width: u64,
    height: u64,
    bytes_per_pixel: u64,
    limit: u64,
) -> Result<u64, IoError> {
    slice_bytes_within(width, height, bytes_per_pixel, limit).map_err(|what| IoError::unsupported(path, what))
}

/// The bytes of a `width` × `height` slice of `bytes_per_pixel`, or what is wrong with it
/// (`slice size: … exceeds the … slice limit …`).
pub(crate) fn slice_bytes_within(width: u64, height: u64, bytes_per_pixel: u64, limit: u64) -> Result<u64, String> {
    let bytes = width.checked_mul(height).and_then(|n| n.checked_mul(bytes_per_pixel));
    match bytes {
        Some(b) if b <= limit => Ok(b),
        _ => Err(format!(
            "slice size: {width}x{height} px of {bytes_per_pixel} bytes ({}) exceeds the {} slice limit \
             ({MAX_SLICE_ENV} or --max-slice-gib raises it)",
            bytes.map_or_else(|| "more than 16 EiB".to_owned(), human_bytes),
            human_bytes(limit)
        )),
    }
}
