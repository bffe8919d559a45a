//! Who may write what in a ledger: each change judged against the pool as it was when the
//! change was made, named by the pool heads in the change's note.

use kith_crdt::automerge::PatchAction;
use kith_crdt::automerge::{ChangeHash, ObjId, ObjType, ROOT, ReadDoc, ScalarValue, Value};
use kith_crdt::{Authorizer, Check, Key, Signer, hex, patch_path};

use super::evidence::Receipt;
use super::seal::Seal;
use super::{Counter, LedgerView, PartnerCounts, Period, row_key};
use crate::error::ParseError;
use crate::pool::PoolSnapshot;
use crate::view::{At, Get, Role, State, parse_key};

/// Prefix of a ledger change's note: the pool heads it was written at follow, in hex, separated
/// by commas.
pub const POOL_NOTE: &str = "kith-pool-at:";
/// Most pool heads a note may name (a pool document has one head per concurrent writer).
const MAX_NOTE_HEADS: usize = 64;

/// The note a ledger change written at pool heads `heads` carries.
pub fn pool_note(heads: &[ChangeHash]) -> String {
    let hexes: Vec<String> = heads.iter().map(|h| hex(&h.0)).collect();
    format!("{POOL_NOTE}{}", hexes.join(","))
}

/// The pool heads a note names.
pub fn parse_pool_note(note: &str) -> Result<Vec<ChangeHash>, ParseError> {
    let bad = || {
        ParseError::new(
            "pool note",
            note,
            "a ledger change's note must name the pool heads it was written at",
        )
    };
    let list = note.strip_prefix(POOL_NOTE).ok_or_else(bad)?;
    let heads: Vec<ChangeHash> = list
        .split(',')
        .map(|h| parse_key(h).map(ChangeHash).ok_or_else(bad))
        .collect::<Result<_, _>>()?;
    if heads.len() > MAX_NOTE_HEADS {
        return Err(ParseError::new(
            "pool note",
            note,
            format!("a ledger change names at most {MAX_NOTE_HEADS} pool heads"),
        ));
    }
    Ok(heads)
}

/// The ledger's rules: each change is judged against the pool as it was when the change was
/// made (see the module docs), read from a snapshot of the pool document with its history.
#[derive(Debug, Clone, Copy)]
pub struct LedgerRules<'a> {
    /// The pool, with its history.
    pub pool: &'a PoolSnapshot,
}

impl LedgerRules<'_> {
    /// The pool's id.
    pub fn pool_id(&self) -> &Key {
        self.pool.id()
    }

    /// The note a change written now carries.
    pub(super) fn note(&self) -> Option<String> {
        Some(pool_note(&self.pool.heads()))
    }

    /// Whether the author of `c` was an active member, and an admin, when it made `c`.
    fn standing(&self, c: &Check<'_>) -> Result<(bool, bool), String> {
        let Some(note) = c.note else {
            // Devices signed rows only after rows named the pool state they were made in.
            if matches!(c.signed_by, kith_crdt::SignedBy::Device(_)) {
                return Err("a device's row must name the pool state it was made in".into());
            }
            // Written before notes existed: the member's entry as it is now.
            let m = self.pool.view().members.get(&c.author.key);
            let member = m.is_some_and(|m| matches!(m.state, State::Active | State::Left));
            return Ok((member, member && m.is_some_and(|m| m.role == Role::Admin)));
        };
        let heads = parse_pool_note(note).map_err(|e| e.to_string())?;
        if !self.pool.knows(&heads) {
            return Err(format!(
                "it was written at a state of the pool this node has not received yet; it is \
                 accepted once the pool document has synced ({})",
                note.get(POOL_NOTE.len()..POOL_NOTE.len() + 16).unwrap_or(note)
            ));
        }
        // A device its member retired (as of the pool state the row names) writes no rows.
        if let kith_crdt::SignedBy::Device(d) = c.signed_by
            && self.pool.retired_at(&c.author.key, &d, &heads)
        {
            return Err(crate::view::RETIRED_DEVICE.into());
        }
        let s = self.pool.standing_at(&c.author.key, &heads);
        let member = s.is_some_and(|s| s.state == State::Active);
        Ok((member, member && s.is_some_and(|s| s.role == Role::Admin)))
    }
}

