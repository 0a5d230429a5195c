//! TIFF and BigTIFF in every layout (strips, tiles, planar, LZW / deflate / PackBits, ImageJ and
//! OME metadata): opens the bytes as a stack and decodes its first slices. Bad files must come
//! back as errors naming the file; nothing may panic, hang or allocate without bound.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| common::open_stack_file_bytes(data, "fuzz.tif"));
