//! Rebuilding a lost or damaged index (`kith store rebuild-index`): blobs and packs from the
//! pack trailers, objects from the journal (versions, numbers, what was forgotten) and from the
//! roots this identity can open, dedup tokens from the objects' trees. The old index, if any,
//! is moved aside, never deleted.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::PathBuf;

use super::index::{NewPack, ObjectRow};
use super::journal::{Journal, Record};
use super::pack::{self, BlobKind, BlobLocation};
use super::tree::Item;
use super::{INDEX_FILE, PACKS_DIR, REBUILDING_FILE, Store, StoreError};
use crate::home::{Home, LockMode};
use crate::ids::{ChunkId, ObjectId};

/// What a rebuild found and did.
#[derive(Debug, Clone, Default)]
pub struct RebuildReport {
    /// Where the old index went, if there was one.
    pub moved_aside: Option<PathBuf>,
    /// Packs whose trailers were read.
    pub packs: u64,
    /// Packs that could not be read (left as they are), with why.
    pub damaged_packs: Vec<String>,
    /// Blobs found.
    pub blobs: u64,
    /// Objects recorded again.
    pub objects: u64,
    /// Of those, the ones the journal named (with their version numbers).
    pub from_journal: u64,
    /// Of those, roots of this identity the journal did not name, numbered by time.
    pub found_by_time: u64,
    /// Forgotten versions whose roots are still in packs (they stay forgotten).
    pub forgotten: u64,
    /// Versions the journal names that cannot be restored whole (what is missing).
    pub lost: Vec<String>,
    /// Roots of this identity whose chunks are not all here (parts fetched from peers).
    pub partial: u64,
    /// Roots this identity cannot open (blobs kept for pool members).
    pub foreign_roots: u64,
    /// Dedup tokens restored.
    pub tokens: u64,
    /// Why the journal could be read only in part, if so.
    pub journal_damage: Option<String>,
}

