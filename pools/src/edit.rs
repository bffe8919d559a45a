//! Edits of the pool document, as functions on a document under change. They write; the rules
//! decide whether the change stands.

use kith_crdt::automerge::transaction::Transactable;
use kith_crdt::automerge::{
    AutoCommit, AutomergeError, ObjId, ObjType, ROOT, ReadDoc, ScalarValue,
};
use kith_crdt::{Key, hex};

use crate::view::{Charter, Offer, POOL_KIND, POOL_SCHEMA_VERSION, Role, State};

fn map(d: &AutoCommit, at: &ObjId, key: &str) -> Result<ObjId, AutomergeError> {
    match d.get(at, key)? {
        Some((_, id)) => Ok(id),
        None => Err(AutomergeError::InvalidObjId(format!("no `{key}` in the pool document"))),
    }
}

/// The map at `at/key`, made if it is not there yet.
pub(crate) fn map_or_new(
    d: &mut AutoCommit,
    at: &ObjId,
    key: &str,
) -> Result<ObjId, AutomergeError> {
    match d.get(at, key)? {
        Some((_, id)) => Ok(id),
        None => d.put_object(at, key, ObjType::Map),
    }
}

fn member(d: &AutoCommit, who: &Key) -> Result<ObjId, AutomergeError> {
    let ms = map(d, &ROOT, "members")?;
    map(d, &ms, &hex(who))
}

/// Writes a new pool: the charter and the founder as its admin.
pub fn init(
    d: &mut AutoCommit,
    founder: &Key,
    name: &str,
    charter: &Charter,
    now_ms: i64,
) -> Result<(), AutomergeError> {
    d.put(ROOT, "v", POOL_SCHEMA_VERSION)?;
    d.put(ROOT, "kind", POOL_KIND)?;
    let c = d.put_object(ROOT, "charter", ObjType::Map)?;
    d.put(&c, "name", charter.name.as_str())?;
    d.put(&c, "replicas", charter.replicas)?;
    d.put(&c, "quota", charter.quota)?;
    d.put(&c, "cost_rule", charter.cost_rule.as_str())?;
    d.put(&c, "join_rule", charter.join_rule.as_str())?;
    d.put(&c, "repair_after", charter.repair_after_ms)?;
    d.put(&c, "audit_every", charter.audit_every_ms)?;
    d.put(&c, "record_every", charter.record_every_ms)?;
    let ms = d.put_object(ROOT, "members", ObjType::Map)?;
    write_member(d, &ms, founder, Role::Admin, name, None, now_ms)
}

fn write_member(
    d: &mut AutoCommit,
    ms: &ObjId,
    who: &Key,
    role: Role,
    name: &str,
    invite: Option<&[u8]>,
    now_ms: i64,
) -> Result<(), AutomergeError> {
    let m = d.put_object(ms, hex(who), ObjType::Map)?;
    d.put(&m, "role", role.as_str())?;
    d.put(&m, "state", State::Active.as_str())?;
    d.put(&m, "name", name)?;
    d.put(&m, "joined", now_ms)?;
    if let Some(inv) = invite {
        d.put(&m, "invite", ScalarValue::Bytes(inv.to_vec()))?;
    }
    d.put_object(&m, "nodes", ObjType::Map)?;
    d.put_object(&m, "objects", ObjType::Map)?;
    Ok(())
}

/// Adds `me` as a member with an invite.
pub fn join(
    d: &mut AutoCommit,
    me: &Key,
    name: &str,
    invite: &[u8],
    now_ms: i64,
) -> Result<(), AutomergeError> {
    let ms = map(d, &ROOT, "members")?;
    write_member(d, &ms, me, Role::Member, name, Some(invite), now_ms)
}

/// Sets one charter field (already validated by the caller).
pub fn set_charter(
    d: &mut AutoCommit,
    key: &str,
    value: ScalarValue,
) -> Result<(), AutomergeError> {
    let c = map(d, &ROOT, "charter")?;
    d.put(&c, key, value)
}

/// Sets a member's role.
pub fn set_role(d: &mut AutoCommit, who: &Key, role: Role) -> Result<(), AutomergeError> {
    let m = member(d, who)?;
    d.put(&m, "role", role.as_str())
}

/// Sets a member's state (leave, removal) and, for a departure, when it was.
pub fn set_state(
    d: &mut AutoCommit,
    who: &Key,
    state: State,
    now_ms: i64,
) -> Result<(), AutomergeError> {
    let m = member(d, who)?;
    d.put(&m, "state", state.as_str())?;
    if state != State::Active {
        d.put(&m, "left", now_ms)?;
    }
    Ok(())
}

