//! The user interface in egui: slice views with navigation ([`viewer`]) and the panels around
//! them ([`panels`]), and the proofreading tools ([`tools`]). Never blocks and never touches burn; reads and edits `state` types and
//! draws images through `render`'s paint callback.

pub mod model;
pub mod notify;
pub mod panels;
pub mod tools;
pub mod viewer;

pub use panels::{HoverInfo, UiAction};
pub use viewer::{Plane, ViewerState};

use eframe::egui::Color32;

use crate::state::{Rgb, Rgba};

/// egui's colour for a palette colour (`state::palette` holds every colour literal).
pub fn color(c: Rgb) -> Color32 {
    Color32::from_rgb(c.0, c.1, c.2)
}

/// egui's colour for a palette colour with straight alpha.
pub fn color_alpha(c: Rgba) -> Color32 {
    Color32::from_rgba_unmultiplied(c.0, c.1, c.2, c.3)
}
