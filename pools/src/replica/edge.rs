//! CDN edges (docs/federation.md "CDN edges"): a pool that lends another CDN (`--cdn` in the
//! agreement) serves the other pool's public sites from those of its nodes that opted in
//! (`kith up --cdn`), at `NAME.local` on its own LAN.
//!
//! - **The origin** (a node of pool A): answers `Sites` with A's public sites as served now
//!   (name, version, index id and key, manifest id), the answer signed by its identity, which
//!   A's roster names. Its gate lets the edge's nodes fetch those sites' blobs and no others.
//! - **The edge** (a node of B run with `--cdn`): asks A's nodes when A's node it asked last
//!   tells it A's sites changed (`SitesChanged`, sent by that node within a second of seeing
//!   the change), every [`EDGE_POLL`] regardless, and every [`EDGE_RETRY`] while A does not
//!   answer (so a healed link brings the new versions within seconds); checks
//!   the answer (A's roster against the agreement in B's own document, the signature over the
//!   answering node, a signed time newer than the last answer taken); fetches each new
//!   version's manifest and blobs into its store (each verified by its id, and the manifest
//!   against the version's index id), and only then serves it. Until a version is whole, the
//!   last one is served; while the link is down, the last whole versions stay served, also
//!   after a restart: what is served is recorded in `<pools>/offsite/<agreement>.edge`, and
//!   `gc` keeps its blobs. A site A takes down leaves the edge at the next answer.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iroh::EndpointId;
use kith_crdt::{Key, hex, verify_device};
use kith_federation::{Agreement, Roster};
use kith_node::ChunkId;
use kith_node::net::Node;
use minicbor::bytes::ByteArray;

use super::protocol::node_message;
use super::{Replicator, lock};
use crate::fed::{Asking, FedReply, FedRequest, ask_fed};
use crate::view::{Access, PoolView};

/// How often the edge worker looks (edges whose origin told them of a change ask then;
/// origins look for changes to tell).
pub const EDGE_EVERY: Duration = Duration::from_secs(1);
/// How often an edge asks a partner that answers, with no word of a change.
pub const EDGE_POLL: Duration = Duration::from_secs(60);
/// How often an edge asks a partner that did not answer last time.
pub const EDGE_RETRY: Duration = Duration::from_secs(5);
/// How long an origin tells an edge of changes after it last asked.
const ASKERS_FOR: Duration = Duration::from_secs(600);
/// Edges an origin node tells, per agreement, at most.
const MAX_ASKERS: usize = 64;
/// Stored bytes of one partner's sites an edge keeps (every version it serves).
pub const MAX_EDGE_BYTES: u64 = 4 << 30;
/// Sites in one answer.
const MAX_SITES: usize = 256;
/// Domain separation of an origin's signature over its sites.
const SITES_CONTEXT: &[u8] = b"kith-sites-v1";
/// Time for an origin to answer.
const ASK_LIMIT: Duration = Duration::from_secs(10);

/// One public site as its pool serves it.
#[derive(Debug, Clone, PartialEq, Eq, minicbor::Encode, minicbor::Decode)]
pub struct SiteHead {
    /// Its name.
    #[n(0)]
    pub name: String,
    /// The version served.
    #[n(1)]
    pub number: u64,
    /// The version's index blob (and pool object) id.
    #[cbor(n(2), with = "minicbor::bytes")]
    pub index: Key,
    /// The index's key.
    #[cbor(n(3), with = "minicbor::bytes")]
    pub key: Key,
    /// The index's plaintext length.
    #[n(4)]
    pub len: u64,
    /// Files.
    #[n(5)]
    pub files: u64,
    /// Bytes of content.
    #[n(6)]
    pub bytes: u64,
    /// When the version was published (ms since the epoch).
    #[n(7)]
    pub at_ms: i64,
    /// The id of the manifest listing the version's blobs.
    #[cbor(n(8), with = "minicbor::bytes")]
    pub manifest: Key,
}

