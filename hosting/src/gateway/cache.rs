//! The cache of opened chunks: least recently used first out, bounded in bytes.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

/// Least-recently-used cache of opened chunks, bounded in bytes.
pub(super) struct Lru {
    pub(super) map: HashMap<[u8; 32], (Bytes, u64)>,
    pub(super) order: BTreeMap<u64, [u8; 32]>,
    pub(super) tick: u64,
    pub(super) bytes: usize,
    pub(super) cap: usize,
}

impl Lru {
    pub(super) fn get(&mut self, id: &[u8; 32]) -> Option<Bytes> {
        let (b, t) = self.map.get_mut(id)?;
        self.order.remove(t);
        self.tick += 1;
        *t = self.tick;
        self.order.insert(self.tick, *id);
        Some(b.clone())
    }

    pub(super) fn put(&mut self, id: [u8; 32], b: Bytes) {
        if b.len() > self.cap || self.map.contains_key(&id) {
            return;
        }
        self.tick += 1;
        self.bytes += b.len();
        self.map.insert(id, (b, self.tick));
        self.order.insert(self.tick, id);
        while self.bytes > self.cap {
            let Some((_, old)) = self.order.pop_first() else { break };
            if let Some((b, _)) = self.map.remove(&old) {
                self.bytes -= b.len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_keeps_to_its_cap_and_evicts_the_least_recently_used() {
        let mut c = Lru { map: HashMap::new(), order: BTreeMap::new(), tick: 0, bytes: 0, cap: 30 };
        let b = |n: usize| Bytes::from(vec![0u8; n]);
        c.put([1; 32], b(10));
        c.put([2; 32], b(10));
        c.put([3; 32], b(10));
        assert!(c.get(&[1; 32]).is_some(), "touching 1 makes 2 the oldest");
        c.put([4; 32], b(10));
        assert!(c.get(&[2; 32]).is_none());
        assert!(
            c.get(&[1; 32]).is_some() && c.get(&[3; 32]).is_some() && c.get(&[4; 32]).is_some()
        );
        assert_eq!(c.bytes, 30);
        c.put([5; 32], b(31));
        assert!(c.get(&[5; 32]).is_none(), "larger than the whole cache: not kept");
        c.put([6; 32], b(25));
        assert_eq!(c.bytes, 25, "one big entry pushes out all the small ones");
        assert_eq!(c.map.len(), c.order.len());
    }
}
