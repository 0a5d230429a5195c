//! Cutting a slice into the model's input tiles at a chosen scale, and blending the tiles'
//! probabilities back into one full-resolution map.
//!
//! The model sees `S × S` pixels (its `image_size`). At [`Scale::Fit`] the whole slice is resized
//! to that (the paper's mode, and what the app did before tiles); at a [`Scale::Factor`] `f`
//! (model pixels per stack pixel: 1 is native resolution) a tile covers `S / f` stack pixels and
//! a slice larger than that is cut into a grid of overlapping tiles. Along each axis the tiles
//! are spread evenly from one border to the other, neighbours overlapping by at least a quarter
//! of a tile (a [`HALO_FRACTION`] of the tile on each side, as micro-sam and Cellpose tile), so
//! no tile hangs over a border; only a slice smaller than one tile is padded (at its right and
//! bottom, with zeros after normalisation, the way SAM pads its input), and the padding's
//! prediction is discarded.
//!
//! Blending: each tile's weight ramps linearly across its overlaps with its neighbours and is 1
//! elsewhere (and up to the slice border), per axis; the weights are normalised per axis, so at
//! every pixel the weights of the tiles covering it sum to 1 and the blended probability is their
//! weighted mean. A pixel covered by one tile takes that tile's value unchanged, so a slice of
//! exactly `S × S` at scale 1 gives the untiled result bit for bit.
//!
//! Pure host code: no model, no device.

use crate::model::preprocess::Window;
use crate::state::bitplane::PixelBox;
pub use crate::state::scale::Scale;

/// Part of a tile, on each side, that overlaps its neighbours (at least; the even spread can make
/// overlaps larger).
pub const HALO_FRACTION: f64 = 1.0 / 8.0;

/// One tile along one axis.
#[derive(Clone, Debug, PartialEq)]
struct Span {
    /// First stack pixel covered.
    start: usize,
    /// Stack pixels covered (the tile's side, or the slice's extent when it is smaller).
    len: usize,
    /// Model pixels the covered part fills (the rest of the input, if any, is padding).
    model_len: usize,
    /// Blend weight of each covered pixel, normalised over the tiles covering it.
    weights: Vec<f32>,
}

/// One tile of a slice: its window and where it lands in the model input.
pub type Tile = Window;

/// The tiles of a `width × height` slice at a scale, row by row.
#[derive(Clone, Debug, PartialEq)]
pub struct TileGrid {
    width: usize,
    height: usize,
    input_px: usize,
    scale: Scale,
    xs: Vec<Span>,
    ys: Vec<Span>,
}

impl TileGrid {
    /// The grid of a `width × height` slice for a model input of `input_px` at `scale`.
    pub fn new(width: usize, height: usize, input_px: usize, scale: Scale) -> Self {
        assert!(width > 0 && height > 0 && input_px > 0, "empty slice or model input");
        let (xs, ys) = match scale {
            Scale::Fit => (vec![Span::whole(width, input_px)], vec![Span::whole(height, input_px)]),
            Scale::Factor(f) => (spans(width, input_px, f), spans(height, input_px, f)),
        };
        TileGrid { width, height, input_px, scale, xs, ys }
    }

    /// The scale the grid was cut at.
    pub fn scale(&self) -> Scale {
        self.scale
    }

    /// Slice width and height in stack pixels.
    pub fn size(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    /// The model input side in pixels.
    pub fn input_px(&self) -> usize {
        self.input_px
    }

    /// Tiles across and down.
    pub fn columns_rows(&self) -> (usize, usize) {
        (self.xs.len(), self.ys.len())
    }

    /// Number of tiles.
    pub fn len(&self) -> usize {
        self.xs.len() * self.ys.len()
    }

    /// Whether the grid has no tiles (never: every slice has at least one).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tile `i` (row-major).
    pub fn tile(&self, i: usize) -> Tile {
        let (x, y) = (&self.xs[i % self.xs.len()], &self.ys[i / self.xs.len()]);
        Tile {
            x0: x.start,
            y0: y.start,
            width: x.len,
            height: y.len,
            model_width: x.model_len,
            model_height: y.model_len,
        }
    }

    /// All tiles, row by row.
    pub fn tiles(&self) -> impl Iterator<Item = Tile> + '_ {
        (0..self.len()).map(|i| self.tile(i))
    }

