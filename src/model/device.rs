//! The GPU the model computes on, created the way burn's runtime (cubecl) wants it, and handed
//! to the display so that the UI draws with the same device and queue; and asking that GPU's
//! driver how much memory it has free, which wgpu does not report (`train::memory` plans a run
//! with it).
//!
//! Why burn's runtime creates the device rather than the window: the device is then what
//! cubecl asks for on that adapter. With the `spirv` feature that includes, on Vulkan, the
//! extensions its SPIR-V kernels need (the Vulkan memory model, buffer device addresses, …) and
//! wgpu's shader passthrough, which a device made with plain `wgpu::Adapter::request_device`
//! does not enable; cubecl picks its compiler from the *adapter*, so given such a plain device
//! it would choose SPIR-V and then fail to create its shaders. Where cubecl's setup fails, the
//! display makes its own device as before and the model runs on the CPU (the caller decides,
//! with [`model_gpu`]'s error as the reason).
//!
//! Depends on burn only (its re-export of wgpu is the same crate eframe links: one `wgpu` in
//! `Cargo.lock`, checked by a test) and, for the memory query, on `ash`, the Vulkan binding
//! wgpu itself uses.

use std::sync::{Arc, Mutex, OnceLock};

use burn::cubecl::wgpu::{WgpuBackend, WgpuDevice, WgpuDeviceKind};
use burn::tensor::Device;
use burn::tensor::wgpu::wgpu;

/// burn's default wgpu device and the wgpu handles it runs on.
#[derive(Debug)]
pub struct ModelGpu {
    /// burn's device: the same as `Device::wgpu(DeviceKind::DefaultDevice)`.
    pub device: Device,
    /// The wgpu instance the device was made on (the display makes its surface on it).
    pub instance: wgpu::Instance,
    /// The adapter (the high-performance one, as burn's runtime requests it).
    pub adapter: wgpu::Adapter,
    /// The wgpu device: burn's kernels and the display's draws go to it.
    pub gpu: wgpu::Device,
    /// Its queue, shared the same way.
    pub queue: wgpu::Queue,
    /// The shader compiler cubecl chose for it: `wgpu<spirv>` (Vulkan with the extensions
    /// cubecl's SPIR-V needs), `wgpu<msl>` or `wgpu<wgsl>`.
    pub compiler: &'static str,
}

impl ModelGpu {
    /// One line for logs, the status bar and benchmark reports: adapter, API, compiler.
    pub fn summary(&self) -> String {
        let info = self.adapter.get_info();
        format!("{} ({:?}, {})", info.name, info.backend, self.compiler)
    }
}

/// burn's default wgpu device, created once per process through burn's runtime, with the
/// handles to share with the display. The error says why there is none (no adapter, the
/// driver refused the device, or burn's default wgpu runtime was already started lazily by a
/// tensor op before this was called, in which case its handles are out of reach).
pub fn model_gpu() -> Result<&'static ModelGpu, &'static str> {
    MODEL_GPU
        .get_or_init(|| {
            #[cfg(feature = "fusion")]
            configure_fusion()?;
            let (device, setup) = Device::wgpu_options().init_with_setup().map_err(|e| e.to_string())?;
            // The runtime `init_with_setup` registered: `Device::wgpu(DefaultDevice)` maps to this
            // selector (burn-tensor's `wgpu_device`), and its client knows the compiler it chose.
            let selector = WgpuDevice::new(WgpuDeviceKind::DefaultDevice).on(WgpuBackend::Auto);
            let compiler = burn::cubecl::Device::Wgpu(selector).client().name();
            watch_device_loss(&device, &setup.device);
            Ok(ModelGpu {
                device,
                instance: setup.instance,
                adapter: setup.adapter,
                gpu: setup.device,
                queue: setup.queue,
                compiler,
            })
        })
        .as_ref()
        .map_err(String::as_str)
}

/// Whether a wgpu device was lost, and wgpu's reason once it said so.
///
/// Watching a device replaces two of its handlers. The lost callback records the reason
/// (wgpu calls it once, when the device is next polled or submitted to). The
/// uncaptured-error handler panics as wgpu's own does while the device is alive, so that a
/// validation error (a bug) is not drawn over, but only logs once the device is lost: every
/// call on a lost device may then fail, and the window's thread must live on to save the
/// user's work and restart (`app::relaunch`). cubecl installs the same pair when it makes a
/// device; ours replaces it, and [`device_lost`] is how this program asks.
#[derive(Clone, Debug, Default)]
pub struct LossWatch(Arc<Mutex<Option<String>>>);

