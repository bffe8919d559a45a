//! The relay's front door: the TCP listener on the relay's address, in front of iroh's relay
//! server (which listens on loopback only).
//!
//! - It bounds what a stranger can hold before the relay knows who it is: at most
//!   [`MAX_PENDING`] connections that have not passed the relay's handshake, [`MAX_PENDING_PER_IP`]
//!   of them from one address, each cut [`HANDSHAKE`] after it came unless the relay let its
//!   node in by then (iroh-relay 1.4 has no bound on accepts and no timeout on its handshake
//!   after the HTTP upgrade). A request head over [`MAX_HEAD`] bytes is refused.
//! - It names each connection to the relay (a [`HEADER`] it sets on the upgrade request, any
//!   such header of the client's removed), so that the relay's admission tells it which node a
//!   connection carries, and it counts the bytes it exchanges with each node (both ways): the
//!   pool's ledger counts what the relay carried for each federated partner (a packet between
//!   a partner's node and this pool's counts once, on the partner's side; one between two of
//!   the partner's nodes twice, in and out, as it uses the relay's link twice).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use iroh::EndpointId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The header that names a connection to the relay server.
pub(super) const HEADER: &str = "x-kith-conn";
/// Connections not yet let in by the relay, in all.
const MAX_PENDING: usize = 256;
/// Such connections from one address.
const MAX_PENDING_PER_IP: usize = 16;
/// Time from accept to the relay letting the connection's node in.
pub(super) const HANDSHAKE: Duration = Duration::from_secs(10);
/// Bytes of a request head at most.
const MAX_HEAD: usize = 16 << 10;
/// Time a write to either side may wait.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Buffer per direction of a connection: with at most 4096 connections let in (the relay's
/// bound) and [`MAX_PENDING`] more, at most about 140 MiB in all, a few hundred KiB in use.
const BUFFER: usize = 16 << 10;

/// The connections the front door holds.
#[derive(Debug)]
pub(super) struct Gate {
    /// By the connection's name: a random 128-bit number, so that a client cannot name
    /// another's connection in a request of its own (a second request on a kept-alive
    /// connection reaches the server as the client wrote it).
    conns: Mutex<HashMap<u128, Conn>>,
    /// Where iroh's relay server listens now (it is started again after a stop).
    inner: RwLock<Option<SocketAddr>>,
    /// What nodes' connections that ended had sent, not yet taken.
    ended: Mutex<HashMap<EndpointId, u64>>,
    /// Connections refused at the door (too many pending, a head too large or too slow).
    refused: AtomicU64,
    handshake: Duration,
}

#[derive(Debug)]
struct Conn {
    ip: IpAddr,
    /// The node the relay let in on it.
    node: Option<EndpointId>,
    /// Bytes exchanged with the client not yet taken by [`Gate::take_bytes`].
    bytes: Arc<AtomicU64>,
}

