//! Connections to peers, kept open and reused, and links through neighbours to peers that
//! cannot be dialed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use iroh::endpoint::{ConnectError, ConnectWithOptsError, Connection, ConnectionError};
use iroh::{Endpoint, EndpointId};

use tokio::sync::mpsc;

use super::wire::{GetResult, LinkWire, StreamWire};
use super::{
    ALPN, LANE_DIAL_TIMEOUT, LANES_PER_PEER, LINK_RETRY, LINK_TIMEOUT, REQUEST_TIMEOUT,
    STALL_TIMEOUT,
};
use crate::ids::ChunkId;
use crate::net::frame::FrameError;
use crate::net::link::{Link, Linker};
use crate::net::peers::SavePeersError;

/// How a peer is reached: directly, or over a link (see [`crate::net::link`]).
pub enum Route {
    /// An iroh connection.
    Direct(Connection),
    /// A link through a neighbour.
    Link(Arc<LinkClient>),
}

/// A link carrying `kith/blobs/1` requests, one at a time: a link is one channel, and the
/// replies of two requests would interleave on it.
pub struct LinkClient {
    link: Arc<dyn Link>,
    busy: tokio::sync::Mutex<()>,
}

impl LinkClient {
    /// Requests over `link`.
    pub fn new(link: Arc<dyn Link>) -> Self {
        Self { link, busy: tokio::sync::Mutex::new(()) }
    }

    /// The link.
    pub fn link(&self) -> &Arc<dyn Link> {
        &self.link
    }

    fn wire(&self) -> LinkWire<'_> {
        LinkWire { link: &*self.link, wait: STALL_TIMEOUT }
    }

    /// Asks for `ids` over the link (as [`Connections::route`]'s direct connections are asked).
    pub async fn get(
        &self,
        ids: &[ChunkId],
        pool: Option<[u8; 32]>,
        proof: Option<super::DeviceProof>,
        sink: &mpsc::Sender<super::Blob>,
    ) -> GetResult {
        let _one = self.busy.lock().await;
        let r = super::wire::get(&mut self.wire(), ids, pool, proof, sink).await;
        if r.is_err() {
            // The replies of this request may still be coming: the channel is out of step.
            self.link.close();
        }
        r
    }

    /// Whether the peer answers over the link.
    pub async fn ping(&self, nonce: u64) -> Result<Option<super::Facts>, LinkError> {
        // A request in flight is progress the stall timeout watches; a ping queued behind a
        // long batch would only time out and close a working link.
        let Ok(_one) = self.busy.try_lock() else {
            return if self.link.is_open() {
                Ok(None)
            } else {
                Err(LinkError::Link("the link closed".into()))
            };
        };
        let r = super::wire::ping(&mut self.wire(), nonce).await;
        if r.is_err() {
            self.link.close();
        }
        r
    }
}

/// One further connection: dialled once per lease (by whichever stream asks first; the
/// others wait for it), `None` if the dial failed, so the lease's streams use the first
/// connection without dialling again.
type Lane = Arc<tokio::sync::OnceCell<Option<Connection>>>;

/// One dial of a peer, its outcome shared by every caller that waited for it.
type Dial = Arc<tokio::sync::OnceCell<Result<Connection, String>>>;

/// The further connections to one peer (lanes 1 and up), and how many leases use them.
#[derive(Default)]
struct Lanes {
    users: usize,
    lanes: [Lane; LANES_PER_PEER - 1],
}

impl Lanes {
    /// Closes the lanes' connections and starts afresh.
    fn close(&mut self, why: &'static [u8]) {
        for lane in std::mem::take(&mut self.lanes) {
            if let Some(Some(c)) = lane.get() {
                close(c, why);
            }
        }
    }
}

/// A fetch's use of a peer's further connections; the last lease of a peer closes them.
pub struct LaneLease {
    conns: Arc<Connections>,
    peer: EndpointId,
}

impl Drop for LaneLease {
    fn drop(&mut self) {
        let mut lanes = lock_map(&self.conns.lanes);
        let Some(l) = lanes.get_mut(&self.peer) else { return };
        l.users -= 1;
        if l.users == 0 {
            l.close(b"done");
            lanes.remove(&self.peer);
        }
    }
}

/// The last attempt to link a peer.
struct LinkAttempt {
    at: Instant,
    error: Option<String>,
    running: bool,
    /// Becomes true when the attempt ends (its sender is the attempt's guard).
    ended: tokio::sync::watch::Receiver<bool>,
}

