//! The encrypted, deduplicated, content-defined store of one node.
//!
//! Files and folders become objects: data cut by [`chunker`], each chunk sealed by
//! [`envelope`], stored in [`pack`] files and located through the [`index`]. An object's
//! manifest is a [`tree`] stream, itself chunked and sealed, named by an age-encrypted [`root`].
//! See `docs/formats.md` for the byte layouts and `docs/architecture.md` for the reasoning.

pub mod chunker;
pub mod envelope;
pub mod index;
mod ingest;
mod maintenance;
pub mod pack;
mod put;
mod restore;
pub mod root;
pub mod tree;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};

use crate::home::{Home, HomeError, HomeLock, LockMode};
use crate::ids::{ChunkId, IdParseError, MIN_PREFIX_HEX, ObjectId, normalize_hex};
use crate::keys::Identity;
use envelope::{OpenError, StoreKeys};
use index::{Index, IndexError, ObjectRow};
use pack::{BlobKind, BlobLocation, PackError};
use root::{EntryKind, Root, RootError};
use tree::{ChunkRef, TreeError, TreeReader, TreeStats};

pub use ingest::Ingest;
pub use maintenance::{DamagedObject, GcReport, VerifyReport};
pub use put::{INDEX_CHECKPOINT_PACKS, PutReport, PutStats};
pub use restore::RestoreStats;

