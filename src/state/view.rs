//! What the viewer shows and how: the camera (zoom about a point, pan, fit, 1:1), the contrast
//! window with percentile auto-contrast, the cursor shared by the XY / XZ / YZ views, and the
//! conversions from slices and masks to the planes those views draw.
//!
//! Pure Rust, no egui or wgpu: points are `[f32; 2]` in screen points, image coordinates are
//! texels with (0, 0) at the top-left corner of the first texel.

use std::sync::Arc;

use super::bitplane::BitPlane;
use super::classes::ClassId;
use super::mask::MaskVolume;
use super::volume::{DType, Slice, SliceData, SliceIndex, VoxelSize};

/// Smallest and largest zoom, screen points per image pixel.
pub const ZOOM_RANGE: (f32, f32) = (1.0 / 64.0, 64.0);

/// Zoom and pan of the XY view (the orthogonal views follow it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Camera {
    /// Screen points per image pixel along x.
    pub zoom: f32,
    /// Image position shown at the centre of the view.
    pub center: [f32; 2],
}

impl Camera {
    /// Whole image visible and centred in a `view_size` view (`aspect_y`: screen height of a
    /// pixel relative to its width).
    pub fn fit(view_size: [f32; 2], image_size: [f32; 2], aspect_y: f32) -> Self {
        let zoom_x = view_size[0] / image_size[0].max(1.0);
        let zoom_y = view_size[1] / (image_size[1].max(1.0) * aspect_y);
        Self {
            zoom: zoom_x.min(zoom_y).clamp(ZOOM_RANGE.0, ZOOM_RANGE.1),
            center: [image_size[0] / 2.0, image_size[1] / 2.0],
        }
    }

    /// `(scale, offset)` with `screen = image * scale + offset` for a view whose top-left
    /// corner is `view_min` and size `view_size`.
    pub fn screen_from_image(&self, view_min: [f32; 2], view_size: [f32; 2], aspect_y: f32) -> ([f32; 2], [f32; 2]) {
        let scale = [self.zoom, self.zoom * aspect_y];
        let offset = [
            view_min[0] + view_size[0] / 2.0 - self.center[0] * scale[0],
            view_min[1] + view_size[1] / 2.0 - self.center[1] * scale[1],
        ];
        (scale, offset)
    }

    /// The image position under screen point `p`.
    pub fn image_from_screen(&self, p: [f32; 2], view_min: [f32; 2], view_size: [f32; 2], aspect_y: f32) -> [f32; 2] {
        let (scale, offset) = self.screen_from_image(view_min, view_size, aspect_y);
        [(p[0] - offset[0]) / scale[0], (p[1] - offset[1]) / scale[1]]
    }

    /// The image area a `view_size` view shows: `[x0, y0, x1, y1]` in image pixels (not clamped
    /// to the image).
    pub fn visible_area(&self, view_size: [f32; 2], aspect_y: f32) -> [f32; 4] {
        let half = [view_size[0] / 2.0 / self.zoom, view_size[1] / 2.0 / (self.zoom * aspect_y)];
        [self.center[0] - half[0], self.center[1] - half[1], self.center[0] + half[0], self.center[1] + half[1]]
    }

    /// Multiplies the zoom by `factor`, keeping the image point under `anchor` (a screen
    /// point) where it is.
    pub fn zoom_about(
        &mut self,
        factor: f32,
        anchor: [f32; 2],
        view_min: [f32; 2],
        view_size: [f32; 2],
        aspect_y: f32,
    ) {
        let before = self.image_from_screen(anchor, view_min, view_size, aspect_y);
        self.zoom = (self.zoom * factor).clamp(ZOOM_RANGE.0, ZOOM_RANGE.1);
        let after = self.image_from_screen(anchor, view_min, view_size, aspect_y);
        self.center[0] += before[0] - after[0];
        self.center[1] += before[1] - after[1];
    }

