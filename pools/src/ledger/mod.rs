//! The usage ledger of one pool for one period (a calendar month, UTC): the pure core.
//!
//! ```text
//! v: 1, kind: "kith-ledger", pool: <pool id>, period: "2026-11"
//! carried: { <member hex>: credit balance in milli-units, from the previous period's seal }
//! rows:    { "<member hex>:<device hex>": {
//!              storage_provided, storage_used      byte-hours   (counters)
//!              egress_served, egress_received      bytes        (counters)
//!              requests_served, audits_passed, audits_failed    (counters)
//!              cpu_given, cpu_taken         fuel units   (counters; may be absent)
//!              receipts: { <server node hex>: <signed receipt> }
//!              cpu_receipts?: { <runner node hex>: <signed CPU receipt> },
//!              partners?: { <agreement hex>: { held_for, held_by      byte-hours
//!                                              served_to, received_from,
//!                                              relayed_for, relayed_by    bytes } } } }
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
//! own row. A member is credited for serving by the receipts other members signed for its
//! nodes (its own `egress_served` count is shown beside them: a transfer cut between the
//! server's write and the receiver's check is counted by one side only); its
//! `storage_provided` must be backed by passed audits in the pool document. `verify` flags a
//! member that signed for more than it reports receiving, and storage without audits.
//!
//! Who may write is judged against the pool *as it was when the change was made*, never as it
//! is now: every change (but the genesis) carries a note naming the pool document's heads it
//! was written at (`kith-pool-at:<hash>,...`), covered by its hash and signature, and the rules
//! read the author's standing at those heads. So a member who has since left or been removed
//! keeps the rows it wrote while it was in the pool, and a node that joins later judges them as
//! the nodes that saw them first did. Changes from before notes existed (no note) are judged by
//! the member's entry as it is now: active or departed by its own choice.
//!
//! This node's ledger documents are kept on disk, and synced, by [`Ledgers`].

mod document;
mod evidence;
mod rules;
mod seal;
mod settle;
mod store;

pub use document::Ledger;
pub use evidence::{
    Flag, Receipt, awaiting_first_audit, check_evidence, receipted_cpu, receipted_served,
};
pub use rules::{LedgerRules, POOL_NOTE, genesis_signer, parse_pool_note, pool_note};
pub use seal::Seal;
pub use settle::{CostRule, FUEL_PER_CPU_SECOND, Statement, cpu_hours, settle, split_cents};
pub use settle::{PartnerLine, partner_lines};
pub use store::{Ledgers, SYNC_MONTHS_BACK, live_periods, syncable};

use std::collections::BTreeMap;

use kith_crdt::automerge::{ObjId, ROOT, ReadDoc};
use kith_crdt::{Key, hex};

use crate::error::{ParseError, ShapeError};
use crate::view::{obj, parse_key, text};

/// The `kind` of ledger documents and their files.
pub const LEDGER_KIND: &str = "kith-ledger";
/// Version of the ledger schema.
pub const LEDGER_SCHEMA_VERSION: u64 = 1;

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
    /// Fuel this member's nodes burnt running other members' jobs.
    CpuGiven,
    /// Fuel other members' nodes burnt running this member's jobs (the answers it accepted).
    CpuTaken,
}

