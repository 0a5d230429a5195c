//! The desktop app: the only module that sees all others. It owns the open stack, its masks
//! and the viewer state; drains the loader's events in [`eframe::App::logic`]; uploads
//! changed content to the GPU and lays out the UI in [`eframe::App::ui`].
//!
//! Threads: the UI thread never waits on I/O. Opening and importing run as one-shot named
//! jobs, slices come from the `stack-loader` thread ([`loader`]), file dialogs run on a
//! `file-dialog` thread.

pub mod bench;
pub mod loader;
pub mod recent;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{Context as _, Result};
use crossbeam_channel::{Receiver, bounded};
use eframe::egui::{self, Vec2};
use eframe::egui_wgpu::RenderState;

use crate::io::{self, OpenOptions};
use crate::render::{self, DeviceCaps, ImagePixels, ModelDevicePlan};
use crate::state::view::{
    AUTO_CONTRAST_PERCENTILES, mask_bits_rect, mask_bits_xy, mask_bits_xz, mask_bits_yz, percentile_window, z_aspect,
};
use crate::state::{
    ClassId, ClassTable, Contrast, DType, MaskVolume, Provenance, Slice, SliceData, SliceIndex, SliceMask, Volume,
};
use crate::ui::panels::{self, HoverInfo, UiAction};
use crate::ui::viewer::{self, Plane, ViewerState};
use loader::{LoadEvent, LoadRequest, Loader};
use recent::RecentFiles;

/// A stack to open and what to import with it. Kept in the recent-files list.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OpenRequest {
    /// Multi-page TIFF, PNG/TIFF file or folder of slices.
    pub stack: PathBuf,
    /// A label map to import (values mapped to classes by `label_map`).
    #[serde(default)]
    pub labels: Option<PathBuf>,
    /// `VALUE=CLASS,...`; default: the label map's `.classes.json` sidecar, else value N =
    /// class id N.
    #[serde(default)]
    pub label_map: Option<String>,
    /// Binary masks per class: (class export name, stack).
    #[serde(default)]
    pub masks: Vec<(String, PathBuf)>,
    /// A probability map stack (the prediction layer).
    #[serde(default)]
    pub prediction: Option<PathBuf>,
}

impl OpenRequest {
    /// Just a stack.
    pub fn stack(path: impl Into<PathBuf>) -> Self {
        Self { stack: path.into(), labels: None, label_map: None, masks: Vec::new(), prediction: None }
    }

    /// The bundled sample with its labels.
    pub fn sample() -> Self {
        Self {
            labels: Some(PathBuf::from(crate::cli::SAMPLE_LABELS)),
            label_map: Some(crate::cli::SAMPLE_LABEL_MAPPING.to_owned()),
            ..Self::stack(crate::cli::SAMPLE_STACK)
        }
    }
}

/// How the app starts.
#[derive(Debug, Clone, Default)]
pub struct LaunchOptions {
    /// What to open first; `None` opens nothing.
    pub open: Option<OpenRequest>,
    /// Save a screenshot here once the first stack is shown, then quit.
    pub screenshot: Option<PathBuf>,
    /// Where the recent-files list lives (`None`: [`recent::default_config_dir`]).
    pub config_dir: Option<PathBuf>,
    /// Keep no recent-files list (tests).
    pub no_recent: bool,
}

/// Runs the app window until it is closed.
pub fn run(options: LaunchOptions) -> Result<()> {
    let wgpu_options =
        eframe::egui_wgpu::WgpuConfiguration { wgpu_setup: render::device::eframe_wgpu_setup(), ..Default::default() };
    let native = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("SAM4EM Studio")
            .with_inner_size([1400.0, 900.0])
            .with_min_inner_size([640.0, 420.0])
            .with_drag_and_drop(true),
        renderer: eframe::Renderer::Wgpu,
        wgpu_options,
        ..Default::default()
    };
    eframe::run_native("SAM4EM Studio", native, Box::new(move |cc| Ok(Box::new(StudioApp::new(cc, options)))))
        .map_err(|e| anyhow::anyhow!("cannot start the window: {e}"))
}

/// A finished open job.
struct Opened {
    request: OpenRequest,
    volume: Arc<Volume>,
    masks: MaskVolume,
    prediction: Option<Arc<Volume>>,
    notes: Vec<String>,
}

