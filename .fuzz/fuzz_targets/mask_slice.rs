//! A saved mask slice (`masks/<class>/<z>.s4m`: tiles of the mask and touched layers, review
//! state, provenance, checksum): a real project (100 x 70 px x 3 slices, the default classes)
//! is made once; each input becomes one of its slice files and the project is opened
//! read-only, which loads and checks every slice file.
#![no_main]

#[path = "common.rs"]
mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sam4em::io::session::Project;

fn project() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| common::small_project("mask_slice"))
}

fuzz_target!(|data: &[u8]| {
    let dir = project();
    let class_dir = dir.join("masks").join("1");
    std::fs::create_dir_all(&class_dir).expect("scratch folder");
    // As given (damage the checksum catches), then with the checksum fixed up, so that
    // mutated slices reach the decoder behind the check.
    for slice in [Some(data.to_vec()), common::with_trailing_crc(data)].into_iter().flatten() {
        std::fs::write(class_dir.join("000001.s4m"), slice).expect("scratch file");
        let _ = Project::open_read_only(dir);
    }
});