impl Authorizer for LedgerRules<'_> {
    // Judged from the change's patches and only the parts of the document they touch, so that
    // checking a month of changes stays linear in its length.
    fn authorise(&self, c: &Check<'_>) -> Result<(), String> {
        if c.genesis {
            let after =
                LedgerView::read(c.after()).map_err(|e| format!("it breaks the ledger: {e}"))?;
            if after.pool != *self.pool_id() {
                return Err("the ledger belongs to another pool".into());
            }
            let canonical = genesis_signer(&after.pool, after.period).author().key;
            if c.author.key != canonical
                || c.time_ms != after.period.start_ms()
                || !(after.rows.is_empty() && after.costs.is_empty() && after.carried.is_empty())
            {
                return Err("a ledger starts only with its canonical genesis".into());
            }
            return Ok(());
        }
        let (member, admin) = self.standing(c)?;
        let own = row_key(&c.author.key, &c.author.device);
        // Only the genesis writes `period` (every later write at the root outside the maps
        // below is refused), so the document as it is now has the value the change saw: read
        // without walking the history to the change's heads.
        let period = match c.doc.get(&ROOT, "period").map_err(|e| e.to_string())? {
            Some((v, _)) => v.as_str().map(str::to_string).ok_or("`period` is not text")?,
            None => return Err("`period` is missing".into()),
        };
        // Rows and costs the change wrote, checked whole once it is applied (below); rows it
        // made.
        let mut rows_made: Vec<String> = Vec::new();
        let mut rows_touched: Vec<String> = Vec::new();
        let mut costs_touched: Vec<String> = Vec::new();
        for p in c.patches {
            let path = patch_path(p);
            let path: Vec<&str> = path.iter().map(String::as_str).collect();
            match path.as_slice() {
                ["rows", k, ..] if !rows_touched.iter().any(|r| r == k) => {
                    rows_touched.push(k.to_string())
                }
                ["costs", k, ..] if !costs_touched.iter().any(|r| r == k) => {
                    costs_touched.push(k.to_string())
                }
                _ => {}
            }
            if matches!(p.action, PatchAction::DeleteMap { .. }) {
                return Err(format!("nothing in a ledger is deleted (`{}`)", path.join("/")));
            }
            match path.as_slice() {
                ["rows", k, ..] if *k != own || !member => {
                    return Err(format!(
                        "a device writes only its own row; {} may not write row {}",
                        hex(&c.author.key[..8]),
                        k.get(..17).unwrap_or(k)
                    ));
                }
                ["rows", _]
                | ["rows", _, "receipts" | "cpu_receipts" | "partners"]
                | ["rows", _, "partners", _]
                | ["rows", _, "partners", _, "signed" | "receipts"] => {
                    if let ["rows", _, "partners", ag] = path.as_slice()
                        && parse_key(ag).is_none()
                    {
                        return Err(format!("partner `{ag}` is not an agreement"));
                    }
                    if !matches!(
                        p.action,
                        PatchAction::PutMap { value: (Value::Object(ObjType::Map), _), .. }
                    ) {
                        return Err(format!("`{}` is a map", path.join("/")));
                    }
                    if before(c, &path)?.is_some() {
                        return Err(format!("`{}` cannot be made again", path.join("/")));
                    }
                    if let ["rows", k] = path.as_slice() {
                        rows_made.push(k.to_string());
                    }
                }
                ["rows", _, "partners", ag, "roster"] => {
                    self.partner_roster(c, &path, ag, &p.action)?
                }
                ["rows", _, "partners", ag, sub @ ("signed" | "receipts"), node] => {
                    let r =
                        partner_receipt(c, &path, ag, *sub == "signed", node, &period, &p.action)?;
                    if *sub == "receipts" {
                        // The signer must be a member of the partner pool: named by the
                        // partner's roster filed beside it (in this change, or before).
                        let at = ["rows", path[1], "partners", ag, "roster"];
                        let written = c.patches.iter().rev().find_map(|q| {
                            let qp = patch_path(q);
                            (qp.len() == at.len()
                                && qp.iter().zip(at).all(|(a, b)| a.as_str() == b))
                            .then_some(&q.action)
                        });
                        let bytes = match written {
                            Some(a) => put_bytes(a),
                            None => {
                                before(c, &at)?.and_then(|(v, _)| v.as_bytes().map(<[u8]>::to_vec))
                            }
                        };
                        let roster = bytes
                            .and_then(|b| kith_federation::Roster::from_bytes(&b).ok())
                            .ok_or("a partner receipt is filed beside the partner's roster")?;
                        if !roster.names(&r.receiver) {
                            return Err(
                                "the partner's roster does not name the receipt's signer".into()
                            );
                        }
                    }
                }
                ["rows", _, "partners", _, key] => {
                    if !PartnerCounts::KEYS.contains(key) {
                        return Err(format!("a partner's counts have no `{key}`"));
                    }
                    grows(c, &path, key, &p.action)?
                }
                ["rows", _, key] => check_counter(c, &path, key, &p.action)?,
                ["rows", _, kind @ ("receipts" | "cpu_receipts"), server] => {
                    let cpu = *kind == "cpu_receipts";
                    let PatchAction::PutMap { value: (v, _), .. } = &p.action else {
                        return Err("a receipt is written whole".into());
                    };
                    let bytes = v.as_scalar().and_then(|s| match s {
                        ScalarValue::Bytes(b) => Some(b.clone()),
                        _ => None,
                    });
                    let r = Receipt::from_bytes(&bytes.ok_or("a receipt is not bytes")?)
                        .map_err(|e| e.to_string())?;
                    if r.receiver != c.author.key || r.pool != *self.pool_id() || r.period != period
                    {
                        return Err(
                            "a receipt must be this member's, for this pool and period".into()
                        );
                    }
                    if hex(&r.server) != *server {
                        return Err("a receipt is filed under another node".into());
                    }
                    if !(if cpu { r.cpu_signature_ok() } else { r.signature_ok() }) {
                        return Err(format!(
                            "the receipt for node {} has a bad signature",
                            &server[..16]
                        ));
                    }
                    if let Some((v, _)) = before(c, &path)? {
                        let prev = v
                            .as_scalar()
                            .and_then(|s| match s {
                                ScalarValue::Bytes(b) => Receipt::from_bytes(b).ok(),
                                _ => None,
                            })
                            .ok_or("the earlier receipt is unreadable")?;
                        if r.bytes < prev.bytes || r.blobs < prev.blobs {
                            return Err("a receipt may only grow".into());
                        }
                    }
                }
                ["sealed", ..] if !admin => return Err("only an admin records a seal".into()),
                ["sealed"] => {
                    if before(c, &path)?.is_some() {
                        return Err("the previous period is sealed once".into());
                    }
                    let PatchAction::PutMap { value: (v, _), .. } = &p.action else {
                        return Err("a seal is written whole".into());
                    };
                    let bytes = v.as_scalar().and_then(|s| match s {
                        ScalarValue::Bytes(b) => Some(b.clone()),
                        _ => None,
                    });
                    let seal = Seal::from_bytes(&bytes.ok_or("a seal is not bytes")?)
                        .map_err(|e| e.to_string())?;
                    let prev =
                        Period::parse(&period).map_err(|e| e.to_string())?.prev().to_string();
                    if seal.pool != *self.pool_id() || seal.period != prev {
                        return Err(format!("the seal must be of this pool's {prev}"));
                    }
                    if seal.by != c.author.key || !seal.signature_ok() {
                        return Err("the seal's signature does not verify".into());
                    }
                }
                ["carried", ..] if !admin => {
                    return Err("only an admin carries balances in".into());
                }
                ["carried"] => return Err("the carried balances are never replaced".into()),
                ["carried", k] => {
                    if parse_key(k).is_none() {
                        return Err(format!("a balance is carried in for a member, not `{k}`"));
                    }
                    if before(c, &path)?.is_some() {
                        return Err("a balance is carried in once".into());
                    }
                    let PatchAction::PutMap { value: (v, _), .. } = &p.action else {
                        return Err("a carried balance is a number".into());
                    };
                    if !matches!(v.as_scalar(), Some(ScalarValue::Int(_))) {
                        return Err("a carried balance is a number".into());
                    }
                }
                ["costs", ..] if !admin => return Err("only an admin enters costs".into()),
                ["costs", _] => {
                    if before(c, &path)?.is_some() {
                        return Err("a cost is entered once".into());
                    }
                }
                ["costs", _, field] => check_cost_field(field, &p.action)?,
                _ => {
                    return Err(format!(
                        "`{}` may not be written after a ledger starts",
                        path.join("/")
                    ));
                }
            }
        }
        // What it wrote must read as the ledger reads it, or the period would stop parsing on
        // every node: each row and cost it touched, as it is after the change.
        // Read in the document itself when nothing concurrent is in it (a read at heads walks
        // the history first), else at the change.
        let at_change = [c.hash];
        let after: &dyn Get = match c.after_if_current() {
            Some(doc) => &DocNow(doc),
            None => &At { doc: c.doc, heads: &at_change },
        };
        // Every value written in a row was typed above, and the row was whole before (each
        // change to it was checked so): with nothing concurrent, only a row the change made is
        // read again (for what it must hold). Concurrent changes are read whole at the change.
        let sequential = c.after_if_current().is_some();
        for k in rows_touched.iter().filter(|k| !sequential || rows_made.contains(k)) {
            row_reads(after, k).map_err(|e| format!("it breaks the ledger: row {k}: {e}"))?;
        }
        for k in &costs_touched {
            cost_reads(after, k).map_err(|e| format!("it breaks the ledger: cost {k}: {e}"))?;
        }
        Ok(())
    }
}

