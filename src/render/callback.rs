//! The egui side of the slice renderer: a paint callback that draws one view inside an egui
//! rect, and helpers to reach the renderer kept in egui-wgpu's callback resources.

use eframe::egui_wgpu::{self, CallbackResources, CallbackTrait, RenderState, ScreenDescriptor};
use eframe::{egui, wgpu};

use super::slice_renderer::{SliceRenderer, ViewId, ViewParams};

/// Draws view `view` with `params` when egui paints the frame.
#[derive(Debug, Clone, Copy)]
pub struct SliceViewCallback {
    /// Which view.
    pub view: ViewId,
    /// Its parameters this frame.
    pub params: ViewParams,
}

impl SliceViewCallback {
    /// The egui shape that runs the callback over `rect` (drawing is clipped to it).
    pub fn shape(self, rect: egui::Rect) -> egui::Shape {
        egui::Shape::Callback(egui_wgpu::Callback::new_paint_callback(rect, self))
    }
}

impl CallbackTrait for SliceViewCallback {
    fn prepare(
        &self,
        _device: &wgpu::Device,
        queue: &wgpu::Queue,
        screen: &ScreenDescriptor,
        _encoder: &mut wgpu::CommandEncoder,
        resources: &mut CallbackResources,
    ) -> Vec<wgpu::CommandBuffer> {
        if let Some(renderer) = resources.get_mut::<SliceRenderer>() {
            renderer.prepare(queue, self.view, &self.params, screen.size_in_pixels, screen.pixels_per_point);
        }
        Vec::new()
    }

    fn paint(
        &self,
        info: egui::PaintCallbackInfo,
        pass: &mut wgpu::RenderPass<'static>,
        resources: &CallbackResources,
    ) {
        let Some(renderer) = resources.get::<SliceRenderer>() else { return };
        // The uniform maps image space to the whole target, so the viewport covers it; egui's
        // scissor rect still clips drawing to the view.
        let [w, h] = info.screen_size_px;
        pass.set_viewport(0.0, 0.0, w as f32, h as f32, 0.0, 1.0);
        renderer.paint(pass, self.view);
    }
}

/// Puts a [`SliceRenderer`] for egui's target into the callback resources (once per app).
pub fn install(render_state: &RenderState, msaa_samples: u32) {
    let renderer = SliceRenderer::new(&render_state.device, render_state.target_format, msaa_samples);
    render_state.renderer.write().callback_resources.insert(renderer);
}

/// Runs `f` on the installed renderer with the device and queue (uploads happen here, on the
/// UI thread, only when content changed). `None` when [`install`] was not called.
pub fn with_renderer<R>(
    render_state: &RenderState,
    f: impl FnOnce(&mut SliceRenderer, &wgpu::Device, &wgpu::Queue) -> R,
) -> Option<R> {
    let mut egui_renderer = render_state.renderer.write();
    let renderer = egui_renderer.callback_resources.get_mut::<SliceRenderer>()?;
    Some(f(renderer, &render_state.device, &render_state.queue))
}
