//! HDF5 (h5py, ilastik and FlyEM files: contiguous or chunked, deflate, shuffle, LZF; the image
//! dataset found by name and shape): opens the bytes as a stack and decodes its first slices.
//! Bad files must come back as errors naming the file; nothing may panic, hang or allocate
//! without bound.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| common::open_stack_file_bytes(data, "fuzz.h5"));
