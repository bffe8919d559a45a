//! Replication: objects put into a pool, held by members' nodes, repaired when holders go away.
//!
//! - **Put.** The owner lists the object's blobs in a [`Manifest`], records the object in the
//!   pool document, and asks each node that placement picks (over the holders it currently
//!   hears from) to hold its share: `Hold{pool, object, positions}` on `kith/pool/1`. The holder
//!   checks that the asking node belongs to a member who stored that object, fetches the
//!   manifest and its share (verified, from the owner first), and answers `Held` once they are
//!   on its disk.
//! - **Repair.** Every node, every few seconds, computes from the pool document and the
//!   manifests which blobs it should hold over the holders it has heard from within the pool's
//!   `repair_after`, and fetches what it lacks from the other members' nodes. No coordinator:
//!   when a holder falls silent for longer than that, the next holders in each blob's ranking
//!   take over its share; when it returns, it is a holder again and the extra copies stay.
//! - **Health.** `kith pool show` asks each reachable holder which of its assigned blobs it has
//!   (`Has`) and reports the bytes missing from full replication.
//! - **Recovery.** A node of an identity that knows no pools (a restored identity on a new
//!   machine) asks the peers it reaches which pools that identity belongs to (`PoolsOf`, signed
//!   with the identity key), fetches those documents with a device proof and lists itself.

mod accounting;
mod audit;
mod edge;
mod health;
mod home;
mod lost;
mod moving;
mod offsite;
mod protocol;
mod put;
mod receipts;
mod reclaim;
mod recovery;
mod repair;
mod unlisted;

#[cfg(test)]
pub(crate) use edge::{Answer, check_sites, sign_sites};
pub use edge::{
    EDGE_EVERY, EDGE_POLL, EDGE_RETRY, EdgeSite, EdgeStatus, Edges, MAX_EDGE_BYTES, SiteHead,
    SiteHeads,
};
pub use health::{Health, HolderHealth};
pub use home::SiteKeeper;
pub use moving::{Destination, Moved, Stayed};
pub use offsite::{
    Held, Lent, MAX_OFFSITE_IDS, MAX_SEALED, OffsiteStats, PARTNERS_EVERY, PartnerStats,
    SEAL_EVERY, held_on_disk, sealed_targets,
};
pub use protocol::{MAX_HAS, POOL_ALPN, PoolProtocol, Reply, Request};
pub use put::{HolderAck, PoolPut};
pub use repair::{RepairStats, keep_set};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use iroh::EndpointId;
use kith_crdt::{Key, hex};
use kith_node::ChunkId;
use kith_node::net::Node;
use kith_node::worker::{Pace, Workers};
use tokio_util::sync::CancellationToken;

use crate::PoolError;
use crate::docs::Pools;
use crate::manifest::Manifest;
use crate::placement::Holder;
use crate::view::{AuditRecord, PoolView};

/// Why a replication request (a put, a health report, bringing objects home) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicaError {
    /// The node is not running (the replicator was made without one).
    #[error("the node is not running")]
    NotRunning,
    /// The pool document refused the change.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// This identity is not an active member of the pool.
    #[error("you are not a member of pool {pool}; nothing was stored")]
    NotAMember {
        /// The pool's name.
        pool: String,
    },
    /// Nobody in the pool offers storage.
    #[error(
        "nobody in pool {pool} offers storage yet: offer some with `kith offer {pool} --storage \
         10GiB` (on any member's node); nothing was stored"
    )]
    NoOffers {
        /// The pool's name.
        pool: String,
    },
    /// No node offering storage was heard from within the pool's `repair_after`.
    #[error(
        "no node that offers storage in pool {pool} has answered lately (see `kith pool show \
         {pool}`); nothing was stored"
    )]
    NoLiveHolders {
        /// The pool's name.
        pool: String,
    },
    /// The pool's rules or state refuse the request, in words for people (over quota, too few
    /// holders, a holder's refusal).
    #[error("{0}")]
    Refused(String),
}

impl From<String> for ReplicaError {
    fn from(s: String) -> ReplicaError {
        ReplicaError::Refused(s)
    }
}

