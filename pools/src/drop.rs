//! Drops: a pool's changes and the blobs they reference, carried in a file between
//! neighbourhoods that have no link (`kith drop make`, `kith drop apply`).
//!
//! ```text
//! header  "KITHDRP1" | format u32 LE (2; format 1 is read too)
//! entry   tag u8 | length u32 LE | payload            (see node's store::framed)
//!   1 about    CBOR [pool id [32], maker identity [32], maker node [32], made_ms u64,
//!                    since [[32]...], heads [[32]...]]                        first
//!   2 change   signature length u8 | signature (64 or 160, kith_crdt::Sig) |
//!              one automerge change chunk (at most 64 KiB)       (format 1: signature [64] |
//!              change)
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
use minicbor::bytes::ByteArray;
use minicbor::{Decode, Encode};

use crate::docs::Pools;
use crate::manifest::Manifest;

const MAGIC: &[u8; 8] = b"KITHDRP1";
/// The drop format this kith writes and the newest it reads.
pub const DROP_FORMAT: u32 = 2;
const TAG_ABOUT: u8 = 1;
const TAG_CHANGE: u8 = 2;
const TAG_BLOB: u8 = 3;
/// Largest entry: a blob with its header.
const MAX_ENTRY: u32 = MAX_BLOB_BYTES + 64;
/// Heads named in an about entry, at most.
const MAX_HEADS: usize = 1024;
/// Bytes of changes a drop may carry, inflated (a pool document's whole history is a few MiB).
const MAX_CHANGE_BYTES_IN_DROP: usize = 64 << 20;
/// Changes a drop may carry.
const MAX_CHANGES: usize = 200_000;

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
    /// Blobs the file carried that the pool does not reference (apply): not taken.
    pub blobs_skipped: u64,
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

/// What this node knows of the other sides of a pool: the heads of the last drop applied
/// from each node that made one, and the manifests a drop made here could not carry whole.
/// Kept in `pools/drops/<pool id>.sides` (CBOR `[[[node, [head...]]...], [manifest...]]`).
#[derive(Debug, Clone, Default, Encode, Decode)]
#[cbor(array)]
pub struct Sides {
    /// Maker node and the heads its last drop applied here named (those this node holds).
    #[n(0)]
    pub acked: Vec<(ByteArray<32>, Vec<ByteArray<32>>)>,
    /// Manifests whose blobs a drop made here lacked: carried again until whole.
    #[n(1)]
    pub owed: BTreeSet<ByteArray<32>>,
}

fn sides_path(pools: &Pools, pool: &Key) -> std::path::PathBuf {
    pools.dir().join("drops").join(format!("{}.sides", hex(pool)))
}

/// The other sides of `pool` this node knows (nothing if it never applied or made a drop).
pub fn sides(pools: &Pools, pool: &Key) -> Sides {
    std::fs::read(sides_path(pools, pool))
        .ok()
        .and_then(|b| minicbor::decode(&b).ok())
        .unwrap_or_default()
}

fn save_sides(pools: &Pools, pool: &Key, s: &Sides) -> Result<(), DropError> {
    let path = sides_path(pools, pool);
    let io = |e: std::io::Error| DropError::Io(format!("cannot write {}: {e}", path.display()));
    std::fs::create_dir_all(path.parent().expect("a parent")).map_err(io)?;
    let tmp = path.with_extension("tmp");
    let bytes = minicbor::to_vec(s).expect("encoding into a Vec cannot fail");
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)
}

/// The heads each other side acknowledged, for `carry_out` (none with `full`).
pub fn acknowledged(pools: &Pools, pool: &Key, full: bool) -> Vec<Vec<ChangeHash>> {
    if full {
        return Vec::new();
    }
    sides(pools, pool)
        .acked
        .iter()
        .map(|(_, hs)| hs.iter().map(|h| ChangeHash(**h)).collect())
        .collect()
}

/// An object's manifest, and the blobs a drop carries for it (the manifest first).
pub type Carried = (Key, Vec<ChunkId>);

