//! The viewer: shaders (naga), the renderer's pixels and the shared device (offscreen on the
//! app's device), and the app driven through egui_kittest with wgpu snapshots. One test
//! binary, so CI links the app once for all of them.
#![cfg(all(feature = "gui", feature = "model"))]

#[path = "../common/mod.rs"]
mod common;
mod editing;
mod model;
mod render;
mod shaders;
mod viewer;

/// Applies one command to the app in the harness, as its own frame would.
fn apply(h: &mut egui_kittest::Harness<'static, sam4em::app::StudioApp>, command: sam4em::app::AppCommand) {
    let ctx = h.ctx.clone();
    h.state_mut().apply(command, &ctx);
}
