//! What the user chose for the model, remembered between runs in `model.json` beside the
//! recent-files list: the checkpoint, a model configuration for checkpoints that are not a
//! SAM 2 size, whether the first-run dialog was answered, the precision of predictions and the
//! scale they are made at.
//!
//! `model.json` is plain JSON, one object with the fields of [`ModelSettings`]; a field
//! missing (a file written by an older version) takes its default, and an unreadable file is
//! the same as none (the user is asked again), since nothing in it is the user's work.

use super::ModelError;
use std::path::{Path, PathBuf};

use crate::model::Sam4emConfig;
use crate::model::checkpoints::OFFICIAL;
use crate::model::device::Precision;
use crate::state::scale::Scale;

/// What the user chose, remembered between runs.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelSettings {
    /// The SAM 2 checkpoint.
    pub checkpoint: Option<PathBuf>,
    /// A model configuration (reference JSON) for checkpoints that are not a SAM 2 size.
    #[serde(default)]
    pub config: Option<PathBuf>,
    /// The first-run dialog was answered ("Not now" or a choice).
    #[serde(default)]
    pub first_run_done: bool,
    /// The numbers predictions are computed with (f16 only on a GPU that has them; training
    /// always computes in f32).
    #[serde(default)]
    pub precision: Precision,
    /// The scale predictions are made at (`None`: automatic, the adapter's or, without one,
    /// [`Scale::default_for`] the stack).
    #[serde(default)]
    pub scale: Option<Scale>,
}

impl ModelSettings {
    fn path(config_dir: Option<&Path>) -> Option<PathBuf> {
        config_dir.map(|d| d.join("model.json"))
    }

    /// The settings saved in `config_dir` (defaults when there are none or they cannot be
    /// read).
    pub(super) fn load(config_dir: Option<&Path>) -> Self {
        Self::path(config_dir)
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    /// The model configuration file, parsed (`None` when there is none).
    pub(super) fn read_config(&self) -> Result<Option<Sam4emConfig>, ModelError> {
        let Some(p) = &self.config else { return Ok(None) };
        let text = std::fs::read_to_string(p)
            .map_err(|e| ModelError::ReadConfig { path: p.clone(), problem: e.to_string() })?;
        Sam4emConfig::from_reference_json(&text)
            .map(Some)
            .map_err(|e| ModelError::ReadConfig { path: p.clone(), problem: e.to_string() })
    }

    /// Writes the settings to `config_dir` (nowhere when there is none).
    pub(super) fn save(&self, config_dir: Option<&Path>) -> Result<(), ModelError> {
        let Some(path) = Self::path(config_dir) else { return Ok(()) };
        let failed = |path: &Path, e: &dyn std::fmt::Display| ModelError::SaveSettings {
            path: path.to_owned(),
            problem: e.to_string(),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| failed(dir, &e))?;
        }
        let text = serde_json::to_string_pretty(self).map_err(|e| failed(&path, &e))?;
        std::fs::write(&path, text).map_err(|e| failed(&path, &e))
    }
}

/// The official files the first-run dialog offers: (file, size, note).
pub(super) fn official_choices() -> Vec<(String, String, String)> {
    OFFICIAL
        .iter()
        .filter(|c| matches!(c.size, crate::model::HieraSize::BasePlus | crate::model::HieraSize::Tiny))
        .map(|c| {
            let note = if c.file_name == "sam2_hiera_base_plus.pt" {
                "(what SAM4EM was trained from; recommended)"
            } else if c.size == crate::model::HieraSize::Tiny {
                "(smallest, fastest)"
            } else {
                ""
            };
            (c.file_name.to_string(), format!("{:.0} MB", c.bytes as f64 / 1e6), note.to_string())
        })
        .collect()
}
