//! The writer: takes items and sealed chunks in tree order, appends new blobs to packs, builds
//! the tree stream and, at the end, the root.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, Sender};

use super::workers::seal_chunk;
use super::{
    Batched, Ordered, Pending, Progress, PutStats, RootContext, SealJob, SealedChunk, SmallFile,
    Store, StoreError,
};
use crate::ids::{ChunkId, ObjectId};
use crate::store::chunker::{CHUNKER_NAME, Chunker, Cutter, DATA_CHUNKS, TREE_CHUNKS};
use crate::store::envelope::{Compression, Sealer};
use crate::store::pack::{BlobKind, PACK_TARGET_BYTES, PackWriter};
use crate::store::root::{ROOT_VERSION, Root};
use crate::store::tree::{ChunkRef, Item, TREE_VERSION, TreeStats, TreeWriter};

pub(super) struct Writer<'a> {
    pub(super) store: &'a Store,
    pub(super) pending: &'a Pending,
    pub(super) sealer: Sealer,
    pub(super) tree: TreeWriter,
    pub(super) tree_refs: Vec<ChunkRef>,
    pub(super) pack: Option<PackWriter>,
    pub(super) pack_tokens: Vec<([u8; 32], [u8; 32])>,
    pub(super) next_pack: u64,
    pub(super) seal_tx: Sender<SealJob>,
    pub(super) seal_failed: &'a AtomicBool,
    pub(super) tree_stats: TreeStats,
    pub(super) stats: PutStats,
    pub(super) progress: Option<Arc<Progress>>,
    pub(super) slots: Receiver<()>,
    pub(super) bytes_read: u64,
    pub(super) warnings: Vec<String>,
}

