//! The slice view's GPU side: per view, one texture for the EM slice (its raw samples, 8/16/32
//! bit), one for the class masks (a 16-bit set of class slots per pixel) and one for a
//! prediction (probabilities), drawn in that order by the three shaders in `shaders/`.
//!
//! Each texture is a 2D array: an image larger than the device's largest texture side
//! (`max_texture_dimension_2d`, 8192 to 32768 px) is cut into a grid of equal tiles, one per
//! array layer ([`Tiling`]), and the shaders find each texel's layer themselves, so a slice is
//! still drawn as one quad and every filter (bilinear magnification, the overlay's outline)
//! reads across tile borders as within a tile: no seams, and the same pixels as one texture.
//! An image that fits is one layer.
//!
//! Textures are written only through the `set_*` / `update_*` calls, which the caller makes
//! when content changes; drawing a frame writes nothing but the small uniform block. Mask edits
//! go through [`SliceRenderer::update_mask_rect`], which uploads the edited rectangle only.

use std::collections::HashMap;

use eframe::wgpu;

use super::shaders;

/// Class slots the overlay shader draws at once (bits of the mask texture).
pub const CLASS_SLOTS: usize = 16;

/// Most bytes one texture write stages: a larger upload (a 16384² probability map is 1 GiB) is
/// written in bands of rows.
const MAX_WRITE_BYTES: u32 = 64 << 20;

/// Which view of the stack: the app uses one per plane (XY, XZ, YZ).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ViewId(pub u32);

/// Raw samples of one image, row-major, tightly packed.
#[derive(Debug, Clone, Copy)]
pub enum ImagePixels<'a> {
    /// 8-bit samples.
    U8(&'a [u8]),
    /// 16-bit samples.
    U16(&'a [u16]),
    /// 32-bit unsigned samples.
    U32(&'a [u32]),
    /// 32-bit float samples.
    F32(&'a [f32]),
}

impl ImagePixels<'_> {
    fn format(&self) -> wgpu::TextureFormat {
        match self {
            ImagePixels::U8(_) => wgpu::TextureFormat::R8Uint,
            ImagePixels::U16(_) => wgpu::TextureFormat::R16Uint,
            ImagePixels::U32(_) => wgpu::TextureFormat::R32Uint,
            ImagePixels::F32(_) => wgpu::TextureFormat::R32Float,
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            ImagePixels::U8(v) => v,
            ImagePixels::U16(v) => bytemuck::cast_slice(v),
            ImagePixels::U32(v) => bytemuck::cast_slice(v),
            ImagePixels::F32(v) => bytemuck::cast_slice(v),
        }
    }

    fn len(&self) -> usize {
        match self {
            ImagePixels::U8(v) => v.len(),
            ImagePixels::U16(v) => v.len(),
            ImagePixels::U32(v) => v.len(),
            ImagePixels::F32(v) => v.len(),
        }
    }
}

/// A rectangle of pixels: `x0..x1`, `y0..y1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelRect {
    /// First column.
    pub x0: u32,
    /// First row.
    pub y0: u32,
    /// One past the last column.
    pub x1: u32,
    /// One past the last row.
    pub y1: u32,
}

impl PixelRect {
    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.x1.saturating_sub(self.x0)
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.y1.saturating_sub(self.y0)
    }
}

/// How the image maps onto the window: `screen = image * scale + offset`, in egui points
/// (image coordinates in texels, (0, 0) at the image's top-left corner).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScreenFromImage {
    /// Points per texel along x and y (they differ in orthogonal views of anisotropic stacks).
    pub scale: [f32; 2],
    /// Screen position of the image's top-left corner, points.
    pub offset: [f32; 2],
}

/// Magnification filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Magnification {
    /// Each texel a sharp square: what proofreaders want at high zoom.
    #[default]
    Nearest,
    /// Bilinear.
    Linear,
}

/// Display style of one class slot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassStyle {
    /// sRGB colour.
    pub rgb: [u8; 3],
    /// 0 (invisible) ..= 1 (opaque).
    pub opacity: f32,
    /// Whether the class is drawn.
    pub visible: bool,
}

impl Default for ClassStyle {
    fn default() -> Self {
        Self { rgb: [255, 255, 255], opacity: 0.0, visible: false }
    }
}

