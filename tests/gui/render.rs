//! The renderer on the app's device (lavapipe in CI): the device is shared with burn, and the
//! pixels it draws are what the slice / overlay / prediction maths say, read back from an
//! offscreen target.

use sam4em::render::headless::{Offscreen, TARGET_FORMAT};
use sam4em::render::{
    ClassStyle, HeadlessGpu, ImagePixels, Magnification, ModelDevicePlan, PixelRect, RenderError, ScreenFromImage,
    SliceRenderer, ViewId, ViewParams,
};

const VIEW: ViewId = ViewId(7);

fn gpu() -> HeadlessGpu {
    HeadlessGpu::new().unwrap_or_else(|e| panic!("{e}"))
}

/// One image pixel per target pixel, image at the target's top-left corner.
fn params_1to1() -> ViewParams {
    ViewParams {
        screen_from_image: ScreenFromImage { scale: [1.0, 1.0], offset: [0.0, 0.0] },
        window: [0.0, 255.0],
        gamma: 1.0,
        invert: false,
        magnification: Magnification::Nearest,
        overlay: Default::default(),
        prediction: Default::default(),
    }
}

fn px(rgba: &[u8], width: u32, x: u32, y: u32) -> [u8; 4] {
    let i = ((y * width + x) * 4) as usize;
    [rgba[i], rgba[i + 1], rgba[i + 2], rgba[i + 3]]
}

fn close(got: [u8; 4], want: [f64; 3], what: &str) {
    for c in 0..3 {
        assert!((f64::from(got[c]) - want[c]).abs() <= 1.0, "{what}: got {got:?}, want {want:?}");
    }
}

/// The app's one device: made by burn's runtime (SPIR-V on Vulkan, with the extensions its
/// kernels need) and handed to the display, which draws on the same device and queue while burn
/// computes on it.
#[test]
fn shared_device_runs_burn_and_draws() {
    use burn::tensor::{Tensor, TensorData};
    let model = match sam4em::model::device::model_gpu() {
        Ok(gpu) => gpu,
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => panic!("no model GPU in CI: {e}"),
        Err(e) => return eprintln!("skipping: no model GPU ({e})"),
    };
    eprintln!("model GPU: {}", model.summary());
    let gpu = HeadlessGpu {
        instance: model.instance.clone(),
        adapter: model.adapter.clone(),
        device: model.gpu.clone(),
        queue: model.queue.clone(),
    };
    let caps = gpu.caps();
    // The app shares a GPU with burn, never a software adapter (lavapipe here in CI: its loops
    // are cut short); the sharing itself is the same on both and is what this test checks.
    let plan = ModelDevicePlan::decide(&caps);
    if caps.device_type == burn::tensor::wgpu::wgpu::DeviceType::Cpu {
        assert!(
            matches!(&plan, ModelDevicePlan::Fallback { reason } if reason.contains("software renderer")),
            "{plan:?}"
        );
    } else {
        assert_eq!(plan, ModelDevicePlan::Shared, "{caps:?}");
    }
    if caps.backend == burn::tensor::wgpu::wgpu::Backend::Vulkan {
        // SPIR-V only where the build asks for it (feature `spirv`), WGSL otherwise.
        let expected = if cfg!(feature = "spirv") { "wgpu<spirv>" } else { "wgpu<wgsl>" };
        assert_eq!(model.compiler, expected, "{}", model.summary());
    }
    let device = model.device.clone();
    let a = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2]), &device);
    let b = a.clone().matmul(a);
    assert_eq!(sam4em::model::nn::to_vec(&b), vec![7.0, 10.0, 15.0, 22.0]);

    // The same device and queue still draw.
    let mut r = SliceRenderer::new(&gpu.device, TARGET_FORMAT, 1);
    r.set_image(&gpu.device, &gpu.queue, VIEW, 2, 1, ImagePixels::U8(&[0, 255])).unwrap();
    let target = Offscreen::new(&gpu.device, 2, 1);
    target.draw(&gpu.device, &gpu.queue, &mut r, &[(VIEW, params_1to1())], [0.0; 4]);
    let rgba = target.read_rgba(&gpu.device, &gpu.queue);
    assert_eq!(&rgba[..], &[0, 0, 0, 255, 255, 255, 255, 255]);
    // And burn still computes after the draw, on the same queue.
    let c = Tensor::<1>::from_data(TensorData::new(vec![3.0f32], [1]), &device) * 2.0;
    assert_eq!(sam4em::model::nn::to_vec(&c), vec![6.0]);
}

