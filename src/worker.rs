//! What the named worker threads (`inference`, `trainer`, the app's jobs) share. Depends on
//! `state` only, so that `infer` and `train` need not import each other for it.

use std::sync::Arc;

use crate::state::SliceIndex;

/// Where a worker reads the open stack's slices, as the 8-bit images the model sees
/// (`infer::stack_images` makes one), on its own thread, never on the UI's. The error names
/// the slice and why it could not be read.
pub type SharedImages = Arc<dyn Fn(SliceIndex) -> Result<Vec<u8>, String> + Send + Sync>;

/// The text of a caught panic's payload (`std::panic::catch_unwind`'s error), for the error a
/// worker reports instead of dying: the `String` or `&str` a `panic!` carries, else
/// "unknown error".
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_string()))
        .unwrap_or_else(|| "unknown error".into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn panic_payloads_become_their_text() {
        let caught = std::panic::catch_unwind(|| panic!("device lost at {}", 3)).unwrap_err();
        assert_eq!(super::panic_message(&*caught), "device lost at 3");
        let caught = std::panic::catch_unwind(|| panic!("plain")).unwrap_err();
        assert_eq!(super::panic_message(&*caught), "plain");
        let caught = std::panic::catch_unwind(|| std::panic::panic_any(7_u8)).unwrap_err();
        assert_eq!(super::panic_message(&*caught), "unknown error");
    }
}
