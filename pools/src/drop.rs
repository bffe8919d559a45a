//! Drops: a pool's changes and the blobs they reference, carried in a file between
//! neighbourhoods that have no link (`kith drop make`, `kith drop apply`).
//!
//! ```text
//! header  "KITHDRP1" | format u32 LE (1)
//! entry   tag u8 | length u32 LE | payload            (see node's store::framed)
//!   1 about    CBOR [pool id [32], maker identity [32], maker node [32], made_ms u64,
//!                    since [[32]...], heads [[32]...]]                        first
//!   2 change   signature [64] | one automerge change chunk (at most 64 KiB)
//!   3 blob     id [32] | kind u8 (0 chunk, 1 root) | the blob as stored
//!   255 end    entries before it u64 LE | BLAKE3 of every byte before this entry [32]
//! ```
//!
//! Changes come in causal order, before the blobs. A drop is judged like a peer's sync turn:
//! every change's signature and the pool's rules at its dependencies, whoever carried the file.
//! `since` is what the other side acknowledged (the heads of the last drop from it applied
//! here): changes in its history and the blobs of objects it listed are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};

use kith_crdt::automerge::ChangeHash;
use kith_crdt::{Key, hex};
use kith_node::ChunkId;
use kith_node::store::framed::{FramedReader, FramedWriter};
use kith_node::store::pack::{BlobKind, MAX_BLOB_BYTES};
use minicbor::{Decode, Encode};

use crate::docs::Pools;
use crate::manifest::Manifest;

const MAGIC: &[u8; 8] = b"KITHDRP1";
/// The drop format this kith writes and the newest it reads.
pub const DROP_FORMAT: u32 = 1;
const TAG_ABOUT: u8 = 1;
const TAG_CHANGE: u8 = 2;
const TAG_BLOB: u8 = 3;
/// Largest entry: a blob with its header.
const MAX_ENTRY: u32 = MAX_BLOB_BYTES + 64;
/// Heads named in an about entry, at most.
const MAX_HEADS: usize = 1024;
/// Bytes of changes a drop may carry (a pool document's whole history is a few MiB).
const MAX_CHANGE_BYTES_IN_DROP: usize = 256 << 20;

/// What a drop says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(array)]
pub struct About {
    /// The pool.
    #[n(0)]
    #[cbor(with = "minicbor::bytes")]
    pub pool: [u8; 32],
    /// The identity that made it.
    #[n(1)]
    #[cbor(with = "minicbor::bytes")]
    pub maker: [u8; 32],
    /// The node that made it.
    #[n(2)]
    #[cbor(with = "minicbor::bytes")]
    pub node: [u8; 32],
    /// When (ms since the epoch, the maker's clock).
    #[n(3)]
    pub made_ms: u64,
    /// The heads it was made since (empty: the whole document).
    #[n(4)]
    pub since: Vec<minicbor::bytes::ByteArray<32>>,
    /// The maker's heads of the pool document when it made the drop.
    #[n(5)]
    pub heads: Vec<minicbor::bytes::ByteArray<32>>,
}

/// What making or applying a drop did.
#[derive(Debug, Clone, Default)]
pub struct DropReport {
    /// The pool's name.
    pub pool: String,
    /// Changes carried (make) or new here (apply).
    pub changes: u64,
    /// Objects whose blobs it carries (make).
    pub objects: u64,
    /// Blobs carried (make) or new here (apply).
    pub blobs: u64,
    /// Their bytes.
    pub blob_bytes: u64,
    /// Blobs the store had already (apply).
    pub blobs_present: u64,
    /// Blobs of carried objects this node did not have (make): the other side must get them
    /// from elsewhere.
    pub blobs_missing: u64,
    /// Whether it was made since heads the other side acknowledged (else: everything).
    pub incremental: bool,
}

/// Why a drop could not be made or applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DropError {
    /// The file is not a readable drop.
    #[error("not a readable kith drop: {0}")]
    Bad(String),
    /// The drop is of a newer format.
    #[error("the drop has format {0}; this kith reads up to {DROP_FORMAT}: upgrade kith")]
    Newer(u32),
    /// This node is not in the drop's pool.
    #[error("this drop is of pool {0}, which this node is not in (join it first, with a ticket)")]
    NotInPool(String),
    /// The pool's rules refused the changes; nothing of them was applied.
    #[error("the drop's changes were refused, and none was applied: {0}")]
    Refused(String),
    /// Reading the file or the store, or writing, failed.
    #[error("{0}")]
    Io(String),
}

fn bad(why: impl Into<String>) -> DropError {
    DropError::Bad(why.into())
}

/// Where the heads of the last drop applied from the other side are kept, per pool.
fn acks_path(pools: &Pools, pool: &Key) -> std::path::PathBuf {
    pools.dir().join("drops").join(format!("{}.acked", hex(pool)))
}