/// An origin's public sites at a time: what it signs.
#[derive(Debug, Clone, PartialEq, Eq, minicbor::Encode, minicbor::Decode)]
pub struct SiteHeads {
    /// The agreement.
    #[cbor(n(0), with = "minicbor::bytes")]
    pub agreement: Key,
    /// The origin's pool.
    #[cbor(n(1), with = "minicbor::bytes")]
    pub pool: Key,
    /// When the origin answered (ms since the epoch, its clock).
    #[n(2)]
    pub at_ms: i64,
    /// The sites.
    #[n(3)]
    pub heads: Vec<SiteHead>,
}

/// What the origin's node signs: the answering node and the sites.
fn sites_message(node: &Key, heads: &SiteHeads) -> Vec<u8> {
    let mut m = node_message(SITES_CONTEXT, node);
    m.extend(minicbor::to_vec(heads).unwrap_or_default());
    m
}

/// An origin's signature over its sites, answering from `node`.
pub(crate) fn sign_sites(signer: &kith_crdt::Signer, node: &Key, heads: &SiteHeads) -> Vec<u8> {
    signer.sign(&sites_message(node, heads)).to_vec()
}

/// An origin's answer as an edge checks it.
pub(crate) struct Answer<'a> {
    pub roster: Option<&'a Roster>,
    pub heads: &'a SiteHeads,
    pub identity: Key,
    pub sig: Vec<u8>,
}

/// Checks an origin's answer from the node `peer` of the pool `partner`, under `ag` (as this
/// pool's document has it), at `now_ms`, the last answer taken signed at `last_ms`: the partner's roster, in force
/// for the agreement, names the signing identity, which signed over the answering node and
/// the sites; the sites are the partner's under this agreement, not dated in the future
/// (beyond the skew partners allow), not older than the last answer taken, and not too many.
pub(crate) fn check_sites(
    ag: &Agreement,
    partner: &Key,
    peer: &Key,
    a: &Answer<'_>,
    now_ms: i64,
    last_ms: i64,
) -> Result<(), String> {
    let roster = a.roster.ok_or("the partner's answer carries no roster")?;
    roster.check(ag, now_ms.max(0) as u64).map_err(|e| e.to_string())?;
    let heads = a.heads;
    let party = ag.offer.pool == *partner || ag.acceptance.pool == *partner;
    if roster.pool != *partner || heads.pool != *partner || !party || heads.agreement != ag.id() {
        return Err("the partner's sites are not of this agreement".into());
    }
    if !roster.names(&a.identity) {
        return Err("the partner's roster does not name the identity that signed".into());
    }
    if !verify_device(&a.identity, peer, &sites_message(peer, heads), &a.sig) {
        return Err("the partner's signature over its sites does not verify".into());
    }
    if heads.at_ms > now_ms.saturating_add(kith_federation::MAX_SKEW_MS as i64) {
        return Err("the partner's answer is dated in the future".into());
    }
    if heads.heads.len() > MAX_SITES {
        return Err(format!("more than {MAX_SITES} sites in one answer"));
    }
    if heads.at_ms < last_ms {
        return Err("an answer older than the last one taken (replayed?)".into());
    }
    Ok(())
}