impl LossWatch {
    /// Starts watching `gpu` (replacing its lost callback and uncaptured-error handler).
    pub fn watch(gpu: &wgpu::Device) -> Self {
        let watch = Self::default();
        let set = watch.clone();
        gpu.set_device_lost_callback(move |why, message| {
            let sep = if message.is_empty() { "" } else { ": " };
            tracing::error!("the wgpu device was lost ({why:?}{sep}{message})");
            if let Ok(mut r) = set.0.lock() {
                *r = Some(format!("the GPU was lost ({why:?}{sep}{message})"));
            }
        });
        let lost = watch.clone();
        gpu.on_uncaptured_error(Arc::new(move |error| {
            if lost.said().is_some() {
                tracing::debug!("error on a lost wgpu device: {error}");
            } else {
                panic!("wgpu error: {error}");
            }
        }));
        watch
    }

    /// Why the device was lost, once wgpu said so (it says so when the device is next polled
    /// or submitted to; [`device_lost`] polls).
    pub fn said(&self) -> Option<String> {
        self.0.lock().ok().and_then(|r| r.clone())
    }

    /// [`Self::said`], polling `gpu` (the watched device) first when it has not said so yet:
    /// wgpu calls the lost callback when the device is next polled, not when it is lost.
    pub fn polled(&self, gpu: &wgpu::Device) -> Option<String> {
        self.said().or_else(|| {
            let _ = gpu.poll(wgpu::PollType::Poll);
            self.said()
        })
    }
}

/// The wgpu devices whose loss is watched, by the burn device on them.
type Watched = Vec<(Device, wgpu::Device, LossWatch)>;
static WATCHED: Mutex<Watched> = Mutex::new(Vec::new());

/// Watches `gpu`, the wgpu device under burn's `device` ([`LossWatch`]): once wgpu reports it
/// lost (destroyed, reset by the driver, unplugged), [`device_lost`] says so. Needed because
/// work submitted to a lost device does not fail in burn: reads come back with whatever the
/// buffers held.
pub fn watch_device_loss(device: &Device, gpu: &wgpu::Device) {
    let watch = LossWatch::watch(gpu);
    if let Ok(mut w) = WATCHED.lock() {
        w.push((device.clone(), gpu.clone(), watch));
    }
}

/// The watch on burn's `device`'s GPU, if it is watched ([`watch_device_loss`]; a wgpu device
/// has one lost callback, so the window drawing on the model's device asks for this one rather
/// than making its own). Looked up by burn's device: wgpu devices compare by an id that is
/// only unique within one wgpu instance.
pub fn loss_watch(device: &Device) -> Option<LossWatch> {
    WATCHED.lock().ok()?.iter().find(|(d, _, _)| d == device).map(|(_, _, w)| w.clone())
}

/// Why `device`'s GPU is lost, if wgpu said so (always `None` for the CPU and for devices
/// nobody watches).
pub fn device_lost(device: &Device) -> Option<String> {
    // The trainer's autodiff device runs on the same GPU as the plain one that is watched.
    let device = device.clone().without_autodiff();
    let (gpu, watch) = {
        let watched = WATCHED.lock().ok()?;
        let (_, gpu, watch) = watched.iter().find(|(d, _, _)| *d == device)?;
        (gpu.clone(), watch.clone())
    };
    // Polled: a failure right after the loss would otherwise look like the work's own.
    watch.polled(&gpu)
}

/// [`model_gpu`]'s answer if it was asked already in this process; `None` before (asks
/// nothing, creates nothing).
pub fn model_gpu_made() -> Option<Result<&'static ModelGpu, &'static str>> {
    MODEL_GPU.get().map(|r| r.as_ref().map_err(String::as_str))
}

/// [`model_gpu`]'s device, made on first use.
static MODEL_GPU: OnceLock<Result<ModelGpu, String>> = OnceLock::new();

/// The numbers the model computes inference with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit floats throughout, as the reference computes (and as training always does).
    #[default]
    F32,
    /// 16-bit floats for weights and activations, on a GPU with 16-bit float shaders (wgpu's
    /// `SHADER_F16`): half the memory traffic, and the tensor cores' input type. Where f16's
    /// 11-bit mantissa or its range (±65,504) is not safe, the model computes in f32 and
    /// rounds the result back (`nn::in_f32`: LayerNorm statistics, the softmax of attention
    /// and of the slice memory; BatchNorm's folded scale and shift). Masks are compared with
    /// f32 on Lucchi++ in `tests/model/fine_tuning.rs`.
    F16,
}