impl From<&str> for ReplicaError {
    fn from(s: &str) -> ReplicaError {
        ReplicaError::Refused(s.to_string())
    }
}

/// How often each node checks what it should hold.
pub const REPAIR_INTERVAL: Duration = Duration::from_secs(5);
/// After a pass of a pool's duties that took `d`, its worker rests at least `d` times this.
const TRANQUILITY: u32 = 1;
/// Blobs fetched per round of repair or hold.
const FETCH_ROUND: usize = 4096;
/// Requests served at once.
const MAX_SERVING: usize = 8;

/// A sealed copy sent to a partner's holder: its digest, and when.
type SealedSent = ([u8; 32], std::time::Instant);

/// Replication, repair and recovery for this node's pools.
pub struct Replicator {
    pools: Arc<Pools>,
    node: OnceLock<Arc<Node>>,
    manifests: Mutex<HashMap<Key, Arc<Manifest>>>,
    /// Puts under way on this node (chain replication).
    putting: Mutex<Vec<Arc<put::Putting>>>,
    stats: Mutex<BTreeMap<Key, RepairStats>>,
    asked: Mutex<HashSet<EndpointId>>,
    serving: Arc<tokio::sync::Semaphore>,
    audits: Mutex<HashMap<(Key, Key), AuditRecord>>,
    audited: Mutex<HashMap<Key, std::time::Instant>>,
    published: Mutex<HashMap<(Key, Key), i64>>,
    nonce: std::sync::atomic::AtomicU64,
    seed: u64,
    scrubbing: Arc<std::sync::atomic::AtomicBool>,
    identity_shared: Mutex<Option<(std::time::Instant, [u8; 32])>>,
    usage: crate::usage::Usage,
    /// Whether this node said it was retired.
    told_retired: std::sync::atomic::AtomicBool,
    /// Keeps this member's sites as objects when the pool stops serving them.
    keeper: OnceLock<Arc<dyn SiteKeeper>>,
    /// The node's background workers.
    workers: Arc<Workers>,
    /// Manifests of objects its pools listed, as far as this node has seen since it started
    /// (the reclaim worker takes out those that are gone).
    listed: Mutex<HashSet<Key>>,
    /// The pool each of those manifests was last listed in.
    listed_in: Mutex<HashMap<Key, Key>>,
    /// Blobs of objects taken out, to release at the partners' holders, by pool.
    offsite_release: Mutex<HashMap<Key, offsite::Releasing>>,
    /// The last look for what partners hold unlisted, by pool.
    unlisted_looks: Mutex<HashMap<Key, unlisted::LastLook>>,
    /// When this node last looked for its member's lost objects, per pool (see `lost.rs`).
    lost_checked: Mutex<HashMap<Key, lost::LastLook>>,
    /// What this node holds for federated pools (see `offsite.rs`).
    lent: offsite::Lent,
    /// Partners' holders, by agreement, as last asked.
    partners: Mutex<HashMap<Key, offsite::Partner>>,
    /// Off-site copies confirmed, by (holder, blob).
    offsite_confirmed: Mutex<HashMap<(Key, [u8; 32]), std::time::Instant>>,
    /// Audits of partners' holders, by holder node.
    partner_audits: Mutex<HashMap<Key, offsite::PartnerAudit>>,
    /// Agreements an audit is being served for (one at a time each).
    audits_serving: Mutex<std::collections::HashSet<Key>>,
    /// Sealed copies sent, by (pool, holder): their digest and when.
    sealed_sent: Mutex<HashMap<(Key, Key), SealedSent>>,
    /// Agreements whose acceptance or notice this node handed over, and when it last tried.
    handed_over: Mutex<HashSet<Key>>,
    hand_over_tried: Mutex<HashMap<Key, std::time::Instant>>,
    /// The latest off-site pass's figures, per pool.
    offsite_stats: Mutex<BTreeMap<Key, offsite::OffsiteStats>>,
    /// Partner receipts this node signed, to deliver, by (pool, agreement, holder).
    receipts_out: Mutex<HashMap<(Key, Key, Key), receipts::Outgoing>>,
    /// Partner receipts received as a holder, to file, by (agreement, signing node).
    receipts_in: Mutex<HashMap<(Key, Key), receipts::Incoming>>,
    /// What this node serves as an edge of partners' sites (see `edge.rs`).
    edges: Arc<edge::Edges>,
}

