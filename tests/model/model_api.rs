//! The model's user-facing API beyond the golden numbers: adapter-set files, streaming modes and
//! directions, point/box prompts, and clear errors for bad checkpoints.
#![cfg(feature = "model")]

use crate::common;

use burn::tensor::{Device, Tensor};
use sam4em::model::adapter::{AdapterSet, AdapterSetError, AdapterSetMeta, in_adapter};
use sam4em::model::multi::MultiModel;
use sam4em::model::nn::{from_vec, to_vec};
use sam4em::model::prompt::{BoxPrompt, PointPrompt};
use sam4em::model::{Direction, Init, Sam2Mapping, Sam4em, Sam4emConfig, StateDict, StreamMode, WeightsError};

fn config(dir: &std::path::Path) -> Sam4emConfig {
    Sam4emConfig::from_reference_json(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap()
}

fn trained(dir: &std::path::Path, device: &Device) -> Sam4em {
    let mut m = Sam4em::new(&config(dir), &Init::random(device));
    m.load_sam4em_file(&dir.join("weights.safetensors")).unwrap();
    m
}

fn input(dir: &std::path::Path, device: &Device) -> Tensor<4> {
    let d = StateDict::read(&dir.join("inputs.safetensors")).unwrap();
    let t = &d.tensors["input"];
    from_vec(t.data.clone(), [t.shape[0], t.shape[1], t.shape[2], t.shape[3]], device)
}

fn meta(model: &MultiModel) -> AdapterSetMeta {
    crate::adapter_meta(model, "stage2_only", 3, Some(2))
}

/// Head 0's stage-1 logits of the reference input's first slice, prompted by an empty mask.
fn logits(model: &MultiModel, x: &Tensor<4>) -> Vec<f32> {
    let fused = model.embed(x.clone());
    let s = model.config().image_size;
    let prompt = Tensor::zeros([1, 1, s, s], &model.device());
    to_vec(&model.heads[0].model.stream(&[fused], Some(prompt), StreamMode::Clean, Direction::Forward, true)[0].logits1)
}

#[test]
fn adapter_set_round_trip_restores_predictions_and_rejects_mismatches() {
    let Some(dir) = common::fixtures() else { return };
    let device = Device::flex();
    let classes = ["mitochondria".to_string()];
    let mut a = MultiModel::new(trained(&dir, &device), &classes);
    let x = input(&dir, &device).narrow(0, 0, 1);
    let want = logits(&a, &x);

    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("v3.safetensors");
    let m = meta(&a);
    AdapterSet::from_model(&mut a, m).save(&path).unwrap();
    let set = AdapterSet::read(&path).unwrap();
    assert_eq!(set.meta, meta(&a));
    assert_eq!(AdapterSet::read_meta(&path).unwrap(), set.meta);
    // Only the trained part travels: no frozen trunk weights, the LoRA adapters and the heads.
    assert!(set.tensors.keys().all(|k| !k.contains("attn.qkv.qkv.") && !k.contains("neck.convs")));
    assert!(set.tensors.keys().any(|k| k.starts_with("encoder/") && k.contains("linear_b_v")));
    assert!(set.tensors.keys().any(|k| k.starts_with("class/mitochondria/")));

    // A model with the same frozen encoder but fresh heads predicts differently until the
    // set is applied, then identically.
    let mut fresh = Sam4em::new(&a.config().clone(), &Init::random(&device));
    let weights = StateDict::read(&dir.join("weights.safetensors")).unwrap();
    let frozen = StateDict {
        tensors: weights
            .tensors
            .iter()
            .filter(|(k, _)| k.starts_with("sam.image_encoder.") && !k.contains(".linear_"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        ..Default::default()
    };
    fresh.load_subset(&frozen, &|k, kind| k.starts_with("image_encoder.") && !in_adapter(k, kind)).unwrap();
    let mut b = MultiModel::new(fresh, &classes);
    let before = logits(&b, &x);
    assert!(before.iter().zip(&want).any(|(p, q)| (p - q).abs() > 1e-3));
    set.apply(&mut b, Some(&"ab".repeat(32)), &path).unwrap();
    let after = logits(&b, &x);
    assert!(after.iter().zip(&want).all(|(p, q)| (p - q).abs() <= 1e-5));

    // Wrong base, wrong configuration, not an adapter set: each error names the file, and the
    // model is left as it was.
    let err = set.apply(&mut b, Some(&"cd".repeat(32)), &path).unwrap_err();
    assert!(
        matches!(err, AdapterSetError::BaseMismatch { .. }) && err.to_string().ends_with(&path.display().to_string()),
        "{err}"
    );
    let mut other = a.config().clone();
    other.lora.rank += 1;
    let mut c = MultiModel::new(Sam4em::new(&other, &Init::shapes_only(&device)), &classes);
    let err = set.apply(&mut c, None, &path).unwrap_err();
    assert!(err.to_string().contains("lora") && err.to_string().ends_with(&path.display().to_string()), "{err}");
    let err = AdapterSet::read(&dir.join("weights.safetensors")).unwrap_err();
    assert!(matches!(err, AdapterSetError::NotAnAdapterSet { .. }), "{err}");
    assert_eq!(logits(&b, &x), after, "a refused set changes nothing");

    // A corrupt embedded configuration or class list is refused when the set is read, before
    // any module could be built from it (`sam4em predict --adapter` builds from it).
    type Damage = fn(&mut AdapterSetMeta);
    let corrupt: [(&str, Damage); 4] = [
        ("q_stride", |m| m.config.hiera.q_stride = [0, 0]),
        ("dim_mul", |m| m.config.hiera.dim_mul = 0.0),
        ("image_size", |m| m.config.image_size = 1 << 20),
        ("no classes", |m| m.classes.clear()),
    ];
    for (what, damage) in corrupt {
        let mut m = meta(&a);
        damage(&mut m);
        let bad = tmp.path().join(format!("bad-{}.safetensors", what.replace(' ', "-")));
        AdapterSet::from_model(&mut a, m).save(&bad).unwrap();
        for err in [AdapterSet::read(&bad).unwrap_err(), AdapterSet::read_meta(&bad).unwrap_err()] {
            let text = err.to_string();
            assert!(matches!(err, AdapterSetError::NotAnAdapterSet { .. }), "{what}: {text}");
            assert!(text.contains(what) || (what == "no classes" && text.contains("no classes")), "{what}: {text}");
            assert!(text.ends_with(&bad.display().to_string()), "{text}");
        }
    }
}

#[test]
fn streaming_directions_and_modes() {
    let Some(dir) = common::fixtures() else { return };
    let device = Device::flex();
    let model = trained(&dir, &device);
    let fused = model.embed(input(&dir, &device));
    let n = fused.dims()[0];
    let slices: Vec<Tensor<4>> = (0..n).map(|t| fused.clone().narrow(0, t, 1)).collect();
    let logits = |outs: &[sam4em::model::SliceOutput]| outs.iter().map(|o| to_vec(&o.logits1)).collect::<Vec<_>>();

    // Reverse in z is the forward pass over the reversed stack.
    let reverse = logits(&model.stream(&slices, None, StreamMode::Clean, Direction::Reverse, true));
    let mut reversed_input = slices.clone();
    reversed_input.reverse();
    let mut forward_of_reversed =
        logits(&model.stream(&reversed_input, None, StreamMode::Clean, Direction::Forward, true));
    forward_of_reversed.reverse();
    assert!(reverse == forward_of_reversed);
    let forward = logits(&model.stream(&slices, None, StreamMode::Clean, Direction::Forward, true));
    assert!(forward[0] != reverse[0], "the first slice of each pass sees a different memory");

    // Clean mode does not depend on the batch size; faithful mode does (its prompt rule
    // changes at batch boundaries).
    let mut rebatched = model.clone();
    rebatched.config.stream.batch_size = 1;
    let clean_b1 = logits(&rebatched.stream(&slices, None, StreamMode::Clean, Direction::Forward, true));
    assert!(forward == clean_b1);
    let faithful = logits(&model.stream(&slices, None, StreamMode::Faithful, Direction::Forward, true));
    let faithful_b1 = logits(&rebatched.stream(&slices, None, StreamMode::Faithful, Direction::Forward, true));
    assert!(faithful[0] == faithful_b1[0], "the first slice has the same prompt either way");
    assert!(faithful[1] != faithful_b1[1], "with batches of 1 every slice is prompted by stage 1 at 0.4");
}

#[test]
fn clicks_and_boxes_refine_a_mask_from_a_cached_embedding() {
    let Some(dir) = common::fixtures() else { return };
    let device = Device::flex();
    let model = trained(&dir, &device);
    let fused = model.embed(input(&dir, &device).narrow(0, 0, 1));
    let pe = &model.prompt_encoder;
    let fg = PointPrompt { x_px: 100.0, y_px: 80.0, foreground: true };
    let bg = PointPrompt { foreground: false, ..fg };
    // SAM pads point-only prompts with one "not a point" token; a box adds two corner tokens.
    assert_eq!(pe.embed_sparse(&[fg, bg], &[]).dims(), [1, 3, model.config.neck.d_model]);
    let bx = BoxPrompt { x0_px: 10.0, y0_px: 20.0, x1_px: 90.0, y1_px: 120.0 };
    assert_eq!(pe.embed_sparse(&[], &[bx]).dims(), [1, 2, model.config.neck.d_model]);
    let g = model.config.grid();
    let dense = pe.no_mask_dense(1, g);
    let decode = |p: PointPrompt| {
        let out = model.mask_decoder2.forward(
            fused.clone(),
            &model.image_pe,
            Some(pe.embed_sparse(&[p], &[])),
            dense.clone(),
            None,
        );
        to_vec(&out.logits)
    };
    let (a, b) = (decode(fg), decode(bg));
    assert_eq!(a.len(), model.config.image_size * model.config.image_size);
    assert!(a.iter().all(|v| v.is_finite()));
    assert!(a.iter().zip(&b).any(|(p, q)| (p - q).abs() > 1e-3), "the click's label changes the mask");
}

#[test]
fn bad_checkpoints_fail_with_the_file_and_the_problem() {
    let Some(dir) = common::fixtures() else { return };
    let device = Device::flex();
    let cfg = config(&dir);
    let tmp = tempfile::tempdir().unwrap();

    // Truncated PyTorch file.
    let bytes = std::fs::read(common::fixture_checkpoint(&dir)).unwrap();
    let cut = tmp.path().join("cut.pt");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = Sam4em::new(&cfg, &Init::shapes_only(&device)).load_sam2_file(&cut, Sam2Mapping::Stage2Only).unwrap_err();
    assert!(err.to_string().ends_with(&cut.display().to_string()), "{err}");

    // A checkpoint for another configuration: the first mismatching key is named.
    let mut other = cfg.clone();
    other.lora.rank += 1;
    let err = Sam4em::new(&other, &Init::shapes_only(&device))
        .load_sam4em_file(&dir.join("weights.safetensors"))
        .unwrap_err();
    assert!(matches!(&err, WeightsError::Shape { key, .. } if key.contains("linear_a_q")), "{err}");

    // A NaN in the weights.
    let mut dict = StateDict::read(&dir.join("weights.safetensors")).unwrap();
    dict.tensors.get_mut("sam.fpn.out_proj.0.bias").unwrap().data[0] = f32::NAN;
    let nan = tmp.path().join("nan.safetensors");
    StateDict::write_safetensors(&dict.tensors, Default::default(), &nan).unwrap();
    let err = Sam4em::new(&cfg, &Init::random(&device)).load_sam4em_file(&nan).unwrap_err();
    assert!(matches!(&err, WeightsError::NonFinite { key, .. } if key == "sam.fpn.out_proj.0.bias"), "{err}");

    // A SAM 2 file without its trunk: the missing keys are listed.
    let mut sam2 = StateDict::read(&common::fixture_checkpoint(&dir)).unwrap();
    sam2.tensors.retain(|k, _| !k.starts_with("image_encoder.trunk.blocks.1."));
    let err = Sam4em::new(&cfg, &Init::random(&device)).load_sam2_state(&sam2, Sam2Mapping::BothStages).unwrap_err();
    assert!(
        matches!(&err, WeightsError::Missing { keys, .. } if keys.iter().all(|k| k.contains("blocks.1."))),
        "{err}"
    );

    // The trainer file given as a SAM 2 checkpoint: unknown keys are named, not ignored.
    let err = Sam4em::new(&cfg, &Init::random(&device))
        .load_sam2_file(&dir.join("weights.safetensors"), Sam2Mapping::BothStages)
        .unwrap_err();
    assert!(
        err.to_string().contains("SAM4EM trainer checkpoint") && err.to_string().ends_with("weights.safetensors"),
        "{err}"
    );
}

/// Before a GPU training run is planned, the GPU's memory is read from its driver (Vulkan's
/// memory budget through wgpu's instance) of the device the model runs on (the one the app
/// shares with its window), and the budget follows what the process allocates.
#[test]
fn gpu_memory_comes_from_the_driver() {
    use burn::tensor::wgpu::wgpu;
    use sam4em::model::device::{adapter_memory, gpu_memory};
    use sam4em::train::memory::available_for;

    assert_eq!(gpu_memory(&Device::flex()), None, "the CPU backend has no GPU memory");
    let Some(device) = common::wgpu_device() else { return };
    let memory = gpu_memory(&device).expect("a Vulkan adapter reports its memory heaps");
    eprintln!("default device: {memory:?}");
    assert!(memory.heap_bytes > 0, "{memory:?}");
    if let Some(free) = memory.free_bytes {
        assert!(free <= memory.heap_bytes, "{memory:?}");
    }
    let available = available_for(&device).expect("a GPU always gets a figure");
    if std::env::var("SAM4EM_GPU_MEMORY_GIB").is_err() {
        assert!(available.what.contains(&memory.adapter), "{available:?} does not name {}", memory.adapter);
    }

    // The device the app shares with its window is asked through its own adapter.
    let model = sam4em::model::device::model_gpu().expect("the model's GPU device");
    let (shared, gpu) = (model.device.clone(), model.gpu.clone());
    let via_shared = gpu_memory(&shared).expect("the shared device's adapter reports memory");
    assert_eq!(via_shared.adapter, model.adapter.get_info().name);
    assert_eq!(via_shared.heap_bytes, adapter_memory(&model.adapter).unwrap().heap_bytes);

    // Where the driver keeps a budget, what this process holds comes off it.
    if let Some(before) = via_shared.free_bytes {
        let held = gpu.create_buffer(&wgpu::BufferDescriptor {
            label: Some("budget probe"),
            size: 256 << 20,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let after = gpu_memory(&shared).unwrap().free_bytes.unwrap();
        eprintln!("free before a 256 MiB buffer {before}, after {after}");
        assert!(after + (200 << 20) <= before, "free {before} → {after} after allocating 256 MiB");
        drop(held);
    }
}