impl Writer<'_> {
    pub(super) fn run(&mut self, order: Receiver<Ordered>) -> Result<(), StoreError> {
        for o in order {
            match o {
                Ordered::Item(item) => self.item(item)?,
                Ordered::Chunk { units, receipt } => {
                    let sealed = receipt.recv().map_err(|_| {
                        StoreError::Internal("a chunk worker stopped unexpectedly".into())
                    })??;
                    self.release(units);
                    self.chunk(sealed)?;
                }
                Ordered::SmallFiles { units, entries, receipt } => {
                    let read = receipt.recv().map_err(|_| {
                        StoreError::Internal("a chunk worker stopped unexpectedly".into())
                    })?;
                    let mut read = read.into_iter();
                    for entry in entries {
                        match entry {
                            Batched::Item(item) => self.item(item)?,
                            Batched::File { header, path } => {
                                let file = read.next().ok_or_else(|| {
                                    StoreError::Internal("a batch came back short".into())
                                })??;
                                self.small_file(header, &path, file)?;
                            }
                        }
                    }
                    self.release(units);
                }
                Ordered::Fail(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn release(&self, units: u64) {
        for _ in 0..units {
            let _ = self.slots.recv();
        }
    }

    fn small_file(&mut self, header: Item, path: &Path, read: SmallFile) -> Result<(), StoreError> {
        match read {
            SmallFile::Sealed { chunks, size } => {
                self.item(header)?;
                for c in chunks {
                    self.chunk(c)?;
                }
                self.bytes_read += size;
                self.item(Item::FileEnd { size })
            }
            SmallFile::Vanished => {
                self.warnings
                    .push(format!("{} vanished while being stored; skipped", path.display()));
                Ok(())
            }
            SmallFile::Grew => {
                // Rare: the file grew past the small-file size after it was listed.
                self.item(header)?;
                let file = File::open(path)
                    .map_err(|e| StoreError::Source { path: path.to_path_buf(), source: e })?;
                let cutter = Cutter::new(DATA_CHUNKS, self.store.keys.cdc_seed());
                let mut buf = Vec::new();
                let mut size = 0u64;
                let mut compression = None;
                for chunk in Chunker::new(&cutter, file, &mut buf) {
                    let data = chunk
                        .map_err(|e| StoreError::Source { path: path.to_path_buf(), source: e })?;
                    size += data.len() as u64;
                    let c = *compression.get_or_insert_with(|| Compression::for_head(&data));
                    let sealed = seal_chunk(self.store, self.pending, &mut self.sealer, &data, c)?;
                    self.chunk(sealed)?;
                }
                self.bytes_read += size;
                self.item(Item::FileEnd { size })
            }
        }
    }

    fn advance(&self, bytes: u64, files: u64) {
        if let Some(p) = &self.progress {
            p.bytes_done.fetch_add(bytes, Ordering::Relaxed);
            p.files_done.fetch_add(files, Ordering::Relaxed);
        }
    }

    fn item(&mut self, item: Item) -> Result<(), StoreError> {
        match &item {
            Item::Chunk(r) => self.advance(r.len as u64, 0),
            Item::FileEnd { size } => {
                self.tree_stats.files += 1;
                self.tree_stats.bytes += size;
                self.advance(0, 1);
            }
            Item::Dir { .. } => self.tree_stats.dirs += 1,
            Item::Symlink { .. } => self.tree_stats.symlinks += 1,
            _ => {}
        }
        self.push_tree(&item)
    }

    fn chunk(&mut self, sealed: SealedChunk) -> Result<(), StoreError> {
        let r = sealed.chunk;
        if let Some(envelope) = sealed.envelope
            && self.add_blob(r.chunk_id(), BlobKind::Chunk, &envelope, Some(sealed.token))?
        {
            self.stats.chunks_new += 1;
            self.stats.bytes_new += r.len as u64;
        }
        self.advance(r.len as u64, 0);
        self.push_tree(&Item::Chunk(r))
    }

    fn push_tree(&mut self, item: &Item) -> Result<(), StoreError> {
        self.tree.push(item);
        for chunk in self.tree.ready() {
            self.tree_chunk(chunk)?;
        }
        Ok(())
    }

    fn tree_chunk(&mut self, plain: Vec<u8>) -> Result<(), StoreError> {
        let sealed =
            seal_chunk(self.store, self.pending, &mut self.sealer, &plain, Compression::Try)?;
        if let Some(envelope) = &sealed.envelope {
            self.add_blob(sealed.chunk.chunk_id(), BlobKind::Chunk, envelope, Some(sealed.token))?;
        }
        self.tree_refs.push(sealed.chunk);
        Ok(())
    }

    /// Appends a blob unless the store has it; returns whether it was added.
    fn add_blob(
        &mut self,
        id: ChunkId,
        kind: BlobKind,
        bytes: &[u8],
        token: Option<[u8; 32]>,
    ) -> Result<bool, StoreError> {
        if self.pending.lock().ids.contains(&id.0) || self.store.index().blob(&id)?.is_some() {
            return Ok(false);
        }
        if self.pack.is_none() {
            let tmp = self.store.tmp_dir();
            self.pack =
                Some(PackWriter::create(&tmp, self.next_pack).map_err(StoreError::io(&tmp))?);
            self.next_pack += 1;
        }
        let pack = self.pack.as_mut().expect("a pack was just opened");
        pack.append(id, kind, bytes)
            .map_err(|e| StoreError::Io { path: self.store.tmp_dir(), source: e })?;
        {
            let mut p = self.pending.lock();
            p.ids.insert(id.0);
            if let Some(t) = token {
                p.tokens.insert(t, id.0);
                self.pack_tokens.push((t, id.0));
            }
        }
        self.stats.bytes_stored += bytes.len() as u64;
        if pack.len() >= PACK_TARGET_BYTES {
            self.seal_pack()?;
        }
        Ok(true)
    }

    fn seal_pack(&mut self) -> Result<(), StoreError> {
        let Some(pack) = self.pack.take() else { return Ok(()) };
        if self.seal_failed.load(Ordering::Relaxed) {
            pack.discard();
            return Err(StoreError::Internal("writing a pack failed".into()));
        }
        let tmp = self.store.tmp_dir();
        let pack = pack.finish().map_err(StoreError::io(&tmp))?;
        let tokens = std::mem::take(&mut self.pack_tokens);
        self.seal_tx
            .send(SealJob { pack, tokens })
            .map_err(|_| StoreError::Internal("the pack sealer stopped".into()))
    }

    /// Ends the tree, writes the root and seals the last pack.
    pub(super) fn finish(
        &mut self,
        ctx: &RootContext,
    ) -> Result<(ObjectId, TreeStats), StoreError> {
        self.push_tree(&Item::End(self.tree_stats))?;
        let tree = std::mem::replace(&mut self.tree, TreeWriter::new(Cutter::new(TREE_CHUNKS, 0)));
        for chunk in tree.finish() {
            self.tree_chunk(chunk)?;
        }
        let root = Root {
            version: ROOT_VERSION,
            kind: ctx.kind as u8,
            source: ctx.source_bytes.clone(),
            created_ms: ctx.created_ms,
            parent: ctx.parent.map(|p| p.0),
            device: self.store.device,
            chunker: CHUNKER_NAME.into(),
            data_chunks: DATA_CHUNKS,
            tree_chunks: TREE_CHUNKS,
            tree_version: TREE_VERSION,
            tree: std::mem::take(&mut self.tree_refs),
            stats: self.tree_stats,
        };
        let sealed = root.seal(&self.store.identity().recipient());
        let id = ObjectId::of(&sealed);
        self.add_blob(id.into(), BlobKind::Root, &sealed, None)?;
        self.seal_pack()?;
        Ok((id, self.tree_stats))
    }
}
