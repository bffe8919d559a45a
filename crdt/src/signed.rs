//! Documents whose every change is signed by its author and authorised before it is applied.
//!
//! The actor id of every change is its author: 64 bytes, the author's identity key followed by
//! the device (node) key that wrote it, so two devices of one person never share an actor. The
//! author signs `SIGNING_CONTEXT || document id || change hash` with its identity key; the
//! signature travels beside the change (never inside it, as the hash covers the change).
//!
//! A document's id is the hash of its first change (the genesis), so the genesis and its author,
//! the root of all authority in the document, are fixed by the id itself.
//!
//! Incoming changes are checked in causal order, each against the document *at its own
//! dependencies*: an [`Authorizer`] sees the state before the change, the state after it and the
//! patches it made (the patches cost what the change touched, not what the document holds). The answer therefore depends only on the change and its history, never on
//! the order in which a node happened to receive concurrent changes, so honest nodes reach the
//! same verdict and keep converging. A batch with one bad change is rejected whole.

use std::collections::BTreeMap;

use crate::check::Authorizer;

use automerge::transaction::CommitOptions;
use automerge::{
    ActorId, AutoCommit, AutomergeError, Change, ChangeHash, Patch, PatchAction, Prop,
};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

/// Domain separation for change signatures.
pub const SIGNING_CONTEXT: &[u8] = b"kith-change-v1";

/// A 32-byte public key (identity or device).
pub type Key = [u8; 32];

/// Who made a change: the author's identity key and the device that wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Author {
    /// The identity (person) key that signs.
    pub key: Key,
    /// The device (node) that wrote the change.
    pub device: Key,
}

impl Author {
    /// The automerge actor id for this author on this device.
    pub fn actor(&self) -> ActorId {
        let mut b = Vec::with_capacity(64);
        b.extend_from_slice(&self.key);
        b.extend_from_slice(&self.device);
        ActorId::from(b)
    }

    /// Reads an author from an actor id (the author's 64 bytes, followed by the
    /// [`INCARNATION_LEN`] bytes of the signer that made the change, in all but the oldest
    /// changes); `None` if it is not one of ours.
    pub fn from_actor(actor: &ActorId) -> Option<Author> {
        let b = actor.to_bytes();
        if b.len() != 64 && b.len() != 64 + INCARNATION_LEN {
            return None;
        }
        let (k, d) = b[..64].split_at(32);
        Some(Author { key: k.try_into().ok()?, device: d.try_into().ok()? })
    }
}

/// A signature as kith carries it: [`ROOT_SIG_LEN`] bytes made by the identity key itself,
/// or [`DEVICE_SIG_LEN`] bytes made by one device of the identity: the device's key (32), the
/// identity's certificate of that device (64, over [`cert_message`]) and the device's
/// signature (64). A device-made signature names the device that made it, so a device the
/// identity retired can be refused by whoever knows of the retirement.
pub type Sig = Vec<u8>;

/// Length of a signature made by the identity key.
pub const ROOT_SIG_LEN: usize = 64;
/// Length of a signature made by a certified device.
pub const DEVICE_SIG_LEN: usize = 32 + 64 + 64;
/// Domain separation of a device certificate.
pub const DEVICE_CERT_CONTEXT: &[u8] = b"kith-device-cert-v1";

/// What the identity signs to certify that `device` is one of its devices.
pub fn cert_message(identity: &Key, device: &Key) -> Vec<u8> {
    [DEVICE_CERT_CONTEXT, &identity[..], &device[..]].concat()
}

/// Who made a valid signature of an identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignedBy {
    /// The identity key itself (devices that hold it, and everything signed before devices
    /// had keys of their own).
    Root,
    /// The certified device with this key.
    Device(Key),
}

/// The secret half of an author: signs changes, invites, receipts and proofs.
///
/// A device signer ([`Signer::with_device`], [`Signer::device_only`]) signs with the device's
/// own key and the identity's certificate of it; [`Signer::new`] signs with the identity key
/// (the form every signature had before devices had keys; tests use it too).
pub struct Signer {
    identity: Key,
    root: Option<SigningKey>,
    device: Key,
    device_key: Option<(SigningKey, [u8; 64])>,
    derived: BTreeMap<String, [u8; 32]>,
    incarnation: [u8; INCARNATION_LEN],
}

