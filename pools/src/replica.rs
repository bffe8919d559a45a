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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use iroh::EndpointId;
use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler};
use kith_crdt::{Key, hex, verify};
use kith_node::ChunkId;
use kith_node::net::{Node, frame};
use kith_node::store::pack::BlobKind;
use kith_node::worker::{Pace, Workers};
use minicbor::{Decode, Encode};
use tokio_util::sync::CancellationToken;

use crate::docs::{Pools, Proof};
use crate::manifest::Manifest;
use crate::placement::{Holder, place};
use crate::pool::{Pool, PoolError};
use crate::view::{AuditRecord, Offer, PoolObject, PoolView};

/// ALPN of replication requests.
pub const POOL_ALPN: &[u8] = b"kith/pool/1";
/// Largest request or reply frame.
const MAX_FRAME: usize = 4 << 20;
/// Ids in one `Has`.
pub const MAX_HAS: usize = 65_536;
/// How often each node checks what it should hold.
pub const REPAIR_INTERVAL: Duration = Duration::from_secs(5);
/// After a pass of a pool's duties that took `d`, its worker rests at least `d` times this.
const TRANQUILITY: u32 = 1;
/// Blobs fetched per round of repair or hold.
const FETCH_ROUND: usize = 4096;
/// Requests served at once.
const MAX_SERVING: usize = 8;
/// How long `pool show` waits for a holder's answer.
const HAS_TIMEOUT: Duration = Duration::from_secs(2);
/// Domain separation for a device's identity document exchange.
const IDENTITY_CONTEXT: &[u8] = b"kith-identity-v1";
/// How often this node exchanges its identity document with its pools' nodes.
const IDENTITY_EVERY: Duration = Duration::from_secs(60);
/// Domain separation for `PoolsOf`.
const POOLS_OF_CONTEXT: &[u8] = b"kith-pools-of-v1";

