//! What a node accrues between two records into its pools' ledgers.
//!
//! Storage is accrued in byte-milliseconds at every repair pass (what this node holds for
//! other members, and, on one node per member, what other members hold for it), and turned
//! into whole byte-hours when recorded; the remainder waits for the next record. Audits are
//! counted as this node answers them. Transfer comes from the node's tallies of blobs served
//! and received for each pool (see `kith_node::net::blobs::Tallies`).

use std::collections::HashMap;
use std::sync::Mutex;

use kith_crdt::Key;

/// Longest gap between two repair passes that still accrues in full (a node that was
/// suspended did not hold anything for anybody meanwhile).
const MAX_GAP_MS: i64 = 10 * 60 * 1000;
/// Milliseconds in an hour.
const HOUR_MS: u128 = 3_600_000;

#[derive(Debug, Default)]
struct Accrual {
    /// When storage last accrued.
    at_ms: Option<i64>,
    /// Byte-ms held for other members.
    provided: u128,
    /// Byte-ms of this member's data held by other members.
    used: u128,
    audits_passed: i64,
    audits_failed: i64,
    /// When usage was last recorded (or when accrual began).
    recorded_ms: Option<i64>,
}

/// What is due for one record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Due {
    /// Byte-hours held for others.
    pub provided: i64,
    /// Byte-hours of own data held by others.
    pub used: i64,
    /// Audits of this node passed.
    pub audits_passed: i64,
    /// Audits of this node failed.
    pub audits_failed: i64,
}

/// What accrues with one federated partner (by agreement) between two records.
#[derive(Debug, Default)]
struct PartnerAccrual {
    /// When storage last accrued.
    at_ms: Option<i64>,
    /// Byte-ms held for the partner.
    held_for: u128,
    /// Byte-ms the partner's nodes held for this pool (confirmed by this node's placement).
    held_by: u128,
    /// Bytes sent for the partner.
    served_to: u64,
    /// Bytes received from the partner's copies.
    received_from: u64,
    /// Audits this node ran on the partner's holders, passed and failed.
    audits_passed: u64,
    audits_failed: u64,
    /// Audits of this node by the partner, answered with a proof and not.
    proofs_given: u64,
    proofs_failed: u64,
    /// Bytes this node's relay carried from the partner's nodes.
    relayed_for: u64,
    /// Bytes this node sent and received through the partner's relay.
    relayed_by: u64,
}

/// What accrues with one holder node of a partner (for the partner receipt this node signs
/// it): byte-ms it held of what this node placed there, bytes it sent back.
#[derive(Debug, Default)]
struct HolderAccrual {
    at_ms: Option<i64>,
    held: u128,
    received: u64,
}

/// What is due one partner's holder node in a receipt: (agreement, holder, byte-hours held,
/// bytes received from it).
pub type HolderDue = (Key, Key, u64, u64);

/// Accruals per pool.
#[derive(Debug, Default)]
pub struct Usage {
    pools: Mutex<HashMap<Key, Accrual>>,
    partners: Mutex<HashMap<(Key, Key), PartnerAccrual>>,
    /// By (pool, agreement, holder node).
    holders: Mutex<HashMap<(Key, Key, Key), HolderAccrual>>,
}

impl Usage {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Accrual>> {
        self.pools.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Accrues storage at `now_ms`: this node held `provided` bytes for others, and other
    /// members held `used` bytes of this member's data (copies counted), since the last
    /// accrual.
    pub fn accrue(&self, pool: Key, provided: u64, used: u64, now_ms: i64) {
        let mut pools = self.lock();
        let a = pools.entry(pool).or_default();
        a.recorded_ms.get_or_insert(now_ms);
        if let Some(t) = a.at_ms {
            let dt = (now_ms - t).clamp(0, MAX_GAP_MS) as u128;
            a.provided += provided as u128 * dt;
            a.used += used as u128 * dt;
        }
        a.at_ms = Some(now_ms);
    }

    /// Counts an audit this node answered.
    pub fn audited(&self, pool: Key, passed: bool) {
        let mut pools = self.lock();
        let a = pools.entry(pool).or_default();
        if passed {
            a.audits_passed += 1;
        } else {
            a.audits_failed += 1;
        }
    }

    /// Takes what is due if `every_ms` has passed since the last record (the first record
    /// comes `every_ms` after accrual began); whole byte-hours only.
    pub fn take_due(&self, pool: Key, every_ms: u64, now_ms: i64) -> Option<Due> {
        let mut pools = self.lock();
        let a = pools.get_mut(&pool)?;
        let since = *a.recorded_ms.get_or_insert(now_ms);
        if now_ms - since < every_ms as i64 {
            return None;
        }
        a.recorded_ms = Some(now_ms);
        let due = Due {
            provided: (a.provided / HOUR_MS) as i64,
            used: (a.used / HOUR_MS) as i64,
            audits_passed: a.audits_passed,
            audits_failed: a.audits_failed,
        };
        a.provided %= HOUR_MS;
        a.used %= HOUR_MS;
        a.audits_passed = 0;
        a.audits_failed = 0;
        Some(due)
    }

