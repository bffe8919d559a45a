//! The usage ledger of one pool for one period (a calendar month, UTC): the pure core.
//!
//! ```text
//! v: 1, kind: "kith-ledger", pool: <pool id>, period: "2026-11"
//! carried: { <member hex>: credit balance in milli-units, from the previous period's seal }
//! rows:    { "<member hex>:<device hex>": {
//!              storage_provided, storage_used      byte-hours   (counters)
//!              egress_served, egress_received      bytes        (counters)
//!              requests_served, audits_passed, audits_failed    (counters)
//!              receipts: { <server node hex>: <signed receipt> } } }
//! costs:   { <id>: { by, what, cents, at } }
//! sealed:  <the previous period's seal, recorded by an admin>
//! ```
//!
//! Each device of a member writes its own row (so two devices never create the same map at
//! once, which automerge would resolve by dropping one); a member's figures are the sum over its
//! devices. Counters are automerge counters: concurrent increments from partitioned devices add
//! up. The rules allow a counter only to grow, a receipt only to grow, costs only from admins.
//!
//! Evidence: a receipt is signed by the member that *received* bytes from a server node; it is
//! cumulative for the period (bytes, blobs, the last hash, when), and lives in the receiver's
//! own row. A member's `egress_served` must be covered by receipts other members signed for its
//! nodes; its `storage_provided` must be backed by passed audits in the pool document. `verify`
//! recomputes both and flags what does not match.
//!
//! Who may write is judged against the pool *as it was when the change was made*, never as it
//! is now: every change (but the genesis) carries a note naming the pool document's heads it
//! was written at (`kith-pool-at:<hash>,...`), covered by its hash and signature, and the rules
//! read the author's standing at those heads. So a member who has since left or been removed
//! keeps the rows it wrote while it was in the pool, and a node that joins later judges them as
//! the nodes that saw them first did. Changes from before notes existed (no note) are judged by
//! the member's entry as it is now: active or departed by its own choice.

use std::collections::BTreeMap;

use kith_crdt::automerge::PatchAction;
use kith_crdt::automerge::transaction::Transactable;
use kith_crdt::automerge::{
    AutoCommit, ChangeHash, ObjId, ObjType, ROOT, ReadDoc, ScalarValue, Value,
};
use kith_crdt::{Authorizer, Check, DocError, Key, SignedDoc, Signer, hex, patch_path, verify};

use crate::pool::PoolSnapshot;
use crate::view::{PoolView, Role, State, obj, parse_key, text};

/// The `kind` of ledger documents and their files.
pub const LEDGER_KIND: &str = "kith-ledger";
/// Version of the ledger schema.
pub const LEDGER_SCHEMA_VERSION: u64 = 1;
/// Domain separation of receipts.
const RECEIPT_CONTEXT: &[u8] = b"kith-receipt-v1";
/// Hours in the month a storage unit is priced over (365.25 * 24 / 12).
const HOURS_PER_MONTH: f64 = 730.5;
const GIB: f64 = (1u64 << 30) as f64;

/// What a row counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Counter {
    /// Byte-hours this member's nodes held for others.
    StorageProvided,
    /// Byte-hours of this member's data held by others.
    StorageUsed,
    /// Bytes this member's nodes sent to others.
    EgressServed,
    /// Bytes this member's nodes received from others.
    EgressReceived,
    /// Site requests served.
    RequestsServed,
    /// Audits this member's nodes passed.
    AuditsPassed,
    /// Audits this member's nodes failed.
    AuditsFailed,
}

impl Counter {
    /// Every counter.
    pub const ALL: [Counter; 7] = [
        Counter::StorageProvided,
        Counter::StorageUsed,
        Counter::EgressServed,
        Counter::EgressReceived,
        Counter::RequestsServed,
        Counter::AuditsPassed,
        Counter::AuditsFailed,
    ];

    /// Its key in the document.
    pub fn key(self) -> &'static str {
        match self {
            Counter::StorageProvided => "storage_provided",
            Counter::StorageUsed => "storage_used",
            Counter::EgressServed => "egress_served",
            Counter::EgressReceived => "egress_received",
            Counter::RequestsServed => "requests_served",
            Counter::AuditsPassed => "audits_passed",
            Counter::AuditsFailed => "audits_failed",
        }
    }
}

/// A calendar month in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    /// Year.
    pub year: i32,
    /// Month, 1 to 12.
    pub month: u32,
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i32, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y } as i64;
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl Period {
    /// Parses `YYYY-MM`.
    pub fn parse(s: &str) -> Result<Period, String> {
        let bad = || format!("`{s}` is not a period (YYYY-MM, such as 2026-11)");
        let (y, m) = s.trim().split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 {
            return Err(bad());
        }
        let year: i32 = y.parse().map_err(|_| bad())?;
        let month: u32 = m.parse().map_err(|_| bad())?;
        if !(1..=12).contains(&month) || year < 2000 {
            return Err(bad());
        }
        Ok(Period { year, month })
    }

    /// The period holding `ms` (ms since the epoch).
    pub fn of(ms: i64) -> Period {
        let days = ms.div_euclid(86_400_000);
        // Civil from days (Hinnant).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = (yoe + era * 400 + if month <= 2 { 1 } else { 0 }) as i32;
        Period { year, month }
    }

    /// The next month.
    pub fn next(self) -> Period {
        if self.month == 12 {
            Period { year: self.year + 1, month: 1 }
        } else {
            Period { year: self.year, month: self.month + 1 }
        }
    }

    /// The month before.
    pub fn prev(self) -> Period {
        if self.month == 1 {
            Period { year: self.year - 1, month: 12 }
        } else {
            Period { year: self.year, month: self.month - 1 }
        }
    }

    /// Its first millisecond.
    pub fn start_ms(self) -> i64 {
        days_from_civil(self.year, self.month, 1) * 86_400_000
    }

    /// The first millisecond after it.
    pub fn end_ms(self) -> i64 {
        self.next().start_ms()
    }

    /// Refuses a period that has not begun at `now_ms`.
    pub fn not_future(self, now_ms: i64) -> Result<Period, String> {
        if self.start_ms() > now_ms {
            return Err(format!("period {self} has not begun"));
        }
        Ok(self)
    }
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// A receiver's signed, cumulative acknowledgement of what one server node sent it in a period.
#[derive(Debug, Clone, PartialEq, Eq, minicbor::Encode, minicbor::Decode)]
#[cbor(array)]
pub struct Receipt {
    /// The pool.
    #[cbor(n(0), with = "minicbor::bytes")]
    pub pool: Key,
    /// The period (`YYYY-MM`).
    #[n(1)]
    pub period: String,
    /// The node that sent.
    #[cbor(n(2), with = "minicbor::bytes")]
    pub server: Key,
    /// The member that received (and signs).
    #[cbor(n(3), with = "minicbor::bytes")]
    pub receiver: Key,
    /// Bytes received from it in the period so far.
    #[n(4)]
    pub bytes: u64,
    /// Blobs received so far.
    #[n(5)]
    pub blobs: u64,
    /// The hash of the last blob received.
    #[cbor(n(6), with = "minicbor::bytes")]
    pub last: Key,
    /// When (ms since the epoch).
    #[n(7)]
    pub at_ms: i64,
    /// The receiver's signature over all of the above.
    #[cbor(n(8), with = "minicbor::bytes")]
    pub sig: [u8; 64],
}

/// A record's bytes (CBOR).
fn encode<T: minicbor::Encode<()>>(t: &T) -> Vec<u8> {
    minicbor::to_vec(t).expect("encoding to a Vec cannot fail")
}

/// Parses a record, naming `what` it should have been.
fn decode<'b, T: minicbor::Decode<'b, ()>>(b: &'b [u8], what: &str) -> Result<T, String> {
    minicbor::decode(b).map_err(|e| format!("bad {what}: {e}"))
}

/// What a signed record's signature covers: `context` and the record's bytes with its
/// signature zeroed (`unsigned`).
fn signed_message<T: minicbor::Encode<()>>(context: &[u8], unsigned: &T) -> Vec<u8> {
    [context, &encode(unsigned)[..]].concat()
}

impl Receipt {
    fn message(&self) -> Vec<u8> {
        signed_message(RECEIPT_CONTEXT, &Receipt { sig: [0; 64], ..self.clone() })
    }

    /// A receipt signed by `signer` (the receiver).
    #[allow(clippy::too_many_arguments)]
    pub fn sign(
        signer: &Signer,
        pool: Key,
        period: Period,
        server: Key,
        bytes: u64,
        blobs: u64,
        last: Key,
        at_ms: i64,
    ) -> Receipt {
        let mut r = Receipt {
            pool,
            period: period.to_string(),
            server,
            receiver: signer.author().key,
            bytes,
            blobs,
            last,
            at_ms,
            sig: [0; 64],
        };
        r.sig = signer.sign(&r.message());
        r
    }

    /// Whether the receiver's signature verifies.
    pub fn signature_ok(&self) -> bool {
        verify(&self.receiver, &self.message(), &self.sig)
    }

    /// Its bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    /// Parses a receipt.
    pub fn from_bytes(b: &[u8]) -> Result<Receipt, String> {
        decode(b, "receipt")
    }
}

/// One device's row.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Row {
    /// Counters by kind.
    pub counters: BTreeMap<Counter, i64>,
    /// Receipts this member signed, by server node.
    pub receipts: BTreeMap<Key, Receipt>,
}

