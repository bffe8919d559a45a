//! The pool document's schema, and a typed view of it.
//!
//! ```text
//! v: 1                          format version of the schema
//! kind: "kith-pool"
//! charter: { name, replicas, quota, cost_rule, join_rule, repair_after?, audit_every?, record_every?,
//!            dissolved?, cpu_price? (millionths of the currency per reference CPU-hour), offsite_replicas? }
//! members: { <identity hex>: { role, state, name, joined, invite?, nodes: {
//!              <node hex>: { storage, egress, zone } },
//!            objects?: { <object hex>: { manifest, bytes, blobs, name, at } },
//!            audits?: { <node hex>: { passed, failed, failing, reason, at } },
//!            compute?: { <node hex>: { cpu, memory, hours } },
//!            checks?: { <node hex>: { agreed, disagreed, reason, at } } } }
//! federation?: { offers?: { <offer id hex>: <signed offer bytes> },
//!                agreements?: { <agreement id hex>: { agreement: <bytes>, confirmed?: ms,
//!                                                      notice?: <signed notice bytes> } } }
//! ```
//!
//! `repair_after` (ms) and `objects` came after the first pools; readers treat them as
//! optional.
//!
//! Members are never deleted: removal and leaving set `state`, so history stays readable and a
//! removed member's later changes can be recognised and refused.

use std::collections::BTreeMap;

use kith_crdt::Key;
use kith_crdt::automerge::{ObjId, ObjType, ROOT, ReadDoc, Value};

use crate::error::{ParseError, ShapeError};
use crate::names::ObjectName;

/// Reading one value: of a document as it is, or (with [`At`]) at some heads of its history,
/// so the rules can check an entry after a change without a copy of the document.
pub(crate) trait Get {
    /// The value at `key` of `obj`.
    fn get_value(&self, obj: &ObjId, key: &str) -> Result<Option<(Value<'_>, ObjId)>, String>;
    /// The keys of map `obj`.
    fn keys_of(&self, obj: &ObjId) -> Vec<String>;
    /// Every value at `key` of `obj` (concurrent writes to one key each leave one).
    fn get_all_values(&self, obj: &ObjId, key: &str) -> Result<Vec<(Value<'_>, ObjId)>, String>;
}

impl<D: ReadDoc> Get for D {
    fn get_value(&self, obj: &ObjId, key: &str) -> Result<Option<(Value<'_>, ObjId)>, String> {
        self.get(obj, key).map_err(|e| e.to_string())
    }

    fn keys_of(&self, obj: &ObjId) -> Vec<String> {
        self.keys(obj).collect()
    }

    fn get_all_values(&self, obj: &ObjId, key: &str) -> Result<Vec<(Value<'_>, ObjId)>, String> {
        self.get_all(obj, key).map_err(|e| e.to_string())
    }
}

/// A document read at `heads`.
pub(crate) struct At<'a, D> {
    pub(crate) doc: &'a D,
    pub(crate) heads: &'a [kith_crdt::automerge::ChangeHash],
}

impl<D: ReadDoc> Get for At<'_, D> {
    fn get_value(&self, obj: &ObjId, key: &str) -> Result<Option<(Value<'_>, ObjId)>, String> {
        self.doc.get_at(obj, key, self.heads).map_err(|e| e.to_string())
    }

    fn keys_of(&self, obj: &ObjId) -> Vec<String> {
        self.doc.keys_at(obj, self.heads).collect()
    }

    fn get_all_values(&self, obj: &ObjId, key: &str) -> Result<Vec<(Value<'_>, ObjId)>, String> {
        self.doc.get_all_at(obj, key, self.heads).map_err(|e| e.to_string())
    }
}

/// Version of the pool document schema.
pub const POOL_SCHEMA_VERSION: u64 = 1;
/// The `kind` of pool documents and their files.
pub const POOL_KIND: &str = "kith-pool";
/// The replication factor of a new pool.
pub const DEFAULT_REPLICAS: u64 = 3;
/// How long a holder may be unreachable before its chunks are copied elsewhere (as Ceph's
/// `mon_osd_down_out_interval`): long enough for a reboot, short enough to matter.
pub const DEFAULT_REPAIR_AFTER_MS: u64 = 10 * 60 * 1000;
/// How often each node audits each holder by default.
pub const DEFAULT_AUDIT_EVERY_MS: u64 = 10 * 60 * 1000;
/// How often a node records its usage into the ledger when the charter does not say.
pub const DEFAULT_RECORD_EVERY_MS: u64 = 60 * 60 * 1000;

/// A member's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Changes the charter and roles, removes members, issues invites.
    Admin,
    /// Offers storage and stores data.
    Member,
}