/// What a background job sends back.
enum JobResult {
    Opened(Result<Opened, String>),
    Imported(Result<(MaskVolume, Vec<String>), String>),
    Prediction(Result<Arc<Volume>, String>),
    Picked(DialogKind, Option<PathBuf>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DialogKind {
    OpenFile,
    OpenFolder,
    ImportLabels,
    OpenPrediction,
}

/// One-shot jobs in flight.
struct Jobs {
    tx: crossbeam_channel::Sender<JobResult>,
    rx: Receiver<JobResult>,
    running: Vec<JoinHandle<()>>,
}

impl Jobs {
    fn spawn(&mut self, name: &str, ctx: &egui::Context, f: impl FnOnce() -> JobResult + Send + 'static) {
        let tx = self.tx.clone();
        let ctx = ctx.clone();
        match std::thread::Builder::new().name(name.to_owned()).spawn(move || {
            let _ = tx.send(f());
            ctx.request_repaint();
        }) {
            Ok(h) => self.running.push(h),
            Err(e) => tracing::error!("cannot start the {name} thread: {e}"),
        }
        self.running.retain(|h| !h.is_finished());
    }

    fn busy(&self) -> bool {
        self.running.iter().any(|h| !h.is_finished())
    }
}

/// The open stack and everything shown of it.
struct Document {
    volume: Arc<Volume>,
    masks: MaskVolume,
    prediction: Option<Arc<Volume>>,
    loader: Loader,
    view: ViewerState,
    data_range: (f64, f64),
    auto_contrast_pending: bool,
    xy: Option<(SliceIndex, Arc<Slice>)>,
    ortho: Option<([usize; 2], Arc<Slice>, Arc<Slice>)>,
    probabilities: Option<(SliceIndex, Arc<Vec<f32>>)>,
    requested_slice: Option<SliceIndex>,
    requested_ortho: Option<[usize; 2]>,
    requested_prediction: Option<SliceIndex>,
    /// Requests that failed (their errors were shown once): not re-sent while the view stays
    /// where it is, and not waited for.
    failed: Vec<LoadRequest>,
    gpu: GpuContent,
    /// Rectangles of the shown slice edited since the last upload, and the mask key the GPU
    /// will hold once they are uploaded (set only when the GPU was up to date before them).
    dirty_rects: Vec<render::PixelRect>,
    dirty_key: Option<MaskKey>,
    notes: Vec<String>,
}

/// What is on the GPU now, so uploads happen only when content changes.
#[derive(Debug, Default, PartialEq)]
struct GpuContent {
    xy_image: Option<SliceIndex>,
    xy_mask: Option<MaskKey>,
    ortho_image: Option<[usize; 2]>,
    ortho_mask: Option<MaskKey>,
    prediction: Option<SliceIndex>,
}

/// Identity of uploaded mask bits: the plane position and the versions of every class slice
/// that went into them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MaskKey {
    position: [usize; 3],
    versions: Vec<(ClassId, u64)>,
}

impl Document {
    fn new(opened: Opened, classes: &ClassTable, ctx: &egui::Context) -> Self {
        let Opened { volume, masks, prediction, notes, .. } = opened;
        let info = volume.info().clone();
        let wake = ctx.clone();
        let loader = Loader::spawn(Arc::clone(&volume), prediction.clone(), move || wake.request_repaint());
        let contrast = Contrast::full_range(info.dtype);
        let data_range = (contrast.low, contrast.high);
        let view =
            ViewerState::new([info.width, info.height, info.depth], z_aspect(info.voxel_size), contrast, classes.len());
        Self {
            volume,
            masks,
            prediction,
            loader,
            view,
            data_range,
            auto_contrast_pending: true,
            xy: None,
            ortho: None,
            probabilities: None,
            requested_slice: None,
            requested_ortho: None,
            requested_prediction: None,
            failed: Vec::new(),
            gpu: GpuContent::default(),
            dirty_rects: Vec::new(),
            dirty_key: None,
            notes,
        }
    }

    /// A person's edit: sets `class` to `value` inside `rect` of slice `z`. When the slice is
    /// the one on screen and the GPU holds its masks, only the rectangle is re-uploaded.
    fn edit_rect(
        &mut self,
        classes: &ClassTable,
        class: ClassId,
        z: SliceIndex,
        rect: render::PixelRect,
        value: bool,
    ) -> Result<(), String> {
        let [w, h, _] = self.view.shape;
        if rect.x1 as usize > w || rect.y1 as usize > h || rect.width() == 0 || rect.height() == 0 {
            return Err(format!("rectangle {rect:?} is outside the {w}x{h} px slice"));
        }
        let slots = Self::slots(classes);
        let shown = self.gpu.xy_image == Some(z);
        let key = |d: &Self| d.mask_key(&slots, [usize::MAX, usize::MAX, z.0], std::iter::once(z));
        let up_to_date = shown && self.gpu.xy_mask.as_ref() == Some(&key(self));
        let mut mask = self.masks.mask(class, z).cloned().unwrap_or_else(|| SliceMask::new(w, h));
        for y in rect.y0 as usize..rect.y1 as usize {
            for x in rect.x0 as usize..rect.x1 as usize {
                mask.set(x, y, value);
            }
        }
        self.masks.put(class, z, mask, Provenance::User).map_err(|e| e.to_string())?;
        if up_to_date || (shown && self.dirty_key.is_some()) {
            self.dirty_rects.push(rect);
            self.dirty_key = Some(key(self));
        } else {
            self.dirty_rects.clear();
            self.dirty_key = None;
        }
        Ok(())
    }

    fn slots(classes: &ClassTable) -> Vec<ClassId> {
        classes.iter().map(|c| c.id).take(render::CLASS_SLOTS).collect()
    }

    fn mask_key(
        &self,
        slots: &[ClassId],
        position: [usize; 3],
        zs: impl Iterator<Item = SliceIndex> + Clone,
    ) -> MaskKey {
        let versions = slots
            .iter()
            .map(|&c| {
                (c, zs.clone().map(|z| self.masks.version(c, z)).fold(0u64, |a, v| a.wrapping_mul(31).wrapping_add(v)))
            })
            .collect();
        MaskKey { position, versions }
    }

