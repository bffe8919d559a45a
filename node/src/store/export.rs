//! Export files (`kith export`, `kith import`): everything of this identity's store in one
//! file, as it is stored (chunks stay encrypted), in a framed format specified in
//! `docs/formats.md` and readable without kith's code.
//!
//! ```text
//! header  "KITHEXP1" | format u32 LE (1)
//! entry   tag u8 | length u32 LE | payload
//!   1 about        CBOR [identity [32], created_ms u64, objects u64, blobs u64]
//!   2 identity     the identity document, as saved (`identity.kdoc`)
//!   3 pool         CBOR [pool id [32], name text]: a membership, as a reference
//!   4 blob         id [32] | kind u8 (0 chunk, 1 root) | the blob as stored
//!   5 object       an object journal record (85 bytes, see journal.rs)
//!   255 end        entries before it u64 LE | BLAKE3 of every byte before this entry [32]
//! ```
//!
//! Blobs come before the objects that use them, so an import adopts an object only once every
//! blob of it arrived; the end entry proves that nothing was cut off or changed.

use std::collections::HashSet;
use std::io::{self, Read, Write};

use minicbor::{Decode, Encode};

use super::framed::{FramedReader, FramedWriter};
use super::journal::Record;
use super::pack::{BlobKind, MAX_BLOB_BYTES};
use super::tree::Item;
use super::{BlobReader, Progress, Store, StoreError};
use crate::ids::ChunkId;

const MAGIC: &[u8; 8] = b"KITHEXP1";
/// Export format this build writes and the newest it reads.
pub const EXPORT_FORMAT: u32 = 1;
const TAG_ABOUT: u8 = 1;
const TAG_IDENTITY: u8 = 2;
const TAG_POOL: u8 = 3;
const TAG_BLOB: u8 = 4;
const TAG_OBJECT: u8 = 5;
/// Most objects and pools one export may name (their records are kept until the end).
const MAX_NAMED: usize = 10_000_000;
/// Largest entry: a blob with its header (a root is at most 16 MiB).
const MAX_ENTRY: u32 = MAX_BLOB_BYTES + 64;

/// What an export says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(array)]
pub struct About {
    /// The identity whose store it is.
    #[n(0)]
    #[cbor(with = "minicbor::bytes")]
    pub identity: [u8; 32],
    /// When it was written (ms since the epoch).
    #[n(1)]
    pub created_ms: u64,
    /// Objects in it.
    #[n(2)]
    pub objects: u64,
    /// Blobs in it.
    #[n(3)]
    pub blobs: u64,
}

/// A pool membership, as a reference (the pool's nodes hold the document).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(array)]
pub struct PoolRef {
    /// The pool.
    #[n(0)]
    #[cbor(with = "minicbor::bytes")]
    pub id: [u8; 32],
    /// Its name.
    #[n(1)]
    pub name: String,
}

/// What goes into an export besides the store.
#[derive(Debug, Clone, Default)]
pub struct ExportExtras {
    /// The identity document, as saved.
    pub identity_doc: Option<Vec<u8>>,
    /// The pools this identity is in.
    pub pools: Vec<PoolRef>,
}

/// What an export wrote, or an import read and took.
#[derive(Debug, Clone, Default)]
pub struct ExportReport {
    /// Objects.
    pub objects: u64,
    /// Blobs.
    pub blobs: u64,
    /// Bytes of blobs.
    pub blob_bytes: u64,
    /// Blobs the store had already (import).
    pub blobs_present: u64,
    /// Blobs an interrupted export had written already (export, resumed).
    pub resumed_blobs: u64,
    /// Objects the file names without carrying all their blobs (import: left out).
    pub incomplete: u64,
    /// The identity document, if one was in it (import: its bytes, to merge).
    pub identity_doc: Option<Vec<u8>>,
    /// Pool memberships named.
    pub pools: Vec<PoolRef>,
}

/// Why an export file was refused.
fn bad(why: impl Into<String>) -> StoreError {
    StoreError::BadSpec(format!("not a readable kith export: {}", why.into()))
}

