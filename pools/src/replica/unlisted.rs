//! Finding what partners hold for a pool that the pool no longer lists: the releases of
//! `offsite.rs` name the objects a node saw taken out, and miss those taken out while the
//! pool's releasing nodes were down. Every few audit periods the pool's first live holder
//! sends each partner holder a sieve (a Bloom filter) of every blob the pool lists; the holder
//! answers with the blobs it holds for the pool that are not in it (certainly unlisted), and
//! those found unlisted twice in a row are released (docs/federation.md).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use iroh::EndpointId;
use kith_crdt::Key;
use kith_node::ChunkId;
use minicbor::bytes::ByteArray;

use super::offsite::MAX_OFFSITE_IDS;
use super::{Replicator, lock};
use crate::fed::{FedReply, FedRequest, ask_fed};
use crate::placement::place;

/// Hashes per blob in a sieve.
pub const SIEVE_HASHES: u8 = 7;
/// Bits per listed blob (with 7 hashes: about 1% of unlisted blobs pass as listed, and stay
/// until the next look, whose salt differs).
const SIEVE_BITS_PER_BLOB: usize = 10;
/// Largest sieve (bytes): 840 000 listed blobs; past that, more unlisted blobs pass as listed.
/// It crosses within the 10 s a partner gives a request at 1 Mbit/s.
pub const MAX_SIEVE: usize = 1 << 20;
/// How many audit periods between two looks (and the least time between them).
const LOOK_EVERY_AUDITS: u32 = 6;
const LOOK_AT_LEAST: Duration = Duration::from_secs(30);
/// A look takes another of the pool's nodes heard from (a document session) this recently:
/// a node alone (restored from a sealed copy, cut off from its pool, just back) may hold an
/// older view, which would call a newer object's copies unlisted.
const LOOK_HEARD_MS: i64 = 60_000;

/// A Bloom filter over blob ids. Blob ids are BLAKE3 hashes: each of its `k` 4-byte words,
/// mixed with the salt, places one bit.
#[derive(Debug, Clone)]
pub struct Sieve {
    salt: u64,
    k: u8,
    bits: Vec<u8>,
}

impl Sieve {
    /// An empty sieve for about `n` blobs.
    pub fn new(n: usize, salt: u64) -> Sieve {
        let bytes = (n * SIEVE_BITS_PER_BLOB).div_ceil(8).clamp(64, MAX_SIEVE);
        Sieve { salt, k: SIEVE_HASHES, bits: vec![0; bytes] }
    }

    /// A sieve as sent: `k` hashes (1 to 8), `bits` of 1 byte to [`MAX_SIEVE`].
    pub fn from_parts(salt: u64, k: u8, bits: Vec<u8>) -> Result<Sieve, String> {
        if !(1..=8).contains(&k) || bits.is_empty() || bits.len() > MAX_SIEVE {
            return Err(format!(
                "a sieve has 1 to 8 hashes and 1 byte to {} of bits",
                crate::fmt::size(MAX_SIEVE as u64)
            ));
        }
        Ok(Sieve { salt, k, bits })
    }

    /// Its salt, hash count and bits, to send.
    pub fn parts(&self) -> (u64, u8, &[u8]) {
        (self.salt, self.k, &self.bits)
    }

    fn positions(&self, id: &[u8; 32]) -> impl Iterator<Item = usize> + '_ {
        let m = self.bits.len() as u64 * 8;
        let id = *id;
        (0..self.k as usize).map(move |i| {
            let w = u32::from_le_bytes([id[4 * i], id[4 * i + 1], id[4 * i + 2], id[4 * i + 3]]);
            let mixed = (w as u64 ^ self.salt.rotate_left(8 * i as u32))
                .wrapping_mul(0x9e37_79b9_7f4a_7c15);
            ((mixed >> 11) % m) as usize
        })
    }

    /// Adds `id`.
    pub fn insert(&mut self, id: &[u8; 32]) {
        let pos: Vec<usize> = self.positions(id).collect();
        for p in pos {
            self.bits[p / 8] |= 1 << (p % 8);
        }
    }

    /// Whether `id` may have been added (false: it certainly was not).
    pub fn contains(&self, id: &[u8; 32]) -> bool {
        self.positions(id).all(|p| self.bits[p / 8] & (1 << (p % 8)) != 0)
    }
}

