//! `get`: an object back to files, byte for byte, or a file object's bytes to a writer.
//!
//! A reader thread walks the tree stream and hands chunk reads to workers (read, verify,
//! decrypt, decompress, check key); this thread writes the results in order. A restore to a
//! path builds the whole tree under a temporary sibling name and renames it into place at the
//! end, so the target either appears complete or not at all.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded};
use filetime::FileTime;

use super::root::{EntryKind, Root};
use super::tree::{ChunkRef, Item, Meta};
use super::{BlobReader, Part, Progress, Store, StoreError};
use crate::ids::ObjectId;

/// Chunks read ahead of the writer (each at most 1 MiB of plaintext).
const MAX_IN_FLIGHT: usize = 32;

/// A large file is written back to disk a window at a time while it is restored, and the
/// windows already on disk leave the page cache: a restore of a large file then holds at most
/// two windows of dirty pages and reuses their pages, instead of filling the cache with the
/// whole file (docs/architecture.md, "The page cache").
const WRITEBACK_WINDOW: u64 = 32 << 20;

/// What a restore wrote.
#[derive(Debug, Clone, Default)]
pub struct RestoreStats {
    /// Regular files.
    pub files: u64,
    /// Folders.
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Bytes of file data.
    pub bytes: u64,
    /// Wall time.
    pub elapsed: Duration,
}

enum Ordered {
    Item(Item),
    Data(Receiver<Result<Vec<u8>, StoreError>>),
    Fail(StoreError),
}

struct Job {
    chunk: ChunkRef,
    /// Drop the chunk's pages from the page cache once read: a chunk of a file after its
    /// first (a large file's); a small file's one chunk keeps them.
    uncache: bool,
    reply: Sender<Result<Vec<u8>, StoreError>>,
}

pub(super) fn restore_to_path(
    store: &Store,
    id: &ObjectId,
    part: Part,
    dest: &Path,
    progress: Option<Arc<Progress>>,
) -> Result<RestoreStats, StoreError> {
    if fs::symlink_metadata(dest).is_ok() {
        return Err(StoreError::DestExists(dest.to_path_buf()));
    }
    let parent = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !parent.is_dir() {
        let source = io::Error::new(io::ErrorKind::NotFound, "its folder does not exist");
        return Err(StoreError::Dest { path: dest.to_path_buf(), source });
    }
    let root = store.read_root(id)?;
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = parent.join(format!(".{name}.kith-partial-{}", std::process::id()));
    remove_any(&tmp);
    let mut sink = Sink::Tree(TreeSink::new(tmp.clone()));
    let result = run(store, id, &root, part, &mut sink, progress).and_then(|stats| {
        fs::rename(&tmp, dest)
            .map_err(|source| StoreError::Dest { path: dest.to_path_buf(), source })?;
        Ok(stats)
    });
    if result.is_err() {
        drop(sink);
        remove_any(&tmp);
    }
    result
}

pub(super) fn restore_to_writer(
    store: &Store,
    id: &ObjectId,
    part: Part,
    out: &mut dyn Write,
    progress: Option<Arc<Progress>>,
) -> Result<RestoreStats, StoreError> {
    let root = store.read_root(id)?;
    if part.is_whole() && root.entry_kind() != EntryKind::File {
        return Err(StoreError::BadSpec(format!(
            "object {id} is a {}, not a file; restore it to a path with -o DEST",
            root.entry_kind().name()
        )));
    }
    let mut sink = Sink::Writer(out, part.path());
    run(store, id, &root, part, &mut sink, progress)
}

fn remove_any(path: &Path) {
    match fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => {
            let _ = fs::remove_dir_all(path);
        }
        Ok(_) => {
            let _ = fs::remove_file(path);
        }
        Err(_) => {}
    }
}

