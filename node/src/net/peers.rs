//! The peer table: every node this node knows, how it learned of it, and whether it answers.
//!
//! Peers come from mDNS (on this LAN) and from tickets (`kith peer add`); ticket peers are
//! saved in `HOME/peers.cbor` and come back after a restart. The table is also this node's
//! iroh address lookup: dialing a node id uses the addresses here, and nothing else.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::RwLock;

use iroh::EndpointId;
use iroh::address_lookup::{AddressLookup, EndpointData, EndpointInfo, Error as LookupError, Item};
use iroh_base::TransportAddr;
use minicbor::{Decode, Encode};
use n0_future::boxed::BoxStream;
use n0_future::stream::{self, StreamExt};

use super::ticket::NodeTicket;
use crate::keys::now_ms;

/// Version of `peers.cbor`.
const PEERS_FILE_VERSION: u32 = 1;
/// Peers remembered; beyond this, discovery ignores new ones (bounds memory on a hostile LAN).
pub const MAX_PEERS: usize = 1024;
/// Most peers known only because they dialled this node (not announced on mDNS, not from a
/// ticket): a stranger with many keys fills these, never the room mDNS and tickets need.
pub const MAX_DIALLED: usize = 64;
const MAX_PEERS_FILE: u64 = 1 << 20;

/// Whether a peer answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reachability {
    /// Not tried yet.
    Unknown,
    /// Answered the last ping.
    Reachable,
    /// Did not answer the last ping.
    Unreachable,
    /// Another key answers at its addresses (the device there was replaced or reinstalled).
    OtherKey,
}

impl Reachability {
    /// A word for tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Reachable => "reachable",
            Self::Unreachable => "unreachable",
            Self::OtherKey => "another key at its address",
        }
    }
}

/// What the table knows about one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's node id.
    pub id: EndpointId,
    /// Addresses to dial.
    pub addrs: Vec<SocketAddr>,
    /// Currently announced on the LAN by mDNS.
    pub mdns: bool,
    /// Added by ticket (and saved).
    pub manual: bool,
    /// Whether it answers.
    pub reachability: Reachability,
    /// Last time it answered (ms since the epoch).
    pub last_seen_ms: Option<u64>,
    /// What its last answer to a ping said (round trip, version, clock).
    pub pong: Option<Pong>,
}

/// What a peer's last answer to a ping said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pong {
    /// Round trip, in ms.
    pub rtt_ms: u32,
    /// Its kith version, as it says.
    pub version: Option<String>,
    /// Its clock minus this node's (ms), as it says.
    pub clock_offset_ms: Option<i64>,
}

#[derive(Debug, Clone)]
struct Entry {
    addrs: BTreeSet<SocketAddr>,
    mdns: bool,
    manual: bool,
    reachability: Reachability,
    last_seen_ms: Option<u64>,
    pong: Option<Pong>,
}

/// The table; shared between discovery, the pinger, the fetcher and iroh.
#[derive(Debug)]
pub struct PeerTable {
    me: EndpointId,
    file: PathBuf,
    inner: RwLock<HashMap<EndpointId, Entry>>,
    /// Peers forgotten on purpose (devices their owners retired): never added again.
    forgotten: RwLock<std::collections::HashSet<EndpointId>>,
    /// Woken when a peer appears (or reappears), so it is pinged at once.
    pub news: tokio::sync::Notify,
}

#[derive(Encode, Decode)]
#[cbor(array)]
struct SavedPeers {
    #[n(0)]
    version: u32,
    #[n(1)]
    peers: Vec<String>,
}

/// Why the saved peers could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot save peers to {path}: {source}")]
pub struct SavePeersError {
    path: PathBuf,
    source: std::io::Error,
}

impl PeerTable {
    /// A table for node `me`, with the ticket peers saved in `file`.
    pub fn load(me: EndpointId, file: PathBuf) -> Self {
        let table = Self {
            me,
            file,
            inner: RwLock::new(HashMap::new()),
            forgotten: RwLock::new(std::collections::HashSet::new()),
            news: tokio::sync::Notify::new(),
        };
        for t in table.saved_tickets() {
            table.upsert(t.id, &t.addrs, false, true);
        }
        table
    }