/// A document read as it is now, as a `dyn Get`.
struct DocNow<'a>(&'a kith_crdt::automerge::Automerge);

impl Get for DocNow<'_> {
    fn get_value(&self, obj: &ObjId, key: &str) -> Result<Option<(Value<'_>, ObjId)>, String> {
        self.0.get_value(obj, key)
    }

    fn keys_of(&self, obj: &ObjId) -> Vec<String> {
        self.0.keys_of(obj)
    }

    fn get_all_values(&self, obj: &ObjId, key: &str) -> Result<Vec<(Value<'_>, ObjId)>, String> {
        self.0.get_all_values(obj, key)
    }
}

/// A partner receipt written at `path` (`rows/<row>/partners/<ag>/<signed|receipts>/<node>`):
/// whole, for agreement `ag` and this period, with a signature that verifies, and only
/// growing. One this device `signed` is its member's, signed on this device, and filed under
/// the holder it is for; one the partner signed for this device as its holder names this
/// device as the holder and is filed under the node that signed it. Whether its signer is a
/// member of the partner pool is checked by the holder that files it, against the partner's
/// roster (the rules cannot read it: it is in the partner's document, not this pool's).
fn partner_receipt(
    c: &Check<'_>,
    path: &[&str],
    ag: &str,
    signed: bool,
    node: &str,
    period: &str,
    action: &PatchAction,
) -> Result<Receipt, String> {
    let PatchAction::PutMap { value: (v, _), .. } = action else {
        return Err("a partner receipt is written whole".into());
    };
    let bytes = v.as_scalar().and_then(|s| match s {
        ScalarValue::Bytes(b) => Some(b.clone()),
        _ => None,
    });
    let r = Receipt::from_bytes(&bytes.ok_or("a partner receipt is not bytes")?)
        .map_err(|e| e.to_string())?;
    if hex(&r.pool) != ag || r.period != period {
        return Err("a partner receipt must be for its agreement and this period".into());
    }
    let (filed_under, this_device) = if signed {
        if r.receiver != c.author.key {
            return Err("a partner receipt this device signed must be its member's".into());
        }
        (r.server, r.last)
    } else {
        (r.last, r.server)
    };
    if hex(&filed_under) != node || this_device != c.author.device {
        return Err("a partner receipt is filed under another node".into());
    }
    if !r.partner_signature_ok() {
        return Err(format!("the partner receipt of node {} has a bad signature", &node[..16]));
    }
    if let Some((v, _)) = before(c, path)? {
        let prev = v
            .as_scalar()
            .and_then(|s| match s {
                ScalarValue::Bytes(b) => Receipt::from_bytes(b).ok(),
                _ => None,
            })
            .ok_or("the earlier partner receipt is unreadable")?;
        if r.bytes < prev.bytes || r.blobs < prev.blobs || r.receiver != prev.receiver {
            return Err("a partner receipt may only grow".into());
        }
    }
    Ok(r)
}

