//! Objects lost before anyone kept them: a member's own entries of which no node holds
//! anything.
//!
//! A put records its object in the pool document before the holders copy its blobs (they check
//! the document before they take anything). A writer killed before any holder copied them, and
//! then restarted from a copy of its home taken before the put (or whose disk was lost), leaves
//! an entry whose data exists nowhere: the put was never acknowledged, but the entry would keep
//! every node counting lost blobs, stop `kith gc` (it cannot read the manifest) and hold up
//! every member's `pool leave`, for good. Only the owner may take its entry out, so the owner's
//! nodes look, now and then, for their member's objects they do not hold themselves.
//!
//! Taking an entry out makes every holder reclaim what it kept for it, so the rule is narrow:
//! an object is taken out only when **no node holds any of its data** (its root, and every blob
//! its manifest lists when the manifest can be read), every node of an active member answered,
//! no node of a former member said it holds any, and the same was found on two looks at least
//! twice `repair_after` apart; and only if its entry is still the one that was looked at. An
//! object of which something survives stays listed (and counted lost) for its owner to decide:
//! nothing this does can destroy a byte that still exists. Logged as a warning naming it. Site
//! versions are left alone (`kith site` manages them).
//!
//! Cost: at most [`MAX_LOOKED`] objects a look; first their roots and manifests are asked of
//! every node, then, only for objects whose root nobody holds, every blob they list.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use kith_crdt::{Key, hex};
use kith_node::ChunkId;

use super::{Replicator, lock};
use crate::view::{PoolObject, State};

/// How often at most a node looks, and how old an entry must be (a put in flight has its
/// entry before its holders have its blobs): twice the pool's `repair_after`, at least this.
const LOST_EVERY: Duration = Duration::from_secs(10);
/// Objects looked at in one look.
const MAX_LOOKED: usize = 64;

/// What a node found on its last look at a pool.
#[derive(Debug)]
pub(super) struct LastLook {
    at: Instant,
    /// Objects of which no node held anything, with the entry looked at.
    nothing_left: HashMap<Key, PoolObject>,
}

impl Replicator {
    /// Looks for this member's lost objects in `pool` if it has not lately (see the module).
    pub(super) async fn forget_lost_if_due(&self, pool: Key) {
        let Some(v) = self.pools.view_of(&pool) else { return };
        let every = LOST_EVERY.max(Duration::from_millis(2 * v.charter.repair_after_ms));
        let suspects = {
            let mut looks = lock(&self.lost_checked);
            let last = looks
                .entry(pool)
                .or_insert_with(|| LastLook { at: Instant::now(), nothing_left: HashMap::new() });
            if last.at.elapsed() < every {
                return;
            }
            last.at = Instant::now();
            std::mem::take(&mut last.nothing_left)
        };
        match self.forget_lost(pool, every, &suspects).await {
            Ok(found) => {
                if let Some(last) = lock(&self.lost_checked).get_mut(&pool) {
                    last.nothing_left = found;
                }
            }
            Err(e) => {
                tracing::debug!(pool = %hex(&pool[..4]), error = %e, "could not look for lost objects")
            }
        }
    }

