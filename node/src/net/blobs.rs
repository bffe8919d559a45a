//! `kith/blobs/1`: serving and fetching blobs by id between nodes.
//!
//! One request per bi-directional stream. The client sends a frame, `Ping(nonce)` or
//! `Get([id, ...], pool?)` (at most [`MAX_IDS`]); the server answers `Pong(nonce)`, or for each id in
//! order `Have{kind, len}` followed by `len` raw bytes, or `Missing`. A blob is whatever the
//! store holds under an id (a chunk envelope or an object root); the receiver hashes it before
//! it keeps or uses it, so a peer can waste our time but never our data.
//!
//! The fetcher spreads batches of ids over every peer it can reach (several streams per
//! peer), moves a batch to another peer when one fails, stalls or lies, and gives up on an id
//! only when every live peer said it does not have it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use iroh::endpoint::{Connection, RecvStream, SendStream};
use iroh::protocol::{AcceptError, ProtocolHandler};
use iroh::{Endpoint, EndpointId};
use minicbor::bytes::ByteArray;
use minicbor::{Decode, Encode};
use tokio::sync::{Notify, Semaphore, mpsc};

use super::frame::{self, FrameError};
use super::link::{Link, Linker};
use super::peers::PeerTable;
use crate::ids::ChunkId;
use crate::store::Store;
use crate::store::pack::{BlobKind, MAX_BLOB_BYTES};

/// The protocol's ALPN.
pub const ALPN: &[u8] = b"kith/blobs/1";
/// Ids in one `Get`.
pub const MAX_IDS: usize = 256;
/// Requests served at once, over all peers (bounds memory: each holds at most two blobs).
const MAX_SERVING: usize = 32;
/// Streams a peer may open at once on one connection.
const MAX_STREAMS_PER_CONN: u32 = 8;
/// Time for a peer to send its request, or for us to connect to one.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Time without progress on one reply before a peer counts as stalled.
const STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Ids the fetcher asks one peer for in one request.
const FETCH_BATCH: usize = 64;
/// Streams the fetcher keeps open to one peer.
const STREAMS_PER_PEER: usize = 4;
/// Peers one fetch uses at most.
const MAX_FETCH_PEERS: usize = 8;
/// After a failed attempt to link a peer through a neighbour, how long before the next.
const LINK_RETRY: Duration = Duration::from_secs(30);
/// Time a linker gets to make a link.
const LINK_TIMEOUT: Duration = Duration::from_secs(45);