/// A shared cost an admin entered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cost {
    /// Who entered it.
    pub by: Key,
    /// What it paid for.
    pub what: String,
    /// Amount in cents of the pool's currency.
    pub cents: i64,
    /// When it was entered.
    pub at_ms: i64,
}

/// A ledger document, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerView {
    /// The pool.
    pub pool: Key,
    /// The period.
    pub period: Period,
    /// Credit balances carried in (milli-units), by member.
    pub carried: BTreeMap<Key, i64>,
    /// Rows by (member, device).
    pub rows: BTreeMap<(Key, Key), Row>,
    /// Costs by id.
    pub costs: BTreeMap<String, Cost>,
    /// The previous period's seal, once an admin recorded it here.
    pub sealed: Option<Seal>,
}

fn num(d: &AutoCommit, at: &ObjId, key: &str) -> Result<i64, String> {
    match d.get(at, key).map_err(|e| e.to_string())? {
        Some((v, _)) => v.as_i64().ok_or(format!("`{key}` is not a number")),
        None => Err(format!("`{key}` is missing")),
    }
}

fn row_key(member: &Key, device: &Key) -> String {
    format!("{}:{}", hex(member), hex(device))
}

fn parse_row_key(k: &str) -> Option<(Key, Key)> {
    let (m, d) = k.split_once(':')?;
    Some((parse_key(m)?, parse_key(d)?))
}

impl LedgerView {
    /// Reads and checks the schema.
    pub fn read(d: &AutoCommit) -> Result<LedgerView, String> {
        let v = num(d, &ROOT, "v")?;
        if v as u64 > LEDGER_SCHEMA_VERSION {
            return Err(format!("ledger schema {v} is newer than this kith understands"));
        }
        let pool = match d.get(ROOT, "pool").map_err(|e| e.to_string())? {
            Some((v, _)) => {
                v.as_bytes().and_then(|b| <Key>::try_from(b).ok()).ok_or("`pool` is not an id")?
            }
            None => return Err("`pool` is missing".into()),
        };
        let period = Period::parse(&text(d, &ROOT, "period")?)?;
        let mut carried = BTreeMap::new();
        let cs = obj(d, &ROOT, "carried")?;
        for k in d.keys(&cs) {
            carried.insert(
                parse_key(&k).ok_or("a carried balance is not keyed by a member")?,
                num(d, &cs, &k)?,
            );
        }
        let mut rows = BTreeMap::new();
        let rs = obj(d, &ROOT, "rows")?;
        for k in d.keys(&rs) {
            let key = parse_row_key(&k).ok_or(format!("row `{k}` is not member:device"))?;
            let r = obj(d, &rs, &k)?;
            let mut row = Row::default();
            for c in Counter::ALL {
                if let Some((v, _)) = d.get(&r, c.key()).map_err(|e| e.to_string())? {
                    row.counters.insert(
                        c,
                        v.as_i64().ok_or(format!("row {k}: `{}` is not a number", c.key()))?,
                    );
                }
            }
            let rec = obj(d, &r, "receipts")?;
            for s in d.keys(&rec) {
                let server =
                    parse_key(&s).ok_or(format!("row {k}: receipt `{s}` is not a node"))?;
                let bytes = match d.get(&rec, &s).map_err(|e| e.to_string())? {
                    Some((v, _)) => {
                        v.as_bytes().map(<[u8]>::to_vec).ok_or("a receipt is not bytes")?
                    }
                    None => continue,
                };
                row.receipts.insert(server, Receipt::from_bytes(&bytes)?);
            }
            rows.insert(key, row);
        }
        let mut costs = BTreeMap::new();
        let cs = obj(d, &ROOT, "costs")?;
        for k in d.keys(&cs) {
            let c = obj(d, &cs, &k)?;
            let by = match d.get(&c, "by").map_err(|e| e.to_string())? {
                Some((v, _)) => {
                    v.as_bytes().and_then(|b| <Key>::try_from(b).ok()).ok_or("`by` is not a key")?
                }
                None => return Err(format!("cost {k}: `by` is missing")),
            };
            let cost = Cost {
                by,
                what: text(d, &c, "what")?,
                cents: num(d, &c, "cents")?,
                at_ms: num(d, &c, "at")?,
            };
            costs.insert(k, cost);
        }
        let sealed = match d.get(ROOT, "sealed").map_err(|e| e.to_string())? {
            Some((v, _)) => Some(Seal::from_bytes(v.as_bytes().ok_or("`sealed` is not bytes")?)?),
            None => None,
        };
        Ok(LedgerView { pool, period, carried, rows, costs, sealed })
    }