fn run(
    store: &Store,
    id: &ObjectId,
    root: &Root,
    part: Part,
    sink: &mut Sink<'_>,
    progress: Option<Arc<Progress>>,
) -> Result<RestoreStats, StoreError> {
    let started = Instant::now();
    // A part's size is known only once its tree is walked: its progress counts up.
    if let Some(p) = progress.as_ref().filter(|_| part.is_whole()) {
        p.bytes_total.store(root.stats.bytes, Ordering::Relaxed);
        p.total_known.store(true, Ordering::Relaxed);
    }
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let mut stats = RestoreStats::default();
    let result = std::thread::scope(|s| {
        let (job_tx, job_rx) = bounded::<Job>(workers * 2);
        let (order_tx, order_rx) = bounded::<Ordered>(1024);
        let (slot_tx, slot_rx) = bounded::<()>(MAX_IN_FLIGHT);
        for _ in 0..workers {
            let jobs = job_rx.clone();
            super::put::named(s, "kith-open-chunks", move || {
                let mut blobs = BlobReader::new(store);
                for job in jobs {
                    blobs.set_uncache(job.uncache);
                    let _ = job.reply.send(blobs.open_chunk(&job.chunk));
                }
            });
        }
        drop(job_rx);
        super::put::named(s, "kith-read-tree", move || {
            read_tree(store, root, part, job_tx, order_tx, slot_tx)
        });
        let mut file: Option<Vec<u8>> = None;
        for o in order_rx {
            let step = match o {
                Ordered::Item(item) => {
                    if let Item::File { path, .. } = &item {
                        file = Some(path.clone());
                    }
                    sink.item(item, &mut stats)
                }
                Ordered::Data(receipt) => {
                    let data = receipt
                        .recv()
                        .map_err(|_| StoreError::Internal("a chunk reader stopped".into()))
                        .and_then(|r| r);
                    let _ = slot_rx.recv();
                    data.and_then(|d| {
                        stats.bytes += d.len() as u64;
                        if let Some(p) = &progress {
                            p.bytes_done.fetch_add(d.len() as u64, Ordering::Relaxed);
                        }
                        sink.data(&d)
                    })
                }
                Ordered::Fail(e) => Err(e),
            };
            if let Err(e) = step {
                return Err(e.in_object(*id, file.as_deref()));
            }
        }
        sink.finish().map_err(|e| e.in_object(*id, None))
    });
    stats.elapsed = started.elapsed();
    result.map(|()| stats)
}

fn read_tree(
    store: &Store,
    root: &Root,
    mut part: Part,
    jobs: Sender<Job>,
    order: Sender<Ordered>,
    slots: Sender<()>,
) {
    let mut reader = store.tree_reader(root);
    // Chunks of the current file so far.
    let mut nth = 0u64;
    loop {
        let next = match reader.next_item().map(|i| i.map(|i| part.pick(i))) {
            // Outside the part: its chunks are never read.
            Ok(Some(None)) => continue,
            Ok(Some(Some(Item::Chunk(chunk)))) => {
                if slots.send(()).is_err() {
                    return;
                }
                let (reply, receipt) = bounded(1);
                let uncache = nth > 0;
                nth += 1;
                if jobs.send(Job { chunk, uncache, reply }).is_err() {
                    return;
                }
                Ordered::Data(receipt)
            }
            Ok(Some(Some(item))) => {
                if matches!(item, Item::File { .. }) {
                    nth = 0;
                }
                Ordered::Item(item)
            }
            Ok(None) if !part.found() => Ordered::Fail(StoreError::NotFound(format!(
                "there is no `{}` inside the object",
                part.path()
            ))),
            Ok(None) => return,
            Err(e) => Ordered::Fail(e),
        };
        let failed = matches!(next, Ordered::Fail(_));
        if order.send(next).is_err() || failed {
            return;
        }
    }
}

enum Sink<'w> {
    Tree(TreeSink),
    /// A file's bytes; the path inside the object, for messages.
    Writer(&'w mut dyn Write, String),
}