impl Precision {
    /// `f32` or `f16`, as the command line and the settings file spell it.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "f16" | "fp16" | "float16" | "half" => Ok(Precision::F16),
            _ => Err(format!("`{s}` is not a precision (f32 or f16)")),
        }
    }
}

/// Why the model cannot compute at the precision asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrecisionError {
    /// Half precision on the CPU backend: it would convert every value and gain nothing.
    #[error("half precision (f16) runs on a GPU only; the model runs on the CPU here")]
    Cpu,
    /// The device is not [`model_gpu`]'s, the only GPU device this process computes on.
    #[error("half precision (f16) runs on the model's GPU only, and this device is not it")]
    NotTheModelGpu,
    /// The GPU's shaders have no 16-bit floats.
    #[error("{0} has no 16-bit float shaders (wgpu SHADER_F16); use f32")]
    NoF16(String),
    /// burn refused to register or configure the second runtime.
    #[error("cannot set up half precision on {gpu}: {reason}")]
    Setup {
        /// The adapter.
        gpu: String,
        /// burn's error.
        reason: String,
    },
}

/// The device on which a model that would run on `device` in f32 computes at `precision`:
/// `device` itself for f32; for f16, a second burn device on [`model_gpu`]'s wgpu device and
/// queue whose float tensors are f16 by default, so that weights copied to it
/// (`MultiModel::to_device`), inputs and every tensor the model creates on the way are f16
/// without the model code naming a type. burn keeps one default float type per device, and
/// the f32 device also trains, so half precision gets its own runtime (its own memory pool)
/// on the same GPU rather than a setting that would change the other. (burn's documentation
/// advises registering a setup once because each registration is a separate runtime with its
/// own pools and caches; a separate runtime is what is wanted here, and wgpu devices and
/// queues are made to be shared. The cost: memory freed by one runtime is not reused by the
/// other until it is released to the driver.)
pub fn device_at(device: &Device, precision: Precision) -> Result<Device, PrecisionError> {
    match precision {
        Precision::F32 => Ok(device.clone()),
        Precision::F16 => {
            half_precision_available(device)?;
            let gpu = model_gpu().map_err(|_| PrecisionError::NotTheModelGpu)?;
            half_device(gpu).cloned()
        }
    }
}

/// Whether [`device_at`] would give `device` an f16 twin, asked without making one (for a
/// settings panel drawn every frame).
pub fn half_precision_available(device: &Device) -> Result<(), PrecisionError> {
    if is_cpu(device) {
        return Err(PrecisionError::Cpu);
    }
    if half_device_made().is_some_and(|d| d == device) {
        return Ok(());
    }
    match model_gpu_made() {
        Some(Ok(gpu)) if gpu.device == *device => {
            if gpu.device.supports_dtype(burn::tensor::DType::F16) {
                Ok(())
            } else {
                Err(PrecisionError::NoF16(gpu.summary()))
            }
        }
        _ => Err(PrecisionError::NotTheModelGpu),
    }
}

/// The precision `device` computes at: f16 for the device [`device_at`] made, f32 otherwise.
pub fn precision_of(device: &Device) -> Precision {
    if half_device_made().is_some_and(|d| d == device) { Precision::F16 } else { Precision::F32 }
}

