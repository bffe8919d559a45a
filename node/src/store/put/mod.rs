//! `put`: a file or folder tree in, a new object version out.
//!
//! Four kinds of threads form a pipeline:
//!
//! ```text
//! walker ──chunks──▶ workers (hash, dedup, compress, encrypt) ──┐
//!    └──────────── items in tree order ─────────────────────────┴─▶ writer (this thread)
//!                                                      packs ──▶ sealer (fsync, index commit)
//! ```
//!
//! The walker reads files in tree order and cuts them; unchanged files (same size, times and
//! inode as in the previous version) are not read at all. Workers seal chunks in parallel;
//! the writer takes results in tree order, appends new blobs to packs and builds the tree
//! stream. The sealer syncs each full pack, renames it into place and records it in the index,
//! so an interrupted put leaves only complete, indexed, unreferenced packs (the next put
//! deduplicates against them, `gc` reclaims them) and never a visible half object. A put that
//! fails removes the packs it added.

mod sealer;
mod walker;
mod workers;
mod writer;

use std::collections::HashMap;
use std::fs::{self, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, bounded};

use super::chunker::{Cutter, DATA_CHUNKS, TREE_CHUNKS};
use super::envelope::Sealer;
use super::index::ObjectRow;
use super::root::EntryKind;
use super::tree::{Item, TreeStats, TreeWriter};
use super::{Progress, Store, StoreError, absolute, clear_dir};
use crate::ids::ObjectId;
use crate::keys::now_ms;
use sealer::{SealJob, rollback, sealer};
use walker::Batch;
use walker::{CachedFile, WalkStats, Walker, load_cache, scan_total, unsupported};
use workers::{Job, Pending, SealedChunk, SmallFile, worker};
use writer::Writer;

pub(super) use sealer::commit_packs;

/// Files up to this size are read whole instead of streamed through the chunker.
const SMALL_FILE: u64 = 1 << 20;
/// Data read but not yet written is counted in units of this size...
const SLOT_BYTES: u64 = 64 << 10;
/// ...and at most this many units may be in flight: bounds memory to 64 MiB, while many
/// small files still keep both workers busy.
const MAX_IN_FLIGHT: usize = 1024;
/// Items waiting for the writer in tree order (cheap: chunk slots bound the heavy ones). A
/// batch of small files is one of them, with at most `BATCH_ENTRIES` entries: at most 64 Ki
/// items (about 13 MiB of paths and metadata) wait beside the data in flight.
const ORDER_QUEUE: usize = 1024;
/// A batch of small files is sent to a worker once it holds this many bytes of files...
const BATCH_BYTES: u64 = 256 << 10;
/// ...or this many files, or this many entries in all (files and the items listed between).
const BATCH_FILES: usize = 64;
const BATCH_ENTRIES: usize = 64;
// A batch not yet sent holds its files' in-flight units: far fewer than the limit, so the
// walker never waits for units that only its own batch holds.
const _: () = assert!(
    (BATCH_BYTES + SMALL_FILE).div_ceil(SLOT_BYTES) as usize + BATCH_FILES < MAX_IN_FLIGHT / 4
);
/// Full packs waiting to be synced and indexed.
const SEAL_QUEUE: usize = 16;
/// Packs recorded in the index per commit (128 MiB of data). Chunk ids are random, so each
/// commit rewrites index pages all over the tree: committing per batch, not per pack, keeps the
/// index small and its writes few. A put killed mid-way keeps every batch it committed.
pub const INDEX_CHECKPOINT_PACKS: usize = 8;

/// What a put did.
#[derive(Debug, Clone, Default)]
pub struct PutStats {
    /// Regular files in the object.
    pub files: u64,
    /// Folders in the object.
    pub dirs: u64,
    /// Symbolic links in the object.
    pub symlinks: u64,
    /// Files not read again because they did not change since the previous version.
    pub files_unchanged: u64,
    /// Bytes in the object's files.
    pub bytes_scanned: u64,
    /// Bytes read from disk (changed and new files).
    pub bytes_read: u64,
    /// Chunks of file data the store did not have.
    pub chunks_new: u64,
    /// Plaintext bytes of those chunks.
    pub bytes_new: u64,
    /// Bytes added to the store (data, tree and root, compressed and encrypted).
    pub bytes_stored: u64,
    /// Wall time.
    pub elapsed: Duration,
}

/// The result of a put.
#[derive(Debug, Clone)]
pub struct PutReport {
    /// The new object.
    pub id: ObjectId,
    /// Its version number for its source path.
    pub version: u32,
    /// The absolute source path.
    pub source: PathBuf,
    /// Counts.
    pub stats: PutStats,
    /// Things skipped or worked around, for the user to read.
    pub warnings: Vec<String>,
}

