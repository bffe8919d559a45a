//! The pools this node holds: found by name or id prefix, viewed (views cached per generation
//! of the documents), created, joined and edited.

use std::sync::Arc;

use kith_crdt::{Key, hex};

use super::Pools;
use crate::pool::{Pool, PoolError, PoolSnapshot};
use crate::view::{Offer, State};

/// Every pool's typed view, shared.
pub type SharedViews = Arc<Vec<(Key, Arc<crate::view::PoolView>)>>;

impl Pools {
    /// The pool with this id as it is now, with its history (for the ledgers' rules); kept
    /// until the pool document changes.
    pub fn snapshot(&self, pool: &Key) -> Option<Arc<PoolSnapshot>> {
        let g = self.generation.load(std::sync::atomic::Ordering::Acquire);
        let mut cache = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, s)) = cache.get(pool)
            && *at == g
        {
            return Some(s.clone());
        }
        // The shared view, read once per change for every use (not once more here).
        let (at, all, _) = self.cached_views();
        let (g, snap) = {
            let mut pools = self.lock();
            let g = self.generation.load(std::sync::atomic::Ordering::Acquire);
            let cached = (at == g)
                .then(|| all.iter().find(|(k, _)| k == pool).map(|(_, v)| v.clone()))
                .flatten();
            let p = pools.get_mut(pool)?;
            let snap = match cached {
                Some(view) => p.snapshot_with(view),
                None => p.snapshot(),
            };
            (g, Arc::new(snap))
        };
        cache.insert(*pool, (g, snap.clone()));
        Some(snap)
    }

    /// The pool with this id, as it is now: the shared view, read again only after a document
    /// changed (peers' sessions and requests ask for it many times a second, and reading a
    /// whole pool costs in proportion to its history).
    pub fn view_of(&self, pool: &Key) -> Option<Arc<crate::view::PoolView>> {
        self.all_views().iter().find(|(k, _)| k == pool).map(|(_, v)| v.clone())
    }

    /// The id of the pool `spec` names.
    pub fn resolve(&self, spec: &str) -> Result<Key, PoolError> {
        self.find(spec)
    }

    /// The pools an identity is an active member of.
    pub fn pools_of(&self, identity: &Key) -> Vec<Key> {
        self.all_views()
            .iter()
            .filter(|(_, v)| v.active(identity).is_some())
            .map(|(k, _)| *k)
            .collect()
    }

    /// Whether this node holds pool `id`.
    pub fn has_pool(&self, id: &Key) -> bool {
        self.lock().contains_key(id)
    }

    /// Runs `f` on a pool by name or id prefix, saves it if it changed, and wakes the sync.
    pub fn with_pool<T>(
        &self,
        spec: &str,
        f: impl FnOnce(&mut Pool) -> Result<T, PoolError>,
    ) -> Result<T, PoolError> {
        let id = self.find(spec)?;
        let mut pools = self.lock();
        let pool =
            pools.get_mut(&id).ok_or_else(|| PoolError::Policy("the pool is gone".into()))?;
        let heads = pool.doc_mut().heads();
        let out = match f(pool) {
            Ok(out) => out,
            Err(e) => {
                // What `f` changed before it failed is not made either.
                if pool.doc_mut().heads() != heads {
                    pool.rewind(&heads)?;
                }
                return Err(e);
            }
        };
        if pool.doc_mut().heads() != heads {
            // A change that is not on disk is not made: reported as failed, it must not reach
            // the peers either (a full disk, a read-only home).
            if let Err(e) = self.save(pool) {
                pool.rewind(&heads)?;
                return Err(e);
            }
            self.changed.notify_one();
        }
        Ok(out)
    }

    /// Adds a pool this node created or received.
    pub fn insert(&self, mut pool: Pool) -> Result<Key, PoolError> {
        self.save(&mut pool)?;
        let id = pool.id();
        self.lock().insert(id, pool);
        self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.changed.notify_one();
        Ok(id)
    }

    /// Founds a pool; this node is listed with an empty offer.
    pub fn create(&self, display: &str, charter: crate::view::Charter) -> Result<Key, PoolError> {
        if self.list().iter().any(|(_, v)| v.charter.name == charter.name) {
            return Err(PoolError::Policy(format!(
                "a pool named `{}` already exists here",
                charter.name
            )));
        }
        let now = self.now_ms();
        let mut pool = Pool::create(&self.signer, display, charter, now)?;
        pool.offer(&self.signer, &self.node, &Offer::default(), now)?;
        self.insert(pool)
    }

    /// The pools this identity is an active member of (a pool it left, was removed from, or
    /// that was dissolved is kept on disk but is no longer its: see [`Pools::former`]).
    pub fn list(&self) -> Vec<(Key, crate::view::PoolView)> {
        self.views().iter().map(|(k, v)| (*k, (**v).clone())).collect()
    }

    /// The pools this identity was in and is no longer, or that were dissolved (kept so that
    /// the change that ended the membership reaches the others).
    pub fn former(&self) -> Vec<(Key, crate::view::PoolView)> {
        let me = self.signer.author().key;
        self.all_views()
            .iter()
            .filter(|(_, v)| v.active(&me).is_none() || v.charter.dissolved_ms.is_some())
            .map(|(k, v)| (*k, (**v).clone()))
            .collect()
    }

    /// The pools whose blobs this node keeps: its own, and dissolved ones whose members have
    /// not all taken their objects home yet.
    pub fn holding(&self) -> Vec<(Key, crate::view::PoolView)> {
        let me = self.signer.author().key;
        self.all_views()
            .iter()
            .filter(|(_, v)| {
                let settling = v.charter.dissolved_ms.is_some()
                    && v.members.values().any(|m| m.state == State::Active);
                (v.active(&me).is_some() && v.charter.dissolved_ms.is_none()) || settling
            })
            .map(|(k, v)| (*k, (**v).clone()))
            .collect()
    }

    /// The views of the pools this identity is an active member of, shared and read again only
    /// after a document changed (for hot paths such as the HTTP gateway, where reading every
    /// document per request would dominate).
    pub fn views(&self) -> SharedViews {
        self.cached_views().2
    }

    /// Every pool's view, former ones included.
    pub(super) fn all_views(&self) -> SharedViews {
        self.cached_views().1
    }

    /// Every pool's view and this identity's pools' views, and the generation they are of.
    fn cached_views(&self) -> (u64, SharedViews, SharedViews) {
        let g = self.generation.load(std::sync::atomic::Ordering::Acquire);
        if let Some((at, all, mine)) = self.views.lock().unwrap_or_else(|p| p.into_inner()).as_ref()
            && *at == g
        {
            return (g, all.clone(), mine.clone());
        }
        // Read under the pools' lock, so the generation read with it is the views' own.
        let (g, all) = {
            let pools = self.lock();
            let g = self.generation.load(std::sync::atomic::Ordering::Acquire);
            (g, pools.iter().map(|(k, p)| (*k, Arc::new(p.view()))).collect::<Vec<_>>())
        };
        let me = self.signer.author().key;
        let retired = self.retired_at().is_some();
        let mine: Vec<_> = all
            .iter()
            .filter(|(_, v)| {
                !retired && v.active(&me).is_some() && v.charter.dissolved_ms.is_none()
            })
            .cloned()
            .collect();
        let (all, mine) = (Arc::new(all), Arc::new(mine));
        *self.views.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((g, all.clone(), mine.clone()));
        (g, all, mine)
    }
}

