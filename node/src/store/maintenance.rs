//! Whole-store work: `verify` (check every blob and object) and `gc` (reclaim unreferenced
//! blobs).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::pack::{self, BlobLocation, PackWriter, parse_pack_file_name};
use super::tree::Item;
use super::{BlobReader, Progress, Store, StoreError, clear_dir};
use crate::ids::{ChunkId, ObjectId};

/// A pack is rewritten by `gc` when more than this share of its bytes is unreferenced; below
/// it, unreferenced blobs leave the index but their bytes stay until the pack crosses it.
pub const REPACK_UNUSED_FRACTION: f64 = 0.05;

/// An object `verify` found problems in.
#[derive(Debug, Clone)]
pub struct DamagedObject {
    /// The object.
    pub id: ObjectId,
    /// Its source path, if its root could be read.
    pub source: Option<PathBuf>,
    /// What is wrong, one line each (at most a few per object).
    pub problems: Vec<String>,
    /// How many problems in all.
    pub problem_count: usize,
}

/// What `verify` found.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Packs checked.
    pub packs: usize,
    /// Blobs checked against their hash.
    pub blobs: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Blobs whose bytes do not match their id, with the reason.
    pub damaged_blobs: Vec<(ChunkId, String)>,
    /// Objects checked.
    pub objects: usize,
    /// Objects with damaged or missing parts.
    pub damaged_objects: Vec<DamagedObject>,
    /// Pack files no index entry names (left by an interrupted put; `gc` removes them).
    pub unindexed_packs: Vec<PathBuf>,
    /// Indexed blobs no object references (`gc` removes them).
    pub unreferenced_blobs: u64,
}

impl VerifyReport {
    /// Whether the store holds damage.
    pub fn is_damaged(&self) -> bool {
        !self.damaged_blobs.is_empty() || !self.damaged_objects.is_empty()
    }
}

/// What `gc` did.
#[derive(Debug, Clone, Default)]
pub struct GcReport {
    /// Objects kept.
    pub objects: usize,
    /// Blobs kept.
    pub blobs_kept: u64,
    /// Blobs removed from the index.
    pub blobs_removed: u64,
    /// Pack files deleted.
    pub packs_deleted: u64,
    /// Pack files rewritten without their unreferenced blobs.
    pub packs_rewritten: u64,
    /// Bytes of disk given back.
    pub bytes_freed: u64,
    /// Unreferenced bytes left in packs below the rewrite threshold.
    pub bytes_unreferenced_kept: u64,
    /// Why packs that should have been rewritten were left as they are (the disk had no room
    /// for their live blobs); what could be freed without writing was freed.
    pub rewrite_skipped: Option<String>,
}

pub(super) fn verify(
    store: &Store,
    progress: Option<Arc<Progress>>,
) -> Result<VerifyReport, StoreError> {
    let mut report = VerifyReport::default();
    let blobs = store.index().blobs()?;
    let by_pack = group_by_pack(&blobs);
    if let Some(p) = &progress {
        p.bytes_total.store(blobs.iter().map(|(_, l)| l.len as u64).sum(), Ordering::Relaxed);
        p.total_known.store(true, Ordering::Relaxed);
    }
    report.packs = by_pack.len();
    report.blobs = blobs.len() as u64;
    report.bytes = blobs.iter().map(|(_, l)| l.len as u64).sum();
    report.damaged_blobs = check_blobs(store, &by_pack, progress.as_deref());
    let damaged: HashMap<ChunkId, String> = report.damaged_blobs.iter().cloned().collect();
    report.unindexed_packs = unindexed_packs(store)?;

    let mut referenced = HashSet::new();
    for row in store.index().objects()? {
        report.objects += 1;
        if let Some(d) = check_object(store, &row.id, &damaged, &mut referenced) {
            report.damaged_objects.push(d);
        }
    }
    report.unreferenced_blobs =
        blobs.iter().filter(|(id, _)| !referenced.contains(id)).count() as u64;
    Ok(report)
}