    /// Applies loader results; asks for what the view needs next.
    fn logic(&mut self, errors: &mut Vec<String>) {
        for event in self.loader.drain().collect::<Vec<_>>() {
            match event {
                LoadEvent::Slice { z, slice } => {
                    if z == self.view.cursor.z {
                        self.xy = Some((z, slice));
                    }
                    if self.requested_slice == Some(z) {
                        self.requested_slice = None;
                    }
                }
                LoadEvent::Ortho { x, y, xz, yz } => {
                    if self.requested_ortho == Some([x, y]) {
                        self.requested_ortho = None;
                    }
                    self.ortho = Some(([x, y], xz, yz));
                }
                LoadEvent::Prediction { z, probabilities } => {
                    if self.requested_prediction == Some(z) {
                        self.requested_prediction = None;
                    }
                    if z == self.view.cursor.z {
                        self.probabilities = Some((z, probabilities));
                    }
                }
                LoadEvent::Failed { request, message } => {
                    // The request stays marked as sent, so it is retried only when the user
                    // comes back to it, not every frame.
                    if !self.failed.contains(&request) {
                        self.failed.push(request);
                    }
                    errors.push(message);
                }
            }
        }
        let z = self.view.cursor.z;
        if self.xy.as_ref().is_none_or(|(shown, _)| *shown != z) {
            // A prefetched slice shows at once; otherwise the old one stays until it arrives.
            if let Some(slice) = self.volume.cached(z) {
                self.xy = Some((z, slice));
            } else if self.requested_slice != Some(z) {
                self.send(LoadRequest::Slice(z));
                self.requested_slice = Some(z);
            }
        }
        if self.auto_contrast_pending
            && let Some((_, slice)) = &self.xy
        {
            self.auto_contrast_pending = false;
            if self.volume.info().dtype == DType::F32
                && let Some(range) = percentile_window(&slice.data, 0.0, 100.0)
            {
                self.data_range = range;
            }
            if let Some((lo, hi)) =
                percentile_window(&slice.data, AUTO_CONTRAST_PERCENTILES.0, AUTO_CONTRAST_PERCENTILES.1)
            {
                (self.view.contrast.low, self.view.contrast.high) = (lo, hi);
            }
        }
        let xy_pos = [self.view.cursor.x, self.view.cursor.y];
        if self.view.orthogonal
            && self.volume.depth() > 1
            && self.ortho.as_ref().is_none_or(|(pos, _, _)| *pos != xy_pos)
            && self.requested_ortho != Some(xy_pos)
        {
            self.send(LoadRequest::Ortho { x: xy_pos[0], y: xy_pos[1] });
            self.requested_ortho = Some(xy_pos);
        }
        if self.prediction.is_some()
            && self.probabilities.as_ref().is_none_or(|(shown, _)| *shown != z)
            && self.requested_prediction != Some(z)
        {
            self.send(LoadRequest::Prediction(z));
            self.requested_prediction = Some(z);
        }
    }

    fn send(&mut self, request: LoadRequest) {
        self.failed.retain(|f| *f != request);
        self.loader.request(request);
    }

    /// Whether something the view shows is still on its way (failures are not waited for).
    fn is_loading(&self) -> bool {
        let c = self.view.cursor;
        let waiting = |shown: bool, request: LoadRequest| !shown && !self.failed.contains(&request);
        waiting(self.gpu.xy_image == Some(c.z), LoadRequest::Slice(c.z))
            || (self.view.orthogonal
                && self.view.shape[2] > 1
                && waiting(self.gpu.ortho_image == Some([c.x, c.y]), LoadRequest::Ortho { x: c.x, y: c.y }))
            || (self.prediction.is_some() && waiting(self.gpu.prediction == Some(c.z), LoadRequest::Prediction(c.z)))
    }

    fn auto_contrast(&mut self) {
        if let Some((_, slice)) = &self.xy
            && let Some((lo, hi)) =
                percentile_window(&slice.data, AUTO_CONTRAST_PERCENTILES.0, AUTO_CONTRAST_PERCENTILES.1)
        {
            (self.view.contrast.low, self.view.contrast.high) = (lo, hi);
        }
    }

