//! `kith ledger`: the pools' usage ledgers, run in the daemon (which holds and syncs them),
//! and their printing.

use std::sync::Arc;

use anyhow::{Result, anyhow, bail};
use kith_crdt::{DocError, Key, hex};
use kith_pools::docs::Pools;
use kith_pools::ledger::{
    CostRule, Counter, LedgerView, Period, Seal, Statement as LedgerStatement, check_evidence,
    partner_lines, settle,
};
use kith_pools::{PoolError, PoolView};

pub use crate::api::LedgerReq;
use crate::api::ledger::*;
use serde_json::Value;

/// Largest cost accepted, in cents (ten million units of the pool's currency).
const MAX_COST_CENTS: i64 = 1_000_000_000;

/// The reason alone, for a refusal of this node's own change.
fn plain(e: PoolError) -> anyhow::Error {
    match e {
        PoolError::Doc(DocError::Unauthorised { reason, .. }) => anyhow!(reason),
        e => anyhow!(e),
    }
}

/// The period asked for (this month by default); one that has not begun is refused.
fn period(p: Option<&str>, now: i64) -> Result<Period> {
    let p = match p {
        Some(s) => Period::parse(s).map_err(|e| anyhow!(e))?,
        None => Period::of(now),
    };
    p.not_future(now).map_err(|e| anyhow!("{e}; there is nothing to show for it yet"))
}

/// The pools asked for: one by name or id (a pool this identity left or that was dissolved
/// included: its ledgers stay readable), else every pool this node is in and every former one
/// with a ledger for `p`.
fn select(pools: &Pools, spec: Option<&str>, p: Period) -> Result<Vec<(Key, PoolView)>> {
    match spec {
        Some(s) => {
            let id = pools.resolve(s)?;
            Ok(vec![(
                id,
                (*pools.view_of(&id).ok_or_else(|| anyhow!("the pool is gone"))?).clone(),
            )])
        }
        None => {
            let mut all = pools.list();
            all.extend(
                pools.former().into_iter().filter(|(id, _)| pools.ledgers().has_data(id, p)),
            );
            if all.is_empty() {
                bail!("this node is in no pool (see `kith pool create` and `kith pool join`)");
            }
            Ok(all)
        }
    }
}

/// Every member with a row, and every active member.
fn members(v: &PoolView, l: &LedgerView) -> Vec<Key> {
    let mut m: Vec<Key> = l
        .members()
        .into_iter()
        .chain(
            v.members.iter().filter(|(_, x)| x.state == kith_pools::State::Active).map(|(k, _)| *k),
        )
        .collect();
    m.sort();
    m.dedup();
    m
}

fn name(v: &PoolView, m: &Key) -> String {
    v.members.get(m).map(|x| x.name.clone()).unwrap_or_else(|| hex(&m[..4]))
}

/// The pool with its history, for the ledgers' rules.
fn snap(pools: &Pools, id: &Key) -> Result<Arc<kith_pools::PoolSnapshot>> {
    pools.snapshot(id).ok_or_else(|| anyhow!("the pool is gone"))
}

fn rule(v: &PoolView) -> CostRule {
    CostRule::parse(&v.charter.cost_rule).unwrap_or(CostRule::Proportional)
}

/// One pool's ledger for a period.
fn table(pools: &Pools, id: &Key, v: &PoolView, p: Period) -> Result<Table> {
    let l = pools.ledgers().view(&*snap(pools, id)?, p).map_err(plain)?;
    let ms = members(v, &l);
    let st = settle(&l, rule(v), &ms, v);
    let flags = check_evidence(&l, v, pools.now_ms());
    let rows: Vec<Row> = ms
        .iter()
        .zip(&st)
        .map(|(m, s)| Row {
            member: hex(m),
            name: name(v, m),
            usage: s.usage,
            contribution: s.contribution,
            owes_cents: s.owes_cents,
            balance_milli: s.balance_milli,
            receipts: l
                .rows
                .iter()
                .filter(|((k, _), _)| k == m)
                .map(|(_, r)| r.receipts.len() as u64)
                .sum(),
            flags: flags.iter().filter(|f| f.member == *m).map(|f| f.what.clone()).collect(),
            storage_provided: l.total(m, Counter::StorageProvided),
            storage_used: l.total(m, Counter::StorageUsed),
            egress_served: l.total(m, Counter::EgressServed),
            egress_served_receipted: s.served_receipted,
            egress_received: l.total(m, Counter::EgressReceived),
            requests_served: l.total(m, Counter::RequestsServed),
            audits_passed: l.total(m, Counter::AuditsPassed),
            audits_failed: l.total(m, Counter::AuditsFailed),
            cpu_given_h: s.cpu_given_h,
            cpu_taken_h: s.cpu_taken_h,
            cpu_cents: s.cpu_cents,
        })
        .collect();
    let sealed = pools.ledgers().seal(id, p).map(|s| hex(&s.by)).or_else(|| {
        (p < Period::of(pools.now_ms()))
            .then(|| snap(pools, id).ok().and_then(|s| pools.ledgers().view(&s, p.next()).ok()))
            .flatten()
            .and_then(|n| n.sealed)
            .map(|s| hex(&s.by))
    });
    Ok(Table {
        pool: hex(id),
        name: v.charter.name.clone(),
        period: p.to_string(),
        cost_rule: v.charter.cost_rule.clone(),
        recorded: pools.ledgers().has_data(id, p),
        costs: l
            .costs
            .iter()
            .map(|(k, c)| Cost {
                id: k.clone(),
                what: c.what.clone(),
                cents: c.cents,
                by: hex(&c.by),
                at_ms: c.at_ms,
            })
            .collect(),
        costs_cents: l.costs.values().map(|c| c.cents).sum::<i64>(),
        carried_in: l.carried.len() as u64,
        sealed_by: sealed,
        cpu_price: crate::api::ledger::price(v.charter.cpu_price_micro),
        members: rows,
        partners: partner_lines(&l, v).iter().map(PartnerOwed::of).collect(),
    })
}