/// The blobs a drop of `pool` carries: for every object listed now whose manifest is not in
/// `known` (or is owed), its manifest and every blob the manifest lists (each once), with the
/// manifests that are carried. Manifests this store lacks are carried as missing.
pub fn blobs_to_carry(
    pools: &Pools,
    store: &kith_node::Store,
    pool: &Key,
    known: &BTreeSet<Key>,
) -> Result<(Vec<ChunkId>, Vec<Carried>), DropError> {
    let v = pools.view_of(pool).ok_or_else(|| DropError::NotInPool(hex(&pool[..8])))?;
    let owed: BTreeSet<Key> = sides(pools, pool).owed.iter().map(|h| **h).collect();
    let io = |e: kith_node::StoreError| DropError::Io(e.to_string());
    let (mut ids, mut carried) = (Vec::new(), Vec::new());
    let (mut manifests, mut blobs) = (BTreeSet::new(), BTreeSet::new());
    for m in v.members.values() {
        for po in m.objects.values() {
            if known.contains(&po.manifest) && !owed.contains(&po.manifest) {
                continue;
            }
            if !manifests.insert(po.manifest) {
                continue;
            }
            let mut of = vec![ChunkId(po.manifest)];
            if let Some((_, bytes)) = store.read_blob(&ChunkId(po.manifest)).map_err(io)?
                && let Ok(man) = Manifest::from_bytes(&bytes)
            {
                of.extend(man.blobs.iter().map(|(id, _)| ChunkId(**id)));
            }
            // Each blob once, the manifest before what it lists.
            ids.extend(of.iter().filter(|id| blobs.insert(**id)));
            carried.push((po.manifest, of));
        }
    }
    Ok((ids, carried))
}

/// Writes a drop of pool `pool` to `out`: the changes some other side lacks (everything when
/// `full`, or when a side acknowledged nothing yet) and the blobs of the objects not every side
/// listed. Manifests it could not carry whole are noted, and carried again next time.
pub fn make<W: Write>(
    pools: &Pools,
    store: &kith_node::Store,
    pool: &Key,
    full: bool,
    out: W,
) -> Result<(W, DropReport), DropError> {
    let v = pools.view_of(pool).ok_or_else(|| DropError::NotInPool(hex(&pool[..8])))?;
    let sides_acked = acknowledged(pools, pool, full);
    let carried = pools.carry_out(pool, &sides_acked).map_err(|e| DropError::Io(e.to_string()))?;
    let (ids, objects) = blobs_to_carry(pools, store, pool, &carried.known_manifests)?;
    let mut report = DropReport {
        pool: v.charter.name.clone(),
        objects: objects.len() as u64,
        incremental: carried.incremental,
        ..DropReport::default()
    };
    let io = |e: std::io::Error| DropError::Io(format!("cannot write the drop: {e}"));
    let mut w = FramedWriter::new(out, MAGIC, DROP_FORMAT).map_err(io)?;
    let arr = |hs: &[ChangeHash]| hs.iter().map(|h| h.0.into()).collect::<Vec<_>>();
    let since: Vec<ChangeHash> = sides_acked.iter().flatten().copied().collect();
    let about = About {
        pool: *pool,
        maker: pools.signer().author().key,
        node: pools.node(),
        made_ms: pools.now_ms().max(0) as u64,
        since: arr(&since[..since.len().min(MAX_HEADS)]),
        heads: arr(&carried.heads[..carried.heads.len().min(MAX_HEADS)]),
    };
    let cbor = minicbor::to_vec(&about).expect("encoding into a Vec cannot fail");
    w.entry(TAG_ABOUT, &[&cbor]).map_err(io)?;
    for c in &carried.changes {
        let sig = carried.sigs.get(&c.hash()).ok_or_else(|| {
            DropError::Io(format!(
                "change {} of the pool has no signature here; the document is damaged",
                hex(&c.hash().0[..8])
            ))
        })?;
        let len = [u8::try_from(sig.len()).expect("a signature is 64 or 160 bytes")];
        w.entry(TAG_CHANGE, &[&len, sig, c.raw_bytes()]).map_err(io)?;
        report.changes += 1;
    }
    let mut missing: BTreeSet<ChunkId> = BTreeSet::new();
    for id in ids {
        match store.read_blob(&id).map_err(|e| DropError::Io(e.to_string()))? {
            Some((kind, bytes)) => {
                w.entry(TAG_BLOB, &[&id.0, &[kind as u8], &bytes]).map_err(io)?;
                report.blobs += 1;
                report.blob_bytes += bytes.len() as u64;
            }
            None => {
                missing.insert(id);
            }
        }
    }
    report.blobs_missing = missing.len() as u64;
    let out = w.end().map_err(io)?;
    // What could not be carried whole is owed, and carried again by the next drop.
    let mut s = sides(pools, pool);
    for (manifest, of) in &objects {
        let whole = !of.iter().any(|id| missing.contains(id));
        let key = ByteArray::from(*manifest);
        if whole {
            s.owed.remove(&key);
        } else {
            s.owed.insert(key);
        }
    }
    save_sides(pools, pool, &s)?;
    Ok((out, report))
}

