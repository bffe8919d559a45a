//! The peer table: every node this node knows, how it learned of it, and whether it answers.
//!
//! Peers come from mDNS (on this LAN) and from tickets (`kith peer add`); ticket peers are
//! saved in `HOME/peers.cbor` and come back after a restart. The table is also this node's
//! iroh address lookup: dialing a node id uses the addresses here, and nothing else.

use std::collections::{BTreeSet, HashMap, HashSet};
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
    /// Added by ticket by this node's owner (`kith peer add`), not learned from a pool or a
    /// partner: a relay this node serves carries it.
    pub owner: bool,
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
    owner: bool,
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
    /// Held while the saved peers are read, changed and written back.
    saving: std::sync::Mutex<()>,
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
    /// Of those, the node ids its owner added (files from before it have none).
    #[n(2)]
    owner: Option<Vec<String>>,
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
            saving: std::sync::Mutex::new(()),
            news: tokio::sync::Notify::new(),
        };
        let (tickets, owner) = table.saved();
        for t in tickets {
            table.upsert(t.id, &t.addrs, false, true);
        }
        for id in &owner {
            if let Some(e) = table.write().get_mut(id) {
                e.owner = true;
            }
        }
        table
    }

    /// The saved tickets, and the ids of those the owner added.
    fn saved(&self) -> (Vec<NodeTicket>, HashSet<EndpointId>) {
        let none = || (Vec::new(), HashSet::new());
        let Ok(bytes) = std::fs::read(&self.file) else { return none() };
        if bytes.len() as u64 > MAX_PEERS_FILE {
            tracing::warn!(file = %self.file.display(), "peers file too large; ignored");
            return none();
        }
        match minicbor::decode::<SavedPeers>(&bytes) {
            Ok(saved) if saved.version <= PEERS_FILE_VERSION => (
                saved.peers.iter().filter_map(|t| t.parse().ok()).collect(),
                saved.owner.iter().flatten().filter_map(|id| id.parse().ok()).collect(),
            ),
            Ok(saved) => {
                tracing::warn!(version = saved.version, "peers file from a newer kith; ignored");
                none()
            }
            Err(e) => {
                tracing::warn!(file = %self.file.display(), error = %e, "damaged peers file; ignored");
                none()
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
            owner: false,
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

    /// Adds a peer from a ticket and saves it; `by_owner` when this node's owner added it
    /// (see [`PeerInfo::owner`]; a peer once added by its owner stays so).
    pub fn add_ticket(&self, t: &NodeTicket, by_owner: bool) -> Result<bool, SavePeersError> {
        if !self.upsert(t.id, &t.addrs, false, true) {
            return Ok(false);
        }
        if by_owner && let Some(e) = self.write().get_mut(&t.id) {
            e.owner = true;
        }
        let _saving = self.saving.lock().unwrap_or_else(|p| p.into_inner());
        let (saved, mut owner) = self.saved();
        let mut saved: Vec<NodeTicket> = saved.into_iter().filter(|s| s.id != t.id).collect();
        saved.push(t.clone());
        if by_owner {
            owner.insert(t.id);
        }
        self.save(&saved, &owner)?;
        Ok(true)
    }

    /// Removes a peer its owner no longer wants (`kith peer rm`): out of the table and the
    /// saved tickets; it may be added again (and mDNS finds a neighbour again). Returns whether
    /// it was known.
    pub fn remove(&self, id: &EndpointId) -> Result<bool, SavePeersError> {
        let (known, saved) = self.drop_entry(id)?;
        Ok(known || saved)
    }

    /// Forgets a peer for good (a device its owner retired): out of the table and the saved
    /// tickets, and never added again. Returns whether it was in the table (false once it
    /// was forgotten already).
    pub fn forget(&self, id: &EndpointId) -> Result<bool, SavePeersError> {
        if !self.forgotten.write().unwrap_or_else(|p| p.into_inner()).insert(*id) {
            return Ok(false);
        }
        Ok(self.drop_entry(id)?.0)
    }

    /// Takes a peer out of the table and out of the saved file: whether it was in the table,
    /// and whether it was saved.
    fn drop_entry(&self, id: &EndpointId) -> Result<(bool, bool), SavePeersError> {
        let known = self.write().remove(id).is_some();
        let _saving = self.saving.lock().unwrap_or_else(|p| p.into_inner());
        let (saved, mut owner) = self.saved();
        if !saved.iter().any(|t| t.id == *id) && !owner.contains(id) {
            return Ok((known, false));
        }
        let rest: Vec<NodeTicket> = saved.into_iter().filter(|t| t.id != *id).collect();
        owner.remove(id);
        self.save(&rest, &owner)?;
        Ok((known, true))
    }

    fn save(
        &self,
        saved: &[NodeTicket],
        owner: &HashSet<EndpointId>,
    ) -> Result<(), SavePeersError> {
        let mut owner: Vec<String> = owner.iter().map(|id| id.to_string()).collect();
        owner.sort();
        let file = SavedPeers {
            version: PEERS_FILE_VERSION,
            peers: saved.iter().map(|t| t.to_string()).collect(),
            owner: Some(owner),
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
                owner: e.owner,
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
}

impl PeerTable {
    /// Where to look for `id`: its addresses in the table, and each of `relays` (the relays
    /// this node was told to use; a peer is looked for there too) unless mDNS announces it on
    /// this LAN: iroh sends a new connection's first packets through a relay it is given
    /// before it has a direct path, and a neighbour's would spend what the relay's pool lends
    /// (seen in the relay scenario: 11 MiB of a LAN's own replication counted there). `None`
    /// when that is nothing.
    pub fn lookup(
        &self,
        id: EndpointId,
        relays: &[iroh::RelayUrl],
    ) -> Option<BoxStream<Result<Item, LookupError>>> {
        let (ips, lan) = self
            .read()
            .get(&id)
            .map(|e| (e.addrs.iter().copied().collect::<Vec<_>>(), e.mdns))
            .unwrap_or_default();
        let mut addrs: Vec<TransportAddr> = ips.into_iter().map(TransportAddr::Ip).collect();
        if !lan {
            addrs.extend(relays.iter().cloned().map(TransportAddr::Relay));
        }
        if addrs.is_empty() {
            return None;
        }
        let item =
            Item::new(EndpointInfo::from_parts(id, EndpointData::new(addrs)), "kith-peers", None);
        Some(stream::iter(Some(Ok(item))).boxed())
    }
}

impl AddressLookup for PeerTable {
    fn resolve(&self, id: EndpointId) -> Option<BoxStream<Result<Item, LookupError>>> {
        self.lookup(id, &[])
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
        assert!(t.add_ticket(&NodeTicket { id: other, addrs: vec![a] }, false).unwrap());
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

    /// A peer mDNS announces on this LAN is looked for at its addresses only; a peer known by
    /// ticket (another LAN) at the relays too; an unknown one at the relays only.
    #[test]
    fn neighbours_are_not_looked_for_at_the_relays() {
        use n0_future::StreamExt as _;
        let dir = tempfile::tempdir().unwrap();
        let me = iroh::SecretKey::generate().public();
        let [lan, far, unknown] =
            [1u8, 2, 3].map(|i| iroh::SecretKey::from_bytes(&[i; 32]).public());
        let t = PeerTable::load(me, dir.path().join("peers.cbor"));
        let a: SocketAddr = "10.0.0.2:1".parse().unwrap();
        t.upsert(lan, &[a], true, false);
        t.add_ticket(&NodeTicket { id: far, addrs: vec![a] }, false).unwrap();
        let relay: iroh::RelayUrl = "http://10.97.0.200:7790".parse().unwrap();
        let found = |id| -> Option<(usize, usize)> {
            let item =
                n0_future::future::block_on(t.lookup(id, std::slice::from_ref(&relay))?.next())?
                    .ok()?;
            Some((item.ip_addrs().count(), item.relay_urls().count()))
        };
        assert_eq!(found(lan), Some((1, 0)));
        assert_eq!(found(far), Some((1, 1)));
        assert_eq!(found(unknown), Some((0, 1)));
        // Without relays, an unknown peer is nowhere.
        assert!(t.lookup(unknown, &[]).is_none());
    }

    /// Peers the owner added stay told apart from those learned from pools and partners
    /// (a relay this node serves carries only the first), across restarts; a file from before
    /// the distinction loads with none of its peers the owner's; forgetting one forgets that.
    #[test]
    fn the_owners_peers_are_told_apart_and_kept_so() {
        let dir = tempfile::tempdir().unwrap();
        let me = iroh::SecretKey::generate().public();
        let [mine, learned] = [1u8, 2].map(|i| iroh::SecretKey::from_bytes(&[i; 32]).public());
        let a: SocketAddr = "10.0.0.2:1".parse().unwrap();
        let file = dir.path().join("peers.cbor");
        let old = SavedPeers {
            version: 1,
            peers: vec![NodeTicket { id: learned, addrs: vec![a] }.to_string()],
            owner: None,
        };
        let bytes = minicbor::to_vec(&old).unwrap();
        // As the version before wrote it: two fields.
        assert_eq!(bytes[0], 0x82);
        std::fs::write(&file, &bytes).unwrap();
        let t = PeerTable::load(me, file.clone());
        let owner = |t: &PeerTable, id| t.list().iter().find(|p| p.id == id).map(|p| p.owner);
        assert_eq!(owner(&t, learned), Some(false), "an old file's peers are not the owner's");
        assert!(t.add_ticket(&NodeTicket { id: mine, addrs: vec![a] }, true).unwrap());
        // Learned again later from a pool: still the owner's.
        t.add_ticket(&NodeTicket { id: mine, addrs: vec![a] }, false).unwrap();
        let again = PeerTable::load(me, file.clone());
        assert_eq!(owner(&again, mine), Some(true));
        assert_eq!(owner(&again, learned), Some(false));
        again.forget(&mine).unwrap();
        let after = PeerTable::load(me, file);
        assert_eq!(owner(&after, mine), None);
        assert_eq!(owner(&after, learned), Some(false));
    }
}
