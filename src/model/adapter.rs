//! Adapter-set files: what a fine-tuning run changes (the shared LoRA adapters and fusion head
//! with its BatchNorm statistics, and every class's memory, prompt encoders and decoders)
//! without the frozen SAM 2 encoder, plus the metadata needed to use it safely: the full model
//! configuration, which base checkpoint (name, size, sha256) and how it was mapped, the classes
//! in head order, the version lineage and the training record.
//!
//! Stored as safetensors (values as f32, checkpoint layout, trainer key names: shared tensors
//! under `encoder/sam.<key>`, a class's under `class/<name>/sam.<key>`) with the metadata as
//! JSON under the `sam4em_set` key of the safetensors header. Written atomically.
//!
//! The file format builds without burn (the fuzz target `adapter_set` reads it so); what
//! touches a model (`AdapterSet::from_model`, `AdapterSet::apply`, `in_adapter`) needs the
//! `model` feature.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::Sam4emConfig;
#[cfg(feature = "model")]
use super::multi::{MultiModel, is_shared};
#[cfg(feature = "model")]
use super::nn::Kind;
#[cfg(feature = "model")]
use super::sam4em::{Sam2Mapping, Sam4em};
use super::weights::{HostTensor, StateDict, WeightsError};
use crate::state::scale::Scale;

/// The base checkpoint an adapter was trained on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseCheckpoint {
    /// File name (no directory: files move between machines).
    pub file_name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// sha256, hex.
    pub sha256: String,
    /// How SAM 2's decoder weights were mapped when the run started.
    pub mapping: String,
}

/// Whether a model tensor belongs in an adapter: everything outside the frozen encoder except
/// the runtime memory and its fixed position encoding, plus the LoRA adapters.
#[cfg(feature = "model")]
pub fn in_adapter(key: &str, kind: Kind) -> bool {
    if key.starts_with("image_encoder.") {
        return kind == Kind::Param && Sam4em::is_trainable(key);
    }
    !matches!(key, "mem.memory" | "mem.positional_encoding")
}

/// The first top-level field in which two configurations differ (for error messages).
pub fn config_difference(ours: &Sam4emConfig, theirs: &Sam4emConfig) -> String {
    let ours = serde_json::to_value(ours).unwrap_or_default();
    let theirs = serde_json::to_value(theirs).unwrap_or_default();
    ours.as_object()
        .and_then(|o| o.iter().find(|(k, v)| theirs.get(k.as_str()) != Some(v)).map(|(k, _)| k.clone()))
        .unwrap_or_else(|| "configuration".into())
}

/// The name a [`Sam2Mapping`] is recorded under.
#[cfg(feature = "model")]
pub fn mapping_name(mapping: Sam2Mapping) -> &'static str {
    match mapping {
        Sam2Mapping::Stage2Only => "stage2_only",
        Sam2Mapping::BothStages => "both_stages",
    }
}

/// Format tag of adapter-set files.
pub const SET_FORMAT: &str = "sam4em-adapter-set";
/// Current adapter-set format version.
pub const SET_FORMAT_VERSION: u32 = 1;

/// What a fine-tuning run recorded about itself.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainingRecord {
    /// Optimiser steps taken.
    pub steps: u64,
    /// Slices trained on (stack indices).
    pub slices: Vec<usize>,
    /// Held-out slices validated on.
    pub validation_slices: Vec<usize>,
    /// Mean loss of the last epoch.
    pub final_loss: f64,
    /// Held-out Dice per class at the end (the reference's per-slice mean), if any slice was
    /// held out.
    pub validation_dice: BTreeMap<String, f64>,
    /// Wall time of the run in seconds.
    pub seconds: f64,
    /// The compute device, in words.
    pub device: String,
    /// Why the run ended (finished, stopped, non-finite loss …).
    pub ended: String,
    /// Most consecutive slices per batch (BatchNorm's statistics were taken over batches of
    /// at most this many slices). 0 in sets written before it was recorded.
    #[serde(default)]
    pub batch_size: usize,
    /// How gradients were computed: "keep" or "recompute" (the same gradients either way);
    /// empty in sets written before it was recorded.
    #[serde(default)]
    pub activations: String,
    /// How the slices were brought to the model input: the scale predictions default to.
    /// [`Scale::Fit`] (whole slices resized) in sets written before it was recorded, which is
    /// how they were all trained.
    #[serde(default)]
    pub scale: Scale,
    /// The training stack's pixel size in nanometres, where the stack said.
    #[serde(default)]
    pub pixel_size_nm: Option<f64>,
}

impl TrainingRecord {
    /// The held-out Dice per class in words ("glia 0.812, mitochondria 0.774"); `None` when
    /// no slice was held out.
    pub fn dice_summary(&self) -> Option<String> {
        let dice: Vec<String> = self.validation_dice.iter().map(|(c, d)| format!("{c} {d:.3}")).collect();
        (!dice.is_empty()).then(|| dice.join(", "))
    }
}

