//! Every `sam4em bench …` measurement, in one room: the model's figures against the original
//! PyTorch code (`model`, `ops`, `train`), the viewer's slice switches and frames (`viewer`)
//! and the proofreading operations (`edit`). The command line (`cli`) parses the arguments,
//! runs the reference side and prints; what is timed lives here. May use every module below
//! the command line; nothing but `cli` uses it.

pub mod edit;
#[cfg(feature = "model")]
pub mod model;
#[cfg(feature = "model")]
pub mod ops;
#[cfg(feature = "model")]
pub mod train;
#[cfg(feature = "gui")]
pub mod viewer;

/// The median of `v` (upper median for an even count; `NaN` when empty).
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_is_the_upper_middle_and_nan_when_empty() {
        assert_eq!(super::median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(super::median(vec![4.0, 1.0, 3.0, 2.0]), 3.0);
        assert!(super::median(Vec::new()).is_nan());
    }
}
