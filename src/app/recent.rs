//! Recently opened stacks, kept in `recent.json` in the configuration folder
//! (`$SAM4EM_CONFIG_DIR`, else `$XDG_CONFIG_HOME/sam4em`, else `~/.config/sam4em`).

use std::path::{Path, PathBuf};

use super::OpenRequest;

/// Entries kept.
pub const MAX_RECENT: usize = 10;

/// The configuration folder, if one can be named.
pub fn default_config_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SAM4EM_CONFIG_DIR") {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("sam4em"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/sam4em"))
}

/// The list, newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecentFiles {
    /// Newest first.
    pub entries: Vec<OpenRequest>,
    file: Option<PathBuf>,
}

impl RecentFiles {
    /// Reads the list from `config_dir` (missing or unreadable: empty, with a log line).
    pub fn load(config_dir: Option<&Path>) -> Self {
        let file = config_dir.map(|d| d.join("recent.json"));
        let entries = file
            .as_deref()
            .and_then(|f| std::fs::read_to_string(f).ok().map(|text| (f, text)))
            .and_then(|(f, text)| match serde_json::from_str::<Vec<OpenRequest>>(&text) {
                Ok(v) => Some(v),
                Err(e) => {
                    tracing::warn!("ignoring unreadable recent-files list {}: {e}", f.display());
                    None
                }
            })
            .unwrap_or_default();
        Self { entries, file }
    }

    /// Puts `request` first (once) and saves. A failed save is logged, not fatal: the list is a
    /// convenience.
    pub fn push(&mut self, request: &OpenRequest) {
        self.entries.retain(|e| e.stack != request.stack);
        self.entries.insert(0, request.clone());
        self.entries.truncate(MAX_RECENT);
        let Some(file) = &self.file else { return };
        if let Some(dir) = file.parent()
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            tracing::warn!("cannot create {}: {e}", dir.display());
            return;
        }
        let json = match serde_json::to_string_pretty(&self.entries) {
            Ok(j) => j,
            Err(e) => return tracing::warn!("cannot encode the recent-files list: {e}"),
        };
        if let Err(e) = crate::io::atomic::write_file_atomic(file, |w| {
            std::io::Write::write_all(w, json.as_bytes()).map_err(|e| e.to_string())
        }) {
            tracing::warn!("cannot save the recent-files list: {e}");
        }
    }
}
