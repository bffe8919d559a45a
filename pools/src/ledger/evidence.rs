//! Evidence of usage: the receipts a receiver signs for what a server node sent it, and the
//! check of a ledger's rows against the receipts and the pool's audits.

use std::collections::{BTreeMap, HashMap};

use kith_crdt::{Key, Signer, verify};

use super::{Counter, LedgerView, Period, encode, signed_message};
use crate::error::{DecodeError, decode};
use crate::view::PoolView;

/// Domain separation of receipts.
const RECEIPT_CONTEXT: &[u8] = b"kith-receipt-v1";
/// Domain separation of CPU receipts: the same fields, read as (runner node, taker, fuel,
/// jobs, last job id), so one can never pass for the other.
const CPU_RECEIPT_CONTEXT: &[u8] = b"kith-cpu-receipt-v1";
/// Domain separation of partner receipts: the same fields, read as (agreement, holder node,
/// partner member, bytes received back, byte-hours held, signing node).
const PARTNER_RECEIPT_CONTEXT: &[u8] = b"kith-partner-receipt-v1";

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
    pub sig: Vec<u8>,
}

impl Receipt {
    fn message(&self, context: &[u8]) -> Vec<u8> {
        signed_message(context, &Receipt { sig: vec![0; 64], ..self.clone() })
    }

    /// A CPU receipt signed by `signer` (the member whose jobs ran): cumulative for the
    /// period, `fuel` burnt by runner node `runner` over `jobs` accepted answers, the latest
    /// for job `last`. Stored in `bytes`, `blobs` and `last`; verified by
    /// [`Receipt::cpu_signature_ok`].
    #[allow(clippy::too_many_arguments)]
    pub fn sign_cpu(
        signer: &Signer,
        pool: Key,
        period: Period,
        runner: Key,
        fuel: u64,
        jobs: u64,
        last: Key,
        at_ms: i64,
    ) -> Receipt {
        let mut r = Receipt {
            pool,
            period: period.to_string(),
            server: runner,
            receiver: signer.author().key,
            bytes: fuel,
            blobs: jobs,
            last,
            at_ms,
            sig: vec![0; 64],
        };
        r.sig = signer.sign(&r.message(CPU_RECEIPT_CONTEXT));
        r
    }

    /// Whether the signature verifies as a CPU receipt's.
    pub fn cpu_signature_ok(&self) -> bool {
        verify(&self.receiver, &self.message(CPU_RECEIPT_CONTEXT), &self.sig)
    }

    /// A partner receipt signed by `signer`, a member of the pool a federated partner lends
    /// storage to, on its node `node`: cumulative for the period under `agreement`, the
    /// partner's holder node `holder` held `byte_hours` of what `node` placed there (as
    /// `node`'s off-site passes confirmed it and its audits passed) and sent `node` back
    /// `bytes` of it. Stored as `pool` = agreement, `server` = holder, `bytes`, `blobs` =
    /// byte-hours, `last` = the signing node; verified by
    /// [`Receipt::partner_signature_ok`].
    #[allow(clippy::too_many_arguments)]
    pub fn sign_partner(
        signer: &Signer,
        agreement: Key,
        period: Period,
        holder: Key,
        node: Key,
        bytes: u64,
        byte_hours: u64,
        at_ms: i64,
    ) -> Receipt {
        let mut r = Receipt {
            pool: agreement,
            period: period.to_string(),
            server: holder,
            receiver: signer.author().key,
            bytes,
            blobs: byte_hours,
            last: node,
            at_ms,
            sig: vec![0; 64],
        };
        r.sig = signer.sign(&r.message(PARTNER_RECEIPT_CONTEXT));
        r
    }