/// A replication request (one per stream).
#[derive(Debug, Clone, Encode, Decode)]
pub enum Request {
    /// Hold these blobs (positions in the object's manifest).
    #[n(0)]
    Hold {
        /// The pool.
        #[cbor(n(0), with = "minicbor::bytes")]
        pool: Key,
        /// The object, as recorded in the pool document.
        #[cbor(n(1), with = "minicbor::bytes")]
        object: Key,
        /// Positions of the blobs to hold.
        #[n(2)]
        positions: Vec<u32>,
    },
    /// Which of these blobs do you hold?
    #[n(1)]
    Has {
        /// The pool.
        #[cbor(n(0), with = "minicbor::bytes")]
        pool: Key,
        /// The blobs (at most [`MAX_HAS`]).
        #[n(1)]
        ids: Vec<minicbor::bytes::ByteArray<32>>,
    },
    /// Prove you hold chunk `index` (1 KiB) of blob `id`.
    #[n(3)]
    Audit {
        /// The pool.
        #[cbor(n(0), with = "minicbor::bytes")]
        pool: Key,
        /// The blob.
        #[cbor(n(1), with = "minicbor::bytes")]
        id: Key,
        /// Which 1 KiB chunk of it.
        #[n(2)]
        index: u64,
    },
    /// Here is my copy of this identity's document (maybe empty); send yours. Allowed for the
    /// identity's devices (signature over the asking node's id) and for nodes that share a
    /// pool with the identity.
    #[n(4)]
    Identity {
        /// The identity.
        #[cbor(n(0), with = "minicbor::bytes")]
        identity: Key,
        /// The identity's signature, when a device of it asks.
        #[cbor(n(1), with = "minicbor::bytes")]
        sig: Option<[u8; 64]>,
        /// The asker's copy.
        #[cbor(n(2), with = "minicbor::bytes")]
        doc: Vec<u8>,
    },
    /// Which pools is this identity in? Signed by the identity over the asking node's id.
    #[n(2)]
    PoolsOf {
        /// The identity.
        #[cbor(n(0), with = "minicbor::bytes")]
        identity: Key,
        /// Its signature.
        #[cbor(n(1), with = "minicbor::bytes")]
        sig: [u8; 64],
    },
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, Encode, Decode)]
pub enum Reply {
    /// The blobs are held: how many were fetched now, and their bytes.
    #[n(0)]
    Held {
        /// Blobs fetched.
        #[n(0)]
        blobs: u64,
        /// Their bytes.
        #[n(1)]
        bytes: u64,
    },
    /// For each asked id, whether it is held.
    #[n(1)]
    Has(#[n(0)] Vec<bool>),
    /// Pool ids.
    #[n(2)]
    Pools(#[n(0)] Vec<minicbor::bytes::ByteArray<32>>),
    /// Not done, and why.
    #[n(3)]
    Refused(#[n(0)] String),
    /// A range proof for an audit.
    #[n(4)]
    Proof(#[n(0)] crate::proof::RangeProof),
    /// This node's copy of an identity document (empty if it has none).
    #[n(5)]
    IdentityDoc(#[cbor(n(0), with = "minicbor::bytes")] Vec<u8>),
}

/// One holder's answer to a put.
#[derive(Debug, Clone)]
pub struct HolderAck {
    /// The node.
    pub node: Key,
    /// Blobs assigned to it.
    pub blobs: u64,
    /// Their bytes.
    pub bytes: u64,
    /// `Ok(bytes it fetched)` or why not.
    pub result: Result<u64, String>,
}

/// What a put into a pool did.
#[derive(Debug, Clone)]
pub struct PoolPut {
    /// The pool.
    pub pool: Key,
    /// The manifest's id.
    pub manifest: Key,
    /// Blobs of the object.
    pub blobs: u64,
    /// Their bytes (one copy).
    pub bytes: u64,
    /// The replication factor.
    pub replicas: u64,
    /// Holders the pool could use (heard from recently, offering storage).
    pub holders: usize,
    /// Each chosen holder's answer.
    pub acks: Vec<HolderAck>,
    /// Blobs that got fewer holders than the replication factor (too few live holders).
    pub short_blobs: u64,
}

/// What one repair pass found for one pool.
#[derive(Debug, Clone, Default)]
pub struct RepairStats {
    /// When the pass ended (ms since the epoch).
    pub at_ms: i64,
    /// Blobs this node should hold.
    pub responsible_blobs: u64,
    /// Their bytes.
    pub responsible_bytes: u64,
    /// Of those, blobs it still lacks.
    pub lacking_blobs: u64,
    /// Bytes this node holds for other members (what it provides).
    pub held_for_others: u64,
    /// Bytes of this member's data that other members' nodes hold (copies counted), reckoned
    /// on one node of the member (its lowest node id), else 0.
    pub own_held_by_others: u64,
    /// Blobs fetched by repair since the node started.
    pub repaired_blobs: u64,
    /// Their bytes.
    pub repaired_bytes: u64,
    /// The last problem, if the pass had one.
    pub error: Option<String>,
}

/// How a holder stands in a health check.
#[derive(Debug, Clone)]
pub struct HolderHealth {
    /// The node.
    pub node: Key,
    /// `up` (it answered), `down` (no answer, not yet replaced), `out` (no answer, silent past
    /// `repair_after`) or `failing` (its latest audit failed).
    pub state: &'static str,
    /// Seconds since it was last heard from.
    pub silent_s: u64,
    /// Blobs placement gives it.
    pub assigned_blobs: u64,
    /// Their bytes.
    pub assigned_bytes: u64,
    /// Of those, blobs it confirmed holding.
    pub confirmed_blobs: u64,
    /// Why it could not be asked, if so.
    pub error: Option<String>,
}

/// A pool's replication health.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// Objects stored in the pool.
    pub objects: u64,
    /// Their bytes (one copy).
    pub bytes: u64,
    /// Blobs.
    pub blobs: u64,
    /// Bytes missing from full replication (a blob with one copy short counts its size once).
    pub under_replicated_bytes: u64,
    /// Blobs with fewer confirmed copies than the replication factor.
    pub under_replicated_blobs: u64,
    /// Blobs no node has, every node having answered.
    pub lost_blobs: u64,
    /// Blobs no answering node has, while some nodes did not answer (they may have them).
    pub unconfirmed_blobs: u64,
    /// Nodes that did not answer.
    pub silent: Vec<Key>,
    /// Manifests this node could not read.
    pub unreadable: Vec<String>,
    /// Objects over their owner's quota, which no holder keeps (ids, 8 bytes hex).
    pub over_quota: Vec<String>,
    /// Per holder.
    pub holders: Vec<HolderHealth>,
}

/// Replication, repair and recovery for this node's pools.
pub struct Replicator {
    pools: Arc<Pools>,
    node: OnceLock<Arc<Node>>,
    manifests: Mutex<HashMap<Key, Arc<Manifest>>>,
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
    keeper: OnceLock<Arc<dyn crate::leave::SiteKeeper>>,
    /// The node's background workers.
    workers: Arc<Workers>,
}

impl std::fmt::Debug for Replicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicator").finish_non_exhaustive()
    }
}

use crate::clock::now_ms;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What an identity signs to vouch for one of its nodes, for one purpose.
fn node_message(context: &[u8], node: &Key) -> Vec<u8> {
    [context, &node[..]].concat()
}

/// Which of `ids` the local store holds.
async fn held_locally(
    store: Arc<kith_node::Store>,
    ids: Vec<[u8; 32]>,
) -> Result<Vec<bool>, String> {
    tokio::task::spawn_blocking(move || {
        ids.iter().map(|id| store.has(&ChunkId(*id))).collect::<Result<Vec<bool>, _>>()
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())
}

impl Replicator {
    /// Replication for `pools`; [`Replicator::attach`] gives it the node once it runs.
    pub fn new(pools: Arc<Pools>) -> Arc<Replicator> {
        Arc::new(Replicator {
            pools,
            node: OnceLock::new(),
            manifests: Mutex::new(HashMap::new()),
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
            workers: Workers::new(),
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

    /// Makes every object of this identity in `pool` complete in this node's store, fetching
    /// what it lacks from the pool's nodes (before the objects leave the pool: a member
    /// leaving, a pool dissolved). Returns the bytes fetched.
    pub async fn bring_home(&self, pool: Key) -> Result<u64, String> {
        let v = self.pools.view_of(&pool).ok_or("no such pool")?;
        let me = self.pools.signer().author().key;
        let Some(m) = v.members.get(&me) else { return Ok(0) };
        let node = self.node()?.clone();
        let from = self.pool_nodes(&v);
        // Site versions are pool objects too, but they are published, not kept: not brought.
        let sites: HashSet<Key> =
            m.sites.values().flat_map(|s| s.versions.values().map(|x| x.index)).collect();
        let mut fetched = 0;
        for oid in m.objects.keys().filter(|o| !sites.contains(*o)) {
            fetched += node
                .fetch_object_from(kith_node::ObjectId(*oid), None, Some(from.clone()), None)
                .await
                .map_err(|e| format!("object {}: {e}", hex(&oid[..8])))?;
        }
        Ok(fetched)
    }

    /// Gives the replicator what keeps sites as objects (the hosting layer).
    pub fn set_site_keeper(&self, keeper: Arc<dyn crate::leave::SiteKeeper>) {
        let _ = self.keeper.set(keeper);
    }

    /// Keeps the served version of each of this identity's sites in `pool` as an object in
    /// this node's store (before the pool stops serving them); returns (name, object id).
    pub async fn keep_sites(&self, pool: Key) -> Result<Vec<(String, Key)>, String> {
        let v = self.pools.view_of(&pool).ok_or("no such pool")?;
        let me = self.pools.signer().author().key;
        let Some(m) = v.members.get(&me) else { return Ok(Vec::new()) };
        if m.sites.is_empty() {
            return Ok(Vec::new());
        }
        let keeper = self.keeper.get().ok_or("the node cannot read sites yet; try again")?;
        let mut out = Vec::new();
        for name in m.sites.keys() {
            let id = keeper.keep(pool, name).await.map_err(|e| format!("site {name}: {e}"))?;
            out.push((name.clone(), id));
        }
        Ok(out)
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

    /// A manifest, from memory, the store, or else fetched from `from`.
    async fn manifest(&self, id: &Key, from: &[EndpointId]) -> Result<Arc<Manifest>, String> {
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
        node.fetch_missing_from(&what, vec![cid], None, Some(from.to_vec()), None)
            .await
            .map_err(|e| e.to_string())?;
        let store = node.store().clone();
        let bytes = tokio::task::spawn_blocking(move || store.read_blob(&cid))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{what} is not in the store after fetching it"))?
            .1;
        let m = Arc::new(Manifest::from_bytes(&bytes)?);
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
                return Some((pool, o, self.pool_nodes(&v)));
            }
        }
        None
    }

    /// Whether pool `spec` can take a new object at all, checked before anything is stored: this
    /// identity is a member, and some live holder offers storage (else: who can offer).
    pub fn ready_for_put(&self, spec: &str) -> Result<(), String> {
        let id = self.pools.resolve(spec).map_err(|e| e.to_string())?;
        let v = self.pools.view_of(&id).ok_or("no such pool")?;
        let name = &v.charter.name;
        if v.active(&self.pools.signer().author().key).is_none() {
            return Err(format!("you are not a member of pool {name}; nothing was stored"));
        }
        if v.holders().iter().all(|h| h.weight == 0) {
            return Err(format!(
                "nobody in pool {name} offers storage yet: offer some with `kith offer {name} --storage 10GiB` (on any member's node); nothing was stored"
            ));
        }
        if self.placement_holders(&v).is_empty() {
            return Err(format!(
                "no node that offers storage in pool {name} has answered lately (see `kith pool show {name}`); nothing was stored"
            ));
        }
        Ok(())
    }

    /// Puts object `object` (already in this node's store) into pool `spec` under `name`,
    /// asking the chosen holders to hold it; returns their answers.
    pub async fn put(&self, spec: &str, object: Key, name: &str) -> Result<PoolPut, String> {
        let node = self.node()?.clone();
        let store = node.store().clone();
        let oid = kith_node::ObjectId(object);
        let blobs = tokio::task::spawn_blocking(move || store.object_blobs(&oid))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let list: Vec<([u8; 32], u32)> = blobs.iter().map(|(c, l)| (c.0, *l)).collect();
        self.put_blobs(spec, object, name, &list).await
    }

    /// Puts the blobs `list` (in this node's store, `(id, stored length)`) into pool `spec` as
    /// object `object` named `name`: what [`Replicator::put`] does for a stored object, and
    /// what a site version is.
    pub async fn put_blobs(
        &self,
        spec: &str,
        object: Key,
        name: &str,
        list: &[([u8; 32], u32)],
    ) -> Result<PoolPut, String> {
        let node = self.node()?.clone();
        let manifest = Manifest::new(object, list)?;
        let mid = manifest.id();
        let bytes = manifest.to_bytes();
        let store = node.store().clone();
        tokio::task::spawn_blocking(move || {
            let mut ingest = store.ingest()?;
            ingest.add(ChunkId(mid), BlobKind::Chunk, &bytes)?;
            ingest.finish()
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot store the manifest: {e}"))?;
        lock(&self.manifests).insert(mid, Arc::new(manifest.clone()));
        let id = self.pools.resolve(spec).map_err(|e| e.to_string())?;
        let v = self.pools.view_of(&id).ok_or("the pool is gone")?;
        self.check_room(&v, &manifest)
            .await
            .map_err(|e| format!("{e}; the object is stored on this node, not in the pool"))?;
        let signer = self.pools.signer();
        let record = PoolObject {
            manifest: mid,
            bytes: manifest.bytes(),
            blobs: manifest.blobs.len() as u64,
            name: name.chars().take(255).collect(),
            at_ms: now_ms(),
        };
        let (pool, v) = self
            .pools
            .with_pool(spec, |p| {
                let me = signer.author().key;
                let known = p.view().members.get(&me).and_then(|m| m.objects.get(&object).cloned());
                if known.is_none_or(|k| k.manifest != mid) {
                    p.add_object(signer, &object, &record, now_ms())?;
                }
                Ok((p.id(), p.view()))
            })
            .map_err(|e| e.to_string())?;
        let holders = self.placement_holders(&v);
        let r = v.charter.replicas as usize;
        let mut assigned: BTreeMap<Key, (Vec<u32>, u64)> = BTreeMap::new();
        let mut short_blobs = 0;
        for (i, (id, len)) in manifest.blobs.iter().enumerate() {
            let targets = place(id, &holders, r);
            if targets.len() < r {
                short_blobs += 1;
            }
            for h in targets {
                let e = assigned.entry(h.node).or_default();
                e.0.push(i as u32);
                e.1 += *len as u64;
            }
        }
        let me = self.pools.node();
        let mut tasks = tokio::task::JoinSet::new();
        let mut acks = Vec::new();
        for (holder, (positions, bytes)) in assigned {
            let blobs = positions.len() as u64;
            if holder == me {
                acks.push(HolderAck { node: holder, blobs, bytes, result: Ok(0) });
                continue;
            }
            let pools = self.pools.clone();
            let node = node.clone();
            tasks.spawn(async move {
                let result = hold(&pools, &node, pool, object, holder, positions, bytes).await;
                HolderAck { node: holder, blobs, bytes, result }
            });
        }
        while let Some(a) = tasks.join_next().await {
            acks.push(a.map_err(|e| e.to_string())?);
        }
        acks.sort_by_key(|a| a.node);
        Ok(PoolPut {
            pool,
            manifest: mid,
            blobs: manifest.blobs.len() as u64,
            bytes: manifest.bytes(),
            replicas: v.charter.replicas,
            holders: holders.len(),
            acks,
            short_blobs,
        })
    }

    /// Refuses an object that would take this member over its quota (one copy of its distinct
    /// blobs) or the pool over the storage its live holders offer (every copy).
    async fn check_room(&self, v: &PoolView, m: &Manifest) -> Result<(), String> {
        let me = self.pools.signer().author().key;
        let from = self.pool_nodes(v);
        let mut all: HashMap<[u8; 32], u64> = HashMap::new();
        let mut mine: HashSet<[u8; 32]> = HashSet::new();
        let mut unknown = (0u64, 0u64);
        for (owner, _, po) in v.objects() {
            match self.manifest(&po.manifest, &from).await {
                Ok(pm) => {
                    for (id, len) in &pm.blobs {
                        all.insert(**id, *len as u64);
                        if *owner == me {
                            mine.insert(**id);
                        }
                    }
                }
                // Counted whole when its manifest cannot be read.
                Err(_) => {
                    unknown.0 += po.bytes;
                    if *owner == me {
                        unknown.1 += po.bytes;
                    }
                }
            }
        }
        let mut seen = HashSet::new();
        let fresh = |set: &dyn Fn(&[u8; 32]) -> bool, seen: &mut HashSet<[u8; 32]>| -> u64 {
            seen.clear();
            m.blobs
                .iter()
                .filter(|(id, _)| !set(id) && seen.insert(**id))
                .map(|(_, l)| *l as u64)
                .sum()
        };
        let name = &v.charter.name;
        let quota = v.charter.quota;
        if quota > 0 {
            let used: u64 = mine.iter().map(|id| all[id]).sum::<u64>() + unknown.1;
            let more = fresh(&|id| mine.contains(id), &mut seen);
            if used + more > quota {
                return Err(format!(
                    "over your quota in pool `{name}`: you store {} of {}, and this object needs {} more",
                    crate::fmt::size(used),
                    crate::fmt::size(quota),
                    crate::fmt::size(more)
                ));
            }
        }
        let r = v.charter.replicas;
        let offered: u64 = self.placement_holders(v).iter().map(|h| h.weight).sum();
        let used = (all.values().sum::<u64>() + unknown.0) * r;
        let more = fresh(&|id| all.contains_key(id), &mut seen) * r;
        if used + more > offered {
            return Err(format!(
                "pool `{name}` is out of capacity: {} of the {} its live holders offer is used ({r} copies of everything), and this object needs {} more; members offer more with `kith offer {name} --storage SIZE`",
                crate::fmt::size(used),
                crate::fmt::size(offered),
                crate::fmt::size(more)
            ));
        }
        Ok(())
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
                Ok(())
            }
        }));
        // One set of workers per pool, so a slow pool never delays another's duties.
        let mut per_pool: HashMap<Key, CancellationToken> = HashMap::new();
        let mut tick = tokio::time::interval(REPAIR_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {}
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
                    this.repair(pool).await;
                    let st = this.stats(&pool);
                    if let Some(st) = &st {
                        w.progress(
                            st.responsible_blobs.saturating_sub(st.lacking_blobs),
                            st.responsible_blobs,
                        );
                    }
                    st.and_then(|s| s.error).map_or(Ok(()), Err)
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
                    Ok(())
                }
            },
        ));
        let this = self.clone();
        tasks.spawn(self.workers.clone().run(format!("usage {name}"), pace, stop, move |_| {
            let this = this.clone();
            async move {
                this.record_usage_if_due(pool);
                Ok(())
            }
        }));
    }

