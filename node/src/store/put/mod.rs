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

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded};

use super::chunker::{CHUNKER_NAME, Chunker, Cutter, DATA_CHUNKS, TREE_CHUNKS};
use super::envelope::{Compression, Sealer};
use super::index::{NewPack, ObjectRow};
use super::pack::{BlobKind, BlobLocation, FinishedPack, PACK_TARGET_BYTES, PackWriter};
use super::root::{EntryKind, ROOT_VERSION, Root};
use super::tree::{ChangeKey, ChunkRef, Item, Meta, TREE_VERSION, TreeStats, TreeWriter};
use super::{Progress, Store, StoreError, absolute, clear_dir};
use crate::ids::{ChunkId, ObjectId};
use crate::keys::now_ms;

/// Files up to this size are read whole instead of streamed through the chunker.
const SMALL_FILE: u64 = 1 << 20;
/// Data read but not yet written is counted in units of this size...
const SLOT_BYTES: u64 = 64 << 10;
/// ...and at most this many units may be in flight: bounds memory to 64 MiB, while many
/// small files still keep both workers busy.
const MAX_IN_FLIGHT: usize = 1024;
/// Items waiting for the writer in tree order (cheap: chunk slots bound the heavy ones).
const ORDER_QUEUE: usize = 1024;
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
    /// A small file that a worker reads and seals; its `File` item is written on arrival.
    SmallFile {
        units: u64,
        header: Item,
        path: PathBuf,
        receipt: Receiver<Result<SmallFile, StoreError>>,
    },
    Fail(StoreError),
}

enum Job {
    Chunk {
        data: Vec<u8>,
        compression: Compression,
        reply: Sender<Result<SealedChunk, StoreError>>,
    },
    File {
        path: PathBuf,
        reply: Sender<Result<SmallFile, StoreError>>,
    },
}

/// What a worker made of a small file.
enum SmallFile {
    Sealed {
        chunks: Vec<SealedChunk>,
        size: u64,
    },
    /// Gone between listing and reading.
    Vanished,
    /// Larger than a small file by the time it was read: the writer streams it.
    Grew,
}

struct SealedChunk {
    chunk: ChunkRef,
    token: [u8; 32],
    /// The envelope, unless the store already holds this chunk.
    envelope: Option<Vec<u8>>,
}

/// Blobs written to packs that the index does not list yet.
#[derive(Default)]
struct Pending {
    inner: Mutex<PendingInner>,
}

