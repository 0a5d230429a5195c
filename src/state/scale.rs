//! How stack pixels map to the model's input pixels: the whole slice resized to the input
//! (the paper's mode), or tiles at a number of model pixels per stack pixel (`infer::tile`).
//! Recorded in adapter sets (the scale a set was trained at) and chosen in the Model panel: a
//! plain value, so it lives with the state.

use std::fmt;
use std::str::FromStr;

/// Largest scale accepted (model pixels per stack pixel): beyond it a tile would cover a handful
/// of stack pixels.
pub const MAX_SCALE: f64 = 8.0;

/// How stack pixels map to the model's input pixels.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Scale {
    /// The whole slice resized to the model input (aspect ratio not kept), as the paper did.
    #[default]
    Fit,
    /// Model pixels per stack pixel (`1` = native resolution, `0.5` = half), in (0, [`MAX_SCALE`]].
    Factor(f64),
}

impl Scale {
    /// Native resolution.
    pub const NATIVE: Scale = Scale::Factor(1.0);

    /// The scale to use when none is asked for and no adapter says one: [`Scale::Fit`] when the
    /// slice is at most twice the model input each way, native resolution otherwise.
    pub fn default_for(width: usize, height: usize, input_px: usize) -> Scale {
        if width <= 2 * input_px && height <= 2 * input_px { Scale::Fit } else { Scale::NATIVE }
    }
}

impl fmt::Display for Scale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scale::Fit => f.write_str("fit"),
            Scale::Factor(v) => write!(f, "{v}"),
        }
    }
}

impl FromStr for Scale {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("fit") {
            return Ok(Scale::Fit);
        }
        let v: f64 = s.parse().map_err(|_| format!("scale {s:?} is neither a number nor \"fit\""))?;
        if !(v.is_finite() && v > 0.0 && v <= MAX_SCALE) {
            return Err(format!("scale {s} is outside (0, {MAX_SCALE}] model pixels per stack pixel"));
        }
        Ok(Scale::Factor(v))
    }
}

impl serde::Serialize for Scale {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for Scale {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_parse_and_print() {
        assert_eq!("fit".parse::<Scale>(), Ok(Scale::Fit));
        assert_eq!(" FIT ".parse::<Scale>(), Ok(Scale::Fit));
        assert_eq!("1".parse::<Scale>(), Ok(Scale::NATIVE));
        assert_eq!("0.5".parse::<Scale>(), Ok(Scale::Factor(0.5)));
        for bad in ["0", "-1", "nan", "inf", "9", "big", ""] {
            assert!(bad.parse::<Scale>().is_err(), "{bad:?} accepted");
        }
        assert_eq!(Scale::Factor(0.25).to_string(), "0.25");
        assert_eq!(serde_json::to_string(&Scale::Fit).unwrap(), "\"fit\"");
        assert_eq!(serde_json::from_str::<Scale>("\"0.5\"").unwrap(), Scale::Factor(0.5));
        assert!(serde_json::from_str::<Scale>("\"0\"").is_err());
        // The default: the paper's resize for slices up to twice the input, native beyond.
        assert_eq!(Scale::default_for(1024, 768, 512), Scale::Fit);
        assert_eq!(Scale::default_for(1025, 768, 512), Scale::NATIVE);
    }
}
