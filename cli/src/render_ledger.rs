//! Rendering `kith ledger`: the table, verify, statements (CSV or JSON).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use kith::api::ledger::*;
use kith::fmt;

fn money(cents: i64) -> String {
    kith::api::ledger::money(cents)
}

/// Prints `kith ledger`.
pub fn render_show(v: &Tables) -> Result<ExitCode> {
    for p in &v.pools {
        println!(
            "{} {}  ({} split, costs {}{})",
            p.name,
            p.period,
            p.cost_rule,
            money(p.costs_cents),
            p.sealed_by
                .as_ref()
                .map(|b| format!(", sealed by {}", &b[..8.min(b.len())]))
                .unwrap_or_default()
        );
        println!(
            "  {:<16} {:>12} {:>12} {:>10} {:>10} {:>9} {:>10}",
            "MEMBER", "HELD FOR", "HELD BY", "SERVED", "RECEIVED", "AUDITS", "OWES"
        );
        println!(
            "  {:<16} {:>12} {:>12} {:>10} {:>10} {:>9}",
            "", "OTHERS", "OTHERS", "RECEIPTED", "", "OK/FAIL"
        );
        for m in &p.members {
            let bh = |n: i64| format!("{}·h", fmt::bytes(n.max(0) as u64));
            let b = |n: i64| fmt::bytes(n.max(0) as u64);
            let flag = if m.flags.is_empty() { "" } else { " !" };
            println!(
                "  {:<16} {:>12} {:>12} {:>10} {:>10} {:>9} {:>10}{flag}",
                m.name.chars().take(16).collect::<String>(),
                bh(m.storage_provided),
                bh(m.storage_used),
                b(m.egress_served_receipted),
                b(m.egress_received),
                format!("{}/{}", m.audits_passed, m.audits_failed),
                money(m.owes_cents),
            );
        }
        if p.members.iter().any(|m| m.cpu_given_h > 0.0 || m.cpu_taken_h > 0.0) {
            println!("  {:<16} {:>12} {:>12} {:>10}", "CPU (ref. hours)", "GIVEN", "TAKEN", "OWES");
            for m in &p.members {
                println!(
                    "  {:<16} {:>12.4} {:>12.4} {:>10}",
                    m.name.chars().take(16).collect::<String>(),
                    m.cpu_given_h,
                    m.cpu_taken_h,
                    if p.cpu_price.is_empty() { "credit".to_string() } else { money(m.cpu_cents) },
                );
            }
            if !p.cpu_price.is_empty() {
                println!("  (CPU at {} per reference CPU-hour)", p.cpu_price);
            }
        }
        if !p.partners.is_empty() {
            println!(
                "  {:<16} {:>12} {:>12} {:>10} {:>10} {:>9} {:>10}",
                "PARTNER POOL",
                "HELD FOR IT",
                "HELD BY IT",
                "SENT IT",
                "RECEIVED",
                "AUDITS",
                "OWES"
            );
            for f in &p.partners {
                let bh = |n: i64| format!("{}·h", fmt::bytes(n.max(0) as u64));
                let b = |n: i64| fmt::bytes(n.max(0) as u64);
                let owes = if f.priced {
                    money(f.owes_cents)
                } else {
                    format!("credit {:+.3}", f.given - f.taken)
                };
                let flag = if f.unaudited { " !" } else { "" };
                println!(
                    "  {:<16} {:>12} {:>12} {:>10} {:>10} {:>9} {:>10}{flag}",
                    f.partner.chars().take(16).collect::<String>(),
                    bh(f.receipted_held_for_byte_hours),
                    bh(f.held_by_byte_hours),
                    b(f.served_to_bytes.saturating_add(f.relayed_for_bytes)),
                    b(f.received_from_bytes.saturating_add(f.relayed_by_bytes)),
                    format!("{}/{}", f.audits_passed, f.audits_failed),
                    owes,
                );
            }
            for f in p.partners.iter().filter(|f| f.relayed_for_bytes > 0) {
                println!(
                    "  (this pool's relays carried {} from pool {}'s nodes: in SENT IT)",
                    fmt::bytes(f.relayed_for_bytes as u64),
                    f.partner
                );
            }
            for f in p.partners.iter().filter(|f| f.relayed_by_bytes > 0) {
                println!(
                    "  (pool {}'s relay carried {} for this pool's nodes: in RECEIVED)",
                    f.partner,
                    fmt::bytes(f.relayed_by_bytes as u64)
                );
            }
            for f in p
                .partners
                .iter()
                .filter(|f| f.held_for_byte_hours > 0 || f.receipted_held_for_byte_hours > 0)
            {
                println!(
                    "  (pool {} receipted {} of the {} this pool's nodes held for it{}: HELD FOR IT counts what it receipted)",
                    f.partner,
                    format_args!("{}·h", fmt::bytes(f.receipted_held_for_byte_hours.max(0) as u64)),
                    format_args!("{}·h", fmt::bytes(f.held_for_byte_hours.max(0) as u64)),
                    if f.receipted_sent_bytes > 0 {
                        format!(
                            ", and {} of its copies sent back",
                            fmt::bytes(f.receipted_sent_bytes as u64)
                        )
                    } else {
                        String::new()
                    }
                );
            }
            for f in p.partners.iter().filter(|f| f.proofs_given + f.proofs_failed > 0) {
                println!(
                    "  (pool {} audited what this pool's nodes hold for it: {} proofs given, {} failed)",
                    f.partner, f.proofs_given, f.proofs_failed
                );
            }
            if p.partners.iter().any(|f| f.unaudited) {
                println!(
                    "  ! = held by the partner with no audit of its holders passed in this period yet"
                );
            }
        }
        if !p.recorded {
            println!(
                "  (nothing recorded yet in this period; nodes record every `record_every`, an hour by default)"
            );
        }
        if p.members.iter().any(|m| !m.flags.is_empty()) {
            println!(
                "  ! = figures that receipts or audits do not back yet; `kith ledger verify --pool {}` says which",
                p.name
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints `kith ledger verify`; exit status 1 when a row does not match its evidence.
pub fn render_verify(v: &Verified, json: bool) -> Result<ExitCode> {
    let flagged = v.pools.iter().any(|p| !p.flags.is_empty());
    let code = if flagged { ExitCode::FAILURE } else { ExitCode::SUCCESS };
    if json {
        println!("{}", serde_json::to_string(v)?);
        return Ok(code);
    }
    for p in &v.pools {
        println!(
            "{} {}: {} members, {} receipts covering {}",
            p.name,
            p.period,
            p.members,
            p.receipts,
            fmt::bytes(p.receipt_bytes)
        );
        for f in &p.flags {
            println!("  FLAG {}: {}", f.name, f.what);
        }
        if p.flags.is_empty() {
            println!("  every row matches its evidence");
        }
    }
    Ok(code)
}

/// Writes `kith ledger statement` as CSV or JSON, to a file or standard output.
pub fn render_statement(v: &Statements, format: &str, output: Option<PathBuf>) -> Result<ExitCode> {
    let text = match format {
        "json" => format!("{}\n", serde_json::to_string_pretty(v)?),
        "csv" => v.to_csv(),
        f => bail!("unknown format `{f}` (csv or json)"),
    };
    match output {
        Some(path) => {
            let mut f =
                std::fs::OpenOptions::new().write(true).create_new(true).open(&path).with_context(
                    || format!("cannot create {} (it must not exist)", path.display()),
                )?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            eprintln!("wrote {}", path.display());
        }
        None => std::io::stdout().write_all(text.as_bytes())?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `kith ledger cost`.
pub fn cost_entered(v: &CostEntered) -> Result<ExitCode> {
    eprintln!("cost of {} entered in {} {}", money(v.cents), v.name, v.period);
    Ok(ExitCode::SUCCESS)
}

/// `kith ledger seal`.
pub fn sealed(v: &Sealed) -> Result<ExitCode> {
    eprintln!("sealed {} {}: {} members, {} bytes", v.name, v.period, v.members, v.bytes);
    Ok(ExitCode::SUCCESS)
}
