//! The pack sealer: syncs full packs, renames them into place and records them in the index a
//! batch at a time; and the rollback of a failed put.

use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::Receiver;

use super::{INDEX_CHECKPOINT_PACKS, Pending, Store, StoreError};
use crate::ids::ChunkId;
use crate::store::index::NewPack;
use crate::store::pack::{BlobKind, BlobLocation, FinishedPack};

pub(super) struct SealJob {
    pub(super) pack: FinishedPack,
    pub(super) tokens: Vec<([u8; 32], [u8; 32])>,
}

pub(super) fn sealer(
    store: &Store,
    pending: &Pending,
    jobs: Receiver<SealJob>,
    failed: &AtomicBool,
    aborted: &AtomicBool,
) -> (Vec<u64>, Option<StoreError>) {
    let mut committed = Vec::new();
    let mut error = None;
    let mut batch: Vec<SealJob> = Vec::new();
    let fail = |e: StoreError, batch: &mut Vec<SealJob>, error: &mut Option<StoreError>| {
        failed.store(true, Ordering::Relaxed);
        for job in batch.drain(..) {
            let _ = fs::remove_file(&job.pack.tmp_path);
            let _ = fs::remove_file(store.pack_path(job.pack.number));
        }
        *error = Some(e);
    };
    for job in jobs {
        if error.is_some() || aborted.load(Ordering::SeqCst) {
            let _ = fs::remove_file(&job.pack.tmp_path);
            continue;
        }
        // Sync as packs arrive; rename and index them a batch at a time. A put's packs stay
        // in the page cache: a listing or restore soon after reads them (an ingest's packs,
        // another device's or member's data, leave it: docs/architecture.md, "The page cache").
        let synced = job.pack.file.sync_data().map_err(StoreError::io(&job.pack.tmp_path));
        batch.push(job);
        if let Err(e) = synced {
            fail(e, &mut batch, &mut error);
        } else if batch.len() >= INDEX_CHECKPOINT_PACKS {
            match commit_batch(store, &batch) {
                Ok(()) => forget_pending(pending, batch.drain(..), &mut committed),
                Err(e) => fail(e, &mut batch, &mut error),
            }
        }
    }
    if error.is_none() && !batch.is_empty() && !aborted.load(Ordering::SeqCst) {
        match commit_batch(store, &batch) {
            Ok(()) => forget_pending(pending, batch.drain(..), &mut committed),
            Err(e) => fail(e, &mut batch, &mut error),
        }
    }
    for job in batch {
        let _ = fs::remove_file(&job.pack.tmp_path);
    }
    (committed, error)
}

fn forget_pending(
    pending: &Pending,
    jobs: impl Iterator<Item = SealJob>,
    committed: &mut Vec<u64>,
) {
    let mut p = pending.lock();
    for job in jobs {
        committed.push(job.pack.number);
        for (e, _) in &job.pack.entries {
            p.ids.remove(&e.id);
        }
        for (t, _) in &job.tokens {
            p.tokens.remove(t);
        }
    }
}

/// Renames synced packs into place, then records them in the index in one transaction.
fn commit_batch(store: &Store, batch: &[SealJob]) -> Result<(), StoreError> {
    let tokens: Vec<([u8; 32], [u8; 32])> =
        batch.iter().flat_map(|j| j.tokens.iter().copied()).collect();
    let packs: Vec<&FinishedPack> = batch.iter().map(|j| &j.pack).collect();
    commit_packs(store, &packs, &tokens)
}

/// Renames synced packs from `tmp/` into `packs/`, fsyncs the folder, and records the packs,
/// their blobs and `tokens` in the index in one transaction.
pub(in crate::store) fn commit_packs(
    store: &Store,
    packs: &[&FinishedPack],
    tokens: &[([u8; 32], [u8; 32])],
) -> Result<(), StoreError> {
    let packs_dir = store.packs_dir();
    let mut rows = Vec::with_capacity(packs.len());
    for pack in packs {
        let dest = store.pack_path(pack.number);
        crate::fsutil::rename_noreplace(&pack.tmp_path, &dest).map_err(StoreError::io(&dest))?;
        let blobs: Vec<(ChunkId, BlobLocation)> = pack
            .entries
            .iter()
            .map(|(e, offset)| {
                let kind = BlobKind::from_u8(e.kind).unwrap_or(BlobKind::Chunk);
                (
                    ChunkId(e.id),
                    BlobLocation { pack: pack.number, offset: *offset, len: e.len, kind },
                )
            })
            .collect();
        rows.push(NewPack { number: pack.number, size: pack.size, data: pack.data, blobs });
    }
    crate::fsutil::sync_dir(&packs_dir).map_err(StoreError::io(&packs_dir))?;
    store.index().add_packs(&rows, tokens)?;
    Ok(())
}

/// Removes packs a failed put committed, with their index entries.
pub(super) fn rollback(store: &Store, packs: &[u64]) -> Result<(), StoreError> {
    if packs.is_empty() {
        return Ok(());
    }
    store.index().forget_packs(packs)?;
    for n in packs {
        let _ = fs::remove_file(store.pack_path(*n));
    }
    Ok(())
}