const PACKS_DIR: &str = "packs";
const TMP_DIR: &str = "tmp";
const INDEX_FILE: &str = "index.redb";
/// Open pack files a blob reader keeps.
const OPEN_PACKS: usize = 64;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The home could not be used.
    #[error(transparent)]
    Home(#[from] HomeError),
    /// The index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// A store file could not be read or written.
    #[error("store {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// An input file could not be read.
    #[error("cannot read {path}: {source}")]
    Source {
        /// The input path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The input is of a kind that cannot be stored.
    #[error("cannot store {path}: it is a {what}; kith stores files, folders and symlinks")]
    Unsupported {
        /// The input path.
        path: PathBuf,
        /// What it is.
        what: &'static str,
    },
    /// A restore target could not be written.
    #[error("cannot write {path}: {source}")]
    Dest {
        /// The target path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The restore target exists.
    #[error("{0} already exists; restore to a path that does not exist yet")]
    DestExists(PathBuf),
    /// A pack is damaged.
    #[error(transparent)]
    Pack(#[from] PackError),
    /// A blob the index does not know.
    #[error("chunk {chunk} is missing from the store")]
    Missing {
        /// The blob.
        chunk: ChunkId,
    },
    /// A blob whose bytes do not match its id, or that does not open.
    #[error("chunk {chunk} is damaged: {reason}")]
    Damaged {
        /// The blob.
        chunk: ChunkId,
        /// What is wrong.
        reason: String,
    },
    /// An object's root could not be opened.
    #[error("object {object}: its root {source}")]
    Root {
        /// The object.
        object: ObjectId,
        /// What is wrong.
        source: RootError,
    },
    /// An object's tree is invalid.
    #[error("invalid tree: {0}")]
    Tree(#[from] TreeError),
    /// An error inside an object, with the object and file it concerns.
    #[error("object {object}{}: {source}", file.as_ref().map(|f| format!(", file {f}")).unwrap_or_default())]
    InObject {
        /// The object.
        object: ObjectId,
        /// The file within the object, if the error concerns one.
        file: Option<String>,
        /// The underlying error.
        source: Box<StoreError>,
    },
    /// No object matches what the user typed.
    #[error("{0}")]
    NotFound(String),
    /// An id prefix matches several objects.
    #[error("'{prefix}' matches {count} objects; type more of the id")]
    Ambiguous {
        /// The prefix typed.
        prefix: String,
        /// How many objects it matches.
        count: usize,
    },
    /// What the user typed is not an id or path spec.
    #[error("{0}")]
    BadSpec(String),
    /// A bug: a thread of the pipeline ended unexpectedly.
    #[error("internal error: {0}")]
    Internal(String),
}

impl StoreError {
    fn io(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
        move |source| StoreError::Io { path: path.to_path_buf(), source }
    }

    fn in_object(self, object: ObjectId, file: Option<&[u8]>) -> StoreError {
        match self {
            e @ StoreError::InObject { .. } => e,
            e => StoreError::InObject {
                object,
                file: file.map(|f| String::from_utf8_lossy(f).into_owned()),
                source: Box::new(e),
            },
        }
    }
}

impl From<IdParseError> for StoreError {
    fn from(e: IdParseError) -> Self {
        StoreError::BadSpec(e.to_string())
    }
}

/// Counters a caller may watch while a long operation runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes to process, once known.
    pub bytes_total: AtomicU64,
    /// Whether `bytes_total` is final.
    pub total_known: AtomicBool,
    /// Bytes processed so far.
    pub bytes_done: AtomicU64,
    /// Files processed so far.
    pub files_done: AtomicU64,
}

/// What a listing shows about one object.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    /// The object id.
    pub id: ObjectId,
    /// Its version number within its source's history.
    pub version: u32,
    /// When it was stored (ms since the epoch).
    pub created_ms: u64,
    /// The path it was stored from.
    pub source: PathBuf,
    /// What its root entry is.
    pub kind: EntryKind,
    /// Counts over its tree.
    pub stats: TreeStats,
    /// The previous version, if any.
    pub parent: Option<ObjectId>,
}

/// Bytes and counts the store holds.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreUsage {
    /// Pack files.
    pub packs: u64,
    /// Bytes in pack files.
    pub pack_bytes: u64,
    /// Blobs in the index.
    pub blobs: u64,
    /// Objects.
    pub objects: u64,
}

/// An open store, held exclusively by this process.
pub struct Store {
    dir: PathBuf,
    /// Readers share it; only compaction takes it exclusively.
    index: RwLock<Index>,
    /// Serialises what writes packs or removes objects: put, ingest, rm, gc.
    writer: Mutex<()>,
    keys: StoreKeys,
    identity: Identity,
    device: [u8; 32],
    _lock: HomeLock,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the store of `home`, taking the home's lock; `what` names this process to others.
    pub fn open(home: &Home, what: &str) -> Result<Store, StoreError> {
        Self::open_patiently(home, what, std::time::Duration::ZERO)
    }

    /// [`Store::open`], waiting up to `patience` for a short command that holds the home.
    pub fn open_patiently(
        home: &Home,
        what: &str,
        patience: std::time::Duration,
    ) -> Result<Store, StoreError> {
        let lock = home.lock_patiently(LockMode::Exclusive, what, patience)?;
        let identity = home.identity()?;
        let device = *home.node_key()?.id().as_bytes();
        let dir = home.store_dir();
        for d in [dir.clone(), dir.join(PACKS_DIR), dir.join(TMP_DIR)] {
            crate::fsutil::create_private_dir(&d).map_err(StoreError::io(&d))?;
        }
        let index = RwLock::new(Index::open(&dir.join(INDEX_FILE))?);
        let keys = StoreKeys::derive(identity.store_secret());
        Ok(Store { dir, index, writer: Mutex::new(()), keys, identity, device, _lock: lock })
    }

    fn index(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_lock(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Compacts the index if copy-on-write left it mostly free pages.
    fn compact(&self) -> Result<(), IndexError> {
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        index.compact_if_fragmented().map(|_| ())
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn packs_dir(&self) -> PathBuf {
        self.dir.join(PACKS_DIR)
    }

    fn tmp_dir(&self) -> PathBuf {
        self.dir.join(TMP_DIR)
    }

    fn pack_path(&self, n: u64) -> PathBuf {
        self.packs_dir().join(pack::pack_file_name(n))
    }

    /// Stores the file, folder or symlink at `path` as a new version of it.
    pub fn put(
        &self,
        path: &Path,
        progress: Option<Arc<Progress>>,
    ) -> Result<PutReport, StoreError> {
        self.put_as(path, None, progress)
    }

    /// Stores `path` recorded under `label` instead of its own path (a file that arrived from
    /// elsewhere, such as a browser upload, whose temporary path means nothing to its owner).
    pub fn put_as(
        &self,
        path: &Path,
        label: Option<&Path>,
        progress: Option<Arc<Progress>>,
    ) -> Result<PutReport, StoreError> {
        let _w = self.write_lock();
        let mut report = put::put(self, path, label, progress)?;
        if let Err(e) = self.compact() {
            report.warnings.push(format!("compacting the index failed (harmless): {e}"));
        }
        Ok(report)
    }

    /// Restores object `id` to `dest`, which must not exist.
    pub fn restore(
        &self,
        id: &ObjectId,
        dest: &Path,
        progress: Option<Arc<Progress>>,
    ) -> Result<RestoreStats, StoreError> {
        restore::restore_to_path(self, id, dest, progress)
    }

    /// Writes the contents of file object `id` to `out`.
    pub fn restore_to_writer(
        &self,
        id: &ObjectId,
        out: &mut dyn io::Write,
        progress: Option<Arc<Progress>>,
    ) -> Result<RestoreStats, StoreError> {
        restore::restore_to_writer(self, id, out, progress)
    }

    /// Checks every blob against its id and every object's structure.
    pub fn verify(&self, progress: Option<Arc<Progress>>) -> Result<VerifyReport, StoreError> {
        maintenance::verify(self, progress)
    }

    /// Deletes blobs no object references and reclaims their space.
    pub fn gc(&self) -> Result<GcReport, StoreError> {
        self.gc_keeping(&std::collections::HashSet::new())
    }

    /// Like [`Store::gc`], also keeping the blobs in `keep` (those held for others).
    pub fn gc_keeping(
        &self,
        keep: &std::collections::HashSet<ChunkId>,
    ) -> Result<GcReport, StoreError> {
        let _w = self.write_lock();
        let report = maintenance::gc(self, keep)?;
        self.compact()?;
        Ok(report)
    }

    /// Every blob object `id` consists of, its root first, with each one's stored length
    /// (what another node must hold to restore it).
    pub fn object_blobs(&self, id: &ObjectId) -> Result<Vec<(ChunkId, u32)>, StoreError> {
        maintenance::object_blobs(self, id)
    }

    /// Drops blob `id` from the index if its bytes no longer read back (damaged or lost on
    /// disk), so that it can be fetched again; returns whether it did. `gc` reclaims the bytes.
    pub fn forget_damaged(&self, id: &ChunkId) -> Result<bool, StoreError> {
        let _w = self.write_lock();
        match self.blob_reader().read_with_kind(id) {
            Ok(_) | Err(StoreError::Index(_)) => Ok(false),
            Err(e) => {
                tracing::warn!(chunk = %id, error = %e, "forgetting a blob that no longer reads back");
                self.index().replace_packs(&[*id], &[], &[])?;
                Ok(true)
            }
        }
    }

    /// The stored length of a blob, if the store holds it.
    pub fn blob_len(&self, id: &ChunkId) -> Result<Option<u32>, StoreError> {
        Ok(self.index().blob(id)?.map(|l| l.len))
    }

    /// Forgets an object; its blobs stay until [`Store::gc`].
    pub fn remove(&self, id: &ObjectId) -> Result<(), StoreError> {
        let _w = self.write_lock();
        if self.index().remove_object(id)? {
            Ok(())
        } else {
            Err(StoreError::NotFound(format!("no object {id}")))
        }
    }

    /// Starts writing blobs that arrive from peers.
    pub fn ingest(&self) -> Result<Ingest<'_>, StoreError> {
        Ingest::new(self)
    }

    /// Whether the store holds blob `id`.
    pub fn has(&self, id: &ChunkId) -> Result<bool, StoreError> {
        Ok(self.index().blob(id)?.is_some())
    }

    /// Reads blob `id` (verified), with its kind; `None` if the store does not hold it.
    pub fn read_blob(&self, id: &ChunkId) -> Result<Option<(BlobKind, Vec<u8>)>, StoreError> {
        BlobReader::new(self).read_with_kind(id)
    }

    /// A reader for many blobs in a row (it keeps pack files open between reads).
    pub fn blob_reader(&self) -> BlobReader<'_> {
        BlobReader::new(self)
    }

    /// Opens an object's root with this identity: the root must be in the store.
    pub fn root(&self, id: &ObjectId) -> Result<Root, StoreError> {
        self.read_root(id)
    }

    /// Decrypts a tree chunk read from the store (for walking a tree whose chunks arrive from
    /// peers).
    pub fn open_chunk(&self, r: &ChunkRef) -> Result<Vec<u8>, StoreError> {
        BlobReader::new(self).open_chunk(r)
    }

    /// Records an object whose blobs are all in the store (fetched from another device of
    /// this identity) as the next local version of its source. Returns its version number.
    pub fn adopt(&self, id: &ObjectId) -> Result<u32, StoreError> {
        let _w = self.write_lock();
        if let Some(row) = self.index().object(id)? {
            return Ok(row.version);
        }
        let root = self.read_root(id)?;
        let lineage = self.keys.lineage(&root.source);
        let version = self.index().last_version_number(&lineage)? + 1;
        let row = ObjectRow { id: *id, lineage, version, created_ms: root.created_ms };
        self.index().add_object(row)?;
        Ok(version)
    }

    /// Every object, oldest first.
    pub fn list(&self) -> Result<Vec<ObjectInfo>, StoreError> {
        self.index().objects()?.into_iter().map(|row| self.info(row)).collect()
    }

    /// The versions stored from `source`, oldest first.
    pub fn log(&self, source: &Path) -> Result<Vec<ObjectInfo>, StoreError> {
        let source = absolute(source)?;
        let lineage = self.keys.lineage(source.as_os_str().as_bytes());
        let mut out = Vec::new();
        for (_, id) in self.index().versions(&lineage)? {
            if let Some(row) = self.index().object(&id)? {
                out.push(self.info(row)?);
            }
        }
        Ok(out)
    }

    /// Resolves what a user typed: a full id, an id prefix, `PATH@N`, or a path (its latest
    /// version).
    /// `cwd` is the folder relative paths in `spec` are relative to.
    pub fn resolve(&self, spec: &str, cwd: &Path) -> Result<ObjectId, StoreError> {
        if let Some((path, n)) = spec.rsplit_once('@').filter(|(p, _)| !p.is_empty()) {
            let n: u32 = n.parse().map_err(|_| {
                StoreError::BadSpec(format!("'{spec}': the version after '@' must be a number"))
            })?;
            let source = absolute_in(Path::new(path), cwd);
            let lineage = self.keys.lineage(source.as_os_str().as_bytes());
            let versions = self.index().versions(&lineage)?;
            return versions.iter().find(|(v, _)| *v == n).map(|(_, id)| *id).ok_or_else(|| {
                StoreError::NotFound(match versions.is_empty() {
                    true => format!("no versions stored from {}", source.display()),
                    false => format!("{} has no version {n} (see kith log)", source.display()),
                })
            });
        }
        if let Ok(hex) = normalize_hex(spec)
            && hex.len() >= MIN_PREFIX_HEX
        {
            let matches: Vec<ObjectId> = self
                .index()
                .objects()?
                .into_iter()
                .map(|r| r.id)
                .filter(|id| id.to_string().starts_with(&hex))
                .collect();
            match matches.len() {
                1 => return Ok(matches[0]),
                0 if hex.len() == 64 => {
                    return Err(StoreError::NotFound(format!("no object {hex}")));
                }
                0 => {}
                count => return Err(StoreError::Ambiguous { prefix: spec.into(), count }),
            }
        }
        let source = absolute_in(Path::new(spec), cwd);
        let lineage = self.keys.lineage(source.as_os_str().as_bytes());
        match self.index().versions(&lineage)?.last() {
            Some((_, id)) => Ok(*id),
            None => Err(StoreError::NotFound(format!(
                "'{spec}' is neither an object id nor a path with stored versions (see kith ls)"
            ))),
        }
    }

    /// Bytes and counts held.
    pub fn usage(&self) -> Result<StoreUsage, StoreError> {
        let packs = self.index().packs()?;
        Ok(StoreUsage {
            packs: packs.len() as u64,
            pack_bytes: packs.iter().map(|p| p.size).sum(),
            blobs: self.index().blob_count()?,
            objects: self.index().objects()?.len() as u64,
        })
    }

    fn info(&self, row: ObjectRow) -> Result<ObjectInfo, StoreError> {
        let root = self.read_root(&row.id)?;
        Ok(ObjectInfo {
            id: row.id,
            version: row.version,
            created_ms: row.created_ms,
            source: PathBuf::from(std::ffi::OsStr::from_bytes(&root.source)),
            kind: root.entry_kind(),
            stats: root.stats,
            parent: root.parent.map(ObjectId),
        })
    }

    /// Reads and decrypts an object's root.
    pub(crate) fn read_root(&self, id: &ObjectId) -> Result<Root, StoreError> {
        let sealed = BlobReader::new(self).read(&ChunkId::from(*id))?;
        Root::open(&sealed, self.identity.age_identity())
            .map_err(|source| StoreError::Root { object: *id, source })
    }

    /// A reader over an object's tree stream.
    pub(crate) fn tree_reader<'s>(
        &'s self,
        root: &Root,
    ) -> TreeReader<impl FnMut(&ChunkRef) -> Result<Vec<u8>, StoreError> + 's> {
        let mut blobs = BlobReader::new(self);
        TreeReader::new(root.tree.clone(), move |r: &ChunkRef| blobs.open_chunk(r))
    }
}

