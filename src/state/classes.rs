//! The class table: which structures are segmented, how they are drawn and how they are named on
//! export. The default is SAM4EM's three classes: glia, mitochondria and post-synaptic density.
//!
//! Pure Rust: this module must not depend on any other module of the crate.

use serde::{Deserialize, Serialize};

use super::palette::{self, Rgb};

/// Stable identifier of a class. Ids start at 1 (0 is background in label maps) and are never
/// reused after a class is removed, so masks and files keep meaning the same thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClassId(pub u16);

impl std::fmt::Display for ClassId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// One class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassDef {
    /// Stable id; also the value the class gets in exported label maps.
    pub id: ClassId,
    /// Display name, e.g. `post-synaptic density`.
    pub name: String,
    /// Overlay colour.
    pub color: Rgb,
    /// Name used for exported files, e.g. `psd` → `psd.tif`. Letters, digits, `-`, `_`, `.` only.
    pub export_name: String,
}

/// Why a class table edit or file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassError {
    /// Two classes would share a name or an export name.
    #[error("a class named `{0}` already exists")]
    Duplicate(String),
    /// The export name cannot be used as a file name.
    #[error("export name `{0}` must be non-empty and use only letters, digits, '-', '_' and '.'")]
    BadExportName(String),
    /// The display name is empty.
    #[error("class names must not be empty")]
    EmptyName,
    /// No class has this id.
    #[error("no class has id {0}")]
    UnknownId(ClassId),
    /// Ids must stay unique and non-zero.
    #[error("class id {0} is used twice or is 0")]
    BadId(ClassId),
    /// Ids are 16-bit.
    #[error("no class ids left")]
    IdsExhausted,
}

/// The ordered, editable list of classes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ClassTableFile", into = "ClassTableFile")]
pub struct ClassTable {
    classes: Vec<ClassDef>,
    next_id: u16,
}

impl Default for ClassTable {
    /// SAM4EM's classes: glia (1), mitochondria (2), post-synaptic density (3).
    fn default() -> Self {
        let def = |id, name: &str, color, export: &str| ClassDef {
            id: ClassId(id),
            name: name.to_owned(),
            color,
            export_name: export.to_owned(),
        };
        Self {
            classes: vec![
                def(1, "glia", palette::GLIA, "glia"),
                def(2, "mitochondria", palette::MITOCHONDRIA, "mitochondria"),
                def(3, "post-synaptic density", palette::PSD, "psd"),
            ],
            next_id: 4,
        }
    }
}

/// On-disk form of the table: the classes, plus the next id so removed ids stay retired across
/// save and load (`next_id` may be left out of hand-written files).
#[derive(Serialize, Deserialize)]
struct ClassTableFile {
    classes: Vec<ClassDef>,
    #[serde(default)]
    next_id: u16,
}

impl TryFrom<ClassTableFile> for ClassTable {
    type Error = ClassError;

    fn try_from(file: ClassTableFile) -> Result<Self, ClassError> {
        let mut table = ClassTable { classes: Vec::new(), next_id: file.next_id.max(1) };
        for class in file.classes {
            if class.id.0 == 0 || table.get(class.id).is_some() {
                return Err(ClassError::BadId(class.id));
            }
            table.check_names(&class.name, &class.export_name, None)?;
            table.next_id = table.next_id.max(class.id.0.saturating_add(1));
            table.classes.push(class);
        }
        Ok(table)
    }
}

impl From<ClassTable> for ClassTableFile {
    fn from(t: ClassTable) -> Self {
        ClassTableFile { classes: t.classes, next_id: t.next_id }
    }
}

impl ClassTable {
    /// A table of exactly these classes (display or export names), in this order. SAM4EM's
    /// own classes keep their default ids, colours and export names; others are added.
    pub fn from_names(names: &[String]) -> Result<Self, ClassError> {
        let defaults = ClassTable::default();
        let mut table = ClassTable { classes: Vec::new(), next_id: defaults.next_id };
        for name in names {
            match defaults.find(name) {
                Some(d) => {
                    table.check_names(&d.name, &d.export_name, None)?;
                    table.classes.push(d.clone());
                }
                None => {
                    table.add(name, name)?;
                }
            }
        }
        Ok(table)
    }

    /// Classes in display order.
    pub fn iter(&self) -> impl Iterator<Item = &ClassDef> {
        self.classes.iter()
    }

    /// Number of classes.
    pub fn len(&self) -> usize {
        self.classes.len()
    }

