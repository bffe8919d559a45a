//! The HTTP gateway: every pool node serves every site of its pools, by `Host: NAME.local` and
//! by path `/s/NAME/`. Content this node does not hold is fetched from the pool's nodes
//! (verified by id) and kept; opened chunks stay in a memory cache with a size cap, evicted
//! least recently used first, so hot content is served without reading the store or
//! decrypting again.

mod announce;
mod cache;
mod keep;
mod public;
mod serve;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use iroh::EndpointId;
use kith_crdt::{Key, hex};
use kith_node::ChunkId;
use kith_node::net::Node;
use kith_pools::docs::Pools;
use kith_pools::replica::Edges;
use kith_pools::{Access, PoolView, SiteVersion};

use crate::site::{ChunkRef, SiteIndex, open_chunk, open_index};
use cache::Lru;

pub use announce::announce;
pub use keep::SiteKeeper;

/// Default size of the cache of opened chunks.
pub const DEFAULT_CACHE_BYTES: usize = 256 << 20;
/// Site indexes kept open.
const MAX_INDEXES: usize = 256;

/// What the gateway did, for `kith status`.
#[derive(Debug, Default)]
pub struct GatewayStats {
    /// Site requests answered.
    pub requests: AtomicU64,
    /// Chunks served from the cache.
    pub hits: AtomicU64,
    /// Chunks read from the store.
    pub reads: AtomicU64,
    /// Chunks fetched from other nodes.
    pub fetched: AtomicU64,
    /// Site requests answered, by HTTP status (the gateway's own few codes).
    by_status: Mutex<std::collections::BTreeMap<u16, u64>>,
    /// Requests and cache hits by site (only names of sites this node's pools hold).
    by_site: Mutex<std::collections::BTreeMap<String, SiteCounts>>,
}

/// What the gateway did for one site since the node started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SiteCounts {
    /// Requests answered.
    pub requests: u64,
    /// Chunks served from the cache.
    pub cache_hits: u64,
}

impl GatewayStats {
    /// Site requests answered, by HTTP status.
    pub fn by_status(&self) -> std::collections::BTreeMap<u16, u64> {
        lock(&self.by_status).clone()
    }

    pub(crate) fn answered(&self, status: u16) {
        *lock(&self.by_status).entry(status).or_default() += 1;
    }

    /// Requests and cache hits of `site` since the node started.
    pub fn site(&self, site: &str) -> SiteCounts {
        lock(&self.by_site).get(site).copied().unwrap_or_default()
    }

    pub(crate) fn count(&self, site: &str, f: impl FnOnce(&mut SiteCounts)) {
        let mut by = lock(&self.by_site);
        // No allocation for a site already counted (every request but its first).
        match by.get_mut(site) {
            Some(n) => f(n),
            None => f(by.entry(site.to_string()).or_default()),
        }
    }
}

/// The gateway of one node.
pub struct Gateway {
    pools: Arc<Pools>,
    node: Arc<Node>,
    cache: Mutex<Lru>,
    indexes: Mutex<HashMap<Key, Arc<SiteIndex>>>,
    stats: GatewayStats,
    /// Partners' sites this node serves as their edge (`kith up --cdn`).
    edges: OnceLock<Arc<Edges>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where a site's content comes from when the store lacks it.
#[derive(Clone)]
pub(crate) enum Origin {
    /// A site of one of this node's pools: the pool's nodes.
    Pool(Arc<PoolView>),
    /// A partner's site this node serves as its edge (under `agreement`): the partner's nodes
    /// that answered.
    Edge {
        /// The agreement.
        agreement: Key,
        /// The partner's nodes.
        from: Arc<[EndpointId]>,
    },
}

/// A site found by name.
struct Found {
    pool: Key,
    origin: Origin,
    access: Access,
    version: SiteVersion,
    /// The version's number.
    number: u64,
    /// The site's name.
    name: String,
    /// Whether the request named it by `Host` (else by `/s/NAME/`).
    by_host: bool,
}

impl Gateway {
    /// A gateway over this node's pools, caching up to `cache_bytes` of opened chunks.
    pub fn new(pools: Arc<Pools>, node: Arc<Node>, cache_bytes: usize) -> Arc<Gateway> {
        Arc::new(Gateway {
            pools,
            node,
            cache: Mutex::new(Lru {
                map: HashMap::new(),
                order: BTreeMap::new(),
                tick: 0,
                bytes: 0,
                cap: cache_bytes,
            }),
            indexes: Mutex::new(HashMap::new()),
            stats: GatewayStats::default(),
            edges: OnceLock::new(),
        })
    }

    /// Serves, after this node's own pools' sites, the partners' sites `edges` holds.
    pub fn serve_edges(&self, edges: Arc<Edges>) {
        let _ = self.edges.set(edges);
    }

