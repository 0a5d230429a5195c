//! The crash journal (`journal.s4j`): a real project (100 x 70 px x 3 slices, the default
//! classes) is made once; each input becomes its journal and the project is opened read-only,
//! which replays every intact record over the masks and reports what was lost.
#![no_main]

#[path = "common.rs"]
mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sam4em::io::session::Project;

/// The project, made by the code that makes a user's.
fn project() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| common::small_project("journal"))
}

fuzz_target!(|data: &[u8]| {
    let dir = project();
    // As given (damage the checksums catch), then with every record's checksum fixed up, so
    // that mutated records reach the decoder behind the check.
    for journal in [data.to_vec(), common::with_record_crcs(data, 10)] {
        std::fs::write(dir.join("journal.s4j"), journal).expect("scratch file");
        let _ = Project::open_read_only(dir);
    }
});