/// The overlay's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OverlayParams {
    /// Draw the overlay at all.
    pub visible: bool,
    /// Boundaries only instead of filled regions.
    pub outline: bool,
    /// Outline width in screen pixels.
    pub outline_width_px: u32,
    /// Style per class slot (bit `i` of the mask texture is slot `i`).
    pub classes: [ClassStyle; CLASS_SLOTS],
}

impl Default for OverlayParams {
    fn default() -> Self {
        Self { visible: true, outline: false, outline_width_px: 2, classes: [ClassStyle::default(); CLASS_SLOTS] }
    }
}

/// The prediction layer's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PredictionParams {
    /// Draw the layer at all.
    pub visible: bool,
    /// Probabilities below this are not drawn.
    pub threshold: f32,
    /// Opacity of the tint.
    pub opacity: f32,
    /// Scale the opacity by the probability.
    pub soft: bool,
    /// sRGB tint.
    pub tint: [u8; 3],
}

impl Default for PredictionParams {
    fn default() -> Self {
        Self { visible: true, threshold: 0.5, opacity: 0.5, soft: false, tint: [255, 0, 255] }
    }
}

/// Everything one view needs to draw a frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ViewParams {
    /// Placement on screen.
    pub screen_from_image: ScreenFromImage,
    /// Raw sample values shown as black and white.
    pub window: [f32; 2],
    /// Display gamma (1 = linear; > 1 darkens mid-tones).
    pub gamma: f32,
    /// Black ↔ white.
    pub invert: bool,
    /// Magnification filter (slice and prediction).
    pub magnification: Magnification,
    /// Class overlay.
    pub overlay: OverlayParams,
    /// Prediction layer.
    pub prediction: PredictionParams,
}

/// Errors of the renderer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// The image needs more tiles than the device has texture array layers.
    #[error(
        "a {width}x{height} px image needs more than this GPU's {layers} texture layers of at most {max} px a side"
    )]
    TooLarge {
        /// Image width.
        width: u32,
        /// Image height.
        height: u32,
        /// Largest texture side, px.
        max: u32,
        /// Most layers in a texture array.
        layers: u32,
    },
    /// An image without pixels.
    #[error("{what}: a {width}x{height} px image has no pixels")]
    Empty {
        /// Which layer.
        what: &'static str,
        /// Width.
        width: u32,
        /// Height.
        height: u32,
    },
    /// Data length does not match the stated size.
    #[error("{what}: {got} samples given for a {width}x{height} px image")]
    BadLength {
        /// Which layer.
        what: &'static str,
        /// Samples given.
        got: usize,
        /// Width.
        width: u32,
        /// Height.
        height: u32,
    },
    /// A mask rectangle was sent for a view without a mask, or beyond it.
    #[error("mask update {rect:?} does not fit the view's mask")]
    BadRect {
        /// The rectangle.
        rect: PixelRect,
    },
}

/// How an image is cut into the layers of a texture array: `across × down` tiles of
/// `tile_px` texels (the last column and row may be narrower), layer `row · across + column`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiling {
    /// Tile width and height, texels (every layer's size).
    pub tile_px: [u32; 2],
    /// Tiles across.
    pub across: u32,
    /// Tiles down.
    pub down: u32,
}

impl Tiling {
    /// The fewest tiles of at most `max_side` texels a side that cover a `width × height` image,
    /// as equal as they can be (so the layers waste at most a row and a column each).
    pub fn new(width: u32, height: u32, max_side: u32) -> Self {
        let max_side = max_side.max(1);
        let (across, down) = (width.div_ceil(max_side).max(1), height.div_ceil(max_side).max(1));
        Tiling { tile_px: [width.div_ceil(across).max(1), height.div_ceil(down).max(1)], across, down }
    }

    /// Array layers.
    pub fn layers(&self) -> u32 {
        self.across * self.down
    }

    /// The image rectangle of layer `layer`, clipped to a `size` image.
    pub fn rect(&self, layer: u32, size: [u32; 2]) -> PixelRect {
        let (col, row) = (layer % self.across, layer / self.across);
        let (x0, y0) = (col * self.tile_px[0], row * self.tile_px[1]);
        PixelRect { x0, y0, x1: (x0 + self.tile_px[0]).min(size[0]), y1: (y0 + self.tile_px[1]).min(size[1]) }
    }
}

/// Bytes and texture writes so far, so tests and the status bar can see what was uploaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UploadStats {
    /// Texture writes.
    pub writes: u64,
    /// Bytes written to textures.
    pub bytes: u64,
}