impl Store {
    /// Rebuilds the index of `home`'s store, which no process may hold.
    pub fn rebuild_index(home: &Home) -> Result<RebuildReport, StoreError> {
        let lock = home.lock_patiently(
            LockMode::Exclusive,
            "kith store rebuild-index",
            std::time::Duration::ZERO,
        )?;
        let dir = home.store_dir();
        let mut report = RebuildReport::default();
        let path = dir.join(INDEX_FILE);
        // Until the new index is whole, no other command opens the store.
        let marker = dir.join(REBUILDING_FILE);
        crate::fsutil::write_atomic(&marker, b"kith store rebuild-index\n", 0o600)
            .map_err(StoreError::io(&marker))?;
        if path.exists() {
            let ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0);
            let aside = dir.join(format!("{INDEX_FILE}.before-rebuild-{ms}"));
            fs::rename(&path, &aside).map_err(StoreError::io(&path))?;
            report.moved_aside = Some(aside);
        }
        let store = Store::open_locked(home, lock, true)?;
        store.rebuild_packs(&mut report)?;
        store.rebuild_objects(&mut report)?;
        std::fs::remove_file(&marker).map_err(StoreError::io(&marker))?;
        Ok(report)
    }

    /// Records every readable pack and its blobs.
    fn rebuild_packs(&self, report: &mut RebuildReport) -> Result<(), StoreError> {
        let dir = self.dir.join(PACKS_DIR);
        let mut numbers: Vec<(u64, PathBuf)> = Vec::new();
        for entry in fs::read_dir(&dir).map_err(StoreError::io(&dir))? {
            let entry = entry.map_err(StoreError::io(&dir))?;
            if let Some(n) = pack::parse_pack_file_name(&entry.file_name().to_string_lossy()) {
                numbers.push((n, entry.path()));
            }
        }
        numbers.sort();
        for (number, path) in numbers {
            let trailer = match pack::read_trailer(&path) {
                Ok(t) => t,
                Err(e) => {
                    report.damaged_packs.push(e.to_string());
                    continue;
                }
            };
            let size = fs::metadata(&path).map_err(StoreError::io(&path))?.len();
            let mut blobs = Vec::with_capacity(trailer.len());
            for (e, offset) in trailer {
                let Some(kind) = BlobKind::from_u8(e.kind) else {
                    report.damaged_packs.push(format!(
                        "{}: a blob of unknown kind {} (skipped)",
                        path.display(),
                        e.kind
                    ));
                    continue;
                };
                blobs
                    .push((ChunkId(e.id), BlobLocation { pack: number, offset, len: e.len, kind }));
            }
            report.packs += 1;
            report.blobs += blobs.len() as u64;
            let data = blobs.iter().map(|(_, l)| l.len as u64).sum();
            self.index().add_packs(&[NewPack { number, size, data, blobs }], &[])?;
        }
        Ok(())
    }

    /// Records the objects: the journal's, then roots of this identity it does not name.
    fn rebuild_objects(&self, report: &mut RebuildReport) -> Result<(), StoreError> {
        let journal = Journal::new(&self.dir);
        let read = journal.read().map_err(StoreError::io(journal.path()))?;
        report.journal_damage = read.damage;
        // What the journal says is recorded now, in order, and what was forgotten.
        let mut recorded: BTreeMap<ObjectId, ObjectRow> = BTreeMap::new();
        let mut forgotten: HashSet<ObjectId> = HashSet::new();
        // Every version ever recorded, forgotten ones included (their numbers stay taken).
        let mut every: Vec<ObjectRow> = Vec::new();
        for r in read.records {
            match r {
                Record::Recorded(row) => {
                    every.push(row);
                    forgotten.remove(&row.id);
                    recorded.insert(row.id, row);
                }
                Record::Forgotten(id) => {
                    recorded.remove(&id);
                    forgotten.insert(id);
                }
            }
        }
        let mut rows: Vec<ObjectRow> = Vec::new();
        for row in recorded.values() {
            match self.whole(&row.id) {
                Ok(true) => rows.push(*row),
                Ok(false) => report.lost.push(format!(
                    "object {} (version {}): some of its chunks are missing",
                    row.id, row.version
                )),
                Err(e) => {
                    report.lost.push(format!("object {} (version {}): {e}", row.id, row.version))
                }
            }
        }
        report.from_journal = rows.len() as u64;
        // Roots the journal does not name: this identity's whole objects, numbered by time
        // after the versions the journal gives their lineage.
        let mut found: Vec<ObjectRow> = Vec::new();
        for (id, loc) in self.index().blobs()? {
            if loc.kind != BlobKind::Root {
                continue;
            }
            let id = ObjectId(id.0);
            if recorded.contains_key(&id) {
                continue;
            }
            if forgotten.contains(&id) {
                report.forgotten += 1;
                continue;
            }
            let Ok(root) = self.read_root(&id) else {
                report.foreign_roots += 1;
                continue;
            };
            if !self.whole(&id).unwrap_or(false) {
                report.partial += 1;
                continue;
            }
            let lineage = self.keys.lineage(&root.source);
            found.push(ObjectRow { id, lineage, version: 0, created_ms: root.created_ms });
        }
        found.sort_by_key(|r| (r.lineage, r.created_ms, r.id));
        let mut last: BTreeMap<[u8; 32], u32> = BTreeMap::new();
        for r in rows.iter().chain(&every) {
            let v = last.entry(r.lineage).or_default();
            *v = (*v).max(r.version);
        }
        for mut r in found {
            let v = last.entry(r.lineage).or_default();
            *v += 1;
            r.version = *v;
            rows.push(r);
        }
        report.found_by_time = rows.len() as u64 - report.from_journal;
        // In version order, so each lineage's counter ends at its highest; numbers of
        // forgotten versions are never given again either.
        rows.sort_by_key(|r| (r.lineage, r.version));
        let mut tokens = HashSet::new();
        for row in &rows {
            self.index().add_object(*row)?;
            let root = self.read_root(&row.id)?;
            let mut reader = self.tree_reader(&root);
            let mut add = |r: &super::tree::ChunkRef| {
                tokens.insert((self.keys.token(&r.chunk_key()), r.id));
            };
            root.tree.iter().for_each(&mut add);
            while let Some(item) = reader.next_item()? {
                if let Item::Chunk(r) = item {
                    add(&r);
                }
            }
        }
        for (lineage, v) in &last {
            self.index().raise_last_version(lineage, *v)?;
        }
        report.objects = rows.len() as u64;
        report.tokens = tokens.len() as u64;
        self.index().add_packs(&[], &tokens.into_iter().collect::<Vec<_>>())?;
        // The versions found by time join the journal; the rest of it stays as it was.
        for row in rows.iter().filter(|r| !recorded.contains_key(&r.id)) {
            journal.append(&Record::Recorded(*row)).map_err(StoreError::io(journal.path()))?;
        }
        Ok(())
    }

    /// Whether object `id`'s root, tree and every chunk of its files are in the store.
    pub(super) fn whole(&self, id: &ObjectId) -> Result<bool, StoreError> {
        if self.index().blob(&ChunkId(id.0))?.is_none() {
            return Ok(false);
        }
        let root = self.read_root(id)?;
        for r in &root.tree {
            if self.index().blob(&r.chunk_id())?.is_none() {
                return Ok(false);
            }
        }
        let mut reader = self.tree_reader(&root);
        while let Some(item) = reader.next_item()? {
            if let Item::Chunk(r) = item
                && self.index().blob(&r.chunk_id())?.is_none()
            {
                return Ok(false);
            }
        }
        Ok(true)
    }
}