    /// Bytes of opened chunks in the cache now.
    pub fn cache_bytes(&self) -> usize {
        lock(&self.cache).bytes
    }

    /// What the gateway did.
    pub fn stats(&self) -> &GatewayStats {
        &self.stats
    }

    /// The site of this name in one of this node's pools (the first pool by id that has one),
    /// at version `pin` if it still has it, else at its current version; else a partner's
    /// site this node is an edge of, at the version it serves.
    fn find(&self, name: &str, pin: Option<u64>) -> Option<Found> {
        self.find_own(name, pin).or_else(|| {
            let e = self.edges.get()?.site(name)?;
            let h = e.head;
            Some(Found {
                pool: e.pool,
                origin: Origin::Edge { agreement: e.agreement, from: e.from.into() },
                access: Access::Public,
                version: SiteVersion {
                    index: h.index,
                    key: h.key,
                    len: h.len,
                    files: h.files,
                    bytes: h.bytes,
                    at_ms: h.at_ms,
                },
                number: h.number,
                name: name.to_string(),
                by_host: false,
            })
        })
    }

    fn find_own(&self, name: &str, pin: Option<u64>) -> Option<Found> {
        self.pools.views().iter().find_map(|(pool, view)| {
            let (pool, view) = (*pool, Arc::clone(view));
            let (_, site) = view.site(name)?;
            let (number, version) = pin
                .and_then(|n| site.versions.get(&n).map(|v| (n, v.clone())))
                .or_else(|| site.served().map(|v| (site.current, v.clone())))?;
            let access = site.access;
            Some(Found {
                pool,
                origin: Origin::Pool(view),
                access,
                version,
                number,
                name: name.to_string(),
                by_host: false,
            })
        })
    }

    async fn index(&self, found: &Found) -> Result<Arc<SiteIndex>, String> {
        if let Some(i) = lock(&self.indexes).get(&found.version.index) {
            return Ok(i.clone());
        }
        let r = ChunkRef {
            id: found.version.index.into(),
            key: found.version.key.into(),
            len: 0,
            stored: 0,
        };
        let env = self.envelope(&found.origin, &r).await?;
        let i = Arc::new(
            open_index(&env, &found.version.key, found.version.len).map_err(|e| e.to_string())?,
        );
        let mut idx = lock(&self.indexes);
        if idx.len() >= MAX_INDEXES {
            idx.clear();
        }
        idx.insert(found.version.index, i.clone());
        Ok(i)
    }

    async fn chunk(&self, found: &Found, c: &ChunkRef) -> Result<Bytes, String> {
        let at = GatewayRef { origin: found.origin.clone(), site: Some(found.name.clone()) };
        self.chunk_for(&at, c).await
    }

    async fn chunk_for(&self, at: &GatewayRef, c: &ChunkRef) -> Result<Bytes, String> {
        if let Some(b) = lock(&self.cache).get(&c.id) {
            self.stats.hits.fetch_add(1, Relaxed);
            if let Some(site) = &at.site {
                self.stats.count(site, |n| n.cache_hits += 1);
            }
            return Ok(b);
        }
        let env = self.envelope(&at.origin, c).await?;
        let r = c.clone();
        let plain = tokio::task::spawn_blocking(move || open_chunk(&env, &r))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let b = Bytes::from(plain);
        lock(&self.cache).put(*c.id, b.clone());
        Ok(b)
    }

    /// A chunk's envelope: from the store, or fetched (verified) from the pool's nodes (or
    /// the partner's, for an edge) into memory only (the store keeps what placement gives this
    /// node; the cache of opened chunks is what keeps fetched content, within its cap).
    async fn envelope(&self, origin: &Origin, c: &ChunkRef) -> Result<Vec<u8>, String> {
        let id = ChunkId(*c.id);
        let store = self.node.store().clone();
        let read = move || store.read_blob(&id).map_err(|e| e.to_string());
        if let Some((_, env)) =
            tokio::task::spawn_blocking(read.clone()).await.map_err(|e| e.to_string())??
        {
            self.stats.reads.fetch_add(1, Relaxed);
            return Ok(env);
        }
        let from = match origin {
            Origin::Pool(view) => self.pools.nodes_by_recency(view),
            Origin::Edge { from, .. } => from.to_vec(),
        };
        let what = format!("site content {}", hex(&c.id[..8]));
        let blobs =
            self.node.fetch_to_memory(&what, vec![id], from).await.map_err(|e| e.to_string())?;
        self.stats.fetched.fetch_add(1, Relaxed);
        let blob = blobs.into_iter().next().ok_or("fetched nothing")?;
        Ok(blob.parts.concat())
    }
}

struct GatewayRef {
    origin: Origin,
    /// The site the chunk is for (counted), if any.
    site: Option<String>,
}