    /// A member's figure: the sum over its devices' rows.
    pub fn total(&self, member: &Key, c: Counter) -> i64 {
        self.rows
            .iter()
            .filter(|((m, _), _)| m == member)
            .map(|(_, r)| r.counters.get(&c).copied().unwrap_or(0))
            .sum()
    }

    /// Members with a row, and members carried in.
    pub fn members(&self) -> Vec<Key> {
        let mut v: Vec<Key> =
            self.rows.keys().map(|(m, _)| *m).chain(self.carried.keys().copied()).collect();
        v.sort();
        v.dedup();
        v
    }
}

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
pub fn parse_pool_note(note: &str) -> Result<Vec<ChangeHash>, String> {
    let bad = || "a ledger change's note must name the pool heads it was written at".to_string();
    let list = note.strip_prefix(POOL_NOTE).ok_or_else(bad)?;
    let heads: Vec<ChangeHash> = list
        .split(',')
        .map(|h| parse_key(h).map(ChangeHash).ok_or_else(bad))
        .collect::<Result<_, _>>()?;
    if heads.len() > MAX_NOTE_HEADS {
        return Err(format!("a ledger change names at most {MAX_NOTE_HEADS} pool heads"));
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
    fn note(&self) -> Option<String> {
        Some(pool_note(&self.pool.heads()))
    }

    /// Whether the author of `c` was an active member, and an admin, when it made `c`.
    fn standing(&self, c: &Check<'_>) -> Result<(bool, bool), String> {
        let Some(note) = c.note else {
            // Written before notes existed: the member's entry as it is now.
            let m = self.pool.view().members.get(&c.author.key);
            let member = m.is_some_and(|m| matches!(m.state, State::Active | State::Left));
            return Ok((member, member && m.is_some_and(|m| m.role == Role::Admin)));
        };
        let heads = parse_pool_note(note)?;
        if !self.pool.knows(&heads) {
            return Err(format!(
                "it was written at a state of the pool this node has not received yet; it is \
                 accepted once the pool document has synced ({})",
                note.get(POOL_NOTE.len()..POOL_NOTE.len() + 16).unwrap_or(note)
            ));
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
                LedgerView::read(c.after).map_err(|e| format!("it breaks the ledger: {e}"))?;
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
        let period = text(c.before, &ROOT, "period")?;
        for p in c.patches {
            let path = patch_path(p);
            let path: Vec<&str> = path.iter().map(String::as_str).collect();
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
                ["rows", _] | ["rows", _, "receipts"] => {
                    if at(c.before, &path)?.is_some() {
                        return Err(format!("`{}` cannot be made again", path.join("/")));
                    }
                }
                ["rows", _, key] => check_counter(c, &path, key, &p.action)?,
                ["rows", _, "receipts", server] => {
                    let PatchAction::PutMap { value: (v, _), .. } = &p.action else {
                        return Err("a receipt is written whole".into());
                    };
                    let bytes = v.as_scalar().and_then(|s| match s {
                        ScalarValue::Bytes(b) => Some(b.clone()),
                        _ => None,
                    });
                    let r = Receipt::from_bytes(&bytes.ok_or("a receipt is not bytes")?)?;
                    if r.receiver != c.author.key || r.pool != *self.pool_id() || r.period != period
                    {
                        return Err(
                            "a receipt must be this member's, for this pool and period".into()
                        );
                    }
                    if hex(&r.server) != *server {
                        return Err("a receipt is filed under another node".into());
                    }
                    if !r.signature_ok() {
                        return Err(format!(
                            "the receipt for node {} has a bad signature",
                            &server[..16]
                        ));
                    }
                    if let Some((v, _)) = at(c.before, &path)? {
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
                    if at(c.before, &path)?.is_some() {
                        return Err("the previous period is sealed once".into());
                    }
                    let PatchAction::PutMap { value: (v, _), .. } = &p.action else {
                        return Err("a seal is written whole".into());
                    };
                    let bytes = v.as_scalar().and_then(|s| match s {
                        ScalarValue::Bytes(b) => Some(b.clone()),
                        _ => None,
                    });
                    let seal = Seal::from_bytes(&bytes.ok_or("a seal is not bytes")?)?;
                    let prev = Period::parse(&period)?.prev().to_string();
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
                    if at(c.before, &path)?.is_some() {
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
                    if at(c.before, &path)?.is_some() {
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
        Ok(())
    }
}

/// The value at `path` in `d`, if there is one.
fn at<'d>(d: &'d AutoCommit, path: &[&str]) -> Result<Option<(Value<'d>, ObjId)>, String> {
    let mut cur = ROOT;
    for (i, k) in path.iter().enumerate() {
        match d.get(&cur, *k).map_err(|e| e.to_string())? {
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
    match action {
        PatchAction::Increment { value, .. } if *value > 0 => Ok(()),
        PatchAction::Increment { value, .. } => {
            Err(format!("`{key}` may only grow, not by {value}"))
        }
        // A new row's counters start with their first value.
        PatchAction::PutMap { value: (v, _), .. } => {
            let fresh = at(c.before, path)?.is_none();
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

/// A ledger: one pool, one period.
#[derive(Debug)]
pub struct Ledger {
    doc: SignedDoc,
}

impl Ledger {
    /// The ledger of `period`, as it starts: the same document on every node (its genesis is
    /// canonical and signed with a key anyone can derive, see [`genesis_signer`]).
    pub fn start(rules: &LedgerRules<'_>, period: Period) -> Result<Ledger, DocError> {
        let pool = *rules.pool_id();
        let signer = genesis_signer(&pool, period);
        let doc = SignedDoc::create(&signer, period.start_ms(), rules, |d| {
            d.put(ROOT, "v", LEDGER_SCHEMA_VERSION)?;
            d.put(ROOT, "kind", LEDGER_KIND)?;
            d.put(ROOT, "pool", ScalarValue::Bytes(pool.to_vec()))?;
            d.put(ROOT, "period", period.to_string())?;
            d.put_object(ROOT, "carried", ObjType::Map)?;
            d.put_object(ROOT, "rows", ObjType::Map)?;
            d.put_object(ROOT, "costs", ObjType::Map)?;
            Ok(())
        })?;
        Ok(Ledger { doc })
    }

    /// Carries credit balances in from the previous period's seal (an admin, once per member).
    pub fn carry(
        &mut self,
        signer: &Signer,
        rules: &LedgerRules<'_>,
        carried: &BTreeMap<Key, i64>,
        now_ms: i64,
    ) -> Result<(), DocError> {
        if carried.is_empty() {
            return Ok(());
        }
        self.doc.change_noted(signer, now_ms, rules.note(), rules, |d| {
            let cs = crate::edit::map_or_new(d, &ROOT, "carried")?;
            for (m, b) in carried {
                d.put(&cs, hex(m), *b)?;
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Wraps a document (after load or sync).
    pub fn from_doc(doc: SignedDoc) -> Result<Ledger, DocError> {
        LedgerView::read(doc.doc()).map_err(DocError::Format)?;
        Ok(Ledger { doc })
    }

    /// Reads a saved ledger.
    pub fn load(bytes: &[u8]) -> Result<Ledger, DocError> {
        Ledger::from_doc(SignedDoc::load(bytes, LEDGER_KIND)?)
    }

    /// The ledger as bytes.
    pub fn save(&mut self) -> Vec<u8> {
        self.doc.save(LEDGER_KIND)
    }

    /// Records the previous period's seal and carries its credit balances in (an admin, once).
    pub fn record_seal(
        &mut self,
        signer: &Signer,
        rules: &LedgerRules<'_>,
        seal: &Seal,
        now_ms: i64,
    ) -> Result<(), DocError> {
        if self.view().sealed.is_some() {
            return Err(DocError::Format("the previous period is sealed once".into()));
        }
        let carried = seal.carried();
        self.doc.change_noted(signer, now_ms, rules.note(), rules, |d| {
            d.put(ROOT, "sealed", ScalarValue::Bytes(seal.to_bytes()))?;
            let cs = crate::edit::map_or_new(d, &ROOT, "carried")?;
            for (m, b) in &carried {
                if d.get(&cs, hex(m))?.is_none() {
                    d.put(&cs, hex(m), *b)?;
                }
            }
            Ok(())
        })?;
        Ok(())
    }

    /// How many changes it holds (1: only the genesis).
    pub fn len(&self) -> usize {
        self.doc.len()
    }

    /// Whether it holds no changes (never true: it has its genesis).
    pub fn is_empty(&self) -> bool {
        self.doc.is_empty()
    }

    /// The document.
    pub fn doc_mut(&mut self) -> &mut SignedDoc {
        &mut self.doc
    }

    /// The typed view.
    pub fn view(&self) -> LedgerView {
        LedgerView::read(self.doc.doc()).expect("checked on every change")
    }

    fn own_row(
        d: &mut AutoCommit,
        signer: &Signer,
    ) -> Result<ObjId, kith_crdt::automerge::AutomergeError> {
        let a = signer.author();
        let rs = crate::edit::map_or_new(d, &ROOT, "rows")?;
        let key = row_key(&a.key, &a.device);
        match d.get(&rs, &key)? {
            Some((Value::Object(ObjType::Map), id)) => Ok(id),
            _ => {
                let r = d.put_object(&rs, &key, ObjType::Map)?;
                for c in Counter::ALL {
                    d.put(&r, c.key(), ScalarValue::counter(0))?;
                }
                d.put_object(&r, "receipts", ObjType::Map)?;
                Ok(r)
            }
        }
    }

    /// Adds `by` to this device's counter `c`.
    pub fn add(
        &mut self,
        signer: &Signer,
        rules: &LedgerRules<'_>,
        c: Counter,
        by: i64,
        now_ms: i64,
    ) -> Result<(), DocError> {
        if by <= 0 {
            return Err(DocError::Format(format!("`{}` may only grow", c.key())));
        }
        self.doc.change_noted(signer, now_ms, rules.note(), rules, |d| {
            let r = Self::own_row(d, signer)?;
            d.increment(&r, c.key(), by)
        })?;
        Ok(())
    }

    /// Adds to several counters and files several receipts in one change (what a node records
    /// once a day).
    pub fn record(
        &mut self,
        signer: &Signer,
        rules: &LedgerRules<'_>,
        adds: &[(Counter, i64)],
        receipts: &[Receipt],
        now_ms: i64,
    ) -> Result<(), DocError> {
        if let Some((c, by)) = adds.iter().find(|(_, by)| *by <= 0) {
            return Err(DocError::Format(format!("`{}` may only grow, not by {by}", c.key())));
        }
        self.doc.change_noted(signer, now_ms, rules.note(), rules, |d| {
            let row = Self::own_row(d, signer)?;
            for (c, by) in adds {
                d.increment(&row, c.key(), *by)?;
            }
            let rec = crate::edit::map_or_new(d, &row, "receipts")?;
            for r in receipts {
                d.put(&rec, hex(&r.server), ScalarValue::Bytes(r.to_bytes()))?;
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Files (or grows) a receipt this member signed.
    pub fn file_receipt(
        &mut self,
        signer: &Signer,
        rules: &LedgerRules<'_>,
        r: &Receipt,
        now_ms: i64,
    ) -> Result<(), DocError> {
        self.doc.change_noted(signer, now_ms, rules.note(), rules, |d| {
            let row = Self::own_row(d, signer)?;
            let rec = crate::edit::map_or_new(d, &row, "receipts")?;
            d.put(&rec, hex(&r.server), ScalarValue::Bytes(r.to_bytes()))
        })?;
        Ok(())
    }

    /// Enters a shared cost (admins).
    pub fn add_cost(
        &mut self,
        signer: &Signer,
        rules: &LedgerRules<'_>,
        id: &str,
        what: &str,
        cents: i64,
        now_ms: i64,
    ) -> Result<(), DocError> {
        if cents <= 0 {
            return Err(DocError::Format(format!("a cost must be positive, not {cents} cents")));
        }
        if what.trim().is_empty() || what.len() > 200 {
            return Err(DocError::Format(
                "say what the cost paid for, in at most 200 characters".into(),
            ));
        }
        let by = signer.author().key;
        self.doc.change_noted(signer, now_ms, rules.note(), rules, |d| {
            let cs = crate::edit::map_or_new(d, &ROOT, "costs")?;
            let c = d.put_object(&cs, id, ObjType::Map)?;
            d.put(&c, "by", ScalarValue::Bytes(by.to_vec()))?;
            d.put(&c, "what", what)?;
            d.put(&c, "cents", cents)?;
            d.put(&c, "at", now_ms)
        })?;
        Ok(())
    }
}

/// Something `verify` found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    /// The member.
    pub member: Key,
    /// What does not match.
    pub what: String,
}

/// Recomputes what evidence supports and flags rows that claim more (or, for what a member
/// received, less) than it.
///
/// A storage claim with no passed audit is not flagged while no audit could have run yet: for
/// two audit intervals after the member joined, the period began and the pool's first object
/// was stored (`now_ms` is the time of the check).
pub fn check_evidence(l: &LedgerView, pool: &PoolView, now_ms: i64) -> Vec<Flag> {
    let mut flags = Vec::new();
    let receipts: Vec<&Receipt> = l.rows.values().flat_map(|r| r.receipts.values()).collect();
    for m in l.members() {
        let nodes: Vec<Key> =
            pool.members.get(&m).map(|x| x.nodes.keys().copied().collect()).unwrap_or_default();
        let served = l.total(&m, Counter::EgressServed);
        let evidence: i64 = receipts
            .iter()
            .filter(|r| r.receiver != m && nodes.contains(&r.server) && r.signature_ok())
            .map(|r| r.bytes as i64)
            .sum();
        if served > evidence {
            flags.push(Flag {
                member: m,
                what: format!(
                    "claims {served} bytes served; receipts from others cover {evidence}"
                ),
            });
        } else if evidence > served {
            // Receipts for bytes its nodes never sent (or have not recorded yet).
            flags.push(Flag {
                member: m,
                what: format!(
                    "others signed receipts for {evidence} bytes from its nodes; it reports serving {served}"
                ),
            });
        }
        let received = l.total(&m, Counter::EgressReceived);
        let signed: i64 = receipts.iter().filter(|r| r.receiver == m).map(|r| r.bytes as i64).sum();
        if received < signed {
            flags.push(Flag {
                member: m,
                what: format!("reports {received} bytes received but signed receipts for {signed}"),
            });
        }
        let provided = l.total(&m, Counter::StorageProvided);
        let audited = pool
            .members
            .iter()
            .filter(|(k, _)| **k != m)
            .flat_map(|(_, x)| x.audits.iter())
            .any(|(n, a)| nodes.contains(n) && a.passed > 0);
        if provided > 0 && !audited && !awaiting_first_audit(l, pool, &m, now_ms) {
            flags.push(Flag {
                member: m,
                what: format!(
                    "claims {provided} byte-hours of storage provided with no passed audit"
                ),
            });
        }
    }
    flags
}

/// Whether `member`'s storage could not have been audited yet (see [`check_evidence`]).
pub fn awaiting_first_audit(l: &LedgerView, pool: &PoolView, member: &Key, now_ms: i64) -> bool {
    let joined = pool.members.get(member).map_or(0, |m| m.joined_ms);
    // With nothing stored in the pool, there is nothing to audit and nothing to provide.
    let Some(first_object) = pool.objects().map(|(_, _, o)| o.at_ms).min() else { return false };
    let since = l.period.start_ms().max(joined).max(first_object);
    now_ms - since < 2 * pool.charter.audit_every_ms as i64
}

/// How shared costs split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CostRule {
    /// In proportion to each member's usage net of its contribution in the period.
    Proportional,
    /// Contribution earns credits that usage spends, carried across periods; costs fall on the
    /// members in deficit, in proportion to it.
    Credits,
}

impl CostRule {
    /// Parses a charter's `cost_rule`.
    pub fn parse(s: &str) -> Result<CostRule, String> {
        match s {
            "proportional" => Ok(CostRule::Proportional),
            "credits" => Ok(CostRule::Credits),
            _ => Err(format!("unknown cost rule `{s}`")),
        }
    }
}

/// One member's statement for a period.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    /// The member.
    pub member: Key,
    /// Usage in units (GiB-months stored by others + GiB received).
    pub usage: f64,
    /// Contribution in units (GiB-months held for others + GiB served).
    pub contribution: f64,
    /// Credit balance after the period, in milli-units (credits rule; 0 otherwise).
    pub balance_milli: i64,
    /// Share of the period's costs, in cents.
    pub owes_cents: i64,
}

fn units(storage_byte_hours: i64, bytes: i64) -> f64 {
    storage_byte_hours as f64 / GIB / HOURS_PER_MONTH + bytes as f64 / GIB
}

/// Splits `total` cents in proportion to `weights` (all equal if every weight is zero), so the
/// parts add up to `total` exactly (largest remainder).
pub fn split_cents(total: i64, weights: &[f64]) -> Vec<i64> {
    if weights.is_empty() {
        return Vec::new();
    }
    let sum: f64 = weights.iter().map(|w| w.max(0.0)).sum();
    let w: Vec<f64> = if sum > 0.0 {
        weights.iter().map(|w| w.max(0.0) / sum).collect()
    } else {
        vec![1.0 / weights.len() as f64; weights.len()]
    };
    let exact: Vec<f64> = w.iter().map(|x| x * total as f64).collect();
    let mut parts: Vec<i64> = exact.iter().map(|x| x.floor() as i64).collect();
    let mut left = total - parts.iter().sum::<i64>();
    let mut order: Vec<usize> = (0..parts.len()).collect();
    order.sort_by(|a, b| {
        (exact[*b] - parts[*b] as f64).total_cmp(&(exact[*a] - parts[*a] as f64)).then(a.cmp(b))
    });
    for i in order.iter().cycle() {
        if left <= 0 {
            break;
        }
        parts[*i] += 1;
        left -= 1;
    }
    parts
}

/// The statements of a period under `rule`.
pub fn settle(l: &LedgerView, rule: CostRule, members: &[Key]) -> Vec<Statement> {
    let total: i64 = l.costs.values().map(|c| c.cents).sum();
    let mut st: Vec<Statement> = members
        .iter()
        .map(|m| {
            let usage =
                units(l.total(m, Counter::StorageUsed), l.total(m, Counter::EgressReceived));
            let contribution =
                units(l.total(m, Counter::StorageProvided), l.total(m, Counter::EgressServed));
            let carried = l.carried.get(m).copied().unwrap_or(0);
            let balance_milli = match rule {
                CostRule::Credits => carried + ((contribution - usage) * 1000.0).round() as i64,
                CostRule::Proportional => 0,
            };
            Statement { member: *m, usage, contribution, balance_milli, owes_cents: 0 }
        })
        .collect();
    let weights: Vec<f64> = st
        .iter()
        .map(|s| match rule {
            CostRule::Proportional => (s.usage - s.contribution).max(0.0),
            CostRule::Credits => (-s.balance_milli).max(0) as f64,
        })
        .collect();
    for (s, c) in st.iter_mut().zip(split_cents(total, &weights)) {
        s.owes_cents = c;
    }
    st
}

/// A closed period, sealed: every member's totals, the costs and the statements, signed by an
/// admin. It replaces the period's document for the record; the next period starts a new
/// document that carries the credit balances.
#[derive(Debug, Clone, PartialEq, Eq, minicbor::Encode, minicbor::Decode)]
#[cbor(array)]
pub struct Seal {
    /// The pool.
    #[cbor(n(0), with = "minicbor::bytes")]
    pub pool: Key,
    /// The period.
    #[n(1)]
    pub period: String,
    /// Per member: its id and its seven totals, in [`Counter::ALL`] order.
    #[n(2)]
    pub totals: Vec<(minicbor::bytes::ByteArray<32>, Vec<i64>)>,
    /// Shared costs of the period, in cents.
    #[n(3)]
    pub costs_cents: i64,
    /// Per member: what it owes (cents) and its credit balance (milli-units).
    #[n(4)]
    pub owes: Vec<(minicbor::bytes::ByteArray<32>, i64, i64)>,
    /// The admin who sealed it.
    #[cbor(n(5), with = "minicbor::bytes")]
    pub by: Key,
    /// The admin's signature over all of the above.
    #[cbor(n(6), with = "minicbor::bytes")]
    pub sig: [u8; 64],
}

const SEAL_CONTEXT: &[u8] = b"kith-seal-v1";

impl Seal {
    fn message(&self) -> Vec<u8> {
        signed_message(SEAL_CONTEXT, &Seal { sig: [0; 64], ..self.clone() })
    }

    /// Seals `l` under `rule` for `members`, signed by `admin`.
    pub fn make(l: &LedgerView, rule: CostRule, members: &[Key], admin: &Signer) -> Seal {
        let st = settle(l, rule, members);
        let mut seal = Seal {
            pool: l.pool,
            period: l.period.to_string(),
            totals: members
                .iter()
                .map(|m| ((*m).into(), Counter::ALL.iter().map(|c| l.total(m, *c)).collect()))
                .collect(),
            costs_cents: l.costs.values().map(|c| c.cents).sum(),
            owes: st.iter().map(|s| (s.member.into(), s.owes_cents, s.balance_milli)).collect(),
            by: admin.author().key,
            sig: [0; 64],
        };
        seal.sig = admin.sign(&seal.message());
        seal
    }

    /// Whether the admin's signature verifies.
    pub fn signature_ok(&self) -> bool {
        verify(&self.by, &self.message(), &self.sig)
    }

    /// Its bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    /// Parses a seal.
    pub fn from_bytes(b: &[u8]) -> Result<Seal, String> {
        decode(b, "seal")
    }

    /// The balances to carry into the next period.
    pub fn carried(&self) -> BTreeMap<Key, i64> {
        self.owes.iter().map(|(m, _, b)| (**m, *b)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Pool;
    use proptest::prelude::*;

    fn signer(n: u8, dev: u8) -> Signer {
        Signer::new(&[n; 32], [dev; 32])
    }

    /// A pool with an admin (1) and a member (2).
    fn pool() -> (Pool, Signer, Signer) {
        let (a, m) = (signer(1, 101), signer(2, 102));
        let mut p = Pool::create(&a, "ada", Pool::charter("street"), 1).unwrap();
        let inv = p.invite(&a, [1; 16], u64::MAX / 2, 1).unwrap();
        p.join(&m, "bob", &inv, 2).unwrap();
        (p, a, m)
    }

    #[test]
    fn periods_parse_and_bound_months() {
        let p = Period::parse("2026-11").unwrap();
        assert_eq!(p.to_string(), "2026-11");
        assert_eq!(Period::of(p.start_ms()), p);
        assert_eq!(Period::of(p.end_ms() - 1), p);
        assert_eq!(Period::of(p.end_ms()), Period::parse("2026-12").unwrap());
        assert_eq!(Period::parse("2026-12").unwrap().next().to_string(), "2027-01");
        // 2026-11-01T00:00:00Z
        assert_eq!(p.start_ms(), 1_793_491_200_000);
        for bad in ["2026-13", "2026-1", "26-11", "2026/11", "x"] {
            assert!(Period::parse(bad).is_err(), "{bad}");
        }
        let e = Period::parse("2099-01").unwrap().not_future(p.start_ms()).unwrap_err();
        assert!(e.contains("has not begun"), "{e}");
    }

    #[test]
    fn members_write_only_their_own_rows_and_only_upwards() {
        let (mut p, a, m) = pool();
        let id = p.id();
        let snap = p.snapshot();
        let rules = LedgerRules { pool: &snap };
        let period = Period::parse("2026-11").unwrap();
        let mut l = Ledger::start(&rules, period).unwrap();
        // Every node starts the same document.
        assert_eq!(Ledger::start(&rules, period).unwrap().doc_mut().id(), l.doc_mut().id());
        l.add(&m, &rules, Counter::EgressReceived, 500, 11).unwrap();
        assert_eq!(l.view().total(&m.author().key, Counter::EgressReceived), 500);
        // A member cannot start a ledger of its own, carry balances, enter costs, or shrink a
        // counter.
        let own = SignedDoc::create(&m, period.start_ms(), &rules, |d| {
            d.put(ROOT, "v", 1)?;
            d.put(ROOT, "kind", LEDGER_KIND)?;
            d.put(ROOT, "pool", ScalarValue::Bytes(id.to_vec()))?;
            d.put(ROOT, "period", period.to_string())?;
            for k in ["carried", "rows", "costs"] {
                d.put_object(ROOT, k, ObjType::Map)?;
            }
            Ok(())
        });
        assert!(own.unwrap_err().to_string().contains("canonical genesis"));
        let e = l.carry(&m, &rules, &BTreeMap::from([(m.author().key, 5)]), 12).unwrap_err();
        assert!(e.to_string().contains("only an admin"), "{e}");
        l.carry(&a, &rules, &BTreeMap::from([(m.author().key, 5)]), 12).unwrap();
        let e = l.carry(&a, &rules, &BTreeMap::from([(m.author().key, 9)]), 12).unwrap_err();
        assert!(e.to_string().contains("carried in once"), "{e}");
        assert_eq!(l.view().carried[&m.author().key], 5);
        let e = l.add_cost(&m, &rules, "c1", "uplink", 1000, 13).unwrap_err();
        assert!(e.to_string().contains("only an admin"), "{e}");
        assert!(l.add(&m, &rules, Counter::EgressReceived, -5, 14).is_err());
        // A forged receipt (signed by someone else) is refused.
        let forged = Receipt::sign(&a, id, period, [9; 32], 10, 1, [0; 32], 15);
        let e = l.file_receipt(&m, &rules, &forged, 15).unwrap_err();
        assert!(e.to_string().contains("must be this member's"), "{e}");
        let mut broken = Receipt::sign(&m, id, period, [9; 32], 10, 1, [0; 32], 15);
        broken.bytes = 10_000;
        let e = l.file_receipt(&m, &rules, &broken, 16).unwrap_err();
        assert!(e.to_string().contains("bad signature"), "{e}");
        let later = Receipt::sign(&m, id, period.next(), [9; 32], 10, 1, [0; 32], 15);
        assert!(l.file_receipt(&m, &rules, &later, 17).is_err());
    }

    #[test]
    fn nobody_can_raise_another_members_row() {
        let (mut p, a, m) = pool();
        let snap = p.snapshot();
        let rules = LedgerRules { pool: &snap };
        let period = Period::parse("2026-11").unwrap();
        let mut l = Ledger::start(&rules, period).unwrap();
        l.add(&a, &rules, Counter::StorageUsed, 1, 11).unwrap();
        // Bob writes straight into Ada's row and signs the change properly.
        let mut raw = l.doc_mut().doc().clone().with_actor(m.author().actor());
        let rows = raw.get(ROOT, "rows").unwrap().unwrap().1;
        let ada = raw.get(&rows, row_key(&a.author().key, &a.author().device)).unwrap().unwrap().1;
        raw.increment(&ada, "storage_used", 1_000_000).unwrap();
        let h = raw.commit().unwrap();
        let change = raw.get_change_by_hash(&h).unwrap();
        let msg = [kith_crdt::SIGNING_CONTEXT, &id_of(&mut l)[..], &h.0[..]].concat();
        let sigs = BTreeMap::from([(h, m.sign(&msg))]);
        let e = l.doc_mut().ingest(vec![change], &sigs, &rules).unwrap_err();
        assert!(e.to_string().contains("writes only its own row"), "{e}");
        assert_eq!(l.view().total(&a.author().key, Counter::StorageUsed), 1);
    }

    /// Every change of `from` (but the genesis), with signatures, for a fresh copy to ingest.
    fn history(
        from: &mut Ledger,
    ) -> (Vec<kith_crdt::automerge::Change>, BTreeMap<ChangeHash, [u8; 64]>) {
        from.doc_mut().changes_since(&[])
    }

    #[test]
    fn regression_rows_and_costs_of_departed_members_sync_to_newcomers() {
        // Ada (admin) enters a cost, both record usage; Ada hands over to Bob and leaves; Carol
        // joins after that. Carol's node must accept the month's ledger as every node that saw
        // it first did (issue 14: it refused Ada's rows and cost on every sync).
        let (mut p, a, m) = pool();
        let period = Period::parse("2026-11").unwrap();
        let snap = p.snapshot();
        let rules = LedgerRules { pool: &snap };
        let mut l = Ledger::start(&rules, period).unwrap();
        l.add_cost(&a, &rules, "c1", "power", 4_250, 10).unwrap();
        l.add(&a, &rules, Counter::StorageProvided, 7, 11).unwrap();
        l.add(&m, &rules, Counter::StorageUsed, 9, 12).unwrap();
        // Ada makes Bob admin and leaves.
        p.set(&a, "role:bob", "admin", 20).unwrap();
        p.leave(&a, 21).unwrap();
        let c = signer(3, 103);
        let inv = p.invite(&m, [3; 16], u64::MAX / 2, 1).unwrap();
        p.join(&c, "carol", &inv, 22).unwrap();
        // Carol's node: a fresh ledger, the pool as it is now.
        let now = p.snapshot();
        let later = LedgerRules { pool: &now };
        let mut fresh = Ledger::start(&later, period).unwrap();
        let (changes, sigs) = history(&mut l);
        fresh.doc_mut().ingest(changes, &sigs, &later).unwrap();
        let v = fresh.view();
        assert_eq!(v.costs.values().map(|c| c.cents).sum::<i64>(), 4_250);
        assert_eq!(v.total(&a.author().key, Counter::StorageProvided), 7);
        assert_eq!(v.total(&m.author().key, Counter::StorageUsed), 9);
        // Having left, Ada can no longer write: neither her row nor a cost.
        let e = fresh.add(&a, &later, Counter::StorageProvided, 1, 30).unwrap_err();
        assert!(e.to_string().contains("own row"), "{e}");
        let e = fresh.add_cost(&a, &later, "c2", "more power", 100, 31).unwrap_err();
        assert!(e.to_string().contains("only an admin"), "{e}");
        // Bob, admin now, can; Carol writes her own row.
        fresh.add_cost(&m, &later, "c3", "uplink", 1_000, 32).unwrap();
        fresh.add(&c, &later, Counter::StorageUsed, 3, 33).unwrap();
    }

    #[test]
    fn a_change_naming_pool_heads_this_node_lacks_waits_for_the_pool() {
        let (mut p, a, m) = pool();
        let period = Period::parse("2026-11").unwrap();
        let old = p.snapshot();
        let c = signer(3, 103);
        let inv = p.invite(&a, [3; 16], u64::MAX / 2, 1).unwrap();
        p.join(&c, "carol", &inv, 22).unwrap();
        let new = p.snapshot();
        let mut l = Ledger::start(&LedgerRules { pool: &new }, period).unwrap();
        l.add(&c, &LedgerRules { pool: &new }, Counter::StorageUsed, 3, 33).unwrap();
        l.add(&m, &LedgerRules { pool: &new }, Counter::StorageUsed, 4, 34).unwrap();
        // A node that has not seen Carol's join yet refuses the batch, saying why; once its
        // pool document has synced, it accepts the same batch.
        let behind = LedgerRules { pool: &old };
        let mut copy = Ledger::start(&behind, period).unwrap();
        let (changes, sigs) = history(&mut l);
        let e = copy.doc_mut().ingest(changes.clone(), &sigs, &behind).unwrap_err();
        assert!(e.to_string().contains("has not received yet"), "{e}");
        assert_eq!(copy.len(), 1, "nothing of a refused batch is applied");
        copy.doc_mut().ingest(changes, &sigs, &LedgerRules { pool: &new }).unwrap();
        assert_eq!(copy.view().total(&c.author().key, Counter::StorageUsed), 3);
    }

    #[test]
    fn changes_without_a_pool_note_are_judged_by_the_entry_as_it_is() {
        // Ledgers written before notes existed: rows of active and departed members stand,
        // rows of removed members do not.
        let (mut p, a, m) = pool();
        let period = Period::parse("2026-11").unwrap();
        let snap = p.snapshot();
        let rules = LedgerRules { pool: &snap };
        let mut l = Ledger::start(&rules, period).unwrap();
        let row = |l: &mut Ledger, s: &Signer| {
            let mut raw = l.doc_mut().doc().clone().with_actor(s.author().actor());
            let rows = raw.get(ROOT, "rows").unwrap().unwrap().1;
            let r = raw
                .put_object(&rows, row_key(&s.author().key, &s.author().device), ObjType::Map)
                .unwrap();
            raw.put(&r, "storage_used", ScalarValue::counter(5)).unwrap();
            let h = raw.commit().unwrap();
            let change = raw.get_change_by_hash(&h).unwrap();
            let msg = [kith_crdt::SIGNING_CONTEXT, &id_of(l)[..], &h.0[..]].concat();
            (change, BTreeMap::from([(h, s.sign(&msg))]))
        };
        let (bob_row, bob_sig) = row(&mut l, &m);
        p.leave(&m, 5).unwrap();
        let left = p.snapshot();
        let mut copy = Ledger::start(&LedgerRules { pool: &left }, period).unwrap();
        copy.doc_mut()
            .ingest(vec![bob_row.clone()], &bob_sig, &LedgerRules { pool: &left })
            .unwrap();
        // Had Bob been removed instead, the same legacy row is refused.
        let (mut q, a2, _) = pool();
        assert_eq!(a2.author(), a.author());
        q.remove(&a2, "bob", 5).unwrap();
        let removed = q.snapshot();
        let mut copy = Ledger::start(&LedgerRules { pool: &removed }, period).unwrap();
        let e = copy
            .doc_mut()
            .ingest(vec![bob_row], &bob_sig, &LedgerRules { pool: &removed })
            .unwrap_err();
        assert!(e.to_string().contains("own row"), "{e}");
    }

    fn id_of(l: &mut Ledger) -> Key {
        *l.doc_mut().id()
    }

    #[test]
    fn evidence_flags_claims_without_receipts_or_audits() {
        let (mut p, a, m) = pool();
        let id = p.id();
        let (an, mn) = (a.author().device, m.author().device);
        p.offer(&a, &an, &crate::Offer { storage: 1 << 30, ..Default::default() }, 3).unwrap();
        p.offer(&m, &mn, &crate::Offer { storage: 1 << 30, ..Default::default() }, 4).unwrap();
        let v = p.view();
        let snap = p.snapshot();
        let rules = LedgerRules { pool: &snap };
        let period = Period::parse("2026-11").unwrap();
        let mut l = Ledger::start(&rules, period).unwrap();
        // Bob received 300 bytes from Ada's node and signs for them; Ada claims 1000 served.
        let r = Receipt::sign(&m, id, period, an, 300, 2, [7; 32], 20);
        l.file_receipt(&m, &rules, &r, 20).unwrap();
        l.add(&m, &rules, Counter::EgressReceived, 300, 21).unwrap();
        l.add(&a, &rules, Counter::EgressServed, 1000, 22).unwrap();
        l.add(&a, &rules, Counter::StorageProvided, 5000, 23).unwrap();
        let flags = check_evidence(&l.view(), &v, i64::MAX / 4);
        assert_eq!(flags.len(), 2, "{flags:?}");
        assert!(flags.iter().all(|f| f.member == a.author().key));
        assert!(flags[0].what.contains("receipts from others cover 300"), "{flags:?}");
        assert!(flags[1].what.contains("no passed audit"), "{flags:?}");
        // Receipts for bytes Ada's node never sent (Bob signs for 5000 more) are flagged too.
        let more = Receipt::sign(&m, id, period, an, 6_300, 3, [8; 32], 24);
        l.file_receipt(&m, &rules, &more, 24).unwrap();
        l.add(&m, &rules, Counter::EgressReceived, 6_000, 25).unwrap();
        let flags = check_evidence(&l.view(), &v, i64::MAX / 4);
        assert!(flags[0].what.contains("reports serving 1000"), "{flags:?}");
        // A receipt may only grow.
        let less = Receipt::sign(&m, id, period, an, 10, 3, [8; 32], 26);
        let e = l.file_receipt(&m, &rules, &less, 26).unwrap_err();
        assert!(e.to_string().contains("only grow"), "{e}");
    }

    #[test]
    fn a_seal_is_an_admins_once_for_the_month_before() {
        let (mut p, a, m) = pool();
        let snap = p.snapshot();
        let rules = LedgerRules { pool: &snap };
        let oct = Period::parse("2026-10").unwrap();
        let mut old = Ledger::start(&rules, oct).unwrap();
        old.add(&m, &rules, Counter::StorageProvided, 730 << 30, 11).unwrap();
        let members = [a.author().key, m.author().key];
        let seal = Seal::make(&old.view(), CostRule::Credits, &members, &a);
        assert!(seal.signature_ok());
        assert!(seal.carried()[&m.author().key] > 0, "{seal:?}");
        let mut nov = Ledger::start(&rules, oct.next()).unwrap();
        let e = nov.record_seal(
            &m,
            &rules,
            &Seal::make(&old.view(), CostRule::Credits, &members, &m),
            20,
        );
        assert!(e.unwrap_err().to_string().contains("only an admin"));
        // A seal of another month, or one whose bytes were altered, is refused.
        let mut dec = Ledger::start(&rules, oct.next().next()).unwrap();
        let e = dec.record_seal(&a, &rules, &seal, 21).unwrap_err();
        assert!(e.to_string().contains("2026-11"), "{e}");
        let mut forged = seal.clone();
        forged.owes[0].2 += 1_000_000;
        let e = nov.record_seal(&a, &rules, &forged, 22).unwrap_err();
        assert!(e.to_string().contains("does not verify"), "{e}");
        nov.record_seal(&a, &rules, &seal, 23).unwrap();
        assert_eq!(nov.view().sealed.as_ref(), Some(&seal));
        assert_eq!(nov.view().carried, seal.carried());
        let e = nov.record_seal(&a, &rules, &seal, 24).unwrap_err();
        assert!(e.to_string().contains("sealed once"), "{e}");
        // What a node saved reads back the same.
        let back = Ledger::load(&nov.save()).unwrap();
        assert_eq!(back.view(), nov.view());
    }

    #[test]
    fn settlement_splits_costs_exactly() {
        assert_eq!(split_cents(100, &[1.0, 1.0, 1.0]), vec![34, 33, 33]);
        assert_eq!(split_cents(100, &[0.0, 0.0]), vec![50, 50]);
        assert_eq!(split_cents(1000, &[3.0, 1.0, 0.0]), vec![750, 250, 0]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Increments from two devices of one member and from another member, made apart and
        /// merged in any order, add up to the sum of all of them.
        #[test]
        fn partitioned_increments_merge_to_the_sum(
            xs in proptest::collection::vec(1i64..1_000_000, 1..12),
            ys in proptest::collection::vec(1i64..1_000_000, 1..12),
            zs in proptest::collection::vec(1i64..1_000_000, 1..12),
            flip in any::<bool>(),
        ) {
            let (mut p, a, m) = pool();
            let m2 = signer(2, 103); // Bob's second device
            let snap = p.snapshot();
        let rules = LedgerRules { pool: &snap };
            let period = Period::parse("2026-11").unwrap();
            let mut base = Ledger::start(&rules, period).unwrap();
            let bytes = base.doc_mut().save("t");
            let copy = |b: &[u8]| Ledger::from_doc(SignedDoc::load(b, "t").unwrap()).unwrap();
            let (mut l1, mut l2, mut l3) = (copy(&bytes), copy(&bytes), copy(&bytes));
            for x in &xs { l1.add(&m, &rules, Counter::StorageUsed, *x, 11).unwrap(); }
            for y in &ys { l2.add(&m2, &rules, Counter::StorageUsed, *y, 12).unwrap(); }
            for z in &zs { l3.add(&a, &rules, Counter::StorageProvided, *z, 13).unwrap(); }
            let mut parts = vec![l1, l2, l3];
            if flip { parts.reverse(); }
            let mut merged = copy(&bytes);
            for part in &mut parts {
                let (changes, sigs) = part.doc_mut().changes_since(&[]);
                merged.doc_mut().ingest(changes, &sigs, &rules).unwrap();
            }
            let view = merged.view();
            let bob = m.author().key;
            prop_assert_eq!(view.total(&bob, Counter::StorageUsed), xs.iter().sum::<i64>() + ys.iter().sum::<i64>());
            prop_assert_eq!(view.total(&a.author().key, Counter::StorageProvided), zs.iter().sum::<i64>());
            // Costs always split exactly.
            let st = settle(&view, CostRule::Proportional, &[a.author().key, bob]);
            prop_assert_eq!(st.iter().map(|s| s.owes_cents).sum::<i64>(), 0);
        }
    }
}
