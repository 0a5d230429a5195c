//! Memory before a training run: what the run will need (`model::footprint`), what the machine
//! can give it, and the decision — keep every activation, recompute them block by block, or
//! refuse with one sentence that names the numbers, before anything starts.
//!
//! On the CPU the memory available is the kernel's `MemAvailable` (RAM that can be had without
//! swapping), capped by the process's cgroup limit when one is set (containers, systemd
//! slices): the out-of-memory killer acts on whichever is smaller. On a GPU it is what the
//! driver says this process may still allocate (Vulkan's memory budget, read through wgpu's
//! instance: `model::device::gpu_memory`), else the size of its device-local heap; where the
//! driver cannot be asked (Metal, DX12) a 16 GiB card is assumed, so that a large run
//! recomputes rather than failing half-way on a smaller card. `SAM4EM_GPU_MEMORY_GIB`
//! overrides all of these (a GPU shared with other jobs).

use std::path::Path;

use serde::Serialize;

use crate::model::backprop::Activations;
use crate::model::device::GpuMemory;
use crate::model::footprint::TrainingFootprint;

/// How the caller wants activations handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ActivationsChoice {
    /// Keep them when the run fits that way, else recompute (the default).
    Auto,
    /// Always keep (refuse when that does not fit).
    Keep,
    /// Always recompute.
    Recompute,
}

/// Memory a run may use, and where the figure comes from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Available {
    /// Bytes.
    pub bytes: u64,
    /// What it is, in words ("free RAM", "GPU memory (SAM4EM_GPU_MEMORY_GIB)", "the budget you set").
    pub what: String,
}

/// A run that fits: how it computes gradients and what it is expected to need.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MemoryPlan {
    /// Keep or recompute.
    pub activations: Activations,
    /// The estimate for both ways.
    pub footprint: TrainingFootprint,
    /// Bytes the chosen way is expected to need (the model's weights included when the caller
    /// had not loaded it yet).
    pub needed_bytes: u64,
    /// What was available (`None`: unknown, nothing was checked).
    pub available: Option<Available>,
    /// Slices per batch.
    pub batch: usize,
}

impl MemoryPlan {
    /// One line for a log or a panel: "recomputing activations: about 6.1 GiB of 21.3 GiB free RAM".
    pub fn summary(&self) -> String {
        let way = match self.activations {
            Activations::Keep => "keeping activations",
            Activations::Recompute => "recomputing activations block by block",
        };
        match &self.available {
            Some(a) => format!("{way}: about {} of {} {}", gib(self.needed_bytes), gib(a.bytes), a.what),
            None => format!("{way}: about {}", gib(self.needed_bytes)),
        }
    }
}

/// Why a run was refused; its text is the one sentence the user sees.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{sentence}")]
pub struct DoesNotFit {
    /// The sentence, naming the numbers.
    pub sentence: String,
    /// The largest batch that would fit with recomputation, if any.
    pub batch_that_fits: Option<usize>,
}

/// Headroom left for everything else the process and the machine do while training (the
/// estimate is within ±15 % of measured peaks; `tests/train_memory.rs`).
pub const HEADROOM: f64 = 0.85;

/// The GPU memory assumed when the driver cannot be asked and `SAM4EM_GPU_MEMORY_GIB` is not
/// set: a 16 GiB card (a run may use [`HEADROOM`] of it).
pub const GPU_MEMORY_ASSUMED_BYTES: u64 = 16 << 30;

/// What a run on `device` may use: free RAM on the CPU; on a GPU see [`gpu_available`].
pub fn available_for(device: &burn::tensor::Device) -> Option<Available> {
    if crate::model::device::is_cpu(device) {
        return available_ram();
    }
    let env = std::env::var("SAM4EM_GPU_MEMORY_GIB").ok();
    Some(gpu_available(env.as_deref(), crate::model::device::gpu_memory(device)))
}