/// Bytes an actor id carries after its author to tell one writing process from another.
///
/// Automerge names each operation by a counter and its actor, and a device whose documents
/// were put back to an older copy (a home restored from a backup, a disk snapshot, a crash
/// before the save) would count again from where that copy stopped: its new operations would
/// reuse the ids of the ones its peers already hold, and every peer would refuse them (see
/// `judge::fresh_op_ids`). Each signer therefore writes under an actor of its own, drawn when
/// it is made; the author is still read from the first 64 bytes.
pub const INCARNATION_LEN: usize = 8;

/// A value no other signer (in this process or any other, before or after) draws.
fn incarnation() -> [u8; INCARNATION_LEN] {
    use std::hash::{BuildHasher, Hasher};
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = blake3::Hasher::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    h.update(&now.to_le_bytes());
    h.update(&std::process::id().to_le_bytes());
    h.update(&COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed).to_le_bytes());
    // Seeded from the system's random source.
    let mut r = std::collections::hash_map::RandomState::new().build_hasher();
    r.write_u64(now as u64);
    h.update(&r.finish().to_le_bytes());
    let mut out = [0; INCARNATION_LEN];
    out.copy_from_slice(&h.finalize().as_bytes()[..INCARNATION_LEN]);
    out
}

impl Signer {
    /// A signer with the identity secret key, writing as `device` (signatures by the identity
    /// key).
    pub fn new(identity_secret: &[u8; 32], device: Key) -> Signer {
        let root = SigningKey::from_bytes(identity_secret);
        Signer {
            identity: root.verifying_key().to_bytes(),
            root: Some(root),
            device,
            device_key: None,
            derived: BTreeMap::new(),
            incarnation: incarnation(),
        }
    }

    /// A signer on a device that holds the identity secret: it certifies its own device key
    /// and signs with it.
    pub fn with_device(identity_secret: &[u8; 32], device_secret: &[u8; 32]) -> Signer {
        let root = SigningKey::from_bytes(identity_secret);
        let dev = SigningKey::from_bytes(device_secret);
        let identity = root.verifying_key().to_bytes();
        let device = dev.verifying_key().to_bytes();
        let cert = root.sign(&cert_message(&identity, &device)).to_bytes();
        Signer {
            identity,
            root: Some(root),
            device,
            device_key: Some((dev, cert)),
            derived: BTreeMap::new(),
            incarnation: incarnation(),
        }
    }

    /// A signer on a device that does not hold the identity secret: its device key, the
    /// identity's certificate of it, and the keys the identity derived for it
    /// ([`Signer::derive_key`]'s contexts).
    pub fn device_only(
        identity: Key,
        device_secret: &[u8; 32],
        cert: [u8; 64],
        derived: BTreeMap<String, [u8; 32]>,
    ) -> Signer {
        let dev = SigningKey::from_bytes(device_secret);
        let device = dev.verifying_key().to_bytes();
        Signer {
            identity,
            root: None,
            device,
            device_key: Some((dev, cert)),
            derived,
            incarnation: incarnation(),
        }
    }

    /// The author this signer writes as.
    pub fn author(&self) -> Author {
        Author { key: self.identity, device: self.device }
    }

    /// The automerge actor this signer's changes are made under: its author, then its own
    /// incarnation (see [`INCARNATION_LEN`]).
    pub fn actor(&self) -> ActorId {
        let mut b = self.author().actor().to_bytes().to_vec();
        b.extend_from_slice(&self.incarnation);
        ActorId::from(b)
    }

    /// Whether this signer signs with a device key (else with the identity key).
    pub fn device_signed(&self) -> bool {
        self.device_key.is_some()
    }

    /// The same author signing with the identity key itself, if this signer holds it (for
    /// what only the identity key may write).
    pub fn root_form(&self) -> Option<Signer> {
        self.root.as_ref().map(|r| Signer {
            identity: self.identity,
            root: Some(r.clone()),
            device: self.device,
            device_key: None,
            derived: BTreeMap::new(),
            incarnation: self.incarnation,
        })
    }

    /// Whether this signer holds the identity secret.
    pub fn has_root(&self) -> bool {
        self.root.is_some()
    }