/// What a client asks (the protocol's request frame).
#[derive(Debug, Encode, Decode)]
pub enum Request {
    /// Are you there? Answered with the same nonce.
    #[n(0)]
    Ping(#[n(0)] u64),
    /// These blobs, please (at most [`MAX_IDS`]), fetched on behalf of the pool named
    /// second, if any (what the server counts as served in that pool; see [`Tally`]).
    #[n(1)]
    Get(#[n(0)] Vec<ByteArray<32>>, #[n(1)] Option<ByteArray<32>>),
}

/// What a server answers (one frame per ping, one per id of a get).
#[derive(Debug, Encode, Decode)]
pub enum Reply {
    /// The ping's nonce.
    #[n(0)]
    Pong(#[n(0)] u64),
    /// The blob follows: `len` raw bytes.
    #[n(1)]
    Have {
        /// Its kind (0 chunk, 1 root).
        #[n(0)]
        kind: u8,
        /// Its length.
        #[n(1)]
        len: u32,
    },
    /// Not here.
    #[n(2)]
    Missing,
    /// The request was not acceptable.
    #[n(3)]
    Refused(#[n(0)] String),
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
    /// What was sent for requests that named a pool, by pool and peer, since last taken.
    tagged: Tallies,
}

impl Served {
    /// What was served for requests naming a pool, by (pool, peer). The claim of the pool is
    /// the requester's; the layer above checks it.
    pub fn tagged(&self) -> &Tallies {
        &self.tagged
    }
}

/// Bytes and blobs moved between this node and one peer for one pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Bytes of blobs.
    pub bytes: u64,
    /// Blobs.
    pub blobs: u64,
    /// The id of the last blob.
    pub last: [u8; 32],
}

/// Tallies by (pool, peer), bounded: beyond [`MAX_TALLIES`] entries new pairs are not counted
/// (a peer naming random pools cannot grow it without bound).
#[derive(Debug, Default)]
pub struct Tallies(Mutex<HashMap<([u8; 32], EndpointId), Tally>>);

/// Most (pool, peer) pairs tallied between two takes.
pub const MAX_TALLIES: usize = 4096;

impl Tallies {
    /// Counts one blob.
    pub fn add(&self, pool: [u8; 32], peer: EndpointId, id: [u8; 32], len: u64) {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if t.len() >= MAX_TALLIES && !t.contains_key(&(pool, peer)) {
            return;
        }
        let e = t.entry((pool, peer)).or_default();
        e.bytes += len;
        e.blobs += 1;
        e.last = id;
    }

    /// Takes the tallies and starts again.
    pub fn take(&self) -> HashMap<([u8; 32], EndpointId), Tally> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Adds tallies (what a fetch got, or what could not be recorded and is put back).
    pub fn add_all(&self, from: HashMap<([u8; 32], EndpointId), Tally>) {
        for ((pool, peer), x) in from {
            let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
            let e = t.entry((pool, peer)).or_default();
            e.bytes += x.bytes;
            e.blobs += x.blobs;
            if e.last == [0; 32] {
                e.last = x.last;
            }
        }
    }
}

/// Serves blobs from the store to peers.
#[derive(Debug, Clone)]
pub struct BlobsProtocol {
    store: Arc<Store>,
    serving: Arc<Semaphore>,
    served: Arc<Served>,
}

impl BlobsProtocol {
    /// Serves from `store`, counting into `served`.
    pub fn new(store: Arc<Store>, served: Arc<Served>) -> Self {
        Self { store, serving: Arc::new(Semaphore::new(MAX_SERVING)), served }
    }

    async fn serve(
        &self,
        peer: EndpointId,
        mut send: SendStream,
        mut recv: RecvStream,
    ) -> Result<(), ServeError> {
        let req: Request = tokio::time::timeout(REQUEST_TIMEOUT, frame::read(&mut recv))
            .await
            .map_err(|_| ServeError::Timeout)??
            .ok_or(ServeError::Frame(FrameError::Truncated))?;
        match req {
            Request::Ping(n) => frame::write(&mut send, &Reply::Pong(n)).await?,
            Request::Get(ids, _) if ids.len() > MAX_IDS => {
                let why = format!("at most {MAX_IDS} ids per request");
                frame::write(&mut send, &Reply::Refused(why)).await?;
            }
            Request::Get(ids, pool) => {
                let tag = pool.map(|p| (*p, peer));
                self.send_blobs(&mut send, ids, tag).await?
            }
        }
        send.finish().map_err(|e| ServeError::Frame(FrameError::Stream(e.to_string())))?;
        Ok(())
    }

    async fn send_blobs(
        &self,
        send: &mut SendStream,
        ids: Vec<ByteArray<32>>,
        tag: Option<([u8; 32], EndpointId)>,
    ) -> Result<(), ServeError> {
        let (mut rx, reader) = read_ahead(self.store.clone(), ids);
        while let Some(blob) = rx.recv().await {
            let write = async {
                match blob {
                    Some((kind, bytes, id)) => {
                        let len = bytes.len() as u64;
                        frame::write(send, &Reply::Have { kind: kind as u8, len: len as u32 })
                            .await?;
                        // Handing over the buffer, not copying it.
                        send.write_chunk(Bytes::from(bytes))
                            .await
                            .map_err(|e| FrameError::Stream(e.to_string()))?;
                        self.served.blobs.fetch_add(1, Ordering::Relaxed);
                        self.served.bytes.fetch_add(len, Ordering::Relaxed);
                        if let Some((pool, peer)) = tag {
                            self.served.tagged.add(pool, peer, id, len);
                        }
                        Ok(())
                    }
                    None => frame::write(send, &Reply::Missing).await,
                }
            };
            tokio::time::timeout(STALL_TIMEOUT, write).await.map_err(|_| ServeError::Timeout)??;
        }
        drop(rx);
        let _ = reader.await;
        Ok(())
    }
}

/// A blob read for serving: its kind, bytes and id; `None` when the store lacks it.
pub type ReadBlob = Option<(BlobKind, Vec<u8>, [u8; 32])>;

/// Reads `ids` from `store` on a blocking thread, at most two blobs ahead of the receiver (the
/// network), in order. A blob that does not read back is served as missing.
pub fn read_ahead(
    store: Arc<Store>,
    ids: Vec<ByteArray<32>>,
) -> (mpsc::Receiver<ReadBlob>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<ReadBlob>(2);
    let reader = tokio::task::spawn_blocking(move || {
        let mut blobs = store.blob_reader();
        for id in ids {
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

#[derive(Debug, thiserror::Error)]
enum ServeError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("the peer stalled")]
    Timeout,
}

impl ProtocolHandler for BlobsProtocol {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        conn.set_max_concurrent_bi_streams(MAX_STREAMS_PER_CONN.into());
        let peer = conn.remote_id();
        while let Ok((send, recv)) = conn.accept_bi().await {
            let Ok(permit) = self.serving.clone().acquire_owned().await else { break };
            let this = self.clone();
            tokio::spawn(async move {
                if let Err(e) = this.serve(peer, send, recv).await {
                    this.served.bad_requests.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(peer = %peer.fmt_short(), error = %e, "dropped a bad blob request");
                }
                drop(permit);
            });
        }
        Ok(())
    }
}

/// A verified blob from a peer, in the pieces it arrived in (no copy into one buffer).
#[derive(Debug, Clone)]
pub struct Blob {
    /// Its id (the BLAKE3 hash of its bytes, checked).
    pub id: ChunkId,
    /// What the sender stores it as.
    pub kind: BlobKind,
    /// Its bytes, in order.
    pub parts: Vec<Bytes>,
}

impl Blob {
    /// Its length.
    pub fn len(&self) -> usize {
        self.parts.iter().map(Bytes::len).sum()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a fetch got.
#[derive(Debug, Clone, Default)]
pub struct FetchReport {
    /// Blobs received.
    pub blobs: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Ids no live peer had.
    pub missing: Vec<ChunkId>,
    /// Peers dropped during the fetch, with the reason.
    pub failed_peers: Vec<(EndpointId, String)>,
    /// Peers asked.
    pub peers_asked: usize,
    /// What each peer sent (verified blobs only).
    pub by_peer: HashMap<EndpointId, Tally>,
}

/// How a peer is reached: directly, or over a link (see [`super::link`]).
pub enum Route {
    /// An iroh connection.
    Direct(Connection),
    /// A link through a neighbour.
    Link(Arc<dyn Link>),
}

/// The last attempt to link a peer.
struct LinkAttempt {
    at: Instant,
    error: Option<String>,
    running: bool,
}

/// Connections to peers, reused by fetches and pings; and links to peers that cannot be
/// dialed, when a linker is set.
pub struct Connections {
    endpoint: Endpoint,
    conns: Mutex<HashMap<EndpointId, Connection>>,
    links: Mutex<HashMap<EndpointId, Arc<dyn Link>>>,
    attempts: Mutex<HashMap<EndpointId, LinkAttempt>>,
    linker: OnceLock<Arc<dyn Linker>>,
    /// Peers at whose addresses another key answered (said once each).
    other_keys: Mutex<HashMap<EndpointId, ()>>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections").finish_non_exhaustive()
    }
}

/// Marks a link attempt as no longer running if its caller went away before it ended.
struct AttemptGuard<'a> {
    conns: &'a Connections,
    peer: EndpointId,
    done: bool,
}

impl Drop for AttemptGuard<'_> {
    fn drop(&mut self) {
        if !self.done
            && let Some(a) = lock_map(&self.conns.attempts).get_mut(&self.peer)
        {
            a.running = false;
            a.error = Some("the last link attempt was abandoned".into());
        }
    }
}

/// Whether a dial failed because the node at the address has another key (TLS names the
/// certificate as not issued for the expected key).
fn other_key(error: &str) -> bool {
    error.contains("invalid peer certificate")
}

/// Why dialling `peer` failed, in words for people: the transport's own text only when it
/// says something they can act on.
pub fn connect_error(peer: &EndpointId, error: &dyn std::fmt::Display) -> String {
    let text = error.to_string();
    if other_key(&text) {
        format!(
            "another key answers at the address of {}: the device there is not that node any more",
            peer.fmt_short()
        )
    } else if text.contains("No addressing information") {
        format!(
            "no address is known for {} (it is not announced on this LAN now, and no ticket names it)",
            peer.fmt_short()
        )
    } else {
        format!("cannot connect to {}: {text}", peer.fmt_short())
    }
}

fn lock_map<K, V>(m: &Mutex<HashMap<K, V>>) -> std::sync::MutexGuard<'_, HashMap<K, V>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Connections {
    /// A pool over `endpoint`.
    pub fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            conns: Mutex::new(HashMap::new()),
            links: Mutex::new(HashMap::new()),
            attempts: Mutex::new(HashMap::new()),
            other_keys: Mutex::new(HashMap::new()),
            linker: OnceLock::new(),
        }
    }

