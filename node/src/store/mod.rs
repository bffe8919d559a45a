//! The encrypted, deduplicated, content-defined store of one node.
//!
//! Files and folders become objects: data cut by [`chunker`], each chunk sealed by
//! [`envelope`], stored in [`pack`] files and located through the [`index`]. An object's
//! manifest is a [`tree`] stream, itself chunked and sealed, named by an age-encrypted [`root`].
//! See `docs/formats.md` for the byte layouts and `docs/architecture.md` for the reasoning.

pub mod chunker;
pub mod envelope;
mod error;
pub mod export;
pub mod framed;
pub mod index;
mod ingest;
pub mod journal;
mod maintenance;
mod objects;
pub mod pack;
mod part;
mod put;
mod reader;
mod rebuild;
mod restore;
pub mod root;
pub mod tree;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};

use crate::home::{Home, HomeLock, LockMode};
use crate::ids::{ChunkId, ObjectId};
use crate::keys::Identity;
use envelope::StoreKeys;
use index::{Index, IndexError, ObjectRow};
use journal::{Journal, Record};
use pack::BlobKind;
use root::Root;
use tree::{ChunkRef, TreeReader};

pub use error::StoreError;
pub use ingest::Ingest;
pub use maintenance::{DamagedObject, GcReport, VerifyReport};
pub use objects::{ObjectInfo, StoreUsage, absolute, absolute_in};
pub use part::{Change, Entry, EntryType, Part};
pub use put::{INDEX_CHECKPOINT_PACKS, PutReport, PutStats};
pub use reader::BlobReader;
pub use rebuild::RebuildReport;
pub use restore::RestoreStats;

const PACKS_DIR: &str = "packs";
const TMP_DIR: &str = "tmp";
/// Where ingests write their packs, a folder each, until they commit them.
const INCOMING_DIR: &str = "incoming";
const INDEX_FILE: &str = "index.redb";
/// Present while `kith store rebuild-index` builds a new index: a half-built one is refused.
const REBUILDING_FILE: &str = "index.rebuilding";

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
    /// Whether a put leaves `bytes_total` unknown rather than count it first.
    skip_total: bool,
}

impl Progress {
    /// Counters for a caller that needs no total: a put of a folder then does not walk it
    /// a second time to count its bytes (about 5% of a first put's CPU, which a bar's eta
    /// is worth and nothing else is).
    pub fn without_total() -> Progress {
        Progress { skip_total: true, ..Progress::default() }
    }
}

/// What the store did since it opened (`kith up --metrics`).
#[derive(Debug, Default)]
pub struct StoreCounters {
    /// Puts that finished.
    pub puts: AtomicU64,
    /// Bytes in the files of those puts.
    pub put_bytes: AtomicU64,
    /// Bytes they added to the store (new data, tree and root, compressed and encrypted).
    pub stored_bytes: AtomicU64,
    /// Restores that finished (to a folder, a file or a stream).
    pub restores: AtomicU64,
    /// Bytes of file data they wrote.
    pub restored_bytes: AtomicU64,
}

impl StoreCounters {
    fn put(&self, s: &PutStats) {
        self.puts.fetch_add(1, Ordering::Relaxed);
        self.put_bytes.fetch_add(s.bytes_scanned, Ordering::Relaxed);
        self.stored_bytes.fetch_add(s.bytes_stored, Ordering::Relaxed);
    }

    fn restored(&self, s: &RestoreStats) {
        self.restores.fetch_add(1, Ordering::Relaxed);
        self.restored_bytes.fetch_add(s.bytes, Ordering::Relaxed);
    }
}

