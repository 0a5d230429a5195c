//! The predictor: runs the planned passes with one encoder pass per slice (or per tile, see
//! [`super::tile`]) for every class (on a GPU one pass per batch of the plan's next slices or of
//! the slice's tiles), keeps recent embeddings for click refinement and repeated passes, and
//! returns full-resolution probabilities.
//!
//! Tiles: a slice cut into tiles ([`StackRequest::scale`]) is streamed tile by tile, each tile
//! with its own slice memory and previous-mask prompt carried along z, its seed masks cropped to
//! it; the tiles' probabilities are blended into one map per class. A tile's streams live for
//! the whole pass: per class one single-slot memory `[1, C_m, g, g]` and one prompt
//! `[1, 1, S, S]` (f32: 9 MiB for B+ at 512², 128 KiB for the micro reference at 128²). When
//! every tile's streams fit the stream budget ([`Predictor::with_stream_budget`]), all tiles
//! of a slice are decoded before the next slice; otherwise the tiles go in bands of whole tile
//! rows, one band through the whole pass after the other ([`Predictor::bands`]), each slice
//! reported band by band. Besides the streams: one encoder batch of tile embeddings and
//! outputs at a time and the band's blend buffer (4 bytes per pixel and class). A 4096² slice
//! at scale 1 is 11 × 11 tiles of 512² for B+ (1.1 GiB of streams per class, one band with the
//! default budget), a 16384² slice 43 × 43 (15 bands of 3 tile rows for three classes).
//!
//! With [`StackRequest::fill`] (the app) a slice's tiles go in the order of the view on screen
//! and the slice so far is reported while they are decoded ([`SlicePrediction::partial`]), so
//! the part a person looks at comes first; bands go from the one under the view outwards
//! (without a view, top to bottom), whichever of two neighbouring bands goes first leaving the
//! sums of the rows they share for the other.

use std::future::Future;
use std::num::NonZeroUsize;
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use burn::tensor::{ExecutionError, Tensor, TensorData};
use lru::LruCache;

use super::plan::{Pass, plan_passes};
use super::tile::{Scale, TileGrid};
use crate::model::multi::{HeadIndex, MultiModel};
use crate::model::nn::BilinearResize;
use crate::model::prompt::{BoxPrompt, PointPrompt};
use crate::model::{SliceOutput, StreamMode, StreamState};
use crate::state::SliceIndex;
use crate::state::bitplane::{BitPlane, PixelBox};

/// A slice with a person's masks: where streaming starts.
#[derive(Clone, Debug)]
pub struct Seed {
    /// The slice.
    pub z: SliceIndex,
    /// One mask per head ([`HeadIndex`] order); `None` prompts that class with an empty mask.
    pub masks: Vec<Option<BitPlane>>,
}

/// What to predict.
#[derive(Clone, Debug)]
pub struct StackRequest {
    /// Slice width in pixels.
    pub width: usize,
    /// Slice height in pixels.
    pub height: usize,
    /// Slices to predict (slice indices).
    pub range: Range<usize>,
    /// The slice on screen (predicted as early as the plan allows).
    pub visible: SliceIndex,
    /// Slices with a person's masks.
    pub seeds: Vec<Seed>,
    /// Farthest a seed may be from the slices it serves (see [`plan_passes`]).
    pub max_warmup_slices: usize,
    /// How slices map to the model's input: the whole slice resized, or tiles at a scale.
    pub scale: Scale,
    /// Report tiled slices while their tiles are decoded, the tiles on screen first and, for
    /// bands of tile rows, the band under the view first (the app); `None`: each slice once,
    /// complete, or band by band from the top (the command line).
    pub fill: Option<FillIn>,
}

/// How a tiled slice is reported while its tiles are decoded, so a person watching sees the
/// part on screen first instead of waiting for the whole slice (a 4096² slice at scale 1 is
/// 121 B+ tiles, minutes on a CPU).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FillIn {
    /// The part of the slice on screen, slice pixels: the tiles overlapping it are decoded
    /// first, nearest its centre first, then the rest outwards ([`TileGrid::order_from`]), on
    /// every slice.
    pub view: PixelBox,
    /// Least seconds between two reports of a slice in progress; the first comes as soon as
    /// the tiles on screen are done.
    pub interval_s: f64,
}

/// One predicted slice.
#[derive(Clone, Debug, PartialEq)]
pub struct SlicePrediction {
    /// The slice.
    pub z: SliceIndex,
    /// Per head ([`HeadIndex`] order), probabilities scaled to 0–255 of `rows` (`width` each; the
    /// reported prediction is `p > cross_batch_threshold`, 0.4 in SAM4EM).
    pub probabilities: Vec<Vec<u8>>,
    /// The rows of the slice `probabilities` cover (`0..height` but for a band of tile rows,
    /// [`Predictor::with_stream_budget`]); their values are final.
    pub rows: Range<usize>,
    /// The slice's last report: every row of it has now been reported final (always, but for
    /// bands of tile rows and partial reports).
    pub complete: bool,
    /// `None`: the rows are complete. `Some(tiles)`: a report while the slice's tiles are
    /// decoded ([`StackRequest::fill`]): only pixels inside these tiles (those decoded so far)
    /// hold probabilities, the weighted mean of the decoded tiles covering them (final where
    /// every tile covering a pixel is decoded); elsewhere the maps are 0 and mean nothing.
    pub partial: Option<Vec<PixelBox>>,
}

/// How far a request has come.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Progress {
    /// Slices reported so far.
    pub done: usize,
    /// Slices the request reports in all.
    pub total: usize,
    /// Seconds since the request started.
    pub elapsed_s: f64,
    /// For a report of part of a slice ([`SlicePrediction::partial`]): its tiles decoded so far
    /// and its tiles in all.
    pub slice_tiles: Option<(usize, usize)>,
    /// Tile decodes so far and in all (warm-up slices included; one per slice untiled): how
    /// far the request has come, also while slices are in progress (a slice's tiles, bands of
    /// tiles that finish every slice only in the last band).
    pub decoded: (usize, usize),
}