/// What an interrupted export had written, read back from its partial file.
#[derive(Debug, Clone)]
pub struct ExportResume {
    hash: blake3::Hasher,
    entries: u64,
    /// Bytes of the whole entries (and the header) to keep; the rest is cut off.
    pub offset: u64,
    about: Option<About>,
    identity_doc: Option<Vec<u8>>,
    pools: Vec<PoolRef>,
    /// Whether its first part (about, identity document, pools) is all there.
    header_done: bool,
    blobs: HashSet<ChunkId>,
    objects: HashSet<[u8; 32]>,
}

impl ExportResume {
    /// Reads a partial export up to its first entry that is cut, torn, out of order or not
    /// what it claims (a blob whose bytes do not match its id): what comes before stays. `None`
    /// if it is not an export of this format.
    pub fn read<R: Read>(input: R) -> Option<ExportResume> {
        let (mut frames, format) = FramedReader::new(input, MAGIC, MAX_ENTRY).ok()?;
        if format != EXPORT_FORMAT {
            return None;
        }
        let mut r = ExportResume {
            hash: frames.hasher(),
            entries: 0,
            offset: frames.offset(),
            about: None,
            identity_doc: None,
            pools: Vec::new(),
            header_done: false,
            blobs: HashSet::new(),
            objects: HashSet::new(),
        };
        // Entries come in this order: about, identity, pools, blobs, objects.
        let mut phase = 0;
        while let Ok(Some((tag, payload))) = frames.next_raw() {
            let ok = match tag {
                TAG_ABOUT if phase == 0 => {
                    phase = 1;
                    r.about = minicbor::decode(&payload).ok();
                    r.about.is_some()
                }
                TAG_IDENTITY if phase == 1 => {
                    r.identity_doc = Some(payload);
                    phase = 2;
                    true
                }
                TAG_POOL if (1..=2).contains(&phase) => {
                    phase = 2;
                    minicbor::decode(&payload).map(|p| r.pools.push(p)).is_ok()
                }
                TAG_BLOB if (1..=3).contains(&phase) && payload.len() >= 33 => {
                    phase = 3;
                    let id = ChunkId(payload[..32].try_into().expect("32 bytes"));
                    ChunkId::of(&payload[33..]) == id && r.blobs.insert(id)
                }
                TAG_OBJECT if (1..=4).contains(&phase) => {
                    phase = 4;
                    match super::journal::decode(&payload) {
                        Ok(Record::Recorded(row)) => r.objects.insert(row.id.0),
                        _ => false,
                    }
                }
                _ => false,
            };
            if !ok {
                break;
            }
            r.header_done = phase >= 3;
            r.hash = frames.hasher();
            r.entries = frames.entries();
            r.offset = frames.offset();
        }
        r.about.is_some().then_some(r)
    }

    /// Blobs it holds already.
    pub fn blobs(&self) -> usize {
        self.blobs.len()
    }
}

impl Store {
    /// Writes every object of this store (with every blob it uses, once) to `out`.
    pub fn export<W: Write>(
        &self,
        out: W,
        extras: &ExportExtras,
        created_ms: u64,
        progress: Option<&Progress>,
    ) -> Result<(W, ExportReport), StoreError> {
        self.export_resuming(out, extras, created_ms, progress, None)
    }

    /// Whether the partial export `r` is the start of what an export of this store with
    /// `extras` writes now: the same identity, objects and header entries (what it holds of
    /// objects still here). Else it is started over.
    pub fn resume_fits(&self, r: &ExportResume, extras: &ExportExtras) -> Result<bool, StoreError> {
        let rows = self.index().objects()?;
        let about_fits = r.about.as_ref().is_some_and(|a| {
            a.identity == *self.identity().id().as_bytes() && a.objects == rows.len() as u64
        });
        let here: HashSet<[u8; 32]> = rows.iter().map(|row| row.id.0).collect();
        Ok(about_fits
            && r.header_done
            && r.identity_doc == extras.identity_doc
            && r.pools == extras.pools
            && r.objects.iter().all(|o| here.contains(o)))
    }

