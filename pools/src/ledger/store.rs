//! The ledgers this node holds: one document per pool and period, on disk under
//! `ledgers/<pool id>/<period>.kledger`, loaded when first needed.
//!
//! A ledger that only has its canonical genesis is never written (every node can make it), so
//! a period nobody recorded anything in leaves no file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use kith_crdt::{DocError, Key, SyncFrame, SyncState, hex};

use super::document::Ledger;
use super::rules::LedgerRules;
use super::seal::Seal;
use super::{LedgerView, Period};
use crate::fsutil::DocFiles;
use crate::pool::{PoolError, PoolSnapshot};

/// Folder of ledgers in the home.
const LEDGERS_DIR: &str = "ledgers";
/// How many months back a peer may ask to sync (older periods are sealed).
pub const SYNC_MONTHS_BACK: usize = 12;

/// Ledger documents by pool and period.
#[derive(Debug)]
pub struct Ledgers {
    dir: PathBuf,
    docs: Mutex<BTreeMap<(Key, Period), Ledger>>,
}

impl Ledgers {
    /// The ledgers under `home_root`.
    pub fn new(home_root: &Path) -> Ledgers {
        Ledgers { dir: home_root.join(LEDGERS_DIR), docs: Mutex::new(BTreeMap::new()) }
    }

    /// The ledgers of `pool` (`ledgers/POOL/PERIOD.kledger`).
    pub(crate) fn files(&self, pool: &Key) -> DocFiles {
        DocFiles::new(self.dir.join(hex(pool)))
    }

    fn seal_path(&self, pool: &Key, period: Period) -> PathBuf {
        self.dir.join(hex(pool)).join(format!("{period}.seal"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(Key, Period), Ledger>> {
        self.docs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the ledger of `snap`'s pool for `period` (loaded, or started if this node has
    /// none), and saves it if `f` changed it. `snap` is the pool as this node knows it, with its
    /// history, for the rules.
    pub fn with<T>(
        &self,
        snap: &PoolSnapshot,
        period: Period,
        f: impl FnOnce(&mut Ledger, &LedgerRules<'_>) -> Result<T, DocError>,
    ) -> Result<T, PoolError> {
        let rules = LedgerRules { pool: snap };
        let pool = snap.id();
        let mut docs = self.lock();
        let l = match docs.entry((*pool, period)) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                let l = match self.files(pool).read::<Ledger>(&period.to_string())? {
                    Some(l) => l,
                    None => Ledger::start(&rules, period)?,
                };
                e.insert(l)
            }
        };
        let before = l.doc_mut().heads();
        let out = match f(l, &rules) {
            Ok(out) => out,
            Err(e) => {
                // What `f` changed before it failed is not made either.
                if l.doc_mut().heads() != before {
                    l.doc_mut().rewind(&before)?;
                }
                return Err(e.into());
            }
        };
        if l.doc_mut().heads() != before {
            let files = self.files(pool);
            let name = period.to_string();
            if let Err(e) = files.write(&name, l) {
                // A change that is not on disk is not made (a full disk, a read-only home): kept
                // only in memory, it went to the peers while the caller heard it failed, and a
                // caller that tried again counted it twice (a holder's usage record on a full
                // disk; `testnet chaos` showed peers' changes kept that way).
                l.doc_mut().rewind(&before)?;
                let path = files.path::<Ledger>(&name);
                return Err(PoolError::Policy(format!("cannot save {}: {e}", path.display())));
            }
        }
        Ok(out)
    }

    /// Whether this node has anything recorded for `pool` in `period` (a file, or changes
    /// beyond the genesis in memory).
    pub fn has_data(&self, pool: &Key, period: Period) -> bool {
        self.lock().get(&(*pool, period)).is_some_and(|l| l.len() > 1)
            || self.files(pool).path::<Ledger>(&period.to_string()).exists()
    }

    /// The typed view of a ledger.
    pub fn view(&self, snap: &PoolSnapshot, period: Period) -> Result<LedgerView, PoolError> {
        self.with(snap, period, |l, _| Ok(l.view()))
    }

    /// Keeps a seal this node made or received.
    pub fn keep_seal(&self, seal: &Seal) -> Result<(), PoolError> {
        let period = Period::parse(&seal.period).map_err(|e| PoolError::Damaged(e.to_string()))?;
        let path = self.seal_path(&seal.pool, period);
        std::fs::create_dir_all(path.parent().expect("a seal path has a folder"))
            .and_then(|()| crate::fsutil::write_atomic(&path, &seal.to_bytes()))
            .map_err(|e| PoolError::Policy(format!("cannot save {}: {e}", path.display())))
    }

    /// A kept seal.
    pub fn seal(&self, pool: &Key, period: Period) -> Option<Seal> {
        let b = std::fs::read(self.seal_path(pool, period)).ok()?;
        Seal::from_bytes(&b).ok()
    }

    /// The next sync message for a peer.
    pub(crate) fn sync_out(
        &self,
        snap: &PoolSnapshot,
        period: Period,
        state: &mut SyncState,
    ) -> Result<Option<SyncFrame>, String> {
        self.with(snap, period, |l, _| Ok(l.doc_mut().sync_out(state))).map_err(|e| e.to_string())
    }

    /// Applies a peer's sync message; how many changes were new.
    pub(crate) fn sync_in(
        &self,
        snap: &PoolSnapshot,
        period: Period,
        state: &mut SyncState,
        frame: &SyncFrame,
    ) -> Result<usize, String> {
        self.with(snap, period, |l, rules| {
            l.doc_mut().sync_in(state, frame, rules).map(|v| v.len())
        })
        .map_err(|e| e.to_string())
    }
}

/// The periods a node syncs: the current month and the one before (late records and the
/// seal land there).
pub fn live_periods(now_ms: i64) -> Vec<Period> {
    let now = Period::of(now_ms);
    vec![now, now.prev()]
}

/// Whether a peer may ask to sync `period` at `now_ms`: begun (a day's clock skew allowed) and
/// at most [`SYNC_MONTHS_BACK`] months old.
pub fn syncable(period: Period, now_ms: i64) -> bool {
    let mut oldest = Period::of(now_ms);
    for _ in 0..SYNC_MONTHS_BACK {
        oldest = oldest.prev();
    }
    period.start_ms() <= now_ms + 86_400_000 && period >= oldest
}
