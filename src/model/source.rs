//! Where a model comes from: an official SAM 2 checkpoint, identified (size, sha256 against
//! the published files), its trunk size detected, and SAM4EM built from it with one head set
//! per class.
//!
//! Depends on burn and the rest of `model` only.

use std::path::PathBuf;

use burn::tensor::Device;

use super::adapter::{BaseCheckpoint, mapping_name};
use super::checkpoints::{Verdict, identify};
use super::config::{HieraSize, Sam4emConfig};
use super::multi::MultiModel;
use super::nn::Init;
use super::sam4em::{Sam2Mapping, Sam4em};
use super::weights::{StateDict, WeightsError};

/// Finds the SAM 2 trunk size of an official checkpoint from its patch-embedding width and
/// block count.
pub fn detect_size(dict: &StateDict) -> Result<HieraSize, WeightsError> {
    let trainer = dict.tensors.keys().all(|k| k.starts_with("sam.") || k.starts_with("module.sam."));
    let prefix = if trainer { "sam.image_encoder.trunk." } else { "image_encoder.trunk." };
    let format = |reason: String| WeightsError::Format { reason, path: dict.source.clone() };
    let embed = dict
        .tensors
        .get(&format!("{prefix}patch_embed.proj.weight"))
        .map(|t| t.shape[0])
        .ok_or_else(|| format("no Hiera trunk in the file".into()))?;
    let blocks = dict
        .tensors
        .keys()
        .filter(|k| k.starts_with(&format!("{prefix}blocks.")) && k.ends_with(".norm1.weight"))
        .count();
    HieraSize::ALL
        .into_iter()
        .find(|s| {
            let h = s.hiera();
            h.embed_dim == embed && h.stages.iter().sum::<usize>() == blocks
        })
        .ok_or_else(|| {
            format(format!(
                "a trunk of width {embed} with {blocks} blocks is not a SAM 2 size; give the model configuration"
            ))
        })
}

/// Builds SAM4EM from an official SAM 2 checkpoint already read into `dict`: the reference's
/// random initialisation for what SAM 2 lacks (LoRA, fusion head, memory), SAM 2's prompt
/// encoder and mask decoder in both stages, and every class starting from those heads.
/// `config` defaults to SAM4EM's for the checkpoint's trunk size.
pub fn from_sam2(
    dict: &StateDict,
    config: Option<Sam4emConfig>,
    classes: &[String],
    device: &Device,
) -> Result<MultiModel, WeightsError> {
    let config = match config {
        Some(c) => c,
        None => Sam4emConfig::sam4em(detect_size(dict)?),
    };
    // The reference seeds its initialisation (2024); so do we, so that runs from the same base
    // checkpoint start from the same weights.
    device.seed(2024);
    let mut base = Sam4em::new(&config, &Init::random(device));
    base.load_sam2_state(dict, Sam2Mapping::BothStages)?;
    Ok(MultiModel::new(base, classes))
}

/// What the model is built from.
#[derive(Clone, Debug)]
pub struct ModelSource {
    /// Official SAM 2 checkpoint.
    pub checkpoint: PathBuf,
    /// Model configuration; SAM4EM's for the checkpoint's size when `None`.
    pub config: Option<Sam4emConfig>,
    /// Class (head) names.
    pub classes: Vec<String>,
    /// Compute device.
    pub device: Device,
}

/// Why a model could not be built from a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read to identify it.
    #[error("cannot read checkpoint: {source}: {}", path.display())]
    Read {
        /// The checkpoint.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Its tensors do not make a SAM 2 model (the message names the file).
    #[error(transparent)]
    Weights(#[from] WeightsError),
}

/// Reads and identifies the checkpoint and builds the model; the warning says when the file
/// is not one of the published ones (or is, by size, but its sha256 differs).
pub fn load(source: &ModelSource) -> Result<(MultiModel, BaseCheckpoint, Option<String>), LoadError> {
    let path = &source.checkpoint;
    let id = identify(path).map_err(|e| LoadError::Read { path: path.clone(), source: e })?;
    let warning = match (&id.verdict, id.official) {
        (Verdict::HashMismatch { expected }, Some(name)) => Some(format!(
            "{} has the size of {name} but its sha256 {} differs from the published {expected}",
            path.display(),
            id.sha256
        )),
        (Verdict::Unofficial, _) => Some(format!("{} is not one of the published SAM 2 files", path.display())),
        _ => None,
    };
    let base = BaseCheckpoint {
        file_name: path.file_name().unwrap_or_default().to_string_lossy().into_owned(),
        bytes: id.bytes,
        sha256: id.sha256,
        mapping: mapping_name(Sam2Mapping::BothStages).into(),
    };
    let dict = StateDict::read(path)?;
    let model = from_sam2(&dict, source.config.clone(), &source.classes, &source.device)?;
    Ok((model, base, warning))
}
