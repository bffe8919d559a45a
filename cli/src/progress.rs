//! A progress bar on standard error while a long operation runs; nothing when standard error
//! is not a terminal.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar fed by progress frames, drawn from the first frame on (a command that reports no
/// progress, or has no label, draws none).
pub struct Bar {
    what: &'static str,
    bar: std::cell::OnceCell<Option<ProgressBar>>,
}

/// Whether a bar labelled `what` is drawn: on a terminal, for a command with a label.
pub fn shown(what: &str) -> bool {
    !what.is_empty() && std::io::stderr().is_terminal()
}

impl Bar {
    /// A bar labelled `what`, drawn only on a terminal.
    pub fn new(what: &'static str) -> Bar {
        Bar { what, bar: std::cell::OnceCell::new() }
    }

    fn drawn(&self) -> Option<&ProgressBar> {
        self.bar
            .get_or_init(|| {
                if !shown(self.what) {
                    return None;
                }
                let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
                let style = ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
                bar.set_style(style);
                bar.set_prefix(self.what);
                Some(bar)
            })
            .as_ref()
    }

    /// Shows how far the operation is.
    pub fn update(&self, done: u64, total: u64, files: u64) {
        if let Some(b) = self.drawn() {
            b.set_length(total.max(done).max(1));
            b.set_position(done);
            if files > 0 {
                b.set_message(format!("{files} files"));
            }
        }
    }

    /// The operation's next step: the bar is labelled `what` and starts again from zero.
    pub fn stage(&self, what: &str) {
        if let Some(b) = self.drawn() {
            b.set_prefix(what.to_string());
            b.set_position(0);
            b.reset_eta();
            b.set_message("");
        }
    }

    /// Prints a line without tearing the bar.
    pub fn println(&self, line: &str) {
        match self.bar.get().and_then(Option::as_ref) {
            Some(b) => b.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(b) = self.bar.get().and_then(Option::as_ref) {
            b.finish_and_clear();
        }
    }
}
