//! Batch commands of the CLI: `sam4em predict` (stack + checkpoint + adapter → per-class
//! masks), `sam4em train` (image and label stacks → adapter set, the paper's recipe by
//! default) and `sam4em eval` (prediction vs ground truth: the paper's per-slice Dice/IoU and
//! volume Dice/IoU).

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use super::model::DeviceChoice;
use crate::infer::{Flow, ModelImages, Predictor, Scale, Seed, StackRequest, TileGrid};
use crate::io::{self, ExportFormat, ExportOptions, OpenOptions};
use crate::model::Sam4emConfig;
use crate::model::adapter::BaseCheckpoint;
use crate::model::adapter::{AdapterSet, AdapterSetMeta};
use crate::model::footprint::TrainingMemoryModel;
use crate::model::metrics::{Overlap, StackMetrics};
use crate::model::multi::MultiModel;
use crate::model::source::{ModelSource, load};
use crate::state::bitplane::BitPlane;
use crate::state::{ClassTable, SliceIndex, Volume};
use crate::train::memory::{self as train_memory, ActivationsChoice, Available, gib};
use crate::train::{Control, Ended, Schedule, TrainConfig, TrainEvent, TrainSample, train};

/// Where the model comes from (shared by `predict` and `train`).
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Official SAM 2 / SAM 2.1 checkpoint (`.pt`, or safetensors with its keys).
    #[arg(long, value_name = "PT")]
    pub checkpoint: PathBuf,
    /// Adapter set (from `sam4em train` or the app's Retrain); its configuration and classes
    /// are used.
    #[arg(long, value_name = "SAFETENSORS")]
    pub adapter: Option<PathBuf>,
    /// Model configuration as JSON (the reference fixtures' `config.json` format), for
    /// checkpoints that are not one of SAM 2's sizes; SAM4EM's own for the checkpoint's size
    /// otherwise.
    #[arg(long, value_name = "JSON")]
    pub config: Option<PathBuf>,
    /// Compute device.
    #[arg(long, value_enum, default_value = "wgpu")]
    pub device: DeviceChoice,
}

/// `sam4em predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// The EM stack (multi-page TIFF, folder of PNG/TIFF slices, HDF5).
    pub stack: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Output folder: one binary TIFF stack per class (`<class>.tif`).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Classes to predict (comma-separated; default: the adapter's, else mitochondria).
    #[arg(long, value_delimiter = ',')]
    pub classes: Vec<String>,
    /// Slices to predict, `A..B` (B excluded) or `Z`; all by default.
    #[arg(long, value_name = "A..B")]
    pub slices: Option<String>,
    /// Seed slice: streaming starts there, prompted by the `--seed-mask` masks of that slice.
    /// Repeat for several seeds.
    #[arg(long = "seed-slice", value_name = "Z")]
    pub seed_slices: Vec<usize>,
    /// Masks the seed slices take their prompts from, as CLASS=PATH (binary stacks, non-zero =
    /// foreground).
    #[arg(long = "seed-mask", value_name = "CLASS=PATH")]
    pub seed_masks: Vec<String>,
    /// Probability threshold (default: the model's, 0.4 in SAM4EM).
    #[arg(long)]
    pub threshold: Option<f64>,
    /// Also write the probabilities (0–255) as `<class>_probability.tif`.
    #[arg(long)]
    pub probabilities: bool,
    /// Numbers the model computes with: `f32` (the reference's), or `f16` on a GPU with 16-bit
    /// float shaders (about half the memory traffic; f32 where f16 is not safe; masks within
    /// Dice 0.99 of f32 on Lucchi++ with the micro model, not yet checked with official weights).
    #[arg(long, default_value = "f32", value_name = "f32|f16")]
    pub precision: crate::model::device::Precision,
    /// Model pixels per stack pixel: `1` predicts at the data's own resolution in overlapping
    /// tiles of the model input (blended), `0.5` at half of it, `fit` resizes each whole slice
    /// to the model input (the paper's mode). Default: the adapter's scale; without one, `fit`
    /// for slices at most twice the model input and `1` for larger ones.
    #[arg(long, value_name = "1|0.5|…|fit")]
    pub scale: Option<Scale>,
    /// Print a JSON report (slices, tiles per slice, seconds, peak memory, foreground voxels)
    /// instead of the text summary.
    #[arg(long)]
    pub json: bool,
    /// Most memory the tiles' slice memories and prompts carried through z may take, GiB: a
    /// slice with more tiles is streamed in bands of tile rows, one band through the stack
    /// after the other (same result; each slice is read once per band).
    #[arg(long, default_value_t = crate::infer::predictor::DEFAULT_STREAM_BUDGET_BYTES as f64 / f64::from(1 << 30), value_name = "GiB")]
    pub stream_memory_gib: f64,
}