/// Whether `name` is one DNS label as site names are (the origin's rules checked it; an edge
/// does not trust that).
fn label_ok(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// What an edge serves for one agreement, as on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq, minicbor::Encode, minicbor::Decode)]
struct EdgeFile {
    /// The partner (origin) pool.
    #[cbor(n(0), with = "minicbor::bytes")]
    pool: Key,
    /// Its name.
    #[n(1)]
    pool_name: String,
    /// The signed time of the last answer taken.
    #[n(2)]
    at_ms: i64,
    /// The versions served (each whole in the store).
    #[n(3)]
    heads: Vec<SiteHead>,
    /// Their manifests and blobs.
    #[n(4)]
    blobs: Vec<ByteArray<32>>,
}

/// A partner's site this edge serves.
#[derive(Debug, Clone)]
pub struct EdgeSite {
    /// The agreement it is served under.
    pub agreement: Key,
    /// The partner pool.
    pub pool: Key,
    /// Its name.
    pub pool_name: String,
    /// The version.
    pub head: SiteHead,
    /// The partner's nodes that answered last (to fetch what the store lacks).
    pub from: Vec<EndpointId>,
}

/// How one partner's edge stands, for `kith pool show`.
#[derive(Debug, Clone, Default)]
pub struct EdgeStatus {
    /// The partner pool's name.
    pub pool_name: String,
    /// Sites served and their versions.
    pub sites: Vec<(String, u64)>,
    /// Stored bytes kept for them.
    pub bytes: u64,
    /// Why the last ask or fetch failed, if it did.
    pub error: Option<String>,
}

/// The egress an agreement lends the partner a month (its `--lend-egress`), as an edge sees it.
#[derive(Debug, Clone, Copy)]
struct Budget {
    /// Bytes a month (0: no bound).
    lent: u64,
    /// Served to the partner this month by the pool's nodes, as the ledger said when read.
    used: u64,
    /// What this node recorded into the ledger since that read.
    pending: u64,
    /// When the ledger was read.
    read: Instant,
}

/// How often an edge reads its pool's ledger for what was served of an agreement's egress.
const BUDGET_EVERY: Duration = Duration::from_secs(10);

/// What this node serves as an edge, by agreement.
#[derive(Debug, Default)]
pub struct Edges {
    dir: PathBuf,
    on: AtomicBool,
    files: Mutex<Option<HashMap<Key, EdgeFile>>>,
    origins: Mutex<HashMap<Key, Vec<EndpointId>>>,
    status: Mutex<HashMap<Key, EdgeStatus>>,
    /// Bytes of partners' sites served, by agreement, since the last record.
    served: Mutex<HashMap<Key, u64>>,
    /// The egress each agreement lends the partner a month, and what was served of it.
    budgets: Mutex<HashMap<Key, Budget>>,
    /// As an edge: when each agreement's partner was last asked, and whether it answered.
    asked: Mutex<HashMap<Key, (Instant, bool)>>,
    /// As an edge: agreements whose origin said its sites changed.
    poked: Mutex<HashSet<Key>>,
    /// As an origin: the edges that asked, by agreement, and when.
    askers: Mutex<HashMap<Key, HashMap<EndpointId, Instant>>>,
    /// As an origin: the digest of each pool's public sites last told.
    told: Mutex<HashMap<Key, [u8; 32]>>,
    /// As an origin: the pools' generation when their sites were last looked at.
    looked: std::sync::atomic::AtomicU64,
}

impl Edges {
    /// What is recorded under `dir`.
    pub fn new(dir: PathBuf) -> Edges {
        Edges { dir, ..Edges::default() }
    }

    /// Makes this node an edge for partners that are lent CDN (`kith up --cdn`).
    pub fn enable(&self) {
        self.on.store(true, Relaxed);
    }

    /// Whether this node serves as an edge.
    pub fn enabled(&self) -> bool {
        self.on.load(Relaxed)
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<Key, EdgeFile>) -> T) -> T {
        let mut g = lock(&self.files);
        f(g.get_or_insert_with(|| read_dir(&self.dir)))
    }

    /// The partner's site served under `name`, if this node is an edge serving one (the
    /// first agreement by id that has it).
    pub fn site(&self, name: &str) -> Option<EdgeSite> {
        let mut found = self
            .served_sites()
            .into_iter()
            .filter(|e| e.head.name == name)
            .min_by_key(|e| e.agreement)?;
        found.from = lock(&self.origins).get(&found.agreement).cloned().unwrap_or_default();
        Some(found)
    }

    /// Every partner's site this node serves as its edge (for `kith site ls`).
    pub fn served_sites(&self) -> Vec<EdgeSite> {
        if !self.enabled() {
            return Vec::new();
        }
        self.with(|m| {
            m.iter()
                .flat_map(|(a, f)| {
                    f.heads.iter().map(|h| EdgeSite {
                        agreement: *a,
                        pool: f.pool,
                        pool_name: f.pool_name.clone(),
                        head: h.clone(),
                        from: Vec::new(),
                    })
                })
                .collect()
        })
    }

    /// The names of the partners' sites this node serves.
    pub fn names(&self) -> Vec<String> {
        self.served_sites().into_iter().map(|e| e.head.name).collect()
    }

    /// Notes that the origin of `agreement` said its sites changed: asked at the next look.
    pub(super) fn poke(&self, agreement: &Key) {
        if self.enabled() {
            lock(&self.poked).insert(*agreement);
        }
    }

    /// Whether the partner of `agreement` is to be asked now (and, if so, takes its poke).
    fn due(&self, agreement: &Key) -> bool {
        let poked = lock(&self.poked).remove(agreement);
        poked
            || lock(&self.asked).get(agreement).is_none_or(|(at, answered)| {
                at.elapsed() >= if *answered { EDGE_POLL } else { EDGE_RETRY }
            })
    }

    /// As an origin: notes an edge that asked under `agreement`.
    fn note_asker(&self, agreement: &Key, peer: EndpointId) {
        let mut a = lock(&self.askers);
        let m = a.entry(*agreement).or_default();
        m.retain(|_, t| t.elapsed() < ASKERS_FOR);
        if m.len() < MAX_ASKERS || m.contains_key(&peer) {
            m.insert(peer, Instant::now());
        }
    }

    /// Counts `bytes` of a partner's site about to be served under `agreement` (for the
    /// ledger), unless that
    /// would take what the pool served the partner this month past the egress the agreement
    /// lends (the ledger's count when last read, and what this node served since; no bound
    /// when it lends none, or before the edge has read its ledger once after starting).
    pub fn take_egress(&self, agreement: &Key, bytes: u64) -> Result<(), String> {
        let budgets = lock(&self.budgets);
        let mut served = lock(&self.served);
        let here = served.entry(*agreement).or_default();
        if let Some(b) = budgets.get(agreement).filter(|b| b.lent > 0) {
            let used = b.used + b.pending + *here;
            if used.saturating_add(bytes) > b.lent {
                let (lent, used) = (crate::fmt::size(b.lent), crate::fmt::size(used));
                drop((served, budgets));
                let partner = lock(&self.status)
                    .get(agreement)
                    .map_or_else(|| "the partner".to_string(), |s| format!("pool {}", s.pool_name));
                return Err(format!(
                    "this edge's pool lends {partner} {lent} of egress a month and has served or relayed \
                     {used} of it this month: its sites are served here again next month"
                ));
            }
        }
        *here += bytes;
        Ok(())
    }

    /// What the pool served the partner this month under `agreement` (as this node knows it)
    /// and the egress it lends a month, when the agreement states one.
    pub fn egress(&self, agreement: &Key) -> Option<(u64, u64)> {
        let budgets = lock(&self.budgets);
        let b = budgets.get(agreement).filter(|b| b.lent > 0)?;
        let here = lock(&self.served).get(agreement).copied().unwrap_or(0);
        Some((b.used + b.pending + here, b.lent))
    }

    /// Whether the egress of `agreement` is to be read from the ledger again.
    pub(super) fn budget_due(&self, agreement: &Key) -> bool {
        lock(&self.budgets).get(agreement).is_none_or(|b| b.read.elapsed() >= BUDGET_EVERY)
    }

    /// Sets what `agreement` lends a month and what the ledger counted served of it.
    pub(super) fn set_budget(&self, agreement: &Key, lent: u64, used: u64) {
        let b = Budget { lent, used, pending: 0, read: Instant::now() };
        lock(&self.budgets).insert(*agreement, b);
    }

    /// Takes the bytes served under the agreements `keep` picks.
    pub(super) fn take_served(&self, keep: impl Fn(&Key) -> bool) -> Vec<(Key, u64)> {
        let mut budgets = lock(&self.budgets);
        let mut s = lock(&self.served);
        let picked: Vec<Key> = s.keys().filter(|a| keep(a)).copied().collect();
        let taken: Vec<(Key, u64)> =
            picked.into_iter().filter_map(|a| s.remove(&a).map(|b| (a, b))).collect();
        // Recorded now, read from the ledger at the next read.
        for (a, n) in &taken {
            if let Some(b) = budgets.get_mut(a) {
                b.pending += n;
            }
        }
        taken
    }

    /// How the edge stands for each agreement of `pool`'s (for `kith pool show`).
    pub fn status(&self) -> HashMap<Key, EdgeStatus> {
        lock(&self.status).clone()
    }

    fn set_status(&self, agreement: &Key, f: impl FnOnce(&mut EdgeStatus)) {
        f(lock(&self.status).entry(*agreement).or_default())
    }

    /// The blobs kept as an edge under `agreement` (the partner's public site content).
    pub(super) fn kept(&self, agreement: &Key) -> HashSet<[u8; 32]> {
        self.with(|m| m.get(agreement).map(|f| f.blobs.iter().map(|b| **b).collect()))
            .unwrap_or_default()
    }

    fn file(&self, agreement: &Key) -> EdgeFile {
        self.with(|m| m.get(agreement).cloned().unwrap_or_default())
    }

    /// Records what is served for `agreement` (on disk first).
    fn keep(&self, agreement: &Key, f: EdgeFile) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir).map_err(|e| e.to_string())?;
        let bytes = minicbor::to_vec(&f).map_err(|e| e.to_string())?;
        crate::fsutil::write_atomic(&edge_path(&self.dir, agreement), &bytes)
            .map_err(|e| format!("cannot record the edge's sites: {e}"))?;
        self.with(|m| m.insert(*agreement, f));
        Ok(())
    }

    /// Forgets every agreement not in `standing` (ended, or no longer lending CDN): its sites
    /// are no longer served, and `gc` takes their blobs.
    fn retain(&self, standing: &HashSet<Key>) {
        let gone: Vec<Key> = self.with(|m| {
            let gone: Vec<Key> = m.keys().filter(|a| !standing.contains(*a)).copied().collect();
            for a in &gone {
                m.remove(a);
            }
            gone
        });
        for a in gone {
            let _ = std::fs::remove_file(edge_path(&self.dir, &a));
            lock(&self.status).remove(&a);
            lock(&self.budgets).remove(&a);
            tracing::info!(agreement = %hex(&a[..8]), "no longer an edge under this agreement");
        }
    }
}

