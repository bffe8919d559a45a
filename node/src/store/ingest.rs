//! Ingest: blobs that arrive from peers, verified, packed and indexed.

use std::collections::HashSet;
use std::sync::MutexGuard;

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
}

impl<'s> Ingest<'s> {
    pub(super) fn new(store: &'s Store) -> Result<Self, StoreError> {
        let writer = store.write_lock();
        clear_dir(&store.tmp_dir())?;
        let next_pack = store.index().next_pack_number()?;
        Ok(Self {
            store,
            _writer: writer,
            pack: None,
            sealed: Vec::new(),
            seen: HashSet::new(),
            next_pack,
            added: 0,
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
        pack.append(id, kind, bytes).map_err(StoreError::io(&tmp))?;
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
            done.file.sync_data().map_err(StoreError::io(&done.tmp_path))?;
            self.sealed.push(done);
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<(), StoreError> {
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
