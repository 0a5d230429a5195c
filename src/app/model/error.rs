//! The model room's refusals: what the panel asked that could not happen, and what to do.

use std::path::PathBuf;

/// Why the model could not do what the panel asked. Each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub(in crate::app) enum ModelError {
    /// Retrain before a checkpoint is loaded.
    #[error("the model is not loaded yet")]
    NotLoaded,
    /// Retrain on a stack without a project to keep versions in.
    #[error("this stack has no project folder to keep adapter versions in")]
    NoProject,
    /// Retrain with no corrected or accepted slice.
    #[error("nothing to learn from: correct or accept at least one slice first (A accepts a slice)")]
    NothingToLearn,
    /// The memory plan's refusal, one sentence with the numbers.
    #[error("{0}")]
    DoesNotFit(String),
    /// A version the project does not have.
    #[error("no adapter version {0} in this project")]
    NoVersion(u64),
    /// Downloads need somewhere to go.
    #[error("no data folder to download into: set SAM4EM_DATA_DIR or HOME")]
    NoDataFolder,
    /// The refine tool without a model.
    #[error("refining with clicks needs the model: choose a checkpoint in the Model panel")]
    RefineNeedsModel,
    /// `model.json` could not be written.
    #[error("cannot save the model choice: {problem}: {}", path.display())]
    SaveSettings {
        /// The file or folder.
        path: PathBuf,
        /// What went wrong.
        problem: String,
    },
    /// The model configuration file chosen with the checkpoint.
    #[error("cannot read the model configuration: {problem}: {}", path.display())]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        problem: String,
    },
    /// The system refused a thread.
    #[error("cannot start the download thread: {0}")]
    Thread(std::io::Error),
}