    fn partners(&self) -> std::sync::MutexGuard<'_, HashMap<(Key, Key), PartnerAccrual>> {
        self.partners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Accrues storage with the partner of `agreement` (an agreement of `pool`) at `now_ms`:
    /// this node held `held_for` bytes for it, and its nodes held `held_by` bytes this node
    /// placed there, since the last accrual.
    pub fn accrue_partner(
        &self,
        pool: Key,
        agreement: Key,
        held_for: u64,
        held_by: u64,
        now_ms: i64,
    ) {
        let mut ps = self.partners();
        let a = ps.entry((pool, agreement)).or_default();
        if let Some(t) = a.at_ms {
            let dt = (now_ms - t).clamp(0, MAX_GAP_MS) as u128;
            a.held_for += held_for as u128 * dt;
            a.held_by += held_by as u128 * dt;
        }
        a.at_ms = Some(now_ms);
    }

    fn holders(&self) -> std::sync::MutexGuard<'_, HashMap<(Key, Key, Key), HolderAccrual>> {
        self.holders.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Accrues what each holder node of the partner of `agreement` held of what this node
    /// placed there (`held`: holder and bytes, as this node's last off-site pass confirmed
    /// them), at `now_ms`; a holder not listed held nothing since the last accrual.
    pub fn accrue_holders(&self, pool: Key, agreement: Key, held: &[(Key, u64)], now_ms: i64) {
        let mut hs = self.holders();
        for ((p, ag, h), a) in hs.iter_mut() {
            if (*p, *ag) != (pool, agreement) {
                continue;
            }
            if let Some(t) = a.at_ms {
                let dt = (now_ms - t).clamp(0, MAX_GAP_MS) as u128;
                let bytes = held.iter().find(|(k, _)| k == h).map_or(0, |(_, b)| *b);
                a.held += bytes as u128 * dt;
            }
            a.at_ms = Some(now_ms);
        }
        for (h, _) in held {
            hs.entry((pool, agreement, *h)).or_default().at_ms.get_or_insert(now_ms);
        }
        // A holder that holds nothing here any more and has nothing due is forgotten (what
        // it held, less than a byte-hour, is not signed for).
        hs.retain(|(p, ag, h), a| {
            (*p, *ag) != (pool, agreement)
                || held.iter().any(|(k, _)| k == h)
                || a.held >= HOUR_MS
                || a.received > 0
        });
    }

    /// Counts bytes this node received from `holder`, a node of the partner of `agreement`
    /// holding copies for `pool`.
    pub fn holder_received(&self, pool: Key, agreement: Key, holder: Key, bytes: u64) {
        self.holders().entry((pool, agreement, holder)).or_default().received += bytes;
    }

    /// Takes what is due `pool`'s partners' holder nodes (whole byte-hours; the rest waits).
    pub fn take_holders(&self, pool: Key) -> Vec<HolderDue> {
        let mut out = Vec::new();
        for ((p, ag, h), a) in self.holders().iter_mut() {
            if *p != pool {
                continue;
            }
            let due = ((a.held / HOUR_MS) as u64, a.received);
            a.held %= HOUR_MS;
            a.received = 0;
            if due != (0, 0) {
                out.push((*ag, *h, due.0, due.1));
            }
        }
        out
    }

    /// Puts back what was due holder nodes but could not be recorded.
    pub fn put_back_holders(&self, pool: Key, due: &[HolderDue]) {
        let mut hs = self.holders();
        for (ag, h, bh, bytes) in due {
            let a = hs.entry((pool, *ag, *h)).or_default();
            a.held += *bh as u128 * HOUR_MS;
            a.received += bytes;
        }
    }

    /// Counts bytes sent for the partner of `agreement` and received from it.
    pub fn partner_bytes(&self, pool: Key, agreement: Key, served: u64, received: u64) {
        let mut ps = self.partners();
        let a = ps.entry((pool, agreement)).or_default();
        a.served_to += served;
        a.received_from += received;
    }

    /// Counts bytes this node's relay carried from the partner of `agreement`'s nodes.
    pub fn partner_relayed(&self, pool: Key, agreement: Key, bytes: u64) {
        self.partners().entry((pool, agreement)).or_default().relayed_for += bytes;
    }

    /// Counts bytes this node sent and received through the relay of the partner of
    /// `agreement`.
    pub fn partner_relayed_by(&self, pool: Key, agreement: Key, bytes: u64) {
        self.partners().entry((pool, agreement)).or_default().relayed_by += bytes;
    }