    /// Moves the image by `delta` screen points.
    pub fn pan_by(&mut self, delta: [f32; 2], aspect_y: f32) {
        self.center[0] -= delta[0] / self.zoom;
        self.center[1] -= delta[1] / (self.zoom * aspect_y);
    }
}

/// How raw samples become grey levels.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Contrast {
    /// Sample value shown black.
    pub low: f64,
    /// Sample value shown white.
    pub high: f64,
    /// Display gamma (1 linear, > 1 darkens mid-tones).
    pub gamma: f32,
    /// Black ↔ white.
    pub invert: bool,
}

impl Contrast {
    /// The full range of `dtype` (floats: 0..1), linear, not inverted.
    pub fn full_range(dtype: DType) -> Self {
        let high = match dtype {
            DType::U8 => 255.0,
            DType::U16 => 65535.0,
            DType::U32 => f64::from(u32::MAX),
            DType::F32 => 1.0,
        };
        Self { low: 0.0, high, gamma: 1.0, invert: false }
    }
}

/// Default auto-contrast percentiles: what ImageJ's "Auto" and napari's contrast limits land
/// near for EM (0.35 % saturated each side).
pub const AUTO_CONTRAST_PERCENTILES: (f64, f64) = (0.35, 99.65);

/// The one rule a probability threshold follows everywhere (the prediction layer, Accept
/// prediction, `sam4em predict`): a pixel is foreground when its probability is above the
/// threshold, as in SAM4EM (`p > 0.4`). For probabilities stored as `u8` (`p = v / 255`), `v`
/// is foreground when `i32::from(v) > probability_cut(threshold)`.
pub fn probability_cut(threshold: f32) -> i32 {
    (f64::from(threshold) * 255.0).floor() as i32
}

/// The foreground of probabilities stored as `u8` (`width` per row) at `threshold`, by
/// [`probability_cut`]'s rule.
pub fn probability_plane(width: usize, height: usize, probabilities: &[u8], threshold: f32) -> BitPlane {
    let cut = probability_cut(threshold);
    let mut plane = BitPlane::new(width, height);
    for (i, _) in probabilities.iter().enumerate().filter(|(_, v)| i32::from(**v) > cut) {
        plane.set(i % width, i / width, true);
    }
    plane
}

/// The sample values at the `low_pct` and `high_pct` percentiles of `data` (NaNs ignored).
/// 8 and 16-bit data use an exact histogram; 32-bit data a sorted sample of at most 2^18
/// values.
pub fn percentile_window(data: &SliceData, low_pct: f64, high_pct: f64) -> Option<(f64, f64)> {
    fn from_histogram(hist: &[u64], low_pct: f64, high_pct: f64) -> Option<(f64, f64)> {
        let total: u64 = hist.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = |pct: f64| ((pct / 100.0) * (total - 1) as f64).round() as u64;
        let (lo_rank, hi_rank) = (rank(low_pct), rank(high_pct));
        let (mut lo, mut hi, mut seen) = (None, None, 0u64);
        for (value, &count) in hist.iter().enumerate() {
            seen += count;
            if lo.is_none() && seen > lo_rank {
                lo = Some(value as f64);
            }
            if seen > hi_rank {
                hi = Some(value as f64);
                break;
            }
        }
        Some((lo?, hi?))
    }
    match data {
        SliceData::U8(v) => {
            let mut hist = vec![0u64; 256];
            v.iter().for_each(|&x| hist[usize::from(x)] += 1);
            from_histogram(&hist, low_pct, high_pct)
        }
        SliceData::U16(v) => {
            let mut hist = vec![0u64; 65536];
            v.iter().for_each(|&x| hist[usize::from(x)] += 1);
            from_histogram(&hist, low_pct, high_pct)
        }
        SliceData::U32(_) | SliceData::F32(_) => {
            let step = (data.len() / (1 << 18)).max(1);
            let mut sample: Vec<f64> =
                (0..data.len()).step_by(step).map(|i| data.value_f64(i)).filter(|x| !x.is_nan()).collect();
            if sample.is_empty() {
                return None;
            }
            sample.sort_by(f64::total_cmp);
            let at = |pct: f64| sample[((pct / 100.0) * (sample.len() - 1) as f64).round() as usize];
            Some((at(low_pct), at(high_pct)))
        }
    }
}