/// Reads blobs, verifying each against its id; keeps a few packs open. One per thread.
pub struct BlobReader<'s> {
    store: &'s Store,
    open: HashMap<u64, File>,
}

impl<'s> BlobReader<'s> {
    pub(crate) fn new(store: &'s Store) -> Self {
        Self { store, open: HashMap::new() }
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
        let bytes = pack::read_at(self.file(loc.pack)?, loc.offset, loc.len).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                StoreError::Damaged {
                    chunk: *id,
                    reason: format!("pack {} is truncated", loc.pack),
                }
            } else {
                StoreError::Io { path: self.store.pack_path(loc.pack), source: e }
            }
        })?;
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

/// The absolute, lexically normalised form of `path` (no `.` or `..`, symlinks kept), which
/// names a source across versions; relative paths are taken relative to this process's folder.
pub fn absolute(path: &Path) -> Result<PathBuf, StoreError> {
    let cwd = std::env::current_dir()
        .map_err(|source| StoreError::Source { path: path.to_path_buf(), source })?;
    Ok(absolute_in(path, &cwd))
}

/// [`absolute`] with relative paths taken relative to `cwd`.
pub fn absolute_in(path: &Path, cwd: &Path) -> PathBuf {
    let abs = cwd.join(path);
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c.as_os_str()),
        }
    }
    out
}

/// Removes leftovers of an interrupted operation in `dir` (temporary packs).
fn clear_dir(dir: &Path) -> Result<(), StoreError> {
    for entry in fs::read_dir(dir).map_err(StoreError::io(dir))? {
        let path = entry.map_err(StoreError::io(dir))?.path();
        fs::remove_file(&path).map_err(StoreError::io(&path))?;
    }
    Ok(())
}