/// Where a connection comes from, for the bound per source: an IPv4 address, or an IPv6
/// address's /64 (one host commonly holds a whole /64).
fn source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let o = v6.octets();
            let mut p = [0u8; 16];
            p[..8].copy_from_slice(&o[..8]);
            IpAddr::from(p)
        }
        IpAddr::V6(v6) => {
            IpAddr::V4(v6.to_ipv4_mapped().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED))
        }
        v4 => v4,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Gate {
    pub(super) fn new(handshake: Duration) -> Gate {
        Gate {
            conns: Mutex::default(),
            inner: RwLock::new(None),
            ended: Mutex::default(),
            refused: AtomicU64::new(0),
            handshake,
        }
    }

    /// Where the relay server listens now (`None` while it is not running).
    pub(super) fn set_inner(&self, addr: Option<SocketAddr>) {
        *self.inner.write().unwrap_or_else(|e| e.into_inner()) = addr;
    }

    fn inner(&self) -> Option<SocketAddr> {
        *self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Connections refused at the door so far.
    pub(super) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// A new connection from `ip`, unless too many are pending: its name and byte counter.
    fn open(&self, ip: IpAddr) -> Option<(u128, Arc<AtomicU64>)> {
        let ip = source(ip);
        let mut conns = lock(&self.conns);
        let pending = conns.values().filter(|c| c.node.is_none());
        let (mut all, mut from) = (0, 0);
        for c in pending {
            all += 1;
            from += usize::from(c.ip == ip);
        }
        if all >= MAX_PENDING || from >= MAX_PENDING_PER_IP {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let mut b = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).ok()?;
        let id = u128::from_le_bytes(b);
        let bytes = Arc::new(AtomicU64::new(0));
        conns.insert(id, Conn { ip, node: None, bytes: bytes.clone() });
        Some((id, bytes))
    }

    /// A connection held as if accepted (for tests of the admission).
    #[cfg(test)]
    pub(super) fn open_for_test(&self) -> u128 {
        self.open(IpAddr::from([127, 0, 0, 1])).map_or(0, |(id, _)| id)
    }

    /// The relay let `node` in on connection `conn`; false for a connection the door does not
    /// hold or one already let in (one node per connection, once).
    pub(super) fn admitted(&self, conn: u128, node: EndpointId) -> bool {
        match lock(&self.conns).get_mut(&conn) {
            Some(c) if c.node.is_none() => {
                c.node = Some(node);
                true
            }
            _ => false,
        }
    }

    fn is_admitted(&self, conn: u128) -> bool {
        lock(&self.conns).get(&conn).is_some_and(|c| c.node.is_some())
    }

    fn close(&self, conn: u128) -> Option<(Option<EndpointId>, u64)> {
        let c = lock(&self.conns).remove(&conn)?;
        Some((c.node, c.bytes.swap(0, Ordering::Relaxed)))
    }

    /// Bytes the relay exchanged with each node let in since the last call (connections that
    /// ended included).
    pub(super) fn take_bytes(&self) -> HashMap<EndpointId, u64> {
        let mut out: HashMap<EndpointId, u64> = HashMap::new();
        for c in lock(&self.conns).values() {
            if let Some(node) = c.node {
                *out.entry(node).or_default() += c.bytes.swap(0, Ordering::Relaxed);
            }
        }
        for (node, n) in std::mem::take(&mut *lock(&self.ended)) {
            *out.entry(node).or_default() += n;
        }
        out.retain(|_, n| *n > 0);
        out
    }
}

/// Accepts connections on `listener` until `stop`, each passed to the relay server through
/// the door.
pub(super) async fn serve(gate: Arc<Gate>, listener: TcpListener, stop: CancellationToken) {
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            Some(_) = tasks.join_next() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if let Some((id, bytes)) = gate.open(peer.ip()) {
                        tasks.spawn(one(gate.clone(), stream, id, bytes));
                    }
                }
                Err(e) => {
                    // Out of descriptors or a reset before accept: wait a moment, go on.
                    tracing::debug!(error = %e, "relay: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    tasks.shutdown().await;
}

/// One connection: its request head named and passed on, then bytes both ways, cut at the
/// handshake's deadline unless the relay let its node in.
async fn one(gate: Arc<Gate>, mut client: TcpStream, id: u128, bytes: Arc<AtomicU64>) {
    let deadline = tokio::time::Instant::now() + gate.handshake;
    // Err: refused, with the reason; Ok: ended (whichever side closed).
    let run = async {
        // Up to the relay's own reading, all within the deadline, let in or not.
        let start = async {
            let Some((head, rest)) = read_head(&mut client).await? else { return Ok(None) };
            let head = name(&head, id).ok_or("not an HTTP request")?;
            let Some(addr) = gate.inner() else { return Ok(None) };
            let Ok(mut inner) = TcpStream::connect(addr).await else { return Ok(None) };
            // Relay frames are small and latency-bound: no Nagle delay on either side
            // (iroh's server and client set it too).
            let _ = (client.set_nodelay(true), inner.set_nodelay(true));
            bytes.fetch_add((head.len() + rest.len()) as u64, Ordering::Relaxed);
            let sent = inner.write_all(&head).await.is_ok() && inner.write_all(&rest).await.is_ok();
            Ok::<_, &str>(sent.then_some(inner))
        };
        let inner = tokio::time::timeout_at(deadline, start).await.map_err(|_| "too slow")??;
        if let Some(inner) = inner {
            pipe(client, inner, &bytes).await;
        }
        Ok::<(), &str>(())
    };
    let late = async {
        tokio::time::sleep_until(deadline).await;
        if gate.is_admitted(id) {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        r = run => {
            if let Err(why) = r {
                gate.refused.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(why, "relay: a connection refused at the door");
            }
        }
        _ = late => {
            gate.refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("relay: cut a connection that did not pass the handshake in time");
        }
    }
    if let Some((Some(node), n)) = gate.close(id) {
        *lock(&gate.ended).entry(node).or_default() += n;
    }
}

/// Reads a request head (through the empty line): the head, and what came after it; `None`
/// when the client closed first.
async fn read_head(s: &mut TcpStream) -> Result<Option<(Vec<u8>, Vec<u8>)>, &'static str> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return Ok(None);
        }
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            let end = from + i + 4;
            let rest = buf.split_off(end);
            return Ok(Some((buf, rest)));
        }
        if buf.len() > MAX_HEAD {
            return Err("a request head over 16 KiB");
        }
    }
}