    /// Signs arbitrary bytes (changes, invites, proofs): with the device key where this
    /// signer has one, else with the identity key.
    pub fn sign(&self, msg: &[u8]) -> Sig {
        match &self.device_key {
            Some((dev, cert)) => {
                let mut out = Vec::with_capacity(DEVICE_SIG_LEN);
                out.extend_from_slice(&self.device);
                out.extend_from_slice(cert);
                out.extend_from_slice(&dev.sign(msg).to_bytes());
                out
            }
            None => self
                .root
                .as_ref()
                .expect("a signer holds a root or a device key")
                .sign(msg)
                .to_bytes()
                .to_vec(),
        }
    }

    /// Signs with the identity key itself, if this signer holds it.
    pub fn sign_root(&self, msg: &[u8]) -> Option<[u8; 64]> {
        self.root.as_ref().map(|r| r.sign(msg).to_bytes())
    }

    /// The identity's certificate of `device`, if this signer holds the identity secret.
    pub fn certify(&self, device: &Key) -> Option<[u8; 64]> {
        self.sign_root(&cert_message(&self.identity, device))
    }

    /// A secret key for `context` that only this device derives (BLAKE3's key derivation over
    /// its own key); `None` for a signer without a device key.
    pub fn derive_device_key(&self, context: &str) -> Option<[u8; 32]> {
        self.device_key.as_ref().map(|(k, _)| blake3::derive_key(context, k.as_bytes()))
    }

    /// A secret key for `context` that every device of this identity derives alike and
    /// nobody else can (BLAKE3's key derivation over the identity secret; a device without it
    /// was given the keys of the contexts it needs when it was certified).
    ///
    /// # Panics
    ///
    /// On a device without the identity secret, for a context it was not given: the contexts
    /// are a fixed list (`kith_pools::IDENTITY_KEY_CONTEXTS`), so this is a bug.
    pub fn derive_key(&self, context: &str) -> [u8; 32] {
        match &self.root {
            Some(r) => blake3::derive_key(context, r.as_bytes()),
            None => *self
                .derived
                .get(context)
                .unwrap_or_else(|| panic!("no key was derived for `{context}` on this device")),
        }
    }
}

/// Which key of `identity` made `sig` over `msg`, if it is valid: the identity key itself,
/// or a device the identity certified.
pub fn signed_by(identity: &Key, msg: &[u8], sig: &[u8]) -> Option<SignedBy> {
    match sig.len() {
        ROOT_SIG_LEN => verify64(identity, msg, sig).then_some(SignedBy::Root),
        DEVICE_SIG_LEN => {
            let device: Key = sig[..32].try_into().expect("32 bytes");
            (certified(identity, &device, &sig[32..96]) && verify64(&device, msg, &sig[96..]))
                .then_some(SignedBy::Device(device))
        }
        _ => None,
    }
}

/// Verifies a signature of `key`'s identity over `msg` (by the identity key or one of its
/// certified devices, see [`Sig`]).
pub fn verify(key: &Key, msg: &[u8], sig: &[u8]) -> bool {
    signed_by(key, msg, sig).is_some()
}

/// Verifies a proof that `node` is a device of `identity`: a signature over `msg` (which
/// names the node) by the identity key, or by that very device. A device cannot vouch for
/// another node: only the identity key certifies devices.
pub fn verify_device(identity: &Key, node: &Key, msg: &[u8], sig: &[u8]) -> bool {
    match signed_by(identity, msg, sig) {
        Some(SignedBy::Root) => true,
        Some(SignedBy::Device(d)) => d == *node,
        None => false,
    }
}

/// Whether `cert` is `identity`'s certificate of `device`. Every change of a device carries
/// the same certificate, so the certificates verified are remembered (a few thousand, then
/// forgotten all at once): a document of many changes costs one verification per change.
fn certified(identity: &Key, device: &Key, cert: &[u8]) -> bool {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static SEEN: OnceLock<Mutex<HashSet<[u8; 128]>>> = OnceLock::new();
    let mut k = [0u8; 128];
    k[..32].copy_from_slice(identity);
    k[32..64].copy_from_slice(device);
    k[64..].copy_from_slice(cert);
    let seen = SEEN.get_or_init(Default::default);
    if seen.lock().unwrap_or_else(|p| p.into_inner()).contains(&k) {
        return true;
    }
    if !verify64(identity, &cert_message(identity, device), cert) {
        return false;
    }
    let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
    if s.len() >= 4096 {
        s.clear();
    }
    s.insert(k);
    true
}

