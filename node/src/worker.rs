//! Background work as named workers (Garage's model): each duty (repair of one pool, its
//! audits, recording usage, sync) is one task with a name, a state the CLI shows, and a
//! throttle, because the hardware is also somebody's desktop.
//!
//! A worker runs a *pass* every `interval`; after a pass that took `d`, it waits at least
//! `d × tranquility` before the next one, so a duty that finds much to do never takes more than
//! `1 / (1 + tranquility)` of the time it runs in. A worker stops when its cancellation token
//! does.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// Workers a registry keeps (a bound against a pool or peer explosion).
const MAX_WORKERS: usize = 4096;

/// What a worker is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// Waiting for its next pass.
    Idle,
    /// In a pass.
    Busy,
    /// Its last pass failed (it tries again at the next).
    Error,
    /// Stopped (its duty ended, or the node is stopping).
    Stopped,
}

impl WorkerState {
    /// Its name, for tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            WorkerState::Idle => "idle",
            WorkerState::Busy => "busy",
            WorkerState::Error => "error",
            WorkerState::Stopped => "stopped",
        }
    }
}

/// A worker as the CLI shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    /// Its name, such as `repair street`.
    pub name: String,
    /// What it is doing.
    pub state: WorkerState,
    /// Passes run.
    pub passes: u64,
    /// When the last pass ended (ms since the epoch).
    pub last_ms: Option<u64>,
    /// How long the last pass took (ms).
    pub last_took_ms: u64,
    /// How far the current (or last) pass is: done and total, in the worker's own unit.
    pub progress: Option<(u64, u64)>,
    /// Seconds the current pass needs to finish, at the rate it has moved since its first
    /// progress report (none before it has moved, or once done).
    pub eta_s: Option<u64>,
    /// The last pass's error, if it failed.
    pub last_error: Option<String>,
}

/// One worker's shared state: the worker updates it, the registry reads it.
#[derive(Debug)]
pub struct Worker {
    info: Mutex<WorkerInfo>,
    /// When the current pass first reported progress, and how far it was then.
    since: Mutex<Option<(Instant, u64)>>,
}

impl Worker {
    fn lock(&self) -> std::sync::MutexGuard<'_, WorkerInfo> {
        self.info.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reports how far the current pass is.
    pub fn progress(&self, done: u64, total: u64) {
        self.since.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert((Instant::now(), done));
        self.lock().progress = Some((done, total));
    }

    /// Reports where a pass ended (in units of its own, so no estimate is made from it).
    pub fn settle(&self, done: u64, total: u64) {
        *self.since.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.lock().progress = Some((done, total));
    }

    /// What it is doing now.
    pub fn info(&self) -> WorkerInfo {
        let mut i = self.lock().clone();
        let since = *self.since.lock().unwrap_or_else(|p| p.into_inner());
        i.eta_s = match (i.state, i.progress, since) {
            (WorkerState::Busy, Some((done, total)), Some((at, from))) => {
                eta(from, done, total, at.elapsed())
            }
            _ => None,
        };
        i
    }

    /// Marks the start of a pass (for workers driven by something else than [`Workers::run`]).
    pub fn begin(&self) {
        *self.since.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.lock().state = WorkerState::Busy;
    }

    /// Marks the end of a pass that took `took`, keeping its error's message for display (the
    /// error itself stays with the pass: this is a status record, not an error path).
    pub fn end(&self, took: Duration, result: Result<(), &dyn std::fmt::Display>) {
        let mut i = self.lock();
        i.passes += 1;
        i.last_ms = Some(crate::keys::now_ms());
        i.last_took_ms = took.as_millis() as u64;
        match result {
            Ok(()) => {
                i.state = WorkerState::Idle;
                i.last_error = None;
            }
            Err(e) => {
                i.state = WorkerState::Error;
                i.last_error = Some(e.to_string());
            }
        }
    }

    /// Marks the worker stopped.
    pub fn stop(&self) {
        self.lock().state = WorkerState::Stopped;
    }
}

/// Seconds left for a pass at `done` of `total` that was at `from` `elapsed` ago: `None`
/// before it moved or once it is done.
pub fn eta(from: u64, done: u64, total: u64, elapsed: Duration) -> Option<u64> {
    if done <= from || done >= total {
        return None;
    }
    let rate = (done - from) as f64 / elapsed.as_secs_f64().max(0.001);
    Some(((total - done) as f64 / rate).ceil() as u64)
}

/// The workers of one node.
#[derive(Debug, Default)]
pub struct Workers {
    list: Mutex<Vec<Arc<Worker>>>,
    /// Moving a manual clock ends every worker's rest.
    clock: crate::Clock,
}

/// How often a worker runs and how much room it leaves.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Time between the starts of two passes, at least.
    pub interval: Duration,
    /// After a pass that took `d`, wait at least `d × tranquility`.
    pub tranquility: u32,
}