#[derive(Default)]
struct PendingInner {
    tokens: HashMap<[u8; 32], [u8; 32]>,
    ids: HashSet<[u8; 32]>,
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, PendingInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct SealJob {
    pack: FinishedPack,
    tokens: Vec<([u8; 32], [u8; 32])>,
}

#[derive(Default)]
struct WalkStats {
    files_unchanged: u64,
    bytes_scanned: u64,
    bytes_read: u64,
}

struct CachedFile {
    change: ChangeKey,
    size: u64,
    chunks: Vec<ChunkRef>,
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
        store.index().add_object(ObjectRow { id, lineage, version, created_ms: ctx.created_ms })?;
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
    let next_pack = match store.index().next_pack_number() {
        Ok(n) => n,
        Err(e) => return (Err(e.into()), Vec::new()),
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
        if let Some(p) = progress.clone().filter(|_| md.is_dir()) {
            let done = &walk_done;
            named(s, "kith-scan", move || scan_total(source, &p, done));
        } else if let Some(p) = &progress {
            p.bytes_total.store(md.len(), Ordering::Relaxed);
            p.total_known.store(true, Ordering::Relaxed);
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

fn unsupported(md: &Metadata) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    let ft = md.file_type();
    if ft.is_file() || ft.is_dir() || ft.is_symlink() {
        None
    } else if ft.is_fifo() {
        Some("named pipe")
    } else if ft.is_socket() {
        Some("socket")
    } else if ft.is_block_device() || ft.is_char_device() {
        Some("device")
    } else {
        Some("special file")
    }
}

fn meta_of(md: &Metadata) -> Meta {
    Meta {
        mode: md.mode() & 0o7777,
        mtime_s: md.mtime(),
        mtime_ns: md.mtime_nsec() as u32,
        uid: md.uid(),
        gid: md.gid(),
    }
}

fn change_key(md: &Metadata) -> ChangeKey {
    ChangeKey {
        size: md.len(),
        mtime_ns: md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128,
        ctime_ns: md.ctime() as i128 * 1_000_000_000 + md.ctime_nsec() as i128,
        ino: md.ino(),
        dev: md.dev(),
    }
}

fn load_cache(
    store: &Store,
    parent: &ObjectId,
) -> Result<HashMap<Vec<u8>, CachedFile>, StoreError> {
    let root = store.read_root(parent)?;
    let mut reader = store.tree_reader(&root);
    let mut map = HashMap::new();
    let mut current: Option<(Vec<u8>, ChangeKey, Vec<ChunkRef>)> = None;
    while let Some(item) = reader.next_item()? {
        match item {
            Item::File { path, change, .. } => current = Some((path, change, Vec::new())),
            Item::Chunk(r) => {
                if let Some((_, _, chunks)) = &mut current {
                    chunks.push(r);
                }
            }
            Item::FileEnd { size } => {
                if let Some((path, change, chunks)) = current.take() {
                    map.insert(path, CachedFile { change, size, chunks });
                }
            }
            _ => {}
        }
    }
    Ok(map)
}

/// Sums file sizes for a progress total; stops early once the put is done.
fn scan_total(root: &Path, progress: &Progress, done: &AtomicBool) {
    let mut stack = vec![root.to_path_buf()];
    let mut total = 0u64;
    while let Some(dir) = stack.pop() {
        if done.load(Ordering::Relaxed) {
            return;
        }
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                stack.push(e.path());
            } else if md.is_file() {
                total += md.len();
            }
        }
        progress.bytes_total.store(total, Ordering::Relaxed);
    }
    progress.total_known.store(true, Ordering::Relaxed);
}

enum Stop {
    Failed(StoreError),
    WriterGone,
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Stop::Failed(e)
    }
}

struct Walker<'a> {
    cutter: &'a Cutter,
    buf: Vec<u8>,
    cache: &'a HashMap<Vec<u8>, CachedFile>,
    jobs: Sender<Job>,
    order: Sender<Ordered>,
    slots: Sender<()>,
    stats: WalkStats,
    warnings: Vec<String>,
}

