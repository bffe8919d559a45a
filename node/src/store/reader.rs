//! Reading blobs back from the packs, verified against their ids.

use std::collections::HashMap;
use std::fs::File;
use std::io;

use super::envelope::{self, OpenError};
use super::pack::{self, BlobKind, BlobLocation};
use super::tree::ChunkRef;
use super::{Store, StoreError};
use crate::ids::ChunkId;

/// Open pack files a blob reader keeps.
const OPEN_PACKS: usize = 64;

/// Reads blobs, verifying each against its id; keeps a few packs open. One per thread.
pub struct BlobReader<'s> {
    store: &'s Store,
    open: HashMap<u64, File>,
    /// Drop each blob's pages from the page cache once read.
    uncache: bool,
}

impl<'s> BlobReader<'s> {
    pub(crate) fn new(store: &'s Store) -> Self {
        Self { store, open: HashMap::new(), uncache: false }
    }

    /// Whether the blobs read next leave the page cache once read: a restore turns it on for
    /// a large file's chunks, so a restore of many GiB does not push everything else out of
    /// the cache (and, on a machine whose host takes free pages back, reuses warm pages). Not
    /// for small files: a drop costs a system call and a drain of the page lists.
    pub(crate) fn set_uncache(&mut self, on: bool) {
        self.uncache = on;
    }

    /// Reads the stored bytes of blob `id`, verified.
    pub(crate) fn read(&mut self, id: &ChunkId) -> Result<Vec<u8>, StoreError> {
        self.read_with_kind(id)?.map(|(_, b)| b).ok_or(StoreError::Missing { chunk: *id })
    }

    /// Reads blob `id` with its kind, verified; `None` if the index does not know it. A pack
    /// that vanished under us (a concurrent gc moved the blob) is looked up once more.
    pub fn read_with_kind(
        &mut self,
        id: &ChunkId,
    ) -> Result<Option<(BlobKind, Vec<u8>)>, StoreError> {
        for attempt in 0..2 {
            let Some(loc) = self.store.index().blob(id)? else { return Ok(None) };
            match self.read_at(id, &loc) {
                Err(StoreError::Io { source, .. })
                    if attempt == 0 && source.kind() == io::ErrorKind::NotFound =>
                {
                    self.open.remove(&loc.pack);
                }
                other => return other.map(|b| Some((loc.kind, b))),
            }
        }
        Ok(None)
    }

    /// Reads blob `id` at a known location, verified.
    pub(crate) fn read_at(
        &mut self,
        id: &ChunkId,
        loc: &BlobLocation,
    ) -> Result<Vec<u8>, StoreError> {
        if loc.len > pack::MAX_BLOB_BYTES {
            return Err(StoreError::Damaged { chunk: *id, reason: "index entry too large".into() });
        }
        let (uncache, store) = (self.uncache, self.store);
        let file = self.file(loc.pack)?;
        let bytes = pack::read_at(file, loc.offset, loc.len).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                StoreError::Damaged {
                    chunk: *id,
                    reason: format!("pack {} is truncated", loc.pack),
                }
            } else {
                StoreError::Io { path: store.pack_path(loc.pack), source: e }
            }
        })?;
        if uncache {
            crate::fsutil::uncache(file, loc.offset, u64::from(loc.len));
        }
        if ChunkId::of(&bytes) != *id {
            return Err(StoreError::Damaged {
                chunk: *id,
                reason: format!("its bytes do not match its hash (pack {:016x})", loc.pack),
            });
        }
        Ok(bytes)
    }

    /// Reads and opens a chunk: verified, decrypted, decompressed, key checked.
    pub(crate) fn open_chunk(&mut self, r: &ChunkRef) -> Result<Vec<u8>, StoreError> {
        let id = r.chunk_id();
        let sealed = self.read(&id)?;
        envelope::open(&self.store.keys, &sealed, &r.chunk_key(), r.len)
            .map_err(|e: OpenError| StoreError::Damaged { chunk: id, reason: e.to_string() })
    }

    fn file(&mut self, n: u64) -> Result<&File, StoreError> {
        if !self.open.contains_key(&n) {
            if self.open.len() >= OPEN_PACKS {
                self.open.clear();
            }
            let path = self.store.pack_path(n);
            let f = File::open(&path).map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => StoreError::Io {
                    path: path.clone(),
                    source: io::Error::new(e.kind(), "pack file is missing"),
                },
                _ => StoreError::Io { path: path.clone(), source: e },
            })?;
            self.open.insert(n, f);
        }
        Ok(&self.open[&n])
    }
}
