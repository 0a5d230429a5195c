//! PNG slices (grey, 16-bit, RGB(A), palette: what a slice folder holds): opens the bytes as
//! a one-slice stack and decodes it. Bad files must come back as errors naming the file;
//! nothing may panic, hang or allocate without bound.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| common::open_stack_file_bytes(data, "fuzz.png"));
