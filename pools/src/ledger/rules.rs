//! Who may write what in a ledger: each change judged against the pool as it was when the
//! change was made, named by the pool heads in the change's note.

use kith_crdt::automerge::PatchAction;
use kith_crdt::automerge::{ChangeHash, ObjId, ROOT, ReadDoc, ScalarValue, Value};
use kith_crdt::{Authorizer, Check, Key, Signer, hex, patch_path};

use super::evidence::Receipt;
use super::seal::Seal;
use super::{Counter, LedgerView, PartnerCounts, Period, row_key};
use crate::error::ParseError;
use crate::pool::PoolSnapshot;
use crate::view::{Role, State, parse_key};

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
        let period = match before(c, &["period"])? {
            Some((v, _)) => v.as_str().map(str::to_string).ok_or("`period` is not text")?,
            None => return Err("`period` is missing".into()),
        };
        // Rows and costs the change wrote, checked whole once it is applied (below).
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
                | ["rows", _, "partners", _] => {
                    if let ["rows", _, "partners", ag] = path.as_slice()
                        && parse_key(ag).is_none()
                    {
                        return Err(format!("partner `{ag}` is not an agreement"));
                    }
                    if before(c, &path)?.is_some() {
                        return Err(format!("`{}` cannot be made again", path.join("/")));
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
                ["carried", _] => {
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
        let after = [c.hash];
        for k in &rows_touched {
            row_reads(c, &after, k).map_err(|e| format!("it breaks the ledger: row {k}: {e}"))?;
        }
        for k in &costs_touched {
            cost_reads(c, &after, k).map_err(|e| format!("it breaks the ledger: cost {k}: {e}"))?;
        }
        Ok(())
    }
}

/// The map at `key` of `obj`, at `heads`.
fn map_at(c: &Check<'_>, obj: &ObjId, key: &str, heads: &[ChangeHash]) -> Result<ObjId, String> {
    match c.doc.get_at(obj, key, heads).map_err(|e| e.to_string())? {
        Some((Value::Object(kith_crdt::automerge::ObjType::Map), id)) => Ok(id),
        Some(_) => Err(format!("`{key}` is not a map")),
        None => Err(format!("`{key}` is missing")),
    }
}

/// Row `k` at `heads`, read as [`LedgerView::read`] reads it (lookups, no copy).
fn row_reads(c: &Check<'_>, heads: &[ChangeHash], k: &str) -> Result<(), String> {
    let rows = map_at(c, &ROOT, "rows", heads)?;
    let r = map_at(c, &rows, k, heads)?;
    for counter in Counter::ALL {
        if let Some((v, _)) = c.doc.get_at(&r, counter.key(), heads).map_err(|e| e.to_string())? {
            v.as_i64().ok_or(format!("`{}` is not a number", counter.key()))?;
        }
    }
    if c.doc.get_at(&r, "partners", heads).map_err(|e| e.to_string())?.is_some() {
        let ps = map_at(c, &r, "partners", heads)?;
        for a in c.doc.keys_at(&ps, heads) {
            parse_key(&a).ok_or(format!("partner `{a}` is not an agreement"))?;
            let m = map_at(c, &ps, &a, heads)?;
            for key in PartnerCounts::KEYS {
                if let Some((v, _)) = c.doc.get_at(&m, key, heads).map_err(|e| e.to_string())? {
                    v.as_i64().ok_or(format!("`{key}` is not a number"))?;
                }
            }
        }
    }
    let mut maps = vec![map_at(c, &r, "receipts", heads)?];
    if c.doc.get_at(&r, "cpu_receipts", heads).map_err(|e| e.to_string())?.is_some() {
        maps.push(map_at(c, &r, "cpu_receipts", heads)?);
    }
    for rec in maps {
        for s in c.doc.keys_at(&rec, heads) {
            parse_key(&s).ok_or(format!("receipt `{s}` is not a node"))?;
            if let Some((v, _)) = c.doc.get_at(&rec, &s, heads).map_err(|e| e.to_string())? {
                let b = v.as_bytes().ok_or("a receipt is not bytes")?;
                Receipt::from_bytes(b).map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(())
}

/// Cost `k` at `heads`, read as [`LedgerView::read`] reads it.
fn cost_reads(c: &Check<'_>, heads: &[ChangeHash], k: &str) -> Result<(), String> {
    let costs = map_at(c, &ROOT, "costs", heads)?;
    let e = map_at(c, &costs, k, heads)?;
    let get = |f: &str| c.doc.get_at(&e, f, heads).map_err(|e| e.to_string());
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
