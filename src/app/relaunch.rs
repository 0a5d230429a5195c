//! Restarting the app in a new process when the window's GPU is lost.
//!
//! A lost wgpu device cannot be revived, and eframe draws with the one device it was given for
//! the life of its event loop (winit allows one event loop per process). So when the window's
//! device is lost (a driver reset, an unplugged or hung GPU; on a shared device the model's
//! work may be what hung it), the app folds the session's journal into its files, closes the
//! stack and the window, and [`super::run`] starts the same program again: the model on the
//! CPU, the same stack or project open (its session restores every edit), the same slice in
//! view (`--slice`). It waits for the new process, so a shell or desktop launcher that started the app
//! sees one program that ends when the window is closed. The new process learns why it was
//! started through [`RESUME_VAR`] and says so; it is restarted at most [`MAX_RELAUNCHES`]
//! times in a row.
//!
//! The device can also be lost between the frame's check and its drawing; egui's renderer then
//! panics. For that case the app keeps a [`Handoff::on_panic`] plan up to date every frame (what
//! to reopen, no saving needed: the session's journal already holds every committed edit), and
//! [`super::run`] catches the panic, asks the window's device whether it was lost
//! ([`Handoff::after_panic`]) and, if so, starts that plan; any other panic goes on as a crash.
//!
//! `SAM4EM_FAULT=lose-display-gpu` destroys the window's device once a stack is shown, before
//! the frame's check; `lose-display-gpu-in-frame` destroys it after the check, so the frame
//! draws on a lost device. Both paths run with a real window in the tests (`tests/files/cli.rs`).
//!
//! May touch the document (to save and close it), the notices and the window.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, Result, bail};
use eframe::egui;

use super::{OpenRequest, StudioApp};
use crate::ui::notify::Notice;

/// The environment variable that tells a restarted app why it was started ([`Resume`] as
/// JSON).
pub const RESUME_VAR: &str = "SAM4EM_RESUME";

/// The environment variable that injects a fault for tests; `lose-display-gpu` destroys the
/// window's device once a stack is shown, `lose-display-gpu-in-frame` the same in the middle of
/// a frame (after its check, before its drawing).
pub const FAULT_VAR: &str = "SAM4EM_FAULT";

/// Restarts in a row after which the app stops restarting itself (the GPU keeps failing).
pub const MAX_RELAUNCHES: u32 = 2;

/// What a restarted app is told by the one it replaces.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resume {
    /// Why the previous process gave up its window (wgpu's words).
    pub reason: String,
    /// How many times in a row the app was restarted, this time included.
    pub relaunches: u32,
}

impl Resume {
    /// The resume note this process was started with, if any (a malformed one is ignored, with a
    /// line in the log: it only ever comes from this program).
    pub fn from_env() -> Option<Self> {
        let text = std::env::var(RESUME_VAR).ok()?;
        serde_json::from_str(&text).inspect_err(|e| tracing::warn!("ignoring {RESUME_VAR}: {e}")).ok()
    }

    /// What the restarted app tells the user.
    pub fn notice(&self) -> String {
        format!(
            "{} under the window: the app restarted on a new device, with the model on the CPU; every edit was kept",
            self.reason
        )
    }
}

/// The program to start in place of this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relaunch {
    /// Its arguments (what to open, a screenshot still owed).
    pub args: Vec<OsString>,
    /// What it is told.
    pub resume: Resume,
}

/// What the window leaves to [`super::run`], shared with it.
pub type Successor = Arc<Mutex<Handoff>>;

/// The programs to start in place of this one, and how to tell whether a panic came from a lost
/// window device.
#[derive(Debug, Default)]
pub struct Handoff {
    /// Set once, when the app saw its window's device lost, saved and closed.
    pub next: Option<Relaunch>,
    /// Kept up to date every frame: what to open should a frame panic because the device was
    /// lost while it drew (nothing is saved on that path: the journal holds the edits).
    pub on_panic: Option<Relaunch>,
    /// The window's device and its watch, to ask after a panic whether the device was lost.
    pub display: Option<(eframe::wgpu::Device, crate::model::device::LossWatch)>,
}