/// The heads the other side acknowledged for `pool` (empty if none).
pub fn acknowledged(pools: &Pools, pool: &Key) -> Vec<ChangeHash> {
    let Ok(b) = std::fs::read(acks_path(pools, pool)) else { return Vec::new() };
    b.chunks_exact(32).map(|c| ChangeHash(c.try_into().expect("32 bytes"))).collect()
}

fn acknowledge(pools: &Pools, pool: &Key, heads: &[ChangeHash]) -> Result<(), DropError> {
    let path = acks_path(pools, pool);
    let io = |e: std::io::Error| DropError::Io(format!("cannot write {}: {e}", path.display()));
    std::fs::create_dir_all(path.parent().expect("a parent")).map_err(io)?;
    let bytes: Vec<u8> = heads.iter().flat_map(|h| h.0).collect();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)
}

/// The blobs a drop of `pool` carries: for every object listed now and not in `known`, its
/// manifest and every blob the manifest lists (each once). Manifests this store lacks are
/// counted as missing objects.
pub fn blobs_to_carry(
    pools: &Pools,
    store: &kith_node::Store,
    pool: &Key,
    known: &BTreeSet<Key>,
) -> Result<(Vec<ChunkId>, u64), DropError> {
    let v = pools.view_of(pool).ok_or_else(|| DropError::NotInPool(hex(&pool[..8])))?;
    let io = |e: kith_node::StoreError| DropError::Io(e.to_string());
    let (mut ids, mut seen, mut objects) = (Vec::new(), BTreeSet::new(), 0);
    for m in v.members.values() {
        for (oid, po) in &m.objects {
            if known.contains(oid) {
                continue;
            }
            objects += 1;
            if seen.insert(po.manifest) {
                ids.push(ChunkId(po.manifest));
            }
            let Some((_, bytes)) = store.read_blob(&ChunkId(po.manifest)).map_err(io)? else {
                continue;
            };
            let Ok(man) = Manifest::from_bytes(&bytes) else { continue };
            for (id, _) in &man.blobs {
                if seen.insert(**id) {
                    ids.push(ChunkId(**id));
                }
            }
        }
    }
    Ok((ids, objects))
}

/// Writes a drop of pool `pool` to `out`: the changes the other side lacks (everything when
/// `full`, else since the heads it acknowledged) and the blobs of the objects it did not list.
pub fn make<W: Write>(
    pools: &Pools,
    store: &kith_node::Store,
    pool: &Key,
    full: bool,
    out: W,
) -> Result<(W, DropReport), DropError> {
    let v = pools.view_of(pool).ok_or_else(|| DropError::NotInPool(hex(&pool[..8])))?;
    let since = if full { Vec::new() } else { acknowledged(pools, pool) };
    let carried = pools.carry_out(pool, &since).map_err(|e| DropError::Io(e.to_string()))?;
    let (ids, objects) = blobs_to_carry(pools, store, pool, &carried.known_objects)?;
    let mut report = DropReport {
        pool: v.charter.name.clone(),
        objects,
        incremental: !carried.since.is_empty(),
        ..DropReport::default()
    };
    let io = |e: std::io::Error| DropError::Io(format!("cannot write the drop: {e}"));
    let mut w = FramedWriter::new(out, MAGIC, DROP_FORMAT).map_err(io)?;
    let arr = |hs: &[ChangeHash]| hs.iter().map(|h| h.0.into()).collect::<Vec<_>>();
    let about = About {
        pool: *pool,
        maker: pools.signer().author().key,
        node: pools.node(),
        made_ms: pools.now_ms().max(0) as u64,
        since: arr(&carried.since),
        heads: arr(&carried.heads),
    };
    let cbor = minicbor::to_vec(&about).expect("encoding into a Vec cannot fail");
    w.entry(TAG_ABOUT, &[&cbor]).map_err(io)?;
    for c in &carried.changes {
        let Some(sig) = carried.sigs.get(&c.hash()) else { continue };
        w.entry(TAG_CHANGE, &[sig, c.raw_bytes()]).map_err(io)?;
        report.changes += 1;
    }
    for id in ids {
        match store.read_blob(&id).map_err(|e| DropError::Io(e.to_string()))? {
            Some((kind, bytes)) => {
                w.entry(TAG_BLOB, &[&id.0, &[kind as u8], &bytes]).map_err(io)?;
                report.blobs += 1;
                report.blob_bytes += bytes.len() as u64;
            }
            None => report.blobs_missing += 1,
        }
    }
    let out = w.end().map_err(io)?;
    Ok((out, report))
}

/// One entry of a drop.
#[derive(Debug)]
pub enum DropEntry {
    /// What the drop says about itself (always first).
    About(About),
    /// A change, parsed within bounds, with its author's signature (not checked here: the
    /// pool's rules check it).
    Change(Box<kith_crdt::automerge::Change>, [u8; 64]),
    /// A blob as stored (its id is checked by the store).
    Blob(ChunkId, BlobKind, Vec<u8>),
}

/// Reads a drop's entries in order: framing, bounds, types, the change chunks (before
/// automerge parses them) and the end entry; `next_entry` gives `None` only after a valid end.
pub struct DropReader<R> {
    frames: FramedReader<R>,
    about: bool,
    budget: usize,
}

