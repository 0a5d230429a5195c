//! Label maps' class tables: the `<labels>.classes.json` sidecar an exported label map carries
//! (read when the label map is imported, translated to the open project's classes), and the
//! `VALUE=CLASS,…` mapping typed on the command line or in the import dialog.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use sam4em::io::import::{parse_label_mapping, sidecar_mapping};
use sam4em::state::ClassTable;

fuzz_target!(|data: &[u8]| {
    let classes = ClassTable::default();
    let dir = common::scratch();
    std::fs::write(dir.join("labels.classes.json"), data).expect("scratch file");
    let _ = sidecar_mapping(&dir.join("labels.tif"), &classes);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_label_mapping(text, &classes);
    }
});
