//! The identity document: a person's display name, devices, age recipients and pools, written
//! only by that identity (from any of its devices) and kept by its devices and, as custodians,
//! by the nodes of the pools it is in, so a restored identity gets it back.
//!
//! ```text
//! v: 1, kind: "kith-identity", owner: <identity key>
//! name: "..."                               (absent until set)
//! devices:    { <node hex>: { name, added, revoked?, recipient? } }
//! recipients: { <age recipient>: added }
//! recovery:   <age recipient>                 (opened by the identity key alone)
//! keys:       { <n>: { recipient, at, sealed: { <node hex> | "recovery": bytes } } }
//! pools:      { <opaque key>: { sealed } }    (written before 2026-11-30: { <pool hex>: { name, joined } })
//! ```
//!
//! The pools an identity is in are its own business: custodians keep the document for members
//! of *their* pools and must not learn the others. Each entry is sealed for the identity
//! (`crate::names`, key context [`POOL_REF_CONTEXT`]; plaintext: pool id, joined time (i64,
//! little-endian), name) under an opaque key, a keyed hash of the pool id that only the
//! identity can compute, so its devices find an entry without anyone else linking it.
//!
//! Every device must hold the same document, even one that starts alone after a restore, so
//! the genesis is deterministic: written as the identity with a zero device key at time 0, it
//! has the same hash (the document id) wherever it is made.

use std::collections::BTreeMap;

use kith_crdt::automerge::transaction::Transactable;
use kith_crdt::automerge::{
    AutoCommit, ChangeHash, ObjId, ObjType, PatchAction, ROOT, ReadDoc, ScalarValue, Value,
};
use kith_crdt::{
    Authorizer, Check, Doc, DocError, Key, Schema, SignedBy, SignedDoc, Signer, SyncFrame,
    SyncState, hex, patch_path,
};

use crate::error::ShapeError;
use crate::rules::{any_at_deps, at_deps};
use crate::view::parse_key;

/// The `kind` of identity documents and their files.
pub const IDENTITY_KIND: &str = "kith-identity";
/// Version of the identity document schema.
pub const IDENTITY_SCHEMA_VERSION: u64 = 1;

/// A device of the identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Its name (the host name by default).
    pub name: String,
    /// When it was added (ms since the epoch).
    pub added_ms: i64,
    /// When another device of the identity retired it (lost, stolen, replaced).
    pub revoked_ms: Option<i64>,
    /// The age recipient of its own data key (derived from its node key), once it listed it.
    pub recipient: Option<String>,
}

/// A data key the identity made, sealed to its devices.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DataKeyEntry {
    /// Its number: the newest key has the highest.
    pub n: u64,
    /// The device that made it (node hex), or [`RECOVERY_BY`] for the identity key.
    pub by: String,
    /// Its age recipient (what new objects are sealed to).
    pub recipient: String,
    /// When it was made (ms since the epoch).
    pub at_ms: i64,
    /// Its secret, sealed (age) to each device by node hex, and to `"recovery"`.
    pub sealed: BTreeMap<String, Vec<u8>>,
}

/// Key derivation context of the key that seals the identity's pool entries.
pub const POOL_REF_CONTEXT: &str = "kith 2026-11 identity pool refs v1";
/// Key derivation context of the key that makes an entry's opaque key (a keyed hash).
pub const POOL_INDEX_CONTEXT: &str = "kith 2026-11 identity pool index v1";

/// An entry of the identity's pool list as the document holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolEntry {
    /// Sealed for the identity.
    Sealed(Vec<u8>),
    /// In clear (written before entries were sealed): the pool and its reference.
    Clear(Key, PoolRef),
}

/// A pool the identity is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRef {
    /// The pool's name when it was recorded.
    pub name: String,
    /// When the identity joined it (ms since the epoch).
    pub joined_ms: i64,
}

/// The identity document, typed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdentityView {
    /// The identity key.
    pub owner: Key,
    /// Display name (empty if never set).
    pub name: String,
    /// Devices by node id.
    pub devices: BTreeMap<Key, Device>,
    /// age recipients (public keys others encrypt to) and when they were added.
    pub recipients: BTreeMap<String, i64>,
    /// Pool entries by their key in the document (sealed; see [`IdentityView::pools`]).
    pub pool_entries: BTreeMap<String, PoolEntry>,
    /// The recipient only the identity key opens (a data key's last resort).
    pub recovery: Option<String>,
    /// Data keys made since the first, by their key in the document (`<n, 20 digits>-<id>`,
    /// so in the order they were made).
    pub keys: BTreeMap<String, DataKeyEntry>,
}

impl IdentityView {
    /// The identity's pools, as `signer` (a device of the identity) opens them.
    pub fn pools(&self, signer: &Signer) -> BTreeMap<Key, PoolRef> {
        let mut out = BTreeMap::new();
        for (key, e) in &self.pool_entries {
            match e {
                PoolEntry::Clear(id, r) => {
                    out.insert(*id, r.clone());
                }
                PoolEntry::Sealed(b) => {
                    let aad = key.as_bytes();
                    let Some(plain) = crate::names::open_bytes(signer, POOL_REF_CONTEXT, aad, b)
                    else {
                        continue;
                    };
                    if plain.len() < 40 {
                        continue;
                    }
                    let id: Key = plain[..32].try_into().expect("32 bytes");
                    let joined_ms = i64::from_le_bytes(plain[32..40].try_into().expect("8 bytes"));
                    let name = String::from_utf8_lossy(&plain[40..]).into_owned();
                    out.insert(id, PoolRef { name, joined_ms });
                }
            }
        }
        out
    }
}