    /// This node's workers, for `kith status`.
    pub fn workers(&self) -> &Arc<Workers> {
        &self.workers
    }

    /// Stops dialling devices their identities retired (and says so once per device).
    fn forget_retired(&self) {
        let Ok(node) = self.node() else { return };
        for n in crate::devices::retired_nodes(&self.pools) {
            if node.forget_peer(&n) {
                tracing::info!(peer = %hex(&n[..5]), "forgot a device its owner retired");
            }
        }
        if let Some(at) = self.pools.retired_at()
            && !self.told_retired.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(
                at_ms = at,
                "this device was retired by another device of its identity: it takes no part in pools any more (its own store stays readable here)"
            );
        }
    }

    /// For each dissolved pool this identity is still in: brings its objects home, then
    /// leaves, which tells the others it no longer needs their copies.
    async fn settle_dissolved(&self) {
        let me = self.pools.signer().author().key;
        for (pool, v) in self.pools.former() {
            if v.charter.dissolved_ms.is_none() || v.active(&me).is_none() {
                continue;
            }
            let name = v.charter.name.clone();
            let home = match self.bring_home(pool).await {
                Ok(bytes) => self.keep_sites(pool).await.map(|_| bytes),
                Err(e) => Err(e),
            };
            match home {
                Ok(bytes) => {
                    self.record_usage(pool, true);
                    let left = self
                        .pools
                        .with_pool(&hex(&pool), |p| p.leave(self.pools.signer(), now_ms()))
                        .and_then(|()| {
                            self.pools
                                .with_identity(|d, s, now| d.drop_pool(s, &pool, now).map(|_| ()))
                        });
                    match left {
                        Ok(()) => {
                            tracing::info!(pool = %name, fetched = bytes, "pool {name} was dissolved; your objects are in this node's store")
                        }
                        Err(e) => {
                            tracing::warn!(pool = %name, error = %e, "cannot record leaving a dissolved pool")
                        }
                    }
                }
                Err(e) => {
                    tracing::info!(pool = %name, error = %e, "pool {name} was dissolved; still bringing your objects home")
                }
            }
        }
    }

    /// The latest repair figures per pool.
    pub fn stats(&self, pool: &Key) -> Option<RepairStats> {
        lock(&self.stats).get(pool).cloned()
    }

    /// One repair pass over `pool`: fetch every manifest, then the blobs this node should hold.
    pub async fn repair(&self, pool: Key) {
        let Some(v) = self.pools.view_of(&pool) else { return };
        let me = self.pools.node();
        if v.node_owner(&me).is_none() {
            return;
        }
        let from = self.pool_nodes(&v);
        let mut errors = Vec::new();
        let mut manifests = Vec::new();
        for (owner, oid, po) in v.objects() {
            match self.manifest(&po.manifest, &from).await {
                Ok(m) if m.object.as_slice() == oid.as_slice() => {
                    manifests.push((*owner, *oid, po.at_ms, m))
                }
                Ok(_) => errors
                    .push(format!("object {}: its manifest names another object", hex(&oid[..8]))),
                Err(e) => errors.push(format!("object {}: {e}", hex(&oid[..8]))),
            }
        }
        // Objects over their owner's quota are held by nobody, whatever the writer's client did.
        let over = over_quota(&v, &manifests);
        let manifests: Vec<(Key, Arc<Manifest>)> = manifests
            .into_iter()
            .filter(|(_, oid, _, _)| !over.contains(oid))
            .map(|(owner, _, _, m)| (owner, m))
            .collect();
        // A node that failed an audit still restores its own share (and passes again).
        let mut holders = self.placement_holders(&v);
        if let Some(h) = self.live_holders(&v).into_iter().find(|h| h.node == me)
            && !holders.contains(&h)
        {
            holders.push(h);
        }
        let r = v.charter.replicas as usize;
        let Ok(node) = self.node() else { return };
        let store = node.store().clone();
        let Some(member) = v.node_owner(&me) else { return };
        // One node per member reckons what others hold for it.
        let reckons_use = v.members[&member].nodes.keys().min() == Some(&me);
        let owners: HashMap<Key, Key> =
            v.members.iter().flat_map(|(m, x)| x.nodes.keys().map(move |n| (*n, *m))).collect();
        let plan = tokio::task::spawn_blocking(move || {
            let mut st = RepairStats::default();
            let mut want = Vec::new();
            let mut seen = HashSet::new();
            for (owner, m) in &manifests {
                for (id, len) in &m.blobs {
                    if !seen.insert(**id) {
                        continue;
                    }
                    let placed = place(id, &holders, r);
                    if owner == &member && reckons_use {
                        let others =
                            placed.iter().filter(|h| owners.get(&h.node) != Some(&member)).count();
                        st.own_held_by_others += *len as u64 * others as u64;
                    }
                    if !placed.iter().any(|h| h.node == me) {
                        continue;
                    }
                    st.responsible_blobs += 1;
                    st.responsible_bytes += *len as u64;
                    if !store.has(&ChunkId(**id))? {
                        want.push(ChunkId(**id));
                    } else if owner != &member {
                        st.held_for_others += *len as u64;
                    }
                }
            }
            Ok::<_, kith_node::StoreError>((st, want))
        })
        .await;
        let (mut st, want) = match plan {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                return self.record(
                    pool,
                    RepairStats { error: Some(e.to_string()), ..Default::default() },
                );
            }
            Err(e) => {
                return self.record(
                    pool,
                    RepairStats { error: Some(e.to_string()), ..Default::default() },
                );
            }
        };
        let prev = self.stats(&pool).unwrap_or_default();
        st.repaired_blobs = prev.repaired_blobs;
        st.repaired_bytes = prev.repaired_bytes;
        let mut lacking = want.len() as u64;
        if !want.is_empty() {
            tracing::info!(pool = %hex(&pool[..4]), blobs = want.len(), "repairing: fetching blobs this node should hold");
        }
        for round in want.chunks(FETCH_ROUND) {
            let what = format!("pool {} repair", hex(&pool[..4]));
            match node
                .fetch_missing_from(&what, round.to_vec(), None, Some(from.clone()), None)
                .await
            {
                Ok(rep) => {
                    lacking -= round.len() as u64;
                    st.repaired_blobs += rep.blobs;
                    st.repaired_bytes += rep.bytes;
                }
                Err(e) => {
                    errors.push(e.to_string());
                    break;
                }
            }
        }
        st.lacking_blobs = lacking;
        st.error = errors.into_iter().next();
        st.at_ms = now_ms();
        self.usage.accrue(pool, st.held_for_others, st.own_held_by_others, st.at_ms);
        self.record(pool, st);
    }

    /// Records this node's usage into the pool's ledger for the current period once the
    /// pool's `record_every` has passed: storage accrued, audits answered, bytes served to and
    /// received from other members' nodes, and a signed receipt per node it received from.
    /// Transfers with this member's own nodes, and with nodes that are not an active member's,
    /// are not pool usage and are dropped.
    pub fn record_usage_if_due(&self, pool: Key) {
        self.record_usage(pool, false);
    }

    /// Records what every pool's usage has accrued now, due or not (when the node stops, so
    /// the last hour is not lost).
    pub fn record_usage_now(&self) {
        for (pool, _) in self.pools.list() {
            self.record_usage(pool, true);
        }
    }

    /// Records what accrued in `pool` since the last record, at once (before leaving it).
    pub fn record_usage_of(&self, pool: Key) {
        self.record_usage(pool, true);
    }

    fn record_usage(&self, pool: Key, now_anyway: bool) {
        let Some(v) = self.pools.view_of(&pool) else { return };
        let me = self.pools.node();
        let Some(member) = v.node_owner(&me) else { return };
        let Ok(node) = self.node() else { return };
        let now = now_ms();
        let every = if now_anyway { 0 } else { v.charter.record_every_ms };
        let Some(due) = self.usage.take_due(pool, every, now) else { return };
        let other = |peer: &EndpointId| v.node_owner(peer.as_bytes()).is_some_and(|m| m != member);
        let take = |t: &kith_node::net::blobs::Tallies| {
            let (mine, rest): (HashMap<_, _>, HashMap<_, _>) =
                t.take().into_iter().partition(|((p, _), _)| *p == pool);
            t.add_all(rest);
            mine.into_iter()
                .filter(|((_, peer), _)| other(peer))
                .map(|((_, peer), x)| (*peer.as_bytes(), x))
                .collect::<Vec<_>>()
        };
        let served: u64 = take(node.served().tagged()).iter().map(|(_, t)| t.bytes).sum();
        let received = take(node.received());
        let requests = self.pools.take_site_requests(&pool);
        let signer = self.pools.signer();
        let period = crate::ledger::Period::of(now);
        let Some(snap) = self.pools.snapshot(&pool) else { return };
        let result = self.pools.ledgers().with(&snap, period, |l, rules| {
            let a = signer.author();
            let prev = l.view().rows.remove(&(a.key, a.device)).unwrap_or_default().receipts;
            let receipts: Vec<crate::ledger::Receipt> = received
                .iter()
                .map(|(server, t)| {
                    let (b, n) = prev.get(server).map_or((0, 0), |r| (r.bytes, r.blobs));
                    crate::ledger::Receipt::sign(
                        signer,
                        pool,
                        period,
                        *server,
                        b + t.bytes,
                        n + t.blobs,
                        t.last,
                        now,
                    )
                })
                .collect();
            use crate::ledger::Counter::*;
            let adds: Vec<(crate::ledger::Counter, i64)> = [
                (StorageProvided, due.provided),
                (StorageUsed, due.used),
                (EgressServed, served as i64),
                (EgressReceived, received.iter().map(|(_, t)| t.bytes as i64).sum()),
                (RequestsServed, requests as i64),
                (AuditsPassed, due.audits_passed),
                (AuditsFailed, due.audits_failed),
            ]
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .collect();
            if adds.is_empty() && receipts.is_empty() {
                return Ok(());
            }
            l.record(signer, rules, &adds, &receipts, now)
        });
        match result {
            Ok(()) => {
                tracing::debug!(pool = %hex(&pool[..4]), %period, "recorded usage");
                self.pools.wake();
            }
            Err(e) => {
                tracing::warn!(pool = %hex(&pool[..4]), error = %e, "cannot record usage in the ledger");
                self.usage.put_back(pool, due);
            }
        }
    }

    fn record(&self, pool: Key, st: RepairStats) {
        if let Some(e) = &st.error {
            tracing::warn!(pool = %hex(&pool[..4]), error = %e, "repair pass incomplete");
        }
        lock(&self.stats).insert(pool, st);
    }

    /// Checks a pool's replication by asking each holder what it holds.
    pub async fn health(&self, pool: Key) -> Result<Health, String> {
        self.health_without(pool, None).await
    }

    /// [`Replicator::health`], leaving out the objects of `owner` (a member about to leave,
    /// whose objects leave with it).
    ///
    /// Every node of an active member is asked at once, whatever this node thinks of its
    /// liveness (a holder that answers is up): first which of the blobs placement gives it it
    /// holds, then, for blobs no target confirmed, whether it holds them anyway. A blob is
    /// *lost* only when every node answered and none has it; when some did not answer, it is
    /// *unconfirmed*, never lost.
    pub async fn health_without(&self, pool: Key, owner: Option<&Key>) -> Result<Health, String> {
        let v = self.pools.view_of(&pool).ok_or("no such pool")?;
        let node = self.node()?.clone();
        let from = self.pool_nodes(&v);
        let mut h = Health::default();
        let mut read = Vec::new();
        for (who, oid, po) in v.objects() {
            if Some(who) == owner {
                continue;
            }
            match self.manifest(&po.manifest, &from).await {
                Ok(m) => read.push((*who, *oid, po.at_ms, m)),
                Err(e) => h.unreadable.push(format!("object {}: {e}", hex(&oid[..8]))),
            }
        }
        let over = over_quota(&v, &read);
        h.over_quota = over.iter().map(|o| hex(&o[..8])).collect();
        let mut manifests = Vec::new();
        for (_, oid, _, m) in read {
            if over.contains(&oid) {
                continue;
            }
            h.objects += 1;
            h.bytes += m.blobs.iter().map(|(_, l)| u64::from(*l)).sum::<u64>();
            manifests.push(m);
        }
        let live = self.placement_holders(&v);
        let failing = v.failing_nodes();
        let r = v.charter.replicas as usize;
        let mut blobs: Vec<([u8; 32], u32, Vec<Key>)> = Vec::new();
        let mut seen = HashSet::new();
        for m in &manifests {
            for (id, len) in &m.blobs {
                if seen.insert(**id) {
                    let targets = place(id, &live, r).iter().map(|t| t.node).collect();
                    blobs.push((**id, *len, targets));
                }
            }
        }
        h.blobs = blobs.len() as u64;
        let nodes: Vec<crate::placement::Holder> = v.holders();
        let asks: Vec<(Key, Vec<[u8; 32]>)> = nodes
            .iter()
            .map(|x| {
                let mine = blobs.iter().filter(|(_, _, t)| t.contains(&x.node));
                (x.node, mine.map(|(id, _, _)| *id).collect())
            })
            .collect();
        let answers = self.ask_has(pool, &node, asks).await;
        let mut confirmed: HashSet<([u8; 32], Key)> = HashSet::new();
        for (holder, ids, answer) in &answers {
            if let Ok(bits) = answer {
                for (id, b) in ids.iter().zip(bits) {
                    if *b {
                        confirmed.insert((*id, *holder));
                    }
                }
            }
        }
        // Blobs no target confirmed: does any node that answered have them anyway?
        let orphans: Vec<[u8; 32]> = blobs
            .iter()
            .filter(|(id, _, t)| !t.iter().any(|n| confirmed.contains(&(*id, *n))))
            .map(|(id, _, _)| *id)
            .collect();
        let mut anywhere: HashSet<[u8; 32]> = HashSet::new();
        if !orphans.is_empty() {
            let answered: Vec<(Key, Vec<[u8; 32]>)> = answers
                .iter()
                .filter(|(_, _, a)| a.is_ok())
                .map(|(n, _, _)| (*n, orphans.clone()))
                .collect();
            for (_, ids, answer) in self.ask_has(pool, &node, answered).await {
                for (id, b) in ids.iter().zip(answer.unwrap_or_default()) {
                    if b {
                        anywhere.insert(*id);
                    }
                }
            }
        }
        let silent: Vec<Key> =
            answers.iter().filter(|(_, _, a)| a.is_err()).map(|(n, _, _)| *n).collect();
        // Every node was asked; those that offer nothing (withdrawn, or never offered) are not
        // listed as holders.
        for (x, (_, ids, answer)) in nodes.iter().zip(&answers).filter(|(x, _)| x.weight > 0) {
            let state = if failing.contains(&x.node) {
                "failing"
            } else if answer.is_ok() {
                "up"
            } else if live.iter().all(|l| l.node != x.node) {
                "out"
            } else {
                "down"
            };
            let assigned: u64 = blobs
                .iter()
                .filter(|(_, _, t)| t.contains(&x.node))
                .map(|(_, l, _)| *l as u64)
                .sum();
            h.holders.push(HolderHealth {
                node: x.node,
                state,
                silent_s: (self.pools.silent_for_ms(&x.node).max(0) / 1000) as u64,
                assigned_blobs: ids.len() as u64,
                assigned_bytes: assigned,
                confirmed_blobs: ids.iter().filter(|id| confirmed.contains(&(**id, x.node))).count()
                    as u64,
                error: answer.as_ref().err().cloned(),
            });
        }
        for (id, len, targets) in &blobs {
            let copies = targets.iter().filter(|t| confirmed.contains(&(*id, **t))).count();
            if copies < r {
                h.under_replicated_blobs += 1;
                h.under_replicated_bytes += *len as u64 * (r - copies) as u64;
            }
            if copies == 0 && !anywhere.contains(id) {
                if silent.is_empty() {
                    h.lost_blobs += 1;
                } else {
                    h.unconfirmed_blobs += 1;
                }
            }
        }
        h.silent = silent;
        Ok(h)
    }

    /// Asks each node at once which of its ids it holds (this node answers from its store);
    /// a node that does not answer within [`HAS_TIMEOUT`] gets an error.
    async fn ask_has(
        &self,
        pool: Key,
        node: &Arc<Node>,
        asks: Vec<(Key, Vec<[u8; 32]>)>,
    ) -> Vec<(Key, Vec<[u8; 32]>, Result<Vec<bool>, String>)> {
        let mut set = tokio::task::JoinSet::new();
        let out_after =
            self.pools.view_of(&pool).map_or(i64::MAX, |v| v.charter.repair_after_ms as i64);
        for (i, (holder, ids)) in asks.into_iter().enumerate() {
            let (pools, node, me) = (self.pools.clone(), node.clone(), self.pools.node());
            // A node silent past repair_after is out; asking it would only wait out the timeout.
            let out = self.pools.silent_for_ms(&holder) > out_after;
            set.spawn(async move {
                let answer = if out {
                    Err(format!("silent for {} s", pools.silent_for_ms(&holder) / 1000))
                } else if holder == me {
                    held_locally(node.store().clone(), ids.clone()).await
                } else {
                    tokio::time::timeout(HAS_TIMEOUT, has(&pools, &node, pool, holder, &ids))
                        .await
                        .unwrap_or_else(|_| {
                            Err(format!("no answer within {} s", HAS_TIMEOUT.as_secs()))
                        })
                };
                (i, holder, ids, answer)
            });
        }
        let mut out: Vec<_> = set.join_all().await;
        out.sort_by_key(|(i, ..)| *i);
        out.into_iter().map(|(_, n, ids, a)| (n, ids, a)).collect()
    }

    /// Asks reachable peers not asked yet which pools this identity is in, and takes the ones
    /// this node lacks.
    async fn recover(&self) {
        let Ok(node) = self.node() else { return };
        let me = self.pools.signer().author().key;
        let peers: Vec<EndpointId> = node
            .peers()
            .into_iter()
            .filter(|p| p.reachability == kith_node::net::peers::Reachability::Reachable)
            .map(|p| p.id)
            .filter(|p| !lock(&self.asked).contains(p))
            .collect();
        for peer in peers {
            let sig = self.pools.signer().sign(&node_message(POOLS_OF_CONTEXT, &self.pools.node()));
            let req = Request::PoolsOf { identity: me, sig };
            let ids = match ask(&self.pools, node, peer, &req).await {
                Ok(Reply::Pools(ids)) => ids,
                Ok(other) => {
                    tracing::debug!(peer = %peer.fmt_short(), reply = ?other, "pools-of refused");
                    lock(&self.asked).insert(peer);
                    continue;
                }
                Err(e) => {
                    tracing::debug!(peer = %peer.fmt_short(), error = %e, "pools-of failed");
                    continue;
                }
            };
            lock(&self.asked).insert(peer);
            if let Err(e) = self.exchange_identity(peer).await {
                tracing::debug!(peer = %peer.fmt_short(), error = %e, "identity exchange failed");
            }
            for id in ids {
                if self.pools.has_pool(&id) {
                    continue;
                }
                match self.take_pool(peer, *id).await {
                    Ok(()) => {
                        let name =
                            self.pools.view_of(&id).map(|v| v.charter.name).unwrap_or_default();
                        tracing::info!(pool = %name, peer = %peer.fmt_short(), "found pool {name} of this identity and joined it as a new device; this machine offers it no storage yet (`kith offer {name} --storage SIZE --zone HOUSEHOLD`)")
                    }
                    Err(e) => {
                        tracing::warn!(pool = %hex(&id[..4]), error = %e, "cannot take a pool of this identity")
                    }
                }
            }
        }
    }

    async fn take_pool(&self, peer: EndpointId, id: Key) -> Result<(), String> {
        let endpoint = self.pools.endpoint().map_err(|e| e.to_string())?;
        let proof = self.pools.device_proof(&id);
        let doc = crate::docs::fetch_doc(&endpoint, peer.into(), id, proof.clone())
            .await
            .map_err(|e| e.to_string())?;
        let mut pool = Pool::from_doc(doc).map_err(|e| e.to_string())?;
        if pool.id() != id {
            return Err("the peer sent another pool".into());
        }
        let now = now_ms();
        pool.offer(self.pools.signer(), &self.pools.node(), &Offer::default(), now)
            .map_err(|e: PoolError| e.to_string())?;
        let name = pool.view().charter.name;
        self.pools
            .with_identity(|d, s, now| d.add_pool(s, &id, &name, now).map(|_| ()))
            .map_err(|e| e.to_string())?;
        self.pools.insert(pool).map_err(|e| e.to_string())?;
        self.pools.sync_one(id, peer, proof).await?;
        Ok(())
    }

    /// Sends this identity's document to `peer` and merges the copy it sends back.
    async fn exchange_identity(&self, peer: EndpointId) -> Result<usize, String> {
        let node = self.node()?;
        let me = self.pools.signer().author().key;
        let sig = self.pools.signer().sign(&node_message(IDENTITY_CONTEXT, &self.pools.node()));
        let doc = self.pools.identity_bytes(&me).unwrap_or_default();
        match ask(&self.pools, node, peer, &Request::Identity { identity: me, sig: Some(sig), doc })
            .await?
        {
            Reply::IdentityDoc(bytes) => self.pools.merge_identity(&me, &bytes),
            Reply::Refused(why) => Err(format!("refused: {why}")),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }

    /// Exchanges this identity's document with every node of its pools every
    /// [`IDENTITY_EVERY`], and at once when the document or the set of nodes changed: its
    /// other devices merge it, the other members keep it for a restore.
    async fn share_identity_if_due(&self) {
        let mut nodes: Vec<EndpointId> = Vec::new();
        for (_, v) in self.pools.list() {
            for n in self.pool_nodes(&v) {
                if !nodes.contains(&n) {
                    nodes.push(n);
                }
            }
        }
        let mut h = blake3::Hasher::new();
        for head in self.pools.identity_heads() {
            h.update(&head);
        }
        let mut sorted: Vec<[u8; 32]> = nodes.iter().map(|n| *n.as_bytes()).collect();
        sorted.sort();
        for n in &sorted {
            h.update(n);
        }
        let digest = *h.finalize().as_bytes();
        {
            let mut last = lock(&self.identity_shared);
            if last.is_some_and(|(t, d)| t.elapsed() < IDENTITY_EVERY && d == digest) {
                return;
            }
            *last = Some((std::time::Instant::now(), digest));
        }
        for peer in nodes {
            if let Err(e) = self.exchange_identity(peer).await {
                tracing::debug!(peer = %peer.fmt_short(), error = %e, "identity exchange failed");
            }
        }
    }

    /// This node's audit records for `pool`, by audited node.
    pub fn audits(&self, pool: &Key) -> BTreeMap<Key, AuditRecord> {
        lock(&self.audits)
            .iter()
            .filter(|((p, _), _)| p == pool)
            .map(|((_, n), a)| (*n, a.clone()))
            .collect()
    }

    fn random(&self) -> u64 {
        let n = self.nonce.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut h = blake3::Hasher::new();
        h.update(&self.seed.to_le_bytes());
        h.update(&n.to_le_bytes());
        h.update(&now_ms().to_le_bytes());
        u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().expect("8 bytes"))
    }

    /// Audits every live holder of `pool` once if the pool's `audit_every` has passed since
    /// the last round: one random 1 KiB range of one random blob placement gives it.
    pub async fn audit_if_due(&self, pool: Key) {
        let Some(v) = self.pools.view_of(&pool) else { return };
        let me = self.pools.node();
        if v.node_owner(&me).is_none() {
            return;
        }
        let every = Duration::from_millis(v.charter.audit_every_ms);
        {
            let mut last = lock(&self.audited);
            let now = std::time::Instant::now();
            // The first round waits one period too: a node that just started has not synced.
            let due = last.entry(pool).or_insert(now);
            if now.duration_since(*due) < every {
                return;
            }
            *due = now;
        }
        let manifests: Vec<Arc<Manifest>> = {
            let cache = lock(&self.manifests);
            v.objects().filter_map(|(_, _, po)| cache.get(&po.manifest).cloned()).collect()
        };
        // Audits follow placement over every live holder (failing ones included, so a node
        // that repaired itself can pass again).
        let live = self.live_holders(&v);
        let r = v.charter.replicas as usize;
        let Ok(node) = self.node() else { return };
        for h in live.iter().filter(|h| h.node != me) {
            let mine: Vec<([u8; 32], u32)> = manifests
                .iter()
                .flat_map(|m| m.blobs.iter())
                .filter(|(id, _)| place(id, &live, r).iter().any(|t| t.node == h.node))
                .map(|(id, len)| (**id, *len))
                .collect();
            if mine.is_empty() {
                continue;
            }
            let (id, len) = mine[(self.random() % mine.len() as u64) as usize];
            let index = self.random() % crate::proof::chunks(len as u64);
            let Ok(peer) = EndpointId::from_bytes(&h.node) else { continue };
            let req = Request::Audit { pool, id, index };
            let verdict = match ask(&self.pools, node, peer, &req).await {
                Ok(Reply::Proof(p)) => crate::proof::check(&id, len as u64, index, &p),
                Ok(Reply::Refused(why)) => Err(format!("refused: {why}")),
                Ok(other) => Err(format!("unexpected answer {other:?}")),
                // Unreachable is for repair to judge, not an audit failure.
                Err(e) => {
                    tracing::debug!(peer = %peer.fmt_short(), error = %e, "audit not delivered");
                    continue;
                }
            };
            self.record_audit(pool, h.node, &hex(&id[..8]), verdict);
        }
    }

    fn record_audit(&self, pool: Key, node: Key, blob: &str, verdict: Result<(), String>) {
        let now = now_ms();
        let (rec, publish) = {
            let mut audits = lock(&self.audits);
            let rec = audits.entry((pool, node)).or_default();
            let was = (rec.passed + rec.failed > 0, rec.failing);
            match &verdict {
                Ok(()) => {
                    rec.passed += 1;
                    rec.failing = false;
                }
                Err(why) => {
                    rec.failed += 1;
                    rec.failing = true;
                    rec.reason = format!("blob {blob}: {why}");
                    tracing::warn!(node = %hex(&node[..4]), reason = %rec.reason, "a holder failed an audit");
                }
            }
            rec.at_ms = now;
            // The document hears of the first audit, every change of verdict, and otherwise
            // at most every ten minutes: its size grows with events, not with time.
            let last = lock(&self.published).get(&(pool, node)).copied();
            let publish = !was.0 || was.1 != rec.failing || last.is_none_or(|t| now - t > 600_000);
            (rec.clone(), publish)
        };
        if publish {
            let signer = self.pools.signer();
            match self.pools.with_pool(&hex(&pool), |p| p.set_audit(signer, &node, &rec, now)) {
                Ok(()) => {
                    lock(&self.published).insert((pool, node), now);
                }
                Err(e) => tracing::warn!(error = %e, "cannot record an audit in the pool document"),
            }
        }
    }

    async fn serve_audit(
        &self,
        peer: EndpointId,
        pool: Key,
        id: Key,
        index: u64,
    ) -> Result<Reply, String> {
        self.member_view(peer, &pool)?;
        let store = self.node()?.store().clone();
        let answer = tokio::task::spawn_blocking(move || match store.read_blob(&ChunkId(id)) {
            Ok(Some((_, blob))) => crate::proof::prove(&blob, index)
                .map(Reply::Proof)
                .ok_or_else(|| format!("the blob has no chunk {index}")),
            Ok(None) => Err("not held here".into()),
            Err(e) => Err(format!("damaged here: {e}")),
        })
        .await
        .map_err(|e| e.to_string())?;
        if answer.as_ref().is_err_and(|e| e.starts_with("damaged")) {
            self.scrub();
        }
        // A holder knows its own verdict: a proof from the blob it holds passes.
        self.usage.audited(pool, answer.is_ok());
        answer
    }

    /// Checks every blob this node keeps for its pools and forgets those that no longer read
    /// back, so repair fetches good copies (a disk that lost one blob has likely lost more).
    /// One scrub at a time.
    fn scrub(&self) {
        if self.scrubbing.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        let Ok(node) = self.node() else { return };
        let (pools, store) = (self.pools.clone(), node.store().clone());
        let flag = self.scrubbing.clone();
        // Manifests in memory too: a damaged manifest on disk hides what it lists.
        let cached: Vec<ChunkId> = lock(&self.manifests)
            .values()
            .flat_map(|m| m.blobs.iter().map(|(id, _)| ChunkId(**id)))
            .collect();
        tokio::task::spawn_blocking(move || {
            let mut forgot = 0u64;
            let (mut keep, _) = keep_set(&pools, &store);
            keep.extend(cached);
            for id in keep {
                if store.has(&id).unwrap_or(false)
                    && store.read_blob(&id).is_err()
                    && store.forget_damaged(&id).unwrap_or(false)
                {
                    forgot += 1;
                }
            }
            tracing::warn!(
                blobs = forgot,
                "scrubbed the pool blobs held here after a failed audit; repair fetches them again"
            );
            flag.store(false, std::sync::atomic::Ordering::Release);
        });
    }

    async fn serve(&self, peer: EndpointId, req: Request) -> Reply {
        let refused = |e: String| Reply::Refused(e);
        match req {
            Request::Hold { pool, object, positions } => {
                self.serve_hold(peer, pool, object, positions).await.unwrap_or_else(refused)
            }
            Request::Identity { identity, sig, doc } => {
                let device = sig.is_some_and(|s| {
                    verify(&identity, &node_message(IDENTITY_CONTEXT, peer.as_bytes()), &s)
                });
                if !device && !self.pools.shares_pool_with(peer.as_bytes(), &identity) {
                    return refused(
                        "you are not a device of that identity and share no pool with it here"
                            .into(),
                    );
                }
                if let Err(e) = self.pools.merge_identity(&identity, &doc) {
                    return refused(format!("your copy was refused: {e}"));
                }
                Reply::IdentityDoc(self.pools.identity_bytes(&identity).unwrap_or_default())
            }
            Request::Audit { pool, id, index } => {
                self.serve_audit(peer, pool, id, index).await.unwrap_or_else(refused)
            }
            Request::Has { pool, ids } => {
                self.serve_has(peer, pool, ids).await.unwrap_or_else(refused)
            }
            Request::PoolsOf { identity, sig } => {
                if !verify(&identity, &node_message(POOLS_OF_CONTEXT, peer.as_bytes()), &sig) {
                    return refused("the signature does not verify".into());
                }
                Reply::Pools(self.pools.pools_of(&identity).into_iter().map(Into::into).collect())
            }
        }
    }

    fn member_view(&self, peer: EndpointId, pool: &Key) -> Result<(PoolView, Key), String> {
        let v = self
            .pools
            .view_of(pool)
            .ok_or_else(|| format!("this node holds no pool {}", hex(&pool[..8])))?;
        let owner = v
            .node_owner(peer.as_bytes())
            .ok_or("your node is not listed under an active member of this pool")?;
        Ok((v, owner))
    }

    async fn serve_hold(
        &self,
        peer: EndpointId,
        pool: Key,
        object: Key,
        positions: Vec<u32>,
    ) -> Result<Reply, String> {
        let (v, owner) = self.member_view(peer, &pool)?;
        let me = self.pools.node();
        if !v.holders().iter().any(|h| h.node == me && h.weight > 0) {
            return Err("this node offers no storage to the pool".into());
        }
        let po = v.members[&owner].objects.get(&object).ok_or_else(|| {
            format!(
                "object {} is not in this node's copy of the pool document (yet)",
                hex(&object[..8])
            )
        })?;
        let mut from = vec![peer];
        from.extend(self.pool_nodes(&v).into_iter().filter(|p| *p != peer));
        let m = self.manifest(&po.manifest, &from).await?;
        if m.object.as_slice() != object.as_slice() {
            return Err("the manifest names another object".into());
        }
        if v.charter.quota > 0 {
            let mut all = Vec::new();
            for (o, oid, x) in v.objects().filter(|(o, _, _)| **o == owner) {
                all.push((*o, *oid, x.at_ms, self.manifest(&x.manifest, &from).await?));
            }
            if over_quota(&v, &all).contains(&object) {
                return Err(format!(
                    "object {} takes its owner over the pool's quota of {}; this node does not hold it",
                    hex(&object[..8]),
                    crate::fmt::size(v.charter.quota)
                ));
            }
        }
        let mut ids = Vec::with_capacity(positions.len());
        for p in positions {
            let (id, _) =
                m.blobs.get(p as usize).ok_or(format!("position {p} is past the manifest"))?;
            ids.push(ChunkId(**id));
        }
        let node = self.node()?;
        let (mut blobs, mut bytes) = (0, 0);
        for round in ids.chunks(FETCH_ROUND) {
            let what = format!("object {} for the pool", hex(&object[..8]));
            let rep = node
                .fetch_missing_from(&what, round.to_vec(), None, Some(from.clone()), None)
                .await
                .map_err(|e| e.to_string())?;
            blobs += rep.blobs;
            bytes += rep.bytes;
        }
        Ok(Reply::Held { blobs, bytes })
    }

    async fn serve_has(
        &self,
        peer: EndpointId,
        pool: Key,
        ids: Vec<minicbor::bytes::ByteArray<32>>,
    ) -> Result<Reply, String> {
        self.member_view(peer, &pool)?;
        if ids.len() > MAX_HAS {
            return Err(format!("at most {MAX_HAS} ids per request"));
        }
        let ids = ids.iter().map(|id| **id).collect();
        held_locally(self.node()?.store().clone(), ids).await.map(Reply::Has)
    }
}

