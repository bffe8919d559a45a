//! Pool changes carried by other means than sync (drop files, see [`crate::drop`]): what a
//! side lacks given the heads it acknowledged, and changes taken in, judged by the same rules
//! as a peer's sync turn.

use std::collections::{BTreeMap, BTreeSet};

use kith_crdt::Key;
use kith_crdt::automerge::{Change, ChangeHash, ObjType, ROOT, ReadDoc, Value};

use super::Pools;
use crate::pool::PoolError;
use crate::rules::PoolRules;

/// What a drop carries of a pool document.
pub struct CarriedOut {
    /// Changes not in the history of the acknowledged heads (all of them without any).
    pub changes: Vec<Change>,
    /// Their signatures.
    pub sigs: BTreeMap<ChangeHash, [u8; 64]>,
    /// The document's heads now.
    pub heads: Vec<ChangeHash>,
    /// The heads it was made since (those of `since` the document knows).
    pub since: Vec<ChangeHash>,
    /// Objects listed at `since` (by any member, as it was then): the other side has them.
    pub known_objects: BTreeSet<Key>,
}

impl Pools {
    /// The changes of pool `pool` that a side holding `since` lacks. Heads this node does not
    /// know are left out of `since` (everything they would have covered is carried).
    pub fn carry_out(&self, pool: &Key, since: &[ChangeHash]) -> Result<CarriedOut, PoolError> {
        let mut pools = self.lock();
        let p = pools.get_mut(pool).ok_or_else(|| PoolError::Policy("no such pool".into()))?;
        let doc = p.doc_mut();
        let history = doc.history();
        let since: Vec<ChangeHash> = since
            .iter()
            .filter(|h| history.get_change_meta_by_hash(h).is_some())
            .copied()
            .collect();
        let known_objects =
            if since.is_empty() { BTreeSet::new() } else { objects_at(history, &since) };
        let heads = doc.heads();
        let (changes, sigs) = doc.changes_since(&since);
        Ok(CarriedOut { changes, sigs, heads, since, known_objects })
    }

    /// Takes in changes of pool `pool` carried from elsewhere, judged like a peer's sync turn
    /// (on a copy, then adopted whole, or refused whole). Returns how many were new here.
    pub fn carry_in(
        &self,
        pool: &Key,
        changes: Vec<Change>,
        sigs: &BTreeMap<ChangeHash, [u8; 64]>,
    ) -> Result<usize, PoolError> {
        let (mut work, heads) = {
            let mut pools = self.lock();
            let p = pools.get_mut(pool).ok_or_else(|| PoolError::Policy("no such pool".into()))?;
            let heads = p.doc_mut().heads();
            (p.fork(), heads)
        };
        let new = work.doc_mut().ingest(changes, sigs, &PoolRules)?;
        if new.is_empty() {
            return Ok(0);
        }
        let mut pools = self.lock();
        let p = pools.get_mut(pool).ok_or_else(|| PoolError::Policy("the pool is gone".into()))?;
        p.adopt(work, &heads)?;
        self.save(p)?;
        self.changed.notify_one();
        Ok(new.len())
    }
}

/// The ids of the objects every member listed at `heads`.
fn objects_at(d: &kith_crdt::automerge::Automerge, heads: &[ChangeHash]) -> BTreeSet<Key> {
    let map = |at: &kith_crdt::automerge::ObjId, key: &str| match d.get_at(at, key, heads) {
        Ok(Some((Value::Object(ObjType::Map), id))) => Some(id),
        _ => None,
    };
    let mut out = BTreeSet::new();
    let Some(members) = map(&ROOT, "members") else { return out };
    for m in d.keys_at(&members, heads) {
        let Some(objects) = map(&members, &m).and_then(|m| map(&m, "objects")) else { continue };
        for o in d.keys_at(&objects, heads) {
            if let Some(k) = crate::view::parse_key(&o) {
                out.insert(k);
            }
        }
    }
    out
}
