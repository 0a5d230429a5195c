//! SAM4EM itself: the golden comparisons with the original PyTorch code, the per-operation
//! gradient sweep, the model's API and fine-tuning on Lucchi++. One test binary (CI links the
//! crate once for all of them); `cargo test --test model model_golden::` runs one file's tests.
//! The training-memory test has its own binary: it counts every allocation of its process.
#![cfg(feature = "model")]

#[path = "../common/mod.rs"]
mod common;

mod device_loss;
mod fine_tuning;
mod model_api;
mod model_golden;
mod op_gradients;
mod tiles;

use sam4em::model::adapter::{AdapterSetMeta, BaseCheckpoint, SET_FORMAT, SET_FORMAT_VERSION};
use sam4em::model::multi::MultiModel;

/// Adapter-set metadata for `model` as a run numbered `version` (from `parent`) would write it,
/// on a made-up base checkpoint mapped with `mapping`.
fn adapter_meta(model: &MultiModel, mapping: &str, version: u64, parent: Option<u64>) -> AdapterSetMeta {
    AdapterSetMeta {
        format: SET_FORMAT.into(),
        format_version: SET_FORMAT_VERSION,
        config: model.config().clone(),
        base: BaseCheckpoint {
            file_name: "sam2-micro.pt".into(),
            bytes: 1,
            sha256: "ab".repeat(32),
            mapping: mapping.into(),
        },
        classes: model.class_names(),
        version,
        parent_version: parent,
        created_unix_s: 0,
        training: Default::default(),
    }
}
