//! Nodes that cannot dial each other, joined by a WebRTC data channel through a neighbour.
//!
//! Two nodes behind different NATs have no direct path, and kith has no relay server. If both
//! reach a third node (the neighbour), they exchange WebRTC descriptions through it over iroh
//! (`kith/signal/1`), learn their outside addresses from the neighbour's STUN responder, and
//! open a data channel straight to each other (ICE punches through NATs that map a socket to
//! one outside port whatever the destination, as Linux masquerading and most home routers
//! do). The channel then carries the `kith/blobs/1` requests and replies, so the fetcher and
//! the pinger use it like a connection ([`crate::net::link`]). The WebRTC plumbing is
//! [`crate::net::rtc`], which browsers' channels use too.
//!
//! ```text
//! A → B  Want{to: C}                 B dials C (kith/signal/1), else Cannot(why)
//! B → A  Go{stun: PORT}              A gathers (host + srflx from B's STUN), signs its offer
//! A → B  Offer(signed by A)          B checks it is A's, forwards
//! B → C  Incoming{offer, stun}       C checks A's signature, answers, signs
//! C → B → A  Answer(signed by C)     A checks C's signature and that it answers this offer
//! ```
//!
//! The descriptions carry the DTLS fingerprints, so signing them end to end means the
//! neighbour cannot put itself in the middle: it only passes messages on. Every message is a
//! bounded frame; a neighbour relays at most [`MAX_RELAYS`] at once, a node keeps at most
//! [`MAX_SESSIONS`] channels it answered.

mod answer;
mod ice;
mod link;
mod offer;
mod relay;
mod signal;
pub mod stun;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::net::Node;
use crate::net::link::{Link, LinkFuture, Linker};
use iroh::endpoint::{Connection, RecvStream, SendStream};
use iroh::protocol::{AcceptError, ProtocolHandler};
use iroh::{EndpointId, SecretKey};
use tokio::sync::Semaphore;
use webrtc::peer_connection::PeerConnection;

use signal::{read_frame, write_frame};

pub use signal::{Description, Signal, SignalError, Signed};

/// The signalling protocol's ALPN.
pub const SIGNAL_ALPN: &[u8] = b"kith/signal/1";
/// Signalling relayed at once by one neighbour.
pub const MAX_RELAYS: usize = 8;
/// Channels a node answered, open at once.
pub const MAX_SESSIONS: usize = 16;
/// Neighbours asked per link.
const MAX_NEIGHBOURS: usize = 4;
/// Time to dial a neighbour or the far node, or for a frame to arrive.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for the far node to answer (it gathers candidates first).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);
/// Time to gather candidates (host, and srflx from the neighbour's STUN).
const GATHER_TIMEOUT: Duration = Duration::from_secs(5);
/// A channel with no request for this long is closed (the pinger asks every 2 s).
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How far a description's time may be from ours.
const MAX_SKEW_MS: u64 = 10 * 60 * 1000;
/// What a signature covers, before the description.
const SIGN_CONTEXT: &[u8] = b"kith-signal-1\0";

/// Counters for `kith status`.
#[derive(Debug, Default)]
pub struct MeshStats {
    /// Links this node made (offers answered by the far node and opened).
    pub links_made: AtomicU64,
    /// Attempts that failed.
    pub links_failed: AtomicU64,
    /// Signalling this node passed on as a neighbour.
    pub relayed: AtomicU64,
    /// Signalling it refused (bad, busy, or the far node unreachable).
    pub refused: AtomicU64,
    /// Blobs sent over channels this node answered.
    pub served_blobs: AtomicU64,
    /// Their bytes.
    pub served_bytes: AtomicU64,
    /// Bytes of messages received over links (requests, replies and blob pieces, counted on
    /// arrival; a blob is verified by its id once whole).
    pub received_bytes: AtomicU64,
    /// STUN binding requests answered.
    pub stun_answered: AtomicU64,
    /// How long the last link took to make (signalling, gathering, ICE, DTLS, SCTP), in ms.
    pub last_setup_ms: AtomicU64,
}

/// An open link, for `kith status`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct MeshLink {
    /// The peer.
    pub peer: String,
    /// How it is reached.
    pub route: String,
}

/// The mesh's counters and open links, for `kith status` (see [`MeshStats`]).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct MeshStatus {
    /// Links open now.
    pub links: Vec<MeshLink>,
    /// Channels this node answered, open now.
    pub answered_sessions: usize,
    /// Links this node made.
    pub links_made: u64,
    /// Attempts that failed.
    pub links_failed: u64,
    /// Signalling passed on as a neighbour.
    pub relayed: u64,
    /// Signalling refused.
    pub refused: u64,
    /// Blobs sent over channels this node answered.
    pub served_blobs: u64,
    /// Their bytes.
    pub served_bytes: u64,
    /// Bytes of messages received over links (see [`MeshStats::received_bytes`]).
    pub received_bytes: u64,
    /// The STUN responder's port.
    pub stun_port: Option<u16>,
    /// STUN binding requests answered.
    pub stun_answered: u64,
    /// How long the last link took to make, in ms.
    pub last_setup_ms: u64,
}

/// One node's part in the mesh over WebRTC: neighbour (relaying signalling, answering STUN),
/// far node (answering offers and serving blobs over the channel), and linker.
pub struct Mesh {
    key: SecretKey,
    node: OnceLock<Arc<Node>>,
    stun_port: OnceLock<u16>,
    relays: Arc<Semaphore>,
    sessions: Mutex<HashMap<u64, Arc<dyn PeerConnection>>>,
    next: AtomicU64,
    stats: Arc<MeshStats>,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn short(id: &EndpointId) -> String {
    id.fmt_short().to_string()
}

impl Mesh {
    /// The mesh part of a node with node key `key` (attach the node once it runs).
    pub fn new(key: SecretKey) -> Arc<Mesh> {
        Arc::new(Mesh {
            key,
            node: OnceLock::new(),
            stun_port: OnceLock::new(),
            relays: Arc::new(Semaphore::new(MAX_RELAYS)),
            sessions: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            stats: Arc::new(MeshStats::default()),
        })
    }