impl Role {
    /// The name stored in the document.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "member" => Some(Role::Member),
            _ => None,
        }
    }
}

/// Whether a member is in the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// In the pool.
    Active,
    /// Left by its own decision.
    Left,
    /// Removed by an admin.
    Removed,
}

impl State {
    /// The name stored in the document.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Active => "active",
            State::Left => "left",
            State::Removed => "removed",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<State> {
        match s {
            "active" => Some(State::Active),
            "left" => Some(State::Left),
            "removed" => Some(State::Removed),
            _ => None,
        }
    }
}

/// The pool's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charter {
    /// Human name.
    pub name: String,
    /// Copies of every chunk.
    pub replicas: u64,
    /// Bytes each member may store in the pool (0: no limit).
    pub quota: u64,
    /// How shared costs split (`proportional` or `credits`).
    pub cost_rule: String,
    /// How members join (`invite`).
    pub join_rule: String,
    /// How long a holder may be unreachable before its chunks are repaired elsewhere (ms).
    pub repair_after_ms: u64,
    /// How often each member node audits each holder (ms).
    pub audit_every_ms: u64,
    /// How often each node records its usage into the pool's ledger (ms).
    pub record_every_ms: u64,
    /// When the pool's last admin dissolved it (ms since the epoch, as it claimed): it takes no
    /// change after that but members leaving, once their objects are home.
    pub dissolved_ms: Option<i64>,
    /// What a reference CPU-hour of members' jobs costs, in millionths of the pool's currency
    /// (`kith pool set POOL cpu_price 0.02`); 0: CPU time counts as credit, a CPU-hour as one
    /// unit of contribution or usage.
    pub cpu_price_micro: u64,
    /// Copies of every chunk kept on nodes of federated pools, beyond `replicas` here
    /// (`kith pool set POOL offsite_replicas 1`; docs/federation.md).
    pub offsite_replicas: u64,
}

/// Who may read a site through a gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone on the LAN.
    Public,
    /// Members of the pool, with a member's credential.
    Members,
}

impl Access {
    /// Its name in the document.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Public => "public",
            Access::Members => "members",
        }
    }

    /// Parses `public` or `members`.
    pub fn parse(s: &str) -> Result<Access, ParseError> {
        match s {
            "public" => Ok(Access::Public),
            "members" => Ok(Access::Members),
            _ => Err(ParseError::new(
                "access",
                s,
                format!("unknown access `{s}` (public or members)"),
            )),
        }
    }
}

/// One published version of a site: its index (an encrypted blob, see `kith_hosting`) and the
/// key that opens it, which every member can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteVersion {
    /// The index blob's id (also the id of the pool object holding the version's blobs).
    pub index: Key,
    /// The index's key.
    pub key: Key,
    /// The index's plaintext length.
    pub len: u64,
    /// Files.
    pub files: u64,
    /// Bytes of content (plaintext).
    pub bytes: u64,
    /// When it was published (ms since the epoch).
    pub at_ms: i64,
}

/// A member's site in the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// Who may read it.
    pub access: Access,
    /// The version served.
    pub current: u64,
    /// Every version kept, by number.
    pub versions: BTreeMap<u64, SiteVersion>,
    /// How many versions it keeps (the newest, and the one served); `None`: every one.
    pub keep: Option<u64>,
}

impl Site {
    /// The versions its retention drops: all but the newest `keep` and the one served.
    pub fn beyond_keep(&self, keep: Option<u64>) -> Vec<u64> {
        let Some(keep) = keep else { return Vec::new() };
        self.versions
            .keys()
            .rev()
            .skip(keep as usize)
            .filter(|n| **n != self.current)
            .copied()
            .collect()
    }

    /// The version served: `current`, or, if a concurrent retention dropped that one (a
    /// rollback on one device, `keep` on another), the newest version kept.
    pub fn served(&self) -> Option<&SiteVersion> {
        self.versions.get(&self.current).or_else(|| self.versions.values().next_back())
    }

    /// When the site was first published.
    pub fn first_ms(&self) -> i64 {
        self.versions.values().map(|v| v.at_ms).min().unwrap_or(i64::MAX)
    }
}

/// An object a member stored in the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolObject {
    /// Id of its manifest blob (see [`crate::manifest`]).
    pub manifest: Key,
    /// Stored bytes of all its blobs (one copy).
    pub bytes: u64,
    /// How many blobs.
    pub blobs: u64,
    /// The name it was stored under (a file or folder name; no path), sealed for its owner
    /// (see [`crate::names`]).
    pub name: crate::names::ObjectName,
    /// When it was stored (ms since the Unix epoch, as the member claimed).
    pub at_ms: i64,
}

