//! The command line: `sam4em info`, `sam4em export`, `sam4em classes`, and with the model
//! `sam4em bench model` and `sam4em checkpoint`. A bare `sam4em [PATH]`
//! is reserved for the desktop app.
//!
//! Errors are returned as `anyhow` errors; `main` prints them on one line and exits with 2.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};

#[cfg(feature = "model")]
pub mod learn;
#[cfg(feature = "model")]
pub mod model;

use crate::io::{self, ExportFormat, ExportOptions, OpenOptions, TiffCompression};
use crate::state::{ClassTable, MaskVolume, Volume, VolumeInfo, VoxelSize};

/// `export --format`, as the command line spells it (`io` knows nothing of the command line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// One binary multi-page TIFF per class: `<export name>.tif`.
    Tiff,
    /// One folder of binary PNGs per class: `<export name>/<export name>_0000.png`.
    Png,
    /// One label-map TIFF of class ids, `labels.tif`, plus `labels.classes.json`.
    Labels,
}

impl From<FormatArg> for ExportFormat {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Tiff => ExportFormat::Tiff,
            FormatArg::Png => ExportFormat::Png,
            FormatArg::Labels => ExportFormat::Labels,
        }
    }
}

fn formats(args: &[FormatArg]) -> Vec<ExportFormat> {
    args.iter().map(|&f| f.into()).collect()
}

/// `export --compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompressionArg {
    /// No compression: largest, readable everywhere.
    None,
    /// LZW.
    Lzw,
    /// Deflate (zip): small and lossless; ImageJ, Fiji, napari and tifffile read it.
    Deflate,
    /// PackBits run-length coding.
    Packbits,
}

impl From<CompressionArg> for TiffCompression {
    fn from(c: CompressionArg) -> Self {
        match c {
            CompressionArg::None => TiffCompression::None,
            CompressionArg::Lzw => TiffCompression::Lzw,
            CompressionArg::Deflate => TiffCompression::Deflate,
            CompressionArg::Packbits => TiffCompression::Packbits,
        }
    }
}

/// SAM4EM Studio: segment and proofread glia, mitochondria and post-synaptic densities in
/// electron-microscopy stacks.
#[derive(Debug, Parser)]
#[command(name = "sam4em", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Stack to open in the app (multi-page TIFF, PNG/TIFF folder); the bundled sample when
    /// left out.
    pub path: Option<PathBuf>,
    /// App: a label map to show over the stack (values mapped to classes by --map).
    #[arg(long, value_name = "PATH")]
    pub labels: Option<PathBuf>,
    /// App: label value → class, e.g. `159=glia,191=mitochondria,223=psd` (default: the label
    /// map's `.classes.json`, else value N = class id N).
    #[arg(long, value_name = "VALUE=CLASS,...", requires = "labels")]
    pub map: Option<String>,
    /// App: a binary mask stack for one class, as CLASS=PATH; repeat for several classes.
    #[arg(long = "mask", value_name = "CLASS=PATH")]
    pub masks: Vec<String>,
    /// App: a probability map stack (0..1 floats, or 8/16-bit scaled to 0..1) shown as the
    /// prediction layer.
    #[arg(long, value_name = "PATH")]
    pub prediction: Option<PathBuf>,
    /// App: the slice to show first (0-based, as the status bar counts; clamped to the stack).
    #[arg(long, value_name = "Z")]
    pub slice: Option<usize>,
    /// App: save a PNG screenshot of the window once the stack is shown, then quit.
    #[arg(long, value_name = "PNG")]
    pub screenshot: Option<PathBuf>,
    /// Largest decoded slice any file may declare, in GiB (default 2, or SAM4EM_MAX_SLICE_GIB):
    /// a header asking for more is refused instead of exhausting memory.
    #[arg(long, global = true, value_name = "GiB", value_parser = crate::io::options::parse_gib)]
    pub max_slice_gib: Option<u64>,
}