/// Pages of one size in an unnamed temporary file beside the output folder (page `i` at byte
/// `i · page_bytes`), so that `predict` holds one slice of its results in memory rather than
/// the stack's: the probabilities (a byte per pixel) of slices that come in bands of tile rows
/// or that `--probabilities` asks for, written as slices or bands of their rows come and read
/// back page by page; and the masks of every slice ([`SpooledMasks`]).
struct PageFile {
    file: std::fs::File,
    dir: PathBuf,
    page_bytes: u64,
    /// What the pages hold, for messages.
    what: &'static str,
}

impl PageFile {
    fn new(out: &Path, pages: usize, page_bytes: usize, what: &'static str) -> Result<Self> {
        let dir = out.parent().filter(|p| p.is_dir()).map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let page_bytes = page_bytes as u64;
        // Sparse where the file system allows: pages never written read back as zeros.
        let file = tempfile::tempfile_in(&dir)
            .and_then(|f| f.set_len(page_bytes * pages as u64).map(|()| f))
            .with_context(|| format!("cannot keep the predicted {what} in a temporary file in {}", dir.display()))?;
        Ok(PageFile { file, dir, page_bytes, what })
    }

    /// Writes `bytes` into page `page` from byte `offset` of the page on.
    fn write(&self, page: usize, offset: usize, bytes: &[u8]) -> Result<()> {
        use std::io::{Seek, SeekFrom, Write};
        let at = page as u64 * self.page_bytes + offset as u64;
        let mut file = &self.file;
        file.seek(SeekFrom::Start(at)).and_then(|_| file.write_all(bytes)).with_context(|| {
            format!("cannot write the predicted {} to a temporary file in {}", self.what, self.dir.display())
        })
    }

    /// Page `page`, whole.
    fn read(&self, page: usize) -> Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        let mut bytes = vec![0u8; self.page_bytes as usize];
        let mut file = &self.file;
        file.seek(SeekFrom::Start(page as u64 * self.page_bytes))
            .and_then(|_| file.read_exact(&mut bytes))
            .with_context(|| format!("cannot read the predicted {} back from {}", self.what, self.dir.display()))?;
        Ok(bytes)
    }
}

/// The masks `predict` writes, a bit per pixel in a [`PageFile`] (class `c`'s slice `z` is page
/// `c · depth + z`, its rows whole little-endian `u64` words as in [`BitPlane`]), read back one
/// slice at a time by the export: the masks of a deep stack of large slices are not held in
/// memory (a 16384² slice is 32 MiB per class at one bit per pixel).
struct SpooledMasks {
    file: PageFile,
    /// The class of each page row, in the order of the model's heads.
    classes: Vec<crate::state::ClassId>,
    size: (usize, usize, usize),
    /// Pages written; the others are all background.
    written: Vec<bool>,
}

impl SpooledMasks {
    fn new(out: &Path, classes: Vec<crate::state::ClassId>, width: usize, height: usize, depth: usize) -> Result<Self> {
        let page_bytes = width.div_ceil(64) * 8 * height;
        let file = PageFile::new(out, classes.len() * depth, page_bytes, "masks")?;
        let written = vec![false; classes.len() * depth];
        Ok(SpooledMasks { file, classes, size: (width, height, depth), written })
    }

    /// Stores head `c`'s mask of slice `z`.
    fn put(&mut self, c: usize, z: SliceIndex, mask: &BitPlane) -> Result<()> {
        let page = c * self.size.2 + z.0;
        let bytes: Vec<u8> = mask.words().iter().flat_map(|w| w.to_le_bytes()).collect();
        self.file.write(page, 0, &bytes)?;
        self.written[page] = true;
        Ok(())
    }
}

