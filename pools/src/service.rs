//! The pools service: pool documents on disk, and their sync with the other members' nodes over
//! iroh (`kith/docs/1`).
//!
//! A session is one bidirectional stream: the dialling node sends a [`Hello`] naming the pool and
//! how it may read it (it is a member's node, it joins with an invite, or it is a new device of a
//! member); the answering node replies with an [`Ack`]; then the two take turns sending one
//! optional [`SyncFrame`] each until both have nothing to say. Every received change is checked
//! before it is applied; a peer whose changes are rejected is logged and the session ends.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iroh::endpoint::{Connection, RecvStream, SendStream};
use iroh::protocol::{AcceptError, ProtocolHandler};
use iroh::{Endpoint, EndpointId};
use kith_crdt::{Key, Signer, SyncFrame, SyncState, hex, verify};
use kith_node::net::frame;
use kith_node::net::ticket::NodeTicket;
use kith_node::worker::Workers;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::identity::{IdentityDoc, IdentityView};
use crate::invite::Invite;
use crate::ledger::{Ledgers, Period, live_periods, syncable};
use crate::pool::{Pool, PoolError, PoolSnapshot};
use crate::rules::PoolRules;
use crate::view::{Offer, State};

/// ALPN of document sync.
pub const DOCS_ALPN: &[u8] = b"kith/docs/1";
/// How often every pool is synced with every reachable member node, besides after changes.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(3);
/// Largest sync frame (a whole pool document must fit).
pub const MAX_DOC_FRAME: usize = 4 << 20;
/// Most turns in one session.
const MAX_TURNS: usize = 64;
/// Longest a session may take.
const SESSION_TIMEOUT: Duration = Duration::from_secs(20);
/// Rejections remembered for `kith pool show`.
const MAX_REJECTIONS: usize = 32;
/// Folder of pool documents in the home.
const POOLS_DIR: &str = "pools";
/// Prefix of pool tickets.
pub const POOL_TICKET_PREFIX: &str = "kithpool1";
/// Longest pool ticket accepted.
const MAX_POOL_TICKET: usize = 4096;
/// This identity's document in the home.
const IDENTITY_FILE: &str = "identity.kdoc";
/// Other members' identity documents kept here.
const CUSTODY_DIR: &str = "identities";

fn load_custody(dir: &Path) -> BTreeMap<Key, IdentityDoc> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let path = e.path();
        match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| IdentityDoc::load(&b).map_err(|e| e.to_string()))
        {
            Ok(d) => {
                out.insert(d.view().owner, d);
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read a member's identity document; left in place")
            }
        }
    }
    out
}

/// Domain separation for a new device's proof.
const DEVICE_CONTEXT: &[u8] = b"kith-device-v1";

/// How the dialling node may read the pool.
#[derive(Debug, Clone, minicbor::Encode, minicbor::Decode)]
pub enum Proof {
    /// It is listed as a node of an active member.
    #[n(0)]
    Member,
    /// It joins with this invite.
    #[n(1)]
    Invite(#[cbor(n(0), with = "minicbor::bytes")] Vec<u8>),
    /// It is a new device of this member, which signed its node id.
    #[n(2)]
    Device(
        #[cbor(n(0), with = "minicbor::bytes")] Key,
        #[cbor(n(1), with = "minicbor::bytes")] [u8; 64],
    ),
}

/// The first frame of a session.
#[derive(Debug, Clone, minicbor::Encode, minicbor::Decode)]
pub struct Hello {
    /// The pool.
    #[cbor(n(0), with = "minicbor::bytes")]
    pub pool: Key,
    /// Why the dialler may read it.
    #[n(1)]
    pub proof: Proof,
    /// Ledger periods (`YYYY-MM`, at most [`MAX_PERIODS`]) to sync after the pool document.
    #[n(2)]
    pub periods: Option<Vec<String>>,
}

/// Most ledger periods one session syncs.
pub const MAX_PERIODS: usize = 3;

/// The answer to a [`Hello`]: empty, or why not.
#[derive(Debug, Clone, minicbor::Encode, minicbor::Decode)]
pub struct Ack {
    /// Why the session is refused.
    #[n(0)]
    pub refused: Option<String>,
    /// The ledger periods of the hello that this side syncs, in the order they follow.
    #[n(1)]
    pub periods: Option<Vec<String>>,
}

/// One turn of a session.
#[derive(Debug, Clone, minicbor::Encode, minicbor::Decode)]
pub struct Turn {
    /// The sync message, if there is anything to say.
    #[n(0)]
    pub frame: Option<SyncFrame>,
}

/// A pool ticket: an invite and how to reach the node that issued it.
#[derive(Debug, Clone, minicbor::Encode, minicbor::Decode)]
struct TicketBody {
    #[cbor(n(0), with = "minicbor::bytes")]
    invite: Vec<u8>,
    #[n(1)]
    node: String,
}

/// Encodes a pool ticket.
pub fn encode_ticket(invite: &Invite, node: &NodeTicket) -> String {
    let body = TicketBody { invite: invite.to_bytes(), node: node.to_string() };
    let bytes = minicbor::to_vec(&body).expect("encoding to a Vec cannot fail");
    format!(
        "{POOL_TICKET_PREFIX}{}",
        data_encoding::BASE32_NOPAD.encode(&bytes).to_ascii_lowercase()
    )
}

/// Decodes a pool ticket.
pub fn decode_ticket(s: &str) -> Result<(Invite, NodeTicket), String> {
    let s = s.trim();
    if s.len() > MAX_POOL_TICKET {
        return Err(format!("the ticket is {} characters, more than {MAX_POOL_TICKET}", s.len()));
    }
    let body = s
        .strip_prefix(POOL_TICKET_PREFIX)
        .ok_or(format!("not a pool ticket (it should start with {POOL_TICKET_PREFIX})"))?;
    let damaged = |_| {
        "this ticket is damaged or incomplete: copy it again, whole (`kith pool invite` prints it)"
            .to_string()
    };
    let bytes =
        data_encoding::BASE32_NOPAD.decode(body.to_ascii_uppercase().as_bytes()).map_err(|e| {
            tracing::debug!(error = %e, "pool ticket: bad base32");
            damaged(())
        })?;
    let t: TicketBody = minicbor::decode(&bytes).map_err(|e| {
        tracing::debug!(error = %e, "pool ticket: bad CBOR");
        damaged(())
    })?;
    let invite = Invite::from_bytes(&t.invite).map_err(|_| damaged(()))?;
    let node: NodeTicket = t.node.parse().map_err(|_| damaged(()))?;
    Ok((invite, node))
}

fn device_message(pool: &Key, node: &Key) -> Vec<u8> {
    [DEVICE_CONTEXT, &pool[..], &node[..]].concat()
}

/// Every pool's typed view, shared.
pub type SharedViews = Arc<Vec<(Key, Arc<crate::view::PoolView>)>>;

/// A peer's change that was refused.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// The pool.
    pub pool: Key,
    /// The peer that sent it.
    pub peer: String,
    /// Why.
    pub reason: String,
    /// When (ms since the Unix epoch).
    pub at_ms: i64,
}