#[test]
fn window_gamma_invert_for_every_sample_type() {
    let gpu = gpu();
    let mut r = SliceRenderer::new(&gpu.device, TARGET_FORMAT, 1);
    let target = Offscreen::new(&gpu.device, 4, 1);
    let mut draw = |pixels: ImagePixels<'_>, window: [f32; 2], gamma: f32, invert: bool| {
        r.set_image(&gpu.device, &gpu.queue, VIEW, 4, 1, pixels).unwrap();
        let p = ViewParams { window, gamma, invert, ..params_1to1() };
        target.draw(&gpu.device, &gpu.queue, &mut r, &[(VIEW, p)], [0.0; 4]);
        target.read_rgba(&gpu.device, &gpu.queue)
    };
    let grey = |v: f64| [v * 255.0; 3];
    // 16-bit, window 1000..3000: below, inside, above.
    let rgba = draw(ImagePixels::U16(&[500, 1500, 2000, 60000]), [1000.0, 3000.0], 1.0, false);
    close(px(&rgba, 4, 0, 0), grey(0.0), "u16 below window");
    close(px(&rgba, 4, 1, 0), grey(0.25), "u16 in window");
    close(px(&rgba, 4, 2, 0), grey(0.5), "u16 mid");
    close(px(&rgba, 4, 3, 0), grey(1.0), "u16 above window");
    // 8-bit with gamma 2 and inverted.
    let rgba = draw(ImagePixels::U8(&[0, 64, 128, 255]), [0.0, 255.0], 2.0, true);
    for (x, v) in [0.0f64, 64.0, 128.0, 255.0].into_iter().enumerate() {
        close(px(&rgba, 4, x as u32, 0), grey(1.0 - (v / 255.0).powi(2)), "u8 gamma 2 inverted");
    }
    // 32-bit float with negative values.
    let rgba = draw(ImagePixels::F32(&[-1.0, -0.5, 0.5, 2.0]), [-1.0, 1.0], 1.0, false);
    for (x, v) in [0.0, 0.25, 0.75, 1.0].into_iter().enumerate() {
        close(px(&rgba, 4, x as u32, 0), grey(v), "f32");
    }
    // 32-bit unsigned (label maps).
    let rgba = draw(ImagePixels::U32(&[0, 100_000, 200_000, 400_000]), [0.0, 400_000.0], 1.0, false);
    for (x, v) in [0.0, 0.25, 0.5, 1.0].into_iter().enumerate() {
        close(px(&rgba, 4, x as u32, 0), grey(v), "u32");
    }
}

#[test]
fn magnification_nearest_and_linear() {
    let gpu = gpu();
    let mut r = SliceRenderer::new(&gpu.device, TARGET_FORMAT, 1);
    r.set_image(&gpu.device, &gpu.queue, VIEW, 2, 1, ImagePixels::U8(&[0, 200])).unwrap();
    // 2 image pixels over 8 target pixels.
    let target = Offscreen::new(&gpu.device, 8, 1);
    let mut p = params_1to1();
    p.screen_from_image.scale = [4.0, 1.0];
    target.draw(&gpu.device, &gpu.queue, &mut r, &[(VIEW, p)], [0.0; 4]);
    let nearest = target.read_rgba(&gpu.device, &gpu.queue);
    let row: Vec<u8> = (0..8).map(|x| px(&nearest, 8, x, 0)[0]).collect();
    assert_eq!(row, vec![0, 0, 0, 0, 200, 200, 200, 200]);
    p.magnification = Magnification::Linear;
    target.draw(&gpu.device, &gpu.queue, &mut r, &[(VIEW, p)], [0.0; 4]);
    let linear = target.read_rgba(&gpu.device, &gpu.queue);
    // Target pixel centre x+0.5 is image position (x+0.5)/4; texel centres at 0.5 and 1.5.
    for x in 0..8u32 {
        let u = (f64::from(x) + 0.5) / 4.0;
        let t = (u - 0.5).clamp(0.0, 1.0);
        close(px(&linear, 8, x, 0), [200.0 * t; 3], &format!("linear at {x}"));
    }
}