    /// [`Store::export`], continuing the partial export `resume` read back (`out` is that file,
    /// cut at `resume.offset` and positioned there): what it holds is not written again.
    pub fn export_resuming<W: Write>(
        &self,
        out: W,
        extras: &ExportExtras,
        created_ms: u64,
        progress: Option<&Progress>,
        resume: Option<ExportResume>,
    ) -> Result<(W, ExportReport), StoreError> {
        let io_err = |e: io::Error| StoreError::Dest { path: "the export".into(), source: e };
        let mut rows = self.index().objects()?;
        rows.sort_by_key(|r| (r.created_ms, r.lineage, r.version));
        // Each root read once: the progress total, then the walk.
        let roots = rows.iter().map(|r| self.read_root(&r.id)).collect::<Result<Vec<_>, _>>()?;
        if let Some(p) = progress {
            let total: u64 = roots.iter().map(|root| root.stats.bytes).sum();
            p.bytes_total.store(total, std::sync::atomic::Ordering::Relaxed);
            p.total_known.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let mut report = ExportReport::default();
        let (mut w, mut written, objects_written) = match resume {
            Some(r) => {
                report.resumed_blobs = r.blobs.len() as u64;
                (FramedWriter::resume(out, r.hash, r.entries), r.blobs, r.objects)
            }
            None => {
                let mut w = FramedWriter::new(out, MAGIC, EXPORT_FORMAT).map_err(io_err)?;
                // The blob count is known only at the end: the about entry counts objects,
                // and the end entry proves the whole.
                let about = About {
                    identity: *self.identity().id().as_bytes(),
                    created_ms,
                    objects: rows.len() as u64,
                    blobs: 0,
                };
                let cbor = minicbor::to_vec(&about).expect("encoding into a Vec cannot fail");
                w.entry(TAG_ABOUT, &[&cbor]).map_err(io_err)?;
                if let Some(doc) = &extras.identity_doc {
                    w.entry(TAG_IDENTITY, &[doc]).map_err(io_err)?;
                }
                for p in &extras.pools {
                    let cbor = minicbor::to_vec(p).expect("encoding into a Vec cannot fail");
                    w.entry(TAG_POOL, &[&cbor]).map_err(io_err)?;
                }
                (w, HashSet::new(), HashSet::new())
            }
        };
        let mut reader = BlobReader::new(self);
        for (row, root) in rows.iter().zip(&roots) {
            let mut ids: Vec<ChunkId> = vec![ChunkId(row.id.0)];
            ids.extend(root.tree.iter().map(|r| r.chunk_id()));
            let mut tree = self.tree_reader(root);
            let mut data = 0u64;
            while let Some(item) = tree.next_item()? {
                if let Item::Chunk(r) = item {
                    ids.push(r.chunk_id());
                    data += u64::from(r.len);
                }
            }
            for id in ids {
                if !written.insert(id) {
                    continue;
                }
                let (kind, bytes) =
                    reader.read_with_kind(&id)?.ok_or(StoreError::Missing { chunk: id })?;
                w.entry(TAG_BLOB, &[&id.0, &[kind as u8], &bytes]).map_err(io_err)?;
                report.blobs += 1;
                report.blob_bytes += bytes.len() as u64;
            }
            if let Some(p) = progress {
                p.bytes_done.fetch_add(data, std::sync::atomic::Ordering::Relaxed);
                p.files_done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        for row in rows.iter().filter(|r| !objects_written.contains(&r.id.0)) {
            w.entry(TAG_OBJECT, &[&super::journal::encode(&Record::Recorded(*row))])
                .map_err(io_err)?;
        }
        report.objects = rows.len() as u64;
        report.pools = extras.pools.clone();
        let out = w.end().map_err(io_err)?;
        Ok((out, report))
    }

    /// Reads an export of this identity from `input`: takes every blob (each checked against
    /// its id), then, once the end entry proved the file whole, records its objects (their
    /// versions numbered after what this store has). Blobs of a file found damaged stay
    /// unreferenced (`kith gc` reclaims them); no object of it is recorded.
    pub fn import<R: Read>(
        &self,
        input: R,
        progress: Option<&Progress>,
    ) -> Result<ExportReport, StoreError> {
        let mut entries = Entries::new(input)?;
        let me = *self.identity().id().as_bytes();
        let short = |k: &[u8; 32]| k[..6].iter().map(|b| format!("{b:02x}")).collect::<String>();
        let mut report = ExportReport::default();
        let mut objects: Vec<super::index::ObjectRow> = Vec::new();
        let mut ingest = self.ingest()?;
        while let Some(entry) = entries.next_entry()? {
            if objects.len() + report.pools.len() >= MAX_NAMED {
                return Err(bad(format!("it names more than {MAX_NAMED} objects and pools")));
            }
            match entry {
                Entry::About(a) if a.identity != me => {
                    return Err(StoreError::BadSpec(format!(
                        "this export is identity {}'s, and this home is identity {}'s: import it into a home made with that identity (`kith init --import KEYFILE`)",
                        short(&a.identity),
                        short(&me)
                    )));
                }
                Entry::About(_) => {}
                Entry::Identity(doc) => report.identity_doc = Some(doc),
                Entry::Pool(p) => report.pools.push(p),
                Entry::Blob { id, kind, bytes } => {
                    let added = ingest.add(id, kind, &bytes).map_err(|e| match e {
                        StoreError::Damaged { .. } => bad("a blob does not match its id (damaged)"),
                        e => e,
                    })?;
                    if added {
                        report.blobs += 1;
                        report.blob_bytes += bytes.len() as u64;
                    } else {
                        report.blobs_present += 1;
                    }
                    if let Some(p) = progress {
                        p.bytes_done.fetch_add(
                            bytes.len() as u64 + 38,
                            std::sync::atomic::Ordering::Relaxed,
                        );
                    }
                }
                Entry::Object(row) => objects.push(row),
            }
        }
        // Recorded under the same writer lock that took the blobs; an object whose blobs are not
        // all here (a file that lists more than it carries) is left out and counted.
        let (_, recorded) = ingest.finish_then(|| {
            let (mut recorded, mut skipped) = (0u64, 0u64);
            for row in &objects {
                if self.index().object(&row.id)?.is_some() {
                    continue;
                }
                if self.whole(&row.id).unwrap_or(false) {
                    self.adopt_locked(&row.id, Some(row.version))?;
                    recorded += 1;
                } else {
                    skipped += 1;
                }
            }
            Ok::<_, StoreError>((recorded, skipped))
        })?;
        (report.objects, report.incomplete) = recorded?;
        Ok(report)
    }
}

/// One entry of an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// Whose it is (always first).
    About(About),
    /// The identity document.
    Identity(Vec<u8>),
    /// A pool membership.
    Pool(PoolRef),
    /// A blob as stored.
    Blob {
        /// Its id (not checked here: the store checks it).
        id: ChunkId,
        /// What it is.
        kind: BlobKind,
        /// Its bytes.
        bytes: Vec<u8>,
    },
    /// An object, as a journal record.
    Object(super::index::ObjectRow),
}

/// Reads an export's entries in order: framing, bounds, types and the end entry (which must
/// match every byte before it) are checked here; `next_entry` gives `None` only after a valid
/// end.
pub struct Entries<R> {
    frames: FramedReader<R>,
    about: bool,
}

impl<R: Read> Entries<R> {
    /// Reads the header.
    pub fn new(input: R) -> Result<Self, StoreError> {
        let (frames, format) = FramedReader::new(input, MAGIC, MAX_ENTRY).map_err(bad)?;
        if format > EXPORT_FORMAT {
            return Err(StoreError::BadSpec(format!(
                "the export has format {format}; this kith reads up to {EXPORT_FORMAT}: upgrade kith"
            )));
        }
        Ok(Entries { frames, about: false })
    }

    /// The next entry; `None` once the end entry proved the file whole.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, StoreError> {
        let Some((tag, payload)) = self.frames.next_raw().map_err(bad)? else {
            return Ok(None);
        };
        let entry = match tag {
            TAG_ABOUT => {
                self.about = true;
                Entry::About(minicbor::decode(&payload).map_err(|e| bad(e.to_string()))?)
            }
            _ if !self.about => return Err(bad("it does not say whose it is first")),
            TAG_IDENTITY => Entry::Identity(payload),
            TAG_POOL => Entry::Pool(minicbor::decode(&payload).map_err(|e| bad(e.to_string()))?),
            TAG_BLOB => {
                let (id, kind, bytes) = super::framed::blob_entry(payload).map_err(bad)?;
                Entry::Blob { id, kind, bytes }
            }
            TAG_OBJECT => match super::journal::decode(&payload) {
                Ok(Record::Recorded(row)) => Entry::Object(row),
                _ => return Err(bad("an object entry does not read")),
            },
            t => return Err(bad(format!("an entry of unknown type {t}"))),
        };
        Ok(Some(entry))
    }
}