impl Workers {
    /// A registry with no workers, resting by the system clock.
    pub fn new() -> Arc<Workers> {
        Arc::new(Workers::default())
    }

    /// A registry with no workers whose rests end early when `clock` (a manual one) moves.
    pub fn with_clock(clock: crate::Clock) -> Arc<Workers> {
        Arc::new(Workers { list: Mutex::default(), clock })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Worker>>> {
        self.list.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every worker, by name; stopped ones are forgotten.
    pub fn list(&self) -> Vec<WorkerInfo> {
        let mut list = self.lock();
        list.retain(|w| w.info().state != WorkerState::Stopped);
        let mut out: Vec<WorkerInfo> = list.iter().map(|w| w.info()).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Registers a worker called `name` (idle, no passes yet).
    pub fn register(&self, name: &str) -> Arc<Worker> {
        let w = Arc::new(Worker {
            info: Mutex::new(WorkerInfo {
                name: name.to_string(),
                state: WorkerState::Idle,
                passes: 0,
                last_ms: None,
                last_took_ms: 0,
                progress: None,
                eta_s: None,
                last_error: None,
            }),
            since: Mutex::new(None),
        });
        let mut list = self.lock();
        if list.len() < MAX_WORKERS {
            list.push(w.clone());
        }
        w
    }

    /// Runs `pass` as the worker `name` at `pace` until `cancel` (a pass under way is dropped
    /// at its next await).
    pub async fn run<F, Fut, E>(
        self: Arc<Self>,
        name: String,
        pace: Pace,
        cancel: CancellationToken,
        mut pass: F,
    ) where
        F: FnMut(Arc<Worker>) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let w = self.register(&name);
        loop {
            let started = Instant::now();
            w.begin();
            let result = tokio::select! {
                _ = cancel.cancelled() => break,
                r = pass(w.clone()) => r,
            };
            let took = started.elapsed();
            if let Err(e) = &result {
                tracing::debug!(worker = %name, error = %e, "a pass failed");
            }
            w.end(took, result.as_ref().map_err(|e| e as &dyn std::fmt::Display).copied());
            let rest = pace.interval.saturating_sub(took).max(took * pace.tranquility);
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = self.clock.pause(rest) => {}
            }
        }
        w.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_has_an_estimate_once_it_moved_and_none_when_done() {
        let s = Duration::from_secs;
        assert_eq!(eta(0, 0, 100, s(10)), None, "not moved yet");
        assert_eq!(eta(0, 25, 100, s(10)), Some(30));
        assert_eq!(eta(20, 30, 100, s(5)), Some(35), "from where the pass first reported");
        assert_eq!(eta(0, 100, 100, s(10)), None, "done");
        let workers = Workers::new();
        let w = workers.register("repair street");
        w.begin();
        assert_eq!(w.info().eta_s, None);
        w.progress(0, 100);
        w.progress(50, 100);
        assert!(w.info().eta_s.is_some(), "{:?}", w.info());
        w.end(Duration::from_secs(1), Ok(()));
        assert_eq!(w.info().eta_s, None, "an idle worker has no estimate");
        w.begin();
        w.progress(60, 100);
        assert_eq!(w.info().eta_s, None, "a new pass starts its own rate");
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_runs_at_its_pace_shows_its_state_and_stops() {
        let workers = Workers::new();
        let cancel = CancellationToken::new();
        let pace = Pace { interval: Duration::from_secs(5), tranquility: 2 };
        let runs = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let r = runs.clone();
        let task = tokio::spawn(workers.clone().run(
            "repair street".into(),
            pace,
            cancel.clone(),
            move |w| {
                let r = r.clone();
                async move {
                    let n = r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    w.progress(n, 10);
                    // A long pass: 4 s, so the next waits 8 s (tranquility 2), not 1 s.
                    tokio::time::sleep(Duration::from_secs(4)).await;
                    if n == 1 { Err("holder gone".to_string()) } else { Ok(()) }
                }
            },
        ));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(workers.list()[0].state, WorkerState::Busy);
        tokio::time::sleep(Duration::from_secs(4)).await; // t = 5: first pass over at 4
        let i = workers.list()[0].clone();
        assert_eq!((i.state, i.passes, i.progress), (WorkerState::Idle, 1, Some((0, 10))));
        tokio::time::sleep(Duration::from_secs(8)).await; // t = 13: second pass since 12
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 2);
        tokio::time::sleep(Duration::from_secs(4)).await; // t = 17: it failed at 16
        let i = workers.list()[0].clone();
        assert_eq!((i.state, i.last_error.as_deref()), (WorkerState::Error, Some("holder gone")));
        cancel.cancel();
        task.await.unwrap();
        assert!(workers.list().is_empty(), "a stopped worker is forgotten");
    }
}
