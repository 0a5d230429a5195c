//! The WGSL sources in `shaders/`, compiled into the binary. Each shader is `common.wgsl`
//! (uniform block, quad vertex shader, helpers) followed by its own file.

/// `shaders/common.wgsl`.
pub const COMMON: &str = include_str!("../../shaders/common.wgsl");
/// The slice shader: window/level, gamma, invert, nearest/linear magnification.
pub const SLICE: &str = concat!(include_str!("../../shaders/common.wgsl"), include_str!("../../shaders/slice.wgsl"));
/// The overlay shader: class masks, per-class colour/opacity/visibility, filled or outline.
pub const OVERLAY: &str =
    concat!(include_str!("../../shaders/common.wgsl"), include_str!("../../shaders/overlay.wgsl"));
/// The prediction layer: probability, threshold, tint.
pub const PREDICTION: &str =
    concat!(include_str!("../../shaders/common.wgsl"), include_str!("../../shaders/prediction.wgsl"));

/// Every shader with its name and fragment entry points, for validation.
pub const ALL: [(&str, &str, &[&str]); 3] = [
    ("slice", SLICE, &["fs_uint", "fs_float"]),
    ("overlay", OVERLAY, &["fs_overlay"]),
    ("prediction", PREDICTION, &["fs_prediction"]),
];