/// The opaque key of `pool`'s entry: a keyed hash only the identity computes.
fn entry_key(signer: &Signer, pool: &Key) -> String {
    let k = signer.derive_key(POOL_INDEX_CONTEXT);
    hex(&blake3::keyed_hash(&k, pool).as_bytes()[..16])
}

use crate::view::obj as map;

/// Text at `at/key`, empty if absent.
fn text(d: &impl ReadDoc, at: &ObjId, key: &str) -> Result<String, String> {
    match d.get(at, key).map_err(|e| e.to_string())? {
        Some(_) => crate::view::text(d, at, key),
        None => Ok(String::new()),
    }
}

fn int(d: &impl ReadDoc, at: &ObjId, key: &str) -> Result<i64, String> {
    match d.get(at, key).map_err(|e| e.to_string())? {
        Some((v, _)) => v.as_i64().ok_or(format!("`{key}` is not a number")),
        None => Ok(0),
    }
}

impl IdentityView {
    /// Reads and checks the schema.
    pub fn read(d: &impl ReadDoc) -> Result<IdentityView, ShapeError> {
        match d.get(ROOT, "v").map_err(|e| e.to_string())? {
            Some((v, _)) if v.as_u64().is_some_and(|v| v <= IDENTITY_SCHEMA_VERSION) => {}
            Some(_) => return Err("identity schema is newer than this kith understands".into()),
            None => return Err("`v` is missing".into()),
        }
        let owner = match d.get(ROOT, "owner").map_err(|e| e.to_string())? {
            Some((v, _)) => {
                v.as_bytes().and_then(|b| <Key>::try_from(b).ok()).ok_or("`owner` is not a key")?
            }
            None => return Err("`owner` is missing".into()),
        };
        let mut view = IdentityView { owner, name: text(d, &ROOT, "name")?, ..Default::default() };
        let ds = map(d, &ROOT, "devices")?;
        for k in d.keys(&ds) {
            let node = parse_key(&k).ok_or(format!("device `{k}` is not a key"))?;
            // Two devices may list one at the same time (a device listing itself while
            // another retires it): automerge keeps both entries and shows one, so they are
            // read together, and a retirement in either stands.
            let mut dev: Option<Device> = None;
            for (v, o) in d.get_all(&ds, &k).map_err(|e| e.to_string())? {
                if !matches!(v, Value::Object(ObjType::Map)) {
                    return Err(format!("device `{k}` is not a map").into());
                }
                let revoked_ms = match d.get(&o, "revoked").map_err(|e| e.to_string())? {
                    Some((v, _)) => Some(v.as_i64().ok_or("`revoked` is not a time")?),
                    None => None,
                };
                let recipient = match d.get(&o, "recipient").map_err(|e| e.to_string())? {
                    Some(_) => Some(text(d, &o, "recipient")?),
                    None => None,
                };
                let this = Device {
                    name: text(d, &o, "name")?,
                    added_ms: int(d, &o, "added")?,
                    revoked_ms,
                    recipient,
                };
                dev = Some(match dev {
                    None => this,
                    Some(a) => Device {
                        name: if a.name.is_empty() { this.name } else { a.name },
                        added_ms: a.added_ms.max(this.added_ms),
                        revoked_ms: match (a.revoked_ms, this.revoked_ms) {
                            (Some(x), Some(y)) => Some(x.min(y)),
                            (x, y) => x.or(y),
                        },
                        recipient: a.recipient.or(this.recipient),
                    },
                });
            }
            if let Some(dev) = dev {
                view.devices.insert(node, dev);
            }
        }
        let rs = map(d, &ROOT, "recipients")?;
        for k in d.keys(&rs) {
            let at = int(d, &rs, &k)?;
            view.recipients.insert(k, at);
        }
        if d.get(ROOT, "recovery").map_err(|e| e.to_string())?.is_some() {
            view.recovery = Some(text(d, &ROOT, "recovery")?);
        }
        // Every map written there counts (two devices may each make the first data key).
        for (v, ks) in d.get_all(ROOT, "keys").map_err(|e| e.to_string())? {
            if !matches!(v, Value::Object(ObjType::Map)) {
                return Err("`keys` is not a map".into());
            }
            for k in d.keys(&ks) {
                let n: u64 = k
                    .split('-')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or(format!("data key `{k}` is not numbered"))?;
                let o = map(d, &ks, &k)?;
                let mut e = DataKeyEntry {
                    n,
                    by: text(d, &o, "by")?,
                    recipient: text(d, &o, "recipient")?,
                    at_ms: int(d, &o, "at")?,
                    sealed: BTreeMap::new(),
                };
                let ss = map(d, &o, "sealed")?;
                for to in d.keys(&ss) {
                    let b = match d.get(&ss, &to).map_err(|e| e.to_string())? {
                        Some((v, _)) => {
                            v.as_bytes().ok_or("a sealed data key is not bytes")?.to_vec()
                        }
                        None => continue,
                    };
                    e.sealed.insert(to, b);
                }
                view.keys.insert(k, e);
            }
        }
        let ps = map(d, &ROOT, "pools")?;
        for k in d.keys(&ps) {
            let o = map(d, &ps, &k)?;
            let entry = match d.get(&o, "sealed").map_err(|e| e.to_string())? {
                Some((v, _)) => PoolEntry::Sealed(
                    v.as_bytes().ok_or(format!("pool entry `{k}` is not sealed bytes"))?.to_vec(),
                ),
                None => {
                    let pool = parse_key(&k).ok_or(format!("pool `{k}` is not a key"))?;
                    let r =
                        PoolRef { name: text(d, &o, "name")?, joined_ms: int(d, &o, "joined")? };
                    PoolEntry::Clear(pool, r)
                }
            };
            view.pool_entries.insert(k, entry);
        }
        Ok(view)
    }
}