/// What a run on a GPU may use, in order: `SAM4EM_GPU_MEMORY_GIB` (`env`, a positive number
/// of GiB), the driver's free budget for this process, the size of the GPU's device-local
/// memory when the driver reports no budget, or [`GPU_MEMORY_ASSUMED_BYTES`]. The wording
/// says which.
pub fn gpu_available(env: Option<&str>, memory: Option<GpuMemory>) -> Available {
    if let Some(gib) = env.and_then(|v| v.trim().parse::<f64>().ok()).filter(|g| *g > 0.0 && g.is_finite()) {
        return Available {
            bytes: (gib * f64::from(1u32 << 30)) as u64,
            what: "GPU memory (SAM4EM_GPU_MEMORY_GIB)".into(),
        };
    }
    match memory {
        Some(GpuMemory { adapter, free_bytes: Some(free), heap_bytes }) => {
            Available { bytes: free, what: format!("free memory of the {adapter} (of {})", gib(heap_bytes)) }
        }
        Some(GpuMemory { adapter, free_bytes: None, heap_bytes }) => Available {
            bytes: heap_bytes,
            what: format!("memory of the {adapter} (its driver does not say how much is free)"),
        },
        None => Available {
            bytes: GPU_MEMORY_ASSUMED_BYTES,
            what: "GPU memory assumed (the driver does not report it; set SAM4EM_GPU_MEMORY_GIB)".into(),
        },
    }
}

/// `bytes` as "6.1 GiB" (or MiB below one GiB).
pub fn gib(bytes: u64) -> String {
    let g = bytes as f64 / f64::from(1u32 << 30);
    if g >= 1.0 { format!("{g:.1} GiB") } else { format!("{:.0} MiB", bytes as f64 / f64::from(1u32 << 20)) }
}

/// Decides how a run computes gradients, or refuses it. `weights_loaded`: the model is already
/// in memory (the CLI), so its weights are not counted again; `estimate` gives the footprint
/// for a batch size (used to suggest one that fits).
pub fn plan(
    choice: ActivationsChoice,
    batch: usize,
    weights_loaded: bool,
    available: Option<Available>,
    estimate: &dyn Fn(usize) -> TrainingFootprint,
) -> Result<MemoryPlan, DoesNotFit> {
    let footprint = estimate(batch);
    let extra = if weights_loaded { 0 } else { footprint.weights_bytes };
    let need = |recompute: bool| footprint.bytes(recompute) + extra;
    let made = |activations: Activations, available: Option<Available>| MemoryPlan {
        activations,
        footprint,
        needed_bytes: need(activations == Activations::Recompute),
        available,
        batch,
    };
    let Some(avail) = available else {
        let activations = match choice {
            ActivationsChoice::Keep => Activations::Keep,
            ActivationsChoice::Recompute => Activations::Recompute,
            ActivationsChoice::Auto => Activations::Keep,
        };
        return Ok(made(activations, None));
    };
    let fits = |bytes: u64| bytes as f64 <= HEADROOM * avail.bytes as f64;
    let activations = match choice {
        ActivationsChoice::Keep if fits(need(false)) => Some(Activations::Keep),
        ActivationsChoice::Auto if fits(need(false)) => Some(Activations::Keep),
        ActivationsChoice::Auto | ActivationsChoice::Recompute if fits(need(true)) => Some(Activations::Recompute),
        _ => None,
    };
    if let Some(a) = activations {
        return Ok(made(a, Some(avail)));
    }
    // A smaller batch the same way (recomputing, unless keeping was asked for).
    let recompute = choice != ActivationsChoice::Keep;
    let bytes_at = |b: usize| {
        let f = estimate(b);
        f.bytes(recompute) + if weights_loaded { 0 } else { f.weights_bytes }
    };
    let batch_that_fits = (1..batch).rev().find(|&b| fits(bytes_at(b)));
    let way = if recompute {
        format!("about {} even with recomputation ({} without)", gib(need(true)), gib(need(false)))
    } else {
        format!("about {} with every activation kept", gib(need(false)))
    };
    let suggestion = match batch_that_fits {
        _ if !recompute && fits(need(true)) => {
            format!("; recomputing activations instead would need about {}", gib(need(true)))
        }
        Some(b) => format!(
            "; free memory by closing other programs, or train {b} slice{} per batch (about {})",
            if b == 1 { "" } else { "s" },
            gib(bytes_at(b))
        ),
        None => "; free memory by closing other programs, or use a smaller model".to_string(),
    };
    Err(DoesNotFit {
        sentence: format!(
            "Training {batch} slice{} per batch needs {way}, but only {} of {} is available{suggestion}.",
            if batch == 1 { "" } else { "s" },
            gib(avail.bytes),
            avail.what,
        ),
        batch_that_fits,
    })
}

