//! The one place colour literals live (`.ci/run` fails on one anywhere else in `src/`): the
//! default class colours, the slice navigator's review states and the lines drawn over a view.
//!
//! Colours come from the Okabe–Ito palette, chosen because it stays distinguishable for the
//! common forms of colour blindness and stands out against grey EM.

use serde::{Deserialize, Serialize};

/// An sRGB colour, 8 bits per channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rgb(pub u8, pub u8, pub u8);

/// An sRGB colour with straight (not premultiplied) alpha, 8 bits per channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rgba(pub u8, pub u8, pub u8, pub u8);

/// Glia / extracellular space: sky blue.
pub const GLIA: Rgb = Rgb(86, 180, 233);
/// Mitochondria: vermillion.
pub const MITOCHONDRIA: Rgb = Rgb(213, 94, 0);
/// Post-synaptic density: yellow.
pub const PSD: Rgb = Rgb(240, 228, 66);

/// Colours handed out, in turn, to classes the user adds.
pub const EXTRA: [Rgb; 5] = [
    Rgb(0, 158, 115),   // bluish green
    Rgb(204, 121, 167), // reddish purple
    Rgb(230, 159, 0),   // orange
    Rgb(0, 114, 178),   // blue
    Rgb(255, 255, 255), // white
];

/// Slice navigator: a slice nobody looked at (neutral grey).
pub const REVIEW_UNSEEN: Rgb = Rgb(90, 90, 90);
/// Slice navigator: model output not yet reviewed (blue).
pub const REVIEW_PREDICTED: Rgb = Rgb(0, 114, 178);
/// Slice navigator: a person edited it (orange).
pub const REVIEW_CORRECTED: Rgb = Rgb(230, 159, 0);
/// Slice navigator: a person accepted it (bluish green).
pub const REVIEW_ACCEPTED: Rgb = Rgb(0, 158, 115);

/// Lines over the EM (brush outline, lasso, the navigator's shown-slice marker, the scale
/// bar and its label): white, readable on dark membranes…
pub const OVERLAY_LINE: Rgb = Rgb(255, 255, 255);
/// …on a darker halo, readable on light cytoplasm: the brush and lasso's.
pub const OVERLAY_HALO: Rgba = Rgba(0, 0, 0, 140);
/// The scale bar's halo (wider, so a little darker).
pub const SCALE_BAR_HALO: Rgba = Rgba(0, 0, 0, 160);
/// The scale bar label's drop shadow.
pub const TEXT_SHADOW: Rgb = Rgb(0, 0, 0);
/// The linked cursor's crosshair in the other views: translucent yellow.
pub const CROSSHAIR: Rgba = Rgba(255, 255, 0, 110);
