//! The network under everything: an offline-first iroh endpoint, LAN discovery, the peer table
//! and verified blob transfer.
//!
//! [`Node`] is one running node. Its endpoint has no relay, no port mapping, no DNS or pkarr
//! lookup and no network probes: it dials only addresses it learned on the LAN (mDNS) or from a
//! ticket, so with no configuration it sends nothing beyond the LAN. Relays are used only when
//! given: at start (`kith up --relay`) or later ([`Node::set_relays`], the relays a federation
//! agreement names).

pub mod blobs;
pub use blobs::{LinkError, connect_error};
pub mod frame;
mod inflight;
pub mod link;
pub mod mdns;
pub mod mesh;
pub mod peers;
pub mod rtc;
pub mod ticket;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use iroh::address_lookup::{AddressLookup, EndpointData, Error as LookupError, Item};
use iroh::endpoint::{NetReportConfig, PortmapperConfig, presets};
use iroh::protocol::{DynProtocolHandler, Router};
use iroh::{Endpoint, EndpointId, RelayMode};
use n0_future::boxed::BoxStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::home::Home;
use crate::ids::{ChunkId, ObjectId};
use crate::store::tree::Item as TreeItem;
use crate::store::{Part, Progress, Store, StoreError};
use blobs::{Blob, BlobsProtocol, Connections, FetchReport, Served, Tallies};
use mdns::{Mdns, MdnsConfig};
use peers::{PeerInfo, PeerTable};
use ticket::NodeTicket;

/// How often each known peer is pinged.
pub const PING_INTERVAL: Duration = Duration::from_secs(2);
/// Peers pinged at once.
const MAX_PINGS: usize = 16;
/// Blobs buffered between the network and the store during a fetch.
const INGEST_QUEUE: usize = 16;
/// Ids looked up and fetched per round when fetching an object's data.
const FETCH_ROUND: usize = 16_384;
/// File in the home listing peers added by ticket.
/// The saved peers, in the home.
pub const PEERS_FILE: &str = "peers.cbor";
/// What a peer may make this node hold, per connection, of data it sent that the node has not
/// read yet (QUIC's connection flow-control window; noq's default has no limit, only 1.25 MB
/// per stream over 100 streams). 16 MiB covers a LAN's bandwidth-delay product many times
/// over and the blob fetch's 8 streams of 1.25 MB each.
pub const CONNECTION_RECEIVE_WINDOW: u32 = 16 << 20;
/// Streams a peer may open at once on a new connection before its protocol's handler lowers
/// it (the blob server to 8, signalling to 4; the others read one stream at a time). noq's
/// default grants 100.
pub const INITIAL_STREAMS: u32 = 16;

/// How a node listens and discovers.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// UDP addresses for the iroh endpoint (port 0 picks one).
    pub listen: Vec<SocketAddr>,
    /// LAN discovery.
    pub mdns: MdnsConfig,
    /// Relay servers to use (`kith up --relay`): the node keeps a connection to one of them,
    /// and looks for any peer it cannot reach directly there too. Empty: no relay, nothing
    /// leaves the LAN (docs/federation.md "Relays").
    pub relays: Vec<iroh::RelayUrl>,
    /// Connections one node may hold open to this one for blobs (see
    /// [`blobs::MAX_CONNECTIONS_PER_PEER`]).
    pub max_connections_per_peer: usize,
}

/// Why the network failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The endpoint could not bind.
    #[error("cannot listen on {addr}: {reason}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// mDNS could not start.
    #[error(transparent)]
    Mdns(#[from] mdns::MdnsError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Blobs no peer had.
    #[error("{what}: {count} chunk(s) not found on any reachable peer ({asked} asked{}); first missing: {first}", failures(.failed))]
    NotFound {
        /// What was fetched.
        what: String,
        /// How many ids were missing.
        count: usize,
        /// The first missing id.
        first: ChunkId,
        /// Peers asked.
        asked: usize,
        /// Peers that failed, with the reason.
        failed: Vec<String>,
    },
    /// No peer to ask.
    #[error(
        "no peers to fetch {0} from: start `kith up` on another device on this LAN, or `kith peer add TICKET`"
    )]
    NoPeers(String),
    /// A blocking task failed.
    #[error("internal error: {0}")]
    Internal(String),
}