#[test]
fn overlay_colour_opacity_and_outline_maths() {
    let gpu = gpu();
    let mut r = SliceRenderer::new(&gpu.device, TARGET_FORMAT, 1);
    let (w, h) = (16u32, 16u32);
    let grey = 100u8;
    r.set_image(&gpu.device, &gpu.queue, VIEW, w, h, ImagePixels::U8(&vec![grey; (w * h) as usize])).unwrap();
    // Class slot 0 on the left half, slot 2 on the top half (they overlap top-left), slot 1
    // (hidden) everywhere.
    let bits: Vec<u16> = (0..w * h)
        .map(|i| {
            let (x, y) = (i % w, i / w);
            u16::from(x < 8) | 2 | (u16::from(y < 8) << 2)
        })
        .collect();
    r.set_mask(&gpu.device, &gpu.queue, VIEW, w, h, &bits).unwrap();
    let mut p = params_1to1();
    let (c0, a0) = ([200u8, 40, 10], 0.5f32);
    let (c2, a2) = ([10u8, 220, 250], 0.25f32);
    p.overlay.classes[0] = ClassStyle { rgb: c0, opacity: a0, visible: true };
    p.overlay.classes[1] = ClassStyle { rgb: [255, 0, 255], opacity: 1.0, visible: false };
    p.overlay.classes[2] = ClassStyle { rgb: c2, opacity: a2, visible: true };
    let target = Offscreen::new(&gpu.device, w, h);
    target.draw(&gpu.device, &gpu.queue, &mut r, &[(VIEW, p)], [0.0; 4]);
    let rgba = target.read_rgba(&gpu.device, &gpu.queue);
    let g = f64::from(grey);
    let over = |base: [f64; 3], c: [u8; 3], a: f32| -> [f64; 3] {
        let a = f64::from(a);
        [0, 1, 2].map(|i| base[i] * (1.0 - a) + f64::from(c[i]) * a)
    };
    close(px(&rgba, w, 12, 12), [g; 3], "no visible class");
    close(px(&rgba, w, 3, 12), over([g; 3], c0, a0), "class 0 alone");
    close(px(&rgba, w, 12, 3), over([g; 3], c2, a2), "class 2 alone");
    close(px(&rgba, w, 3, 3), over(over([g; 3], c0, a0), c2, a2), "class 0 then 2");

    // Outline mode, 1 px: only pixels next to a pixel without the class keep it.
    p.overlay.outline = true;
    p.overlay.outline_width_px = 1;
    p.overlay.classes[2].visible = false;
    target.draw(&gpu.device, &gpu.queue, &mut r, &[(VIEW, p)], [0.0; 4]);
    let rgba = target.read_rgba(&gpu.device, &gpu.queue);
    close(px(&rgba, w, 7, 5), over([g; 3], c0, a0), "boundary column of class 0");
    close(px(&rgba, w, 0, 5), over([g; 3], c0, a0), "image edge counts as boundary");
    close(px(&rgba, w, 4, 5), [g; 3], "interior of class 0");
    close(px(&rgba, w, 8, 5), [g; 3], "outside class 0");

    // Overlay off.
    p.overlay.visible = false;
    p.overlay.outline = false;
    target.draw(&gpu.device, &gpu.queue, &mut r, &[(VIEW, p)], [0.0; 4]);
    let rgba = target.read_rgba(&gpu.device, &gpu.queue);
    close(px(&rgba, w, 3, 3), [g; 3], "overlay hidden");
}

