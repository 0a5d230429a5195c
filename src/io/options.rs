//! What every stack reader (`stack`, `tiff`, `hdf5`) takes: the options a stack is opened
//! with, and the reduction of colour pages to grey. Its own room so that the readers and
//! `stack`, which dispatches to them, need not import each other for it.

use crate::state::volume::DEFAULT_CACHE_BUDGET_BYTES;

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

/// Options for [`open_stack`].
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Bytes of decoded slices the cache may hold.
    pub cache_budget_bytes: usize,
    /// Colour handling.
    pub color: ColorToGray,
    /// Largest decoded slice accepted; bigger ones are refused instead of exhausting memory.
    pub max_slice_bytes: u64,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self { cache_budget_bytes: DEFAULT_CACHE_BUDGET_BYTES, color: ColorToGray::Luma, max_slice_bytes: 4 << 30 }
    }
}