fn edge_path(dir: &Path, agreement: &Key) -> PathBuf {
    dir.join(format!("{}.edge", hex(agreement)))
}

fn read_dir(dir: &Path) -> HashMap<Key, EdgeFile> {
    let mut out = HashMap::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return out };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".edge") else { continue };
        let Some(ag) = crate::view::parse_key(stem) else { continue };
        // Written whole (atomically): a file that does not decode is not ours, and ignored.
        match std::fs::read(e.path()).map(|b| minicbor::decode::<EdgeFile>(&b).map_err(|_| ())) {
            Ok(Ok(f)) => {
                out.insert(ag, f);
            }
            _ => tracing::warn!(file = %e.path().display(), "an edge record that does not read"),
        }
    }
    out
}

/// Every blob an edge keeps under `dir` (for `gc`'s keep set).
pub fn edge_on_disk(dir: &Path) -> HashSet<ChunkId> {
    read_dir(dir).values().flat_map(|f| f.blobs.iter().map(|b| ChunkId(**b))).collect()
}

/// The public sites of `v` as served now, with their manifests.
fn public_heads(v: &PoolView) -> Vec<SiteHead> {
    let manifests: HashMap<&Key, &Key> = v.objects().map(|(_, o, po)| (o, &po.manifest)).collect();
    let mut out = Vec::new();
    for (owner, name, site) in v.sites() {
        let winner = v.site(name).is_some_and(|(o, _)| o == *owner);
        let Some(ver) = site.served().filter(|_| winner && site.access == Access::Public) else {
            continue;
        };
        let Some(manifest) = manifests.get(&ver.index) else { continue };
        out.push(SiteHead {
            name: name.clone(),
            number: site.current,
            index: ver.index,
            key: ver.key,
            len: ver.len,
            files: ver.files,
            bytes: ver.bytes,
            at_ms: ver.at_ms,
            manifest: **manifest,
        });
    }
    out.truncate(MAX_SITES);
    out
}

