//! Prediction at the data's own resolution in tiles (issue 21), with the reference set's model
//! on the CPU and Lucchi++ slices: one tile the size of the model input is the untiled result
//! bit for bit; every tile streams along z exactly as its crop would as a stack of its own
//! (its own memory and prompt, its seed cropped); between tiles the map is a weighted mean of
//! theirs.
#![cfg(feature = "model")]

use crate::common;

use burn::tensor::Device;
use sam4em::infer::{FillIn, Flow, Predictor, Progress, Scale, Seed, StackRequest, TileGrid};
use sam4em::io::{OpenOptions, open_stack};
use sam4em::model::multi::MultiModel;
use sam4em::model::{Init, Sam4em, Sam4emConfig};
use sam4em::state::SliceIndex;
use sam4em::state::bitplane::{BitPlane, PixelBox};

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

/// A request for every slice of `images`, streaming from slice 0 prompted with `seed` (the
/// slices' size).
fn seeded_request(images: &[Vec<u8>], seed: &BitPlane, scale: Scale, fill: Option<FillIn>) -> StackRequest {
    StackRequest {
        width: seed.width(),
        height: seed.height(),
        range: 0..images.len(),
        visible: SliceIndex(0),
        seeds: vec![Seed { z: SliceIndex(0), masks: vec![Some(seed.clone())] }],
        max_warmup_slices: 8,
        scale,
        fill,
    }
}

/// A predictor whose stream budget holds one row of `columns` tiles: a band per tile row.
fn one_row_per_band(model: &MultiModel, columns: usize) -> Predictor {
    let predictor = Predictor::new(model, 4);
    let budget = predictor.tile_stream_bytes() * columns as u64;
    predictor.with_stream_budget(budget)
}

