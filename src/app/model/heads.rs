//! The one place the app's classes meet the model's heads: the model is built with one head
//! per class of the class table, in table order, named by the class's export name. Everything
//! past this table (the workers, the predictions, training samples) speaks [`HeadIndex`];
//! everything before it (the class table, masks, the panel) speaks [`ClassId`].

use crate::model::HeadIndex;
use crate::state::{ClassId, ClassTable};

/// The model's heads and the classes they stand for.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Heads {
    /// Per head, in head order: the class's export name and its id.
    classes: Vec<(String, ClassId)>,
}

impl Heads {
    /// One head per class of `table`, in its order.
    pub(super) fn of(table: &ClassTable) -> Self {
        Heads { classes: table.iter().map(|c| (c.export_name.clone(), c.id)).collect() }
    }

    /// The head of `class`, if the model has one.
    pub(super) fn head_of(&self, class: ClassId) -> Option<HeadIndex> {
        self.classes.iter().position(|(_, id)| *id == class).map(HeadIndex)
    }

    /// Every head with its class, in head order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (HeadIndex, ClassId)> + '_ {
        self.classes.iter().enumerate().map(|(i, (_, id))| (HeadIndex(i), *id))
    }

    /// The class names the model is built with (`ModelSource::classes`).
    pub(super) fn names(&self) -> Vec<String> {
        self.classes.iter().map(|(n, _)| n.clone()).collect()
    }

    /// Number of heads.
    pub(super) fn len(&self) -> usize {
        self.classes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_has_its_head_in_table_order() {
        let table = ClassTable::default();
        let heads = Heads::of(&table);
        assert_eq!(heads.len(), table.iter().count());
        for (i, class) in table.iter().enumerate() {
            assert_eq!(heads.head_of(class.id), Some(HeadIndex(i)));
        }
        assert_eq!(
            heads.iter().map(|(h, c)| (h.0, c)).collect::<Vec<_>>(),
            table.iter().map(|c| c.id).enumerate().collect::<Vec<_>>()
        );
        assert_eq!(heads.head_of(ClassId(200)), None);
        assert_eq!(heads.names(), table.iter().map(|c| c.export_name.clone()).collect::<Vec<_>>());
    }
}
