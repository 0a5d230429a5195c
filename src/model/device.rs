//! Handing an existing wgpu device (the one the UI renders with) to burn, so the model's
//! tensors live on the same GPU and queue as the display.
//!
//! Depends on burn only (its re-export of wgpu is the same crate eframe links: one `wgpu` in
//! `Cargo.lock`, checked by a test).

use burn::tensor::Device;
use burn::tensor::wgpu::{WgpuInitError, WgpuSetup, wgpu};

/// Registers `device`/`queue` with burn's wgpu runtime and returns the burn device that runs
/// on them. Register a setup once and clone the returned device.
pub fn share_wgpu(
    instance: &wgpu::Instance,
    adapter: &wgpu::Adapter,
    device: &wgpu::Device,
    queue: &wgpu::Queue,
) -> Result<Device, WgpuInitError> {
    let backend = adapter.get_info().backend;
    Device::wgpu_options()
        .setup(WgpuSetup {
            instance: instance.clone(),
            adapter: adapter.clone(),
            device: device.clone(),
            queue: queue.clone(),
            backend,
        })
        .init()
}

/// What wgpu reports of the adapter `Device::wgpu(DeviceKind::DefaultDevice)` lands on (the
/// high-performance choice, as burn's runtime requests it), or `None` when there is none.
pub fn default_wgpu_adapter() -> Option<wgpu::AdapterInfo> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let options =
        wgpu::RequestAdapterOptions { power_preference: wgpu::PowerPreference::HighPerformance, ..Default::default() };
    pollster::block_on(instance.request_adapter(&options)).ok().map(|a| a.get_info())
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
