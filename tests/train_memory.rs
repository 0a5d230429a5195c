//! The training memory estimate against what runs really allocate: whole training runs of the
//! reference configuration (`$SAM4EM_FIXTURES`, default the published micro one) at two batch
//! sizes, with every activation kept and with block-level recomputation, on the CPU. The peak
//! is the most heap memory the run held at once above what the process held before it
//! (counted by this binary's allocator; on the CPU backend every tensor is heap memory).
//!
//! The allocator counts every thread, so nothing else may run beside a measurement: this
//! binary holds the one test and, ignored, the measurement that the estimate's neck and fusion
//! head piece was fitted with; both take [`MEASURING`] first.
#![cfg(feature = "model")]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::tensor::Device;
use sam4em::model::backprop::Activations;
use sam4em::model::footprint::TrainingFootprint;
use sam4em::model::multi::MultiModel;
use sam4em::model::{Init, Sam4em, Sam4emConfig};
use sam4em::state::bitplane::{BitPlane, PixelBox};
use sam4em::train::{Control, Schedule, TrainConfig, TrainSample, train};

/// The system allocator, counting the bytes held now and the most held since
/// [`Counting::reset_peak`].
struct Counting {
    current: AtomicUsize,
    peak: AtomicUsize,
    base: AtomicUsize,
}

impl Counting {
    /// Starts a measurement: the peak from here on, above what is held now.
    fn reset_peak(&self) {
        let now = self.current.load(Ordering::SeqCst);
        self.base.store(now, Ordering::SeqCst);
        self.peak.store(now, Ordering::SeqCst);
    }

    /// The most bytes held at once since [`Counting::reset_peak`], above what was held then.
    fn peak_above_reset(&self) -> u64 {
        self.peak.load(Ordering::SeqCst).saturating_sub(self.base.load(Ordering::SeqCst)) as u64
    }

    /// Bytes held now.
    fn current(&self) -> usize {
        self.current.load(Ordering::SeqCst)
    }

    fn grew(&self, bytes: usize) {
        let now = self.current.fetch_add(bytes, Ordering::SeqCst) + bytes;
        self.peak.fetch_max(now, Ordering::SeqCst);
    }
}

// SAFETY: every call goes to the system allocator unchanged; the counters only observe sizes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            self.grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            self.grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as the caller gave it.
        unsafe { System.dealloc(ptr, layout) };
        self.current.fetch_sub(layout.size(), Ordering::SeqCst);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as the caller gave it.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            self.current.fetch_sub(layout.size(), Ordering::SeqCst);
            self.grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting =
    Counting { current: AtomicUsize::new(0), peak: AtomicUsize::new(0), base: AtomicUsize::new(0) };