    fn saved_tickets(&self) -> Vec<NodeTicket> {
        let Ok(bytes) = std::fs::read(&self.file) else { return Vec::new() };
        if bytes.len() as u64 > MAX_PEERS_FILE {
            tracing::warn!(file = %self.file.display(), "peers file too large; ignored");
            return Vec::new();
        }
        match minicbor::decode::<SavedPeers>(&bytes) {
            Ok(saved) if saved.version <= PEERS_FILE_VERSION => {
                saved.peers.iter().filter_map(|t| t.parse().ok()).collect()
            }
            Ok(saved) => {
                tracing::warn!(version = saved.version, "peers file from a newer kith; ignored");
                Vec::new()
            }
            Err(e) => {
                tracing::warn!(file = %self.file.display(), error = %e, "damaged peers file; ignored");
                Vec::new()
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<EndpointId, Entry>> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<EndpointId, Entry>> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds or updates a peer. Returns false if it is this node or the table is full.
    pub fn upsert(&self, id: EndpointId, addrs: &[SocketAddr], mdns: bool, manual: bool) -> bool {
        if id == self.me || self.forgotten.read().unwrap_or_else(|p| p.into_inner()).contains(&id) {
            return false;
        }
        let mut map = self.write();
        if !map.contains_key(&id) && map.len() >= MAX_PEERS {
            return false;
        }
        let e = map.entry(id).or_insert_with(|| Entry {
            addrs: BTreeSet::new(),
            mdns: false,
            manual: false,
            reachability: Reachability::Unknown,
            last_seen_ms: None,
            pong: None,
        });
        let news = e.reachability != Reachability::Reachable;
        if mdns {
            // A fresh announcement replaces what mDNS said before (the node may have moved).
            e.addrs = addrs.iter().copied().collect();
            e.mdns = true;
        } else {
            e.addrs.extend(addrs.iter().copied());
        }
        e.manual |= manual;
        drop(map);
        if news {
            self.news.notify_one();
        }
        true
    }

    /// Adds a peer from a ticket and saves it.
    pub fn add_ticket(&self, t: &NodeTicket) -> Result<bool, SavePeersError> {
        if !self.upsert(t.id, &t.addrs, false, true) {
            return Ok(false);
        }
        let mut saved: Vec<NodeTicket> =
            self.saved_tickets().into_iter().filter(|s| s.id != t.id).collect();
        saved.push(t.clone());
        self.save(&saved)?;
        Ok(true)
    }

    /// Forgets a peer for good (a device its owner retired): out of the table and the saved
    /// tickets, and never added again. Returns whether it was not forgotten already.
    pub fn forget(&self, id: &EndpointId) -> Result<bool, SavePeersError> {
        if !self.forgotten.write().unwrap_or_else(|p| p.into_inner()).insert(*id) {
            return Ok(false);
        }
        let known = self.write().remove(id).is_some();
        let saved = self.saved_tickets();
        if saved.iter().any(|t| t.id == *id) {
            let rest: Vec<NodeTicket> = saved.into_iter().filter(|t| t.id != *id).collect();
            self.save(&rest)?;
        }
        Ok(known)
    }

    fn save(&self, saved: &[NodeTicket]) -> Result<(), SavePeersError> {
        let file = SavedPeers {
            version: PEERS_FILE_VERSION,
            peers: saved.iter().map(|t| t.to_string()).collect(),
        };
        let bytes = minicbor::to_vec(&file).expect("encoding into a Vec cannot fail");
        crate::fsutil::write_atomic(&self.file, &bytes, 0o600)
            .map_err(|source| SavePeersError { path: self.file.clone(), source })
    }

    /// Records that another key answers at the peer's addresses; true the first time.
    pub fn record_other_key(&self, id: &EndpointId) -> bool {
        match self.write().get_mut(id) {
            Some(e) if e.reachability != Reachability::OtherKey => {
                e.reachability = Reachability::OtherKey;
                true
            }
            _ => false,
        }
    }

    /// mDNS no longer announces the peer.
    pub fn mdns_gone(&self, id: &EndpointId) {
        if let Some(e) = self.write().get_mut(id) {
            e.mdns = false;
        }
    }

    /// Notes a node that dialled this one, at the address it came from, unless it is known
    /// already or [`MAX_DIALLED`] such nodes are; whether it was added.
    pub fn note_dialler(&self, id: EndpointId, addrs: &[SocketAddr]) -> bool {
        {
            let map = self.read();
            if map.contains_key(&id)
                || map.values().filter(|e| !e.mdns && !e.manual).count() >= MAX_DIALLED
            {
                return false;
            }
        }
        self.upsert(id, addrs, false, false)
    }

    /// Whether `id` is in the table.
    pub fn knows(&self, id: &EndpointId) -> bool {
        self.read().contains_key(id)
    }

    /// Records the result of a ping.
    pub fn record(&self, id: &EndpointId, answered: bool) {
        if let Some(e) = self.write().get_mut(id) {
            e.reachability =
                if answered { Reachability::Reachable } else { Reachability::Unreachable };
            if answered {
                e.last_seen_ms = Some(now_ms());
            }
        }
    }

    /// Records a peer's answer to a ping (it answered: [`PeerTable::record`] too).
    pub fn record_pong(&self, id: &EndpointId, p: &super::blobs::Pinged) {
        self.record(id, true);
        if let Some(e) = self.write().get_mut(id) {
            // A busy link answers for itself without a pong: what the last one said stands.
            if p.facts.is_none() && e.pong.is_some() {
                return;
            }
            e.pong = Some(Pong {
                rtt_ms: p.rtt.as_millis().min(u32::MAX as u128) as u32,
                version: p.facts.as_ref().map(|f| f.version.clone()),
                clock_offset_ms: p.clock_offset_ms,
            });
        }
    }

    /// Every peer, sorted by id.
    pub fn list(&self) -> Vec<PeerInfo> {
        let mut v: Vec<PeerInfo> = self
            .read()
            .iter()
            .map(|(id, e)| PeerInfo {
                id: *id,
                addrs: e.addrs.iter().copied().collect(),
                mdns: e.mdns,
                manual: e.manual,
                reachability: e.reachability,
                last_seen_ms: e.last_seen_ms,
                pong: e.pong.clone(),
            })
            .collect();
        v.sort_by_key(|p| *p.id.as_bytes());
        v
    }

    /// Peers worth asking for data: reachable first, then not yet tried.
    pub fn candidates(&self) -> Vec<EndpointId> {
        let map = self.read();
        let mut v: Vec<(u8, EndpointId)> = map
            .iter()
            .filter(|(_, e)| !e.addrs.is_empty())
            .map(|(id, e)| {
                // Peers known only because they dialled in come after those announced on the
                // LAN or named by a ticket: anyone can dial, so they never crowd the others out.
                let dialled = if e.mdns || e.manual { 0 } else { 4 };
                let rank = dialled
                    + match e.reachability {
                        Reachability::Reachable => 0,
                        Reachability::Unknown => 1,
                        Reachability::Unreachable => 2,
                        Reachability::OtherKey => 3,
                    };
                (rank, *id)
            })
            .collect();
        v.sort_by_key(|(r, id)| (*r, *id.as_bytes()));
        v.into_iter().map(|(_, id)| id).collect()
    }

    pub(crate) fn addrs(&self, id: &EndpointId) -> Option<Vec<SocketAddr>> {
        self.read().get(id).map(|e| e.addrs.iter().copied().collect())
    }
}

impl AddressLookup for PeerTable {
    fn resolve(&self, id: EndpointId) -> Option<BoxStream<Result<Item, LookupError>>> {
        let addrs = self.addrs(&id).filter(|a| !a.is_empty())?;
        let data = EndpointData::new(addrs.into_iter().map(TransportAddr::Ip).collect());
        let item = Item::new(EndpointInfo::from_parts(id, data), "kith-peers", None);
        Some(stream::iter(Some(Ok(item))).boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticket_peers_are_saved_and_mdns_replaces_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let me = iroh::SecretKey::generate().public();
        let other = iroh::SecretKey::generate().public();
        let file = dir.path().join("peers.cbor");
        let t = PeerTable::load(me, file.clone());
        let a: SocketAddr = "10.0.0.2:1".parse().unwrap();
        let b: SocketAddr = "10.0.0.3:1".parse().unwrap();
        assert!(t.add_ticket(&NodeTicket { id: other, addrs: vec![a] }).unwrap());
        assert!(!t.upsert(me, &[a], true, false), "never myself");
        // Nodes that dial in: a bounded share of the table, and never fetch candidates.
        let strangers: Vec<EndpointId> = (0..MAX_DIALLED + 10)
            .map(|i| iroh::SecretKey::from_bytes(&[i as u8 + 50; 32]).public())
            .collect();
        let added = strangers.iter().filter(|id| t.note_dialler(**id, &[a])).count();
        assert_eq!(added, MAX_DIALLED);
        let first = t.candidates();
        assert!(!strangers.contains(&first[0]), "the ticket peer comes first: {first:?}");
        let neighbour = iroh::SecretKey::from_bytes(&[250; 32]).public();
        assert!(t.upsert(neighbour, &[a], true, false), "mDNS still has room");
        let again = PeerTable::load(me, file);
        assert_eq!(again.list().len(), 1);
        assert!(again.list()[0].manual);
        again.upsert(other, &[b], true, false);
        again.upsert(other, &[b], true, false);
        assert_eq!(again.list()[0].addrs, vec![b]);
        again.record(&other, false);
        assert_eq!(again.list()[0].reachability, Reachability::Unreachable);
    }
}
