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
