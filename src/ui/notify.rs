//! Notices: the one path every message to the user takes. What just happened (saved, exported,
//! imported) goes to the status bar; warnings and errors also show as toasts in the top right
//! corner that never block the window: an error stays until dismissed, a warning fades after
//! [`WARNING_TOAST`]. Every notice is kept in the log window (newest last, at most
//! [`LOG_CAPACITY`]), with the causes of an error on demand and a button that copies the
//! whole log for a bug report. Modal windows are kept for questions that need an answer.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use eframe::egui::{self, RichText};

/// How long a warning's toast stays up.
pub const WARNING_TOAST: Duration = Duration::from_secs(10);
/// Notices the log keeps; older ones are dropped.
pub const LOG_CAPACITY: usize = 500;
/// Toasts shown at once; the rest are counted and sit in the log.
const MAX_TOASTS: usize = 4;
/// A toast's width in points.
const TOAST_WIDTH_PT: f32 = 380.0;

/// How much a notice matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Something finished (saved, exported): the status bar and the log.
    Info,
    /// Something the user should know and that did not stop the work (edits not journalled,
    /// label values left unmapped): a toast that fades.
    Warning,
    /// Something the user asked for did not happen: a toast until dismissed.
    Error,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }
}

/// One message to the user.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    /// How much it matters.
    pub level: Level,
    /// The message, a sentence or two naming the file or the setting concerned.
    pub text: String,
    /// The causes below the message (an error's `source()` chain), shown on demand.
    pub details: Vec<String>,
}

impl Notice {
    /// Something that finished.
    pub fn info(text: impl Into<String>) -> Self {
        Self { level: Level::Info, text: text.into(), details: Vec::new() }
    }

    /// Something to know that did not stop the work.
    pub fn warning(text: impl Into<String>) -> Self {
        Self { level: Level::Warning, text: text.into(), details: Vec::new() }
    }

    /// Something that did not happen.
    pub fn error(text: impl Into<String>) -> Self {
        Self { level: Level::Error, text: text.into(), details: Vec::new() }
    }

    /// An error value: its message, and its causes as details.
    pub fn from_error(error: &(dyn std::error::Error + 'static)) -> Self {
        let mut details = Vec::new();
        let mut source = error.source();
        while let Some(s) = source {
            details.push(s.to_string());
            source = s.source();
        }
        Self { level: Level::Error, text: error.to_string(), details }
    }

    /// The same notice, its message prefixed with what was being done (`"export: …"`).
    pub fn context(mut self, what: &str) -> Self {
        self.text = format!("{what}: {}", self.text);
        self
    }
}

/// A notice in the log.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Stable while the entry lives (toasts are dismissed by it).
    pub id: u64,
    /// The message.
    pub notice: Notice,
    /// When it (last) happened.
    pub at: Instant,
    /// How many times in a row it happened (a repeated message is counted, not listed again).
    pub repeats: u32,
    /// Dismissed by the user (or, for a warning, faded): no toast.
    pub dismissed: bool,
}

/// The log of notices and which of them show as toasts.
#[derive(Debug, Default)]
pub struct Notices {
    entries: VecDeque<Entry>,
    next_id: u64,
    /// Whether the log window is open.
    pub log_open: bool,
}

impl Notices {
    /// Adds a notice. The same message as the newest entry, still shown, counts as a repeat.
    pub fn push(&mut self, notice: Notice) {
        match notice.level {
            Level::Error => tracing::warn!("{}", notice.text),
            Level::Warning => tracing::info!("{}", notice.text),
            Level::Info => tracing::debug!("{}", notice.text),
        }
        if let Some(last) = self.entries.back_mut()
            && !last.dismissed
            && last.notice == notice
        {
            last.repeats += 1;
            last.at = Instant::now();
            return;
        }
        if self.entries.len() == LOG_CAPACITY {
            self.entries.pop_front();
        }
        self.entries.push_back(Entry { id: self.next_id, notice, at: Instant::now(), repeats: 1, dismissed: false });
        self.next_id += 1;
    }

    /// Adds each notice in turn.
    pub fn extend(&mut self, notices: impl IntoIterator<Item = Notice>) {
        for n in notices {
            self.push(n);
        }
    }

    /// Something finished.
    pub fn info(&mut self, text: impl Into<String>) {
        self.push(Notice::info(text));
    }

    /// Something to know.
    pub fn warn(&mut self, text: impl Into<String>) {
        self.push(Notice::warning(text));
    }

    /// Something that did not happen.
    pub fn error(&mut self, text: impl Into<String>) {
        self.push(Notice::error(text));
    }

