//! HDF5 (h5py, ilastik and FlyEM files: contiguous or chunked, deflate, shuffle, LZF; the image
//! dataset found by name and shape): opens the bytes as a stack and decodes its first slices.
//! Bad files must come back as errors naming the file; nothing may panic, hang or allocate
//! without bound.
#![no_main]

#[path = "common.rs"]
mod common;

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sam4em::io::{ColorToGray, open_stack_bytes};

fuzz_target!(|data: &[u8]| {
    for color in [ColorToGray::Luma, ColorToGray::AnyChannel] {
        if let Ok(v) = open_stack_bytes(data.to_vec(), Path::new("fuzz.h5"), &common::options(color)) {
            common::decode_some(&v);
        }
    }
});