    /// Uploads whatever changed since the last frame.
    fn upload(&mut self, render_state: &RenderState, classes: &ClassTable, errors: &mut Vec<String>) {
        let slots = Self::slots(classes);
        let [w, h, d] = self.view.shape;
        let mut failures = Vec::new();
        let ortho_pos = self.ortho.as_ref().map(|(p, _, _)| *p);
        let ortho_key = ortho_pos.map(|[x, y]| self.mask_key(&slots, [x, y, usize::MAX], (0..d).map(SliceIndex)));
        render::callback::with_renderer(render_state, |r, device, queue| {
            let mut report = |e: render::RenderError| failures.push(format!("{}: {e}", self.volume.path().display()));
            if let Some((shown_z, slice)) = &self.xy
                && self.gpu.xy_image != Some(*shown_z)
            {
                match upload_slice(r, device, queue, Plane::Xy, slice) {
                    Ok(()) => self.gpu.xy_image = Some(*shown_z),
                    Err(e) => report(e),
                }
            }
            // Masks follow the slice shown (not the one asked for) so they never mismatch it.
            if let Some(shown_z) = self.gpu.xy_image {
                let key = self.mask_key(&slots, [usize::MAX, usize::MAX, shown_z.0], std::iter::once(shown_z));
                if self.gpu.xy_mask.as_ref() != Some(&key) && self.dirty_key.as_ref() == Some(&key) {
                    // Only edits since the last upload: send their rectangles.
                    let mut ok = true;
                    for rect in std::mem::take(&mut self.dirty_rects) {
                        let (xs, ys) = (rect.x0 as usize..rect.x1 as usize, rect.y0 as usize..rect.y1 as usize);
                        let bits = mask_bits_rect(&self.masks, &slots, shown_z, xs, ys);
                        if let Err(e) = r.update_mask_rect(queue, Plane::Xy.view_id(), rect, &bits) {
                            report(e);
                            ok = false;
                        }
                    }
                    if ok {
                        self.gpu.xy_mask = Some(key.clone());
                    }
                }
                self.dirty_key = None;
                self.dirty_rects.clear();
                if self.gpu.xy_mask.as_ref() != Some(&key) {
                    let bits = mask_bits_xy(&self.masks, &slots, shown_z);
                    match r.set_mask(device, queue, Plane::Xy.view_id(), w as u32, h as u32, &bits) {
                        Ok(()) => self.gpu.xy_mask = Some(key),
                        Err(e) => report(e),
                    }
                }
            }
            if let Some((pos, xz, yz)) = &self.ortho {
                if self.gpu.ortho_image != Some(*pos) {
                    let ok = upload_slice(r, device, queue, Plane::Xz, xz)
                        .and_then(|()| upload_slice(r, device, queue, Plane::Yz, yz));
                    match ok {
                        Ok(()) => self.gpu.ortho_image = Some(*pos),
                        Err(e) => report(e),
                    }
                }
                if self.gpu.ortho_mask != ortho_key
                    && let Some(key) = &ortho_key
                {
                    let xz_bits = mask_bits_xz(&self.masks, &slots, pos[1]);
                    let yz_bits = mask_bits_yz(&self.masks, &slots, pos[0]);
                    let ok = r
                        .set_mask(device, queue, Plane::Xz.view_id(), w as u32, d as u32, &xz_bits)
                        .and_then(|()| r.set_mask(device, queue, Plane::Yz.view_id(), d as u32, h as u32, &yz_bits));
                    match ok {
                        Ok(()) => self.gpu.ortho_mask = Some(key.clone()),
                        Err(e) => report(e),
                    }
                }
            }
            match &self.probabilities {
                Some((pz, p)) if Some(*pz) == self.gpu.xy_image && self.gpu.prediction != Some(*pz) => {
                    match r.set_prediction(device, queue, Plane::Xy.view_id(), w as u32, h as u32, p) {
                        Ok(()) => self.gpu.prediction = Some(*pz),
                        Err(e) => report(e),
                    }
                }
                Some((pz, _)) if Some(*pz) != self.gpu.xy_image && self.gpu.prediction.is_some() => {
                    // Never show one slice's prediction over another slice.
                    r.clear_prediction(Plane::Xy.view_id());
                    self.gpu.prediction = None;
                }
                _ => {}
            }
        });
        if !failures.is_empty() {
            // Report once; marking as shown stops a retry every frame.
            self.gpu.xy_image = self.xy.as_ref().map(|(z, _)| *z);
            self.gpu.ortho_image = ortho_pos;
            errors.extend(failures);
        }
    }

