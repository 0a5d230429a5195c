//! `sam4em bench viewer`: how fast the viewer switches slices and draws frames, headless, on
//! the device the app would pick (lavapipe on a machine without a GPU).
//!
//! - Slice switch = decode one slice from a multi-page TIFF (cache off, so every switch
//!   decodes) + upload it to the GPU + wait for the GPU, for a 1024² 8-bit and a 4096²
//!   16-bit stack written to a temporary folder (Deflate, as EM stacks are usually stored).
//! - Frame = slice + three class overlays + prediction layer drawn into a 1920×1080 target,
//!   waited for; reported next to the slice alone, so the overlays' cost is a ratio.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};

use super::median;
use crate::app::image_pixels;
use crate::io::{self, OpenOptions};
use crate::render::headless::{Offscreen, TARGET_FORMAT};
use crate::render::{ClassStyle, HeadlessGpu, ScreenFromImage, SliceRenderer, ViewId, ViewParams};
use crate::state::view::percentile_window;

/// One timed case.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SwitchTiming {
    /// e.g. `1024x1024 uint8`.
    pub case: String,
    /// Median decode time, ms.
    pub decode_ms: f64,
    /// Median upload (+ GPU wait) time, ms.
    pub upload_ms: f64,
    /// Median total, ms.
    pub total_ms: f64,
}

/// The whole report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ViewerBench {
    /// Adapter used.
    pub device: String,
    /// Slice switches.
    pub switch: Vec<SwitchTiming>,
    /// Median frame time with the slice alone, ms (4096² u16 in 1920×1080).
    pub frame_slice_only_ms: f64,
    /// Median frame time with three overlays and the prediction layer, ms.
    pub frame_three_overlays_ms: f64,
}

/// Smooth pseudo-EM texture: membranes as dark ridges on a grey background, plus noise.
fn synthetic(width: usize, height: usize, z: usize, max: f64) -> Vec<f64> {
    let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ z as u64;
    (0..width * height)
        .map(|i| {
            let (x, y) = ((i % width) as f64, (i / width) as f64);
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let noise = (seed >> 40) as f64 / (1u64 << 24) as f64;
            let ridge = ((x * 0.05 + z as f64 * 0.3).sin() * (y * 0.043).cos()).abs();
            ((0.35 + 0.45 * ridge.sqrt() + 0.2 * noise) * max).min(max)
        })
        .collect()
}

fn write_stack(path: &Path, width: usize, height: usize, depth: usize, sixteen: bool) -> Result<()> {
    use tiff::encoder::{TiffEncoder, colortype};
    let file = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut enc = TiffEncoder::new(std::io::BufWriter::new(file))?
        .with_compression(tiff::encoder::Compression::Deflate(tiff::encoder::DeflateLevel::Fast));
    for z in 0..depth {
        if sixteen {
            let data: Vec<u16> = synthetic(width, height, z, 65535.0).into_iter().map(|v| v as u16).collect();
            enc.write_image::<colortype::Gray16>(width as u32, height as u32, &data)?;
        } else {
            let data: Vec<u8> = synthetic(width, height, z, 255.0).into_iter().map(|v| v as u8).collect();
            enc.write_image::<colortype::Gray8>(width as u32, height as u32, &data)?;
        }
    }
    Ok(())
}