impl io::export::MaskPages for SpooledMasks {
    fn size(&self) -> (usize, usize, usize) {
        self.size
    }

    fn page(
        &self,
        class: crate::state::ClassId,
        z: SliceIndex,
    ) -> Result<Option<std::borrow::Cow<'_, crate::state::mask::SliceMask>>, String> {
        let (w, h, d) = self.size;
        let Some(c) = self.classes.iter().position(|&id| id == class) else {
            return Ok(None);
        };
        let page = c * d + z.0;
        if !self.written[page] {
            return Ok(None);
        }
        let bytes = self.file.read(page).map_err(|e| format!("{e:#}"))?;
        let words = bytes.chunks_exact(8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes"))).collect();
        let plane = BitPlane::from_words(w, h, words);
        Ok(Some(std::borrow::Cow::Owned(crate::state::mask::SliceMask::from_plane(&plane))))
    }
}

/// Learning-rate schedule choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScheduleChoice {
    /// Warm-up then cosine decay over the epochs (the paper's).
    Paper,
    /// Constant rate.
    Constant,
}

/// How `sam4em train` computes gradients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ActivationsArg {
    /// Keep every activation when the run fits that way, else recompute.
    Auto,
    /// Keep every activation (fastest; refused when it does not fit).
    Keep,
    /// Recompute activations block by block (least memory).
    Recompute,
}

impl ActivationsArg {
    pub(crate) fn choice(self) -> ActivationsChoice {
        match self {
            ActivationsArg::Auto => ActivationsChoice::Auto,
            ActivationsArg::Keep => ActivationsChoice::Keep,
            ActivationsArg::Recompute => ActivationsChoice::Recompute,
        }
    }
}