/// Pool documents held by this node, and their sync.
pub struct Pools {
    dir: PathBuf,
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
    /// This identity's document.
    identity: Mutex<Option<IdentityDoc>>,
    /// Copies of other members' identity documents, kept for them.
    custody: Mutex<BTreeMap<Key, IdentityDoc>>,
    /// The pools' ledgers.
    ledgers: Ledgers,
    /// Site requests this node answered, by pool, not yet recorded.
    site_requests: Mutex<HashMap<Key, u64>>,
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
}

impl std::fmt::Debug for Pools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pools").field("dir", &self.dir).finish_non_exhaustive()
    }
}

use crate::clock::now_ms;
use crate::fsutil::write_atomic;

impl Pools {
    /// Loads the pools under `home_root`; a damaged file is reported and skipped, not deleted.
    pub fn load(home_root: &Path, signer: Signer, node: Key) -> std::io::Result<Pools> {
        let dir = home_root.join(POOLS_DIR);
        std::fs::create_dir_all(&dir)?;
        let mut pools = BTreeMap::new();
        for e in std::fs::read_dir(&dir)? {
            let path = e?.path();
            if path.extension().and_then(|x| x.to_str()) != Some("kpool") {
                continue;
            }
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| Pool::load(&b).map_err(|e| e.to_string()))
            {
                Ok(p) => {
                    pools.insert(p.id(), p);
                }
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "cannot read a pool document; left in place")
                }
            }
        }
        Ok(Pools {
            dir,
            signer,
            node,
            pools: Mutex::new(pools),
            states: Mutex::new(HashMap::new()),
            rejections: Mutex::new(Vec::new()),
            changed: Notify::new(),
            endpoint: std::sync::OnceLock::new(),
            seen: Mutex::new(HashMap::new()),
            started_ms: now_ms(),
            in_flight: Mutex::new(std::collections::HashSet::new()),
            sync_sent: std::sync::atomic::AtomicU64::new(0),
            sync_received: std::sync::atomic::AtomicU64::new(0),
            identity: Mutex::new(None),
            custody: Mutex::new(load_custody(&home_root.join(CUSTODY_DIR))),
            ledgers: Ledgers::new(home_root),
            site_requests: Mutex::new(HashMap::new()),
            generation: std::sync::atomic::AtomicU64::new(0),
            views: Mutex::new(None),
            snapshots: Mutex::new(HashMap::new()),
            delivered: Mutex::new(std::collections::HashSet::new()),
            refusals: std::sync::OnceLock::new(),
        })
    }

    /// Gives the service the node's endpoint, for dialling.
    pub fn attach(&self, endpoint: Endpoint) {
        let _ = self.endpoint.set(endpoint);
    }

    /// Gives the service the node's count of refusals.
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

    /// Loads (or starts) this identity's document and lists this node and the identity's age
    /// recipient in it.
    pub fn init_identity(
        &self,
        identity_secret: &[u8; 32],
        device_name: &str,
        recipient: &str,
    ) -> Result<(), PoolError> {
        let path = self.identity_path();
        let doc = match std::fs::read(&path) {
            Ok(b) => IdentityDoc::load(&b)
                .map_err(|e| PoolError::Damaged(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                IdentityDoc::genesis(identity_secret)
                    .map_err(|e| PoolError::Damaged(e.to_string()))?
            }
            Err(e) => {
                return Err(PoolError::Policy(format!("cannot read {}: {e}", path.display())));
            }
        };
        if doc.view().owner != self.signer.author().key {
            return Err(PoolError::Damaged(format!(
                "{} belongs to another identity",
                path.display()
            )));
        }
        *self.identity.lock().unwrap_or_else(|p| p.into_inner()) = Some(doc);
        let node = self.node;
        self.with_identity(|d, s, now| {
            d.add_device(s, &node, device_name, now)?;
            d.add_recipient(s, recipient, now)?;
            Ok(())
        })
    }

    fn identity_path(&self) -> PathBuf {
        self.dir.parent().unwrap_or(&self.dir).join(IDENTITY_FILE)
    }

    /// Edits this identity's document and saves it.
    pub fn with_identity(
        &self,
        f: impl FnOnce(&mut IdentityDoc, &Signer, i64) -> Result<(), kith_crdt::DocError>,
    ) -> Result<(), PoolError> {
        let mut guard = self.identity.lock().unwrap_or_else(|p| p.into_inner());
        let Some(doc) = guard.as_mut() else { return Ok(()) };
        let heads = doc.heads();
        f(doc, &self.signer, now_ms()).map_err(|e| PoolError::Policy(e.to_string()))?;
        if doc.heads() == heads {
            return Ok(());
        }
        // Views depend on the identity too (a retired device has no pools).
        self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let bytes = doc.save();
        write_atomic(&self.identity_path(), &bytes)
            .map_err(|e| PoolError::Policy(format!("cannot save the identity document: {e}")))
    }

    /// This identity's document, typed.
    pub fn identity(&self) -> Option<IdentityView> {
        self.identity.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|d| d.view())
    }

    /// When another device of this identity retired this one, if it did: a retired device takes
    /// no part in pools any more (its store stays readable here).
    pub fn retired_at(&self) -> Option<i64> {
        let guard = self.identity.lock().unwrap_or_else(|p| p.into_inner());
        guard.as_ref()?.view().devices.get(&self.node)?.revoked_ms
    }

    /// The heads of this identity's document (cheap: no serialising).
    pub fn identity_heads(&self) -> Vec<[u8; 32]> {
        self.identity
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
            .map(|d| d.heads())
            .unwrap_or_default()
    }

    /// The identity documents this node keeps for other members, typed.
    pub fn custody_views(&self) -> Vec<IdentityView> {
        self.custody.lock().unwrap_or_else(|p| p.into_inner()).values().map(|d| d.view()).collect()
    }

    /// When `node` last answered this one (ms since the epoch), since this node started.
    pub fn last_seen_ms(&self, node: &Key) -> Option<i64> {
        if *node == self.node {
            return Some(now_ms());
        }
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).get(node).copied()
    }

    /// The saved bytes of `owner`'s identity document, if this node has it.
    pub fn identity_bytes(&self, owner: &Key) -> Option<Vec<u8>> {
        if *owner == self.signer.author().key {
            return self
                .identity
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_mut()
                .map(|d| d.save());
        }
        self.custody.lock().unwrap_or_else(|p| p.into_inner()).get_mut(owner).map(|d| d.save())
    }

    /// Merges a copy of `owner`'s identity document into this node's (its own, or the one it
    /// keeps for a member); returns how many changes were new.
    pub fn merge_identity(&self, owner: &Key, bytes: &[u8]) -> Result<usize, String> {
        if bytes.is_empty() {
            return Ok(0);
        }
        if *owner == self.signer.author().key {
            let mut n = 0;
            self.with_identity(|d, _, _| {
                n = d.merge(bytes)?;
                Ok(())
            })
            .map_err(|e| e.to_string())?;
            return Ok(n);
        }
        // Custody is for the members of this node's pools, nobody else: a stranger cannot
        // fill this node's disk or memory with documents of identities it makes up.
        if self.pools_of(owner).is_empty() {
            return Err("that identity is not a member of any pool of this node".into());
        }
        let mut custody = self.custody.lock().unwrap_or_else(|p| p.into_inner());
        let n = match custody.get_mut(owner) {
            Some(d) => d.merge(bytes).map_err(|e| e.to_string())?,
            None => {
                let d = IdentityDoc::load(bytes).map_err(|e| e.to_string())?;
                if d.view().owner != *owner {
                    return Err("that is another identity's document".into());
                }
                custody.insert(*owner, d);
                1
            }
        };
        if n > 0 {
            let dir = self.dir.parent().unwrap_or(&self.dir).join(CUSTODY_DIR);
            let d = custody.get_mut(owner).expect("just there");
            std::fs::create_dir_all(&dir)
                .and_then(|()| write_atomic(&dir.join(format!("{}.kdoc", hex(owner))), &d.save()))
                .map_err(|e| format!("cannot keep a member's identity document: {e}"))?;
        }
        Ok(n)
    }

    /// Whether `node` may exchange `owner`'s identity document with this node: it shares a pool
    /// with `owner` here (as a node of an active member, with `owner` active too).
    pub fn shares_pool_with(&self, node: &Key, owner: &Key) -> bool {
        self.lock().values().any(|p| {
            let v = p.view();
            v.node_owner(node).is_some() && v.active(owner).is_some()
        })
    }

    /// Bytes of sync turns sent and received since start (all pools; frame headers excluded).
    pub fn sync_bytes(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.sync_sent.load(Relaxed), self.sync_received.load(Relaxed))
    }

    /// Notes that `node` just answered this one (a sync session's greeting, a request): it is
    /// alive, whatever the outcome of what followed. Only nodes listed in a pool here are
    /// remembered, so strangers cannot grow the table.
    pub fn saw(&self, node: &Key) {
        let listed = self
            .all_views()
            .iter()
            .any(|(_, v)| v.members.values().any(|m| m.nodes.contains_key(node)));
        if !listed {
            return;
        }
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).insert(*node, now_ms());
    }

    /// How long `node` has gone without a session with this one (ms), counting from this
    /// service's start for a node not seen since.
    pub fn silent_for_ms(&self, node: &Key) -> i64 {
        if *node == self.node {
            return 0;
        }
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner()).get(node).copied();
        now_ms() - seen.unwrap_or(self.started_ms)
    }

    /// Whether `node` was heard from within `within_ms` (this node always is).
    pub fn is_up(&self, node: &Key, within_ms: i64) -> bool {
        if *node == self.node {
            return true;
        }
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner()).get(node).copied();
        seen.is_some_and(|t| now_ms() - t <= within_ms)
    }

    /// The other nodes of `v`'s active members, most recently heard from first (whom to ask
    /// for a pool's blobs).
    pub fn nodes_by_recency(&self, v: &crate::view::PoolView) -> Vec<EndpointId> {
        let mut nodes: Vec<(i64, Key)> = v
            .holders()
            .into_iter()
            .filter(|h| h.node != self.node)
            .map(|h| (self.silent_for_ms(&h.node), h.node))
            .collect();
        nodes.sort();
        nodes.dedup_by_key(|(_, n)| *n);
        nodes.into_iter().filter_map(|(_, n)| EndpointId::from_bytes(&n).ok()).collect()
    }

    /// The pool with this id as it is now, with its history (for the ledgers' rules); kept
    /// until the pool document changes.
    pub fn snapshot(&self, pool: &Key) -> Option<Arc<PoolSnapshot>> {
        let g = self.generation.load(std::sync::atomic::Ordering::Acquire);
        let mut cache = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, s)) = cache.get(pool)
            && *at == g
        {
            return Some(s.clone());
        }
        let (g, snap) = {
            let mut pools = self.lock();
            let g = self.generation.load(std::sync::atomic::Ordering::Acquire);
            (g, Arc::new(pools.get_mut(pool)?.snapshot()))
        };
        cache.insert(*pool, (g, snap.clone()));
        Some(snap)
    }

    /// The pool with this id, as it is now.
    pub fn view_of(&self, pool: &Key) -> Option<crate::view::PoolView> {
        self.lock().get(pool).map(|p| p.view())
    }

    /// The id of the pool `spec` names.
    pub fn resolve(&self, spec: &str) -> Result<Key, PoolError> {
        self.find(spec)
    }

    /// The pools an identity is an active member of.
    pub fn pools_of(&self, identity: &Key) -> Vec<Key> {
        self.lock()
            .iter()
            .filter(|(_, p)| p.view().active(identity).is_some())
            .map(|(k, _)| *k)
            .collect()
    }

    /// Whether this node holds pool `id`.
    pub fn has_pool(&self, id: &Key) -> bool {
        self.lock().contains_key(id)
    }

    /// Bumped whenever a pool document or this identity's document changes (for caches).
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether `node` is a device of this identity that is not retired.
    pub fn is_own_device(&self, node: &Key) -> bool {
        self.identity()
            .and_then(|v| v.devices.get(node).map(|d| d.revoked_ms.is_none()))
            .unwrap_or(false)
    }

    /// Whether this identity retired `node`.
    pub fn is_retired_device(&self, node: &Key) -> bool {
        self.identity()
            .and_then(|v| v.devices.get(node).map(|d| d.revoked_ms.is_some()))
            .unwrap_or(false)
    }

    /// The folder of pool documents.
    pub fn dir(&self) -> &Path {
        &self.dir
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
        let path = self.dir.join(format!("{}.kpool", hex(&pool.id())));
        write_atomic(&path, &pool.save())
            .map_err(|e| PoolError::Policy(format!("cannot write {}: {e}", path.display())))
    }

    /// Runs `f` on a pool by name or id prefix, saves it if it changed, and wakes the sync.
    pub fn with_pool<T>(
        &self,
        spec: &str,
        f: impl FnOnce(&mut Pool) -> Result<T, PoolError>,
    ) -> Result<T, PoolError> {
        let id = self.find(spec)?;
        let mut pools = self.lock();
        let pool =
            pools.get_mut(&id).ok_or_else(|| PoolError::Policy("the pool is gone".into()))?;
        let heads = pool.doc_mut().heads();
        let out = f(pool)?;
        if pool.doc_mut().heads() != heads {
            self.save(pool)?;
            self.changed.notify_one();
        }
        Ok(out)
    }

    /// Adds a pool this node created or received.
    pub fn insert(&self, mut pool: Pool) -> Result<Key, PoolError> {
        self.save(&mut pool)?;
        let id = pool.id();
        self.lock().insert(id, pool);
        self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.changed.notify_one();
        Ok(id)
    }

    /// Founds a pool; this node is listed with an empty offer.
    pub fn create(&self, display: &str, charter: crate::view::Charter) -> Result<Key, PoolError> {
        if self.list().iter().any(|(_, v)| v.charter.name == charter.name) {
            return Err(PoolError::Policy(format!(
                "a pool named `{}` already exists here",
                charter.name
            )));
        }
        let now = now_ms();
        let mut pool = Pool::create(&self.signer, display, charter, now)?;
        pool.offer(&self.signer, &self.node, &Offer::default(), now)?;
        self.insert(pool)
    }

    /// The pools this identity is an active member of (a pool it left, was removed from, or
    /// that was dissolved is kept on disk but is no longer its: see [`Pools::former`]).
    pub fn list(&self) -> Vec<(Key, crate::view::PoolView)> {
        self.views().iter().map(|(k, v)| (*k, (**v).clone())).collect()
    }

    /// The pools this identity was in and is no longer, or that were dissolved (kept so that
    /// the change that ended the membership reaches the others).
    pub fn former(&self) -> Vec<(Key, crate::view::PoolView)> {
        let me = self.signer.author().key;
        self.all_views()
            .iter()
            .filter(|(_, v)| v.active(&me).is_none() || v.charter.dissolved_ms.is_some())
            .map(|(k, v)| (*k, (**v).clone()))
            .collect()
    }

    /// The pools whose blobs this node keeps: its own, and dissolved ones whose members have
    /// not all taken their objects home yet.
    pub fn holding(&self) -> Vec<(Key, crate::view::PoolView)> {
        let me = self.signer.author().key;
        self.all_views()
            .iter()
            .filter(|(_, v)| {
                let settling = v.charter.dissolved_ms.is_some()
                    && v.members.values().any(|m| m.state == State::Active);
                (v.active(&me).is_some() && v.charter.dissolved_ms.is_none()) || settling
            })
            .map(|(k, v)| (*k, (**v).clone()))
            .collect()
    }

    /// The views of the pools this identity is an active member of, shared and read again only
    /// after a document changed (for hot paths such as the HTTP gateway, where reading every
    /// document per request would dominate).
    pub fn views(&self) -> SharedViews {
        self.cached_views().1
    }

    /// Every pool's view, former ones included.
    fn all_views(&self) -> SharedViews {
        self.cached_views().0
    }

    fn cached_views(&self) -> (SharedViews, SharedViews) {
        let g = self.generation.load(std::sync::atomic::Ordering::Acquire);
        if let Some((at, all, mine)) = self.views.lock().unwrap_or_else(|p| p.into_inner()).as_ref()
            && *at == g
        {
            return (all.clone(), mine.clone());
        }
        // Read under the pools' lock, so the generation read with it is the views' own.
        let (g, all) = {
            let pools = self.lock();
            let g = self.generation.load(std::sync::atomic::Ordering::Acquire);
            (g, pools.iter().map(|(k, p)| (*k, Arc::new(p.view()))).collect::<Vec<_>>())
        };
        let me = self.signer.author().key;
        let retired = self.retired_at().is_some();
        let mine: Vec<_> = all
            .iter()
            .filter(|(_, v)| {
                !retired && v.active(&me).is_some() && v.charter.dissolved_ms.is_none()
            })
            .cloned()
            .collect();
        let (all, mine) = (Arc::new(all), Arc::new(mine));
        *self.views.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((g, all.clone(), mine.clone()));
        (all, mine)
    }

    /// Rejected changes, newest last.
    pub fn rejections(&self) -> Vec<Rejection> {
        self.rejections.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn reject(&self, pool: Key, peer: EndpointId, reason: String) {
        self.refused(peer.as_bytes(), "changes the rules refuse", &reason);
        let mut r = self.rejections.lock().unwrap_or_else(|p| p.into_inner());
        if r.len() == MAX_REJECTIONS {
            r.remove(0);
        }
        r.push(Rejection { pool, peer: peer.to_string(), reason, at_ms: now_ms() });
    }

    /// Joins a pool with a ticket: fetches the document from the issuing node, adds this
    /// member (and this node), and sends the change back.
    pub async fn join(&self, ticket: &str, display: &str) -> Result<Key, PoolError> {
        let (invite, node) = decode_ticket(ticket).map_err(PoolError::Policy)?;
        let peer = node.id;
        if self
            .lock()
            .get(&invite.pool)
            .is_some_and(|p| p.view().active(&self.signer.author().key).is_some())
        {
            return Err(PoolError::Policy("you are already a member of this pool".into()));
        }
        let proof = Proof::Invite(invite.to_bytes());
        let endpoint = self.endpoint()?;
        let addr = iroh::EndpointAddr::from_parts(
            peer,
            node.addrs.iter().map(|a| iroh::TransportAddr::Ip(*a)),
        );
        let doc = fetch_doc(&endpoint, addr, invite.pool, proof.clone()).await?;
        let mut pool = Pool::from_doc(doc)?;
        let now = now_ms();
        pool.join(&self.signer, display, &invite, now)?;
        pool.offer(&self.signer, &self.node, &Offer::default(), now)?;
        let id = self.insert(pool)?;
        self.sync_one(id, peer, proof).await.map_err(PoolError::Policy)?;
        Ok(id)
    }

    pub(crate) fn endpoint(&self) -> Result<Endpoint, PoolError> {
        self.endpoint.get().cloned().ok_or(PoolError::Policy("the node is not running".into()))
    }

    /// Syncs every pool with every member node until `cancel`, as the worker `sync` of
    /// `workers`: a round every [`SYNC_INTERVAL`] and right after any change.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken, workers: Arc<Workers>) {
        let w = workers.register("sync");
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = self.changed.notified() => {}
                _ = tokio::time::sleep(SYNC_INTERVAL) => {}
            }
            let t = std::time::Instant::now();
            w.begin();
            self.sync_all().await;
            w.end(t.elapsed(), Ok(()));
        }
        w.stop();
    }

    /// One round: every pool with every other node listed in it, former members included.
    /// Sessions run on their own; a target whose last session is still running (a node that
    /// is gone takes a while to time out) is skipped, so slow peers never delay the others.
    pub async fn sync_all(self: &Arc<Self>) {
        if self.retired_at().is_some() {
            return;
        }
        let me = self.signer.author().key;
        let delivered = self.delivered.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let targets: Vec<(Key, Key)> = self
            .all_views()
            .iter()
            // A pool this identity left is synced until one session has taken the departure
            // to another node, which passes it on.
            .filter(|(id, v)| v.active(&me).is_some() || !delivered.contains(id))
            .flat_map(|(id, v)| {
                let nodes: Vec<Key> = v
                    .members
                    .values()
                    // Former members too: the change that ended their membership must reach
                    // them (what they send back is judged by the rules like anything else).
                    .flat_map(|m| m.nodes.keys().copied())
                    .filter(|n| *n != self.node)
                    .collect();
                nodes.into_iter().map(move |n| (*id, n))
            })
            .collect();
        for (pool, node) in targets {
            let Ok(peer) = EndpointId::from_bytes(&node) else { continue };
            if !self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).insert((pool, node)) {
                continue;
            }
            let this = self.clone();
            tokio::spawn(async move {
                match this.sync_one(pool, peer, Proof::Member).await {
                    Ok(_) => {
                        let me = this.signer.author().key;
                        if this.view_of(&pool).is_some_and(|v| v.active(&me).is_none()) {
                            this.delivered.lock().unwrap_or_else(|p| p.into_inner()).insert(pool);
                        }
                    }
                    Err(e) => {
                        tracing::debug!(pool = %hex(&pool[..4]), peer = %peer.fmt_short(), error = %e, "pool sync failed")
                    }
                }
                this.in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&(pool, node));
            });
        }
    }

    /// One session with `peer` as the dialler.
    pub async fn sync_one(
        &self,
        pool: Key,
        peer: EndpointId,
        proof: Proof,
    ) -> Result<usize, String> {
        let endpoint = self.endpoint().map_err(|e| e.to_string())?;
        let periods = matches!(proof, Proof::Member)
            .then(|| live_periods(now_ms()).iter().map(Period::to_string).collect());
        let run = async {
            let (conn, mut send, mut recv, periods) =
                open_session(&endpoint, peer.into(), pool, proof, periods).await?;
            // It answered: it is alive, even if what it sends next is refused.
            self.saw(peer.as_bytes());
            let mut n = self.turns(pool, Doc::Pool, peer, &mut send, &mut recv, true).await?;
            for p in periods {
                n += self.turns(pool, Doc::Ledger(p), peer, &mut send, &mut recv, true).await?;
            }
            let _ = send.finish();
            conn.close(0u32.into(), b"done");
            self.saw(peer.as_bytes());
            Ok(n)
        };
        tokio::time::timeout(SESSION_TIMEOUT, run)
            .await
            .map_err(|_| "the session timed out".to_string())?
    }

    /// Takes turns until both sides are done; returns how many changes arrived. The dialler
    /// speaks first in each round; a round where neither side had anything ends the session.
    async fn turns(
        &self,
        pool: Key,
        doc: Doc,
        peer: EndpointId,
        send: &mut SendStream,
        recv: &mut RecvStream,
        dialler: bool,
    ) -> Result<usize, String> {
        let key = (doc.state_key(&pool), *peer.as_bytes());
        // Only the lasting part of a state survives a session (an interrupted one may have left
        // a message marked in flight).
        let mut state = {
            let states = self.states.lock().unwrap_or_else(|p| p.into_inner());
            states.get(&key).and_then(|s| SyncState::decode(&s.encode()).ok()).unwrap_or_default()
        };
        let mut got = 0;
        for _ in 0..MAX_TURNS {
            let (mine, theirs) = if dialler {
                let mine = self.speak(pool, doc, &mut state, send).await?;
                (mine, self.listen(pool, doc, peer, &mut state, recv, &mut got).await?)
            } else {
                let theirs = self.listen(pool, doc, peer, &mut state, recv, &mut got).await?;
                (self.speak(pool, doc, &mut state, send).await?, theirs)
            };
            if !mine && !theirs {
                self.states.lock().unwrap_or_else(|p| p.into_inner()).insert(key, state);
                return Ok(got);
            }
        }
        Err(format!("the session did not settle within {MAX_TURNS} turns"))
    }

    /// Sends this side's turn; whether it said anything.
    async fn speak(
        &self,
        pool: Key,
        doc: Doc,
        state: &mut SyncState,
        send: &mut SendStream,
    ) -> Result<bool, String> {
        let out = match doc {
            Doc::Pool => {
                self.lock().get_mut(&pool).ok_or("the pool is gone")?.doc_mut().sync_out(state)
            }
            Doc::Ledger(period) => {
                let snap = self.snapshot(&pool).ok_or("the pool is gone")?;
                self.ledgers.sync_out(&snap, period, state)?
            }
        };
        let said = out.is_some();
        let turn = Turn { frame: out };
        let bytes = minicbor::to_vec(&turn).map(|v| v.len() as u64).unwrap_or(0);
        frame::write_max(send, &turn, MAX_DOC_FRAME).await.map_err(|e| e.to_string())?;
        self.sync_sent.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        Ok(said)
    }

    /// Receives and applies the peer's turn; whether it said anything.
    async fn listen(
        &self,
        pool: Key,
        doc: Doc,
        peer: EndpointId,
        state: &mut SyncState,
        recv: &mut RecvStream,
        got: &mut usize,
    ) -> Result<bool, String> {
        let turn: Turn = frame::read_max(recv, MAX_DOC_FRAME)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the peer ended the session")?;
        let bytes = minicbor::to_vec(&turn).map(|v| v.len() as u64).unwrap_or(0);
        self.sync_received.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        let Some(f) = turn.frame else { return Ok(false) };
        if let Doc::Ledger(period) = doc {
            let snap = self.snapshot(&pool).ok_or("the pool is gone")?;
            match self.ledgers.sync_in(&snap, period, state, &f) {
                Ok(n) => *got += n,
                Err(e) => {
                    let e = format!("ledger {period}: {e}");
                    self.reject(pool, peer, e.clone());
                    return Err(format!("rejected the peer's changes: {e}"));
                }
            }
            return Ok(true);
        }
        let result = {
            let mut pools = self.lock();
            let p = pools.get_mut(&pool).ok_or("the pool is gone")?;
            match p.doc_mut().sync_in(state, &f, &PoolRules) {
                Ok(new) if !new.is_empty() => {
                    *got += new.len();
                    self.save(p).map_err(|e| e.to_string())?;
                    self.changed.notify_one();
                    Ok(())
                }
                Ok(_) => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        };
        if let Err(e) = result {
            self.reject(pool, peer, e.clone());
            return Err(format!("rejected the peer's changes: {e}"));
        }
        Ok(true)
    }

    /// Whether `peer` may read `pool` with `proof`.
    fn admit(&self, hello: &Hello, peer: EndpointId) -> Result<(), String> {
        let pools = self.lock();
        let pool = pools.get(&hello.pool).ok_or_else(|| {
            format!(
                "this node holds no pool {} (it may have been deleted, or this node left it)",
                hex(&hello.pool[..8])
            )
        })?;
        let v = pool.view();
        let node = *peer.as_bytes();
        // A member who left still syncs the pool document, to pass its departure on.
        let departed =
            v.members.values().any(|m| m.state == State::Left && m.nodes.contains_key(&node));
        match &hello.proof {
            Proof::Member if v.node_owner(&node).is_some() || departed => Ok(()),
            Proof::Member => {
                Err("your node is not listed under an active member of this pool".into())
            }
            Proof::Invite(bytes) => {
                let inv = Invite::from_bytes(bytes).map_err(|e| e.to_string())?;
                if v.node_owner(&node).is_some() {
                    return Ok(());
                }
                pool.check_invite(&inv, now_ms()).map_err(|e| e.to_string())
            }
            Proof::Device(member, sig) => {
                if v.active(member).is_none() {
                    return Err("that identity is not an active member of this pool".into());
                }
                if !verify(member, &device_message(&hello.pool, &node), sig) {
                    return Err("the device proof does not verify".into());
                }
                Ok(())
            }
        }
    }

    /// The ledger periods of `hello` this node syncs with `peer`: those a node of an active
    /// member asks for that have begun and are at most a year old, at most [`MAX_PERIODS`].
    fn ledger_periods(&self, hello: &Hello, peer: EndpointId) -> Vec<Period> {
        let member =
            self.view_of(&hello.pool).is_some_and(|v| v.node_owner(peer.as_bytes()).is_some());
        let now = now_ms();
        let mut out: Vec<Period> = Vec::new();
        for p in hello.periods.iter().flatten().take(MAX_PERIODS) {
            if let Ok(p) = Period::parse(p)
                && member
                && syncable(p, now)
                && !out.contains(&p)
            {
                out.push(p);
            }
        }
        out
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

    /// Takes the count of site requests answered for `pool` since the last take.
    pub fn take_site_requests(&self, pool: &Key) -> u64 {
        self.site_requests.lock().unwrap_or_else(|p| p.into_inner()).remove(pool).unwrap_or(0)
    }

    /// Starts a sync round soon (after a change outside the pool documents, such as a ledger's).
    pub fn wake(&self) {
        self.changed.notify_one();
    }

    /// A proof that this node is a device of this identity, for a pool.
    pub fn device_proof(&self, pool: &Key) -> Proof {
        Proof::Device(self.signer.author().key, self.signer.sign(&device_message(pool, &self.node)))
    }
}

/// Which document a part of a session syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Doc {
    /// The pool document.
    Pool,
    /// The pool's ledger of a period.
    Ledger(Period),
}