fn group_by_pack(blobs: &[(ChunkId, BlobLocation)]) -> BTreeMap<u64, Vec<(ChunkId, BlobLocation)>> {
    let mut by_pack: BTreeMap<u64, Vec<(ChunkId, BlobLocation)>> = BTreeMap::new();
    for (id, loc) in blobs {
        by_pack.entry(loc.pack).or_default().push((*id, *loc));
    }
    for list in by_pack.values_mut() {
        list.sort_by_key(|(_, l)| l.offset);
    }
    by_pack
}

/// Hashes every blob, packs spread over all cores.
fn check_blobs(
    store: &Store,
    by_pack: &BTreeMap<u64, Vec<(ChunkId, BlobLocation)>>,
    progress: Option<&Progress>,
) -> Vec<(ChunkId, String)> {
    let packs: Vec<&Vec<(ChunkId, BlobLocation)>> = by_pack.values().collect();
    let next = AtomicUsize::new(0);
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let mut damaged: Vec<(ChunkId, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut reader = BlobReader::new(store);
                    let mut bad = Vec::new();
                    while let Some(list) = packs.get(next.fetch_add(1, Ordering::Relaxed)) {
                        for (id, loc) in list.iter() {
                            if let Err(e) = reader.read_at(id, loc) {
                                bad.push((*id, e.to_string()));
                            }
                            if let Some(p) = progress {
                                p.bytes_done.fetch_add(loc.len as u64, Ordering::Relaxed);
                            }
                        }
                    }
                    bad
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
    });
    damaged.sort();
    damaged
}