impl Counter {
    /// Every counter.
    pub const ALL: [Counter; 9] = [
        Counter::StorageProvided,
        Counter::StorageUsed,
        Counter::EgressServed,
        Counter::EgressReceived,
        Counter::RequestsServed,
        Counter::AuditsPassed,
        Counter::AuditsFailed,
        Counter::CpuGiven,
        Counter::CpuTaken,
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
            Counter::CpuGiven => "cpu_given",
            Counter::CpuTaken => "cpu_taken",
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
    pub fn parse(s: &str) -> Result<Period, ParseError> {
        let bad = || {
            ParseError::new(
                "period",
                s,
                format!("`{s}` is not a period (YYYY-MM, such as 2026-11)"),
            )
        };
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
    pub fn not_future(self, now_ms: i64) -> Result<Period, ParseError> {
        if self.start_ms() > now_ms {
            let period = self.to_string();
            return Err(ParseError::new("period", &period, format!("period {self} has not begun")));
        }
        Ok(self)
    }
}

impl std::fmt::Display for Period {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// A record's bytes (CBOR).
fn encode<T: minicbor::Encode<()>>(t: &T) -> Vec<u8> {
    minicbor::to_vec(t).expect("encoding to a Vec cannot fail")
}

/// What a signed record's signature covers: `context` and the record's bytes with its
/// signature zeroed (`unsigned`).
fn signed_message<T: minicbor::Encode<()>>(context: &[u8], unsigned: &T) -> Vec<u8> {
    [context, &encode(unsigned)[..]].concat()
}

/// One device's row.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Row {
    /// Counters by kind.
    pub counters: BTreeMap<Counter, i64>,
    /// Receipts this member signed, by server node.
    pub receipts: BTreeMap<Key, Receipt>,
    /// CPU receipts this member signed, by runner node ([`Receipt::sign_cpu`]).
    pub cpu_receipts: BTreeMap<Key, Receipt>,
    /// What this device did for and with federated partners, by agreement.
    pub partners: BTreeMap<Key, PartnerCounts>,
    /// Partner receipts this device signed for the partner's holders (what they held of what
    /// it placed there and sent it back; [`Receipt::sign_partner`]), by (agreement, holder
    /// node): `partners/<agreement>/signed/<holder>`.
    pub partner_signed: BTreeMap<(Key, Key), Receipt>,
    /// Partner receipts the partner's nodes signed for this device as their holder, by
    /// (agreement, signing node): `partners/<agreement>/receipts/<node>`. The evidence behind
    /// `held_for` and the copies in `served_to`.
    pub partner_receipts: BTreeMap<(Key, Key), Receipt>,
    /// The partner's roster filed beside those receipts, by agreement
    /// (`partners/<agreement>/roster`): it names every signer of them.
    pub partner_rosters: BTreeMap<Key, kith_federation::Roster>,
}

impl Row {
    /// The partner receipts of this row under `agreement` whose signatures verify (the rules
    /// checked each as it came in; checked again where they are counted, as receipts within a
    /// pool are), summed: (byte-hours held, bytes sent back, how many). `signed`: those this
    /// device signed the partner's holders; else those the partner's nodes signed it.
    pub fn partner_receipted(&self, agreement: &Key, signed: bool) -> (u64, u64, u64) {
        let map = if signed { &self.partner_signed } else { &self.partner_receipts };
        map.range((*agreement, [0; 32])..=(*agreement, [0xff; 32]))
            .filter(|(_, r)| r.partner_signature_ok())
            .fold((0, 0, 0), |(h, b, n), (_, r)| {
                (h.saturating_add(r.blobs), b.saturating_add(r.bytes), n + 1)
            })
    }
}

/// What one device did for and with a federated partner pool (by agreement) in a period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PartnerCounts {
    /// Byte-hours this device held for the partner (its off-site copies).
    pub held_for: i64,
    /// Byte-hours the partner's nodes held for this pool, as this device's placement confirmed
    /// them.
    pub held_by: i64,
    /// Bytes this device sent the partner's nodes, and served as the partner's CDN edge.
    pub served_to: i64,
    /// Bytes this device received from the partner's nodes (copies it holds for them, its
    /// edge's copy of their sites).
    pub received_from: i64,
    /// Audits this device ran on the partner's holders of the copies it placed there that
    /// passed: the evidence behind `held_by`.
    pub audits_passed: i64,
    /// Such audits failed: a partner's holder that could not prove a blob it confirmed.
    pub audits_failed: i64,
    /// Audits the partner's nodes ran on this device that it answered with a proof: the
    /// evidence behind `held_for` (a holder knows its own verdict, as within a pool).
    pub proofs_given: i64,
    /// Such audits it could not answer (a blob it holds for the partner lost or damaged).
    pub proofs_failed: i64,
    /// Bytes this device's relay (`kith up --serve-relay`) carried from the partner's nodes,
    /// under an agreement where this pool lends relay.
    pub relayed_for: i64,
    /// Bytes this device sent and received through the partner's relay (one the agreement
    /// names, where the partner lends relay).
    pub relayed_by: i64,
}

impl PartnerCounts {
    /// Their keys in a row's `partners/<agreement>` map.
    pub const KEYS: [&'static str; 10] = [
        "held_for",
        "held_by",
        "served_to",
        "received_from",
        "audits_passed",
        "audits_failed",
        "proofs_given",
        "proofs_failed",
        "relayed_for",
        "relayed_by",
    ];