impl Doc {
    /// The key its sync states are kept under.
    fn state_key(self, pool: &Key) -> Key {
        match self {
            Doc::Pool => *pool,
            Doc::Ledger(p) => blake3::derive_key(
                "kith ledger sync state v1",
                &[&pool[..], p.to_string().as_bytes()].concat(),
            ),
        }
    }
}

/// Dials `addr`, says hello and reads the answer: an open session with the ledger periods the
/// peer syncs after the pool document, or why the peer refused.
async fn open_session(
    endpoint: &Endpoint,
    addr: iroh::EndpointAddr,
    pool: Key,
    proof: Proof,
    periods: Option<Vec<String>>,
) -> Result<(Connection, SendStream, RecvStream, Vec<Period>), String> {
    let peer = addr.id;
    let conn = endpoint
        .connect(addr, DOCS_ALPN)
        .await
        .map_err(|e| kith_node::net::connect_error(&peer, &e))?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let asked = periods.clone().unwrap_or_default();
    frame::write(&mut send, &Hello { pool, proof, periods }).await.map_err(|e| e.to_string())?;
    let ack: Ack = frame::read(&mut recv)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the peer closed the session")?;
    if let Some(why) = ack.refused {
        return Err(format!("the peer refused: {why}"));
    }
    // The peer may sync fewer periods than asked, never others.
    let mut periods = Vec::new();
    for p in ack.periods.unwrap_or_default() {
        if !asked.contains(&p) || periods.len() == MAX_PERIODS {
            return Err(format!("the peer answered with ledger period `{p}`, not one asked for"));
        }
        periods.push(Period::parse(&p)?);
    }
    Ok((conn, send, recv, periods))
}