/// The probabilities (0–255) of every slice of `images` (`width × height`) at `scale`,
/// streaming from slice 0 prompted with `seed`.
fn predict(model: &MultiModel, images: &[Vec<u8>], seed: &BitPlane, scale: Scale) -> Vec<Vec<u8>> {
    let request = seeded_request(images, seed, scale, None);
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

/// Every report of a prediction of `images` at scale 1 from slice 0 with `fill`: the slice, its
/// map, the tiles of a partial report, and the progress.
type Report = (usize, Vec<u8>, Option<Vec<PixelBox>>, Progress);

fn reports(model: &MultiModel, images: &[Vec<u8>], seed: &BitPlane, fill: Option<FillIn>) -> Vec<Report> {
    let request = seeded_request(images, seed, Scale::NATIVE, fill);
    let mut out = Vec::new();
    let done = Predictor::new(model, 4)
        .predict(&request, &mut |z| Ok(images[z.0].clone()), &mut |s, progress| {
            out.push((s.z.0, s.probabilities[0].clone(), s.partial, progress));
            Flow::Continue
        })
        .unwrap();
    assert!(done);
    out
}

#[test]
fn a_tiled_slice_fills_in_from_the_view_and_ends_as_the_plain_prediction() {
    let Some(model) = model() else { return };
    let s = model.config().image_size;
    let (w, h) = (2 * s + s / 2, 2 * s);
    let Some((images, seed)) = lucchi_crop(0, 0, w, h, 3) else { return };
    let grid = TileGrid::new(w, h, s, Scale::NATIVE);
    // The view: a part of the slice near its top-right corner.
    let view = PixelBox { x0: w - s * 3 / 4, y0: s / 8, x1: w - s / 4, y1: s / 2 };
    let (order, in_view) = grid.order_from(view);
    assert!(in_view >= 1 && in_view < grid.len(), "{in_view} of {} tiles under the view", grid.len());
    let plain = reports(&model, &images, &seed, None);
    assert!(plain.iter().all(|r| r.2.is_none() && r.3.slice_tiles.is_none()), "no fill-in, no partial report");
    // One report per slice after its tiles on screen (the interval never comes), then the slice.
    let fill = FillIn { view, interval_s: 1e9 };
    let filled = reports(&model, &images, &seed, Some(fill));
    assert_eq!(filled.len(), 2 * images.len());
    let view_tiles: Vec<PixelBox> = order[..in_view].iter().map(|&t| grid.tile_box(t)).collect();
    for (z, pair) in filled.chunks(2).enumerate() {
        let [(pz, partial, Some(tiles), pp), (fz, complete, None, fp)] = pair else {
            panic!(
                "slice {z}: a partial report then the slice, got {:?}",
                pair.iter().map(|r| r.2.is_some()).collect::<Vec<_>>()
            )
        };
        assert_eq!((*pz, *fz), (z, z));
        assert_eq!(tiles, &view_tiles, "slice {z}: the tiles on screen, nearest the view's centre first");
        assert_eq!((pp.done, pp.slice_tiles), (z, Some((in_view, grid.len()))), "a partial report is not a slice done");
        assert_eq!((fp.done, fp.slice_tiles), (z + 1, None));
        // The complete slice is the plain prediction (the blend sums tiles in another order:
        // at most a rounding tie apart).
        let (_, plain_map, _, _) = &plain[z];
        let apart = complete.iter().zip(plain_map).filter(|(a, b)| a != b).count();
        let worst = complete.iter().zip(plain_map).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
        assert!(worst <= 1 && apart * 10_000 <= w * h, "slice {z}: {apart} pixels differ, by up to {worst}");
        // Every tile covering a pixel on screen is decoded in the first report: there the
        // partial map is already the final one; outside the decoded tiles it is 0.
        for y in 0..h {
            for x in 0..w {
                let (p, c) = (partial[y * w + x], complete[y * w + x]);
                let on_screen = (view.x0..view.x1).contains(&x) && (view.y0..view.y1).contains(&y);
                let decoded = tiles.iter().any(|t| (t.x0..t.x1).contains(&x) && (t.y0..t.y1).contains(&y));
                if on_screen {
                    assert!(p.abs_diff(c) <= 1, "slice {z} ({x}, {y}) on screen: {p} before, {c} after");
                } else if !decoded {
                    assert_eq!(p, 0, "slice {z} ({x}, {y}) is in no decoded tile");
                }
            }
        }
    }
    // With no interval, a report after every tile (the CPU embeds one tile per pass), each with
    // one more tile, never the last.
    let every = reports(&model, &images[..1], &seed, Some(FillIn { view, interval_s: 0.0 }));
    let counts: Vec<usize> = every.iter().filter_map(|r| r.2.as_ref().map(Vec::len)).collect();
    assert_eq!(counts, (1..grid.len()).collect::<Vec<_>>());
    assert!(every.last().unwrap().2.is_none());
}

/// Bounded memory (issue 21): with a stream budget of one tile row, a slice is streamed in
/// bands of tile rows, each band through every slice before the next; each slice comes band by
/// band, its rows once each, and the assembled maps are the one-band maps bit for bit.
#[test]
fn bands_of_tile_rows_stream_through_z_and_give_the_same_maps() {
    let Some(model) = model() else { return };
    let s = model.config().image_size;
    let (w, h) = (s + s / 2, 2 * s + s / 3);
    let Some((images, seed)) = lucchi_crop(0, 0, w, h, 3) else { return };
    let grid = TileGrid::new(w, h, s, Scale::NATIVE);
    let (columns, rows) = grid.columns_rows();
    assert!(rows >= 3, "{columns} × {rows} tiles");
    let plain = predict(&model, &images, &seed, Scale::NATIVE);
    let request = seeded_request(&images, &seed, Scale::NATIVE, None);
    let mut predictor = one_row_per_band(&model, columns);
    assert_eq!(predictor.bands(&grid).len(), rows, "one tile row per band");
    let mut maps = vec![vec![0u8; w * h]; images.len()];
    let mut covered = vec![vec![0usize; h]; images.len()];
    let mut order = Vec::new();
    let mut progress = Vec::new();
    let done = predictor
        .predict(&request, &mut |z| Ok(images[z.0].clone()), &mut |p, prog| {
            assert!(p.partial.is_none());
            maps[p.z.0][p.rows.start * w..p.rows.end * w].copy_from_slice(&p.probabilities[0]);
            for y in p.rows.clone() {
                covered[p.z.0][y] += 1;
            }
            order.push((p.z.0, p.rows.clone()));
            progress.push(prog);
            Flow::Continue
        })
        .unwrap();
    assert!(done);
    assert!(covered.iter().flatten().all(|&n| n == 1), "every row of every slice exactly once");
    assert_eq!(maps, plain, "bands give the one-band maps bit for bit");
    // Band after band: every slice's first band before any slice's second.
    assert_eq!(order.len(), rows * images.len());
    assert!(order[..images.len()].iter().all(|(_, r)| r.start == 0), "{order:?}");
    // A slice is done with its last band; the decoded fraction grows to the whole.
    let finals: Vec<usize> = progress.iter().map(|p| p.done).collect();
    assert_eq!(*finals.last().unwrap(), images.len());
    assert_eq!(finals.iter().filter(|&&d| d == 0).count(), (rows - 1) * images.len());
    assert!(progress.windows(2).all(|p| p[0].decoded.0 < p[1].decoded.0));
    let last = progress.last().unwrap().decoded;
    assert_eq!(last, (last.1, images.len() * grid.len()));
}

/// Bands in the app (issue 21): with a view to fill in from, the band under the view goes
/// first and the others by their distance from it (from the bottom up for a view at the
/// bottom; top down for one at the top), each filling in tile by tile. Every row of every slice
/// still comes final exactly once, at most a rounding tie from the one-band maps; and every
/// partial report is final wherever every tile covering a pixel is decoded, rows shared with a
/// band already done included.
#[test]
fn bands_go_from_the_view_outwards_and_fill_in_as_their_tiles_come() {
    let Some(model) = model() else { return };
    let s = model.config().image_size;
    let (w, h) = (s + s / 2, 2 * s + s / 3);
    let Some((images, seed)) = lucchi_crop(0, 0, w, h, 2) else { return };
    let grid = TileGrid::new(w, h, s, Scale::NATIVE);
    let (columns, rows) = grid.columns_rows();
    let plain = predict(&model, &images, &seed, Scale::NATIVE);
    let tile_of = |b: &PixelBox| (0..grid.len()).find(|&t| grid.tile_box(t) == *b).expect("a tile's box");
    let bottom = PixelBox { x0: 0, y0: h - s / 4, x1: w / 2, y1: h };
    let top = PixelBox { x0: w / 2, y0: 0, x1: w, y1: s / 4 };
    for (view, first_band) in [(bottom, rows - 1), (top, 0)] {
        let request = seeded_request(&images, &seed, Scale::NATIVE, Some(FillIn { view, interval_s: 0.0 }));
        let mut predictor = one_row_per_band(&model, columns);
        let bands = predictor.bands(&grid);
        assert_eq!(bands.len(), rows, "one tile row per band");
        let mut reports = Vec::new();
        let done = predictor
            .predict(&request, &mut |z| Ok(images[z.0].clone()), &mut |p, prog| {
                reports.push((p, prog));
                Flow::Continue
            })
            .unwrap();
        assert!(done);
        // The first report: the view's band, its tiles under the view first.
        let (first, _) = &reports[0];
        let first_tiles = first.partial.as_ref().expect("a partial report first");
        assert_eq!(tile_of(&first_tiles[0]) / columns, first_band, "{view:?}");
        assert_eq!(first_tiles[0], grid.tile_box(grid.order_from(view).0[0]));
        // Final rows: each once; the maps at most a rounding tie from one band's.
        let mut maps = vec![vec![0u8; w * h]; images.len()];
        let mut covered = vec![vec![0usize; h]; images.len()];
        let mut finals = Vec::new();
        for (p, prog) in reports.iter().filter(|(p, _)| p.partial.is_none()) {
            let z = p.z.0;
            maps[z][p.rows.start * w..p.rows.end * w].copy_from_slice(&p.probabilities[0]);
            for y in p.rows.clone() {
                covered[z][y] += 1;
            }
            finals.push((z, p.rows.clone(), p.complete, prog.done));
        }
        assert!(covered.iter().flatten().all(|&n| n == 1), "every row of every slice exactly once: {covered:?}");
        for (z, (m, p)) in maps.iter().zip(&plain).enumerate() {
            let apart = m.iter().zip(p).filter(|(a, b)| a != b).count();
            let worst = m.iter().zip(p).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
            assert!(worst <= 1 && apart * 10_000 <= w * h, "slice {z}: {apart} pixels differ, by up to {worst}");
        }
        // A slice is done with its last band only: the last band in order, every slice's
        // reports of a band before any of the next band's.
        let completes: Vec<usize> = finals.iter().filter(|r| r.2).map(|r| r.0).collect();
        assert_eq!(completes, (0..images.len()).collect::<Vec<_>>(), "{finals:?}");
        assert!(finals[finals.len() - images.len()..].iter().all(|r| r.2), "{finals:?}");
        assert_eq!(finals.last().unwrap().3, images.len());
        // Every partial report is final where every tile covering a pixel is decoded: per slice,
        // the tiles of the bands done and those of the band under way decoded so far.
        let mut decoded: Vec<Vec<usize>> = vec![Vec::new(); images.len()];
        let mut under_way = vec![0usize; images.len()];
        let mut checked = 0usize;
        for (p, _) in &reports {
            let z = p.z.0;
            let Some(tiles) = &p.partial else {
                // Its band is done: all of its tiles are decoded.
                let band = under_way[z];
                decoded[z].retain(|t| t / columns != band);
                decoded[z].extend(band * columns..(band + 1) * columns);
                continue;
            };
            let now: Vec<usize> = tiles.iter().map(tile_of).collect();
            under_way[z] = now[0] / columns;
            decoded[z].retain(|t| t / columns != under_way[z]);
            decoded[z].extend(&now);
            for y in p.rows.clone() {
                for x in 0..w {
                    let covering = (0..grid.len()).filter(|&t| grid.weight(t, x, y) > 0.0);
                    if covering.clone().all(|t| decoded[z].contains(&t)) {
                        let (a, b) = (p.probabilities[0][(y - p.rows.start) * w + x], maps[z][y * w + x]);
                        assert!(a.abs_diff(b) <= 1, "slice {z} ({x}, {y}): partial {a}, final {b}");
                        checked += 1;
                    }
                }
            }
        }
        assert!(2 * checked > w * h, "{checked} pixels checked on {w} × {h} slices");
    }
    // A slice less than two tiles tall in three tile rows: the first and the third overlap, so
    // the bands go top to bottom whatever the view (rows reach the third band through the
    // second), and the maps are the one-band maps bit for bit.
    let h = 2 * s - s / 8;
    let Some((images, seed)) = lucchi_crop(0, 0, w, h, 2) else { return };
    let grid = TileGrid::new(w, h, s, Scale::NATIVE);
    let (columns, rows) = grid.columns_rows();
    assert_eq!(rows, 3);
    assert!(grid.tile_box(0).y1 > grid.tile_box(2 * columns).y0, "tile rows 0 and 2 overlap");
    // A view below the first tile row, in the second and third: nearest the second band.
    let centre = (grid.tile_box(0).y1 + grid.tile_box(columns).y1) / 2;
    let plain = predict(&model, &images, &seed, Scale::NATIVE);
    let view = PixelBox { x0: 0, y0: centre - 2, x1: w, y1: centre + 2 };
    let request = seeded_request(&images, &seed, Scale::NATIVE, Some(FillIn { view, interval_s: 0.0 }));
    let mut maps = vec![vec![0u8; w * h]; images.len()];
    let mut firsts = Vec::new();
    one_row_per_band(&model, columns)
        .predict(&request, &mut |z| Ok(images[z.0].clone()), &mut |p, _| {
            if p.partial.is_none() {
                firsts.push(p.rows.start);
                maps[p.z.0][p.rows.start * w..p.rows.end * w].copy_from_slice(&p.probabilities[0]);
            }
            Flow::Continue
        })
        .unwrap();
    assert_eq!(firsts[0], 0, "top to bottom: {firsts:?}");
    assert_eq!(maps, plain, "bit for bit");
}

/// A synthetic stack of `depth` slices of `side²`: noisy grey with dark lines two pixels wide
/// (membrane-like structures at every angle, drifting slowly through z), and the lines as labels.
fn thin_lines(side: usize, depth: usize) -> (Vec<Vec<u8>>, Vec<BitPlane>) {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut rand = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    // Lines as (point, unit direction), shared by the slices and shifted a little per slice.
    let lines: Vec<([f64; 2], [f64; 2])> = (0..side / 24)
        .map(|_| {
            let p = [(rand() % side as u64) as f64, (rand() % side as u64) as f64];
            let a = (rand() % 3600) as f64 / 3600.0 * std::f64::consts::PI;
            (p, [a.cos(), a.sin()])
        })
        .collect();
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    for z in 0..depth {
        let mut label = BitPlane::new(side, side);
        let mut image = vec![0u8; side * side];
        for y in 0..side {
            for x in 0..side {
                let on = lines.iter().any(|(p, d)| {
                    let (dx, dy) = (x as f64 + 0.5 - p[0] - z as f64 * 0.7, y as f64 + 0.5 - p[1]);
                    (dx * d[1] - dy * d[0]).abs() < 1.0
                });
                label.set(x, y, on);
                let noise = (rand() % 41) as i32 - 20;
                image[y * side + x] = ((if on { 60 } else { 170 }) + noise).clamp(0, 255) as u8;
            }
        }
        images.push(image);
        labels.push(label);
    }
    (images, labels)
}

/// Dice of `probabilities > threshold` (0–255 maps) against `labels`, over every slice.
fn dice(maps: &[Vec<u8>], labels: &[BitPlane], threshold: f64) -> f64 {
    let cut = sam4em::state::probability_cut(threshold as f32);
    let (mut both, mut pred, mut truth) = (0u64, 0u64, 0u64);
    for (map, label) in maps.iter().zip(labels) {
        for (i, &v) in map.iter().enumerate() {
            let (p, t) = (i32::from(v) > cut, label.get(i % label.width(), i / label.width()));
            both += u64::from(p && t);
            pred += u64::from(p);
            truth += u64::from(t);
        }
    }
    2.0 * both as f64 / (pred + truth).max(1) as f64
}

/// Trains the set's model (on its inputs halved, [`common::reduced_config_json`]) for `epochs`
/// over `images`/`labels` at `scale`, every pixel vouched for; the model for inference.
fn trained(images: &[Vec<u8>], labels: &[BitPlane], scale: Scale, epochs: usize) -> Option<MultiModel> {
    use sam4em::model::StateDict;
    use sam4em::model::source::from_sam2;
    use sam4em::train::{Control, Schedule, TrainConfig, TrainSample, train};
    let dir = common::fixtures()?;
    let config = Sam4emConfig::from_reference_json(&common::reduced_config_json(&dir).to_string()).unwrap();
    let dict = StateDict::read(&common::fixture_checkpoint(&dir)).unwrap();
    let device = Device::flex().autodiff();
    let mut model = from_sam2(&dict, Some(config.clone()), &["membrane".to_string()], &device).unwrap();
    let side = labels[0].width();
    let mut all = BitPlane::new(side, side);
    all.fill_rect(sam4em::state::bitplane::PixelBox { x0: 0, y0: 0, x1: side, y1: side }, true);
    let samples: Vec<TrainSample> = images
        .iter()
        .zip(labels)
        .enumerate()
        .map(|(z, (image, label))| TrainSample {
            z: SliceIndex(z),
            width: side,
            height: side,
            image: std::sync::Arc::new(image.clone()),
            labels: vec![label.clone()],
            vouched: vec![all.clone()],
        })
        .collect();
    let mut optimizer = config.optimizer.clone();
    optimizer.lr = 2e-3;
    let train_config = TrainConfig {
        epochs,
        batch_size: 2,
        optimizer,
        schedule: Schedule::Constant,
        augment: true,
        seed: 3,
        activations: sam4em::model::backprop::Activations::Keep,
        scale,
    };
    let outcome = train(&mut model, &samples, &[], &train_config, &Control::default(), &mut |_| {}).unwrap();
    assert!(outcome.final_loss.is_finite(), "{outcome:?}");
    Some(model.to_device(&Device::flex()).unwrap())
}

#[test]
fn lines_two_pixels_wide_survive_at_scale_one_and_not_at_fit() {
    // Slices four times the model input each way, with lines two pixels wide. A model trained
    // and run at scale 1 sees them at their own width, in tiles; one trained and run at fit sees
    // each slice shrunk four times, the lines half a pixel wide, and cannot give them back.
    let Some(set) = common::fixtures() else { return };
    let s = Sam4emConfig::from_reference_json(&common::reduced_config_json(&set).to_string()).unwrap().image_size;
    let (images, labels) = thin_lines(4 * s, 4);
    let (train_images, train_labels) = (&images[..2], &labels[..2]);
    let Some(native) = trained(train_images, train_labels, Scale::NATIVE, 150) else { return };
    let Some(fit) = trained(train_images, train_labels, Scale::Fit, 150) else { return };
    let threshold = native.config().stream.cross_batch_threshold;
    let empty = BitPlane::new(4 * s, 4 * s);
    // Predicted on all four slices, streaming from slice 0 with no prompt.
    let native_dice = dice(&predict(&native, &images, &empty, Scale::NATIVE), &labels, threshold);
    let fit_dice = dice(&predict(&fit, &images, &empty, Scale::Fit), &labels, threshold);
    eprintln!("Dice on lines 2 px wide: scale 1 {native_dice:.3}, fit {fit_dice:.3}");
    assert!(native_dice > 0.6, "at scale 1 the lines are found: Dice {native_dice:.3}");
    assert!(fit_dice < native_dice - 0.25, "at fit they are lost: Dice {fit_dice:.3} against {native_dice:.3}");
}
