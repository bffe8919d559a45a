//! What this node refused, and from whom: counted per cause (`kith status` shows them), and
//! logged at most once per peer and cause every [`LOG_EVERY`], so a peer that keeps sending
//! bad input neither floods the log nor stops the node serving honest peers.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often the same peer's refusals for one cause are logged.
pub const LOG_EVERY: Duration = Duration::from_secs(600);
/// (peer, cause) pairs remembered for rate limiting (a bound against a flood of identities).
const MAX_REMEMBERED: usize = 4096;

/// Refusals by cause.
#[derive(Debug, Default)]
pub struct Refusals {
    counts: Mutex<BTreeMap<&'static str, u64>>,
    logged: Mutex<HashMap<([u8; 32], &'static str), Instant>>,
}

impl Refusals {
    /// Counts a refusal of `peer`'s input for `cause` (a short fixed phrase), and logs `detail`
    /// unless this peer was logged for this cause lately.
    pub fn refuse(&self, peer: &[u8; 32], cause: &'static str, detail: &str) {
        *self.counts.lock().unwrap_or_else(|p| p.into_inner()).entry(cause).or_default() += 1;
        let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if logged.get(&(*peer, cause)).is_some_and(|t| now.duration_since(*t) < LOG_EVERY) {
            return;
        }
        if logged.len() >= MAX_REMEMBERED {
            logged.retain(|_, t| now.duration_since(*t) < LOG_EVERY);
        }
        if logged.len() < MAX_REMEMBERED {
            logged.insert((*peer, cause), now);
        }
        let short: String = peer.iter().take(5).map(|b| format!("{b:02x}")).collect();
        tracing::info!(peer = %short, cause, detail, "refused a peer's input (said once per peer and cause every 10 minutes)");
    }

    /// Refusals so far, by cause.
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_counted_every_time_and_logged_once_per_peer_and_cause() {
        let r = Refusals::default();
        for _ in 0..1000 {
            r.refuse(&[1; 32], "bad change", "x");
        }
        r.refuse(&[2; 32], "bad change", "y");
        r.refuse(&[1; 32], "not a member", "z");
        let c = r.counts();
        assert_eq!(c["bad change"], 1001);
        assert_eq!(c["not a member"], 1);
        assert_eq!(r.logged.lock().unwrap().len(), 3, "one log line per peer and cause");
    }
}