/// The bytes a patch puts, if it puts bytes.
fn put_bytes(action: &PatchAction) -> Option<Vec<u8>> {
    match action {
        PatchAction::PutMap { value: (v, _), .. } => v.as_scalar().and_then(|s| match s {
            ScalarValue::Bytes(b) => Some(b.clone()),
            _ => None,
        }),
        _ => None,
    }
}

impl LedgerRules<'_> {
    /// The partner's roster a holder files beside the partner receipts
    /// (`rows/<row>/partners/<ag>/roster`): of agreement `ag` (one of this pool's), of the
    /// other side, signed by that side's signer of the agreement, signed before the change
    /// (it may have run out since: it was in force when the holder took the receipts), and
    /// never replaced by an older one.
    fn partner_roster(
        &self,
        c: &Check<'_>,
        path: &[&str],
        ag: &str,
        action: &PatchAction,
    ) -> Result<(), String> {
        let bytes = put_bytes(action).ok_or("a partner's roster is written whole, as bytes")?;
        let roster = kith_federation::Roster::from_bytes(&bytes).map_err(|e| e.to_string())?;
        let view = self.pool.view();
        let e = parse_key(ag)
            .and_then(|k| view.federation.agreements.get(&k))
            .ok_or("a partner's roster is filed under an agreement of this pool")?;
        if e.agreement.partner_of(self.pool_id()).map(|(p, _)| p) != Some(roster.pool) {
            return Err("the roster filed is not the partner's".into());
        }
        match roster.check(&e.agreement, c.time_ms.max(0) as u64) {
            Ok(()) | Err(kith_federation::FedError::RosterExpired(_)) => {}
            Err(e) => return Err(format!("the partner's roster does not verify: {e}")),
        }
        if let Some(prev) = before(c, path)?
            .and_then(|(v, _)| v.as_bytes().map(<[u8]>::to_vec))
            .and_then(|b| kith_federation::Roster::from_bytes(&b).ok())
            && prev.at_ms > roster.at_ms
        {
            return Err("a partner's roster is replaced only by a newer one".into());
        }
        Ok(())
    }
}