#[test]
fn mask_edits_upload_the_rectangle_only() {
    let gpu = gpu();
    let mut r = SliceRenderer::new(&gpu.device, TARGET_FORMAT, 1);
    let (w, h) = (64u32, 32u32);
    r.set_image(&gpu.device, &gpu.queue, VIEW, w, h, ImagePixels::U8(&vec![0; (w * h) as usize])).unwrap();
    r.set_mask(&gpu.device, &gpu.queue, VIEW, w, h, &vec![0; (w * h) as usize]).unwrap();
    let before = r.upload_stats();
    let rect = PixelRect { x0: 10, y0: 4, x1: 14, y1: 7 };
    r.update_mask_rect(&gpu.queue, VIEW, rect, &[1; 12]).unwrap();
    let after = r.upload_stats();
    assert_eq!((after.writes - before.writes, after.bytes - before.bytes), (1, 24), "4x3 px of 2 bytes");
    let mut p = params_1to1();
    p.overlay.classes[0] = ClassStyle { rgb: [255, 0, 0], opacity: 1.0, visible: true };
    let target = Offscreen::new(&gpu.device, w, h);
    target.draw(&gpu.device, &gpu.queue, &mut r, &[(VIEW, p)], [0.0; 4]);
    let rgba = target.read_rgba(&gpu.device, &gpu.queue);
    for y in 0..h {
        for x in 0..w {
            let inside = (10..14).contains(&x) && (4..7).contains(&y);
            assert_eq!(px(&rgba, w, x, y)[0], if inside { 255 } else { 0 }, "({x}, {y})");
        }
    }
    // Out of bounds and size mismatches are errors, not panics.
    let bad = PixelRect { x0: 60, y0: 0, x1: 70, y1: 1 };
    assert_eq!(r.update_mask_rect(&gpu.queue, VIEW, bad, &[0; 10]), Err(RenderError::BadRect { rect: bad }));
    assert!(matches!(
        r.set_image(&gpu.device, &gpu.queue, VIEW, 3, 3, ImagePixels::U8(&[0; 8])),
        Err(RenderError::BadLength { .. })
    ));
    // More tiles than the device has texture layers: refused before anything is read.
    let huge = r.max_texture_side_px() * (r.max_tiles() + 1);
    let e = r.set_mask(&gpu.device, &gpu.queue, VIEW, huge, 1, &[]).unwrap_err();
    assert!(matches!(e, RenderError::TooLarge { .. }) && e.to_string().contains("texture layers"), "{e}");
    assert!(matches!(r.set_mask(&gpu.device, &gpu.queue, VIEW, 0, 4, &[]), Err(RenderError::Empty { .. })));
}

/// Draws `views`' parameters over a `target` and returns each frame's pixels.
fn frames(gpu: &HeadlessGpu, r: &mut SliceRenderer, target: &Offscreen, params: &[ViewParams]) -> Vec<Vec<u8>> {
    params
        .iter()
        .map(|p| {
            target.draw(&gpu.device, &gpu.queue, r, &[(VIEW, *p)], [0.1, 0.2, 0.3, 1.0]);
            target.read_rgba(&gpu.device, &gpu.queue)
        })
        .collect()
}

