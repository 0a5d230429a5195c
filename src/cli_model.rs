//! Model subcommands of the CLI: `sam4em bench model` and `sam4em checkpoint`.

use std::path::{Path, PathBuf};
use std::process::Command as Process;

use anyhow::{Context, Result, bail};
use burn::tensor::{Device, DeviceKind};
use clap::{Args, ValueEnum};

use crate::model::checkpoints::{Verdict, identify};
use crate::model::{HieraSize, Init, Sam2Mapping, Sam4em, Sam4emConfig, StateDict, bench, bench_ops};

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
    /// The burn device. `Wgpu` on a machine whose only wgpu adapter is a software renderer
    /// (lavapipe) gives the CPU backend, with a note on stderr: lavapipe cuts long shader loops
    /// short, so the model's sums would be wrong there, and it is slower than the CPU backend.
    pub fn device(self) -> Device {
        match self {
            DeviceChoice::Cpu => Device::flex(),
            DeviceChoice::Wgpu => match crate::model::device::default_wgpu_adapter() {
                Some(info) if crate::model::device::is_software(&info) => {
                    eprintln!(
                        "note: the wgpu adapter here is {} ({}), a software renderer that cuts long shader loops \
                         short; running on the CPU backend instead (exact, and faster)",
                        info.name, info.driver
                    );
                    Device::flex()
                }
                _ => Device::wgpu(DeviceKind::DefaultDevice),
            },
        }
    }
}

/// "cpu" or "wgpu": what a run actually ran on (`--device wgpu` may have fallen back).
pub fn device_name(device: &Device) -> &'static str {
    if crate::model::device::is_cpu(device) { "cpu" } else { "wgpu" }
}

/// `sam4em bench model`.
#[derive(Debug, Args)]
pub struct BenchModelArgs {
    /// SAM 2 trunk size.
    #[arg(long, value_enum, default_value = "base_plus")]
    pub size: HieraSize,
    /// Compute device.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceChoice,
    /// Timed slices (after one warm-up); the median is reported.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// LoRA rank.
    #[arg(long, default_value_t = 100)]
    pub rank: usize,
    /// A Python with `torch` and `sam2` installed: times the official image encoder in the same
    /// run (tests/bench/sam2_image_encoder.py) and prints the ratio.
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// PyTorch device for the Python side (`cpu`, `cuda`).
    #[arg(long, default_value = "cpu")]
    pub torch_device: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `sam4em bench checkpoint`.
#[derive(Debug, Args)]
pub struct BenchCheckpointArgs {
    /// SAM 2 trunk size.
    #[arg(long, value_enum, default_value = "base_plus")]
    pub size: HieraSize,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 2024)]
    pub seed: u64,
    /// Where to write it (`.safetensors`).
    #[arg(long, value_name = "SAFETENSORS")]
    pub out: PathBuf,
}