/// Memory the CPU can give a new run: `MemAvailable`, capped by the cgroup's remaining limit.
/// `None` where the system does not say (not Linux).
pub fn available_ram() -> Option<Available> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let available = meminfo_kib(&meminfo, "MemAvailable:")? * 1024;
    let bytes = match cgroup_headroom(Path::new("/sys/fs/cgroup"), Path::new("/proc/self/cgroup")) {
        Some(h) if h < available => {
            return Some(Available { bytes: h, what: "the memory limit of this process's cgroup".into() });
        }
        _ => available,
    };
    Some(Available { bytes, what: "free RAM".into() })
}

fn meminfo_kib(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Limit minus usage of the process's cgroup (v2 `memory.max`/`memory.current`, v1
/// `memory.limit_in_bytes`/`memory.usage_in_bytes`), when a limit is set.
fn cgroup_headroom(root: &Path, self_cgroup: &Path) -> Option<u64> {
    let membership = std::fs::read_to_string(self_cgroup).ok()?;
    let read = |p: std::path::PathBuf| -> Option<u64> { std::fs::read_to_string(p).ok()?.trim().parse().ok() };
    for line in membership.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let rel = path.trim_start_matches('/');
        let (limit, usage) = if controllers.is_empty() {
            let dir = root.join(rel);
            (read(dir.join("memory.max")), read(dir.join("memory.current")))
        } else if controllers.split(',').any(|c| c == "memory") {
            let dir = root.join("memory").join(rel);
            (read(dir.join("memory.limit_in_bytes")), read(dir.join("memory.usage_in_bytes")))
        } else {
            continue;
        };
        // "max" does not parse (no limit); v1 writes a huge number for none.
        if let (Some(limit), Some(usage)) = (limit, usage)
            && limit < 1 << 60
        {
            return Some(limit.saturating_sub(usage));
        }
    }
    None
}

/// The process's resident memory now and its peak since start (or the last [`reset_peak_rss`]),
/// in bytes; `None` where `/proc` does not say.
pub fn rss() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    Some((meminfo_kib(&status, "VmRSS:")? * 1024, meminfo_kib(&status, "VmHWM:")? * 1024))
}

