//! This identity's document, and the copies of other members' identity documents this node
//! keeps for them (so that a member can restore its identity from the pool).

use std::collections::BTreeMap;

use kith_crdt::automerge::ChangeHash;
use kith_crdt::{Key, SignedDoc, Signer, SyncFrame, SyncState, hex};

use super::Pools;
use crate::identity::{IdentityDoc, IdentityRules, IdentityView};
use crate::pool::PoolError;

/// Why a copy of an identity document was not merged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CustodyError {
    /// Custody is only for members of this node's pools.
    #[error("that identity is not a member of any pool of this node")]
    NotAMember,
    /// The document is another identity's.
    #[error("that is another identity's document")]
    OtherIdentity,
    /// This node has no document of its own identity (yet).
    #[error("this node has no identity document")]
    NoDocument,
    /// The copy would grow over what this node keeps for a member.
    #[error("a member's identity document may take at most {} KiB here", MAX_KEPT_BYTES >> 10)]
    TooLarge,
    /// Judging the changes failed.
    #[error("the check of the changes failed: {0}")]
    Judge(String),
    /// The document refused the copy (a forged or unauthorised change, damage).
    #[error(transparent)]
    Doc(#[from] kith_crdt::DocError),
    /// This node's own identity document could not be changed.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// The copy could not be written to disk.
    #[error("cannot keep a member's identity document: {0}")]
    Io(#[source] std::io::Error),
}

/// This identity's document in the home (`identity.kdoc`).
const IDENTITY_NAME: &str = "identity";
/// Largest copy of a member's identity document this node keeps (a name, a few devices,
/// recipients and pools take a few KiB).
pub const MAX_KEPT_BYTES: usize = 1 << 20;

/// What judging a peer's identity changes gave: a copy of a document held here, or a first copy.
enum Judged {
    Copy(Result<(IdentityDoc, Vec<ChangeHash>, usize), kith_crdt::DocError>),
    Fresh(Result<(SignedDoc, usize), kith_crdt::DocError>),
}

/// Other members' identity documents kept here.
pub(super) const CUSTODY_DIR: &str = "identities";

impl Pools {
    /// Loads (or starts) this identity's document and lists this node and the identity's age
    /// recipient in it.
    pub fn init_identity(
        &self,
        genesis_sig: Option<[u8; 64]>,
        device_name: &str,
        recipient: &str,
    ) -> Result<(), PoolError> {
        let owner = self.signer.author().key;
        let doc = match self.home_files.read::<IdentityDoc>(IDENTITY_NAME)? {
            Some(doc) => doc,
            None => {
                let sig =
                    IdentityDoc::genesis_sig(&self.signer).or(genesis_sig).ok_or_else(|| {
                        PoolError::Damaged(
                            "this device holds neither the identity key nor its document's first \
                         change: import the identity again (`kith init --import`)"
                                .into(),
                        )
                    })?;
                IdentityDoc::genesis_signed(&owner, sig)
                    .map_err(|e| PoolError::Damaged(e.to_string()))?
            }
        };
        if doc.view().owner != owner {
            return Err(PoolError::Damaged(format!(
                "{} belongs to another identity",
                self.home_files.path::<IdentityDoc>(IDENTITY_NAME).display()
            )));
        }
        *self.identity.lock().unwrap_or_else(|p| p.into_inner()) = Some(doc);
        let node = self.node;
        self.with_identity(|d, s, now| {
            d.add_device(s, &node, device_name, now)?;
            d.add_recipient(s, recipient, now)?;
            if let Some(k) = crate::datakeys::device_key(s) {
                d.set_device_recipient(s, &node, &k.to_public().to_string(), now)?;
            }
            if let (Some(k), Some(root)) = (crate::datakeys::recovery_key(s), s.root_form()) {
                d.set_recovery(&root, &k.to_public().to_string(), now)?;
            }
            Ok(())
        })
    }

    /// Where data keys this device opens go: its store, which seals new objects to the newest
    /// and keeps them in the key file. The keys the identity document has for it are opened now.
    pub fn set_data_key_sink(&self, sink: super::DataKeySink) {
        *self.data_keys.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Default::default(), sink));
        self.follow_identity();
    }

    /// Acts on what the identity document says: opens the data keys sealed to this device
    /// that it lacks (handing them all, in order, to the sink), seals the keys it holds to
    /// devices listed after they were made, and retires in every pool here the devices the
    /// identity retired (the retiring device may not hold them all).
    pub fn follow_identity(&self) {
        let Some(v) = self.identity() else { return };
        let mut reseal: Vec<(String, String, Vec<u8>)> = Vec::new();
        {
            let mut guard = self.data_keys.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((held, sink)) = guard.as_mut() {
                // The keys that count now (a retired maker's are dropped), opened where new.
                let mut next = BTreeMap::new();
                for (k, e) in crate::datakeys::usable(&v) {
                    match held.get(k) {
                        Some(key) => {
                            next.insert(k.clone(), key.clone());
                        }
                        None => {
                            if let Some(key) = crate::datakeys::open_entry(e, &self.signer) {
                                next.insert(k.clone(), key);
                            }
                        }
                    }
                }
                let changed = next.keys().ne(held.keys());
                if changed {
                    match sink(next.values().cloned().collect()) {
                        Ok(()) => *held = next,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot keep the identity's data keys")
                        }
                    }
                }
                let to = crate::datakeys::recipients(&v);
                for (k, e) in crate::datakeys::usable(&v) {
                    let Some(key) = held.get(k) else { continue };
                    for (who, r) in &to {
                        if !e.sealed.contains_key(who)
                            && let Some(b) = crate::datakeys::seal(key, r)
                        {
                            reseal.push((k.clone(), who.clone(), b));
                        }
                    }
                }
            }
        }
        if !reseal.is_empty() {
            let _ = self.with_identity(|d, s, now| {
                for (k, who, b) in &reseal {
                    d.reseal_data_key(s, k, who, b, now)?;
                }
                Ok(())
            });
        }
        let me = self.signer.author().key;
        for (node, _) in v.devices.iter().filter(|(_, d)| d.revoked_ms.is_some()) {
            for (id, pv) in self.list() {
                let pending = pv.active(&me).is_some_and(|m| !m.retired.contains_key(node));
                if pending {
                    let now = self.now_ms();
                    let _ = self.with_pool(&hex(&id), |p| p.retire_node(&self.signer, node, now));
                }
            }
        }
    }

    /// Makes a new data key, sealed to this identity's devices that are not retired (after
    /// one was retired); new objects are sealed to it from then on.
    pub fn rotate_data_key(&self) -> Result<(), PoolError> {
        self.with_identity(|d, s, now| {
            let v = d.view();
            // The key itself is dropped here: it is taken back from the document, sealed to
            // this device like to the others (`follow_identity`).
            let Some(entry) = crate::datakeys::make(&v, s, now) else {
                return Err(kith_crdt::DocError::Format("data keys are numbered out".into()));
            };
            d.add_data_key(s, &entry, now).map(|_| ())
        })
    }

    /// Edits this identity's document and saves it.
    pub fn with_identity(
        &self,
        f: impl FnOnce(&mut IdentityDoc, &Signer, i64) -> Result<(), kith_crdt::DocError>,
    ) -> Result<(), PoolError> {
        let mut guard = self.identity.lock().unwrap_or_else(|p| p.into_inner());
        let Some(doc) = guard.as_mut() else { return Ok(()) };
        let heads = doc.heads();
        f(doc, &self.signer, self.now_ms()).map_err(|e| PoolError::Policy(e.to_string()))?;
        if doc.heads() == heads {
            return Ok(());
        }
        // Views depend on the identity too (a retired device has no pools).
        self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.home_files
            .write(IDENTITY_NAME, doc)
            .map_err(|e| PoolError::Policy(format!("cannot save the identity document: {e}")))?;
        drop(guard);
        // A data key made on another device (one was retired) may be sealed to this one.
        self.follow_identity();
        Ok(())
    }

    /// This identity's document as saved, if this node has one (for an export).
    pub fn identity_doc_bytes(&self) -> Option<Vec<u8>> {
        self.identity.lock().unwrap_or_else(|p| p.into_inner()).as_mut().map(|d| d.save())
    }

    /// Takes in another copy of this identity's document (from an export), every change
    /// checked; how many changes were new.
    pub fn merge_identity_doc(&self, bytes: &[u8]) -> Result<usize, PoolError> {
        let mut n = 0;
        self.with_identity(|d, _, _| {
            n = d.merge(bytes)?;
            Ok(())
        })?;
        Ok(n)
    }

    /// This identity's document, typed.
    pub fn identity(&self) -> Option<IdentityView> {
        self.identity.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|d| d.view())
    }

    /// When another device of this identity retired this one, if it did: a retired device takes
    /// no part in pools any more (its store stays readable here).
    pub fn retired_at(&self) -> Option<i64> {
        let guard = self.identity.lock().unwrap_or_else(|p| p.into_inner());
        guard.as_ref()?.view().devices.get(&self.node)?.revoked_ms
    }

    /// The heads of this identity's document (cheap: no serialising).
    pub fn identity_heads(&self) -> Vec<[u8; 32]> {
        self.identity
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
            .map(|d| d.heads())
            .unwrap_or_default()
    }

    /// The identity documents this node has of `owners` (its own, and copies it keeps), saved,
    /// each with its recovery recipient.
    pub fn identity_docs_of(&self, owners: &[Key]) -> Vec<(Key, Vec<u8>, Option<String>)> {
        let me = self.signer.author().key;
        let mut out = Vec::new();
        if owners.contains(&me)
            && let Some(d) = self.identity.lock().unwrap_or_else(|p| p.into_inner()).as_mut()
        {
            out.push((me, d.save(), d.view().recovery));
        }
        let mut custody = self.custody.lock().unwrap_or_else(|p| p.into_inner());
        for o in owners.iter().filter(|o| **o != me) {
            if let Some(d) = custody.get_mut(o) {
                out.push((*o, d.save(), d.view().recovery));
            }
        }
        out
    }

    /// The identity documents this node keeps for other members, typed.
    pub fn custody_views(&self) -> Vec<IdentityView> {
        self.custody.lock().unwrap_or_else(|p| p.into_inner()).values().map(|d| d.view()).collect()
    }

    /// The next sync message of `owner`'s identity document (this identity's, or the copy kept
    /// for a member; `fresh` while there is none).
    pub(super) fn identity_sync_out(
        &self,
        owner: &Key,
        state: &mut SyncState,
        fresh: &mut Option<SignedDoc>,
    ) -> Result<Option<SyncFrame>, CustodyError> {
        if *owner == self.signer.author().key {
            let mut guard = self.identity.lock().unwrap_or_else(|p| p.into_inner());
            return Ok(guard.as_mut().ok_or(CustodyError::NoDocument)?.sync_out(state));
        }
        let mut custody = self.custody.lock().unwrap_or_else(|p| p.into_inner());
        Ok(match custody.get_mut(owner) {
            Some(d) => d.sync_out(state),
            None => fresh.get_or_insert_with(|| IdentityDoc::fresh(owner)).sync_out(state),
        })
    }

    /// Takes in a peer's sync message of `owner`'s identity document; how many changes were
    /// new. Every change is judged on a copy, on a blocking thread, with no lock held (a long
    /// batch holds up nothing else), then adopted. A copy for a member is kept (and written)
    /// once it holds the member's genesis, and only while it stays under [`MAX_KEPT_BYTES`];
    /// nobody else's is.
    pub(super) async fn identity_sync_in(
        &self,
        owner: &Key,
        state: &mut SyncState,
        frame: SyncFrame,
        fresh: &mut Option<SignedDoc>,
    ) -> Result<usize, CustodyError> {
        let own = *owner == self.signer.author().key;
        // Custody is for the members of this node's pools, nobody else: a stranger cannot
        // fill this node's disk or memory with documents of identities it makes up.
        if !own && !self.keeps_identity_of(owner) {
            return Err(CustodyError::NotAMember);
        }
        let base = if own {
            let mut guard = self.identity.lock().unwrap_or_else(|p| p.into_inner());
            Some(guard.as_mut().ok_or(CustodyError::NoDocument)?.fork())
        } else {
            self.custody.lock().unwrap_or_else(|p| p.into_inner()).get_mut(owner).map(|d| d.fork())
        };
        let (who, mut st, start) = (*owner, std::mem::take(state), fresh.take());
        let (judged, st) = tokio::task::spawn_blocking(move || {
            let judged = match base {
                Some((mut work, heads)) => {
                    Judged::Copy(work.sync_in(&mut st, &frame).map(|n| (work, heads, n)))
                }
                None => {
                    let mut doc = start.unwrap_or_else(|| IdentityDoc::fresh(&who));
                    let n = doc.sync_in(&mut st, &frame, &IdentityRules);
                    Judged::Fresh(n.map(|n| (doc, n.len())))
                }
            };
            (judged, st)
        })
        .await
        .map_err(|e| CustodyError::Judge(e.to_string()))?;
        *state = st;
        match judged {
            Judged::Copy(r) => {
                let (mut work, heads, n) = r?;
                if n == 0 {
                    return Ok(0);
                }
                if own {
                    let mut new = 0;
                    self.with_identity(|d, _, _| {
                        new = d.adopt(work, &heads)?;
                        Ok(())
                    })?;
                    return Ok(new);
                }
                if work.save().len() > MAX_KEPT_BYTES {
                    return Err(CustodyError::TooLarge);
                }
                let mut custody = self.custody.lock().unwrap_or_else(|p| p.into_inner());
                let d = custody.get_mut(owner).ok_or(CustodyError::NotAMember)?;
                let new = d.adopt(work, &heads)?;
                if new > 0 {
                    self.custody_files.write(&hex(owner), d).map_err(CustodyError::Io)?;
                }
                Ok(new)
            }
            Judged::Fresh(r) => {
                let (doc, n) = r?;
                if n == 0 {
                    *fresh = Some(doc);
                    return Ok(0);
                }
                let mut d =
                    IdentityDoc::adopt_fresh(doc, owner).ok_or(CustodyError::OtherIdentity)?;
                if d.save().len() > MAX_KEPT_BYTES {
                    return Err(CustodyError::TooLarge);
                }
                let mut custody = self.custody.lock().unwrap_or_else(|p| p.into_inner());
                // Another session may have started a copy meanwhile: this one's changes wait
                // for the next session.
                if custody.contains_key(owner) {
                    return Ok(0);
                }
                self.custody_files.write(&hex(owner), &mut d).map_err(CustodyError::Io)?;
                custody.insert(*owner, d);
                Ok(n)
            }
        }
    }

    /// Whether this node keeps a copy of `owner`'s identity document: `owner` is an active
    /// member of a pool this identity is an active member of.
    pub(crate) fn keeps_identity_of(&self, owner: &Key) -> bool {
        let me = self.signer.author().key;
        self.lock().values().any(|p| p.is_active(owner) && p.is_active(&me))
    }

    /// Whether `node` may exchange `owner`'s identity document with this node: it shares a pool
    /// with `owner` here (as a node of an active member, with `owner` active too).
    pub fn shares_pool_with(&self, node: &Key, owner: &Key) -> bool {
        self.lock().values().any(|p| {
            let v = p.view();
            v.node_owner(node).is_some() && v.active(owner).is_some()
        })
    }

    /// Whether `node` is a node of a pool this node holds (former pools included: a member that
    /// left still passes its departure on) or a device of this identity.
    pub fn is_known_node(&self, node: &Key) -> bool {
        self.all_views().iter().any(|(_, v)| v.members.values().any(|m| m.nodes.contains_key(node)))
            || self.is_own_device(node)
    }

    /// Whether `node` is a device of this identity that is not retired.
    pub fn is_own_device(&self, node: &Key) -> bool {
        self.identity()
            .and_then(|v| v.devices.get(node).map(|d| d.revoked_ms.is_none()))
            .unwrap_or(false)
    }

    /// Whether this identity retired `node`.
    pub fn is_retired_device(&self, node: &Key) -> bool {
        self.identity()
            .and_then(|v| v.devices.get(node).map(|d| d.revoked_ms.is_some()))
            .unwrap_or(false)
    }
}