/// Runs `sam4em bench checkpoint`.
pub fn random_checkpoint(a: &BenchCheckpointArgs) -> Result<()> {
    let tensors = bench::random_sam2_checkpoint(a.size, a.seed);
    let values: usize = tensors.values().map(|t| t.data.len()).sum();
    let mut meta = std::collections::BTreeMap::new();
    meta.insert(
        "sam4em_note".to_string(),
        format!("random weights for benchmarks (SAM 2 {} layout, seed {})", a.size.file_stem(), a.seed),
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

/// Runs `sam4em bench model`.
pub fn bench(a: &BenchModelArgs) -> Result<()> {
    let mut config = Sam4emConfig::sam4em(a.size);
    config.lora.rank = a.rank;
    let device = a.device.device();
    let ours = bench::time_model(&config, &device, a.runs)?;
    let reference = match &a.python {
        Some(py) => Some(time_python(py, a)?),
        None => None,
    };
    if a.json {
        let v = serde_json::json!({ "size": a.size, "device": device_name(&device), "ours": ours, "sam2_pytorch": reference });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "SAM4EM {} (LoRA r {}, merged), {}², batch 1, {}, median of {} runs:",
        a.size.file_stem(),
        a.rank,
        ours.image_size,
        device_name(&device),
        ours.runs
    );
    println!("  trunk + neck (= SAM 2's encoder) {:9.1} ms/slice", ours.trunk_neck_ms);
    println!("  encoder (trunk + neck + fusion)  {:9.1} ms/slice", ours.encoder_ms);
    println!("  decode (memory + 2 decoders)     {:9.1} ms/slice", ours.decode_ms);
    println!("  full stream step                 {:9.1} ms/slice", ours.full_ms);
    if let Some(r) = reference {
        let ms = r["encoder_ms"].as_f64().unwrap_or(f64::NAN);
        println!(
            "  official sam2 image encoder (PyTorch {}, {} threads, {}) {:9.1} ms/slice",
            r["torch"].as_str().unwrap_or("?"),
            r["threads"],
            a.torch_device,
            ms
        );
        println!("  ratio ours/PyTorch, trunk + neck: {:.2}", ours.trunk_neck_ms / ms);
    }
    Ok(())
}

fn time_python(py: &Path, a: &BenchModelArgs) -> Result<serde_json::Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bench/sam2_image_encoder.py");
    let out = Process::new(py)
        .arg(&script)
        .args(["--size", a.size.file_stem(), "--runs", &a.runs.to_string(), "--device", &a.torch_device])
        .output()
        .with_context(|| format!("cannot run {}", py.display()))?;
    if !out.status.success() {
        bail!("the PyTorch benchmark failed: {}: {}", String::from_utf8_lossy(&out.stderr).trim(), script.display());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default();
    serde_json::from_str(last).with_context(|| format!("unexpected output from {}: {last}", script.display()))
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

/// The PyTorch side of `bench ops`: one Python process answering one timed run per request.
struct TorchOps {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    header: serde_json::Value,
    script: PathBuf,
}

impl TorchOps {
    fn start(py: &Path) -> Result<Self> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bench/ops_torch.py");
        let mut command = Process::new(py);
        // PyTorch's OpenMP threads otherwise keep spinning after each run, on the cores our
        // next run needs (measured: our linear layer 16 ms instead of 10 ms beside them, with
        // PyTorch's own time unchanged either way). A policy the caller set is kept.
        if std::env::var_os("OMP_WAIT_POLICY").is_none() {
            command.env("OMP_WAIT_POLICY", "PASSIVE");
        }
        let mut child = command
            .arg(&script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {}", py.display()))?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout = std::io::BufReader::new(child.stdout.take().context("no stdout")?);
        let mut torch = TorchOps { child, stdin, stdout, header: serde_json::Value::Null, script };
        torch.header = torch.read()?;
        Ok(torch)
    }

    fn read(&mut self) -> Result<serde_json::Value> {
        use std::io::BufRead;
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("the PyTorch side stopped (its error is above): {}", self.script.display());
        }
        serde_json::from_str(line.trim())
            .with_context(|| format!("unexpected output from {}: {}", self.script.display(), line.trim()))
    }

    fn time_ms(&mut self, case: &bench_ops::OpCase) -> Result<f64> {
        use std::io::Write;
        let mut request = serde_json::to_value(case.op)?;
        request["backward"] = case.backward.into();
        writeln!(self.stdin, "{request}")?;
        self.stdin.flush()?;
        let reply = self.read()?;
        reply["ms"].as_f64().with_context(|| format!("no time in {reply} from {}", self.script.display()))
    }
}

impl Drop for TorchOps {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `sam4em bench ops`.
pub fn bench_ops(a: &BenchOpsArgs) -> Result<()> {
    let device = a.device.device();
    let mut torch = a.python.as_deref().map(TorchOps::start).transpose()?;
    let cases: Vec<_> =
        bench_ops::cases().into_iter().filter(|c| a.only.as_deref().is_none_or(|only| c.name.contains(only))).collect();
    let runs = a.runs.max(1);
    let mut rows = Vec::with_capacity(cases.len());
    for case in cases {
        let ours = bench_ops::Prepared::new(&case, &device);
        ours.time_ms()?;
        if let Some(t) = torch.as_mut() {
            t.time_ms(&case)?;
        }
        let (mut ours_ms, mut torch_ms) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
        for _ in 0..runs {
            ours_ms.push(ours.time_ms()?);
            if let Some(t) = torch.as_mut() {
                torch_ms.push(t.time_ms(&case)?);
            }
        }
        let ours_ms = bench::median(ours_ms);
        let torch_ms = torch.is_some().then(|| bench::median(torch_ms));
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
