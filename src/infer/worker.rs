//! The `inference` thread: owns the model, loads the base checkpoint, swaps adapter sets,
//! and runs prediction requests slice by slice. Requests carry a generation; bumping the
//! shared generation counter cancels the running request between two slices (a superseded
//! request, a cancel button, a new adapter). Every result carries its generation and adapter
//! version, so the app can drop stale ones.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, bounded};

use super::predictor::{Flow, Predictor, Progress, Prompts, RefineTarget, SlicePrediction, StackRequest};
use super::tile::Scale;
use crate::model::adapter::AdapterSet;
use crate::model::adapter::BaseCheckpoint;
use crate::model::footprint::TrainingMemoryModel;
use crate::model::multi::{HeadIndex, MultiModel};
use crate::model::prompt::{BoxPrompt, PointPrompt};
use crate::model::source::{ModelSource, load};
use crate::state::SliceIndex;
use crate::state::bitplane::BitPlane;
use crate::worker::SharedImages;

/// A command to the worker.
pub enum InferCommand {
    /// Build the model from a checkpoint (replaces any model).
    Load(Box<ModelSource>),
    /// Use this adapter-set file (`None`: the bare base model), known as `version`. The file
    /// is read here, off the UI thread, and checked against the loaded base checkpoint.
    UseAdapter {
        /// The adapter-set file.
        path: Option<PathBuf>,
        /// Its version number (0 for the bare base).
        version: u64,
    },
    /// Predict slices.
    Predict {
        /// Request generation.
        generation: u64,
        /// What to predict.
        request: StackRequest,
        /// Where the images come from.
        images: SharedImages,
    },
    /// Refine one class on one slice with clicks and boxes.
    Refine {
        /// What the prompts were, in words (returned with the result).
        what: String,
        /// Request generation.
        generation: u64,
        /// The slice.
        z: SliceIndex,
        /// The class's head.
        class: HeadIndex,
        /// Clicks, slice pixels.
        points: Vec<PointPrompt>,
        /// Boxes, slice pixels.
        boxes: Vec<BoxPrompt>,
        /// The current mask as the dense prompt.
        prior: Option<BitPlane>,
        /// Slice size.
        size: (usize, usize),
        /// The scale the slice was predicted at: at a scale that tiles it, the tile under the
        /// prompts is decoded and blended into `current`.
        scale: Scale,
        /// The class's current probabilities on the slice (0–255), kept outside the refined tile.
        current: Option<Arc<Vec<u8>>>,
        /// Where the image comes from.
        images: SharedImages,
    },
}

/// What the worker reports.
#[derive(Clone, Debug)]
pub enum InferEvent {
    /// The model is ready.
    Loaded {
        /// Class names in prediction order.
        classes: Vec<String>,
        /// The base checkpoint's identity.
        base: BaseCheckpoint,
        /// A warning about the checkpoint (unofficial, hash mismatch), if any.
        warning: Option<String>,
        /// The sizes a training run's memory estimate needs (worked out here, off the UI
        /// thread).
        memory: Box<TrainingMemoryModel>,
        /// The model's probability threshold (its configuration's, 0.4 in SAM4EM).
        threshold: f32,
        /// The model's input side in pixels (what a tile covers at scale 1).
        input_px: usize,
    },
    /// Loading failed (the message names the file).
    LoadFailed(String),
    /// The model's work failed on its GPU (a lost device, out of memory, a kernel error):
    /// the model was dropped. The app loads it again on the CPU.
    DeviceLost {
        /// What burn or the driver said.
        message: String,
    },
    /// An adapter set is in use.
    AdapterInUse {
        /// Its version (0: none).
        version: u64,
    },
    /// An adapter set could not be applied; the previous one stays.
    AdapterFailed {
        /// The version asked for.
        version: u64,
        /// The version still in use.
        in_use: u64,
        /// Why (names the file).
        message: String,
    },
    /// One predicted slice.
    Slice {
        /// Request generation.
        generation: u64,
        /// Adapter version that produced it.
        version: u64,
        /// The prediction.
        prediction: SlicePrediction,
        /// Progress of the request.
        progress: Progress,
    },
    /// A refinement result for one class.
    Refined {
        /// What the prompts were, in words.
        what: String,
        /// Request generation.
        generation: u64,
        /// Adapter version.
        version: u64,
        /// The slice.
        z: SliceIndex,
        /// The class's head.
        class: HeadIndex,
        /// Probabilities 0–255.
        probabilities: Vec<u8>,
    },
    /// A request ended (`completed`: ran to its end, else cancelled or superseded).
    Finished {
        /// Request generation.
        generation: u64,
        /// Whether every slice was predicted.
        completed: bool,
    },
    /// A request failed.
    Failed {
        /// Request generation.
        generation: u64,
        /// Why.
        message: String,
    },
}

