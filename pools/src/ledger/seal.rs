//! The seal of a closed period: every member's totals and statement, signed by an admin.

use std::collections::BTreeMap;

use kith_crdt::{Key, Signer, verify};

use super::settle::{CostRule, settle};
use super::{Counter, LedgerView, encode, signed_message};
use crate::error::{DecodeError, decode};
use crate::view::PoolView;

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
    /// Per member: its id and its totals, in [`Counter::ALL`] order (seven in seals made before
    /// the CPU counters, nine since).
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
    pub sig: Vec<u8>,
}

const SEAL_CONTEXT: &[u8] = b"kith-seal-v1";

impl Seal {
    fn message(&self) -> Vec<u8> {
        signed_message(SEAL_CONTEXT, &Seal { sig: vec![0; 64], ..self.clone() })
    }

    /// Seals `l` under `rule` for `members` of `pool`, signed by `admin`.
    pub fn make(
        l: &LedgerView,
        rule: CostRule,
        members: &[Key],
        pool: &PoolView,
        admin: &Signer,
    ) -> Seal {
        let st = settle(l, rule, members, pool);
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
            sig: vec![0; 64],
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
    pub fn from_bytes(b: &[u8]) -> Result<Seal, DecodeError> {
        decode(b, "seal")
    }

    /// The balances to carry into the next period.
    pub fn carried(&self) -> BTreeMap<Key, i64> {
        self.owes.iter().map(|(m, _, b)| (**m, *b)).collect()
    }
}
