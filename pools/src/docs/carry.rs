//! Pool changes carried by other means than sync (drop files, see [`crate::drop`]): what the
//! other sides lack given the heads each acknowledged, and changes taken in, judged by the same
//! rules as a peer's sync turn.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use kith_crdt::automerge::{Change, ChangeHash, ObjType, ROOT, ReadDoc, Value};
use kith_crdt::{DocError, Key, hex};

use super::Pools;
use crate::pool::{Pool, PoolError};
use crate::rules::PoolRules;

/// What a drop carries of a pool document.
pub struct CarriedOut {
    /// Changes some side lacks, in causal order.
    pub changes: Vec<Change>,
    /// Their signatures.
    pub sigs: BTreeMap<ChangeHash, Vec<u8>>,
    /// The document's heads now.
    pub heads: Vec<ChangeHash>,
    /// Whether it is made from what every side acknowledged (else: everything).
    pub incremental: bool,
    /// Manifests every side listed when it acknowledged (their blobs are there already).
    pub known_manifests: BTreeSet<Key>,
}

/// Changes judged on a copy of a pool, ready to be adopted.
pub struct Judged {
    work: Pool,
    heads: Vec<ChangeHash>,
    /// How many changes were new here.
    pub new: usize,
    /// The manifests of every object the pool lists with the changes applied.
    pub manifests: BTreeSet<Key>,
}

impl Pools {
    /// The changes of pool `pool` that some side lacks, given the heads each side
    /// acknowledged (`sides`); everything when there is no side, or a side acknowledged
    /// nothing this node knows.
    pub fn carry_out(
        &self,
        pool: &Key,
        sides: &[Vec<ChangeHash>],
    ) -> Result<CarriedOut, PoolError> {
        let mut pools = self.lock();
        let p = pools.get_mut(pool).ok_or_else(|| PoolError::Policy("no such pool".into()))?;
        let doc = p.doc_mut();
        let heads = doc.heads();
        let history = doc.history();
        let (known, incremental, known_manifests) = acknowledged_in(history, sides);
        let (all, sigs) = doc.changes_since(&[]);
        let changes = if incremental {
            let mut lacking: HashSet<ChangeHash> = HashSet::new();
            for s in &known {
                lacking.extend(doc.changes_since(s).0.iter().map(|c| c.hash()));
            }
            all.into_iter().filter(|c| lacking.contains(&c.hash())).collect()
        } else {
            all
        };
        Ok(CarriedOut { changes, sigs, heads, incremental, known_manifests })
    }

    /// The manifests every side listed when it acknowledged (see [`CarriedOut`]), without the
    /// changes: what a drop will carry blobs for.
    pub fn known_manifests(
        &self,
        pool: &Key,
        sides: &[Vec<ChangeHash>],
    ) -> Result<BTreeSet<Key>, PoolError> {
        let mut pools = self.lock();
        let p = pools.get_mut(pool).ok_or_else(|| PoolError::Policy("no such pool".into()))?;
        Ok(acknowledged_in(p.doc_mut().history(), sides).2)
    }

    /// Judges changes of pool `pool` carried from elsewhere on a copy, like a peer's sync turn,
    /// without holding the pools' lock. They must come in causal order: a change whose
    /// dependencies are neither here nor earlier among them is refused (so judging stays
    /// linear in their number).
    pub fn carry_judge(
        &self,
        pool: &Key,
        changes: Vec<Change>,
        sigs: &BTreeMap<ChangeHash, Vec<u8>>,
    ) -> Result<Judged, PoolError> {
        let (mut work, heads) = {
            let mut pools = self.lock();
            let p = pools.get_mut(pool).ok_or_else(|| PoolError::Policy("no such pool".into()))?;
            let heads = p.doc_mut().heads();
            (p.fork(), heads)
        };
        {
            let history = work.doc_mut().history();
            let mut seen: HashSet<ChangeHash> = HashSet::new();
            for (i, c) in changes.iter().enumerate() {
                let ready = c
                    .deps()
                    .iter()
                    .all(|d| seen.contains(d) || history.get_change_meta_by_hash(d).is_some());
                if !ready {
                    return Err(DocError::MissingDeps {
                        count: changes.len() - i,
                        first: hex(&c.hash().0),
                    }
                    .into());
                }
                seen.insert(c.hash());
            }
        }
        let new = work.doc_mut().ingest(changes, sigs, &PoolRules)?.len();
        let manifests = work
            .view()
            .members
            .values()
            .flat_map(|m| m.objects.values().map(|o| o.manifest))
            .collect();
        Ok(Judged { work, heads, new, manifests })
    }

    /// Takes in changes judged by [`Pools::carry_judge`]; returns how many were new.
    pub fn carry_adopt(&self, pool: &Key, judged: Judged) -> Result<usize, PoolError> {
        if judged.new == 0 {
            return Ok(0);
        }
        let mut pools = self.lock();
        let p = pools.get_mut(pool).ok_or_else(|| PoolError::Policy("the pool is gone".into()))?;
        p.adopt(judged.work, &judged.heads)?;
        self.save(p)?;
        self.changed.notify_one();
        Ok(judged.new)
    }

    /// Those of `heads` that pool `pool`'s document holds.
    pub fn carry_known(&self, pool: &Key, heads: &[ChangeHash]) -> Vec<ChangeHash> {
        let mut pools = self.lock();
        let Some(p) = pools.get_mut(pool) else { return Vec::new() };
        let history = p.doc_mut().history();
        heads.iter().filter(|h| history.get_change_meta_by_hash(h).is_some()).copied().collect()
    }
}

/// Of `sides`' heads, those `d` holds; whether every side acknowledged something it holds
/// (else a drop carries everything); and the manifests every side listed then.
fn acknowledged_in(
    d: &kith_crdt::automerge::Automerge,
    sides: &[Vec<ChangeHash>],
) -> (Vec<Vec<ChangeHash>>, bool, BTreeSet<Key>) {
    let known: Vec<Vec<ChangeHash>> = sides
        .iter()
        .map(|s| s.iter().filter(|h| d.get_change_meta_by_hash(h).is_some()).copied().collect())
        .collect();
    let incremental = !known.is_empty() && known.iter().all(|s| !s.is_empty());
    let mut manifests: Option<BTreeSet<Key>> = None;
    if incremental {
        for s in &known {
            let m = manifests_at(d, s);
            manifests = Some(match manifests {
                None => m,
                Some(k) => k.intersection(&m).copied().collect(),
            });
        }
    }
    (known, incremental, manifests.unwrap_or_default())
}

/// The manifests of the objects every member listed at `heads`.
fn manifests_at(d: &kith_crdt::automerge::Automerge, heads: &[ChangeHash]) -> BTreeSet<Key> {
    let map = |at: &kith_crdt::automerge::ObjId, key: &str| match d.get_at(at, key, heads) {
        Ok(Some((Value::Object(ObjType::Map), id))) => Some(id),
        _ => None,
    };
    let mut out = BTreeSet::new();
    let Some(members) = map(&ROOT, "members") else { return out };
    for m in d.keys_at(&members, heads) {
        let Some(objects) = map(&members, &m).and_then(|m| map(&m, "objects")) else { continue };
        for o in d.keys_at(&objects, heads) {
            let Some(entry) = map(&objects, &o) else { continue };
            if let Ok(Some((Value::Scalar(v), _))) = d.get_at(&entry, "manifest", heads)
                && let Some(b) = v.as_bytes()
                && let Ok(k) = <[u8; 32]>::try_from(b)
            {
                out.insert(k);
            }
        }
    }
    out
}