/// Only the identity writes its document.
#[derive(Debug, Clone, Copy, Default)]
pub struct IdentityRules;

impl Authorizer for IdentityRules {
    fn authorise(&self, c: &Check<'_>) -> Result<(), String> {
        let after = IdentityView::read(c.after())
            .map_err(|e| format!("it breaks the identity document: {e}"))?;
        if after.owner != c.author.key {
            return Err(format!("only identity {} writes its document", hex(&after.owner[..8])));
        }
        if c.genesis {
            return Ok(());
        }
        // What the change wrote is read off its patches, and the state before it by lookups at
        // its dependencies: no copy of the document per change, so a batch is judged in time
        // linear in its length.
        // A retired device signs nothing more in its identity's document.
        if let SignedBy::Device(d) = c.signed_by
            && any_at_deps(c, &["devices", &hex(&d), "revoked"])
        {
            return Err(format!("device {} was retired; its changes are refused", &hex(&d)[..16]));
        }
        let before_owner =
            at_deps(c, &["owner"]).and_then(|(v, _)| v.as_bytes().map(<[u8]>::to_vec));
        if before_owner.as_deref() != Some(&after.owner[..]) {
            return Err("the owner of an identity document never changes".into());
        }
        let me = match c.signed_by {
            SignedBy::Device(d) => Some(hex(&d)),
            SignedBy::Root => None,
        };
        for p in c.patches {
            let path = patch_path(p);
            let replacing = matches!(p.action, PatchAction::DeleteMap { .. })
                || matches!(&p.action, PatchAction::PutMap { value: (Value::Object(_), _), .. });
            let ps: Vec<&str> = path.iter().map(String::as_str).collect();
            match ps.as_slice() {
                // What records devices and data keys is never replaced or deleted once it is
                // there: a replaced map would take a retirement or a key with it.
                ["devices" | "keys"] | ["devices" | "keys", _] | ["keys", _, "sealed"]
                    if replacing && at_deps(c, &ps).is_some() =>
                {
                    return Err(format!("`{}` is never replaced", path.join("/")));
                }
                ["devices", _, _] | ["keys", _, _, ..]
                    if matches!(p.action, PatchAction::DeleteMap { .. }) =>
                {
                    return Err(format!("`{}` is never deleted", path.join("/")));
                }
                // A device lists its own data key's recipient, nobody else.
                ["devices", node, "recipient"] if me.as_deref() != Some(node) => {
                    return Err("only a device itself lists its data key's recipient".into());
                }
                // The recovery recipient is the identity key's own: only it writes it.
                ["recovery"] if me.is_some() => {
                    return Err("only the identity key itself sets the recovery recipient".into());
                }
                // A data key says which device made it (so the keys of a device retired later
                // are set aside), and is written once.
                ["keys", _, "by"] if replacing || at_deps(c, &ps).is_some() => {
                    return Err("a data key's maker is written once".into());
                }
                ["keys", _, "by"] => {
                    let by = after_text(c, &ps);
                    if by.as_deref() != Some(me.as_deref().unwrap_or(RECOVERY_BY)) {
                        return Err("a data key names the device that made it".into());
                    }
                }
                ["keys", _, "recipient" | "at"] | ["keys", _, "sealed", _]
                    if at_deps(c, &ps).is_some() =>
                {
                    return Err(format!("`{}` is written once", path.join("/")));
                }
                _ => {}
            }
            let [devices, node, ..] = path.as_slice() else { continue };
            if devices != "devices" {
                continue;
            }
            let Some((was, _)) = at_deps(c, &["devices", node, "revoked"]) else { continue };
            let now =
                parse_key(node).and_then(|n| after.devices.get(&n)).and_then(|d| d.revoked_ms);
            if was.as_i64() != now {
                return Err(format!(
                    "device {} was retired; that stays",
                    &node[..node.len().min(16)]
                ));
            }
        }
        Ok(())
    }
}

/// The `by` of a data key the identity key itself made.
pub const RECOVERY_BY: &str = "identity";