fn failures(failed: &[String]) -> String {
    if failed.is_empty() { String::new() } else { format!("; failed: {}", failed.join("; ")) }
}

/// The address lookup: resolves from the peer table, announces on mDNS.
#[derive(Debug)]
struct LanLookup {
    peers: Arc<PeerTable>,
    mdns: Option<Arc<Mdns>>,
    /// The relays this node uses now: every peer is also looked for there.
    relays: Arc<std::sync::RwLock<Vec<iroh::RelayUrl>>>,
}

impl AddressLookup for LanLookup {
    fn publish(&self, data: &EndpointData) {
        if let Some(m) = &self.mdns {
            let addrs: Vec<SocketAddr> = data.ip_addrs().copied().collect();
            m.publish(&addrs);
        }
    }

    fn resolve(&self, id: EndpointId) -> Option<BoxStream<Result<Item, LookupError>>> {
        let relays = self.relays.read().unwrap_or_else(|e| e.into_inner()).clone();
        self.peers.lookup(id, &relays)
    }
}

/// A running node.
pub struct Node {
    store: Arc<Store>,
    endpoint: Endpoint,
    router: Router,
    peers: Arc<PeerTable>,
    mdns: Option<Arc<Mdns>>,
    conns: Arc<Connections>,
    cancel: CancellationToken,
    served: Arc<Served>,
    received: Tallies,
    inflight: inflight::InFlight,
    fetched: Fetched,
    /// The relays it uses now (shared with the address lookup).
    relays: Arc<std::sync::RwLock<Vec<iroh::RelayUrl>>>,
    /// Changes of them one at a time.
    relays_change: tokio::sync::Mutex<()>,
}

/// Verified blobs this node fetched from peers since it started, by how the peer was reached
/// (`kith up --metrics`).
#[derive(Debug, Default)]
pub struct Fetched {
    /// Blobs from peers reached directly (iroh).
    pub direct_blobs: std::sync::atomic::AtomicU64,
    /// Their bytes.
    pub direct_bytes: std::sync::atomic::AtomicU64,
    /// Blobs from peers reached through a neighbour's link (WebRTC).
    pub linked_blobs: std::sync::atomic::AtomicU64,
    /// Their bytes.
    pub linked_bytes: std::sync::atomic::AtomicU64,
}

/// How long a shared fetch waits for another that is getting the same blobs and receives
/// none, before it gets them itself (one that keeps receiving is waited for).
pub const SHARED_QUIET: Duration = Duration::from_secs(5);

/// Two fetch reports of one fetch as one.
fn merge(mut a: FetchReport, b: FetchReport) -> FetchReport {
    a.blobs += b.blobs;
    a.bytes += b.bytes;
    a.missing.extend(b.missing);
    a.failed_peers.extend(b.failed_peers);
    a.peers_asked = a.peers_asked.max(b.peers_asked);
    for (peer, t) in b.by_peer {
        let e = a.by_peer.entry(peer).or_default();
        e.blobs += t.blobs;
        e.bytes += t.bytes;
        e.last = t.last;
    }
    a
}

/// Whether a fetch got everything: the error names what was missing and why peers failed.
fn check_report(what: &str, report: &FetchReport) -> Result<(), NetError> {
    if report.peers_asked == 0 {
        return Err(NetError::NoPeers(what.to_string()));
    }
    if let Some(first) = report.missing.first() {
        return Err(NetError::NotFound {
            what: what.to_string(),
            count: report.missing.len(),
            first: *first,
            asked: report.peers_asked,
            failed: report
                .failed_peers
                .iter()
                .map(|(p, why)| format!("{}: {why}", p.fmt_short()))
                .collect(),
        });
    }
    Ok(())
}

