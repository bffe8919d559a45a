//! The clock that decides: when a holder counts as silent, when an invite expires, when usage
//! is recorded, which month a ledger row belongs to.
//!
//! A daemon gets one [`Clock`] in its configuration and hands it to every part that decides by
//! time. [`Clock::system`] is the wall clock. [`Clock::manual`] stands still until a test moves
//! it with [`Clock::advance`], and wakes the workers that wait on [`Clock::pause`], so a
//! scenario that spans a month runs in seconds and never depends on how long a step took.
//!
//! Timeouts of network operations are not decisions and stay on tokio's timer.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

/// Wall time or manual time, in milliseconds since the Unix epoch. Clones share the time.
#[derive(Clone, Debug, Default)]
pub struct Clock(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    /// `None`: the system clock.
    manual: Option<AtomicI64>,
    /// Woken whenever the manual time moves.
    moved: Notify,
}

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// A clock that shows `start_ms` until it is moved.
    pub fn manual(start_ms: i64) -> Clock {
        Clock(Arc::new(Inner { manual: Some(AtomicI64::new(start_ms)), moved: Notify::new() }))
    }

    /// Whether this is a manual clock.
    pub fn is_manual(&self) -> bool {
        self.0.manual.is_some()
    }

    /// Now, in milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        match &self.0.manual {
            Some(t) => t.load(Ordering::SeqCst),
            None => system_ms(),
        }
    }

    /// Moves a manual clock forward by `d` and wakes whoever waits in [`Clock::pause`]; the
    /// system clock cannot be moved and is left alone.
    pub fn advance(&self, d: Duration) {
        if let Some(t) = &self.0.manual {
            t.fetch_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX), Ordering::SeqCst);
            self.0.moved.notify_waiters();
        }
    }

    /// Sets a manual clock to `ms` (it may go back, as a wall clock can).
    pub fn set_ms(&self, ms: i64) {
        if let Some(t) = &self.0.manual {
            t.store(ms, Ordering::SeqCst);
            self.0.moved.notify_waiters();
        }
    }

    /// Waits `d` of real time, or less when a manual clock is moved meanwhile: a worker's rest
    /// between passes, cut short when a test moves time so the worker looks again at once.
    pub async fn pause(&self, d: Duration) {
        if self.is_manual() {
            tokio::select! {
                () = tokio::time::sleep(d) => {}
                () = self.0.moved.notified() => {}
            }
        } else {
            tokio::time::sleep(d).await;
        }
    }
}

/// Milliseconds since the Unix epoch by the system clock (0 before it).
fn system_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let c = Clock::manual(1_000);
        let shared = c.clone();
        assert_eq!(c.now_ms(), 1_000);
        shared.advance(Duration::from_secs(2));
        assert_eq!(c.now_ms(), 3_000);
        c.set_ms(500);
        assert_eq!(shared.now_ms(), 500);
        let wall = Clock::system();
        let before = wall.now_ms();
        wall.advance(Duration::from_secs(3_600));
        assert!(wall.now_ms() - before < 3_600_000);
    }

    #[tokio::test]
    async fn moving_a_manual_clock_ends_a_pause() {
        let c = Clock::manual(0);
        let waiter = tokio::spawn({
            let c = c.clone();
            async move { c.pause(Duration::from_secs(3_600)).await }
        });
        // The waiter may not be waiting yet: move the clock until it has ended.
        let end = tokio::time::timeout(Duration::from_secs(30), async {
            while !waiter.is_finished() {
                c.advance(Duration::from_millis(1));
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert!(end.is_ok(), "an hour's pause did not end when the clock moved");
    }
}
