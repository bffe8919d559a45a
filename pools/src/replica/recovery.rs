//! Recovery and the identity: a node of a restored identity finding the pools it belongs to,
//! this identity's document exchanged with its pools' nodes, devices it retired forgotten.

use std::time::Duration;

use iroh::EndpointId;
use kith_crdt::{Key, hex};

use super::protocol::{POOLS_OF_CONTEXT, Reply, Request, ask_briefly, node_message};
use super::{Replicator, lock};
use crate::pool::{Pool, PoolError};
use crate::view::Offer;

/// How often this node exchanges its identity document with its pools' nodes.
const IDENTITY_EVERY: Duration = Duration::from_secs(60);

impl Replicator {
    /// Asks reachable peers not asked yet which pools this identity is in, and takes the ones
    /// this node lacks.
    pub(super) async fn recover(&self) {
        let Ok(node) = self.node() else { return };
        let me = self.pools.signer().author().key;
        let peers: Vec<EndpointId> = node
            .peers()
            .into_iter()
            .filter(|p| p.reachability == kith_node::net::peers::Reachability::Reachable)
            .map(|p| p.id)
            .filter(|p| !lock(&self.asked).contains(p))
            .collect();
        for peer in peers {
            let sig = self.pools.signer().sign(&node_message(POOLS_OF_CONTEXT, &self.pools.node()));
            let req = Request::PoolsOf { identity: me, sig };
            let ids = match ask_briefly(&self.pools, node, peer, &req).await {
                Ok(Reply::Pools(ids)) => ids,
                Ok(other) => {
                    tracing::debug!(peer = %peer.fmt_short(), reply = ?other, "pools-of refused");
                    lock(&self.asked).insert(peer);
                    continue;
                }
                Err(e) => {
                    tracing::debug!(peer = %peer.fmt_short(), error = %e, "pools-of failed");
                    continue;
                }
            };
            lock(&self.asked).insert(peer);
            // A node that shares no pool with this identity may keep a sealed copy of one for a
            // federated pool (whose nodes are all gone, perhaps).
            if ids.is_empty() {
                match self.take_sealed(peer).await {
                    Ok(n) if n > 0 => continue,
                    Ok(_) => {}
                    Err(e) => {
                        // Asked again at a later pass (a busy or half-started node).
                        lock(&self.asked).remove(&peer);
                        tracing::info!(peer = %peer.fmt_short(), error = %e, "asked for sealed copies of this identity's pools: none taken");
                    }
                }
            }
            // Only with a node that shares a pool with this identity or is one of its devices:
            // a stranger would refuse the document (custody is for members) and say so.
            if (!ids.is_empty() || self.pools.is_own_device(peer.as_bytes()))
                && let Err(e) = self.exchange_identity(peer).await
            {
                tracing::debug!(peer = %peer.fmt_short(), error = %e, "identity exchange failed");
            }
            for id in ids {
                if self.pools.has_pool(&id) {
                    continue;
                }
                match self.take_pool(peer, *id).await {
                    Ok(()) => {
                        let name = self
                            .pools
                            .view_of(&id)
                            .map(|v| v.charter.name.clone())
                            .unwrap_or_default();
                        tracing::info!(pool = %name, peer = %peer.fmt_short(), "found pool {name} of this identity and joined it as a new device; this machine offers it no storage yet (`kith offer {name} --storage SIZE --zone HOUSEHOLD`)")
                    }
                    Err(e) => {
                        tracing::warn!(pool = %hex(&id[..4]), error = %e, "cannot take a pool of this identity")
                    }
                }
            }
        }
    }

    async fn take_pool(&self, peer: EndpointId, id: Key) -> Result<(), String> {
        let endpoint = self.pools.endpoint().map_err(|e| e.to_string())?;
        let proof = self.pools.device_proof(&id);
        let doc = crate::docs::fetch_doc(&endpoint, peer.into(), id, proof.clone())
            .await
            .map_err(|e| e.to_string())?;
        let pool = Pool::from_doc(doc).map_err(|e| e.to_string())?;
        if pool.id() != id {
            return Err("the peer sent another pool".into());
        }
        self.join_as_device(pool, Some((peer, proof))).await
    }