impl Replicator {
    /// What this node serves as an edge.
    pub fn edges(&self) -> &Arc<Edges> {
        &self.edges
    }

    /// The blobs of `v`'s public sites as served now: their manifests and what they list.
    pub(crate) fn public_site_blobs(&self, v: &PoolView) -> HashSet<[u8; 32]> {
        let mut set = HashSet::new();
        for h in public_heads(v) {
            set.insert(h.manifest);
            if let Some(m) = self.manifest_here(&h.manifest) {
                set.extend(m.blobs.iter().map(|(b, _)| **b));
            }
        }
        set
    }

    /// Answers an edge's `Sites`: this pool's public sites, signed, when the asking pool lends
    /// this one CDN.
    pub(super) fn serve_sites(&self, peer: &EndpointId, a: &Asking) -> Result<FedReply, String> {
        let (pool, v, ag, _) = self.check_asking(peer, a, false)?;
        if !ag.lending_of(&pool).is_some_and(|(_, lent)| lent.cdn) {
            return Err(format!(
                "the agreement between {} and {} lends pool {} no CDN",
                ag.offer.pool_name, ag.acceptance.pool_name, v.charter.name
            ));
        }
        self.edges.note_asker(&ag.id(), *peer);
        let heads = SiteHeads {
            agreement: ag.id(),
            pool,
            at_ms: self.pools.now_ms(),
            heads: public_heads(&v),
        };
        let roster = v.federation.agreements.get(&ag.id()).and_then(|e| e.roster.clone());
        let sig = sign_sites(self.pools.signer(), &self.pools.node(), &heads);
        Ok(FedReply::Sites {
            roster,
            heads: Box::new(heads),
            identity: self.pools.signer().author().key,
            sig,
        })
    }