    /// Tile `i`'s model input `[3, S, S]` from the slice's 8-bit image (`width × height`): the
    /// covered pixels, resized to the tile's model size unless the scale is 1, normalised, and
    /// zero (after normalisation) where the tile is padded.
    pub fn model_input(&self, i: usize, image: &[u8]) -> Vec<f32> {
        assert_eq!(image.len(), self.width * self.height, "image does not match {}×{}", self.width, self.height);
        let t = self.tile(i);
        let one = t.model_image(t.crop(image, self.width), self.input_px);
        let mut out = Vec::with_capacity(3 * one.len());
        for _ in 0..3 {
            out.extend_from_slice(&one);
        }
        out
    }

    /// Tile `i` of a slice mask (`width × height`, 0 or 1) as the model's `S × S` mask prompt:
    /// nearest-neighbour resized where the scale is not 1, zero where the tile is padded.
    pub fn model_mask(&self, i: usize, mask: &[u8]) -> Vec<f32> {
        assert_eq!(mask.len(), self.width * self.height, "mask does not match {}×{}", self.width, self.height);
        let t = self.tile(i);
        t.model_mask(t.crop(mask, self.width), self.input_px).into_iter().map(f32::from).collect()
    }

    /// Adds tile `i`'s probabilities (`S × S`, 0–1) into `acc` (`width × height`), weighted: after
    /// every tile is added, `acc` holds the blended map. The covered part is resized back to the
    /// tile's stack size (bilinear) unless the scale is 1; padding is dropped.
    pub fn blend_into(&self, i: usize, probabilities: &[f32], acc: &mut [f32]) {
        assert_eq!(acc.len(), self.width * self.height, "blend buffer is not {}×{}", self.width, self.height);
        self.blend_rows(i, probabilities, acc, 0);
    }

    /// As [`TileGrid::blend_into`] into a buffer of whole rows from row `y0` on (`acc` holds
    /// rows `y0..`, `width` each; the tile's rows must lie in them): a band of tile rows
    /// blended on its own ([`TileGrid::row_bands`]).
    pub fn blend_rows(&self, i: usize, probabilities: &[f32], acc: &mut [f32], y0: usize) {
        let s = self.input_px;
        assert_eq!(probabilities.len(), s * s, "tile probabilities are not {s}×{s}");
        let (sx, sy) = (&self.xs[i % self.xs.len()], &self.ys[i / self.xs.len()]);
        let mut content = Vec::with_capacity(sx.model_len * sy.model_len);
        for y in 0..sy.model_len {
            content.extend_from_slice(&probabilities[y * s..y * s + sx.model_len]);
        }
        let local = if (sx.len, sy.len) == (sx.model_len, sy.model_len) {
            content
        } else {
            super::resize_bilinear_f32(&content, sx.model_len, sy.model_len, sx.len, sy.len)
        };
        for (ly, &wy) in sy.weights.iter().enumerate() {
            let row = &mut acc[(sy.start + ly - y0) * self.width + sx.start..][..sx.len];
            for ((a, &p), &wx) in row.iter_mut().zip(&local[ly * sx.len..(ly + 1) * sx.len]).zip(&sx.weights) {
                *a += wx * wy * p;
            }
        }
    }

    /// Tile rows in bands of at most `max_tiles` tiles (at least one row each), top to bottom:
    /// what [`super::Predictor`] streams through z one band at a time when the streams of every
    /// tile would not fit its memory budget.
    pub fn row_bands(&self, max_tiles: usize) -> Vec<std::ops::Range<usize>> {
        let per_band = (max_tiles / self.xs.len()).max(1);
        (0..self.ys.len()).step_by(per_band).map(|r| r..(r + per_band).min(self.ys.len())).collect()
    }

    /// The stack rows tile rows `rows` cover.
    pub fn pixel_rows(&self, rows: std::ops::Range<usize>) -> std::ops::Range<usize> {
        let last = &self.ys[rows.end - 1];
        self.ys[rows.start].start..last.start + last.len
    }

    /// The first stack row of tile row `row`; the slice's height past the last tile row.
    pub fn row_start(&self, row: usize) -> usize {
        self.ys.get(row).map_or(self.height, |s| s.start)
    }

    /// The tiles of tile rows `rows`, row by row.
    pub fn tiles_in_rows(&self, rows: std::ops::Range<usize>) -> std::ops::Range<usize> {
        rows.start * self.xs.len()..rows.end * self.xs.len()
    }