fn unindexed_packs(store: &Store) -> Result<Vec<PathBuf>, StoreError> {
    let indexed: HashSet<u64> = store.index().packs()?.into_iter().map(|p| p.number).collect();
    let dir = store.packs_dir();
    let mut out = Vec::new();
    for entry in fs::read_dir(&dir).map_err(StoreError::io(&dir))? {
        let entry = entry.map_err(StoreError::io(&dir))?;
        let name = entry.file_name();
        let known =
            parse_pack_file_name(&name.to_string_lossy()).is_some_and(|n| indexed.contains(&n));
        if !known {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Walks one object; returns what is wrong with it, if anything.
fn check_object(
    store: &Store,
    id: &ObjectId,
    damaged: &HashMap<ChunkId, String>,
    referenced: &mut HashSet<ChunkId>,
) -> Option<DamagedObject> {
    const SHOWN: usize = 5;
    let mut problems = Vec::new();
    let mut source = None;
    referenced.insert((*id).into());
    match walk_refs(store, id, referenced) {
        Ok((src, files)) => {
            source = Some(src);
            for (file, chunk) in files {
                let why = match damaged.get(&chunk) {
                    Some(why) => why.clone(),
                    None if store.index().blob(&chunk).ok().flatten().is_none() => {
                        format!("chunk {chunk} is missing from the store")
                    }
                    None => continue,
                };
                problems.push(format!("file {file}: {why}"));
            }
        }
        Err(e) => problems.push(e.to_string()),
    }
    if problems.is_empty() {
        return None;
    }
    let problem_count = problems.len();
    problems.truncate(SHOWN);
    Some(DamagedObject { id: *id, source, problems, problem_count })
}

/// Every blob object `id` consists of (its root first), with its stored length.
pub(super) fn object_blobs(
    store: &Store,
    id: &ObjectId,
) -> Result<Vec<(ChunkId, u32)>, StoreError> {
    let mut order = vec![ChunkId::from(*id)];
    let root = store.read_root(id)?;
    order.extend(root.tree.iter().map(|r| r.chunk_id()));
    let mut reader = store.tree_reader(&root);
    let mut seen: HashSet<ChunkId> = order.iter().copied().collect();
    while let Some(item) = reader.next_item()? {
        if let Item::Chunk(r) = item
            && seen.insert(r.chunk_id())
        {
            order.push(r.chunk_id());
        }
    }
    let index = store.index();
    order
        .into_iter()
        .map(|c| match index.blob(&c)? {
            Some(loc) => Ok((c, loc.len)),
            None => {
                Err(StoreError::NotFound(format!("chunk {c} of object {id} is not in the store")))
            }
        })
        .collect()
}

/// Collects every blob an object references; returns its source and (file, chunk) pairs of
/// its data chunks.
fn walk_refs(
    store: &Store,
    id: &ObjectId,
    referenced: &mut HashSet<ChunkId>,
) -> Result<(PathBuf, Vec<(String, ChunkId)>), StoreError> {
    let root = store.read_root(id)?;
    referenced.extend(root.tree.iter().map(|r| r.chunk_id()));
    let source = PathBuf::from(std::ffi::OsStr::new(&*String::from_utf8_lossy(&root.source)));
    let mut reader = store.tree_reader(&root);
    let mut file = String::new();
    let mut chunks = Vec::new();
    while let Some(item) = reader.next_item()? {
        match item {
            Item::File { path, .. } => file = String::from_utf8_lossy(&path).into_owned(),
            Item::Chunk(r) => {
                referenced.insert(r.chunk_id());
                chunks.push((file.clone(), r.chunk_id()));
            }
            _ => {}
        }
    }
    Ok((source, chunks))
}

/// Deletes the blobs no local object references and `keep` does not hold; with `only`, only
/// those of its blobs (what the pools released), leaving every other blob as it is.
pub(super) fn gc(
    store: &Store,
    keep: &HashSet<ChunkId>,
    only: Option<&HashSet<ChunkId>>,
) -> Result<GcReport, StoreError> {
    let mut report = GcReport::default();
    let mut live = keep.clone();
    for row in store.index().objects()? {
        report.objects += 1;
        walk_refs(store, &row.id, &mut live).map_err(|e| e.in_object(row.id, None))?;
        live.insert(row.id.into());
    }
    let blobs = store.index().blobs()?;
    let mut by_pack = group_by_pack(&blobs);
    let mut plan = Plan::default();
    for row in store.index().packs()? {
        let list = by_pack.remove(&row.number).unwrap_or_default();
        let (kept, dead): (Vec<_>, Vec<_>) = list
            .into_iter()
            .partition(|(id, _)| live.contains(id) || only.is_some_and(|o| !o.contains(id)));
        let dead = dead.iter().map(|(id, _)| *id);
        let live_bytes: u64 = kept.iter().map(|(_, l)| l.len as u64).sum();
        let unused = row.data_bytes.saturating_sub(live_bytes);
        if kept.is_empty() {
            plan.remove.extend(dead);
            plan.delete.push(row.number);
        } else if unused as f64 > REPACK_UNUSED_FRACTION * row.data_bytes as f64 {
            plan.remove_rewritten.extend(dead);
            plan.rewrite.push((row.number, kept, unused));
        } else {
            plan.remove.extend(dead);
            report.bytes_unreferenced_kept += unused;
        }
    }
    report.blobs_removed = (plan.remove.len() + plan.remove_rewritten.len()) as u64;
    report.blobs_kept = blobs.len() as u64 - report.blobs_removed;
    apply(store, plan, &mut report)?;
    Ok(report)
}

#[derive(Default)]
struct Plan {
    /// Unreferenced blobs of packs deleted or kept as they are (forgotten without a write).
    remove: Vec<ChunkId>,
    /// Packs with nothing live.
    delete: Vec<u64>,
    /// Unreferenced blobs of the packs rewritten.
    remove_rewritten: Vec<ChunkId>,
    /// Packs rewritten with their live blobs, and their unused bytes.
    rewrite: Vec<Rewrite>,
}

/// A pack to rewrite: its number, its live blobs, its unused bytes.
type Rewrite = (u64, Vec<(ChunkId, BlobLocation)>, u64);

/// Applies a plan in two steps: first what frees space without writing a pack (packs with
/// nothing live deleted, unreferenced blobs forgotten), then the rewrites, which need room for
/// the live blobs they copy. A full disk stops only the second step: gc is what a full disk
/// needs most.
fn apply(store: &Store, plan: Plan, report: &mut GcReport) -> Result<(), StoreError> {
    let sizes: HashMap<u64, u64> =
        store.index().packs()?.into_iter().map(|p| (p.number, p.size)).collect();
    if !plan.delete.is_empty() || !plan.remove.is_empty() {
        store.index().replace_packs(&plan.remove, &plan.delete, &[])?;
        for n in &plan.delete {
            let _ = fs::remove_file(store.pack_path(*n));
            report.bytes_freed += sizes.get(n).copied().unwrap_or(0);
        }
        report.packs_deleted = plan.delete.len() as u64;
    }
    // Pack files the index does not list: left by interrupted puts.
    for path in unindexed_packs(store)? {
        report.bytes_freed += fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        fs::remove_file(&path).map_err(StoreError::io(&path))?;
    }
    if plan.rewrite.is_empty() {
        return Ok(());
    }
    let tmp = store.tmp_dir();
    match rewrite(store, &plan, &sizes, report) {
        Err(StoreError::Io { source, .. }) if is_full(&source) => {
            let _ = clear_dir(&tmp);
            report.bytes_unreferenced_kept += plan.rewrite.iter().map(|(_, _, u)| u).sum::<u64>();
            report.blobs_removed -= plan.remove_rewritten.len() as u64;
            report.rewrite_skipped = Some(format!(
                "{} packs were not rewritten: the disk has no room for their live blobs ({source})",
                plan.rewrite.len()
            ));
            Ok(())
        }
        other => other,
    }
}

/// Whether an I/O error says the disk (or the user's quota) is full.
fn is_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(libc::EDQUOT)
}

/// Rewrites the packs of `plan.rewrite` without their unreferenced blobs.
fn rewrite(
    store: &Store,
    plan: &Plan,
    sizes: &HashMap<u64, u64>,
    report: &mut GcReport,
) -> Result<(), StoreError> {
    let tmp = store.tmp_dir();
    clear_dir(&tmp)?;
    let mut next = store.next_pack_number()?;
    let mut reader = BlobReader::new(store);
    let mut new_packs = Vec::new();
    let mut writer: Option<PackWriter> = None;
    for (_, kept, _) in &plan.rewrite {
        for (id, loc) in kept {
            let bytes = reader.read_at(id, loc)?;
            let w = match &mut writer {
                Some(w) => w,
                None => {
                    writer = Some(PackWriter::create(&tmp, next).map_err(StoreError::io(&tmp))?);
                    next += 1;
                    writer.as_mut().expect("just created")
                }
            };
            w.append(*id, loc.kind, &bytes).map_err(StoreError::io(&tmp))?;
            if w.len() >= pack::PACK_TARGET_BYTES {
                new_packs
                    .push(writer.take().expect("open").finish().map_err(StoreError::io(&tmp))?);
            }
        }
    }
    if let Some(w) = writer.take() {
        new_packs.push(w.finish().map_err(StoreError::io(&tmp))?);
    }
    let packs_dir = store.packs_dir();
    for p in &new_packs {
        crate::fsutil::sync_and_uncache(&p.file).map_err(StoreError::io(&p.tmp_path))?;
        crate::fsutil::rename_noreplace(&p.tmp_path, &store.pack_path(p.number))
            .map_err(StoreError::io(&packs_dir))?;
    }
    crate::fsutil::sync_dir(&packs_dir).map_err(StoreError::io(&packs_dir))?;

    let old: Vec<u64> = plan.rewrite.iter().map(|(n, _, _)| *n).collect();
    store.index().replace_packs(&plan.remove_rewritten, &old, &new_packs)?;
    let mut freed = 0;
    for n in &old {
        let _ = fs::remove_file(store.pack_path(*n));
        freed += sizes.get(n).copied().unwrap_or(0);
    }
    report.bytes_freed += freed.saturating_sub(new_packs.iter().map(|p| p.size).sum());
    report.packs_rewritten = plan.rewrite.len() as u64;
    Ok(())
}