    /// Attaches the running node, and becomes its linker.
    pub fn attach(self: &Arc<Self>, node: Arc<Node>) {
        node.set_linker(self.clone());
        let _ = self.node.set(node);
    }

    /// Answers STUN binding requests on `sock` (its port is told to nodes asking this one to
    /// pass on signalling) until `cancel`.
    pub fn serve_stun(
        &self,
        sock: tokio::net::UdpSocket,
        cancel: tokio_util::sync::CancellationToken,
    ) -> std::io::Result<tokio::task::JoinHandle<()>> {
        let port = sock.local_addr()?.port();
        let _ = self.stun_port.set(port);
        let stats = self.stats.clone();
        Ok(tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                let (n, from) = tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = sock.recv_from(&mut buf) => match r {
                        Ok(x) => x,
                        Err(_) => continue,
                    },
                };
                if let Some(reply) = stun::binding_response(&buf[..n], from) {
                    stats.stun_answered.fetch_add(1, Ordering::Relaxed);
                    let _ = sock.send_to(&reply, from).await;
                }
            }
        }))
    }

    /// Counters and open channels, for `kith status`.
    pub fn status(&self) -> MeshStatus {
        let s = &self.stats;
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let links = self
            .node
            .get()
            .map(|n| n.links())
            .unwrap_or_default()
            .into_iter()
            .map(|(p, route)| MeshLink { peer: p.to_string(), route })
            .collect();
        MeshStatus {
            links,
            answered_sessions: lock(&self.sessions).len(),
            links_made: n(&s.links_made),
            links_failed: n(&s.links_failed),
            relayed: n(&s.relayed),
            refused: n(&s.refused),
            served_blobs: n(&s.served_blobs),
            served_bytes: n(&s.served_bytes),
            received_bytes: n(&s.received_bytes),
            stun_port: self.stun_port.get().copied(),
            stun_answered: n(&s.stun_answered),
            last_setup_ms: n(&s.last_setup_ms),
        }
    }

    fn node(&self) -> Result<&Arc<Node>, String> {
        self.node.get().ok_or_else(|| "the node is starting".to_string())
    }

    fn me(&self) -> EndpointId {
        self.key.public()
    }

    /// One signalling stream.
    async fn handle(
        self: &Arc<Self>,
        conn: &Connection,
        mut send: SendStream,
        mut recv: RecvStream,
    ) -> Result<(), String> {
        let result = match read_frame(&mut recv, STEP_TIMEOUT).await {
            Ok(Signal::Want { to }) => self.relay(conn, &mut send, &mut recv, *to).await,
            Ok(Signal::Incoming { offer, stun }) => match self.answer(conn, &offer, stun).await {
                Ok(answer) => write_frame(&mut send, &Signal::Answer(answer)).await,
                Err(e) => Err(e),
            },
            Ok(_) => Err("expected Want or Incoming".into()),
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            let _ = write_frame(&mut send, &Signal::Cannot(e.clone())).await;
        }
        let _ = send.finish();
        // Let the frame reach the other side before the stream is dropped.
        let _ = tokio::time::timeout(STEP_TIMEOUT, send.stopped()).await;
        result
    }
}

impl Linker for Mesh {
    fn link(&self, peer: EndpointId) -> LinkFuture<'_, Result<Arc<dyn Link>, String>> {
        Box::pin(async move {
            let node = self.node()?;
            let linked: Vec<EndpointId> = node.links().into_iter().map(|(p, _)| p).collect();
            let neighbours: Vec<EndpointId> = node
                .peers()
                .into_iter()
                .filter(|p| {
                    p.reachability == crate::net::peers::Reachability::Reachable
                        && p.id != peer
                        && !linked.contains(&p.id)
                })
                .map(|p| p.id)
                .take(MAX_NEIGHBOURS)
                .collect();
            if neighbours.is_empty() {
                self.stats.links_failed.fetch_add(1, Ordering::Relaxed);
                return Err(
                    "no neighbour to pass signalling on: this node reaches no other peer directly"
                        .into(),
                );
            }
            let mut why = Vec::new();
            for n in neighbours {
                let t = std::time::Instant::now();
                match self.link_via(n, peer).await {
                    Ok(l) => {
                        self.stats.links_made.fetch_add(1, Ordering::Relaxed);
                        let ms = t.elapsed().as_millis() as u64;
                        self.stats.last_setup_ms.store(ms, Ordering::Relaxed);
                        return Ok(Arc::new(l) as Arc<dyn Link>);
                    }
                    Err(e) => why.push(format!("{}: {e}", short(&n))),
                }
            }
            self.stats.links_failed.fetch_add(1, Ordering::Relaxed);
            Err(format!("no neighbour could join us ({})", why.join("; ")))
        })
    }
}

/// Every signalling stream of a connection (the protocol handler for [`SIGNAL_ALPN`]).
#[derive(Debug, Clone)]
pub struct SignalProtocol(pub Arc<Mesh>);

impl ProtocolHandler for SignalProtocol {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        conn.set_max_concurrent_bi_streams(4u32.into());
        while let Ok((send, recv)) = conn.accept_bi().await {
            let (mesh, conn) = (self.0.clone(), conn.clone());
            tokio::spawn(async move {
                if let Err(e) = mesh.handle(&conn, send, recv).await {
                    tracing::debug!(peer = %short(&conn.remote_id()), error = %e, "signalling refused");
                }
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