    fn hover_info(&self, classes: &ClassTable) -> HoverInfo {
        let Some((plane, [u, v])) = self.view.hover else { return HoverInfo::default() };
        let [w, h, d] = self.view.shape;
        let c = self.view.cursor;
        let (x, y, z) = match plane {
            Plane::Xy => (u, v, c.z.0 as f32),
            Plane::Xz => (u, c.y as f32, v),
            Plane::Yz => (c.x as f32, v, u),
        };
        if x < 0.0 || y < 0.0 || z < 0.0 || x >= w as f32 || y >= h as f32 || z >= d as f32 {
            return HoverInfo::default();
        }
        let (x, y, z) = (x as usize, y as usize, SliceIndex(z as usize));
        let value = match (&self.xy, &self.ortho) {
            (Some((sz, s)), _) if *sz == z => Some(s.value_at(x, y)),
            (_, Some(([ox, oy], xz, yz), ..)) if plane != Plane::Xy => {
                if plane == Plane::Xz && *oy == y {
                    Some(xz.value_at(x, z.0))
                } else if *ox == x {
                    Some(yz.value_at(z.0, y))
                } else {
                    None
                }
            }
            _ => self.volume.cached(z).map(|s| s.value_at(x, y)),
        };
        let classes = classes
            .iter()
            .filter(|cl| self.masks.mask(cl.id, z).is_some_and(|m| m.get(x, y)))
            .map(|cl| cl.name.clone())
            .collect();
        let probability = self.probabilities.as_ref().filter(|(pz, _)| *pz == z).map(|(_, p)| p[y * w + x]);
        HoverInfo { voxel: Some([x, y, z.0]), value, classes, probability }
    }
}

fn upload_slice(
    r: &mut render::SliceRenderer,
    device: &eframe::wgpu::Device,
    queue: &eframe::wgpu::Queue,
    plane: Plane,
    slice: &Slice,
) -> Result<(), render::RenderError> {
    let pixels = match &slice.data {
        SliceData::U8(v) => ImagePixels::U8(v),
        SliceData::U16(v) => ImagePixels::U16(v),
        SliceData::U32(v) => ImagePixels::U32(v),
        SliceData::F32(v) => ImagePixels::F32(v),
    };
    r.set_image(device, queue, plane.view_id(), slice.width as u32, slice.height as u32, pixels)
}

/// Opens a stack and imports what comes with it (runs on a job thread).
fn open_job(request: OpenRequest, classes: ClassTable) -> Result<Opened, String> {
    let opts = OpenOptions::default();
    let volume = io::open_stack(&request.stack, &opts).map_err(|e| e.to_string())?;
    let mut masks = MaskVolume::new(volume.width(), volume.height(), volume.depth());
    let mut notes = Vec::new();
    if let Some(labels) = &request.labels {
        notes.extend(import_labels(labels, request.label_map.as_deref(), &classes, &mut masks)?);
    }
    for (class, path) in &request.masks {
        let Some(def) = classes.find(class) else {
            return Err(format!("no class `{class}` for the masks in {}", path.display()));
        };
        io::import_binary_masks(path, def.id, &mut masks, &opts).map_err(|e| e.to_string())?;
        notes.push(format!("{} imported", def.name));
    }
    let prediction = match &request.prediction {
        Some(p) => Some(open_prediction(p, &volume)?),
        None => None,
    };
    Ok(Opened { request, volume: Arc::new(volume), masks, prediction, notes })
}

fn import_labels(
    labels: &Path,
    map: Option<&str>,
    classes: &ClassTable,
    masks: &mut MaskVolume,
) -> Result<Vec<String>, String> {
    let mapping = match map {
        Some(spec) => io::parse_label_mapping(spec, classes).map_err(|e| format!("label mapping `{spec}`: {e}"))?,
        None => match io::sidecar_mapping(labels, classes).map_err(|e| e.to_string())? {
            Some(m) => m,
            None => classes.iter().map(|c| (u64::from(c.id.0), c.id)).collect(),
        },
    };
    let report = io::import_label_map(labels, &mapping, masks, &OpenOptions::default()).map_err(|e| e.to_string())?;
    let mut notes = vec![format!("labels from {}", labels.file_name().unwrap_or_default().to_string_lossy())];
    if !report.unmapped_values.is_empty() {
        let values: Vec<String> = report.unmapped_values.keys().take(6).map(|v| v.to_string()).collect();
        notes.push(format!("unmapped label values: {}", values.join(", ")));
    }
    Ok(notes)
}

fn open_prediction(path: &Path, volume: &Volume) -> Result<Arc<Volume>, String> {
    let p = io::open_stack(path, &OpenOptions { cache_budget_bytes: 256 << 20, ..Default::default() })
        .map_err(|e| e.to_string())?;
    if (p.width(), p.height(), p.depth()) != (volume.width(), volume.height(), volume.depth()) {
        return Err(format!(
            "the probability map is {}x{} px x {} slices but the stack is {}x{} px x {} slices: {}",
            p.width(),
            p.height(),
            p.depth(),
            volume.width(),
            volume.height(),
            volume.depth(),
            path.display()
        ));
    }
    Ok(Arc::new(p))
}

/// The app.
pub struct StudioApp {
    render_state: Option<RenderState>,
    device_note: String,
    #[cfg(feature = "model")]
    model_device: Option<burn::tensor::Device>,
    classes: ClassTable,
    doc: Option<Document>,
    opening: Option<OpenRequest>,
    jobs: Jobs,
    recent: RecentFiles,
    errors: Vec<String>,
    screenshot: Option<PathBuf>,
    screenshot_requested: bool,
    screenshot_done: Arc<std::sync::atomic::AtomicBool>,
    frames: u64,
    central_area: Option<egui::Rect>,
}

impl StudioApp {
    /// Sets up the renderer on eframe's device, shares the device with the model where it can,
    /// and starts opening `options.open`.
    pub fn new(cc: &eframe::CreationContext<'_>, options: LaunchOptions) -> Self {
        let render_state = cc.wgpu_render_state.clone();
        let mut device_note = "no wgpu renderer: slices cannot be drawn".to_owned();
        #[cfg(feature = "model")]
        let mut model_device = None;
        if let Some(rs) = &render_state {
            render::callback::install(rs, 1);
            let caps = DeviceCaps::of(&rs.adapter, &rs.device);
            device_note = format!("display: {}", caps.summary());
            #[cfg(feature = "model")]
            {
                let (device, note) = model_device_for(rs, &caps);
                model_device = Some(device);
                device_note = format!("{device_note}; model: {note}");
            }
            #[cfg(not(feature = "model"))]
            let _ = ModelDevicePlan::decide(&caps);
        }
        tracing::info!("{device_note}");
        let (tx, rx) = bounded(16);
        let config_dir = options.config_dir.clone().or_else(recent::default_config_dir);
        let recent = if options.no_recent { RecentFiles::default() } else { RecentFiles::load(config_dir.as_deref()) };
        let mut app = Self {
            render_state,
            device_note,
            #[cfg(feature = "model")]
            model_device,
            classes: ClassTable::default(),
            doc: None,
            opening: None,
            jobs: Jobs { tx, rx, running: Vec::new() },
            recent,
            errors: Vec::new(),
            screenshot: options.screenshot,
            screenshot_requested: false,
            screenshot_done: Arc::default(),
            frames: 0,
            central_area: None,
        };
        if let Some(request) = options.open {
            app.open(request, &cc.egui_ctx);
        }
        app
    }

