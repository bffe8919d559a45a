//! Putting an object into a pool: its manifest stored and recorded in the pool document, room
//! checked against the quota and the storage offered, each blob's share asked of the holders
//! placement picks.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use kith_crdt::Key;
use kith_node::ChunkId;
use kith_node::store::pack::BlobKind;

use super::ReplicaError;
use super::protocol::{Share, hold};
use super::{Replicator, lock};
use crate::manifest::Manifest;
use crate::placement::place;
use crate::view::{PoolObject, PoolView};

/// One holder's answer to a put.
#[derive(Debug, Clone)]
pub struct HolderAck {
    /// The node.
    pub node: Key,
    /// Blobs assigned to it.
    pub blobs: u64,
    /// Their bytes.
    pub bytes: u64,
    /// `Ok(bytes it fetched)` or why not.
    pub result: Result<u64, String>,
}

/// What a put into a pool did.
#[derive(Debug, Clone)]
pub struct PoolPut {
    /// The pool.
    pub pool: Key,
    /// The manifest's id.
    pub manifest: Key,
    /// Blobs of the object.
    pub blobs: u64,
    /// Their bytes (one copy).
    pub bytes: u64,
    /// The replication factor.
    pub replicas: u64,
    /// Holders the pool could use (heard from recently, offering storage).
    pub holders: usize,
    /// Each chosen holder's answer.
    pub acks: Vec<HolderAck>,
    /// Blobs that got fewer holders than the replication factor (too few live holders).
    pub short_blobs: u64,
}

/// A put under way on this node: the holders it asks, and for each blob the holder that may
/// fetch it from this node now (its first holder, then the holder of the stage its segment is
/// at). Until the put ends, the other holders are answered that this node does not have those
/// blobs (a repair pass would otherwise fetch them from the writer before their stage): they
/// get them from the holders before them.
#[derive(Debug, Default)]
pub(crate) struct Putting {
    holders: HashSet<Key>,
    current: std::sync::Mutex<HashMap<[u8; 32], Key>>,
}

/// Removes its put from the replicator's puts under way when dropped, however the put ended.
struct PutUnderWay<'a> {
    rep: &'a Replicator,
    put: Arc<Putting>,
}

impl Drop for PutUnderWay<'_> {
    fn drop(&mut self) {
        lock(&self.rep.putting).retain(|p| !Arc::ptr_eq(p, &self.put));
    }
}

/// Bytes of an object in one segment of a put at least (see [`Chain`]).
const SEGMENT_BYTES: u64 = 16 << 20;
/// Segments whose first stage runs at once: two, so that the writer sends the next segment
/// while the holders sync the last one to disk.
const FIRST_STAGES: usize = 2;
/// Segments of one put at most.
const MAX_SEGMENTS: u64 = 8;

/// One put's chain replication: each segment of the object goes through its stages in turn
/// (a stage asks its holders at once and waits for every answer); the writer sends
/// [`FIRST_STAGES`] segments at a time (their first stage), and a segment's later stages,
/// carried by the holders, overlap with the next segments' first.
struct Chain {
    pools: Arc<crate::docs::Pools>,
    node: Arc<kith_node::net::Node>,
    pool: Key,
    object: Key,
    /// The object's blob ids, by position.
    ids: Vec<[u8; 32]>,
    put: Arc<Putting>,
    /// Each holder's answers so far, summed.
    acks: std::sync::Mutex<BTreeMap<Key, HolderAck>>,
    /// Held by the segments whose first stage runs ([`FIRST_STAGES`]).
    first: tokio::sync::Semaphore,
    /// Progress: what the holders acknowledged, and the total.
    acked: Option<(Arc<kith_node::Progress>, Arc<std::sync::atomic::AtomicU64>, u64)>,
}

impl Chain {
    /// Runs one segment's stages. A holder that failed is not asked again in this put (repair
    /// places its copies), nor named as upstream: the next ones fetch from the writer what it
    /// would have passed on.
    async fn segment(self: Arc<Self>, stages: Vec<BTreeMap<Key, Share>>) {
        for (k, stage) in stages.into_iter().enumerate() {
            let _writer = if k == 0 { self.first.acquire().await.ok() } else { None };
            let failed = |h: &Key| lock(&self.acks).get(h).is_some_and(|a| a.result.is_err());
            let stage: Vec<(Key, Share)> = stage.into_iter().filter(|(h, _)| !failed(h)).collect();
            {
                let mut current = lock(&self.put.current);
                for (holder, share) in &stage {
                    for p in &share.positions {
                        current.insert(self.ids[*p as usize], *holder);
                    }
                }
            }
            let mut tasks = tokio::task::JoinSet::new();
            for (holder, mut share) in stage {
                share.upstream.retain(|u, _| !failed(u));
                let (pools, node) = (self.pools.clone(), self.node.clone());
                let (pool, object) = (self.pool, self.object);
                let (blobs, bytes) = (share.positions.len() as u64, share.bytes);
                // A holder that acknowledged a request of this put has the document that
                // records the object: it is not synced with again.
                let synced = lock(&self.acks).get(&holder).is_some_and(|a| a.result.is_ok());
                tasks.spawn(async move {
                    let result = hold(&pools, &node, pool, object, holder, share, synced).await;
                    HolderAck { node: holder, blobs, bytes, result }
                });
            }
            while let Some(a) = tasks.join_next().await {
                match a {
                    Ok(a) => self.count(a),
                    Err(e) => tracing::error!(error = %e, "a holder's request in a put failed"),
                }
            }
        }
    }

