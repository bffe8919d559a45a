//! Running a command in this process, on the home's store (no daemon runs on the home).

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use kith_node::{Home, Store};

use crate::ops::{self, Ctx, Request};
use crate::wire::{Frame, Out};

/// Frames buffered between the operation and its reader.
const FRAME_QUEUE: usize = 16;

/// The frames of a command running in this process, as they come.
pub struct Frames {
    rx: tokio::sync::mpsc::Receiver<Frame>,
    _rt: tokio::runtime::Runtime,
}

impl Frames {
    /// The next frame; `None` once the command has ended (its last frame is its result or
    /// error).
    pub fn next_frame(&mut self) -> Result<Option<Frame>> {
        Ok(self.rx.blocking_recv())
    }
}

/// Starts `req` on `home` in this process: it holds the home's store (and reads the pool
/// documents on disk, for the commands that only read them) while it runs. `watched`: whether
/// its progress is shown (a put then counts a folder's bytes first, for the bar's total).
pub fn run(home: Home, req: Request, watched: bool) -> Result<Frames> {
    let what = format!("kith {}", serde_json::to_value(&req)?["op"].as_str().unwrap_or("command"));
    let store = Arc::new(Store::open(&home, &what)?);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Frame>(FRAME_QUEUE);
    let pools = crate::pool_ops::open(&home, kith_node::Clock::system())?;
    crate::pool_ops::keep_data_keys(&pools, &store);
    let replicator = kith_pools::replica::Replicator::new(pools.clone());
    let job_book = crate::job_ops::JobBook::open(home.root());
    let ctx = Arc::new(Ctx {
        home,
        store,
        node: None,
        started: Instant::now(),
        http: None,
        pools: Some(pools),
        replicator: Some(replicator),
        browsers: None,
        mesh: None,
        gateway: None,
        metrics: None,
        operations: Default::default(),
        watched,
        jobs: None,
        job_book,
        relay: None,
        relays: Vec::new(),
    });
    rt.spawn(ops::run(ctx, req, Out::new(tx)));
    Ok(Frames { rx, _rt: rt })
}