impl Progress {
    /// Throughput so far, in slices' worth of decoding per second.
    pub fn slices_per_s(&self) -> f64 {
        if self.elapsed_s > 0.0 { self.done_slices() / self.elapsed_s } else { 0.0 }
    }

    /// How many slices' worth of the request is decoded ([`Progress::decoded`]'s fraction of
    /// `total`).
    pub fn done_slices(&self) -> f64 {
        match self.decoded {
            (d, n) if n > 0 => self.total as f64 * d as f64 / n as f64,
            _ => self.done as f64,
        }
    }

    /// Estimated seconds left at the current throughput.
    pub fn eta_s(&self) -> Option<f64> {
        let rate = self.slices_per_s();
        (rate > 0.0).then(|| (self.total as f64 - self.done_slices()).max(0.0) / rate)
    }
}

/// What the caller wants after a slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Go on.
    Continue,
    /// Stop (cancelled or superseded).
    Stop,
}

/// Why a prediction failed.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// A slice image could not be read.
    #[error("cannot read slice {z} for prediction: {reason}")]
    Image {
        /// The slice.
        z: SliceIndex,
        /// Why.
        reason: String,
    },
    /// The rows one band of tiles hands to the next could not be kept on disk.
    #[error("cannot keep the rows shared by two bands of tiles in a temporary file: {reason}")]
    Spill {
        /// Why.
        reason: String,
    },
    /// A seed mask has the wrong size or class count.
    #[error("seed mask of slice {z} does not fit the stack ({reason})")]
    Seed {
        /// The slice.
        z: SliceIndex,
        /// Why.
        reason: String,
    },
}

/// Source of 8-bit slice images (`width × height`, see [`super::slice_to_u8`]).
pub type ImageFetch<'a> = dyn FnMut(SliceIndex) -> Result<Vec<u8>, String> + 'a;

/// Slices one encoder pass embeds on a GPU: the next slices of the streaming plan go through
/// the encoder together, which keeps a GPU busier than one 512² image does. 4 B+ images at 512²
/// add well under 1 GiB of activations at inference.
pub const GPU_ENCODER_BATCH: usize = 4;

/// Runs a [`MultiModel`] (with merged LoRA) over stacks.
pub struct Predictor {
    model: MultiModel,
    /// Embeddings by slice and tile of [`Self::grid`].
    embeddings: LruCache<(usize, usize), Tensor<4>>,
    /// The tiles the cached embeddings belong to (the cache is cleared when they change).
    grid: Option<TileGrid>,
    /// Slices embedded per encoder pass (see [`Predictor::with_encoder_batch`]).
    encoder_batch: usize,
    /// Whether sigmoid, the resize to the slice's size and the scaling to 0–255 run on the
    /// model's device (GPU) or on the host (CPU backend, where both are the same cores).
    post_on_device: bool,
    /// The device-side resize for the last slice size, `(width, height)`.
    resize: Option<((usize, usize), BilinearResize)>,
    /// Most bytes the tile streams of one band may take ([`Predictor::with_stream_budget`]).
    stream_budget_bytes: u64,
}

/// The default stream budget: every tile's streams of a 4096² slice of B+ tiles at scale 1,
/// three classes (121 tiles × 27 MiB = 3.2 GiB), fit in one band; a 16384² slice (1,849
/// tiles) goes in 15 bands of 3 tile rows.
pub const DEFAULT_STREAM_BUDGET_BYTES: u64 = 4 << 30;

impl Predictor {
    /// Wraps `model` (merged here for speed; the caller keeps the unmerged one), keeping the
    /// embeddings of the last `cached_slices` slices. The encoder batch is
    /// [`GPU_ENCODER_BATCH`] on a GPU and 1 on the CPU, where a batch is no faster per slice
    /// (the cores are busy with one image) and only costs memory.
    pub fn new(model: &MultiModel, cached_slices: usize) -> Self {
        let batch = if crate::model::device::is_cpu(&model.device()) { 1 } else { GPU_ENCODER_BATCH };
        Self::with_encoder_batch(model, cached_slices, batch)
    }

    /// As [`Predictor::new`], embedding up to `encoder_batch` slices per encoder pass: when a
    /// slice's embedding is needed, it and the next slices of the pass that are not cached yet
    /// are embedded together (the cache grows to hold them).
    pub fn with_encoder_batch(model: &MultiModel, cached_slices: usize, encoder_batch: usize) -> Self {
        let encoder_batch = encoder_batch.max(1);
        Predictor {
            model: model.merged(),
            embeddings: LruCache::new(NonZeroUsize::new(cached_slices.max(encoder_batch)).expect("at least one")),
            grid: None,
            encoder_batch,
            post_on_device: !crate::model::device::is_cpu(&model.device()),
            resize: None,
            stream_budget_bytes: DEFAULT_STREAM_BUDGET_BYTES,
        }
    }

    /// Caps the memory of the tile streams carried through z: a slice with more tiles than
    /// the budget holds is streamed in bands of whole tile rows, one band through the whole
    /// pass after the other ([`Predictor::bands`]), each slice reported band by band
    /// ([`SlicePrediction::rows`]). Every tile is still embedded and decoded once per pass; the
    /// cost is one more read of each slice's image per band, and the rows two bands share
    /// are kept in a temporary file between them. The result is the one-band result bit for
    /// bit (the same sums in the same order).
    pub fn with_stream_budget(mut self, bytes: u64) -> Self {
        self.stream_budget_bytes = bytes;
        self
    }

    /// Runs sigmoid, the resize to the slice's size and the scaling to 0–255 on the model's
    /// device (the default on a GPU: only the full-size probabilities come back, and the host
    /// has nothing left to compute) or on the host (the default on the CPU backend). The
    /// results agree to rounding (a test holds them to ±1 of 255).
    pub fn post_process_on_device(mut self, on_device: bool) -> Self {
        self.post_on_device = on_device;
        self
    }

    /// The model in use.
    pub fn model(&self) -> &MultiModel {
        &self.model
    }

    /// Forgets cached embeddings (the image or the model changed).
    pub fn clear_cache(&mut self) {
        self.embeddings.clear();
    }