enum Ordered {
    Item(Item),
    Chunk {
        units: u64,
        receipt: Receiver<Result<SealedChunk, StoreError>>,
    },
    /// Small files that one worker reads and seals, with the items listed between them; each
    /// file's `File` item is written when the batch arrives.
    SmallFiles {
        units: u64,
        entries: Vec<Batched>,
        receipt: Receiver<Vec<Result<SmallFile, StoreError>>>,
    },
    Fail(StoreError),
}

/// An entry of a batch of small files, in tree order.
enum Batched {
    /// An item listed while the batch was open (a folder, a symlink, an unchanged file).
    Item(Item),
    /// A small file: its header, and the path the worker reads.
    File { header: Item, path: PathBuf },
}

pub(super) fn put(
    store: &Store,
    path: &Path,
    recorded_as: Option<&Path>,
    progress: Option<Arc<Progress>>,
) -> Result<PutReport, StoreError> {
    let started = Instant::now();
    let source = absolute(path)?;
    // What the object is recorded under (its lineage, `kith ls`): the path, or a label.
    let recorded = recorded_as.map_or_else(|| source.clone(), Path::to_path_buf);
    let md = fs::symlink_metadata(&source)
        .map_err(|e| StoreError::Source { path: path.to_path_buf(), source: e })?;
    if let Some(what) = unsupported(&md) {
        return Err(StoreError::Unsupported { path: path.to_path_buf(), what });
    }
    let source_bytes = recorded.as_os_str().as_bytes().to_vec();
    let lineage = store.keys.lineage(&source_bytes);
    let parent = store.index().versions(&lineage)?.last().map(|(_, id)| *id);
    let mut warnings = Vec::new();
    let cache = match parent {
        Some(p) => load_cache(store, &p).unwrap_or_else(|e| {
            warnings
                .push(format!("the previous version cannot be read, so every file is read: {e}"));
            HashMap::new()
        }),
        None => HashMap::new(),
    };
    clear_dir(&store.tmp_dir())?;

    let kind = match md.file_type() {
        t if t.is_dir() => EntryKind::Dir,
        t if t.is_symlink() => EntryKind::Symlink,
        _ => EntryKind::File,
    };
    let ctx = RootContext { kind, source_bytes, parent, created_ms: now_ms() };
    let (outcome, committed) = run(store, &source, md, &cache, &ctx, progress, &mut warnings);
    let result = outcome.and_then(|(id, mut stats)| {
        let version = store.index().last_version_number(&lineage)? + 1;
        let row = ObjectRow { id, lineage, version, created_ms: ctx.created_ms };
        store.record(row)?;
        stats.elapsed = started.elapsed();
        Ok(PutReport { id, version, source: recorded.clone(), stats, warnings })
    });
    if result.is_err() {
        // Best effort: the error the user sees is the original one; gc removes what stays.
        let _ = clear_dir(&store.tmp_dir());
        let _ = rollback(store, &committed);
    }
    result
}

struct RootContext {
    kind: EntryKind,
    source_bytes: Vec<u8>,
    parent: Option<ObjectId>,
    created_ms: u64,
}

type Outcome = Result<(ObjectId, PutStats), StoreError>;