/// What one node of a member offers the pool.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Offer {
    /// Bytes of storage for the pool.
    pub storage: u64,
    /// Bytes of egress per month (0: unlimited).
    pub egress: u64,
    /// Failure domain (household); empty means the member's own.
    pub zone: String,
}

/// What one member's node found auditing another node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditRecord {
    /// Audits passed.
    pub passed: u64,
    /// Audits failed.
    pub failed: u64,
    /// Whether the latest audit failed.
    pub failing: bool,
    /// Why the latest failure failed.
    pub reason: String,
    /// When the record was written (ms since the epoch).
    pub at_ms: i64,
}

/// One member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Role.
    pub role: Role,
    /// In or out.
    pub state: State,
    /// Display name.
    pub name: String,
    /// When it joined (ms since the Unix epoch, as it claimed).
    pub joined_ms: i64,
    /// When it last left or was removed (as the author of that change claimed); `None` if it
    /// never did, or did before the pool kept the time.
    pub left_ms: Option<i64>,
    /// The invite it joined with (absent for the founder).
    pub invite: Option<Vec<u8>>,
    /// Its nodes and their offers.
    pub nodes: BTreeMap<Key, Offer>,
    /// What it stored in the pool, by object id.
    pub objects: BTreeMap<Key, PoolObject>,
    /// Its audits of other nodes, by node.
    pub audits: BTreeMap<Key, AuditRecord>,
    /// Its sites, by name.
    pub sites: BTreeMap<String, Site>,
    /// Its devices that its identity retired (lost, stolen), and when: never listed in
    /// `nodes` again, and their own changes are refused (`members/X/retired/<node>`).
    pub retired: BTreeMap<Key, i64>,
    /// What its nodes lend to run other members' jobs (`members/X/compute/<node>`).
    pub compute: BTreeMap<Key, ComputeOffer>,
    /// What its jobs found of other members' runners: how often each node's answer agreed
    /// with the others' (`members/X/checks/<node>`).
    pub checks: BTreeMap<Key, CheckRecord>,
}

/// A member's record of one runner node's answers to its jobs (`members/X/checks/<node>`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CheckRecord {
    /// Answers that agreed with the accepted result.
    pub agreed: u64,
    /// Answers that did not (another result, or one that broke the protocol).
    pub disagreed: u64,
    /// What the latest disagreement was.
    pub reason: String,
    /// When the record was written (ms since the epoch).
    pub at_ms: i64,
}

/// A runner node's standing in a pool: its answers that other members' jobs checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reputation {
    /// Answers that agreed.
    pub agreed: u64,
    /// Answers that did not.
    pub disagreed: u64,
}

impl Reputation {
    /// The share of its checked answers that agreed (1 with none checked: nothing against it).
    pub fn rate(&self) -> f64 {
        let n = self.agreed + self.disagreed;
        if n == 0 { 1.0 } else { self.agreed as f64 / n as f64 }
    }

    /// Whether its answers are mostly wrong: at least 3 checked, fewer than half agreeing.
    /// Such a runner is asked last.
    pub fn doubtful(&self) -> bool {
        self.agreed + self.disagreed >= 3 && self.rate() < 0.5
    }
}

/// What one node of a member lends for jobs (`kith offer POOL --cpu N --memory SIZE`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ComputeOffer {
    /// Jobs it runs at once (one core each).
    pub cpu: u64,
    /// Memory a job may use there (bytes).
    pub memory: u64,
    /// Hours of the day it runs jobs (`22-7`, its local time; empty: always).
    pub hours: String,
}

/// A node's compute offer (`members/X/compute/<node>`).
pub(crate) fn read_compute(d: &impl Get, o: &ObjId) -> Result<ComputeOffer, String> {
    let hours = text(d, o, "hours")?;
    if !hours.is_empty() && parse_hours(&hours).is_none() {
        return Err(format!("hours `{hours}` are not H-H"));
    }
    Ok(ComputeOffer { cpu: uint(d, o, "cpu")?, memory: uint(d, o, "memory")?, hours })
}

/// `22-7` as (22, 7): the hours from the first (included) to the second (excluded).
pub fn parse_hours(h: &str) -> Option<(u32, u32)> {
    let (a, b) = h.split_once('-')?;
    let (a, b): (u32, u32) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a < 24 && b <= 24 && a != b).then_some((a, b))
}

impl Member {
    /// Active and admin.
    pub fn is_active_admin(&self) -> bool {
        self.state == State::Active && self.role == Role::Admin
    }

    /// The site (and version number) whose version is `object`, if one is.
    pub fn site_version(&self, object: &Key) -> Option<(&str, u64)> {
        self.sites.iter().find_map(|(name, site)| {
            site.versions
                .iter()
                .find(|(_, sv)| sv.index == *object)
                .map(|(n, _)| (name.as_str(), *n))
        })
    }
}