    /// The tiles of a `width × height` slice at `scale`, and the embeddings cached for them
    /// (forgotten when the tiles change).
    fn grid(&mut self, width: usize, height: usize, scale: Scale) -> TileGrid {
        let s = self.model.config().image_size;
        match &self.grid {
            Some(g) if g.size() == (width, height) && g.scale() == scale => g.clone(),
            _ => {
                let grid = TileGrid::new(width, height, s, scale);
                self.embeddings.clear();
                self.grid = Some(grid.clone());
                grid
            }
        }
    }

    /// Slice `z`'s image from `fetch`, checked against the grid's size.
    fn fetch_checked(z: usize, grid: &TileGrid, fetch: &mut ImageFetch<'_>) -> Result<Vec<u8>, InferError> {
        let (width, height) = grid.size();
        let image = fetch(SliceIndex(z)).map_err(|reason| InferError::Image { z: SliceIndex(z), reason })?;
        if image.len() == width * height {
            Ok(image)
        } else {
            Err(InferError::Image {
                z: SliceIndex(z),
                reason: format!("{} samples, expected {width}×{height}", image.len()),
            })
        }
    }

    /// Decodes band `band`'s tiles of slice `z` (advancing each tile's streams in `states`,
    /// indexed from the band's first tile), the tiles embedded `encoder_batch` at a time from
    /// one fetch of the slice (only if some are not cached), and, unless `report` is
    /// [`Report::Nothing`], blends their probabilities into one map per class of the band's
    /// rows ([`TileGrid::blend_rows`], on the host), on top of what the bands next to it left in
    /// the rows they share when they went first (`neighbours`; bands going top to bottom so sum
    /// every pixel's tiles in the order one band would, bit for bit). Each tile's
    /// outputs are blended and dropped before the next batch of tiles is embedded, so a slice of
    /// any size holds one batch of tile embeddings and outputs at a time, besides the streams
    /// and the blend. With [`Report::Progressive`] the band's tiles go in the view's order and
    /// the band so far is sent to `on_partial` (with its tiles decoded and in all) once the
    /// tiles on screen are done and then at the fill-in interval; this keeps one more `f32`
    /// map, the decoded tiles' weights.
    #[allow(clippy::too_many_arguments)]
    fn tiled_slice(
        &mut self,
        z: usize,
        grid: &TileGrid,
        band: &Band,
        states: &mut [Vec<StreamState>],
        report: Report<'_>,
        neighbours: Neighbours,
        fetch: &mut ImageFetch<'_>,
        on_partial: &mut dyn FnMut(SlicePrediction, (usize, usize)) -> Flow,
    ) -> Result<TiledSlice, InferError> {
        let (width, _) = grid.size();
        let s = grid.input_px();
        let classes = self.model.heads.len();
        let reported = !matches!(report, Report::Nothing);
        let rows = band.rows.len();
        let mut acc = if reported { vec![vec![0.0f32; width * rows]; classes] } else { Vec::new() };
        let (above_done, below_done) = (neighbours.above.is_some(), neighbours.below.is_some());
        // Added rather than copied: with tiles overlapping by more than half, the rows shared
        // with the band above and with the band below can overlap.
        let neighbour_sums = [(neighbours.above, &band.above), (neighbours.below, &band.below)];
        for (sums, (shared, _)) in neighbour_sums.into_iter().filter_map(|(s, n)| s.zip(n.as_ref())) {
            for (a, c) in acc.iter_mut().zip(sums) {
                for (v, s) in a[(shared.start - band.rows.start) * width..].iter_mut().zip(c) {
                    *v += s;
                }
            }
        }
        let fill = match report {
            Report::Progressive(fill) if band.tiles.len() > 1 => Some(fill),
            _ => None,
        };
        let (order, in_view) = match fill {
            Some(f) => grid.order_among(f.view, band.tiles.clone()),
            None => (band.tiles.clone().collect(), 0),
        };
        // The decoded tiles' summed weights: what the partial maps are normalised by (the tiles
        // of the bands next to it included where their sums are in the blend).
        let mut weights = if fill.is_some() { vec![0.0f32; width * rows] } else { Vec::new() };
        if fill.is_some() {
            let decoded = [band.above.as_ref().filter(|_| above_done), band.below.as_ref().filter(|_| below_done)];
            for (_, tiles) in decoded.into_iter().flatten() {
                for t in tiles.clone() {
                    grid.add_weights_in(t, &mut weights, band.rows.clone());
                }
            }
        }
        let mut last_sent = Instant::now();
        let mut view_sent = false;
        let mut done = 0;
        let mut image: Option<Vec<u8>> = None;
        for chunk in order.chunks(self.encoder_batch) {
            let cached: Vec<Option<Tensor<4>>> = chunk.iter().map(|&t| self.embeddings.get(&(z, t)).cloned()).collect();
            let missing: Vec<usize> = chunk.iter().zip(&cached).filter(|(_, e)| e.is_none()).map(|(&t, _)| t).collect();
            let mut fresh: Vec<(usize, Tensor<4>)> = Vec::new();
            if !missing.is_empty() {
                let image = match &image {
                    Some(i) => i,
                    None => image.insert(Self::fetch_checked(z, grid, fetch)?),
                };
                let mut pixels = Vec::with_capacity(missing.len() * 3 * s * s);
                for &t in &missing {
                    pixels.extend(grid.model_input(t, image));
                }
                let x = Tensor::from_data(TensorData::new(pixels, [missing.len(), 3, s, s]), &self.model.device());
                let fused = self.model.embed(x);
                for (i, &t) in missing.iter().enumerate() {
                    let e = fused.clone().narrow(0, i, 1);
                    self.embeddings.put((z, t), e.clone());
                    fresh.push((t, e));
                }
            }
            for (&t, e) in chunk.iter().zip(cached) {
                let fused = e.unwrap_or_else(|| fresh.iter().find(|(f, _)| *f == t).expect("embedded above").1.clone());
                let outs = self.model.stream_step(fused, &mut states[t - band.tiles.start], StreamMode::Clean);
                if reported {
                    self.blend_tile(grid, t, &outs, &mut acc, band.rows.start);
                }
                if fill.is_some() {
                    grid.add_weights_in(t, &mut weights, band.rows.clone());
                }
            }
            done += chunk.len();
            let Some(fill) = fill else { continue };
            let due = (!view_sent && done >= in_view) || last_sent.elapsed().as_secs_f64() >= fill.interval_s;
            if done < order.len() && due {
                let probabilities = acc.iter().map(|a| partial_map(a, &weights)).collect();
                let tiles = order[..done].iter().map(|&t| grid.tile_box(t)).collect();
                let partial = SlicePrediction {
                    z: SliceIndex(z),
                    probabilities,
                    rows: band.rows.clone(),
                    complete: false,
                    partial: Some(tiles),
                };
                if on_partial(partial, (done, order.len())) == Flow::Stop {
                    return Ok(TiledSlice::Stopped);
                }
                view_sent = true;
                last_sent = Instant::now();
            }
        }
        if !reported {
            return Ok(TiledSlice::Unreported);
        }
        // The rows shared with a band still to come go on to it; the rest is final.
        let start = band.rows.start;
        let top = band.above.as_ref().map(|(shared, _)| shared.clone()).filter(|_| !above_done);
        let bottom = band.below.as_ref().map(|(shared, _)| shared.clone()).filter(|_| !below_done);
        let last = top.as_ref().map_or(start, |r| r.end)..bottom.as_ref().map_or(band.rows.end, |r| r.start);
        // Stack rows `r` in the band's buffers.
        let at = |r: &Range<usize>| (r.start - start) * width..(r.end - start) * width;
        let above = top.map(|r| acc.iter().map(|a| a[at(&r)].to_vec()).collect());
        let below = bottom.map(|r| acc.iter().map(|a| a[at(&r)].to_vec()).collect());
        let to_byte = |v: &f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
        let maps = acc.iter().map(|a| a[at(&last)].iter().map(to_byte).collect()).collect();
        Ok(TiledSlice::Rows { maps, rows: last, above, below })
    }