/// Parses an amount such as `12`, `12.5` or `12.50` into cents.
pub fn parse_cents(s: &str) -> Result<i64> {
    let bad = || anyhow!("`{s}` is not an amount (such as 42 or 42.50, in the pool's currency)");
    let t = s.trim();
    let (units, frac) = t.split_once('.').unwrap_or((t, ""));
    if units.is_empty()
        || !units.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 2
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || units.len() > 12
    {
        return Err(bad());
    }
    let cents = units.parse::<i64>().map_err(|_| bad())? * 100
        + format!("{frac:0<2}").parse::<i64>().map_err(|_| bad())?;
    if cents == 0 {
        bail!("a cost must be more than 0");
    }
    if cents > MAX_COST_CENTS {
        bail!("{s} is more than the largest cost accepted ({})", MAX_COST_CENTS / 100);
    }
    Ok(cents)
}

/// Runs a ledger command.
pub async fn handle(pools: &Arc<Pools>, req: LedgerReq) -> Result<Value> {
    match req {
        LedgerReq::Show { pool, period: p } => {
            let p = period(p.as_deref(), pools.now_ms())?;
            let out: Result<Vec<Table>> = select(pools, pool.as_deref(), p)?
                .iter()
                .map(|(id, v)| table(pools, id, v, p))
                .collect();
            answer(Tables { period: p.to_string(), pools: out? })
        }
        LedgerReq::Verify { pool, period: p } => {
            let p = period(p.as_deref(), pools.now_ms())?;
            let mut out = Vec::new();
            for (id, v) in select(pools, pool.as_deref(), p)? {
                let l = pools.ledgers().view(&*snap(pools, &id)?, p).map_err(plain)?;
                let receipts: Vec<_> = l.rows.values().flat_map(|r| r.receipts.values()).collect();
                let mut flags: Vec<Flag> = check_evidence(&l, &v, pools.now_ms())
                    .into_iter()
                    .map(|f| Flag {
                        member: hex(&f.member),
                        name: name(&v, &f.member),
                        what: f.what,
                    })
                    .collect();
                for r in &receipts {
                    if !r.signature_ok() {
                        flags.push(Flag {
                            member: hex(&r.receiver),
                            name: name(&v, &r.receiver),
                            what: format!(
                                "a receipt for node {} does not verify",
                                hex(&r.server[..8])
                            ),
                        });
                    }
                }
                out.push(VerifiedPool {
                    pool: hex(&id),
                    name: v.charter.name.clone(),
                    period: p.to_string(),
                    members: members(&v, &l).len() as u64,
                    receipts: receipts.len() as u64,
                    receipt_bytes: receipts.iter().map(|r| r.bytes).sum::<u64>(),
                    flags,
                });
            }
            answer(Verified { period: p.to_string(), pools: out })
        }
        LedgerReq::Statement { pool, period: p } => {
            let p = period(p.as_deref(), pools.now_ms())?;
            let mut out = Vec::new();
            for (id, v) in select(pools, pool.as_deref(), p)? {
                if !pools.ledgers().has_data(&id, p) {
                    if pool.is_some() {
                        bail!(
                            "no ledger data for pool {} in {p}: nothing was recorded then (see `kith ledger --period {p}`)",
                            v.charter.name
                        );
                    }
                    continue;
                }
                let l = pools.ledgers().view(&*snap(pools, &id)?, p).map_err(plain)?;
                let ms = members(&v, &l);
                let st = settle(&l, rule(&v), &ms, &v);
                out.push(statement(&id, &v, &l, p, &st));
            }
            if out.is_empty() {
                bail!("no ledger data in {p} in any pool: nothing was recorded then");
            }
            answer(Statements { period: p.to_string(), statements: out })
        }
        LedgerReq::Cost { pool, amount, what, period: p } => {
            let cents = parse_cents(&amount)?;
            let what = what.trim().to_string();
            if what.is_empty() || what.len() > 200 {
                bail!("say what the cost paid for, in 1 to 200 characters");
            }
            let p = period(p.as_deref(), pools.now_ms())?;
            let id = pools.resolve(&pool)?;
            let v = pools.view_of(&id).ok_or_else(|| anyhow!("the pool is gone"))?;
            let mut cid = [0u8; 8];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut cid)
                .map_err(|_| anyhow!("no randomness"))?;
            let signer = pools.signer();
            pools
                .ledgers()
                .with(&*snap(pools, &id)?, p, |l, rules| {
                    l.add_cost(signer, rules, &hex(&cid), &what, cents, pools.now_ms())
                })
                .map_err(plain)?;
            pools.wake();
            answer(CostEntered {
                pool: hex(&id),
                name: v.charter.name.clone(),
                period: p.to_string(),
                id: hex(&cid),
                cents,
            })
        }
        LedgerReq::Seal { pool, period: p } => {
            let p = Period::parse(&p).map_err(|e| anyhow!(e))?;
            if p >= Period::of(pools.now_ms()) {
                bail!("{p} is not over yet; a period is sealed after it ends");
            }
            let id = pools.resolve(&pool)?;
            let v = pools.view_of(&id).ok_or_else(|| anyhow!("the pool is gone"))?;
            if !v.members.get(&pools.signer().author().key).is_some_and(|m| m.is_active_admin()) {
                bail!("only an admin seals a period");
            }
            let l = pools.ledgers().view(&*snap(pools, &id)?, p).map_err(plain)?;
            if pools.ledgers().view(&*snap(pools, &id)?, p.next()).map_err(plain)?.sealed.is_some()
            {
                bail!("{p} is already sealed");
            }
            let seal = Seal::make(&l, rule(&v), &members(&v, &l), &v, pools.signer());
            let signer = pools.signer();
            pools
                .ledgers()
                .with(&*snap(pools, &id)?, p.next(), |n, rules| {
                    n.record_seal(signer, rules, &seal, pools.now_ms())
                })
                .map_err(plain)?;
            pools.ledgers().keep_seal(&seal)?;
            pools.wake();
            answer(Sealed {
                pool: hex(&id),
                name: v.charter.name.clone(),
                period: p.to_string(),
                bytes: seal.to_bytes().len() as u64,
                members: seal.owes.len() as u64,
                costs_cents: seal.costs_cents,
            })
        }
    }
}

