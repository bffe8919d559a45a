//! CPU time of members' jobs, counted as it happens and written into the pool's ledger with the
//! node's other usage (every `record_every`, by [`crate::replica::Replicator`]): the runner
//! counts what it gave, the member whose job it was counts what it took and signs a receipt
//! per runner node (docs/compute.md, docs/ledger.md). Counting touches no disk: a job's answer
//! never waits on the ledger.

use std::collections::BTreeMap;

use kith_crdt::Key;

use super::Pools;

/// CPU counted for one pool since the last record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuTally {
    /// Fuel this node burnt for other members' jobs.
    pub given: u64,
    /// Fuel other members' nodes burnt for this member's accepted jobs.
    pub taken: u64,
    /// Per runner node of another member: fuel, jobs and the latest job.
    pub runners: BTreeMap<Key, (u64, u64, Key)>,
}

impl CpuTally {
    fn add(&mut self, other: CpuTally) {
        self.given += other.given;
        self.taken += other.taken;
        for (n, (f, j, last)) in other.runners {
            let e = self.runners.entry(n).or_insert((0, 0, last));
            e.0 += f;
            e.1 += j;
        }
    }

    /// Whether there is nothing to record.
    pub fn is_empty(&self) -> bool {
        self.given == 0 && self.taken == 0 && self.runners.is_empty()
    }
}

impl Pools {
    fn cpu_lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<Key, CpuTally>> {
        self.cpu.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts `fuel` burnt here for a job of node `asker` in `pool` (nothing for this member's
    /// own nodes: that is not pool usage).
    pub fn count_cpu_given(&self, pool: &Key, asker: &Key, fuel: u64) {
        let Some(v) = self.view_of(pool) else { return };
        let (Some(me), Some(them)) = (v.node_owner(&self.node()), v.node_owner(asker)) else {
            return;
        };
        if me != them && fuel > 0 {
            self.cpu_lock().entry(*pool).or_default().given += fuel;
        }
    }

    /// Counts what job `job` of this member took of `pool`'s nodes: `runs` (runner node, fuel)
    /// of the runners that agreed; runs on this member's own nodes are left out.
    pub fn count_cpu_taken(&self, pool: &Key, job: &Key, runs: &[(Key, u64)]) {
        let Some(v) = self.view_of(pool) else { return };
        let me = self.signer().author().key;
        let mut t = CpuTally::default();
        for (n, f) in runs {
            if *f > 0 && v.node_owner(n).is_some_and(|o| o != me) {
                t.taken += f;
                t.runners.insert(*n, (*f, 1, *job));
            }
        }
        if !t.is_empty() {
            let mut all = self.cpu_lock();
            let e = all.entry(*pool).or_default();
            e.add(t.clone());
            // The latest job is the one just counted.
            for (n, (_, _, last)) in &t.runners {
                if let Some(x) = e.runners.get_mut(n) {
                    x.2 = *last;
                }
            }
        }
    }

    /// Takes what was counted for `pool` since the last take.
    pub fn take_cpu(&self, pool: &Key) -> CpuTally {
        self.cpu_lock().remove(pool).unwrap_or_default()
    }

    /// Puts back what could not be recorded.
    pub fn put_back_cpu(&self, pool: &Key, t: CpuTally) {
        if !t.is_empty() {
            self.cpu_lock().entry(*pool).or_default().add(t);
        }
    }
}