/// Connections to peers, reused by fetches and pings; and links to peers that cannot be
/// dialed, when a linker is set.
pub struct Connections {
    endpoint: Endpoint,
    conns: Mutex<HashMap<EndpointId, Connection>>,
    /// Further connections to peers whose lanes are leased (see [`Connections::lease_lanes`]).
    lanes: Mutex<HashMap<EndpointId, Lanes>>,
    /// The dial under way to each peer (see [`Connections::get`]).
    dials: Mutex<HashMap<EndpointId, Dial>>,
    links: Mutex<HashMap<EndpointId, Arc<LinkClient>>>,
    attempts: Mutex<HashMap<EndpointId, LinkAttempt>>,
    linker: OnceLock<Arc<dyn Linker>>,
    /// Peers at whose addresses another key answered (said once each).
    other_keys: Mutex<HashMap<EndpointId, ()>>,
    /// This node's proof that it is a device of its identity, sent with every request.
    proof: OnceLock<super::DeviceProof>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections").finish_non_exhaustive()
    }
}

/// Marks a link attempt as no longer running if its caller went away before it ended.
/// Whoever waits for the attempt is told when it ends, either way.
struct AttemptGuard<'a> {
    conns: &'a Connections,
    peer: EndpointId,
    done: bool,
    ended: tokio::sync::watch::Sender<bool>,
}

impl Drop for AttemptGuard<'_> {
    fn drop(&mut self) {
        if !self.done
            && let Some(a) = lock_map(&self.conns.attempts).get_mut(&self.peer)
        {
            a.running = false;
            a.error = Some("the last link attempt was abandoned".into());
        }
        self.ended.send_replace(true);
    }
}

/// Why a peer could not be added, reached or pinged. The message names the peer and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The ticket names this node itself.
    #[error("that is this node's own ticket")]
    OwnTicket,
    /// The peer table could not be saved.
    #[error(transparent)]
    Save(#[from] SavePeersError),
    /// The peer table has no room for another peer.
    #[error("the peer table is full")]
    TableFull,
    /// Dialling took longer than the request timeout.
    #[error("connecting timed out")]
    ConnectTimeout,
    /// Another key answers at the peer's addresses: the device there was replaced or
    /// reinstalled.
    #[error(
        "another key answers at the address of {}: the device there is not that node any more",
        .peer.fmt_short()
    )]
    OtherKey {
        /// The peer dialled.
        peer: EndpointId,
    },
    /// No address is known for the peer.
    #[error(
        "no address is known for {} (it is not announced on this LAN now, and no ticket names it)",
        .peer.fmt_short()
    )]
    NoAddress {
        /// The peer dialled.
        peer: EndpointId,
    },
    /// Dialling failed.
    #[error("cannot connect to {}: {source}", .peer.fmt_short())]
    Connect {
        /// The peer dialled.
        peer: EndpointId,
        /// What the transport said.
        #[source]
        source: ConnectError,
    },
    /// The peer cannot be dialled and a link to it through a neighbour is being made.
    #[error("{direct}; a link through a neighbour is being made")]
    Linking {
        /// Why dialling failed.
        direct: Box<LinkError>,
    },
    /// The peer can be reached neither directly nor through a neighbour.
    #[error("{direct}; {why}")]
    NoLink {
        /// Why dialling failed.
        direct: Box<LinkError>,
        /// Why no link was made (the linker's words, naming every neighbour asked).
        why: String,
    },
    /// The peer did not answer a ping in time.
    #[error("no answer")]
    NoAnswer,
    /// The peer did not answer a ping over its link in time.
    #[error("no answer over the link")]
    NoAnswerOverLink,
    /// The link failed (in the link's words).
    #[error("{0}")]
    Link(String),
    /// Another request's dial of the peer, which this one waited for, failed (in its words).
    #[error("{0}")]
    Dial(String),
    /// The connection failed during the request.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// A frame could not be written or read.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The peer answered a ping with something else.
    #[error("unexpected reply {0}")]
    UnexpectedReply(String),
}

/// Why dialling `peer` failed, for people: the transport's own text only when it says
/// something they can act on.
pub fn connect_error(peer: &EndpointId, error: ConnectError) -> LinkError {
    let peer = *peer;
    // TLS names the certificate as not issued for the expected key; iroh has no variant for it.
    if error.to_string().contains("invalid peer certificate") {
        return LinkError::OtherKey { peer };
    }
    match error {
        ConnectError::Connect { source: ConnectWithOptsError::NoAddress { .. }, .. } => {
            LinkError::NoAddress { peer }
        }
        source => LinkError::Connect { peer, source },
    }
}