    /// Adds tile `i`'s blend weights into `acc` (`width × height`): after every tile is added,
    /// `acc` is 1 everywhere; before, it is what a partial blend is normalised by.
    pub fn add_weights(&self, i: usize, acc: &mut [f32]) {
        self.add_weights_in(i, acc, 0..self.height);
    }

    /// As [`TileGrid::add_weights`] for the stack rows `rows` only: `acc` is `width ×
    /// rows.len()`, its first row stack row `rows.start` (a band's weights).
    pub fn add_weights_in(&self, i: usize, acc: &mut [f32], rows: std::ops::Range<usize>) {
        assert_eq!(acc.len(), self.width * rows.len(), "weight buffer is not {}×{}", self.width, rows.len());
        let (sx, sy) = (&self.xs[i % self.xs.len()], &self.ys[i / self.xs.len()]);
        for (ly, &wy) in sy.weights.iter().enumerate().filter(|(ly, _)| rows.contains(&(sy.start + ly))) {
            let row = &mut acc[(sy.start + ly - rows.start) * self.width + sx.start..][..sx.len];
            for (a, &wx) in row.iter_mut().zip(&sx.weights) {
                *a += wx * wy;
            }
        }
    }

    /// The blend weight of tile `i` at stack pixel `(x, y)` (0 outside the tile).
    pub fn weight(&self, i: usize, x: usize, y: usize) -> f32 {
        let (sx, sy) = (&self.xs[i % self.xs.len()], &self.ys[i / self.xs.len()]);
        let inside = |s: &Span, p: usize| p >= s.start && p < s.start + s.len;
        if inside(sx, x) && inside(sy, y) { sx.weights[x - sx.start] * sy.weights[y - sy.start] } else { 0.0 }
    }

    /// The tile prompts (clicks and boxes, stack pixels) are best decoded in: the one centred
    /// nearest their centre (the mean of the clicks and the boxes' centres).
    pub fn tile_at_prompts(
        &self,
        points: &[crate::model::prompt::PointPrompt],
        boxes: &[crate::model::prompt::BoxPrompt],
    ) -> usize {
        let centres: Vec<(f64, f64)> = points
            .iter()
            .map(|p| (p.x_px, p.y_px))
            .chain(boxes.iter().map(|b| ((b.x0_px + b.x1_px) / 2.0, (b.y0_px + b.y1_px) / 2.0)))
            .collect();
        let n = centres.len().max(1) as f64;
        let (x, y) = centres.iter().fold((0.0, 0.0), |(x, y), c| (x + c.0, y + c.1));
        self.tile_at(x / n, y / n)
    }

    /// Every tile once, those overlapping `view` (stack pixels, e.g. the part of the slice on
    /// screen) first, each group nearest `view`'s centre first, so a slice decoded in this order
    /// fills in from the middle of the view outwards; and how many overlap `view`. An empty
    /// `view` overlaps nothing: all tiles by distance from its corner.
    pub fn order_from(&self, view: PixelBox) -> (Vec<usize>, usize) {
        self.order_among(view, 0..self.len())
    }

    /// As [`TileGrid::order_from`] for the tiles `tiles` only (a band's).
    pub fn order_among(&self, view: PixelBox, tiles: std::ops::Range<usize>) -> (Vec<usize>, usize) {
        let (cx, cy) = ((view.x0 + view.x1) as f64 / 2.0, (view.y0 + view.y1) as f64 / 2.0);
        let key = |i: &usize| {
            let t = self.tile(*i);
            let overlaps = !view.is_empty()
                && t.x0 < view.x1
                && view.x0 < t.x0 + t.width
                && t.y0 < view.y1
                && view.y0 < t.y0 + t.height;
            let (tx, ty) = (t.x0 as f64 + t.width as f64 / 2.0, t.y0 as f64 + t.height as f64 / 2.0);
            (!overlaps, (tx - cx).powi(2) + (ty - cy).powi(2))
        };
        let mut order: Vec<usize> = tiles.collect();
        // Ties keep row-major order (a stable sort).
        order.sort_by(|a, b| {
            let (ka, kb) = (key(a), key(b));
            ka.0.cmp(&kb.0).then(ka.1.total_cmp(&kb.1))
        });
        let in_view = order.iter().take_while(|i| !key(i).0).count();
        (order, in_view)
    }

    /// Tile `i`'s pixels as a box.
    pub fn tile_box(&self, i: usize) -> PixelBox {
        let t = self.tile(i);
        PixelBox { x0: t.x0, y0: t.y0, x1: t.x0 + t.width, y1: t.y0 + t.height }
    }