/// The text at `path` in the document after the change.
fn after_text(c: &Check<'_>, path: &[&str]) -> Option<String> {
    let mut cur = ROOT;
    let heads = [c.hash];
    for (i, k) in path.iter().enumerate() {
        let (v, id) = c.doc.get_at(&cur, *k, &heads).ok().flatten()?;
        if i + 1 == path.len() {
            return match v {
                Value::Scalar(s) => match s.as_ref() {
                    ScalarValue::Str(t) => Some(t.to_string()),
                    _ => None,
                },
                _ => None,
            };
        }
        cur = id;
    }
    None
}

/// The kind of identity documents.
#[derive(Debug)]
pub struct IdentityKind;

impl Schema for IdentityKind {
    const KIND: &'static str = IDENTITY_KIND;
    const EXT: &'static str = "kdoc";
    type View = IdentityView;
    type Rules<'r> = IdentityRules;

    fn read(doc: &impl ReadDoc) -> Result<IdentityView, String> {
        IdentityView::read(doc).map_err(|e| e.0)
    }

    /// The document must be the one of the identity it names (its id is that identity's
    /// genesis), and every change is judged by the rules again, so a copy planted by somebody
    /// else is refused.
    fn admit(mut loaded: SignedDoc) -> Result<SignedDoc, DocError> {
        let view = IdentityView::read(loaded.doc()).map_err(|e| DocError::Format(e.0))?;
        let id = *loaded.id();
        if id != IdentityDoc::id_of(&view.owner) {
            return Err(DocError::Format(format!(
                "this is not the document of identity {} (it did not start as that identity's does)",
                hex(&view.owner[..8])
            )));
        }
        let (changes, sigs) = loaded.changes_since(&[]);
        let mut doc = SignedDoc::empty(id);
        doc.ingest(changes, &sigs, &IdentityRules)?;
        Ok(doc)
    }
}

/// An identity's document.
#[derive(Debug)]
pub struct IdentityDoc {
    doc: Doc<IdentityKind>,
}

/// The signer of the deterministic genesis: the identity with a zero device key.
fn genesis_signer(identity_secret: &[u8; 32]) -> Signer {
    Signer::new(identity_secret, [0; 32])
}

/// What the genesis writes: the same on every device, so its hash (the document id) is a
/// function of the owner's key alone.
fn genesis_content(
    d: &mut AutoCommit,
    owner: &Key,
) -> Result<(), kith_crdt::automerge::AutomergeError> {
    d.put(ROOT, "v", IDENTITY_SCHEMA_VERSION)?;
    d.put(ROOT, "kind", IDENTITY_KIND)?;
    d.put(ROOT, "owner", owner.to_vec())?;
    d.put_object(ROOT, "devices", ObjType::Map)?;
    d.put_object(ROOT, "recipients", ObjType::Map)?;
    d.put_object(ROOT, "pools", ObjType::Map)?;
    Ok(())
}

impl IdentityDoc {
    /// The identity's document as it starts, the same on every device.
    pub fn genesis(identity_secret: &[u8; 32]) -> Result<IdentityDoc, DocError> {
        let s = genesis_signer(identity_secret);
        let owner = s.author().key;
        let doc = Doc::create(&s, 0, &IdentityRules, |d| genesis_content(d, &owner))?;
        Ok(IdentityDoc { doc })
    }

    /// The identity key's signature of its document's genesis, which a device without the
    /// key keeps to start its copy alone ([`IdentityDoc::genesis_signed`]); `None` without the
    /// key.
    pub fn genesis_sig(signer: &Signer) -> Option<[u8; 64]> {
        let id = IdentityDoc::id_of(&signer.author().key);
        let msg = [kith_crdt::SIGNING_CONTEXT, &id[..], &id[..]].concat();
        signer.sign_root(&msg)
    }

    /// The identity's document as it starts, from the signature of its genesis (the change
    /// itself is the same everywhere).
    pub fn genesis_signed(owner: &Key, sig: [u8; 64]) -> Result<IdentityDoc, DocError> {
        let actor = kith_crdt::Author { key: *owner, device: [0; 32] }.actor();
        let mut d = AutoCommit::new().with_actor(actor);
        genesis_content(&mut d, owner)?;
        let options = kith_crdt::automerge::transaction::CommitOptions::default().with_time(0);
        let hash = d.commit_with(options).expect("the genesis changes the document");
        let change = d.get_change_by_hash(&hash).expect("just made").clone();
        let mut doc = SignedDoc::empty(hash.0);
        doc.ingest(vec![change], &BTreeMap::from([(hash, sig.to_vec())]), &IdentityRules)?;
        Ok(IdentityDoc { doc: Doc::wrap(doc)? })
    }

    /// The id every copy of `owner`'s document has: the hash of its deterministic genesis,
    /// which anyone can compute from the key (no secret needed: the signature is not part of
    /// the change).
    pub fn id_of(owner: &Key) -> Key {
        let actor = kith_crdt::Author { key: *owner, device: [0; 32] }.actor();
        let mut d = AutoCommit::new().with_actor(actor);
        genesis_content(&mut d, owner).expect("writing a fresh document cannot fail");
        let options = kith_crdt::automerge::transaction::CommitOptions::default().with_time(0);
        d.commit_with(options).expect("the genesis changes the document").0
    }