/// An open store, held exclusively by this process.
pub struct Store {
    dir: PathBuf,
    /// Readers share it; only compaction takes it exclusively.
    index: RwLock<Index>,
    /// Serialises what writes packs or removes objects: put, ingest, rm, gc.
    writer: Mutex<()>,
    keys: StoreKeys,
    /// The identity as its key file says; data keys added while the store is open go to both.
    identity: RwLock<Arc<Identity>>,
    home: Home,
    device: [u8; 32],
    /// Every object recorded and forgotten, beside the index (for a rebuild).
    journal: Journal,
    /// One past the highest pack number on disk when the store opened.
    packs_on_disk_end: u64,
    /// Numbers the ingests' folders.
    ingests: AtomicU64,
    /// Blobs that ingests still running have committed, with how many hold each: `gc` and
    /// reclaims keep them (what they belong to is not recorded yet).
    pinned: Mutex<HashMap<ChunkId, u32>>,
    counters: StoreCounters,
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
        Self::open_locked(home, lock, false)
    }

    /// Opens the store under `lock`. Without `fresh_index`, a store that has packs and no
    /// index is refused (a new index would not know the packs, and the next put would take
    /// their numbers).
    fn open_locked(home: &Home, lock: HomeLock, fresh_index: bool) -> Result<Store, StoreError> {
        let identity = home.identity()?;
        let device = *home.node_key()?.id().as_bytes();
        let dir = home.store_dir();
        // What an ingest of an earlier run left unfinished goes (this process holds the home).
        let incoming = dir.join(INCOMING_DIR);
        match fs::remove_dir_all(&incoming) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(StoreError::io(&incoming)(e));
            }
            _ => {}
        }
        for d in [dir.clone(), dir.join(PACKS_DIR), dir.join(TMP_DIR), incoming] {
            crate::fsutil::create_private_dir(&d).map_err(StoreError::io(&d))?;
        }
        let path = dir.join(INDEX_FILE);
        let marker = dir.join(REBUILDING_FILE);
        if !fresh_index && marker.exists() {
            return Err(StoreError::RebuildUnfinished { path });
        }
        let packs: Vec<u64> = fs::read_dir(dir.join(PACKS_DIR))
            .map_err(StoreError::io(&dir))?
            .filter_map(Result::ok)
            .filter_map(|e| pack::parse_pack_file_name(&e.file_name().to_string_lossy()))
            .collect();
        if !fresh_index && !path.exists() && !packs.is_empty() {
            return Err(StoreError::IndexMissing { path, packs: packs.len() });
        }
        let packs_on_disk_end = packs.iter().max().map_or(1, |n| n + 1);
        let index = RwLock::new(Index::open(&path)?);
        let keys = StoreKeys::derive(identity.store_secret());
        let journal = Journal::new(&dir);
        let store = Store {
            dir,
            index,
            writer: Mutex::new(()),
            keys,
            identity: RwLock::new(Arc::new(identity)),
            home: home.clone(),
            device,
            journal,
            packs_on_disk_end,
            ingests: AtomicU64::new(0),
            counters: StoreCounters::default(),
            pinned: Mutex::new(HashMap::new()),
            _lock: lock,
        };
        // A store from before the journal: it starts as the index says.
        if !store.journal.exists() {
            let mut rows = store.index().objects()?;
            rows.sort_by_key(|r| (r.lineage, r.version));
            store.journal.rewrite(&rows).map_err(StoreError::io(store.journal.path()))?;
        }
        Ok(store)
    }

    fn index(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_lock(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The writer lock if nobody holds it now.
    fn try_write_lock(&self) -> Option<MutexGuard<'_, ()>> {
        match self.writer.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// Compacts the index if copy-on-write left it mostly free pages.
    fn compact(&self) -> Result<(), IndexError> {
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        index.compact_if_fragmented().map(|_| ())
    }

    /// A new, empty folder for an ingest's packs.
    fn new_incoming_dir(&self) -> Result<PathBuf, StoreError> {
        let n = self.ingests.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(INCOMING_DIR).join(n.to_string());
        crate::fsutil::create_private_dir(&path).map_err(StoreError::io(&path))?;
        Ok(path)
    }

    fn pinned(&self) -> MutexGuard<'_, HashMap<ChunkId, u32>> {
        self.pinned.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `ids` from `gc` and reclaims until as many [`Store::unpin`]s.
    fn pin(&self, ids: &[ChunkId]) {
        let mut pinned = self.pinned();
        for id in ids {
            *pinned.entry(*id).or_default() += 1;
        }
    }

    fn unpin(&self, ids: &[ChunkId]) {
        let mut pinned = self.pinned();
        for id in ids {
            if let std::collections::hash_map::Entry::Occupied(mut e) = pinned.entry(*id) {
                *e.get_mut() -= 1;
                if *e.get() == 0 {
                    e.remove();
                }
            }
        }
    }

    /// `keep` with every pinned blob added.
    fn with_pinned(&self, mut keep: HashSet<ChunkId>) -> HashSet<ChunkId> {
        keep.extend(self.pinned().keys().copied());
        keep
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

    /// The number the next pack takes: after every pack the index knows and every pack file
    /// that was on disk when the store opened, so a pack the index lost (or one a rebuild found
    /// damaged) is never written over. (Packs written since are indexed; the rename that puts
    /// one in place refuses to replace a file in any case.)
    pub(crate) fn next_pack_number(&self) -> Result<u64, StoreError> {
        Ok(self.index().next_pack_number()?.max(self.packs_on_disk_end))
    }

    fn pack_path(&self, n: u64) -> PathBuf {
        self.packs_dir().join(pack::pack_file_name(n))
    }

    /// What the store did since it opened.
    pub fn counters(&self) -> &StoreCounters {
        &self.counters
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
        self.counters.put(&report.stats);
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
        restore::restore_to_path(self, id, Part::new("")?, dest, progress)
            .inspect(|s| self.counters.restored(s))
    }

    /// Restores `part` of object `id` (a file or folder inside it) to `dest`, which must not
    /// exist; only the chunks of that part are read.
    pub fn restore_part(
        &self,
        id: &ObjectId,
        part: Part,
        dest: &Path,
        progress: Option<Arc<Progress>>,
    ) -> Result<RestoreStats, StoreError> {
        restore::restore_to_path(self, id, part, dest, progress)
            .inspect(|s| self.counters.restored(s))
    }

    /// Writes the contents of file object `id` (or of the file `part` inside it) to `out`.
    pub fn restore_to_writer(
        &self,
        id: &ObjectId,
        part: Part,
        out: &mut dyn io::Write,
        progress: Option<Arc<Progress>>,
    ) -> Result<RestoreStats, StoreError> {
        restore::restore_to_writer(self, id, part, out, progress)
            .inspect(|s| self.counters.restored(s))
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
        let keep = self.with_pinned(keep.clone());
        let report = maintenance::gc(self, &keep, None)?;
        self.compact()?;
        Ok(report)
    }

    /// Deletes those of `released` (blobs kept for others that they gave up) that no local
    /// object references and that `keep` does not hold now, and reclaims their space; every
    /// other blob stays. `keep` runs under the store's writer lock, so no blob arrives between
    /// reading it and deleting.
    pub fn reclaim<E: std::fmt::Display>(
        &self,
        released: &std::collections::HashSet<ChunkId>,
        keep: impl FnOnce() -> Result<std::collections::HashSet<ChunkId>, E>,
    ) -> Result<GcReport, StoreError> {
        let _w = self.write_lock();
        let keep = keep().map_err(|e| StoreError::Internal(format!("not reclaiming: {e}")))?;
        let keep = self.with_pinned(keep);
        let report = maintenance::gc(self, &keep, Some(released))?;
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
            self.journal
                .append(&Record::Forgotten(*id))
                .map_err(StoreError::io(self.journal.path()))
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

    /// The identity this store belongs to (its data keys as of now).
    pub fn identity(&self) -> Arc<Identity> {
        self.identity.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Takes the data keys the identity made (rotations after a device was retired), oldest
    /// first: new objects are sealed to the last from now on, and the key file keeps them.
    /// Whether anything changed.
    pub fn set_data_keys(&self, ordered: &[age::x25519::Identity]) -> Result<bool, StoreError> {
        let mut guard = self.identity.write().unwrap_or_else(|p| p.into_inner());
        let Some(next) = guard.with_data_keys(ordered) else { return Ok(false) };
        self.home.write_identity(&next)?;
        *guard = Arc::new(next);
        Ok(true)
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
        self.adopt_locked(id, None)
    }

    /// [`Store::adopt`] with the writer lock held by the caller; the object keeps the version
    /// number `keep` if it is above every number its lineage has had here (an import into a
    /// store that had none of these versions keeps the original numbers).
    pub(crate) fn adopt_locked(&self, id: &ObjectId, keep: Option<u32>) -> Result<u32, StoreError> {
        if let Some(row) = self.index().object(id)? {
            return Ok(row.version);
        }
        // Only whole: a chunk taken meanwhile (a gc, a reclaim) is fetched again, never missed.
        if !self.whole(id)? {
            return Err(StoreError::NotFound(format!(
                "object {id} is not complete here (chunks are missing); fetch it again"
            )));
        }
        let root = self.read_root(id)?;
        let lineage = self.keys.lineage(&root.source);
        let next = self.index().last_version_number(&lineage)? + 1;
        let version = keep.filter(|k| *k >= next).unwrap_or(next);
        let row = ObjectRow { id: *id, lineage, version, created_ms: root.created_ms };
        self.record(row)?;
        Ok(version)
    }

    /// Records an object in the index and the journal, both or neither (as far as a failed
    /// append allows: the index entry is taken back).
    pub(crate) fn record(&self, row: ObjectRow) -> Result<(), StoreError> {
        self.index().add_object(row)?;
        if let Err(e) = self.journal.append(&Record::Recorded(row)) {
            let _ = self.index().remove_object(&row.id);
            return Err(StoreError::io(self.journal.path())(e));
        }
        Ok(())
    }

    /// Reads and decrypts an object's root.
    pub(crate) fn read_root(&self, id: &ObjectId) -> Result<Root, StoreError> {
        let sealed = BlobReader::new(self).read(&ChunkId::from(*id))?;
        Root::open(&sealed, &self.identity().data_keys())
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

/// Removes leftovers of an interrupted operation in `dir` (temporary packs).
fn clear_dir(dir: &Path) -> Result<(), StoreError> {
    for entry in fs::read_dir(dir).map_err(StoreError::io(dir))? {
        let path = entry.map_err(StoreError::io(dir))?.path();
        fs::remove_file(&path).map_err(StoreError::io(&path))?;
    }
    Ok(())
}