impl Walker<'_> {
    fn run(&mut self, root: &Path, md: Metadata) {
        if let Err(Stop::Failed(e)) = self.walk(root, md) {
            let _ = self.order.send(Ordered::Fail(e));
        }
    }

    fn send(&self, item: Item) -> Result<(), Stop> {
        self.order.send(Ordered::Item(item)).map_err(|_| Stop::WriterGone)
    }

    fn walk(&mut self, root: &Path, md: Metadata) -> Result<(), Stop> {
        let mut stack: Vec<(PathBuf, Vec<u8>, Option<Metadata>)> =
            vec![(root.into(), Vec::new(), Some(md))];
        while let Some((abs, rel, md)) = stack.pop() {
            let md = match md {
                Some(md) => md,
                None => match fs::symlink_metadata(&abs) {
                    Ok(md) => md,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        self.warnings.push(format!(
                            "{} vanished while being stored; skipped",
                            abs.display()
                        ));
                        continue;
                    }
                    Err(e) => return Err(StoreError::Source { path: abs, source: e }.into()),
                },
            };
            let ft = md.file_type();
            if ft.is_dir() {
                self.send(Item::Dir { path: rel.clone(), meta: meta_of(&md) })?;
                let mut names = read_names(&abs)?;
                names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
                for name in names.into_iter().rev() {
                    let mut child = rel.clone();
                    if !child.is_empty() {
                        child.push(b'/');
                    }
                    child.extend_from_slice(name.as_bytes());
                    stack.push((abs.join(&name), child, None));
                }
            } else if ft.is_file() {
                self.file(&abs, rel, &md)?;
            } else if ft.is_symlink() {
                let target = fs::read_link(&abs)
                    .map_err(|e| StoreError::Source { path: abs.clone(), source: e })?;
                let target = target.as_os_str().as_bytes().to_vec();
                self.send(Item::Symlink { path: rel, meta: meta_of(&md), target })?;
            } else {
                let what = unsupported(&md).unwrap_or("special file");
                self.warnings.push(format!("{} is a {what}; skipped", abs.display()));
            }
        }
        Ok(())
    }

    fn file(&mut self, abs: &Path, rel: Vec<u8>, md: &Metadata) -> Result<(), Stop> {
        let change = change_key(md);
        self.stats.bytes_scanned += md.len();
        if let Some(c) = self.cache.get(&rel).filter(|c| c.change == change) {
            self.send(Item::File { path: rel, meta: meta_of(md), change })?;
            for r in &c.chunks {
                self.send(Item::Chunk(*r))?;
            }
            self.stats.files_unchanged += 1;
            return self.send(Item::FileEnd { size: c.size });
        }
        if md.len() <= SMALL_FILE {
            // Most files are small: a worker reads and seals them, so file reads run in
            // parallel and the walker only lists folders.
            let units = self.acquire(md.len())?;
            let (reply, receipt) = bounded(1);
            let header = Item::File { path: rel, meta: meta_of(md), change };
            self.jobs
                .send(Job::File { path: abs.to_path_buf(), reply })
                .map_err(|_| Stop::WriterGone)?;
            let item = Ordered::SmallFile { units, header, path: abs.to_path_buf(), receipt };
            return self.order.send(item).map_err(|_| Stop::WriterGone);
        }
        let file = match File::open(abs) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.warnings
                    .push(format!("{} vanished while being stored; skipped", abs.display()));
                return Ok(());
            }
            Err(e) => return Err(StoreError::Source { path: abs.to_path_buf(), source: e }.into()),
        };
        self.send(Item::File { path: rel, meta: meta_of(md), change })?;
        self.stream(file, abs)
    }

    fn stream(&mut self, file: File, abs: &Path) -> Result<(), Stop> {
        let read_err = |e| Stop::Failed(StoreError::Source { path: abs.to_path_buf(), source: e });
        let mut size = 0u64;
        let mut buf = std::mem::take(&mut self.buf);
        let mut compression = None;
        for chunk in Chunker::new(self.cutter, file, &mut buf) {
            let data = chunk.map_err(read_err)?;
            size += data.len() as u64;
            let c = *compression.get_or_insert_with(|| Compression::for_head(&data));
            self.submit(data, c)?;
        }
        self.buf = buf;
        self.stats.bytes_read += size;
        self.send(Item::FileEnd { size })
    }

    fn submit(&self, data: Vec<u8>, compression: Compression) -> Result<(), Stop> {
        let units = self.acquire(data.len() as u64)?;
        let (reply, receipt) = bounded(1);
        self.jobs.send(Job::Chunk { data, compression, reply }).map_err(|_| Stop::WriterGone)?;
        self.order.send(Ordered::Chunk { units, receipt }).map_err(|_| Stop::WriterGone)
    }

    /// Takes in-flight units for `bytes` of data; the writer gives them back.
    fn acquire(&self, bytes: u64) -> Result<u64, Stop> {
        let units = bytes.div_ceil(SLOT_BYTES).max(1);
        for _ in 0..units {
            self.slots.send(()).map_err(|_| Stop::WriterGone)?;
        }
        Ok(units)
    }
}

fn read_names(dir: &Path) -> Result<Vec<OsString>, StoreError> {
    let err = |e| StoreError::Source { path: dir.to_path_buf(), source: e };
    fs::read_dir(dir).map_err(err)?.map(|e| e.map(|e| e.file_name()).map_err(err)).collect()
}

