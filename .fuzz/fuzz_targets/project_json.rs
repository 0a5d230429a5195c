//! `project.json`: the input is a project's description (stack shape and type, class table,
//! model references, view); it is read as `sam4em sessions` lists it, then the project is
//! opened read-only as `sam4em export --project` does (its mask store sized from the file).
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use sam4em::io::session::{PROJECT_FILE, Project, read_project_summary};

fuzz_target!(|data: &[u8]| {
    let dir = common::scratch().join("project");
    std::fs::create_dir_all(&dir).expect("scratch folder");
    std::fs::write(dir.join(PROJECT_FILE), data).expect("scratch file");
    if read_project_summary(&dir).is_ok() {
        let _ = Project::open_read_only(&dir);
    }
});