/// `sam4em bench …`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to time.
    #[command(subcommand)]
    pub what: BenchWhat,
}

/// What to benchmark.
#[derive(Debug, Subcommand)]
pub enum BenchWhat {
    /// Proofreading: brush segment at 1024² and 4096², flood fill and its undo at 4096²,
    /// journal appends — through the app's editor and journal.
    Edit(BenchEditArgs),
    /// Per-slice encoder, decoder and full-model times and a training step at 512² (random
    /// weights, batch 1), optionally interleaved with the original SAM4EM code in PyTorch.
    #[cfg(feature = "model")]
    Model(model::BenchModelArgs),
    /// Write a SAM 2 checkpoint of a given size with random weights (SAM 2's key names,
    /// safetensors), for memory and speed runs of `sam4em train` / `predict` where no official
    /// file can be had. Its results mean nothing; its costs are the real ones.
    #[cfg(feature = "model")]
    Checkpoint(model::BenchCheckpointArgs),
    /// The model's kernels one at a time at SAM4EM-B+'s shapes (GELU, LayerNorm, linear,
    /// window and global attention, 3×3 convolution), forward and forward + backward,
    /// optionally interleaved run by run with PyTorch's on the same machine.
    #[cfg(feature = "model")]
    Ops(model::BenchOpsArgs),
    /// Slice-switch time (decode + upload) for 1024² u8 and 4096² u16 stacks and frame time
    /// with three class overlays, headless on the app's device.
    #[cfg(feature = "gui")]
    Viewer(BenchViewerArgs),
}

/// `sam4em bench edit`.
#[derive(Debug, Args)]
pub struct BenchEditArgs {
    /// Repeat each case this many times (brush: 200 segments per repeat).
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `sam4em bench viewer`.
#[cfg(feature = "gui")]
#[derive(Debug, Args)]
pub struct BenchViewerArgs {
    /// Slice switches timed per stack (the median is reported).
    #[arg(long, default_value_t = 8)]
    pub switches: usize,
    /// Frames timed per case.
    #[arg(long, default_value_t = 20)]
    pub frames: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a stack's shape, sample type, voxel size, slice count and size on disk.
    Info(InfoArgs),
    /// Write masks per class (binary TIFF stacks, PNG sequences, a label-map TIFF) from
    /// imported binary masks or label maps.
    Export(ExportArgs),
    /// Print the class table as JSON (edit it and pass it back with `--classes`).
    Classes(ClassesArgs),
    /// List the automatic sessions of stacks opened in the app (their folders work with
    /// `export --project` and `sam4em DIR`).
    Sessions(SessionsArgs),
    /// Benchmarks (`sam4em bench edit`, `sam4em bench model`, `sam4em bench viewer`).
    Bench(BenchArgs),
    /// Predict glia / mitochondria / PSD masks over a stack with SAM4EM (checkpoint + adapter
    /// set), streaming from seed slices; writes one binary TIFF per class.
    #[cfg(feature = "model")]
    Predict(learn::PredictArgs),
    /// Fine-tune SAM4EM (LoRA + fusion head + class heads) on image and label stacks; writes
    /// an adapter set. The paper's recipe by default (AdamW lr 5e-4, weight decay 0.01,
    /// BCE + Dice, batches of 8 consecutive slices).
    #[cfg(feature = "model")]
    Train(learn::TrainArgs),
    /// Score a predicted mask stack against ground truth: the paper's per-slice Dice/IoU
    /// (an empty slice scores 0) and volume Dice/IoU, as text or JSON.
    #[cfg(feature = "model")]
    Eval(learn::EvalArgs),
    /// Identify a SAM 2 / SAM4EM checkpoint (size, sha256, official or not) and check that it
    /// loads.
    #[cfg(feature = "model")]
    Checkpoint(model::CheckpointArgs),
}

/// `sam4em info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Stacks: multi-page TIFF/BigTIFF files, PNG files, or folders of PNG/TIFF slices.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `sam4em export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Output folder (created if missing). Existing outputs are replaced only when every
    /// output was written.
    #[arg(short, long)]
    pub out: PathBuf,
    /// A project folder (or an automatic session) of the app: its saved masks plus every
    /// journalled edit, with its class table.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["labels", "masks"])]
    pub project: Option<PathBuf>,
    /// A binary mask stack for one class, as CLASS=PATH (any non-zero pixel is foreground).
    /// Repeat for several classes.
    #[arg(long = "mask", value_name = "CLASS=PATH")]
    pub masks: Vec<String>,
    /// A label-map stack whose values stand for classes (see --map).
    #[arg(long, value_name = "PATH")]
    pub labels: Option<PathBuf>,
    /// Label value → class, e.g. `159=glia,191=mitochondria,223=psd`. Default: the
    /// `.classes.json` beside the label map, else value N = class id N.
    #[arg(long, value_name = "VALUE=CLASS,...", requires = "labels")]
    pub map: Option<String>,
    /// What to write; repeat or separate with commas.
    #[arg(short, long, value_enum, value_delimiter = ',', default_value = "tiff")]
    pub format: Vec<FormatArg>,
    /// TIFF compression.
    #[arg(long, value_enum, default_value = "deflate")]
    pub compression: CompressionArg,
    /// Class table JSON (from `sam4em classes`); default: glia, mitochondria, psd.
    #[arg(long, value_name = "FILE")]
    pub classes: Option<PathBuf>,
    /// The image stack the masks belong to: its shape must match, and its voxel size is
    /// recorded in the outputs (else the labels' or masks' own).
    #[arg(long, value_name = "PATH")]
    pub stack: Option<PathBuf>,
    /// Voxel size in nm as X,Y,Z (or X,Y): overrides what the files say.
    #[arg(long, value_name = "X,Y[,Z]")]
    pub voxel_size: Option<String>,
}

