//! Checkpoints as `sam4em checkpoint` and the model panel read them: PyTorch `.pt`/`.pth` (zip
//! or legacy pickle, parsed as data by pytorch-reader, nothing executed) and safetensors,
//! chosen by content. The reader takes a path (tensor data lives outside the pickle), so each
//! input is written to a file first.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use sam4em::model::weights::StateDict;

fuzz_target!(|data: &[u8]| {
    let path = common::scratch().join("checkpoint.pt");
    std::fs::write(&path, data).expect("scratch file");
    let _ = StateDict::read(&path);
});
