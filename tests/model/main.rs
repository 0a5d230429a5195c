//! SAM4EM itself: the golden comparisons with the original PyTorch code, the per-operation
//! gradient sweep, the model's API and fine-tuning on Lucchi++. One test binary (CI links the
//! crate once for all of them); `cargo test --test model model_golden::` runs one file's tests.
//! The training-memory test has its own binary: it counts every allocation of its process.
#![cfg(feature = "model")]

#[path = "../common/mod.rs"]
mod common;

mod fine_tuning;
mod model_api;
mod model_golden;
mod op_gradients;
