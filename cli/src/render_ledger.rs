//! Rendering `kith ledger`: the table, verify, statements (CSV or JSON).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use kith::fmt;
use serde_json::Value;

fn i(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn money(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// Prints `kith ledger`.
pub fn render_show(v: &Value, json: bool) -> Result<ExitCode> {
    if json {
        println!("{v}");
        return Ok(ExitCode::SUCCESS);
    }
    for p in v["pools"].as_array().into_iter().flatten() {
        println!(
            "{} {}  ({} split, costs {}{})",
            s(&p["name"]),
            s(&p["period"]),
            s(&p["cost_rule"]),
            money(i(&p["costs_cents"])),
            p["sealed_by"].as_str().map(|b| format!(", sealed by {}", &b[..8])).unwrap_or_default()
        );
        println!(
            "  {:<16} {:>12} {:>12} {:>10} {:>10} {:>9} {:>10}",
            "MEMBER", "HELD FOR", "HELD BY", "SERVED", "RECEIVED", "AUDITS", "OWES"
        );
        println!(
            "  {:<16} {:>12} {:>12} {:>10} {:>10} {:>9}",
            "", "OTHERS", "OTHERS", "", "", "OK/FAIL"
        );
        for m in p["members"].as_array().into_iter().flatten() {
            let bh = |k: &str| format!("{}·h", fmt::bytes(i(&m[k]).max(0) as u64));
            let b = |k: &str| fmt::bytes(i(&m[k]).max(0) as u64);
            let flag = if m["flags"].as_array().is_some_and(|f| !f.is_empty()) { " !" } else { "" };
            println!(
                "  {:<16} {:>12} {:>12} {:>10} {:>10} {:>9} {:>10}{flag}",
                s(&m["name"]).chars().take(16).collect::<String>(),
                bh("storage_provided"),
                bh("storage_used"),
                b("egress_served"),
                b("egress_received"),
                format!("{}/{}", i(&m["audits_passed"]), i(&m["audits_failed"])),
                money(i(&m["owes_cents"])),
            );
        }
        if !p["recorded"].as_bool().unwrap_or(false) {
            println!("  (nothing recorded yet in this period)");
        }
        let flagged = p["members"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["flags"].as_array().is_some_and(|f| !f.is_empty()));
        if flagged {
            println!(
                "  ! = figures that receipts or audits do not back yet; `kith ledger verify --pool {}` says which",
                s(&p["name"])
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints `kith ledger verify`; exit status 1 when a row does not match its evidence.
pub fn render_verify(v: &Value, json: bool) -> Result<ExitCode> {
    let flagged = v["pools"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|p| p["flags"].as_array().is_some_and(|f| !f.is_empty()));
    let code = if flagged { ExitCode::FAILURE } else { ExitCode::SUCCESS };
    if json {
        println!("{v}");
        return Ok(code);
    }
    for p in v["pools"].as_array().into_iter().flatten() {
        println!(
            "{} {}: {} members, {} receipts covering {}",
            s(&p["name"]),
            s(&p["period"]),
            i(&p["members"]),
            i(&p["receipts"]),
            fmt::bytes(p["receipt_bytes"].as_u64().unwrap_or(0))
        );
        for f in p["flags"].as_array().into_iter().flatten() {
            println!("  FLAG {}: {}", s(&f["name"]), s(&f["what"]));
        }
        if p["flags"].as_array().is_none_or(|f| f.is_empty()) {
            println!("  every row matches its evidence");
        }
    }
    Ok(code)
}

/// Writes `kith ledger statement` as CSV or JSON, to a file or standard output.
pub fn render_statement(v: &Value, format: &str, output: Option<PathBuf>) -> Result<ExitCode> {
    let text = match format {
        "json" => format!("{}\n", serde_json::to_string_pretty(v)?),
        "csv" => {
            let mut t = String::from(
                "pool,period,member,name,storage_used_byte_hours,received_bytes,storage_provided_byte_hours,served_bytes,usage_units,contribution_units,credit_balance,owes,payment_reference\n",
            );
            for st in v["statements"].as_array().into_iter().flatten() {
                for m in st["members"].as_array().into_iter().flatten() {
                    let cells = [
                        s(&st["name"]).to_string(),
                        s(&st["period"]).to_string(),
                        s(&m["member"]).to_string(),
                        s(&m["name"]).to_string(),
                        i(&m["storage_used_byte_hours"]).to_string(),
                        i(&m["received_bytes"]).to_string(),
                        i(&m["storage_provided_byte_hours"]).to_string(),
                        i(&m["served_bytes"]).to_string(),
                        format!("{:.6}", m["usage"].as_f64().unwrap_or(0.0)),
                        format!("{:.6}", m["contribution"].as_f64().unwrap_or(0.0)),
                        format!("{:.3}", i(&m["balance_milli"]) as f64 / 1000.0),
                        money(i(&m["owes_cents"])),
                        s(&m["reference"]).to_string(),
                    ];
                    let row: Vec<String> = cells.iter().map(|c| csv_cell(c)).collect();
                    t.push_str(&row.join(","));
                    t.push('\n');
                }
            }
            t
        }
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

/// A CSV cell, quoted when it needs to be; a leading `=`, `+`, `-` or `@` is escaped so a
/// spreadsheet does not run a member's name as a formula.
fn csv_cell(c: &str) -> String {
    let c = if c.starts_with(['=', '+', '-', '@']) && c.parse::<f64>().is_err() {
        format!("'{c}")
    } else {
        c.to_string()
    };
    if c.contains([',', '"', '\n', '\r']) { format!("\"{}\"", c.replace('"', "\"\"")) } else { c }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_quoted_and_formulas_defused() {
        assert_eq!(csv_cell("plain"), "plain");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(csv_cell("-12.50"), "-12.50");
    }
}