    /// Reads a saved document: every signature verified, and admitted as
    /// [`IdentityKind::admit`] says (it is the named identity's, and every change passes the
    /// rules again).
    pub fn load(bytes: &[u8]) -> Result<IdentityDoc, DocError> {
        Ok(IdentityDoc { doc: Doc::load(bytes)? })
    }

    /// Its bytes.
    pub fn save(&mut self) -> Vec<u8> {
        self.doc.save()
    }

    /// The document's heads.
    pub fn heads(&mut self) -> Vec<[u8; 32]> {
        self.doc.heads().iter().map(|h| h.0).collect()
    }

    /// The document id.
    pub fn id(&self) -> Key {
        self.doc.id()
    }

    /// The typed view.
    pub fn view(&self) -> IdentityView {
        self.doc.view().unwrap_or_default()
    }

    /// A document synced from nothing (see [`IdentityDoc::fresh`]) once it holds `owner`'s
    /// genesis: `None` while it does not.
    pub fn adopt_fresh(doc: SignedDoc, owner: &Key) -> Option<IdentityDoc> {
        let doc = Doc::wrap(doc).ok()?;
        let d = IdentityDoc { doc };
        (d.id() == IdentityDoc::id_of(owner) && d.view().owner == *owner).then_some(d)
    }

    /// An empty copy of `owner`'s document, to sync into: only `owner`'s genesis (the change
    /// whose hash is [`IdentityDoc::id_of`]) can start it.
    pub fn fresh(owner: &Key) -> SignedDoc {
        SignedDoc::empty(IdentityDoc::id_of(owner))
    }

    /// The next sync message for a peer, if there is anything to say.
    pub fn sync_out(&mut self, state: &mut SyncState) -> Option<SyncFrame> {
        self.doc.sync_out(state)
    }

    /// A copy to judge a peer's changes in, outside any lock, with the heads it was made at
    /// (see [`IdentityDoc::adopt`]).
    pub fn fork(&mut self) -> (IdentityDoc, Vec<ChangeHash>) {
        (IdentityDoc { doc: self.doc.fork() }, self.doc.heads())
    }

    /// Takes in `checked`, a [`IdentityDoc::fork`] made at `heads` with changes judged since;
    /// how many changes were new here.
    pub fn adopt(&mut self, checked: IdentityDoc, heads: &[ChangeHash]) -> Result<usize, DocError> {
        Ok(self.doc.adopt(checked.doc, heads)?.len())
    }

    /// Takes in a peer's sync message, every change checked by the rules; how many were new.
    pub fn sync_in(&mut self, state: &mut SyncState, frame: &SyncFrame) -> Result<usize, DocError> {
        Ok(self.doc.sync_in(state, frame, &IdentityRules)?.len())
    }

    /// Takes in every change of another copy (each one checked); returns how many were new.
    pub fn merge(&mut self, other: &[u8]) -> Result<usize, DocError> {
        let mut theirs = SignedDoc::load(other, IdentityKind::KIND)?;
        if *theirs.id() != self.doc.id() {
            return Err(DocError::Format("that is another identity's document".into()));
        }
        let (changes, sigs) = theirs.changes_since(&[]);
        Ok(self.doc.ingest(changes, &sigs, &IdentityRules)?.len())
    }

    fn edit(
        &mut self,
        signer: &Signer,
        now_ms: i64,
        f: impl FnOnce(&mut AutoCommit) -> Result<(), kith_crdt::automerge::AutomergeError>,
    ) -> Result<bool, DocError> {
        Ok(self.doc.change(signer, now_ms, &IdentityRules, f)?.1.is_some())
    }

    /// Lists a device (no change if it is listed).
    pub fn add_device(
        &mut self,
        signer: &Signer,
        node: &Key,
        name: &str,
        now_ms: i64,
    ) -> Result<bool, DocError> {
        if self.view().devices.contains_key(node) {
            return Ok(false);
        }
        self.edit(signer, now_ms, |d| {
            let ds = d.get(ROOT, "devices")?.map(|(_, id)| id).unwrap_or(ROOT);
            let o = d.put_object(&ds, hex(node), ObjType::Map)?;
            d.put(&o, "name", name)?;
            d.put(&o, "added", now_ms)
        })
    }

    /// Retires a device of the identity (lost, stolen, replaced): its pools stop counting on
    /// it. Done once; it stays retired.
    pub fn revoke_device(
        &mut self,
        signer: &Signer,
        node: &Key,
        now_ms: i64,
    ) -> Result<bool, DocError> {
        match self.view().devices.get(node) {
            None => {
                return Err(DocError::Format(format!(
                    "{} is not a device of this identity",
                    hex(&node[..8])
                )));
            }
            Some(d) if d.revoked_ms.is_some() => return Ok(false),
            Some(_) => {}
        }
        self.edit(signer, now_ms, |d| {
            let ds = d.get(ROOT, "devices")?.map(|(_, id)| id).unwrap_or(ROOT);
            let o = d.get(&ds, hex(node))?.map(|(_, id)| id).unwrap_or(ROOT);
            d.put(&o, "revoked", now_ms)
        })
    }