/// `sam4em sessions`.
#[derive(Debug, Args)]
pub struct SessionsArgs {
    /// Data folder (default: `$SAM4EM_DATA_DIR`, else the platform's, e.g.
    /// `~/.local/share/sam4em`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// `sam4em classes`.
#[derive(Debug, Args)]
pub struct ClassesArgs {
    /// Write to this file (atomically) instead of standard output.
    #[arg(short, long)]
    pub out: Option<PathBuf>,
}

/// Runs a subcommand. `None` is the bare `sam4em [PATH]`.
pub fn run(cli: Cli) -> Result<()> {
    if let Some(bytes) = cli.max_slice_gib {
        crate::io::options::set_default_max_slice_bytes(bytes);
    }
    match &cli.command {
        Some(Command::Info(a)) => info(a),
        Some(Command::Export(a)) => export(a),
        Some(Command::Classes(a)) => classes(a),
        Some(Command::Sessions(a)) => sessions(a),
        Some(Command::Bench(BenchArgs { what: BenchWhat::Edit(a) })) => {
            let report = crate::bench::edit::run(a.repeats)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", crate::bench::edit::describe(&report));
            }
            Ok(())
        }
        #[cfg(feature = "model")]
        Some(Command::Bench(BenchArgs { what: BenchWhat::Model(a) })) => model::bench(a),
        #[cfg(feature = "model")]
        Some(Command::Bench(BenchArgs { what: BenchWhat::Checkpoint(a) })) => model::random_checkpoint(a),
        #[cfg(feature = "model")]
        Some(Command::Bench(BenchArgs { what: BenchWhat::Ops(a) })) => model::bench_ops(a),
        #[cfg(feature = "gui")]
        Some(Command::Bench(BenchArgs { what: BenchWhat::Viewer(a) })) => bench_viewer(a),
        #[cfg(feature = "model")]
        Some(Command::Checkpoint(a)) => model::checkpoint(a),
        #[cfg(feature = "model")]
        Some(Command::Predict(a)) => learn::predict(a),
        #[cfg(feature = "model")]
        Some(Command::Train(a)) => learn::train_cmd(a),
        #[cfg(feature = "model")]
        Some(Command::Eval(a)) => learn::eval(a),
        None => bare(&cli),
    }
}