    /// Sets the linker used for peers that do not answer directly (once).
    pub fn set_linker(&self, linker: Arc<dyn Linker>) {
        let _ = self.linker.set(linker);
    }

    /// The open link to `peer`, if any (a closed one is forgotten).
    pub fn link_to(&self, peer: &EndpointId) -> Option<Arc<dyn Link>> {
        let mut links = lock_map(&self.links);
        match links.get(peer) {
            Some(l) if l.is_open() => Some(l.clone()),
            Some(_) => {
                links.remove(peer);
                None
            }
            None => None,
        }
    }

    /// Open links, by peer, with their routes.
    pub fn links(&self) -> Vec<(EndpointId, String)> {
        let mut links = lock_map(&self.links);
        links.retain(|_, l| l.is_open());
        links.iter().map(|(p, l)| (*p, l.route())).collect()
    }

    /// Why the last attempt to link `peer` failed, if it did.
    pub fn link_error(&self, peer: &EndpointId) -> Option<String> {
        lock_map(&self.attempts).get(peer).and_then(|a| a.error.clone())
    }

    /// How `peer` is reached: its open link, else a direct connection, else (with a linker)
    /// a new link, unless one failed in the last `LINK_RETRY` and `force` is false. The
    /// error says why each way failed.
    pub async fn route(&self, peer: EndpointId, force: bool) -> Result<Route, String> {
        if let Some(l) = self.link_to(&peer) {
            return Ok(Route::Link(l));
        }
        let direct = match self.get(peer).await {
            Ok(c) => return Ok(Route::Direct(c)),
            Err(e) => e,
        };
        let Some(linker) = self.linker.get().cloned() else { return Err(direct) };
        // A neighbour would find the same other node at that address.
        if self.is_other_key(&peer) {
            return Err(direct);
        }
        {
            let mut attempts = lock_map(&self.attempts);
            if let Some(a) = attempts.get(&peer) {
                if a.running {
                    return Err(format!("{direct}; a link through a neighbour is being made"));
                }
                if !force && a.at.elapsed() < LINK_RETRY {
                    let why = a.error.clone().unwrap_or_default();
                    return Err(format!("{direct}; {why}"));
                }
            }
            attempts.insert(peer, LinkAttempt { at: Instant::now(), error: None, running: true });
        }
        // A caller that stops waiting (a fetch that finished without this peer) must not leave
        // the attempt marked as running for good.
        let mut guard = AttemptGuard { conns: self, peer, done: false };
        tracing::debug!(peer = %peer.fmt_short(), %direct, "linking a peer through a neighbour");
        let made = tokio::time::timeout(LINK_TIMEOUT, linker.link(peer))
            .await
            .unwrap_or_else(|_| Err("making a link through a neighbour timed out".into()));
        let error = made.as_ref().err().cloned();
        guard.done = true;
        lock_map(&self.attempts)
            .insert(peer, LinkAttempt { at: Instant::now(), error, running: false });
        match made {
            Ok(l) => {
                tracing::info!(peer = %peer.fmt_short(), route = %l.route(), "linked a peer that cannot be dialed");
                if let Some(old) = lock_map(&self.links).insert(peer, l.clone()) {
                    old.close();
                }
                Ok(Route::Link(l))
            }
            Err(e) => Err(format!("{direct}; {e}")),
        }
    }