/// A relay as the endpoint's map holds it: no QUIC address discovery (kith's relays serve none).
fn relay_config(url: &iroh::RelayUrl) -> Arc<iroh::RelayConfig> {
    Arc::new(iroh::RelayConfig::new(url.clone(), None))
}

/// The relay mode for these relays: always a map (empty: the endpoint uses no relay and
/// probes nothing), so that relays can be added later ([`Node::set_relays`]).
fn relay_mode(relays: &[iroh::RelayUrl]) -> RelayMode {
    RelayMode::Custom(relays.iter().map(relay_config).collect())
}

/// iroh's transport settings with the bounds above; no unidirectional streams and no QUIC
/// datagrams (kith's protocols use neither, and noq would buffer 1.25 MB of each that a peer
/// sent).
fn transport_config() -> iroh::endpoint::QuicTransportConfig {
    iroh::endpoint::QuicTransportConfig::builder()
        .receive_window(CONNECTION_RECEIVE_WINDOW.into())
        .max_concurrent_bidi_streams(INITIAL_STREAMS.into())
        .max_concurrent_uni_streams(0u32.into())
        .datagram_receive_buffer_size(None)
        .build()
}

impl Node {
    /// Binds the endpoint, starts discovery, serving and pinging.
    pub async fn start(home: &Home, store: Arc<Store>, cfg: NetConfig) -> Result<Node, NetError> {
        Node::start_with(home, store, cfg, Vec::new()).await
    }

    /// Like [`Node::start`], also serving the given protocols (by ALPN) from layers above.
    pub async fn start_with(
        home: &Home,
        store: Arc<Store>,
        cfg: NetConfig,
        protocols: Vec<(Vec<u8>, Box<dyn DynProtocolHandler>)>,
    ) -> Result<Node, NetError> {
        let key = home.node_key().map_err(StoreError::from)?;
        let me = key.id();
        let cancel = CancellationToken::new();
        let peers = Arc::new(PeerTable::load(me, home.root().join(PEERS_FILE)));
        let mdns = match cfg.mdns.disabled {
            true => None,
            false => Some(Mdns::start(me, &cfg.mdns, peers.clone(), cancel.clone())?),
        };
        let relays = Arc::new(std::sync::RwLock::new(cfg.relays.clone()));
        let lookup = LanLookup { peers: peers.clone(), mdns: mdns.clone(), relays: relays.clone() };
        // With relays, their latency is measured over plain HTTP (`/ping`), which is how a
        // home relay is chosen; kith's relays serve no QUIC address discovery. With none
        // (an empty map), iroh runs no probe at all.
        let (relay_mode, mut report) = (relay_mode(&cfg.relays), NetReportConfig::minimal());
        report.https_probes = true;
        let mut builder = Endpoint::builder(presets::Minimal)
            .secret_key(key.secret().clone())
            .relay_mode(relay_mode)
            .portmapper_config(PortmapperConfig::Disabled)
            .net_report_config(report)
            .clear_address_lookup()
            .address_lookup(lookup)
            .clear_ip_transports()
            .transport_config(transport_config());
        let bind_err = |addr: &dyn std::fmt::Display, e: &dyn std::fmt::Display| NetError::Bind {
            addr: addr.to_string(),
            reason: e.to_string(),
        };
        for addr in &cfg.listen {
            builder = builder.bind_addr(*addr).map_err(|e| bind_err(addr, &e))?;
        }
        let listen = cfg.listen.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ");
        let endpoint = builder.bind().await.map_err(|e| bind_err(&listen, &e))?;
        let served = Arc::new(Served::default());
        let protocol = BlobsProtocol::new(store.clone(), served.clone())
            .with_peers(peers.clone())
            .with_max_connections_per_peer(cfg.max_connections_per_peer);
        let mut router = Router::builder(endpoint.clone()).accept(blobs::ALPN, protocol);
        for (alpn, handler) in protocols {
            router = router.accept(alpn, handler);
        }
        let router = router.spawn();
        let conns = Arc::new(Connections::new(endpoint.clone()));
        let identity = home.identity().map_err(StoreError::from)?;
        let msg = blobs::DeviceProof::message(me.as_bytes());
        // Signed by the identity key where this device holds it, else by the node key with the
        // identity's certificate of it (the device form of `kith_crdt::Sig`: node key, cert,
        // signature).
        let sig = match (identity.signing_key(), identity.grant()) {
            (Some(k), _) => k.sign(&msg).to_bytes().to_vec(),
            (None, Some(g)) => {
                [&me.as_bytes()[..], &g.cert[..], &key.secret().sign(&msg).to_bytes()[..]].concat()
            }
            (None, None) => Vec::new(),
        };
        conns.set_device_proof(blobs::DeviceProof { identity: *identity.id().as_bytes(), sig });
        tokio::spawn(ping_loop(peers.clone(), conns.clone(), cancel.clone()));
        tracing::info!(node = %me, addrs = ?endpoint.bound_sockets(), "node started");
        Ok(Node {
            store,
            endpoint,
            router,
            peers,
            mdns,
            conns,
            cancel,
            served,
            received: Tallies::default(),
            inflight: inflight::InFlight::default(),
            fetched: Fetched::default(),
            relays,
            relays_change: tokio::sync::Mutex::new(()),
        })
    }

