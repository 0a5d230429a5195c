//! A GPU lost under a running prediction: the `inference` worker reports it (it does not hang
//! or take the process down), and the model loads and predicts on the CPU afterwards. The same
//! under a training run: the `trainer` reports the device lost and writes no version. The
//! device is really destroyed (`wgpu::Device::destroy`), on a wgpu device of the test's own
//! (lavapipe without a GPU), in a child process so that nothing else in this binary shares it.

use crate::common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::tensor::Device;
use sam4em::infer::worker::{InferCommand, InferEvent, InferenceWorker};
use sam4em::infer::{Seed, StackRequest};
use sam4em::model::source::ModelSource;
use sam4em::state::SliceIndex;

/// Waits for the first event that `pick` keeps; panics with what came instead after `limit`.
fn wait_for<T>(worker: &InferenceWorker, limit: Duration, mut pick: impl FnMut(InferEvent) -> Option<T>) -> T {
    let start = Instant::now();
    let mut seen = Vec::new();
    loop {
        for e in worker.events() {
            let name = format!("{e:?}").chars().take(120).collect::<String>();
            if let Some(t) = pick(e) {
                return t;
            }
            seen.push(name);
        }
        assert!(start.elapsed() < limit, "nothing after {limit:?}; events: {seen:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn source(set: &std::path::Path, device: Device) -> ModelSource {
    let config =
        sam4em::model::Sam4emConfig::from_reference_json(&common::reduced_config_json(set).to_string()).unwrap();
    ModelSource {
        checkpoint: common::fixture_checkpoint(set),
        config: Some(config),
        classes: vec!["mitochondria".into()],
        device,
    }
}

fn request(depth: usize) -> (StackRequest, sam4em::worker::SharedImages) {
    let (w, h) = (96, 80);
    let images: sam4em::worker::SharedImages =
        Arc::new(move |z: SliceIndex| Ok((0..w * h).map(|i| ((i * 7 + z.0 * 13) % 251) as u8).collect()));
    let request = StackRequest {
        width: w,
        height: h,
        range: 0..depth,
        visible: SliceIndex(0),
        seeds: Vec::<Seed>::new(),
        max_warmup_slices: 0,
        scale: sam4em::infer::Scale::Fit,
        fill: None,
    };
    (request, images)
}

#[test]
#[ignore = "run by a_destroyed_gpu_under_a_prediction_is_reported_and_the_cpu_takes_over as a child process"]
fn device_loss_child() {
    let set = common::fixtures().expect("the parent checked");
    let Some((gpu, device)) = common::own_gpu() else {
        println!("NO-GPU");
        return;
    };
    let worker = InferenceWorker::spawn(|| {}).unwrap();
    worker.send(InferCommand::Load(Box::new(source(&set, device))));
    wait_for(&worker, Duration::from_secs(120), |e| match e {
        InferEvent::Loaded { .. } => Some(()),
        InferEvent::LoadFailed(m) => panic!("loading on the GPU failed: {m}"),
        _ => None,
    });
    let (req, images) = request(64);
    let generation = worker.next_generation();
    worker.send(InferCommand::Predict { generation, request: req, images });
    // The first slice compiles every kernel (minutes on lavapipe with a cold shader cache).
    wait_for(&worker, Duration::from_secs(600), |e| matches!(e, InferEvent::Slice { .. }).then_some(()));
    // The GPU goes away mid-stack (a driver reset, an eGPU unplugged).
    gpu.destroy();
    let report = wait_for(&worker, Duration::from_secs(120), |e| match e {
        InferEvent::DeviceLost { message } => Some(message),
        InferEvent::Failed { message, .. } => Some(format!("failed: {message}")),
        InferEvent::Finished { completed, .. } => Some(format!("finished (completed {completed})")),
        _ => None,
    });
    println!("REPORT {report}");
    // The CPU takes over: the same model loads and predicts there.
    worker.send(InferCommand::Load(Box::new(source(&set, Device::flex()))));
    wait_for(&worker, Duration::from_secs(120), |e| match e {
        InferEvent::Loaded { .. } => Some(()),
        InferEvent::LoadFailed(m) => panic!("loading on the CPU failed: {m}"),
        _ => None,
    });
    let (req, images) = request(2);
    let generation = worker.next_generation();
    worker.send(InferCommand::Predict { generation, request: req, images });
    wait_for(&worker, Duration::from_secs(120), |e| match e {
        InferEvent::Finished { completed: true, .. } => Some(()),
        InferEvent::Failed { message, .. } => panic!("predicting on the CPU failed: {message}"),
        _ => None,
    });
    println!("CPU-OK");
}

#[test]
#[ignore = "run by a_destroyed_gpu_under_training_is_reported_and_no_version_is_written as a child process"]
fn training_device_loss_child() {
    use sam4em::state::bitplane::BitPlane;
    use sam4em::train::worker::{PendingSample, TrainJob, TrainerEvent, TrainerWorker};
    use sam4em::train::{Control, Schedule, TrainConfig};

    let set = common::fixtures().expect("the parent checked");
    let Some((gpu, device)) = common::own_gpu() else {
        println!("NO-GPU");
        return;
    };
    let source = source(&set, device.autodiff());
    let config = source.config.clone().unwrap();
    let checkpoint = std::fs::metadata(&source.checkpoint).unwrap();
    let base = sam4em::model::adapter::BaseCheckpoint {
        file_name: "sam2-micro.pt".into(),
        bytes: checkpoint.len(),
        sha256: sam4em::model::checkpoints::sha256_file(&source.checkpoint).unwrap(),
        mapping: "both_stages".into(),
    };
    let (w, h) = (96, 80);
    let (_, images) = request(8);
    let sample = |z: usize| {
        let mut labels = BitPlane::new(w, h);
        for y in 0..h {
            for x in 0..w {
                labels.set(x, y, (x + y + z) % 17 < 6);
            }
        }
        let mut vouched = BitPlane::new(w, h);
        vouched.fill_rect(sam4em::state::bitplane::PixelBox { x0: 0, y0: 0, x1: w, y1: h }, true);
        PendingSample { z: SliceIndex(z), labels: vec![labels], vouched: vec![vouched] }
    };
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let out = tmp.path().join("v001.safetensors");
    let control = Arc::new(Control::default());
    let job = TrainJob {
        source,
        start: None,
        base,
        samples: (0..4).map(sample).collect(),
        validation: Vec::new(),
        images,
        size: (w, h),
        pixel_size_nm: None,
        // Long enough that the device goes while it runs.
        config: TrainConfig {
            epochs: 500,
            batch_size: 2,
            optimizer: config.optimizer.clone(),
            schedule: Schedule::Constant,
            augment: false,
            seed: 1,
            activations: sam4em::model::backprop::Activations::Keep,
            scale: sam4em::state::scale::Scale::Fit,
        },
        version: 1,
        out: out.clone(),
        control: Arc::clone(&control),
    };
    let (tx, rx) = crossbeam_channel::bounded::<()>(1);
    let mut trainer = TrainerWorker::spawn(move || {
        let _ = tx.try_send(());
    })
    .unwrap();
    assert!(trainer.start(job));
    let wait = |what: &str, pick: &mut dyn FnMut(&TrainerEvent) -> bool| {
        let start = Instant::now();
        loop {
            for e in trainer.events() {
                if let TrainerEvent::Finished { .. } | TrainerEvent::Failed(_) = e {
                    println!("REPORT {e:?}");
                    return;
                }
                if pick(&e) {
                    println!("REPORT {e:?}");
                    return;
                }
            }
            assert!(start.elapsed() < Duration::from_secs(240), "nothing after 240 s waiting for {what}");
            let _ = rx.recv_timeout(Duration::from_millis(50));
        }
    };
    // The GPU goes away while the run builds its model and takes its first steps (a step on
    // lavapipe takes minutes the first time: its kernels are compiled and tuned).
    wait("the run to start", &mut |e| matches!(e, TrainerEvent::Loading));
    gpu.destroy();
    wait("the report", &mut |e| matches!(e, TrainerEvent::DeviceLost { .. }));
    control.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    println!("VERSION-WRITTEN {}", out.exists());
}

/// Runs `name` (an ignored test of this file) as a child process; its stdout, or `None` when
/// it found no wgpu adapter (skipped, or a failure under CI=true).
fn run_child(name: &str) -> Option<String> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", &format!("device_loss::{name}"), "--ignored", "--nocapture", "--test-threads=1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A lost device must not hang the worker; each wait in the child has its own limit (the
    // first slice's kernels compile for minutes on lavapipe with a cold shader cache), and
    // the whole child has 15 minutes.
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(900) {
            let _ = child.kill();
            panic!("the worker hung after the GPU was destroyed");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stdout.contains("NO-GPU") {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "no wgpu adapter under CI=true");
        eprintln!("skipping: no wgpu adapter");
        return None;
    }
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    Some(stdout)
}

#[test]
fn a_destroyed_gpu_under_training_is_reported_and_no_version_is_written() {
    if common::fixtures().is_none() {
        return;
    }
    let Some(stdout) = run_child("training_device_loss_child") else { return };
    let report = stdout.lines().find_map(|l| l.split_once("REPORT ").map(|(_, r)| r)).unwrap_or_default();
    assert!(report.starts_with("Loading"), "the run started: {stdout}");
    let report = stdout.lines().filter_map(|l| l.split_once("REPORT ").map(|(_, r)| r)).nth(1).unwrap_or_default();
    assert!(report.starts_with("DeviceLost"), "the trainer says the device was lost: {report}\n{stdout}");
    assert!(stdout.contains("VERSION-WRITTEN false"), "nothing computed on a lost GPU is written: {stdout}");
    eprintln!("after the GPU was destroyed under training: {report}");
}

#[test]
fn a_destroyed_gpu_under_a_prediction_is_reported_and_the_cpu_takes_over() {
    if common::fixtures().is_none() {
        return;
    }
    let Some(stdout) = run_child("device_loss_child") else { return };
    // (libtest prints the test's name and its output on one line.)
    let report = stdout.lines().find_map(|l| l.split_once("REPORT ").map(|(_, r)| r)).unwrap_or_default();
    assert!(!report.is_empty(), "no report from the child:\n{stdout}");
    assert!(!report.starts_with("finished (completed true)"), "every slice predicted on a destroyed device: {report}");
    assert!(stdout.contains("CPU-OK"), "{stdout}");
    eprintln!("after the GPU was destroyed: {report}");
}
