//! The `trainer` thread: builds (once) the autodiff twin of the model, runs training jobs on
//! it, and writes each run's result as a new adapter-set version. The UI keeps the job's
//! [`Control`] to pause, stop, or make the trainer yield while someone draws.

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, bounded};

use super::{Control, Ended, TrainConfig, TrainEvent, TrainSample, train};
use crate::model::adapter::BaseCheckpoint;
use crate::model::adapter::{AdapterSet, AdapterSetMeta};
use crate::model::multi::MultiModel;
use crate::model::source::{ModelSource, load};
use crate::state::SliceIndex;
use crate::state::bitplane::BitPlane;
use crate::worker::SharedImages;

/// A corrected slice whose image the trainer reads itself.
#[derive(Clone, Debug)]
pub struct PendingSample {
    /// The slice.
    pub z: SliceIndex,
    /// Per head (model order): the mask.
    pub labels: Vec<BitPlane>,
    /// Per class: the vouched pixels.
    pub vouched: Vec<BitPlane>,
}

/// One training run.
pub struct TrainJob {
    /// The model (its `device` must be an autodiff device).
    pub source: ModelSource,
    /// The adapter-set file to start from (`None`: the bare base model); read here.
    pub start: Option<PathBuf>,
    /// The base checkpoint's identity (recorded in the new set).
    pub base: BaseCheckpoint,
    /// Slices to learn from.
    pub samples: Vec<PendingSample>,
    /// Held-out slices.
    pub validation: Vec<PendingSample>,
    /// Where the images come from.
    pub images: SharedImages,
    /// Slice width and height in pixels.
    pub size: (usize, usize),
    /// The stack's pixel size in nanometres, where it said (recorded in the adapter set).
    pub pixel_size_nm: Option<f64>,
    /// Settings.
    pub config: TrainConfig,
    /// Version number of the result.
    pub version: u64,
    /// Where to write the result.
    pub out: PathBuf,
    /// Pause / stop / yield.
    pub control: Arc<Control>,
}

/// What the trainer reports.
#[derive(Clone, Debug)]
pub enum TrainerEvent {
    /// Building the model (the first run only).
    Loading,
    /// The loop reported something.
    Progress(TrainEvent),
    /// The run wrote a new version.
    Finished {
        /// The file.
        path: PathBuf,
        /// Its metadata.
        meta: Box<AdapterSetMeta>,
    },
    /// The run ended without a new version (nothing learned, or an error; the message says
    /// which and names the file when one is involved).
    Failed(String),
    /// The GPU failed under the run (lost, reset, out of memory as a lost device): the run
    /// ended without a new version, and nothing more can run on that device.
    DeviceLost {
        /// What wgpu said.
        message: String,
    },
}

/// Handle to the `trainer` thread; dropping it stops the thread (a running job is asked to
/// stop first).
pub struct TrainerWorker {
    tx: Option<Sender<TrainJob>>,
    rx: Receiver<TrainerEvent>,
    running: Option<Arc<Control>>,
    thread: Option<JoinHandle<()>>,
}

impl TrainerWorker {
    /// Starts the thread; `wake` is called after every event.
    pub fn spawn(wake: impl Fn() + Send + 'static) -> std::io::Result<Self> {
        let (tx, jobs) = bounded::<TrainJob>(1);
        let (events_tx, rx) = bounded::<TrainerEvent>(1024);
        let thread = std::thread::Builder::new().name("trainer".into()).spawn(move || {
            let mut cached: Option<(String, MultiModel)> = None;
            let send = |e: TrainerEvent| {
                let _ = events_tx.send(e);
                wake();
            };
            while let Ok(job) = jobs.recv() {
                // A failure on a GPU that wgpu has since reported lost is the device's, not
                // the run's: said as such, so that the app moves the model to the CPU.
                let device = job.source.device.clone();
                let send_job = |e: TrainerEvent| match e {
                    TrainerEvent::Failed(m) => match crate::model::device::device_lost(&device) {
                        Some(message) => send(TrainerEvent::DeviceLost { message }),
                        None => send(TrainerEvent::Failed(m)),
                    },
                    e => send(e),
                };
                // A panic inside burn (e.g. the GPU ran out of memory) ends the run, not the
                // thread: the app hears about it and the versions so far stay as they are.
                let outcome =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(job, &mut cached, &send_job)));
                // The run's buffers, kept for reuse during it, go back to the kernel.
                crate::model::host_memory::release_freed_memory();
                if let Err(panic) = outcome {
                    cached = None;
                    let message = crate::worker::panic_message(&*panic);
                    send_job(TrainerEvent::Failed(format!("training crashed: {message}")));
                }
                if crate::model::device::device_lost(&device).is_some() {
                    // Its tensors live on the dead device.
                    cached = None;
                }
            }
        })?;
        Ok(TrainerWorker { tx: Some(tx), rx, running: None, thread: Some(thread) })
    }

    /// Queues a job (false when one is already waiting or the thread is gone).
    pub fn start(&mut self, job: TrainJob) -> bool {
        let control = Arc::clone(&job.control);
        let ok = self.tx.as_ref().is_some_and(|tx| tx.try_send(job).is_ok());
        if ok {
            self.running = Some(control);
        }
        ok
    }

    /// Events so far, without waiting.
    pub fn events(&self) -> Vec<TrainerEvent> {
        self.rx.try_iter().collect()
    }
}