/// Sets the offer of one of `me`'s nodes.
pub fn set_offer(
    d: &mut AutoCommit,
    me: &Key,
    node: &Key,
    offer: &Offer,
) -> Result<(), AutomergeError> {
    let m = member(d, me)?;
    let ns = map(d, &m, "nodes")?;
    let o = map_or_new(d, &ns, &hex(node))?;
    d.put(&o, "storage", offer.storage)?;
    d.put(&o, "egress", offer.egress)?;
    d.put(&o, "zone", offer.zone.as_str())
}

/// Sets what `me`'s node `node` lends for jobs (a zero `cpu` withdraws it).
pub fn set_compute(
    d: &mut AutoCommit,
    me: &Key,
    node: &Key,
    offer: &crate::view::ComputeOffer,
) -> Result<(), AutomergeError> {
    let m = member(d, me)?;
    let cs = map_or_new(d, &m, "compute")?;
    let o = map_or_new(d, &cs, &hex(node))?;
    d.put(&o, "cpu", offer.cpu)?;
    d.put(&o, "memory", offer.memory)?;
    d.put(&o, "hours", offer.hours.as_str())
}

/// Retires `me`'s device `node` for good: out of its nodes, and its own changes refused from
/// then on.
pub fn retire_node(
    d: &mut AutoCommit,
    me: &Key,
    node: &Key,
    now_ms: i64,
) -> Result<(), AutomergeError> {
    let m = member(d, me)?;
    let ns = map(d, &m, "nodes")?;
    if d.get(&ns, hex(node))?.is_some() {
        d.delete(&ns, hex(node))?;
    }
    let rs = map_or_new(d, &m, "retired")?;
    if d.get(&rs, hex(node))?.is_none() {
        d.put(&rs, hex(node), now_ms)?;
    }
    Ok(())
}

/// Records an object `me` stored in the pool.
pub fn add_object(
    d: &mut AutoCommit,
    me: &Key,
    object: &Key,
    o: &crate::view::PoolObject,
) -> Result<(), AutomergeError> {
    let m = member(d, me)?;
    // Pools made before objects existed get the map on first use.
    let os = map_or_new(d, &m, "objects")?;
    let e = d.put_object(&os, hex(object), ObjType::Map)?;
    d.put(&e, "manifest", ScalarValue::Bytes(o.manifest.to_vec()))?;
    d.put(&e, "bytes", o.bytes)?;
    d.put(&e, "blobs", o.blobs)?;
    match &o.name {
        crate::names::ObjectName::Sealed(b) => d.put(&e, "name", ScalarValue::Bytes(b.clone()))?,
        crate::names::ObjectName::Clear(t) => d.put(&e, "name", t.as_str())?,
    }
    d.put(&e, "at", o.at_ms)
}

/// Writes `me`'s audit record of `node`.
pub fn set_audit(
    d: &mut AutoCommit,
    me: &Key,
    node: &Key,
    a: &crate::view::AuditRecord,
) -> Result<(), AutomergeError> {
    let m = member(d, me)?;
    let os = map_or_new(d, &m, "audits")?;
    let e = map_or_new(d, &os, &hex(node))?;
    d.put(&e, "passed", a.passed)?;
    d.put(&e, "failed", a.failed)?;
    d.put(&e, "failing", a.failing)?;
    d.put(&e, "reason", a.reason.as_str())?;
    d.put(&e, "at", a.at_ms)
}

/// Writes `me`'s record of runner `node`'s answers.
pub fn set_check(
    d: &mut AutoCommit,
    me: &Key,
    node: &Key,
    r: &crate::view::CheckRecord,
) -> Result<(), AutomergeError> {
    let m = member(d, me)?;
    let cs = map_or_new(d, &m, "checks")?;
    let e = map_or_new(d, &cs, &hex(node))?;
    d.put(&e, "agreed", r.agreed)?;
    d.put(&e, "disagreed", r.disagreed)?;
    d.put(&e, "reason", r.reason.as_str())?;
    d.put(&e, "at", r.at_ms)
}

/// Records a federation offer this pool's admin made.
pub fn add_fed_offer(
    d: &mut AutoCommit,
    offer: &kith_federation::Offer,
) -> Result<(), AutomergeError> {
    let f = map_or_new(d, &ROOT, "federation")?;
    let os = map_or_new(d, &f, "offers")?;
    d.put(&os, hex(&offer.id), ScalarValue::Bytes(offer.to_bytes()))
}

