//! Handing an existing wgpu device (the one the UI renders with) to burn, so the model's
//! tensors live on the same GPU and queue as the display; and asking that GPU's driver how much
//! memory it has free, which wgpu does not report (`train::memory` plans a run with it).
//!
//! Depends on burn only (its re-export of wgpu is the same crate eframe links: one `wgpu` in
//! `Cargo.lock`, checked by a test) and, for the memory query, on `ash`, the Vulkan binding
//! wgpu itself uses.

use std::sync::{Mutex, OnceLock};

use burn::tensor::Device;
use burn::tensor::wgpu::{WgpuInitError, WgpuSetup, wgpu};

/// The adapters of the devices [`share_wgpu`] made, so that [`gpu_memory`] asks the GPU the
/// model really runs on.
static SHARED_ADAPTERS: Mutex<Vec<(Device, wgpu::Adapter)>> = Mutex::new(Vec::new());

/// Registers `device`/`queue` with burn's wgpu runtime and returns the burn device that runs
/// on them. Register a setup once and clone the returned device.
pub fn share_wgpu(
    instance: &wgpu::Instance,
    adapter: &wgpu::Adapter,
    device: &wgpu::Device,
    queue: &wgpu::Queue,
) -> Result<Device, WgpuInitError> {
    let backend = adapter.get_info().backend;
    let shared = Device::wgpu_options()
        .setup(WgpuSetup {
            instance: instance.clone(),
            adapter: adapter.clone(),
            device: device.clone(),
            queue: queue.clone(),
            backend,
        })
        .init()?;
    SHARED_ADAPTERS.lock().unwrap_or_else(|e| e.into_inner()).push((shared.clone(), adapter.clone()));
    Ok(shared)
}

/// What wgpu reports of the adapter `Device::wgpu(DeviceKind::DefaultDevice)` lands on (the
/// high-performance choice, as burn's runtime requests it), or `None` when there is none.
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

/// The memory of the GPU burn runs `device` on: the adapter [`share_wgpu`] registered for it,
/// else the default adapter (where burn's default wgpu device lands). `None` on the CPU
/// backend, and where the driver cannot be asked: only Vulkan reports memory (Linux and
/// Windows); Metal, DX12 and GL do not through wgpu.
pub fn gpu_memory(device: &Device) -> Option<GpuMemory> {
    if is_cpu(device) {
        return None;
    }
    let registered = SHARED_ADAPTERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|(d, _)| d == device)
        .map(|(_, a)| a.clone());
    match registered {
        Some(adapter) => adapter_memory(&adapter),
        None => default_adapter().and_then(adapter_memory),
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
