//! Judging changes: each change from elsewhere (and each local one) checked by an
//! [`Authorizer`] against the document at its own dependencies before it is kept.

use std::cell::OnceCell;
use std::collections::{BTreeMap, HashSet, VecDeque};

use automerge::{AutoCommit, Change, ChangeHash};

use crate::check::{Authorizer, Check};
use crate::signed::{
    Author, DocError, MAX_CHANGE_BYTES, Sig, SignedBy, SignedDoc, guard, hex, signed_by,
    signing_message,
};

impl SignedDoc {
    /// Checks and applies changes from elsewhere: all of them, or none (the error names the
    /// first bad one). Returns the hashes of the changes that were new.
    pub fn ingest(
        &mut self,
        changes: Vec<Change>,
        sigs: &BTreeMap<ChangeHash, Sig>,
        authz: &dyn Authorizer,
    ) -> Result<Vec<ChangeHash>, DocError> {
        let mut seen = HashSet::new();
        let pending: Vec<Change> = changes
            .into_iter()
            .filter(|c| seen.insert(c.hash()) && !self.sigs.contains_key(&c.hash()))
            .collect();
        let mut work = self.doc.fork();
        let mut accepted = Vec::new();
        let mut accepted_sigs = Vec::new();
        let mut taken: HashSet<ChangeHash> = HashSet::new();
        // In causal order: a change whose dependencies are not all here yet goes to the back;
        // a full turn of the queue without progress ends it. Linear when the batch is in
        // causal order already (as sync sends it).
        let mut queue: VecDeque<Change> = pending.into();
        let mut waited = 0;
        while let Some(c) = queue.pop_front() {
            let ready = c.deps().iter().all(|d| {
                taken.contains(d)
                    || self.sigs.contains_key(d)
                    || work.get_change_meta_by_hash(d).is_some()
            });
            if !ready {
                queue.push_back(c);
                waited += 1;
                if waited > queue.len() {
                    break;
                }
                continue;
            }
            waited = 0;
            let sig = guard(|| self.check(&mut work, &c, sigs, authz, None))?;
            taken.insert(c.hash());
            accepted.push(c.hash());
            accepted_sigs.push((c.hash(), sig));
        }
        work.reset_diff_cursor();
        let pending: Vec<Change> = queue.into();
        if let Some(first) = pending.first() {
            return Err(DocError::MissingDeps {
                count: pending.len(),
                first: hex(&first.hash().0),
            });
        }
        self.doc = work;
        self.sigs.extend(accepted_sigs);
        Ok(accepted)
    }

    /// What a change must be whatever the document holds: at most [`MAX_CHANGE_BYTES`], by a
    /// well-formed author, signed by it for this document, and a genesis only if it is this
    /// document's. Gives the author, the signature and whether it is the genesis.
    fn vouch(
        &self,
        c: &Change,
        sigs: &BTreeMap<ChangeHash, Sig>,
    ) -> Result<(Author, SignedBy, Sig, bool), DocError> {
        let hash = c.hash();
        let change = hex(&hash.0);
        let len = c.raw_bytes().len();
        if len > MAX_CHANGE_BYTES {
            return Err(DocError::TooLarge { change, len, limit: MAX_CHANGE_BYTES });
        }
        let author = Author::from_actor(c.actor_id())
            .ok_or(DocError::BadActor { change: change.clone() })?;
        let sig = sigs.get(&hash).ok_or(DocError::MissingSignature { change: change.clone() })?;
        // A device's signature must be by the device the change names as its writer: the
        // device field of an author is a claim only when the identity key itself signed.
        let by = match signed_by(&author.key, &signing_message(&self.id, &hash), sig) {
            Some(SignedBy::Device(d)) if d != author.device => None,
            by => by,
        };
        let Some(by) = by else {
            return Err(DocError::BadSignature { change, author: hex(&author.key) });
        };
        let genesis = c.deps().is_empty();
        if genesis && hash.0 != self.id {
            return Err(DocError::ForeignGenesis { change, id: hex(&self.id) });
        }
        Ok((author, by, sig.clone(), genesis))
    }

