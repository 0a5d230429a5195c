//! The open stack and everything shown of it: which slice, orthogonal planes and prediction
//! are loaded, what the GPU holds (so textures are written only when their content changes),
//! the edits waiting for a dirty-rectangle upload, the journal they go to, and what the status
//! bar reports of the voxel under the pointer. May use `state`, `io::session`, `render` and
//! `ui`'s view types; failures go to the notices it is handed.

use std::sync::Arc;

use eframe::egui;
use eframe::egui_wgpu::RenderState;

use super::OpenRequest;
use super::jobs::Opened;
use super::loader::{LoadEvent, LoadRequest, Loader};
use crate::io::session::Project;
use crate::render::{self, ImagePixels};
use crate::state::bitplane::PixelBox;
use crate::state::edit::{Commit, Dirty, EditError, Editor};
use crate::state::tools::ToolOutcome;
use crate::state::view::{
    AUTO_CONTRAST_PERCENTILES, mask_bits_rect, mask_bits_xy, mask_bits_xz, mask_bits_yz, percentile_window, z_aspect,
};
use crate::state::{ClassId, ClassTable, Contrast, DType, MaskVolume, Slice, SliceData, SliceIndex, Volume};
use crate::ui::notify::{Notice, Notices};
use crate::ui::panels::HoverInfo;
use crate::ui::viewer::{Plane, ViewerState};

/// The open stack and everything shown of it.
pub(super) struct Document {
    /// What was asked for to open it (a restart asks for it again).
    pub(super) opened_as: OpenRequest,
    pub(super) volume: Arc<Volume>,
    pub(super) masks: MaskVolume,
    pub(super) prediction: Option<Arc<Volume>>,
    pub(super) loader: Loader,
    pub(super) view: ViewerState,
    pub(super) data_range: (f64, f64),
    pub(super) auto_contrast_pending: bool,
    pub(super) xy: Option<(SliceIndex, Arc<Slice>)>,
    pub(super) ortho: Option<([usize; 2], Arc<Slice>, Arc<Slice>)>,
    pub(super) probabilities: Option<(SliceIndex, LayerProbabilities)>,
    pub(super) requested_slice: Option<SliceIndex>,
    pub(super) requested_ortho: Option<[usize; 2]>,
    pub(super) requested_prediction: Option<SliceIndex>,
    /// Requests that failed (their errors were shown once): not re-sent while the view stays
    /// where it is, and not waited for.
    pub(super) failed: Vec<LoadRequest>,
    pub(super) gpu: GpuContent,
    /// Upload failures already reported: one that recurs (a mask upload is retried every
    /// frame) is said once, not every frame.
    render_failures: std::collections::HashSet<String>,
    /// Rectangles of the shown XY slice that edits changed since the last mask upload. When
    /// every change since then was noted here, only these are re-uploaded.
    pub(super) dirty_rects: Vec<render::PixelRect>,
    /// An edit was noted since the last upload.
    pub(super) edits_noted: bool,
    /// Masks changed without a note (an import): the next upload sends whole planes.
    pub(super) unnoted_change: bool,
    /// Transactions and undo history of the masks.
    pub(super) editor: Editor,
    /// The project the masks are journalled to (`None` when no data folder is available).
    pub(super) session: Option<Project>,
    /// The last journal append failed (and the user was told).
    pub(super) journal_failing: bool,
    /// The prediction threshold as last set by default (the model's, once one is loaded): the
    /// layer follows a new default until the user moves the slider.
    threshold_default: f32,
    /// The prediction layer must be emptied at the next upload (the model has nothing for
    /// the class now shown).
    pub(super) clear_prediction: bool,
}

/// The probabilities the prediction layer shows on a slice.
#[derive(Clone, Debug)]
pub(super) enum LayerProbabilities {
    /// A loaded probability map, 0..1.
    Floats(Arc<Vec<f32>>),
    /// The model's, 0–255 for 0..1 (shared with its store; drawn from an 8-bit texture).
    Bytes(Arc<Vec<u8>>),
}

impl LayerProbabilities {
    /// The probability at pixel `i`, 0..1.
    pub(super) fn at(&self, i: usize) -> f32 {
        match self {
            LayerProbabilities::Floats(p) => p[i],
            LayerProbabilities::Bytes(p) => f32::from(p[i]) / 255.0,
        }
    }

    /// The pixels above `threshold` as a `width × height` plane (the rule everywhere:
    /// `p > threshold`, [`crate::state::probability_cut`] for bytes).
    pub(super) fn plane(&self, width: usize, height: usize, threshold: f32) -> crate::state::bitplane::BitPlane {
        match self {
            LayerProbabilities::Floats(p) => super::jobs::threshold_plane(width, height, p, threshold),
            LayerProbabilities::Bytes(p) => crate::state::view::probability_plane(width, height, p, threshold),
        }
    }
}

