//! Ledger commands.

use serde::{Deserialize, Serialize};

/// A ledger command.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "ledger_op", rename_all = "snake_case")]
pub enum LedgerReq {
    /// The table per member.
    Show {
        /// The pool (default: every pool of this node).
        pool: Option<String>,
        /// The month, `YYYY-MM` (default: this one).
        period: Option<String>,
    },
    /// Recompute from the evidence.
    Verify {
        /// The pool (default: every pool of this node).
        pool: Option<String>,
        /// The month, `YYYY-MM` (default: this one).
        period: Option<String>,
    },
    /// What each member owes, for a treasurer.
    Statement {
        /// The pool (default: every pool of this node).
        pool: Option<String>,
        /// The month, `YYYY-MM` (default: this one).
        period: Option<String>,
    },
    /// Enter a shared cost (admins).
    Cost {
        /// The pool.
        pool: String,
        /// The amount, such as `42.50`.
        amount: String,
        /// What it paid for.
        what: String,
        /// The month it belongs to (default: this one).
        period: Option<String>,
    },
    /// Seal a closed period (admins).
    Seal {
        /// The pool.
        pool: String,
        /// The month, `YYYY-MM`.
        period: String,
    },
}

impl LedgerReq {
    /// Whether it only reads (works without the daemon, on the files).
    pub fn reads_only(&self) -> bool {
        matches!(
            self,
            LedgerReq::Show { .. } | LedgerReq::Verify { .. } | LedgerReq::Statement { .. }
        )
    }
}

/// `kith ledger`: a table per pool for one period.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tables {
    /// The period, `YYYY-MM`.
    pub period: String,
    /// One table per pool.
    pub pools: Vec<Table>,
}

/// One pool's ledger for a period.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Table {
    /// The pool (hex).
    pub pool: String,
    /// Its name.
    pub name: String,
    /// The period.
    pub period: String,
    /// How costs split.
    pub cost_rule: String,
    /// Whether this node has anything recorded for the period.
    pub recorded: bool,
    /// The costs entered.
    pub costs: Vec<Cost>,
    /// Their sum (cents).
    pub costs_cents: i64,
    /// Members whose credit balance was carried in from the month before.
    pub carried_in: u64,
    /// The admin who sealed the period (hex), once sealed.
    pub sealed_by: Option<String>,
    /// What a reference CPU-hour costs (`0.02`); empty when CPU counts as credit.
    #[serde(default)]
    pub cpu_price: String,
    /// A row per member.
    pub members: Vec<Row>,
    /// Each federated partner this pool's nodes recorded anything with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partners: Vec<PartnerOwed>,
}