    pub(crate) fn check(
        &self,
        work: &mut AutoCommit,
        c: &Change,
        sigs: &BTreeMap<ChangeHash, Sig>,
        authz: &dyn Authorizer,
        made_at: Option<&[ChangeHash]>,
    ) -> Result<Sig, DocError> {
        let hash = c.hash();
        let change = hex(&hash.0);
        let (author, signed_by, sig, genesis) = self.vouch(c, sigs)?;
        // Applied to the batch's working copy first (a refused batch is dropped whole), and the
        // patches taken from the change alone when the copy held exactly its dependencies (the
        // usual case; the diff cursor indexes what applying it touched), else by a diff of the
        // history between its dependencies and it.
        // A local change (`made_at`: the heads it was made at) is in `work` already, made
        // there under a diff cursor.
        let mut deps = c.deps().to_vec();
        deps.sort();
        let heads = match made_at {
            Some(h) => h.to_vec(),
            None => work.get_heads(),
        };
        // Every head a dependency: the document before the change is the document at its
        // dependencies (automerge also names the author's previous change, an ancestor).
        let sequential = heads.iter().all(|h| deps.contains(h));
        if made_at.is_none() {
            well_formed(work, c).map_err(|reason| DocError::Unauthorised {
                change: change.clone(),
                author: hex(&author.key),
                reason,
            })?;
            if sequential {
                work.update_diff_cursor();
            } else {
                work.reset_diff_cursor();
            }
            work.apply_changes([c.clone()])?;
        }
        let unauthorised = |reason| DocError::Unauthorised {
            change: change.clone(),
            author: hex(&author.key),
            reason,
        };
        let patches = if sequential {
            let now = work.get_heads();
            work.diff(&heads, &now)
        } else {
            work.diff(&deps, &[hash])
        };
        // A change must change something: empty ones cost every node a check and stay in the
        // history for good.
        if patches.is_empty() {
            return Err(unauthorised("it changes nothing".into()));
        }
        let check = Check {
            doc_id: &self.id,
            author,
            signed_by,
            time_ms: c.timestamp(),
            note: c.message(),
            genesis,
            deps: &deps,
            hash,
            doc: work.document(),
            patches: &patches,
            sequential,
            before: OnceCell::new(),
            after: OnceCell::new(),
        };
        authz.authorise(&check).map_err(unauthorised)?;
        Ok(sig)
    }
}

