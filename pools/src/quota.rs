//! Quotas as every holder reckons them: the pure core.
//!
//! The writer's node checks its quota before a put, but a modified client could add objects to
//! the pool document anyway; so each holder decides for itself, from the manifests (not from
//! the sizes the owner claims in the document), which objects fit their owner's quota, and
//! stores and repairs only those. Every node reaches the same answer: a member's objects are
//! taken in the order (claimed time, id), each counting the blobs it adds to what the member's
//! earlier objects hold, and an object that would take the member over the quota is over it,
//! as is every later one that adds anything.

use std::collections::{BTreeMap, HashSet};

use kith_crdt::Key;

/// One object as the reckoning sees it.
#[derive(Debug, Clone)]
pub struct Stored<'a> {
    /// Its owner.
    pub owner: Key,
    /// Its id.
    pub object: Key,
    /// When the owner says it stored it (ms): the order only, within the owner's objects.
    pub at_ms: i64,
    /// Its blobs and their stored lengths, from its manifest.
    pub blobs: &'a [([u8; 32], u32)],
}

/// The objects over their owner's `quota` (bytes of distinct blobs, one copy; 0: no quota).
pub fn over_quota(quota: u64, objects: &[Stored<'_>]) -> HashSet<Key> {
    let mut over = HashSet::new();
    if quota == 0 {
        return over;
    }
    let mut by_owner: BTreeMap<Key, Vec<&Stored<'_>>> = BTreeMap::new();
    for o in objects {
        by_owner.entry(o.owner).or_default().push(o);
    }
    for list in by_owner.values_mut() {
        list.sort_by_key(|o| (o.at_ms, o.object));
        let mut held: HashSet<[u8; 32]> = HashSet::new();
        let mut used = 0u64;
        for o in list.iter() {
            let more: u64 = o
                .blobs
                .iter()
                .filter(|(id, _)| !held.contains(id))
                .map(|(_, len)| u64::from(*len))
                .sum();
            if used + more > quota {
                over.insert(o.object);
                continue;
            }
            used += more;
            held.extend(o.blobs.iter().map(|(id, _)| *id));
        }
    }
    over
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_past_the_quota_are_over_it_and_shared_blobs_count_once() {
        let a: Vec<([u8; 32], u32)> = vec![([1; 32], 600), ([2; 32], 300)];
        let b: Vec<([u8; 32], u32)> = vec![([1; 32], 600), ([3; 32], 50)]; // shares blob 1
        let huge: Vec<([u8; 32], u32)> = vec![([9; 32], 100_000)];
        let objs = [
            Stored { owner: [7; 32], object: [10; 32], at_ms: 1, blobs: &a },
            Stored { owner: [7; 32], object: [11; 32], at_ms: 2, blobs: &b },
            Stored { owner: [7; 32], object: [12; 32], at_ms: 3, blobs: &huge },
            Stored { owner: [8; 32], object: [13; 32], at_ms: 0, blobs: &huge },
        ];
        let over = over_quota(1000, &objs);
        assert_eq!(over, HashSet::from([[12; 32], [13; 32]]));
        assert!(over_quota(0, &objs).is_empty(), "no quota, nothing over");
        // The same answer whatever order the objects come in.
        let mut rev = objs.to_vec();
        rev.reverse();
        assert_eq!(over_quota(1000, &rev), over);
    }
}