fn statement(
    id: &Key,
    v: &PoolView,
    l: &LedgerView,
    p: Period,
    st: &[LedgerStatement],
) -> Statement {
    Statement {
        pool: hex(id),
        name: v.charter.name.clone(),
        period: p.to_string(),
        cost_rule: v.charter.cost_rule.clone(),
        costs_cents: l.costs.values().map(|c| c.cents).sum::<i64>(),
        costs: l
            .costs
            .values()
            .map(|c| CostLine { what: c.what.clone(), cents: c.cents })
            .collect(),
        members: st
            .iter()
            .map(|s| Owed {
                member: hex(&s.member),
                name: name(v, &s.member),
                storage_used_byte_hours: l.total(&s.member, Counter::StorageUsed),
                received_bytes: l.total(&s.member, Counter::EgressReceived),
                storage_provided_byte_hours: l.total(&s.member, Counter::StorageProvided),
                served_bytes: l.total(&s.member, Counter::EgressServed),
                served_receipted_bytes: s.served_receipted,
                usage: s.usage,
                contribution: s.contribution,
                balance_milli: s.balance_milli,
                owes_cents: s.owes_cents,
                cpu_given_h: s.cpu_given_h,
                cpu_taken_h: s.cpu_taken_h,
                cpu_cents: s.cpu_cents,
                reference: format!("kith {} {p} {}", v.charter.name, &hex(&s.member)[..8]),
            })
            .collect(),
        partners: partner_lines(l, v).iter().map(PartnerOwed::of).collect(),
    }
}

/// A typed answer, as the JSON that crosses the control socket.
fn answer<T: serde::Serialize>(t: T) -> Result<Value> {
    Ok(serde_json::to_value(t)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_parse_to_cents_and_bad_ones_are_refused() {
        assert_eq!(parse_cents("12").unwrap(), 1200);
        assert_eq!(parse_cents("12.5").unwrap(), 1250);
        assert_eq!(parse_cents("0.07").unwrap(), 7);
        for bad in ["", "-3", "1,50", "1.505", "abc", "1e3", ".5", "0", "0.00", "99999999999999"] {
            assert!(parse_cents(bad).is_err(), "{bad} should be refused");
        }
    }
}