    /// Adds one answer to its holder's.
    fn count(&self, a: HolderAck) {
        if let Some((p, acked, total)) = &self.acked
            && a.result.is_ok()
        {
            use std::sync::atomic::Ordering::Relaxed;
            let now = acked.fetch_add(a.bytes, Relaxed) + a.bytes;
            p.bytes_done.fetch_max(now.min(*total), Relaxed);
        }
        match lock(&self.acks).entry(a.node) {
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(a);
            }
            std::collections::btree_map::Entry::Occupied(mut e) => {
                let e = e.get_mut();
                e.blobs += a.blobs;
                e.bytes += a.bytes;
                e.result = match (&e.result, a.result) {
                    (Ok(x), Ok(y)) => Ok(x + y),
                    (Err(x), _) => Err(x.clone()),
                    (Ok(_), Err(y)) => Err(y),
                };
            }
        }
    }
}

impl Replicator {
    /// Which of `ids` this node answers as missing to node `peer` for now: blobs of a put
    /// under way that `peer` is to get from another holder (see [`Putting`]).
    pub(crate) fn withheld(&self, peer: &Key, ids: &[[u8; 32]]) -> Vec<bool> {
        let putting = lock(&self.putting);
        let mine: Vec<&Arc<Putting>> =
            putting.iter().filter(|p| p.holders.contains(peer)).collect();
        if mine.is_empty() {
            return Vec::new();
        }
        // Served when a put has it at `peer` now (two puts may share blobs); withheld when a
        // put has it at another holder now.
        ids.iter()
            .map(|id| {
                let mut elsewhere = false;
                for p in &mine {
                    match lock(&p.current).get(id) {
                        Some(h) if h == peer => return false,
                        Some(_) => elsewhere = true,
                        None => {}
                    }
                }
                elsewhere
            })
            .collect()
    }

    /// Whether pool `spec` can take a new object at all, checked before anything is stored: this
    /// identity is a member, and some live holder offers storage (else: who can offer).
    pub fn ready_for_put(&self, spec: &str) -> Result<(), ReplicaError> {
        let id = self.pools.resolve(spec).map_err(|e| e.to_string())?;
        let v = self.pools.view_of(&id).ok_or("no such pool")?;
        let pool = v.charter.name.clone();
        if v.active(&self.pools.signer().author().key).is_none() {
            return Err(ReplicaError::NotAMember { pool });
        }
        if v.holders().iter().all(|h| h.weight == 0) {
            return Err(ReplicaError::NoOffers { pool });
        }
        if self.placement_holders(&v).is_empty() {
            return Err(ReplicaError::NoLiveHolders { pool });
        }
        Ok(())
    }

    /// Puts object `object` (already in this node's store) into pool `spec` under `name`,
    /// asking the chosen holders to hold it; returns their answers.
    pub async fn put(&self, spec: &str, object: Key, name: &str) -> Result<PoolPut, ReplicaError> {
        self.put_with_progress(spec, object, name, None).await
    }

    /// [`Replicator::put`], counting in `progress` the bytes the holders took: its total is
    /// what placement gives the other nodes, and it moves as this node serves them (holders
    /// that had some blobs already take less, and it jumps when they acknowledge).
    pub async fn put_with_progress(
        &self,
        spec: &str,
        object: Key,
        name: &str,
        progress: Option<Arc<kith_node::Progress>>,
    ) -> Result<PoolPut, ReplicaError> {
        let node = self.node()?.clone();
        let store = node.store().clone();
        let oid = kith_node::ObjectId(object);
        let blobs = tokio::task::spawn_blocking(move || store.object_blobs(&oid))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let list: Vec<([u8; 32], u32)> = blobs.iter().map(|(c, l)| (c.0, *l)).collect();
        Ok(self.put_blobs_with(spec, object, name, &list, progress).await?)
    }