impl std::fmt::Debug for Replicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicator").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Replicator {
    /// Replication for `pools`; [`Replicator::attach`] gives it the node once it runs.
    pub fn new(pools: Arc<Pools>) -> Arc<Replicator> {
        let workers = Workers::with_clock(pools.clock().clone());
        let lent = offsite::Lent::new(pools.dir().join("offsite"));
        let edges = Arc::new(edge::Edges::new(pools.dir().join("offsite")));
        Arc::new(Replicator {
            pools,
            node: OnceLock::new(),
            manifests: Mutex::new(HashMap::new()),
            putting: Mutex::new(Vec::new()),
            stats: Mutex::new(BTreeMap::new()),
            asked: Mutex::new(HashSet::new()),
            serving: Arc::new(tokio::sync::Semaphore::new(MAX_SERVING)),
            audits: Mutex::new(HashMap::new()),
            audited: Mutex::new(HashMap::new()),
            published: Mutex::new(HashMap::new()),
            nonce: std::sync::atomic::AtomicU64::new(0),
            scrubbing: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            identity_shared: Mutex::new(None),
            usage: crate::usage::Usage::default(),
            told_retired: std::sync::atomic::AtomicBool::new(false),
            keeper: OnceLock::new(),
            workers,
            listed: Mutex::new(HashSet::new()),
            listed_in: Mutex::new(HashMap::new()),
            offsite_release: Mutex::new(HashMap::new()),
            unlisted_looks: Mutex::new(HashMap::new()),
            lost_checked: Mutex::new(HashMap::new()),
            lent,
            partners: Mutex::new(HashMap::new()),
            offsite_confirmed: Mutex::new(HashMap::new()),
            partner_audits: Mutex::new(HashMap::new()),
            audits_serving: Mutex::new(Default::default()),
            offsite_stats: Mutex::new(BTreeMap::new()),
            receipts_out: Mutex::new(HashMap::new()),
            receipts_in: Mutex::new(HashMap::new()),
            sealed_sent: Mutex::new(HashMap::new()),
            handed_over: Mutex::new(HashSet::new()),
            hand_over_tried: Mutex::new(HashMap::new()),
            edges,
            seed: {
                use std::hash::{BuildHasher, Hasher};
                std::collections::hash_map::RandomState::new().build_hasher().finish()
            },
        })
    }

    /// The pools it replicates.
    pub fn pools(&self) -> &Arc<Pools> {
        &self.pools
    }

    /// Gives the replicator the running node.
    pub fn attach(&self, node: Arc<Node>) {
        let _ = self.node.set(node);
    }

    fn node(&self) -> Result<&Arc<Node>, String> {
        self.node.get().ok_or_else(|| "the node is not running".to_string())
    }

    /// Holders offering storage that were heard from within the pool's `repair_after`.
    pub fn live_holders(&self, v: &PoolView) -> Vec<Holder> {
        let limit = v.charter.repair_after_ms as i64;
        v.holders()
            .into_iter()
            .filter(|h| h.weight > 0 && self.pools.silent_for_ms(&h.node) <= limit)
            .collect()
    }

    /// The holders placement uses: live ones, less those whose latest audit failed.
    pub fn placement_holders(&self, v: &PoolView) -> Vec<Holder> {
        let failing = v.failing_nodes();
        self.live_holders(v).into_iter().filter(|h| !failing.contains(&h.node)).collect()
    }

    /// Other nodes of active members, most recently heard from first.
    fn pool_nodes(&self, v: &PoolView) -> Vec<EndpointId> {
        self.pools.nodes_by_recency(v)
    }

    /// How many manifests this node has read so far (only grows): a set of blobs made from the
    /// manifests known at some count is whole again once the count moves.
    pub fn manifests_known(&self) -> usize {
        lock(&self.manifests).len()
    }

    /// A manifest this node has (in memory, or in its store), without fetching.
    pub fn manifest_here(&self, id: &Key) -> Option<Arc<Manifest>> {
        if let Some(m) = lock(&self.manifests).get(id) {
            return Some(m.clone());
        }
        let store = self.node().ok()?.store().clone();
        let (_, bytes) = store.read_blob(&ChunkId(*id)).ok()??;
        let m = Arc::new(Manifest::from_bytes(&bytes).ok()?);
        lock(&self.manifests).insert(*id, m.clone());
        Some(m)
    }

    /// A manifest of an object a pool lists, from memory, the store, or else fetched from
    /// `from`.
    async fn manifest(&self, id: &Key, from: &[EndpointId]) -> Result<Arc<Manifest>, String> {
        // Listed: once no pool lists it, the reclaim worker takes what was kept for it.
        lock(&self.listed).insert(*id);
        if let Some(m) = lock(&self.manifests).get(id) {
            return Ok(m.clone());
        }
        let node = self.node()?;
        let cid = ChunkId(*id);
        let what = format!("manifest {}", hex(&id[..8]));
        // A copy that no longer reads back is forgotten and fetched again.
        let store = node.store().clone();
        let _ = tokio::task::spawn_blocking(move || {
            if store.has(&cid)? && store.read_blob(&cid).is_err() {
                store.forget_damaged(&cid)?;
            }
            Ok::<_, kith_node::StoreError>(())
        })
        .await;
        // Replication traffic is not egress in the ledger: it is what storage costs, priced in
        // byte-hours. Only fetches for a member's own use name the pool.
        node.fetch_missing_shared(&what, vec![cid], None, Some(from.to_vec()), None)
            .await
            .map_err(|e| e.to_string())?;
        let store = node.store().clone();
        let bytes = tokio::task::spawn_blocking(move || store.read_blob(&cid))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{what} is not in the store after fetching it"))?
            .1;
        let m = Arc::new(Manifest::from_bytes(&bytes).map_err(|e| e.to_string())?);
        lock(&self.manifests).insert(*id, m.clone());
        Ok(m)
    }

    /// An object stored in one of this node's pools whose id starts with `spec` (at least 8
    /// hex digits): its pool, its id and the pool nodes to fetch it from, most recently heard
    /// from first.
    pub fn find_object(&self, spec: &str) -> Option<(Key, Key, Vec<EndpointId>)> {
        let spec = spec.to_ascii_lowercase();
        if spec.len() < 8 {
            return None;
        }
        for (pool, v) in self.pools.list() {
            let hit = v.objects().map(|(_, o, _)| *o).find(|o| hex(o).starts_with(&spec));
            if let Some(o) = hit {
                // The pool's nodes first, then the partners' holding its off-site copies.
                let mut from = self.pool_nodes(&v);
                from.extend(self.offsite_nodes(&pool));
                return Some((pool, o, from));
            }
        }
        None
    }

    /// Repairs every pool and looks for this identity's pools, every [`REPAIR_INTERVAL`],
    /// until `cancel`.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let pace = Pace { interval: REPAIR_INTERVAL, tranquility: TRANQUILITY };
        let mut tasks = tokio::task::JoinSet::new();
        let this = self.clone();
        tasks.spawn(self.workers.clone().run("identity".into(), pace, cancel.clone(), move |_| {
            let this = this.clone();
            async move {
                this.recover().await;
                this.share_identity_if_due().await;
                this.settle_dissolved().await;
                this.forget_retired();
                this.renew_rosters();
                this.release_ended();
                this.sweep_released().await;
                this.hand_over_federation().await;
                Ok::<_, std::convert::Infallible>(())
            }
        }));
        // Partners' sites: as an origin, tell the edges that asked when this pool's sites
        // change; as an edge (`kith up --cdn`), ask partners when told, or when due.
        let this = self.clone();
        let edge_pace = Pace { interval: edge::EDGE_EVERY, tranquility: TRANQUILITY };
        tasks.spawn(self.workers.clone().run(
            "partners' sites".into(),
            edge_pace,
            cancel.clone(),
            move |_| {
                let this = this.clone();
                async move {
                    this.tell_edges();
                    this.refresh_edges().await;
                    Ok::<_, std::convert::Infallible>(())
                }
            },
        ));
        let this = self.clone();
        tasks.spawn(self.workers.clone().run("reclaim".into(), pace, cancel.clone(), move |_| {
            let this = this.clone();
            async move { this.reclaim_released().await }
        }));
        // One set of workers per pool, so a slow pool never delays another's duties.
        let mut per_pool: HashMap<Key, CancellationToken> = HashMap::new();
        let clock = self.pools.clock().clone();
        let mut first = true;
        loop {
            if !std::mem::take(&mut first) {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = clock.pause(REPAIR_INTERVAL) => {}
                }
            }
            let now: HashMap<Key, String> =
                self.pools.list().into_iter().map(|(k, v)| (k, v.charter.name)).collect();
            per_pool.retain(|k, stop| {
                let keep = now.contains_key(k);
                if !keep {
                    stop.cancel();
                }
                keep
            });
            for (pool, name) in now {
                if per_pool.contains_key(&pool) {
                    continue;
                }
                let stop = cancel.child_token();
                per_pool.insert(pool, stop.clone());
                self.spawn_pool_workers(&mut tasks, pool, &name, pace, stop);
            }
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Repair, audits and usage recording of one pool, each a worker of its own.
    fn spawn_pool_workers(
        self: &Arc<Self>,
        tasks: &mut tokio::task::JoinSet<()>,
        pool: Key,
        name: &str,
        pace: Pace,
        stop: CancellationToken,
    ) {
        let this = self.clone();
        tasks.spawn(self.workers.clone().run(
            format!("repair {name}"),
            pace,
            stop.clone(),
            move |w| {
                let this = this.clone();
                async move {
                    this.repair_reporting(pool, Some(&w)).await;
                    this.forget_lost_if_due(pool).await;
                    let st = this.stats(&pool);
                    // At the end of a pass: the blobs this node should hold, and how many it
                    // does (during one, the blobs it fetched of those it lacked).
                    if let Some(st) = &st {
                        w.settle(
                            st.responsible_blobs.saturating_sub(st.lacking_blobs),
                            st.responsible_blobs,
                        );
                    }
                    st.and_then(|s| s.error).map_or(Ok(()), Err)
                }
            },
        ));
        // Off-site copies in a worker of their own, which does not rest after a long pass:
        // its passes wait on partners' holders fetching over the federation link, not on this
        // machine, and resting as long as the last pass took (tranquility) left a new object
        // without its off-site copy for that long (44 s after a 100 MiB copy that took 44 s,
        // `testnet federation-bench`). A pass with nothing new to place takes milliseconds.
        let this = self.clone();
        let offsite_pace = Pace { interval: pace.interval, tranquility: 0 };
        tasks.spawn(self.workers.clone().run(
            format!("off-site {name}"),
            offsite_pace,
            stop.clone(),
            move |_| {
                let this = this.clone();
                async move {
                    this.offsite(pool).await;
                    this.release_offsite(pool).await;
                    this.release_unlisted(pool).await;
                    this.send_partner_receipts(pool).await;
                    this.share_sealed(pool).await;
                    this.accrue_partners(pool);
                    Ok::<_, std::convert::Infallible>(())
                }
            },
        ));
        let this = self.clone();
        tasks.spawn(self.workers.clone().run(
            format!("audit {name}"),
            pace,
            stop.clone(),
            move |_| {
                let this = this.clone();
                async move {
                    this.audit_if_due(pool).await;
                    Ok::<_, std::convert::Infallible>(())
                }
            },
        ));
        let this = self.clone();
        tasks.spawn(self.workers.clone().run(format!("usage {name}"), pace, stop, move |_| {
            let this = this.clone();
            async move {
                this.record_usage_if_due(pool);
                Ok::<_, std::convert::Infallible>(())
            }
        }));
    }

    /// This node's workers, for `kith status`.
    pub fn workers(&self) -> &Arc<Workers> {
        &self.workers
    }

    /// The latest repair figures per pool.
    pub fn stats(&self, pool: &Key) -> Option<RepairStats> {
        lock(&self.stats).get(pool).cloned()
    }
}