    /// An error value (its causes as details).
    pub fn report(&mut self, error: &(dyn std::error::Error + 'static)) {
        self.push(Notice::from_error(error));
    }

    /// An error value, prefixed with what was being done.
    pub fn failed(&mut self, what: &str, error: &(dyn std::error::Error + 'static)) {
        self.push(Notice::from_error(error).context(what));
    }

    /// The messages of errors not yet dismissed, oldest first.
    pub fn errors(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|e| e.notice.level == Level::Error && !e.dismissed)
            .map(|e| e.notice.text.clone())
            .collect()
    }

    /// The newest message, for the status bar.
    pub fn latest(&self) -> Option<&Notice> {
        self.entries.back().map(|e| &e.notice)
    }

    /// The newest message of what just happened (warnings and errors have their toasts).
    pub fn latest_info(&self) -> Option<&str> {
        self.entries.iter().rev().find(|e| e.notice.level == Level::Info).map(|e| e.notice.text.as_str())
    }

    /// Everything in the log, oldest first.
    pub fn entries(&self) -> impl DoubleEndedIterator<Item = &Entry> {
        self.entries.iter()
    }

    /// Entries that show as toasts at `now`: errors not dismissed, warnings not dismissed and
    /// younger than [`WARNING_TOAST`].
    pub fn toasts(&self, now: Instant) -> impl DoubleEndedIterator<Item = &Entry> {
        self.entries.iter().filter(move |e| {
            !e.dismissed
                && match e.notice.level {
                    Level::Error => true,
                    Level::Warning => now.saturating_duration_since(e.at) < WARNING_TOAST,
                    Level::Info => false,
                }
        })
    }

    /// Takes entry `id`'s toast down (it stays in the log).
    pub fn dismiss(&mut self, id: u64) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.id == id) {
            e.dismissed = true;
        }
    }

    /// Takes every toast down.
    pub fn dismiss_all(&mut self) {
        for e in &mut self.entries {
            e.dismissed = true;
        }
    }

    /// The log as plain text (the log window's Copy).
    pub fn log_text(&self, now: Instant) -> String {
        let mut out = String::new();
        for e in &self.entries {
            out.push_str(&format!("[{} ago] {}: {}", age(now, e.at), e.notice.level.name(), e.notice.text));
            if e.repeats > 1 {
                out.push_str(&format!(" (×{})", e.repeats));
            }
            out.push('\n');
            for d in &e.notice.details {
                out.push_str(&format!("    caused by: {d}\n"));
            }
        }
        out
    }
}

/// "4 s", "3 min", "2 h".
fn age(now: Instant, at: Instant) -> String {
    let s = now.saturating_duration_since(at).as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        _ => format!("{} h", s / 3600),
    }
}

fn level_color(ui: &egui::Ui, level: Level) -> egui::Color32 {
    match level {
        Level::Error => ui.visuals().error_fg_color,
        Level::Warning => ui.visuals().warn_fg_color,
        Level::Info => ui.visuals().text_color(),
    }
}

/// One entry's message, count and causes.
fn entry_ui(ui: &mut egui::Ui, e: &Entry) {
    let mut text = e.notice.text.clone();
    if e.repeats > 1 {
        text.push_str(&format!(" (×{})", e.repeats));
    }
    ui.add(egui::Label::new(RichText::new(text).color(level_color(ui, e.notice.level))).wrap());
    if !e.notice.details.is_empty() {
        egui::CollapsingHeader::new("Details").id_salt(("notice-details", e.id)).show(ui, |ui| {
            for d in &e.notice.details {
                ui.add(egui::Label::new(RichText::new(format!("caused by: {d}")).small()).wrap());
            }
            if ui.small_button("Copy").clicked() {
                let mut all = e.notice.text.clone();
                for d in &e.notice.details {
                    all.push_str(&format!("\ncaused by: {d}"));
                }
                ui.ctx().copy_text(all);
            }
        });
    }
}

/// The toasts in the top right corner, under the menu bar (drawn over everything, blocking
/// nothing else), and the log window when it is open. Asks for a repaint while a warning is
/// still to fade.
pub fn notices_ui(ctx: &egui::Context, notices: &mut Notices) {
    let now = Instant::now();
    let toasts: Vec<Entry> = notices.toasts(now).cloned().collect();
    let mut dismiss = Vec::new();
    if !toasts.is_empty() {
        let hidden = toasts.len().saturating_sub(MAX_TOASTS);
        egui::Area::new(egui::Id::unique("notice-toasts"))
            .order(egui::Order::Foreground)
            .anchor(egui::Align2::RIGHT_TOP, egui::vec2(-10.0, 34.0))
            .show(ctx, |ui| {
                ui.set_max_width(TOAST_WIDTH_PT);
                for e in toasts.iter().skip(hidden) {
                    egui::Frame::popup(ui.style()).show(ui, |ui| {
                        ui.set_width(TOAST_WIDTH_PT);
                        entry_ui(ui, e);
                        ui.horizontal(|ui| {
                            if ui.small_button("Dismiss").clicked() {
                                dismiss.push(e.id);
                            }
                            if ui.small_button("Log").clicked() {
                                notices.log_open = true;
                            }
                        });
                    });
                    ui.add_space(4.0);
                }
                if hidden > 0 && ui.button(format!("{hidden} more in the log")).clicked() {
                    notices.log_open = true;
                }
            });
        if let Some(fade) = toasts
            .iter()
            .filter(|e| e.notice.level == Level::Warning)
            .map(|e| WARNING_TOAST.saturating_sub(now.saturating_duration_since(e.at)))
            .min()
        {
            ctx.request_repaint_after(fade);
        }
    }
    for id in dismiss {
        notices.dismiss(id);
    }
    log_window_ui(ctx, notices, now);
}