    /// Bytes this node sent and received through relays since it started (QUIC datagrams).
    pub fn relay_bytes(&self) -> u64 {
        let m = &self.endpoint.metrics().socket;
        m.send_relay.get().saturating_add(m.recv_data_relay.get())
    }

    /// The relays this node uses now.
    pub fn relays(&self) -> Vec<iroh::RelayUrl> {
        self.relays.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Uses these relays from now on (the endpoint's relay map changed in place: a relay no
    /// longer named is dropped, its connection with it). Returns whether anything changed.
    pub async fn set_relays(&self, want: &[iroh::RelayUrl]) -> bool {
        let _one = self.relays_change.lock().await;
        let now = self.relays();
        if now == want {
            return false;
        }
        for url in now.iter().filter(|u| !want.contains(u)) {
            self.endpoint.remove_relay(url).await;
        }
        for url in want.iter().filter(|u| !now.contains(u)) {
            self.endpoint.insert_relay(url.clone(), relay_config(url)).await;
        }
        *self.relays.write().unwrap_or_else(|e| e.into_inner()) = want.to_vec();
        true
    }

    /// This node's id.
    pub fn id(&self) -> EndpointId {
        self.endpoint.id()
    }

    /// The addresses peers can dial.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.endpoint.addr().ip_addrs().copied().collect()
    }

    /// The relay this node keeps a connection to (its home relay), when it uses relays, and
    /// whether it is connected (else why not: what the relay said when it refused, or the
    /// last error).
    pub fn home_relay(&self) -> Option<(String, Result<(), String>)> {
        use iroh::Watcher;
        let status = self.endpoint.home_relay_status().get();
        let s = status.first()?;
        let state = match (s.is_connected(), s.auth_denied_reason(), s.last_error()) {
            (true, _, _) => Ok(()),
            (false, Some(why), _) => Err(format!("refused: {why}")),
            (false, None, Some(e)) => Err(e.to_string()),
            (false, None, None) => Err("connecting".to_string()),
        };
        Some((s.url().to_string(), state))
    }

    /// A ticket for this node.
    pub fn ticket(&self) -> NodeTicket {
        NodeTicket { id: self.id(), addrs: self.addrs() }
    }

    /// The peer table.
    pub fn peers(&self) -> Vec<PeerInfo> {
        self.peers.list()
    }

    /// Adds a peer from a ticket (remembered across restarts), learned from a pool or a
    /// partner.
    pub async fn add_peer(&self, t: &NodeTicket) -> Result<PeerInfo, LinkError> {
        self.add_peer_as(t, false).await
    }

    /// Adds a peer its owner named (`kith peer add`; see [`PeerInfo::owner`]).
    pub async fn add_owner_peer(&self, t: &NodeTicket) -> Result<PeerInfo, LinkError> {
        self.add_peer_as(t, true).await
    }

    async fn add_peer_as(&self, t: &NodeTicket, by_owner: bool) -> Result<PeerInfo, LinkError> {
        if t.id == self.id() {
            return Err(LinkError::OwnTicket);
        }
        self.peers.add_ticket(t, by_owner)?;
        match self.conns.ping(t.id, false).await {
            Ok(p) => self.peers.record_pong(&t.id, &p),
            Err(_) => self.peers.record(&t.id, false),
        }
        self.peers.list().into_iter().find(|p| p.id == t.id).ok_or(LinkError::TableFull)
    }

    /// What this node refused, by cause.
    pub fn refusals(&self) -> &Arc<crate::refusals::Refusals> {
        &self.served.refusals
    }

    /// This node's proof that it is a device of its identity.
    pub fn device_proof(&self) -> Option<blobs::DeviceProof> {
        self.conns.device_proof()
    }

    /// Removes a peer (its owner's `kith peer rm`): out of the table and the saved tickets, its
    /// connections closed; whether it was known.
    pub fn remove_peer(&self, id: &EndpointId) -> Result<bool, LinkError> {
        self.conns.drop_peer(id);
        Ok(self.peers.remove(id)?)
    }

    /// Forgets a peer for good (a device its owner retired); true the first time.
    pub fn forget_peer(&self, node: &[u8; 32]) -> bool {
        let Ok(id) = EndpointId::from_bytes(node) else { return false };
        self.conns.drop_peer(&id);
        match self.peers.forget(&id) {
            Ok(first) => first,
            Err(e) => {
                tracing::warn!(error = %e, "cannot save the peers after forgetting one");
                true
            }
        }
    }

    /// Sets how peers that cannot be dialed are linked (see [`link`]).
    pub fn set_linker(&self, linker: Arc<dyn link::Linker>) {
        self.conns.set_linker(linker);
    }

    /// Open links to peers that cannot be dialed, with their routes.
    pub fn links(&self) -> Vec<(EndpointId, String)> {
        self.conns.links()
    }

    /// Why the last attempt to link `peer` through a neighbour failed, if it did.
    pub fn link_error(&self, peer: &EndpointId) -> Option<String> {
        self.conns.link_error(peer)
    }

    /// Reaches `peer` now, directly or through a neighbour (trying again even if an attempt
    /// failed lately), records the result in the peer table, and says how: `direct` or the
    /// link's route. The error says why each way failed.
    pub async fn reach(&self, peer: EndpointId) -> Result<String, LinkError> {
        let kept = self.conns.has_connection(&peer);
        let mut r = self.conns.ping(peer, true).await;
        if r.is_err() && kept {
            // The kept connection may have died quietly (the peer went away): dial afresh.
            r = self.conns.ping(peer, true).await;
        }
        match &r {
            Err(_) if self.conns.is_other_key(&peer) => {
                self.peers.record_other_key(&peer);
            }
            Err(_) => self.peers.record(&peer, false),
            Ok(p) => self.peers.record_pong(&peer, p),
        }
        r?;
        Ok(self.conns.link_to(&peer).map(|l| l.link().route()).unwrap_or_else(|| "direct".into()))
    }

    /// What this node served to peers.
    pub fn served(&self) -> &Served {
        &self.served
    }

    /// What this node received from peers for fetches made on behalf of a pool, by (pool,
    /// peer), since last taken.
    pub fn received(&self) -> &Tallies {
        &self.received
    }

    /// What this node fetched from peers.
    pub fn fetched(&self) -> &Fetched {
        &self.fetched
    }

    /// Counts what a fetch got, by how each peer was reached.
    fn count_fetched(&self, report: &FetchReport) {
        use std::sync::atomic::Ordering::Relaxed;
        for (peer, t) in &report.by_peer {
            let (blobs, bytes) = if self.conns.link_to(peer).is_some() {
                (&self.fetched.linked_blobs, &self.fetched.linked_bytes)
            } else {
                (&self.fetched.direct_blobs, &self.fetched.direct_bytes)
            };
            blobs.fetch_add(t.blobs, Relaxed);
            bytes.fetch_add(t.bytes, Relaxed);
        }
    }

    /// The mDNS announcer, when mDNS is on.
    pub fn mdns(&self) -> Option<&Arc<Mdns>> {
        self.mdns.as_ref()
    }

    /// The iroh endpoint (for protocols of the layers above).
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The store this node serves.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Fetches the blobs in `ids` that the store lacks from peers into the store.
    pub async fn fetch_missing(
        &self,
        what: &str,
        ids: Vec<ChunkId>,
        progress: Option<Arc<Progress>>,
    ) -> Result<FetchReport, NetError> {
        self.fetch_missing_from(what, ids, progress, None, None).await
    }

    /// Like [`Node::fetch_missing`], asking `from` (in order of preference) instead of the
    /// peer table's candidates, on behalf of `pool` if given (what each peer sent is tallied,
    /// see [`Node::received`]).
    pub async fn fetch_missing_from(
        &self,
        what: &str,
        ids: Vec<ChunkId>,
        progress: Option<Arc<Progress>>,
        from: Option<Vec<EndpointId>>,
        pool: Option<[u8; 32]>,
    ) -> Result<FetchReport, NetError> {
        let ids = self.lacking(ids).await?;
        if ids.is_empty() {
            return Ok(FetchReport::default());
        }
        self.fetch_claimed(what, ids, &progress, &from, pool, None).await
    }

    /// Like [`Node::fetch_missing_from`], for the pools' replication (holding a new object,
    /// repair): a blob another shared fetch of this node is getting now is waited for, not
    /// fetched a second time, while that fetch receives blobs: once it has received none for
    /// [`SHARED_QUIET`] (it waits on a peer that does not answer, say), this fetch gets what is
    /// still missing itself. `kith get` fetches objects with [`Node::fetch_missing_from`], which
    /// never waits behind this background work (pool manifests, which `put --pool` and
    /// `pool show` read, are fetched shared: they are small).
    pub async fn fetch_missing_shared(
        &self,
        what: &str,
        ids: Vec<ChunkId>,
        progress: Option<Arc<Progress>>,
        from: Option<Vec<EndpointId>>,
        pool: Option<[u8; 32]>,
    ) -> Result<FetchReport, NetError> {
        let mut ids = self.lacking(ids).await?;
        let mut total: Option<FetchReport> = None;
        while !ids.is_empty() {
            // What another fetch of this node is getting now is waited for, not fetched again.
            let (claim, theirs) = self.inflight.claim(ids);
            if !claim.ids.is_empty() {
                let received = Some(claim.received.clone());
                let rep = self
                    .fetch_claimed(what, claim.ids.clone(), &progress, &from, pool, received)
                    .await?;
                total = Some(match total {
                    None => rep,
                    Some(t) => merge(t, rep),
                });
            }
            drop(claim);
            if theirs.is_empty() {
                break;
            }
            let let_go = self.inflight.wait(&theirs, SHARED_QUIET).await;
            // What the other fetch did not get, this one does.
            ids = self.lacking(theirs).await?;
            if !let_go && !ids.is_empty() {
                let rep = self.fetch_claimed(what, ids, &progress, &from, pool, None).await?;
                total = Some(match total {
                    None => rep,
                    Some(t) => merge(t, rep),
                });
                break;
            }
        }
        Ok(total.unwrap_or_default())
    }

    /// The ids of `ids` the store lacks.
    async fn lacking(&self, ids: Vec<ChunkId>) -> Result<Vec<ChunkId>, NetError> {
        let store = self.store.clone();
        Ok(blocking(move || {
            let mut out = Vec::new();
            for id in ids {
                if !store.has(&id)? {
                    out.push(id);
                }
            }
            Ok::<_, StoreError>(out)
        })
        .await??)
    }

    /// Fetches `ids` (claimed by this fetch) into the store, counting each blob received into
    /// `received` (the claim's count its waiters watch), if given.
    async fn fetch_claimed(
        &self,
        what: &str,
        ids: Vec<ChunkId>,
        progress: &Option<Arc<Progress>>,
        from: &Option<Vec<EndpointId>>,
        pool: Option<[u8; 32]>,
        received: Option<Arc<std::sync::atomic::AtomicU64>>,
    ) -> Result<FetchReport, NetError> {
        let (tx, mut rx) = mpsc::channel::<Blob>(INGEST_QUEUE);
        let store = self.store.clone();
        let progress = progress.clone();
        let sink = tokio::task::spawn_blocking(move || {
            let mut ingest = store.ingest()?;
            let mut bytes = 0u64;
            while let Some(b) = rx.blocking_recv() {
                let parts: Vec<&[u8]> = b.parts.iter().map(|p| &p[..]).collect();
                ingest.add_verified_parts(b.id, b.kind, &parts)?;
                bytes += b.len() as u64;
                if let Some(r) = &received {
                    r.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                if let Some(p) = &progress {
                    p.bytes_done.fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
            }
            ingest.finish()?;
            Ok::<_, StoreError>(bytes)
        });
        let from = from.clone().unwrap_or_else(|| self.peers.candidates());
        let mut report = blobs::fetch_from(self.conns.clone(), from, ids, pool, tx).await;
        self.count_fetched(&report);
        report.bytes = sink.await.map_err(|e| NetError::Internal(e.to_string()))??;
        if let Some(pool) = pool {
            for (peer, t) in &report.by_peer {
                self.received.add_all([((pool, *peer), *t)].into());
            }
        }
        check_report(what, &report)?;
        Ok(report)
    }

    /// Fetches the blobs `ids` from `from` (in order of preference) into memory, verified by
    /// id, without keeping them in the store (for caches with their own bound). Fails if any
    /// id could not be had.
    pub async fn fetch_to_memory(
        &self,
        what: &str,
        ids: Vec<ChunkId>,
        from: Vec<EndpointId>,
    ) -> Result<Vec<Blob>, NetError> {
        let (tx, mut rx) = mpsc::channel::<Blob>(INGEST_QUEUE);
        let collect = tokio::spawn(async move {
            let mut out = Vec::new();
            while let Some(b) = rx.recv().await {
                out.push(b);
            }
            out
        });
        let report = blobs::fetch_from(self.conns.clone(), from, ids, None, tx).await;
        self.count_fetched(&report);
        let got = collect.await.map_err(|e| NetError::Internal(e.to_string()))?;
        check_report(what, &report)?;
        Ok(got)
    }

    /// Makes object `id` complete in the local store, fetching its root, tree and data from
    /// peers as needed, and records it as a local object. Returns the bytes fetched.
    pub async fn fetch_object(
        &self,
        id: ObjectId,
        progress: Option<Arc<Progress>>,
    ) -> Result<u64, NetError> {
        self.fetch_object_from(id, progress, None, None).await
    }

    /// Like [`Node::fetch_object`], asking `from` (in order of preference) instead of the peer
    /// table's candidates.
    pub async fn fetch_object_from(
        &self,
        id: ObjectId,
        progress: Option<Arc<Progress>>,
        from: Option<Vec<EndpointId>>,
        pool: Option<[u8; 32]>,
    ) -> Result<u64, NetError> {
        let whole = Part::new("").map_err(NetError::Store)?;
        self.fetch_part_from(id, whole, progress, from, pool).await
    }

    /// Fetches what restoring `part` of object `id` reads: its root, its tree and the chunks
    /// of the files inside `part`, nothing else. A whole object is then recorded as a local
    /// object; a part is not (`kith gc` may reclaim it). Returns the bytes fetched.
    pub async fn fetch_part_from(
        &self,
        id: ObjectId,
        mut part: Part,
        progress: Option<Arc<Progress>>,
        from: Option<Vec<EndpointId>>,
        pool: Option<[u8; 32]>,
    ) -> Result<u64, NetError> {
        let whole = part.is_whole();
        let what = format!("object {id}");
        let mut fetched = self
            .fetch_missing_from(&what, vec![id.into()], progress.clone(), from.clone(), pool)
            .await?
            .bytes;
        let store = self.store.clone();
        let root = blocking(move || store.root(&id)).await??;
        if let Some(p) = progress.as_ref().filter(|_| whole) {
            p.bytes_total.store(root.stats.bytes, std::sync::atomic::Ordering::Relaxed);
            p.total_known.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let tree: Vec<ChunkId> = root.tree.iter().map(|r| r.chunk_id()).collect();
        fetched += self.fetch_missing_from(&what, tree, None, from.clone(), pool).await?.bytes;
        // Walk the tree and fetch missing data chunks a round at a time (bounded memory).
        let (tx, mut rx) = mpsc::channel::<Vec<ChunkId>>(1);
        let store = self.store.clone();
        let walker = tokio::task::spawn_blocking(move || {
            let mut reader = store.tree_reader(&root);
            let mut round = Vec::new();
            while let Some(item) = reader.next_item()? {
                if let Some(TreeItem::Chunk(r)) = part.pick(item) {
                    if !store.has(&r.chunk_id())? {
                        round.push(r.chunk_id());
                    }
                    if round.len() >= FETCH_ROUND
                        && tx.blocking_send(std::mem::take(&mut round)).is_err()
                    {
                        return Ok(());
                    }
                }
            }
            if !round.is_empty() {
                let _ = tx.blocking_send(round);
            }
            Ok::<_, StoreError>(())
        });
        while let Some(round) = rx.recv().await {
            fetched += self
                .fetch_missing_from(&what, round, progress.clone(), from.clone(), pool)
                .await?
                .bytes;
        }
        walker.await.map_err(|e| NetError::Internal(e.to_string()))??;
        if whole {
            let store = self.store.clone();
            blocking(move || store.adopt(&id)).await??;
        }
        Ok(fetched)
    }

    /// Stops serving, discovery and pinging, and closes the endpoint.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        if let Some(m) = &self.mdns {
            m.shutdown();
        }
        let _ = self.router.shutdown().await;
        self.endpoint.close().await;
        tracing::info!("node stopped");
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| NetError::Internal(e.to_string()))
}

/// Pings every known peer every [`PING_INTERVAL`] and records who answers.
async fn ping_loop(peers: Arc<PeerTable>, conns: Arc<Connections>, cancel: CancellationToken) {
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_PINGS));
    // One ping at a time per peer: a peer that goes away is said to be unreachable once.
    let pinging: Arc<std::sync::Mutex<std::collections::HashSet<EndpointId>>> = Arc::default();
    let mut tick = tokio::time::interval(PING_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Every peer each tick; peers that just appeared (or came back) at once.
        let only_new = tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => false,
            _ = peers.news.notified() => true,
        };
        for p in peers.list() {
            if only_new && p.reachability == peers::Reachability::Reachable {
                continue;
            }
            if !pinging.lock().unwrap_or_else(|p| p.into_inner()).insert(p.id) {
                continue;
            }
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                pinging.lock().unwrap_or_else(|p| p.into_inner()).remove(&p.id);
                break;
            };
            let (peers, conns, pinging) = (peers.clone(), conns.clone(), pinging.clone());
            tokio::spawn(async move {
                let ok = conns.ping(p.id, false).await;
                if ok.is_err() && conns.is_other_key(&p.id) {
                    peers.record_other_key(&p.id);
                } else {
                    if ok.is_err() && p.reachability != peers::Reachability::Unreachable {
                        tracing::info!(peer = %p.id.fmt_short(), "peer unreachable");
                    }
                    match &ok {
                        Ok(pong) => peers.record_pong(&p.id, pong),
                        Err(_) => peers.record(&p.id, false),
                    }
                }
                pinging.lock().unwrap_or_else(|p| p.into_inner()).remove(&p.id);
                drop(permit);
            });
        }
    }
}