/// The uniform block of `shaders/common.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Uniform {
    ndc_from_image: [f32; 4],
    image_size: [f32; 4],
    window: [f32; 4],
    flags: [u32; 4],
    prediction: [f32; 4],
    prediction_tint: [f32; 4],
    tiling: [u32; 4],
    class_color: [[f32; 4]; CLASS_SLOTS],
}

fn unit(c: u8) -> f32 {
    f32::from(c) / 255.0
}

impl Uniform {
    /// `bytes_prediction`: the prediction texture holds bytes (`v / 255`), thresholded by the
    /// byte rule (`v > floor(threshold · 255)`, `state::probability_cut`) so that the GPU's
    /// rounding of `v / 255` never moves a pixel across the threshold.
    fn new(
        p: &ViewParams,
        image: &Layer,
        bytes_prediction: bool,
        target_size_px: [u32; 2],
        pixels_per_point: f32,
    ) -> Self {
        let image_size = image.size;
        // Image texel -> physical pixel -> NDC of the whole target (y up).
        let [tw, th] = target_size_px.map(|v| v.max(1) as f32);
        let sx = p.screen_from_image.scale[0] * pixels_per_point;
        let sy = p.screen_from_image.scale[1] * pixels_per_point;
        let ox = p.screen_from_image.offset[0] * pixels_per_point;
        let oy = p.screen_from_image.offset[1] * pixels_per_point;
        let ndc_from_image = [2.0 * sx / tw, -2.0 * sy / th, 2.0 * ox / tw - 1.0, 1.0 - 2.0 * oy / th];
        let mut visible_bits = 0u32;
        let mut class_color = [[0.0; 4]; CLASS_SLOTS];
        for (slot, style) in p.overlay.classes.iter().enumerate() {
            if style.visible && style.opacity > 0.0 {
                visible_bits |= 1 << slot;
            }
            class_color[slot] =
                [unit(style.rgb[0]), unit(style.rgb[1]), unit(style.rgb[2]), style.opacity.clamp(0.0, 1.0)];
        }
        let pr = &p.prediction;
        Self {
            ndc_from_image,
            image_size: [image_size[0] as f32, image_size[1] as f32, 0.0, 0.0],
            window: [p.window[0], p.window[1], p.gamma.max(1e-3), if p.invert { 1.0 } else { 0.0 }],
            flags: [
                u32::from(p.magnification == Magnification::Linear),
                u32::from(p.overlay.outline),
                p.overlay.outline_width_px.max(1),
                visible_bits,
            ],
            prediction: [
                pr.threshold,
                pr.opacity.clamp(0.0, 1.0),
                if pr.soft { 1.0 } else { 0.0 },
                if bytes_prediction { (f64::from(pr.threshold) * 255.0).floor() as f32 } else { -1.0 },
            ],
            prediction_tint: [unit(pr.tint[0]), unit(pr.tint[1]), unit(pr.tint[2]), 0.0],
            tiling: [image.tiling.tile_px[0], image.tiling.tile_px[1], image.tiling.across, 0],
            class_color,
        }
    }
}

struct Layer {
    texture: wgpu::Texture,
    bind_group: wgpu::BindGroup,
    size: [u32; 2],
    tiling: Tiling,
    format: wgpu::TextureFormat,
}

/// The three textures of a view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LayerSlot {
    Image,
    Mask,
    Prediction,
}

struct ViewGpu {
    uniform: wgpu::Buffer,
    uniform_bind_group: wgpu::BindGroup,
    image: Option<Layer>,
    mask: Option<Layer>,
    prediction: Option<Layer>,
    overlay_visible: bool,
    prediction_visible: bool,
}

/// Pipelines, layouts and per-view textures. Create one per target format; keep it in the
/// egui-wgpu callback resources (see [`super::callback`]) or use it directly on any render
/// pass (see [`super::headless`]).
pub struct SliceRenderer {
    uniform_layout: wgpu::BindGroupLayout,
    uint_layout: wgpu::BindGroupLayout,
    float_layout: wgpu::BindGroupLayout,
    single_uint_layout: wgpu::BindGroupLayout,
    single_float_layout: wgpu::BindGroupLayout,
    slice_uint: wgpu::RenderPipeline,
    slice_float: wgpu::RenderPipeline,
    overlay: wgpu::RenderPipeline,
    prediction: wgpu::RenderPipeline,
    max_texture_side_px: u32,
    max_layers: u32,
    views: HashMap<ViewId, ViewGpu>,
    stats: UploadStats,
}

