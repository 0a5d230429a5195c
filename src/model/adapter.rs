//! Adapter files: what fine-tuning changes (LoRA adapters, fusion head, memory, prompt
//! encoders, decoders, their BatchNorm statistics) without the frozen SAM 2 encoder, plus the
//! metadata needed to use them safely: the full model configuration, which base checkpoint
//! (name, size, sha256) and how it was mapped, the class, and the version lineage.
//!
//! Stored as safetensors (values as f32, checkpoint layout, trainer key names) with the
//! metadata as JSON under the `sam4em` key of the safetensors header. Written atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::Sam4emConfig;
use super::nn::Kind;
use super::sam4em::{Sam2Mapping, Sam4em};
use super::weights::{HostTensor, StateDict, WeightsError};

/// Format tag written into every adapter.
pub const FORMAT: &str = "sam4em-adapter";
/// Current format version.
pub const FORMAT_VERSION: u32 = 1;

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

/// Adapter metadata.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdapterMeta {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`FORMAT_VERSION`] when written by this program.
    pub format_version: u32,
    /// The whole model configuration; an adapter only applies to the same configuration.
    pub config: Sam4emConfig,
    /// Base checkpoint.
    pub base: BaseCheckpoint,
    /// Segmented class (e.g. "mitochondria").
    pub class_name: String,
    /// Version number within this class's lineage.
    pub version: u64,
    /// Version it was trained from, if any.
    pub parent_version: Option<u64>,
    /// Creation time, seconds since the Unix epoch.
    pub created_unix_s: u64,
    /// Free text (training summary).
    pub note: String,
}

/// Why an adapter cannot be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// Reading or parsing the tensors failed.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// The metadata is absent or unreadable.
    #[error("not a SAM4EM adapter ({reason}): {}", path.display())]
    NotAnAdapter {
        /// Why.
        reason: String,
        /// The file.
        path: PathBuf,
    },
    /// The adapter was made for another model configuration.
    #[error("adapter was trained for a different model configuration ({difference}): {}", path.display())]
    ConfigMismatch {
        /// First difference found.
        difference: String,
        /// The file.
        path: PathBuf,
    },
    /// The adapter was trained on another base checkpoint.
    #[error("adapter was trained on {expected} (sha256 {expected_sha256}), the loaded base is sha256 {found_sha256}: {}", path.display())]
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
}

/// An adapter in memory.
#[derive(Clone, Debug)]
pub struct Adapter {
    /// Metadata.
    pub meta: AdapterMeta,
    /// Tensors under trainer key names (`sam.…`).
    pub tensors: BTreeMap<String, HostTensor>,
}

/// Whether a model tensor belongs in an adapter: everything outside the frozen encoder except
/// the runtime memory and its fixed position encoding, plus the LoRA adapters.
pub fn in_adapter(key: &str, kind: Kind) -> bool {
    if key.starts_with("image_encoder.") {
        return kind == Kind::Param && Sam4em::is_trainable(key);
    }
    !matches!(key, "mem.memory" | "mem.positional_encoding")
}

impl Adapter {
    /// Captures the adapter tensors of `model`.
    pub fn from_model(model: &mut Sam4em, meta: AdapterMeta) -> Self {
        Adapter { tensors: model.state_dict(&in_adapter), meta }
    }

    /// Writes the adapter atomically.
    pub fn save(&self, path: &Path) -> Result<(), AdapterError> {
        let json = serde_json::to_string(&self.meta)
            .map_err(|e| AdapterError::NotAnAdapter { reason: e.to_string(), path: path.into() })?;
        let mut meta = BTreeMap::new();
        meta.insert("sam4em".to_string(), json);
        StateDict::write_safetensors(&self.tensors, meta, path)?;
        Ok(())
    }

    /// Reads an adapter and its metadata.
    pub fn read(path: &Path) -> Result<Self, AdapterError> {
        let bytes = std::fs::read(path).map_err(|source| WeightsError::Read { source, path: path.into() })?;
        let not = |reason: String| AdapterError::NotAnAdapter { reason, path: path.into() };
        let (_, header) =
            safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| not(format!("safetensors: {e}")))?;
        let json =
            header.metadata().as_ref().and_then(|m| m.get("sam4em")).ok_or_else(|| not("no sam4em metadata".into()))?;
        let meta: AdapterMeta = serde_json::from_str(json).map_err(|e| not(format!("metadata: {e}")))?;
        if meta.format != FORMAT || meta.format_version > FORMAT_VERSION {
            return Err(not(format!(
                "format {} version {} is not one this program reads",
                meta.format, meta.format_version
            )));
        }
        let dict = StateDict::from_safetensors_bytes(&bytes, path)?;
        Ok(Adapter { meta, tensors: dict.tensors })
    }

    /// Puts the adapter into `model`, after checking that it was made for the same
    /// configuration and (when `base_sha256` is given) the same base checkpoint.
    pub fn apply(&self, model: &mut Sam4em, base_sha256: Option<&str>, path: &Path) -> Result<(), AdapterError> {
        if self.meta.config != model.config {
            let difference = config_difference(&model.config, &self.meta.config);
            return Err(AdapterError::ConfigMismatch { difference, path: path.into() });
        }
        if let Some(sha) = base_sha256
            && sha != self.meta.base.sha256
        {
            return Err(AdapterError::BaseMismatch {
                expected: self.meta.base.file_name.clone(),
                expected_sha256: self.meta.base.sha256.clone(),
                found_sha256: sha.to_string(),
                path: path.into(),
            });
        }
        let dict = StateDict { tensors: self.tensors.clone(), other: BTreeMap::new(), source: path.into() };
        model.load_subset(&dict, &in_adapter)?;
        Ok(())
    }
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
pub fn mapping_name(mapping: Sam2Mapping) -> &'static str {
    match mapping {
        Sam2Mapping::Stage2Only => "stage2_only",
        Sam2Mapping::BothStages => "both_stages",
    }
}