    /// Whether the signature verifies as a partner receipt's.
    pub fn partner_signature_ok(&self) -> bool {
        verify(&self.receiver, &self.message(PARTNER_RECEIPT_CONTEXT), &self.sig)
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
            sig: vec![0; 64],
        };
        r.sig = signer.sign(&r.message(RECEIPT_CONTEXT));
        r
    }

    /// Whether the receiver's signature verifies.
    pub fn signature_ok(&self) -> bool {
        verify(&self.receiver, &self.message(RECEIPT_CONTEXT), &self.sig)
    }

    /// Its bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }

    /// Parses a receipt.
    pub fn from_bytes(b: &[u8]) -> Result<Receipt, DecodeError> {
        decode(b, "receipt")
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

/// Per member, the bytes other members signed receipts for, sent by its nodes: what it is
/// credited for serving (see [`check_evidence`]). Each receipt's signature is checked once.
pub fn receipted_served(l: &LedgerView, pool: &PoolView) -> BTreeMap<Key, i64> {
    let owner: HashMap<&Key, &Key> =
        pool.members.iter().flat_map(|(m, x)| x.nodes.keys().map(move |n| (n, m))).collect();
    let mut out = BTreeMap::new();
    for r in l.rows.values().flat_map(|r| r.receipts.values()) {
        if let Some(m) = owner.get(&r.server)
            && **m != r.receiver
            && r.signature_ok()
        {
            *out.entry(**m).or_default() += r.bytes as i64;
        }
    }
    out
}

/// Per member, the fuel other members signed CPU receipts for, burnt by its nodes: the CPU it
/// is credited for giving.
pub fn receipted_cpu(l: &LedgerView, pool: &PoolView) -> BTreeMap<Key, i64> {
    let owner: HashMap<&Key, &Key> =
        pool.members.iter().flat_map(|(m, x)| x.nodes.keys().map(move |n| (n, m))).collect();
    let mut out = BTreeMap::new();
    for r in l.rows.values().flat_map(|r| r.cpu_receipts.values()) {
        if let Some(m) = owner.get(&r.server)
            && **m != r.receiver
            && r.cpu_signature_ok()
        {
            *out.entry(**m).or_default() += r.bytes as i64;
        }
    }
    out
}

/// Flags what the evidence contradicts, where it can be checked exactly.
///
/// What a member served is not checked against receipts: a server counts a blob once it has
/// written it, its receiver once it has read and checked it, and a transfer cut in between is
/// counted by one side only (no acknowledgement makes two counters agree over a link that can
/// fail between them). Serving is credited by the receipts instead ([`receipted_served`]), so a
/// claim beyond them earns nothing, and the statement shows both figures. What is checked:
/// a member that signed receipts for more than it reports receiving (it would pay less than it
/// signed for), and storage provided without a passed audit.
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
        let received = l.total(&m, Counter::EgressReceived);
        let signed: i64 = receipts.iter().filter(|r| r.receiver == m).map(|r| r.bytes as i64).sum();
        if received < signed {
            flags.push(Flag {
                member: m,
                what: format!("reports {received} bytes received but signed receipts for {signed}"),
            });
        }
        let taken = l.total(&m, Counter::CpuTaken);
        let cpu_signed: i64 = l
            .rows
            .values()
            .flat_map(|r| r.cpu_receipts.values())
            .filter(|r| r.receiver == m)
            .map(|r| r.bytes as i64)
            .sum();
        if taken < cpu_signed {
            flags.push(Flag {
                member: m,
                what: format!(
                    "reports {taken} units of CPU taken but signed CPU receipts for {cpu_signed}"
                ),
            });
        }
        // Across pools, the same check per device and agreement: what it recorded the
        // partner held for it and sent it back, against the partner receipts it signed.
        for ((_, device), row) in l.rows.iter().filter(|((k, _), _)| *k == m) {
            for (ag, c) in &row.partners {
                // Each holder's byte-hours are signed in whole hours apart, and the record
                // sums them before rounding: a byte-hour per holder either way.
                let (held, back, slack) = row.partner_receipted(ag, true);
                if (c.held_by.max(0) as u64).saturating_add(slack) < held
                    || (c.received_from.max(0) as u64) < back
                {
                    flags.push(Flag {
                        member: m,
                        what: format!(
                            "device {} reports {} byte-hours held and {} bytes received back by partner {} but signed it receipts for {held} and {back}",
                            kith_crdt::hex(&device[..4]),
                            c.held_by,
                            c.received_from,
                            kith_crdt::hex(&ag[..4]),
                        ),
                    });
                }
            }
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
///
/// A member that left (or was removed) had only until then: one that stored chunks and left
/// before its first audit is not flagged for ever after.
pub fn awaiting_first_audit(l: &LedgerView, pool: &PoolView, member: &Key, now_ms: i64) -> bool {
    let m = pool.members.get(member);
    let joined = m.map_or(0, |m| m.joined_ms);
    let until = match m {
        Some(m) if m.state != crate::view::State::Active => m.left_ms.unwrap_or(now_ms),
        _ => now_ms,
    };
    // With nothing stored in the pool, there is nothing to audit and nothing to provide.
    let Some(first_object) = pool.objects().map(|(_, _, o)| o.at_ms).min() else { return false };
    let since = l.period.start_ms().max(joined).max(first_object);
    until.min(now_ms) - since < 2 * pool.charter.audit_every_ms as i64
}
