//! Nodes that cannot dial each other, joined by a WebRTC data channel through a neighbour.
//!
//! Two nodes behind different NATs have no direct path, and kith has no relay server. If both
//! reach a third node (the neighbour), they exchange WebRTC descriptions through it over iroh
//! (`kith/signal/1`), learn their outside addresses from the neighbour's STUN responder, and
//! open a data channel straight to each other (ICE punches through NATs that map a socket to
//! one outside port whatever the destination, as Linux masquerading and most home routers
//! do). The channel then carries the `kith/blobs/1` requests and replies, so the fetcher and
//! the pinger use it like a connection ([`kith_node::net::link`]).
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

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use iroh::endpoint::{Connection, RecvStream, SendStream};
use iroh::protocol::{AcceptError, ProtocolHandler};
use iroh::{EndpointId, SecretKey, Signature, TransportAddr};
use kith_node::net::Node;
use kith_node::net::blobs::{MAX_IDS, Reply, Request};
use kith_node::net::frame;
use kith_node::net::link::{Link, LinkFuture, Linker};
use minicbor::bytes::ByteArray;
use minicbor::{Decode, Encode};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use webrtc::data_channel::DataChannel;
use webrtc::peer_connection::{PeerConnection, RTCSessionDescription};

use crate::browser::{Events, is_gone, next_message, peer_connection, wait_open};

mod link;
pub mod stun;

use link::RtcLink;

/// The signalling protocol's ALPN.
pub const SIGNAL_ALPN: &[u8] = b"kith/signal/1";
/// Signalling relayed at once by one neighbour.
pub const MAX_RELAYS: usize = 8;
/// Channels a node answered, open at once.
pub const MAX_SESSIONS: usize = 16;
/// Largest message on a channel (the SCTP `max-message-size` both ends advertise).
const MAX_MESSAGE: usize = 64 << 10;
/// Neighbours asked per link.
const MAX_NEIGHBOURS: usize = 4;
/// Time to dial a neighbour or the far node, or for a frame to arrive.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for the far node to answer (it gathers candidates first).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);
/// Time to gather candidates (host, and srflx from the neighbour's STUN).
const GATHER_TIMEOUT: Duration = Duration::from_secs(5);
/// Time without progress on a reply before the link counts as stalled.
const STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// A channel with no request for this long is closed (the pinger asks every 2 s).
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How far a description's time may be from ours.
const MAX_SKEW_MS: u64 = 10 * 60 * 1000;
/// What a signature covers, before the description.
const SIGN_CONTEXT: &[u8] = b"kith-signal-1\0";

