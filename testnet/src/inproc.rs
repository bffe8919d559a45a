//! Many kith daemons in this process, started through the library ([`kith::Daemon`]) on
//! loopback, all reading one manual [`Clock`]: pool and ledger scenarios that span hours or
//! months run in seconds, and no step depends on how long the one before took.
//!
//! Each daemon is the real one (its own home, store, iroh endpoint, pools, gateway and control
//! socket); only the processes are shared. Commands go over each daemon's control socket with
//! the typed API ([`kith::client::call`]), as the `kith` binary sends them. Outside-in tests of
//! the binary stay on [`crate::Testnet`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kith::api::store::NodeTicket;
use kith::{Config, Daemon, DaemonHandle, Request};
use kith_node::Clock;
use kith_node::net::mdns::MdnsConfig;
use serde::de::DeserializeOwned;

/// How often [`Daemons::wait_for`] looks again.
const POLL: Duration = Duration::from_millis(20);

/// N daemons in this process on one manual clock.
pub struct Daemons {
    /// The clock every daemon decides by; move it with [`Clock::advance`].
    pub clock: Clock,
    nodes: Vec<Slot>,
    rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
}

struct Slot {
    home: PathBuf,
    running: Option<(DaemonHandle, tokio::sync::oneshot::Sender<()>)>,
}

impl Daemons {
    /// `n` homes (each with a new identity), none started; the clock shows the wall time now.
    pub fn new(n: usize) -> Result<Daemons> {
        Daemons::new_at(n, Clock::system().now_ms())
    }

    /// `n` homes, none started; the clock shows `start_ms` (ms since the epoch).
    pub fn new_at(n: usize, start_ms: i64) -> Result<Daemons> {
        let dir = tempfile::Builder::new().prefix("kith-inproc-").tempdir()?;
        let nodes = (0..n)
            .map(|i| -> Result<Slot> {
                let home = dir.path().join(format!("node{i}"));
                kith_node::Home::open_or_init(&home)?;
                Ok(Slot { home, running: None })
            })
            .collect::<Result<_>>()?;
        let rt =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        Ok(Daemons { clock: Clock::manual(start_ms), nodes, rt, dir })
    }

    /// How many nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The scratch folder of the run (files to put, restore targets).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Node `i`'s home.
    pub fn home(&self, i: usize) -> &Path {
        &self.nodes[i].home
    }

    /// Starts node `i`'s daemon on loopback (no mDNS: nodes learn each other by ticket) and
    /// gives it and every running node each other's tickets.
    pub fn start(&mut self, i: usize) -> Result<()> {
        let home = kith_node::Home::open(&self.nodes[i].home)?;
        let config = Config {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            mdns: MdnsConfig { disabled: true, ..MdnsConfig::default() },
            site_cache: 16 << 20,
            clock: self.clock.clone(),
            metrics: None,
            ..Config::default()
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = self
            .rt
            .block_on(Daemon::start(home, config, async move {
                let _ = rx.await;
            }))
            .with_context(|| format!("node {i} did not start"))?;
        self.nodes[i].running = Some((handle, tx));
        for j in 0..self.nodes.len() {
            if j != i && self.is_running(j) {
                self.connect(i, j)?;
                self.connect(j, i)?;
            }
        }
        Ok(())
    }

    /// Starts every node.
    pub fn start_all(&mut self) -> Result<()> {
        (0..self.nodes.len()).try_for_each(|i| self.start(i))
    }

    /// Stops node `i`'s daemon and waits until everything it ran has ended.
    pub fn stop(&mut self, i: usize) -> Result<()> {
        if let Some((handle, tx)) = self.nodes[i].running.take() {
            let _ = tx.send(());
            self.rt.block_on(handle.stopped())?;
        }
        Ok(())
    }

    /// Whether node `i`'s daemon runs.
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].running.is_some()
    }

    /// Gives node `i` the ticket of node `j`.
    pub fn connect(&self, i: usize, j: usize) -> Result<()> {
        let t: NodeTicket = self.call(j, Request::Ticket)?;
        let _: serde_json::Value = self.call(i, Request::PeerAdd { ticket: t.ticket })?;
        Ok(())
    }

    /// Sends `req` to node `i`'s daemon and returns its typed answer.
    pub fn call<T: DeserializeOwned>(&self, i: usize, req: Request) -> Result<T> {
        if !self.is_running(i) {
            bail!("node {i} is not running");
        }
        kith::client::call(&self.nodes[i].home, &req)
    }

    /// Waits until `f` holds, looking every few milliseconds of real time, for at most `limit`.
    pub fn wait_for(
        &self,
        limit: Duration,
        what: &str,
        mut f: impl FnMut(&Daemons) -> Result<bool>,
    ) -> Result<()> {
        let t = Instant::now();
        let mut last_error = None;
        loop {
            match f(self) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => last_error = Some(e),
            }
            if t.elapsed() > limit {
                match last_error {
                    Some(e) => {
                        bail!("timed out after {limit:?} waiting for {what} (last error: {e:#})")
                    }
                    None => bail!("timed out after {limit:?} waiting for {what}"),
                }
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            let _ = self.stop(i);
        }
    }
}