/// The last look at one pool's partner holders.
#[derive(Debug, Default)]
pub(super) struct LastLook {
    at: Option<Instant>,
    /// What each holder answered unlisted then.
    unlisted: HashMap<Key, HashSet<[u8; 32]>>,
}

impl Replicator {
    /// As a partner's holder: the blobs this node holds for the asking pool's agreement that
    /// `sieve` does not hold, at most [`MAX_OFFSITE_IDS`].
    pub(super) fn unlisted_here(&self, agreement: &Key, sieve: &Sieve) -> Vec<ByteArray<32>> {
        let mut out = self.lent().unlisted(agreement, |id| sieve.contains(id));
        out.sort_unstable();
        out.truncate(MAX_OFFSITE_IDS);
        out.into_iter().map(Into::into).collect()
    }

    /// When due, and on the pool's first live holder: asks each partner holder of `pool`
    /// which of the blobs it holds for the pool the pool does not list, and releases there
    /// those it answered at the last look too (a blob of an object put meanwhile is listed
    /// by then).
    pub(super) async fn release_unlisted(&self, pool: Key) {
        let Some(v) = self.pools.view_of(&pool) else { return };
        let me = self.pools.node();
        if place(&pool, &self.placement_holders(&v), 1).first().map(|h| h.node) != Some(me) {
            return;
        }
        let others = v.members.keys().filter_map(|m| v.active(m)).flat_map(|m| m.nodes.keys());
        if !others.filter(|n| **n != me).any(|n| self.pools.is_up(n, LOOK_HEARD_MS)) {
            return;
        }
        let every = Duration::from_millis(v.charter.audit_every_ms)
            .saturating_mul(LOOK_EVERY_AUDITS)
            .max(LOOK_AT_LEAST);
        let due = lock(&self.unlisted_looks)
            .get(&pool)
            .and_then(|l| l.at)
            .is_none_or(|t| t.elapsed() >= every);
        let ags = self.lending_agreements(&pool, &v);
        if !due || ags.is_empty() {
            return;
        }
        let Ok(node) = self.node() else { return };
        // A pool that keeps no off-site copies any more (`offsite_replicas 0`) lists nothing
        // with its partners: every copy they hold for it goes, two looks apart (each holder
        // keeps what is released a week, and takes it back without a fetch if the pool
        // asks for off-site copies again meanwhile).
        let keep = if v.charter.offsite_replicas == 0 {
            HashSet::new()
        } else {
            let (store, pools) = (node.store().clone(), self.pools.clone());
            let Ok((keep, unreadable)) =
                tokio::task::spawn_blocking(move || super::keep_set(&pools, &store)).await
            else {
                return;
            };
            if let Some(first) = unreadable.first() {
                tracing::debug!(why = %first, "looking for unlisted off-site copies later");
                return;
            }
            keep
        };
        let salt = rand_salt();
        let mut sieve = Sieve::new(keep.len(), salt);
        for id in &keep {
            sieve.insert(&id.0);
        }
        let (salt, k, bits) = sieve.parts();
        // The partners' holders, asked again if not lately (with no off-site copies wanted,
        // the off-site pass does not ask them, and after a restart nobody has).
        self.refresh_partners_for_looks(&pool, &v).await;
        let mut now: HashMap<Key, HashSet<[u8; 32]>> = HashMap::new();
        let last = lock(&self.unlisted_looks).remove(&pool).unwrap_or_default();
        for (ag, roster, _) in ags {
            let holders: Vec<Key> = lock(&self.partners)
                .get(&ag.id())
                .map(|p| p.holders.iter().map(|h| *h.node).collect())
                .unwrap_or_default();
            for holder in holders {
                let Ok(peer) = EndpointId::from_bytes(&holder) else { continue };
                let req = FedRequest::Unlisted {
                    asking: Box::new(self.asking(&ag, &roster)),
                    salt,
                    k,
                    bits: bits.to_vec(),
                };
                let ids = match ask_fed(node, peer, &req, Duration::from_secs(60)).await {
                    Ok(FedReply::Ids(ids)) => ids,
                    answer => {
                        tracing::debug!(holder = %peer.fmt_short(), answer = ?answer, "a partner's holder did not say what it holds unlisted");
                        continue;
                    }
                };
                let ids: HashSet<[u8; 32]> =
                    ids.iter().map(|id| **id).filter(|id| !keep.contains(&ChunkId(*id))).collect();
                let before = last.unlisted.get(&holder);
                let twice: Vec<[u8; 32]> = ids
                    .iter()
                    .filter(|id| before.is_some_and(|b| b.contains(*id)))
                    .copied()
                    .collect();
                if !twice.is_empty() {
                    let req = FedRequest::Release {
                        asking: Box::new(self.asking(&ag, &roster)),
                        ids: twice.iter().map(|id| (*id).into()).collect(),
                    };
                    match ask_fed(node, peer, &req, Duration::from_secs(60)).await {
                        Ok(FedReply::Recorded(_)) => tracing::info!(
                            holder = %peer.fmt_short(),
                            blobs = twice.len(),
                            "released off-site copies this pool no longer lists"
                        ),
                        answer => {
                            tracing::info!(holder = %peer.fmt_short(), answer = ?answer, "a partner's holder did not release unlisted copies")
                        }
                    }
                }
                now.insert(holder, ids);
            }
        }
        lock(&self.unlisted_looks)
            .insert(pool, LastLook { at: Some(Instant::now()), unlisted: now });
    }
}