impl Handoff {
    /// After the window closed: [`Self::next`] (the window's device, kept for
    /// [`Self::after_panic`], is let go before the new process starts).
    pub fn after_close(self) -> Option<Relaunch> {
        self.next
    }

    /// After the window's event loop panicked: [`Self::on_panic`] with the reason the device
    /// gives, when the window's device was lost; `None` when it was not (a bug: the panic goes
    /// on) or no restart is allowed.
    pub fn after_panic(self) -> Option<Relaunch> {
        let (device, watch) = self.display?;
        let reason = watch.polled(&device)?;
        let mut plan = self.on_panic?;
        plan.resume.reason = reason;
        Some(plan)
    }
}

impl Relaunch {
    /// The command line that opens `open` (nothing: the bundled sample) at `slice` and, when
    /// this process still owed one, takes the screenshot to `screenshot`.
    pub fn plan(open: Option<&OpenRequest>, slice: Option<usize>, screenshot: Option<&Path>, resume: Resume) -> Self {
        let mut args: Vec<OsString> = Vec::new();
        if let Some(r) = open {
            args.push(r.stack.clone().into());
            if let Some(labels) = &r.labels {
                args.extend(["--labels".into(), labels.clone().into()]);
                if let Some(map) = &r.label_map {
                    args.extend(["--map".into(), map.into()]);
                }
            }
            for (class, path) in &r.masks {
                let mut spec = OsString::from(format!("{class}="));
                spec.push(path);
                args.extend(["--mask".into(), spec]);
            }
            if let Some(p) = &r.prediction {
                args.extend(["--prediction".into(), p.clone().into()]);
            }
        }
        if let Some(z) = slice {
            args.extend(["--slice".into(), z.to_string().into()]);
        }
        if let Some(p) = screenshot {
            args.extend(["--screenshot".into(), p.into()]);
        }
        Self { args, resume }
    }

    /// Starts this program again with [`Self::args`], the model on the CPU and [`Self::resume`]
    /// in [`RESUME_VAR`], and waits for it; an error when it cannot be started or fails.
    pub fn run(&self) -> Result<()> {
        let exe = std::env::current_exe().context("cannot find this program to restart it")?;
        let resume = serde_json::to_string(&self.resume).context("cannot describe the restart")?;
        eprintln!("{} under the window: restarting {}", self.resume.reason, exe.display());
        let status = std::process::Command::new(&exe)
            .args(&self.args)
            .env(super::MODEL_DEVICE_VAR, "cpu")
            .env(RESUME_VAR, resume)
            .env_remove(FAULT_VAR)
            .status()
            .with_context(|| format!("cannot restart {}", exe.display()))?;
        if !status.success() {
            bail!("the restarted app ({}) ended with {status}", exe.display());
        }
        Ok(())
    }
}

/// The recovery project of edits that had no session to go to, in the temporary folder.
fn recovery_dir() -> PathBuf {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    std::env::temp_dir().join(format!("sam4em-recovered-{secs}-{}", std::process::id()))
}

impl StudioApp {
    /// Watches the window's device; once it is lost, saves and closes the stack, leaves the
    /// restart to [`super::run`] and closes the window. `true` from then on: the frame does
    /// nothing else and draws nothing (egui's renderer cannot write its buffers on a lost
    /// device and would panic; with nothing to draw it writes none).
    pub(super) fn relaunch_logic(&mut self, ctx: &egui::Context) -> bool {
        if self.relaunch.started {
            return true;
        }
        if self.relaunch.fault == Fault::Pending {
            self.inject_fault();
        }
        let Some(reason) = self.display_lost() else {
            self.plan_for_a_panic();
            return false;
        };
        self.relaunch.started = true;
        let Some(successor) = self.relaunch.successor.clone() else {
            // No restart (it failed too often, or this app has no process of its own): saved
            // and closed, said on the log since nothing can be drawn.
            self.save_session();
            self.notices.push(Notice::error(format!(
                "{reason}: the window cannot draw any more and the app does not restart itself again; every edit \
                 is saved: start the app again to go on"
            )));
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
            return true;
        };
        let Some(open) = self.reopen_request() else { return true };
        let resume = Resume { reason, relaunches: self.relaunch.relaunches + 1 };
        let slice = self.doc.as_ref().map(|d| d.view.cursor.z.0);
        self.save_session();
        // Closed before the new process opens the same session.
        self.doc = None;
        let plan = Relaunch::plan(open.as_ref(), slice, self.screenshot.pending(), resume);
        if let Ok(mut s) = successor.lock() {
            s.next = Some(plan);
        }
        ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        true
    }