/// The head with the connection's name set (any [`HEADER`] the client sent removed); `None`
/// for what is not one request head (an empty line inside it would start another).
fn name(head: &[u8], id: u128) -> Option<Vec<u8>> {
    let body = head.strip_suffix(b"\r\n\r\n")?;
    let mut lines = body.split(|b| *b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let first = lines.next().filter(|l| !l.is_empty())?;
    let mut out = Vec::with_capacity(head.len() + 32);
    out.extend_from_slice(first);
    out.extend_from_slice(b"\r\n");
    for line in lines {
        if line.is_empty() {
            return None;
        }
        let field = line.split(|b| *b == b':').next().unwrap_or_default();
        if field.trim_ascii().eq_ignore_ascii_case(HEADER.as_bytes()) {
            continue;
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("{HEADER}: {id:032x}\r\n\r\n").as_bytes());
    Some(out)
}

/// Bytes both ways until either side ends, counted both ways (what the relay exchanged with
/// the client's node).
async fn pipe(client: TcpStream, inner: TcpStream, bytes: &AtomicU64) {
    let (cr, cw) = client.into_split();
    let (ir, iw) = inner.into_split();
    tokio::select! {
        _ = forward(cr, iw, bytes) => {}
        _ = forward(ir, cw, bytes) => {}
    }
}

/// Copies `r` to `w` until either ends, counting the bytes.
async fn forward(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    bytes: &AtomicU64,
) {
    let mut buf = vec![0u8; BUFFER];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                bytes.fetch_add(n as u64, Ordering::Relaxed);
                // A side that stops reading does not hold the connection for ever.
                match tokio::time::timeout(WRITE_TIMEOUT, w.write_all(&buf[..n])).await {
                    Ok(Ok(())) => {}
                    _ => break,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_named_and_a_name_the_client_gave_is_dropped() {
        let head =
            b"GET /relay HTTP/1.1\r\nHost: a\r\nX-Kith-Conn: 7\r\nUpgrade: websocket\r\n\r\n";
        let named = String::from_utf8(name(head, 0x42).unwrap()).unwrap();
        assert_eq!(
            named,
            "GET /relay HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nx-kith-conn: 00000000000000000000000000000042\r\n\r\n"
        );
        assert!(name(b"\r\n\r\n", 1).is_none());
        assert!(name(b"GET / HTTP/1.1\r\n", 1).is_none());
        // Two requests in one head (an empty line inside): not one request.
        assert!(name(b"GET / HTTP/1.1\r\n\nGET /relay HTTP/1.1\r\n\r\n", 1).is_none());
        // IPv6 sources count by /64.
        let a: IpAddr = "2001:db8:1:2::5".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(source(a), source(b));
        assert_ne!(source(a), source("2001:db8:1:3::5".parse().unwrap()));
    }

    /// A stranger that opens connections and says nothing: cut at the deadline, at most
    /// [`MAX_PENDING_PER_IP`] held at once; a head too large is refused at once.
    #[tokio::test]
    async fn strangers_hold_few_connections_and_not_for_long() {
        let gate = Arc::new(Gate::new(Duration::from_secs(3)));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(gate.clone(), listener, stop.clone()));
        let mut held = Vec::new();
        for _ in 0..MAX_PENDING_PER_IP + 4 {
            held.push(TcpStream::connect(addr).await.unwrap());
        }
        // The ones past the bound are closed at once (accepted last), the others are held
        // until the deadline, then closed: none is held for ever.
        let closed = |r: &Result<std::io::Result<usize>, _>| matches!(r, Ok(Ok(0)) | Ok(Err(_)));
        for s in &mut held[MAX_PENDING_PER_IP..] {
            let mut b = [0u8; 1];
            let r = tokio::time::timeout(Duration::from_secs(2), s.read(&mut b)).await;
            assert!(closed(&r), "a connection past the bound was held: {r:?}");
        }
        for s in &mut held[..MAX_PENDING_PER_IP] {
            let mut b = [0u8; 1];
            let r = tokio::time::timeout(Duration::from_millis(5), s.read(&mut b)).await;
            assert!(r.is_err(), "a connection within the bound was closed early: {r:?}");
        }
        for s in &mut held {
            let mut b = [0u8; 1];
            let r = tokio::time::timeout(Duration::from_secs(10), s.read(&mut b)).await;
            assert!(closed(&r), "a silent connection was kept: {r:?}");
        }
        assert!(lock(&gate.conns).is_empty());
        // A head over 16 KiB.
        let mut s = TcpStream::connect(addr).await.unwrap();
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD + 10));
        let _ = s.write_all(long.as_bytes()).await;
        let mut b = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_secs(2), s.read(&mut b)).await;
        assert!(closed(&r), "{r:?}");
        assert_eq!(gate.refused(), 4 + MAX_PENDING_PER_IP as u64 + 1);
        stop.cancel();
        task.await.unwrap();
    }
}