/// A salt for a sieve (a false positive of one look is not one of the next).
fn rand_salt() -> u64 {
    let mut b = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_or(0x5eed, |_| u64::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> [u8; 32] {
        *blake3::hash(&n.to_le_bytes()).as_bytes()
    }

    #[test]
    fn a_sieve_holds_every_blob_put_in_and_few_others_and_refuses_bad_parts() {
        let mut s = Sieve::new(10_000, 42);
        for n in 0..10_000 {
            s.insert(&id(n));
        }
        assert!((0..10_000).all(|n| s.contains(&id(n))), "no listed blob is ever unlisted");
        let passed = (10_000..110_000).filter(|n| s.contains(&id(*n))).count();
        // 10 bits and 7 hashes a blob: about 0.8% expected.
        assert!(passed < 2_000, "{passed} of 100 000 unlisted blobs passed as listed");
        // As sent and read back: the same answers.
        let (salt, k, bits) = s.parts();
        let back = Sieve::from_parts(salt, k, bits.to_vec()).unwrap();
        assert!((0..1_000).all(|n| back.contains(&id(n))));
        // Another salt places the bits elsewhere.
        let mut other = Sieve::new(10_000, 43);
        for n in 0..10_000 {
            other.insert(&id(n));
        }
        let both = (10_000..110_000).filter(|n| s.contains(&id(*n)) && other.contains(&id(*n)));
        assert!(both.count() < passed.max(1), "the same false positives under two salts");
        for (k, len) in [(0, 8), (9, 8), (7, 0), (7, MAX_SIEVE + 1)] {
            assert!(Sieve::from_parts(1, k, vec![0; len]).is_err(), "{k} {len}");
        }
        // An empty sieve holds nothing.
        let empty = Sieve::new(0, 1);
        assert!(!(0..1000).any(|n| empty.contains(&id(n))));
    }
}