/// Fetches a pool document from `peer` (a node that holds it) with `proof`.
pub(crate) async fn fetch_doc(
    endpoint: &Endpoint,
    addr: iroh::EndpointAddr,
    pool: Key,
    proof: Proof,
) -> Result<kith_crdt::SignedDoc, PoolError> {
    let fail =
        |e: String| PoolError::Policy(format!("cannot fetch the pool from the inviting node: {e}"));
    let run = async {
        let (conn, mut send, mut recv, _) = open_session(endpoint, addr, pool, proof, None).await?;
        // An empty document with the pool's id takes the whole history through plain sync.
        let mut doc = kith_crdt::SignedDoc::empty(pool);
        let mut state = SyncState::new();
        for _ in 0..MAX_TURNS {
            let out = doc.sync_out(&mut state);
            let mine = out.is_some();
            frame::write_max(&mut send, &Turn { frame: out }, MAX_DOC_FRAME)
                .await
                .map_err(|e| e.to_string())?;
            let turn: Turn = frame::read_max(&mut recv, MAX_DOC_FRAME)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("the peer ended the session")?;
            let theirs = turn.frame.is_some();
            if let Some(f) = turn.frame {
                doc.sync_in(&mut state, &f, &PoolRules).map_err(|e| e.to_string())?;
            }
            if !mine && !theirs {
                let _ = send.finish();
                conn.close(0u32.into(), b"done");
                return Ok(doc);
            }
        }
        Err(format!("the session did not settle within {MAX_TURNS} turns"))
    };
    tokio::time::timeout(SESSION_TIMEOUT, run)
        .await
        .map_err(|_| fail("timed out".into()))?
        .map_err(fail)
}