fn verify64(key: &Key, msg: &[u8], sig: &[u8]) -> bool {
    let Ok(sig) = <[u8; 64]>::try_from(sig) else { return false };
    match VerifyingKey::from_bytes(key) {
        Ok(k) => k.verify_strict(msg, &Signature::from_bytes(&sig)).is_ok(),
        Err(_) => false,
    }
}

/// Largest change a document accepts, local or remote. Membership, offers, objects and audit
/// records are a few hundred bytes; the limit keeps one change far below a sync frame.
pub const MAX_CHANGE_BYTES: usize = 64 << 10;

/// Why a document operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DocError {
    /// A change whose actor is not a kith author.
    #[error("change {change} has an actor that is not a kith author")]
    BadActor {
        /// The change hash (hex).
        change: String,
    },
    /// A change arrived without its signature.
    #[error("change {change} arrived without a signature")]
    MissingSignature {
        /// The change hash (hex).
        change: String,
    },
    /// A signature did not verify.
    #[error("change {change}: the signature of author {author} does not verify")]
    BadSignature {
        /// The change hash (hex).
        change: String,
        /// The author's key (hex).
        author: String,
    },
    /// A second root change: a change from another document or a forged genesis.
    #[error("change {change} claims to start a document, but this document started with {id}")]
    ForeignGenesis {
        /// The change hash (hex).
        change: String,
        /// The document id (hex).
        id: String,
    },
    /// The author was not allowed to make the change.
    #[error("change {change} by {author} is not allowed: {reason}")]
    Unauthorised {
        /// The change hash (hex).
        change: String,
        /// The author's key (hex).
        author: String,
        /// What rule it broke.
        reason: String,
    },
    /// A change larger than any document accepts.
    #[error("change {change} is {len} bytes; a document change may have at most {limit}")]
    TooLarge {
        /// The change hash (hex).
        change: String,
        /// Its encoded length.
        len: usize,
        /// [`MAX_CHANGE_BYTES`].
        limit: usize,
    },
    /// Changes whose dependencies never arrived.
    #[error("{count} change(s) depend on changes that were not sent (first: {first})")]
    MissingDeps {
        /// How many.
        count: usize,
        /// The first (hex).
        first: String,
    },
    /// A saved document is damaged or of an unknown version.
    #[error("document file: {0}")]
    Format(String),
    /// Compressed data that would expand past what kith accepts (see [`crate::bounds`]).
    #[error("{what} expands past {limit} bytes; refused")]
    Expands {
        /// What: a change, compressed data, the data of a message or file.
        what: String,
        /// The limit.
        limit: usize,
    },
    /// automerge failed inside (it panicked on this input); the input is refused and nothing
    /// changed.
    #[error("automerge could not take this input ({0}); refused")]
    Internal(String),
    /// automerge refused an operation.
    #[error("document: {0}")]
    Automerge(#[from] AutomergeError),
}

/// Runs `f` (an automerge operation on a fork or on input from elsewhere), turning a panic
/// inside automerge into [`DocError::Internal`]: automerge 0.12 panics on some malformed
/// changes (an operation on an object that does not exist), and a peer must not be able to
/// stop a node with one. The fork `f` worked on is dropped by the caller.
pub(crate) fn guard<T>(f: impl FnOnce() -> Result<T, DocError>) -> Result<T, DocError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let why = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            Err(DocError::Internal(why))
        }
    }
}

/// The path a patch wrote, from the root down to the key it set or deleted.
pub fn patch_path(p: &Patch) -> Vec<String> {
    let mut v: Vec<String> = p
        .path
        .iter()
        .map(|(_, prop)| match prop {
            Prop::Map(k) => k.clone(),
            Prop::Seq(i) => i.to_string(),
        })
        .collect();
    match &p.action {
        PatchAction::PutMap { key, .. } | PatchAction::DeleteMap { key } => v.push(key.clone()),
        PatchAction::Increment { prop: Prop::Map(k), .. } => v.push(k.clone()),
        _ => {}
    }
    v
}