    /// Starts opening a stack in the background; the current one stays until it is ready.
    pub fn open(&mut self, request: OpenRequest, ctx: &egui::Context) {
        let classes = self.classes.clone();
        self.opening = Some(request.clone());
        self.jobs.spawn("stack-open", ctx, move || JobResult::Opened(open_job(request, classes)));
    }

    /// Whether anything is still loading (open jobs, slices, orthogonal planes).
    pub fn is_busy(&self) -> bool {
        self.opening.is_some() || self.jobs.busy() || self.doc.as_ref().is_some_and(Document::is_loading)
    }

    /// The viewer state of the open stack.
    pub fn viewer(&self) -> Option<&ViewerState> {
        self.doc.as_ref().map(|d| &d.view)
    }

    /// Mutable viewer state (tests drive it).
    pub fn viewer_mut(&mut self) -> Option<&mut ViewerState> {
        self.doc.as_mut().map(|d| &mut d.view)
    }

    /// The open stack's path.
    pub fn stack_path(&self) -> Option<&Path> {
        self.doc.as_ref().map(|d| d.volume.path())
    }

    /// The area the views were laid out in last frame (split by [`viewer::layout`]).
    pub fn last_central_area(&self) -> Option<egui::Rect> {
        self.central_area
    }

    /// Errors shown to the user and not yet dismissed.
    pub fn errors(&self) -> &[String] {
        &self.errors
    }

    /// The display / model device line of the status bar.
    pub fn device_note(&self) -> &str {
        &self.device_note
    }

    /// The burn device the model runs on (shared with the display where possible).
    #[cfg(feature = "model")]
    pub fn model_device(&self) -> Option<&burn::tensor::Device> {
        self.model_device.as_ref()
    }

    /// The masks of the open stack.
    pub fn masks(&self) -> Option<&MaskVolume> {
        self.doc.as_ref().map(|d| &d.masks)
    }

    /// Sets `class` to `value` inside `rect` of slice `z`, as a person's edit (the primitive
    /// the proofreading tools build on). Only the rectangle is re-uploaded to the GPU.
    pub fn edit_rect(
        &mut self,
        class: ClassId,
        z: SliceIndex,
        rect: render::PixelRect,
        value: bool,
    ) -> Result<(), String> {
        let Some(doc) = &mut self.doc else { return Err("no stack is open".to_owned()) };
        doc.edit_rect(&self.classes, class, z, rect, value)
    }

    /// Texture uploads so far (tests check that unchanged content is not re-uploaded).
    pub fn upload_stats(&self) -> Option<render::UploadStats> {
        self.render_state.as_ref().and_then(|rs| render::callback::with_renderer(rs, |r, _, _| r.upload_stats()))
    }

    /// Whether the XY view has a prediction layer on the GPU.
    pub fn prediction_on_gpu(&self) -> bool {
        self.render_state
            .as_ref()
            .and_then(|rs| render::callback::with_renderer(rs, |r, _, _| r.has_prediction(Plane::Xy.view_id())))
            .unwrap_or(false)
    }

    /// What the status bar says about the voxel under the pointer.
    pub fn hover_info(&self) -> HoverInfo {
        self.doc.as_ref().map(|d| d.hover_info(&self.classes)).unwrap_or_default()
    }

    /// The class table.
    pub fn classes(&self) -> &ClassTable {
        &self.classes
    }

    /// The recent-files list.
    pub fn recent(&self) -> &[OpenRequest] {
        &self.recent.entries
    }

    fn pick(&mut self, kind: DialogKind, ctx: &egui::Context) {
        let start = self.doc.as_ref().and_then(|d| d.volume.path().parent().map(Path::to_path_buf));
        self.jobs.spawn("file-dialog", ctx, move || {
            let mut dialog = rfd::FileDialog::new();
            if let Some(dir) = start {
                dialog = dialog.set_directory(dir);
            }
            let images = ["tif", "tiff", "png"];
            let path = match kind {
                DialogKind::OpenFolder => dialog.set_title("Open a folder of slices").pick_folder(),
                DialogKind::OpenFile => dialog.set_title("Open a stack").add_filter("EM stacks", &images).pick_file(),
                DialogKind::ImportLabels => {
                    dialog.set_title("Import a label map").add_filter("Label maps", &images).pick_file()
                }
                DialogKind::OpenPrediction => {
                    dialog.set_title("Open a probability map").add_filter("Probability maps", &images).pick_file()
                }
            };
            JobResult::Picked(kind, path)
        });
    }

