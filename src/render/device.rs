//! One wgpu device for the UI and the model.
//!
//! eframe's own device asks for default limits and no features; burn's compute kernels want
//! the adapter's full limits. [`device_descriptor`] asks for everything the adapter offers, so
//! the device eframe creates (through [`eframe_wgpu_setup`]) is one burn can also run on;
//! [`ModelDevicePlan`] then decides whether burn may share it or must fall back, and why.
//! Tests and benchmarks build the same device headless with [`HeadlessGpu`].
//!
//! Depends on wgpu (and egui-wgpu's setup types) only.

use std::sync::Arc;

use eframe::egui_wgpu;
use eframe::wgpu;

/// Smallest storage-buffer binding burn's kernels are written for. SAM4EM's largest single
/// tensor at 1024² input (B+ stage-1 attention activations) is well below this; a device that
/// cannot bind 128 MiB would fail mid-model instead of at start.
pub const MODEL_MIN_STORAGE_BINDING_BYTES: u64 = 128 << 20;
/// Smallest compute workgroup burn's matmul and reduction kernels assume.
pub const MODEL_MIN_WORKGROUP_INVOCATIONS: u32 = 256;

/// What a device can do, as far as the viewer and the model care.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceCaps {
    /// Adapter name, e.g. `NVIDIA H100` or `llvmpipe (LLVM 15.0.6, 256 bits)`.
    pub adapter_name: String,
    /// The graphics API.
    pub backend: wgpu::Backend,
    /// Discrete, integrated, CPU (lavapipe), …
    pub device_type: wgpu::DeviceType,
    /// Largest 2D texture side, px: the largest slice the viewer can show in one texture.
    pub max_texture_side_px: u32,
    /// Largest storage-buffer binding, bytes.
    pub max_storage_binding_bytes: u64,
    /// Most invocations in one compute workgroup (0: no compute shaders).
    pub max_workgroup_invocations: u32,
    /// Storage buffers per shader stage.
    pub max_storage_buffers_per_stage: u32,
    /// Compute shaders supported (false on WebGL2 / some GL drivers).
    pub compute_shaders: bool,
}

impl DeviceCaps {
    /// Reads the capabilities of a created device.
    pub fn of(adapter: &wgpu::Adapter, device: &wgpu::Device) -> Self {
        let info = adapter.get_info();
        let limits = device.limits();
        Self {
            adapter_name: info.name,
            backend: info.backend,
            device_type: info.device_type,
            max_texture_side_px: limits.max_texture_dimension_2d,
            max_storage_binding_bytes: limits.max_storage_buffer_binding_size,
            max_workgroup_invocations: limits.max_compute_invocations_per_workgroup,
            max_storage_buffers_per_stage: limits.max_storage_buffers_per_shader_stage,
            compute_shaders: adapter.get_downlevel_capabilities().flags.contains(wgpu::DownlevelFlags::COMPUTE_SHADERS),
        }
    }

    /// One line for the status bar and logs.
    pub fn summary(&self) -> String {
        format!("{} ({:?}, {:?})", self.adapter_name, self.backend, self.device_type)
    }
}

/// Why the model never runs on a software Vulkan/GL adapter (Mesa's lavapipe/llvmpipe,
/// SwiftShader). lavapipe ends every shader invocation's loops after 65,535 iterations in total
/// (Mesa's `LP_MAX_TGSI_LOOP_ITERATIONS`), so kernels that sum long rows in one invocation
/// silently return partial sums (seen in training gradients, issue 15); burn's CPU backend on
/// the same cores is exact and faster.
pub const SOFTWARE_ADAPTER_REASON: &str = "the display adapter is a software renderer; exact and faster on the CPU";

/// Where the model runs, given the UI's device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelDevicePlan {
    /// burn shares the UI's device and queue: no copies between model output and display.
    Shared,
    /// The UI's device cannot run burn's kernels; the model gets a device of its own (or the
    /// CPU). The reason is shown to the user.
    Fallback {
        /// Why the UI's device was not used, in words.
        reason: String,
    },
}