/// `sam4em [PATH]`: the desktop app, on PATH or the bundled sample.
#[cfg(feature = "gui")]
fn bare(cli: &Cli) -> Result<()> {
    use crate::app::{OpenRequest, launch};
    let request = match &cli.path {
        None if cli.labels.is_none() && cli.masks.is_empty() && cli.prediction.is_none() => None,
        None => bail!("--labels, --mask and --prediction need a stack to go with"),
        Some(path) => {
            // A stack named on the command line that cannot be opened is reported here, on one
            // line with exit code 2, not in an empty window (metadata only: this is quick). A
            // project folder is opened by the app (it may ask where its stack went).
            if !path.join(io::session::PROJECT_FILE).is_file() {
                io::open_stack(path, &OpenOptions { cache_budget_bytes: 0, ..Default::default() })?;
            }
            let mut masks = Vec::new();
            for spec in &cli.masks {
                let Some((class, p)) = spec.split_once('=') else { bail!("--mask `{spec}` is not CLASS=PATH") };
                masks.push((class.to_owned(), PathBuf::from(p)));
            }
            Some(OpenRequest {
                stack: path.clone(),
                labels: cli.labels.clone(),
                label_map: cli.map.clone(),
                masks,
                prediction: cli.prediction.clone(),
            })
        }
    };
    launch(request, cli.slice, cli.screenshot.clone())
}

/// `sam4em [PATH]` in a build without the `gui` feature: describes the stack instead.
#[cfg(not(feature = "gui"))]
fn bare(cli: &Cli) -> Result<()> {
    let path = cli.path.as_deref().unwrap_or(Path::new(crate::io::sample::SAMPLE_STACK));
    let v = io::open_stack(path, &OpenOptions::default())?;
    eprintln!("This build has no desktop app (feature `gui`); this is the stack it would open:");
    print!("{}", describe(v.info()));
    Ok(())
}

#[cfg(feature = "gui")]
fn bench_viewer(a: &BenchViewerArgs) -> Result<()> {
    let report = crate::bench::viewer::run(a.switches, a.frames)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", crate::bench::viewer::describe(&report));
    }
    Ok(())
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{v:.1} {} ({bytes} bytes)", UNITS[unit]) }
}

/// The text `sam4em info` prints for one stack.
pub fn describe(info: &VolumeInfo) -> String {
    let voxel = info.voxel_size.map_or_else(|| "unknown (not in the file)".to_owned(), |v| v.to_string());
    let decoded = info.slice_size_bytes() as u64 * info.depth as u64;
    format!(
        "{}\n  format:       {}\n  shape:        {} x {} x {} (z, y, x)\n  dtype:        {}\n  voxel size:   {}\n  slices:       {}\n  size on disk: {}\n  decoded:      {}\n",
        info.path.display(),
        info.format,
        info.depth,
        info.height,
        info.width,
        info.dtype,
        voxel,
        info.depth,
        human_bytes(info.size_on_disk_bytes),
        human_bytes(decoded),
    )
}

fn info(a: &InfoArgs) -> Result<()> {
    let mut json = Vec::new();
    for path in &a.paths {
        let v = io::open_stack(path, &OpenOptions::default())?;
        if a.json {
            json.push(serde_json::json!({
                "path": v.path(),
                "format": v.info().format,
                "shape_zyx": [v.depth(), v.height(), v.width()],
                "dtype": v.info().dtype,
                "voxel_size_nm": v.info().voxel_size,
                "slices": v.depth(),
                "size_on_disk_bytes": v.info().size_on_disk_bytes,
            }));
        } else {
            print!("{}", describe(v.info()));
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&json)?);
    }
    Ok(())
}