/// What a node its identity retired is told when it asks for anything.
pub const RETIRED_DEVICE: &str = "this device was retired by its identity";

/// The whole pool document, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolView {
    /// Rules.
    pub charter: Charter,
    /// Members by identity key.
    pub members: BTreeMap<Key, Member>,
    /// Federation offers this pool made, and its agreements with other pools.
    pub federation: Federation,
}

/// This pool's federation: the offers its admins made and the agreements it is in
/// (docs/federation.md).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Federation {
    /// Offers made by this pool's admins, by id (each taken up once).
    pub offers: BTreeMap<[u8; 16], kith_federation::Offer>,
    /// Agreements, by id.
    pub agreements: BTreeMap<Key, FedEntry>,
}

/// One agreement as this pool records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FedEntry {
    /// The agreement (checked when read).
    pub agreement: kith_federation::Agreement,
    /// A side's signed notice, if one gave it.
    pub notice: Option<kith_federation::Notice>,
    /// When this pool recorded the notice (the time of the change that did; none in documents
    /// written before it was kept).
    pub noticed_ms: Option<i64>,
    /// On the accepting side: when the offering pool was known to have recorded it too.
    pub confirmed_ms: Option<i64>,
    /// This side's latest roster: the members its signer vouches for to the partner.
    pub roster: Option<kith_federation::Roster>,
}

impl FedEntry {
    /// When the notice counts from (ms since the epoch), if a side gave one: the time its
    /// signer wrote in it, or when this pool recorded it if that is later. A notice backdated
    /// by its signer, or carried here late, does not shorten the notice this pool is given.
    pub fn notice_ms(&self) -> Option<i64> {
        let at = self.notice.as_ref()?.at_ms as i64;
        Some(self.noticed_ms.map_or(at, |r| r.max(at)))
    }

    /// The admin who gave notice.
    pub fn notice_by(&self) -> Option<Key> {
        self.notice.as_ref().map(|n| n.by)
    }

    /// When the agreement ends: at the end of its notice (none while nobody gave notice).
    pub fn ends_ms(&self) -> Option<i64> {
        self.notice_ms().map(|n| n + self.agreement.offer.notice_days as i64 * 86_400_000)
    }

    /// `active`, `pending` (accepted here, not known to be recorded by the offering pool
    /// yet), `leaving` (notice given, not over) or `ended`, at `now_ms`, seen from `pool`.
    pub fn state(&self, pool: &Key, now_ms: i64) -> &'static str {
        match self.ends_ms() {
            Some(end) if now_ms < end => "leaving",
            Some(_) => "ended",
            None if self.agreement.acceptance.pool == *pool && self.confirmed_ms.is_none() => {
                "pending"
            }
            None => "active",
        }
    }
}

/// A node's offer (`members/X/nodes/<node>`).
pub(crate) fn read_offer(d: &impl Get, o: &ObjId) -> Result<Offer, String> {
    Ok(Offer {
        storage: uint(d, o, "storage")?,
        egress: uint(d, o, "egress")?,
        zone: text(d, o, "zone")?,
    })
}

/// An object's entry (`members/X/objects/<k>`).
pub(crate) fn read_object(d: &impl Get, o: &ObjId, k: &str) -> Result<PoolObject, String> {
    let manifest = match d.get_value(o, "manifest")? {
        Some((v, _)) => v
            .as_bytes()
            .and_then(|b| <Key>::try_from(b).ok())
            .ok_or(format!("object {k}: `manifest` is not a 32-byte id"))?,
        None => return Err(format!("object {k}: `manifest` is missing")),
    };
    let at_ms = match d.get_value(o, "at")? {
        Some((v, _)) => v.as_i64().ok_or("`at` is not a number")?,
        None => return Err(format!("object {k}: `at` is missing")),
    };
    Ok(PoolObject {
        manifest,
        bytes: uint(d, o, "bytes")?,
        blobs: uint(d, o, "blobs")?,
        name: object_name(d, o, k)?,
        at_ms,
    })
}

/// An audit record (`members/X/audits/<node>`).
pub(crate) fn read_audit(d: &impl Get, o: &ObjId) -> Result<AuditRecord, String> {
    let failing = match d.get_value(o, "failing")? {
        Some((v, _)) => v.as_bool().ok_or("`failing` is not a boolean")?,
        None => false,
    };
    let at_ms = match d.get_value(o, "at")? {
        Some((v, _)) => v.as_i64().ok_or("`at` is not a number")?,
        None => 0,
    };
    Ok(AuditRecord {
        passed: uint(d, o, "passed")?,
        failed: uint(d, o, "failed")?,
        failing,
        reason: text(d, o, "reason")?,
        at_ms,
    })
}