/// A federated partner pool on a ledger or a statement: what this pool's nodes recorded doing
/// for it and taking from it in the period, and what that comes to under the agreement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartnerOwed {
    /// The agreement (hex).
    pub agreement: String,
    /// The partner pool's name.
    pub partner: String,
    /// Byte-hours this pool's nodes held for the partner.
    pub held_for_byte_hours: i64,
    /// Byte-hours the partner's nodes held for this pool.
    pub held_by_byte_hours: i64,
    /// Bytes sent for the partner (its sites as its edge, its copies back).
    pub served_to_bytes: i64,
    /// Bytes received from the partner's copies.
    pub received_from_bytes: i64,
    /// Bytes this pool's relays carried from the partner's nodes (priced as egress; in
    /// `given`, and in the statement's egress column with `served_to_bytes`).
    #[serde(default)]
    pub relayed_for_bytes: i64,
    /// Bytes the partner's relay carried for this pool's nodes (priced as egress taken; in
    /// `taken`, and in the statement's egress-used column with `received_from_bytes`).
    #[serde(default)]
    pub relayed_by_bytes: i64,
    /// Audits this pool's nodes ran on the partner's holders that passed (the evidence behind
    /// `held_by_byte_hours`).
    #[serde(default)]
    pub audits_passed: i64,
    /// Such audits failed.
    #[serde(default)]
    pub audits_failed: i64,
    /// Audits by the partner that this pool's nodes answered with a proof (the evidence behind
    /// `held_for_byte_hours`).
    #[serde(default)]
    pub proofs_given: i64,
    /// Such audits they could not answer.
    #[serde(default)]
    pub proofs_failed: i64,
    /// Byte-hours held for the partner as the partner's nodes signed receipts for (each of
    /// this pool's devices up to what it recorded): what storage lent is priced and credited
    /// by (`given`).
    #[serde(default)]
    pub receipted_held_for_byte_hours: i64,
    /// Bytes of the partner's copies its nodes signed they received back.
    #[serde(default)]
    pub receipted_sent_bytes: i64,
    /// Byte-hours this pool's nodes signed receipts to the partner's holders for (what they
    /// held of what each placed there).
    #[serde(default)]
    pub signed_held_by_byte_hours: i64,
    /// Bytes this pool's nodes signed they received back from the partner's holders.
    #[serde(default)]
    pub signed_received_bytes: i64,
    /// Whether the partner's nodes held copies for this pool in the period with no audit of
    /// them passed: what this pool would owe for is the partner's word only (`!` in
    /// `kith ledger`).
    #[serde(default)]
    pub unaudited: bool,
    /// Units given (GiB-months held for it + GiB sent and relayed for it).
    pub given: f64,
    /// Units taken (GiB-months it held + GiB received from it and relayed by it).
    pub taken: f64,
    /// Whether the agreement prices lending (else the line is credit both ways).
    pub priced: bool,
    /// What this pool owes the partner at the agreement's prices (cents; negative: is owed).
    pub owes_cents: i64,
}

impl PartnerOwed {
    /// The line of a period's partner as the API shows it.
    pub fn of(l: &kith_pools::ledger::PartnerLine) -> PartnerOwed {
        PartnerOwed {
            agreement: kith_crdt::hex(&l.agreement),
            partner: l.partner.clone(),
            held_for_byte_hours: l.counts.held_for,
            held_by_byte_hours: l.counts.held_by,
            served_to_bytes: l.counts.served_to,
            received_from_bytes: l.counts.received_from,
            relayed_for_bytes: l.counts.relayed_for,
            relayed_by_bytes: l.counts.relayed_by,
            audits_passed: l.counts.audits_passed,
            audits_failed: l.counts.audits_failed,
            proofs_given: l.counts.proofs_given,
            proofs_failed: l.counts.proofs_failed,
            receipted_held_for_byte_hours: l.receipted_held_for,
            receipted_sent_bytes: l.receipted_sent,
            signed_held_by_byte_hours: l.signed_held_by,
            signed_received_bytes: l.signed_received,
            unaudited: l.counts.held_by > 0 && l.counts.audits_passed == 0,
            given: l.held_for + l.served_to + l.relayed_for,
            taken: l.held_by + l.received_from + l.relayed_by,
            priced: l.priced,
            owes_cents: l.owes_cents,
        }
    }
}

/// A shared cost.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cost {
    /// Its id.
    pub id: String,
    /// What it paid for.
    pub what: String,
    /// Its amount (cents).
    pub cents: i64,
    /// The admin who entered it (hex).
    pub by: String,
    /// When (ms since the epoch).
    pub at_ms: i64,
}

