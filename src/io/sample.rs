//! The sample stack bundled in `assets/sample`: what the app opens when given no path, and
//! what tests and benchmarks read. Here, below both the app and the command line, so that
//! neither has to import the other for it.

/// The sample stack (Drosophila VNC ssTEM, CC BY-NC-SA 3.0; `assets/sample/README.md`).
pub const SAMPLE_STACK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/sample/raw.tif");
/// The sample's merged label map (159 glia/ECS, 191 mitochondria, 223 synapse).
pub const SAMPLE_LABELS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/sample/labels.tif");
/// The value → class mapping of the sample's label map.
pub const SAMPLE_LABEL_MAPPING: &str = "159=glia,191=mitochondria,223=psd";
