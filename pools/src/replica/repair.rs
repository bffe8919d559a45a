//! Repair: which blobs this node should hold, over the holders it has heard from lately, and
//! fetching those it lacks; which blobs it keeps at all; which objects nobody holds (over their
//! owner's quota).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use kith_crdt::{Key, hex};
use kith_node::ChunkId;

use super::{FETCH_ROUND, Replicator, lock};
use crate::docs::Pools;
use crate::manifest::Manifest;
use crate::placement::place;
use crate::view::PoolView;

/// What one repair pass found for one pool.
#[derive(Debug, Clone, Default)]
pub struct RepairStats {
    /// When the pass ended (ms since the epoch).
    pub at_ms: i64,
    /// Blobs this node should hold.
    pub responsible_blobs: u64,
    /// Their bytes.
    pub responsible_bytes: u64,
    /// Of those, blobs it still lacks.
    pub lacking_blobs: u64,
    /// Their bytes.
    pub lacking_bytes: u64,
    /// Bytes this node holds for other members (what it provides).
    pub held_for_others: u64,
    /// Bytes of this member's data that other members' nodes hold (copies counted), reckoned
    /// on one node of the member (its lowest node id), else 0.
    pub own_held_by_others: u64,
    /// Blobs fetched by repair since the node started.
    pub repaired_blobs: u64,
    /// Their bytes.
    pub repaired_bytes: u64,
    /// The last problem, if the pass had one.
    pub error: Option<String>,
}

impl Replicator {
    /// One repair pass over `pool`: fetch every manifest, then the blobs this node should hold.
    pub async fn repair(&self, pool: Key) {
        self.repair_reporting(pool, None).await
    }

    /// [`Replicator::repair`], reporting to `worker` the blobs fetched of those lacking as the
    /// pass goes (so that its progress and estimate move during a long repair).
    pub async fn repair_reporting(&self, pool: Key, worker: Option<&kith_node::worker::Worker>) {
        let Some(v) = self.pools.view_of(&pool) else { return };
        let me = self.pools.node();
        if v.node_owner(&me).is_none() {
            return;
        }
        // The pool's nodes first, then the partners' holding its off-site copies.
        let mut from = self.pool_nodes(&v);
        from.extend(self.offsite_nodes(&pool));
        let mut errors = Vec::new();
        let mut manifests = Vec::new();
        for (owner, oid, po) in v.objects() {
            match self.manifest(&po.manifest, &from).await {
                Ok(m) if m.object.as_slice() == oid.as_slice() => {
                    manifests.push((*owner, *oid, po.at_ms, m))
                }
                Ok(_) => errors
                    .push(format!("object {}: its manifest names another object", hex(&oid[..8]))),
                Err(e) => errors.push(format!("object {}: {e}", hex(&oid[..8]))),
            }
        }
        // Objects over their owner's quota are held by nobody, whatever the writer's client did.
        let over = over_quota(&v, &manifests);
        let manifests: Vec<(Key, Arc<Manifest>)> = manifests
            .into_iter()
            .filter(|(_, oid, _, _)| !over.contains(oid))
            .map(|(owner, _, _, m)| (owner, m))
            .collect();
        // A node that failed an audit still restores its own share (and passes again).
        let mut holders = self.placement_holders(&v);
        if let Some(h) = self.live_holders(&v).into_iter().find(|h| h.node == me)
            && !holders.contains(&h)
        {
            holders.push(h);
        }
        let r = v.charter.replicas as usize;
        let Ok(node) = self.node() else { return };
        let store = node.store().clone();
        let Some(member) = v.node_owner(&me) else { return };
        // One node per member reckons what others hold for it.
        let reckons_use = v.members[&member].nodes.keys().min() == Some(&me);
        let owners: HashMap<Key, Key> =
            v.members.iter().flat_map(|(m, x)| x.nodes.keys().map(move |n| (*n, *m))).collect();
        let plan = tokio::task::spawn_blocking(move || {
            let mut st = RepairStats::default();
            let mut want = Vec::new();
            let mut seen = HashSet::new();
            for (owner, m) in &manifests {
                for (id, len) in &m.blobs {
                    if !seen.insert(**id) {
                        continue;
                    }
                    let placed = place(id, &holders, r);
                    if owner == &member && reckons_use {
                        let others =
                            placed.iter().filter(|h| owners.get(&h.node) != Some(&member)).count();
                        st.own_held_by_others += *len as u64 * others as u64;
                    }
                    if !placed.iter().any(|h| h.node == me) {
                        continue;
                    }
                    st.responsible_blobs += 1;
                    st.responsible_bytes += *len as u64;
                    if !store.has(&ChunkId(**id))? {
                        want.push((ChunkId(**id), *len as u64));
                    } else if owner != &member {
                        st.held_for_others += *len as u64;
                    }
                }
            }
            Ok::<_, kith_node::StoreError>((st, want))
        })
        .await;
        let (mut st, want) = match plan {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                return self.record(
                    pool,
                    RepairStats { error: Some(e.to_string()), ..Default::default() },
                );
            }
            Err(e) => {
                return self.record(
                    pool,
                    RepairStats { error: Some(e.to_string()), ..Default::default() },
                );
            }
        };
        let prev = self.stats(&pool).unwrap_or_default();
        st.repaired_blobs = prev.repaired_blobs;
        st.repaired_bytes = prev.repaired_bytes;
        let mut lacking = want.len() as u64;
        let mut lacking_bytes: u64 = want.iter().map(|(_, len)| len).sum();
        if !want.is_empty() {
            tracing::info!(pool = %hex(&pool[..4]), blobs = want.len(), "repairing: fetching blobs this node should hold");
        }
        let to_fetch = want.len() as u64;
        if let Some(w) = worker
            && to_fetch > 0
        {
            w.progress(0, to_fetch);
        }
        for round in want.chunks(FETCH_ROUND) {
            let what = format!("pool {} repair", hex(&pool[..4]));
            let ids = round.iter().map(|(id, _)| *id).collect();
            match node.fetch_missing_shared(&what, ids, None, Some(from.clone()), None).await {
                Ok(rep) => {
                    lacking -= round.len() as u64;
                    lacking_bytes -= round.iter().map(|(_, len)| len).sum::<u64>();
                    if let Some(w) = worker {
                        w.progress(to_fetch - lacking, to_fetch);
                    }
                    st.repaired_blobs += rep.blobs;
                    st.repaired_bytes += rep.bytes;
                }
                Err(e) => {
                    errors.push(e.to_string());
                    break;
                }
            }
        }
        st.lacking_blobs = lacking;
        st.lacking_bytes = lacking_bytes;
        st.error = errors.into_iter().next();
        st.at_ms = self.pools.now_ms();
        self.usage.accrue(pool, st.held_for_others, st.own_held_by_others, st.at_ms);
        self.record(pool, st);
    }

    fn record(&self, pool: Key, st: RepairStats) {
        if let Some(e) = &st.error {
            tracing::warn!(pool = %hex(&pool[..4]), error = %e, "repair pass incomplete");
        }
        lock(&self.stats).insert(pool, st);
    }
}