    /// As an origin: tells the edges that asked this node lately, when this pool's public
    /// sites changed since it last looked (each told at once, in the background).
    pub(super) fn tell_edges(&self) {
        let Ok(node) = self.node() else { return };
        let askers: Vec<(Key, Vec<EndpointId>)> = lock(&self.edges.askers)
            .iter()
            .map(|(a, m)| {
                (*a, m.iter().filter(|(_, t)| t.elapsed() < ASKERS_FOR).map(|(p, _)| *p).collect())
            })
            .filter(|(_, p): &(Key, Vec<EndpointId>)| !p.is_empty())
            .collect();
        // Nothing changed in any pool since the last look: nothing to tell.
        let generation = self.pools.generation();
        if askers.is_empty() || self.edges.looked.swap(generation, Relaxed) == generation {
            return;
        }
        for (pool, v) in self.pools.list() {
            let mine: Vec<&(Key, Vec<EndpointId>)> =
                askers.iter().filter(|(a, _)| v.federation.agreements.contains_key(a)).collect();
            if mine.is_empty() {
                continue;
            }
            let digest =
                *blake3::hash(&minicbor::to_vec(public_heads(&v)).unwrap_or_default()).as_bytes();
            let before = lock(&self.edges.told).insert(pool, digest);
            if before.is_none_or(|d| d == digest) {
                continue;
            }
            for (agreement, peers) in mine {
                for peer in peers {
                    let (node, peer, req) =
                        (node.clone(), *peer, FedRequest::SitesChanged(*agreement));
                    tokio::spawn(async move {
                        let _ = ask_fed(&node, peer, &req, Duration::from_secs(5)).await;
                    });
                }
            }
        }
    }

    /// As an edge: asks every partner lent CDN by one of this node's pools for its sites and
    /// takes the new versions (see the module's notes).
    pub(super) async fn refresh_edges(&self) {
        if !self.edges.enabled() {
            return;
        }
        let Ok(node) = self.node() else { return };
        let now = self.pools.now_ms();
        let mut standing = HashSet::new();
        for (pool, v) in self.pools.list() {
            for e in v.federation.agreements.values() {
                let ag = &e.agreement;
                let lends_cdn = ag.lending_of(&pool).is_some_and(|(lends, _)| lends.cdn);
                if !lends_cdn || !matches!(e.state(&pool, now), "active" | "leaving") {
                    continue;
                }
                let Some(roster) = &e.roster else { continue };
                let id = ag.id();
                standing.insert(id);
                if self.edges.budget_due(&id) {
                    let lent = ag.lending_of(&pool).map_or(0, |(lends, _)| lends.egress);
                    self.read_budget(&pool, &id, lent);
                }
                if !self.edges.due(&id) {
                    continue;
                }
                let result = self.refresh_edge(node, &pool, ag, roster).await;
                lock(&self.edges.asked).insert(id, (Instant::now(), result.is_ok()));
                let partner = ag.partner_of(&pool).map(|(_, n)| n.to_string()).unwrap_or_default();
                self.edges.set_status(&id, |s| {
                    s.error = result.err();
                    s.pool_name = partner;
                });
            }
        }
        self.edges.retain(&standing);
    }