    /// An open connection to `peer`, dialed by id (addresses from the peer table).
    pub async fn get(&self, peer: EndpointId) -> Result<Connection, String> {
        let cached = self.lock().get(&peer).cloned();
        if let Some(c) = cached.filter(|c| c.close_reason().is_none()) {
            return Ok(c);
        }
        let conn = tokio::time::timeout(REQUEST_TIMEOUT, self.endpoint.connect(peer, ALPN))
            .await
            .map_err(|_| "connecting timed out".to_string())?
            .map_err(|e| {
                if other_key(&e.to_string()) {
                    self.other_key_at(peer)
                } else {
                    connect_error(&peer, &e)
                }
            })?;
        lock_map(&self.other_keys).remove(&peer);
        self.lock().insert(peer, conn.clone());
        Ok(conn)
    }

    /// Notes that another key answers at `peer`'s addresses, says so once in plain words, and
    /// returns the error for the caller.
    fn other_key_at(&self, peer: EndpointId) -> String {
        if lock_map(&self.other_keys).insert(peer, ()).is_none() {
            tracing::warn!(
                peer = %peer.fmt_short(),
                "another node answers at the address of {peer}: that device was replaced or \
                 reinstalled. If it is gone for good, its owner retires it with \
                 `kith device revoke {}` on another of their devices",
                peer.fmt_short()
            );
        }
        format!(
            "another key answers at the address of {}: the device there is not that node any more",
            peer.fmt_short()
        )
    }

