//! PNG slices (grey, 16-bit, RGB(A), palette: what a slice folder holds): opens the bytes as
//! a one-slice stack and decodes it. Bad files must come back as errors naming the file;
//! nothing may panic, hang or allocate without bound.
#![no_main]

#[path = "common.rs"]
mod common;

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sam4em::io::{ColorToGray, open_stack_bytes};

fuzz_target!(|data: &[u8]| {
    for color in [ColorToGray::Luma, ColorToGray::AnyChannel] {
        if let Ok(v) = open_stack_bytes(data.to_vec(), Path::new("fuzz.png"), &common::options(color)) {
            common::decode_some(&v);
        }
    }
});