fn log_window_ui(ctx: &egui::Context, notices: &mut Notices, now: Instant) {
    let mut open = notices.log_open;
    let mut dismiss_all = false;
    egui::Window::new("Log").open(&mut open).default_width(520.0).default_height(320.0).show(ctx, |ui| {
        ui.horizontal(|ui| {
            if ui.button("Copy all").on_hover_text("the whole log as text, for a bug report").clicked() {
                ui.ctx().copy_text(notices.log_text(now));
            }
            if ui.button("Dismiss all").on_hover_text("take every toast down").clicked() {
                dismiss_all = true;
            }
        });
        ui.separator();
        egui::ScrollArea::vertical().stick_to_bottom(true).show(ui, |ui| {
            if notices.entries.is_empty() {
                ui.label(RichText::new("Nothing yet.").weak());
            }
            for e in &notices.entries {
                ui.horizontal_top(|ui| {
                    ui.label(RichText::new(format!("{:>6} ago", age(now, e.at))).monospace().weak());
                    ui.vertical(|ui| entry_ui(ui, e));
                });
            }
        });
    });
    notices.log_open = open;
    if dismiss_all {
        notices.dismiss_all();
    }
}

/// The status bar's end: the button that opens the log (with the number of errors still
/// shown) and the newest message of what just happened.
pub fn status_ui(ui: &mut egui::Ui, notices: &mut Notices) {
    let errors = notices.toasts(Instant::now()).filter(|e| e.notice.level == Level::Error).count();
    let label = if errors > 0 { format!("Log ({errors})") } else { "Log".to_owned() };
    if ui.small_button(label).on_hover_text("every message so far").clicked() {
        notices.log_open = !notices.log_open;
    }
    if let Some(text) = notices.latest_info() {
        ui.add(egui::Label::new(RichText::new(text).weak()).truncate()).on_hover_text(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read slice 3 of /data/stack.tif")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn an_error_keeps_its_causes_as_details() {
        let e = Outer(std::io::Error::other("unexpected end of file"));
        let n = Notice::from_error(&e).context("open");
        assert_eq!(n.level, Level::Error);
        assert_eq!(n.text, "open: cannot read slice 3 of /data/stack.tif");
        assert_eq!(n.details, vec!["unexpected end of file".to_owned()]);
    }

    #[test]
    fn errors_stay_until_dismissed_warnings_fade_infos_never_toast() {
        let mut n = Notices::default();
        n.info("saved /p");
        n.warn("edits are not journalled");
        n.error("cannot export");
        let now = Instant::now();
        let levels: Vec<Level> = n.toasts(now).map(|e| e.notice.level).collect();
        assert_eq!(levels, [Level::Warning, Level::Error]);
        let later = now + WARNING_TOAST + Duration::from_secs(1);
        let levels: Vec<Level> = n.toasts(later).map(|e| e.notice.level).collect();
        assert_eq!(levels, [Level::Error]);
        assert_eq!(n.errors(), ["cannot export"]);
        let id = n.toasts(later).next().unwrap().id;
        n.dismiss(id);
        assert!(n.errors().is_empty());
        assert_eq!(n.toasts(later).count(), 0);
        assert_eq!(n.entries().count(), 3, "dismissed notices stay in the log");
        assert_eq!(n.latest().map(|l| l.text.as_str()), Some("cannot export"));
        assert_eq!(n.latest_info(), Some("saved /p"));
    }

    #[test]
    fn a_repeated_message_is_counted_and_the_log_is_bounded() {
        let mut n = Notices::default();
        for _ in 0..3 {
            n.error("slice 4 cannot be read");
        }
        assert_eq!(n.entries().count(), 1);
        assert_eq!(n.entries().next().unwrap().repeats, 3);
        assert!(n.log_text(Instant::now()).contains("error: slice 4 cannot be read (×3)"));
        // Once dismissed, the same message is news again.
        n.dismiss_all();
        n.error("slice 4 cannot be read");
        assert_eq!(n.entries().count(), 2);
        for i in 0..LOG_CAPACITY + 10 {
            n.info(format!("step {i}"));
        }
        assert_eq!(n.entries().count(), LOG_CAPACITY);
        assert_eq!(n.latest().unwrap().text, format!("step {}", LOG_CAPACITY + 9));
    }
}
