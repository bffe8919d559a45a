//! Taking a member's objects and sites home before they leave a pool (the member leaves, the
//! pool is dissolved), and settling dissolved pools.

use std::collections::HashSet;
use std::sync::Arc;

use kith_crdt::{Key, hex};

use super::ReplicaError;
use super::Replicator;

/// Keeps a member's site, when the pool stops serving it (the member leaves, the pool is
/// dissolved), as an ordinary object in the member's own store; the hosting layer knows the
/// site format and implements it.
pub trait SiteKeeper: Send + Sync {
    /// Keeps the version served of this identity's site `name` in `pool`; returns the object id.
    fn keep<'a>(
        &'a self,
        pool: Key,
        name: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Key, String>> + Send + 'a>>;
}

impl Replicator {
    /// Makes every object of this identity in `pool` complete in this node's store, fetching
    /// what it lacks from the pool's nodes (before the objects leave the pool: a member
    /// leaving, a pool dissolved). Returns the bytes fetched.
    pub async fn bring_home(&self, pool: Key) -> Result<u64, ReplicaError> {
        let v = self.pools.view_of(&pool).ok_or("no such pool")?;
        let me = self.pools.signer().author().key;
        let Some(m) = v.members.get(&me) else { return Ok(0) };
        let node = self.node()?.clone();
        let from = self.pool_nodes(&v);
        // Site versions are pool objects too, but they are published, not kept: not brought.
        let sites: HashSet<Key> =
            m.sites.values().flat_map(|s| s.versions.values().map(|x| x.index)).collect();
        let mut fetched = 0;
        for oid in m.objects.keys().filter(|o| !sites.contains(*o)) {
            fetched += node
                .fetch_object_from(kith_node::ObjectId(*oid), None, Some(from.clone()), None)
                .await
                .map_err(|e| format!("object {}: {e}", hex(&oid[..8])))?;
        }
        Ok(fetched)
    }

    /// Gives the replicator what keeps sites as objects (the hosting layer).
    pub fn set_site_keeper(&self, keeper: Arc<dyn SiteKeeper>) {
        let _ = self.keeper.set(keeper);
    }

    /// Keeps the served version of each of this identity's sites in `pool` as an object in
    /// this node's store (before the pool stops serving them); returns (name, object id).
    pub async fn keep_sites(&self, pool: Key) -> Result<Vec<(String, Key)>, ReplicaError> {
        let v = self.pools.view_of(&pool).ok_or("no such pool")?;
        let me = self.pools.signer().author().key;
        let Some(m) = v.members.get(&me) else { return Ok(Vec::new()) };
        if m.sites.is_empty() {
            return Ok(Vec::new());
        }
        let keeper = self.keeper.get().ok_or("the node cannot read sites yet; try again")?;
        let mut out = Vec::new();
        for name in m.sites.keys() {
            let id = keeper.keep(pool, name).await.map_err(|e| format!("site {name}: {e}"))?;
            out.push((name.clone(), id));
        }
        Ok(out)
    }

    /// For each dissolved pool this identity is still in: brings its objects home, then
    /// leaves, which tells the others it no longer needs their copies.
    pub(super) async fn settle_dissolved(&self) {
        let me = self.pools.signer().author().key;
        for (pool, v) in self.pools.former() {
            if v.charter.dissolved_ms.is_none() || v.active(&me).is_none() {
                continue;
            }
            let name = v.charter.name.clone();
            let home = match self.bring_home(pool).await {
                Ok(bytes) => self.keep_sites(pool).await.map(|_| bytes),
                Err(e) => Err(e),
            };
            match home {
                Ok(bytes) => {
                    self.record_usage(pool, true);
                    let left = self
                        .pools
                        .with_pool(&hex(&pool), |p| {
                            p.leave(self.pools.signer(), self.pools.now_ms())
                        })
                        .and_then(|()| {
                            self.pools
                                .with_identity(|d, s, now| d.drop_pool(s, &pool, now).map(|_| ()))
                        });
                    match left {
                        Ok(()) => {
                            tracing::info!(pool = %name, fetched = bytes, "pool {name} was dissolved; your objects are in this node's store")
                        }
                        Err(e) => {
                            tracing::warn!(pool = %name, error = %e, "cannot record leaving a dissolved pool")
                        }
                    }
                }
                Err(e) => {
                    tracing::info!(pool = %name, error = %e, "pool {name} was dissolved; still bringing your objects home")
                }
            }
        }
    }
}
