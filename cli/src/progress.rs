//! A progress bar on standard error while a long store operation runs; nothing when standard
//! error is not a terminal.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kith_node::Progress;

const TICK: Duration = Duration::from_millis(100);

/// Draws a bar for a [`Progress`] until dropped.
pub struct Bar {
    counters: Option<Arc<Progress>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Bar {
    /// Starts a bar labelled `what` if standard error is a terminal.
    pub fn start(what: &'static str) -> Bar {
        let stop = Arc::new(AtomicBool::new(false));
        if !std::io::stderr().is_terminal() {
            return Bar { counters: None, stop, thread: None };
        }
        let counters = Arc::new(Progress::default());
        let (c, s) = (counters.clone(), stop.clone());
        let thread = std::thread::spawn(move || draw(what, &c, &s));
        Bar { counters: Some(counters), stop, thread: Some(thread) }
    }

    /// The counters to hand to the store, if a bar is shown.
    pub fn counters(&self) -> Option<Arc<Progress>> {
        self.counters.clone()
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn draw(what: &'static str, c: &Progress, stop: &AtomicBool) {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{prefix} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(what);
    bar.tick();
    while !stop.load(Ordering::Relaxed) {
        bar.set_length(c.bytes_total.load(Ordering::Relaxed).max(1));
        bar.set_position(c.bytes_done.load(Ordering::Relaxed));
        let files = c.files_done.load(Ordering::Relaxed);
        if files > 0 {
            bar.set_message(format!("{files} files"));
        }
        std::thread::sleep(TICK);
    }
    bar.finish_and_clear();
}