/// `sam4em train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The EM image stack.
    #[arg(long, value_name = "PATH")]
    pub images: PathBuf,
    /// Ground truth per class as CLASS=PATH (binary stacks, non-zero = foreground); repeat
    /// for several classes.
    #[arg(long = "labels", value_name = "CLASS=PATH", required = true)]
    pub labels: Vec<String>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Where to write the adapter set.
    #[arg(long, value_name = "SAFETENSORS")]
    pub out: PathBuf,
    /// Slices to train on, `A..B` or `Z` (all by default, minus the validation slices).
    #[arg(long, value_name = "A..B")]
    pub slices: Option<String>,
    /// Held-out slices scored after every epoch (Dice), `A..B` or `Z`.
    #[arg(long, value_name = "A..B")]
    pub validation: Option<String>,
    /// Epochs (passes over the slices).
    #[arg(long, default_value_t = 50)]
    pub epochs: usize,
    /// Consecutive slices per batch.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// AdamW learning rate.
    #[arg(long, default_value_t = 5e-4)]
    pub lr: f64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    /// Learning-rate schedule.
    #[arg(long, value_enum, default_value = "paper")]
    pub schedule: ScheduleChoice,
    /// Turn off the random flips/transposes.
    #[arg(long)]
    pub no_augment: bool,
    /// Activations for the backward pass: `auto` keeps them when the run fits in the memory
    /// available and otherwise recomputes them block by block (the same gradients with a
    /// fraction of the memory, for one more forward pass); a run that does not fit either way
    /// is refused before it starts.
    #[arg(long, value_enum, default_value = "auto")]
    pub activations: ActivationsArg,
    /// Model pixels per stack pixel to train at: a number trains on crops of the model input
    /// at that scale, centred on labelled pixels, one crop per run of consecutive slices;
    /// `fit` resizes each whole slice (the paper's mode). Default: the adapter's scale (with
    /// `--adapter`); without one, `fit` for slices at most twice the model input, `1` beyond.
    /// The adapter set records it, and `predict` uses it by default.
    #[arg(long, value_name = "1|0.5|…|fit")]
    pub scale: Option<Scale>,
    /// Most memory the run may use, in GiB (default: the free RAM; on a GPU
    /// `SAM4EM_GPU_MEMORY_GIB`, else what its Vulkan driver says is free, else 16 GiB).
    #[arg(long, value_name = "GIB")]
    pub memory_limit: Option<f64>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `sam4em eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Predicted mask stack (non-zero = foreground).
    #[arg(long, value_name = "PATH")]
    pub prediction: PathBuf,
    /// Ground-truth stack (non-zero = foreground, or `--truth-value`).
    #[arg(long, value_name = "PATH")]
    pub truth: PathBuf,
    /// Only this value of the ground truth is foreground (label maps).
    #[arg(long)]
    pub truth_value: Option<f64>,
    /// Slices to score, `A..B` or `Z` (all by default).
    #[arg(long, value_name = "A..B")]
    pub slices: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Parses `A..B` (B excluded) or `Z` against a stack of `depth` slices.
pub fn parse_range(spec: Option<&str>, depth: usize) -> Result<Range<usize>> {
    let Some(spec) = spec else { return Ok(0..depth) };
    let range = match spec.split_once("..") {
        Some((a, b)) => {
            let a: usize =
                if a.is_empty() { 0 } else { a.trim().parse().with_context(|| format!("`{spec}` is not A..B"))? };
            let b: usize =
                if b.is_empty() { depth } else { b.trim().parse().with_context(|| format!("`{spec}` is not A..B"))? };
            a..b
        }
        None => {
            let z: usize = spec.trim().parse().with_context(|| format!("`{spec}` is not a slice index or A..B"))?;
            z..z + 1
        }
    };
    if range.is_empty() || range.end > depth {
        bail!("slices `{spec}` are not inside the stack's 0..{depth}");
    }
    Ok(range)
}

fn open(path: &Path) -> Result<Volume> {
    Ok(io::open_stack(path, &OpenOptions { cache_budget_bytes: 0, ..Default::default() })?)
}

/// Slice `z` of a mask stack as a plane (`value`: only that value is foreground).
fn plane(volume: &Volume, z: usize, value: Option<f64>) -> Result<BitPlane> {
    let s = volume.slice(SliceIndex(z))?;
    let mut p = BitPlane::new(s.width, s.height);
    for i in 0..s.width * s.height {
        let on = match value {
            Some(v) => s.data.value_f64(i) == v,
            None => s.data.is_nonzero(i),
        };
        if on {
            p.set(i % s.width, i / s.width, true);
        }
    }
    Ok(p)
}

fn parse_class_path(spec: &str, flag: &str) -> Result<(String, PathBuf)> {
    let Some((class, path)) = spec.split_once('=') else { bail!("{flag} `{spec}` is not CLASS=PATH") };
    Ok((class.trim().to_string(), PathBuf::from(path)))
}

fn check_shape(what: &str, v: &Volume, stack: &Volume) -> Result<()> {
    if (v.width(), v.height(), v.depth()) != (stack.width(), stack.height(), stack.depth()) {
        bail!(
            "{what} is {}×{}×{}, the stack {}×{}×{}: {}",
            v.width(),
            v.height(),
            v.depth(),
            stack.width(),
            stack.height(),
            stack.depth(),
            v.path().display()
        );
    }
    Ok(())
}

/// A model ready to use: base checkpoint (+ adapter set), and what it was built from.
pub struct LoadedModel {
    /// The model.
    pub model: MultiModel,
    /// The base checkpoint's identity.
    pub base: BaseCheckpoint,
    /// The adapter set's metadata, when one was applied.
    pub adapter: Option<AdapterSetMeta>,
}

/// Builds the model of `args` on `device` for `classes` (empty: the adapter's, else
/// mitochondria).
pub fn load_model(args: &ModelArgs, classes: &[String], device: &Device) -> Result<LoadedModel> {
    let adapter = match &args.adapter {
        Some(p) => Some(AdapterSet::read(p)?),
        None => None,
    };
    let config = match (&adapter, &args.config) {
        (Some(a), _) => Some(a.meta.config.clone()),
        (None, Some(p)) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
            Some(Sam4emConfig::from_reference_json(&text).with_context(|| p.display().to_string())?)
        }
        (None, None) => None,
    };
    let classes: Vec<String> = match (classes.is_empty(), &adapter) {
        (false, _) => classes.to_vec(),
        (true, Some(a)) => a.meta.classes.clone(),
        (true, None) => vec!["mitochondria".to_string()],
    };
    let source = ModelSource { checkpoint: args.checkpoint.clone(), config, classes, device: device.clone() };
    let (mut model, base, warning) = load(&source)?;
    if let Some(w) = warning {
        eprintln!("warning: {w}");
    }
    if let (Some(a), Some(p)) = (&adapter, &args.adapter) {
        a.apply(&mut model, Some(&base.sha256), p)?;
    }
    Ok(LoadedModel { model, base, adapter: adapter.map(|a| a.meta) })
}

fn bar(total: u64, what: &str) -> ProgressBar {
    let b = ProgressBar::new(total);
    b.set_style(
        ProgressStyle::with_template(&format!("{what} {{bar:30}} {{pos}}/{{len}} {{msg}} ETA {{eta}}"))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    b
}

/// Runs `sam4em predict`.
pub fn predict(a: &PredictArgs) -> Result<()> {
    if !(a.stream_memory_gib.is_finite() && a.stream_memory_gib > 0.0) {
        bail!("--stream-memory-gib {} is not a positive number of GiB", a.stream_memory_gib);
    }
    let stack = Arc::new(open(&a.stack)?);
    let range = parse_range(a.slices.as_deref(), stack.depth())?;
    let device = crate::model::device::device_at(&a.model.device.device(), a.precision)
        .with_context(|| format!("--precision {}", a.precision))?;
    let loaded = load_model(&a.model, &a.classes, &device)?;
    let classes = loaded.model.class_names();
    let images = ModelImages::new(Arc::clone(&stack));
    let (w, h) = (stack.width(), stack.height());

    let mut seed_stacks = Vec::new();
    for spec in &a.seed_masks {
        let (class, path) = parse_class_path(spec, "--seed-mask")?;
        let Some(c) = classes.iter().position(|n| *n == class) else {
            bail!("--seed-mask `{spec}`: the model has no class `{class}` (it has {})", classes.join(", "));
        };
        let v = open(&path)?;
        check_shape("the seed mask stack", &v, &stack)?;
        seed_stacks.push((c, v));
    }
    if !a.seed_slices.is_empty() && seed_stacks.is_empty() {
        bail!("--seed-slice needs --seed-mask CLASS=PATH to take the seed's masks from");
    }
    let mut seeds = Vec::new();
    for &z in &a.seed_slices {
        if z >= stack.depth() {
            bail!("--seed-slice {z} is outside the stack's 0..{}", stack.depth());
        }
        let mut masks = vec![None; classes.len()];
        for (c, v) in &seed_stacks {
            masks[*c] = Some(plane(v, z, None)?);
        }
        seeds.push(Seed { z: SliceIndex(z), masks });
    }
    let input_px = loaded.model.config().image_size;
    let trained_at = loaded.adapter.as_ref().map(|m| m.training.scale);
    let scale = a.scale.or(trained_at).unwrap_or_else(|| Scale::default_for(w, h, input_px));
    if let Some(trained) = trained_at.filter(|t| *t != scale) {
        eprintln!("warning: predicting at scale {scale}, but the adapter was trained at scale {trained}");
    }
    let grid = TileGrid::new(w, h, input_px, scale);
    let request = StackRequest {
        width: w,
        height: h,
        range: range.clone(),
        visible: SliceIndex(range.start),
        seeds,
        max_warmup_slices: 32,
        scale,
        fill: None,
    };
    let threshold = a.threshold.unwrap_or(loaded.model.config().stream.cross_batch_threshold);

    let budget = (a.stream_memory_gib * f64::from(1 << 30)) as u64;
    let mut predictor = Predictor::new(&loaded.model, 4).with_stream_budget(budget);
    let bands = predictor.bands(&grid).len();
    let table = ClassTable::from_names(&classes)?;
    let ids: Vec<_> = classes.iter().map(|n| table.find(n).expect("built from these names").id).collect();
    let depth = stack.depth();
    let mut masks = SpooledMasks::new(&a.out, ids, w, h, depth)?;
    let spool = match a.probabilities || bands > 1 {
        true => Some(PageFile::new(&a.out, classes.len() * depth, w * h, "probabilities")?),
        false => None,
    };
    let mut foreground = vec![0u64; classes.len()];
    let progress = bar(range.len() as u64, "predict");
    let started = Instant::now();
    let mut fetch = |z: SliceIndex| images.image(z);
    let mut failure: Option<anyhow::Error> = None;
    predictor.predict(&request, &mut fetch, &mut |p, prog| {
        let complete = p.complete;
        for (c, probs) in p.probabilities.iter().enumerate() {
            let page = c * depth + p.z.0;
            let result = match &spool {
                Some(spool) => spool.write(page, p.rows.start * w, probs).and_then(|()| match p.rows == (0..h) {
                    true => Ok(None),
                    // The last band of a slice: its whole page is in the spool now.
                    false if complete => spool.read(page).map(Some),
                    false => Ok(None),
                }),
                None => Ok(None),
            }
            .and_then(|whole| {
                if !complete {
                    return Ok(());
                }
                let plane =
                    crate::state::view::probability_plane(w, h, whole.as_deref().unwrap_or(probs), threshold as f32);
                foreground[c] += plane.count_ones();
                masks.put(c, p.z, &plane)
            });
            if let Err(e) = result {
                failure = Some(e);
                return Flow::Stop;
            }
        }
        progress.set_position(prog.done_slices() as u64);
        progress.set_message(format!("{:.2} slices/s", prog.slices_per_s()));
        Flow::Continue
    })?;
    progress.finish_and_clear();
    if let Some(e) = failure {
        return Err(e);
    }
    let seconds = started.elapsed().as_secs_f64();
    let report = io::export_masks(&masks, &table, &a.out, &[ExportFormat::Tiff], &ExportOptions::default())?;
    let mut written: Vec<PathBuf> = Vec::new();
    if let (true, Some(spool)) = (a.probabilities, &spool) {
        for (c, name) in classes.iter().enumerate() {
            let path = a.out.join(format!("{}_probability.tif", table.find(name).expect("known").export_name));
            io::export::write_u8_stack_with(&path, w, h, depth, |z| {
                spool.read(c * depth + z.0).map_err(|e| format!("{e:#}"))
            })?;
            written.push(path);
        }
    }
    written.extend(report.outputs.iter().cloned());
    if a.json {
        let (columns, rows) = grid.columns_rows();
        let foreground: serde_json::Map<String, serde_json::Value> =
            classes.iter().zip(&foreground).map(|(name, &px)| (name.clone(), px.into())).collect();
        let v = serde_json::json!({
            "stack": a.stack, "width": w, "height": h, "slices": range.len(), "seconds": seconds,
            "scale": scale, "model_input_px": input_px,
            "tiles": { "per_slice": grid.len(), "columns": columns, "rows": rows, "bands": bands },
            "threshold": threshold, "device": super::model::device_name(&device),
            "precision": a.precision.to_string(),
            "peak_rss_bytes": train_memory::rss().map(|(_, peak)| peak),
            "foreground_voxels": foreground, "outputs": written,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    for path in &written[..if a.probabilities { classes.len() } else { 0 }] {
        println!("wrote {}", path.display());
    }
    println!(
        "predicted {} slices of {} in {seconds:.1} s ({:.2} slices/s, {} {}), threshold {threshold}, scale {scale} ({} per slice)",
        range.len(),
        a.stack.display(),
        range.len() as f64 / seconds.max(1e-9),
        super::model::device_name(&device),
        a.precision,
        match grid.len() {
            1 => "1 tile".to_string(),
            n => format!("{n} tiles"),
        }
    );
    for (name, px) in classes.iter().zip(&foreground) {
        println!("{name:<24} {px} foreground voxels");
    }
    for out in &report.outputs {
        println!("wrote {}", out.display());
    }
    Ok(())
}

/// Runs `sam4em train`.
pub fn train_cmd(a: &TrainArgs) -> Result<()> {
    let stack = Arc::new(open(&a.images)?);
    let mut label_stacks = Vec::new();
    for spec in &a.labels {
        let (class, path) = parse_class_path(spec, "--labels")?;
        let v = open(&path)?;
        check_shape("the label stack", &v, &stack)?;
        label_stacks.push((class, v));
    }
    let classes: Vec<String> = label_stacks.iter().map(|(c, _)| c.clone()).collect();
    let validation = match &a.validation {
        Some(spec) => parse_range(Some(spec), stack.depth())?,
        None => 0..0,
    };
    let train_range = parse_range(a.slices.as_deref(), stack.depth())?;
    let train_z: Vec<usize> = train_range.filter(|z| !validation.contains(z)).collect();
    if train_z.is_empty() {
        bail!("no training slices left once the validation slices are held out");
    }
    let device = a.model.device.device().autodiff();
    let mut loaded = load_model(&a.model, &classes, &device)?;
    if let Some(meta) = &loaded.adapter
        && meta.classes != classes
    {
        bail!(
            "the adapter set has classes {}, the labels give {}: {}",
            meta.classes.join(", "),
            classes.join(", "),
            a.model.adapter.as_deref().unwrap_or(Path::new("")).display()
        );
    }
    let images = ModelImages::new(Arc::clone(&stack));
    let (w, h) = (stack.width(), stack.height());
    let sample = |z: usize| -> Result<TrainSample> {
        let image = images.image(SliceIndex(z)).map_err(anyhow::Error::msg)?;
        let mut all = BitPlane::new(w, h);
        all.fill_rect(crate::state::bitplane::PixelBox { x0: 0, y0: 0, x1: w, y1: h }, true);
        Ok(TrainSample {
            z: SliceIndex(z),
            width: w,
            height: h,
            image: Arc::new(image),
            labels: label_stacks.iter().map(|(_, v)| plane(v, z, None)).collect::<Result<_>>()?,
            vouched: vec![all; classes.len()],
        })
    };
    let samples: Vec<TrainSample> = train_z.iter().map(|&z| sample(z)).collect::<Result<_>>()?;
    let held_out: Vec<TrainSample> = validation.clone().map(sample).collect::<Result<_>>()?;

    // Memory: estimate, compare with what is available, choose how to compute gradients or
    // refuse before anything runs.
    let batch = crate::train::batches(&samples, a.batch_size).iter().map(Vec::len).max().unwrap_or(1);
    let memory_model = TrainingMemoryModel::new(loaded.model.config(), &device);
    let available = match a.memory_limit {
        Some(limit) if limit > 0.0 => {
            let bytes = (limit * f64::from(1u32 << 30)) as u64;
            match train_memory::available_for(&device) {
                Some(free) if free.bytes < bytes => Some(free),
                _ => Some(Available { bytes, what: "the --memory-limit".into() }),
            }
        }
        Some(limit) => bail!("--memory-limit {limit} is not a positive number of GiB"),
        None => train_memory::available_for(&device),
    };
    let plan = train_memory::plan(a.activations.choice(), batch, true, available, &|b| {
        memory_model.footprint(classes.len(), b)
    })?;
    if !a.json {
        eprintln!("memory: {}", plan.summary());
    }
    let rss_before = train_memory::rss().map(|(now, _)| now);
    train_memory::reset_peak_rss();

    let mut optimizer = loaded.model.config().optimizer.clone();
    optimizer.lr = a.lr;
    optimizer.weight_decay = a.weight_decay;
    let config = TrainConfig {
        epochs: a.epochs,
        batch_size: a.batch_size,
        optimizer,
        schedule: match a.schedule {
            ScheduleChoice::Paper => Schedule::Paper,
            ScheduleChoice::Constant => Schedule::Constant,
        },
        augment: !a.no_augment,
        activations: plan.activations,
        seed: 2024,
        scale: a
            .scale
            .or_else(|| loaded.adapter.as_ref().map(|m| m.training.scale))
            .unwrap_or_else(|| Scale::default_for(w, h, loaded.model.config().image_size)),
    };
    let steps_per_epoch = crate::train::batches(&samples, a.batch_size).len();
    let progress = bar((steps_per_epoch * a.epochs) as u64, "train");
    let control = Control::default();
    let json = a.json;
    let outcome = train(&mut loaded.model, &samples, &held_out, &config, &control, &mut |e| match e {
        TrainEvent::Step { step, loss, lr, .. } => {
            progress.set_position(step);
            progress.set_message(format!("loss {loss:.4} lr {lr:.1e}"));
        }
        TrainEvent::Validation { epoch, dice } => {
            if !json {
                let d: Vec<String> = dice.iter().map(|(c, v)| format!("{c} {v:.4}")).collect();
                progress.println(format!("epoch {epoch}: held-out Dice {}", d.join(", ")));
            }
        }
    })?;
    progress.finish_and_clear();
    // A run that diverged writes nothing: the adapter the user had stays theirs.
    if let Ended::NonFinite { .. } = outcome.ended {
        bail!("{}; no adapter written to {}", outcome.ended, a.out.display());
    }

    let peak_rss = train_memory::rss().map(|(_, peak)| peak);
    let parent = loaded.adapter.as_ref().map(|m| m.version);
    let set = crate::train::adapter_set(
        &mut loaded.model,
        &outcome,
        crate::train::RunRecord {
            samples: &samples,
            validation: &held_out,
            config: &config,
            base: loaded.base.clone(),
            version: parent.map_or(1, |v| v + 1),
            parent,
            device: format!("{device:?}"),
            pixel_size_nm: stack.info().voxel_size.map(|v| v.x_nm),
        },
    );
    let record = set.meta.training.clone();
    set.save(&a.out)?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "adapter": a.out, "training": record, "losses": outcome.losses,
                "memory": {
                    "activations": plan.activations.name(),
                    "estimated_bytes": plan.needed_bytes,
                    "estimate": plan.footprint,
                    "available": plan.available,
                    "rss_before_bytes": rss_before,
                    "peak_rss_bytes": peak_rss,
                },
            }))?
        );
    } else {
        println!(
            "{} after {} steps in {:.1} s: final epoch loss {:.4} (first step {:.4})",
            outcome.ended,
            outcome.steps,
            outcome.seconds,
            outcome.final_loss,
            outcome.losses.first().copied().unwrap_or(f64::NAN)
        );
        for (c, d) in &outcome.validation_dice {
            println!("held-out Dice {c}: {d:.4}");
        }
        if let (Some(before), Some(peak)) = (rss_before, peak_rss) {
            println!(
                "memory: peak {} resident, {} above the {} held before training (estimated {}, {})",
                gib(peak),
                gib(peak.saturating_sub(before)),
                gib(before),
                gib(plan.needed_bytes),
                plan.activations.name()
            );
        }
        println!("wrote {}", a.out.display());
    }
    Ok(())
}

/// Runs `sam4em eval`.
pub fn eval(a: &EvalArgs) -> Result<()> {
    let pred = open(&a.prediction)?;
    let truth = open(&a.truth)?;
    check_shape("the ground truth", &truth, &pred)?;
    let range = parse_range(a.slices.as_deref(), pred.depth())?;
    let mut overlaps = Vec::with_capacity(range.len());
    for z in range.clone() {
        let p = pred.slice(SliceIndex(z))?;
        let t = truth.slice(SliceIndex(z))?;
        let pb: Vec<u8> = (0..p.data.len()).map(|i| u8::from(p.data.is_nonzero(i))).collect();
        let tb: Vec<u8> = (0..t.data.len())
            .map(|i| {
                u8::from(match a.truth_value {
                    Some(v) => t.data.value_f64(i) == v,
                    None => t.data.is_nonzero(i),
                })
            })
            .collect();
        overlaps.push(Overlap::of(&pb, &tb));
    }
    let m = StackMetrics::from_overlaps(&overlaps);
    if a.json {
        let slices: Vec<serde_json::Value> = range
            .clone()
            .zip(&overlaps)
            .zip(m.per_slice_dice.iter().zip(&m.per_slice_iou))
            .map(|((z, o), (d, i))| serde_json::json!({ "z": z, "dice": d, "iou": i, "overlap": o }))
            .collect();
        let v = serde_json::json!({
            "prediction": a.prediction, "truth": a.truth, "slices": slices,
            "mean_dice": m.mean_dice, "mean_iou": m.mean_iou,
            "volume_dice": m.volume_dice, "volume_iou": m.volume_iou,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("{:>6} {:>8} {:>8} {:>12} {:>12}", "slice", "Dice", "IoU", "predicted", "truth");
    for ((z, o), (d, i)) in range.zip(&overlaps).zip(m.per_slice_dice.iter().zip(&m.per_slice_iou)) {
        println!("{z:>6} {d:>8.4} {i:>8.4} {:>12} {:>12}", o.predicted, o.truth);
    }
    println!("per-slice mean (the paper's; an empty slice scores 0): Dice {:.4}  IoU {:.4}", m.mean_dice, m.mean_iou);
    println!("volume: Dice {:.4}  IoU {:.4}", m.volume_dice, m.volume_iou);
    Ok(())
}
