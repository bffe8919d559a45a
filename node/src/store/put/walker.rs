//! The walker: lists the tree in order, reuses unchanged files from the previous version, and
//! hands file data to the workers and items to the writer.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Sender, bounded};

use super::{
    BATCH_BYTES, BATCH_ENTRIES, BATCH_FILES, Batched, Job, Ordered, Progress, SLOT_BYTES,
    SMALL_FILE, Store, StoreError,
};
use crate::ids::ObjectId;
use crate::store::chunker::{Chunker, Cutter};
use crate::store::envelope::Compression;
use crate::store::tree::{ChangeKey, ChunkRef, Item, Meta};

#[derive(Default)]
pub(super) struct WalkStats {
    pub(super) files_unchanged: u64,
    pub(super) bytes_scanned: u64,
    pub(super) bytes_read: u64,
}

pub(super) struct CachedFile {
    change: ChangeKey,
    size: u64,
    chunks: Vec<ChunkRef>,
}

pub(super) fn unsupported(md: &Metadata) -> Option<&'static str> {
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

pub(super) fn load_cache(
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
pub(super) fn scan_total(root: &Path, progress: &Progress, done: &AtomicBool) {
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

/// Small files gathered for one worker, with the items listed between them.
#[derive(Default)]
pub(super) struct Batch {
    entries: Vec<Batched>,
    files: Vec<(PathBuf, u64)>,
    bytes: u64,
    units: u64,
}

impl Batch {
    fn full(&self) -> bool {
        self.bytes >= BATCH_BYTES
            || self.files.len() >= BATCH_FILES
            || self.entries.len() >= BATCH_ENTRIES
    }
}

pub(super) struct Walker<'a> {
    pub(super) cutter: &'a Cutter,
    pub(super) buf: Vec<u8>,
    pub(super) cache: &'a HashMap<Vec<u8>, CachedFile>,
    pub(super) jobs: Sender<Job>,
    pub(super) order: Sender<Ordered>,
    pub(super) slots: Sender<()>,
    /// Small files not yet sent; every item listed after the first of them joins it, so the
    /// writer gets everything in tree order.
    pub(super) batch: Batch,
    pub(super) stats: WalkStats,
    pub(super) warnings: Vec<String>,
}

impl Walker<'_> {
    pub(super) fn run(&mut self, root: &Path, md: Metadata) {
        // The open batch goes first even when the walk failed: its files come earlier in the
        // tree, so an error among them is the one to report.
        let walked = self.walk(root, md);
        let flushed = self.flush();
        if let Err(Stop::Failed(e)) = walked.and(flushed) {
            let _ = self.order.send(Ordered::Fail(e));
        }
    }

    fn send(&mut self, item: Item) -> Result<(), Stop> {
        if self.batch.entries.is_empty() {
            return self.order.send(Ordered::Item(item)).map_err(|_| Stop::WriterGone);
        }
        self.batch.entries.push(Batched::Item(item));
        if self.batch.full() { self.flush() } else { Ok(()) }
    }

    /// Sends the open batch of small files to a worker, and its place to the writer.
    fn flush(&mut self) -> Result<(), Stop> {
        if self.batch.entries.is_empty() {
            return Ok(());
        }
        let Batch { entries, files, units, .. } = std::mem::take(&mut self.batch);
        let (reply, receipt) = bounded(1);
        self.jobs.send(Job::Files { files, reply }).map_err(|_| Stop::WriterGone)?;
        let batch = Ordered::SmallFiles { units, entries, receipt };
        self.order.send(batch).map_err(|_| Stop::WriterGone)
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
                let mut entries = read_entries(&abs)?;
                entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                for (name, md) in entries.into_iter().rev() {
                    let mut child = rel.clone();
                    if !child.is_empty() {
                        child.push(b'/');
                    }
                    child.extend_from_slice(name.as_bytes());
                    stack.push((abs.join(&name), child, md));
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
            // parallel and the walker only lists folders. They go in batches: one job and
            // one reply for many files.
            let units = self.acquire(md.len())?;
            let header = Item::File { path: rel, meta: meta_of(md), change };
            self.batch.entries.push(Batched::File { header, path: abs.to_path_buf() });
            self.batch.files.push((abs.to_path_buf(), md.len()));
            self.batch.bytes += md.len();
            self.batch.units += units;
            return if self.batch.full() { self.flush() } else { Ok(()) };
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

    fn submit(&mut self, data: Vec<u8>, compression: Compression) -> Result<(), Stop> {
        self.flush()?;
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

/// A folder's entries with their metadata, read relative to the folder (`fstatat` on its
/// descriptor: no walk of the whole path for each file). An entry whose metadata could not be
/// read comes without it; the walk reads it again by path and reports what went wrong.
fn read_entries(dir: &Path) -> Result<Vec<(OsString, Option<Metadata>)>, StoreError> {
    let err = |e| StoreError::Source { path: dir.to_path_buf(), source: e };
    fs::read_dir(dir)
        .map_err(err)?
        .map(|e| e.map(|e| (e.file_name(), e.metadata().ok())).map_err(err))
        .collect()
}
