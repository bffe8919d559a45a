//! The store index (redb): where each blob is, dedup tokens, packs, objects and lineages.
//!
//! Nothing here is plaintext: blob ids are hashes of ciphertext, tokens and lineage names are
//! keyed hashes. Losing the index loses no data: pack trailers list every blob.

use std::collections::HashSet;
use std::path::Path;

use redb::{
    Database, ReadTransaction, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};

use crate::ids::{ChunkId, ObjectId};
use crate::store::pack::{BlobKind, BlobLocation, FinishedPack};

/// Store format version this build writes and the newest it reads.
pub const STORE_FORMAT: u64 = 1;
/// Memory the index may use for its page cache.
const CACHE_BYTES: usize = 32 << 20;
/// Free space in the index file below which compaction is not worth it.
const COMPACT_MIN_FREE: u64 = 4 << 20;

/// Blob id -> (pack, offset, length, kind).
pub(crate) const BLOBS: TableDefinition<'static, [u8; 32], (u64, u64, u32, u8)> =
    TableDefinition::new("blobs");
/// Dedup token -> chunk id.
pub(crate) const TOKENS: TableDefinition<'static, [u8; 32], [u8; 32]> =
    TableDefinition::new("tokens");
/// Pack number -> (file size, blob count, bytes of blobs when written).
pub(crate) const PACKS: TableDefinition<'static, u64, (u64, u32, u64)> =
    TableDefinition::new("packs");
/// Object id -> (lineage, version number, created ms).
pub(crate) const OBJECTS: TableDefinition<'static, [u8; 32], ([u8; 32], u32, u64)> =
    TableDefinition::new("objects");
/// (lineage, version number) -> object id.
pub(crate) const LINEAGES: TableDefinition<'static, ([u8; 32], u32), [u8; 32]> =
    TableDefinition::new("lineages");
/// Store metadata: "format" -> STORE_FORMAT.
const META: TableDefinition<'static, &'static str, u64> = TableDefinition::new("meta");

/// Why the index failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// redb failed (I/O, corruption, full disk).
    #[error("store index: {0}")]
    Db(#[from] redb::Error),
    /// The store was written by a newer kith.
    #[error("the store has format {found}; this kith reads up to {STORE_FORMAT}: upgrade kith")]
    NewerFormat {
        /// Format found.
        found: u64,
    },
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for IndexError {
            fn from(e: $t) -> Self { IndexError::Db(e.into()) }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// One object in the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectRow {
    /// The object (and its root blob).
    pub id: ObjectId,
    /// Its lineage.
    pub lineage: [u8; 32],
    /// Its version number within the lineage (from 1).
    pub version: u32,
    /// When it was stored (ms since the epoch).
    pub created_ms: u64,
}

/// A pack to record: its number, file size and blobs.
#[derive(Debug, Clone)]
pub struct NewPack {
    /// Its number.
    pub number: u64,
    /// File size in bytes.
    pub size: u64,
    /// Bytes of blob data in the file, all of its blobs: those indexed here and any another
    /// pack holds (an ingest leaves those out), so that `gc` sees them as unused.
    pub data: u64,
    /// Its blobs and where they are.
    pub blobs: Vec<(ChunkId, BlobLocation)>,
}

/// One pack in the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackRow {
    /// Its number.
    pub number: u64,
    /// File size in bytes.
    pub size: u64,
    /// Blobs it held when written.
    pub blobs: u32,
    /// Bytes of those blobs.
    pub data_bytes: u64,
}

/// The index database.
pub struct Index {
    db: Database,
}

impl Index {
    /// Opens (or creates) the index at `path`.
    pub fn open(path: &Path) -> Result<Self, IndexError> {
        let db = redb::Builder::new().set_cache_size(CACHE_BYTES).create(path)?;
        let index = Self { db };
        let tx = index.write()?;
        {
            let mut meta = tx.open_table(META)?;
            let found = meta.get("format")?.map(|v| v.value());
            match found {
                Some(v) if v > STORE_FORMAT => return Err(IndexError::NewerFormat { found: v }),
                Some(_) => {}
                None => {
                    meta.insert("format", STORE_FORMAT)?;
                }
            }
            // Create every table, so readers never meet a missing one.
            tx.open_table(BLOBS)?;
            tx.open_table(TOKENS)?;
            tx.open_table(PACKS)?;
            tx.open_table(OBJECTS)?;
            tx.open_table(LINEAGES)?;
        }
        tx.commit()?;
        Ok(index)
    }

    /// A read snapshot.
    pub fn read(&self) -> Result<ReadTransaction, IndexError> {
        use redb::ReadableDatabase;
        Ok(self.db.begin_read()?)
    }