    /// Whether the last dial of `peer` found another key at its addresses.
    pub fn is_other_key(&self, peer: &EndpointId) -> bool {
        lock_map(&self.other_keys).contains_key(peer)
    }

    /// Whether a connection to `peer` is kept open.
    pub fn has_connection(&self, peer: &EndpointId) -> bool {
        self.lock().get(peer).is_some_and(|c| c.close_reason().is_none())
    }

    /// Forgets a connection (and a link) that misbehaved.
    pub fn drop_peer(&self, peer: &EndpointId) {
        if let Some(c) = self.lock().remove(peer) {
            c.close(0u32.into(), b"dropped");
        }
        if let Some(l) = lock_map(&self.links).remove(peer) {
            l.close();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<EndpointId, Connection>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks `peer` whether it is there (directly, or over a link; see [`Connections::route`]).
    pub async fn ping(&self, peer: EndpointId, force: bool) -> Result<(), String> {
        let conn = match self.route(peer, force).await? {
            Route::Direct(c) => c,
            Route::Link(l) => {
                let r = tokio::time::timeout(REQUEST_TIMEOUT, l.ping())
                    .await
                    .unwrap_or_else(|_| Err("no answer over the link".into()));
                if r.is_err() {
                    self.drop_peer(&peer);
                }
                return r;
            }
        };
        let result = tokio::time::timeout(REQUEST_TIMEOUT, async {
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
            let nonce = rand_u64();
            frame::write(&mut send, &Request::Ping(nonce)).await.map_err(|e| e.to_string())?;
            send.finish().map_err(|e| e.to_string())?;
            match frame::read::<Reply>(&mut recv).await.map_err(|e| e.to_string())? {
                Some(Reply::Pong(n)) if n == nonce => Ok(()),
                other => Err(format!("unexpected reply {other:?}")),
            }
        })
        .await
        .unwrap_or_else(|_| Err("no answer".into()));
        if result.is_err() {
            self.drop_peer(&peer);
        }
        result
    }
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    u64::from_le_bytes(b)
}

#[derive(Default)]
struct FetchState {
    /// Ids still to fetch, in order.
    pending: VecDeque<ChunkId>,
    /// Peers that said they do not have an id.
    lacking: HashMap<ChunkId, HashSet<EndpointId>>,
    /// Batches being fetched.
    in_flight: usize,
    /// Peers still in this fetch.
    live: HashSet<EndpointId>,
    report: FetchReport,
}

impl FetchState {
    /// Takes up to a batch of ids that `peer` has not said it lacks.
    fn take_for(&mut self, peer: &EndpointId) -> Vec<ChunkId> {
        let mut batch = Vec::new();
        let mut rest = VecDeque::with_capacity(self.pending.len());
        for id in self.pending.drain(..) {
            let lacks = self.lacking.get(&id).is_some_and(|s| s.contains(peer));
            if batch.len() < FETCH_BATCH && !lacks { batch.push(id) } else { rest.push_back(id) }
        }
        self.pending = rest;
        batch
    }

    /// Gives up on pending ids that every live peer lacks (all of them if no peer is left).
    fn give_up_hopeless(&mut self) {
        let (live, lacking) = (&self.live, &self.lacking);
        let hopeless = |id: &ChunkId| {
            live.is_empty() || lacking.get(id).is_some_and(|s| live.iter().all(|p| s.contains(p)))
        };
        let (gone, keep): (Vec<ChunkId>, Vec<ChunkId>) = self.pending.drain(..).partition(hopeless);
        self.pending = keep.into();
        self.report.missing.extend(gone);
    }
}

/// Fetches `ids` from the peers in `peers`, sending each verified blob to `sink` (in no
/// particular order). Memory stays bounded by the sink's capacity and the stream count.
pub async fn fetch(
    conns: Arc<Connections>,
    peers: &PeerTable,
    ids: Vec<ChunkId>,
    sink: mpsc::Sender<Blob>,
) -> FetchReport {
    fetch_from(conns, peers.candidates(), ids, None, sink).await
}

/// Like [`fetch`], from these peers (in order of preference; the first
/// `MAX_FETCH_PEERS` are used), on behalf of `pool` if given (the servers count what they
/// send for it; the report says what each peer sent).
pub async fn fetch_from(
    conns: Arc<Connections>,
    candidates: Vec<EndpointId>,
    ids: Vec<ChunkId>,
    pool: Option<[u8; 32]>,
    sink: mpsc::Sender<Blob>,
) -> FetchReport {
    let candidates: Vec<EndpointId> = candidates.into_iter().take(MAX_FETCH_PEERS).collect();
    let mut st = FetchState { live: candidates.iter().copied().collect(), ..FetchState::default() };
    st.report.peers_asked = candidates.len();
    if candidates.is_empty() {
        st.report.missing = ids;
        return st.report;
    }
    st.pending = ids.into();
    let state = Arc::new(Mutex::new(st));
    let wake = Arc::new(Notify::new());
    let mut tasks = tokio::task::JoinSet::new();
    for peer in candidates {
        for _ in 0..STREAMS_PER_PEER {
            let (conns, state, wake, sink) =
                (conns.clone(), state.clone(), wake.clone(), sink.clone());
            tasks
                .spawn(async move { fetch_worker(&conns, peer, pool, &state, &wake, &sink).await });
        }
    }
    drop(sink);
    // Done when nothing is left to ask for and nothing is in flight: a worker still dialling a
    // peer that is gone (a dial, then a link through a neighbour, may take tens of seconds)
    // must not hold the fetch up, so the rest are stopped then.
    loop {
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let st = lock(&state);
            if st.pending.is_empty() && st.in_flight == 0 {
                break;
            }
        }
        tokio::select! {
            r = tasks.join_next() => if r.is_none() { break },
            _ = &mut notified => {}
        }
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    let mut st = lock(&state);
    let left: Vec<ChunkId> = st.pending.drain(..).collect();
    st.report.missing.extend(left);
    std::mem::take(&mut st.report)
}

fn lock(state: &Mutex<FetchState>) -> std::sync::MutexGuard<'_, FetchState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

async fn fetch_worker(
    conns: &Connections,
    peer: EndpointId,
    pool: Option<[u8; 32]>,
    state: &Mutex<FetchState>,
    wake: &Notify,
    sink: &mpsc::Sender<Blob>,
) {
    // Reach the peer before taking any work: a peer that cannot be reached holds no blobs back
    // from the others while it times out.
    if let Err(why) = conns.route(peer, false).await {
        tracing::info!(peer = %peer.fmt_short(), error = %why, "dropping peer from this fetch");
        let mut st = lock(state);
        if st.live.remove(&peer) {
            st.report.failed_peers.push((peer, why));
        }
        st.give_up_hopeless();
        drop(st);
        wake.notify_waiters();
        return;
    }
    loop {
        // Registered before looking, so a change made after the look still wakes us.
        let notified = wake.notified();
        let batch = {
            let mut st = lock(state);
            if !st.live.contains(&peer) {
                return;
            }
            let batch = st.take_for(&peer);
            if batch.is_empty() && st.in_flight == 0 {
                // Nothing this peer can do, and nothing in flight that could change that.
                wake.notify_waiters();
                return;
            }
            if !batch.is_empty() {
                st.in_flight += 1;
            }
            batch
        };
        if batch.is_empty() {
            notified.await;
            continue;
        }
        let result = get_batch(conns, peer, pool, &batch, sink).await;
        {
            let mut st = lock(state);
            st.in_flight -= 1;
            let got = match &result {
                Ok((_, got)) | Err((got, _)) => got,
            };
            if let Some((last, _)) = got.last() {
                let t = st.report.by_peer.entry(peer).or_default();
                t.blobs += got.len() as u64;
                t.bytes += got.iter().map(|(_, len)| len).sum::<u64>();
                t.last = last.0;
            }
            match result {
                Ok((missing, _)) => {
                    st.report.blobs += (batch.len() - missing.len()) as u64;
                    for id in &missing {
                        st.lacking.entry(*id).or_default().insert(peer);
                    }
                    st.pending.extend(missing);
                }
                Err((done, why)) => {
                    tracing::info!(peer = %peer.fmt_short(), error = %why, "dropping peer from this fetch");
                    st.live.remove(&peer);
                    st.report.failed_peers.push((peer, why));
                    st.report.blobs += done.len() as u64;
                    let done: HashSet<ChunkId> = done.into_iter().map(|(id, _)| id).collect();
                    st.pending.extend(batch.into_iter().filter(|id| !done.contains(id)));
                    conns.drop_peer(&peer);
                }
            }
            st.give_up_hopeless();
        }
        wake.notify_waiters();
    }
}

/// What `get_batch` received: each id with its length.
pub type Received = Vec<(ChunkId, u64)>;

/// Asks `peer` for `ids`; returns the ids it does not have and what it received, or on
/// failure what it received before it failed and why.
async fn get_batch(
    conns: &Connections,
    peer: EndpointId,
    pool: Option<[u8; 32]>,
    ids: &[ChunkId],
    sink: &mpsc::Sender<Blob>,
) -> Result<(Vec<ChunkId>, Received), (Received, String)> {
    let mut received = Vec::new();
    let fail = |received: &Received, why: String| (received.clone(), why);
    let conn = match conns.route(peer, false).await.map_err(|e| fail(&received, e))? {
        Route::Direct(c) => c,
        Route::Link(l) => return l.get(ids, pool, sink).await,
    };
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| fail(&received, e.to_string()))?;
    let req = Request::Get(
        ids.iter().map(|id| ByteArray::from(id.0)).collect(),
        pool.map(ByteArray::from),
    );
    frame::write(&mut send, &req).await.map_err(|e| fail(&received, e.to_string()))?;
    send.finish().map_err(|e| fail(&received, e.to_string()))?;
    let mut missing = Vec::new();
    for id in ids {
        let reply = tokio::time::timeout(STALL_TIMEOUT, frame::read::<Reply>(&mut recv))
            .await
            .map_err(|_| fail(&received, "stalled".into()))?
            .map_err(|e| fail(&received, e.to_string()))?;
        match reply {
            Some(Reply::Have { kind, len }) => {
                if len > MAX_BLOB_BYTES {
                    return Err(fail(&received, format!("announced a blob of {len} bytes")));
                }
                let parts =
                    tokio::time::timeout(STALL_TIMEOUT, read_blob(&mut recv, len as usize, id))
                        .await
                        .map_err(|_| fail(&received, "stalled".into()))?
                        .map_err(|e| fail(&received, e))?;
                let kind = BlobKind::from_u8(kind).unwrap_or(BlobKind::Chunk);
                if sink.send(Blob { id: *id, kind, parts }).await.is_err() {
                    return Err(fail(&received, "the fetch was cancelled".into()));
                }
                received.push((*id, u64::from(len)));
            }
            Some(Reply::Missing) => missing.push(*id),
            Some(other) => return Err(fail(&received, format!("unexpected reply {other:?}"))),
            None => return Err(fail(&received, "closed the stream early".into())),
        }
    }
    Ok((missing, received))
}

/// Reads a blob of `len` bytes as the pieces the stream delivers, hashing as it goes; fails
/// if the stream ends early or the bytes do not hash to `id`.
async fn read_blob(recv: &mut RecvStream, len: usize, id: &ChunkId) -> Result<Vec<Bytes>, String> {
    let mut parts = Vec::new();
    let mut hasher = blake3::Hasher::new();
    let mut got = 0;
    while got < len {
        match recv.read_chunk(len - got).await.map_err(|e| e.to_string())? {
            Some(chunk) => {
                got += chunk.len();
                hasher.update(&chunk);
                parts.push(chunk);
            }
            None => return Err("disconnected in the middle of a blob".into()),
        }
    }
    if ChunkId(*hasher.finalize().as_bytes()) != *id {
        return Err(format!("sent bytes that do not match chunk {id}"));
    }
    Ok(parts)
}