/// Adapter-set metadata, stored as JSON in the safetensors header.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdapterSetMeta {
    /// Always [`SET_FORMAT`].
    pub format: String,
    /// [`SET_FORMAT_VERSION`] when written by this program.
    pub format_version: u32,
    /// The whole model configuration; a set applies only to the same configuration.
    pub config: Sam4emConfig,
    /// The base checkpoint the run started from.
    pub base: BaseCheckpoint,
    /// Classes, in head order.
    pub classes: Vec<String>,
    /// Version number in this project's lineage (1, 2, …).
    pub version: u64,
    /// The version it was trained from (`None` for a run from the bare base checkpoint).
    pub parent_version: Option<u64>,
    /// Creation time, seconds since the Unix epoch.
    pub created_unix_s: u64,
    /// What the training run did.
    pub training: TrainingRecord,
}

/// Why an adapter set cannot be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum AdapterSetError {
    /// Reading or parsing the tensors failed, or a tensor does not fit.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// The metadata is absent or unreadable.
    #[error("not a SAM4EM adapter set ({reason}): {}", path.display())]
    NotAnAdapterSet {
        /// Why.
        reason: String,
        /// The file.
        path: PathBuf,
    },
    /// The set was made for another model configuration.
    #[error("adapter set was trained for a different model configuration ({difference}): {}", path.display())]
    ConfigMismatch {
        /// First differing field.
        difference: String,
        /// The file.
        path: PathBuf,
    },
    /// The set was trained on another base checkpoint.
    #[error("adapter set was trained on {expected} (sha256 {expected_sha256}), the loaded base is sha256 {found_sha256}: {}", path.display())]
    BaseMismatch {
        /// Base file name recorded.
        expected: String,
        /// Its hash.
        expected_sha256: String,
        /// Hash of the base in use.
        found_sha256: String,
        /// The file.
        path: PathBuf,
    },
    /// The set has no heads for a class the model needs.
    #[error("adapter set has no heads for class {class} (it has {have}): {}", path.display())]
    MissingClass {
        /// The class.
        class: String,
        /// The classes it has.
        have: String,
        /// The file.
        path: PathBuf,
    },
}

/// A fine-tuning result in host memory.
#[derive(Clone, Debug)]
pub struct AdapterSet {
    /// Metadata.
    pub meta: AdapterSetMeta,
    /// Shared tensors under `encoder/sam.<key>`, class heads under `class/<name>/sam.<key>`.
    pub tensors: BTreeMap<String, HostTensor>,
}

#[cfg(feature = "model")]
const ENCODER_PREFIX: &str = "encoder/";

#[cfg(feature = "model")]
fn class_prefix(name: &str) -> String {
    format!("class/{name}/")
}

impl AdapterSet {
    /// Captures what training changes: the shared LoRA and fusion head (with its BatchNorm
    /// statistics) and every class's heads.
    #[cfg(feature = "model")]
    pub fn from_model(model: &mut MultiModel, meta: AdapterSetMeta) -> Self {
        let mut tensors = BTreeMap::new();
        for (k, t) in model.encoder.state_dict(&|k, kind| is_shared(k) && in_adapter(k, kind)) {
            tensors.insert(format!("{ENCODER_PREFIX}{k}"), t);
        }
        for h in &mut model.heads {
            let p = class_prefix(&h.name);
            for (k, t) in h.model.state_dict(&|k, kind| !is_shared(k) && in_adapter(k, kind)) {
                tensors.insert(format!("{p}{k}"), t);
            }
        }
        AdapterSet { meta, tensors }
    }

    /// Writes the set atomically (safetensors, metadata in the header).
    pub fn save(&self, path: &Path) -> Result<(), AdapterSetError> {
        let json = serde_json::to_string(&self.meta)
            .map_err(|e| AdapterSetError::NotAnAdapterSet { reason: e.to_string(), path: path.into() })?;
        let mut meta = BTreeMap::new();
        meta.insert("sam4em_set".to_string(), json);
        StateDict::write_safetensors(&self.tensors, meta, path)?;
        Ok(())
    }

    /// Reads only the metadata (fast: the header), e.g. to list versions.
    pub fn read_meta(path: &Path) -> Result<AdapterSetMeta, AdapterSetError> {
        let bytes = read_header_bytes(path)?;
        parse_meta(&bytes, path)
    }

    /// Reads a set and its metadata.
    pub fn read(path: &Path) -> Result<Self, AdapterSetError> {
        let bytes = std::fs::read(path).map_err(|source| WeightsError::Read { source, path: path.into() })?;
        Self::from_bytes(&bytes, path)
    }