pub(super) fn lock_map<K, V>(m: &Mutex<HashMap<K, V>>) -> std::sync::MutexGuard<'_, HashMap<K, V>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Connections {
    /// A pool over `endpoint`.
    pub fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            conns: Mutex::new(HashMap::new()),
            lanes: Mutex::new(HashMap::new()),
            dials: Mutex::new(HashMap::new()),
            links: Mutex::new(HashMap::new()),
            attempts: Mutex::new(HashMap::new()),
            other_keys: Mutex::new(HashMap::new()),
            proof: OnceLock::new(),
            linker: OnceLock::new(),
        }
    }

    /// Sets the linker used for peers that do not answer directly (once).
    pub fn set_linker(&self, linker: Arc<dyn Linker>) {
        let _ = self.linker.set(linker);
    }

    /// The open link to `peer`, if any (a closed one is forgotten).
    pub fn link_to(&self, peer: &EndpointId) -> Option<Arc<LinkClient>> {
        let mut links = lock_map(&self.links);
        match links.get(peer) {
            Some(l) if l.link.is_open() => Some(l.clone()),
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
        links.retain(|_, l| l.link.is_open());
        links.iter().map(|(p, l)| (*p, l.link.route())).collect()
    }

    /// Why the last attempt to link `peer` failed, if it did.
    pub fn link_error(&self, peer: &EndpointId) -> Option<String> {
        lock_map(&self.attempts).get(peer).and_then(|a| a.error.clone())
    }

    /// How `peer` is reached: its open link, else a direct connection, else (with a linker)
    /// a new link, unless one failed in the last `LINK_RETRY` and `force` is false. The
    /// error says why each way failed.
    pub async fn route(&self, peer: EndpointId, force: bool) -> Result<Route, LinkError> {
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
        let (ended, running) = {
            let mut attempts = lock_map(&self.attempts);
            match attempts.get(&peer) {
                Some(a) if a.running => (None, Some(a.ended.clone())),
                Some(a) if !force && a.at.elapsed() < LINK_RETRY => {
                    let why = a.error.clone().unwrap_or_default();
                    return Err(LinkError::NoLink { direct: Box::new(direct), why });
                }
                _ => {
                    let (tx, rx) = tokio::sync::watch::channel(false);
                    let attempt =
                        LinkAttempt { at: Instant::now(), error: None, running: true, ended: rx };
                    attempts.insert(peer, attempt);
                    (Some(tx), None)
                }
            }
        };
        if let Some(mut running) = running {
            // Someone asked on purpose: they get the running attempt's outcome, not a "later".
            if !force {
                return Err(LinkError::Linking { direct: Box::new(direct) });
            }
            let _ = tokio::time::timeout(LINK_TIMEOUT, running.wait_for(|ended| *ended)).await;
            if let Some(l) = self.link_to(&peer) {
                return Ok(Route::Link(l));
            }
            return Err(match lock_map(&self.attempts).get(&peer) {
                Some(a) if !a.running => LinkError::NoLink {
                    direct: Box::new(direct),
                    why: a.error.clone().unwrap_or_default(),
                },
                _ => LinkError::Linking { direct: Box::new(direct) },
            });
        }
        let ended = ended.expect("an attempt was started");
        // A caller that stops waiting (a fetch that finished without this peer) must not leave
        // the attempt marked as running for good.
        let mut guard = AttemptGuard { conns: self, peer, done: false, ended };
        tracing::debug!(peer = %peer.fmt_short(), %direct, "linking a peer through a neighbour");
        let made = tokio::time::timeout(LINK_TIMEOUT, linker.link(peer))
            .await
            .unwrap_or_else(|_| Err("making a link through a neighbour timed out".into()));
        let error = made.as_ref().err().cloned();
        guard.done = true;
        if let Some(a) = lock_map(&self.attempts).get_mut(&peer) {
            (a.at, a.error, a.running) = (Instant::now(), error, false);
        }
        match made {
            Ok(l) => {
                tracing::info!(peer = %peer.fmt_short(), route = %l.route(), "linked a peer that cannot be dialed");
                let l = Arc::new(LinkClient::new(l));
                if let Some(old) = lock_map(&self.links).insert(peer, l.clone()) {
                    old.link.close();
                }
                Ok(Route::Link(l))
            }
            Err(why) => Err(LinkError::NoLink { direct: Box::new(direct), why }),
        }
    }

    /// Lets fetches use up to `LANES_PER_PEER` (4) connections to `peer` until the lease is
    /// dropped; the extra connections are closed when the last lease of the peer goes.
    pub fn lease_lanes(self: &Arc<Self>, peer: EndpointId) -> LaneLease {
        lock_map(&self.lanes).entry(peer).or_default().users += 1;
        LaneLease { conns: self.clone(), peer }
    }

    /// Like [`Connections::route`], on connection `lane` of a direct route while the peer's
    /// lanes are leased (lane 0, a link, or no lease: the connection pings and small fetches
    /// use). A lane is dialled once per lease; one that cannot be dialled within
    /// `LANE_DIAL_TIMEOUT` (2 s) leaves its streams on lane 0 until the lease ends.
    pub async fn route_lane(&self, peer: EndpointId, lane: usize) -> Result<Route, LinkError> {
        let route = self.route(peer, false).await?;
        if lane == 0 || lane >= LANES_PER_PEER || !matches!(route, Route::Direct(_)) {
            return Ok(route);
        }
        let lane = match lock_map(&self.lanes).get(&peer) {
            None => return Ok(route),
            Some(l) => l.lanes[lane - 1].clone(),
        };
        let conn = lane
            .get_or_init(|| async {
                let dial = self.endpoint.connect(peer, ALPN);
                match tokio::time::timeout(LANE_DIAL_TIMEOUT, dial).await {
                    Ok(Ok(c)) => Some(c),
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %peer.fmt_short(), error = %e, "a further connection failed; this fetch uses the first");
                        None
                    }
                    Err(_) => {
                        tracing::debug!(peer = %peer.fmt_short(), "a further connection timed out; this fetch uses the first");
                        None
                    }
                }
            })
            .await;
        match conn {
            Some(c) if c.close_reason().is_none() => Ok(Route::Direct(c.clone())),
            // Failed, or closed since: the first connection carries the stream.
            _ => Ok(route),
        }
    }

    /// An open connection to `peer`, dialed by id (addresses from the peer table). One dial
    /// per peer at a time: callers that arrive while it runs share its outcome, so a peer sees
    /// one connection from us, not one per stream that wanted it (it refuses those past its cap
    /// per node), and a dead peer costs one timeout, not one each.
    pub async fn get(&self, peer: EndpointId) -> Result<Connection, LinkError> {
        if let Some(c) = self.cached(&peer) {
            return Ok(c);
        }
        let dial = lock_map(&self.dials).entry(peer).or_default().clone();
        let mut mine = None;
        let shared = dial
            .get_or_init(|| async {
                // A dial that ended while this caller looked up the gate.
                if let Some(c) = self.cached(&peer) {
                    return Ok(c);
                }
                self.dial(peer).await.map_err(|e| {
                    let said = e.to_string();
                    mine = Some(e);
                    said
                })
            })
            .await
            .clone();
        {
            let mut dials = lock_map(&self.dials);
            if dials.get(&peer).is_some_and(|d| Arc::ptr_eq(d, &dial)) {
                dials.remove(&peer);
            }
        }
        match (shared, mine) {
            (Ok(c), _) => Ok(c),
            (Err(_), Some(e)) => Err(e),
            (Err(said), None) => Err(LinkError::Dial(said)),
        }
    }

    /// The open connection to `peer` kept for pings and small fetches, if any.
    fn cached(&self, peer: &EndpointId) -> Option<Connection> {
        self.lock().get(peer).filter(|c| c.close_reason().is_none()).cloned()
    }

    /// Dials `peer` and keeps the connection.
    async fn dial(&self, peer: EndpointId) -> Result<Connection, LinkError> {
        let conn = tokio::time::timeout(REQUEST_TIMEOUT, self.endpoint.connect(peer, ALPN))
            .await
            .map_err(|_| LinkError::ConnectTimeout)?
            .map_err(|e| {
                let e = connect_error(&peer, e);
                if matches!(e, LinkError::OtherKey { .. }) {
                    self.other_key_at(peer);
                }
                e
            })?;
        lock_map(&self.other_keys).remove(&peer);
        self.lock().insert(peer, conn.clone());
        Ok(conn)
    }

    /// Notes that another key answers at `peer`'s addresses, and says so once in plain words.
    fn other_key_at(&self, peer: EndpointId) {
        if lock_map(&self.other_keys).insert(peer, ()).is_none() {
            tracing::warn!(
                peer = %peer.fmt_short(),
                "another node answers at the address of {peer}: that device was replaced or \
                 reinstalled. If it is gone for good, its owner retires it with \
                 `kith device revoke {}` on another of their devices",
                peer.fmt_short()
            );
        }
    }

    /// Whether the last dial of `peer` found another key at its addresses.
    pub fn is_other_key(&self, peer: &EndpointId) -> bool {
        lock_map(&self.other_keys).contains_key(peer)
    }

    /// Sets the proof sent with requests (once).
    pub fn set_device_proof(&self, proof: super::DeviceProof) {
        let _ = self.proof.set(proof);
    }

    /// This node's proof that it is a device of its identity.
    pub fn device_proof(&self) -> Option<super::DeviceProof> {
        self.proof.get().cloned()
    }

    /// Whether a connection to `peer` is kept open.
    pub fn has_connection(&self, peer: &EndpointId) -> bool {
        self.lock().get(peer).is_some_and(|c| c.close_reason().is_none())
    }

    /// Forgets a connection (and a link) that misbehaved.
    pub fn drop_peer(&self, peer: &EndpointId) {
        if let Some(c) = self.lock().remove(peer) {
            close(&c, b"dropped");
        }
        if let Some(l) = lock_map(&self.lanes).get_mut(peer) {
            l.close(b"dropped");
        }
        if let Some(l) = lock_map(&self.links).remove(peer) {
            l.link.close();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<EndpointId, Connection>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks `peer` whether it is there (directly, or over a link; see [`Connections::route`]).
    pub async fn ping(&self, peer: EndpointId, force: bool) -> Result<Pinged, LinkError> {
        let nonce = rand_u64();
        let conn = match self.route(peer, force).await? {
            Route::Direct(c) => c,
            Route::Link(l) => {
                let sent = (Instant::now(), crate::keys::now_ms() as i64);
                let r = tokio::time::timeout(REQUEST_TIMEOUT, l.ping(nonce))
                    .await
                    .unwrap_or(Err(LinkError::NoAnswerOverLink));
                if r.is_err() {
                    self.drop_peer(&peer);
                }
                return r.map(|facts| Pinged::new(sent, facts));
            }
        };
        let result = tokio::time::timeout(REQUEST_TIMEOUT, async {
            let (send, recv) = conn.open_bi().await?;
            let sent = (Instant::now(), crate::keys::now_ms() as i64);
            let facts = super::wire::ping(&mut StreamWire { send, recv }, nonce).await?;
            Ok(Pinged::new(sent, facts))
        })
        .await
        .unwrap_or(Err(LinkError::NoAnswer));
        if result.is_err() {
            let kept = self.lock().get(&peer).is_some_and(|c| c.stable_id() == conn.stable_id());
            if kept {
                self.drop_peer(&peer);
            } else {
                // A newer connection took its place while this ping failed (the peer refused
                // this one as too many, and a fetch dialled again and was let in): not this
                // ping's to close.
                close(&conn, b"dropped");
            }
        }
        result
    }
}

/// A peer's answer to a ping.
#[derive(Debug, Clone)]
pub struct Pinged {
    /// Round trip (from sending the ping on an open stream to its answer).
    pub rtt: std::time::Duration,
    /// What the peer says of itself (older nodes say nothing; a link busy with a batch is
    /// taken as an answer without one).
    pub facts: Option<super::Facts>,
    /// The peer's clock minus this node's, at the middle of the round trip (ms).
    pub clock_offset_ms: Option<i64>,
}

impl Pinged {
    fn new(sent: (Instant, i64), facts: Option<super::Facts>) -> Pinged {
        let rtt = sent.0.elapsed();
        let mid = sent.1 + (rtt.as_millis() / 2) as i64;
        let facts = facts.map(|mut f| {
            if f.version.len() > super::MAX_VERSION {
                let mut end = super::MAX_VERSION;
                while !f.version.is_char_boundary(end) {
                    end -= 1;
                }
                f.version.truncate(end);
            }
            f
        });
        let clock_offset_ms = facts.as_ref().map(|f| f.time_ms.saturating_sub(mid));
        Pinged { rtt, facts, clock_offset_ms }
    }
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    u64::from_le_bytes(b)
}

/// Closes `conn` unless it is closed already: closing again would replace the reason the peer
/// gave (such as [`BUSY`](super::BUSY)) with "locally closed" for everyone who reads it.
fn close(conn: &Connection, why: &[u8]) {
    if conn.close_reason().is_none() {
        conn.close(0u32.into(), why);
    }
}
