//! Which wgpu device the window draws with and where the model computes: one device for both
//! wherever the GPU can run the model.
//!
//! The device is made by burn's runtime ([`model_gpu`]: as cubecl asks for it, with the `spirv`
//! feature on Vulkan with the extensions its SPIR-V kernels need) and handed to eframe as an
//! existing setup. Where that fails (no Vulkan
//! or other compute-capable API, the driver refuses the device), where the user asked for the
//! model on the CPU, or where `WGPU_BACKEND` picks the display's API, eframe makes its own
//! device as it always did ([`render::device::eframe_wgpu_setup`]) and the model runs on the
//! CPU, with the reason in the status bar. May touch `render` (device capabilities) and
//! `model::device`; nothing else.

use std::sync::atomic::{AtomicBool, Ordering};

use eframe::egui_wgpu::{self, RenderState};

use crate::model::device::{ModelGpu, model_gpu};
use crate::render::{self, DeviceCaps, ModelDevicePlan};

/// Why the window gets a device of its own instead of the model's, or `None` to share.
/// Pure: `model` is [`model_gpu`]'s answer (or `None` when it was not asked: the model runs on
/// the CPU by request), `wgpu_backend` the `WGPU_BACKEND` variable if set.
pub fn own_device_reason(model: Option<Result<&ModelGpu, &str>>, wgpu_backend: Option<&str>) -> Option<String> {
    match (model, wgpu_backend) {
        (_, Some(api)) => Some(wgpu_backend_reason(api)),
        (None, None) => Some("the model runs on the CPU (asked for)".to_owned()),
        (Some(Err(e)), None) => Some(format!("the GPU could not be set up for the model: {e}")),
        (Some(Ok(_)), None) => None,
    }
}

/// Why a `WGPU_BACKEND` setting leaves the model off the window's device.
fn wgpu_backend_reason(api: &str) -> String {
    format!("WGPU_BACKEND={api} chooses the display's device, which the model does not share")
}

/// The setup eframe gets: the model's device where [`own_device_reason`] allows, else eframe
/// makes its own (logged with the reason).
pub fn display_setup(cpu_model: bool) -> egui_wgpu::WgpuSetup {
    let wgpu_backend = std::env::var("WGPU_BACKEND").ok();
    // Not even made when the window will not draw on it.
    let model = (!cpu_model && wgpu_backend.is_none()).then(model_gpu);
    match (own_device_reason(model, wgpu_backend.as_deref()), model) {
        (None, Some(Ok(gpu))) => {
            tracing::info!("the window draws on the model's device: {}", gpu.summary());
            WINDOW_ON_MODEL_GPU.store(true, Ordering::Release);
            egui_wgpu::WgpuSetup::Existing(egui_wgpu::WgpuSetupExisting {
                instance: gpu.instance.clone(),
                adapter: gpu.adapter.clone(),
                device: gpu.gpu.clone(),
                queue: gpu.queue.clone(),
            })
        }
        (reason, _) => {
            tracing::info!("the window makes its own device: {}", reason.unwrap_or_default());
            render::device::eframe_wgpu_setup()
        }
    }
}

/// Whether [`display_setup`] gave the window the model's device ([`model_gpu`]'s). Asked
/// rather than compared: wgpu devices compare by an id that is only unique within one wgpu
/// instance, and a window with a device of its own has an instance of its own.
pub fn window_on_model_gpu() -> bool {
    WINDOW_ON_MODEL_GPU.load(Ordering::Acquire)
}

static WINDOW_ON_MODEL_GPU: AtomicBool = AtomicBool::new(false);

/// Where the model runs, given the device the window got, and a note for the user. The
/// model's GPU only where the window draws on it ([`display_setup`]) and [`ModelDevicePlan`]
/// accepts it (never a software renderer); else the CPU, saying why.
pub fn model_device_for(rs: &RenderState, caps: &DeviceCaps, cpu_model: bool) -> (burn::tensor::Device, String) {
    let cpu = |reason: String| (burn::tensor::Device::flex(), format!("CPU ({reason})"));
    if cpu_model {
        return (burn::tensor::Device::flex(), "CPU (asked for)".to_owned());
    }
    if let ModelDevicePlan::Fallback { reason } = ModelDevicePlan::decide(caps) {
        return cpu(reason);
    }
    match crate::model::device::model_gpu_made() {
        Some(Ok(gpu)) if gpu.gpu == rs.device => {
            (gpu.device.clone(), format!("shares the display GPU ({})", gpu.compiler))
        }
        Some(Err(e)) => cpu(format!("the GPU could not be set up for the model: {e}")),
        _ => match std::env::var("WGPU_BACKEND") {
            Ok(api) => cpu(wgpu_backend_reason(&api)),
            Err(_) => cpu("the window's device was not made for the model".to_owned()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_shares_only_a_device_made_for_the_model() {
        assert_eq!(own_device_reason(None, None).as_deref(), Some("the model runs on the CPU (asked for)"));
        let failed = own_device_reason(Some(Err("no Vulkan adapter")), None).unwrap();
        assert!(failed.contains("no Vulkan adapter"), "{failed}");
        let forced = own_device_reason(Some(Err("x")), Some("gl")).unwrap();
        assert!(forced.contains("WGPU_BACKEND=gl"), "{forced}");
        let not_asked = own_device_reason(None, Some("vulkan")).unwrap();
        assert!(not_asked.contains("WGPU_BACKEND=vulkan"), "{not_asked}");
    }
}