    /// Parses a set from a file's bytes; `path` only labels errors. What [`AdapterSet::read`]
    /// does after reading the file (and what the fuzz target feeds).
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, AdapterSetError> {
        let meta = parse_meta(bytes, path)?;
        let dict = StateDict::from_safetensors_bytes(bytes, path)?;
        Ok(AdapterSet { meta, tensors: dict.tensors })
    }

    /// Puts the set into `model` after checking the configuration, the base checkpoint (when
    /// `base_sha256` is given) and that every class of the model has heads in the set.
    #[cfg(feature = "model")]
    pub fn apply(&self, model: &mut MultiModel, base_sha256: Option<&str>, path: &Path) -> Result<(), AdapterSetError> {
        if &self.meta.config != model.config() {
            let difference = config_difference(model.config(), &self.meta.config);
            return Err(AdapterSetError::ConfigMismatch { difference, path: path.into() });
        }
        if let Some(sha) = base_sha256
            && sha != self.meta.base.sha256
        {
            return Err(AdapterSetError::BaseMismatch {
                expected: self.meta.base.file_name.clone(),
                expected_sha256: self.meta.base.sha256.clone(),
                found_sha256: sha.to_string(),
                path: path.into(),
            });
        }
        for h in &model.heads {
            if !self.meta.classes.contains(&h.name) {
                return Err(AdapterSetError::MissingClass {
                    class: h.name.clone(),
                    have: self.meta.classes.join(", "),
                    path: path.into(),
                });
            }
        }
        let sub = |prefix: &str| StateDict {
            tensors: self
                .tensors
                .iter()
                .filter_map(|(k, t)| k.strip_prefix(prefix).map(|rest| (rest.to_string(), t.clone())))
                .collect(),
            other: BTreeMap::new(),
            source: path.into(),
        };
        // Check every part before changing anything, so a bad file leaves the model as it was.
        let mut staged = model.clone();
        staged.encoder.load_subset(&sub(ENCODER_PREFIX), &|k, kind| is_shared(k) && in_adapter(k, kind))?;
        for h in &mut staged.heads {
            h.model.load_subset(&sub(&class_prefix(&h.name)), &|k, kind| !is_shared(k) && in_adapter(k, kind))?;
        }
        *model = staged;
        Ok(())
    }
}

fn read_header_bytes(path: &Path) -> Result<Vec<u8>, AdapterSetError> {
    use std::io::Read;
    let read = |source| AdapterSetError::Weights(WeightsError::Read { source, path: path.into() });
    let mut f = std::fs::File::open(path).map_err(read)?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(read)?;
    let n = u64::from_le_bytes(len);
    if n > 100 << 20 {
        return Err(AdapterSetError::NotAnAdapterSet { reason: "header too large".into(), path: path.into() });
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(read)?;
    let mut bytes = len.to_vec();
    bytes.extend_from_slice(&header);
    Ok(bytes)
}

/// Parses the metadata from the start of a safetensors file (8-byte length + JSON header).
fn parse_meta(bytes: &[u8], path: &Path) -> Result<AdapterSetMeta, AdapterSetError> {
    let not = |reason: String| AdapterSetError::NotAnAdapterSet { reason, path: path.into() };
    let n = bytes.get(..8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as usize);
    let header = n
        .and_then(|n| bytes.get(8..8usize.checked_add(n)?))
        .ok_or_else(|| not("the file is shorter than its safetensors header".into()))?;
    let header: serde_json::Value =
        serde_json::from_slice(header).map_err(|e| not(format!("safetensors header: {e}")))?;
    let json = header
        .get("__metadata__")
        .and_then(|m| m.get("sam4em_set"))
        .and_then(|v| v.as_str())
        .ok_or_else(|| not("no sam4em_set metadata".into()))?;
    let meta: AdapterSetMeta = serde_json::from_str(json).map_err(|e| not(format!("metadata: {e}")))?;
    if meta.format != SET_FORMAT || meta.format_version > SET_FORMAT_VERSION {
        return Err(not(format!(
            "format {} version {} is not one this program reads",
            meta.format, meta.format_version
        )));
    }
    // The embedded configuration may build a model (`sam4em predict --adapter`): checked
    // before any module is made from it, as a configuration file is.
    meta.config.validate().map_err(|e| not(format!("its model configuration: {e}")))?;
    if meta.classes.is_empty() || meta.classes.iter().any(String::is_empty) {
        return Err(not("it names no classes, or a class without a name".into()));
    }
    if let Some(nm) = meta.training.pixel_size_nm.filter(|nm| !(nm.is_finite() && *nm > 0.0)) {
        return Err(not(format!("its pixel size {nm} nm is not a positive number")));
    }
    Ok(meta)
}
