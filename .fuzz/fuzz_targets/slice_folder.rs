//! A folder of slice files (PNG and TIFF, mixed sizes and types, names sorted naturally): the
//! input is split into up to six files ([`common::SEPARATOR`]), written to a folder and opened
//! as a stack, its first slices decoded.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use sam4em::io::{ColorToGray, open_stack};

fuzz_target!(|data: &[u8]| {
    let dir = common::scratch().join("slices");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch folder");
    for (i, part) in common::parts(data, 6).into_iter().enumerate() {
        // Named by content as a user's files would be, so both decoders are reached.
        let ext = if part.starts_with(b"\x89PNG") { "png" } else { "tif" };
        std::fs::write(dir.join(format!("slice_{i:03}.{ext}")), part).expect("scratch file");
    }
    for color in [ColorToGray::Luma, ColorToGray::AnyChannel] {
        if let Ok(v) = open_stack(&dir, &common::options(color)) {
            common::decode_some(&v);
        }
    }
});