/// How far a misspelled pool name may be from a real one to be suggested.
const SUGGEST_DISTANCE: usize = 2;

impl Pools {
    /// A pool by exact name or by id prefix (at least 4 hex digits); an empty `spec` is the only
    /// pool this identity is in. This identity's pools are searched first, then former ones.
    fn find(&self, spec: &str) -> Result<Key, PoolError> {
        let mine = self.views();
        let spec = spec.trim();
        if spec.is_empty() {
            return match mine.as_slice() {
                [(k, _)] => Ok(*k),
                [] => Err(PoolError::Policy(
                    "you are in no pool (create one with `kith pool create NAME`, or join with a ticket)".into(),
                )),
                _ => Err(PoolError::Policy(format!(
                    "you are in several pools ({}); name one",
                    mine.iter().map(|(_, v)| v.charter.name.as_str()).collect::<Vec<_>>().join(", ")
                ))),
            };
        }
        let all = self.all_views();
        for set in [&*mine, &*all] {
            let by_name: Vec<Key> =
                set.iter().filter(|(_, v)| v.charter.name == spec).map(|(k, _)| *k).collect();
            match by_name.as_slice() {
                [k] => return Ok(*k),
                [] => {}
                _ => {
                    return Err(PoolError::Policy(format!(
                        "`{spec}` names several pools; use the pool id from `kith pool ls`"
                    )));
                }
            }
        }
        let lower = spec.to_ascii_lowercase();
        let by_id: Vec<Key> = all
            .iter()
            .filter(|(k, _)| spec.len() >= 4 && hex(&k[..]).starts_with(&lower))
            .map(|(k, _)| *k)
            .collect();
        match by_id.as_slice() {
            [k] => Ok(*k),
            [] => {
                let close = mine
                    .iter()
                    .map(|(_, v)| v.charter.name.as_str())
                    .filter(|n| distance(n, spec) <= SUGGEST_DISTANCE)
                    .min_by_key(|n| distance(n, spec));
                Err(PoolError::Policy(match close {
                    Some(n) => format!("no pool `{spec}` here; did you mean {n}?"),
                    None => format!("no pool `{spec}` here (see `kith pool ls`)"),
                }))
            }
            _ => Err(PoolError::Policy(format!(
                "`{spec}` matches several pool ids; give more of it (see `kith pool ls`)"
            ))),
        }
    }
}

