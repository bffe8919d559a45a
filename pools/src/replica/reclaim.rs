//! Reclaiming what the pools released: when an object leaves every pool this node holds for
//! (its owner took it out, left, or was removed), the blobs kept for it that nothing else
//! references are deleted and their packs rewritten, without waiting for `kith gc`.

use std::collections::HashSet;

use kith_crdt::Key;
use kith_node::ChunkId;

use super::{Replicator, keep_set, lock};
use crate::manifest::Manifest;

impl Replicator {
    /// Looks for objects that left this node's pools (those whose manifest it read since it
    /// started and no pool lists any more), and reclaims the blobs kept for them (only those:
    /// a blob fetched for anything else stays). What left before a restart waits for `kith gc`.
    pub(super) async fn reclaim_released(&self) -> Result<(), String> {
        let now: HashSet<Key> = self
            .pools
            .holding()
            .iter()
            .flat_map(|(_, v)| v.objects().map(|(_, _, po)| po.manifest).collect::<Vec<_>>())
            .collect();
        let gone: Vec<Key> =
            lock(&self.manifests).keys().filter(|m| !now.contains(*m)).copied().collect();
        if gone.is_empty() {
            return Ok(());
        }
        let store = self.node()?.store().clone();
        let pools = self.pools.clone();
        let count = gone.len();
        let forget = gone.clone();
        let done = tokio::task::spawn_blocking(move || {
            let mut released = HashSet::new();
            for m in &gone {
                let id = ChunkId(*m);
                released.insert(id);
                if let Ok(Some((_, bytes))) = store.read_blob(&id)
                    && let Ok(man) = Manifest::from_bytes(&bytes)
                {
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
                let mut manifests = lock(&self.manifests);
                for m in &forget {
                    manifests.remove(m);
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