/// Handle to the `inference` thread; dropping it stops the thread.
pub struct InferenceWorker {
    tx: Option<Sender<InferCommand>>,
    rx: Receiver<InferEvent>,
    generation: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl InferenceWorker {
    /// Starts the thread; `wake` is called after every event (the UI's repaint request).
    pub fn spawn(wake: impl Fn() + Send + 'static) -> std::io::Result<Self> {
        let (tx, commands) = bounded::<InferCommand>(16);
        let (events_tx, rx) = bounded::<InferEvent>(256);
        let generation = Arc::new(AtomicU64::new(0));
        let current = Arc::clone(&generation);
        let thread = std::thread::Builder::new().name("inference".into()).spawn(move || {
            let mut state = WorkerState { base: None, base_sha256: None, predictor: None, version: 0 };
            let send = |e: InferEvent| {
                let ok = events_tx.send(e).is_ok();
                wake();
                ok
            };
            while let Ok(command) = commands.recv() {
                // Memory freed by a job stays with the process for the next pass
                // (`model::host_memory`); once a load or a run is over and nothing waits, the
                // heap goes back to the kernel. Refine clicks come in bursts and keep it.
                let release = !matches!(command, InferCommand::Refine { .. });
                // A panic inside burn (e.g. the GPU ran out of memory) fails the request, not
                // the thread; the model is dropped, to be loaded again.
                let outcome =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| state.handle(command, &current, &send)));
                if release && commands.is_empty() {
                    crate::model::host_memory::release_freed_memory();
                }
                match outcome {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(panic) => {
                        let on_gpu = state.base.as_ref().is_some_and(|m| !crate::model::device::is_cpu(&m.device()));
                        state = WorkerState { base: None, base_sha256: None, predictor: None, version: 0 };
                        let message = crate::worker::panic_message(&*panic);
                        let event = if on_gpu {
                            InferEvent::DeviceLost { message }
                        } else {
                            InferEvent::LoadFailed(format!("the model crashed and was unloaded: {message}"))
                        };
                        if !send(event) {
                            break;
                        }
                    }
                }
            }
        })?;
        Ok(InferenceWorker { tx: Some(tx), rx, generation, thread: Some(thread) })
    }

    /// Sends a command (false when the thread is gone).
    pub fn send(&self, command: InferCommand) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.send(command).is_ok())
    }

    /// Starts a new request generation: the running request stops after its current slice.
    pub fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The current generation.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Events so far, without waiting.
    pub fn events(&self) -> Vec<InferEvent> {
        self.rx.try_iter().collect()
    }
}