impl Drop for TrainerWorker {
    fn drop(&mut self) {
        if let Some(c) = &self.running {
            c.stop.store(true, std::sync::atomic::Ordering::Relaxed);
            c.pause.store(false, std::sync::atomic::Ordering::Relaxed);
            c.yield_to_ui.store(false, std::sync::atomic::Ordering::Relaxed);
        }
        self.tx = None;
        while self.rx.try_recv().is_ok() {}
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(job: TrainJob, cached: &mut Option<(String, MultiModel)>, send: &dyn Fn(TrainerEvent)) {
    let key = format!(
        "{}|{:?}|{:?}|{:?}",
        job.source.checkpoint.display(),
        job.source.config,
        job.source.classes,
        job.source.device
    );
    if cached.as_ref().is_none_or(|(k, _)| *k != key) {
        send(TrainerEvent::Loading);
        match load(&job.source) {
            Ok((model, _, _)) => *cached = Some((key, model)),
            Err(e) => return send(TrainerEvent::Failed(e.to_string())),
        }
    }
    let Some((_, base)) = cached.as_ref() else { return };
    // Tensors are shared handles: the copy costs nothing and the cached base stays as loaded.
    let mut model = base.clone();
    let mut parent = None;
    if let Some(path) = &job.start {
        match AdapterSet::read(path).and_then(|set| set.apply(&mut model, Some(&job.base.sha256), path).map(|()| set)) {
            Ok(set) => parent = Some(set.meta.version),
            Err(e) => return send(TrainerEvent::Failed(e.to_string())),
        }
    }
    let resolve = |pending: &[PendingSample]| -> Result<Vec<TrainSample>, String> {
        pending
            .iter()
            .map(|p| {
                let image = (job.images)(p.z).map_err(|e| format!("cannot read slice {} for training: {e}", p.z))?;
                Ok(TrainSample {
                    z: p.z,
                    width: job.size.0,
                    height: job.size.1,
                    image: Arc::new(image),
                    labels: p.labels.clone(),
                    vouched: p.vouched.clone(),
                })
            })
            .collect()
    };
    let (samples, validation) = match (resolve(&job.samples), resolve(&job.validation)) {
        (Ok(s), Ok(v)) => (s, v),
        (Err(e), _) | (_, Err(e)) => return send(TrainerEvent::Failed(e)),
    };
    let outcome = match train(&mut model, &samples, &validation, &job.config, &job.control, &mut |e| {
        // Work on a lost GPU need not fail: the run stops at the next step instead of
        // training on whatever the buffers hold (checked below, and no version is written).
        if crate::model::device::device_lost(&job.source.device).is_some() {
            job.control.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        send(TrainerEvent::Progress(e))
    }) {
        Ok(o) => o,
        Err(e) => return send(TrainerEvent::Failed(e.to_string())),
    };
    // Work on a lost GPU may have come back as zeros rather than as an error: nothing it
    // computed is written.
    if let Some(message) = crate::model::device::device_lost(&job.source.device) {
        return send(TrainerEvent::Failed(format!("the GPU was lost during training: {message}")));
    }
    // A run that diverged writes no version: the one in use stays.
    if let Ended::NonFinite { .. } = outcome.ended {
        return send(TrainerEvent::Failed(outcome.ended.to_string()));
    }
    if outcome.steps == 0 {
        return send(TrainerEvent::Failed("training stopped before its first step; no new version".into()));
    }
    let set = super::adapter_set(
        &mut model,
        &outcome,
        super::RunRecord {
            samples: &samples,
            validation: &validation,
            config: &job.config,
            base: job.base.clone(),
            version: job.version,
            parent,
            device: format!("{:?}", job.source.device),
            pixel_size_nm: job.pixel_size_nm,
        },
    );
    let meta = set.meta.clone();
    if let Some(dir) = job.out.parent()
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        return send(TrainerEvent::Failed(format!("cannot create the adapter folder: {e}: {}", dir.display())));
    }
    match set.save(&job.out) {
        Ok(()) => send(TrainerEvent::Finished { path: job.out, meta: Box::new(meta) }),
        Err(e) => send(TrainerEvent::Failed(e.to_string())),
    }
}
