//! Settling a period: each member's usage and contribution in units, and the shared costs split
//! among them under the pool's cost rule.

use kith_crdt::Key;

use super::{Counter, LedgerView};
use crate::error::ParseError;
use crate::view::PoolView;

/// Fuel (wasmtime's count of a job's operations) per reference CPU-second: what the ledger's
/// CPU counters are converted by (measured by `testnet compute-bench`; docs/compute.md).
pub const FUEL_PER_CPU_SECOND: u64 = 20_000_000_000;

/// Reference CPU-hours in `fuel`.
pub fn cpu_hours(fuel: i64) -> f64 {
    fuel as f64 / FUEL_PER_CPU_SECOND as f64 / 3600.0
}

/// Hours in the month a storage unit is priced over (365.25 * 24 / 12).
const HOURS_PER_MONTH: f64 = 730.5;
const GIB: f64 = (1u64 << 30) as f64;

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
    pub fn parse(s: &str) -> Result<CostRule, ParseError> {
        match s {
            "proportional" => Ok(CostRule::Proportional),
            "credits" => Ok(CostRule::Credits),
            _ => Err(ParseError::new(
                "cost rule",
                s,
                format!("unknown cost rule `{s}` (proportional or credits)"),
            )),
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
    /// Contribution in units (GiB-months held for others + GiB served, as receipted).
    pub contribution: f64,
    /// Bytes served that others signed receipts for (what serving is credited by; the
    /// member's own count, `egress_served`, may differ by transfers cut in the middle).
    pub served_receipted: i64,
    /// Credit balance after the period, in milli-units (credits rule; 0 otherwise).
    pub balance_milli: i64,
    /// Share of the period's costs, in cents.
    pub owes_cents: i64,
    /// Reference CPU-hours its nodes gave other members' jobs, as receipted by them.
    pub cpu_given_h: f64,
    /// Reference CPU-hours its jobs took of other members' nodes (its `cpu_taken`).
    pub cpu_taken_h: f64,
    /// What it owes for CPU (negative: is owed), in cents, at the charter's `cpu_price`; 0
    /// without a price (CPU then counts in `usage` and `contribution`, a CPU-hour as a unit).
    pub cpu_cents: i64,
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

/// The statements of a period under `rule`; `pool` names each member's nodes, whose receipts
/// credit its serving.
pub fn settle(l: &LedgerView, rule: CostRule, members: &[Key], pool: &PoolView) -> Vec<Statement> {
    let total: i64 = l.costs.values().map(|c| c.cents).sum();
    let receipted = super::evidence::receipted_served(l, pool);
    let cpu_receipted = super::evidence::receipted_cpu(l, pool);
    let price = pool.charter.cpu_price_micro;
    let mut st: Vec<Statement> = members
        .iter()
        .map(|m| {
            let cpu_given_h = cpu_hours(cpu_receipted.get(m).copied().unwrap_or(0));
            let cpu_taken_h = cpu_hours(l.total(m, Counter::CpuTaken));
            let (cpu_units, cpu_cents) = if price == 0 {
                ((cpu_given_h, cpu_taken_h), 0)
            } else {
                let cents = (cpu_taken_h - cpu_given_h) * price as f64 / 10_000.0;
                ((0.0, 0.0), cents.round() as i64)
            };
            let usage =
                units(l.total(m, Counter::StorageUsed), l.total(m, Counter::EgressReceived))
                    + cpu_units.1;
            let served_receipted = receipted.get(m).copied().unwrap_or(0);
            let contribution =
                units(l.total(m, Counter::StorageProvided), served_receipted) + cpu_units.0;
            let carried = l.carried.get(m).copied().unwrap_or(0);
            let balance_milli = match rule {
                CostRule::Credits => carried + ((contribution - usage) * 1000.0).round() as i64,
                CostRule::Proportional => 0,
            };
            Statement {
                member: *m,
                usage,
                contribution,
                served_receipted,
                balance_milli,
                owes_cents: 0,
                cpu_given_h,
                cpu_taken_h,
                cpu_cents,
            }
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

/// A federated partner's line in a pool's statement for a period: what this pool's nodes
/// recorded doing for the partner and taking from it, and what that comes to under the
/// agreement's prices (or as credit when it has none). Each pool computes its line from its
/// own ledger: the partner's statement has the mirror line, from what its nodes recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct PartnerLine {
    /// The agreement.
    pub agreement: Key,
    /// The partner pool's name.
    pub partner: String,
    /// The counts summed over this pool's devices.
    pub counts: super::PartnerCounts,
    /// GiB-months this pool's nodes held for the partner, as the partner receipted it
    /// (`receipted_held_for`; what they recorded is `counts.held_for`).
    pub held_for: f64,
    /// GiB-months the partner's nodes held for this pool (as this pool's placement confirmed).
    pub held_by: f64,
    /// GiB this pool's nodes sent for the partner: its sites served as its CDN edge, and its
    /// off-site copies served back to its nodes.
    pub served_to: f64,
    /// GiB this pool's nodes received from the partner's copies.
    pub received_from: f64,
    /// GiB this pool's relays carried from the partner's nodes (priced as egress).
    pub relayed_for: f64,
    /// GiB the partner's relay carried for this pool's nodes (priced as egress taken).
    pub relayed_by: f64,
    /// Byte-hours this pool's nodes held for the partner as the partner's receipts say (each
    /// device's `held_for` up to what the partner's nodes signed it held): what storage lent
    /// is priced by, as serving is credited by receipts within a pool.
    pub receipted_held_for: i64,
    /// Bytes of the partner's copies its nodes signed they received back from this pool's.
    pub receipted_sent: i64,
    /// Byte-hours this pool's nodes signed the partner's held of what they placed there, and
    /// bytes they signed they received back (the receipts they sent the partner).
    pub signed_held_by: i64,
    /// See `signed_held_by`.
    pub signed_received: i64,
    /// Whether the agreement prices lending.
    pub priced: bool,
    /// What this pool owes the partner at the agreement's prices, in cents (negative: the
    /// partner owes it); 0 without prices.
    pub owes_cents: i64,
    /// Units this pool gave the partner net of what it took (GiB-months + GiB; negative: it
    /// took more): the credit both ways when the agreement has no prices.
    pub credit: f64,
}

/// The partner lines of a period: one per agreement this pool's nodes recorded anything under.
pub fn partner_lines(l: &LedgerView, pool: &PoolView) -> Vec<PartnerLine> {
    let mut sums: std::collections::BTreeMap<Key, super::PartnerCounts> = Default::default();
    // Per agreement: held_for as receipted, copies sent back as receipted, held_by and
    // received as signed.
    let mut evidence: std::collections::BTreeMap<Key, [i64; 4]> = Default::default();
    for row in l.rows.values() {
        for (ag, c) in &row.partners {
            sums.entry(*ag).or_default().add(c);
            let clamp = |n: u64| n.min(i64::MAX as u64) as i64;
            let (held, sent, _) = row.partner_receipted(ag, false);
            let (held_by, received, _) = row.partner_receipted(ag, true);
            let (held, sent, held_by, received) =
                (clamp(held), clamp(sent), clamp(held_by), clamp(received));
            let e = evidence.entry(*ag).or_default();
            e[0] = e[0].saturating_add(held.min(c.held_for.max(0)));
            e[1] = e[1].saturating_add(sent);
            e[2] = e[2].saturating_add(held_by);
            e[3] = e[3].saturating_add(received);
        }
    }
    let gib_months = |bh: i64| bh as f64 / GIB / HOURS_PER_MONTH;
    let gib = |b: i64| b as f64 / GIB;
    sums.into_iter()
        .map(|(ag, c)| {
            let e = pool.federation.agreements.get(&ag);
            let partner = e
                .and_then(|e| e.agreement.partner_of(&l.pool).map(|(_, n)| n.to_string()))
                .unwrap_or_else(|| format!("agreement {}", kith_crdt::hex(&ag[..4])));
            let price = e.map(|e| e.agreement.offer.price).unwrap_or_default();
            let [receipted_held_for, receipted_sent, signed_held_by, signed_received] =
                evidence.get(&ag).copied().unwrap_or_default();
            // Storage lent counts as the partner receipted it; what this pool's nodes say
            // they held beyond that earns nothing (the partner never acknowledged it).
            let (held_for, held_by) = (gib_months(receipted_held_for), gib_months(c.held_by));
            let (served_to, received_from) = (gib(c.served_to), gib(c.received_from));
            let priced = price.storage_per_gib_month > 0 || price.egress_per_gb > 0;
            // Prices are in millionths of the currency; egress is priced per GB (10^9 bytes).
            let cost = |gm: f64, bytes: i64| {
                gm * price.storage_per_gib_month as f64
                    + bytes as f64 / 1e9 * price.egress_per_gb as f64
            };
            let relayed_for = gib(c.relayed_for);
            let sent = c.served_to.saturating_add(c.relayed_for);
            let relayed_by = gib(c.relayed_by);
            let taken = c.received_from.saturating_add(c.relayed_by);
            let micro = cost(held_by, taken) - cost(held_for, sent);
            PartnerLine {
                agreement: ag,
                partner,
                counts: c,
                held_for,
                held_by,
                served_to,
                received_from,
                relayed_for,
                relayed_by,
                receipted_held_for,
                receipted_sent,
                signed_held_by,
                signed_received,
                priced,
                owes_cents: (micro / 10_000.0).round() as i64,
                credit: (held_for + served_to + relayed_for)
                    - (held_by + received_from + relayed_by),
            }
        })
        .collect()
}
