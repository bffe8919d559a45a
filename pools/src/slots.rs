//! Sessions and requests served at once, per peer and in all: one peer cannot take every place,
//! and a peer that makes up many node ids can take at most the total.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kith_crdt::Key;

/// Places for sessions of one protocol.
#[derive(Debug)]
pub(crate) struct Slots {
    per_peer: usize,
    total: usize,
    held: Mutex<(usize, HashMap<Key, usize>)>,
}

/// A place taken; given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    slots: Arc<Slots>,
    peer: Key,
}

/// Why no place was free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// This peer holds as many as one peer may.
    Peer,
    /// Every place is taken.
    All,
}

impl Full {
    /// The cause counted in `kith status` and told to the peer.
    pub(crate) fn cause(self) -> &'static str {
        match self {
            Full::Peer => "too many sessions at once from one peer",
            Full::All => "too many sessions at once",
        }
    }
}

impl Slots {
    /// At most `per_peer` places for one peer and `total` in all.
    pub(crate) fn new(per_peer: usize, total: usize) -> Arc<Slots> {
        Arc::new(Slots { per_peer, total, held: Mutex::new((0, HashMap::new())) })
    }

    /// A place for `peer`, if one is free.
    pub(crate) fn take(self: &Arc<Self>, peer: Key) -> Result<Slot, Full> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let (total, by_peer) = &mut *held;
        let mine = by_peer.get(&peer).copied().unwrap_or(0);
        if mine >= self.per_peer {
            return Err(Full::Peer);
        }
        if *total >= self.total {
            return Err(Full::All);
        }
        *total += 1;
        by_peer.insert(peer, mine + 1);
        Ok(Slot { slots: self.clone(), peer })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(|p| p.into_inner());
        let (total, by_peer) = &mut *held;
        *total = total.saturating_sub(1);
        if let Some(n) = by_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                by_peer.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_gets_its_share_and_places_come_back() {
        let s = Slots::new(2, 3);
        let a1 = s.take([1; 32]).unwrap();
        let _a2 = s.take([1; 32]).unwrap();
        assert_eq!(s.take([1; 32]).unwrap_err(), Full::Peer);
        let _b1 = s.take([2; 32]).unwrap();
        assert_eq!(s.take([3; 32]).unwrap_err(), Full::All);
        drop(a1);
        let _c1 = s.take([3; 32]).unwrap();
        assert_eq!(s.held.lock().unwrap().0, 3);
    }
}