impl<R: Read> DropReader<R> {
    /// Reads the header.
    pub fn new(input: R) -> Result<Self, DropError> {
        let (frames, format) = FramedReader::new(input, MAGIC, MAX_ENTRY).map_err(bad)?;
        if format > DROP_FORMAT {
            return Err(DropError::Newer(format));
        }
        Ok(DropReader { frames, about: false, budget: MAX_CHANGE_BYTES_IN_DROP })
    }

    /// The next entry; `None` once the end entry proved the file whole.
    pub fn next_entry(&mut self) -> Result<Option<DropEntry>, DropError> {
        let Some((tag, mut payload)) = self.frames.next_raw().map_err(bad)? else {
            return Ok(None);
        };
        Ok(Some(match tag {
            TAG_ABOUT if !self.about => {
                let a: About = minicbor::decode(&payload).map_err(|e| bad(e.to_string()))?;
                if a.since.len() > MAX_HEADS || a.heads.len() > MAX_HEADS {
                    return Err(bad("it names too many heads"));
                }
                self.about = true;
                DropEntry::About(a)
            }
            _ if !self.about => return Err(bad("it does not say which pool it is of first")),
            TAG_ABOUT => return Err(bad("it says which pool it is of twice")),
            TAG_CHANGE => {
                if payload.len() < 64 {
                    return Err(bad("a change entry is too short"));
                }
                let sig: [u8; 64] = payload[..64].try_into().expect("64 bytes");
                let mut cs = kith_crdt::bounds::carried_changes(&payload[64..], &mut self.budget)
                    .map_err(|e| bad(format!("a change does not read: {e}")))?;
                if cs.len() != 1 {
                    return Err(bad("a change entry holds other than one change"));
                }
                DropEntry::Change(Box::new(cs.pop().expect("one")), sig)
            }
            TAG_BLOB => {
                if payload.len() < 33 {
                    return Err(bad("a blob entry is too short"));
                }
                let id = ChunkId(payload[..32].try_into().expect("32 bytes"));
                let kind = BlobKind::from_u8(payload[32])
                    .ok_or_else(|| bad(format!("a blob of unknown kind {}", payload[32])))?;
                payload.drain(..33);
                DropEntry::Blob(id, kind, payload)
            }
            t => return Err(bad(format!("an entry of unknown type {t}"))),
        }))
    }
}

/// Applies a drop read from `input`: its blobs go into the store as they come (each checked
/// against its id); once the end proved the file whole, its changes are judged and applied
/// all together (or none), under the store's writer lock, so no gc takes the blobs between.
/// The drop's heads are then kept as what the other side acknowledged.
pub fn apply<R: Read>(
    pools: &Pools,
    store: &kith_node::Store,
    input: R,
) -> Result<DropReport, DropError> {
    let mut entries = DropReader::new(input)?;
    let store_err = |e: kith_node::StoreError| DropError::Io(e.to_string());
    let mut about: Option<About> = None;
    let mut changes = Vec::new();
    let mut sigs = BTreeMap::new();
    let mut report = DropReport::default();
    let mut ingest = store.ingest().map_err(store_err)?;
    while let Some(entry) = entries.next_entry()? {
        match entry {
            DropEntry::About(a) => {
                let v = pools
                    .view_of(&a.pool)
                    .ok_or_else(|| DropError::NotInPool(hex(&a.pool[..8])))?;
                report.pool = v.charter.name;
                about = Some(a);
            }
            DropEntry::Change(c, sig) => {
                sigs.insert(c.hash(), sig);
                changes.push(*c);
            }
            DropEntry::Blob(id, kind, bytes) => {
                let added = ingest.add(id, kind, &bytes).map_err(|e| match e {
                    kith_node::StoreError::Damaged { .. } => {
                        bad("a blob does not match its id (damaged)")
                    }
                    e => store_err(e),
                })?;
                if added {
                    report.blobs += 1;
                    report.blob_bytes += bytes.len() as u64;
                } else {
                    report.blobs_present += 1;
                }
            }
        }
    }
    let about = about.ok_or_else(|| bad("it says nothing about itself"))?;
    let new = ingest
        .finish_then(|| pools.carry_in(&about.pool, changes, &sigs))
        .map_err(store_err)?
        .1
        .map_err(|e| match e {
            crate::pool::PoolError::Doc(kith_crdt::DocError::MissingDeps { count, .. }) => {
                DropError::Refused(format!(
                    "{count} of its changes follow changes this node does not have: apply the drops made before it first, or ask the other side for a full drop (`kith drop make --full`)"
                ))
            }
            e => DropError::Refused(e.to_string()),
        })?;
    report.changes = new as u64;
    let heads: Vec<ChangeHash> = about.heads.iter().map(|h| ChangeHash(**h)).collect();
    acknowledge(pools, &about.pool, &heads)?;
    Ok(report)
}
