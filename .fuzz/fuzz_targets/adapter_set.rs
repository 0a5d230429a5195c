//! Adapter sets (safetensors whose header carries the metadata: model configuration, base
//! checkpoint, classes, lineage, training record), and model configurations as
//! `--config` files give them: parsed and validated before anything could build a model.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sam4em::model::adapter::AdapterSet;
use sam4em::model::config::Sam4emConfig;

fuzz_target!(|data: &[u8]| {
    let _ = AdapterSet::from_bytes(data, Path::new("v001.safetensors"));
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Sam4emConfig::from_reference_json(text);
    }
});
