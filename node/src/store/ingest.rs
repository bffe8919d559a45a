//! Ingest: blobs that arrive from peers, verified, packed and indexed.

use std::collections::HashSet;
use std::fs::File;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, channel, sync_channel};

use super::pack::{BlobKind, FinishedPack, PACK_TARGET_BYTES, PackWriter};
use super::put::{INDEX_CHECKPOINT_PACKS, commit_packs};
use super::{Store, StoreError};
use crate::ids::ChunkId;

/// Sealed packs an ingest keeps uncommitted (waiting for their syncs or the writer lock) before
/// it waits for both (a batch is [`INDEX_CHECKPOINT_PACKS`]).
const DEFERRED_COMMIT_PACKS: usize = 4 * INDEX_CHECKPOINT_PACKS;

/// Writes blobs from elsewhere into the store. Each blob is checked against its id before it
/// is written; packs are committed to the index a batch at a time, so a long transfer that
/// stops keeps what it had. Packs are written in a folder of this ingest's own; the store's
/// writer lock is taken only to commit a batch (a fetch waiting for a slow peer holds up no
/// other write), and what was committed is kept from `gc` and reclaims until the ingest ends.
pub struct Ingest<'s> {
    store: &'s Store,
    /// This ingest's folder, under the store's `incoming` folder.
    dir: PathBuf,
    pack: Option<PackWriter>,
    sealed: Vec<FinishedPack>,
    seen: HashSet<[u8; 32]>,
    /// Numbers the packs in this ingest's folder; the store's numbers are given at commit.
    next_local: u64,
    added: u64,
    /// Blobs this ingest pinned in the store: those it committed, and those it did not write
    /// because the store had them (what it adds may refer to them).
    pinned: Vec<ChunkId>,
    /// Blobs not written because the store had them, pinned but not yet seen under the writer
    /// lock (a gc that began before the pin may still take them: the commit checks).
    relied: Vec<ChunkId>,
    syncer: Syncer,
}

/// Syncs finished packs on a thread of its own, so receiving goes on while the disk writes.
/// Packs are synced in the order they were handed over; at most `INDEX_CHECKPOINT_PACKS` wait
/// for the thread (the next hand-over waits for it). A failed sync fails every later call:
/// an fsync that failed is not retried (Linux may have dropped the pages it did not write).
struct Syncer {
    tx: Option<SyncSender<File>>,
    /// Each sync's result, in order (unbounded: a result is small, and a syncer dropped early
    /// must not leave its thread blocked on sending one).
    done: Receiver<std::io::Result<()>>,
    /// Packs handed over whose sync has not been heard of.
    pending: usize,
    /// Packs heard of as synced and not yet committed: the first `synced` of the sealed packs.
    synced: usize,
    /// Why the syncer failed, once it has.
    failed: Option<String>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Syncer {
    fn start() -> Self {
        Self::start_gated(None)
    }

    /// A syncer whose thread takes a token from `gate`, if given, before each sync (tests hold
    /// syncs back with it).
    fn start_gated(gate: Option<Receiver<()>>) -> Self {
        let (tx, rx) = sync_channel::<File>(INDEX_CHECKPOINT_PACKS);
        let (done_tx, done) = channel();
        let thread = std::thread::Builder::new()
            .name("kith-sync-packs".into())
            .spawn(move || {
                for f in rx {
                    if gate.as_ref().is_some_and(|g| g.recv().is_err()) {
                        break;
                    }
                    if done_tx.send(crate::fsutil::sync_and_uncache(&f)).is_err() {
                        break;
                    }
                }
            })
            .expect("the system can start a thread");
        Self { tx: Some(tx), done, pending: 0, synced: 0, failed: None, thread: Some(thread) }
    }

    fn check(&self) -> std::io::Result<()> {
        match &self.failed {
            Some(why) => Err(std::io::Error::other(why.clone())),
            None => Ok(()),
        }
    }

    fn fail(&mut self, why: String) -> std::io::Error {
        self.failed.get_or_insert(why.clone());
        std::io::Error::other(why)
    }

    /// Hands a pack over to be synced.
    fn sync(&mut self, f: File) -> std::io::Result<()> {
        self.check()?;
        match &self.tx {
            Some(tx) if tx.send(f).is_ok() => {
                self.pending += 1;
                Ok(())
            }
            _ => Err(self.fail("the pack syncer stopped".into())),
        }
    }

    /// Counts the syncs done so far, without waiting; fails if one failed.
    fn poll(&mut self) -> std::io::Result<()> {
        self.check()?;
        while self.pending > 0 {
            match self.done.try_recv() {
                Ok(r) => self.heard(r)?,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    return Err(self.fail("the pack syncer stopped".into()));
                }
            }
        }
        Ok(())
    }