/// Slices larger than a texture (issue 21): the image, masks and prediction cut into tiles of
/// 64 px at most are drawn exactly as one texture draws them, at every zoom, with bilinear
/// magnification and outlines reading across the tiles' borders, before and after a mask edit
/// that straddles them.
#[test]
fn an_image_cut_into_tiles_draws_as_one_texture() {
    use sam4em::render::Tiling;
    let gpu = gpu();
    let (w, h) = (150u32, 100u32);
    let image: Vec<u16> = (0..w * h).map(|i| ((i % w) * 37 + (i / w) * 101) as u16 % 4000).collect();
    // A disc and a bar of class 0, a square of class 3, across the tiles' borders (50 px apart).
    let bits: Vec<u16> = (0..w * h)
        .map(|i| {
            let (x, y) = ((i % w) as f32, (i / w) as f32);
            let disc = (x - 52.0).powi(2) + (y - 47.0).powi(2) < 400.0;
            let bar = (95.0..105.0).contains(&x);
            let square = (40.0..60.0).contains(&x) && (60.0..90.0).contains(&y);
            u16::from(disc || bar) | (u16::from(square) << 3)
        })
        .collect();
    let probabilities: Vec<f32> =
        (0..w * h).map(|i| ((i % w) as f32 / w as f32 + (i / w) as f32 / 300.0) % 1.0).collect();
    let mut plain = SliceRenderer::new(&gpu.device, TARGET_FORMAT, 1);
    let mut tiled = SliceRenderer::new(&gpu.device, TARGET_FORMAT, 1);
    tiled.limit_texture_side(64);
    let tiling = Tiling::new(w, h, 64);
    assert_eq!((tiling.across, tiling.down, tiling.tile_px), (3, 2, [50, 50]));
    for r in [&mut plain, &mut tiled] {
        r.set_image(&gpu.device, &gpu.queue, VIEW, w, h, ImagePixels::U16(&image)).unwrap();
        r.set_mask(&gpu.device, &gpu.queue, VIEW, w, h, &bits).unwrap();
        r.set_prediction(&gpu.device, &gpu.queue, VIEW, w, h, &probabilities).unwrap();
    }
    let mut base = params_1to1();
    base.window = [100.0, 3900.0];
    base.overlay.classes[0] = ClassStyle { rgb: [255, 60, 0], opacity: 0.6, visible: true };
    base.overlay.classes[3] = ClassStyle { rgb: [0, 90, 255], opacity: 0.5, visible: true };
    base.prediction.threshold = 0.7;
    base.prediction.soft = true;
    let mut zoomed = base;
    // 3.7 target px per texel, texel (40, 38) at the target's corner: the tiles' corner (50, 50)
    // is on screen.
    zoomed.screen_from_image = ScreenFromImage { scale: [3.7, 3.7], offset: [-40.0 * 3.7, -38.0 * 3.7] };
    let mut linear = zoomed;
    linear.magnification = Magnification::Linear;
    let mut outline = base;
    outline.overlay.outline = true;
    outline.overlay.outline_width_px = 3;
    outline.screen_from_image.scale = [0.8, 0.6];
    let mut outline_zoomed = zoomed;
    outline_zoomed.overlay.outline = true;
    let views = [base, zoomed, linear, outline, outline_zoomed];
    let target = Offscreen::new(&gpu.device, w, h);
    let want = frames(&gpu, &mut plain, &target, &views);
    assert_eq!(frames(&gpu, &mut tiled, &target, &views), want, "the tiled draw differs");
    // An edit across the four tiles meeting at (50, 50): one write per tile it touches.
    let rect = PixelRect { x0: 45, y0: 44, x1: 58, y1: 53 };
    let edit: Vec<u16> = (0..rect.width() * rect.height()).map(|i| if i % 3 == 0 { 4 } else { 1 }).collect();
    let mut p = base;
    p.overlay.classes[2] = ClassStyle { rgb: [0, 255, 0], opacity: 0.9, visible: true };
    for (i, r) in [&mut plain, &mut tiled].into_iter().enumerate() {
        let before = r.upload_stats();
        r.update_mask_rect(&gpu.queue, VIEW, rect, &edit).unwrap();
        let after = r.upload_stats();
        assert_eq!(after.bytes - before.bytes, u64::from(rect.width() * rect.height()) * 2);
        let writes = after.writes - before.writes;
        assert_eq!(writes, [1, 4][i], "one write per tile touched");
    }
    let want = frames(&gpu, &mut plain, &target, &[p, zoomed]);
    assert_eq!(frames(&gpu, &mut tiled, &target, &[p, zoomed]), want, "the tiled draw differs after an edit");
    assert_ne!(want[0], frames(&gpu, &mut plain, &target, &[base])[0], "the edit shows");
}

/// A slice wider than this device's largest texture (16384 px on lavapipe): refused before
/// tiles, now drawn from two; the texels on both sides of the border are where they belong.
#[test]
fn a_slice_wider_than_the_largest_texture_is_drawn() {
    let gpu = gpu();
    let mut r = SliceRenderer::new(&gpu.device, TARGET_FORMAT, 1);
    let max = r.max_texture_side_px();
    let (w, h) = (max + 100, 2u32);
    let image: Vec<u8> = (0..w * h).map(|i| ((i % w) % 251) as u8).collect();
    r.set_image(&gpu.device, &gpu.queue, VIEW, w, h, ImagePixels::U8(&image)).unwrap();
    r.set_prediction(&gpu.device, &gpu.queue, VIEW, w, h, &vec![0.0; (w * h) as usize]).unwrap();
    let border = w.div_ceil(2);
    // 32 texels around the border between the two tiles, one per target pixel.
    let mut p = params_1to1();
    p.screen_from_image.offset = [16.0 - border as f32, 0.0];
    let target = Offscreen::new(&gpu.device, 32, h);
    target.draw(&gpu.device, &gpu.queue, &mut r, &[(VIEW, p)], [0.0; 4]);
    let rgba = target.read_rgba(&gpu.device, &gpu.queue);
    for x in 0..32 {
        let want = ((border - 16 + x) % 251) as f64;
        close(px(&rgba, 32, x, 1), [want; 3], &format!("texel {}", border - 16 + x));
    }
}