    /// Puts the blobs `list` (in this node's store, `(id, stored length)`) into pool `spec` as
    /// object `object` named `name`: what [`Replicator::put`] does for a stored object, and
    /// what a site version is.
    pub async fn put_blobs(
        &self,
        spec: &str,
        object: Key,
        name: &str,
        list: &[([u8; 32], u32)],
    ) -> Result<PoolPut, String> {
        self.put_blobs_with(spec, object, name, list, None).await
    }

    async fn put_blobs_with(
        &self,
        spec: &str,
        object: Key,
        name: &str,
        list: &[([u8; 32], u32)],
        progress: Option<Arc<kith_node::Progress>>,
    ) -> Result<PoolPut, String> {
        let node = self.node()?.clone();
        let manifest = Manifest::new(object, list).map_err(|e| e.to_string())?;
        let mid = manifest.id();
        let bytes = manifest.to_bytes();
        let store = node.store().clone();
        tokio::task::spawn_blocking(move || {
            let mut ingest = store.ingest()?;
            ingest.add(ChunkId(mid), BlobKind::Chunk, &bytes)?;
            ingest.finish()
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot store the manifest: {e}"))?;
        lock(&self.manifests).insert(mid, Arc::new(manifest.clone()));
        let id = self.pools.resolve(spec).map_err(|e| e.to_string())?;
        let v = self.pools.view_of(&id).ok_or("the pool is gone")?;
        self.check_room(&v, &manifest)
            .await
            .map_err(|e| format!("{e}; the object is stored on this node, not in the pool"))?;
        let signer = self.pools.signer();
        let record = PoolObject {
            manifest: mid,
            bytes: manifest.bytes(),
            blobs: manifest.blobs.len() as u64,
            name: crate::names::seal(signer, &id, &object, name),
            at_ms: self.pools.now_ms(),
        };
        let (pool, v) = self
            .pools
            .with_pool(spec, |p| {
                let me = signer.author().key;
                let known = p.view().members.get(&me).and_then(|m| m.objects.get(&object).cloned());
                if known.is_none_or(|k| k.manifest != mid) {
                    p.add_object(signer, &object, &record, self.pools.now_ms())?;
                }
                Ok((p.id(), p.view()))
            })
            .map_err(|e| e.to_string())?;
        let holders = self.placement_holders(&v);
        let r = v.charter.replicas as usize;
        let me = self.pools.node();
        // Chain replication: each blob's targets other than this node, in placement order; the
        // first fetches it from this node, each next one (a stage later) from the ones before,
        // which hold it verified and synced by then. This node sends each blob once, and the
        // holders' links carry the other copies. The object goes in segments, so that the
        // holders pass a segment on while this node sends the next.
        let segment_bytes = SEGMENT_BYTES.max(manifest.bytes().div_ceil(MAX_SEGMENTS));
        let mut segments: Vec<Vec<BTreeMap<Key, Share>>> = vec![Vec::new()];
        let mut filled = 0u64;
        let mut mine = (0u64, 0u64);
        let mut first: HashMap<[u8; 32], Key> = HashMap::new();
        let mut short_blobs = 0;
        for (i, (id, len)) in manifest.blobs.iter().enumerate() {
            if filled >= segment_bytes {
                segments.push(Vec::new());
                filled = 0;
            }
            filled += *len as u64;
            let stages = segments.last_mut().expect("one segment at least");
            let targets = place(id, &holders, r);
            if targets.len() < r {
                short_blobs += 1;
            }
            let mut before: Vec<Key> = Vec::new();
            for h in targets {
                if h.node == me {
                    mine.0 += 1;
                    mine.1 += *len as u64;
                    continue;
                }
                if stages.len() <= before.len() {
                    stages.push(BTreeMap::new());
                }
                if before.is_empty() {
                    first.insert(**id, h.node);
                }
                let share = stages[before.len()].entry(h.node).or_default();
                share.positions.push(i as u32);
                share.bytes += *len as u64;
                for u in &before {
                    *share.upstream.entry(*u).or_default() += 1;
                }
                before.push(h.node);
            }
        }
        let shares = || segments.iter().flatten().flat_map(|s| s.iter());
        let to_others: u64 = shares().map(|(_, s)| s.bytes).sum();
        let watch = progress.map(|p| {
            use std::sync::atomic::Ordering::Relaxed;
            p.bytes_done.store(0, Relaxed);
            p.files_done.store(0, Relaxed);
            p.bytes_total.store(to_others, Relaxed);
            p.total_known.store(true, Relaxed);
            let watched = node.clone();
            let start = watched.served().bytes.load(Relaxed);
            let acked = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let (p2, acked2) = (p.clone(), acked.clone());
            let ticker = tokio::spawn(async move {
                loop {
                    let sent = watched.served().bytes.load(Relaxed).saturating_sub(start);
                    let done = sent.max(acked2.load(Relaxed)).min(to_others);
                    p2.bytes_done.fetch_max(done, Relaxed);
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            });
            (p, acked, ticker)
        });
        let under_way = PutUnderWay {
            rep: self,
            put: Arc::new(Putting {
                holders: shares().map(|(h, _)| *h).collect(),
                current: std::sync::Mutex::new(first),
            }),
        };
        lock(&self.putting).push(under_way.put.clone());
        let chain = Arc::new(Chain {
            pools: self.pools.clone(),
            node: node.clone(),
            pool,
            object,
            ids: manifest.blobs.iter().map(|(id, _)| **id).collect(),
            put: under_way.put.clone(),
            acks: Default::default(),
            first: tokio::sync::Semaphore::new(FIRST_STAGES),
            acked: watch.as_ref().map(|(p, acked, _)| (p.clone(), acked.clone(), to_others)),
        });
        if mine.0 > 0 {
            let ack = HolderAck { node: me, blobs: mine.0, bytes: mine.1, result: Ok(0) };
            lock(&chain.acks).insert(me, ack);
        }
        let mut tasks = tokio::task::JoinSet::new();
        for stages in segments {
            tasks.spawn(chain.clone().segment(stages));
        }
        while let Some(done) = tasks.join_next().await {
            done.map_err(|e| e.to_string())?;
        }
        drop(under_way);
        if let Some((_, _, ticker)) = watch {
            ticker.abort();
        }
        let acks: Vec<HolderAck> = std::mem::take(&mut *lock(&chain.acks)).into_values().collect();
        Ok(PoolPut {
            pool,
            manifest: mid,
            blobs: manifest.blobs.len() as u64,
            bytes: manifest.bytes(),
            replicas: v.charter.replicas,
            holders: holders.len(),
            acks,
            short_blobs,
        })
    }

    /// Refuses an object that would take this member over its quota (one copy of its distinct
    /// blobs) or the pool over the storage its live holders offer (every copy).
    async fn check_room(&self, v: &PoolView, m: &Manifest) -> Result<(), String> {
        let me = self.pools.signer().author().key;
        let from = self.pool_nodes(v);
        let mut all: HashMap<[u8; 32], u64> = HashMap::new();
        let mut mine: HashSet<[u8; 32]> = HashSet::new();
        let mut unknown = (0u64, 0u64);
        for (owner, _, po) in v.objects() {
            match self.manifest(&po.manifest, &from).await {
                Ok(pm) => {
                    for (id, len) in &pm.blobs {
                        all.insert(**id, *len as u64);
                        if *owner == me {
                            mine.insert(**id);
                        }
                    }
                }
                // Counted whole when its manifest cannot be read.
                Err(_) => {
                    unknown.0 += po.bytes;
                    if *owner == me {
                        unknown.1 += po.bytes;
                    }
                }
            }
        }
        let mut seen = HashSet::new();
        let fresh = |set: &dyn Fn(&[u8; 32]) -> bool, seen: &mut HashSet<[u8; 32]>| -> u64 {
            seen.clear();
            m.blobs
                .iter()
                .filter(|(id, _)| !set(id) && seen.insert(**id))
                .map(|(_, l)| *l as u64)
                .sum()
        };
        let name = &v.charter.name;
        let quota = v.charter.quota;
        if quota > 0 {
            let used: u64 = mine.iter().map(|id| all[id]).sum::<u64>() + unknown.1;
            let more = fresh(&|id| mine.contains(id), &mut seen);
            if used + more > quota {
                return Err(format!(
                    "over your quota in pool `{name}`: you store {} of {}, and this object needs {} more",
                    crate::fmt::size(used),
                    crate::fmt::size(quota),
                    crate::fmt::size(more)
                ));
            }
        }
        let r = v.charter.replicas;
        let offered: u64 = self.placement_holders(v).iter().map(|h| h.weight).sum();
        let used = (all.values().sum::<u64>() + unknown.0) * r;
        let more = fresh(&|id| all.contains_key(id), &mut seen) * r;
        if used + more > offered {
            return Err(format!(
                "pool `{name}` is out of capacity: {} of the {} its live holders offer is used ({r} copies of everything), and this object needs {} more; members offer more with `kith offer {name} --storage SIZE`",
                crate::fmt::size(used),
                crate::fmt::size(offered),
                crate::fmt::size(more)
            ));
        }
        Ok(())
    }
}