    /// Each counter with its key.
    pub fn fields(&self) -> [(&'static str, i64); 10] {
        [
            ("held_for", self.held_for),
            ("held_by", self.held_by),
            ("served_to", self.served_to),
            ("received_from", self.received_from),
            ("audits_passed", self.audits_passed),
            ("audits_failed", self.audits_failed),
            ("proofs_given", self.proofs_given),
            ("proofs_failed", self.proofs_failed),
            ("relayed_for", self.relayed_for),
            ("relayed_by", self.relayed_by),
        ]
    }

    fn set(&mut self, key: &str, n: i64) {
        match key {
            "held_for" => self.held_for = n,
            "held_by" => self.held_by = n,
            "served_to" => self.served_to = n,
            "audits_passed" => self.audits_passed = n,
            "audits_failed" => self.audits_failed = n,
            "proofs_given" => self.proofs_given = n,
            "proofs_failed" => self.proofs_failed = n,
            "relayed_for" => self.relayed_for = n,
            "relayed_by" => self.relayed_by = n,
            _ => self.received_from = n,
        }
    }

    /// The sum of two devices' (or two periods') counts.
    pub fn add(&mut self, o: &PartnerCounts) {
        self.held_for += o.held_for;
        self.held_by += o.held_by;
        self.served_to += o.served_to;
        self.received_from += o.received_from;
        self.audits_passed += o.audits_passed;
        self.audits_failed += o.audits_failed;
        self.proofs_given += o.proofs_given;
        self.proofs_failed += o.proofs_failed;
        self.relayed_for += o.relayed_for;
        self.relayed_by += o.relayed_by;
    }
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

fn num(d: &impl ReadDoc, at: &ObjId, key: &str) -> Result<i64, String> {
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

/// The receipts of map `rec` in row `k`, by node.
fn read_receipts(
    d: &impl ReadDoc,
    rec: &ObjId,
    k: &str,
) -> Result<BTreeMap<Key, Receipt>, ShapeError> {
    let mut out = BTreeMap::new();
    for s in d.keys(rec) {
        let server = parse_key(&s).ok_or(format!("row {k}: receipt `{s}` is not a node"))?;
        let bytes = match d.get(rec, &s).map_err(|e| e.to_string())? {
            Some((v, _)) => v.as_bytes().map(<[u8]>::to_vec).ok_or("a receipt is not bytes")?,
            None => continue,
        };
        out.insert(server, Receipt::from_bytes(&bytes)?);
    }
    Ok(out)
}

impl LedgerView {
    /// The egress this pool's devices gave the partner of `agreement` in the period, which its
    /// `--lend-egress` bounds: bytes served (its edges' responses, copies sent back) and bytes
    /// its relays carried, but for the relayed bytes of device `relay` (a relay that counts
    /// its own as they pass, the ledger's figure of them being older).
    pub fn egress_to(&self, agreement: &Key, relay: Option<&(Key, Key)>) -> u64 {
        let by_device = self.rows.iter().filter_map(|(k, r)| Some((k, r.partners.get(agreement)?)));
        by_device
            .map(|(k, c)| {
                let relayed = if relay == Some(k) { 0 } else { c.relayed_for.max(0) as u64 };
                (c.served_to.max(0) as u64).saturating_add(relayed)
            })
            .fold(0, u64::saturating_add)
    }

    /// Reads and checks the schema.
    pub fn read(d: &impl ReadDoc) -> Result<LedgerView, ShapeError> {
        let v = num(d, &ROOT, "v")?;
        if v as u64 > LEDGER_SCHEMA_VERSION {
            return Err(format!("ledger schema {v} is newer than this kith understands").into());
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
            row.receipts = read_receipts(d, &rec, &k)?;
            if d.get(&r, "cpu_receipts").map_err(|e| e.to_string())?.is_some() {
                let rec = obj(d, &r, "cpu_receipts")?;
                row.cpu_receipts = read_receipts(d, &rec, &k)?;
            }
            if d.get(&r, "partners").map_err(|e| e.to_string())?.is_some() {
                let ps = obj(d, &r, "partners")?;
                for a in d.keys(&ps) {
                    let ag = parse_key(&a)
                        .ok_or(format!("row {k}: partner `{a}` is not an agreement"))?;
                    let m = obj(d, &ps, &a)?;
                    let mut pc = PartnerCounts::default();
                    for key in PartnerCounts::KEYS {
                        if let Some((v, _)) = d.get(&m, key).map_err(|e| e.to_string())? {
                            let n =
                                v.as_i64().ok_or(format!("row {k}: `{key}` is not a number"))?;
                            pc.set(key, n);
                        }
                    }
                    row.partners.insert(ag, pc);
                    if let Some((v, _)) = d.get(&m, "roster").map_err(|e| e.to_string())? {
                        let b = v
                            .as_bytes()
                            .ok_or(format!("row {k}: a partner's roster is not bytes"))?;
                        let r = kith_federation::Roster::from_bytes(b)
                            .map_err(|e| format!("row {k}: a partner's roster: {e}"))?;
                        row.partner_rosters.insert(ag, r);
                    }
                    for (sub, into) in [
                        ("signed", &mut row.partner_signed),
                        ("receipts", &mut row.partner_receipts),
                    ] {
                        if d.get(&m, sub).map_err(|e| e.to_string())?.is_some() {
                            let rec = obj(d, &m, sub)?;
                            for (node, r) in read_receipts(d, &rec, &k)? {
                                into.insert((ag, node), r);
                            }
                        }
                    }
                }
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
                None => return Err(format!("cost {k}: `by` is missing").into()),
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

#[cfg(test)]
mod tests;