/// A signalling message (one frame each, see the module's table).
#[derive(Debug, Encode, Decode)]
pub enum Signal {
    /// Please pass my offer to this node.
    #[n(0)]
    Want {
        /// The far node.
        #[n(0)]
        to: ByteArray<32>,
    },
    /// I can reach it; my STUN responder listens on this UDP port of the address you reach me at.
    #[n(1)]
    Go {
        /// The port.
        #[n(0)]
        stun: u16,
    },
    /// A signed offer (to the neighbour).
    #[n(2)]
    Offer(#[n(0)] Signed),
    /// A signed answer.
    #[n(3)]
    Answer(#[n(0)] Signed),
    /// It cannot be done, and why.
    #[n(4)]
    Cannot(#[n(0)] String),
    /// A signed offer for you (from the neighbour), and its STUN port.
    #[n(5)]
    Incoming {
        /// The offer.
        #[n(0)]
        offer: Signed,
        /// The neighbour's STUN port.
        #[n(1)]
        stun: u16,
    },
}

/// A description and its sender's signature over `SIGN_CONTEXT` and `body`.
#[derive(Debug, Clone, Encode, Decode)]
pub struct Signed {
    /// The CBOR of a [`Description`].
    #[n(0)]
    #[cbor(with = "minicbor::bytes")]
    pub body: Vec<u8>,
    /// Ed25519 by the sender's node key.
    #[n(1)]
    pub sig: ByteArray<64>,
}

/// One side's session description.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct Description {
    /// Sender.
    #[n(0)]
    pub from: ByteArray<32>,
    /// Receiver.
    #[n(1)]
    pub to: ByteArray<32>,
    /// The SDP.
    #[n(2)]
    pub sdp: String,
    /// When it was made (ms since the epoch).
    #[n(3)]
    pub at_ms: u64,
    /// For an answer: the BLAKE3 of the offer's body it answers.
    #[n(4)]
    pub answers: Option<ByteArray<32>>,
}

impl Signed {
    /// Signs `d` with `key` (which must be `d.from`'s).
    pub fn sign(key: &SecretKey, d: &Description) -> Signed {
        let body = minicbor::to_vec(d).expect("encoding into a Vec cannot fail");
        let sig = key.sign(&signed_message(&body));
        Signed { body, sig: ByteArray::from(sig.to_bytes()) }
    }

    /// The description, if it is signed by its sender, addressed to `me`, and recent.
    pub fn open(&self, me: EndpointId, now_ms: u64) -> Result<Description, String> {
        let d: Description =
            minicbor::decode(&self.body).map_err(|e| format!("a malformed description: {e}"))?;
        let from = EndpointId::from_bytes(&d.from)
            .map_err(|_| "a description from an invalid node id".to_string())?;
        from.verify(&signed_message(&self.body), &Signature::from_bytes(&self.sig))
            .map_err(|_| format!("a description not signed by {}", from.fmt_short()))?;
        if *d.to != *me.as_bytes() {
            return Err("a description meant for another node".into());
        }
        if d.at_ms.abs_diff(now_ms) > MAX_SKEW_MS {
            return Err("a description too old or from the future (check the clocks)".into());
        }
        Ok(d)
    }

    /// The BLAKE3 of the body (what an answer names).
    pub fn hash(&self) -> [u8; 32] {
        *blake3::hash(&self.body).as_bytes()
    }
}

fn signed_message(body: &[u8]) -> Vec<u8> {
    [SIGN_CONTEXT, body].concat()
}

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
    /// Bytes of verified blobs received over links.
    pub received_bytes: AtomicU64,
    /// STUN binding requests answered.
    pub stun_answered: AtomicU64,
    /// How long the last link took to make (signalling, gathering, ICE, DTLS, SCTP), in ms.
    pub last_setup_ms: AtomicU64,
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

/// The IP address the selected path of `conn` reaches the other side at.
fn remote_ip(conn: &Connection) -> Option<IpAddr> {
    let paths = conn.paths();
    let mut any = None;
    for p in paths.iter() {
        if let TransportAddr::Ip(a) = p.remote_addr() {
            if p.is_selected() {
                return Some(a.ip());
            }
            any = Some(a.ip());
        }
    }
    any
}

/// The local address packets to `to` leave from (a routing lookup; nothing is sent).
fn local_ip_towards(to: IpAddr) -> SocketAddr {
    let any: SocketAddr =
        if to.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    std::net::UdpSocket::bind(any)
        .and_then(|s| {
            s.connect((to, 9))?;
            s.local_addr()
        })
        .map(|a| SocketAddr::new(a.ip(), 0))
        .unwrap_or(any)
}

fn stun_url(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("stun:{v4}:{port}"),
        IpAddr::V6(v6) => format!("stun:[{v6}]:{port}"),
    }
}

async fn read_frame(recv: &mut RecvStream, within: Duration) -> Result<Signal, String> {
    tokio::time::timeout(within, frame::read::<Signal>(recv))
        .await
        .map_err(|_| "no answer in time".to_string())?
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "the stream ended".to_string())
}

async fn write_frame(send: &mut SendStream, s: &Signal) -> Result<(), String> {
    frame::write(send, s).await.map_err(|e| e.to_string())
}