/// Every blob this node keeps for its pools: the manifests of active members' objects and
/// everything they list (whether or not placement gives it to this node: copies are dropped
/// only when their object leaves the pool). Reads only what is on disk; also returns the
/// manifests it could not read or does not have yet (`gc` must not run while there are any:
/// a blob such a manifest lists could be taken).
pub fn keep_set(pools: &Pools, store: &kith_node::Store) -> (HashSet<ChunkId>, Vec<String>) {
    // What this node holds for federated pools, as recorded on disk.
    let mut keep = super::offsite::held_on_disk(&pools.dir().join("offsite"));
    // What this node serves as an edge of partners' sites.
    keep.extend(super::edge::edge_on_disk(&pools.dir().join("offsite")));
    let mut unreadable = Vec::new();
    for (_, v) in pools.holding() {
        for (_, _, po) in v.objects() {
            let mid = ChunkId(po.manifest);
            keep.insert(mid);
            match store.read_blob(&mid).map_err(|e| e.to_string()).and_then(|b| match b {
                Some((_, bytes)) => {
                    Manifest::from_bytes(&bytes).map(Some).map_err(|e| e.to_string())
                }
                None => Ok(None),
            }) {
                Ok(Some(m)) => keep.extend(m.blobs.iter().map(|(id, _)| ChunkId(**id))),
                Ok(None) => unreadable.push(format!(
                    "manifest {} is not here yet (repair fetches it)",
                    hex(&po.manifest[..8])
                )),
                Err(e) => unreadable.push(format!("manifest {}: {e}", hex(&po.manifest[..8]))),
            }
        }
    }
    (keep, unreadable)
}

/// The objects of `manifests` (owner, object, claimed time, manifest) over their owner's quota
/// in pool `v`, as every holder reckons it (see [`crate::quota`]).
pub(super) fn over_quota(
    v: &PoolView,
    manifests: &[(Key, Key, i64, Arc<Manifest>)],
) -> HashSet<Key> {
    let blobs: Vec<Vec<([u8; 32], u32)>> = manifests
        .iter()
        .map(|(_, _, _, m)| m.blobs.iter().map(|(id, l)| (**id, *l)).collect())
        .collect();
    let stored: Vec<crate::quota::Stored<'_>> = manifests
        .iter()
        .zip(&blobs)
        .map(|((owner, object, at_ms, _), b)| crate::quota::Stored {
            owner: *owner,
            object: *object,
            at_ms: *at_ms,
            blobs: b,
        })
        .collect();
    crate::quota::over_quota(v.charter.quota, &stored)
}