/// The federation map, if there is one: offers and agreements, each parsed and its
/// signatures checked (an entry that does not check makes the document unreadable, so the
/// rules refuse the change that would write it).
fn read_federation(d: &impl Get) -> Result<Federation, String> {
    let mut f = Federation::default();
    if d.get_value(&ROOT, "federation")?.is_none() {
        return Ok(f);
    }
    let fed = obj(d, &ROOT, "federation")?;
    if d.get_value(&fed, "offers")?.is_some() {
        let os = obj(d, &fed, "offers")?;
        for k in d.keys_of(&os) {
            let b = match d.get_value(&os, &k)? {
                Some((v, _)) => v.as_bytes().ok_or(format!("offer {k} is not bytes"))?.to_vec(),
                None => continue,
            };
            let o =
                kith_federation::Offer::from_bytes(&b).map_err(|e| format!("offer {k}: {e}"))?;
            // Its signature (not its expiry: an offer stays recorded once it has expired).
            o.check(0).map_err(|e| format!("offer {k}: {e}"))?;
            if kith_crdt::hex(&o.id) != k {
                return Err(format!("offer {k} is filed under another id"));
            }
            f.offers.insert(o.id, o);
        }
    }
    if d.get_value(&fed, "agreements")?.is_some() {
        let ags = obj(d, &fed, "agreements")?;
        for k in d.keys_of(&ags) {
            let e = obj(d, &ags, &k)?;
            let b = match d.get_value(&e, "agreement")? {
                Some((v, _)) => v.as_bytes().ok_or(format!("agreement {k} is not bytes"))?.to_vec(),
                None => return Err(format!("agreement {k} is empty")),
            };
            let a = kith_federation::Agreement::from_bytes(&b)
                .map_err(|e| format!("agreement {k}: {e}"))?;
            a.check().map_err(|e| format!("agreement {k}: {e}"))?;
            if parse_key(&k) != Some(a.id()) {
                return Err(format!("agreement {k} is filed under another id"));
            }
            let notice = match d.get_value(&e, "notice")? {
                Some((v, _)) => {
                    let n = kith_federation::Notice::from_bytes(
                        v.as_bytes().ok_or("`notice` is not bytes")?,
                    )
                    .map_err(|e| format!("agreement {k}: {e}"))?;
                    if !n.signature_ok() || n.agreement != a.id() {
                        return Err(format!("agreement {k}: its notice does not verify"));
                    }
                    Some(n)
                }
                None => None,
            };
            let confirmed_ms = match d.get_value(&e, "confirmed")? {
                Some((v, _)) => Some(v.as_i64().ok_or("`confirmed` is not a time")?),
                None => None,
            };
            let noticed_ms = match d.get_value(&e, "noticed")? {
                Some((v, _)) => Some(v.as_i64().ok_or("`noticed` is not a time")?),
                None => None,
            };
            let roster = match d.get_value(&e, "roster")? {
                Some((v, _)) => {
                    let r = kith_federation::Roster::from_bytes(
                        v.as_bytes().ok_or("`roster` is not bytes")?,
                    )
                    .map_err(|e| format!("agreement {k}: {e}"))?;
                    // Its signature and bounds as of when it was signed (it stays recorded
                    // once it has run out).
                    r.check(&a, r.at_ms).map_err(|e| format!("agreement {k}: {e}"))?;
                    Some(r)
                }
                None => None,
            };
            f.agreements.insert(
                a.id(),
                FedEntry { agreement: a, notice, noticed_ms, confirmed_ms, roster },
            );
        }
    }
    Ok(f)
}

/// A runner check record (`members/X/checks/<node>`).
pub(crate) fn read_check(d: &impl Get, o: &ObjId) -> Result<CheckRecord, String> {
    let at_ms = match d.get_value(o, "at")? {
        Some((v, _)) => v.as_i64().ok_or("`at` is not a number")?,
        None => 0,
    };
    Ok(CheckRecord {
        agreed: uint(d, o, "agreed")?,
        disagreed: uint(d, o, "disagreed")?,
        reason: text(d, o, "reason")?,
        at_ms,
    })
}

/// An object's name: sealed bytes, or text written before names were sealed.
fn object_name(d: &impl Get, o: &ObjId, k: &str) -> Result<ObjectName, String> {
    let Some((v, _)) = d.get_value(o, "name")? else {
        return Err(format!("object {k}: `name` is missing"));
    };
    if let Some(b) = v.as_bytes() {
        return Ok(ObjectName::Sealed(b.to_vec()));
    }
    v.as_str()
        .map(|t| ObjectName::Clear(t.to_string()))
        .ok_or(format!("object {k}: `name` is neither bytes nor text"))
}

