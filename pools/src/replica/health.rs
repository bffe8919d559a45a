//! A pool's replication health, as `kith pool show` reports it: every node asked which of its
//! blobs it holds.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use kith_crdt::{Key, hex};
use kith_node::net::Node;

use super::ReplicaError;
use super::Replicator;
use super::protocol::{has, held_locally};
use super::repair::over_quota;
use crate::placement::place;

/// How long `pool show` waits for a holder's answer.
const HAS_TIMEOUT: Duration = Duration::from_secs(2);

/// How a holder stands in a health check.
#[derive(Debug, Clone)]
pub struct HolderHealth {
    /// The node.
    pub node: Key,
    /// `up` (it answered), `down` (no answer, not yet replaced), `out` (no answer, silent past
    /// `repair_after`) or `failing` (its latest audit failed).
    pub state: &'static str,
    /// Seconds since it was last heard from.
    pub silent_s: u64,
    /// Blobs placement gives it.
    pub assigned_blobs: u64,
    /// Their bytes.
    pub assigned_bytes: u64,
    /// Of those, blobs it confirmed holding.
    pub confirmed_blobs: u64,
    /// Why it could not be asked, if so.
    pub error: Option<String>,
}

/// A pool's replication health.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// Objects stored in the pool.
    pub objects: u64,
    /// Their bytes (one copy).
    pub bytes: u64,
    /// Blobs.
    pub blobs: u64,
    /// Bytes missing from full replication (a blob with one copy short counts its size once).
    pub under_replicated_bytes: u64,
    /// Blobs with fewer confirmed copies than the replication factor.
    pub under_replicated_blobs: u64,
    /// Blobs no node has, every node having answered.
    pub lost_blobs: u64,
    /// Blobs no answering node has, while some nodes did not answer (they may have them).
    pub unconfirmed_blobs: u64,
    /// Nodes that did not answer.
    pub silent: Vec<Key>,
    /// Manifests this node could not read.
    pub unreadable: Vec<String>,
    /// Objects with a lost blob (ids, 8 bytes hex): no node has all of them any more.
    pub lost_objects: Vec<String>,
    /// Objects over their owner's quota, which no holder keeps (ids, 8 bytes hex).
    pub over_quota: Vec<String>,
    /// Per holder.
    pub holders: Vec<HolderHealth>,
}

impl Replicator {
    /// Checks a pool's replication by asking each holder what it holds.
    pub async fn health(&self, pool: Key) -> Result<Health, ReplicaError> {
        self.health_without(pool, None).await
    }

