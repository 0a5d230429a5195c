//! Prediction at the data's own resolution in tiles (issue 21), with the reference set's model
//! on the CPU and Lucchi++ slices: one tile the size of the model input is the untiled result
//! bit for bit; every tile streams along z exactly as its crop would as a stack of its own
//! (its own memory and prompt, its seed cropped); between tiles the map is a weighted mean of
//! theirs.
#![cfg(feature = "model")]

use crate::common;

use burn::tensor::Device;
use sam4em::infer::{Flow, Predictor, Scale, Seed, StackRequest, TileGrid};
use sam4em::io::{OpenOptions, open_stack};
use sam4em::model::multi::MultiModel;
use sam4em::model::{Init, Sam4em, Sam4emConfig};
use sam4em::state::SliceIndex;
use sam4em::state::bitplane::BitPlane;

/// Slices `0..depth` of the Lucchi++ train split cropped to `width × height` at `(x0, y0)`, and
/// the label of the first as a seed mask.
fn lucchi_crop(x0: usize, y0: usize, width: usize, height: usize, depth: usize) -> Option<(Vec<Vec<u8>>, BitPlane)> {
    let dir = common::shared()?.join("data/lucchi-pp-train-z000-049");
    let raw = open_stack(&dir.join("Train_In"), &OpenOptions::default()).unwrap();
    let lab = open_stack(&dir.join("Train_Out"), &OpenOptions::default()).unwrap();
    let full = raw.width();
    let crop = |data: &[u8]| -> Vec<u8> {
        (y0..y0 + height).flat_map(|y| data[y * full + x0..y * full + x0 + width].to_vec()).collect()
    };
    let images: Vec<Vec<u8>> =
        (20..20 + depth).map(|z| crop(&sam4em::infer::slice_to_u8(&raw.slice(SliceIndex(z)).unwrap(), None))).collect();
    let label = crop(&sam4em::infer::slice_to_u8(&lab.slice(SliceIndex(20)).unwrap(), None));
    let mut seed = BitPlane::new(width, height);
    for (i, &v) in label.iter().enumerate() {
        seed.set(i % width, i / width, v > 0);
    }
    Some((images, seed))
}

/// The set's model with its reference weights (`weights.safetensors`: every weight random
/// but far from an untrained model's, so the maps span the whole range), one class, on the CPU.
fn model() -> Option<MultiModel> {
    let dir = common::fixtures()?;
    let config = Sam4emConfig::from_reference_json(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let mut sam = Sam4em::new(&config, &Init::random(&Device::flex()));
    sam.load_sam4em_file(&dir.join("weights.safetensors")).unwrap();
    Some(MultiModel::new(sam, &["mitochondria".to_string()]))
}

/// The probabilities (0–255) of every slice of `images` (`width × height`) at `scale`,
/// streaming from slice 0 prompted with `seed`.
fn predict(model: &MultiModel, images: &[Vec<u8>], seed: &BitPlane, scale: Scale) -> Vec<Vec<u8>> {
    let (width, height) = (seed.width(), seed.height());
    let request = StackRequest {
        width,
        height,
        range: 0..images.len(),
        visible: SliceIndex(0),
        seeds: vec![Seed { z: SliceIndex(0), masks: vec![Some(seed.clone())] }],
        max_warmup_slices: 8,
        scale,
    };
    let mut out = vec![Vec::new(); images.len()];
    let mut fetches = 0;
    let done = Predictor::new(model, 4)
        .predict(
            &request,
            &mut |z| {
                fetches += 1;
                Ok(images[z.0].clone())
            },
            &mut |s, _| {
                out[s.z.0] = s.probabilities[0].clone();
                Flow::Continue
            },
        )
        .unwrap();
    assert!(done);
    assert_eq!(fetches, images.len(), "every slice is read once, whatever its tiles");
    out
}

/// `plane`'s `width × height` window at `(x0, y0)`.
fn crop_plane(plane: &BitPlane, x0: usize, y0: usize, width: usize, height: usize) -> BitPlane {
    let mut out = BitPlane::new(width, height);
    for y in 0..height {
        for x in 0..width {
            out.set(x, y, plane.get(x0 + x, y0 + y));
        }
    }
    out
}

#[test]
fn one_tile_of_the_model_input_is_the_untiled_prediction_bit_for_bit() {
    let Some(model) = model() else { return };
    let s = model.config().image_size;
    let Some((images, seed)) = lucchi_crop(300, 200, s, s, 3) else { return };
    assert_eq!(TileGrid::new(s, s, s, Scale::NATIVE).len(), 1);
    let untiled = predict(&model, &images, &seed, Scale::Fit);
    let tiled = predict(&model, &images, &seed, Scale::NATIVE);
    assert_eq!(untiled, tiled);
    // Not a trivial map: the seed's mitochondria and their surroundings differ.
    let (lo, hi) = untiled.iter().flatten().fold((255, 0), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    assert!(hi - lo > 100, "probabilities span only {lo}..{hi}");
}

#[test]
fn every_tile_streams_along_z_as_its_crop_would_on_its_own() {
    let Some(model) = model() else { return };
    let s = model.config().image_size;
    // Two tiles across and two down at scale 1, overlapping.
    let (w, h) = (s + s / 2, s + s / 4);
    let Some((images, seed)) = lucchi_crop(250, 150, w, h, 4) else { return };
    let grid = TileGrid::new(w, h, s, Scale::NATIVE);
    assert_eq!(grid.columns_rows(), (2, 2));
    let tiled = predict(&model, &images, &seed, Scale::NATIVE);
    // Each tile's window as a stack of its own (one tile: the same code without neighbours).
    let alone: Vec<Vec<Vec<u8>>> = grid
        .tiles()
        .map(|t| {
            let crops: Vec<Vec<u8>> = images
                .iter()
                .map(|im| {
                    (t.y0..t.y0 + t.height).flat_map(|y| im[y * w + t.x0..y * w + t.x0 + t.width].to_vec()).collect()
                })
                .collect();
            predict(&model, &crops, &crop_plane(&seed, t.x0, t.y0, t.width, t.height), Scale::NATIVE)
        })
        .collect();
    let (mut own, mut blended) = (0usize, 0usize);
    for (z, map) in tiled.iter().enumerate() {
        for y in 0..h {
            for x in 0..w {
                let covering: Vec<(usize, f32, u8)> = grid
                    .tiles()
                    .enumerate()
                    .filter(|(i, _)| grid.weight(*i, x, y) > 0.0)
                    .map(|(i, t)| (i, grid.weight(i, x, y), alone[i][z][(y - t.y0) * t.width + (x - t.x0)]))
                    .collect();
                let v = map[y * w + x];
                if let [(_, weight, value)] = covering[..] {
                    assert_eq!(weight, 1.0);
                    assert_eq!(v, value, "slice {z} ({x}, {y}): one tile covers it, its own stream says {value}");
                    own += 1;
                } else {
                    // A weighted mean of the tiles' values (each rounded to 0–255 on its own).
                    let lo = covering.iter().map(|c| c.2).min().unwrap();
                    let hi = covering.iter().map(|c| c.2).max().unwrap();
                    assert!(v + 1 >= lo && v <= hi.saturating_add(1), "slice {z} ({x}, {y}): {v} outside {lo}..={hi}");
                    blended += 1;
                }
            }
        }
    }
    assert!(own > 0 && blended > 0, "{own} pixels of one tile, {blended} blended");
}
