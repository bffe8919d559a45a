//! The server side: answers pings and serves blobs from the store, counting what it sends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iroh::EndpointId;
use iroh::endpoint::{Connection, RecvStream, SendStream};
use iroh::protocol::{AcceptError, ProtocolHandler};
use minicbor::bytes::ByteArray;
use tokio::sync::{Semaphore, mpsc};

use super::conns::lock_map;
use super::wire::{self, ServeError, StreamWire, Wire};
use super::{
    BUSY, MAX_CONNECTIONS_PER_PEER, MAX_IDS, MAX_SERVING, MAX_SERVING_PER_PEER,
    MAX_STREAMS_PER_CONN, REPLACED, REQUEST_TIMEOUT, Request, STALE_AFTER, Tallies,
};
use crate::ids::ChunkId;
use crate::net::frame::{self, FrameError};
use crate::store::Store;
use crate::store::pack::BlobKind;

/// Decides who may fetch which blobs (the pools: the identity's own devices, and members'
/// nodes of a pool that references the blob). Without one, a node serves any blob it has.
pub trait BlobGate: Send + Sync + std::fmt::Debug {
    /// `Ok` if `peer` (which may prove it is a device of an identity) may have every blob of
    /// `ids`, else why not (said to the peer).
    fn may_serve(
        &self,
        peer: &EndpointId,
        proof: Option<&super::DeviceProof>,
        ids: &[[u8; 32]],
    ) -> Result<(), String>;

    /// Which of `ids` (which `peer` may have) this node answers as missing for now, in order:
    /// blobs of an object it is putting into a pool, asked by a holder that gets them from
    /// another holder (chain replication). None, unless the gate says so.
    fn withheld(&self, _peer: &EndpointId, _ids: &[[u8; 32]]) -> Vec<bool> {
        Vec::new()
    }
}

/// Counts what this node served.
#[derive(Debug, Default)]
pub struct Served {
    /// Blobs sent.
    pub blobs: AtomicU64,
    /// Bytes of blobs sent.
    pub bytes: AtomicU64,
    /// Requests dropped as malformed, oversized or stalled.
    pub bad_requests: AtomicU64,
    /// Connections peers opened to fetch blobs (a large fetch opens several, see
    /// `LANES_PER_PEER`).
    pub connections: AtomicU64,
    /// Of those, the ones open now.
    pub open_connections: AtomicU64,
    /// Connections closed at once because their node had the most allowed open already.
    pub refused_connections: AtomicU64,
    /// Stale connections closed to make room for a newer one of the same node.
    pub replaced_connections: AtomicU64,
    /// What was sent for requests that named a pool, by pool and peer, since last taken.
    tagged: Tallies,
    /// Requests refused by the gate.
    pub refused: AtomicU64,
    gate: std::sync::OnceLock<Arc<dyn BlobGate>>,
    /// What this node refused, by cause (shared with the layers above).
    pub refusals: Arc<crate::refusals::Refusals>,
}

impl Served {
    /// What was served for requests naming a pool, by (pool, peer). The claim of the pool is
    /// the requester's; the layer above checks it.
    pub fn tagged(&self) -> &Tallies {
        &self.tagged
    }

    /// Which of `ids` to answer as missing to `peer` for now (see [`BlobGate::withheld`]).
    pub fn withheld(&self, peer: &EndpointId, ids: &[ByteArray<32>]) -> Vec<bool> {
        let Some(gate) = self.gate.get() else { return Vec::new() };
        let ids: Vec<[u8; 32]> = ids.iter().map(|i| **i).collect();
        gate.withheld(peer, &ids)
    }

    /// Sets who may fetch what (once).
    pub fn set_gate(&self, gate: Arc<dyn BlobGate>) {
        let _ = self.gate.set(gate);
    }