    /// [`Replicator::health`], leaving out the objects of `owner` (a member about to leave,
    /// whose objects leave with it).
    ///
    /// Every node of an active member is asked at once, whatever this node thinks of its
    /// liveness (a holder that answers is up): first which of the blobs placement gives it it
    /// holds, then, for blobs no target confirmed, whether it holds them anyway. A blob is
    /// *lost* only when every node answered and none has it; when some did not answer, it is
    /// *unconfirmed*, never lost.
    pub async fn health_without(
        &self,
        pool: Key,
        owner: Option<&Key>,
    ) -> Result<Health, ReplicaError> {
        let v = self.pools.view_of(&pool).ok_or("no such pool")?;
        let node = self.node()?.clone();
        let from = self.pool_nodes(&v);
        let mut h = Health::default();
        let mut read = Vec::new();
        for (who, oid, po) in v.objects() {
            if Some(who) == owner {
                continue;
            }
            match self.manifest(&po.manifest, &from).await {
                Ok(m) => read.push((*who, *oid, po.at_ms, m)),
                Err(e) => h.unreadable.push(format!("object {}: {e}", hex(&oid[..8]))),
            }
        }
        let over = over_quota(&v, &read);
        h.over_quota = over.iter().map(|o| hex(&o[..8])).collect();
        let mut manifests = Vec::new();
        for (_, oid, _, m) in read {
            if over.contains(&oid) {
                continue;
            }
            h.objects += 1;
            h.bytes += m.blobs.iter().map(|(_, l)| u64::from(*l)).sum::<u64>();
            manifests.push(m);
        }
        let live = self.placement_holders(&v);
        let failing = v.failing_nodes();
        let r = v.charter.replicas as usize;
        let mut blobs: Vec<([u8; 32], u32, Vec<Key>)> = Vec::new();
        let mut seen = HashSet::new();
        for m in &manifests {
            for (id, len) in &m.blobs {
                if seen.insert(**id) {
                    let targets = place(id, &live, r).iter().map(|t| t.node).collect();
                    blobs.push((**id, *len, targets));
                }
            }
        }
        h.blobs = blobs.len() as u64;
        let nodes: Vec<crate::placement::Holder> = v.holders();
        let asks: Vec<(Key, Vec<[u8; 32]>)> = nodes
            .iter()
            .map(|x| {
                let mine = blobs.iter().filter(|(_, _, t)| t.contains(&x.node));
                (x.node, mine.map(|(id, _, _)| *id).collect())
            })
            .collect();
        let answers = self.ask_has(pool, &node, asks).await;
        let mut confirmed: HashSet<([u8; 32], Key)> = HashSet::new();
        for (holder, ids, answer) in &answers {
            if let Ok(bits) = answer {
                for (id, b) in ids.iter().zip(bits) {
                    if *b {
                        confirmed.insert((*id, *holder));
                    }
                }
            }
        }
        // Blobs no target confirmed: does any node that answered have them anyway?
        let orphans: Vec<[u8; 32]> = blobs
            .iter()
            .filter(|(id, _, t)| !t.iter().any(|n| confirmed.contains(&(*id, *n))))
            .map(|(id, _, _)| *id)
            .collect();
        let mut anywhere: HashSet<[u8; 32]> = HashSet::new();
        if !orphans.is_empty() {
            let answered: Vec<(Key, Vec<[u8; 32]>)> = answers
                .iter()
                .filter(|(_, _, a)| a.is_ok())
                .map(|(n, _, _)| (*n, orphans.clone()))
                .collect();
            for (_, ids, answer) in self.ask_has(pool, &node, answered).await {
                for (id, b) in ids.iter().zip(answer.unwrap_or_default()) {
                    if b {
                        anywhere.insert(*id);
                    }
                }
            }
        }
        let silent: Vec<Key> =
            answers.iter().filter(|(_, _, a)| a.is_err()).map(|(n, _, _)| *n).collect();
        // Every node was asked; those that offer nothing (withdrawn, or never offered) are not
        // listed as holders.
        for (x, (_, ids, answer)) in nodes.iter().zip(&answers).filter(|(x, _)| x.weight > 0) {
            let state = if failing.contains(&x.node) {
                "failing"
            } else if answer.is_ok() {
                "up"
            } else if live.iter().all(|l| l.node != x.node) {
                "out"
            } else {
                "down"
            };
            let assigned: u64 = blobs
                .iter()
                .filter(|(_, _, t)| t.contains(&x.node))
                .map(|(_, l, _)| *l as u64)
                .sum();
            h.holders.push(HolderHealth {
                node: x.node,
                state,
                silent_s: (self.pools.silent_for_ms(&x.node).max(0) / 1000) as u64,
                assigned_blobs: ids.len() as u64,
                assigned_bytes: assigned,
                confirmed_blobs: ids.iter().filter(|id| confirmed.contains(&(**id, x.node))).count()
                    as u64,
                error: answer.as_ref().err().cloned(),
            });
        }
        let mut lost: HashSet<[u8; 32]> = HashSet::new();
        for (id, len, targets) in &blobs {
            let copies = targets.iter().filter(|t| confirmed.contains(&(*id, **t))).count();
            if copies < r {
                h.under_replicated_blobs += 1;
                h.under_replicated_bytes += *len as u64 * (r - copies) as u64;
            }
            if copies == 0 && !anywhere.contains(id) {
                if silent.is_empty() {
                    h.lost_blobs += 1;
                    lost.insert(*id);
                } else {
                    h.unconfirmed_blobs += 1;
                }
            }
        }
        if !lost.is_empty() {
            for m in &manifests {
                if m.blobs.iter().any(|(b, _)| lost.contains(&**b)) {
                    h.lost_objects.push(hex(&m.object[..8]));
                }
            }
        }
        h.silent = silent;
        Ok(h)
    }

    /// Asks each node at once which of its ids it holds (this node answers from its store);
    /// a node that does not answer within [`HAS_TIMEOUT`] gets an error.
    pub(super) async fn ask_has(
        &self,
        pool: Key,
        node: &Arc<Node>,
        asks: Vec<(Key, Vec<[u8; 32]>)>,
    ) -> Vec<(Key, Vec<[u8; 32]>, Result<Vec<bool>, String>)> {
        let mut set = tokio::task::JoinSet::new();
        let out_after =
            self.pools.view_of(&pool).map_or(i64::MAX, |v| v.charter.repair_after_ms as i64);
        for (i, (holder, ids)) in asks.into_iter().enumerate() {
            let (pools, node, me) = (self.pools.clone(), node.clone(), self.pools.node());
            // A node silent past repair_after is out; asking it would only wait out the timeout.
            let out = self.pools.silent_for_ms(&holder) > out_after;
            set.spawn(async move {
                let answer = if out {
                    Err(format!("silent for {} s", pools.silent_for_ms(&holder) / 1000))
                } else if holder == me {
                    held_locally(node.store().clone(), ids.clone()).await
                } else {
                    tokio::time::timeout(HAS_TIMEOUT, has(&pools, &node, pool, holder, &ids))
                        .await
                        .unwrap_or_else(|_| {
                            Err(format!("no answer within {} s", HAS_TIMEOUT.as_secs()))
                        })
                };
                (i, holder, ids, answer)
            });
        }
        let mut out: Vec<_> = set.join_all().await;
        out.sort_by_key(|(i, ..)| *i);
        out.into_iter().map(|(_, n, ids, a)| (n, ids, a)).collect()
    }
}