/// The map at `key` of `obj`.
fn map_at(d: &dyn Get, obj: &ObjId, key: &str) -> Result<ObjId, String> {
    match d.get_value(obj, key)? {
        Some((Value::Object(ObjType::Map), id)) => Ok(id),
        Some(_) => Err(format!("`{key}` is not a map")),
        None => Err(format!("`{key}` is missing")),
    }
}

/// Row `k`, read as [`LedgerView::read`] reads it (lookups, no copy).
fn row_reads(d: &dyn Get, k: &str) -> Result<(), String> {
    let rows = map_at(d, &ROOT, "rows")?;
    let r = map_at(d, &rows, k)?;
    for counter in Counter::ALL {
        if let Some((v, _)) = d.get_value(&r, counter.key())? {
            v.as_i64().ok_or(format!("`{}` is not a number", counter.key()))?;
        }
    }
    if d.get_value(&r, "partners")?.is_some() {
        let ps = map_at(d, &r, "partners")?;
        for a in d.keys_of(&ps) {
            parse_key(&a).ok_or(format!("partner `{a}` is not an agreement"))?;
            let m = map_at(d, &ps, &a)?;
            for key in PartnerCounts::KEYS {
                if let Some((v, _)) = d.get_value(&m, key)? {
                    v.as_i64().ok_or(format!("`{key}` is not a number"))?;
                }
            }
            if let Some((v, _)) = d.get_value(&m, "roster")? {
                let b = v.as_bytes().ok_or("a partner's roster is not bytes")?;
                kith_federation::Roster::from_bytes(b).map_err(|e| e.to_string())?;
            }
            for sub in ["signed", "receipts"] {
                if d.get_value(&m, sub)?.is_some() {
                    let rec = map_at(d, &m, sub)?;
                    for s in d.keys_of(&rec) {
                        parse_key(&s).ok_or(format!("partner receipt `{s}` is not a node"))?;
                        if let Some((v, _)) = d.get_value(&rec, &s)? {
                            let b = v.as_bytes().ok_or("a partner receipt is not bytes")?;
                            Receipt::from_bytes(b).map_err(|e| e.to_string())?;
                        }
                    }
                }
            }
        }
    }
    let mut maps = vec![map_at(d, &r, "receipts")?];
    if d.get_value(&r, "cpu_receipts")?.is_some() {
        maps.push(map_at(d, &r, "cpu_receipts")?);
    }
    for rec in maps {
        for s in d.keys_of(&rec) {
            parse_key(&s).ok_or(format!("receipt `{s}` is not a node"))?;
            if let Some((v, _)) = d.get_value(&rec, &s)? {
                let b = v.as_bytes().ok_or("a receipt is not bytes")?;
                Receipt::from_bytes(b).map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(())
}

/// Cost `k`, read as [`LedgerView::read`] reads it.
fn cost_reads(d: &dyn Get, k: &str) -> Result<(), String> {
    let costs = map_at(d, &ROOT, "costs")?;
    let e = map_at(d, &costs, k)?;
    let get = |f: &str| d.get_value(&e, f);
    let by = get("by")?.ok_or("`by` is missing")?.0;
    by.as_bytes().filter(|b| b.len() == 32).ok_or("`by` is not a key")?;
    get("what")?.ok_or("`what` is missing")?.0.as_str().ok_or("`what` is not text")?;
    for f in ["cents", "at"] {
        get(f)?
            .ok_or(format!("`{f}` is missing"))?
            .0
            .as_i64()
            .ok_or(format!("`{f}` is not a number"))?;
    }
    Ok(())
}

/// The value at `path` in `d`, if there is one.
/// The value at `path` in the document at the change's dependencies (a lookup per step, at
/// those heads: no copy of the document).
fn before<'d>(c: &Check<'d>, path: &[&str]) -> Result<Option<(Value<'d>, ObjId)>, String> {
    let mut cur = ROOT;
    for (i, k) in path.iter().enumerate() {
        match c.doc.get_at(&cur, *k, c.deps).map_err(|e| e.to_string())? {
            Some((v, id)) if i + 1 == path.len() => return Ok(Some((v, id))),
            Some((Value::Object(_), id)) => cur = id,
            _ => return Ok(None),
        }
    }
    Ok(None)
}

fn check_counter(
    c: &Check<'_>,
    path: &[&str],
    key: &str,
    action: &PatchAction,
) -> Result<(), String> {
    if !Counter::ALL.iter().any(|k| k.key() == key) {
        return Err(format!("a row has no `{key}`"));
    }
    grows(c, path, key, action)
}

/// Checks that counter `key` at `path` only grows (or starts, when new, at zero or more).
fn grows(c: &Check<'_>, path: &[&str], key: &str, action: &PatchAction) -> Result<(), String> {
    match action {
        PatchAction::Increment { value, .. } if *value > 0 => Ok(()),
        PatchAction::Increment { value, .. } => {
            Err(format!("`{key}` may only grow, not by {value}"))
        }
        // A new row's counters start with their first value.
        PatchAction::PutMap { value: (v, _), .. } => {
            let fresh = before(c, path)?.is_none();
            match v.as_scalar() {
                Some(ScalarValue::Counter(n)) if fresh && i64::from(n) >= 0 => Ok(()),
                _ => Err(format!("`{key}` is a counter that only grows")),
            }
        }
        _ => Err(format!("`{key}` is a counter that only grows")),
    }
}

fn check_cost_field(field: &str, action: &PatchAction) -> Result<(), String> {
    let PatchAction::PutMap { value: (v, _), .. } = action else {
        return Err("a cost is written whole".into());
    };
    let ok = match (field, v.as_scalar()) {
        ("by", Some(ScalarValue::Bytes(b))) => b.len() == 32,
        ("what", Some(ScalarValue::Str(t))) => !t.trim().is_empty() && t.len() <= 200,
        ("cents", Some(ScalarValue::Int(n))) => *n > 0,
        ("at", Some(ScalarValue::Int(_))) => true,
        _ => false,
    };
    if ok { Ok(()) } else { Err(format!("a cost's `{field}` is malformed")) }
}

/// The signer of a ledger's genesis: a key derived from the pool and period, which every node
/// can compute. It proves nothing about who started the ledger (nobody needs to); it makes the
/// genesis, and so the document id, the same everywhere. The rules accept it for the canonical
/// genesis only.
pub fn genesis_signer(pool: &Key, period: Period) -> Signer {
    let secret = blake3::derive_key(
        "kith ledger genesis v1",
        &[&pool[..], period.to_string().as_bytes()].concat(),
    );
    Signer::new(&secret, [0; 32])
}
