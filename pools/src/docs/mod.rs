//! Pool documents on disk, and their sync with the other members' nodes over iroh
//! (`kith/docs/1`).
//!
//! A session is one bidirectional stream: the dialling node sends a [`Hello`] naming the pool and
//! how it may read it (it is a member's node, it joins with an invite, or it is a new device of a
//! member); the answering node replies with an [`Ack`]; then the two take turns sending one
//! optional [`SyncFrame`](kith_crdt::SyncFrame) each until both have nothing to say. Every
//! received change is checked before it is applied; a peer whose changes are rejected is logged
//! and the session ends.
//!
//! [`Pools`] holds the documents (found by name or id, viewed, edited), this identity's
//! document and the copies it keeps for other members, and when each node was last heard from;
//! [`Pools::run`] dials the sessions and [`DocsProtocol`] answers them.

mod accept;
mod carry;
mod catalog;
pub mod cpu;
mod custody;
mod dial;
mod liveness;
mod session;
mod ticket;

pub use accept::DocsProtocol;
pub use carry::{CarriedOut, Judged};
pub use catalog::SharedViews;
pub use custody::CustodyError;
pub use dial::SYNC_INTERVAL;
pub(crate) use dial::fetch_doc;
pub use session::{
    Ack, DOCS_ALPN, Hello, MAX_DOC_FRAME, MAX_PERIODS, Proof, Rejection, SyncCounts, Turn,
};
pub use ticket::{POOL_TICKET_PREFIX, decode_ticket, encode_ticket};

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use iroh::Endpoint;
use kith_crdt::{Key, Signer, SyncState, hex};
use tokio::sync::Notify;

use self::custody::CUSTODY_DIR;
use crate::fsutil::DocFiles;
use crate::identity::IdentityDoc;
use crate::ledger::Ledgers;
use crate::pool::{Pool, PoolError, PoolSnapshot};

/// Folder of pool documents in the home.
const POOLS_DIR: &str = "pools";

/// Where the data keys this device opens go, all of them in the order they were made (see
/// [`Pools::set_data_key_sink`]).
pub type DataKeySink = Box<dyn Fn(Vec<age::x25519::Identity>) -> Result<(), String> + Send + Sync>;

/// Pool documents held by this node, and their sync.
pub struct Pools {
    /// The pool documents (`pools/ID.kpool`).
    files: DocFiles,
    /// This identity's document (`identity.kdoc`, in the home).
    home_files: DocFiles,
    /// Copies of other members' identity documents (`identities/OWNER.kdoc`).
    custody_files: DocFiles,
    signer: Signer,
    node: Key,
    pools: Mutex<BTreeMap<Key, Pool>>,
    states: Mutex<HashMap<(Key, Key), SyncState>>,
    rejections: Mutex<Vec<Rejection>>,
    changed: Notify,
    endpoint: std::sync::OnceLock<Endpoint>,
    /// When each node last completed a session with this one (ms since the epoch).
    seen: Mutex<HashMap<Key, i64>>,
    started_ms: i64,
    /// Sessions `sync_all` started that have not ended.
    in_flight: Mutex<std::collections::HashSet<(Key, Key)>>,
    sync_sent: std::sync::atomic::AtomicU64,
    sync_received: std::sync::atomic::AtomicU64,
    /// Syncs of one document with one peer that settled, and that failed.
    sync_settled: std::sync::atomic::AtomicU64,
    sync_failed: std::sync::atomic::AtomicU64,
    /// Changes that arrived in settled syncs.
    sync_changes: std::sync::atomic::AtomicU64,
    /// This identity's document.
    identity: Mutex<Option<IdentityDoc>>,
    /// Copies of other members' identity documents, kept for them.
    custody: Mutex<BTreeMap<Key, IdentityDoc>>,
    /// The recipients of the data keys this device holds, and where new ones go.
    data_keys: Mutex<Option<(BTreeMap<String, age::x25519::Identity>, DataKeySink)>>,
    /// The pools' ledgers.
    ledgers: Ledgers,
    /// Site requests this node answered, by pool, not yet recorded.
    site_requests: Mutex<HashMap<Key, u64>>,
    /// CPU of members' jobs counted since the last record, by pool.
    cpu: Mutex<HashMap<Key, cpu::CpuTally>>,
    /// Bumped whenever a pool document changes on disk.
    generation: std::sync::atomic::AtomicU64,
    /// Every pool's typed view and those of this identity's pools, as of a generation.
    views: Mutex<Option<(u64, SharedViews, SharedViews)>>,
    /// Where refusals are counted (the node's), once attached.
    refusals: std::sync::OnceLock<Arc<kith_node::refusals::Refusals>>,
    /// Former pools whose departure a session has taken to another node.
    delivered: Mutex<std::collections::HashSet<Key>>,
    /// Pools with their history, as of a generation.
    snapshots: Mutex<HashMap<Key, (u64, Arc<PoolSnapshot>)>>,
    /// The clock every decision by time reads.
    clock: kith_node::Clock,
}

impl std::fmt::Debug for Pools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pools").field("dir", &self.files.dir()).finish_non_exhaustive()
    }
}