/// Lower-case hex of bytes.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An automerge document with a signature for every change.
pub struct SignedDoc {
    pub(crate) id: Key,
    pub(crate) doc: AutoCommit,
    pub(crate) sigs: BTreeMap<ChangeHash, Sig>,
}

impl std::fmt::Debug for SignedDoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedDoc").field("id", &hex(&self.id)).finish_non_exhaustive()
    }
}

pub(crate) fn signing_message(doc_id: &Key, change: &ChangeHash) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNING_CONTEXT.len() + 64);
    m.extend_from_slice(SIGNING_CONTEXT);
    m.extend_from_slice(doc_id);
    m.extend_from_slice(&change.0);
    m
}

impl SignedDoc {
    pub(crate) fn from_parts(
        id: Key,
        doc: AutoCommit,
        sigs: BTreeMap<ChangeHash, Sig>,
    ) -> SignedDoc {
        SignedDoc { id, doc, sigs }
    }

    /// A copy to check a peer's changes in without holding the document: take it back with
    /// [`SignedDoc::adopt`].
    pub fn fork(&mut self) -> SignedDoc {
        SignedDoc { id: self.id, doc: self.doc.fork(), sigs: self.sigs.clone() }
    }

    /// Puts the document back to `heads` (which it had): what a local change that could not
    /// be saved leaves behind, so that a change reported as failed is not passed on.
    pub fn rewind(&mut self, heads: &[ChangeHash]) -> Result<(), DocError> {
        if self.doc.get_heads() == heads {
            return Ok(());
        }
        let mut doc = guard(|| Ok(self.doc.fork_at(heads)?))?;
        let kept: std::collections::HashSet<ChangeHash> =
            doc.get_changes(&[]).iter().map(|c| c.hash()).collect();
        self.sigs.retain(|h, _| kept.contains(h));
        self.doc = doc;
        Ok(())
    }

    /// Takes in `checked`, a [`SignedDoc::fork`] of this document made when it had `heads`,
    /// whose new changes were all checked there: swapped in whole when this document has not
    /// changed meanwhile, else its new changes are applied as they are. A change's verdict
    /// depends only on the change and its history, so a change judged in the copy stands here
    /// (this is why nothing is judged twice, and why the copy must hold only checked changes).
    /// Returns the hashes of the changes that were new here.
    pub fn adopt(
        &mut self,
        mut checked: SignedDoc,
        heads: &[ChangeHash],
    ) -> Result<Vec<ChangeHash>, DocError> {
        if checked.id != self.id {
            return Err(DocError::Format("a copy of another document".into()));
        }
        let (changes, sigs) = checked.changes_since(heads);
        if self.heads() == heads {
            *self = checked;
            return Ok(changes.iter().map(Change::hash).collect());
        }
        let new: Vec<Change> =
            changes.into_iter().filter(|c| !self.sigs.contains_key(&c.hash())).collect();
        let hashes: Vec<ChangeHash> = new.iter().map(Change::hash).collect();
        let mut work = self.doc.fork();
        guard(|| Ok(work.apply_changes(new)?))?;
        self.doc = work;
        self.sigs.extend(sigs.into_iter().filter(|(h, _)| hashes.contains(h)));
        Ok(hashes)
    }

    /// A document known only by its id, to be filled by sync (a new member's first copy). The
    /// first change to arrive must be the genesis whose hash is `id`.
    pub fn empty(id: Key) -> SignedDoc {
        SignedDoc { id, doc: AutoCommit::new(), sigs: BTreeMap::new() }
    }

    /// Starts a document: `init` writes the genesis, which `authz` must accept.
    pub fn create(
        signer: &Signer,
        time_ms: i64,
        authz: &dyn Authorizer,
        init: impl FnOnce(&mut AutoCommit) -> Result<(), AutomergeError>,
    ) -> Result<SignedDoc, DocError> {
        // The genesis is written under the author alone: documents every node starts alike
        // (an identity's, a month's ledger) must come out the same, and a genesis is never
        // written twice by one device anyway.
        let mut d = AutoCommit::new().with_actor(signer.author().actor());
        init(&mut d)?;
        let hash = d
            .commit_with(CommitOptions::default().with_time(time_ms))
            .ok_or_else(|| DocError::Format("the genesis change is empty".into()))?;
        let change = d.get_change_by_hash(&hash).expect("the change just committed");
        let mut sigs = BTreeMap::new();
        sigs.insert(hash, signer.sign(&signing_message(&hash.0, &hash)));
        let mut doc = SignedDoc { id: hash.0, doc: AutoCommit::new(), sigs: BTreeMap::new() };
        doc.ingest(vec![change], &sigs, authz)?;
        Ok(doc)
    }