    /// The embedding of `upcoming[0]` on a one-tile grid, from the cache or from one encoder
    /// pass that also embeds the next slices of `upcoming` not cached yet, up to the encoder
    /// batch.
    fn embedding_ahead(
        &mut self,
        upcoming: &[usize],
        grid: &TileGrid,
        fetch: &mut ImageFetch<'_>,
    ) -> Result<Tensor<4>, InferError> {
        let z = upcoming[0];
        if let Some(t) = self.embeddings.get(&(z, 0)) {
            return Ok(t.clone());
        }
        let mut batch: Vec<usize> = Vec::with_capacity(self.encoder_batch);
        for &next in upcoming {
            if batch.len() == self.encoder_batch {
                break;
            }
            if !batch.contains(&next) && !self.embeddings.contains(&(next, 0)) {
                batch.push(next);
            }
        }
        let s = grid.input_px();
        let mut pixels = Vec::with_capacity(batch.len() * 3 * s * s);
        for i in 0..batch.len() {
            match Self::fetch_checked(batch[i], grid, fetch) {
                Ok(image) => pixels.extend(grid.model_input(0, &image)),
                // A slice read ahead that cannot be read fails when its turn comes, not now.
                Err(_) if i > 0 => {
                    batch.truncate(i);
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        let x = Tensor::from_data(TensorData::new(pixels, [batch.len(), 3, s, s]), &self.model.device());
        let fused = self.model.embed(x);
        // `z` is not cached (see above), so it went into the batch first.
        for (i, &b) in batch.iter().enumerate() {
            self.embeddings.put((b, 0), fused.clone().narrow(0, i, 1));
        }
        Ok(fused.narrow(0, 0, 1))
    }

    /// Tile `t` of `mask` as the model's `[1, 1, S, S]` mask prompt.
    fn mask_tensor(&self, grid: &TileGrid, t: usize, mask: &BitPlane) -> Tensor<4> {
        let s = grid.input_px();
        let (w, h) = (mask.width(), mask.height());
        let mut bytes = vec![0u8; w * h];
        for y in 0..h {
            for x in 0..w {
                bytes[y * w + x] = u8::from(mask.get(x, y));
            }
        }
        Tensor::from_data(TensorData::new(grid.model_mask(t, &bytes), [1, 1, s, s]), &self.model.device())
    }

    /// Adds tile `t`'s reported probabilities (`outs`, one per class) into `acc` (one map per
    /// class of whole rows from row `y0` on), weighted ([`TileGrid::blend_rows`]); read back and
    /// computed on the host.
    fn blend_tile(&self, grid: &TileGrid, t: usize, outs: &[SliceOutput], acc: &mut [Vec<f32>], y0: usize) {
        let s = grid.input_px();
        let logits: Vec<Tensor<4>> = outs.iter().map(|o| self.model.reported_logits(o).0).collect();
        let host = Tensor::cat(logits, 0).into_data().convert::<f32>().try_into_vec::<f32>().unwrap_or_default();
        for (l, a) in host.chunks(s * s).zip(acc.iter_mut()) {
            let p: Vec<f32> = l.iter().map(|&v| sigmoid(v)).collect();
            grid.blend_rows(t, &p, a, y0);
        }
    }

    /// Starts turning a slice's outputs into `width × height` probabilities scaled to 0–255, one
    /// map per class; [`Pending::finish`] waits for them. On the device path the read-back is
    /// started here and the caller queues the next slice's work before waiting, so that the
    /// copy and the host's share overlap that work.
    fn start_probabilities(&mut self, outs: &[SliceOutput], width: usize, height: usize) -> Pending {
        let s = self.model.config().image_size;
        let logits: Vec<Tensor<4>> = outs.iter().map(|o| self.model.reported_logits(o).0).collect();
        let logits = Tensor::cat(logits, 0);
        if self.post_on_device {
            let device = self.model.device();
            let resize = match &self.resize {
                Some((size, r)) if *size == (width, height) => r.clone(),
                _ => {
                    let r = BilinearResize::new(s, s, height, width, &device);
                    self.resize = Some(((width, height), r.clone()));
                    r
                }
            };
            return Pending::read(scaled_on_device(logits, &resize), width * height);
        }
        Pending::Ready(probabilities_on_host(logits, width, height))
    }

    /// Predicts `request.range`, calling `on_slice` after each reported slice (in decoding
    /// order) or, for slices cut into more bands of tiles than fit the stream budget, after
    /// each band of each slice ([`SlicePrediction::rows`]); `on_slice` returning
    /// [`Flow::Stop`] ends the request early. Returns whether it ran to the end.
    pub fn predict(
        &mut self,
        request: &StackRequest,
        fetch: &mut ImageFetch<'_>,
        on_slice: &mut dyn FnMut(SlicePrediction, Progress) -> Flow,
    ) -> Result<bool, InferError> {
        let classes = self.model.heads.len();
        for seed in &request.seeds {
            if seed.masks.len() != classes {
                return Err(InferError::Seed {
                    z: seed.z,
                    reason: format!("{} masks for {classes} classes", seed.masks.len()),
                });
            }
            if let Some(m) =
                seed.masks.iter().flatten().find(|m| (m.width(), m.height()) != (request.width, request.height))
            {
                return Err(InferError::Seed {
                    z: seed.z,
                    reason: format!(
                        "{}×{} mask on a {}×{} stack",
                        m.width(),
                        m.height(),
                        request.width,
                        request.height
                    ),
                });
            }
        }
        let seed_z: Vec<usize> = request.seeds.iter().map(|s| s.z.0).collect();
        let passes = plan_passes(request.range.clone(), &seed_z, request.visible.0, request.max_warmup_slices);
        let total: usize = passes.iter().map(|p| p.reported().len()).sum();
        let tiles = self.grid(request.width, request.height, request.scale).len();
        let to_decode = passes.iter().map(|p| p.order.len()).sum::<usize>() * tiles;
        let start = Instant::now();
        let (mut done, mut decoded) = (0, 0);
        for pass in &passes {
            if !self.run_pass(pass, request, fetch, &mut decoded, &mut |prediction, slice_tiles, decoded| {
                if prediction.complete {
                    done += 1;
                }
                let elapsed_s = start.elapsed().as_secs_f64();
                let progress = Progress { done, total, elapsed_s, slice_tiles, decoded: (decoded, to_decode) };
                on_slice(prediction, progress)
            })? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The bands of tile rows a slice cut as `grid` is streamed in: as many rows per band as
    /// keep every band tile's streams (one single-slot memory and one prompt per class) within
    /// the stream budget; one band when all fit.
    pub fn bands(&self, grid: &TileGrid) -> Vec<Range<usize>> {
        grid.row_bands((self.stream_budget_bytes / self.tile_stream_bytes().max(1)) as usize)
    }

    /// Bytes of one tile's streams, every class: a single-slot memory `[1, C_m, g, g]` and a
    /// prompt `[1, 1, S, S]` per class, as `f32` (9 MiB per class for B+ at 512²).
    pub fn tile_stream_bytes(&self) -> u64 {
        let c = self.model.config();
        let g = c.grid() as u64;
        let per_class = (c.memory.memory_dim as u64 * g * g + (c.image_size as u64).pow(2)) * 4;
        per_class * self.model.heads.len() as u64
    }

    fn run_pass(
        &mut self,
        pass: &Pass,
        request: &StackRequest,
        fetch: &mut ImageFetch<'_>,
        decoded: &mut usize,
        on_slice: &mut dyn FnMut(SlicePrediction, Option<(usize, usize)>, usize) -> Flow,
    ) -> Result<bool, InferError> {
        let grid = self.grid(request.width, request.height, request.scale);
        // The whole slice resized: sigmoid, resize and scaling may run on the device.
        if grid.len() == 1 && grid.scale() == Scale::Fit {
            return self.untiled_pass(pass, request, &grid, fetch, decoded, on_slice);
        }
        let bands = self.bands(&grid);
        let order = band_order(&grid, &bands, request.fill.as_ref());
        let mut decoded_bands = vec![false; bands.len()];
        // Per pair of neighbouring bands (`b`, `b + 1`), per slice: the sums of the rows they
        // share, left by the one decoded first for the other.
        let mut shared: Vec<Spill> = (1..bands.len()).map(|_| Spill::default()).collect();
        for (n, &b) in order.iter().enumerate() {
            let band = Band::new(&grid, &bands, b);
            let above_done = b > 0 && decoded_bands[b - 1];
            let below_done = decoded_bands.get(b + 1).copied().unwrap_or(false);
            let mut states = self.band_streams(pass, request, &grid, &band);
            for (i, &z) in pass.order.iter().enumerate() {
                let report = match (i >= pass.warmup, &request.fill) {
                    (false, _) => Report::Nothing,
                    (true, None) => Report::Complete,
                    (true, Some(fill)) => Report::Progressive(fill),
                };
                let mut neighbours = Neighbours::default();
                if i >= pass.warmup {
                    if above_done {
                        neighbours.above = Some(shared[b - 1].take(z)?);
                    }
                    if below_done {
                        neighbours.below = Some(shared[b].take(z)?);
                    }
                }
                let at = *decoded;
                let mut on_partial = |p: SlicePrediction, tiles: (usize, usize)| on_slice(p, Some(tiles), at + tiles.0);
                let outcome =
                    self.tiled_slice(z, &grid, &band, &mut states, report, neighbours, fetch, &mut on_partial)?;
                *decoded += band.tiles.len();
                match outcome {
                    TiledSlice::Stopped => return Ok(false),
                    TiledSlice::Rows { maps, rows, above, below } => {
                        if let Some(sums) = above {
                            shared[b - 1].put(z, &sums)?;
                        }
                        if let Some(sums) = below {
                            shared[b].put(z, &sums)?;
                        }
                        let complete = n + 1 == order.len();
                        let slice =
                            SlicePrediction { z: SliceIndex(z), probabilities: maps, rows, complete, partial: None };
                        if on_slice(slice, None, *decoded) == Flow::Stop {
                            return Ok(false);
                        }
                    }
                    TiledSlice::Unreported => {}
                }
            }
            decoded_bands[b] = true;
            // Rows both of whose bands are decoded need their sums no more.
            if above_done {
                shared[b - 1] = Spill::default();
            }
            if below_done {
                shared[b] = Spill::default();
            }
        }
        Ok(true)
    }

    /// One stream per tile of `band` and class, each prompted with its crop of the pass's seed.
    fn band_streams(&self, pass: &Pass, request: &StackRequest, grid: &TileGrid, band: &Band) -> Vec<Vec<StreamState>> {
        let classes = self.model.heads.len();
        let seed = pass.seed.and_then(|z| request.seeds.iter().find(|s| s.z.0 == z));
        band.tiles
            .clone()
            .map(|t| {
                let seeds: Vec<Option<Tensor<4>>> = match seed {
                    Some(seed) => seed.masks.iter().map(|m| m.as_ref().map(|m| self.mask_tensor(grid, t, m))).collect(),
                    None => vec![None; classes],
                };
                self.model.start_single_slot_streams(seeds)
            })
            .collect()
    }

    /// A pass with every slice resized whole to the model input ([`Scale::Fit`]).
    fn untiled_pass(
        &mut self,
        pass: &Pass,
        request: &StackRequest,
        grid: &TileGrid,
        fetch: &mut ImageFetch<'_>,
        decoded: &mut usize,
        on_slice: &mut dyn FnMut(SlicePrediction, Option<(usize, usize)>, usize) -> Flow,
    ) -> Result<bool, InferError> {
        let whole = Band { tiles: 0..1, rows: 0..request.height, above: None, below: None };
        let mut states = self.band_streams(pass, request, grid, &whole);
        let slice = |z: usize, probabilities| SlicePrediction {
            z: SliceIndex(z),
            probabilities,
            rows: 0..request.height,
            complete: true,
            partial: None,
        };
        // A slice whose probabilities are still being read back: reported once the next slice's
        // work is queued behind the read.
        let mut reading: Option<(usize, Pending)> = None;
        for (i, &z) in pass.order.iter().enumerate() {
            let fused = self.embedding_ahead(&pass.order[i..], grid, fetch)?;
            let outs = self.model.stream_step(fused, &mut states[0], StreamMode::Clean);
            *decoded += 1;
            if let Some((previous, pending)) = reading.take()
                && on_slice(slice(previous, pending.finish()), None, *decoded) == Flow::Stop
            {
                return Ok(false);
            }
            if i >= pass.warmup {
                match self.start_probabilities(&outs, request.width, request.height) {
                    pending @ Pending::Reading { .. } => reading = Some((z, pending)),
                    ready => {
                        if on_slice(slice(z, ready.finish()), None, *decoded) == Flow::Stop {
                            return Ok(false);
                        }
                    }
                }
            }
        }
        if let Some((previous, pending)) = reading
            && on_slice(slice(previous, pending.finish()), None, *decoded) == Flow::Stop
        {
            return Ok(false);
        }
        Ok(true)
    }

    /// Refines head `target.class` on slice `target.z` with clicks and boxes (slice pixel
    /// coordinates) from the cached embedding: SAM's point/box prompting on the class's
    /// decoders, with `prompts.prior` (e.g. the current prediction) as the dense mask prompt.
    /// Returns `width × height` probabilities scaled to 0–255. At a scale that tiles the slice,
    /// the tile centred nearest the prompts is decoded and blended into `target.current` (the
    /// class's probabilities so far; zeros without) with that tile's blend weights, so the map
    /// changes under the prompts and fades into the rest at the tile's overlaps.
    pub fn refine(
        &mut self,
        target: RefineTarget<'_>,
        prompts: Prompts<'_>,
        fetch: &mut ImageFetch<'_>,
    ) -> Result<Vec<u8>, InferError> {
        let RefineTarget { z, class, size: (width, height), scale, current } = target;
        let grid = self.grid(width, height, scale);
        let untiled = grid.len() == 1 && scale == Scale::Fit;
        let t = if untiled { 0 } else { grid.tile_at_prompts(prompts.points, prompts.boxes) };
        let fused = if grid.len() == 1 {
            self.embedding_ahead(&[z.0], &grid, fetch)?
        } else {
            self.tile_embedding(z.0, t, &grid, fetch)?
        };
        let tile = grid.tile(t);
        let (sx, sy) = (tile.model_width as f64 / tile.width as f64, tile.model_height as f64 / tile.height as f64);
        let (x0, y0) = (tile.x0 as f64, tile.y0 as f64);
        let points: Vec<PointPrompt> = prompts
            .points
            .iter()
            .map(|p| PointPrompt { x_px: (p.x_px - x0 + 0.5) * sx, y_px: (p.y_px - y0 + 0.5) * sy, ..*p })
            .collect();
        let boxes: Vec<BoxPrompt> = prompts
            .boxes
            .iter()
            .map(|b| BoxPrompt {
                x0_px: (b.x0_px - x0) * sx,
                y0_px: (b.y0_px - y0) * sy,
                x1_px: (b.x1_px + 1.0 - x0) * sx,
                y1_px: (b.y1_px + 1.0 - y0) * sy,
            })
            .collect();
        let head = &self.model.heads[class.0].model;
        let g = self.model.config().grid();
        let sparse = head.prompt_encoder.embed_sparse(&points, &boxes);
        let dense = match prompts.prior {
            Some(m) => head.prompt_encoder.embed_mask(self.mask_tensor(&grid, t, m)),
            None => head.prompt_encoder.no_mask_dense(1, g),
        };
        let d1 = head.mask_decoder.forward(fused.clone(), &head.image_pe, Some(sparse.clone()), dense.clone(), None);
        let d2 = head.mask_decoder2.forward(fused, &head.image_pe, Some(sparse), dense, Some(d1.upscaled.clone()));
        let out = SliceOutput {
            logits1: d1.logits,
            logits2: d2.logits,
            dense: Tensor::zeros([1, 1, 1, 1], &self.model.device()),
            enhanced: Tensor::zeros([1, 1, 1, 1], &self.model.device()),
            upscaled1: d1.upscaled,
            tokens1: d1.tokens,
            keys1: d1.keys,
        };
        if untiled {
            return Ok(self.start_probabilities(&[out], width, height).finish().remove(0));
        }
        // The refined tile, weighted (`w · p` inside the tile, 0 elsewhere) …
        let mut refined = vec![vec![0.0f32; width * height]];
        self.blend_tile(&grid, t, &[out], &mut refined, 0);
        let refined = &refined[0];
        // … over the current map, which keeps `1 − w` of itself.
        let mut map =
            current.filter(|c| c.len() == width * height).map_or_else(|| vec![0; width * height], <[u8]>::to_vec);
        for y in tile.y0..tile.y0 + tile.height {
            for x in tile.x0..tile.x0 + tile.width {
                let i = y * width + x;
                let w = grid.weight(t, x, y);
                let v = f32::from(map[i]) / 255.0 * (1.0 - w) + refined[i];
                map[i] = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
            }
        }
        Ok(map)
    }

    /// The embedding of tile `t` of slice `z`, from the cache or one encoder pass.
    fn tile_embedding(
        &mut self,
        z: usize,
        t: usize,
        grid: &TileGrid,
        fetch: &mut ImageFetch<'_>,
    ) -> Result<Tensor<4>, InferError> {
        if let Some(e) = self.embeddings.get(&(z, t)) {
            return Ok(e.clone());
        }
        let image = Self::fetch_checked(z, grid, fetch)?;
        let s = grid.input_px();
        let x = Tensor::from_data(TensorData::new(grid.model_input(t, &image), [1, 3, s, s]), &self.model.device());
        let e = self.model.embed(x);
        self.embeddings.put((z, t), e.clone());
        Ok(e)
    }
}

/// What [`Predictor::tiled_slice`] reports of a slice.
#[derive(Clone, Copy, Debug)]
enum Report<'a> {
    /// Nothing (a warm-up slice).
    Nothing,
    /// The blended maps, once every tile is decoded.
    Complete,
    /// As `Complete`, and the slice so far while its tiles are decoded.
    Progressive(&'a FillIn),
}

/// What [`Predictor::tiled_slice`] ended with.
enum TiledSlice {
    /// The band's final rows, one map per class, and the sums of the rows it shares with the
    /// bands next to it that are still to come, one per class.
    Rows {
        /// Probabilities 0–255 of `rows`.
        maps: Vec<Vec<u8>>,
        /// The final rows: all the band's but those it shares with a band still to come.
        rows: Range<usize>,
        /// Weighted sums of the rows shared with the band above, if that band is to come.
        above: Option<Vec<Vec<f32>>>,
        /// Weighted sums of the rows shared with the band below, if that band is to come.
        below: Option<Vec<Vec<f32>>>,
    },
    /// Decoded, not reported.
    Unreported,
    /// The caller stopped the request during a partial report.
    Stopped,
}

/// A band of tile rows streamed through a pass on its own ([`Predictor::bands`]).
#[derive(Clone, Debug)]
struct Band {
    /// Its tiles (whole tile rows).
    tiles: Range<usize>,
    /// The stack rows they cover.
    rows: Range<usize>,
    /// The band above (none for the first): the rows the two share (this band's first rows) and
    /// that band's tiles.
    above: Option<(Range<usize>, Range<usize>)>,
    /// The band below (none for the last): the rows the two share (this band's last rows) and
    /// that band's tiles.
    below: Option<(Range<usize>, Range<usize>)>,
}

impl Band {
    /// Band `b` of `bands` (tile rows) on `grid`.
    fn new(grid: &TileGrid, bands: &[Range<usize>], b: usize) -> Self {
        let rows = grid.pixel_rows(bands[b].clone());
        let above = b.checked_sub(1).map(|a| {
            let end = grid.pixel_rows(bands[a].clone()).end.max(rows.start);
            (rows.start..end, grid.tiles_in_rows(bands[a].clone()))
        });
        let below = bands
            .get(b + 1)
            .map(|next| (grid.row_start(next.start).min(rows.end)..rows.end, grid.tiles_in_rows(next.clone())));
        Band { tiles: grid.tiles_in_rows(bands[b].clone()), rows, above, below }
    }
}

/// The order the bands of a pass go in: top to bottom; with a view to fill in from
/// ([`StackRequest::fill`], the app), the band holding the view's centre first and the others
/// by their distance from it, so that what a person looks at does not wait for the bands above
/// it to go through the whole stack. Top to bottom also when a band's tiles reach past the
/// next band into the one after (tile rows overlapping by more than half, on slices less than
/// two tiles tall): only going down hands such rows on through the band between.
fn band_order(grid: &TileGrid, bands: &[Range<usize>], fill: Option<&FillIn>) -> Vec<usize> {
    let mut order: Vec<usize> = (0..bands.len()).collect();
    let chained = bands.windows(3).any(|b| grid.pixel_rows(b[0].clone()).end > grid.row_start(b[2].start));
    if let Some(view) = fill.map(|f| f.view).filter(|v| !v.is_empty() && !chained) {
        let centre = (view.y0 + view.y1) as f64 / 2.0;
        let distance = |b: &usize| {
            let rows = grid.pixel_rows(bands[*b].clone());
            (rows.start as f64 - centre).max(centre - rows.end as f64).max(0.0)
        };
        // Ties (a centre in the rows two bands share) keep the upper band first.
        order.sort_by(|a, b| distance(a).total_cmp(&distance(b)));
    }
    order
}

/// What the bands next to one being decoded left in the rows they share with it, for one
/// slice: their weighted sums, one per class (present when that band went first).
#[derive(Default)]
struct Neighbours {
    above: Option<Vec<Vec<f32>>>,
    below: Option<Vec<Vec<f32>>>,
}

/// Per-slice row sums one band hands to the next, kept in an unnamed temporary file (for a
/// 16384² slice of B+ tiles at scale 1, 134 rows × 16384 × 4 bytes = 8.8 MB per slice and
/// class, so a pass of many slices would otherwise hold gigabytes). Created on the first `put`.
#[derive(Default)]
struct Spill {
    file: Option<std::fs::File>,
    /// Slice → (offset, values per class, classes).
    index: std::collections::HashMap<usize, (u64, usize, usize)>,
    end: u64,
}

impl Spill {
    fn put(&mut self, z: usize, sums: &[Vec<f32>]) -> Result<(), InferError> {
        use std::io::{Seek, SeekFrom, Write};
        let failed = |e: std::io::Error| InferError::Spill { reason: e.to_string() };
        if self.file.is_none() {
            self.file = Some(tempfile::tempfile().map_err(failed)?);
        }
        let file = self.file.as_mut().expect("created above");
        let per_class = sums.first().map_or(0, Vec::len);
        let bytes: Vec<u8> = sums.iter().flatten().flat_map(|v| v.to_le_bytes()).collect();
        file.seek(SeekFrom::Start(self.end)).map_err(failed)?;
        file.write_all(&bytes).map_err(failed)?;
        self.index.insert(z, (self.end, per_class, sums.len()));
        self.end += bytes.len() as u64;
        Ok(())
    }

    /// Slice `z`'s sums (nothing when the band above left none for it).
    fn take(&mut self, z: usize) -> Result<Vec<Vec<f32>>, InferError> {
        use std::io::{Read, Seek, SeekFrom};
        let failed = |e: std::io::Error| InferError::Spill { reason: e.to_string() };
        let (Some(file), Some(&(at, per_class, classes))) = (self.file.as_mut(), self.index.get(&z)) else {
            return Ok(Vec::new());
        };
        let mut bytes = vec![0u8; per_class * classes * 4];
        file.seek(SeekFrom::Start(at)).map_err(failed)?;
        file.read_exact(&mut bytes).map_err(failed)?;
        let values: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        Ok(values.chunks(per_class.max(1)).map(<[f32]>::to_vec).collect())
    }
}

/// A slice's blend so far (`acc`, the decoded tiles' weighted sum) as probabilities 0–255: the
/// weighted mean of the decoded tiles covering each pixel, 0 where none does.
fn partial_map(acc: &[f32], weights: &[f32]) -> Vec<u8> {
    acc.iter()
        .zip(weights)
        .map(|(&a, &w)| if w > 0.0 { ((a / w).clamp(0.0, 1.0) * 255.0).round() as u8 } else { 0 })
        .collect()
}

/// Which map a refinement changes.
#[derive(Clone, Copy, Debug)]
pub struct RefineTarget<'a> {
    /// The slice.
    pub z: SliceIndex,
    /// The class's head.
    pub class: HeadIndex,
    /// Slice width and height.
    pub size: (usize, usize),
    /// The scale the slice was predicted at.
    pub scale: Scale,
    /// The class's current probabilities on the slice (0–255), kept outside the refined tile.
    pub current: Option<&'a [u8]>,
}

/// What a refinement prompts the decoders with (slice pixel coordinates).
#[derive(Clone, Copy, Debug)]
pub struct Prompts<'a> {
    /// Clicks.
    pub points: &'a [PointPrompt],
    /// Boxes.
    pub boxes: &'a [BoxPrompt],
    /// The current mask as the dense prompt.
    pub prior: Option<&'a BitPlane>,
}

/// Sigmoid, resize (with `resize`, to the slice's size), clamp and scaling to 0–255, rounded,
/// on the logits' device: `[C, 1, S, S]` logits → `[C, 1, height, width]` values 0–255 as
/// floats, ready to read back.
fn scaled_on_device(logits: Tensor<4>, resize: &BilinearResize) -> Tensor<4> {
    resize.forward(burn::tensor::activation::sigmoid(logits)).clamp(0.0, 1.0).mul_scalar(255.0).round()
}

/// `[C, 1, S, S]` logits → one `width × height` map of probabilities scaled to 0–255 per class,
/// computed on the logits' device and read back (the GPU path of [`Predictor`]).
pub fn probabilities_on_device(logits: Tensor<4>, width: usize, height: usize) -> Vec<Vec<u8>> {
    let [_, _, h, w] = logits.dims();
    let resize = BilinearResize::new(h, w, height, width, &logits.device());
    Pending::read(scaled_on_device(logits, &resize), width * height).finish()
}

/// As [`probabilities_on_device`], with the logits read back first and the rest computed on the
/// host (the CPU backend's path of [`Predictor`]).
pub fn probabilities_on_host(logits: Tensor<4>, width: usize, height: usize) -> Vec<Vec<u8>> {
    let [_, _, h, w] = logits.dims();
    let host = logits.into_data().convert::<f32>().try_into_vec::<f32>().unwrap_or_default();
    host.chunks((h * w).max(1))
        .map(|l| {
            let p: Vec<f32> = l.iter().map(|&v| sigmoid(v)).collect();
            super::resize_bilinear_f32(&p, w, h, width, height)
                .into_iter()
                .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
                .collect()
        })
        .collect()
}

/// Probabilities on their way to the host (see [`Predictor::start_probabilities`]).
enum Pending {
    /// Computed on the host already.
    Ready(Vec<Vec<u8>>),
    /// Being read back from the device: the maps, `pixels` values per class, 0–255 as floats.
    Reading { read: Pin<Box<dyn Future<Output = Result<TensorData, ExecutionError>> + Send>>, pixels: usize },
}

impl Pending {
    /// Starts reading `scaled` back. The read-back future is polled once here, which asks the
    /// device for the copy now (burn's futures do nothing until polled) instead of when the
    /// caller waits for it.
    fn read(scaled: Tensor<4>, pixels: usize) -> Self {
        let mut read = Box::pin(scaled.into_data_async());
        match read.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(data) => Pending::Reading { read: Box::pin(std::future::ready(data)), pixels },
            Poll::Pending => Pending::Reading { read, pixels },
        }
    }

    /// Waits for the maps (one per class). A failed read-back gives empty maps, as a failed
    /// synchronous read did.
    fn finish(self) -> Vec<Vec<u8>> {
        match self {
            Pending::Ready(maps) => maps,
            Pending::Reading { read, pixels } => {
                let host = pollster::block_on(read)
                    .ok()
                    .and_then(|d| d.convert::<f32>().try_into_vec::<f32>().ok())
                    .unwrap_or_default();
                host.chunks(pixels.max(1)).map(|c| c.iter().map(|&v| v as u8).collect()).collect()
            }
        }
    }
}

/// A probability from a logit, on the host.
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}