    /// Destroys the window's device as [`FAULT_VAR`] asked, once a stack has been shown for a
    /// few frames (before the frame's check, or after it: [`Self::inject_fault_in_frame`]).
    fn inject_fault(&mut self) {
        if self.doc.is_some() && self.frames > 2 {
            self.relaunch.fault = Fault::Injected;
            if let Some(rs) = &self.render_state {
                tracing::warn!("{FAULT_VAR}: destroying the window's device");
                rs.device.destroy();
            }
        }
    }

    /// [`Self::inject_fault`] for `lose-display-gpu-in-frame`: called after the frame's UI, so
    /// the frame is drawn on a lost device.
    pub(super) fn inject_fault_in_frame(&mut self) {
        if self.relaunch.fault == Fault::PendingInFrame {
            self.inject_fault();
        }
    }

    /// Keeps [`Handoff::on_panic`] up to date: the open stack or project at the slice in view.
    fn plan_for_a_panic(&mut self) {
        let Some(successor) = &self.relaunch.successor else { return };
        let open = self.doc.as_ref().map(|doc| self.reopen_without_saving(doc));
        let slice = self.doc.as_ref().map(|d| d.view.cursor.z.0);
        let resume = Resume { reason: "the GPU was lost".into(), relaunches: self.relaunch.relaunches + 1 };
        let plan = Relaunch::plan(open.as_ref(), slice, self.screenshot.pending(), resume);
        if let Ok(mut s) = successor.lock()
            && s.on_panic.as_ref() != Some(&plan)
        {
            s.on_panic = Some(plan);
        }
    }

    /// What a new process opens to find `doc`'s edits when this one saves nothing: the stack
    /// again when its automatic session journals them, the project when it is one, else the
    /// stack as it was opened (edits with no session to be journalled to die with the process).
    fn reopen_without_saving(&self, doc: &super::Document) -> OpenRequest {
        let autosession = self.data_dir.as_deref().map(|d| crate::io::session::autosession_dir(d, doc.volume.path()));
        match &doc.session {
            Some(s) if Some(s.dir()) == autosession.as_deref() => {
                OpenRequest { labels: None, label_map: None, masks: Vec::new(), ..doc.opened_as.clone() }
            }
            Some(s) => OpenRequest::stack(s.dir()),
            None => doc.opened_as.clone(),
        }
    }

    /// Why the window's device is lost, if it is. Polled every frame, before anything is
    /// drawn: wgpu says a device is lost when it is next polled or submitted to, and egui's
    /// renderer panics when it cannot write its buffers on a lost device, so the frame must
    /// know before it draws.
    fn display_lost(&self) -> Option<String> {
        let watch = self.relaunch.watch.as_ref()?;
        match &self.render_state {
            Some(rs) => watch.polled(&rs.device),
            None => watch.said(),
        }
    }

    /// What the restarted app opens to find everything of the open stack: the stack again
    /// (its automatic session restores the masks, so labels are not imported twice), the
    /// project, or, for edits that had nowhere to be journalled, a recovery project written
    /// now. `Some(None)`: nothing is open. `None`: the edits could not be saved (said).
    fn reopen_request(&mut self) -> Option<Option<OpenRequest>> {
        let Some(doc) = &self.doc else { return Some(None) };
        match &doc.session {
            Some(_) => Some(Some(self.reopen_without_saving(doc))),
            None => {
                let dir = recovery_dir();
                self.save_project_as(&dir);
                let saved = self.doc.as_ref().and_then(|d| d.session.as_ref()).is_some_and(|s| s.dir() == dir);
                if saved {
                    Some(Some(OpenRequest::stack(dir)))
                } else {
                    // Closing would lose them; the window cannot draw, but the process keeps them.
                    self.notices.push(Notice::error(
                        "the window's GPU was lost and the edits could not be saved as a recovery project (above): the \
                         app stays running with them and draws nothing; free space in the temporary folder or set \
                         SAM4EM_DATA_DIR before the next start",
                    ));
                    None
                }
            }
        }
    }
}

