//! CPU time of members' jobs, into the pool's ledger: the runner counts what it gave, the
//! member whose job it was counts what it took and signs a receipt per runner node
//! (docs/compute.md, docs/ledger.md).

use kith_crdt::Key;

use super::Pools;
use crate::ledger::{Counter, Period, Receipt};
use crate::pool::PoolError;

impl Pools {
    /// Records, in this node's row of `pool`'s ledger, `fuel` burnt running a job for a node
    /// of another member (nothing for this member's own nodes: that is not pool usage).
    pub fn record_cpu_given(&self, pool: &Key, asker: &Key, fuel: u64) -> Result<(), PoolError> {
        let Some(v) = self.view_of(pool) else { return Ok(()) };
        let (Some(me), Some(them)) = (v.node_owner(&self.node()), v.node_owner(asker)) else {
            return Ok(());
        };
        if me == them || fuel == 0 {
            return Ok(());
        }
        let now = self.now_ms();
        let Some(snap) = self.snapshot(pool) else { return Ok(()) };
        self.ledgers().with(&snap, Period::of(now), |l, rules| {
            l.add(self.signer(), rules, Counter::CpuGiven, fuel as i64, now)
        })?;
        self.wake();
        Ok(())
    }

    /// Records that job `job` of this member took `runs` (runner node, fuel) of `pool`'s
    /// nodes: its `cpu_taken` grows by the fuel of other members' nodes, and its CPU receipt
    /// for each of them grows by that runner's fuel and one job. Runs on this member's own
    /// nodes are left out.
    pub fn record_cpu_taken(
        &self,
        pool: &Key,
        job: &Key,
        runs: &[(Key, u64)],
    ) -> Result<(), PoolError> {
        let Some(v) = self.view_of(pool) else { return Ok(()) };
        let signer = self.signer();
        let me = signer.author();
        let others: Vec<(Key, u64)> = runs
            .iter()
            .filter(|(n, f)| *f > 0 && v.node_owner(n).is_some_and(|o| o != me.key))
            .copied()
            .collect();
        if others.is_empty() {
            return Ok(());
        }
        let now = self.now_ms();
        let period = Period::of(now);
        let Some(snap) = self.snapshot(pool) else { return Ok(()) };
        self.ledgers().with(&snap, period, |l, rules| {
            let prev = l.view().rows.remove(&(me.key, me.device)).unwrap_or_default().cpu_receipts;
            let receipts: Vec<Receipt> = others
                .iter()
                .map(|(runner, fuel)| {
                    let (f, n) = prev.get(runner).map_or((0, 0), |r| (r.bytes, r.blobs));
                    Receipt::sign_cpu(signer, *pool, period, *runner, f + fuel, n + 1, *job, now)
                })
                .collect();
            let taken: u64 = others.iter().map(|(_, f)| f).sum();
            l.record_cpu(signer, rules, taken as i64, &receipts, now)
        })?;
        self.wake();
        Ok(())
    }
}
