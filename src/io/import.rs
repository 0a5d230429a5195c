//! Importing segmentations made elsewhere, so they can be proofread here: binary masks per
//! class (any non-zero pixel is foreground, in L, RGB or RGBA files) and label maps with a
//! value → class mapping (e.g. the Drosophila VNC labels: 159 glia, 191 mitochondria,
//! 223 synapse). Imported slices get [`Provenance::Imported`].

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::error::IoError;
use super::export::classes_sidecar;
use super::options::{ColorToGray, OpenOptions};
use super::stack::open_stack;
use crate::state::{ClassId, ClassTable, MaskVolume, Provenance, SliceIndex, SliceMask, Volume, VoxelSize};

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportReport {
    /// Slices read.
    pub slices: usize,
    /// Foreground pixels stored per class.
    pub foreground_px: BTreeMap<ClassId, u64>,
    /// Label values present in the file that no mapping entry covers (value → pixel count),
    /// background 0 excluded. Worth showing: a wrong mapping silently drops a class otherwise.
    pub unmapped_values: BTreeMap<u64, u64>,
    /// The voxel size the imported file records, if any.
    pub voxel_size: Option<VoxelSize>,
}

fn open_masks(path: &Path, masks: &MaskVolume, opts: &OpenOptions) -> Result<Volume, IoError> {
    // Colour masks count wherever any channel is lit; only one slice is held at a time.
    let opts = OpenOptions { color: ColorToGray::AnyChannel, cache_budget_bytes: 0, ..opts.clone() };
    let v = open_stack(path, &opts)?;
    let (w, h, d) = (v.width(), v.height(), v.depth());
    if (w, h, d) != (masks.width(), masks.height(), masks.depth()) {
        return Err(IoError::mismatch(
            path,
            format!(
                "masks are {w}x{h} px x {d} slices but the stack is {}x{} px x {} slices",
                masks.width(),
                masks.height(),
                masks.depth()
            ),
        ));
    }
    Ok(v)
}

/// Imports a binary mask stack (multi-page TIFF, PNG folder, …) into `class`: non-zero is
/// foreground. Every slice is stored, empty ones included, since an imported empty slice says
/// "nothing here" rather than "not looked at".
pub fn import_binary_masks(
    path: &Path,
    class: ClassId,
    masks: &mut MaskVolume,
    opts: &OpenOptions,
) -> Result<ImportReport, IoError> {
    let v = open_masks(path, masks, opts)?;
    let mut report = ImportReport { slices: v.depth(), voxel_size: v.info().voxel_size, ..Default::default() };
    for z in (0..v.depth()).map(SliceIndex) {
        let slice = v.slice(z)?;
        let mask = SliceMask::from_fn(v.width(), v.height(), |i| slice.data.is_nonzero(i));
        *report.foreground_px.entry(class).or_default() += mask.count_ones();
        masks
            .put(class, z, mask, Provenance::Imported)
            .map_err(|source| IoError::Mask { source, path: path.to_owned() })?;
    }
    Ok(report)
}

/// Parses a mapping such as `159=glia,191=mitochondria,223=psd` against the class table.
pub fn parse_label_mapping(spec: &str, classes: &ClassTable) -> Result<Vec<(u64, ClassId)>, String> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (value, name) = part.split_once('=').ok_or_else(|| format!("`{part}` is not VALUE=CLASS"))?;
        let value: u64 = value.trim().parse().map_err(|_| format!("`{}` is not a label value", value.trim()))?;
        let class = classes.find(name.trim()).ok_or_else(|| {
            let known: Vec<_> = classes.iter().map(|c| c.export_name.as_str()).collect();
            format!("no class `{}` (classes: {})", name.trim(), known.join(", "))
        })?;
        if out.iter().any(|(v, _)| *v == value) {
            return Err(format!("label value {value} is mapped twice"));
        }
        out.push((value, class.id));
    }
    if out.is_empty() {
        return Err("empty label mapping".into());
    }
    Ok(out)
}

/// The mapping stored beside a label map exported by this program (`labels.classes.json`),
/// translated to `classes` by export name: value = the id the class had when exported.
pub fn sidecar_mapping(label_map: &Path, classes: &ClassTable) -> Result<Option<Vec<(u64, ClassId)>>, IoError> {
    let sidecar = classes_sidecar(label_map);
    let text = match std::fs::read_to_string(&sidecar) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(IoError::read(&sidecar, super::error::describe_io(&e))),
    };
    let saved: ClassTable =
        serde_json::from_str(&text).map_err(|e| IoError::read(&sidecar, format!("invalid class table: {e}")))?;
    let mut mapping = Vec::new();
    for c in saved.iter() {
        let Some(here) = classes.find(&c.export_name) else {
            return Err(IoError::mismatch(
                &sidecar,
                format!("label map has class `{}`, which the class table lacks", c.export_name),
            ));
        };
        mapping.push((u64::from(c.id.0), here.id));
    }
    Ok(Some(mapping))
}

/// Marks pixels of no mapped class.
const NO_CLASS: u16 = u16::MAX;

/// Imports a label map: pixels equal to a mapped value go to that value's class. Several
/// values may map to one class.
pub fn import_label_map(
    path: &Path,
    mapping: &[(u64, ClassId)],
    masks: &mut MaskVolume,
    opts: &OpenOptions,
) -> Result<ImportReport, IoError> {
    let v = open_masks(path, masks, opts)?;
    let mut report = ImportReport { slices: v.depth(), voxel_size: v.info().voxel_size, ..Default::default() };
    let mut targets: Vec<ClassId> = mapping.iter().map(|(_, c)| *c).collect();
    targets.sort();
    targets.dedup();
    // Label value → index into `targets`.
    let lookup: HashMap<u64, u16> = mapping
        .iter()
        .map(|(value, class)| (*value, targets.iter().position(|t| t == class).expect("target listed") as u16))
        .collect();
    for z in (0..v.depth()).map(SliceIndex) {
        let slice = v.slice(z)?;
        let n = v.width() * v.height();
        // One pass to turn values into class indices; float label maps must hold whole numbers.
        let mut class_of = vec![NO_CLASS; n];
        for (i, c) in class_of.iter_mut().enumerate() {
            let value = slice.data.value_f64(i);
            if value == 0.0 {
                continue;
            }
            let key = (value.fract() == 0.0 && value > 0.0).then_some(value as u64);
            match key.and_then(|k| lookup.get(&k)) {
                Some(&t) => *c = t,
                None => *report.unmapped_values.entry(key.unwrap_or(u64::MAX)).or_default() += 1,
            }
        }
        for (t, class) in targets.iter().enumerate() {
            let mask = SliceMask::from_fn(v.width(), v.height(), |i| usize::from(class_of[i]) == t);
            *report.foreground_px.entry(*class).or_default() += mask.count_ones();
            masks
                .put(*class, z, mask, Provenance::Imported)
                .map_err(|source| IoError::Mask { source, path: path.to_owned() })?;
        }
    }
    Ok(report)
}