pub(crate) fn obj(d: &impl Get, at: &ObjId, key: &str) -> Result<ObjId, String> {
    match d.get_value(at, key)? {
        Some((Value::Object(ObjType::Map), id)) => Ok(id),
        _ => Err(format!("`{key}` is missing or not a map")),
    }
}

pub(crate) fn text(d: &impl Get, at: &ObjId, key: &str) -> Result<String, String> {
    match d.get_value(at, key)? {
        Some((v, _)) => v.as_str().map(str::to_string).ok_or(format!("`{key}` is not text")),
        None => Err(format!("`{key}` is missing")),
    }
}

fn uint(d: &impl Get, at: &ObjId, key: &str) -> Result<u64, String> {
    match d.get_value(at, key)? {
        Some((v, _)) => v.as_u64().ok_or(format!("`{key}` is not an unsigned number")),
        None => Err(format!("`{key}` is missing")),
    }
}

/// Parses a 64-character hex key.
pub fn parse_key(s: &str) -> Option<Key> {
    if s.len() != 64 {
        return None;
    }
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(k)
}

impl PoolView {
    /// Reads and checks the schema; an error says which field is wrong.
    pub fn read(d: &impl ReadDoc) -> Result<PoolView, ShapeError> {
        Self::read_from(d, true)
    }

    /// The charter and the members without what they stored, audited or published (their
    /// `objects`, `audits` and `sites` are left empty and unread): what the pool rules judge a
    /// role, setting or membership change by, read in proportion to the number of members, not
    /// to the pool's history.
    pub(crate) fn read_roster(d: &impl Get) -> Result<PoolView, ShapeError> {
        Self::read_from(d, false)
    }

    fn read_from(d: &impl Get, whole: bool) -> Result<PoolView, ShapeError> {
        let v = uint(d, &ROOT, "v")?;
        if v > POOL_SCHEMA_VERSION {
            return Err(format!("pool schema {v} is newer than this kith understands").into());
        }
        let c = obj(d, &ROOT, "charter")?;
        let charter = Charter {
            name: text(d, &c, "name")?,
            replicas: uint(d, &c, "replicas")?,
            quota: uint(d, &c, "quota")?,
            cost_rule: text(d, &c, "cost_rule")?,
            join_rule: text(d, &c, "join_rule")?,
            repair_after_ms: match d.get_value(&c, "repair_after")? {
                Some(_) => uint(d, &c, "repair_after")?,
                None => DEFAULT_REPAIR_AFTER_MS,
            },
            audit_every_ms: match d.get_value(&c, "audit_every")? {
                Some(_) => uint(d, &c, "audit_every")?,
                None => DEFAULT_AUDIT_EVERY_MS,
            },
            record_every_ms: match d.get_value(&c, "record_every")? {
                Some(_) => uint(d, &c, "record_every")?,
                None => DEFAULT_RECORD_EVERY_MS,
            },
            dissolved_ms: match d.get_value(&c, "dissolved")? {
                Some((v, _)) => Some(v.as_i64().ok_or("`dissolved` is not a time")?),
                None => None,
            },
            cpu_price_micro: match d.get_value(&c, "cpu_price")? {
                Some(_) => uint(d, &c, "cpu_price")?,
                None => 0,
            },
            offsite_replicas: match d.get_value(&c, "offsite_replicas")? {
                Some(_) => uint(d, &c, "offsite_replicas")?,
                None => 0,
            },
        };
        let ms = obj(d, &ROOT, "members")?;
        let mut members = BTreeMap::new();
        for k in d.keys_of(&ms) {
            let key = parse_key(&k).ok_or(format!("member key `{k}` is not a key"))?;
            let m = obj(d, &ms, &k)?;
            members
                .insert(key, Self::member(d, &m, whole).map_err(|e| format!("member {k}: {e}"))?);
        }
        let federation = read_federation(d)?;
        Ok(PoolView { charter, members, federation })
    }

