//! The one place colour literals live: the default class colours.
//!
//! Colours come from the Okabe–Ito palette, chosen because it stays distinguishable for the
//! common forms of colour blindness and stands out against grey EM.

use super::classes::Rgb;

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