/// The point the three views share: the XY view shows slice `z`, the XZ view row `y`, the YZ
/// view column `x`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// Column.
    pub x: usize,
    /// Row.
    pub y: usize,
    /// Slice.
    pub z: SliceIndex,
}

/// Screen height of a z step relative to an x pixel in the XZ / YZ views, from the voxel
/// size (1 when unknown, so the views are at least usable).
pub fn z_aspect(voxel: Option<VoxelSize>) -> f32 {
    match voxel {
        Some(VoxelSize { x_nm, z_nm: Some(z_nm), .. }) if x_nm > 0.0 && z_nm > 0.0 => (z_nm / x_nm) as f32,
        _ => 1.0,
    }
}

/// The XZ plane at row `y`: `width` columns, one row per slice (top = slice 0).
///
/// # Panics
/// When the slices do not share one size and sample type (a `Volume` guarantees they do).
pub fn reslice_xz(slices: &[Arc<Slice>], y: usize) -> Slice {
    let width = slices[0].width;
    let rows = slices.iter().map(|s| (s.width * y, &s.data));
    let data = gather(slices[0].data.dtype(), slices.len() * width, |out| {
        for (start, data) in rows {
            out.extend_range(data, start, width, 1);
        }
    });
    Slice { width, height: slices.len(), data }
}

/// The YZ plane at column `x`, shown with z across (column = slice) and y down, so its rows
/// line up with the XY view's.
pub fn reslice_yz(slices: &[Arc<Slice>], x: usize) -> Slice {
    let (depth, height, width) = (slices.len(), slices[0].height, slices[0].width);
    let data = gather(slices[0].data.dtype(), depth * height, |out| {
        for y in 0..height {
            for s in slices {
                out.extend_range(&s.data, y * width + x, 1, 1);
            }
        }
    });
    Slice { width: depth, height, data }
}

/// A growing `SliceData` of one sample type.
struct Gather(SliceData);

impl Gather {
    fn extend_range(&mut self, from: &SliceData, start: usize, count: usize, stride: usize) {
        macro_rules! copy {
            ($out:expr, $src:expr) => {
                $out.extend((0..count).map(|i| $src[start + i * stride]))
            };
        }
        match (&mut self.0, from) {
            (SliceData::U8(o), SliceData::U8(s)) => copy!(o, s),
            (SliceData::U16(o), SliceData::U16(s)) => copy!(o, s),
            (SliceData::U32(o), SliceData::U32(s)) => copy!(o, s),
            (SliceData::F32(o), SliceData::F32(s)) => copy!(o, s),
            _ => panic!("slices of one volume share a sample type"),
        }
    }
}

fn gather(dtype: DType, capacity: usize, fill: impl FnOnce(&mut Gather)) -> SliceData {
    let mut g = Gather(match dtype {
        DType::U8 => SliceData::U8(Vec::with_capacity(capacity)),
        DType::U16 => SliceData::U16(Vec::with_capacity(capacity)),
        DType::U32 => SliceData::U32(Vec::with_capacity(capacity)),
        DType::F32 => SliceData::F32(Vec::with_capacity(capacity)),
    });
    fill(&mut g);
    g.0
}

/// Class bits of slice `z` for the overlay: bit `i` set where the class `slots[i]` covers the
/// pixel (at most 16 slots; classes beyond are not drawn).
pub fn mask_bits_xy(masks: &MaskVolume, slots: &[ClassId], z: SliceIndex) -> Vec<u16> {
    let mut bits = vec![0u16; masks.width() * masks.height()];
    for (slot, class) in slots.iter().take(16).enumerate() {
        if let Some(m) = masks.mask(*class, z) {
            m.for_each_set(|i| bits[i] |= 1 << slot);
        }
    }
    bits
}

