//! Reclaiming what the pools released: when an object leaves every pool this node holds for
//! (its owner took it out, left, or was removed), the blobs kept for it that nothing else
//! references are deleted and their packs rewritten, without waiting for `kith gc`.

use std::collections::HashSet;
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
        let now: HashSet<Key> = self
            .pools
            .holding()
            .iter()
            .flat_map(|(_, v)| v.objects().map(|(_, _, po)| po.manifest).collect::<Vec<_>>())
            .collect();
        let gone: Vec<Key> = {
            let mut listed = lock(&self.listed);
            listed.extend(now.iter().copied());
            listed.difference(&now).copied().collect()
        };
        if gone.is_empty() {
            return Ok(());
        }
        // What each released object listed: the copy in memory, else the one on disk.
        let cached: Vec<(Key, Option<Arc<Manifest>>)> = {
            let manifests = lock(&self.manifests);
            gone.iter().map(|m| (*m, manifests.get(m).cloned())).collect()
        };
        let store = self.node()?.store().clone();
        let pools = self.pools.clone();
        let count = gone.len();
        let done_with = gone.clone();
        let done = tokio::task::spawn_blocking(move || {
            let mut released = HashSet::new();
            for (m, cached) in cached {
                let id = ChunkId(m);
                released.insert(id);
                let man = cached.or_else(|| {
                    let (_, bytes) = store.read_blob(&id).ok()??;
                    Manifest::from_bytes(&bytes).ok().map(Arc::new)
                });
                if let Some(man) = man {
                    released.extend(man.blobs.iter().map(|(b, _)| ChunkId(**b)));
                }
            }
            store.reclaim(&released, || {
                let (keep, unreadable) = keep_set(&pools, &store);
                match unreadable.into_iter().next() {
                    Some(first) => Err(first),
                    None => Ok(keep),
                }
            })
        })
        .await
        .map_err(|e| e.to_string())?;
        match done {
            Ok(r) => {
                let mut listed = lock(&self.listed);
                for m in &done_with {
                    listed.remove(m);
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
}
