//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// `../shared` (or `$SAM4EM_SHARED`). When it is missing the test fails under `CI=true` and is
/// skipped with a printed reason otherwise.
pub fn shared() -> Option<PathBuf> {
    let dir = std::env::var_os("SAM4EM_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    if dir.join("data").is_dir() {
        return Some(dir);
    }
    let reason = format!("shared data not found at {} (set SAM4EM_SHARED)", dir.display());
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{reason}");
    }
    eprintln!("skipping: {reason}");
    None
}

/// A file under `tests/data`.
pub fn test_data(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(rel)
}

/// Values of the tifffile fixtures (see `tests/data/make_tiff_fixtures.py`).
pub fn fixture_u8(z: usize, y: usize, x: usize) -> f64 {
    ((x * 7 + y * 13 + z * 29) % 256) as f64
}

/// See [`fixture_u8`].
pub fn fixture_u16(z: usize, y: usize, x: usize) -> f64 {
    ((x * 257 + y * 1031 + z * 4099) % 65536) as f64
}

/// See [`fixture_u8`].
pub fn fixture_f32(z: usize, y: usize, x: usize) -> f64 {
    f64::from(x as f32 * 0.5 - y as f32 * 0.25 + z as f32 * 10.125)
}

/// The SAM4EM reference fixtures: `$SAM4EM_FIXTURES`, else `fixtures/sam4em-micro` under
/// [`shared`] (same skip/fail rule).
pub fn fixtures() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SAM4EM_FIXTURES") {
        return Some(PathBuf::from(dir));
    }
    shared().map(|s| s.join("fixtures/sam4em-micro"))
}

/// The set's official-format SAM 2 checkpoint: its one `.pt` file, whatever its name.
pub fn fixture_checkpoint(set: &std::path::Path) -> PathBuf {
    let pts: Vec<PathBuf> = std::fs::read_dir(set)
        .unwrap_or_else(|e| panic!("{}: {e}", set.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "pt"))
        .collect();
    assert_eq!(pts.len(), 1, "a fixture set holds one SAM 2 checkpoint (.pt): {pts:?}");
    pts.into_iter().next().unwrap()
}

/// The set's configuration (`config.json`) with the model input made smaller for tests that
/// train or run the app: halved while it stays valid and at least 128 px. Every other size is
/// the set's own, so another reference configuration runs the same tests on its own
/// architecture.
#[cfg(feature = "model")]
pub fn reduced_config_json(set: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(set.join("config.json")).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    loop {
        let size = json["image_size"].as_u64().unwrap();
        let mut smaller = json.clone();
        smaller["image_size"] = (size / 2).into();
        let valid = sam4em::model::Sam4emConfig::from_reference_json(&smaller.to_string()).is_ok();
        if size / 2 < 128 || !valid {
            return json;
        }
        json = smaller;
    }
}

/// burn's wgpu device for the tests that hold the GPU path to a reference (Mesa's lavapipe on a
/// machine without a GPU). `None`, with the reason printed, when no adapter works; under
/// `CI=true` that is a failure instead, since CI installs lavapipe.
#[cfg(feature = "model")]
pub fn wgpu_device() -> Option<burn::tensor::Device> {
    use burn::tensor::Tensor;
    let reason = match sam4em::model::device::model_gpu() {
        Ok(gpu) => {
            let device = gpu.device.clone();
            eprintln!("wgpu: {}", gpu.summary());
            let probe = device.clone();
            let works = std::panic::catch_unwind(move || Tensor::<1>::ones([4], &probe) * 2.0)
                .ok()
                .and_then(|t| std::panic::catch_unwind(move || sam4em::model::nn::to_vec(&t)).ok());
            if works.as_deref() == Some(&[2.0; 4][..]) {
                return Some(device);
            }
            format!("burn's wgpu device on {} does not compute", gpu.summary())
        }
        Err(e) => format!("no wgpu device for the model: {e} (without a GPU, Mesa's Vulkan drivers give lavapipe)"),
    };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{reason}");
    }
    eprintln!("skipping the wgpu run: {reason}");
    None
}

/// The one place snapshot tolerances live. The renderer is deterministic on a given software
/// rasteriser (lavapipe), so the per-pixel colour threshold is kittest's default and only a
/// handful of pixels (out of about a million) may differ, e.g. from a different Mesa version's
/// rounding at anti-aliased text edges.
pub fn snapshot_options() -> egui_kittest::SnapshotOptions {
    egui_kittest::SnapshotOptions::new().threshold(0.6).max_failed_pixels(16)
}

#[cfg(feature = "model")]
/// A wgpu device of the test's own (not the process's shared one, so the test may destroy
/// it), watched for loss as the app's model GPU is, and burn's handle on it. `None` when no
/// adapter works.
pub fn own_gpu() -> Option<(burn::tensor::wgpu::wgpu::Device, burn::tensor::Device)> {
    use burn::tensor::wgpu::wgpu;
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default())).ok()?;
    // What burn's runtime asks for when it makes a device itself: everything the adapter has.
    let descriptor = wgpu::DeviceDescriptor {
        required_features: adapter.features(),
        required_limits: adapter.limits(),
        ..Default::default()
    };
    let (device, queue) = pollster::block_on(adapter.request_device(&descriptor)).ok()?;
    let backend = adapter.get_info().backend;
    // As `model_gpu` does before its device's first operation: burn's fusion registry is fixed
    // once fusion starts, and another test of this binary may ask `model_gpu` for its device
    // after this one ran (which then failed: "the fusion backend service is already running").
    #[cfg(feature = "fusion")]
    sam4em::model::device::configure_fusion().ok()?;
    let setup = burn::tensor::wgpu::WgpuSetup { instance, adapter, device: device.clone(), queue, backend };
    let burn_device = burn::tensor::Device::wgpu_options().setup(setup).init().ok()?;
    // As the app's model GPU is (`model::device::model_gpu`).
    sam4em::model::device::watch_device_loss(&burn_device, &device);
    Some((device, burn_device))
}
