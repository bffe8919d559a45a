//! A year of a 50-member pool's ledger, simulated on the real ledger core: how big each
//! month's document grows, what a day's changes cost to sync, and what a sealed month keeps.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

use anyhow::{Result, anyhow};
use kith_crdt::Signer;
use kith_pools::Pool;
use kith_pools::ledger::{CostRule, Counter, Ledger, LedgerRules, Period, Receipt, Seal};

/// Figures per month.
#[derive(Debug, Default)]
pub struct Month {
    /// The period.
    pub period: String,
    /// Changes in the document.
    pub changes: usize,
    /// Saved document at the end of the month (bytes).
    pub doc_bytes: usize,
    /// Bytes of one day's changes (the sync cost of a day, for a node that had the rest).
    pub day_bytes: usize,
    /// The sealed summary (bytes).
    pub seal_bytes: usize,
    /// Time to build the month (s).
    pub seconds: f64,
}

/// Runs `months` months of `members` members, each with one device recording once a day.
pub fn run(members: usize, months: usize) -> Result<Vec<Month>> {
    let signers: Vec<Signer> = (0..members)
        .map(|i| Signer::with_device(&[(i + 1) as u8; 32], &[(i + 101) as u8; 32]))
        .collect();
    let admin = &signers[0];
    let mut pool =
        Pool::create(admin, "m0", Pool::charter("sim"), 1).map_err(|e| anyhow!("{e}"))?;
    for (i, s) in signers.iter().enumerate().skip(1) {
        let inv = pool.invite(admin, [i as u8; 16], u64::MAX / 2, 1).map_err(|e| anyhow!("{e}"))?;
        pool.join(s, &format!("m{i}"), &inv, 2).map_err(|e| anyhow!("{e}"))?;
    }
    let id = pool.id();
    let snap = pool.snapshot();
    let rules = LedgerRules { pool: &snap };
    let keys: Vec<[u8; 32]> = signers.iter().map(|s| s.author().key).collect();
    let mut period = Period::parse("2026-01").map_err(|e| anyhow!(e))?;
    let mut carried = BTreeMap::new();
    let mut out = Vec::new();
    for _ in 0..months {
        let t = Instant::now();
        let start = period.start_ms();
        let mut l = Ledger::start(&rules, period)?;
        l.carry(admin, &rules, &carried, start)?;
        let days = ((period.end_ms() - start) / 86_400_000) as usize;
        let mut day_bytes = 0;
        l.add_cost(admin, &rules, "power", "electricity for the shared box", 4_200, start)?;
        for day in 0..days {
            let now = start + day as i64 * 86_400_000 + 3_600_000;
            let heads = l.doc_mut().heads();
            for (i, s) in signers.iter().enumerate() {
                let server = signers[(i + 1) % members].author().device;
                let gib = 1i64 << 30;
                let adds = [
                    (Counter::StorageProvided, 24 * gib * (1 + i as i64 % 5)),
                    (Counter::StorageUsed, 24 * gib * (1 + i as i64 % 3)),
                    (Counter::EgressReceived, 50 << 20),
                ];
                let r = Receipt::sign(
                    s,
                    id,
                    period,
                    server,
                    (day as u64 + 1) * (50 << 20),
                    (day as u64 + 1) * 200,
                    [day as u8; 32],
                    now,
                );
                l.record(s, &rules, &adds, &[r], &[], now)?;
            }
            let (changes, _) = l.doc_mut().changes_since(&heads);
            day_bytes = changes.iter().map(|c| c.raw_bytes().len()).sum();
        }
        let doc_bytes = l.save().len();
        let changes = l.doc_mut().len();
        let seal = Seal::make(&l.view(), CostRule::Credits, &keys, &pool.view(), admin);
        carried = seal.carried();
        out.push(Month {
            period: period.to_string(),
            changes,
            doc_bytes,
            day_bytes,
            seal_bytes: seal.to_bytes().len(),
            seconds: t.elapsed().as_secs_f64(),
        });
        eprintln!("{}: {} changes, {} KB", period, changes, doc_bytes / 1000);
        period = period.next();
    }
    Ok(out)
}

/// The figures as a benchmark's JSON line (see [`figures`](crate::figures)): the largest
/// month's document, one day's changes at most, and a year of sealed summaries.
pub fn figures(members: usize, months: &[Month]) -> serde_json::Value {
    use crate::figures::round;
    let kb = |b: usize| round(b as f64 / 1e3, 1);
    let max = |f: fn(&Month) -> usize| months.iter().map(f).max().unwrap_or(0);
    serde_json::json!({
        "bench": "ledger",
        "members": members,
        "months": months.len(),
        "doc_month_end_kb": kb(max(|m| m.doc_bytes)),
        "day_sync_kb": kb(max(|m| m.day_bytes)),
        "seal_kb": kb(max(|m| m.seal_bytes)),
        "sealed_year_kb": kb(months.iter().map(|m| m.seal_bytes).sum()),
        "month_build_s": round(months.iter().map(|m| m.seconds).fold(0.0, f64::max), 2),
    })
}

/// A markdown table.
pub fn markdown(members: usize, months: &[Month]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| month ({members} members, 1 device each, one change a day: 3 counters and a receipt) | changes | document at month end | one day's changes | sealed summary | build time |"
    );
    let _ = writeln!(s, "| --- | ---: | ---: | ---: | ---: | ---: |");
    for m in months {
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} KB | {:.1} KB | {:.1} KB | {:.1} s |",
            m.period,
            m.changes,
            m.doc_bytes as f64 / 1e3,
            m.day_bytes as f64 / 1e3,
            m.seal_bytes as f64 / 1e3,
            m.seconds
        );
    }
    let sealed: usize = months.iter().map(|m| m.seal_bytes).sum();
    let largest = months.iter().map(|m| m.doc_bytes).max().unwrap_or(0);
    let _ = writeln!(
        s,
        "\nA year kept: {:.1} KB of sealed summaries plus the current month's document (at most {:.0} KB).",
        sealed as f64 / 1e3,
        largest as f64 / 1e3
    );
    s
}