    /// The document id: the hash of its genesis change.
    pub fn id(&self) -> &Key {
        &self.id
    }

    /// The document, for reading.
    pub fn doc(&self) -> &AutoCommit {
        &self.doc
    }

    /// The document's history, for reading at past heads (`ReadDoc::get_at`).
    pub fn history(&mut self) -> &automerge::Automerge {
        self.doc.document()
    }

    /// The current heads.
    pub fn heads(&mut self) -> Vec<ChangeHash> {
        self.doc.get_heads()
    }

    /// Number of changes in the document.
    pub fn len(&self) -> usize {
        self.sigs.len()
    }

    /// Whether the document has no changes (never true for a created or loaded one).
    pub fn is_empty(&self) -> bool {
        self.sigs.is_empty()
    }

    /// Makes a local change: `f` edits a copy, the result is signed, authorised like any
    /// remote change, and applied. Returns `Ok(None)` when `f` changed nothing.
    pub fn change<T>(
        &mut self,
        signer: &Signer,
        time_ms: i64,
        authz: &dyn Authorizer,
        f: impl FnOnce(&mut AutoCommit) -> Result<T, AutomergeError>,
    ) -> Result<(T, Option<ChangeHash>), DocError> {
        self.change_noted(signer, time_ms, None, authz, f)
    }

    /// [`SignedDoc::change`] with a note the rules read (see [`crate::Check::note`]).
    pub fn change_noted<T>(
        &mut self,
        signer: &Signer,
        time_ms: i64,
        note: Option<String>,
        authz: &dyn Authorizer,
        f: impl FnOnce(&mut AutoCommit) -> Result<T, AutomergeError>,
    ) -> Result<(T, Option<ChangeHash>), DocError> {
        // The change is made, then judged, in the document itself: no copy of it per change.
        // The diff cursor set before `f` runs gives its patches without a scan. A refused
        // change (rare: the caller asked for something its author may not do) is undone by
        // rebuilding the document at the heads it had.
        let mut work = std::mem::replace(&mut self.doc, AutoCommit::new());
        let heads = work.get_heads();
        work.set_actor(signer.actor());
        work.update_diff_cursor();
        let made = guard(|| Ok(f(&mut work)?)).and_then(|out| {
            let mut options = CommitOptions::default().with_time(time_ms);
            if let Some(note) = note {
                options = options.with_message(note);
            }
            let Some(hash) = work.commit_with(options) else { return Ok((out, None)) };
            let change = work.get_change_by_hash(&hash).expect("the change just committed");
            let mut sigs = BTreeMap::new();
            sigs.insert(hash, signer.sign(&signing_message(&self.id, &hash)));
            let sig = guard(|| self.check(&mut work, &change, &sigs, authz, Some(&heads)))?;
            Ok((out, Some((hash, sig))))
        });
        // A failed edit leaves its transaction open: dropped before anything closes it.
        if made.is_err() {
            work.rollback();
        }
        work.reset_diff_cursor();
        let (out, made) = match made {
            Ok(m) => m,
            Err(e) => {
                let now = work.get_heads();
                self.doc = if now == heads {
                    work
                } else {
                    work.fork_at(&heads).expect("the document had these heads a moment ago")
                };
                return Err(e);
            }
        };
        self.doc = work;
        let Some((hash, sig)) = made else { return Ok((out, None)) };
        self.sigs.insert(hash, sig);
        Ok((out, Some(hash)))
    }

    /// Every change not in the history of `heads`, with their signatures (for carrying
    /// documents by other means than sync, and for tests).
    pub fn changes_since(
        &mut self,
        heads: &[ChangeHash],
    ) -> (Vec<Change>, BTreeMap<ChangeHash, Sig>) {
        let changes = self.doc.get_changes(heads);
        let sigs = changes
            .iter()
            .filter_map(|c| Some((c.hash(), self.sigs.get(&c.hash())?.clone())))
            .collect();
        (changes, sigs)
    }
}