impl Pools {
    /// Loads the pools under `home_root`; a damaged file is reported and skipped, not deleted.
    /// Every decision by time (silence, expiry, recording, periods) reads `clock`.
    pub fn load(
        home_root: &Path,
        signer: Signer,
        node: Key,
        clock: kith_node::Clock,
    ) -> std::io::Result<Pools> {
        let files = DocFiles::new(home_root.join(POOLS_DIR));
        std::fs::create_dir_all(files.dir())?;
        let pools: BTreeMap<Key, Pool> =
            files.read_all::<Pool>()?.into_iter().map(|p| (p.id(), p)).collect();
        let custody_files = DocFiles::new(home_root.join(CUSTODY_DIR));
        // Copies kept for others: a folder that cannot be listed leaves none (as before).
        let custody = custody_files
            .read_all::<IdentityDoc>()
            .unwrap_or_default()
            .into_iter()
            .map(|d| (d.view().owner, d))
            .collect();
        Ok(Pools {
            files,
            home_files: DocFiles::new(home_root.to_path_buf()),
            custody_files,
            signer,
            node,
            pools: Mutex::new(pools),
            states: Mutex::new(HashMap::new()),
            rejections: Mutex::new(Vec::new()),
            changed: Notify::new(),
            endpoint: std::sync::OnceLock::new(),
            seen: Mutex::new(HashMap::new()),
            started_ms: clock.now_ms(),
            in_flight: Mutex::new(std::collections::HashSet::new()),
            sync_sent: std::sync::atomic::AtomicU64::new(0),
            sync_received: std::sync::atomic::AtomicU64::new(0),
            sync_settled: std::sync::atomic::AtomicU64::new(0),
            sync_failed: std::sync::atomic::AtomicU64::new(0),
            sync_changes: std::sync::atomic::AtomicU64::new(0),
            identity: Mutex::new(None),
            custody: Mutex::new(custody),
            data_keys: Mutex::new(None),
            ledgers: Ledgers::new(home_root),
            site_requests: Mutex::new(HashMap::new()),
            cpu: Mutex::new(HashMap::new()),
            generation: std::sync::atomic::AtomicU64::new(0),
            views: Mutex::new(None),
            snapshots: Mutex::new(HashMap::new()),
            delivered: Mutex::new(std::collections::HashSet::new()),
            refusals: std::sync::OnceLock::new(),
            clock,
        })
    }

    /// The clock this node decides by.
    pub fn clock(&self) -> &kith_node::Clock {
        &self.clock
    }

    /// Now by [`Pools::clock`], in ms since the epoch.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Gives the pools the node's endpoint, for dialling.
    pub fn attach(&self, endpoint: Endpoint) {
        let _ = self.endpoint.set(endpoint);
    }

    /// Gives the pools the node's count of refusals.
    pub fn count_refusals_in(&self, refusals: Arc<kith_node::refusals::Refusals>) {
        let _ = self.refusals.set(refusals);
    }

    /// Counts (and logs, rate-limited) a refusal of `peer`'s input.
    pub fn refused(&self, peer: &Key, cause: &'static str, detail: &str) {
        match self.refusals.get() {
            Some(r) => r.refuse(peer, cause, detail),
            None => tracing::debug!(cause, detail, "refused a peer's input"),
        }
    }

    /// The folder of pool documents.
    pub fn dir(&self) -> &Path {
        self.files.dir()
    }

    /// This node's signer.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// This node's id.
    pub fn node(&self) -> Key {
        self.node
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Key, Pool>> {
        self.pools.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save(&self, pool: &mut Pool) -> Result<(), PoolError> {
        self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let name = hex(&pool.id());
        self.files.write(&name, pool).map(|_| ()).map_err(|e| {
            let path = self.files.path::<Pool>(&name);
            PoolError::Policy(format!("cannot write {}: {e}", path.display()))
        })
    }

    /// Bumped whenever a pool document or this identity's document changes (for caches).
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn endpoint(&self) -> Result<Endpoint, PoolError> {
        self.endpoint.get().cloned().ok_or(PoolError::Policy("the node is not running".into()))
    }

    /// The pools' ledgers.
    pub fn ledgers(&self) -> &Ledgers {
        &self.ledgers
    }

    /// Counts a site request this node answered for `pool` (for the ledger).
    pub fn count_site_request(&self, pool: &Key) {
        *self.site_requests.lock().unwrap_or_else(|p| p.into_inner()).entry(*pool).or_default() +=
            1;
    }

    /// Puts back `n` site requests that could not be recorded.
    pub fn put_back_site_requests(&self, pool: &Key, n: u64) {
        *self.site_requests.lock().unwrap_or_else(|p| p.into_inner()).entry(*pool).or_default() +=
            n;
    }

    /// Takes the count of site requests answered for `pool` since the last take.
    pub fn take_site_requests(&self, pool: &Key) -> u64 {
        self.site_requests.lock().unwrap_or_else(|p| p.into_inner()).remove(pool).unwrap_or(0)
    }

    /// Starts a sync round soon (after a change outside the pool documents, such as a ledger's).
    pub fn wake(&self) {
        self.changed.notify_one();
    }
}