    fn member(d: &impl Get, m: &ObjId, whole: bool) -> Result<Member, String> {
        let role = text(d, m, "role")?;
        let state = text(d, m, "state")?;
        let invite = match d.get_value(m, "invite")? {
            Some((v, _)) => Some(v.as_bytes().ok_or("`invite` is not bytes")?.to_vec()),
            None => None,
        };
        let joined_ms = match d.get_value(m, "joined")? {
            Some((v, _)) => v.as_i64().ok_or("`joined` is not a number")?,
            None => return Err("`joined` is missing".into()),
        };
        let left_ms = match d.get_value(m, "left")? {
            Some((v, _)) => Some(v.as_i64().ok_or("`left` is not a number")?),
            None => None,
        };
        let ns = obj(d, m, "nodes")?;
        let mut nodes = BTreeMap::new();
        for k in d.keys_of(&ns) {
            let key = parse_key(&k).ok_or(format!("node key `{k}` is not a key"))?;
            let o = obj(d, &ns, &k)?;
            nodes.insert(key, read_offer(d, &o)?);
        }
        // Every map written there counts (two devices may retire one at the same time, each
        // making the map: automerge keeps both, and shows one).
        let mut retired = BTreeMap::new();
        for (v, rs) in d.get_all_values(m, "retired")? {
            if !matches!(v, kith_crdt::automerge::Value::Object(ObjType::Map)) {
                return Err("`retired` is not a map".into());
            }
            for k in d.keys_of(&rs) {
                let key = parse_key(&k).ok_or(format!("retired node `{k}` is not a key"))?;
                let at = match d.get_value(&rs, &k)? {
                    Some((v, _)) => v.as_i64().ok_or(format!("retired `{k}` is not a time"))?,
                    None => 0,
                };
                retired.insert(key, at);
            }
        }
        // A retired device stays out, even if a change concurrent with its retirement (or
        // one it signed before) lists it again.
        nodes.retain(|n, _| !retired.contains_key(n));
        let mut objects = BTreeMap::new();
        if whole && d.get_value(m, "objects")?.is_some() {
            let os = obj(d, m, "objects")?;
            for k in d.keys_of(&os) {
                let key = parse_key(&k).ok_or(format!("object key `{k}` is not a key"))?;
                let o = obj(d, &os, &k)?;
                let po = read_object(d, &o, &k)?;
                objects.insert(key, po);
            }
        }
        let mut audits = BTreeMap::new();
        if whole && d.get_value(m, "audits")?.is_some() {
            let os = obj(d, m, "audits")?;
            for k in d.keys_of(&os) {
                let key = parse_key(&k).ok_or(format!("audited node `{k}` is not a key"))?;
                let o = obj(d, &os, &k)?;
                let rec = read_audit(d, &o)?;
                audits.insert(key, rec);
            }
        }
        let mut compute = BTreeMap::new();
        if d.get_value(m, "compute")?.is_some() {
            let cs = obj(d, m, "compute")?;
            for k in d.keys_of(&cs) {
                let key = parse_key(&k).ok_or(format!("compute node `{k}` is not a key"))?;
                let o = obj(d, &cs, &k)?;
                compute.insert(key, read_compute(d, &o)?);
            }
            compute.retain(|n, _| !retired.contains_key(n));
        }
        let mut checks = BTreeMap::new();
        if whole && d.get_value(m, "checks")?.is_some() {
            let cs = obj(d, m, "checks")?;
            for k in d.keys_of(&cs) {
                let key = parse_key(&k).ok_or(format!("checked node `{k}` is not a key"))?;
                let o = obj(d, &cs, &k)?;
                checks.insert(key, read_check(d, &o)?);
            }
        }
        let mut sites = BTreeMap::new();
        if whole && d.get_value(m, "sites")?.is_some() {
            let ss = obj(d, m, "sites")?;
            for name in d.keys_of(&ss) {
                let s = obj(d, &ss, &name)?;
                let site = Self::read_site(d, &s).map_err(|e| format!("site {name}: {e}"))?;
                sites.insert(name, site);
            }
        }
        Ok(Member {
            role: Role::parse(&role).ok_or(format!("unknown role `{role}`"))?,
            state: State::parse(&state).ok_or(format!("unknown state `{state}`"))?,
            name: text(d, m, "name")?,
            joined_ms,
            left_ms,
            invite,
            nodes,
            objects,
            audits,
            sites,
            retired,
            compute,
            checks,
        })
    }