    /// Lists an age recipient (no change if it is listed).
    pub fn add_recipient(
        &mut self,
        signer: &Signer,
        recipient: &str,
        now_ms: i64,
    ) -> Result<bool, DocError> {
        if self.view().recipients.contains_key(recipient) {
            return Ok(false);
        }
        self.edit(signer, now_ms, |d| {
            let rs = d.get(ROOT, "recipients")?.map(|(_, id)| id).unwrap_or(ROOT);
            d.put(&rs, recipient, now_ms)
        })
    }

    /// Records a pool (no change if it is recorded).
    pub fn add_pool(
        &mut self,
        signer: &Signer,
        pool: &Key,
        name: &str,
        now_ms: i64,
    ) -> Result<bool, DocError> {
        if self.view().pools(signer).contains_key(pool) {
            return Ok(false);
        }
        let plain = [&pool[..], &now_ms.to_le_bytes(), name.as_bytes()].concat();
        let key = entry_key(signer, pool);
        let sealed = crate::names::seal_bytes(signer, POOL_REF_CONTEXT, key.as_bytes(), &plain);
        self.edit(signer, now_ms, |d| {
            let ps = d.get(ROOT, "pools")?.map(|(_, id)| id).unwrap_or(ROOT);
            let o = d.put_object(&ps, key.as_str(), ObjType::Map)?;
            d.put(&o, "sealed", kith_crdt::automerge::ScalarValue::Bytes(sealed))
        })
    }

    /// Forgets a pool (left or removed).
    pub fn drop_pool(
        &mut self,
        signer: &Signer,
        pool: &Key,
        now_ms: i64,
    ) -> Result<bool, DocError> {
        if !self.view().pools(signer).contains_key(pool) {
            return Ok(false);
        }
        // The sealed entry, and a clear one an older kith wrote.
        let keys = [entry_key(signer, pool), hex(pool)];
        self.edit(signer, now_ms, |d| {
            let ps = d.get(ROOT, "pools")?.map(|(_, id)| id).unwrap_or(ROOT);
            for k in &keys {
                if d.get(&ps, k.as_str())?.is_some() {
                    d.delete(&ps, k.as_str())?;
                }
            }
            Ok(())
        })
    }

    /// Lists the recipient of `node`'s own data key (no change if it is listed).
    pub fn set_device_recipient(
        &mut self,
        signer: &Signer,
        node: &Key,
        recipient: &str,
        now_ms: i64,
    ) -> Result<bool, DocError> {
        match self.view().devices.get(node) {
            Some(d) if d.recipient.as_deref() != Some(recipient) => {}
            _ => return Ok(false),
        }
        self.edit(signer, now_ms, |d| {
            let ds = d.get(ROOT, "devices")?.map(|(_, id)| id).unwrap_or(ROOT);
            let o = d.get(&ds, hex(node))?.map(|(_, id)| id).unwrap_or(ROOT);
            d.put(&o, "recipient", recipient)
        })
    }

    /// Records the recovery recipient (no change if it is the same).
    pub fn set_recovery(
        &mut self,
        signer: &Signer,
        recipient: &str,
        now_ms: i64,
    ) -> Result<bool, DocError> {
        if self.view().recovery.as_deref() == Some(recipient) {
            return Ok(false);
        }
        self.edit(signer, now_ms, |d| d.put(ROOT, "recovery", recipient))
    }

    /// Records a data key (its number and maker as `entry` says; numbered after the newest).
    pub fn add_data_key(
        &mut self,
        signer: &Signer,
        entry: &DataKeyEntry,
        now_ms: i64,
    ) -> Result<bool, DocError> {
        let key = format!(
            "{:020}-{}",
            entry.n,
            &entry.recipient[entry.recipient.len().saturating_sub(12)..]
        );
        if self.view().keys.contains_key(&key) {
            return Ok(false);
        }
        self.edit(signer, now_ms, |d| {
            let ks = crate::edit::map_or_new(d, &ROOT, "keys")?;
            let o = d.put_object(&ks, key.as_str(), ObjType::Map)?;
            d.put(&o, "by", entry.by.as_str())?;
            d.put(&o, "recipient", entry.recipient.as_str())?;
            d.put(&o, "at", entry.at_ms)?;
            let ss = d.put_object(&o, "sealed", ObjType::Map)?;
            for (to, b) in &entry.sealed {
                d.put(&ss, to.as_str(), b.clone())?;
            }
            Ok(())
        })
    }

    /// Adds data key `key`'s secret sealed to `to` (a device listed after the key was made).
    pub fn reseal_data_key(
        &mut self,
        signer: &Signer,
        key: &str,
        to: &str,
        sealed: &[u8],
        now_ms: i64,
    ) -> Result<bool, DocError> {
        match self.view().keys.get(key) {
            Some(e) if !e.sealed.contains_key(to) => {}
            _ => return Ok(false),
        }
        // Only into the map automerge shows (a concurrent one cannot be written into).
        let shown = |d: &AutoCommit| -> Option<ObjId> {
            let ks = d.get(ROOT, "keys").ok()??.1;
            let o = d.get(&ks, key).ok()??.1;
            Some(d.get(&o, "sealed").ok()??.1)
        };
        let Some(ss) = shown(self.doc.doc()) else { return Ok(false) };
        self.edit(signer, now_ms, |d| d.put(&ss, to, sealed.to_vec()))
    }

