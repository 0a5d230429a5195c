//! Adapter versions: the adapter-set files in the open project's `adapters/` folder
//! (`vNNN.safetensors`, written by the trainer), which one the `inference` worker uses, and the
//! rows of the panel's version list. Version 0 is the bare base model.

use super::ModelError;
use std::path::{Path, PathBuf};

use super::super::document::Document;
use crate::model::adapter::{AdapterSet, AdapterSetMeta};
use crate::ui::model::VersionRow;

/// The project's adapter versions and the one in use.
#[derive(Default)]
pub(super) struct Versions {
    /// Versions in the project's `adapters/` folder, newest first.
    list: Vec<(AdapterSetMeta, PathBuf)>,
    /// The version the worker was last asked to use; `None` until the worker has been told
    /// (a new stack, a model loaded again), so that the next choice is sent whatever it is.
    active: Option<u64>,
    /// Slices should be predicted again once the worker has swapped to the active version.
    pub(super) refresh_after_swap: bool,
}

impl Versions {
    /// The versions of `doc`'s project (none without a project), none of them sent yet.
    pub(super) fn of(doc: &Document) -> Self {
        Versions { list: adapters_dir(doc).map(|d| list_versions(&d)).unwrap_or_default(), ..Default::default() }
    }

    /// The version in use (0: the base model).
    pub(super) fn in_use(&self) -> u64 {
        self.active.unwrap_or(0)
    }

    /// The adapter-set file of the version in use (`None` for the base model).
    pub(super) fn in_use_path(&self) -> Option<PathBuf> {
        self.path_of(self.in_use())
    }

    /// Whether `version` is what the worker was last told to use.
    pub(super) fn is_active(&self, version: u64) -> bool {
        self.active == Some(version)
    }

    /// Forgets what the worker was told (it lost its model): the next [`Versions::choose`]
    /// sends again. Returns the version that was in use.
    pub(super) fn unsent(&mut self) -> u64 {
        self.active.take().unwrap_or(0)
    }

    /// Back to the base model without telling the worker (a new checkpoint is being loaded;
    /// once it is, the base model is what it uses).
    pub(super) fn reset_to_base(&mut self) {
        self.active = Some(0);
    }

    /// The version the project records (its adapter file), if it is one of ours.
    pub(super) fn recorded(&self, path: Option<&Path>) -> u64 {
        path.and_then(|p| self.list.iter().find(|(_, vp)| vp == p).map(|(m, _)| m.version)).unwrap_or(0)
    }

    /// Makes `version` the active one: `Ok(Some(file))` when the worker must be told (`None`
    /// inside for the base model), `Ok(None)` when it already uses it, an error when the
    /// project has no such version.
    #[allow(clippy::option_option)]
    pub(super) fn choose(&mut self, version: u64) -> Result<Option<Option<PathBuf>>, ModelError> {
        if self.active == Some(version) {
            return Ok(None);
        }
        let path = if version == 0 { None } else { Some(self.path_of(version).ok_or(ModelError::NoVersion(version))?) };
        self.active = Some(version);
        Ok(Some(path))
    }

    /// The worker could not use the version asked for and kept `in_use`: so does the list.
    pub(super) fn kept(&mut self, in_use: u64) {
        self.active = Some(in_use);
        self.refresh_after_swap = false;
    }

    /// The number the next trained version gets.
    pub(super) fn next(&self) -> u64 {
        self.list.iter().map(|(m, _)| m.version).max().unwrap_or(0) + 1
    }

    /// A version the trainer just wrote.
    pub(super) fn add(&mut self, meta: AdapterSetMeta, path: PathBuf) {
        self.list.retain(|(m, _)| m.version != meta.version);
        self.list.push((meta, path));
        self.list.sort_by_key(|(m, _)| std::cmp::Reverse(m.version));
    }

    /// The scale the version in use was trained at (`None` for the base model).
    pub(super) fn trained_scale(&self) -> Option<crate::state::scale::Scale> {
        let v = self.in_use();
        self.list.iter().find(|(m, _)| m.version == v).map(|(m, _)| m.training.scale)
    }

    fn path_of(&self, version: u64) -> Option<PathBuf> {
        self.list.iter().find(|(m, _)| m.version == version).map(|(_, p)| p.clone())
    }

    /// The panel's version list: the base model, then every version, newest first.
    pub(super) fn rows(&self) -> Vec<VersionRow> {
        std::iter::once(VersionRow {
            version: 0,
            label: "base (no adapter)".into(),
            detail: "the SAM 2 checkpoint with SAM4EM's fresh heads".into(),
        })
        .chain(self.list.iter().map(|(m, p)| VersionRow {
            version: m.version,
            label: format!("v{} · {} steps · loss {:.3}", m.version, m.training.steps, m.training.final_loss),
            detail: format!(
                "{} slices {:?}; held-out Dice {}; {:.0} s on {}; {}",
                m.training.slices.len(),
                m.training.slices,
                m.training.dice_summary().unwrap_or_else(|| "none".into()),
                m.training.seconds,
                m.training.device,
                p.display()
            ),
        }))
        .collect()
    }
}

/// The project's folder of adapter versions.
pub(super) fn adapters_dir(doc: &Document) -> Option<PathBuf> {
    doc.session.as_ref().map(|s| s.dir().join("adapters"))
}

/// Adapter sets in `dir` (unreadable files are skipped), newest first.
fn list_versions(dir: &Path) -> Vec<(AdapterSetMeta, PathBuf)> {
    let mut out: Vec<(AdapterSetMeta, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .filter_map(|p| AdapterSet::read_meta(&p).ok().map(|m| (m, p)))
        .collect();
    out.sort_by_key(|(m, _)| std::cmp::Reverse(m.version));
    out
}