/// The fault [`FAULT_VAR`] injects into the window's device.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fault {
    /// None asked for.
    #[default]
    None,
    /// The device is to be destroyed once a stack is shown.
    Pending,
    /// The same, after the frame's check (`lose-display-gpu-in-frame`).
    PendingInFrame,
    /// It was destroyed.
    Injected,
}

/// The restart state of one window.
#[derive(Default)]
pub(super) struct RelaunchState {
    /// Whether the window's device is lost (none without a renderer).
    pub(super) watch: Option<crate::model::device::LossWatch>,
    /// Where to leave the restart (`None`: this app cannot restart itself, e.g. in tests that
    /// drive it without a process of its own, or after [`MAX_RELAUNCHES`]).
    pub(super) successor: Option<Successor>,
    /// Restarts in a row before this process.
    pub(super) relaunches: u32,
    /// What [`FAULT_VAR`] asked for.
    pub(super) fault: Fault,
    /// The device was lost and the restart is under way.
    pub(super) started: bool,
}

impl RelaunchState {
    /// Watches `rs`'s device (through the model's watch when the window draws on the model's
    /// device, [`super::gpu::window_on_model_gpu`]: a wgpu device has one lost callback).
    pub(super) fn new(
        rs: Option<&eframe::egui_wgpu::RenderState>,
        successor: Option<Successor>,
        resume: Option<&Resume>,
    ) -> Self {
        let relaunches = resume.map_or(0, |r| r.relaunches);
        let model_gpu =
            crate::model::device::model_gpu_made().and_then(Result::ok).filter(|_| super::gpu::window_on_model_gpu());
        let watch = rs.map(|rs| {
            model_gpu
                .and_then(|gpu| crate::model::device::loss_watch(&gpu.device))
                .unwrap_or_else(|| crate::model::device::LossWatch::watch(&rs.device))
        });
        let successor = successor.filter(|_| relaunches < MAX_RELAUNCHES);
        if let (Some(successor), Some(rs), Some(watch)) = (&successor, rs, &watch)
            && let Ok(mut handoff) = successor.lock()
        {
            handoff.display = Some((rs.device.clone(), watch.clone()));
        }
        Self {
            watch,
            successor,
            relaunches,
            fault: match std::env::var(FAULT_VAR).as_deref() {
                Ok("lose-display-gpu") => Fault::Pending,
                Ok("lose-display-gpu-in-frame") => Fault::PendingInFrame,
                _ => Fault::None,
            },
            started: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resume() -> Resume {
        Resume { reason: "the GPU was lost (Destroyed)".into(), relaunches: 1 }
    }

    #[test]
    fn the_restart_opens_what_was_open_and_takes_the_screenshot_still_owed() {
        let request = OpenRequest {
            stack: "/data/stack.tif".into(),
            labels: Some("/data/labels.tif".into()),
            label_map: Some("1=mitochondria".into()),
            masks: vec![("glia".into(), "/data/glia=1.tif".into())],
            prediction: Some("/data/p.tif".into()),
        };
        let plan = Relaunch::plan(Some(&request), Some(7), Some(Path::new("/tmp/shot.png")), resume());
        let args: Vec<_> = plan.args.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args,
            [
                "/data/stack.tif",
                "--labels",
                "/data/labels.tif",
                "--map",
                "1=mitochondria",
                "--mask",
                "glia=/data/glia=1.tif",
                "--prediction",
                "/data/p.tif",
                "--slice",
                "7",
                "--screenshot",
                "/tmp/shot.png"
            ]
        );
        // Nothing open: the bare program (the sample).
        assert!(Relaunch::plan(None, None, None, resume()).args.is_empty());
    }

    #[test]
    fn the_resume_note_round_trips_through_its_variable_text() {
        let text = serde_json::to_string(&resume()).unwrap();
        assert_eq!(serde_json::from_str::<Resume>(&text).unwrap(), resume());
        assert!(resume().notice().contains("Destroyed"));
    }
}