impl Sink<'_> {
    fn item(&mut self, item: Item, stats: &mut RestoreStats) -> Result<(), StoreError> {
        match self {
            Sink::Tree(t) => t.item(item, stats),
            Sink::Writer(_, path) => match item {
                Item::FileEnd { .. } => {
                    stats.files += 1;
                    Ok(())
                }
                Item::Dir { .. } | Item::Symlink { .. } => Err(StoreError::BadSpec(format!(
                    "`{path}` is a {} inside the object, not a file; restore it to a path with -o DEST",
                    if matches!(item, Item::Dir { .. }) { "folder" } else { "symlink" }
                ))),
                _ => Ok(()),
            },
        }
    }

    fn data(&mut self, data: &[u8]) -> Result<(), StoreError> {
        match self {
            Sink::Tree(t) => t.data(data),
            Sink::Writer(w, _) => w.write_all(data).map_err(|source| StoreError::Dest {
                path: PathBuf::from("standard output"),
                source,
            }),
        }
    }

    fn finish(&mut self) -> Result<(), StoreError> {
        match self {
            Sink::Tree(t) => t.finish(),
            Sink::Writer(w, _) => w.flush().map_err(|source| StoreError::Dest {
                path: PathBuf::from("standard output"),
                source,
            }),
        }
    }
}

/// Builds the restored tree under a base path.
struct TreeSink {
    base: PathBuf,
    current: Option<OpenFile>,
    dirs: Vec<(PathBuf, Meta)>,
    made: HashSet<Vec<u8>>,
    as_root: bool,
}

struct OpenFile {
    file: io::BufWriter<File>,
    path: PathBuf,
    meta: Meta,
    written: u64,
    /// Bytes handed to writeback so far (a multiple of the window), and bytes waited for and
    /// dropped from the cache (the window handed over before, or 0).
    writeback: u64,
    waited: u64,
    /// The filesystem does not take `sync_file_range`: the file is written as before.
    no_windows: bool,
}

impl OpenFile {
    /// Once a whole window past the last one handed over is written: hands it to writeback,
    /// waits for what was handed over before to reach the disk, and drops its pages. An
    /// error writing back fails the restore; a filesystem that does not support the call
    /// turns the windows off for this file.
    fn write_back(&mut self) -> io::Result<()> {
        if self.no_windows || self.written - self.writeback < WRITEBACK_WINDOW {
            return Ok(());
        }
        self.file.flush()?;
        let f = self.file.get_ref();
        let end = self.written - self.written % WRITEBACK_WINDOW;
        let started =
            sync_range(f, self.writeback, end - self.writeback, libc::SYNC_FILE_RANGE_WRITE)
                .and_then(|()| {
                    if self.waited < self.writeback {
                        sync_range(
                            f,
                            self.waited,
                            self.writeback - self.waited,
                            libc::SYNC_FILE_RANGE_WAIT_BEFORE
                                | libc::SYNC_FILE_RANGE_WRITE
                                | libc::SYNC_FILE_RANGE_WAIT_AFTER,
                        )?;
                        crate::fsutil::uncache(f, self.waited, self.writeback - self.waited);
                    }
                    Ok(())
                });
        match started {
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
                ) =>
            {
                self.no_windows = true;
                return Ok(());
            }
            other => other?,
        }
        self.waited = self.writeback;
        self.writeback = end;
        Ok(())
    }
}