/// What is on the GPU now, so uploads happen only when content changes.
#[derive(Debug, Default, PartialEq)]
pub(super) struct GpuContent {
    pub(super) xy_image: Option<SliceIndex>,
    pub(super) xy_mask: Option<MaskKey>,
    pub(super) ortho_image: Option<[usize; 2]>,
    pub(super) ortho_mask: Option<MaskKey>,
    pub(super) prediction: Option<SliceIndex>,
}

/// Identity of uploaded mask bits: the plane position and the versions of every class slice
/// that went into them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MaskKey {
    pub(super) position: [usize; 3],
    pub(super) versions: Vec<(ClassId, u64)>,
}

/// Why a scripted rectangle edit ([`super::AppCommand::PaintRect`]) did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RectEditError {
    /// Empty, or reaching past the slice.
    #[error("rectangle {rect:?} is outside the {width}x{height} px slice")]
    Outside {
        /// The rectangle asked for.
        rect: render::PixelRect,
        /// The slice's width in pixels.
        width: usize,
        /// The slice's height in pixels.
        height: usize,
    },
    /// The editor refused (a stroke is in progress).
    #[error(transparent)]
    Edit(#[from] EditError),
}

impl Document {
    pub(super) fn new(opened: Opened, classes: &ClassTable, ctx: &egui::Context) -> Self {
        let Opened { request, volume, masks, prediction, session, .. } = opened;
        let info = volume.info().clone();
        let wake = ctx.clone();
        let loader = Loader::spawn(Arc::clone(&volume), prediction.clone(), move || wake.request_repaint());
        let contrast = Contrast::full_range(info.dtype);
        let data_range = (contrast.low, contrast.high);
        let mut view =
            ViewerState::new([info.width, info.height, info.depth], z_aspect(info.voxel_size), contrast, classes.len());
        view.pixel_size_nm = info.voxel_size.map(|v| v.x_nm);
        let threshold_default = view.prediction.threshold;
        Self {
            opened_as: request,
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
            render_failures: Default::default(),
            dirty_rects: Vec::new(),
            edits_noted: false,
            unnoted_change: false,
            editor: Editor::default(),
            session,
            journal_failing: false,
            threshold_default,
            clear_prediction: false,
        }
    }

    /// Notes regions changed by an edit, undo or redo so that only they are re-uploaded.
    pub(super) fn note(&mut self, dirty: &[Dirty]) {
        self.edits_noted = true;
        let shown = self.gpu.xy_image;
        for d in dirty {
            if Some(d.z) == shown && !d.area.is_empty() {
                let r = d.area;
                self.dirty_rects.push(render::PixelRect {
                    x0: r.x0 as u32,
                    y0: r.y0 as u32,
                    x1: r.x1 as u32,
                    y1: r.y1 as u32,
                });
            }
        }
    }

    /// Applies what a tool did: redraw its regions, journal its commit. A journal that cannot
    /// be written is reported; the edit itself stays (in memory, and in the next save).
    pub(super) fn apply_outcome(&mut self, outcome: ToolOutcome, notices: &mut Notices) {
        self.note(&outcome.dirty);
        if let Some(commit) = outcome.committed {
            self.journal(&commit, notices);
        }
    }

    /// An undo or redo: redraws what it changed and journals it.
    pub(super) fn undo_redo(&mut self, commit: &Commit, notices: &mut Notices) {
        self.note(&commit.dirty);
        self.journal(commit, notices);
    }

    /// Journals a commit (its regions were noted as the tool drew them, more precisely than
    /// the commit's tile boxes).
    pub(super) fn journal(&mut self, commit: &Commit, notices: &mut Notices) {
        let Some(session) = &mut self.session else { return };
        if commit.writes.is_empty() {
            return;
        }
        match session.append(&commit.writes) {
            Ok(()) => self.journal_failing = false,
            // Said once, not after every stroke while the disk stays full.
            Err(e) if !self.journal_failing => {
                self.journal_failing = true;
                notices.push(
                    Notice::from_error(&e)
                        .context("edits are kept in memory but cannot be journalled (free space, then save)"),
                );
            }
            Err(_) => {}
        }
    }

    /// The model's threshold becomes the prediction layer's (and Accept's), unless the user has
    /// set one.
    pub(super) fn default_threshold(&mut self, threshold: f32) {
        if self.view.prediction.threshold == self.threshold_default {
            self.view.prediction.threshold = threshold;
        }
        self.threshold_default = threshold;
    }