    /// Reads from `pool`'s ledger of this month the egress its nodes gave the partner of
    /// `agreement` (served, and carried by its relays: one bound for both), which lends
    /// `lent` a month (0: no bound, nothing to read).
    pub(super) fn read_budget(&self, pool: &Key, agreement: &Key, lent: u64) {
        if lent == 0 {
            return self.edges.set_budget(agreement, 0, 0);
        }
        match self.egress_given(pool, agreement, false) {
            Ok(used) => self.edges.set_budget(agreement, lent, used),
            Err(e) => tracing::warn!(error = %e, "cannot read the ledger for an edge's egress"),
        }
    }

    /// The egress `pool`'s nodes gave the partner of `agreement` this month, by its ledger
    /// ([`crate::ledger::LedgerView::egress_to`]); with `relay`, but for what this node's own
    /// relay carried (it counts that itself).
    pub fn egress_given(&self, pool: &Key, agreement: &Key, relay: bool) -> Result<u64, String> {
        let snap = self.pools.snapshot(pool).ok_or("no such pool")?;
        let period = crate::ledger::Period::of(self.pools.now_ms());
        let l = self.pools.ledgers().view(&snap, period).map_err(|e| e.to_string())?;
        let a = self.pools.signer().author();
        let me = (a.key, a.device);
        Ok(l.egress_to(agreement, relay.then_some(&me)))
    }

    async fn refresh_edge(
        &self,
        node: &Arc<Node>,
        pool: &Key,
        ag: &Agreement,
        roster: &Roster,
    ) -> Result<(), String> {
        let id = ag.id();
        let (partner, partner_name) = ag.partner_of(pool).ok_or("not this pool's agreement")?;
        let mut peers = lock(&self.edges.origins).get(&id).cloned().unwrap_or_default();
        for t in super::offsite::partner_contacts(ag, &partner) {
            if !peers.contains(&t.id) {
                let _ = node.add_peer(&t).await;
                peers.push(t.id);
            }
        }
        let req = FedRequest::Sites(Box::new(self.asking(ag, roster)));
        let mut error = format!("no node of pool {partner_name} is known");
        for (i, peer) in peers.iter().enumerate() {
            match ask_fed(node, *peer, &req, ASK_LIMIT).await {
                Ok(FedReply::Sites { roster: theirs, heads, identity, sig }) => {
                    let last = self.edges.file(&id).at_ms;
                    let answer = Answer { roster: theirs.as_ref(), heads: &heads, identity, sig };
                    check_sites(ag, &partner, peer.as_bytes(), &answer, self.pools.now_ms(), last)?;
                    // Who answered is asked first next time.
                    let mut order = peers.clone();
                    order.swap(0, i);
                    lock(&self.edges.origins).insert(id, order.clone());
                    return self.take_sites(node, &id, partner_name, *heads, &order).await;
                }
                Ok(FedReply::Refused(why)) => error = format!("pool {partner_name} refused: {why}"),
                Ok(other) => error = format!("{}: {other:?}", peer.fmt_short()),
                Err(e) => error = format!("{}: {e}", peer.fmt_short()),
            }
        }
        Err(error)
    }