    /// A site's entry (`members/X/sites/<name>`).
    pub(crate) fn read_site(d: &impl Get, s: &ObjId) -> Result<Site, String> {
        let key32 = |o: &ObjId, k: &str| -> Result<Key, String> {
            match d.get_value(o, k)? {
                Some((v, _)) => v
                    .as_bytes()
                    .and_then(|b| <Key>::try_from(b).ok())
                    .ok_or(format!("`{k}` is not a 32-byte id")),
                None => Err(format!("`{k}` is missing")),
            }
        };
        let vs = obj(d, s, "versions")?;
        let mut versions = BTreeMap::new();
        for k in d.keys_of(&vs) {
            let n: u64 = k.parse().map_err(|_| format!("version `{k}` is not a number"))?;
            let v = obj(d, &vs, &k)?;
            let at_ms = match d.get_value(&v, "at")? {
                Some((x, _)) => x.as_i64().ok_or("`at` is not a number")?,
                None => return Err(format!("version {k}: `at` is missing")),
            };
            versions.insert(
                n,
                SiteVersion {
                    index: key32(&v, "index")?,
                    key: key32(&v, "key")?,
                    len: uint(d, &v, "len")?,
                    files: uint(d, &v, "files")?,
                    bytes: uint(d, &v, "bytes")?,
                    at_ms,
                },
            );
        }
        let keep = match d.get_value(s, "keep")? {
            Some((v, _)) => Some(v.as_u64().filter(|k| *k >= 1).ok_or("`keep` is not a count")?),
            None => None,
        };
        Ok(Site {
            access: Access::parse(&text(d, s, "access")?).map_err(|e| e.to_string())?,
            current: uint(d, s, "current")?,
            versions,
            keep,
        })
    }

    /// The member if it is active.
    pub fn active(&self, key: &Key) -> Option<&Member> {
        self.members.get(key).filter(|m| m.state == State::Active)
    }

    /// Active members' nodes with their offers and zones (a node without a zone label is in
    /// its member's own zone).
    pub fn holders(&self) -> Vec<crate::placement::Holder> {
        let mut out = Vec::new();
        for (k, m) in self.members.iter().filter(|(_, m)| m.state == State::Active) {
            for (n, o) in &m.nodes {
                let zone = if o.zone.is_empty() {
                    format!("member:{}", kith_crdt::hex(k))
                } else {
                    o.zone.clone()
                };
                out.push(crate::placement::Holder {
                    node: *n,
                    member: *k,
                    zone,
                    weight: o.storage,
                });
            }
        }
        out
    }

    /// The member a node belongs to, if the node is listed under an active member.
    pub fn node_owner(&self, node: &Key) -> Option<Key> {
        self.members
            .iter()
            .find(|(_, m)| m.state == State::Active && m.nodes.contains_key(node))
            .map(|(k, _)| *k)
    }

    /// Runner `node`'s reputation: what members other than its own recorded of its answers to
    /// their jobs (a member cannot vouch for its own nodes).
    pub fn reputation(&self, node: &Key) -> Reputation {
        let owner = self.node_owner(node);
        let mut r = Reputation::default();
        for (k, m) in &self.members {
            if Some(*k) == owner {
                continue;
            }
            if let Some(c) = m.checks.get(node) {
                r.agreed += c.agreed;
                r.disagreed += c.disagreed;
            }
        }
        r
    }

    /// Why `node` may not act for a member here, in words: retired by its identity, or not
    /// listed under an active member.
    pub fn not_a_member_node(&self, node: &Key) -> &'static str {
        if self.members.values().any(|m| m.retired.contains_key(node)) {
            RETIRED_DEVICE
        } else {
            "your node is not listed under an active member of this pool"
        }
    }
}

impl PoolView {
    /// Objects of active members: (owner, object id, object).
    pub fn objects(&self) -> impl Iterator<Item = (&Key, &Key, &PoolObject)> {
        self.members
            .iter()
            .filter(|(_, m)| m.state == State::Active)
            .flat_map(|(k, m)| m.objects.iter().map(move |(o, po)| (k, o, po)))
    }

    /// Sites of active members: (owner, name, site).
    pub fn sites(&self) -> impl Iterator<Item = (&Key, &String, &Site)> {
        self.members
            .iter()
            .filter(|(_, m)| m.state == State::Active)
            .flat_map(|(k, m)| m.sites.iter().map(move |(n, s)| (k, n, s)))
    }

    /// The site served under `name`. A member can claim a name only while nobody else holds
    /// it (see the rules), so two claimants have claimed it concurrently (on two sides of a
    /// partition): the lower member id wins, never a time a member claims (which it could
    /// back-date).
    pub fn site(&self, name: &str) -> Option<(Key, &Site)> {
        self.sites()
            .filter(|(_, n, _)| n.as_str() == name)
            .min_by_key(|(k, _, _)| **k)
            .map(|(k, _, s)| (*k, s))
    }

    /// Nodes whose latest audit by some active member's node failed.
    pub fn failing_nodes(&self) -> std::collections::BTreeSet<Key> {
        self.members
            .values()
            .filter(|m| m.state == State::Active)
            .flat_map(|m| m.audits.iter().filter(|(_, a)| a.failing).map(|(n, _)| *n))
            .collect()
    }

    /// Every node listed in the pool, former members' included.
    pub fn all_nodes(&self) -> Vec<Key> {
        self.members.values().flat_map(|m| m.nodes.keys().copied()).collect()
    }
}
