//! Where a chunk lives: weighted rendezvous hashing over the members' offers, in distinct zones.
//!
//! Every holder gets a score for every chunk, `weight / -ln(u)` with `u` uniform in (0, 1) drawn
//! from BLAKE3(chunk, node); the highest scores win. A holder is chosen with probability
//! proportional to its weight (offered bytes), and adding or removing a holder moves only the
//! chunks it gains or held: everyone else's choices stay put. Replicas go to distinct zones
//! first; if the pool has fewer zones than replicas, the rest fill from the best remaining
//! holders (the pool refuses to *set* such a policy, but members can leave afterwards).

use kith_crdt::Key;

/// A node that can hold chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The node.
    pub node: Key,
    /// Its member.
    pub member: Key,
    /// Its failure domain.
    pub zone: String,
    /// Its offered storage in bytes (0: never chosen).
    pub weight: u64,
}

/// The rendezvous score of `node` for `chunk` with `weight`.
pub fn score(chunk: &[u8; 32], node: &Key, weight: u64) -> f64 {
    let mut h = blake3::Hasher::new();
    h.update(b"kith-place-v1");
    h.update(chunk);
    h.update(node);
    let b = h.finalize();
    let x = u64::from_le_bytes(b.as_bytes()[..8].try_into().expect("8 bytes"));
    // (x + 0.5) / 2^64 lies strictly inside (0, 1).
    let u = (x as f64 + 0.5) / 18_446_744_073_709_551_616.0;
    weight as f64 / -u.ln()
}

/// The holders of `chunk`, best first: up to `n`, distinct zones first.
pub fn place<'a>(chunk: &[u8; 32], holders: &'a [Holder], n: usize) -> Vec<&'a Holder> {
    let mut ranked: Vec<(f64, &Holder)> = holders
        .iter()
        .filter(|h| h.weight > 0)
        .map(|h| (score(chunk, &h.node, h.weight), h))
        .collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.node.cmp(&b.1.node)));
    let mut chosen: Vec<&Holder> = Vec::with_capacity(n);
    for (_, h) in &ranked {
        if chosen.len() == n {
            break;
        }
        if !chosen.iter().any(|c| c.zone == h.zone) {
            chosen.push(h);
        }
    }
    for (_, h) in &ranked {
        if chosen.len() == n {
            break;
        }
        if !chosen.iter().any(|c| c.node == h.node) {
            chosen.push(h);
        }
    }
    chosen
}

/// Distinct zones among holders that offer storage.
pub fn zones(holders: &[Holder]) -> usize {
    let mut z: Vec<&str> =
        holders.iter().filter(|h| h.weight > 0).map(|h| h.zone.as_str()).collect();
    z.sort_unstable();
    z.dedup();
    z.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn holder(i: u8, zone: u8, weight: u64) -> Holder {
        Holder { node: [i; 32], member: [i; 32], zone: format!("z{zone}"), weight }
    }

    fn holders() -> impl Strategy<Value = Vec<Holder>> {
        proptest::collection::vec((0u8..6, 1u64..1000), 1..12).prop_map(|v| {
            v.into_iter().enumerate().map(|(i, (z, w))| holder(i as u8, z, w)).collect()
        })
    }

    proptest! {
        #[test]
        fn places_min_of_n_and_holders_on_distinct_nodes(hs in holders(), chunk in any::<[u8; 32]>(), n in 1usize..5) {
            let p = place(&chunk, &hs, n);
            prop_assert_eq!(p.len(), n.min(hs.len()));
            let mut nodes: Vec<_> = p.iter().map(|h| h.node).collect();
            nodes.sort();
            nodes.dedup();
            prop_assert_eq!(nodes.len(), p.len());
        }

        #[test]
        fn uses_distinct_zones_when_there_are_enough(hs in holders(), chunk in any::<[u8; 32]>(), n in 1usize..5) {
            let p = place(&chunk, &hs, n);
            let distinct = zones(&hs);
            let mut z: Vec<_> = p.iter().map(|h| h.zone.clone()).collect();
            z.sort();
            z.dedup();
            prop_assert_eq!(z.len(), n.min(distinct).min(p.len()));
        }

        #[test]
        fn removing_an_unchosen_holder_changes_nothing(hs in holders(), chunk in any::<[u8; 32]>(), n in 1usize..4) {
            let p: Vec<Key> = place(&chunk, &hs, n).iter().map(|h| h.node).collect();
            if let Some(out) = hs.iter().position(|h| !p.contains(&h.node)) {
                let mut fewer = hs.clone();
                fewer.remove(out);
                let q: Vec<Key> = place(&chunk, &fewer, n).iter().map(|h| h.node).collect();
                prop_assert_eq!(p, q);
            }
        }

        #[test]
        fn losing_a_holder_keeps_the_other_holders(chunk in any::<[u8; 32]>(), n in 1usize..4, lost in 0usize..4) {
            // One zone per node: the survivors of a placement stay chosen.
            let hs: Vec<Holder> = (0..8).map(|i| holder(i, i, 100)).collect();
            let p: Vec<Key> = place(&chunk, &hs, n).iter().map(|h| h.node).collect();
            let gone = p[lost % p.len()];
            let fewer: Vec<Holder> = hs.iter().filter(|h| h.node != gone).cloned().collect();
            let q: Vec<Key> = place(&chunk, &fewer, n).iter().map(|h| h.node).collect();
            for k in p.iter().filter(|k| **k != gone) {
                prop_assert!(q.contains(k));
            }
        }
    }

    #[test]
    fn share_follows_weight() {
        let hs = vec![holder(1, 1, 100), holder(2, 2, 200), holder(3, 3, 700)];
        let mut counts = [0usize; 3];
        for i in 0u32..20_000 {
            let c = *blake3::hash(&i.to_le_bytes()).as_bytes();
            let p = place(&c, &hs, 1);
            counts[(p[0].node[0] - 1) as usize] += 1;
        }
        let share: Vec<f64> = counts.iter().map(|c| *c as f64 / 20_000.0).collect();
        for (s, want) in share.iter().zip([0.1, 0.2, 0.7]) {
            assert!((s - want).abs() < 0.02, "{share:?}");
        }
    }

    #[test]
    fn zero_weight_is_never_chosen() {
        let hs = vec![holder(1, 1, 0), holder(2, 2, 5)];
        for i in 0u8..50 {
            let p = place(&[i; 32], &hs, 2);
            assert_eq!(p.len(), 1);
            assert_eq!(p[0].node, [2; 32]);
        }
    }
}
