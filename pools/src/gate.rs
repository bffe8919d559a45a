//! Who may fetch which blobs from this node: the identity's own devices, and the nodes of
//! active members of a pool that references the blob (holders repairing, members opening a
//! site or restoring their objects). A removed member, a stranger who learned an id, or a
//! retired device gets nothing.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use iroh::EndpointId;
use kith_crdt::{Key, hex};
use kith_node::net::blobs::{BlobGate, DeviceProof};

use crate::replica::Replicator;

/// The blobs each pool references, as of a pool-document generation and a count of manifests
/// known, and when the set was made if a manifest was missing then (`None`: every manifest was
/// here).
type Referenced = HashMap<Key, ((u64, usize), Arc<HashSet<[u8; 32]>>, Option<std::time::Instant>)>;

/// How long a set made while a manifest was missing is used before it is made again.
const INCOMPLETE_FOR: std::time::Duration = std::time::Duration::from_secs(2);

/// The pools' [`BlobGate`].
#[derive(Debug)]
pub struct PoolsGate {
    rep: Arc<Replicator>,
    referenced: Mutex<Referenced>,
}

impl PoolsGate {
    /// The gate of these pools.
    pub fn new(rep: Arc<Replicator>) -> Arc<PoolsGate> {
        Arc::new(PoolsGate { rep, referenced: Mutex::new(HashMap::new()) })
    }

    /// Every blob pool `id` references: each object's manifest and the blobs it lists. Kept
    /// for the pool document's generation and the count of manifests known; when a manifest
    /// was missing (replication still under way), made again once another manifest is known
    /// or after [`INCOMPLETE_FOR`]: the manifest's arrival changes the set without changing
    /// the document, and a set kept without it refused its blobs until the next change (seen
    /// after a link between two neighbourhoods healed, and when a holder passed on the blobs
    /// of an object whose manifest it had just fetched: chain replication).
    fn referenced(&self, id: &Key, v: &crate::PoolView) -> Arc<HashSet<[u8; 32]>> {
        let generation = (self.rep.pools().generation(), self.rep.manifests_known());
        if let Some((g, set, made)) = self.lock().get(id)
            && *g == generation
            && made.is_none_or(|t| t.elapsed() < INCOMPLETE_FOR)
        {
            return set.clone();
        }
        let mut set = HashSet::new();
        let mut whole = true;
        for (_, _, po) in v.objects() {
            set.insert(po.manifest);
            match self.rep.manifest_here(&po.manifest) {
                Some(m) => set.extend(m.blobs.iter().map(|(b, _)| **b)),
                None => whole = false,
            }
        }
        let set = Arc::new(set);
        let made = (!whole).then(std::time::Instant::now);
        self.lock().insert(*id, (generation, set.clone(), made));
        set
    }

    /// Whether `node`, proving it is a device of a federated pool's member named by a roster,
    /// may have `ids`: what this node holds for that pool (off-site copies, to restore), or,
    /// when one of this node's pools borrows storage from that pool, what that pool references
    /// (the partner's holders fetching the copies asked of them).
    fn partner_may_fetch(
        &self,
        holding: &[(Key, crate::PoolView)],
        node: &Key,
        proof: Option<&DeviceProof>,
        ids: &[[u8; 32]],
    ) -> bool {
        let Some(p) = proof.filter(|p| {
            kith_crdt::verify_device(&p.identity, node, &DeviceProof::message(node), &p.sig)
        }) else {
            return false;
        };
        let now = self.rep.pools().now_ms();
        if self.rep.partner_may_fetch(&p.identity, ids) {
            return true;
        }
        let in_force = |a: &Key| {
            self.rep
                .lent()
                .roster(a)
                .is_some_and(|r| r.names(&p.identity) && now.max(0) as u64 <= r.not_after_ms)
        };
        // Edges of a partner that lends this pool CDN fetch its public sites as served now.
        let edge = holding.iter().any(|(id, v)| {
            v.federation.agreements.iter().any(|(a, e)| {
                matches!(e.state(id, now), "active" | "leaving")
                    && e.agreement.lending_of(id).is_some_and(|(_, lent)| lent.cdn)
                    && in_force(a)
            }) && {
                let set = self.rep.public_site_blobs(v);
                ids.iter().all(|b| set.contains(b))
            }
        });
        if edge {
            return true;
        }
        // Only partners that lend this pool storage fetch from it, with a roster in force.
        holding.iter().any(|(id, v)| {
            let named = v.federation.agreements.iter().any(|(a, e)| {
                matches!(e.state(id, now), "active" | "leaving")
                    && e.agreement.lending_of(id).is_some_and(|(_, lent)| lent.storage > 0)
                    && in_force(a)
            });
            named && {
                let set = self.referenced(id, v);
                ids.iter().all(|b| set.contains(b))
            }
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Referenced> {
        self.referenced.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl BlobGate for PoolsGate {
    fn withheld(&self, peer: &EndpointId, ids: &[[u8; 32]]) -> Vec<bool> {
        self.rep.withheld(peer.as_bytes(), ids)
    }

    fn may_serve(
        &self,
        peer: &EndpointId,
        proof: Option<&DeviceProof>,
        ids: &[[u8; 32]],
    ) -> Result<(), String> {
        let pools = self.rep.pools();
        let node = *peer.as_bytes();
        let me = pools.signer().author().key;
        // A device of this identity, proven now (by the identity key or that device's own
        // certified key: a listing in the identity document alone proves nothing), not retired.
        let proven = proof.is_some_and(|p| {
            p.identity == me
                && kith_crdt::verify_device(&me, &node, &DeviceProof::message(&node), &p.sig)
        });
        if proven && !pools.is_retired_device(&node) {
            return Ok(());
        }
        let holding = pools.holding();
        let mut allowed: Vec<Arc<HashSet<[u8; 32]>>> = Vec::new();
        for (id, v) in &holding {
            if v.node_owner(&node).is_some() {
                allowed.push(self.referenced(id, v));
            }
        }
        if !allowed.is_empty() && ids.iter().all(|b| allowed.iter().any(|s| s.contains(b))) {
            return Ok(());
        }
        if self.partner_may_fetch(&holding, &node, proof, ids) {
            return Ok(());
        }
        if allowed.is_empty() {
            if pools.is_retired_device(&node)
                || pools
                    .holding()
                    .iter()
                    .any(|(_, v)| v.not_a_member_node(&node) == crate::view::RETIRED_DEVICE)
            {
                return Err(crate::view::RETIRED_DEVICE.into());
            }
            return Err(
                "this node serves blobs only to its identity's devices and to members of its pools"
                    .into(),
            );
        }
        match ids.iter().find(|b| !allowed.iter().any(|s| s.contains(*b))) {
            None => Ok(()),
            Some(b) => {
                Err(format!("blob {} is in no pool this node shares with you", hex(&b[..8])))
            }
        }
    }
}
