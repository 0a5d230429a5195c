//! Model subcommands of the CLI: `sam4em bench model` and `sam4em checkpoint`.

use std::path::{Path, PathBuf};
use std::process::Command as Process;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use clap::{Args, ValueEnum};

use crate::bench::{model as bench, ops as bench_ops};
use crate::model::checkpoints::{Verdict, identify};
use crate::model::device::{Precision, device_at};
use crate::model::{HieraSize, Init, Sam2Mapping, Sam4em, Sam4emConfig, StateDict};

/// Compute device choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceChoice {
    /// burn's pure-Rust CPU backend (Flex).
    Cpu,
    /// The default wgpu adapter, when it is a GPU; the CPU backend otherwise (see
    /// [`DeviceChoice::device`]).
    Wgpu,
}

impl DeviceChoice {
    /// The burn device. `Wgpu` is burn's default wgpu device (`model::device::model_gpu`).
    /// On a machine whose only wgpu adapter is a software renderer
    /// (lavapipe), or where no GPU device can be made, it gives the CPU backend with a note on
    /// stderr: lavapipe cuts long shader loops short, so the model's sums would be wrong there,
    /// and it is slower than the CPU backend.
    pub fn device(self) -> Device {
        use crate::model::device::{default_wgpu_adapter, is_software, model_gpu};
        match self {
            DeviceChoice::Cpu => Device::flex(),
            DeviceChoice::Wgpu => match default_wgpu_adapter() {
                Some(info) if is_software(&info) => {
                    eprintln!(
                        "note: the wgpu adapter here is {} ({}), a software renderer that cuts long shader loops \
                         short; running on the CPU backend instead (exact, and faster)",
                        info.name, info.driver
                    );
                    Device::flex()
                }
                _ => match model_gpu() {
                    Ok(gpu) => gpu.device.clone(),
                    Err(e) => {
                        eprintln!("note: no GPU device for the model ({e}); running on the CPU backend instead");
                        Device::flex()
                    }
                },
            },
        }
    }
}

/// The kernel-fusion optimizations turned off on a wgpu `device` (feature `fusion`), `None`
/// without fusion or on the CPU.
fn fusion_off(device: &Device) -> Option<Vec<String>> {
    #[cfg(feature = "fusion")]
    if !crate::model::device::is_cpu(device) {
        return crate::model::device::configure_fusion().ok();
    }
    let _ = device;
    None
}

/// "cpu" or "wgpu": what a run actually ran on (`--device wgpu` may have fallen back).
pub fn device_name(device: &Device) -> &'static str {
    if crate::model::device::is_cpu(device) { "cpu" } else { "wgpu" }
}

/// `--size`: a SAM 2 trunk size as the command line spells it (the model's [`HieraSize`]
/// knows nothing of the command line).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SizeArg {
    /// Hiera-T, 96 wide, 12 blocks.
    Tiny,
    /// Hiera-S, 96 wide, 16 blocks.
    Small,
    /// Hiera-B+, 112 wide, 24 blocks: the size SAM4EM uses.
    #[value(name = "base_plus", alias = "b+")]
    BasePlus,
    /// Hiera-L, 144 wide, 48 blocks.
    Large,
}

impl From<SizeArg> for HieraSize {
    fn from(size: SizeArg) -> Self {
        match size {
            SizeArg::Tiny => HieraSize::Tiny,
            SizeArg::Small => HieraSize::Small,
            SizeArg::BasePlus => HieraSize::BasePlus,
            SizeArg::Large => HieraSize::Large,
        }
    }
}

