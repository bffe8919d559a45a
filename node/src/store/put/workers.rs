//! The workers: hash, deduplicate, compress and encrypt chunks, and read small files whole.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crossbeam_channel::{Receiver, Sender};

use super::{SMALL_FILE, Store, StoreError};
use crate::store::chunker::Cutter;
use crate::store::envelope::{Compression, Sealer};
use crate::store::tree::ChunkRef;

pub(super) enum Job {
    Chunk {
        data: Vec<u8>,
        compression: Compression,
        reply: Sender<Result<SealedChunk, StoreError>>,
    },
    /// Small files, read and sealed in order by one worker: one job, one reply and one
    /// wake-up for many files (most files of a tree are a few KiB).
    /// Each path comes with the size the walker saw (the read's first guess; the file may have
    /// changed since).
    Files { files: Vec<(PathBuf, u64)>, reply: Sender<Vec<Result<SmallFile, StoreError>>> },
}

/// What a worker made of a small file.
pub(super) enum SmallFile {
    Sealed {
        chunks: Vec<SealedChunk>,
        size: u64,
    },
    /// Gone between listing and reading.
    Vanished,
    /// Larger than a small file by the time it was read: the writer streams it.
    Grew,
}

pub(super) struct SealedChunk {
    pub(super) chunk: ChunkRef,
    pub(super) token: [u8; 32],
    /// The envelope, unless the store already holds this chunk.
    pub(super) envelope: Option<Vec<u8>>,
}

/// Blobs written to packs that the index does not list yet.
#[derive(Default)]
pub(super) struct Pending {
    inner: Mutex<PendingInner>,
}

#[derive(Default)]
pub(super) struct PendingInner {
    pub(super) tokens: HashMap<[u8; 32], [u8; 32]>,
    pub(super) ids: HashSet<[u8; 32]>,
}

impl Pending {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, PendingInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub(super) fn worker(store: &Store, pending: &Pending, cutter: &Cutter, jobs: Receiver<Job>) {
    let mut sealer = Sealer::new();
    for job in jobs {
        match job {
            Job::Chunk { data, compression, reply } => {
                let _ = reply.send(seal_chunk(store, pending, &mut sealer, &data, compression));
            }
            Job::Files { files, reply } => {
                let read = files
                    .iter()
                    .map(|(path, size)| {
                        seal_small_file(store, pending, cutter, &mut sealer, path, *size)
                    })
                    .collect();
                let _ = reply.send(read);
            }
        }
    }
}

fn seal_small_file(
    store: &Store,
    pending: &Pending,
    cutter: &Cutter,
    sealer: &mut Sealer,
    path: &Path,
    size: u64,
) -> Result<SmallFile, StoreError> {
    let read_err = |e| StoreError::Source { path: path.to_path_buf(), source: e };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SmallFile::Vanished),
        Err(e) => return Err(read_err(e)),
    };
    // The walker's size, not a second stat: one system call less for each of the many
    // small files. A file that grew meanwhile only costs the Vec a reallocation.
    let mut data = Vec::with_capacity(size.min(SMALL_FILE) as usize + 1);
    file.take(SMALL_FILE + 1).read_to_end(&mut data).map_err(read_err)?;
    if data.len() as u64 > SMALL_FILE {
        return Ok(SmallFile::Grew);
    }
    let compression = Compression::for_head(&data);
    let chunks = cutter
        .pieces(&data)
        .map(|c| seal_chunk(store, pending, sealer, c, compression))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SmallFile::Sealed { chunks, size: data.len() as u64 })
}

pub(super) fn seal_chunk(
    store: &Store,
    pending: &Pending,
    sealer: &mut Sealer,
    data: &[u8],
    compression: Compression,
) -> Result<SealedChunk, StoreError> {
    let key = store.keys.chunk_key(data);
    let token = store.keys.token(&key);
    let len = data.len() as u32;
    let known = pending.lock().tokens.get(&token).copied();
    let known = match known {
        Some(id) => Some(id),
        None => store.index().token(&token)?,
    };
    if let Some(id) = known {
        return Ok(SealedChunk { chunk: ChunkRef { id, key: key.0, len }, token, envelope: None });
    }
    let (envelope, id) = sealer.seal(&key, data, compression);
    Ok(SealedChunk {
        chunk: ChunkRef { id: id.0, key: key.0, len },
        token,
        envelope: Some(envelope),
    })
}