    /// A durable write transaction (fsync on commit, quick crash recovery).
    pub fn write(&self) -> Result<WriteTransaction, IndexError> {
        let mut tx = self.db.begin_write()?;
        tx.set_quick_repair(true);
        Ok(tx)
    }

    /// Where a blob is, if the index knows it.
    pub fn blob(&self, id: &ChunkId) -> Result<Option<BlobLocation>, IndexError> {
        let tx = self.read()?;
        let t = tx.open_table(BLOBS)?;
        Ok(t.get(id.0)?.map(|v| location(v.value())))
    }

    /// Every object, oldest first.
    pub fn objects(&self) -> Result<Vec<ObjectRow>, IndexError> {
        let tx = self.read()?;
        let t = tx.open_table(OBJECTS)?;
        let mut rows = Vec::new();
        for item in t.iter()? {
            let (k, v) = item?;
            let (lineage, version, created_ms) = v.value();
            rows.push(ObjectRow { id: ObjectId(k.value()), lineage, version, created_ms });
        }
        rows.sort_by_key(|r| (r.created_ms, r.id));
        Ok(rows)
    }

    /// One object's row.
    pub fn object(&self, id: &ObjectId) -> Result<Option<ObjectRow>, IndexError> {
        let tx = self.read()?;
        let t = tx.open_table(OBJECTS)?;
        Ok(t.get(id.0)?.map(|v| {
            let (lineage, version, created_ms) = v.value();
            ObjectRow { id: *id, lineage, version, created_ms }
        }))
    }

    /// The versions of a lineage, oldest first.
    pub fn versions(&self, lineage: &[u8; 32]) -> Result<Vec<(u32, ObjectId)>, IndexError> {
        let tx = self.read()?;
        let t = tx.open_table(LINEAGES)?;
        let mut out = Vec::new();
        for item in t.range((*lineage, 0u32)..=(*lineage, u32::MAX))? {
            let (k, v) = item?;
            out.push((k.value().1, ObjectId(v.value())));
        }
        Ok(out)
    }

    /// The highest version number a lineage has ever had (0 if none), including removed ones.
    pub fn last_version_number(&self, lineage: &[u8; 32]) -> Result<u32, IndexError> {
        let tx = self.read()?;
        let meta = tx.open_table(META)?;
        let key = lineage_counter_key(lineage);
        Ok(meta.get(key.as_str())?.map(|v| v.value() as u32).unwrap_or(0))
    }