    /// Lists this node in `pool` (a pool of this identity it found: from a member's node
    /// `from`, or in a sealed copy) and takes the pool in, then tells the pool's nodes.
    pub(super) async fn join_as_device(
        &self,
        mut pool: Pool,
        from: Option<(EndpointId, crate::docs::Proof)>,
    ) -> Result<(), String> {
        let id = pool.id();
        let proof = from.as_ref().map_or_else(|| self.pools.device_proof(&id), |(_, p)| p.clone());
        let now = self.pools.now_ms();
        pool.offer(self.pools.signer(), &self.pools.node(), &Offer::default(), now)
            .map_err(|e: PoolError| e.to_string())?;
        let name = pool.view().charter.name;
        self.pools
            .with_identity(|d, s, now| d.add_pool(s, &id, &name, now).map(|_| ()))
            .map_err(|e| e.to_string())?;
        self.pools.insert(pool).map_err(|e| e.to_string())?;
        let peer = from.as_ref().map(|(p, _)| *p);
        if let Some(peer) = peer {
            self.pools.sync_one(id, peer, proof.clone()).await?;
        }
        // A holder serves this device only once it knows it is a node of the pool: tell every
        // node now (a few seconds each at most), not at their next round, so a `kith
        // get` right after the restore is not refused.
        if let Some(v) = self.pools.view_of(&id) {
            for n in self.pool_nodes(&v).into_iter().filter(|n| Some(*n) != peer) {
                let r = tokio::time::timeout(
                    Duration::from_secs(5),
                    self.pools.sync_one(id, n, proof.clone()),
                )
                .await;
                if !matches!(r, Ok(Ok(_))) {
                    tracing::debug!(peer = %n.fmt_short(), "could not tell a pool node of this device yet");
                }
            }
        }
        Ok(())
    }

    /// Syncs this identity's document with `peer` (see [`crate::docs::Pools`]).
    async fn exchange_identity(&self, peer: EndpointId) -> Result<usize, String> {
        self.pools.sync_identity(peer).await
    }

    /// Exchanges this identity's document with every node of its pools every
    /// [`IDENTITY_EVERY`], and at once when the document or the set of nodes changed: its
    /// other devices merge it, the other members keep it for a restore.
    pub(super) async fn share_identity_if_due(&self) {
        let mut nodes: Vec<EndpointId> = Vec::new();
        for (_, v) in self.pools.list() {
            for n in self.pool_nodes(&v) {
                if !nodes.contains(&n) {
                    nodes.push(n);
                }
            }
        }
        let mut h = blake3::Hasher::new();
        for head in self.pools.identity_heads() {
            h.update(&head);
        }
        let mut sorted: Vec<[u8; 32]> = nodes.iter().map(|n| *n.as_bytes()).collect();
        sorted.sort();
        for n in &sorted {
            h.update(n);
        }
        let digest = *h.finalize().as_bytes();
        {
            let mut last = lock(&self.identity_shared);
            if last.is_some_and(|(t, d)| t.elapsed() < IDENTITY_EVERY && d == digest) {
                return;
            }
            *last = Some((std::time::Instant::now(), digest));
        }
        let mut reached = nodes.is_empty();
        for peer in nodes {
            match self.exchange_identity(peer).await {
                Ok(_) => reached = true,
                Err(e) => {
                    tracing::debug!(peer = %peer.fmt_short(), error = %e, "identity exchange failed")
                }
            }
        }
        // Nobody reached yet (a node just started, its peers not found): again next round,
        // not a minute later (a device retired meanwhile learns it from this exchange).
        if !reached {
            *lock(&self.identity_shared) = None;
        }
    }

    /// Stops dialling devices their identities retired (and says so once per device).
    pub(super) fn forget_retired(&self) {
        let Ok(node) = self.node() else { return };
        for n in crate::devices::retired_nodes(&self.pools) {
            if node.forget_peer(&n) {
                tracing::info!(peer = %hex(&n[..5]), "forgot a device its owner retired");
            }
        }
        if let Some(at) = self.pools.retired_at()
            && !self.told_retired.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(
                at_ms = at,
                "this device was retired by another device of its identity: it takes no part in pools any more (its own store stays readable here)"
            );
        }
    }
}