    /// A person's edit: sets `class` to `value` inside `rect` of slice `z` (one undo step).
    pub(super) fn edit_rect(
        &mut self,
        class: ClassId,
        z: SliceIndex,
        rect: render::PixelRect,
        value: bool,
        notices: &mut Notices,
    ) -> Result<(), RectEditError> {
        let [w, h, _] = self.view.shape;
        if rect.x1 as usize > w || rect.y1 as usize > h || rect.width() == 0 || rect.height() == 0 {
            return Err(RectEditError::Outside { rect, width: w, height: h });
        }
        let area = PixelBox { x0: rect.x0 as usize, y0: rect.y0 as usize, x1: rect.x1 as usize, y1: rect.y1 as usize };
        self.editor.begin("rectangle")?;
        let painted = self.editor.paint(&mut self.masks, class, z, |p| {
            p.fill_rect(area, value);
            area
        });
        match painted {
            Ok(changed) => self.note(&[Dirty { class, z, area: changed }]),
            Err(e) => {
                self.editor.abort(&mut self.masks);
                return Err(e.into());
            }
        }
        if let Some(commit) = self.editor.commit(&self.masks) {
            self.journal(&commit, notices);
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
    pub(super) fn logic(&mut self, notices: &mut Notices) {
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
                        self.probabilities = Some((z, LayerProbabilities::Floats(probabilities)));
                    }
                }
                LoadEvent::Failed { request, error } => {
                    // The request stays marked as sent, so it is retried only when the user
                    // comes back to it, not every frame.
                    if !self.failed.contains(&request) {
                        self.failed.push(request);
                    }
                    notices.push(Notice::from_error(&error));
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
    pub(super) fn is_loading(&self) -> bool {
        let c = self.view.cursor;
        let waiting = |shown: bool, request: LoadRequest| !shown && !self.failed.contains(&request);
        waiting(self.gpu.xy_image == Some(c.z), LoadRequest::Slice(c.z))
            || (self.view.orthogonal
                && self.view.shape[2] > 1
                && waiting(self.gpu.ortho_image == Some([c.x, c.y]), LoadRequest::Ortho { x: c.x, y: c.y }))
            || (self.prediction.is_some() && waiting(self.gpu.prediction == Some(c.z), LoadRequest::Prediction(c.z)))
    }

    pub(super) fn auto_contrast(&mut self) {
        if let Some((_, slice)) = &self.xy
            && let Some((lo, hi)) =
                percentile_window(&slice.data, AUTO_CONTRAST_PERCENTILES.0, AUTO_CONTRAST_PERCENTILES.1)
        {
            (self.view.contrast.low, self.view.contrast.high) = (lo, hi);
        }
    }

    /// Uploads whatever changed since the last frame.
    pub(super) fn upload(&mut self, render_state: &RenderState, classes: &ClassTable, notices: &mut Notices) {
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
                let gpu_holds_shown = self.gpu.xy_mask.as_ref().is_some_and(|k| k.position == key.position);
                if self.gpu.xy_mask.as_ref() != Some(&key)
                    && gpu_holds_shown
                    && self.edits_noted
                    && !self.unnoted_change
                {
                    // Every change since the last upload was a noted edit: send their rectangles.
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
                self.edits_noted = false;
                self.unnoted_change = false;
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
            if self.clear_prediction {
                self.clear_prediction = false;
                r.clear_prediction(Plane::Xy.view_id());
                self.gpu.prediction = None;
            }
            match &self.probabilities {
                Some((pz, p)) if Some(*pz) == self.gpu.xy_image && self.gpu.prediction != Some(*pz) => {
                    let (view, (w, h)) = (Plane::Xy.view_id(), (w as u32, h as u32));
                    let uploaded = match p {
                        LayerProbabilities::Floats(p) => r.set_prediction(device, queue, view, w, h, p),
                        LayerProbabilities::Bytes(p) => r.set_prediction_bytes(device, queue, view, w, h, p),
                    };
                    match uploaded {
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
            let new: Vec<String> = failures.into_iter().filter(|f| self.render_failures.insert(f.clone())).collect();
            notices.extend(new.into_iter().map(Notice::error));
        }
    }

    pub(super) fn hover_info(&self, classes: &ClassTable) -> HoverInfo {
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
            (_, Some(([ox, oy], xz, yz))) if plane != Plane::Xy => {
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
        let probability = self.probabilities.as_ref().filter(|(pz, _)| *pz == z).map(|(_, p)| p.at(y * w + x));
        HoverInfo { voxel: Some([x, y, z.0]), value, classes, probability }
    }
}

/// A slice's samples as the renderer takes them (it never sees `state` types).
pub fn image_pixels(data: &SliceData) -> ImagePixels<'_> {
    match data {
        SliceData::U8(v) => ImagePixels::U8(v),
        SliceData::U16(v) => ImagePixels::U16(v),
        SliceData::U32(v) => ImagePixels::U32(v),
        SliceData::F32(v) => ImagePixels::F32(v),
    }
}

pub(super) fn upload_slice(
    r: &mut render::SliceRenderer,
    device: &eframe::wgpu::Device,
    queue: &eframe::wgpu::Queue,
    plane: Plane,
    slice: &Slice,
) -> Result<(), render::RenderError> {
    r.set_image(device, queue, plane.view_id(), slice.width as u32, slice.height as u32, image_pixels(&slice.data))
}