    /// The index of the tile a point (stack pixels) is best decoded in: the one whose centre is
    /// nearest among those covering it.
    pub fn tile_at(&self, x: f64, y: f64) -> usize {
        let nearest = |spans: &[Span], p: f64| -> usize {
            (0..spans.len())
                .min_by(|&a, &b| {
                    let d = |s: &Span| (s.start as f64 + s.len as f64 / 2.0 - p).abs();
                    d(&spans[a]).total_cmp(&d(&spans[b]))
                })
                .unwrap_or(0)
        };
        nearest(&self.ys, y) * self.xs.len() + nearest(&self.xs, x)
    }
}

impl Span {
    /// The whole axis resized to the model input ([`Scale::Fit`]).
    fn whole(len: usize, input_px: usize) -> Self {
        Span { start: 0, len, model_len: input_px, weights: vec![1.0; len] }
    }
}

/// The tiles along an axis of `len` stack pixels at `scale` for a model input of `input_px`.
fn spans(len: usize, input_px: usize, scale: f64) -> Vec<Span> {
    // Stack pixels one tile covers.
    let side = ((input_px as f64 / scale).round() as usize).max(1);
    if len <= side {
        // One tile, padded: the slice fills `len · scale` model pixels.
        let model_len = ((len as f64 * scale).round() as usize).clamp(1, input_px);
        return vec![Span { start: 0, len, model_len, weights: vec![1.0; len] }];
    }
    let halo = ((side as f64 * HALO_FRACTION).round() as usize).max(1);
    let stride = side.saturating_sub(2 * halo).max(1);
    let n = (len - side).div_ceil(stride) + 1;
    let starts: Vec<usize> = (0..n).map(|i| ((i * (len - side)) as f64 / (n - 1) as f64).round() as usize).collect();
    // Unnormalised weights: a linear ramp across the overlap with each neighbour.
    let mut raw: Vec<Vec<f32>> = starts
        .iter()
        .enumerate()
        .map(|(i, &a)| {
            (0..side)
                .map(|u| {
                    let mut w = 1.0f64;
                    if i > 0 {
                        let overlap = (starts[i - 1] + side - a) as f64;
                        w = w.min((u as f64 + 0.5) / overlap);
                    }
                    if i + 1 < n {
                        let overlap = (a + side - starts[i + 1]) as f64;
                        w = w.min((side as f64 - u as f64 - 0.5) / overlap);
                    }
                    w as f32
                })
                .collect()
        })
        .collect();
    // Normalised over the tiles covering each pixel.
    let mut sum = vec![0.0f32; len];
    for (w, &a) in raw.iter().zip(&starts) {
        for (u, &v) in w.iter().enumerate() {
            sum[a + u] += v;
        }
    }
    for (w, &a) in raw.iter_mut().zip(&starts) {
        for (u, v) in w.iter_mut().enumerate() {
            *v /= sum[a + u];
        }
    }
    starts
        .into_iter()
        .zip(raw)
        .map(|(start, weights)| Span { start, len: side, model_len: input_px, weights })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_the_slice_with_the_halo_and_weights_sum_to_one() {
        for (w, h, s, scale) in [
            (4096, 4096, 512, 1.0),
            (1000, 700, 128, 1.0),
            (1000, 700, 128, 0.5),
            (300, 90, 64, 1.0),
            (16384, 512, 512, 1.0),
            (129, 129, 128, 1.0),
        ] {
            let grid = TileGrid::new(w, h, s, Scale::Factor(scale));
            let side = (s as f64 / scale).round() as usize;
            for t in grid.tiles() {
                assert!(t.x0 + t.width <= w && t.y0 + t.height <= h, "{t:?} leaves {w}×{h}");
            }
            for axis in [&grid.xs, &grid.ys] {
                for pair in axis.windows(2) {
                    let overlap = pair[0].start + pair[0].len - pair[1].start;
                    assert!(overlap >= side / 4, "{w}×{h} at {scale}: overlap {overlap} < a quarter of {side}");
                }
            }
            for y in (0..h).step_by(7).chain([h - 1]) {
                for x in (0..w).step_by(5).chain([w - 1]) {
                    let sum: f32 = (0..grid.len()).map(|i| grid.weight(i, x, y)).sum();
                    assert!((sum - 1.0).abs() < 1e-6, "{w}×{h}: weights sum to {sum} at ({x}, {y})");
                }
            }
        }
        // 16384² at 512, scale 1: the issue's ~1,800 tiles.
        assert_eq!(TileGrid::new(16384, 16384, 512, Scale::NATIVE).len(), 43 * 43);
    }

    #[test]
    fn a_constant_blends_to_itself_without_seams() {
        for (w, h, s, scale) in [(700, 500, 128, 1.0), (700, 500, 128, 0.5), (200, 100, 128, 1.0)] {
            let grid = TileGrid::new(w, h, s, Scale::Factor(scale));
            let mut acc = vec![0.0f32; w * h];
            for i in 0..grid.len() {
                grid.blend_into(i, &vec![0.625; s * s], &mut acc);
            }
            let worst = acc.iter().map(|v| (v - 0.625).abs()).fold(0.0f32, f32::max);
            assert!(worst < 1e-6, "{w}×{h} at {scale}: off by {worst}");
        }
    }

    #[test]
    fn one_tile_of_the_input_size_is_the_untiled_input_bit_for_bit() {
        let s = 64;
        let image: Vec<u8> = (0..s * s).map(|i| (i * 37 % 251) as u8).collect();
        let grid = TileGrid::new(s, s, s, Scale::NATIVE);
        assert_eq!(grid.len(), 1);
        assert_eq!(grid.model_input(0, &image), crate::model::preprocess::preprocess_u8(&image, s, s, s));
        let probabilities: Vec<f32> = (0..s * s).map(|i| (i as f32 * 0.37).sin() * 0.5 + 0.5).collect();
        let mut acc = vec![0.0; s * s];
        grid.blend_into(0, &probabilities, &mut acc);
        assert_eq!(acc, probabilities);
        // Fit is the old whole-slice resize.
        let fit = TileGrid::new(100, 70, s, Scale::Fit);
        let image: Vec<u8> = (0..100 * 70).map(|i| (i % 256) as u8).collect();
        assert_eq!(fit.model_input(0, &image), crate::model::preprocess::preprocess_u8(&image, 100, 70, s));
    }

    #[test]
    fn crops_are_the_covered_pixels_and_padding_is_zero() {
        let (w, h, s) = (200, 50, 64);
        let image: Vec<u8> = (0..w * h).map(|i| (i % 253) as u8).collect();
        let grid = TileGrid::new(w, h, s, Scale::NATIVE);
        let (cols, rows) = grid.columns_rows();
        assert_eq!(rows, 1, "50 px high fits one 64 px tile");
        assert!(cols >= 4);
        let t = grid.tile(1);
        assert_eq!((t.height, t.model_height, t.width, t.model_width), (50, 50, 64, 64));
        let input = grid.model_input(1, &image);
        let norm = |v: u8| (v as f32 / 255.0 - 0.485) / 0.229;
        assert_eq!(input[3 * s + 5], norm(image[3 * w + t.x0 + 5]));
        assert_eq!(input[2 * s * s + 49 * s], norm(image[49 * w + t.x0]), "third channel, last covered row");
        assert!(input[50 * s..s * s].iter().all(|&v| v == 0.0), "rows 50.. are padding");
        let mask: Vec<u8> = (0..w * h).map(|i| u8::from(i % w >= t.x0 + 10)).collect();
        let m = grid.model_mask(1, &mask);
        assert_eq!((m[9], m[10], m[60 * s + 20]), (0.0, 1.0, 0.0));
        // Only covered pixels are written back.
        let mut acc = vec![0.0; w * h];
        grid.blend_into(0, &vec![1.0; s * s], &mut acc);
        assert!(acc[..grid.tile(0).width].iter().all(|&v| v > 0.0));
        assert!(acc[w - 1] == 0.0 && acc[(h - 1) * w + w - 1] == 0.0);
    }

    #[test]
    fn tiles_under_the_view_come_first_nearest_its_centre() {
        let grid = TileGrid::new(1000, 700, 128, Scale::NATIVE);
        let view = PixelBox { x0: 300, y0: 200, x1: 520, y1: 330 };
        let (order, in_view) = grid.order_from(view);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..grid.len()).collect::<Vec<_>>(), "every tile once");
        let overlaps = |i: usize| {
            let b = grid.tile_box(i);
            b.x0 < view.x1 && view.x0 < b.x1 && b.y0 < view.y1 && view.y0 < b.y1
        };
        assert_eq!(in_view, (0..grid.len()).filter(|&i| overlaps(i)).count());
        assert!(in_view > 1 && in_view < grid.len());
        assert!(order[..in_view].iter().all(|&i| overlaps(i)) && order[in_view..].iter().all(|&i| !overlaps(i)));
        // The first tile is the one centred nearest the view's centre.
        assert_eq!(order[0], grid.tile_at(410.0, 265.0));
        // Weights added in the view's order sum to 1 everywhere once every tile is in.
        let mut weights = vec![0.0f32; 1000 * 700];
        for &i in &order {
            grid.add_weights(i, &mut weights);
        }
        assert!(weights.iter().all(|w| (w - 1.0).abs() < 1e-6));
        // The whole slice as the view: every tile is in it.
        let all = PixelBox { x0: 0, y0: 0, x1: 1000, y1: 700 };
        assert_eq!(grid.order_from(all).1, grid.len());
        // Among a band's tiles only, the same order restricted to them; a band's weights are
        // the whole slice's in its rows, its neighbours' tiles included.
        let band = grid.tiles_in_rows(1..3);
        let (among, in_band_view) = grid.order_among(view, band.clone());
        let expected: Vec<usize> = order.iter().copied().filter(|t| band.contains(t)).collect();
        assert_eq!(among, expected);
        assert_eq!(in_band_view, among.iter().filter(|&&i| overlaps(i)).count());
        let rows = grid.pixel_rows(1..3);
        let mut band_weights = vec![0.0f32; 1000 * rows.len()];
        for i in grid.tiles_in_rows(0..4) {
            grid.add_weights_in(i, &mut band_weights, rows.clone());
        }
        assert!(band_weights.iter().all(|w| (w - 1.0).abs() < 1e-6), "tile rows 0–3 cover rows {rows:?} whole");
        let mut own = vec![0.0f32; 1000 * rows.len()];
        for i in band {
            grid.add_weights_in(i, &mut own, rows.clone());
        }
        assert!(own[..1000].iter().all(|&w| w < 1.0) && own[..1000].iter().any(|&w| w > 0.0), "shared with row 0");
    }

    #[test]
    fn bands_of_tile_rows_cover_the_slice_once() {
        let grid = TileGrid::new(1000, 700, 128, Scale::NATIVE);
        let (cols, rows) = grid.columns_rows();
        assert_eq!(grid.row_bands(usize::MAX), vec![0..rows], "everything fits: one band");
        let bands = grid.row_bands(2 * cols + 1);
        assert!(bands.len() > 1 && bands.iter().all(|b| b.len() <= 2));
        assert_eq!(bands.first().unwrap().start, 0);
        assert_eq!(bands.last().unwrap().end, rows);
        assert!(bands.windows(2).all(|p| p[0].end == p[1].start));
        assert_eq!(grid.row_bands(1).len(), rows, "at least one row per band");
        // Blending band by band into row buffers gives the whole-slice blend.
        let mut whole = vec![0.0f32; 1000 * 700];
        for i in 0..grid.len() {
            grid.blend_into(i, &vec![(i % 7) as f32 / 7.0; 128 * 128], &mut whole);
        }
        for band in &bands {
            let px = grid.pixel_rows(band.clone());
            let mut acc = vec![0.0f32; px.len() * 1000];
            for i in grid.tiles_in_rows(band.clone()) {
                grid.blend_rows(i, &vec![(i % 7) as f32 / 7.0; 128 * 128], &mut acc, px.start);
            }
            // Rows no other band reaches are final.
            let own = grid.row_start(band.start)..grid.row_start(band.end);
            let end = if band.end == rows { 700 } else { own.end };
            let first_own = if band.start == 0 { 0 } else { grid.pixel_rows(band.start - 1..band.start).end };
            for y in first_own.max(px.start)..end {
                assert_eq!(acc[(y - px.start) * 1000..][..1000], whole[y * 1000..][..1000], "row {y}");
            }
        }
    }

    #[test]
    fn a_point_is_decoded_in_the_tile_centred_nearest_it() {
        let grid = TileGrid::new(1000, 300, 128, Scale::NATIVE);
        let i = grid.tile_at(500.0, 150.0);
        let t = grid.tile(i);
        assert!(t.x0 <= 500 && 500 < t.x0 + t.width && t.y0 <= 150 && 150 < t.y0 + t.height, "{t:?}");
        assert_eq!(grid.tile_at(0.0, 0.0), 0);
        assert_eq!(grid.tile_at(999.0, 299.0), grid.len() - 1);
    }
}
