//! SAM4EM Studio: open EM stacks, segment glia, mitochondria and post-synaptic densities with
//! SAM4EM, proofread the masks and fine-tune the model on the corrections.
//!
//! Module map (see the README for the data flow):
//! - [`state`]: pure data — the volume abstraction, class table, sparse mask store.
//! - [`io`]: stacks in, masks in and out, atomic writes.
//! - [`model`]: SAM4EM in burn (feature `model`).
//! - [`render`]: wgpu only — the shared device, slice/overlay/prediction shaders, textures.
//! - [`ui`]: egui widgets — slice views, panels, status bar; never blocks.
//! - [`app`]: the eframe app; the only module that sees all others.
//! - [`cli`]: the headless command line.
//! - [`edit_bench`]: `sam4em bench edit`, timings of the proofreading operations.

#[cfg(feature = "gui")]
pub mod app;
pub mod cli;
#[cfg(feature = "model")]
pub mod cli_learn;
#[cfg(feature = "model")]
pub mod cli_model;
pub mod edit_bench;
#[cfg(feature = "model")]
pub mod infer;
pub mod io;
#[cfg(feature = "model")]
pub mod model;
#[cfg(feature = "gui")]
pub mod render;
pub mod state;
#[cfg(feature = "model")]
pub mod train;
#[cfg(feature = "gui")]
pub mod ui;