/// Records an agreement this pool is in.
pub fn add_agreement(
    d: &mut AutoCommit,
    a: &kith_federation::Agreement,
) -> Result<(), AutomergeError> {
    let f = map_or_new(d, &ROOT, "federation")?;
    let ags = map_or_new(d, &f, "agreements")?;
    let e = d.put_object(&ags, hex(&a.id()), ObjType::Map)?;
    d.put(&e, "agreement", ScalarValue::Bytes(a.to_bytes()))
}

/// Records a side's notice on its agreement.
pub fn record_notice(
    d: &mut AutoCommit,
    n: &kith_federation::Notice,
    now_ms: i64,
) -> Result<(), AutomergeError> {
    let f = map(d, &ROOT, "federation")?;
    let ags = map(d, &f, "agreements")?;
    let e = map(d, &ags, &hex(&n.agreement))?;
    d.put(&e, "notice", ScalarValue::Bytes(n.to_bytes()))?;
    // When this pool learned of it: the notice period counts from here at the earliest.
    d.put(&e, "noticed", now_ms)
}

/// Records this side's roster of an agreement (the newest replaces the last).
pub fn set_roster(d: &mut AutoCommit, r: &kith_federation::Roster) -> Result<(), AutomergeError> {
    let f = map(d, &ROOT, "federation")?;
    let ags = map(d, &f, "agreements")?;
    let e = map(d, &ags, &hex(&r.agreement))?;
    d.put(&e, "roster", ScalarValue::Bytes(r.to_bytes()))
}

/// Records that the offering pool recorded agreement `id` too.
pub fn confirm_agreement(d: &mut AutoCommit, id: &Key, now_ms: i64) -> Result<(), AutomergeError> {
    let f = map(d, &ROOT, "federation")?;
    let ags = map(d, &f, "agreements")?;
    let e = map(d, &ags, &hex(id))?;
    d.put(&e, "confirmed", now_ms)
}

/// Records version `n` of `me`'s site `name` and serves it.
pub fn set_site_version(
    d: &mut AutoCommit,
    me: &Key,
    name: &str,
    access: crate::view::Access,
    n: u64,
    v: &crate::view::SiteVersion,
) -> Result<(), AutomergeError> {
    let m = member(d, me)?;
    let ss = map_or_new(d, &m, "sites")?;
    let s = map_or_new(d, &ss, name)?;
    d.put(&s, "access", access.as_str())?;
    let vs = map_or_new(d, &s, "versions")?;
    let e = d.put_object(&vs, n.to_string(), ObjType::Map)?;
    d.put(&e, "index", ScalarValue::Bytes(v.index.to_vec()))?;
    d.put(&e, "key", ScalarValue::Bytes(v.key.to_vec()))?;
    d.put(&e, "len", v.len)?;
    d.put(&e, "files", v.files)?;
    d.put(&e, "bytes", v.bytes)?;
    d.put(&e, "at", v.at_ms)?;
    d.put(&s, "current", n)
}

/// `me`'s site `name`, which exists.
fn site(d: &AutoCommit, me: &Key, name: &str) -> Result<ObjId, AutomergeError> {
    let m = member(d, me)?;
    let ss = map(d, &m, "sites")?;
    map(d, &ss, name)
}

/// Serves version `n` of `me`'s site `name`.
pub fn set_site_current(
    d: &mut AutoCommit,
    me: &Key,
    name: &str,
    n: u64,
) -> Result<(), AutomergeError> {
    let s = site(d, me, name)?;
    d.put(&s, "current", n)
}

/// Sets how many versions `me`'s site `name` keeps.
pub fn set_site_keep(
    d: &mut AutoCommit,
    me: &Key,
    name: &str,
    keep: u64,
) -> Result<(), AutomergeError> {
    let s = site(d, me, name)?;
    d.put(&s, "keep", keep)
}

/// Forgets version `n` of `me`'s site `name`.
pub fn remove_site_version(
    d: &mut AutoCommit,
    me: &Key,
    name: &str,
    n: u64,
) -> Result<(), AutomergeError> {
    let s = site(d, me, name)?;
    let vs = map(d, &s, "versions")?;
    d.delete(&vs, n.to_string())
}

/// Forgets `me`'s site `name`.
pub fn remove_site(d: &mut AutoCommit, me: &Key, name: &str) -> Result<(), AutomergeError> {
    let m = member(d, me)?;
    let ss = map(d, &m, "sites")?;
    d.delete(&ss, name)
}

/// Forgets an object `me` stored.
pub fn remove_object(d: &mut AutoCommit, me: &Key, object: &Key) -> Result<(), AutomergeError> {
    let m = member(d, me)?;
    let os = map(d, &m, "objects")?;
    d.delete(&os, hex(object))
}
