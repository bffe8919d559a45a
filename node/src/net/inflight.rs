//! Blobs this node is fetching now. Two fetches that need the same blob (a holder request for
//! a new object and the repair pass that noticed the same object) must not both bring it over
//! the network: the second waits for the first while the first makes progress, and then
//! fetches only what the first did not get.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use crate::ids::ChunkId;

/// The blobs being fetched (each with the blobs-received count of the fetch that holds it),
/// and a signal each time a fetch lets some go.
#[derive(Default)]
pub(crate) struct InFlight {
    ids: Mutex<HashMap<ChunkId, Arc<AtomicU64>>>,
    done: Notify,
}

/// Blobs one fetch took on; let go (and waiters woken) when it is dropped, whatever happened.
pub(crate) struct Claim<'a> {
    of: &'a InFlight,
    /// The blobs this fetch gets.
    pub(crate) ids: Vec<ChunkId>,
    /// Blobs this fetch has received so far (what its waiters take as progress).
    pub(crate) received: Arc<AtomicU64>,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if self.ids.is_empty() {
            return;
        }
        let mut map = self.of.ids.lock().unwrap_or_else(|e| e.into_inner());
        for id in &self.ids {
            map.remove(id);
        }
        drop(map);
        self.of.done.notify_waiters();
    }
}

impl InFlight {
    /// Takes on the blobs of `ids` nobody is fetching; returns them as a claim, and the others.
    pub(crate) fn claim(&self, ids: Vec<ChunkId>) -> (Claim<'_>, Vec<ChunkId>) {
        let mut map = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        let received = Arc::new(AtomicU64::new(0));
        let (mut mine, mut theirs) = (Vec::new(), Vec::new());
        for id in ids {
            match map.entry(id) {
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(received.clone());
                    mine.push(id);
                }
                std::collections::hash_map::Entry::Occupied(_) => theirs.push(id),
            }
        }
        (Claim { of: self, ids: mine, received }, theirs)
    }

    /// Waits until no fetch holds any of `ids` (true), or until the fetches holding them have
    /// received no blob for `quiet` (false: they are stuck, on a peer that does not answer
    /// for instance, and the caller gets the blobs itself). A fetch that keeps receiving,
    /// however slowly, is waited for.
    pub(crate) async fn wait(&self, ids: &[ChunkId], quiet: Duration) -> bool {
        let mut seen: Option<Vec<(usize, u64)>> = None;
        let mut since = tokio::time::Instant::now();
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Which fetches hold them and what each has received (another holder is a change).
            let progress: Vec<(usize, u64)> = {
                let map = self.ids.lock().unwrap_or_else(|e| e.into_inner());
                let mut holders: Vec<(usize, u64)> = ids
                    .iter()
                    .filter_map(|id| map.get(id))
                    .map(|h| (Arc::as_ptr(h) as usize, h.load(Ordering::Relaxed)))
                    .collect();
                if holders.is_empty() {
                    return true;
                }
                holders.sort_unstable();
                holders.dedup();
                holders
            };
            if seen.as_ref() != Some(&progress) {
                seen = Some(progress);
                since = tokio::time::Instant::now();
            } else if since.elapsed() >= quiet {
                return false;
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(since + quiet) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn a_second_fetch_waits_for_the_first_and_a_dropped_claim_lets_go() {
        let f = Arc::new(InFlight::default());
        let (a, b) = (ChunkId([1; 32]), ChunkId([2; 32]));
        let (claim, theirs) = f.claim(vec![a]);
        assert_eq!(claim.ids, vec![a]);
        assert!(theirs.is_empty());
        let (second, theirs) = f.claim(vec![a, b]);
        assert_eq!(second.ids, vec![b], "a blob in flight was claimed twice");
        assert_eq!(theirs, vec![a]);
        let waiter = {
            let f = f.clone();
            tokio::spawn(async move { f.wait(&[a], Duration::from_secs(60)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "the wait ended while the blob was in flight");
        drop(claim);
        assert!(
            tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap(),
            "the wait ended without the claim let go"
        );
        drop(second);
        let (again, theirs) = f.claim(vec![a, b]);
        assert_eq!((again.ids.len(), theirs.len()), (2, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_lasts_while_the_holder_receives_and_ends_when_it_is_stuck() {
        let f = Arc::new(InFlight::default());
        let a = ChunkId([3; 32]);
        let (claim, _) = f.claim(vec![a]);
        let quiet = Duration::from_secs(5);
        let start = tokio::time::Instant::now();
        let waiter = {
            let f = f.clone();
            tokio::spawn(async move { f.wait(&[a], quiet).await })
        };
        // A blob every 3 s for 30 s: slower than nothing, and waited for all along.
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_secs(3)).await;
            assert!(!waiter.is_finished(), "gave up on a fetch that was receiving");
            claim.received.fetch_add(1, Ordering::Relaxed);
        }
        // Then nothing: the waiter gives up within a quiet period (and a bit) of the last blob.
        let last = tokio::time::Instant::now();
        assert!(!waiter.await.unwrap(), "a stuck fetch counted as let go");
        let waited = last.elapsed();
        assert!(waited >= quiet && waited <= quiet * 2, "gave up {waited:?} after the last blob");
        assert!(start.elapsed() >= Duration::from_secs(30));
        drop(claim);
        assert!(f.wait(&[a], quiet).await, "nothing holds the blob any more");
    }
}