/// One entry of a drop.
#[derive(Debug)]
pub enum DropEntry {
    /// What the drop says about itself (always first).
    About(About),
    /// A change, parsed within bounds, with its author's signature (not checked here: the
    /// pool's rules check it).
    Change(Box<kith_crdt::automerge::Change>, kith_crdt::Sig),
    /// A blob as stored (its id is checked by the store).
    Blob(ChunkId, BlobKind, Vec<u8>),
}

/// Reads a drop's entries in order: framing, bounds, types, the change chunks (before
/// automerge parses them) and the end entry; `next_entry` gives `None` only after a valid end.
pub struct DropReader<R> {
    frames: FramedReader<R>,
    format: u32,
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
        Ok(DropReader { frames, format, about: false, budget: MAX_CHANGE_BYTES_IN_DROP })
    }

    /// The next entry; `None` once the end entry proved the file whole.
    pub fn next_entry(&mut self) -> Result<Option<DropEntry>, DropError> {
        let Some((tag, payload)) = self.frames.next_raw().map_err(bad)? else {
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
                // Format 1 wrote identity-key signatures only (64 bytes, no length).
                let (at, len) = match self.format {
                    1 => (0, kith_crdt::ROOT_SIG_LEN),
                    _ => (1, usize::from(*payload.first().unwrap_or(&0))),
                };
                if len != kith_crdt::ROOT_SIG_LEN && len != kith_crdt::DEVICE_SIG_LEN {
                    return Err(bad("a change entry's signature has no valid length"));
                }
                if payload.len() > at + len + kith_crdt::MAX_CHANGE_BYTES {
                    return Err(bad("a change entry is larger than any change"));
                }
                if payload.len() < at + len {
                    return Err(bad("a change entry is too short"));
                }
                let sig = payload[at..at + len].to_vec();
                let mut cs = kith_crdt::bounds::carried_changes(&payload[at + len..], &mut self.budget)
                    .map_err(|e| {
                        bad(format!(
                            "a change does not read ({e}): the file is damaged or incomplete; copy it again"
                        ))
                    })?;
                if cs.len() != 1 {
                    return Err(bad("a change entry holds other than one change"));
                }
                DropEntry::Change(Box::new(cs.pop().expect("one")), sig)
            }
            TAG_BLOB => {
                let (id, kind, bytes) =
                    kith_node::store::framed::blob_entry(payload).map_err(bad)?;
                DropEntry::Blob(id, kind, bytes)
            }
            t => return Err(bad(format!("an entry of unknown type {t}"))),
        }))
    }
}