/// Class bits of the rectangle `x0..x1 × y0..y1` of slice `z`, row-major (the part of
/// [`mask_bits_xy`] an edit changed).
pub fn mask_bits_rect(
    masks: &MaskVolume,
    slots: &[ClassId],
    z: SliceIndex,
    x: std::ops::Range<usize>,
    y: std::ops::Range<usize>,
) -> Vec<u16> {
    let mut bits = vec![0u16; x.len() * y.len()];
    for (slot, class) in slots.iter().take(16).enumerate() {
        if let Some(m) = masks.mask(*class, z) {
            for (row, yy) in y.clone().enumerate() {
                for (col, xx) in x.clone().enumerate() {
                    if m.get(xx, yy) {
                        bits[row * x.len() + col] |= 1 << slot;
                    }
                }
            }
        }
    }
    bits
}

/// Class bits of the XZ plane at row `y` (layout of [`reslice_xz`]).
pub fn mask_bits_xz(masks: &MaskVolume, slots: &[ClassId], y: usize) -> Vec<u16> {
    let (w, d) = (masks.width(), masks.depth());
    let mut bits = vec![0u16; w * d];
    for (slot, class) in slots.iter().take(16).enumerate() {
        for (z, entry) in masks.slices(*class) {
            let row = &mut bits[z.0 * w..(z.0 + 1) * w];
            for (x, b) in row.iter_mut().enumerate() {
                if entry.mask.get(x, y) {
                    *b |= 1 << slot;
                }
            }
        }
    }
    bits
}