/// Waits for candidate gathering to end (or its time to run out: a STUN server that does not
/// answer leaves the host candidates).
async fn gather(events: &mut Events) {
    let _ = tokio::time::timeout(GATHER_TIMEOUT, events.gathered.recv()).await;
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
    pub fn status(&self) -> Value {
        let s = &self.stats;
        let links: Vec<Value> = self
            .node
            .get()
            .map(|n| n.links())
            .unwrap_or_default()
            .into_iter()
            .map(|(p, r)| json!({ "peer": p.to_string(), "route": r }))
            .collect();
        json!({
            "links": links,
            "answered_sessions": lock(&self.sessions).len(),
            "links_made": s.links_made.load(Ordering::Relaxed),
            "links_failed": s.links_failed.load(Ordering::Relaxed),
            "relayed": s.relayed.load(Ordering::Relaxed),
            "refused": s.refused.load(Ordering::Relaxed),
            "served_blobs": s.served_blobs.load(Ordering::Relaxed),
            "served_bytes": s.served_bytes.load(Ordering::Relaxed),
            "received_bytes": s.received_bytes.load(Ordering::Relaxed),
            "stun_port": self.stun_port.get(),
            "stun_answered": s.stun_answered.load(Ordering::Relaxed),
            "last_setup_ms": s.last_setup_ms.load(Ordering::Relaxed),
        })
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

    /// As the neighbour: pass one offer from `conn`'s node to `to` and the answer back.
    async fn relay(
        &self,
        conn: &Connection,
        send: &mut SendStream,
        recv: &mut RecvStream,
        to: [u8; 32],
    ) -> Result<(), String> {
        let node = self.node()?;
        let from = conn.remote_id();
        let to = EndpointId::from_bytes(&to).map_err(|_| "an invalid node id".to_string())?;
        if to == self.me() || to == from {
            return Err("that node is this one; dial it directly".into());
        }
        let stun = *self.stun_port.get().ok_or("this node runs no STUN responder")?;
        let _permit = self.relays.clone().try_acquire_owned().map_err(|_| {
            format!("{} is relaying as much as it can; try later", short(&self.me()))
        })?;
        let far = tokio::time::timeout(STEP_TIMEOUT, node.endpoint().connect(to, SIGNAL_ALPN))
            .await
            .map_err(|_| format!("{} cannot reach {}: timed out", short(&self.me()), short(&to)))?
            .map_err(|e| {
                format!(
                    "{} cannot reach {}: {}",
                    short(&self.me()),
                    short(&to),
                    kith_node::net::connect_error(&to, &e)
                )
            })?;
        tracing::debug!(from = %short(&from), to = %short(&to), "passing signalling on");
        write_frame(send, &Signal::Go { stun }).await?;
        let offer = match read_frame(recv, ANSWER_TIMEOUT).await? {
            Signal::Offer(o) => o,
            _ => return Err("expected an offer".into()),
        };
        // Only the node on this connection may send offers under its name.
        let d: Description =
            minicbor::decode(&offer.body).map_err(|e| format!("a malformed offer: {e}"))?;
        if *d.from != *from.as_bytes() || *d.to != *to.as_bytes() {
            return Err("the offer is not from this connection's node to the node named".into());
        }
        let (mut fsend, mut frecv) = far.open_bi().await.map_err(|e| e.to_string())?;
        write_frame(&mut fsend, &Signal::Incoming { offer, stun }).await?;
        let _ = fsend.finish();
        let reply = read_frame(&mut frecv, ANSWER_TIMEOUT)
            .await
            .map_err(|e| format!("{} did not answer: {e}", short(&to)))?;
        far.close(0u32.into(), b"done");
        match reply {
            Signal::Answer(a) => {
                self.stats.relayed.fetch_add(1, Ordering::Relaxed);
                write_frame(send, &Signal::Answer(a)).await
            }
            Signal::Cannot(why) => Err(format!("{} refused: {why}", short(&to))),
            _ => Err(format!("{} sent something else than an answer", short(&to))),
        }
    }

    /// As the far node: answer an offer relayed by `conn`'s node, and serve the channel.
    async fn answer(
        self: &Arc<Self>,
        conn: &Connection,
        offer: &Signed,
        stun: u16,
    ) -> Result<Signed, String> {
        let d = offer.open(self.me(), kith_node::keys::now_ms())?;
        let from = EndpointId::from_bytes(&d.from).map_err(|_| "an invalid node id")?;
        if lock(&self.sessions).len() >= MAX_SESSIONS {
            return Err(format!("{} has as many channels as it keeps", short(&self.me())));
        }
        let neighbour = remote_ip(conn).ok_or("no address for the neighbour")?;
        tracing::debug!(from = %short(&from), %neighbour, stun, offer = %d.sdp, "answering");
        let (pc, mut events) =
            peer_connection(local_ip_towards(neighbour), vec![stun_url(neighbour, stun)])
                .await
                .map_err(|e| e.to_string())?;
        let offer_sdp = RTCSessionDescription::offer(d.sdp).map_err(|e| e.to_string());
        let setup = async {
            pc.set_remote_description(offer_sdp?)
                .await
                .map_err(|e| format!("the offer's SDP was refused: {e}"))?;
            let a = pc.create_answer(None).await.map_err(|e| e.to_string())?;
            pc.set_local_description(a).await.map_err(|e| e.to_string())?;
            gather(&mut events).await;
            pc.local_description().await.ok_or_else(|| "no answer was made".to_string())
        };
        let local = match setup.await {
            Ok(l) => l,
            Err(e) => {
                let _ = pc.close().await;
                return Err(e);
            }
        };
        let answer = Description {
            from: ByteArray::from(*self.me().as_bytes()),
            to: d.from,
            sdp: local.sdp,
            at_ms: kith_node::keys::now_ms(),
            answers: Some(ByteArray::from(offer.hash())),
        };
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.sessions).insert(id, pc.clone());
        let this = self.clone();
        tokio::spawn(async move {
            let Events { channels: mut crx, state: mut srx, .. } = events;
            match tokio::time::timeout(crate::browser::OPEN_TIMEOUT, crx.recv()).await {
                Ok(Some(dc)) => {
                    let closed = async {
                        while srx.changed().await.is_ok() {
                            if is_gone(*srx.borrow()) {
                                break;
                            }
                        }
                    };
                    tokio::select! {
                        _ = this.serve(from, dc) => {}
                        _ = closed => tracing::info!(peer = %short(&from), "a linked peer went away"),
                    }
                }
                _ => {
                    tracing::info!(peer = %short(&from), "an offer never opened a channel; dropped")
                }
            }
            let _ = pc.close().await;
            lock(&this.sessions).remove(&id);
        });
        Ok(Signed::sign(&self.key, &answer))
    }

    /// Serves `kith/blobs/1` requests from `peer` on `dc` until it closes or idles.
    async fn serve(&self, peer: EndpointId, dc: Arc<dyn DataChannel>) {
        let Ok(node) = self.node() else { return };
        while let Some(msg) = next_message(&dc, IDLE_TIMEOUT).await {
            if msg.data.len() > MAX_MESSAGE {
                break;
            }
            let req: Request = match minicbor::decode(&msg.data) {
                Ok(r) => r,
                Err(e) => {
                    let why = format!("a malformed request: {e}");
                    if send_reply(&dc, &Reply::Refused(why)).await.is_err() {
                        break;
                    }
                    continue;
                }
            };
            let sent = match req {
                Request::Ping(n) => send_reply(&dc, &Reply::Pong(n)).await,
                Request::Get(ids, _) if ids.len() > MAX_IDS => {
                    let why = format!("at most {MAX_IDS} ids per request");
                    send_reply(&dc, &Reply::Refused(why)).await
                }
                Request::Get(ids, pool) => {
                    self.send_blobs(node, &dc, peer, ids, pool.map(|p| *p)).await
                }
            };
            if let Err(e) = sent {
                tracing::info!(peer = %short(&peer), error = %e, "a linked peer's channel failed");
                break;
            }
        }
    }

    async fn send_blobs(
        &self,
        node: &Arc<Node>,
        dc: &Arc<dyn DataChannel>,
        peer: EndpointId,
        ids: Vec<ByteArray<32>>,
        pool: Option<[u8; 32]>,
    ) -> Result<(), String> {
        let (mut rx, reader) = kith_node::net::blobs::read_ahead(node.store().clone(), ids);
        let served = node.served();
        while let Some(blob) = rx.recv().await {
            let write = async {
                match blob {
                    Some((kind, bytes, id)) => {
                        let len = bytes.len() as u64;
                        send_reply(dc, &Reply::Have { kind: kind as u8, len: len as u32 }).await?;
                        for part in bytes.chunks(MAX_MESSAGE) {
                            dc.send(BytesMut::from(part)).await.map_err(|e| e.to_string())?;
                        }
                        served.blobs.fetch_add(1, Ordering::Relaxed);
                        served.bytes.fetch_add(len, Ordering::Relaxed);
                        self.stats.served_blobs.fetch_add(1, Ordering::Relaxed);
                        self.stats.served_bytes.fetch_add(len, Ordering::Relaxed);
                        if let Some(pool) = pool {
                            served.tagged().add(pool, peer, id, len);
                        }
                        Ok(())
                    }
                    None => send_reply(dc, &Reply::Missing).await,
                }
            };
            tokio::time::timeout(STALL_TIMEOUT, write)
                .await
                .map_err(|_| "the peer stalled".to_string())??;
        }
        drop(rx);
        let _ = reader.await;
        Ok(())
    }

    /// As the node that wants a link: through `neighbour`, to `to`.
    async fn link_via(&self, neighbour: EndpointId, to: EndpointId) -> Result<RtcLink, String> {
        let node = self.node()?;
        let conn =
            tokio::time::timeout(STEP_TIMEOUT, node.endpoint().connect(neighbour, SIGNAL_ALPN))
                .await
                .map_err(|_| "connecting timed out".to_string())?
                .map_err(|e| kith_node::net::connect_error(&neighbour, &e))?;
        let result = self.offer_through(&conn, neighbour, to).await;
        conn.close(0u32.into(), b"done");
        result
    }

    async fn offer_through(
        &self,
        conn: &Connection,
        neighbour: EndpointId,
        to: EndpointId,
    ) -> Result<RtcLink, String> {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        write_frame(&mut send, &Signal::Want { to: ByteArray::from(*to.as_bytes()) }).await?;
        let stun = match read_frame(&mut recv, STEP_TIMEOUT * 2).await? {
            Signal::Go { stun } => stun,
            Signal::Cannot(why) => return Err(why),
            _ => return Err("answered something else than Go".into()),
        };
        let ip = remote_ip(conn).ok_or("no address for the neighbour")?;
        tracing::debug!(neighbour = %short(&neighbour), %ip, stun, "offering");
        let (pc, mut events) = peer_connection(local_ip_towards(ip), vec![stun_url(ip, stun)])
            .await
            .map_err(|e| e.to_string())?;
        let made = async {
            let e = |e: webrtc::error::Error| e.to_string();
            let dc = pc.create_data_channel("kith/blobs/1", None).await.map_err(e)?;
            let offer = pc.create_offer(None).await.map_err(e)?;
            pc.set_local_description(offer).await.map_err(e)?;
            gather(&mut events).await;
            let local = pc.local_description().await.ok_or("no offer was made")?;
            let d = Description {
                from: ByteArray::from(*self.me().as_bytes()),
                to: ByteArray::from(*to.as_bytes()),
                sdp: local.sdp,
                at_ms: kith_node::keys::now_ms(),
                answers: None,
            };
            let offer = Signed::sign(&self.key, &d);
            write_frame(&mut send, &Signal::Offer(offer.clone())).await?;
            let answer = match read_frame(&mut recv, ANSWER_TIMEOUT * 2).await? {
                Signal::Answer(a) => a,
                Signal::Cannot(why) => return Err(why),
                _ => return Err("answered something else than an answer".into()),
            };
            let a = answer.open(self.me(), kith_node::keys::now_ms())?;
            tracing::debug!(answer = %a.sdp, "answered");
            if *a.from != *to.as_bytes() {
                return Err("the answer is not from the node asked".into());
            }
            if a.answers.map(|h| *h) != Some(offer.hash()) {
                return Err("the answer is not for this offer".into());
            }
            let sdp = RTCSessionDescription::answer(a.sdp).map_err(|e| e.to_string())?;
            pc.set_remote_description(sdp)
                .await
                .map_err(|e| format!("the answer's SDP was refused: {e}"))?;
            wait_open(&dc)
                .await
                .map_err(|e| format!("{e} (no path between the two nodes: ICE failed)"))?;
            Ok(dc)
        };
        match made.await {
            Ok(dc) => Ok(RtcLink {
                pc,
                dc,
                route: format!("webrtc via {}", short(&neighbour)),
                state: events.state,
                busy: tokio::sync::Mutex::new(()),
                closed: AtomicBool::new(false),
                stats: self.stats.clone(),
            }),
            Err(e) => {
                let _ = pc.close().await;
                Err(e)
            }
        }
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
                    p.reachability == kith_node::net::peers::Reachability::Reachable
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

async fn send_reply(dc: &Arc<dyn DataChannel>, r: &Reply) -> Result<(), String> {
    let body = minicbor::to_vec(r).expect("encoding into a Vec cannot fail");
    dc.send(BytesMut::from(&body[..])).await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(from: &SecretKey, to: EndpointId, at_ms: u64) -> Description {
        Description {
            from: ByteArray::from(*from.public().as_bytes()),
            to: ByteArray::from(*to.as_bytes()),
            sdp: "v=0".into(),
            at_ms,
            answers: None,
        }
    }

    #[test]
    fn descriptions_open_only_when_signed_by_their_sender_for_us_and_recent() {
        let (a, c, b) = (SecretKey::generate(), SecretKey::generate(), SecretKey::generate());
        let now = kith_node::keys::now_ms();
        let good = Signed::sign(&a, &desc(&a, c.public(), now));
        assert_eq!(good.open(c.public(), now).unwrap().sdp, "v=0");
        // The neighbour signs an offer in A's name: refused.
        let forged = Signed::sign(&b, &desc(&a, c.public(), now));
        assert!(forged.open(c.public(), now).unwrap_err().contains("not signed by"));
        // A byte of the body changed after signing: refused.
        let mut tampered = good.clone();
        let last = tampered.body.len() - 1;
        tampered.body[last] ^= 1;
        assert!(tampered.open(c.public(), now).is_err());
        // For someone else, or stale.
        assert!(good.open(b.public(), now).unwrap_err().contains("another node"));
        let old = Signed::sign(&a, &desc(&a, c.public(), now - 11 * 60 * 1000));
        assert!(old.open(c.public(), now).unwrap_err().contains("too old"));
        // Garbage.
        let junk = Signed { body: vec![0xff, 0x00], sig: ByteArray::from([0u8; 64]) };
        assert!(junk.open(c.public(), now).unwrap_err().contains("malformed"));
    }

    #[test]
    fn stun_answers_binding_requests_with_the_xored_source() {
        let mut req = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
        req.extend_from_slice(&[7u8; 12]);
        let from: SocketAddr = "192.0.2.1:32853".parse().unwrap();
        let r = stun::binding_response(&req, from).unwrap();
        assert_eq!(&r[0..2], &[0x01, 0x01]);
        assert_eq!(&r[8..20], &[7u8; 12]);
        assert_eq!(u16::from_be_bytes([r[2], r[3]]) as usize, r.len() - 20);
        // RFC 5769's example encoding: port 32853 xor 0x2112, address xor the magic cookie.
        assert_eq!(&r[20..22], &[0x00, 0x20]);
        assert_eq!(u16::from_be_bytes([r[26], r[27]]), 32853 ^ 0x2112);
        let ip: Vec<u8> =
            r[28..32].iter().zip([0x21, 0x12, 0xA4, 0x42]).map(|(a, b)| a ^ b).collect();
        assert_eq!(ip, vec![192, 0, 2, 1]);
        // Not a binding request, truncated, or with a length that lies: no answer.
        assert!(stun::binding_response(&req[..19], from).is_none());
        let mut other = req.clone();
        other[1] = 0x03;
        assert!(stun::binding_response(&other, from).is_none());
        let mut lying = req.clone();
        lying[3] = 8;
        assert!(stun::binding_response(&lying, from).is_none());
    }

    #[test]
    fn signal_frames_round_trip() {
        let a = SecretKey::generate();
        let s = Signal::Incoming { offer: Signed::sign(&a, &desc(&a, a.public(), 1)), stun: 7780 };
        let bytes = minicbor::to_vec(&s).unwrap();
        match minicbor::decode::<Signal>(&bytes).unwrap() {
            Signal::Incoming { offer, stun } => {
                assert_eq!(stun, 7780);
                assert_eq!(minicbor::decode::<Description>(&offer.body).unwrap().at_ms, 1);
            }
            other => panic!("{other:?}"),
        }
    }
}
