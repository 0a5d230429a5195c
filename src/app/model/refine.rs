//! The refine tool's prompts: clicks (right click: "not here") and the latest box on one
//! slice and class. Each new prompt decodes that class again from the cached embedding with
//! every prompt so far; a click on another slice or class starts over.

use crate::model::prompt::{BoxPrompt, PointPrompt};
use crate::state::{ClassId, SliceIndex};

/// The prompts so far on one slice and class.
struct Clicks {
    z: SliceIndex,
    class: ClassId,
    points: Vec<PointPrompt>,
    bbox: Option<BoxPrompt>,
    /// What the last refined result came from, for the panel.
    done: Option<String>,
}

/// What the worker is asked to decode.
pub(super) struct Prompts {
    /// In words, for the panel once the result is in.
    pub(super) what: String,
    /// Every click so far.
    pub(super) points: Vec<PointPrompt>,
    /// The latest box, if any.
    pub(super) boxes: Vec<BoxPrompt>,
}

/// The refine tool's state.
#[derive(Default)]
pub(super) struct Refine {
    clicks: Option<Clicks>,
}

impl Refine {
    /// A click at slice pixel `at` on slice `z` for `class` (`to`: the other corner of a
    /// dragged box): the prompts to decode now.
    pub(super) fn click(
        &mut self,
        z: SliceIndex,
        class: ClassId,
        at: [f32; 2],
        to: Option<[f32; 2]>,
        foreground: bool,
    ) -> Prompts {
        let clicks = match &mut self.clicks {
            Some(c) if (c.z, c.class) == (z, class) => c,
            other => other.insert(Clicks { z, class, points: Vec::new(), bbox: None, done: None }),
        };
        match to {
            Some(to) => {
                clicks.bbox = Some(BoxPrompt {
                    x0_px: f64::from(at[0].min(to[0])),
                    y0_px: f64::from(at[1].min(to[1])),
                    x1_px: f64::from(at[0].max(to[0])),
                    y1_px: f64::from(at[1].max(to[1])),
                })
            }
            None => clicks.points.push(PointPrompt { x_px: f64::from(at[0]), y_px: f64::from(at[1]), foreground }),
        }
        let what = format!(
            "refined slice {z} with {} click(s){}",
            clicks.points.len(),
            if clicks.bbox.is_some() { " and a box" } else { "" }
        );
        Prompts { what, points: clicks.points.clone(), boxes: clicks.bbox.into_iter().collect() }
    }

    /// A refined result arrived, made from the prompts described by `what`.
    pub(super) fn done(&mut self, what: String) {
        if let Some(c) = &mut self.clicks {
            c.done = Some(what);
        }
    }

    /// What the last refined result came from.
    pub(super) fn last(&self) -> Option<String> {
        self.clicks.as_ref().and_then(|c| c.done.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_add_up_on_one_slice_and_class_and_start_over_elsewhere() {
        let mut r = Refine::default();
        let (z, class) = (SliceIndex(2), ClassId(1));
        let p = r.click(z, class, [3.0, 4.0], None, true);
        assert_eq!((p.points.len(), p.boxes.len()), (1, 0));
        let p = r.click(z, class, [5.0, 1.0], None, false);
        assert_eq!(p.points.len(), 2);
        assert!(!p.points[1].foreground);
        let p = r.click(z, class, [9.0, 9.0], Some([2.0, 3.0]), true);
        assert_eq!((p.points.len(), p.boxes.len()), (2, 1));
        assert_eq!((p.boxes[0].x0_px, p.boxes[0].y0_px, p.boxes[0].x1_px, p.boxes[0].y1_px), (2.0, 3.0, 9.0, 9.0));
        assert_eq!(p.what, "refined slice 2 with 2 click(s) and a box");
        r.done(p.what);
        assert_eq!(r.last().as_deref(), Some("refined slice 2 with 2 click(s) and a box"));
        let p = r.click(SliceIndex(3), class, [1.0, 1.0], None, true);
        assert_eq!((p.points.len(), p.boxes.len()), (1, 0), "another slice starts over");
        assert_eq!(r.last(), None);
    }
}