    /// Fetches what each new version lacks into the store and serves it once whole; a version
    /// that cannot be had whole leaves its site at the version served before.
    async fn take_sites(
        &self,
        node: &Arc<Node>,
        agreement: &Key,
        partner_name: &str,
        heads: SiteHeads,
        from: &[EndpointId],
    ) -> Result<(), String> {
        let old = self.edges.file(agreement);
        let mut served = Vec::new();
        let mut blobs: Vec<ByteArray<32>> = Vec::new();
        let mut bytes = 0u64;
        let mut problems = Vec::new();
        for h in heads.heads.iter().filter(|h| label_ok(&h.name)) {
            let got = self.fetch_version(node, h, from, MAX_EDGE_BYTES - bytes).await;
            let (head, list) = match got {
                Ok(list) => (h.clone(), list),
                Err(e) => {
                    problems.push(format!("{} v{}: {e}", h.name, h.number));
                    // The version served before, if it is still whole here.
                    let Some(prev) = old.heads.iter().find(|o| o.name == h.name) else {
                        continue;
                    };
                    match self.whole_here(node, prev).await {
                        Some(list) => (prev.clone(), list),
                        None => continue,
                    }
                }
            };
            bytes += list.iter().map(|(_, len)| *len as u64).sum::<u64>();
            blobs.push(head.manifest.into());
            blobs.extend(list.iter().map(|(b, _)| *b));
            served.push(head);
        }
        let file = EdgeFile {
            pool: heads.pool,
            pool_name: partner_name.to_string(),
            at_ms: heads.at_ms,
            heads: served,
            blobs,
        };
        if file.heads != old.heads || file.pool_name != old.pool_name {
            for h in file.heads.iter().filter(|h| !old.heads.contains(h)) {
                tracing::info!(site = %h.name, version = h.number, pool = partner_name,
                    "serving a partner's site as its edge");
            }
            self.edges.keep(agreement, file.clone())?;
        } else {
            // Only the time: kept in memory (the file's time matters only against replays
            // within one run; an older answer after a restart changes nothing served).
            self.edges.with(|m| m.insert(*agreement, file.clone()));
        }
        self.edges.set_status(agreement, |s| {
            s.pool_name = partner_name.to_string();
            s.sites = file.heads.iter().map(|h| (h.name.clone(), h.number)).collect();
            s.bytes = bytes;
        });
        if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
    }

    /// The blobs of `h` (with their lengths), fetched into the store if lacking, within
    /// `budget` stored bytes.
    async fn fetch_version(
        &self,
        node: &Arc<Node>,
        h: &SiteHead,
        from: &[EndpointId],
        budget: u64,
    ) -> Result<Vec<(ByteArray<32>, u32)>, String> {
        if let Some(list) = self.whole_here(node, h).await {
            return Ok(list);
        }
        let what = format!("site {} of a partner", h.name);
        let mid = ChunkId(h.manifest);
        node.fetch_missing_from(&what, vec![mid], None, Some(from.to_vec()), None)
            .await
            .map_err(|e| format!("its manifest: {e}"))?;
        let m = self.manifest_here(&h.manifest).ok_or("its manifest does not read")?;
        if *m.object != h.index {
            return Err("its manifest is of another object".into());
        }
        let total: u64 = m.blobs.iter().map(|(_, len)| *len as u64).sum();
        if total > budget {
            return Err(format!(
                "{total} bytes; an edge keeps at most {MAX_EDGE_BYTES} bytes of a partner's sites"
            ));
        }
        let ids: Vec<ChunkId> = m.blobs.iter().map(|(b, _)| ChunkId(**b)).collect();
        node.fetch_missing_from(&what, ids, None, Some(from.to_vec()), None)
            .await
            .map_err(|e| e.to_string())?;
        self.whole_here(node, h).await.ok_or_else(|| "not every blob arrived".to_string())
    }

    /// The blobs of `h` if its manifest and every blob are in the store.
    async fn whole_here(
        &self,
        node: &Arc<Node>,
        h: &SiteHead,
    ) -> Option<Vec<(ByteArray<32>, u32)>> {
        let m = self.manifest_here(&h.manifest)?;
        if *m.object != h.index {
            return None;
        }
        let ids: Vec<[u8; 32]> = m.blobs.iter().map(|(b, _)| **b).collect();
        let here = super::protocol::held_locally(node.store().clone(), ids).await.ok()?;
        here.iter().all(|h| *h).then(|| m.blobs.clone())
    }
}