/// Held by each measuring test, so that `--include-ignored` does not run two at once.
static MEASURING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn fixture_config() -> Option<Sam4emConfig> {
    let dir = common::fixtures()?;
    Some(Sam4emConfig::from_reference_json(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap())
}

/// `count` consecutive slices at the model's input size: a textured image and a square
/// object drifting through z, every pixel vouched for.
fn slices(config: &Sam4emConfig, count: usize, classes: usize) -> Vec<TrainSample> {
    let s = config.image_size;
    (0..count)
        .map(|z| {
            let mut label = BitPlane::new(s, s);
            label.fill_rect(PixelBox { x0: s / 4 + z, y0: s / 4, x1: s / 2 + z, y1: s / 2 }, true);
            let mut all = BitPlane::new(s, s);
            all.fill_rect(PixelBox { x0: 0, y0: 0, x1: s, y1: s }, true);
            TrainSample {
                z: sam4em::state::SliceIndex(z),
                width: s,
                height: s,
                image: Arc::new((0..s * s).map(|i| ((i * 7 + z * 13) % 251) as u8).collect()),
                labels: vec![label; classes],
                vouched: vec![all; classes],
            }
        })
        .collect()
}

/// Peak heap bytes of two training steps of `batch` slices (the second step runs with AdamW's
/// moments in place, as every later one does).
fn measured_peak(config: &Sam4emConfig, classes: usize, batch: usize, activations: Activations) -> u64 {
    let device = Device::flex().autodiff();
    let names: Vec<String> = (0..classes).map(|c| format!("class{c}")).collect();
    let mut model = MultiModel::new(Sam4em::new(config, &Init::random(&device)), &names);
    let samples = slices(config, 2 * batch, classes);
    let train_config = TrainConfig {
        epochs: 1,
        batch_size: batch,
        optimizer: config.optimizer.clone(),
        schedule: Schedule::Constant,
        augment: false,
        seed: 1,
        activations,
        scale: sam4em::state::scale::Scale::Fit,
    };
    ALLOCATOR.reset_peak();
    let outcome = train(&mut model, &samples, &[], &train_config, &Control::default(), &mut |_| {}).unwrap();
    let peak = ALLOCATOR.peak_above_reset();
    assert_eq!(outcome.steps, 2);
    peak
}

#[test]
fn the_estimate_is_close_to_measured_peaks_at_two_batch_sizes() {
    let Some(config) = fixture_config() else { return };
    let _alone = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let classes = 1;
    let mut report = Vec::new();
    let mut at_eight = Vec::new();
    for batch in [2, 8] {
        let estimate = TrainingFootprint::estimate(&config, &Device::flex(), classes, batch);
        for activations in [Activations::Keep, Activations::Recompute] {
            let measured = measured_peak(&config, classes, batch, activations);
            if batch == 8 {
                at_eight.push(measured);
            }
            let predicted = estimate.bytes(activations == Activations::Recompute);
            let error = predicted as f64 / measured as f64 - 1.0;
            report.push(format!(
                "batch {batch} {:>9}: measured {:7.1} MB, estimated {:7.1} MB ({:+.1} %)",
                activations.name(),
                measured as f64 / 1e6,
                predicted as f64 / 1e6,
                100.0 * error
            ));
        }
    }
    eprintln!("{}", report.join("\n"));
    for line in &report {
        let pct: f64 = line.rsplit('(').next().unwrap().trim_end_matches(" %)").parse().unwrap();
        // An estimate too low lets a run start that the machine cannot hold: never more than
        // 15 % low. Too high only refuses a run that would have fitted. A recomputing run's
        // decode piece is not yet modelled from its own measurement (see
        // `footprint::decode_elements`), so at batch 2 the estimate errs high: +24 % on
        // 2026-12-05, +28 % in a build with burn's `fusion` (2026-12-06: every measured peak
        // of this CPU test 2 MB lower, the same estimate), +27 % at the second reference
        // configuration (tests/reference, 2026-12-06), hence 30 % that way.
        let (low, high) = if line.contains("recompute") { (-15.0, 30.0) } else { (-15.0, 15.0) };
        assert!(
            (low..=high).contains(&pct),
            "the estimate is off by more than {low} % / +{high} %:\n{}",
            report.join("\n")
        );
    }
    // And recomputation is worth it: far less memory for the paper's batch.
    assert!(at_eight[1] * 3 < at_eight[0], "recomputing {} bytes, keeping {}", at_eight[1], at_eight[0]);
}

/// The peak of the neck and fusion head as one recomputed piece (forward on the batch, then
/// backward), above what its inputs already hold, in maps of `d × g²` per slice: the number
/// `footprint::fusion_elements` uses for a recomputing step's largest piece. Prints one line
/// per configuration (the reference configuration at several image sizes, widths and batches).
/// `cargo test --release --test train_memory -- --ignored --nocapture`
#[test]
#[ignore = "a measurement for refitting footprint.rs, not a check"]
fn neck_and_fusion_head_peak_in_maps() {
    use burn::tensor::{Distribution, Tensor};
    let Some(base) = fixture_config() else { return };
    let _alone = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    // The first configuration twice: the first run's thread-local scratch stays allocated.
    for (image_size, d_model, batch) in
        [(256, 32, 2), (256, 32, 2), (256, 32, 8), (128, 64, 4), (512, 32, 2), (256, 128, 2)]
    {
        let mut config = base.clone();
        config.image_size = image_size;
        config.neck.d_model = d_model;
        config.validate().unwrap();
        let device = Device::flex().autodiff();
        let mut model = Sam4em::new(&config, &Init::random(&device));
        let x = Tensor::<4>::random([batch, 3, image_size, image_size], Distribution::Default, &device.inner());
        let stages = model.without_autodiff().trunk.forward_traced(x, &mut |_, _| {});
        let leaves: Vec<Tensor<4>> = stages.iter().map(|s| s.clone().autodiff().require_grad()).collect();
        drop(stages);
        let g = config.grid();
        ALLOCATOR.reset_peak();
        let fused = model.fuse_train(&leaves);
        let grad = fused.random_like(Distribution::Default);
        let pass = (fused * grad).sum().backward();
        drop(pass);
        let peak = ALLOCATOR.peak_above_reset() as f64;
        let map = (batch * d_model * g * g * 4) as f64;
        eprintln!(
            "image {image_size}, d {d_model}, grid {g}, batch {batch}: peak {:.1} MB = {:.1} maps of d × g² per slice",
            peak / 1e6,
            peak / map
        );
    }
}

/// The peak of one slice's decode (memory, prompt encoder, both decoders) as one recomputed
/// piece, forward then backward, in elements per g² (grid cells): the numbers
/// `footprint::decode_elements` was fitted to (least squares over d, the mask prompt's
/// channels and the slot memory). Prints one line per configuration.
/// `cargo test --release --test train_memory -- --ignored --nocapture`
#[test]
#[ignore = "a measurement for refitting footprint.rs, not a check"]
fn decode_peak_per_grid_cell() {
    use burn::tensor::{Distribution, Tensor};
    use sam4em::model::memory::MemoryState;
    let Some(base) = fixture_config() else { return };
    let _alone = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    // The first configuration twice: the first run's thread-local scratch stays allocated.
    for (image_size, d_model, mask_channels, slots, memory_dim) in [
        (256, 32, 8, 3, 16),
        (256, 32, 8, 3, 16),
        (512, 32, 8, 3, 16),
        (256, 64, 8, 3, 16),
        (256, 128, 8, 3, 16),
        (256, 32, 16, 3, 16),
        (256, 32, 8, 8, 32),
        (128, 64, 16, 1, 64),
        (512, 64, 4, 8, 16),
    ] {
        let mut config = base.clone();
        config.image_size = image_size;
        config.neck.d_model = d_model;
        config.prompt_encoder.mask_in_chans = mask_channels;
        config.memory.slots = slots;
        config.memory.memory_dim = memory_dim;
        config.validate().unwrap();
        let device = Device::flex().autodiff();
        let model = Sam4em::new(&config, &Init::random(&device));
        let g = config.grid();
        let features = Tensor::<4>::random([1, d_model, g, g], Distribution::Default, &device).require_grad();
        let prompt = Tensor::<4>::random([1, 1, image_size, image_size], Distribution::Default, &device)
            .greater_elem(0.5)
            .float();
        let memory = MemoryState {
            memory: Tensor::random([slots, memory_dim, g, g], Distribution::Default, &device.clone().inner())
                .autodiff(),
        };
        let target = Tensor::<4>::random([1, 1, image_size, image_size], Distribution::Default, &device);
        ALLOCATOR.reset_peak();
        let (out, next) = model.decode(features, prompt, &memory);
        let pass = ((out.logits1 * target.clone()).sum() + (out.logits2 * target).sum()).backward();
        drop((pass, next));
        let peak = ALLOCATOR.peak_above_reset() as f64;
        eprintln!(
            "decode image {image_size} d {d_model} mask {mask_channels} memory {} g {g}: {:.1} MB, {:.1} elements per g²",
            slots * memory_dim,
            peak / 1e6,
            peak / 4.0 / (g * g) as f64
        );
    }
}

/// What each Hiera block keeps for its backward pass (bytes held after its forward pass on a
/// tracked input, less what was held before) and its peak with the backward pass, for every
/// block of the four trunk sizes at 256² (LoRA rank 100) and of the reference configuration,
/// with the sizes `footprint::block_kept` / `block_transient` are fitted to. Prints one CSV
/// line per block: `trunk,block,input,hidden,qkv,lora,output,key_tokens,kept,peak` (`f32`
/// elements).
/// `cargo test --release --test train_memory -- --ignored --nocapture`
#[test]
#[ignore = "a measurement for refitting footprint.rs, not a check"]
fn hiera_block_kept_and_peak() {
    use burn::tensor::{Distribution, Tensor};
    use sam4em::model::HieraSize;
    let Some(micro) = fixture_config() else { return };
    let _alone = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let mut configs = vec![("micro".to_string(), micro)];
    for size in [HieraSize::Tiny, HieraSize::Small, HieraSize::BasePlus, HieraSize::Large] {
        let mut c = Sam4emConfig::sam4em(size);
        c.image_size = 256;
        c.lora.rank = 100;
        configs.push((size.file_stem().to_string(), c));
    }
    for (name, config) in configs {
        let device = Device::flex().autodiff();
        let model = Sam4em::new(&config, &Init::random(&device));
        let plain = model.without_autodiff();
        let s = config.image_size;
        let x = Tensor::<4>::random([1, 3, s, s], Distribution::Default, &device.clone().inner());
        let mut h = plain.trunk.patch_input(x, &mut |_, _| {});
        let layouts = config.hiera.blocks();
        for (k, block) in model.trunk.blocks.iter().enumerate() {
            let input = h.clone();
            h = plain.trunk.blocks[k].forward(h);
            let leaf = input.clone().autodiff().require_grad();
            let grad = h.clone().random_like(Distribution::Default).autodiff();
            let before = ALLOCATOR.current();
            ALLOCATOR.reset_peak();
            let out = block.forward(leaf.clone());
            let kept = ALLOCATOR.current().saturating_sub(before);
            let pass = (out * grad).sum().backward();
            drop(pass);
            let peak = ALLOCATOR.peak_above_reset();
            // The sizes as `footprint::block_sizes` computes them.
            let l = &layouts[k];
            let [_, side, _, _] = input.dims();
            let [_, side_out, _, _] = h.dims();
            let (tokens_in, tokens_out) = ((side * side) as f64, (side_out * side_out) as f64);
            let (padded, key_tokens) = if l.window == 0 {
                (tokens_in, tokens_in)
            } else {
                let p = side.div_ceil(l.window) * l.window;
                ((p * p) as f64, (l.window * l.window) as f64)
            };
            let sizes = [
                tokens_in * l.dim as f64,
                tokens_out * l.dim_out as f64 * config.hiera.mlp_ratio,
                padded * 3.0 * l.dim_out as f64,
                padded * config.lora.rank as f64,
                tokens_out * l.dim_out as f64,
                key_tokens,
            ];
            let sizes: Vec<String> = sizes.iter().map(|v| v.to_string()).collect();
            eprintln!("{name},{k},{},{},{}", sizes.join(","), kept / 4, peak / 4);
        }
    }
}