impl ModelDevicePlan {
    /// Decides from the device's capabilities. GL devices are never shared: burn has no GL
    /// compute path, and eframe picks GL only where nothing better exists.
    pub fn decide(caps: &DeviceCaps) -> Self {
        let fallback = |reason: String| ModelDevicePlan::Fallback { reason };
        if matches!(caps.backend, wgpu::Backend::Gl | wgpu::Backend::BrowserWebGpu | wgpu::Backend::Noop) {
            return fallback(format!("the display runs on {:?}, which burn cannot compute on", caps.backend));
        }
        if caps.device_type == wgpu::DeviceType::Cpu {
            return fallback(SOFTWARE_ADAPTER_REASON.to_owned());
        }
        if !caps.compute_shaders || caps.max_workgroup_invocations == 0 {
            return fallback(format!("{} has no compute shaders", caps.adapter_name));
        }
        if caps.max_workgroup_invocations < MODEL_MIN_WORKGROUP_INVOCATIONS {
            return fallback(format!(
                "{} allows {} invocations per workgroup; the model needs {MODEL_MIN_WORKGROUP_INVOCATIONS}",
                caps.adapter_name, caps.max_workgroup_invocations
            ));
        }
        if caps.max_storage_buffers_per_stage < 8 {
            return fallback(format!(
                "{} allows {} storage buffers per stage; the model needs 8",
                caps.adapter_name, caps.max_storage_buffers_per_stage
            ));
        }
        if caps.max_storage_binding_bytes < MODEL_MIN_STORAGE_BINDING_BYTES {
            return fallback(format!(
                "{} binds at most {} MiB of storage; the model needs {} MiB",
                caps.adapter_name,
                caps.max_storage_binding_bytes >> 20,
                MODEL_MIN_STORAGE_BINDING_BYTES >> 20
            ));
        }
        ModelDevicePlan::Shared
    }
}

/// The device the app asks for: on compute-capable backends every feature and limit the
/// adapter has (what burn's own device setup asks for), on GL what egui asks for.
pub fn device_descriptor(adapter: &wgpu::Adapter) -> wgpu::DeviceDescriptor<'static> {
    let info = adapter.get_info();
    if info.backend == wgpu::Backend::Gl {
        return wgpu::DeviceDescriptor {
            label: Some("sam4em display device (GL)"),
            required_limits: wgpu::Limits {
                max_texture_dimension_2d: 8192,
                ..wgpu::Limits::downlevel_webgl2_defaults()
            },
            ..Default::default()
        };
    }
    wgpu::DeviceDescriptor {
        label: Some("sam4em shared device"),
        // Mappable primary buffers make every buffer host-visible on discrete GPUs, which slows
        // them down; burn leaves the feature out too.
        required_features: adapter.features().difference(wgpu::Features::MAPPABLE_PRIMARY_BUFFERS),
        required_limits: adapter.limits(),
        // burn batches its allocations itself.
        memory_hints: wgpu::MemoryHints::MemoryUsage,
        ..Default::default()
    }
}

/// Backends to try, most capable first; `WGPU_BACKEND` overrides.
pub fn backends() -> wgpu::Backends {
    wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY | wgpu::Backends::GL)
}

/// eframe's wgpu setup with [`device_descriptor`]: the device eframe creates for the window is
/// the one the model shares.
pub fn eframe_wgpu_setup() -> egui_wgpu::WgpuSetup {
    let mut setup = egui_wgpu::WgpuSetupCreateNew::without_display_handle();
    setup.instance_descriptor.backends = backends();
    setup.device_descriptor = Arc::new(device_descriptor);
    egui_wgpu::WgpuSetup::CreateNew(setup)
}