/// Refuses a change that is not well formed against `work` (which holds its dependencies),
/// before automerge applies it. automerge trusts a change's operations to be what its own
/// transactions make; a forged one is not:
///
/// - its operation ids must be new. automerge numbers a change's operations from its
///   `start_op` without checking; a change numbered over its author's earlier change sent
///   automerge 0.12 into a loop that used memory until the process was killed
///   (`pools::tests::regression_a_change_reusing_operation_ids_is_refused`). One binary search
///   of the author's changes per operation (a change has at most 65,536, `bounds`).
/// - it writes map keys only, and only puts, maps, deletes and increments: kith's documents hold
///   maps and values, never lists, text or marks; a delete or an increment names what it acts
///   on (a delete of nothing was accepted and left a document that would not load).
/// - it writes into maps that exist: ones the document holds at the change's dependencies, or
///   ones an earlier operation of the same change made (an operation making a map inside itself ran automerge out of
///   memory; found by `fuzz/fuzz_targets/forged_change.rs`).
/// - every value an operation says it replaces is one that holds its key in the document at the
///   change's dependencies (or an earlier operation of the same change on the same key). A
///   change naming another member's operation as replaced was accepted, and the document then
///   saved could not be loaded again (automerge: mismatching heads), on every node that took it
///   (`pools::tests::forged_operations_touch_only_their_authors_entries`). One lookup at the
///   dependencies per key an operation overwrites.
pub(crate) fn well_formed(work: &mut AutoCommit, c: &Change) -> Result<(), String> {
    use automerge::ReadDoc;
    use automerge::legacy::{Key as OpKey, ObjectId, OpType};
    fresh_op_ids(work, c)?;
    let actor = c.actor_id().to_hex_string();
    let start = c.start_op().get();
    let mut deps = c.deps().to_vec();
    deps.sort();
    // (object, key) -> what holds it after this change's operations on it so far (a put or a
    // made object holds a key; a delete leaves it empty; an increment changes nothing).
    let mut own: std::collections::HashMap<(String, String), Vec<String>> = Default::default();
    let mut made: std::collections::HashSet<u64> = Default::default();
    let mut seen: std::collections::HashSet<String> = Default::default();
    for (i, op) in c.decode().operations.into_iter().enumerate() {
        let OpKey::Map(key) = &op.key else {
            return Err("it writes into a list or text, which kith's documents do not hold".into());
        };
        match &op.action {
            OpType::Make(automerge::ObjType::Map) | OpType::Put(_) => {}
            OpType::Make(_) => {
                return Err("it makes a list or text, which kith's documents do not hold".into());
            }
            // A delete or an increment acts on values that hold the key: it must name them.
            OpType::Delete | OpType::Increment(_) if op.pred.is_empty() => {
                return Err("it deletes or increments nothing".into());
            }
            OpType::Delete | OpType::Increment(_) => {}
            _ => return Err("it marks text, which kith's documents do not hold".into()),
        }
        let obj = op.obj.to_string();
        // The object it writes into: one an earlier operation of this change made (a map), or
        // a map in the document.
        if let ObjectId::Id(o) = &op.obj {
            if o.1.to_hex_string() == actor && o.0 >= start {
                if !made.contains(&o.0) || o.0 >= start + i as u64 {
                    return Err(format!("it writes into {obj}, which no earlier operation made"));
                }
            } else {
                let id = work
                    .import_obj(&obj)
                    .map_err(|_| format!("it writes into {obj}, which is no object here"))?;
                if !matches!(work.object_type(&id), Ok(automerge::ObjType::Map)) {
                    return Err(format!("it writes into {obj}, which is no map here"));
                }
                // A map its author could see: at the change's dependencies, where it hangs in
                // the document (one made by a change concurrent with this one is not).
                if seen.insert(obj.clone())
                    && work.parents_at(&id, &deps).ok().and_then(|p| p.visible_path()).is_none()
                {
                    return Err(format!(
                        "it writes into {obj}, which its dependencies do not hold"
                    ));
                }
            }
        }
        let slot = (obj.clone(), key.to_string());
        if !op.pred.is_empty() {
            let holders: Vec<String> = match own.get(&slot) {
                Some(h) => h.clone(),
                None => {
                    let made_here = matches!(&op.obj, ObjectId::Id(o)
                        if o.1.to_hex_string() == actor && o.0 >= start);
                    if made_here {
                        Vec::new()
                    } else {
                        let id = match op.obj {
                            ObjectId::Root => automerge::ROOT,
                            _ => work.import_obj(&obj).map_err(|_| {
                                format!("it writes into {obj}, which is no object here")
                            })?,
                        };
                        let at = work.get_all_at(&id, key.as_str(), &deps).map_err(|_| {
                            format!("it writes into {obj}, which is no object at its dependencies")
                        })?;
                        at.into_iter().map(|(_, id)| id.to_string()).collect()
                    }
                }
            };
            for p in op.pred.iter() {
                if !holders.contains(&p.to_string()) {
                    return Err(format!(
                        "it replaces operation {p}, which does not hold the key it writes"
                    ));
                }
            }
        }
        let id = format!("{}@{actor}", start + i as u64);
        if matches!(op.action, OpType::Make(_)) {
            made.insert(start + i as u64);
        }
        match op.action {
            OpType::Put(_) | OpType::Make(_) => {
                own.insert(slot, vec![id]);
            }
            OpType::Delete => {
                own.insert(slot, Vec::new());
            }
            _ => {}
        }
    }
    Ok(())
}

/// Refuses a change that reuses an operation id already in `work` (see [`well_formed`]).
pub(crate) fn fresh_op_ids(work: &mut AutoCommit, c: &Change) -> Result<(), String> {
    let actor = c.actor_id().to_hex_string();
    let start = c.start_op().get();
    // Numbered after everything it depends on, as automerge numbers a change it makes (one
    // numbered below was accepted and left a document that would not load: invalid max op).
    for d in c.deps() {
        if let Some(m) = work.get_change_meta_by_hash(d)
            && m.max_op >= start
        {
            return Err(format!(
                "it numbers its operations from {start}, not after its dependency's {}",
                m.max_op
            ));
        }
    }
    let end = c.max_op();
    if end < start {
        return Ok(());
    }
    // An author new to the document has no operations in it yet.
    if work.import_obj(&format!("{start}@{actor}")).is_err() {
        return Ok(());
    }
    for counter in start..=end {
        let id = work
            .import_obj(&format!("{counter}@{actor}"))
            .map_err(|e| format!("an operation id that does not parse: {e}"))?;
        if work.hash_for_opid(&id).is_some() {
            return Err(format!(
                "it reuses operation id {counter} of an earlier change by its author"
            ));
        }
    }
    Ok(())
}
