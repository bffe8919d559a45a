//! Connections to peers, kept open and reused, and links through neighbours to peers that
//! cannot be dialed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use iroh::endpoint::Connection;
use iroh::{Endpoint, EndpointId};

use super::{ALPN, LINK_RETRY, LINK_TIMEOUT, REQUEST_TIMEOUT, Reply, Request};
use crate::net::frame;
use crate::net::link::{Link, Linker};

/// How a peer is reached: directly, or over a link (see [`crate::net::link`]).
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
    /// This node's proof that it is a device of its identity, sent with every request.
    proof: OnceLock<super::DeviceProof>,
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
            proof: OnceLock::new(),
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
