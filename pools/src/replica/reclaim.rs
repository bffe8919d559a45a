//! Reclaiming what the pools released: when an object leaves every pool this node holds for
//! (its owner took it out, left, or was removed), the blobs kept for it that nothing else
//! references are deleted and their packs rewritten, without waiting for `kith gc`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use kith_crdt::Key;
use kith_node::ChunkId;

use super::{Replicator, keep_set, lock};
use crate::manifest::Manifest;

impl Replicator {
    /// Looks for objects that a pool listed (at an earlier look, or when this node read their
    /// manifest to hold, repair or check them) and none lists now, and reclaims the blobs kept
    /// for them (only those: a blob fetched for anything else stays). An object that left
    /// while this node was down waits for `kith gc`.
    pub(super) async fn reclaim_released(&self) -> Result<(), String> {
        let by_pool: Vec<(Key, Key)> = self
            .pools
            .holding()
            .iter()
            .flat_map(|(pool, v)| {
                v.objects().map(|(_, _, po)| (po.manifest, *pool)).collect::<Vec<_>>()
            })
            .collect();
        let now: HashSet<Key> = by_pool.iter().map(|(m, _)| *m).collect();
        let gone: Vec<Key> = {
            let mut listed = lock(&self.listed);
            listed.extend(now.iter().copied());
            listed.difference(&now).copied().collect()
        };
        lock(&self.listed_in).extend(by_pool);
        if gone.is_empty() {
            return Ok(());
        }
        // Objects whose off-site copies this node releases at the partners' holders (see
        // `Replicator::releases_offsite`), by pool.
        let offsite: HashMap<Key, Key> = {
            let listed_in = lock(&self.listed_in);
            gone.iter()
                .filter_map(|m| listed_in.get(m).map(|p| (*m, *p)))
                .filter(|(m, p)| self.releases_offsite(p, m))
                .collect()
        };
        // What each released object listed: the copy in memory, else the one on disk.
        let cached: Vec<(Key, Option<Arc<Manifest>>)> = {
            let manifests = lock(&self.manifests);
            gone.iter().map(|m| (*m, manifests.get(m).cloned())).collect()
        };
        let store = self.node()?.store().clone();
        let pools = self.pools.clone();
        let count = gone.len();
        let done_with = gone.clone();
        let (done, to_partners) = tokio::task::spawn_blocking(move || {
            let mut released = HashSet::new();
            let mut to_partners: HashMap<Key, Vec<[u8; 32]>> = HashMap::new();
            for (m, cached) in cached {
                let id = ChunkId(m);
                released.insert(id);
                let man = cached.or_else(|| {
                    let (_, bytes) = store.read_blob(&id).ok()??;
                    Manifest::from_bytes(&bytes).ok().map(Arc::new)
                });
                let blobs = man.iter().flat_map(|man| man.blobs.iter().map(|(b, _)| **b));
                if let Some(pool) = offsite.get(&m) {
                    to_partners
                        .entry(*pool)
                        .or_default()
                        .extend(std::iter::once(m).chain(blobs.clone()));
                }
                released.extend(blobs.map(ChunkId));
            }
            (reclaim_now(&pools, &store, &released), to_partners)
        })
        .await
        .map_err(|e| e.to_string())?;
        for (pool, ids) in to_partners {
            self.queue_release(pool, ids);
        }
        match done {
            Ok(r) => {
                let mut listed = lock(&self.listed);
                let mut listed_in = lock(&self.listed_in);
                for m in &done_with {
                    listed.remove(m);
                    listed_in.remove(m);
                }
                if r.blobs_removed > 0 {
                    tracing::info!(
                        objects = count,
                        blobs = r.blobs_removed,
                        bytes_freed = r.bytes_freed,
                        "reclaimed what the pools released"
                    );
                }
                Ok(())
            }
            // Looked at again next time.
            Err(e) => Err(e.to_string()),
        }
    }

    /// Deletes `blobs` from the store now, those nothing this node keeps still references.
    pub(super) async fn reclaim_blobs(&self, blobs: Vec<[u8; 32]>) -> Result<(), String> {
        let store = self.node()?.store().clone();
        let pools = self.pools.clone();
        let released: HashSet<ChunkId> = blobs.into_iter().map(ChunkId).collect();
        tokio::task::spawn_blocking(move || reclaim_now(&pools, &store, &released))
            .await
            .map_err(|e| e.to_string())?
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Deletes `released` from `store`, but for what this node keeps (`keep_set`); nothing when
/// a manifest it keeps cannot be read (what it lists is unknown).
fn reclaim_now(
    pools: &crate::docs::Pools,
    store: &kith_node::Store,
    released: &HashSet<ChunkId>,
) -> Result<kith_node::store::GcReport, kith_node::store::StoreError> {
    store.reclaim(released, || {
        let (keep, unreadable) = keep_set(pools, store);
        match unreadable.into_iter().next() {
            Some(first) => Err(first),
            None => Ok(keep),
        }
    })
}
