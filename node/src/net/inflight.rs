//! Blobs this node is fetching now. Two fetches that need the same blob (a holder request for
//! a new object and the repair pass that noticed the same object) must not both bring it over
//! the network: the second waits for the first, and then fetches only what the first did not
//! get.

use std::collections::HashSet;
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::ids::ChunkId;

/// The blobs being fetched, and a signal each time a fetch lets some go.
#[derive(Default)]
pub(crate) struct InFlight {
    ids: Mutex<HashSet<ChunkId>>,
    done: Notify,
}

/// Blobs one fetch took on; let go (and waiters woken) when it is dropped, whatever happened.
pub(crate) struct Claim<'a> {
    of: &'a InFlight,
    /// The blobs this fetch gets.
    pub(crate) ids: Vec<ChunkId>,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if self.ids.is_empty() {
            return;
        }
        let mut set = self.of.ids.lock().unwrap_or_else(|e| e.into_inner());
        for id in &self.ids {
            set.remove(id);
        }
        drop(set);
        self.of.done.notify_waiters();
    }
}

impl InFlight {
    /// Takes on the blobs of `ids` nobody is fetching; returns them as a claim, and the others.
    pub(crate) fn claim(&self, ids: Vec<ChunkId>) -> (Claim<'_>, Vec<ChunkId>) {
        let mut set = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        let (mut mine, mut theirs) = (Vec::new(), Vec::new());
        for id in ids {
            if set.insert(id) { mine.push(id) } else { theirs.push(id) }
        }
        (Claim { of: self, ids: mine }, theirs)
    }

    /// Waits until no fetch holds any of `ids`.
    pub(crate) async fn wait(&self, ids: &[ChunkId]) {
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let set = self.ids.lock().unwrap_or_else(|e| e.into_inner());
                if !ids.iter().any(|id| set.contains(id)) {
                    return;
                }
            }
            notified.await;
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
            tokio::spawn(async move { f.wait(&[a]).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "the wait ended while the blob was in flight");
        drop(claim);
        tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap();
        drop(second);
        let (again, theirs) = f.claim(vec![a, b]);
        assert_eq!((again.ids.len(), theirs.len()), (2, 0));
    }
}