fn sync_range(f: &File, offset: u64, len: u64, flags: libc::c_uint) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (libc::off64_t::try_from(offset), libc::off64_t::try_from(len))
    else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "a range past 2^63"));
    };
    // SAFETY: sync_file_range only reads its arguments; a bad descriptor is an error return.
    if unsafe { libc::sync_file_range(f.as_raw_fd(), offset, len, flags) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl TreeSink {
    fn new(base: PathBuf) -> Self {
        // SAFETY: geteuid has no preconditions.
        let as_root = unsafe { libc::geteuid() } == 0;
        Self { base, current: None, dirs: Vec::new(), made: HashSet::new(), as_root }
    }

    /// The target of a tree path; its parent must be a folder this restore created, so no
    /// entry is ever written through a symlink.
    fn target(&self, rel: &[u8]) -> Result<PathBuf, StoreError> {
        if rel.is_empty() {
            return Ok(self.base.clone());
        }
        let parent = rel.rsplit_once_byte(b'/').map(|(p, _)| p).unwrap_or(b"");
        if !self.made.contains(parent) {
            return Err(StoreError::Tree(super::tree::TreeError::Order(
                "an entry whose folder was not restored first",
            )));
        }
        Ok(self.base.join(OsStr::from_bytes(rel)))
    }

    fn dest_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
        move |source| StoreError::Dest { path: path.to_path_buf(), source }
    }

    fn item(&mut self, item: Item, stats: &mut RestoreStats) -> Result<(), StoreError> {
        match item {
            Item::Dir { path, meta } => {
                let target = self.target(&path)?;
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&target)
                    .map_err(Self::dest_err(&target))?;
                self.made.insert(path);
                self.dirs.push((target, meta));
                stats.dirs += 1;
            }
            Item::File { path, meta, .. } => {
                let target = self.target(&path)?;
                let file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&target)
                    .map_err(Self::dest_err(&target))?;
                let file = io::BufWriter::with_capacity(1 << 20, file);
                self.current = Some(OpenFile {
                    file,
                    path: target,
                    meta,
                    written: 0,
                    writeback: 0,
                    waited: 0,
                    no_windows: false,
                });
            }
            Item::FileEnd { size } => {
                let f = self.current.take().ok_or(StoreError::Tree(
                    super::tree::TreeError::Order("file end without a file"),
                ))?;
                self.close_file(f, size)?;
                stats.files += 1;
            }
            Item::Symlink { path, meta, target } => {
                let at = self.target(&path)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &at)
                    .map_err(Self::dest_err(&at))?;
                if self.as_root {
                    std::os::unix::fs::lchown(&at, Some(meta.uid), Some(meta.gid))
                        .map_err(Self::dest_err(&at))?;
                }
                let t = mtime(&meta);
                filetime::set_symlink_file_times(&at, t, t).map_err(Self::dest_err(&at))?;
                stats.symlinks += 1;
            }
            Item::Chunk(_) | Item::End(_) => {}
        }
        Ok(())
    }

    fn data(&mut self, data: &[u8]) -> Result<(), StoreError> {
        let f = self
            .current
            .as_mut()
            .ok_or(StoreError::Tree(super::tree::TreeError::Order("chunk outside a file")))?;
        f.file.write_all(data).map_err(Self::dest_err(&f.path))?;
        f.written += data.len() as u64;
        f.write_back().map_err(Self::dest_err(&f.path))
    }

    fn close_file(&self, f: OpenFile, size: u64) -> Result<(), StoreError> {
        let OpenFile { file, path, meta, written, .. } = f;
        if written != size {
            return Err(StoreError::Tree(super::tree::TreeError::Malformed(format!(
                "file {} has {written} bytes of chunks but records {size}",
                path.display()
            ))));
        }
        let file = file
            .into_inner()
            .map_err(|e| StoreError::Dest { path: path.clone(), source: e.into_error() })?;
        if self.as_root {
            std::os::unix::fs::fchown(&file, Some(meta.uid), Some(meta.gid))
                .map_err(Self::dest_err(&path))?;
        }
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(meta.mode))
            .map_err(Self::dest_err(&path))?;
        let t = mtime(&meta);
        filetime::set_file_handle_times(&file, Some(t), Some(t)).map_err(Self::dest_err(&path))?;
        Ok(())
    }

    /// Applies folder metadata, deepest first (writing into a folder changes its mtime).
    fn finish(&mut self) -> Result<(), StoreError> {
        for (path, meta) in self.dirs.iter().rev() {
            if self.as_root {
                std::os::unix::fs::lchown(path, Some(meta.uid), Some(meta.gid))
                    .map_err(Self::dest_err(path))?;
            }
            set_mode(path, meta.mode)?;
            let t = mtime(meta);
            filetime::set_file_times(path, t, t).map_err(Self::dest_err(path))?;
        }
        Ok(())
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|source| StoreError::Dest { path: path.to_path_buf(), source })
}

fn mtime(meta: &Meta) -> FileTime {
    FileTime::from_unix_time(meta.mtime_s, meta.mtime_ns)
}

trait RsplitByte {
    fn rsplit_once_byte(&self, b: u8) -> Option<(&[u8], &[u8])>;
}

impl RsplitByte for [u8] {
    fn rsplit_once_byte(&self, b: u8) -> Option<(&[u8], &[u8])> {
        let i = self.iter().rposition(|c| *c == b)?;
        Some((&self[..i], &self[i + 1..]))
    }
}
