//! The `stack-loader` thread: decodes slices off the UI thread, prefetches neighbours, builds
//! the orthogonal planes and converts prediction slices to probabilities.
//!
//! Requests coalesce: when the user scrubs faster than slices decode, only the newest slice
//! and the newest orthogonal position are served (older ones are dropped unread). Every result
//! names what it is for; the UI drops results it no longer wants.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TryRecvError, bounded};

use crate::state::view::{reslice_xz, reslice_yz};
use crate::state::{Slice, SliceData, SliceError, SliceIndex, Volume};

/// Slices decoded ahead of the shown one, each way.
pub const PREFETCH_SLICES: usize = 2;

/// What the UI asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadRequest {
    /// Slice `z` (and its neighbours, in the background).
    Slice(SliceIndex),
    /// The XZ plane at row `y` and the YZ plane at column `x`.
    Ortho {
        /// Column of the YZ plane.
        x: usize,
        /// Row of the XZ plane.
        y: usize,
    },
    /// Slice `z` of the prediction stack, as probabilities.
    Prediction(SliceIndex),
}

/// What the loader sends back.
#[derive(Debug, Clone)]
pub enum LoadEvent {
    /// A decoded slice.
    Slice {
        /// Which.
        z: SliceIndex,
        /// Its samples.
        slice: Arc<Slice>,
    },
    /// The orthogonal planes through (x, y).
    Ortho {
        /// Column of the YZ plane.
        x: usize,
        /// Row of the XZ plane.
        y: usize,
        /// Width × depth.
        xz: Arc<Slice>,
        /// Depth × height.
        yz: Arc<Slice>,
    },
    /// Probabilities (0..1) of prediction slice `z`.
    Prediction {
        /// Which.
        z: SliceIndex,
        /// Row-major probabilities.
        probabilities: Arc<Vec<f32>>,
    },
    /// A slice could not be read (the message names the file).
    Failed {
        /// What was being loaded.
        request: LoadRequest,
        /// Why (names the slice and its file).
        error: SliceError,
    },
}

/// Handle to the loader thread; dropping it stops the thread.
pub struct Loader {
    requests: Option<Sender<LoadRequest>>,
    events: Receiver<LoadEvent>,
    thread: Option<JoinHandle<()>>,
}

impl Loader {
    /// Starts the thread for `volume` (and an optional prediction stack of the same shape).
    /// `wake` is called after each event is sent (the app passes `request_repaint`).
    pub fn spawn(volume: Arc<Volume>, prediction: Option<Arc<Volume>>, wake: impl Fn() + Send + 'static) -> Self {
        let (req_tx, req_rx) = bounded::<LoadRequest>(64);
        let (ev_tx, ev_rx) = bounded::<LoadEvent>(16);
        let thread = std::thread::Builder::new()
            .name("stack-loader".into())
            .spawn(move || Worker { volume, prediction, requests: req_rx, events: ev_tx, wake: Box::new(wake) }.run())
            .expect("spawning the stack-loader thread");
        Self { requests: Some(req_tx), events: ev_rx, thread: Some(thread) }
    }

    /// Queues a request; never blocks (a full queue drops it: newer requests follow anyway).
    pub fn request(&self, request: LoadRequest) {
        if let Some(tx) = &self.requests {
            let _ = tx.try_send(request);
        }
    }

    /// Events ready now.
    pub fn drain(&self) -> impl Iterator<Item = LoadEvent> + '_ {
        self.events.try_iter()
    }

    /// Blocks until the next event (tests and benchmarks).
    pub fn recv(&self) -> Option<LoadEvent> {
        self.events.recv().ok()
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.requests = None;
        // Unblock a worker waiting to send.
        while self.events.try_recv().is_ok() {}
        if let Some(t) = self.thread.take() {
            // The worker finishes the slice in hand, then sees the closed channel.
            while !t.is_finished() {
                while self.events.try_recv().is_ok() {}
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            let _ = t.join();
        }
    }
}

struct Worker {
    volume: Arc<Volume>,
    prediction: Option<Arc<Volume>>,
    requests: Receiver<LoadRequest>,
    events: Sender<LoadEvent>,
    wake: Box<dyn Fn() + Send>,
}

/// The newest request of each kind.
#[derive(Default)]
struct Pending {
    slice: Option<SliceIndex>,
    ortho: Option<(usize, usize)>,
    prediction: Option<SliceIndex>,
    prefetch: Vec<SliceIndex>,
}

