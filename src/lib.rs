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
//! - [`infer`], [`train`]: prediction over a stack and fine-tuning (feature `model`).
//! - [`bench`]: every `sam4em bench …` measurement.
//! - [`worker`]: what the named worker threads share.
//! - [`cli`]: the command line; the top of the house.

#[cfg(feature = "gui")]
pub mod app;
#[cfg(test)]
mod architecture;
pub mod bench;
pub mod cli;
#[cfg(feature = "model")]
pub mod infer;
pub mod io;
pub mod model;
#[cfg(feature = "gui")]
pub mod render;
pub mod state;
#[cfg(feature = "model")]
pub mod train;
#[cfg(feature = "gui")]
pub mod ui;
pub mod worker;
