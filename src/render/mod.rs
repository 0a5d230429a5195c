//! Rendering with wgpu: the shared device ([`device`]), the slice / overlay / prediction
//! pipelines and their textures ([`slice_renderer`]), the egui paint callback that draws them
//! inside the window ([`callback`]) and an offscreen target for tests and benchmarks
//! ([`headless`]).
//!
//! Takes plain bytes and its own parameter structs; never sees `state` types, egui widgets or
//! burn (the model shares the device through `model::device`).

pub mod callback;
pub mod device;
pub mod headless;
pub mod shaders;
pub mod slice_renderer;

pub use callback::SliceViewCallback;
pub use device::{DeviceCaps, HeadlessGpu, ModelDevicePlan};
pub use slice_renderer::{
    CLASS_SLOTS, ClassStyle, ImagePixels, Magnification, OverlayParams, PixelRect, PredictionParams, RenderError,
    ScreenFromImage, SliceRenderer, Tiling, UploadStats, ViewId, ViewParams,
};