/// Serves `kith/docs/1`.
#[derive(Debug, Clone)]
pub struct DocsProtocol {
    pools: Arc<Pools>,
}

impl DocsProtocol {
    /// The protocol for these pools.
    pub fn new(pools: Arc<Pools>) -> DocsProtocol {
        DocsProtocol { pools }
    }

    async fn serve(&self, conn: &Connection) -> Result<usize, String> {
        let peer = conn.remote_id();
        let (mut send, mut recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
        let hello: Hello =
            frame::read(&mut recv).await.map_err(|e| e.to_string())?.ok_or("no hello")?;
        if let Err(why) = self.pools.admit(&hello, peer) {
            self.pools.refused(peer.as_bytes(), "sync session refused", &why);
            frame::write(&mut send, &Ack { refused: Some(why.clone()), periods: None })
                .await
                .map_err(|e| e.to_string())?;
            let _ = send.finish();
            // Dropping the connection now could lose the answer; the dialler closes it.
            let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
            return Err(why);
        }
        self.pools.saw(peer.as_bytes());
        let periods = self.pools.ledger_periods(&hello, peer);
        let ack =
            Ack { refused: None, periods: Some(periods.iter().map(Period::to_string).collect()) };
        frame::write(&mut send, &ack).await.map_err(|e| e.to_string())?;
        let pool = hello.pool;
        let mut n = self.pools.turns(pool, Doc::Pool, peer, &mut send, &mut recv, false).await?;
        for p in periods {
            n += self.pools.turns(pool, Doc::Ledger(p), peer, &mut send, &mut recv, false).await?;
        }
        self.pools.saw(peer.as_bytes());
        let _ = send.finish();
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
        Ok(n)
    }
}

impl ProtocolHandler for DocsProtocol {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let peer = conn.remote_id();
        match tokio::time::timeout(SESSION_TIMEOUT, self.serve(&conn)).await {
            Ok(Ok(n)) if n > 0 => {
                tracing::debug!(peer = %peer.fmt_short(), changes = n, "pool sync")
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::debug!(peer = %peer.fmt_short(), error = %e, "pool sync session failed")
            }
            Err(_) => tracing::info!(peer = %peer.fmt_short(), "pool sync session timed out"),
        }
        Ok(())
    }
}