    fn handle_job(&mut self, result: JobResult, ctx: &egui::Context) {
        match result {
            JobResult::Opened(Ok(opened)) => {
                self.opening = None;
                self.recent.push(&opened.request);
                ctx.send_viewport_cmd(egui::ViewportCommand::Title(format!(
                    "SAM4EM Studio — {}",
                    opened.volume.path().display()
                )));
                // Nothing of the previous stack may show over the new one.
                if let Some(rs) = &self.render_state {
                    render::callback::with_renderer(rs, |r, _, _| {
                        for plane in [Plane::Xy, Plane::Xz, Plane::Yz] {
                            r.forget_view(plane.view_id());
                        }
                    });
                }
                self.doc = Some(Document::new(opened, &self.classes, ctx));
            }
            JobResult::Opened(Err(e)) => {
                self.opening = None;
                self.errors.push(e);
            }
            JobResult::Imported(Ok((imported, notes))) => {
                if let Some(doc) = &mut self.doc {
                    for class in imported.classes().collect::<Vec<_>>() {
                        for (z, entry) in imported.slices(class) {
                            if let Err(e) = doc.masks.put(class, z, entry.mask.clone(), Provenance::Imported) {
                                self.errors.push(e.to_string());
                                break;
                            }
                        }
                    }
                    doc.notes.extend(notes);
                }
            }
            JobResult::Imported(Err(e)) | JobResult::Prediction(Err(e)) => self.errors.push(e),
            JobResult::Prediction(Ok(p)) => {
                if let Some(doc) = &mut self.doc {
                    let wake = ctx.clone();
                    doc.prediction = Some(Arc::clone(&p));
                    doc.loader = Loader::spawn(Arc::clone(&doc.volume), Some(p), move || wake.request_repaint());
                    doc.requested_slice = None;
                    doc.requested_ortho = None;
                    doc.requested_prediction = None;
                    doc.failed.clear();
                    doc.probabilities = None;
                    doc.gpu.prediction = None;
                }
            }
            JobResult::Picked(_, None) => {}
            JobResult::Picked(kind, Some(path)) => self.picked(kind, path, ctx),
        }
    }

    fn picked(&mut self, kind: DialogKind, path: PathBuf, ctx: &egui::Context) {
        match kind {
            DialogKind::OpenFile | DialogKind::OpenFolder => self.open(OpenRequest::stack(path), ctx),
            DialogKind::ImportLabels => {
                let Some(doc) = &self.doc else { return };
                let (w, h, d) = (doc.volume.width(), doc.volume.height(), doc.volume.depth());
                let classes = self.classes.clone();
                self.jobs.spawn("mask-import", ctx, move || {
                    let mut masks = MaskVolume::new(w, h, d);
                    JobResult::Imported(import_labels(&path, None, &classes, &mut masks).map(|notes| (masks, notes)))
                });
            }
            DialogKind::OpenPrediction => {
                let Some(doc) = &self.doc else { return };
                let volume = Arc::clone(&doc.volume);
                self.jobs.spawn("prediction-open", ctx, move || JobResult::Prediction(open_prediction(&path, &volume)));
            }
        }
    }

    fn act(&mut self, action: UiAction, ctx: &egui::Context) {
        match action {
            UiAction::OpenFileDialog => self.pick(DialogKind::OpenFile, ctx),
            UiAction::OpenFolderDialog => self.pick(DialogKind::OpenFolder, ctx),
            UiAction::ImportLabelsDialog => self.pick(DialogKind::ImportLabels, ctx),
            UiAction::OpenPredictionDialog => self.pick(DialogKind::OpenPrediction, ctx),
            UiAction::OpenRecent(i) => {
                if let Some(r) = self.recent.entries.get(i).cloned() {
                    self.open(r, ctx);
                }
            }
            UiAction::AutoContrast => {
                if let Some(doc) = &mut self.doc {
                    doc.auto_contrast();
                }
            }
            UiAction::Quit => ctx.send_viewport_cmd(egui::ViewportCommand::Close),
        }
    }

