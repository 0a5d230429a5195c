//! `sam4em --screenshot PATH`: once the first stack is shown (or has failed to open), the
//! window's pixels are saved to PATH and the app quits. Touches nothing but the window.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use eframe::egui;

/// A screenshot still to take.
#[derive(Default)]
pub(super) struct Screenshot {
    path: Option<PathBuf>,
    requested: bool,
    done: Arc<AtomicBool>,
}

impl Screenshot {
    /// A screenshot to `path` (`None`: none).
    pub(super) fn new(path: Option<PathBuf>) -> Self {
        Self { path, ..Self::default() }
    }

    /// Where the screenshot still to be taken goes (`None` once it is requested, or when none
    /// was asked for).
    pub(super) fn pending(&self) -> Option<&std::path::Path> {
        self.path.as_deref().filter(|_| !self.requested)
    }

    /// Asks egui for the window's pixels once `ready`; closes the window once they are saved.
    pub(super) fn logic(&mut self, ctx: &egui::Context, ready: bool) {
        let Some(path) = self.path.clone() else { return };
        if self.done.load(Ordering::Acquire) {
            self.path = None;
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
            return;
        }
        if !self.requested && ready {
            self.requested = true;
            let done = Arc::clone(&self.done);
            let wake = ctx.clone();
            ctx.request_screenshot(move |image| {
                let [w, h] = image.size;
                let rgba: Vec<u8> = image.pixels.iter().flat_map(|c| c.to_array()).collect();
                match image::save_buffer(&path, &rgba, w as u32, h as u32, image::ExtendedColorType::Rgba8) {
                    Ok(()) => eprintln!("screenshot saved to {}", path.display()),
                    Err(e) => eprintln!("error: cannot save the screenshot: {e}: {}", path.display()),
                }
                done.store(true, Ordering::Release);
                wake.request_repaint();
            });
        }
        ctx.request_repaint();
    }
}