fn texture_entry(binding: u32, sample_type: wgpu::TextureSampleType) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::FRAGMENT,
        ty: wgpu::BindingType::Texture {
            sample_type,
            view_dimension: wgpu::TextureViewDimension::D2Array,
            multisampled: false,
        },
        count: None,
    }
}

impl SliceRenderer {
    /// Builds the pipelines for a colour target of `target_format` with `msaa_samples` samples
    /// (egui's render pass: its surface format, 1 sample unless multisampling is on).
    pub fn new(device: &wgpu::Device, target_format: wgpu::TextureFormat, msaa_samples: u32) -> Self {
        let uniform_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("slice view uniform"),
            entries: &[wgpu::BindGroupLayoutEntry {
                binding: 0,
                visibility: wgpu::ShaderStages::VERTEX_FRAGMENT,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: false,
                    min_binding_size: wgpu::BufferSize::new(std::mem::size_of::<Uniform>() as u64),
                },
                count: None,
            }],
        });
        let layout = |label, entry| {
            device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(label), entries: &[entry] })
        };
        // The slice shader declares its integer texture at binding 0 and its float one at 1.
        let uint_layout = layout("slice image (uint)", texture_entry(0, wgpu::TextureSampleType::Uint));
        let float_layout =
            layout("slice image (float)", texture_entry(1, wgpu::TextureSampleType::Float { filterable: false }));
        let single_uint_layout = layout("mask", texture_entry(0, wgpu::TextureSampleType::Uint));
        let single_float_layout =
            layout("probability", texture_entry(0, wgpu::TextureSampleType::Float { filterable: false }));

        let pipeline = |label: &str, source: &str, entry: &str, texture_layout: &wgpu::BindGroupLayout, blend| {
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(label),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
            let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(label),
                bind_group_layouts: &[Some(&uniform_layout), Some(texture_layout)],
                immediate_size: 0,
            });
            device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
                label: Some(label),
                layout: Some(&layout),
                vertex: wgpu::VertexState {
                    module: &module,
                    entry_point: Some("vs_main"),
                    compilation_options: Default::default(),
                    buffers: &[],
                },
                primitive: wgpu::PrimitiveState {
                    topology: wgpu::PrimitiveTopology::TriangleStrip,
                    ..Default::default()
                },
                depth_stencil: None,
                multisample: wgpu::MultisampleState { count: msaa_samples.max(1), ..Default::default() },
                fragment: Some(wgpu::FragmentState {
                    module: &module,
                    entry_point: Some(entry),
                    compilation_options: Default::default(),
                    targets: &[Some(wgpu::ColorTargetState {
                        format: target_format,
                        blend,
                        write_mask: wgpu::ColorWrites::ALL,
                    })],
                }),
                multiview_mask: None,
                cache: None,
            })
        };
        let premultiplied = Some(wgpu::BlendState::PREMULTIPLIED_ALPHA_BLENDING);
        Self {
            slice_uint: pipeline("slice (uint)", shaders::SLICE, "fs_uint", &uint_layout, None),
            slice_float: pipeline("slice (float)", shaders::SLICE, "fs_float", &float_layout, None),
            overlay: pipeline("overlay", shaders::OVERLAY, "fs_overlay", &single_uint_layout, premultiplied),
            prediction: pipeline(
                "prediction",
                shaders::PREDICTION,
                "fs_prediction",
                &single_float_layout,
                premultiplied,
            ),
            uniform_layout,
            uint_layout,
            float_layout,
            single_uint_layout,
            single_float_layout,
            max_texture_side_px: device.limits().max_texture_dimension_2d,
            max_layers: device.limits().max_texture_array_layers,
            views: HashMap::new(),
            stats: UploadStats::default(),
        }
    }

    /// Texture uploads so far.
    pub fn upload_stats(&self) -> UploadStats {
        self.stats
    }

    /// Largest side of one texture (one tile of an image; [`Tiling`]).
    pub fn max_texture_side_px(&self) -> u32 {
        self.max_texture_side_px
    }

    /// Most tiles an image may be cut into (the device's texture array layers).
    pub fn max_tiles(&self) -> u32 {
        self.max_layers
    }

    /// Cuts images into tiles of at most `px` a side (at most the device's limit) from the
    /// next upload on: how tests draw images larger than a tile on any device.
    pub fn limit_texture_side(&mut self, px: u32) {
        self.max_texture_side_px = px.clamp(1, self.max_texture_side_px);
    }

    fn view_mut(&mut self, device: &wgpu::Device, view: ViewId) -> &mut ViewGpu {
        self.views.entry(view).or_insert_with(|| {
            let uniform = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("slice view uniform"),
                size: std::mem::size_of::<Uniform>() as u64,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let uniform_bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("slice view uniform"),
                layout: &self.uniform_layout,
                entries: &[wgpu::BindGroupEntry { binding: 0, resource: uniform.as_entire_binding() }],
            });
            ViewGpu {
                uniform,
                uniform_bind_group,
                image: None,
                mask: None,
                prediction: None,
                overlay_visible: false,
                prediction_visible: false,
            }
        })
    }

    /// The tiling of a `width × height` image of `len` samples, checked.
    fn check_size(&self, what: &'static str, width: u32, height: u32, len: usize) -> Result<Tiling, RenderError> {
        if width == 0 || height == 0 {
            return Err(RenderError::Empty { what, width, height });
        }
        let tiling = Tiling::new(width, height, self.max_texture_side_px);
        if u64::from(tiling.across) * u64::from(tiling.down) > u64::from(self.max_layers) {
            return Err(RenderError::TooLarge {
                width,
                height,
                max: self.max_texture_side_px,
                layers: self.max_layers,
            });
        }
        if len != width as usize * height as usize {
            return Err(RenderError::BadLength { what, got: len, width, height });
        }
        Ok(tiling)
    }

    /// Makes sure `slot` holds a texture array for a `size` image cut as `tiling`, of `format`,
    /// reusing the existing one when it matches.
    #[allow(clippy::too_many_arguments)]
    fn ensure_layer(
        device: &wgpu::Device,
        slot: &mut Option<Layer>,
        label: &str,
        layout: &wgpu::BindGroupLayout,
        binding: u32,
        size: [u32; 2],
        tiling: Tiling,
        format: wgpu::TextureFormat,
    ) {
        if slot.as_ref().is_some_and(|l| l.size == size && l.tiling == tiling && l.format == format) {
            return;
        }
        let texture = device.create_texture(&wgpu::TextureDescriptor {
            label: Some(label),
            size: wgpu::Extent3d {
                width: tiling.tile_px[0],
                height: tiling.tile_px[1],
                depth_or_array_layers: tiling.layers(),
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format,
            usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
            view_formats: &[],
        });
        let view = texture.create_view(&wgpu::TextureViewDescriptor {
            dimension: Some(wgpu::TextureViewDimension::D2Array),
            ..Default::default()
        });
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(label),
            layout,
            entries: &[wgpu::BindGroupEntry { binding, resource: wgpu::BindingResource::TextureView(&view) }],
        });
        *slot = Some(Layer { texture, bind_group, size, tiling, format });
    }

    /// Writes the image rectangle `rect` into `layer`'s tiles, one write per tile it touches
    /// (and per band of at most [`MAX_WRITE_BYTES`], so no staging copy is huge). `bytes` holds
    /// the samples of a region of the image whose top-left pixel is `origin`, `row_px` samples
    /// per row; `rect` lies inside it.
    fn write_rect(
        stats: &mut UploadStats,
        queue: &wgpu::Queue,
        layer: &Layer,
        rect: PixelRect,
        bytes: &[u8],
        origin: [u32; 2],
        row_px: u32,
    ) {
        let texel_bytes = layer.format.block_copy_size(None).unwrap_or(1);
        for l in 0..layer.tiling.layers() {
            let tile = layer.tiling.rect(l, layer.size);
            let (x0, x1) = (rect.x0.max(tile.x0), rect.x1.min(tile.x1));
            let (y0, y1) = (rect.y0.max(tile.y0), rect.y1.min(tile.y1));
            if x0 >= x1 || y0 >= y1 {
                continue;
            }
            let row_bytes = (x1 - x0) * texel_bytes;
            let band_rows = (MAX_WRITE_BYTES / row_bytes).max(1);
            let mut y = y0;
            while y < y1 {
                let rows = band_rows.min(y1 - y);
                let first = u64::from(y - origin[1]) * u64::from(row_px) + u64::from(x0 - origin[0]);
                queue.write_texture(
                    wgpu::TexelCopyTextureInfo {
                        texture: &layer.texture,
                        mip_level: 0,
                        origin: wgpu::Origin3d { x: x0 - tile.x0, y: y - tile.y0, z: l },
                        aspect: wgpu::TextureAspect::All,
                    },
                    bytes,
                    wgpu::TexelCopyBufferLayout {
                        offset: first * u64::from(texel_bytes),
                        bytes_per_row: Some(row_px * texel_bytes),
                        rows_per_image: None,
                    },
                    wgpu::Extent3d { width: x1 - x0, height: rows, depth_or_array_layers: 1 },
                );
                stats.writes += 1;
                stats.bytes += u64::from(row_bytes) * u64::from(rows);
                y += rows;
            }
        }
    }

    /// Checks a `size` image of `samples` samples ([`Self::check_size`], `what` naming the
    /// layer), (re)creates the `slot` texture of `view` when its size, tiling or format
    /// changed, then writes all of it.
    #[allow(clippy::too_many_arguments)]
    fn upload_layer(
        &mut self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        view: ViewId,
        slot: LayerSlot,
        size: [u32; 2],
        samples: usize,
        format: wgpu::TextureFormat,
        bytes: &[u8],
    ) -> Result<(), RenderError> {
        let what = match slot {
            LayerSlot::Image => "image",
            LayerSlot::Mask => "mask",
            LayerSlot::Prediction => "prediction",
        };
        let tiling = self.check_size(what, size[0], size[1], samples)?;
        let (label, layout, binding) = match (slot, format) {
            (LayerSlot::Image, wgpu::TextureFormat::R32Float) => ("slice image", self.float_layout.clone(), 1),
            (LayerSlot::Image, _) => ("slice image", self.uint_layout.clone(), 0),
            (LayerSlot::Mask, _) => ("class mask", self.single_uint_layout.clone(), 0),
            (LayerSlot::Prediction, _) => ("prediction", self.single_float_layout.clone(), 0),
        };
        let mut stats = self.stats;
        let v = self.view_mut(device, view);
        let layer = match slot {
            LayerSlot::Image => &mut v.image,
            LayerSlot::Mask => &mut v.mask,
            LayerSlot::Prediction => &mut v.prediction,
        };
        Self::ensure_layer(device, layer, label, &layout, binding, size, tiling, format);
        let layer = layer.as_ref().expect("just ensured");
        let whole = PixelRect { x0: 0, y0: 0, x1: size[0], y1: size[1] };
        Self::write_rect(&mut stats, queue, layer, whole, bytes, [0, 0], size[0]);
        self.stats = stats;
        Ok(())
    }

    /// Uploads the EM image of `view` (its raw samples; the shader windows them).
    pub fn set_image(
        &mut self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        view: ViewId,
        width: u32,
        height: u32,
        pixels: ImagePixels<'_>,
    ) -> Result<(), RenderError> {
        let (format, bytes) = (pixels.format(), pixels.bytes());
        self.upload_layer(device, queue, view, LayerSlot::Image, [width, height], pixels.len(), format, bytes)
    }

    /// Uploads the whole class mask of `view`: per pixel, bit `i` set where the class in slot
    /// `i` covers it.
    pub fn set_mask(
        &mut self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        view: ViewId,
        width: u32,
        height: u32,
        bits: &[u16],
    ) -> Result<(), RenderError> {
        let (format, bytes) = (wgpu::TextureFormat::R16Uint, bytemuck::cast_slice(bits));
        self.upload_layer(device, queue, view, LayerSlot::Mask, [width, height], bits.len(), format, bytes)
    }

    /// Uploads an edited rectangle of the mask of `view`; `bits` holds the rectangle's pixels,
    /// row-major.
    pub fn update_mask_rect(
        &mut self,
        queue: &wgpu::Queue,
        view: ViewId,
        rect: PixelRect,
        bits: &[u16],
    ) -> Result<(), RenderError> {
        let Some(layer) = self.views.get(&view).and_then(|v| v.mask.as_ref()) else {
            return Err(RenderError::BadRect { rect });
        };
        if rect.width() == 0 || rect.height() == 0 || rect.x1 > layer.size[0] || rect.y1 > layer.size[1] {
            return Err(RenderError::BadRect { rect });
        }
        if bits.len() != (rect.width() * rect.height()) as usize {
            return Err(RenderError::BadLength {
                what: "mask rectangle",
                got: bits.len(),
                width: rect.width(),
                height: rect.height(),
            });
        }
        let bytes = bytemuck::cast_slice(bits);
        Self::write_rect(&mut self.stats, queue, layer, rect, bytes, [rect.x0, rect.y0], rect.width());
        Ok(())
    }

    /// Drops the mask of `view` (nothing to overlay).
    pub fn clear_mask(&mut self, view: ViewId) {
        if let Some(v) = self.views.get_mut(&view) {
            v.mask = None;
        }
    }

    /// Uploads a probability map for `view` (values 0..1).
    pub fn set_prediction(
        &mut self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        view: ViewId,
        width: u32,
        height: u32,
        probabilities: &[f32],
    ) -> Result<(), RenderError> {
        let (format, bytes) = (wgpu::TextureFormat::R32Float, bytemuck::cast_slice(probabilities));
        let samples = probabilities.len();
        self.upload_layer(device, queue, view, LayerSlot::Prediction, [width, height], samples, format, bytes)
    }

    /// Uploads a probability map for `view` as bytes (0–255 for 0..1, the model's maps): a
    /// quarter of the texture memory of [`SliceRenderer::set_prediction`] (256 MiB instead of
    /// 1 GiB for a 16384² slice), drawn the same (the shader reads `v / 255`).
    pub fn set_prediction_bytes(
        &mut self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        view: ViewId,
        width: u32,
        height: u32,
        probabilities: &[u8],
    ) -> Result<(), RenderError> {
        let (format, samples) = (wgpu::TextureFormat::R8Unorm, probabilities.len());
        self.upload_layer(device, queue, view, LayerSlot::Prediction, [width, height], samples, format, probabilities)
    }

    /// Drops the prediction of `view`.
    pub fn clear_prediction(&mut self, view: ViewId) {
        if let Some(v) = self.views.get_mut(&view) {
            v.prediction = None;
        }
    }

    /// Drops everything held for `view`.
    pub fn forget_view(&mut self, view: ViewId) {
        self.views.remove(&view);
    }

    /// Whether `view` has an image to draw.
    pub fn has_image(&self, view: ViewId) -> bool {
        self.views.get(&view).is_some_and(|v| v.image.is_some())
    }

    /// Whether `view` holds a prediction to draw.
    pub fn has_prediction(&self, view: ViewId) -> bool {
        self.views.get(&view).is_some_and(|v| v.prediction.is_some())
    }

    /// Writes the view's uniform block for a target of `target_size_px` physical pixels.
    pub fn prepare(
        &mut self,
        queue: &wgpu::Queue,
        view: ViewId,
        params: &ViewParams,
        target_size_px: [u32; 2],
        pixels_per_point: f32,
    ) {
        let Some(v) = self.views.get_mut(&view) else { return };
        let Some(image) = &v.image else { return };
        let bytes = v.prediction.as_ref().is_some_and(|l| l.format == wgpu::TextureFormat::R8Unorm);
        let uniform = Uniform::new(params, image, bytes, target_size_px, pixels_per_point);
        queue.write_buffer(&v.uniform, 0, bytemuck::bytes_of(&uniform));
        v.overlay_visible = params.overlay.visible && v.mask.as_ref().is_some_and(|m| m.size == image.size);
        v.prediction_visible = params.prediction.visible && v.prediction.as_ref().is_some_and(|p| p.size == image.size);
    }

    /// Records the draws of `view` (slice, then overlay, then prediction) on `pass`, whose
    /// viewport must cover the whole target [`Self::prepare`] was told about.
    pub fn paint(&self, pass: &mut wgpu::RenderPass<'_>, view: ViewId) {
        let Some(v) = self.views.get(&view) else { return };
        let Some(image) = &v.image else { return };
        pass.set_bind_group(0, &v.uniform_bind_group, &[]);
        let slice = if image.format == wgpu::TextureFormat::R32Float { &self.slice_float } else { &self.slice_uint };
        pass.set_pipeline(slice);
        pass.set_bind_group(1, &image.bind_group, &[]);
        pass.draw(0..4, 0..1);
        if let (true, Some(mask)) = (v.overlay_visible, &v.mask) {
            pass.set_pipeline(&self.overlay);
            pass.set_bind_group(1, &mask.bind_group, &[]);
            pass.draw(0..4, 0..1);
        }
        if let (true, Some(prediction)) = (v.prediction_visible, &v.prediction) {
            pass.set_pipeline(&self.prediction);
            pass.set_bind_group(1, &prediction.bind_group, &[]);
            pass.draw(0..4, 0..1);
        }
    }
}