/// Edit distance between two short names (Levenshtein, by characters).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Pool;

    /// A change the node could not write down (its disk full, found by `testnet chaos`: a
    /// `kith site publish` said "No space left on device" and its version went out anyway) is
    /// not made at all: the pool is as it was, and nothing new goes to the peers.
    #[test]
    fn a_change_that_cannot_be_saved_is_not_made() {
        let home = std::env::temp_dir().join(format!(
            "kith-unsaved-{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
        ));
        let signer = kith_crdt::Signer::new(&[7; 32], [8; 32]);
        let pools = Pools::load(&home, signer, [8; 32], kith_node::Clock::manual(1_000)).unwrap();
        let id = pools.create("ada", Pool::charter("street")).unwrap();
        let path = pools.files.path::<Pool>(&hex(&id));
        let before = pools.with_pool("street", |p| Ok(p.doc_mut().heads())).unwrap();
        // The file cannot be replaced: a folder stands where it goes.
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        let signer = pools.signer();
        let err = pools
            .with_pool("street", |p| p.set(signer, "audit_every", "45s", pools.now_ms()))
            .unwrap_err();
        assert!(err.to_string().contains("cannot write"), "{err}");
        let after = pools.with_pool("street", |p| Ok(p.doc_mut().heads())).unwrap();
        assert_eq!(after, before, "the change was kept although it could not be saved");
        assert_ne!(pools.list()[0].1.charter.audit_every_ms, 45_000);
        // Once the disk takes it again, the same change is made and kept.
        std::fs::remove_dir(&path).unwrap();
        pools.with_pool("street", |p| p.set(signer, "audit_every", "45s", pools.now_ms())).unwrap();
        assert_eq!(pools.list()[0].1.charter.audit_every_ms, 45_000);
        assert!(path.is_file());
        std::fs::remove_dir_all(&home).unwrap();
    }
}