    /// Records a new object as version `version` of `lineage`.
    pub fn add_object(&self, row: ObjectRow) -> Result<(), IndexError> {
        let tx = self.write()?;
        {
            tx.open_table(OBJECTS)?.insert(row.id.0, (row.lineage, row.version, row.created_ms))?;
            tx.open_table(LINEAGES)?.insert((row.lineage, row.version), row.id.0)?;
            let key = lineage_counter_key(&row.lineage);
            tx.open_table(META)?.insert(key.as_str(), row.version as u64)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Makes `lineage`'s last version number at least `version` (numbers are never reused).
    pub fn raise_last_version(&self, lineage: &[u8; 32], version: u32) -> Result<(), IndexError> {
        if self.last_version_number(lineage)? >= version {
            return Ok(());
        }
        let tx = self.write()?;
        tx.open_table(META)?.insert(lineage_counter_key(lineage).as_str(), version as u64)?;
        tx.commit()?;
        Ok(())
    }

    /// Forgets an object (its blobs stay until `gc`). Returns whether it was known.
    pub fn remove_object(&self, id: &ObjectId) -> Result<bool, IndexError> {
        let tx = self.write()?;
        let removed = {
            let mut objects = tx.open_table(OBJECTS)?;
            let row = objects.remove(id.0)?.map(|v| v.value());
            if let Some((lineage, version, _)) = row {
                tx.open_table(LINEAGES)?.remove((lineage, version))?;
            }
            row.is_some()
        };
        tx.commit()?;
        Ok(removed)
    }

    /// Every pack.
    pub fn packs(&self) -> Result<Vec<PackRow>, IndexError> {
        let tx = self.read()?;
        let t = tx.open_table(PACKS)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (k, v) = item?;
            let (size, blobs, data_bytes) = v.value();
            out.push(PackRow { number: k.value(), size, blobs, data_bytes });
        }
        Ok(out)
    }

    /// The next unused pack number.
    pub fn next_pack_number(&self) -> Result<u64, IndexError> {
        let tx = self.read()?;
        let t = tx.open_table(PACKS)?;
        Ok(t.last()?.map(|(k, _)| k.value() + 1).unwrap_or(1))
    }

    /// The chunk a dedup token names, if any.
    pub fn token(&self, token: &[u8; 32]) -> Result<Option<[u8; 32]>, IndexError> {
        let tx = self.read()?;
        let t = tx.open_table(TOKENS)?;
        Ok(t.get(*token)?.map(|v| v.value()))
    }

    /// Records packs that are complete on disk, their blobs and their dedup tokens, in one
    /// transaction.
    pub fn add_packs(
        &self,
        packs: &[NewPack],
        tokens: &[([u8; 32], [u8; 32])],
    ) -> Result<(), IndexError> {
        let tx = self.write()?;
        {
            let mut table = tx.open_table(BLOBS)?;
            for p in packs {
                for (id, loc) in &p.blobs {
                    table.insert(id.0, location_value(loc))?;
                }
            }
            let mut table = tx.open_table(TOKENS)?;
            for (token, id) in tokens {
                table.insert(*token, *id)?;
            }
            let mut table = tx.open_table(PACKS)?;
            for p in packs {
                table.insert(p.number, (p.size, p.blobs.len() as u32, p.data))?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Compacts the index file when more than half of it is free pages (left by copy-on-write
    /// commits). Returns whether it compacted.
    pub fn compact_if_fragmented(&mut self) -> Result<bool, IndexError> {
        let tx = self.db.begin_write()?;
        let stats = tx.stats()?;
        tx.abort()?;
        let total = stats.allocated_pages() * stats.page_size() as u64 + stats.fragmented_bytes();
        if stats.fragmented_bytes() < COMPACT_MIN_FREE || stats.fragmented_bytes() * 2 < total {
            return Ok(false);
        }
        while self.db.compact().map_err(|e| IndexError::Db(e.into()))? {}
        Ok(true)
    }

    /// Forgets packs and every blob and token in them (undoing a failed put).
    pub fn forget_packs(&self, packs: &[u64]) -> Result<(), IndexError> {
        let set: HashSet<u64> = packs.iter().copied().collect();
        let tx = self.write()?;
        {
            let mut removed = HashSet::new();
            tx.open_table(BLOBS)?.retain(|id, (pack, ..)| {
                let gone = set.contains(&pack);
                if gone {
                    removed.insert(id);
                }
                !gone
            })?;
            tx.open_table(TOKENS)?.retain(|_, id| !removed.contains(&id))?;
            let mut table = tx.open_table(PACKS)?;
            for n in packs {
                table.remove(n)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Applies a gc: forgets `remove` blobs (and their tokens) and the `old` packs, and records
    /// `new` packs, whose blobs move there.
    pub fn replace_packs(
        &self,
        remove: &[ChunkId],
        old: &[u64],
        new: &[FinishedPack],
    ) -> Result<(), IndexError> {
        let removed: HashSet<[u8; 32]> = remove.iter().map(|id| id.0).collect();
        let tx = self.write()?;
        {
            let mut blobs = tx.open_table(BLOBS)?;
            for id in &removed {
                blobs.remove(*id)?;
            }
            for p in new {
                for (e, offset) in &p.entries {
                    let kind = BlobKind::from_u8(e.kind).unwrap_or(BlobKind::Chunk);
                    let loc = BlobLocation { pack: p.number, offset: *offset, len: e.len, kind };
                    blobs.insert(e.id, location_value(&loc))?;
                }
            }
            tx.open_table(TOKENS)?.retain(|_, id| !removed.contains(&id))?;
            let mut packs = tx.open_table(PACKS)?;
            for n in old {
                packs.remove(*n)?;
            }
            for p in new {
                let data: u64 = p.entries.iter().map(|(e, _)| e.len as u64).sum();
                packs.insert(p.number, (p.size, p.entries.len() as u32, data))?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// How many blobs the index lists.
    pub fn blob_count(&self) -> Result<u64, IndexError> {
        let tx = self.read()?;
        Ok(tx.open_table(BLOBS)?.len()?)
    }

    /// Every blob with its location.
    pub fn blobs(&self) -> Result<Vec<(ChunkId, BlobLocation)>, IndexError> {
        let tx = self.read()?;
        let t = tx.open_table(BLOBS)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (k, v) = item?;
            out.push((ChunkId(k.value()), location(v.value())));
        }
        Ok(out)
    }
}

/// Decodes a BLOBS value.
pub(crate) fn location((pack, offset, len, kind): (u64, u64, u32, u8)) -> BlobLocation {
    BlobLocation { pack, offset, len, kind: BlobKind::from_u8(kind).unwrap_or(BlobKind::Chunk) }
}

/// Encodes a BLOBS value.
pub(crate) fn location_value(l: &BlobLocation) -> (u64, u64, u32, u8) {
    (l.pack, l.offset, l.len, l.kind as u8)
}

fn lineage_counter_key(lineage: &[u8; 32]) -> String {
    format!("lineage-last/{}", data_encoding::HEXLOWER.encode(lineage))
}
