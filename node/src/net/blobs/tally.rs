//! What moved between this node and each peer, for each pool.

use std::collections::HashMap;
use std::sync::Mutex;

use iroh::EndpointId;

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
