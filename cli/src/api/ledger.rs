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