/// Runs the pipeline; returns the outcome and the packs committed to the index.
fn run(
    store: &Store,
    source: &Path,
    md: Metadata,
    cache: &HashMap<Vec<u8>, CachedFile>,
    ctx: &RootContext,
    progress: Option<Arc<Progress>>,
    warnings: &mut Vec<String>,
) -> (Outcome, Vec<u64>) {
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let pending = Pending::default();
    let seal_failed = AtomicBool::new(false);
    let aborted = AtomicBool::new(false);
    let walk_done = AtomicBool::new(false);
    let cutter = &Cutter::new(DATA_CHUNKS, store.keys.cdc_seed());
    let next_pack = match store.next_pack_number() {
        Ok(n) => n,
        Err(e) => return (Err(e), Vec::new()),
    };

    std::thread::scope(|s| {
        let (job_tx, job_rx) = bounded::<Job>(workers * 2);
        let (order_tx, order_rx) = bounded::<Ordered>(ORDER_QUEUE);
        let (slot_tx, slot_rx) = bounded::<()>(MAX_IN_FLIGHT);
        let (seal_tx, seal_rx) = bounded::<SealJob>(SEAL_QUEUE);

        for _ in 0..workers {
            let jobs = job_rx.clone();
            let pending = &pending;
            named(s, "kith-seal-chunks", move || worker(store, pending, cutter, jobs));
        }
        drop(job_rx);
        match progress.clone() {
            Some(p) if p.skip_total => {}
            Some(p) if md.is_dir() => {
                let done = &walk_done;
                named(s, "kith-scan", move || scan_total(source, &p, done));
            }
            Some(p) => {
                p.bytes_total.store(md.len(), Ordering::Relaxed);
                p.total_known.store(true, Ordering::Relaxed);
            }
            None => {}
        }
        let sealer_handle = {
            let (pending, failed, aborted) = (&pending, &seal_failed, &aborted);
            named(s, "kith-seal-packs", move || sealer(store, pending, seal_rx, failed, aborted))
        };
        let walker_handle = named(s, "kith-walk", move || {
            let mut w = Walker {
                cutter,
                buf: Vec::new(),
                cache,
                jobs: job_tx,
                order: order_tx,
                slots: slot_tx,
                batch: Batch::default(),
                stats: WalkStats::default(),
                warnings: Vec::new(),
            };
            w.run(source, md);
            (w.stats, w.warnings)
        });

        let mut writer = Writer {
            store,
            pending: &pending,
            sealer: Sealer::new(),
            tree: TreeWriter::new(Cutter::new(TREE_CHUNKS, store.keys.cdc_seed())),
            tree_refs: Vec::new(),
            pack: None,
            pack_tokens: Vec::new(),
            next_pack,
            seal_tx,
            seal_failed: &seal_failed,
            tree_stats: TreeStats::default(),
            stats: PutStats::default(),
            progress,
            slots: slot_rx,
            bytes_read: 0,
            warnings: Vec::new(),
        };
        let written = writer.run(order_rx).and_then(|()| writer.finish(ctx));
        if written.is_err() {
            // Nothing more gets committed; the open pack goes.
            aborted.store(true, Ordering::SeqCst);
            if let Some(pack) = writer.pack.take() {
                pack.discard();
            }
        }
        let mut stats = writer.stats.clone();
        stats.bytes_read = writer.bytes_read;
        warnings.append(&mut writer.warnings);
        drop(writer); // closes the seal queue and the chunk slots, so the other threads end
        walk_done.store(true, Ordering::Relaxed);
        let (walk_stats, walk_warnings) = walker_handle.join().unwrap_or_default();
        let (committed, seal_error) = sealer_handle.join().unwrap_or_else(|_| {
            (Vec::new(), Some(StoreError::Internal("the pack sealer panicked".into())))
        });
        warnings.extend(walk_warnings);
        let outcome = match (written, seal_error) {
            (_, Some(e)) => Err(e),
            (Err(e), None) => Err(e),
            (Ok((id, tree_stats)), None) => Ok((id, merge_stats(stats, tree_stats, walk_stats))),
        };
        (outcome, committed)
    })
}

/// Spawns a named scoped thread (names show in `top -H` and profilers).
pub(super) fn named<'scope, T: Send + 'scope>(
    s: &'scope std::thread::Scope<'scope, '_>,
    name: &str,
    f: impl FnOnce() -> T + Send + 'scope,
) -> std::thread::ScopedJoinHandle<'scope, T> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn_scoped(s, f)
        .expect("the system can start a thread")
}

fn merge_stats(mut s: PutStats, t: TreeStats, w: WalkStats) -> PutStats {
    s.files = t.files;
    s.dirs = t.dirs;
    s.symlinks = t.symlinks;
    s.files_unchanged = w.files_unchanged;
    s.bytes_scanned = w.bytes_scanned;
    s.bytes_read += w.bytes_read;
    s
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    use crate::{Home, Progress, Store};

    /// A put whose counters need no total counts the files it stores, and does not walk the
    /// folder a second time to count their bytes first.
    #[test]
    fn a_put_without_a_total_counts_what_it_stores_and_nothing_before() {
        let dir = tempfile::tempdir().unwrap();
        let (home, _) = Home::open_or_init(&dir.path().join("home")).unwrap();
        let store = Store::open(&home, "test").unwrap();
        let src = dir.path().join("src");
        let mut bytes = 0;
        for d in 0..20 {
            std::fs::create_dir_all(src.join(format!("d{d}"))).unwrap();
            for f in 0..10 {
                let data = vec![(d * 10 + f) as u8; 1000 + d * 100 + f];
                bytes += data.len() as u64;
                std::fs::write(src.join(format!("d{d}/f{f}")), data).unwrap();
            }
        }
        let p = Arc::new(Progress::without_total());
        let report = store.put(&src, Some(p.clone())).unwrap();
        assert_eq!(report.stats.files, 200);
        assert_eq!(p.files_done.load(Ordering::Relaxed), 200);
        assert_eq!(p.bytes_done.load(Ordering::Relaxed), bytes);
        assert_eq!(p.bytes_total.load(Ordering::Relaxed), 0, "the folder was counted");
        assert!(!p.total_known.load(Ordering::Relaxed));
    }
}
