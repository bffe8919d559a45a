//! Objects lost before anyone kept them: a member's own entries whose data no node holds.
//!
//! A put records its object in the pool document before the holders copy its blobs (they check
//! the document before they take anything). A writer killed before any holder copied them, and
//! then restarted from a copy of its home taken before the put (or whose disk was lost), leaves
//! an entry whose data exists nowhere: the put was never acknowledged, but the entry would keep
//! every node counting lost blobs, stop `kith gc` (it cannot read the manifest) and hold up
//! every member's `pool leave`, for good. Only the owner may take its entry out, so the owner's
//! nodes look, now and then, for their member's objects they do not hold themselves, ask every
//! node of the pool which of their blobs it holds, and take out an object one of whose blobs
//! (or whose manifest) no node holds, when every node answered. Loudly: it is logged as a
//! warning naming the object. Site versions are left alone (`kith site` manages them).

use std::time::{Duration, Instant};

use kith_crdt::{Key, hex};
use kith_node::ChunkId;

use super::{Replicator, lock};

/// How often at most a node looks, and how old an entry must be (a put in flight has its
/// entry before its holders have its blobs): twice the pool's `repair_after`, at least this.
const LOST_EVERY: Duration = Duration::from_secs(10);

impl Replicator {
    /// Looks for this member's lost objects in `pool` if it has not lately (see the module).
    pub(super) async fn forget_lost_if_due(&self, pool: Key) {
        let Some(v) = self.pools.view_of(&pool) else { return };
        let every = LOST_EVERY.max(Duration::from_millis(2 * v.charter.repair_after_ms));
        {
            let mut checked = lock(&self.lost_checked);
            let last = checked.entry(pool).or_insert_with(Instant::now);
            if last.elapsed() < every {
                return;
            }
            *last = Instant::now();
        }
        if let Err(e) = self.forget_lost(pool, every).await {
            tracing::info!(pool = %hex(&pool[..4]), error = %e, "could not look for lost objects");
        }
    }

    /// Takes out of `pool` this member's objects older than `age` that no node holds whole.
    pub(super) async fn forget_lost(&self, pool: Key, age: Duration) -> Result<Vec<Key>, String> {
        let v = self.pools.view_of(&pool).ok_or("no such pool")?;
        let me = self.pools.node();
        let Some(member) = v.node_owner(&me) else { return Ok(Vec::new()) };
        let Some(m) = v.members.get(&member) else { return Ok(Vec::new()) };
        let node = self.node()?.clone();
        let store = node.store().clone();
        let now = self.pools.now_ms();
        // This member's objects this node does not hold (its root is not here).
        let mut candidates = Vec::new();
        for (oid, po) in &m.objects {
            if now - po.at_ms < age.as_millis() as i64 || m.site_version(oid).is_some() {
                continue;
            }
            let (s, root) = (store.clone(), ChunkId(*oid));
            let here = tokio::task::spawn_blocking(move || s.has(&root))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            if !here {
                candidates.push((*oid, po.manifest));
            }
        }
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        // What each candidate consists of: its manifest, and the blobs it lists if the
        // manifest can be had.
        let from = self.pool_nodes(&v);
        let mut wanted: Vec<(Key, Vec<[u8; 32]>)> = Vec::new();
        for (oid, manifest) in candidates {
            let mut ids = vec![manifest];
            if let Ok(m) = self.manifest(&manifest, &from).await {
                ids.extend(m.blobs.iter().map(|(b, _)| **b));
            }
            ids.sort();
            ids.dedup();
            wanted.push((oid, ids));
        }
        let all: Vec<[u8; 32]> = {
            let mut all: Vec<[u8; 32]> = wanted.iter().flat_map(|(_, ids)| ids.clone()).collect();
            all.sort();
            all.dedup();
            all
        };
        let asks = v.holders().into_iter().map(|h| (h.node, all.clone())).collect();
        let mut held = std::collections::HashSet::new();
        for (holder, ids, answer) in self.ask_has(pool, &node, asks).await {
            // Every node must answer: one that did not may hold what the others lack.
            let bits =
                answer.map_err(|e| format!("node {} did not answer ({e})", hex(&holder[..4])))?;
            held.extend(ids.iter().zip(bits).filter(|(_, b)| *b).map(|(id, _)| *id));
        }
        let signer = self.pools.signer();
        let mut gone = Vec::new();
        for (oid, ids) in wanted {
            let Some(missing) = ids.iter().find(|id| !held.contains(*id)) else { continue };
            let taken = self
                .pools
                .with_pool(&hex(&pool), |p| p.remove_object(signer, &oid, self.pools.now_ms()));
            match taken {
                Ok(()) => {
                    tracing::warn!(
                        pool = %v.charter.name,
                        object = %hex(&oid),
                        missing = %hex(&missing[..8]),
                        "an object of yours is lost: no node of the pool holds all of it (this node was \
                         restarted from an older copy of its home, or lost its disk, before the pool \
                         kept it); taken out of the pool"
                    );
                    gone.push(oid);
                }
                Err(e) => {
                    tracing::info!(object = %hex(&oid[..8]), error = %e, "could not take out a lost object")
                }
            }
        }
        Ok(gone)
    }
}
