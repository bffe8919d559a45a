//! Ingest: blobs that arrive from peers, verified, packed and indexed.

use std::collections::HashSet;
use std::fs::File;
use std::sync::MutexGuard;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use super::pack::{BlobKind, FinishedPack, PACK_TARGET_BYTES, PackWriter};
use super::put::{INDEX_CHECKPOINT_PACKS, commit_packs};
use super::{Store, StoreError, clear_dir};
use crate::ids::ChunkId;

/// Writes blobs from elsewhere into the store. Each blob is checked against its id before it
/// is written; packs are committed to the index a batch at a time, so a long transfer that
/// stops keeps what it had. Holds the store's writer lock until finished or dropped.
pub struct Ingest<'s> {
    store: &'s Store,
    _writer: MutexGuard<'s, ()>,
    pack: Option<PackWriter>,
    sealed: Vec<FinishedPack>,
    seen: HashSet<[u8; 32]>,
    next_pack: u64,
    added: u64,
    syncer: Syncer,
}

/// Syncs finished packs on a thread of its own, so receiving goes on while the disk writes.
struct Syncer {
    tx: Option<SyncSender<File>>,
    done: Receiver<std::io::Result<()>>,
    pending: usize,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Syncer {
    fn start() -> Self {
        let (tx, rx) = sync_channel::<File>(INDEX_CHECKPOINT_PACKS);
        let (done_tx, done) = sync_channel(INDEX_CHECKPOINT_PACKS);
        let thread = std::thread::Builder::new()
            .name("kith-sync-packs".into())
            .spawn(move || {
                for f in rx {
                    if done_tx.send(f.sync_data()).is_err() {
                        break;
                    }
                }
            })
            .expect("the system can start a thread");
        Self { tx: Some(tx), done, pending: 0, thread: Some(thread) }
    }

    fn sync(&mut self, f: File) {
        if let Some(tx) = &self.tx
            && tx.send(f).is_ok()
        {
            self.pending += 1;
        }
    }

    /// Waits until every pack handed over is synced.
    fn wait(&mut self) -> std::io::Result<()> {
        let mut result = Ok(());
        while self.pending > 0 {
            self.pending -= 1;
            match self.done.recv() {
                Ok(r) => result = result.and(r),
                Err(_) => return Err(std::io::Error::other("the pack syncer stopped")),
            }
        }
        result
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
        let writer = store.write_lock();
        clear_dir(&store.tmp_dir())?;
        let next_pack = store.next_pack_number()?;
        Ok(Self {
            store,
            _writer: writer,
            pack: None,
            sealed: Vec::new(),
            seen: HashSet::new(),
            next_pack,
            added: 0,
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
        if self.seen.contains(&id.0) || self.store.index().blob(&id)?.is_some() {
            return Ok(false);
        }
        let tmp = self.store.tmp_dir();
        if self.pack.is_none() {
            self.pack =
                Some(PackWriter::create(&tmp, self.next_pack).map_err(StoreError::io(&tmp))?);
            self.next_pack += 1;
        }
        let pack = self.pack.as_mut().expect("opened above");
        pack.append_parts(id, kind, parts).map_err(StoreError::io(&tmp))?;
        self.seen.insert(id.0);
        self.added += 1;
        if pack.len() >= PACK_TARGET_BYTES {
            self.seal()?;
            if self.sealed.len() >= INDEX_CHECKPOINT_PACKS {
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
            let tmp = self.store.tmp_dir();
            let done = pack.finish().map_err(StoreError::io(&tmp))?;
            self.syncer.sync(done.file.try_clone().map_err(StoreError::io(&done.tmp_path))?);
            self.sealed.push(done);
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<(), StoreError> {
        let tmp = self.store.tmp_dir();
        self.syncer.wait().map_err(StoreError::io(&tmp))?;
        let packs: Vec<&FinishedPack> = self.sealed.iter().collect();
        commit_packs(self.store, &packs, &[])?;
        self.sealed.clear();
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
        self.commit()?;
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
    }
}
