//! Downloading an official SAM 2 checkpoint on a `download` thread: resumable, checked
//! against its published size and sha256 (`io::download`), with progress for the panel and
//! the first-run dialog, and Cancel. A finished download becomes the chosen checkpoint.

use super::ModelError;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use eframe::egui;

use crate::io::download::{self, Phase};
use crate::model::checkpoints::{OFFICIAL, Sha256Known};

/// A download in progress.
struct Job {
    file: String,
    progress: Arc<Mutex<Option<download::Progress>>>,
    cancel: Arc<AtomicBool>,
    result: crossbeam_channel::Receiver<Result<PathBuf, String>>,
}

/// The checkpoint download, if one runs, and the last one's error.
#[derive(Default)]
pub(super) struct Download {
    job: Option<Job>,
    error: Option<String>,
}

impl Download {
    /// Whether a download runs.
    pub(super) fn is_running(&self) -> bool {
        self.job.is_some()
    }

    /// The last download's error, if it failed.
    pub(super) fn error(&self) -> Option<String> {
        self.error.clone()
    }

    /// Starts downloading official file `file` into `data_dir/checkpoints/` (nothing when one
    /// runs already or `file` is not an official checkpoint); `ctx` repaints on progress.
    pub(super) fn start(&mut self, file: &str, data_dir: &Path, ctx: &egui::Context) -> Result<(), ModelError> {
        if self.job.is_some() {
            return Ok(());
        }
        let Some(official) = OFFICIAL.iter().find(|c| c.file_name == file) else { return Ok(()) };
        let dest = data_dir.join("checkpoints").join(file);
        let progress = Arc::new(Mutex::new(None));
        let cancel = Arc::new(AtomicBool::new(false));
        let (tx, rx) = crossbeam_channel::bounded(1);
        let (p, c, wake) = (Arc::clone(&progress), Arc::clone(&cancel), ctx.clone());
        let url = official.url;
        let bytes = official.bytes;
        let sha = match official.sha256 {
            Sha256Known::Full(h) => Some(h),
            Sha256Known::Partial(..) => None,
        };
        std::thread::Builder::new()
            .name("download".into())
            .spawn(move || {
                let request = download::Request { url, dest: &dest, expected_bytes: Some(bytes), expected_sha256: sha };
                let mut last_wake = std::time::Instant::now();
                let result = download::download(
                    &request,
                    &mut |pr| {
                        if let Ok(mut g) = p.lock() {
                            *g = Some(pr);
                        }
                        if last_wake.elapsed().as_millis() > 100 {
                            wake.request_repaint();
                            last_wake = std::time::Instant::now();
                        }
                    },
                    &c,
                );
                // The receiver is gone only when the app is closing: nobody to tell.
                let _ = tx.send(result.map_err(|e| e.to_string()));
                wake.request_repaint();
            })
            .map_err(ModelError::Thread)?;
        self.error = None;
        self.job = Some(Job { file: file.to_string(), progress, cancel, result: rx });
        Ok(())
    }

    /// Asks the running download to stop.
    pub(super) fn cancel(&self) {
        if let Some(d) = &self.job {
            d.cancel.store(true, Ordering::Relaxed);
        }
    }

    /// The downloaded file once the download has finished (a failure is kept for
    /// [`Download::error`]).
    pub(super) fn poll(&mut self) -> Option<PathBuf> {
        let result = self.job.as_ref()?.result.try_recv().ok()?;
        self.job = None;
        match result {
            Ok(path) => Some(path),
            Err(e) => {
                self.error = Some(e);
                None
            }
        }
    }

    /// The progress line: (fraction, text).
    pub(super) fn progress_line(&self) -> Option<(f32, String)> {
        let d = self.job.as_ref()?;
        let p = d.progress.lock().ok().and_then(|g| *g);
        Some(match p {
            Some(p) => {
                let total = p.total_bytes.unwrap_or(0).max(1);
                let verb = if p.phase == Phase::Verifying { "checking" } else { "downloading" };
                (
                    p.downloaded_bytes as f32 / total as f32,
                    format!(
                        "{verb} {} {:.0}/{:.0} MB, {:.1} MB/s",
                        d.file,
                        p.downloaded_bytes as f64 / 1e6,
                        total as f64 / 1e6,
                        p.bytes_per_s / 1e6
                    ),
                )
            }
            None => (0.0, format!("connecting for {}", d.file)),
        })
    }
}