    /// One look at `pool`: takes out this member's objects older than `age` of which no node
    /// holds anything and of which the same was found last time (`suspects`); gives those
    /// found this time.
    async fn forget_lost(
        &self,
        pool: Key,
        age: Duration,
        suspects: &HashMap<Key, PoolObject>,
    ) -> Result<HashMap<Key, PoolObject>, String> {
        let v = self.pools.view_of(&pool).ok_or("no such pool")?;
        let me = self.pools.node();
        let Some(member) = v.node_owner(&me) else { return Ok(HashMap::new()) };
        let Some(m) = v.members.get(&member) else { return Ok(HashMap::new()) };
        let node = self.node()?.clone();
        let store = node.store().clone();
        let now = self.pools.now_ms();
        // This member's objects this node does not hold (its root is not here).
        let mut looked: Vec<(Key, PoolObject)> = Vec::new();
        for (oid, po) in &m.objects {
            if looked.len() >= MAX_LOOKED {
                break;
            }
            if now - po.at_ms < age.as_millis() as i64 || m.site_version(oid).is_some() {
                continue;
            }
            let (s, root) = (store.clone(), ChunkId(*oid));
            let here = tokio::task::spawn_blocking(move || s.has(&root))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            if !here {
                looked.push((*oid, po.clone()));
            }
        }
        if looked.is_empty() {
            return Ok(HashMap::new());
        }
        // First each object's root and manifest.
        let first: Vec<[u8; 32]> = looked.iter().flat_map(|(o, po)| [*o, po.manifest]).collect();
        let held = self.held_anywhere(pool, &v, &node, first).await?;
        let mut empty: Vec<(Key, PoolObject, Vec<[u8; 32]>)> = Vec::new();
        for (oid, po) in looked {
            if held.contains(&oid) {
                continue;
            }
            // Then, for an object whose root nobody holds, every blob its manifest lists.
            let mut ids = Vec::new();
            if held.contains(&po.manifest) {
                let from = self.pool_nodes(&v);
                let m = self.manifest(&po.manifest, &from).await?;
                ids.extend(m.blobs.iter().map(|(b, _)| **b));
            }
            empty.push((oid, po, ids));
        }
        let rest: Vec<[u8; 32]> = empty.iter().flat_map(|(_, _, ids)| ids.clone()).collect();
        let held = if rest.is_empty() {
            HashSet::new()
        } else {
            self.held_anywhere(pool, &v, &node, rest).await?
        };
        let mut found = HashMap::new();
        let signer = self.pools.signer();
        for (oid, po, ids) in empty {
            if ids.iter().any(|id| held.contains(id)) {
                continue;
            }
            found.insert(oid, po.clone());
            if suspects.get(&oid) != Some(&po) {
                continue;
            }
            // Only the entry looked at, and only while this node still does not hold it.
            let (s, root) = (store.clone(), ChunkId(oid));
            let here = tokio::task::spawn_blocking(move || s.has(&root)).await;
            if !matches!(here, Ok(Ok(false))) {
                continue;
            }
            let taken = self.pools.with_pool(&hex(&pool), |p| {
                let now = p.view().members.get(&member).and_then(|m| m.objects.get(&oid).cloned());
                if now.as_ref() != Some(&po) {
                    return Ok(false);
                }
                p.remove_object(signer, &oid, self.pools.now_ms()).map(|()| true)
            });
            match taken {
                Ok(true) => tracing::warn!(
                    pool = %v.charter.name,
                    object = %hex(&oid),
                    "an object of yours is lost: no node of the pool holds any of it (this node \
                     was restarted from an older copy of its home, or lost its disk, before the \
                     pool kept it); taken out of the pool"
                ),
                Ok(false) => {}
                Err(e) => {
                    tracing::info!(object = %hex(&oid[..8]), error = %e, "could not take out a lost object")
                }
            }
        }
        Ok(found)
    }

    /// Which of `ids` some node holds. Every node of an active member must answer (one that
    /// did not may hold what the others lack); nodes of former members are asked too, and
    /// what they say they hold counts, their silence does not.
    async fn held_anywhere(
        &self,
        pool: Key,
        v: &crate::PoolView,
        node: &std::sync::Arc<kith_node::net::Node>,
        mut ids: Vec<[u8; 32]>,
    ) -> Result<HashSet<[u8; 32]>, String> {
        ids.sort();
        ids.dedup();
        let mut asks = Vec::new();
        let mut must = HashSet::new();
        for (_, m) in v.members.iter() {
            for n in m.nodes.keys() {
                if m.state == State::Active {
                    must.insert(*n);
                }
                asks.push((*n, ids.clone()));
            }
        }
        let mut held = HashSet::new();
        for (holder, asked, answer) in self.ask_has(pool, node, asks).await {
            match answer {
                Ok(bits) => {
                    held.extend(asked.iter().zip(bits).filter(|(_, b)| *b).map(|(id, _)| *id))
                }
                Err(e) if must.contains(&holder) => {
                    return Err(format!("node {} did not answer ({e})", hex(&holder[..4])));
                }
                Err(_) => {}
            }
        }
        Ok(held)
    }
}