    /// Whether `peer` may have `ids` (every serving path asks this before sending a byte).
    pub fn check(
        &self,
        peer: &EndpointId,
        proof: Option<&super::DeviceProof>,
        ids: &[ByteArray<32>],
    ) -> Result<(), String> {
        let Some(gate) = self.gate.get() else { return Ok(()) };
        let ids: Vec<[u8; 32]> = ids.iter().map(|i| **i).collect();
        gate.may_serve(peer, proof, &ids).inspect_err(|why| {
            self.refused.fetch_add(1, Ordering::Relaxed);
            self.refusals.refuse(
                peer.as_bytes(),
                "blob asked for by a peer it is not shared with",
                why,
            );
        })
    }
}

/// Serves blobs from the store to peers.
#[derive(Debug, Clone)]
pub struct BlobsProtocol {
    store: Arc<Store>,
    serving: Arc<Semaphore>,
    served: Arc<Served>,
    peers: Option<Arc<crate::net::peers::PeerTable>>,
    /// What each peer with an open connection uses (no entry once its last one closes).
    by_peer: Arc<Mutex<HashMap<EndpointId, PeerUse>>>,
    max_connections_per_peer: usize,
    stale_after: Duration,
}

/// One peer's open connections, and its share of the requests served at once.
#[derive(Debug)]
struct PeerUse {
    connections: Vec<Arc<Slot>>,
    serving: Arc<Semaphore>,
}

/// An admitted connection as the cap sees it: how many datagrams the peer had sent on it when
/// this node last looked, and since when that count has stood still.
#[derive(Debug)]
struct Slot {
    conn: Connection,
    heard: Mutex<(u64, Instant)>,
    stale_after: Duration,
}

impl Slot {
    fn new(conn: &Connection, stale_after: Duration) -> Self {
        let seen = conn.stats().udp_rx.datagrams;
        Self { conn: conn.clone(), heard: Mutex::new((seen, Instant::now())), stale_after }
    }

    /// For how long the peer has sent nothing on this connection, at least: a live one sends
    /// a keep-alive every 5 s (iroh's), acknowledgements and requests more often. Measured
    /// from when this node last saw the count move (it looks every quarter of `stale_after`,
    /// and at the cap), so it never says more than the truth.
    fn silent_for(&self) -> Duration {
        let seen = self.conn.stats().udp_rx.datagrams;
        let mut heard = self.heard.lock().unwrap_or_else(|p| p.into_inner());
        if heard.0 != seen {
            *heard = (seen, Instant::now());
        }
        heard.1.elapsed()
    }
}

/// A connection admitted for a peer; gives its place back when dropped.
struct Admitted {
    by_peer: Arc<Mutex<HashMap<EndpointId, PeerUse>>>,
    peer: EndpointId,
    serving: Arc<Semaphore>,
    slot: Arc<Slot>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut map = lock_map(&self.by_peer);
        if let Some(u) = map.get_mut(&self.peer) {
            // A replaced connection gave its place up already.
            u.connections.retain(|s| !Arc::ptr_eq(s, &self.slot));
            if u.connections.is_empty() {
                map.remove(&self.peer);
            }
        }
    }
}

/// What [`BlobsProtocol::admit`] decided.
enum Admission {
    In(Admitted),
    /// In, in the place of this stale connection (to be closed).
    Replacing(Admitted, Connection),
    Refused,
}

impl BlobsProtocol {
    /// Serves from `store`, counting into `served`.
    pub fn new(store: Arc<Store>, served: Arc<Served>) -> Self {
        Self {
            store,
            serving: Arc::new(Semaphore::new(MAX_SERVING)),
            served,
            peers: None,
            by_peer: Arc::default(),
            max_connections_per_peer: MAX_CONNECTIONS_PER_PEER,
            stale_after: STALE_AFTER,
        }
    }

    /// How long a connection's node must have sent nothing on it before a newer connection
    /// of the same node may take its place at the cap (default [`STALE_AFTER`]; at least
    /// 100 ms).
    pub fn with_stale_after(mut self, after: Duration) -> Self {
        self.stale_after = after.max(Duration::from_millis(100));
        self
    }