fn load_classes(path: Option<&Path>) -> Result<ClassTable> {
    let Some(path) = path else {
        return Ok(ClassTable::default());
    };
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read class table: {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("invalid class table: {}", path.display()))
}

/// Parses `X,Y[,Z]` in nm.
pub fn parse_voxel_size(spec: &str) -> Result<VoxelSize> {
    let parts: Vec<f64> = spec
        .split(',')
        .map(|p| p.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("`{spec}` is not X,Y[,Z] in nm"))?;
    if !(2..=3).contains(&parts.len()) || parts.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
        bail!("`{spec}` is not X,Y[,Z] with positive sizes in nm");
    }
    Ok(VoxelSize { x_nm: parts[0], y_nm: parts[1], z_nm: parts.get(2).copied() })
}

fn export(a: &ExportArgs) -> Result<()> {
    if let Some(dir) = &a.project {
        return export_project(a, dir);
    }
    let classes = load_classes(a.classes.as_deref())?;
    let opts = OpenOptions { cache_budget_bytes: 0, ..Default::default() };
    let mut inputs: Vec<(String, PathBuf)> = Vec::new();
    for spec in &a.masks {
        let Some((class, path)) = spec.split_once('=') else { bail!("--mask `{spec}` is not CLASS=PATH") };
        if classes.find(class).is_none() {
            let known: Vec<_> = classes.iter().map(|c| c.export_name.as_str()).collect();
            bail!("--mask `{spec}`: no class `{class}` (classes: {})", known.join(", "));
        }
        inputs.push((class.to_owned(), PathBuf::from(path)));
    }
    if inputs.is_empty() && a.labels.is_none() {
        bail!("nothing to export: give --labels PATH and/or --mask CLASS=PATH");
    }
    io::export::preflight(&classes, &a.out, &formats(&a.format))?;

    // The shape comes from the image stack when given, else from the first input.
    let shape_from: Volume = match (&a.stack, &a.labels, inputs.first()) {
        (Some(stack), _, _) => io::open_stack(stack, &opts)?,
        (None, Some(labels), _) => io::open_stack(labels, &opts)?,
        (None, None, Some((_, path))) => io::open_stack(path, &opts)?,
        (None, None, None) => unreachable!("checked above"),
    };
    let mut masks = MaskVolume::new(shape_from.width(), shape_from.height(), shape_from.depth());
    // Voxel size: --voxel-size, else the first input that records one (stack, labels, masks,
    // as each import reports it).
    let mut voxel_size = match &a.voxel_size {
        Some(spec) => Some(parse_voxel_size(spec)?),
        None => shape_from.info().voxel_size,
    };

    if let Some(labels) = &a.labels {
        let mapping = match &a.map {
            Some(spec) => io::parse_label_mapping(spec, &classes).map_err(|e| anyhow::anyhow!("--map: {e}"))?,
            None => match io::sidecar_mapping(labels, &classes)? {
                Some(m) => m,
                None => classes.iter().map(|c| (u64::from(c.id.0), c.id)).collect(),
            },
        };
        let report = io::import_label_map(labels, &mapping, &mut masks, &opts)?;
        voxel_size = voxel_size.or(report.voxel_size);
        if !report.unmapped_values.is_empty() {
            let values: Vec<String> = report
                .unmapped_values
                .iter()
                .take(12)
                .map(|(v, n)| if *v == u64::MAX { format!("non-integer ({n} px)") } else { format!("{v} ({n} px)") })
                .collect();
            eprintln!("note: label values not mapped to a class: {}", values.join(", "));
        }
    }
    for (class, path) in &inputs {
        let id = classes.find(class).expect("validated above").id;
        let report = io::import_binary_masks(path, id, &mut masks, &opts)?;
        voxel_size = voxel_size.or(report.voxel_size);
    }

    write_export(a, &masks, &classes, voxel_size, None)
}