fn worker(store: &Store, pending: &Pending, cutter: &Cutter, jobs: Receiver<Job>) {
    let mut sealer = Sealer::new();
    for job in jobs {
        match job {
            Job::Chunk { data, compression, reply } => {
                let _ = reply.send(seal_chunk(store, pending, &mut sealer, &data, compression));
            }
            Job::File { path, reply } => {
                let _ = reply.send(seal_small_file(store, pending, cutter, &mut sealer, &path));
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
) -> Result<SmallFile, StoreError> {
    let read_err = |e| StoreError::Source { path: path.to_path_buf(), source: e };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SmallFile::Vanished),
        Err(e) => return Err(read_err(e)),
    };
    let mut data = Vec::with_capacity(file.metadata().map(|m| m.len() as usize + 1).unwrap_or(0));
    file.take(SMALL_FILE + 1).read_to_end(&mut data).map_err(read_err)?;
    if data.len() as u64 > SMALL_FILE {
        return Ok(SmallFile::Grew);
    }
    let compression = Compression::for_head(&data);
    let chunks = cutter
        .split(&data)
        .iter()
        .map(|c| seal_chunk(store, pending, sealer, c, compression))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SmallFile::Sealed { chunks, size: data.len() as u64 })
}

fn seal_chunk(
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

struct Writer<'a> {
    store: &'a Store,
    pending: &'a Pending,
    sealer: Sealer,
    tree: TreeWriter,
    tree_refs: Vec<ChunkRef>,
    pack: Option<PackWriter>,
    pack_tokens: Vec<([u8; 32], [u8; 32])>,
    next_pack: u64,
    seal_tx: Sender<SealJob>,
    seal_failed: &'a AtomicBool,
    tree_stats: TreeStats,
    stats: PutStats,
    progress: Option<Arc<Progress>>,
    slots: Receiver<()>,
    bytes_read: u64,
    warnings: Vec<String>,
}

impl Writer<'_> {
    fn run(&mut self, order: Receiver<Ordered>) -> Result<(), StoreError> {
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
                Ordered::SmallFile { units, header, path, receipt } => {
                    let read = receipt.recv().map_err(|_| {
                        StoreError::Internal("a chunk worker stopped unexpectedly".into())
                    })??;
                    self.release(units);
                    self.small_file(header, &path, read)?;
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
    fn finish(&mut self, ctx: &RootContext) -> Result<(ObjectId, TreeStats), StoreError> {
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
        let sealed = root.seal(&self.store.identity.recipient());
        let id = ObjectId::of(&sealed);
        self.add_blob(id.into(), BlobKind::Root, &sealed, None)?;
        self.seal_pack()?;
        Ok((id, self.tree_stats))
    }
}

fn sealer(
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
        // Sync as packs arrive; rename and index them a batch at a time.
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
pub(super) fn commit_packs(
    store: &Store,
    packs: &[&FinishedPack],
    tokens: &[([u8; 32], [u8; 32])],
) -> Result<(), StoreError> {
    let packs_dir = store.packs_dir();
    let mut rows = Vec::with_capacity(packs.len());
    for pack in packs {
        let dest = store.pack_path(pack.number);
        fs::rename(&pack.tmp_path, &dest).map_err(StoreError::io(&dest))?;
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
        rows.push(NewPack { number: pack.number, size: pack.size, blobs });
    }
    crate::fsutil::sync_dir(&packs_dir).map_err(StoreError::io(&packs_dir))?;
    store.index().add_packs(&rows, tokens)?;
    Ok(())
}

/// Removes packs a failed put committed, with their index entries.
fn rollback(store: &Store, packs: &[u64]) -> Result<(), StoreError> {
    if packs.is_empty() {
        return Ok(());
    }
    store.index().forget_packs(packs)?;
    for n in packs {
        let _ = fs::remove_file(store.pack_path(*n));
    }
    Ok(())
}