/// The f16 device, made once per process on `gpu`'s handles.
fn half_device(gpu: &ModelGpu) -> Result<&'static Device, PrecisionError> {
    HALF_DEVICE
        .get_or_init(|| {
            let setup = burn::tensor::wgpu::WgpuSetup {
                instance: gpu.instance.clone(),
                adapter: gpu.adapter.clone(),
                device: gpu.gpu.clone(),
                queue: gpu.queue.clone(),
                backend: gpu.adapter.get_info().backend,
            };
            let failed = |e: String| PrecisionError::Setup { gpu: gpu.summary(), reason: e };
            let mut device = Device::wgpu_options().setup(setup).init().map_err(|e| failed(e.to_string()))?;
            device.configure(burn::tensor::FloatDType::F16).map_err(|e| failed(format!("{e:?}")))?;
            // The same wgpu device as `model_gpu`'s, whose callback is already set: watch the
            // f16 handle through the same flag.
            if let Some(watch) = loss_watch(&gpu.device)
                && let Ok(mut w) = WATCHED.lock()
            {
                w.push((device.clone(), gpu.gpu.clone(), watch));
            }
            Ok(device)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// The f16 device if it was made.
fn half_device_made() -> Option<&'static Device> {
    HALF_DEVICE.get().and_then(|r| r.as_ref().ok())
}

/// [`half_device`]'s device, made on first use.
static HALF_DEVICE: OnceLock<Result<Device, PrecisionError>> = OnceLock::new();

/// The fusion optimizations [`configure_fusion`] removes when `SAM4EM_FUSION_OFF` is unset:
/// burn's element-wise fusion. With it, the golden training step on lavapipe gets channel 14
/// of `sam.fpn.smooth_32.1`'s gradients wrong (0.00168 where the reference has −0.00039, the
/// same value with `Matmul`, `NHWCRelayout` or `ReduceBroadcasted` removed instead); without
/// it the step passes (2026-12-06). burn has open reports of fused kernels giving wrong values
/// on CUDA too (tracel-ai/burn#5122, #4366), so this is not only lavapipe's.
#[cfg(feature = "fusion")]
pub const FUSION_OFF_BY_DEFAULT: &[&str] = &["ElementWise"];

/// With the `fusion` feature: removes the kernel-fusion optimizations named in
/// `SAM4EM_FUSION_OFF` (comma-separated, from [`burn_cubecl::fusion::BUILTIN_NAMES`]:
/// `ElementWise`, `Matmul`, `Reduce`, `ReduceBroadcasted`, `NHWCRelayout`; set but empty: all
/// on) from burn's registry. Unset, [`FUSION_OFF_BY_DEFAULT`] is removed: with every
/// optimization on, the golden training step on lavapipe gets one BatchNorm's gradients wrong,
/// and without `ElementWise` it passes (README "On the GPU"). Must run before the first tensor
/// operation on a wgpu device (the registry is fixed once fusion starts); [`model_gpu`] calls
/// it first. Returns the names removed.
#[cfg(feature = "fusion")]
pub fn configure_fusion() -> Result<Vec<String>, String> {
    static DONE: OnceLock<Result<Vec<String>, String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let names: Vec<String> = match std::env::var("SAM4EM_FUSION_OFF") {
            Ok(list) => list.split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::to_owned).collect(),
            Err(_) => FUSION_OFF_BY_DEFAULT.iter().map(|n| (*n).to_owned()).collect(),
        };
        for name in &names {
            if !burn_cubecl::fusion::BUILTIN_NAMES.contains(&name.as_str()) {
                return Err(format!(
                    "SAM4EM_FUSION_OFF names `{name}`, which is none of burn's fusion optimizations {:?}",
                    burn_cubecl::fusion::BUILTIN_NAMES
                ));
            }
            burn_cubecl::fusion::remove(name).map_err(|e| format!("cannot turn off fusion `{name}`: {e}"))?;
        }
        if !names.is_empty() {
            tracing::info!("kernel fusion: {} off", names.join(", "));
        }
        Ok(names)
    })
    .clone()
}

/// What wgpu reports of the adapter `Device::wgpu(DeviceKind::DefaultDevice)` lands on (the
/// high-performance choice, as burn's runtime requests it), or `None` when there is none.
/// Asks without creating a device.
pub fn default_wgpu_adapter() -> Option<wgpu::AdapterInfo> {
    default_adapter().map(|a| a.get_info())
}

/// The adapter `Device::wgpu(DeviceKind::DefaultDevice)` lands on, found once per process.
fn default_adapter() -> Option<&'static wgpu::Adapter> {
    static ADAPTER: OnceLock<Option<wgpu::Adapter>> = OnceLock::new();
    ADAPTER
        .get_or_init(|| {
            let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
                backends: wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY),
                ..wgpu::InstanceDescriptor::new_without_display_handle()
            });
            let options = wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            };
            pollster::block_on(instance.request_adapter(&options)).ok()
        })
        .as_ref()
}

/// Device-local memory of a GPU, as its driver reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuMemory {
    /// The adapter's name.
    pub adapter: String,
    /// Size of its largest device-local memory heap (the VRAM of a discrete card; shared
    /// system memory on an integrated or software one).
    pub heap_bytes: u64,
    /// What this process may still allocate from that heap: the driver's budget for the
    /// process minus what the process already uses (`VK_EXT_memory_budget`). `None` when the
    /// driver does not report a budget.
    pub free_bytes: Option<u64>,
}