/// Every blob this node keeps for its pools: the manifests of active members' objects and
/// everything they list (whether or not placement gives it to this node: copies are dropped
/// only when their object leaves the pool). Reads only what is on disk; also returns the
/// manifests it could not read (`gc` must not run while there are any).
pub fn keep_set(pools: &Pools, store: &kith_node::Store) -> (HashSet<ChunkId>, Vec<String>) {
    let mut keep = HashSet::new();
    let mut unreadable = Vec::new();
    for (_, v) in pools.holding() {
        for (_, _, po) in v.objects() {
            let mid = ChunkId(po.manifest);
            keep.insert(mid);
            match store.read_blob(&mid).map_err(|e| e.to_string()).and_then(|b| match b {
                Some((_, bytes)) => Manifest::from_bytes(&bytes).map(Some),
                None => Ok(None),
            }) {
                Ok(Some(m)) => keep.extend(m.blobs.iter().map(|(id, _)| ChunkId(**id))),
                Ok(None) => {}
                Err(e) => unreadable.push(format!("manifest {}: {e}", hex(&po.manifest[..8]))),
            }
        }
    }
    (keep, unreadable)
}

/// The objects of `manifests` (owner, object, claimed time, manifest) over their owner's quota
/// in pool `v`, as every holder reckons it (see [`crate::quota`]).
fn over_quota(v: &PoolView, manifests: &[(Key, Key, i64, Arc<Manifest>)]) -> HashSet<Key> {
    let blobs: Vec<Vec<([u8; 32], u32)>> = manifests
        .iter()
        .map(|(_, _, _, m)| m.blobs.iter().map(|(id, l)| (**id, *l)).collect())
        .collect();
    let stored: Vec<crate::quota::Stored<'_>> = manifests
        .iter()
        .zip(&blobs)
        .map(|((owner, object, at_ms, _), b)| crate::quota::Stored {
            owner: *owner,
            object: *object,
            at_ms: *at_ms,
            blobs: b,
        })
        .collect();
    crate::quota::over_quota(v.charter.quota, &stored)
}