    /// Accepts at most `n` connections at once from one node (at least 1; the default is
    /// [`MAX_CONNECTIONS_PER_PEER`]); the ones past it are closed at once with [`BUSY`], and a
    /// fetch then uses the connections it has.
    pub fn with_max_connections_per_peer(mut self, n: usize) -> Self {
        self.max_connections_per_peer = n.max(1);
        self
    }

    /// A place for `conn` of `peer`: if the peer has fewer than the cap open, or else in the
    /// place of its connection silent longest, if that one is stale.
    fn admit(&self, peer: EndpointId, conn: &Connection) -> Admission {
        let mut map = lock_map(&self.by_peer);
        let u = map.entry(peer).or_insert_with(|| PeerUse {
            connections: Vec::new(),
            serving: Arc::new(Semaphore::new(MAX_SERVING_PER_PEER)),
        });
        let mut replaced = None;
        if u.connections.len() >= self.max_connections_per_peer {
            let stalest = u
                .connections
                .iter()
                .enumerate()
                .map(|(i, s)| (i, s.silent_for()))
                .filter(|(_, d)| *d >= self.stale_after)
                .max_by_key(|(_, d)| *d);
            let Some((i, _)) = stalest else { return Admission::Refused };
            replaced = Some(u.connections.swap_remove(i).conn.clone());
        }
        let slot = Arc::new(Slot::new(conn, self.stale_after));
        u.connections.push(slot.clone());
        let admitted =
            Admitted { by_peer: self.by_peer.clone(), peer, serving: u.serving.clone(), slot };
        match replaced {
            Some(old) => Admission::Replacing(admitted, old),
            None => Admission::In(admitted),
        }
    }

    /// Also notes in `peers` the nodes that dial this one directly (at the address they came
    /// from), so a node learns of its neighbours as soon as they reach it: mDNS answers to a
    /// new node can wait up to a second (RFC 6762's multicast window), a neighbour that saw its
    /// announcement dials it at once. The table is bounded and refuses forgotten devices.
    pub fn with_peers(mut self, peers: Arc<crate::net::peers::PeerTable>) -> Self {
        self.peers = Some(peers);
        self
    }

    /// Answers one stream's request. A `Get` waits for a place among the peer's and then
    /// among everyone's requests served at once; a `Ping` is answered at once, so a node
    /// fetching a lot still answers pings in time (a missed ping drops the peer).
    async fn serve(
        &self,
        admitted: &Admitted,
        send: SendStream,
        mut recv: RecvStream,
    ) -> Result<(), ServeError> {
        let peer = admitted.peer;
        let req: Request = tokio::time::timeout(REQUEST_TIMEOUT, frame::read(&mut recv))
            .await
            .map_err(|_| ServeError::Timeout)??
            .ok_or(ServeError::Frame(FrameError::Truncated))?;
        // The peer's share first, so a peer at its share waits without holding a place
        // another peer could use. (Neither semaphore is ever closed.) A request that gives up
        // while it waits (its stream stopped, its connection gone) ends there.
        let _permits = match &req {
            Request::Get(ids, ..) if ids.len() <= MAX_IDS => {
                let places = async {
                    let mine = admitted.serving.acquire().await;
                    (mine, self.serving.acquire().await)
                };
                tokio::select! {
                    places = places => Some(places),
                    _ = send.stopped() => return Ok(()),
                }
            }
            // A ping, or a request refused at once.
            _ => None,
        };
        let mut wire = StreamWire { send, recv };
        let mut sent = wire::Sent::default();
        wire::answer(&mut wire, &self.store, &self.served, peer, req, &mut sent).await?;
        wire.finish()?;
        Ok(())
    }
}

/// Counts a connection as open while it lives (however its handler ends).
struct OpenConnection<'a>(&'a Served);

impl<'a> OpenConnection<'a> {
    fn new(served: &'a Served) -> Self {
        served.connections.fetch_add(1, Ordering::Relaxed);
        served.open_connections.fetch_add(1, Ordering::Relaxed);
        Self(served)
    }
}

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A blob read for serving: its kind, bytes and id; `None` when the store lacks it.
pub type ReadBlob = Option<(BlobKind, Vec<u8>, [u8; 32])>;