/// Runs the benchmark: `switches` slice switches per case, `frames` frames per draw case.
pub fn run(switches: usize, frames: usize) -> Result<ViewerBench> {
    let gpu = HeadlessGpu::new()?;
    let mut renderer = SliceRenderer::new(&gpu.device, TARGET_FORMAT, 1);
    let dir = tempfile::tempdir()?;
    let view = ViewId(0);
    let mut switch = Vec::new();
    let mut last = None;
    for (w, sixteen) in [(1024usize, false), (4096usize, true)] {
        let path = dir.path().join(format!("bench-{w}.tif"));
        let depth = switches.max(2);
        write_stack(&path, w, w, depth, sixteen)?;
        // No cache: every switch decodes, as a first visit to a slice does.
        let volume = io::open_stack(&path, &OpenOptions { cache_budget_bytes: 0, ..Default::default() })?;
        let (mut dec, mut up, mut tot) = (Vec::new(), Vec::new(), Vec::new());
        // Warm-up: pipeline and texture creation are not part of a switch.
        let s = volume.slice(crate::state::SliceIndex(0))?;
        renderer.set_image(&gpu.device, &gpu.queue, view, w as u32, w as u32, image_pixels(&s.data))?;
        for z in 1..depth {
            let t0 = Instant::now();
            let s = volume.slice(crate::state::SliceIndex(z))?;
            let t1 = Instant::now();
            renderer.set_image(&gpu.device, &gpu.queue, view, w as u32, w as u32, image_pixels(&s.data))?;
            gpu.queue.submit([]);
            let _ = gpu.device.poll(eframe::wgpu::PollType::wait_indefinitely());
            let t2 = Instant::now();
            dec.push((t1 - t0).as_secs_f64() * 1e3);
            up.push((t2 - t1).as_secs_f64() * 1e3);
            tot.push((t2 - t0).as_secs_f64() * 1e3);
            last = Some(s);
        }
        switch.push(SwitchTiming {
            case: format!("{w}x{w} {}", if sixteen { "uint16" } else { "uint8" }),
            decode_ms: median(dec),
            upload_ms: median(up),
            total_ms: median(tot),
        });
    }

    // Frames: the 4096² u16 slice filling a 1920×1080 window, three classes over it.
    let slice = last.context("no slice decoded")?;
    let (w, h) = (slice.width, slice.height);
    let (lo, hi) = percentile_window(&slice.data, 0.35, 99.65).unwrap_or((0.0, 65535.0));
    let bits: Vec<u16> = (0..w * h)
        .map(|i| {
            let (x, y) = (i % w, i / w);
            u16::from((x / 64 + y / 64) % 3 == 0)
                | (u16::from((x / 40) % 4 == 1) << 1)
                | (u16::from((y / 30) % 5 == 2) << 2)
        })
        .collect();
    renderer.set_mask(&gpu.device, &gpu.queue, view, w as u32, h as u32, &bits)?;
    let probabilities: Vec<f32> = (0..w * h).map(|i| (i % w) as f32 / w as f32).collect();
    renderer.set_prediction(&gpu.device, &gpu.queue, view, w as u32, h as u32, &probabilities)?;
    let target = Offscreen::new(&gpu.device, 1920, 1080);
    let zoom = 1080.0 / h as f32;
    let mut params = ViewParams {
        screen_from_image: ScreenFromImage { scale: [zoom, zoom], offset: [(1920.0 - w as f32 * zoom) / 2.0, 0.0] },
        window: [lo as f32, hi as f32],
        gamma: 1.0,
        invert: false,
        magnification: crate::render::Magnification::Linear,
        overlay: Default::default(),
        prediction: Default::default(),
    };
    for (slot, rgb) in [[86, 180, 233], [213, 94, 0], [240, 228, 66]].into_iter().enumerate() {
        params.overlay.classes[slot] = ClassStyle { rgb, opacity: 0.45, visible: true };
    }
    let mut time_frames = |p: &ViewParams| {
        target.draw(&gpu.device, &gpu.queue, &mut renderer, &[(view, *p)], [0.0, 0.0, 0.0, 1.0]);
        median(
            (0..frames.max(1))
                .map(|_| {
                    let t = Instant::now();
                    target.draw(&gpu.device, &gpu.queue, &mut renderer, &[(view, *p)], [0.0, 0.0, 0.0, 1.0]);
                    t.elapsed().as_secs_f64() * 1e3
                })
                .collect(),
        )
    };
    let with_overlays = time_frames(&params);
    let mut bare = params;
    bare.overlay.visible = false;
    bare.prediction.visible = false;
    let slice_only = time_frames(&bare);
    Ok(ViewerBench {
        device: gpu.caps().summary(),
        switch,
        frame_slice_only_ms: slice_only,
        frame_three_overlays_ms: with_overlays,
    })
}

/// Text report.
pub fn describe(b: &ViewerBench) -> String {
    let mut s = format!("device: {}\nslice switch (decode + upload), median:\n", b.device);
    for t in &b.switch {
        s += &format!(
            "  {:<18} decode {:>8.2} ms  upload {:>8.2} ms  total {:>8.2} ms\n",
            t.case, t.decode_ms, t.upload_ms, t.total_ms
        );
    }
    s += &format!(
        "frame, 4096² uint16 in 1920x1080, median:\n  slice only        {:>8.2} ms\n  + 3 overlays + prediction {:>8.2} ms  (ratio {:.2})\n",
        b.frame_slice_only_ms,
        b.frame_three_overlays_ms,
        b.frame_three_overlays_ms / b.frame_slice_only_ms
    );
    s
}