/// `sam4em export --project DIR`: the project's masks as the app would show them.
fn export_project(a: &ExportArgs, dir: &Path) -> Result<()> {
    // Read-only: an export never rewrites the project (not even a damaged journal).
    let opened = io::session::Project::open_read_only(dir)?;
    let classes = match &a.classes {
        Some(path) => load_classes(Some(path))?,
        None => opened.project.classes().clone(),
    };
    if opened.recovery.lost_edits() {
        eprintln!("warning: {}: {}", dir.display(), opened.recovery);
    } else if opened.recovery.replayed_records > 0 || opened.recovery.torn_tail_dropped {
        eprintln!("note: {}", opened.recovery);
    }
    io::export::preflight(&classes, &a.out, &formats(&a.format))?;
    let voxel_size = match &a.voxel_size {
        Some(spec) => Some(parse_voxel_size(spec)?),
        None => opened
            .project
            .stack_path()
            .ok()
            .and_then(|p| io::open_stack(&p, &OpenOptions { cache_budget_bytes: 0, ..Default::default() }).ok())
            .and_then(|v| v.info().voxel_size),
    };
    let adapter = opened.project.model().adapter.as_ref().map(|p| p.display().to_string());
    write_export(a, &opened.masks, &classes, voxel_size, adapter)
}

/// Writes the export `a` asks for and reports it: foreground voxels per class, overlaps in
/// the label map, the files written.
fn write_export(
    a: &ExportArgs,
    masks: &MaskVolume,
    classes: &ClassTable,
    voxel_size: Option<VoxelSize>,
    adapter: Option<String>,
) -> Result<()> {
    let opts = ExportOptions { compression: a.compression.into(), voxel_size, adapter };
    let report = io::export_masks(masks, classes, &a.out, &formats(&a.format), &opts)?;
    for c in classes.iter() {
        let px: u64 = masks.slices(c.id).map(|(_, e)| e.mask.count_ones()).sum();
        println!("{:<24} {px} foreground voxels", c.name);
    }
    if report.overlapping_px > 0 {
        eprintln!(
            "note: {} label-map voxels belong to several classes; the class listed last wins",
            report.overlapping_px
        );
    }
    for out in &report.outputs {
        println!("wrote {}", out.display());
    }
    Ok(())
}

fn sessions(a: &SessionsArgs) -> Result<()> {
    let Some(data) = a.data_dir.clone().or_else(io::session::default_data_dir) else {
        bail!("no data folder: set SAM4EM_DATA_DIR or HOME, or pass --data-dir");
    };
    let dir = data.join("sessions");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("no sessions yet in {}", dir.display());
            return Ok(());
        }
        Err(e) => bail!("cannot list {}: {e}", dir.display()),
    };
    let mut rows: Vec<(u64, PathBuf, String)> = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.join(io::session::PROJECT_FILE).is_file() {
            continue;
        }
        match io::session::read_project_summary(&path) {
            Ok(f) => {
                let s = &f.stack;
                let what = format!("{} ({}x{}x{} {})", s.path.display(), s.width, s.height, s.depth, s.dtype);
                rows.push((f.saved_at_unix_s, path, what));
            }
            Err(e) => rows.push((0, path, format!("unreadable: {e}"))),
        }
    }
    rows.sort();
    for (_, path, what) in rows.iter().rev() {
        println!("{}\n    stack {what}", path.display());
    }
    Ok(())
}

fn classes(a: &ClassesArgs) -> Result<()> {
    let json = serde_json::to_string_pretty(&ClassTable::default())? + "\n";
    match &a.out {
        Some(path) => io::atomic::write_file_atomic(path, |w| {
            std::io::Write::write_all(w, json.as_bytes()).map_err(|e| e.to_string())
        })?,
        None => print!("{json}"),
    }
    Ok(())
}