/// `sam4em bench model`.
#[derive(Debug, Args)]
pub struct BenchModelArgs {
    /// SAM 2 trunk size.
    #[arg(long, value_enum, default_value = "base_plus")]
    pub size: SizeArg,
    /// Compute device.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceChoice,
    /// Timed runs per figure and side (after one warm-up each); the median is reported.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// LoRA rank.
    #[arg(long, default_value_t = 100)]
    pub rank: usize,
    /// Input side in pixels [default: the model's, 512].
    #[arg(long)]
    pub image_size: Option<usize>,
    /// A checkout of the original SAM4EM code (the public Uzshah/SAM4EM repository): builds the
    /// same configuration with it, times it in PyTorch in the same run, figure by figure
    /// interleaved with ours, and prints the ratios.
    #[arg(long, value_name = "DIR")]
    pub reference: Option<PathBuf>,
    /// The Python that runs the reference (with torch and the packages
    /// `sam4em_torch_reference.py` lists).
    #[arg(long, default_value = "python3")]
    pub python: PathBuf,
    /// The reference tool that builds the original model [default:
    /// $SAM4EM_SHARED/tools/sam4em_torch_reference.py, SAM4EM_SHARED defaulting to ../shared].
    #[arg(long, value_name = "PY")]
    pub reference_tool: Option<PathBuf>,
    /// PyTorch device for the reference (`cpu`, `cuda`).
    #[arg(long, default_value = "cpu")]
    pub torch_device: String,
    /// Slices in the timed training step (0: no training figure).
    #[arg(long, default_value_t = 2)]
    pub train_slices: usize,
    /// Side of the square slice predicted at native resolution in tiles (scale 1, one class,
    /// as `sam4em predict --scale 1` does) for the tiles/s and slices/s figure; 0: none.
    #[arg(long, default_value_t = 4096, value_name = "PX")]
    pub tiled_px: usize,
    /// Slices of `--tiled-px` timed (once, not `--runs` times: a 4096² slice of B+ on a CPU
    /// takes minutes).
    #[arg(long, default_value_t = 1)]
    pub tiled_slices: usize,
    /// Activations in our training step: `auto` keeps them when the step fits in memory.
    #[arg(long, value_enum, default_value = "auto")]
    pub activations: super::learn::ActivationsArg,
    /// Numbers the inference figures compute with: `f32`, or `f16` on a GPU with 16-bit float
    /// shaders (f32 where f16 is not safe). The training step always computes in f32.
    #[arg(long, default_value = "f32", value_name = "f32|f16")]
    pub precision: Precision,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `sam4em bench checkpoint`.
#[derive(Debug, Args)]
pub struct BenchCheckpointArgs {
    /// SAM 2 trunk size.
    #[arg(long, value_enum, default_value = "base_plus")]
    pub size: SizeArg,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 2024)]
    pub seed: u64,
    /// Where to write it (`.safetensors`).
    #[arg(long, value_name = "SAFETENSORS")]
    pub out: PathBuf,
}

/// Runs `sam4em bench checkpoint`.
pub fn random_checkpoint(a: &BenchCheckpointArgs) -> Result<()> {
    let tensors = bench::random_sam2_checkpoint(HieraSize::from(a.size), a.seed);
    let values: usize = tensors.values().map(|t| t.data.len()).sum();
    let mut meta = std::collections::BTreeMap::new();
    meta.insert(
        "sam4em_note".to_string(),
        format!(
            "random weights for benchmarks (SAM 2 {} layout, seed {})",
            HieraSize::from(a.size).file_stem(),
            a.seed
        ),
    );
    StateDict::write_safetensors(&tensors, meta, &a.out)?;
    println!(
        "wrote {} ({} tensors, {values} values, random weights: for timing and memory runs only)",
        a.out.display(),
        tensors.len()
    );
    Ok(())
}

/// `sam4em checkpoint`.
#[derive(Debug, Args)]
pub struct CheckpointArgs {
    /// An official SAM 2 / SAM 2.1 `.pt` (or safetensors with its keys), or a SAM4EM trainer
    /// checkpoint.
    pub path: PathBuf,
}

/// One row of `bench model`: our median and, where the reference has the same figure, its
/// median and the ratio.
#[derive(Debug, serde::Serialize)]
struct FigureRow {
    figure: String,
    describe: String,
    ours_ms: f64,
    reference_ms: Option<f64>,
    ratio: Option<f64>,
}

impl FigureRow {
    fn new(figure: String, describe: String, ours: Vec<f64>, reference: Option<Vec<f64>>) -> Self {
        let ours_ms = crate::bench::median(ours);
        let reference_ms = reference.map(crate::bench::median);
        FigureRow { figure, describe, ours_ms, reference_ms, ratio: reference_ms.map(|r| ours_ms / r) }
    }
}

/// The reference's name for one of our figures (`None`: it has no such figure; the names are
/// those `tests/bench/model_torch.py` answers to).
fn reference_figure(figure: bench::Figure) -> Option<&'static str> {
    use bench::Figure::*;
    matches!(figure, TrunkNeck | Encoder | Full).then(|| figure.name())
}