/// Starts a new peak for [`rss`] (Linux: writing 5 to `/proc/self/clear_refs`); false where
/// that is not possible.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(batch: usize) -> TrainingFootprint {
        TrainingFootprint {
            keep_bytes: batch as u64 * (4 << 30),
            recompute_bytes: (1 << 30) + batch as u64 * (512 << 20),
            weights_bytes: 300 << 20,
        }
    }

    fn ram(gib: u64) -> Option<Available> {
        Some(Available { bytes: gib << 30, what: "free RAM".into() })
    }

    #[test]
    fn keeps_when_it_fits_recomputes_when_not_and_refuses_with_the_numbers() {
        let p = plan(ActivationsChoice::Auto, 2, true, ram(20), &fake).unwrap();
        assert_eq!(p.activations, Activations::Keep);
        let p = plan(ActivationsChoice::Auto, 8, true, ram(20), &fake).unwrap();
        assert_eq!(p.activations, Activations::Recompute);
        assert_eq!(p.needed_bytes, fake(8).recompute_bytes);
        let e = plan(ActivationsChoice::Auto, 8, false, ram(4), &fake).unwrap_err();
        assert_eq!(e.batch_that_fits, Some(4));
        assert_eq!(
            e.sentence,
            "Training 8 slices per batch needs about 5.3 GiB even with recomputation (32.3 GiB without), but only \
             4.0 GiB of free RAM is available; free memory by closing other programs, or train 4 slices per batch \
             (about 3.3 GiB)."
        );
        let e = plan(ActivationsChoice::Keep, 8, true, ram(20), &fake).unwrap_err();
        assert_eq!(
            e.sentence,
            "Training 8 slices per batch needs about 32.0 GiB with every activation kept, but only 20.0 GiB of \
             free RAM is available; recomputing activations instead would need about 5.0 GiB."
        );
        let e = plan(ActivationsChoice::Keep, 8, true, ram(4), &fake).unwrap_err();
        assert_eq!(e.batch_that_fits, None, "keeping even one slice needs 4 GiB");
        // Unknown memory: nothing to check, the choice stands.
        assert_eq!(
            plan(ActivationsChoice::Recompute, 8, true, None, &fake).unwrap().activations,
            Activations::Recompute
        );
    }

    #[test]
    fn cgroup_limits_are_read_for_both_versions() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("app.slice")).unwrap();
        std::fs::write(root.join("app.slice/memory.max"), "8589934592\n").unwrap();
        std::fs::write(root.join("app.slice/memory.current"), "1073741824\n").unwrap();
        std::fs::write(root.join("self"), "0::/app.slice\n").unwrap();
        assert_eq!(cgroup_headroom(root, &root.join("self")), Some(7 << 30));
        std::fs::write(root.join("app.slice/memory.max"), "max\n").unwrap();
        assert_eq!(cgroup_headroom(root, &root.join("self")), None);
        std::fs::create_dir_all(root.join("memory/box")).unwrap();
        std::fs::write(root.join("memory/box/memory.limit_in_bytes"), "4294967296\n").unwrap();
        std::fs::write(root.join("memory/box/memory.usage_in_bytes"), "1073741824\n").unwrap();
        std::fs::write(root.join("self1"), "4:memory:/box\n0::/\n").unwrap();
        assert_eq!(cgroup_headroom(root, &root.join("self1")), Some(3 << 30));
    }

    #[test]
    fn this_machine_reports_its_memory() {
        if cfg!(target_os = "linux") {
            let a = available_ram().expect("Linux has /proc/meminfo");
            assert!(a.bytes > 0);
            let (now, peak) = rss().expect("Linux has /proc/self/status");
            assert!(now > 0 && peak >= now);
        }
    }

    #[test]
    fn gpu_memory_comes_from_the_override_then_the_budget_then_the_heap() {
        let card = |free| GpuMemory { adapter: "Radeon Test".into(), heap_bytes: 12 << 30, free_bytes: free };
        // The override wins over what the driver says; nonsense in it is ignored.
        let a = gpu_available(Some(" 6 "), Some(card(Some(10 << 30))));
        assert_eq!((a.bytes, a.what.as_str()), (6 << 30, "GPU memory (SAM4EM_GPU_MEMORY_GIB)"));
        for bad in ["", "lots", "-2", "0", "NaN", "inf"] {
            assert_eq!(gpu_available(Some(bad), Some(card(Some(10 << 30)))).bytes, 10 << 30, "{bad:?}");
        }
        // The driver's budget, then the heap's size, then the assumption, each said so.
        let a = gpu_available(None, Some(card(Some(10 << 30))));
        assert_eq!(a.bytes, 10 << 30);
        assert_eq!(a.what, "free memory of the Radeon Test (of 12.0 GiB)");
        let a = gpu_available(None, Some(card(None)));
        assert_eq!(a.bytes, 12 << 30);
        assert!(a.what.contains("Radeon Test") && a.what.contains("does not say how much is free"), "{}", a.what);
        let a = gpu_available(None, None);
        assert_eq!(a.bytes, GPU_MEMORY_ASSUMED_BYTES);
        assert!(a.what.contains("assumed"), "{}", a.what);
        // A small card's budget refuses the paper's batch with every activation kept and
        // recomputes instead.
        let p = plan(ActivationsChoice::Auto, 8, false, Some(gpu_available(None, Some(card(Some(8 << 30))))), &fake)
            .unwrap();
        assert_eq!(p.activations, Activations::Recompute);
        assert!(p.summary().contains("free memory of the Radeon Test"), "{}", p.summary());
    }
}