/// Sends one request to `peer` and reads the answer; a peer that answers is alive, whatever
/// it says.
async fn ask(pools: &Pools, node: &Node, peer: EndpointId, req: &Request) -> Result<Reply, String> {
    let conn =
        tokio::time::timeout(Duration::from_secs(10), node.endpoint().connect(peer, POOL_ALPN))
            .await
            .map_err(|_| "connecting timed out".to_string())?
            .map_err(|e| kith_node::net::connect_error(&peer, &e))?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    frame::write_max(&mut send, req, MAX_FRAME).await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    let reply: Reply = frame::read_max(&mut recv, MAX_FRAME)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the peer closed the stream without answering")?;
    conn.close(0u32.into(), b"done");
    pools.saw(peer.as_bytes());
    Ok(reply)
}

/// Asks `holder` to hold `positions` of `object`, after making sure it has the document
/// that records the object.
async fn hold(
    pools: &Pools,
    node: &Node,
    pool: Key,
    object: Key,
    holder: Key,
    positions: Vec<u32>,
    bytes: u64,
) -> Result<u64, String> {
    let peer = EndpointId::from_bytes(&holder).map_err(|e| e.to_string())?;
    pools
        .sync_one(pool, peer, Proof::Member)
        .await
        .map_err(|e| format!("cannot sync the pool: {e}"))?;
    // Generous: the holder fetches at its own pace, and its fetch fails on a stall by itself.
    let limit = Duration::from_secs(600 + bytes / (1 << 20));
    let req = Request::Hold { pool, object, positions };
    match tokio::time::timeout(limit, ask(pools, node, peer, &req)).await {
        Err(_) => Err(format!("no answer within {} s", limit.as_secs())),
        Ok(Err(e)) => Err(e),
        Ok(Ok(Reply::Held { bytes, .. })) => Ok(bytes),
        Ok(Ok(Reply::Refused(why))) => Err(format!("refused: {why}")),
        Ok(Ok(other)) => Err(format!("unexpected answer {other:?}")),
    }
}

