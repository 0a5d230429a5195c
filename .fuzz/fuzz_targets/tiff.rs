//! Feeds arbitrary bytes to the stack decoders (TIFF/BigTIFF in all layouts, PNG) and decodes
//! the first slices: nothing may panic, hang or allocate without bound; bad files must come
//! back as errors.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sam4em::io::{ColorToGray, OpenOptions, open_stack_bytes};
use sam4em::state::SliceIndex;

fuzz_target!(|data: &[u8]| {
    for color in [ColorToGray::Luma, ColorToGray::AnyChannel] {
        // Small limits keep each run fast; the checks they exercise are the same as with the
        // defaults.
        let opts = OpenOptions { cache_budget_bytes: 0, color, max_slice_bytes: 16 << 20 };
        if let Ok(v) = open_stack_bytes(data.to_vec(), Path::new("fuzz.tif"), &opts) {
            for z in 0..v.depth().min(4) {
                let _ = v.slice(SliceIndex(z));
            }
        }
    }
});