    /// Counts an audit of copies held under `agreement` (of `pool`): one this node ran on a
    /// partner's holder (`by_me`), or one the partner ran on this node; `passed` its verdict.
    pub fn partner_audited(&self, pool: Key, agreement: Key, by_me: bool, passed: bool) {
        let mut ps = self.partners();
        let a = ps.entry((pool, agreement)).or_default();
        match (by_me, passed) {
            (true, true) => a.audits_passed += 1,
            (true, false) => a.audits_failed += 1,
            (false, true) => a.proofs_given += 1,
            (false, false) => a.proofs_failed += 1,
        }
    }

    /// Takes what accrued with `pool`'s partners (whole byte-hours; the rest waits).
    pub fn take_partners(&self, pool: Key) -> Vec<(Key, crate::ledger::PartnerCounts)> {
        let mut out = Vec::new();
        for ((p, ag), a) in self.partners().iter_mut().filter(|((p, _), _)| *p == pool) {
            let _ = p;
            let c = crate::ledger::PartnerCounts {
                held_for: (a.held_for / HOUR_MS) as i64,
                held_by: (a.held_by / HOUR_MS) as i64,
                served_to: a.served_to as i64,
                received_from: a.received_from as i64,
                audits_passed: a.audits_passed as i64,
                audits_failed: a.audits_failed as i64,
                proofs_given: a.proofs_given as i64,
                proofs_failed: a.proofs_failed as i64,
                relayed_for: a.relayed_for as i64,
                relayed_by: a.relayed_by as i64,
            };
            a.held_for %= HOUR_MS;
            a.held_by %= HOUR_MS;
            a.served_to = 0;
            a.received_from = 0;
            a.audits_passed = 0;
            a.audits_failed = 0;
            a.proofs_given = 0;
            a.proofs_failed = 0;
            a.relayed_for = 0;
            a.relayed_by = 0;
            if c.fields().iter().any(|(_, n)| *n > 0) {
                out.push((*ag, c));
            }
        }
        out
    }

    /// Puts back partner counts that could not be recorded.
    pub fn put_back_partners(&self, pool: Key, counts: &[(Key, crate::ledger::PartnerCounts)]) {
        let mut ps = self.partners();
        for (ag, c) in counts {
            let a = ps.entry((pool, *ag)).or_default();
            a.held_for += c.held_for as u128 * HOUR_MS;
            a.held_by += c.held_by as u128 * HOUR_MS;
            a.served_to += c.served_to as u64;
            a.received_from += c.received_from as u64;
            a.audits_passed += c.audits_passed as u64;
            a.audits_failed += c.audits_failed as u64;
            a.proofs_given += c.proofs_given as u64;
            a.proofs_failed += c.proofs_failed as u64;
            a.relayed_for += c.relayed_for as u64;
            a.relayed_by += c.relayed_by as u64;
        }
    }

    /// Puts back what could not be recorded.
    pub fn put_back(&self, pool: Key, due: Due) {
        let mut pools = self.lock();
        let a = pools.entry(pool).or_default();
        a.provided += due.provided as u128 * HOUR_MS;
        a.used += due.used as u128 * HOUR_MS;
        a.audits_passed += due.audits_passed;
        a.audits_failed += due.audits_failed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_accrues_in_byte_hours_and_keeps_the_remainder() {
        let u = Usage::default();
        let p = [1; 32];
        u.accrue(p, 0, 0, 0);
        // An hour of 3,600 and 7,200 bytes, in ten-minute passes.
        for step in 1..=6 {
            u.accrue(p, 3_600, 7_200, step * 600_000);
            if step == 3 {
                assert_eq!(u.take_due(p, 3_600_000, 1_800_000), None, "not due yet");
            }
        }
        let due = u.take_due(p, 3_600_000, 3_600_000).unwrap();
        assert_eq!(due.provided, 3_600);
        assert_eq!(due.used, 7_200);
        // A gap longer than MAX_GAP_MS accrues only MAX_GAP_MS.
        u.accrue(p, 6, 0, 3_600_000 + 24 * HOUR_MS as i64);
        u.audited(p, true);
        u.audited(p, false);
        let due = u.take_due(p, 1, 3_600_000 + 24 * HOUR_MS as i64).unwrap();
        assert_eq!(due.provided, 1, "6 bytes for 10 minutes is one byte-hour");
        assert_eq!((due.audits_passed, due.audits_failed), (1, 1));
        u.put_back(p, due);
        let again = u.take_due(p, 1, 3_600_000 + 25 * HOUR_MS as i64).unwrap();
        assert_eq!(again, due, "what could not be recorded is recorded next time");
    }
}