impl Drop for InferenceWorker {
    fn drop(&mut self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.tx = None;
        // Drain so a worker blocked on a full event channel can finish.
        while self.rx.try_recv().is_ok() {}
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct WorkerState {
    /// The unmerged model with the adapter in use (adapters are applied to a copy of it).
    base: Option<MultiModel>,
    /// sha256 of the loaded checkpoint: adapter sets must have been trained on it.
    base_sha256: Option<String>,
    predictor: Option<Predictor>,
    version: u64,
}

/// Embeddings kept for click refinement and repeated passes.
const CACHED_SLICES: usize = 8;

impl WorkerState {
    fn handle(&mut self, command: InferCommand, current: &AtomicU64, send: &dyn Fn(InferEvent) -> bool) -> bool {
        match command {
            InferCommand::Load(source) => match load(&source) {
                Ok((model, base, warning)) => {
                    let memory = Box::new(TrainingMemoryModel::new(model.config(), &model.device()));
                    let threshold = model.config().stream.cross_batch_threshold as f32;
                    let input_px = model.config().image_size;
                    self.predictor = Some(Predictor::new(&model, CACHED_SLICES));
                    self.base = Some(model);
                    self.base_sha256 = Some(base.sha256.clone());
                    self.version = 0;
                    send(InferEvent::Loaded {
                        classes: source.classes.clone(),
                        base,
                        warning,
                        memory,
                        threshold,
                        input_px,
                    })
                }
                Err(e) => {
                    self.base = None;
                    self.predictor = None;
                    send(InferEvent::LoadFailed(e.to_string()))
                }
            },
            InferCommand::UseAdapter { path, version } => {
                let in_use = self.version;
                let Some(base) = &self.base else {
                    return send(InferEvent::AdapterFailed { version, in_use, message: "no model is loaded".into() });
                };
                let mut model = base.clone();
                if let Some(path) = &path
                    && let Err(e) =
                        AdapterSet::read(path).and_then(|set| set.apply(&mut model, self.base_sha256.as_deref(), path))
                {
                    return send(InferEvent::AdapterFailed { version, in_use, message: e.to_string() });
                }
                self.predictor = Some(Predictor::new(&model, CACHED_SLICES));
                self.version = version;
                send(InferEvent::AdapterInUse { version })
            }
            InferCommand::Predict { generation, request, images } => {
                let version = self.version;
                let Some(p) = &mut self.predictor else {
                    return send(InferEvent::Failed { generation, message: "no model is loaded".into() });
                };
                let mut fetch = |z: SliceIndex| images(z);
                let mut alive = true;
                let device = self.base.as_ref().map(MultiModel::device);
                let mut lost = None;
                let result = p.predict(&request, &mut fetch, &mut |prediction, progress| {
                    if current.load(Ordering::SeqCst) != generation {
                        return Flow::Stop;
                    }
                    // Work on a lost GPU does not fail: its results are whatever the buffers
                    // held. Nothing computed once wgpu reported the loss is sent.
                    lost = device.as_ref().and_then(crate::model::device::device_lost);
                    if lost.is_some() {
                        return Flow::Stop;
                    }
                    alive = send(InferEvent::Slice { generation, version, prediction, progress });
                    if alive { Flow::Continue } else { Flow::Stop }
                });
                if !alive {
                    return false;
                }
                if let Some(message) = lost.or_else(|| device.as_ref().and_then(crate::model::device::device_lost)) {
                    self.base = None;
                    self.predictor = None;
                    return send(InferEvent::DeviceLost { message });
                }
                match result {
                    Ok(completed) => send(InferEvent::Finished { generation, completed }),
                    Err(e) => send(InferEvent::Failed { generation, message: e.to_string() }),
                }
            }
            InferCommand::Refine { what, generation, z, class, points, boxes, prior, size, scale, current, images } => {
                let version = self.version;
                let Some(p) = &mut self.predictor else {
                    return send(InferEvent::Failed { generation, message: "no model is loaded".into() });
                };
                let mut fetch = |z: SliceIndex| images(z);
                let prompts = Prompts { points: &points, boxes: &boxes, prior: prior.as_ref() };
                let target = RefineTarget { z, class, size, scale, current: current.as_deref().map(Vec::as_slice) };
                let result = p.refine(target, prompts, &mut fetch);
                if let Some(message) = self.base.as_ref().and_then(|m| crate::model::device::device_lost(&m.device())) {
                    self.base = None;
                    self.predictor = None;
                    return send(InferEvent::DeviceLost { message });
                }
                match result {
                    Ok(probabilities) => {
                        send(InferEvent::Refined { what, generation, version, z, class, probabilities })
                    }
                    Err(e) => send(InferEvent::Failed { generation, message: e.to_string() }),
                }
            }
        }
    }
}