    fn screenshot_logic(&mut self, ctx: &egui::Context) {
        let Some(path) = self.screenshot.clone() else { return };
        if self.screenshot_done.load(std::sync::atomic::Ordering::Acquire) {
            self.screenshot = None;
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
            return;
        }
        if !self.screenshot_requested
            && self.frames > 5
            && !self.is_busy()
            && (self.doc.is_some() || !self.errors.is_empty())
        {
            self.screenshot_requested = true;
            let done = Arc::clone(&self.screenshot_done);
            let wake = ctx.clone();
            ctx.request_screenshot(move |image| {
                let [w, h] = image.size;
                let rgba: Vec<u8> = image.pixels.iter().flat_map(|c| c.to_array()).collect();
                match image::save_buffer(&path, &rgba, w as u32, h as u32, image::ExtendedColorType::Rgba8) {
                    Ok(()) => eprintln!("screenshot saved to {}", path.display()),
                    Err(e) => eprintln!("error: cannot save the screenshot: {e}: {}", path.display()),
                }
                done.store(true, std::sync::atomic::Ordering::Release);
                wake.request_repaint();
            });
        }
        ctx.request_repaint();
    }
}

/// Shares the display device with burn when [`ModelDevicePlan`] allows, else falls back to
/// the CPU backend; returns the device and a note for the user.
#[cfg(feature = "model")]
fn model_device_for(rs: &RenderState, caps: &DeviceCaps) -> (burn::tensor::Device, String) {
    match ModelDevicePlan::decide(caps) {
        ModelDevicePlan::Shared => {
            match crate::model::device::share_wgpu(&rs.instance, &rs.adapter, &rs.device, &rs.queue) {
                Ok(d) => (d, "shares the display GPU".to_owned()),
                Err(e) => (burn::tensor::Device::flex(), format!("CPU (the display GPU refused burn: {e})")),
            }
        }
        ModelDevicePlan::Fallback { reason } => (burn::tensor::Device::flex(), format!("CPU ({reason})")),
    }
}

impl eframe::App for StudioApp {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        while let Ok(result) = self.jobs.rx.try_recv() {
            self.handle_job(result, ctx);
        }
        for path in panels::dropped_paths(ctx) {
            self.open(OpenRequest::stack(path), ctx);
        }
        if let Some(doc) = &mut self.doc {
            doc.logic(&mut self.errors);
        }
        self.screenshot_logic(ctx);
        self.frames += 1;
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let ctx = ui.ctx().clone();
        let mut actions = Vec::new();
        let recent: Vec<String> = self.recent.entries.iter().map(|r| panels::display_name(&r.stack)).collect();
        egui::Panel::top("menu").show(ui, |ui| {
            panels::menu_bar_ui(ui, self.doc.as_mut().map(|d| &mut d.view), &recent, &mut actions);
        });
        let hover = self.doc.as_ref().map(|d| d.hover_info(&self.classes)).unwrap_or_default();
        egui::Panel::bottom("status").show(ui, |ui| match &self.doc {
            Some(doc) => {
                let voxel = doc.volume.info().voxel_size.map_or_else(|| "unknown".to_owned(), |v| v.to_string());
                let mut notes = doc.notes.join(" · ");
                if let Some(r) = &self.opening {
                    notes = format!("opening {}…", r.stack.display());
                }
                panels::status_bar_ui(ui, &doc.view, &hover, &voxel, &notes);
            }
            None => {
                ui.label(&self.device_note);
            }
        });
        if let Some(doc) = &mut self.doc {
            egui::Panel::left("display").resizable(true).default_size(270.0).show(ui, |ui| {
                egui::ScrollArea::vertical().show(ui, |ui| {
                    panels::display_panel_ui(
                        ui,
                        &mut doc.view,
                        &mut self.classes,
                        doc.data_range,
                        doc.prediction.is_some(),
                        &mut actions,
                    );
                    ui.separator();
                    ui.label(egui::RichText::new(doc.volume.path().display().to_string()).small());
                    ui.label(egui::RichText::new(&self.device_note).small().weak());
                });
            });
        }
        egui::CentralPanel::default().show(ui, |ui| {
            let Some(doc) = &mut self.doc else {
                ui.centered_and_justified(|ui| match &self.opening {
                    Some(r) => ui.spinner().on_hover_text(format!("opening {}", r.stack.display())),
                    None => ui.label("Open a stack: File > Open stack, or drop a file or folder here."),
                });
                return;
            };
            panels::slice_slider_ui(ui, &mut doc.view);
            let area = ui.available_rect_before_wrap();
            self.central_area = Some(area);
            let layout = viewer::layout(area, &doc.view);
            let xy_rect = layout[0].1;
            doc.view.keep_fitted(xy_rect.size());
            viewer::handle_keys(&ctx, &mut doc.view, xy_rect.size());
            if let Some(rs) = &self.render_state {
                doc.upload(rs, &self.classes, &mut self.errors);
            }
            let colors: Vec<[u8; 3]> = self.classes.iter().map(|c| [c.color.0, c.color.1, c.color.2]).collect();
            for (plane, rect) in viewer::layout(area, &doc.view) {
                let has_image = match plane {
                    Plane::Xy => doc.gpu.xy_image.is_some(),
                    Plane::Xz | Plane::Yz => doc.gpu.ortho_image.is_some(),
                };
                viewer::plane_ui(ui, rect, plane, &mut doc.view, &colors, has_image && self.render_state.is_some());
            }
            ui.allocate_rect(area, egui::Sense::hover());
            panels::help_ui(&ctx, &mut doc.view);
        });
        if !self.errors.is_empty() {
            let mut dismiss = false;
            egui::Window::new("Problem")
                .collapsible(false)
                .anchor(egui::Align2::CENTER_TOP, Vec2::new(0.0, 40.0))
                .show(&ctx, |ui| {
                    for e in &self.errors {
                        ui.label(e);
                    }
                    dismiss = ui.button("OK").clicked();
                });
            if dismiss {
                self.errors.clear();
            }
        }
        for a in actions {
            self.act(a, &ctx);
        }
        if self.is_busy() {
            ctx.request_repaint_after(std::time::Duration::from_millis(30));
        }
    }
}

/// Runs the app on `request` (the bundled sample when `None`); the `sam4em [PATH]` entry point.
pub fn launch(request: Option<OpenRequest>, screenshot: Option<PathBuf>) -> Result<()> {
    let open = Some(request.unwrap_or_else(OpenRequest::sample));
    if let Some(p) = &screenshot
        && let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    run(LaunchOptions { open, screenshot, config_dir: None, no_recent: false })
}