/// Errors bringing up a headless device.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// No adapter at all (no GPU driver, no lavapipe).
    #[error("no graphics adapter found ({0}); install GPU drivers or Mesa's lavapipe (mesa-vulkan-drivers)")]
    NoAdapter(String),
    /// The adapter refused the device.
    #[error("cannot create a device on {adapter}: {problem}")]
    RequestDevice {
        /// Adapter name.
        adapter: String,
        /// wgpu's message.
        problem: String,
    },
}

/// A device made the app's way, without a window: for tests, benchmarks and the headless
/// command line.
#[derive(Debug, Clone)]
pub struct HeadlessGpu {
    /// The instance.
    pub instance: wgpu::Instance,
    /// The adapter.
    pub adapter: wgpu::Adapter,
    /// The device, created with [`device_descriptor`].
    pub device: wgpu::Device,
    /// Its queue.
    pub queue: wgpu::Queue,
}

impl HeadlessGpu {
    /// The highest-performance adapter (`WGPU_BACKEND` / `WGPU_POWER_PREF` honoured), as the
    /// app would pick it.
    pub fn new() -> Result<Self, DeviceError> {
        // GL only when nothing better exists (it also logs EGL noise on machines without it).
        match Self::with_backends(wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY)) {
            Err(DeviceError::NoAdapter(_)) if wgpu::Backends::from_env().is_none() => {
                Self::with_backends(wgpu::Backends::GL)
            }
            other => other,
        }
    }

    fn with_backends(backends: wgpu::Backends) -> Result<Self, DeviceError> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends,
            flags: wgpu::InstanceFlags::from_build_config().with_env(),
            backend_options: wgpu::BackendOptions::from_env_or_default(),
            memory_budget_thresholds: wgpu::MemoryBudgetThresholds::default(),
            display: None,
        });
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::from_env().unwrap_or(wgpu::PowerPreference::HighPerformance),
            ..Default::default()
        }))
        .map_err(|e| DeviceError::NoAdapter(e.to_string()))?;
        let (device, queue) = pollster::block_on(adapter.request_device(&device_descriptor(&adapter)))
            .map_err(|e| DeviceError::RequestDevice { adapter: adapter.get_info().name, problem: e.to_string() })?;
        Ok(Self { instance, adapter, device, queue })
    }

    /// Capabilities.
    pub fn caps(&self) -> DeviceCaps {
        DeviceCaps::of(&self.adapter, &self.device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps() -> DeviceCaps {
        DeviceCaps {
            adapter_name: "test".into(),
            backend: wgpu::Backend::Vulkan,
            device_type: wgpu::DeviceType::DiscreteGpu,
            max_texture_side_px: 16384,
            max_storage_binding_bytes: 2 << 30,
            max_workgroup_invocations: 1024,
            max_storage_buffers_per_stage: 16,
            compute_shaders: true,
        }
    }

    #[test]
    fn capable_vulkan_device_is_shared() {
        assert_eq!(ModelDevicePlan::decide(&caps()), ModelDevicePlan::Shared);
    }

    #[test]
    fn gl_and_small_devices_fall_back_with_a_reason() {
        let gl = DeviceCaps { backend: wgpu::Backend::Gl, ..caps() };
        let small = DeviceCaps { max_storage_binding_bytes: 64 << 20, ..caps() };
        let no_compute = DeviceCaps { compute_shaders: false, ..caps() };
        let tiny_groups = DeviceCaps { max_workgroup_invocations: 64, ..caps() };
        let lavapipe = DeviceCaps {
            adapter_name: "llvmpipe (LLVM 15.0.6, 256 bits)".into(),
            device_type: wgpu::DeviceType::Cpu,
            ..caps()
        };
        for (c, needle) in [
            (gl, "Gl"),
            (small, "64 MiB"),
            (no_compute, "no compute"),
            (tiny_groups, "64 invocations"),
            (lavapipe, "software renderer"),
        ] {
            match ModelDevicePlan::decide(&c) {
                ModelDevicePlan::Fallback { reason } => assert!(reason.contains(needle), "{reason}"),
                ModelDevicePlan::Shared => panic!("{c:?} must not be shared"),
            }
        }
    }
}