/// Class bits of the YZ plane at column `x` (layout of [`reslice_yz`]).
pub fn mask_bits_yz(masks: &MaskVolume, slots: &[ClassId], x: usize) -> Vec<u16> {
    let (h, d) = (masks.height(), masks.depth());
    let mut bits = vec![0u16; d * h];
    for (slot, class) in slots.iter().take(16).enumerate() {
        for (z, entry) in masks.slices(*class) {
            for y in 0..h {
                if entry.mask.get(x, y) {
                    bits[y * d + z.0] |= 1 << slot;
                }
            }
        }
    }
    bits
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_probability_at_the_threshold_is_not_foreground() {
        use super::probability_cut;
        // SAM4EM's rule, p > t: 102 / 255 is exactly 0.4, so it stays background at 0.4.
        assert_eq!(probability_cut(0.4), 102);
        assert_eq!(probability_cut(0.5), 127);
        assert_eq!(probability_cut(0.0), 0);
        assert_eq!(probability_cut(1.0), 255);
        for v in 0..=255u8 {
            for t in [0.1f32, 0.25, 0.4, 0.5, 0.75] {
                let above = f32::from(v) / 255.0 > t;
                assert_eq!(i32::from(v) > probability_cut(t), above, "v {v} t {t}");
            }
        }
    }

    use super::*;
    use crate::state::{Provenance, SliceMask};

    #[test]
    fn zoom_keeps_the_anchor_fixed() {
        let mut cam = Camera { zoom: 1.0, center: [50.0, 50.0] };
        let (min, size) = ([10.0, 20.0], [200.0, 100.0]);
        let anchor = [60.0, 40.0];
        let before = cam.image_from_screen(anchor, min, size, 1.0);
        cam.zoom_about(2.5, anchor, min, size, 1.0);
        let after = cam.image_from_screen(anchor, min, size, 1.0);
        assert!((before[0] - after[0]).abs() < 1e-4 && (before[1] - after[1]).abs() < 1e-4);
        assert_eq!(cam.zoom, 2.5);
    }

    #[test]
    fn fit_shows_the_whole_image() {
        let cam = Camera::fit([400.0, 300.0], [512.0, 256.0], 1.0);
        assert!((cam.zoom - 400.0 / 512.0).abs() < 1e-6);
        let (scale, offset) = cam.screen_from_image([0.0, 0.0], [400.0, 300.0], 1.0);
        assert!(offset[0].abs() < 1e-3);
        assert!(offset[1] >= 0.0 && offset[1] + 256.0 * scale[1] <= 300.0 + 1e-3);
    }

    #[test]
    fn the_visible_area_is_what_the_view_corners_show() {
        let cam = Camera { zoom: 2.0, center: [300.0, 100.0] };
        let (min, size) = ([10.0, 20.0], [400.0, 200.0]);
        for aspect in [1.0, 3.0] {
            let a = cam.visible_area(size, aspect);
            let top_left = cam.image_from_screen(min, min, size, aspect);
            let bottom_right = cam.image_from_screen([min[0] + size[0], min[1] + size[1]], min, size, aspect);
            for (got, want) in a.iter().zip([top_left[0], top_left[1], bottom_right[0], bottom_right[1]]) {
                assert!((got - want).abs() < 1e-3, "{a:?} at aspect {aspect}");
            }
        }
    }

    #[test]
    fn pan_moves_the_image_with_the_pointer() {
        let mut cam = Camera { zoom: 2.0, center: [10.0, 10.0] };
        let p = cam.image_from_screen([5.0, 5.0], [0.0, 0.0], [20.0, 20.0], 1.0);
        cam.pan_by([4.0, -2.0], 1.0);
        let q = cam.image_from_screen([9.0, 3.0], [0.0, 0.0], [20.0, 20.0], 1.0);
        assert_eq!(p, q);
    }

    #[test]
    fn percentiles_of_a_ramp() {
        let data = SliceData::U8((0..=255).collect());
        assert_eq!(percentile_window(&data, 0.0, 100.0), Some((0.0, 255.0)));
        assert_eq!(percentile_window(&data, 10.0, 90.0), Some((26.0, 230.0)));
        let f = SliceData::F32(vec![f32::NAN, 3.0, 1.0, 2.0]);
        assert_eq!(percentile_window(&f, 0.0, 100.0), Some((1.0, 3.0)));
        assert_eq!(percentile_window(&SliceData::F32(vec![f32::NAN]), 0.0, 100.0), None);
    }

    #[test]
    fn reslicing_matches_the_volume() {
        let (w, h, d) = (4, 3, 2);
        let slices: Vec<Arc<Slice>> = (0..d)
            .map(|z| {
                Arc::new(Slice {
                    width: w,
                    height: h,
                    data: SliceData::U16((0..w * h).map(|i| (z * 100 + i) as u16).collect()),
                })
            })
            .collect();
        let xz = reslice_xz(&slices, 2);
        assert_eq!((xz.width, xz.height), (4, 2));
        assert_eq!(xz.value_at(3, 1), slices[1].value_at(3, 2));
        let yz = reslice_yz(&slices, 1);
        assert_eq!((yz.width, yz.height), (2, 3));
        assert_eq!(yz.value_at(1, 2), slices[1].value_at(1, 2));
        assert_eq!(yz.value_at(0, 1), slices[0].value_at(1, 1));
    }

    #[test]
    fn mask_bits_follow_slots_in_every_plane() {
        let mut masks = MaskVolume::new(3, 2, 2);
        let (a, b) = (ClassId(5), ClassId(9));
        masks.put(a, SliceIndex(1), SliceMask::from_fn(3, 2, |i| i == 4), Provenance::User).unwrap();
        masks.put(b, SliceIndex(1), SliceMask::from_fn(3, 2, |i| i >= 3), Provenance::User).unwrap();
        let xy = mask_bits_xy(&masks, &[a, b], SliceIndex(1));
        assert_eq!(xy, vec![0, 0, 0, 2, 3, 2]);
        assert_eq!(mask_bits_xy(&masks, &[a, b], SliceIndex(0)), vec![0; 6]);
        assert_eq!(mask_bits_rect(&masks, &[a, b], SliceIndex(1), 1..3, 1..2), vec![3, 2]);
        // (x=1, y=1, z=1) is set for both classes.
        assert_eq!(mask_bits_xz(&masks, &[a, b], 1), vec![0, 0, 0, 2, 3, 2]);
        assert_eq!(mask_bits_yz(&masks, &[a, b], 1), vec![0, 0, 0, 3]);
    }
}