    /// Waits until every pack handed over is synced.
    fn wait(&mut self) -> std::io::Result<()> {
        self.check()?;
        while self.pending > 0 {
            match self.done.recv() {
                Ok(r) => self.heard(r)?,
                Err(_) => return Err(self.fail("the pack syncer stopped".into())),
            }
        }
        Ok(())
    }

    fn heard(&mut self, r: std::io::Result<()>) -> std::io::Result<()> {
        self.pending -= 1;
        if let Err(e) = r {
            return Err(self.fail(format!("syncing a pack: {e}")));
        }
        self.synced += 1;
        Ok(())
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl<'s> Ingest<'s> {
    pub(super) fn new(store: &'s Store) -> Result<Self, StoreError> {
        let dir = store.new_incoming_dir()?;
        Ok(Self {
            store,
            dir,
            pack: None,
            sealed: Vec::new(),
            seen: HashSet::new(),
            next_local: 1,
            added: 0,
            pinned: Vec::new(),
            relied: Vec::new(),
            syncer: Syncer::start(),
        })
    }

    /// Adds a blob unless the store has it. Refuses bytes that do not hash to `id`.
    pub fn add(&mut self, id: ChunkId, kind: BlobKind, bytes: &[u8]) -> Result<bool, StoreError> {
        if ChunkId::of(bytes) != id {
            return Err(StoreError::Damaged {
                chunk: id,
                reason: "received bytes do not match its hash".into(),
            });
        }
        self.add_verified(id, kind, bytes)
    }

    /// [`Ingest::add`] for bytes the caller has just checked against `id` (the fetcher does,
    /// to blame the peer that sent them).
    pub(crate) fn add_verified(
        &mut self,
        id: ChunkId,
        kind: BlobKind,
        bytes: &[u8],
    ) -> Result<bool, StoreError> {
        self.add_verified_parts(id, kind, &[bytes])
    }

    /// [`Ingest::add_verified`] for a blob in pieces.
    pub(crate) fn add_verified_parts(
        &mut self,
        id: ChunkId,
        kind: BlobKind,
        parts: &[&[u8]],
    ) -> Result<bool, StoreError> {
        if self.seen.contains(&id.0) {
            return Ok(false);
        }
        if self.store.has(&id)? {
            // Kept for what this ingest adds: pinned first, then looked at again, so a gc
            // either sees the pin or has taken it by the second look; one that began before
            // the pin and deletes after the look is caught at the commit.
            self.store.pin(&[id]);
            self.pinned.push(id);
            if self.store.has(&id)? {
                self.relied.push(id);
                self.seen.insert(id.0);
                return Ok(false);
            }
        }
        let tmp = &self.dir;
        if self.pack.is_none() {
            self.pack =
                Some(PackWriter::create(tmp, self.next_local).map_err(StoreError::io(tmp))?);
            self.next_local += 1;
        }
        let pack = self.pack.as_mut().expect("opened above");
        pack.append_parts(id, kind, parts).map_err(StoreError::io(tmp))?;
        self.seen.insert(id.0);
        self.added += 1;
        if pack.len() >= PACK_TARGET_BYTES {
            self.seal()?;
            // Receiving goes on while the disk syncs: a batch of packs is committed once its
            // syncs are done, not waited for. Nor does a put or gc holding the writer lock
            // stall receiving (peers time out a receiver that stops reading): the synced packs
            // wait for the lock. Both waits are bounded: past `DEFERRED_COMMIT_PACKS` sealed
            // packs, the ingest waits for the syncs and the lock.
            self.syncer.poll().map_err(StoreError::io(&self.dir))?;
            if self.syncer.synced >= INDEX_CHECKPOINT_PACKS {
                let store = self.store;
                if let Some(_writer) = store.try_write_lock() {
                    self.commit_locked(self.syncer.synced)?;
                }
            }
            if self.sealed.len() >= DEFERRED_COMMIT_PACKS {
                self.commit()?;
            }
        }
        Ok(true)
    }

    /// Whether this ingest already took `id` (it may not be indexed yet).
    pub fn has(&self, id: &ChunkId) -> bool {
        self.seen.contains(&id.0)
    }

    fn seal(&mut self) -> Result<(), StoreError> {
        if let Some(pack) = self.pack.take() {
            let done = pack.finish().map_err(StoreError::io(&self.dir))?;
            let file = done.file.try_clone().map_err(StoreError::io(&done.tmp_path))?;
            self.sealed.push(done);
            self.syncer.sync(file).map_err(StoreError::io(&self.dir))?;
        }
        Ok(())
    }

    /// Commits the sealed packs once synced, taking the store's writer lock for it.
    fn commit(&mut self) -> Result<(), StoreError> {
        self.syncer.wait().map_err(StoreError::io(&self.dir))?;
        let _writer = self.store.write_lock();
        self.commit_all_locked()
    }

    /// Commits every sealed pack (all synced, checked) under the store's writer lock.
    fn commit_all_locked(&mut self) -> Result<(), StoreError> {
        if self.syncer.synced != self.sealed.len() {
            return Err(StoreError::Internal(format!(
                "{} packs sealed, {} synced",
                self.sealed.len(),
                self.syncer.synced
            )));
        }
        self.commit_locked(self.syncer.synced)
    }

    /// Commits the first `n` sealed packs (synced) under the store's writer lock: each takes
    /// the store's next pack number, and blobs another writer committed since this ingest took
    /// them are left out of the index (their bytes stay in the pack, as garbage).
    fn commit_locked(&mut self, n: usize) -> Result<(), StoreError> {
        if n > self.syncer.synced || n > self.sealed.len() {
            return Err(StoreError::Internal(format!(
                "asked to commit {n} packs, {} sealed, {} synced",
                self.sealed.len(),
                self.syncer.synced
            )));
        }
        for id in self.relied.drain(..) {
            if !self.store.has(&id)? {
                return Err(StoreError::Internal(format!(
                    "blob {id} was collected while this ingest relied on it; try again"
                )));
            }
        }
        let mut number = self.store.next_pack_number()?;
        let mut ids = Vec::new();
        let mut empty = Vec::new();
        for (i, pack) in self.sealed[..n].iter_mut().enumerate() {
            let before = pack.entries.len();
            let mut kept = Vec::with_capacity(before);
            for entry in pack.entries.drain(..) {
                let id = ChunkId(entry.0.id);
                if self.store.has(&id)? {
                    // Another writer's copy serves: kept for what this ingest adds.
                    ids.push(id);
                } else {
                    kept.push(entry);
                }
            }
            pack.entries = kept;
            self.added -= (before - pack.entries.len()) as u64;
            if pack.entries.is_empty() {
                empty.push(i);
                continue;
            }
            pack.number = number;
            number += 1;
            ids.extend(pack.entries.iter().map(|(e, _)| ChunkId(e.id)));
        }
        let mut n = n;
        for i in empty.into_iter().rev() {
            let pack = self.sealed.remove(i);
            let _ = std::fs::remove_file(&pack.tmp_path);
            n -= 1;
            self.syncer.synced -= 1;
        }
        let packs: Vec<&FinishedPack> = self.sealed[..n].iter().collect();
        commit_packs(self.store, &packs, &[])?;
        self.sealed.drain(..n);
        self.syncer.synced -= n;
        self.store.pin(&ids);
        self.pinned.extend(ids);
        Ok(())
    }

    /// Commits what is left; returns how many blobs this ingest added.
    pub fn finish(mut self) -> Result<u64, StoreError> {
        self.seal()?;
        self.commit()?;
        Ok(self.added)
    }

    /// [`Ingest::finish`], then `f` with the store's writer lock still held: nothing (a gc, a
    /// reclaim) can take what was just added before `f` records it.
    pub fn finish_then<T>(mut self, f: impl FnOnce() -> T) -> Result<(u64, T), StoreError> {
        self.seal()?;
        self.syncer.wait().map_err(StoreError::io(&self.dir))?;
        let _writer = self.store.write_lock();
        self.commit_all_locked()?;
        Ok((self.added, f()))
    }
}

impl Drop for Ingest<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.pack.take() {
            p.discard();
        }
        for p in self.sealed.drain(..) {
            let _ = std::fs::remove_file(&p.tmp_path);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        self.store.unpin(&self.pinned);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::home::Home;
    use crate::keys::Identity;

    fn store() -> (tempfile::TempDir, Arc<Store>) {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::init(&dir.path().join("home"), Identity::generate()).unwrap();
        let store = Store::open(&home, "a test").unwrap();
        (dir, Arc::new(store))
    }

    fn blob(n: u8) -> (ChunkId, Vec<u8>) {
        let bytes = vec![n; 4096 + n as usize];
        (ChunkId::of(&bytes), bytes)
    }

    /// Finding 9 of the chaos run: a fetch held the store's writer lock while it waited for a
    /// stalled peer, and every put, removal and reclaim of the node waited behind it.
    #[test]
    fn a_fetch_waiting_for_its_peer_holds_up_no_other_write() {
        let (dir, store) = store();
        let mut ingest = store.ingest().unwrap();
        let (id, bytes) = blob(1);
        assert!(ingest.add(id, BlobKind::Chunk, &bytes).unwrap());
        // The ingest is open, waiting for more; another writer puts, removes and collects.
        let file = dir.path().join("f");
        std::fs::write(&file, b"a file put while a fetch waits").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let other = store.clone();
        std::thread::spawn(move || {
            let r = (|| {
                let put = other.put(&file, None)?;
                other.remove(&put.id)?;
                other.gc()
            })();
            let _ = tx.send(r.map(|_| ()));
        });
        // A bound for a hang, not a measure of speed: the put takes milliseconds.
        let done = rx.recv_timeout(Duration::from_secs(60));
        assert!(matches!(done, Ok(Ok(()))), "the other writer waited behind the ingest: {done:?}");
        assert_eq!(ingest.finish().unwrap(), 1);
        assert_eq!(store.read_blob(&id).unwrap().unwrap().1, bytes);
    }

    #[test]
    fn what_an_unfinished_ingest_committed_is_kept_from_gc_until_it_ends() {
        let (_dir, store) = store();
        let mut ingest = store.ingest().unwrap();
        let (id, bytes) = blob(2);
        ingest.add(id, BlobKind::Chunk, &bytes).unwrap();
        ingest.seal().unwrap();
        ingest.commit().unwrap();
        assert!(store.has(&id).unwrap());
        store.gc().unwrap();
        assert!(store.has(&id).unwrap(), "gc took a blob an ingest still running committed");
        drop(ingest);
        // Nothing refers to it and nothing holds it now.
        store.gc().unwrap();
        assert!(!store.has(&id).unwrap());
        assert!(
            std::fs::read_dir(store.dir().join(super::super::INCOMING_DIR))
                .unwrap()
                .next()
                .is_none()
        );
    }

    /// Blob `n` of 4 MiB, distinct: four fill a pack.
    fn big_blob(n: u32) -> (ChunkId, Vec<u8>) {
        let mut bytes = vec![0u8; 4 << 20];
        for (i, w) in bytes.chunks_mut(4).enumerate() {
            w.copy_from_slice(&(n.wrapping_mul(0x9e37_79b9) ^ i as u32).to_le_bytes());
        }
        (ChunkId::of(&bytes), bytes)
    }

    /// Receiving does not wait for the disk: sealed packs are committed once synced, the first
    /// ones first, never before their sync; while another writer holds the lock they wait.
    #[test]
    fn synced_packs_are_committed_in_order_while_the_ingest_goes_on() {
        let (_dir, store) = store();
        let mut ingest = store.ingest().unwrap();
        // Syncs happen only as the test lets them.
        let (let_sync, gate) = std::sync::mpsc::channel();
        ingest.syncer = Syncer::start_gated(Some(gate));
        let per_pack = 4;
        let held = INDEX_CHECKPOINT_PACKS + 1;
        let add = |ingest: &mut Ingest<'_>, range: std::ops::Range<u32>| -> Vec<ChunkId> {
            range
                .map(|n| {
                    let (id, b) = big_blob(n);
                    assert!(ingest.add(id, BlobKind::Chunk, &b).unwrap());
                    id
                })
                .collect()
        };
        let first = (per_pack * held) as u32;
        let ids = {
            // Another writer holds the lock: the sealed packs wait, synced but uncommitted.
            let _other = store.write_lock();
            for _ in 0..held {
                let_sync.send(()).unwrap();
            }
            let ids = add(&mut ingest, 0..first);
            assert_eq!(ingest.sealed.len(), held);
            ingest.syncer.wait().unwrap();
            assert_eq!(ingest.syncer.synced, held);
            // Synced packs left the page cache (docs/architecture.md, "The page cache").
            for p in &ingest.sealed {
                let pages = p.size.div_ceil(4096) as usize;
                let f = std::fs::File::open(&p.tmp_path).unwrap();
                let left = crate::fsutil::cached_pages(&f).unwrap();
                assert!(left < pages / 8, "{left} of {pages} pages of a synced pack cached");
            }
            assert!(!store.has(&ids[0]).unwrap());
            ids
        };
        // The next pack is sealed with its sync held back: the add returns, and commits every
        // synced pack but that one.
        let next = add(&mut ingest, first..first + per_pack as u32);
        assert_eq!(ingest.sealed.len(), 1);
        for id in &ids {
            assert!(store.has(id).unwrap(), "a synced pack was not committed");
        }
        for id in &next {
            assert!(!store.has(id).unwrap(), "a pack was committed before its sync");
        }
        let_sync.send(()).unwrap();
        let last = add(&mut ingest, first + per_pack as u32..first + per_pack as u32 + 1);
        let_sync.send(()).unwrap();
        assert_eq!(ingest.finish().unwrap(), u64::from(first) + per_pack as u64 + 1);
        for (n, id) in ids.iter().chain(&next).chain(&last).enumerate() {
            assert_eq!(store.read_blob(id).unwrap().unwrap().1, big_blob(n as u32).1);
        }
    }

    /// A failed sync fails the ingest, and nothing after it is committed.
    #[test]
    fn a_pack_whose_sync_is_not_heard_of_is_never_committed() {
        let (_dir, store) = store();
        let mut ingest = store.ingest().unwrap();
        let (let_sync, gate) = std::sync::mpsc::channel::<()>();
        ingest.syncer = Syncer::start_gated(Some(gate));
        let (id, b) = big_blob(1);
        ingest.add(id, BlobKind::Chunk, &b).unwrap();
        ingest.seal().unwrap();
        // The syncer's thread ends without syncing it.
        drop(let_sync);
        let err = ingest.finish().unwrap_err();
        assert!(err.to_string().contains("syncer stopped"), "{err}");
        assert!(!store.has(&id).unwrap());
    }

    #[test]
    fn two_ingests_of_the_same_blob_index_it_once() {
        let (_dir, store) = store();
        let (a_id, a) = blob(3);
        let (b_id, b) = blob(4);
        let mut first = store.ingest().unwrap();
        let mut second = store.ingest().unwrap();
        first.add(a_id, BlobKind::Chunk, &a).unwrap();
        second.add(a_id, BlobKind::Chunk, &a).unwrap();
        second.add(b_id, BlobKind::Chunk, &b).unwrap();
        assert_eq!(first.finish().unwrap(), 1);
        // The second finds `a` committed by the first: it adds only `b`.
        assert_eq!(second.finish().unwrap(), 1);
        assert_eq!(store.read_blob(&a_id).unwrap().unwrap().1, a);
        assert_eq!(store.read_blob(&b_id).unwrap().unwrap().1, b);
        let report = store.verify(None).unwrap();
        assert!(report.damaged_blobs.is_empty() && report.unindexed_packs.is_empty(), "{report:?}");
        assert_eq!(report.blobs, 2);
        // The second copy of `a`, in the second ingest's pack, is garbage that gc gives back.
        let keep: HashSet<ChunkId> = [a_id, b_id].into();
        let gc = store.gc_keeping(&keep).unwrap();
        assert_eq!(gc.packs_rewritten, 1, "{gc:?}");
        assert_eq!(gc.bytes_unreferenced_kept, 0, "{gc:?}");
        assert_eq!(store.read_blob(&b_id).unwrap().unwrap().1, b);
    }

    #[test]
    fn a_blob_an_ingest_found_in_the_store_is_kept_from_gc_until_it_ends() {
        let (_dir, store) = store();
        let (id, bytes) = blob(6);
        // An earlier fetch left it, unreferenced (as a blob a pool released may be).
        let mut first = store.ingest().unwrap();
        first.add(id, BlobKind::Chunk, &bytes).unwrap();
        first.finish().unwrap();
        // This ingest finds it and does not write it again: what it adds may refer to it.
        let mut second = store.ingest().unwrap();
        assert!(!second.add(id, BlobKind::Chunk, &bytes).unwrap());
        store.gc().unwrap();
        assert!(store.has(&id).unwrap(), "gc took a blob an ingest still running relies on");
        let (added, still) = second.finish_then(|| store.has(&id).unwrap()).unwrap();
        assert_eq!(added, 0);
        assert!(still);
        store.gc().unwrap();
        assert!(!store.has(&id).unwrap());
    }

    #[test]
    fn an_ingest_left_by_a_crash_is_cleared_when_the_store_opens() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::init(&dir.path().join("home"), Identity::generate()).unwrap();
        let store = Store::open(&home, "a test").unwrap();
        let mut ingest = store.ingest().unwrap();
        let (id, bytes) = blob(5);
        ingest.add(id, BlobKind::Chunk, &bytes).unwrap();
        ingest.seal().unwrap();
        // A crash: nothing runs the ingest's drop.
        std::mem::forget(ingest);
        let incoming = store.dir().join(super::super::INCOMING_DIR);
        assert!(std::fs::read_dir(&incoming).unwrap().next().is_some());
        drop(store);
        let store = Store::open(&home, "a test").unwrap();
        assert!(std::fs::read_dir(&incoming).unwrap().next().is_none());
        assert!(!store.has(&id).unwrap());
    }
}