/// The model's maps go up as bytes (an 8-bit texture, a quarter of the memory): drawn exactly
/// as the same probabilities as floats, the threshold's rule (p > t) included at 102 / 255 = 0.4.
#[test]
fn a_prediction_as_bytes_draws_as_the_same_floats() {
    let gpu = gpu();
    let bytes: Vec<u8> = vec![0, 101, 102, 103, 180, 255, 40, 250];
    let floats: Vec<f32> = bytes.iter().map(|&v| f32::from(v) / 255.0).collect();
    let mut p = params_1to1();
    p.prediction.threshold = 0.4;
    p.prediction.soft = true;
    p.prediction.opacity = 0.9;
    let target = Offscreen::new(&gpu.device, 8, 1);
    let mut drawn = Vec::new();
    for as_bytes in [false, true] {
        let mut r = SliceRenderer::new(&gpu.device, TARGET_FORMAT, 1);
        r.set_image(&gpu.device, &gpu.queue, VIEW, 8, 1, ImagePixels::U8(&[30; 8])).unwrap();
        if as_bytes {
            r.set_prediction_bytes(&gpu.device, &gpu.queue, VIEW, 8, 1, &bytes).unwrap();
        } else {
            r.set_prediction(&gpu.device, &gpu.queue, VIEW, 8, 1, &floats).unwrap();
        }
        target.draw(&gpu.device, &gpu.queue, &mut r, &[(VIEW, p)], [0.0; 4]);
        drawn.push(target.read_rgba(&gpu.device, &gpu.queue));
    }
    assert_eq!(drawn[0], drawn[1]);
    assert_eq!(px(&drawn[1], 8, 2, 0), px(&drawn[1], 8, 0, 0), "102 / 255 is 0.4: not above the threshold");
    assert_ne!(px(&drawn[1], 8, 3, 0), px(&drawn[1], 8, 0, 0), "103 / 255 is");
}

#[test]
fn prediction_threshold_tint_and_soft_mode() {
    let gpu = gpu();
    let mut r = SliceRenderer::new(&gpu.device, TARGET_FORMAT, 1);
    r.set_image(&gpu.device, &gpu.queue, VIEW, 4, 1, ImagePixels::U8(&[0; 4])).unwrap();
    r.set_prediction(&gpu.device, &gpu.queue, VIEW, 4, 1, &[0.1, 0.49, 0.6, 1.0]).unwrap();
    let mut p = params_1to1();
    p.prediction.threshold = 0.5;
    p.prediction.opacity = 0.8;
    p.prediction.tint = [0, 200, 100];
    let target = Offscreen::new(&gpu.device, 4, 1);
    target.draw(&gpu.device, &gpu.queue, &mut r, &[(VIEW, p)], [0.0; 4]);
    let hard = target.read_rgba(&gpu.device, &gpu.queue);
    close(px(&hard, 4, 0, 0), [0.0; 3], "below threshold");
    close(px(&hard, 4, 1, 0), [0.0; 3], "just below threshold");
    close(px(&hard, 4, 2, 0), [0.0, 160.0, 80.0], "above threshold");
    close(px(&hard, 4, 3, 0), [0.0, 160.0, 80.0], "certain");
    p.prediction.soft = true;
    target.draw(&gpu.device, &gpu.queue, &mut r, &[(VIEW, p)], [0.0; 4]);
    let soft = target.read_rgba(&gpu.device, &gpu.queue);
    close(px(&soft, 4, 2, 0), [0.0, 200.0 * 0.8 * 0.6, 100.0 * 0.8 * 0.6], "soft 0.6");
    close(px(&soft, 4, 3, 0), [0.0, 160.0, 80.0], "soft 1.0");
    p.prediction.visible = false;
    target.draw(&gpu.device, &gpu.queue, &mut r, &[(VIEW, p)], [0.0; 4]);
    close(px(&target.read_rgba(&gpu.device, &gpu.queue), 4, 3, 0), [0.0; 3], "hidden");
}

#[test]
fn one_wgpu_in_the_lock_file() {
    // UI and model can share a device only while eframe and burn link the same wgpu.
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock")).unwrap();
    let versions: Vec<&str> = lock
        .split("[[package]]")
        .filter(|p| p.lines().any(|l| l.trim() == "name = \"wgpu\""))
        .filter_map(|p| p.lines().find_map(|l| l.trim().strip_prefix("version = ")))
        .collect();
    assert_eq!(versions.len(), 1, "several wgpu versions in Cargo.lock: {versions:?}");
}
