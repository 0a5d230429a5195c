//! The user interface in egui: slice views with navigation ([`viewer`]) and the panels around
//! them ([`panels`]), and the proofreading tools ([`tools`]). Never blocks and never touches burn; reads and edits `state` types and
//! draws images through `render`'s paint callback.

pub mod model;
pub mod panels;
pub mod tools;
pub mod viewer;

pub use panels::{HoverInfo, UiAction};
pub use viewer::{Plane, ViewerState};