/// The CPU's model name (Linux), for the report.
fn cpu_name() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_string())
}

/// Runs `sam4em bench model`.
pub fn bench(a: &BenchModelArgs) -> Result<()> {
    let mut config = Sam4emConfig::sam4em(HieraSize::from(a.size));
    config.lora.rank = a.rank;
    config.image_size = a.image_size.unwrap_or(config.image_size);
    config.validate()?;
    let device = a.device.device();
    let runs = a.runs.max(1);
    let mut reference = match &a.reference {
        Some(dir) => {
            let tool = match &a.reference_tool {
                Some(t) => t.clone(),
                None => {
                    let shared =
                        std::env::var_os("SAM4EM_SHARED").map_or_else(|| PathBuf::from("../shared"), PathBuf::from);
                    shared.join("tools/sam4em_torch_reference.py")
                }
            };
            if !tool.is_file() {
                bail!("the reference tool is missing (set --reference-tool or SAM4EM_SHARED): {}", tool.display());
            }
            if !dir.join("sam2").is_dir() {
                bail!("not a checkout of the original SAM4EM code (no sam2/ folder in it): {}", dir.display());
            }
            let args = [
                "--tool".into(),
                tool.into_os_string(),
                "--sam4em".into(),
                dir.clone().into_os_string(),
                "--device".into(),
                a.torch_device.clone().into(),
                "--config".into(),
                serde_json::to_string(&config)?.into(),
            ];
            Some(TorchChild::start(&a.python, MODEL_TORCH_PY, &args)?)
        }
        None => None,
    };
    let mut rows = Vec::new();

    // Training first, while neither side holds anything else, so that each peak is the step's.
    let mut training = serde_json::Value::Null;
    if a.train_slices > 0 {
        let n = a.train_slices;
        let mut ours = crate::bench::train::TrainBench::new(&config, &device, n, a.activations.choice())?;
        if !a.json {
            eprintln!("training step of {n} slices, memory: {}", ours.plan.summary());
        }
        crate::train::memory::reset_peak_rss();
        let request = serde_json::json!({ "figure": "train", "slices": n });
        ours.step_ms()?;
        if let Some(r) = reference.as_mut() {
            r.ask(&request)?;
        }
        let (mut ours_ms, mut reference_ms, mut reference_peak) = (Vec::new(), Vec::new(), None);
        for _ in 0..runs {
            ours_ms.push(ours.step_ms()?);
            if let Some(r) = reference.as_mut() {
                let reply = r.ask(&request)?;
                reference_ms.push(r.ms(&reply)?);
                reference_peak =
                    reply.get("peak_rss_gib").or_else(|| reply.get("peak_mem_gib")).and_then(|v| v.as_f64());
            }
        }
        let ours_peak_gib = crate::train::memory::rss().map(|(_, peak)| peak as f64 / f64::from(1u32 << 30));
        training = serde_json::json!({
            "slices": n,
            "activations": ours.plan.activations.name(),
            "ours_peak_rss_gib": ours_peak_gib,
            "reference_peak_gib": reference_peak,
        });
        let describe = format!("training step, {n} slices ({})", ours.plan.activations.name());
        rows.push(FigureRow::new(format!("train_{n}"), describe, ours_ms, reference.is_some().then_some(reference_ms)));
    }

    let inference_device = device_at(&device, a.precision)?;
    let tiled = if a.tiled_px > 0 && a.tiled_slices > 0 {
        if !a.json {
            eprintln!("predicting {} slice(s) of {}² at scale 1 in tiles…", a.tiled_slices, a.tiled_px);
        }
        Some(bench::tiled_slices(&config, &inference_device, a.tiled_px, a.tiled_slices)?)
    } else {
        None
    };
    let mut ours = bench::ModelBench::new(&config, &inference_device)?;
    if let Some(r) = reference.as_mut() {
        for name in bench::Figure::ALL.into_iter().filter_map(reference_figure) {
            r.ask(&serde_json::json!({ "figure": name }))?;
        }
    }
    let mut times: Vec<(Vec<f64>, Vec<f64>)> = vec![Default::default(); bench::Figure::ALL.len()];
    for _ in 0..runs {
        for (figure, (ours_ms, reference_ms)) in bench::Figure::ALL.into_iter().zip(&mut times) {
            ours_ms.push(ours.time_ms(figure)?);
            if let (Some(r), Some(name)) = (reference.as_mut(), reference_figure(figure)) {
                let reply = r.ask(&serde_json::json!({ "figure": name }))?;
                reference_ms.push(r.ms(&reply)?);
            }
        }
    }
    let model_rows = bench::Figure::ALL.into_iter().zip(times).map(|(figure, (ours_ms, reference_ms))| {
        let reference = (reference.is_some() && reference_figure(figure).is_some()).then_some(reference_ms);
        FigureRow::new(figure.name().to_string(), figure.describe().to_string(), ours_ms, reference)
    });
    let mut all: Vec<FigureRow> = model_rows.collect();
    all.extend(rows);
    let header = reference.as_ref().map(|r| r.header.clone());
    let adapter = (!crate::model::device::is_cpu(&device))
        .then(crate::model::device::model_gpu_made)
        .flatten()
        .and_then(Result::ok)
        .map(|gpu| {
            let info = gpu.adapter.get_info();
            format!("{}, {} {}", gpu.summary(), info.driver, info.driver_info)
        });
    let machine = serde_json::json!({
        "cpu": cpu_name(),
        "threads": std::thread::available_parallelism().map(usize::from).ok(),
        "adapter": adapter,
        // burn's kernel fusion on wgpu: `null` without the `fusion` feature, else the
        // optimizations turned off (`SAM4EM_FUSION_OFF`).
        "fusion_off": fusion_off(&device),
    });
    if a.json {
        let v = serde_json::json!({
            "size": HieraSize::from(a.size), "rank": a.rank, "image_size": ours.image_size(), "device": device_name(&device),
            "precision": a.precision, "runs": runs, "machine": machine, "reference": header, "figures": all, "training": training,
            "tiled": tiled,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    print!(
        "SAM4EM {} (LoRA r {}, merged for inference), {}², batch 1, {} inference, {} ({}), median of {runs} runs",
        HieraSize::from(a.size).file_stem(),
        a.rank,
        ours.image_size(),
        a.precision,
        adapter.as_deref().unwrap_or(device_name(&device)),
        cpu_name().unwrap_or_else(|| "unknown CPU".into()),
    );
    match &header {
        Some(h) => println!(
            ",\ninterleaved run by run with the original SAM4EM in PyTorch {} ({} threads, {}):",
            h["torch"].as_str().unwrap_or("?"),
            h["threads"],
            h["device"].as_str().unwrap_or("?")
        ),
        None => println!(":"),
    }
    println!("  {:<50} {:>10} {:>11} {:>6}", "per slice (training: per step)", "ours ms", "PyTorch ms", "ratio");
    for r in &all {
        let reference = r.reference_ms.map_or("—".to_string(), |t| format!("{t:.1}"));
        let ratio = r.ratio.map_or("—".to_string(), |x| format!("{x:.2}"));
        println!("  {:<50} {:>10.1} {:>11} {:>6}", r.describe, r.ours_ms, reference, ratio);
    }
    if let Some(t) = &tiled {
        println!(
            "  {}² slice at scale 1: {} tiles of {}², {:.2} tiles/s, {:.4} slices/s ({} slice(s) in {:.1} s)",
            t.slice_px,
            t.tiles_per_slice,
            ours.image_size(),
            t.tiles_per_s,
            t.slices_per_s,
            t.slices,
            t.seconds
        );
    }
    if let Some(peak) = training["ours_peak_rss_gib"].as_f64() {
        print!("  training peak RSS: ours {peak:.1} GiB");
        match training["reference_peak_gib"].as_f64() {
            Some(p) => println!(", PyTorch {p:.1} GiB"),
            None => println!(),
        }
    }
    Ok(())
}

/// `sam4em bench ops`.
#[derive(Debug, Args)]
pub struct BenchOpsArgs {
    /// Compute device for our side.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceChoice,
    /// Timed runs per case and side (after one warm-up each); the median is reported.
    #[arg(long, default_value_t = 7)]
    pub runs: usize,
    /// A Python with `torch`: times the same cases with PyTorch (tests/bench/ops_torch.py on
    /// the CPU), alternating with ours run by run, and prints the ratio of each.
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Only the cases whose name contains this.
    #[arg(long)]
    pub only: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// One case's result.
#[derive(Debug, serde::Serialize)]
struct OpRow {
    case: bench_ops::OpCase,
    ours_ms: f64,
    torch_ms: Option<f64>,
    ratio: Option<f64>,
}

/// The PyTorch side of `bench model`, compiled in and run with `python -c` so that a binary
/// copied to another machine (a lent GPU machine, see `tests/bench/gpu.sh`) needs no checkout.
const MODEL_TORCH_PY: TorchScript = ("tests/bench/model_torch.py", include_str!("../../tests/bench/model_torch.py"));
/// The PyTorch side of `bench ops`, compiled in for the same reason.
const OPS_TORCH_PY: TorchScript = ("tests/bench/ops_torch.py", include_str!("../../tests/bench/ops_torch.py"));
/// A Python script's name in the project (for messages) and its source.
type TorchScript = (&'static str, &'static str);

/// A Python benchmark child (`tests/bench/*_torch.py`): one JSON header line, then one JSON
/// reply line per request line, each reply one timed run.
struct TorchChild {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    header: serde_json::Value,
    /// The script's name, for messages.
    script: &'static str,
}

impl TorchChild {
    /// Runs `script` (see [`MODEL_TORCH_PY`]) with `args` under `py`.
    fn start(py: &Path, (script, source): TorchScript, args: &[std::ffi::OsString]) -> Result<Self> {
        let mut command = Process::new(py);
        // PyTorch's OpenMP threads otherwise keep spinning after each run, on the cores our
        // next run needs (measured: our linear layer 16 ms instead of 10 ms beside them, with
        // PyTorch's own time unchanged either way). A policy the caller set is kept.
        if std::env::var_os("OMP_WAIT_POLICY").is_none() {
            command.env("OMP_WAIT_POLICY", "PASSIVE");
        }
        let mut child = command
            .arg("-c")
            .arg(source)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {}", py.display()))?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout = std::io::BufReader::new(child.stdout.take().context("no stdout")?);
        let mut torch = TorchChild { child, stdin, stdout, header: serde_json::Value::Null, script };
        torch.header = torch.read()?;
        Ok(torch)
    }

    fn read(&mut self) -> Result<serde_json::Value> {
        use std::io::BufRead;
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("the PyTorch side stopped (its error is above): {}", self.script);
        }
        serde_json::from_str(line.trim())
            .with_context(|| format!("unexpected output from {}: {}", self.script, line.trim()))
    }

    /// Sends one request and returns its reply.
    fn ask(&mut self, request: &serde_json::Value) -> Result<serde_json::Value> {
        use std::io::Write;
        writeln!(self.stdin, "{request}")?;
        self.stdin.flush()?;
        self.read()
    }

    /// The time in a reply.
    fn ms(&self, reply: &serde_json::Value) -> Result<f64> {
        reply["ms"].as_f64().with_context(|| format!("no time in {reply} from {}", self.script))
    }

    fn time_op(&mut self, case: &bench_ops::OpCase) -> Result<f64> {
        let mut request = serde_json::to_value(case.op)?;
        request["backward"] = case.backward.into();
        let reply = self.ask(&request)?;
        self.ms(&reply)
    }
}

impl Drop for TorchChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `sam4em bench ops`.
pub fn bench_ops(a: &BenchOpsArgs) -> Result<()> {
    let device = a.device.device();
    let mut torch = a.python.as_deref().map(|py| TorchChild::start(py, OPS_TORCH_PY, &[])).transpose()?;
    let cases: Vec<_> =
        bench_ops::cases().into_iter().filter(|c| a.only.as_deref().is_none_or(|only| c.name.contains(only))).collect();
    let runs = a.runs.max(1);
    let mut rows = Vec::with_capacity(cases.len());
    for case in cases {
        let ours = bench_ops::Prepared::new(&case, &device);
        ours.time_ms()?;
        if let Some(t) = torch.as_mut() {
            t.time_op(&case)?;
        }
        let (mut ours_ms, mut torch_ms) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
        for _ in 0..runs {
            ours_ms.push(ours.time_ms()?);
            if let Some(t) = torch.as_mut() {
                torch_ms.push(t.time_op(&case)?);
            }
        }
        let ours_ms = crate::bench::median(ours_ms);
        let torch_ms = torch.is_some().then(|| crate::bench::median(torch_ms));
        rows.push(OpRow { case, ours_ms, torch_ms, ratio: torch_ms.map(|t| ours_ms / t) });
    }
    let torch_header = torch.as_ref().map(|t| t.header.clone());
    if a.json {
        let v =
            serde_json::json!({ "device": device_name(&device), "runs": runs, "torch": torch_header, "cases": rows });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    print!("SAM4EM-B+ kernels at 512², {}, median of {runs} runs", device_name(&device));
    match &torch_header {
        Some(h) => println!(
            ", interleaved with PyTorch {} ({} threads, CPU):",
            h["torch"].as_str().unwrap_or("?"),
            h["threads"]
        ),
        None => println!(":"),
    }
    println!("  {:<32} {:<9} {:>10} {:>10} {:>7}", "case", "pass", "ours ms", "torch ms", "ratio");
    for r in &rows {
        let pass = if r.case.backward { "fwd+bwd" } else { "forward" };
        let torch = r.torch_ms.map_or("—".to_string(), |t| format!("{t:.2}"));
        let ratio = r.ratio.map_or("—".to_string(), |x| format!("{x:.2}"));
        println!("  {:<32} {:<9} {:>10.2} {:>10} {:>7}", r.case.name, pass, r.ours_ms, torch, ratio);
    }
    Ok(())
}

/// Runs `sam4em checkpoint PATH`: identifies the file, finds its trunk size and checks that
/// every tensor maps into the model.
pub fn checkpoint(args: &CheckpointArgs) -> Result<()> {
    let id = identify(&args.path).with_context(|| format!("cannot read checkpoint: {}", args.path.display()))?;
    println!("file      {}", args.path.display());
    println!("bytes     {}", id.bytes);
    println!("sha256    {}", id.sha256);
    match (&id.verdict, id.official) {
        (Verdict::Verified, Some(n)) => println!("official  {n} (size and sha256 verified)"),
        (Verdict::PartiallyVerified, Some(n)) => {
            println!("official  {n} (size and the recorded part of the sha256 agree)")
        }
        (Verdict::HashMismatch { expected }, Some(n)) => {
            println!("warning   same size as {n} but sha256 differs from the published {expected}")
        }
        _ => println!("official  no (not one of the published SAM 2 files)"),
    }
    let dict = StateDict::read(&args.path)?;
    let trainer = dict.tensors.keys().all(|k| k.starts_with("sam.") || k.starts_with("module.sam."));
    let width = |k: &str| dict.tensors.get(k).map(|t| t.shape[0]);
    let prefix = if trainer { "sam.image_encoder.trunk." } else { "image_encoder.trunk." };
    let embed = width(&format!("{prefix}patch_embed.proj.weight")).context("no Hiera trunk in the file")?;
    let blocks = dict
        .tensors
        .keys()
        .filter(|k| k.starts_with(&format!("{prefix}blocks.")) && k.ends_with(".norm1.weight"))
        .count();
    let size = HieraSize::ALL
        .into_iter()
        .find(|s| {
            let h = s.hiera();
            h.embed_dim == embed && h.stages.iter().sum::<usize>() == blocks
        })
        .with_context(|| {
            format!("trunk of width {embed} with {blocks} blocks is not a SAM 2 size: {}", args.path.display())
        })?;
    println!("trunk     Hiera {} ({} blocks, width {embed})", size.file_stem(), blocks);
    let mut config = Sam4emConfig::sam4em(size);
    if trainer {
        let rank = dict.tensors.iter().find(|(k, _)| k.ends_with("linear_a_q.weight")).map(|(_, t)| t.shape[0]);
        config.lora.rank = rank.unwrap_or(config.lora.rank);
        let mut model = Sam4em::new(&config, &Init::shapes_only(&Device::flex()));
        let report = model.load_sam4em_state(&dict.declared_only())?;
        println!("SAM4EM    trainer checkpoint, LoRA rank {}, {} tensors", config.lora.rank, report.loaded.len());
    } else {
        let mut model = Sam4em::new(&config, &Init::shapes_only(&Device::flex()));
        let report = model.load_sam2_state(&dict.declared_only(), Sam2Mapping::BothStages)?;
        println!(
            "SAM 2     {} tensors map into SAM4EM, {} are SAM 2's video/other heads and are not used",
            report.loaded.values().collect::<std::collections::BTreeSet<_>>().len(),
            report.ignored.len()
        );
    }
    Ok(())
}