/// How far a misspelled pool name may be from a real one to be suggested.
const SUGGEST_DISTANCE: usize = 2;

impl Pools {
    /// A pool by exact name or by id prefix (at least 4 hex digits); an empty `spec` is the only
    /// pool this identity is in. This identity's pools are searched first, then former ones.
    fn find(&self, spec: &str) -> Result<Key, PoolError> {
        let mine = self.views();
        let spec = spec.trim();
        if spec.is_empty() {
            return match mine.as_slice() {
                [(k, _)] => Ok(*k),
                [] => Err(PoolError::Policy(
                    "you are in no pool (create one with `kith pool create NAME`, or join with a ticket)".into(),
                )),
                _ => Err(PoolError::Policy(format!(
                    "you are in several pools ({}); name one",
                    mine.iter().map(|(_, v)| v.charter.name.as_str()).collect::<Vec<_>>().join(", ")
                ))),
            };
        }
        let all = self.all_views();
        for set in [&*mine, &*all] {
            let by_name: Vec<Key> =
                set.iter().filter(|(_, v)| v.charter.name == spec).map(|(k, _)| *k).collect();
            match by_name.as_slice() {
                [k] => return Ok(*k),
                [] => {}
                _ => {
                    return Err(PoolError::Policy(format!(
                        "`{spec}` names several pools; use the pool id from `kith pool ls`"
                    )));
                }
            }
        }
        let lower = spec.to_ascii_lowercase();
        let by_id: Vec<Key> = all
            .iter()
            .filter(|(k, _)| spec.len() >= 4 && hex(&k[..]).starts_with(&lower))
            .map(|(k, _)| *k)
            .collect();
        match by_id.as_slice() {
            [k] => Ok(*k),
            [] => {
                let close = mine
                    .iter()
                    .map(|(_, v)| v.charter.name.as_str())
                    .filter(|n| distance(n, spec) <= SUGGEST_DISTANCE)
                    .min_by_key(|n| distance(n, spec));
                Err(PoolError::Policy(match close {
                    Some(n) => format!("no pool `{spec}` here; did you mean {n}?"),
                    None => format!("no pool `{spec}` here (see `kith pool ls`)"),
                }))
            }
            _ => Err(PoolError::Policy(format!(
                "`{spec}` matches several pool ids; give more of it (see `kith pool ls`)"
            ))),
        }
    }
}

/// Edit distance between two short names (Levenshtein, by characters).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}