/// Applies the drop in file `path`, in two reads: the first checks the whole file (its
/// framing, bounds and end) and collects its changes, which are then judged on a copy of the
/// pool like a peer's sync turn, with no lock held; the second takes in only the blobs that
/// the pool, with those changes, references (each checked against its id), and the changes
/// are adopted under the store's writer lock, so no gc takes the blobs between. The drop's
/// heads (those this node then holds) become what its maker's side acknowledged.
pub fn apply_file(
    pools: &Pools,
    store: &kith_node::Store,
    path: &std::path::Path,
) -> Result<DropReport, DropError> {
    let open = || {
        std::fs::File::open(path)
            .map(|f| std::io::BufReader::with_capacity(1 << 20, f))
            .map_err(|e| DropError::Io(format!("cannot open {}: {e}", path.display())))
    };
    let mut head = [0u8; 8];
    let _ = open()?.read(&mut head);
    if &head == b"KITHEXP1" {
        return Err(bad(
            "this file is an export of an identity, not a drop: take it in with `kith import FILE`",
        ));
    }
    // First read: everything but the blobs' contents, and the end.
    let mut entries = DropReader::new(open()?)?;
    let (mut about, mut changes, mut sigs, mut blobs_in_file) =
        (None, Vec::new(), BTreeMap::new(), 0u64);
    while let Some(entry) = entries.next_entry()? {
        match entry {
            DropEntry::About(a) => {
                if a.node == pools.node() {
                    return Err(bad(
                        "it was made on this node: carry it to the other side and apply it there",
                    ));
                }
                pools.view_of(&a.pool).ok_or_else(|| DropError::NotInPool(hex(&a.pool[..8])))?;
                about = Some(a);
            }
            DropEntry::Change(c, sig) => {
                if changes.len() >= MAX_CHANGES {
                    return Err(bad(format!("it carries more than {MAX_CHANGES} changes")));
                }
                sigs.insert(c.hash(), sig);
                changes.push(*c);
            }
            DropEntry::Blob(..) => blobs_in_file += 1,
        }
    }
    let about = about.ok_or_else(|| bad("it says nothing about itself"))?;
    let mut report = DropReport {
        pool: pools.view_of(&about.pool).map(|v| v.charter.name.clone()).unwrap_or_default(),
        ..DropReport::default()
    };
    let judged = pools.carry_judge(&about.pool, changes, &sigs).map_err(|e| match e {
        crate::pool::PoolError::Doc(kith_crdt::DocError::MissingDeps { count, .. }) => {
            DropError::Refused(format!(
                "{count} of its changes follow changes this node does not have (a drop made on the other side earlier was not applied here): ask for a full drop (`kith drop make --full` there)"
            ))
        }
        e => DropError::Refused(e.to_string()),
    })?;
    // What the pool references, with the changes: manifests, and what those list.
    let mut manifests = judged.manifests.clone();
    let mut listed: BTreeSet<[u8; 32]> = BTreeSet::new();
    let io = |e: kith_node::StoreError| DropError::Io(e.to_string());
    for m in &manifests {
        if let Some((_, bytes)) = store.read_blob(&ChunkId(*m)).map_err(io)?
            && let Ok(man) = Manifest::from_bytes(&bytes)
        {
            listed.extend(man.blobs.iter().map(|(id, _)| **id));
        }
    }
    // Second read: the blobs the pool references; the rest are skipped.
    let mut entries = DropReader::new(open()?)?;
    let mut ingest = store.ingest().map_err(io)?;
    let mut seen = 0u64;
    while let Some(entry) = entries.next_entry()? {
        let DropEntry::Blob(id, kind, bytes) = entry else { continue };
        seen += 1;
        let is_manifest = manifests.contains(&id.0);
        if !is_manifest && !listed.contains(&id.0) {
            report.blobs_skipped += 1;
            continue;
        }
        let added = ingest.add(id, kind, &bytes).map_err(|e| match e {
            kith_node::StoreError::Damaged { .. } => {
                bad("a blob does not match its id: the file is damaged; copy it again")
            }
            e => io(e),
        })?;
        if is_manifest && let Ok(man) = Manifest::from_bytes(&bytes) {
            listed.extend(man.blobs.iter().map(|(id, _)| **id));
            manifests.remove(&id.0);
        }
        if added {
            report.blobs += 1;
            report.blob_bytes += bytes.len() as u64;
        } else {
            report.blobs_present += 1;
        }
    }
    if seen != blobs_in_file {
        return Err(bad("it changed while it was read; copy it again"));
    }
    let (_, adopted) = ingest.finish_then(|| pools.carry_adopt(&about.pool, judged)).map_err(io)?;
    report.changes = adopted.map_err(|e| DropError::Refused(e.to_string()))? as u64;
    // What the maker's side holds, as far as this node can tell (heads it does not hold are
    // left out: they would make the next drop carry too little).
    let heads: Vec<ChangeHash> = about.heads.iter().map(|h| ChangeHash(**h)).collect();
    let known = pools.carry_known(&about.pool, &heads);
    let mut s = sides(pools, &about.pool);
    s.acked.retain(|(n, _)| **n != about.node);
    s.acked.push((about.node.into(), known.iter().map(|h| h.0.into()).collect()));
    save_sides(pools, &about.pool, &s)?;
    Ok(report)
}