    /// True when there are no classes.
    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }

    /// The class with this id.
    pub fn get(&self, id: ClassId) -> Option<&ClassDef> {
        self.classes.iter().find(|c| c.id == id)
    }

    /// Finds a class by display name or export name, ignoring case (`psd`, `PSD`,
    /// `post-synaptic density` all find the default PSD class).
    pub fn find(&self, name: &str) -> Option<&ClassDef> {
        self.classes.iter().find(|c| c.name.eq_ignore_ascii_case(name) || c.export_name.eq_ignore_ascii_case(name))
    }

    /// Largest id in the table (0 when empty): decides the label-map sample type.
    pub fn max_id(&self) -> u16 {
        self.classes.iter().map(|c| c.id.0).max().unwrap_or(0)
    }

    fn check_names(&self, name: &str, export_name: &str, except: Option<ClassId>) -> Result<(), ClassError> {
        if name.trim().is_empty() {
            return Err(ClassError::EmptyName);
        }
        let valid_export = !export_name.is_empty()
            && export_name != "."
            && export_name != ".."
            && export_name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid_export {
            return Err(ClassError::BadExportName(export_name.to_owned()));
        }
        for c in self.classes.iter().filter(|c| Some(c.id) != except) {
            for taken in [&c.name, &c.export_name] {
                for wanted in [name, export_name] {
                    if taken.eq_ignore_ascii_case(wanted) {
                        return Err(ClassError::Duplicate(wanted.to_owned()));
                    }
                }
            }
        }
        Ok(())
    }

    /// Adds a class with the next free id and colour; `export_name` must be file-name safe.
    pub fn add(&mut self, name: &str, export_name: &str) -> Result<ClassId, ClassError> {
        self.check_names(name, export_name, None)?;
        if self.next_id == u16::MAX {
            return Err(ClassError::IdsExhausted);
        }
        let id = ClassId(self.next_id);
        self.next_id += 1;
        let color = palette::EXTRA[self.classes.len() % palette::EXTRA.len()];
        self.classes.push(ClassDef { id, name: name.to_owned(), color, export_name: export_name.to_owned() });
        Ok(id)
    }

    /// Renames a class and/or changes its export name.
    pub fn rename(&mut self, id: ClassId, name: &str, export_name: &str) -> Result<(), ClassError> {
        self.check_names(name, export_name, Some(id))?;
        let c = self.classes.iter_mut().find(|c| c.id == id).ok_or(ClassError::UnknownId(id))?;
        c.name = name.to_owned();
        c.export_name = export_name.to_owned();
        Ok(())
    }

    /// Changes a class's overlay colour.
    pub fn set_color(&mut self, id: ClassId, color: Rgb) -> Result<(), ClassError> {
        let c = self.classes.iter_mut().find(|c| c.id == id).ok_or(ClassError::UnknownId(id))?;
        c.color = color;
        Ok(())
    }

    /// Removes a class; its id is not handed out again.
    pub fn remove(&mut self, id: ClassId) -> Result<ClassDef, ClassError> {
        let pos = self.classes.iter().position(|c| c.id == id).ok_or(ClassError::UnknownId(id))?;
        Ok(self.classes.remove(pos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_table_is_sam4em_classes() {
        let t = ClassTable::default();
        let names: Vec<_> = t.iter().map(|c| (c.id.0, c.export_name.as_str())).collect();
        assert_eq!(names, [(1, "glia"), (2, "mitochondria"), (3, "psd")]);
        assert_eq!(t.find("PSD").unwrap().id, ClassId(3));
        assert_eq!(t.find("post-synaptic density").unwrap().id, ClassId(3));
    }

    #[test]
    fn edits_validate_and_ids_are_not_reused() {
        let mut t = ClassTable::default();
        assert_eq!(t.add("Mitochondria", "mito2"), Err(ClassError::Duplicate("Mitochondria".into())));
        assert_eq!(t.add("vesicles", "bad/name"), Err(ClassError::BadExportName("bad/name".into())));
        let v = t.add("vesicles", "vesicles").unwrap();
        assert_eq!(v, ClassId(4));
        t.remove(v).unwrap();
        assert_eq!(t.add("axon", "axon").unwrap(), ClassId(5));
        t.rename(ClassId(1), "glia / ECS", "glia").unwrap();
        assert_eq!(t.get(ClassId(1)).unwrap().name, "glia / ECS");
    }

    #[test]
    fn json_round_trip_and_validation() {
        let t = ClassTable::default();
        let json = serde_json::to_string(&t).unwrap();
        let back: ClassTable = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
        let mut removed = ClassTable::default();
        removed.remove(ClassId(3)).unwrap();
        let mut back: ClassTable = serde_json::from_str(&serde_json::to_string(&removed).unwrap()).unwrap();
        assert_eq!(back.add("psd2", "psd2").unwrap(), ClassId(4), "a removed id must stay retired");
        let dup = r#"{"classes": [{"id":1,"name":"a","color":[0,0,0],"export_name":"a"},
                      {"id":1,"name":"b","color":[0,0,0],"export_name":"b"}]}"#;
        assert!(serde_json::from_str::<ClassTable>(dup).is_err());
    }
}