/// Reads `ids` from `store` on a blocking thread, at most two blobs ahead of the receiver (the
/// network), in order. A blob that does not read back, or that `skip` marks, is served as
/// missing.
pub fn read_ahead(
    store: Arc<Store>,
    ids: Vec<ByteArray<32>>,
    skip: Vec<bool>,
) -> (mpsc::Receiver<ReadBlob>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<ReadBlob>(2);
    let reader = tokio::task::spawn_blocking(move || {
        let mut blobs = store.blob_reader();
        for (i, id) in ids.into_iter().enumerate() {
            if skip.get(i).copied().unwrap_or(false) {
                if tx.blocking_send(None).is_err() {
                    break;
                }
                continue;
            }
            let blob = blobs.read_with_kind(&ChunkId(*id)).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "not serving a blob that does not read back");
                None
            });
            if tx.blocking_send(blob.map(|(k, b)| (k, b, *id))).is_err() {
                break;
            }
        }
    });
    (rx, reader)
}

impl ProtocolHandler for BlobsProtocol {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let peer = conn.remote_id();
        let admitted = match self.admit(peer, &conn) {
            Admission::In(a) => a,
            Admission::Replacing(a, old) => {
                self.served.replaced_connections.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(peer = %peer.fmt_short(), "a stale connection gave its place to a newer one");
                old.close(REPLACED.into(), b"replaced by a newer connection from this node");
                a
            }
            Admission::Refused => {
                self.served.refused_connections.fetch_add(1, Ordering::Relaxed);
                self.served.refusals.refuse(
                    peer.as_bytes(),
                    "connection past the cap per node",
                    &format!("{} connections open already", self.max_connections_per_peer),
                );
                conn.close(BUSY.into(), b"too many connections from this node");
                return Ok(());
            }
        };
        conn.set_max_concurrent_bi_streams(MAX_STREAMS_PER_CONN.into());
        let _open = OpenConnection::new(&self.served);
        if let Some(peers) = &self.peers {
            let addrs: Vec<std::net::SocketAddr> = conn
                .paths()
                .iter()
                .filter_map(|p| match p.remote_addr() {
                    iroh::TransportAddr::Ip(a) => Some(*a),
                    _ => None,
                })
                .take(4)
                .collect();
            if !addrs.is_empty() {
                peers.note_dialler(peer, &addrs);
            }
        }
        // Each stream's task holds the connection's place (and so the peer's share) until
        // it ends, and one of the connection's MAX_STREAMS_PER_CONN places for streams: the
        // transport grants a new connection more streams than that before the limit above
        // takes effect, and those wait, unaccepted, until a place frees. So at most
        // MAX_STREAMS_PER_CONN tasks per connection, each holding one request of at most
        // 64 KiB (MAX_FRAME) while it waits for a place among the peer's requests served.
        let admitted = Arc::new(admitted);
        // Looks at what the peer sent every quarter of STALE_AFTER, so a crashed node's
        // connection counts as silent from about when it fell silent, not from the first
        // attempt to take its place.
        let slot = admitted.slot.clone();
        let _sampler = n0_future::task::AbortOnDropHandle::new(tokio::spawn(async move {
            let mut tick = tokio::time::interval(slot.stale_after / 4);
            loop {
                tick.tick().await;
                slot.silent_for();
            }
        }));
        let streams = Arc::new(Semaphore::new(MAX_STREAMS_PER_CONN as usize));
        loop {
            let Ok(stream) = streams.clone().acquire_owned().await else { break };
            let Ok((send, recv)) = conn.accept_bi().await else { break };
            let (this, admitted) = (self.clone(), admitted.clone());
            tokio::spawn(async move {
                let _stream = stream;
                if let Err(e) = this.serve(&admitted, send, recv).await {
                    this.served.bad_requests.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(peer = %admitted.peer.fmt_short(), error = %e, "dropped a bad blob request");
                }
            });
        }
        Ok(())
    }
}