impl Pending {
    fn add(&mut self, r: LoadRequest) {
        match r {
            LoadRequest::Slice(z) => self.slice = Some(z),
            LoadRequest::Ortho { x, y } => self.ortho = Some((x, y)),
            LoadRequest::Prediction(z) => self.prediction = Some(z),
        }
    }

    fn is_empty(&self) -> bool {
        self.slice.is_none() && self.ortho.is_none() && self.prediction.is_none() && self.prefetch.is_empty()
    }
}

impl Worker {
    fn send(&self, e: LoadEvent) -> bool {
        let ok = self.events.send(e).is_ok();
        (self.wake)();
        ok
    }

    /// Takes every queued request; false when the app hung up.
    fn poll(&self, pending: &mut Pending) -> bool {
        loop {
            match self.requests.try_recv() {
                Ok(r) => pending.add(r),
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn run(self) {
        let mut pending = Pending::default();
        loop {
            if pending.is_empty() {
                match self.requests.recv() {
                    Ok(r) => pending.add(r),
                    Err(_) => return,
                }
            }
            if !self.poll(&mut pending) {
                return;
            }
            if let Some(z) = pending.slice.take() {
                if !self.serve_slice(z) {
                    return;
                }
                let depth = self.volume.depth();
                pending.prefetch = (1..=PREFETCH_SLICES)
                    .flat_map(|d| [z.0 + d, z.0.wrapping_sub(d)])
                    .filter(|&n| n < depth)
                    .map(SliceIndex)
                    .collect();
                continue;
            }
            if let Some(z) = pending.prediction.take() {
                if !self.serve_prediction(z) {
                    return;
                }
                continue;
            }
            if let Some((x, y)) = pending.ortho.take() {
                match self.build_ortho(x, y, &mut pending) {
                    Some(true) => continue,
                    Some(false) => return,
                    // Superseded: a newer request came in; serve it first.
                    None => continue,
                }
            }
            if let Some(z) = pending.prefetch.pop() {
                // Errors surface when the slice is shown.
                let _ = self.volume.slice(z);
            }
        }
    }

    fn serve_slice(&self, z: SliceIndex) -> bool {
        match self.volume.slice(z) {
            Ok(slice) => self.send(LoadEvent::Slice { z, slice }),
            Err(e) => self.send(LoadEvent::Failed { request: LoadRequest::Slice(z), error: e }),
        }
    }

    fn serve_prediction(&self, z: SliceIndex) -> bool {
        let Some(prediction) = &self.prediction else { return true };
        match prediction.slice(z) {
            Ok(slice) => self.send(LoadEvent::Prediction { z, probabilities: Arc::new(probabilities(&slice.data)) }),
            Err(e) => self.send(LoadEvent::Failed { request: LoadRequest::Prediction(z), error: e }),
        }
    }

    /// Some(true): sent; Some(false): app gone; None: superseded by a newer ortho request.
    fn build_ortho(&self, x: usize, y: usize, pending: &mut Pending) -> Option<bool> {
        let mut slices = Vec::with_capacity(self.volume.depth());
        for z in (0..self.volume.depth()).map(SliceIndex) {
            // Keep the shown slice responsive while a deep stack is resliced.
            if !self.poll(pending) {
                return Some(false);
            }
            if let Some(shown) = pending.slice.take()
                && !self.serve_slice(shown)
            {
                return Some(false);
            }
            if pending.ortho.is_some() {
                return None;
            }
            match self.volume.slice(z) {
                Ok(s) => slices.push(s),
                Err(e) => {
                    let request = LoadRequest::Ortho { x, y };
                    return Some(self.send(LoadEvent::Failed { request, error: e }));
                }
            }
        }
        let xz = Arc::new(reslice_xz(&slices, y));
        let yz = Arc::new(reslice_yz(&slices, x));
        Some(self.send(LoadEvent::Ortho { x, y, xz, yz }))
    }
}

/// A prediction slice as probabilities: floats as they are (clamped to 0..1, NaN → 0), integer
/// maps scaled by their type's maximum (255 for 8 bit, 65535 for 16 bit).
pub fn probabilities(data: &SliceData) -> Vec<f32> {
    match data {
        SliceData::U8(v) => v.iter().map(|&x| f32::from(x) / 255.0).collect(),
        SliceData::U16(v) => v.iter().map(|&x| f32::from(x) / 65535.0).collect(),
        SliceData::U32(v) => v.iter().map(|&x| (x as f64 / f64::from(u32::MAX)) as f32).collect(),
        SliceData::F32(v) => v.iter().map(|&x| if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) }).collect(),
    }
}
