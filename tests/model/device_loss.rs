//! A GPU lost under a running prediction: the `inference` worker reports it (it does not hang
//! or take the process down), and the model loads and predicts on the CPU afterwards. The
//! device is really destroyed (`wgpu::Device::destroy`), on a wgpu device of this test's own
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
    wait_for(&worker, Duration::from_secs(120), |e| matches!(e, InferEvent::Slice { .. }).then_some(()));
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
fn a_destroyed_gpu_under_a_prediction_is_reported_and_the_cpu_takes_over() {
    if common::fixtures().is_none() {
        return;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "device_loss::device_loss_child", "--ignored", "--nocapture", "--test-threads=1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A lost device must not hang the worker: the child has 5 minutes.
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            panic!("the worker hung after the GPU was destroyed");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stdout.contains("NO-GPU") {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "no wgpu adapter under CI=true");
        eprintln!("skipping: no wgpu adapter");
        return;
    }
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    // (libtest prints the test's name and its output on one line.)
    let report = stdout.lines().find_map(|l| l.split_once("REPORT ").map(|(_, r)| r)).unwrap_or_default();
    assert!(!report.is_empty(), "no report from the child:\n{stdout}\n{stderr}");
    assert!(!report.starts_with("finished (completed true)"), "every slice predicted on a destroyed device: {report}");
    assert!(stdout.contains("CPU-OK"), "{stdout}\n{stderr}");
    eprintln!("after the GPU was destroyed: {report}");
}