    /// Sets the display name (no change if it is the same).
    pub fn set_name(&mut self, signer: &Signer, name: &str, now_ms: i64) -> Result<bool, DocError> {
        if self.view().name == name {
            return Ok(false);
        }
        self.edit(signer, now_ms, |d| d.put(ROOT, "name", name))
    }
}

impl crate::fsutil::Stored for IdentityDoc {
    type Kind = IdentityKind;

    fn load(bytes: &[u8]) -> Result<Self, String> {
        IdentityDoc::load(bytes).map_err(|e| e.to_string())
    }

    fn save(&mut self) -> Vec<u8> {
        IdentityDoc::save(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_devices_start_the_same_document_and_merge() {
        let secret = [7u8; 32];
        let (a_dev, b_dev) = (Signer::new(&secret, [1; 32]), Signer::new(&secret, [2; 32]));
        let mut a = IdentityDoc::genesis(&secret).unwrap();
        let mut b = IdentityDoc::genesis(&secret).unwrap();
        assert_eq!(a.id(), b.id(), "the genesis is deterministic");
        a.add_device(&a_dev, &[1; 32], "laptop", 10).unwrap();
        a.add_pool(&a_dev, &[9; 32], "street", 11).unwrap();
        b.add_device(&b_dev, &[2; 32], "phone", 12).unwrap();
        b.set_name(&b_dev, "ada", 13).unwrap();
        let (sa, sb) = (a.save(), b.save());
        assert!(a.merge(&sb).unwrap() > 0);
        assert!(b.merge(&sa).unwrap() > 0);
        assert_eq!(a.view(), b.view());
        let v = a.view();
        assert_eq!(v.name, "ada");
        assert_eq!(v.devices.len(), 2);
        assert_eq!(v.pools(&a_dev)[&[9; 32]].name, "street");
        assert_eq!(v.pools(&b_dev)[&[9; 32]].name, "street", "any device of the identity");
        // A custodian (another identity) sees that there is an entry, not which pool.
        let other = Signer::new(&[8; 32], [3; 32]);
        assert!(v.pools(&other).is_empty());
        let saved = a.save();
        assert!(!saved.windows(6).any(|w| w == b"street"), "no pool name in clear");
        assert!(!saved.windows(32).any(|w| w == [9; 32]), "no pool id in clear");
        // Dropped from any device.
        b.drop_pool(&b_dev, &[9; 32], 14).unwrap();
        assert!(b.view().pools(&b_dev).is_empty());
    }

    #[test]
    fn regression_a_document_planted_for_another_identity_is_refused() {
        // Issue 16: `load` did not run the rules, so a member could hand a custodian a
        // document it wrote itself that names another identity as its owner.
        let victim = Signer::new(&[7; 32], [0; 32]).author().key;
        let evil = Signer::new(&[8; 32], [3; 32]);
        let planted = SignedDoc::create(&evil, 0, &NoRules, |d| genesis_content(d, &victim))
            .unwrap()
            .save(IDENTITY_KIND);
        let e = IdentityDoc::load(&planted).unwrap_err();
        assert!(e.to_string().contains("not the document of identity"), "{e}");
        // The real one loads, and its id is what anyone computes from the key.
        let mut real = IdentityDoc::genesis(&[7; 32]).unwrap();
        assert_eq!(real.id(), IdentityDoc::id_of(&victim));
        assert!(IdentityDoc::load(&real.save()).is_ok());
    }

    /// Accepts anything (to write what the rules would refuse).
    struct NoRules;

    impl Authorizer for NoRules {
        fn authorise(&self, _: &Check<'_>) -> Result<(), String> {
            Ok(())
        }
    }

    #[test]
    fn a_retired_device_stays_retired() {
        let secret = [7u8; 32];
        let a_dev = Signer::new(&secret, [1; 32]);
        let mut a = IdentityDoc::genesis(&secret).unwrap();
        a.add_device(&a_dev, &[1; 32], "laptop", 10).unwrap();
        a.add_device(&a_dev, &[2; 32], "old phone", 11).unwrap();
        assert!(a.revoke_device(&a_dev, &[2; 32], 12).unwrap());
        assert!(!a.revoke_device(&a_dev, &[2; 32], 13).unwrap(), "once");
        assert_eq!(a.view().devices[&[2; 32]].revoked_ms, Some(12));
        // Writing it back is refused, even by the identity.
        let e = a
            .edit(&a_dev, 14, |d| {
                let ds = d.get(ROOT, "devices")?.unwrap().1;
                let o = d.get(&ds, hex(&[2; 32]))?.unwrap().1;
                d.delete(&o, "revoked")
            })
            .unwrap_err();
        assert!(e.to_string().contains("never deleted"), "{e}");
        assert!(a.revoke_device(&a_dev, &[3; 32], 15).is_err(), "not a device");
    }

    #[test]
    fn a_retired_device_signs_nothing_more_in_its_identitys_document() {
        // Issue 16 item 9: a device signs with its own certified key, so once another device
        // retired it, its changes are refused, on this copy and on every copy it syncs to.
        let secret = [7u8; 32];
        let laptop = Signer::with_device(&secret, &[31; 32]);
        let phone = Signer::with_device(&secret, &[32; 32]);
        let mut a = IdentityDoc::genesis(&secret).unwrap();
        a.add_device(&laptop, &laptop.author().device, "laptop", 10).unwrap();
        a.add_device(&phone, &phone.author().device, "phone", 11).unwrap();
        let mut p = IdentityDoc::load(&a.save()).unwrap();
        assert!(p.set_name(&phone, "ada", 12).unwrap(), "a device writes before");
        a.merge(&p.save()).unwrap();
        assert!(a.revoke_device(&laptop, &phone.author().device, 13).unwrap());
        p.merge(&a.save()).unwrap();
        let e = p.set_name(&phone, "thief", 14).unwrap_err();
        assert!(e.to_string().contains("was retired"), "{e}");
        assert!(a.set_name(&laptop, "ada l.", 15).unwrap(), "the others go on");
        assert_eq!(a.view().name, "ada l.");
    }

    #[test]
    fn data_keys_are_written_by_whom_they_belong_to_and_a_thiefs_are_set_aside() {
        // Review of item 9: a device could list another device's recipient or the recovery
        // recipient as its own, plant a data key, or replace an entry that holds a retirement.
        let secret = [7u8; 32];
        let laptop = Signer::with_device(&secret, &[31; 32]);
        let phone = Signer::with_device(&secret, &[32; 32]);
        let (l, p) = (laptop.author().device, phone.author().device);
        let mut a = IdentityDoc::genesis(&secret).unwrap();
        a.add_device(&laptop, &l, "laptop", 10).unwrap();
        a.add_device(&phone, &p, "phone", 11).unwrap();
        let e = a.set_device_recipient(&phone, &l, "age1thief", 12).unwrap_err();
        assert!(e.to_string().contains("only a device itself"), "{e}");
        let dk = crate::datakeys::device_key(&laptop).unwrap().to_public().to_string();
        a.set_device_recipient(&laptop, &l, &dk, 13).unwrap();
        let e = a.set_recovery(&phone, "age1thief", 14).unwrap_err();
        assert!(e.to_string().contains("only the identity key"), "{e}");
        a.set_recovery(&laptop.root_form().unwrap(), "age1real", 15).unwrap();
        let e = a
            .edit(&phone, 16, |d| {
                let ds = d.get(ROOT, "devices")?.unwrap().1;
                d.put_object(&ds, hex(&l), ObjType::Map).map(|_| ())
            })
            .unwrap_err();
        assert!(e.to_string().contains("never replaced"), "{e}");
        // The phone plants a key before it is stolen; once retired, its keys are set aside,
        // and the laptop's own rotation is what counts.
        let planted = crate::datakeys::make(&a.view(), &phone, 17).unwrap();
        a.add_data_key(&phone, &planted, 17).unwrap();
        assert_eq!(crate::datakeys::usable(&a.view()).count(), 1);
        a.revoke_device(&laptop, &p, 18).unwrap();
        assert_eq!(crate::datakeys::usable(&a.view()).count(), 0, "the thief's key is set aside");
        let real = crate::datakeys::make(&a.view(), &laptop, 19).unwrap();
        assert_eq!(real.n, 1, "numbered after the keys that count");
        assert!(!real.sealed.contains_key(&hex(&p)), "nothing sealed to the retired phone");
        a.add_data_key(&laptop, &real, 19).unwrap();
        let v = a.view();
        let usable: Vec<_> = crate::datakeys::usable(&v).collect();
        assert_eq!(usable.len(), 1);
        let opened = crate::datakeys::open_entry(usable[0].1, &laptop).unwrap();
        assert_eq!(opened.to_public().to_string(), real.recipient);
        assert!(crate::datakeys::open_entry(usable[0].1, &phone).is_none());
        // An entry's maker is the device that wrote it.
        let mut forged = crate::datakeys::make(&v, &laptop, 20).unwrap();
        forged.by = hex(&l);
        let tablet = Signer::with_device(&secret, &[33; 32]);
        a.add_device(&tablet, &tablet.author().device, "tablet", 21).unwrap();
        let e = a.add_data_key(&tablet, &forged, 22).unwrap_err();
        assert!(e.to_string().contains("names the device that made it"), "{e}");
    }

    #[test]
    fn another_identity_cannot_write_or_pass_its_document_off() {
        let mut mine = IdentityDoc::genesis(&[7; 32]).unwrap();
        let mut other = IdentityDoc::genesis(&[8; 32]).unwrap();
        let e = mine.merge(&other.save()).unwrap_err();
        assert!(e.to_string().contains("another identity"), "{e}");
        let intruder = Signer::new(&[8; 32], [3; 32]);
        let e = mine.add_device(&intruder, &[3; 32], "evil", 1).unwrap_err();
        assert!(e.to_string().contains("only identity"), "{e}");
        assert!(mine.view().devices.is_empty());
    }
}