/// Asks `holder` which of `ids` it holds.
async fn has(
    pools: &Pools,
    node: &Node,
    pool: Key,
    holder: Key,
    ids: &[[u8; 32]],
) -> Result<Vec<bool>, String> {
    let peer = EndpointId::from_bytes(&holder).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(ids.len());
    // An empty question is still asked: the answer says the holder is up.
    let empty: [[u8; 32]; 0] = [];
    let batches: Vec<&[[u8; 32]]> =
        if ids.is_empty() { vec![&empty[..]] } else { ids.chunks(MAX_HAS).collect() };
    for batch in batches {
        let req = Request::Has { pool, ids: batch.iter().map(|i| (*i).into()).collect() };
        match ask(pools, node, peer, &req).await? {
            Reply::Has(bits) if bits.len() == batch.len() => out.extend(bits),
            Reply::Refused(why) => return Err(format!("refused: {why}")),
            other => return Err(format!("unexpected answer {other:?}")),
        }
    }
    Ok(out)
}

/// Serves `kith/pool/1`.
#[derive(Debug, Clone)]
pub struct PoolProtocol {
    rep: Arc<Replicator>,
}

impl PoolProtocol {
    /// The protocol for this replicator.
    pub fn new(rep: Arc<Replicator>) -> PoolProtocol {
        PoolProtocol { rep }
    }

    async fn serve(&self, conn: &Connection) -> Result<(), String> {
        let peer = conn.remote_id();
        let (mut send, mut recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
        let req: Request =
            tokio::time::timeout(Duration::from_secs(10), frame::read_max(&mut recv, MAX_FRAME))
                .await
                .map_err(|_| "no request within 10 s".to_string())?
                .map_err(|e| e.to_string())?
                .ok_or("no request")?;
        let reply = match self.rep.serving.clone().try_acquire_owned() {
            Ok(_permit) => self.rep.serve(peer, req).await,
            Err(_) => Reply::Refused("busy; try again shortly".into()),
        };
        if let Reply::Refused(why) = &reply {
            self.rep.pools.refused(peer.as_bytes(), "pool request refused", why);
        }
        frame::write_max(&mut send, &reply, MAX_FRAME).await.map_err(|e| e.to_string())?;
        let _ = send.finish();
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
        Ok(())
    }
}

impl ProtocolHandler for PoolProtocol {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let peer = conn.remote_id();
        if let Err(e) = self.serve(&conn).await {
            tracing::info!(peer = %peer.fmt_short(), error = %e, "pool request failed");
        }
        Ok(())
    }
}