/// One member's figures for a period.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// The member (hex).
    pub member: String,
    /// Its name.
    pub name: String,
    /// What it used (units: GiB-months and GiB).
    pub usage: f64,
    /// What it gave.
    pub contribution: f64,
    /// What it owes (cents).
    pub owes_cents: i64,
    /// Its credit balance (milli-units).
    pub balance_milli: i64,
    /// Receipts in its rows.
    pub receipts: u64,
    /// What the evidence does not back.
    pub flags: Vec<String>,
    /// Byte-hours of storage it provided.
    pub storage_provided: i64,
    /// Byte-hours of storage others held for it.
    pub storage_used: i64,
    /// Bytes its nodes counted as served.
    pub egress_served: i64,
    /// Bytes served that others signed receipts for: what serving is credited by.
    pub egress_served_receipted: i64,
    /// Bytes it received.
    pub egress_received: i64,
    /// Site requests its nodes answered.
    pub requests_served: i64,
    /// Audits its nodes passed.
    pub audits_passed: i64,
    /// Audits its nodes failed.
    pub audits_failed: i64,
    /// Reference CPU-hours its nodes gave other members' jobs, as their receipts credit.
    #[serde(default)]
    pub cpu_given_h: f64,
    /// Reference CPU-hours its jobs took of other members' nodes.
    #[serde(default)]
    pub cpu_taken_h: f64,
    /// What it owes for CPU at the pool's `cpu_price` (negative: is owed), in cents.
    #[serde(default)]
    pub cpu_cents: i64,
}

/// `kith ledger verify`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verified {
    /// The period.
    pub period: String,
    /// Per pool.
    pub pools: Vec<VerifiedPool>,
}

/// One pool's check against its evidence.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifiedPool {
    /// The pool (hex).
    pub pool: String,
    /// Its name.
    pub name: String,
    /// The period.
    pub period: String,
    /// Members in the period.
    pub members: u64,
    /// Receipts.
    pub receipts: u64,
    /// Bytes they cover.
    pub receipt_bytes: u64,
    /// What does not match.
    pub flags: Vec<Flag>,
}

/// A figure the evidence does not back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Flag {
    /// The member (hex).
    pub member: String,
    /// Its name.
    pub name: String,
    /// What is wrong.
    pub what: String,
}

/// `kith ledger statement`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Statements {
    /// The period.
    pub period: String,
    /// Per pool.
    pub statements: Vec<Statement>,
}

/// What each member of a pool owes for a period.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Statement {
    /// The pool (hex).
    pub pool: String,
    /// Its name.
    pub name: String,
    /// The period.
    pub period: String,
    /// How costs split.
    pub cost_rule: String,
    /// The costs (cents).
    pub costs_cents: i64,
    /// Each cost.
    pub costs: Vec<CostLine>,
    /// Each member.
    pub members: Vec<Owed>,
    /// Each federated partner this pool's nodes recorded anything with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partners: Vec<PartnerOwed>,
}

/// A cost on a statement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CostLine {
    /// What it paid for.
    pub what: String,
    /// Its amount (cents).
    pub cents: i64,
}

/// One member on a statement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Owed {
    /// The member (hex).
    pub member: String,
    /// Its name.
    pub name: String,
    /// Byte-hours others held for it.
    pub storage_used_byte_hours: i64,
    /// Bytes it received.
    pub received_bytes: i64,
    /// Byte-hours it held for others.
    pub storage_provided_byte_hours: i64,
    /// Bytes its nodes counted as served.
    pub served_bytes: i64,
    /// Bytes served that others signed receipts for: what its contribution counts.
    pub served_receipted_bytes: i64,
    /// Usage (units).
    pub usage: f64,
    /// Contribution (units).
    pub contribution: f64,
    /// Credit balance (milli-units).
    pub balance_milli: i64,
    /// What it owes (cents).
    pub owes_cents: i64,
    /// Reference CPU-hours its nodes gave other members' jobs, as their receipts credit.
    #[serde(default)]
    pub cpu_given_h: f64,
    /// Reference CPU-hours its jobs took of other members' nodes.
    #[serde(default)]
    pub cpu_taken_h: f64,
    /// What it owes for CPU at the pool's `cpu_price` (negative: is owed), in cents; 0 when
    /// the pool sets no price (CPU then counts in usage and contribution).
    #[serde(default)]
    pub cpu_cents: i64,
    /// A payment reference for a bank transfer.
    pub reference: String,
}