/// The memory of the GPU burn runs `device` on: [`model_gpu`]'s adapter when `device` is that
/// one, else the default adapter (where burn's default wgpu device lands). `None` on the CPU
/// backend, and where the driver cannot be asked: only Vulkan reports memory (Linux and
/// Windows); Metal, DX12 and GL do not through wgpu.
pub fn gpu_memory(device: &Device) -> Option<GpuMemory> {
    if is_cpu(device) {
        return None;
    }
    match model_gpu() {
        Ok(gpu) if gpu.device == *device => adapter_memory(&gpu.adapter),
        _ => default_adapter().and_then(adapter_memory),
    }
}

/// [`GpuMemory`] of `adapter`, when it is a Vulkan one.
pub fn adapter_memory(adapter: &wgpu::Adapter) -> Option<GpuMemory> {
    #[cfg(any(windows, target_os = "linux"))]
    {
        vulkan_memory(adapter)
    }
    #[cfg(not(any(windows, target_os = "linux")))]
    {
        let _ = adapter;
        None
    }
}

/// Reads the memory heaps (and, with `VK_EXT_memory_budget`, the process's budget and usage)
/// of a Vulkan adapter through wgpu's own instance: wgpu exposes neither, and a training run
/// has to know before it starts whether it fits (`train::memory`).
#[cfg(any(windows, target_os = "linux"))]
#[allow(unsafe_code)]
fn vulkan_memory(adapter: &wgpu::Adapter) -> Option<GpuMemory> {
    use ash::vk;
    // SAFETY: the guard borrows wgpu's adapter, which outlives this function; nothing here
    // creates or destroys Vulkan objects, only queries the physical device.
    let hal = unsafe { adapter.as_hal::<wgpu::hal::api::Vulkan>() }?;
    let physical = hal.raw_physical_device();
    let shared = hal.shared_instance();
    let instance = shared.raw_instance();
    // SAFETY: `physical` belongs to `instance` (both from the same wgpu adapter).
    let properties = unsafe { instance.get_physical_device_properties(physical) };
    // vkGetPhysicalDeviceMemoryProperties2 is Vulkan 1.1: both the instance and the device
    // must have it, or ash's function pointer is a stub.
    let v1_1 = shared.instance_api_version() >= vk::API_VERSION_1_1 && properties.api_version >= vk::API_VERSION_1_1;
    // SAFETY: as above.
    let extensions = unsafe { instance.enumerate_device_extension_properties(physical) }.ok()?;
    let has_budget =
        v1_1 && extensions.iter().any(|e| e.extension_name_as_c_str() == Ok(ash::ext::memory_budget::NAME));
    let (heaps, budget) = if has_budget {
        let mut budget = vk::PhysicalDeviceMemoryBudgetPropertiesEXT::default();
        let mut props = vk::PhysicalDeviceMemoryProperties2::default().push_next(&mut budget);
        // SAFETY: the extension is supported and the version is 1.1+ (checked above); `props`
        // chains only `budget`, which lives until the call returns.
        unsafe { instance.get_physical_device_memory_properties2(physical, &mut props) };
        let heaps = props.memory_properties;
        (heaps, Some((budget.heap_budget, budget.heap_usage)))
    } else {
        // SAFETY: `physical` belongs to `instance`.
        (unsafe { instance.get_physical_device_memory_properties(physical) }, None)
    };
    let count = (heaps.memory_heap_count as usize).min(vk::MAX_MEMORY_HEAPS);
    let (index, heap) = heaps.memory_heaps[..count]
        .iter()
        .enumerate()
        .filter(|(_, h)| h.flags.contains(vk::MemoryHeapFlags::DEVICE_LOCAL))
        .max_by_key(|(_, h)| h.size)?;
    Some(GpuMemory {
        adapter: adapter.get_info().name,
        heap_bytes: heap.size,
        free_bytes: budget.map(|(budget, usage)| budget[index].saturating_sub(usage[index])),
    })
}

/// Whether the adapter is a software renderer (Mesa's lavapipe/llvmpipe, SwiftShader). The
/// model never runs on one: lavapipe ends every shader invocation's loops after 65,535
/// iterations in total, so kernels summing long rows return partial sums (issue 15), and
/// burn's CPU backend is exact and faster on the same cores.
pub fn is_software(info: &wgpu::AdapterInfo) -> bool {
    info.device_type == wgpu::DeviceType::Cpu
}

/// Whether burn runs `device` on the CPU backend (Flex), with or without autodiff.
pub fn is_cpu(device: &burn::tensor::Device) -> bool {
    // burn's device enum is only visible through its Debug form here (its dispatch type is
    // not re-exported).
    format!("{device:?}").contains("Flex")
}
