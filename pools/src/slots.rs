//! Sessions and requests served at once, per peer and in all: one peer cannot take every place,
//! and peers this node does not know (no node of any pool it holds) share a small number of
//! places of their own, so strangers that make up node ids cannot crowd out the members.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kith_crdt::Key;

/// Places for sessions of one protocol.
#[derive(Debug)]
pub(crate) struct Slots {
    what: &'static str,
    per_peer: usize,
    known: usize,
    strangers: usize,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    known: usize,
    strangers: usize,
    by_peer: HashMap<Key, usize>,
}

/// A place taken; given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    slots: Arc<Slots>,
    peer: Key,
    known: bool,
}

/// Why no place was free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// This peer holds as many as one peer may.
    Peer,
    /// Every place for peers of its kind (known, or strangers) is taken.
    All,
}

impl Slots {
    /// At most `per_peer` places for one peer, `known` in all for nodes of this node's pools
    /// and `strangers` in all for every other peer; `what` names them in refusals.
    pub(crate) fn new(
        what: &'static str,
        per_peer: usize,
        known: usize,
        strangers: usize,
    ) -> Arc<Slots> {
        Arc::new(Slots { what, per_peer, known, strangers, held: Mutex::new(Held::default()) })
    }

    /// A place for `peer` (`known`: a node of one of this node's pools), if one is free.
    pub(crate) fn take(self: &Arc<Self>, peer: Key, known: bool) -> Result<Slot, Full> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let mine = held.by_peer.get(&peer).copied().unwrap_or(0);
        if mine >= self.per_peer {
            return Err(Full::Peer);
        }
        let (taken, limit) = if known {
            (&mut held.known, self.known)
        } else {
            (&mut held.strangers, self.strangers)
        };
        if *taken >= limit {
            return Err(Full::All);
        }
        *taken += 1;
        held.by_peer.insert(peer, mine + 1);
        Ok(Slot { slots: self.clone(), peer, known })
    }

    /// The cause a refusal is counted under in `kith status` (and told to the peer).
    pub(crate) fn cause(&self, full: Full) -> &'static str {
        match (self.what, full) {
            ("sync", Full::Peer) => "too many sync sessions at once from one peer",
            ("sync", Full::All) => "too many sync sessions at once",
            (_, Full::Peer) => "too many pool requests at once from one peer",
            (_, Full::All) => "too many pool requests at once",
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(|p| p.into_inner());
        if self.known {
            held.known = held.known.saturating_sub(1);
        } else {
            held.strangers = held.strangers.saturating_sub(1);
        }
        if let Some(n) = held.by_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                held.by_peer.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_gets_its_share_strangers_theirs_and_places_come_back() {
        let s = Slots::new("sync", 2, 3, 1);
        let a1 = s.take([1; 32], true).unwrap();
        let _a2 = s.take([1; 32], true).unwrap();
        assert_eq!(s.take([1; 32], true).unwrap_err(), Full::Peer);
        let _b1 = s.take([2; 32], true).unwrap();
        assert_eq!(s.take([3; 32], true).unwrap_err(), Full::All);
        // Strangers have their own places, and cannot take the members'.
        let _x = s.take([9; 32], false).unwrap();
        assert_eq!(s.take([8; 32], false).unwrap_err(), Full::All);
        drop(a1);
        let _c1 = s.take([3; 32], true).unwrap();
        let held = s.held.lock().unwrap();
        assert_eq!((held.known, held.strangers), (3, 1));
    }
}