/// `kith ledger cost`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CostEntered {
    /// The pool (hex).
    pub pool: String,
    /// Its name.
    pub name: String,
    /// The period.
    pub period: String,
    /// The cost's id.
    pub id: String,
    /// Its amount (cents).
    pub cents: i64,
}

/// `kith ledger seal`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sealed {
    /// The pool (hex).
    pub pool: String,
    /// Its name.
    pub name: String,
    /// The period sealed.
    pub period: String,
    /// The seal's size (bytes).
    pub bytes: u64,
    /// Members in it.
    pub members: u64,
    /// The costs settled (cents).
    pub costs_cents: i64,
}

/// A price in millionths as `0.02` (empty for none).
pub fn price(micro: u64) -> String {
    if micro == 0 {
        return String::new();
    }
    let t = format!("{}.{:06}", micro / 1_000_000, micro % 1_000_000);
    t.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// An amount in cents as `12.50` (`-0.05` below zero).
pub fn money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", cents.unsigned_abs() / 100, cents.unsigned_abs() % 100)
}

impl Statements {
    /// The statement as CSV, one line per member and pool (what `kith ledger statement`
    /// writes, and the dashboard offers for download).
    pub fn to_csv(&self) -> String {
        let mut t = String::from(
            "pool,period,member,name,storage_used_byte_hours,received_bytes,storage_provided_byte_hours,served_bytes,served_receipted_bytes,cpu_given_hours,cpu_taken_hours,usage_units,contribution_units,credit_balance,owes,owes_for_cpu,payment_reference\n",
        );
        for st in &self.statements {
            for m in &st.members {
                let cells = [
                    st.name.clone(),
                    st.period.clone(),
                    m.member.clone(),
                    m.name.clone(),
                    m.storage_used_byte_hours.to_string(),
                    m.received_bytes.to_string(),
                    m.storage_provided_byte_hours.to_string(),
                    m.served_bytes.to_string(),
                    m.served_receipted_bytes.to_string(),
                    format!("{:.6}", m.cpu_given_h),
                    format!("{:.6}", m.cpu_taken_h),
                    format!("{:.6}", m.usage),
                    format!("{:.6}", m.contribution),
                    format!("{:.3}", m.balance_milli as f64 / 1000.0),
                    money(m.owes_cents),
                    money(m.cpu_cents),
                    m.reference.clone(),
                ];
                let row: Vec<String> = cells.iter().map(|c| csv_cell(c)).collect();
                t.push_str(&row.join(","));
                t.push('\n');
            }
            // A partner pool on one line, in the members' columns: what it held for this pool
            // and sent it as usage, what this pool held (as the partner receipted it) and sent
            // for it as contribution, what
            // this pool owes it at the agreement's prices (credit when it has none).
            for p in &st.partners {
                let cells = [
                    st.name.clone(),
                    st.period.clone(),
                    format!("partner:{}", p.agreement),
                    format!("partner pool {}", p.partner),
                    p.held_by_byte_hours.to_string(),
                    p.received_from_bytes.saturating_add(p.relayed_by_bytes).to_string(),
                    p.receipted_held_for_byte_hours.to_string(),
                    p.served_to_bytes.saturating_add(p.relayed_for_bytes).to_string(),
                    String::new(),
                    String::new(),
                    String::new(),
                    format!("{:.6}", p.taken),
                    format!("{:.6}", p.given),
                    if p.priced { String::new() } else { format!("{:.3}", p.given - p.taken) },
                    money(p.owes_cents),
                    String::new(),
                    format!("kith {} {} {}", st.name, st.period, &p.agreement[..8]),
                ];
                let row: Vec<String> = cells.iter().map(|c| csv_cell(c)).collect();
                t.push_str(&row.join(","));
                t.push('\n');
            }
        }
        t
    }
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

    #[test]
    fn regression_negative_amounts_read_as_one_number() {
        assert_eq!(money(1250), "12.50");
        assert_eq!(money(-150), "-1.50");
        assert_eq!(money(-5), "-0.05");
        assert_eq!(money(0), "0.00");
    }
}
