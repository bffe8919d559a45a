//! One object after it is stored: restoring it (`kith get`, all of it, or a file or folder in
//! it with `SPEC:path/inside`), looking inside it (`kith ls SPEC`, `kith diff OLD NEW`) and
//! forgetting it (`kith rm`, here and in the pools it was put into). An object this node lacks
//! is fetched from peers first, but only what the command reads: the tree to list or compare,
//! and the chunks of the part restored.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kith_node::store::{Change, Entry, Part};
use kith_node::{ObjectId, Progress, StoreError};
use serde_json::Value;

use crate::api::GetTo;
use crate::api::store::{Diff, Difference, FileEntry, Files, Restored};
use crate::ops::{Ctx, PROGRESS_EVERY, answer, blocking, progress_frame, with_progress};
use crate::wire::{Frame, Out};

/// Bytes per data frame when a file streams to standard output.
const DATA_FRAME: usize = 1 << 20;

/// An object made readable here, and what it took.
struct Available {
    id: ObjectId,
    fetched: u64,
    fetch_secs: f64,
}

/// `SPEC:path/inside` split in two, unless the whole of it names an object (a stored path may
/// hold a `:`).
async fn split_inner(ctx: &Ctx, spec: &str, cwd: &Path) -> (String, Option<String>) {
    let resolves = |s: &str| {
        let (store, s, c) = (ctx.store.clone(), s.to_string(), cwd.to_path_buf());
        async move { blocking(move || store.resolve(&s, &c)).await.is_ok() }
    };
    if !spec.contains(':') || resolves(spec).await {
        return (spec.to_string(), None);
    }
    // The first `:` whose left side names an object; else the first (an id this node lacks).
    for (i, _) in spec.match_indices(':') {
        if resolves(&spec[..i]).await {
            return (spec[..i].to_string(), Some(spec[i + 1..].to_string()));
        }
    }
    let (left, right) = spec.split_once(':').expect("it holds a `:`");
    (left.to_string(), Some(right.to_string()))
}

/// Makes what reading `part` of the object `spec` names takes available in the store: an
/// object of this store as it is; else (with `kith up` running) fetched from the nodes of the
/// pool that holds it, or from this identity's other devices.
async fn available(ctx: &Ctx, spec: &str, cwd: &Path, part: Part, out: &Out) -> Result<Available> {
    let resolved = {
        let (store, spec, cwd) = (ctx.store.clone(), spec.to_string(), cwd.to_path_buf());
        tokio::task::spawn_blocking(move || store.resolve(&spec, &cwd)).await?
    };
    let in_pool = match ctx.replicator.as_ref() {
        Some(r) => r.find_object_with_partners(spec).await,
        None => None,
    };
    let (node, id, from, pool) = match (resolved, &ctx.node, spec.parse::<ObjectId>()) {
        (Ok(id), _, _) => return Ok(Available { id, fetched: 0, fetch_secs: 0.0 }),
        (Err(StoreError::NotFound(_)), Some(node), _) if in_pool.is_some() => {
            // Stored in one of our pools: fetch it from the pool's nodes.
            let (pool, object, from) = in_pool.expect("checked");
            (node, ObjectId(object), Some(from), Some(pool))
        }
        // Not here: fetch it from another device of this identity.
        (Err(StoreError::NotFound(_)), Some(node), Ok(id)) => (node, id, None, None),
        (Err(StoreError::NotFound(msg)), None, Ok(_)) => {
            bail!("{msg} here; start `kith up` to fetch it from your other devices")
        }
        (Err(e), _, _) => return Err(e.into()),
    };
    let p = Arc::new(Progress::default());
    let ticker = tokio::spawn(report_progress(out.clone(), p.clone()));
    let t = Instant::now();
    let fetch = || node.fetch_part_from(id, part.clone(), Some(p.clone()), from.clone(), pool);
    let mut r = fetch().await;
    // A holder that has not heard yet that this device is a node of the pool (a device just
    // restored) refuses it until its next sync round: ask again soon, for up to eight
    // seconds, so the fetch goes on as soon as the holder knows.
    if pool.is_some() {
        // Bounded by time, not by tries: a try that waits on a dead holder takes seconds.
        let until = Instant::now() + Duration::from_secs(8);
        while Instant::now() < until {
            match &r {
                Err(e) if e.to_string().contains("serves blobs only to") => {}
                _ => break,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            r = fetch().await;
        }
    }
    ticker.abort();
    Ok(Available { id, fetched: r?, fetch_secs: t.elapsed().as_secs_f64() })
}

/// `kith get`.
pub(crate) async fn get(
    ctx: &Ctx,
    spec: String,
    cwd: PathBuf,
    to: GetTo,
    out: &Out,
) -> Result<Value> {
    let (spec, inside) = split_inner(ctx, &spec, &cwd).await;
    let part = Part::new(inside.as_deref().unwrap_or(""))?;
    let inside = (!part.is_whole()).then(|| part.path());
    let Available { id, fetched, fetch_secs } =
        available(ctx, &spec, &cwd, part.clone(), out).await?;
    let store = ctx.store.clone();
    let dest = match to {
        GetTo::Stdout => None,
        GetTo::Path(p) => Some(p),
        GetTo::Here => {
            let name = match &inside {
                Some(inner) => PathBuf::from(inner.rsplit('/').next().unwrap_or(inner)),
                None => {
                    let s = store.clone();
                    let root = blocking(move || s.root(&id)).await?;
                    let source = PathBuf::from(String::from_utf8_lossy(&root.source).into_owned());
                    source
                        .file_name()
                        .context("the object has no name to restore under; pass -o DEST")?
                        .into()
                }
            };
            Some(cwd.join(name))
        }
    };
    let report = |s: kith_node::store::RestoreStats, dest: Option<String>| Restored {
        id: id.to_string(),
        dest,
        inside: inside.clone(),
        files: s.files,
        dirs: s.dirs,
        symlinks: s.symlinks,
        bytes: s.bytes,
        seconds: s.elapsed.as_secs_f64(),
        fetched_bytes: fetched,
        fetch_seconds: fetch_secs,
    };
    match dest {
        Some(dest) => {
            let d = dest.clone();
            let s = with_progress(out, move |p| store.restore_part(&id, part, &d, Some(p))).await?;
            answer(report(s, Some(dest.to_string_lossy().into_owned())))
        }
        None => {
            let out = out.clone();
            let s = blocking(move || {
                let mut w = FrameWriter { out, buf: Vec::with_capacity(DATA_FRAME) };
                let s = store.restore_to_writer(&id, part, &mut w, None)?;
                w.flush().map_err(|source| StoreError::Dest {
                    path: "standard output".into(),
                    source,
                })?;
                Ok::<_, StoreError>(s)
            })
            .await?;
            answer(Restored { files: 0, dirs: 0, symlinks: 0, seconds: 0.0, ..report(s, None) })
        }
    }
}

/// `kith rm SPEC`: forgets the object here (if it is an object of this store) and releases it
/// from every pool this identity put it into (unless `here_only`), so that the quota it used
/// is free and its holders reclaim its space. Nothing is forgotten when it cannot be released
/// (no `kith up` running, or it is a site's version); a pool that refuses after others took
/// the release leaves it forgotten in those (`rm` again finishes).
pub(crate) async fn rm(ctx: &Ctx, spec: String, cwd: PathBuf, here_only: bool) -> Result<Value> {
    let local = {
        let (store, spec, cwd) = (ctx.store.clone(), spec.clone(), cwd.clone());
        blocking(move || Ok::<_, anyhow::Error>(store.resolve(&spec, &cwd))).await?
    };
    let pools = match &ctx.pools {
        Some(p) => p.clone(),
        None => crate::pool_ops::open(&ctx.home, kith_node::Clock::system())?,
    };
    let me = pools.signer().author().key;
    let mine = |id: &[u8; 32]| -> Vec<([u8; 32], String)> {
        pools
            .list()
            .into_iter()
            .filter(|(_, v)| v.active(&me).is_some_and(|m| m.objects.contains_key(id)))
            .map(|(k, v)| (k, v.charter.name))
            .collect()
    };
    let (local, id): (Option<ObjectId>, [u8; 32]) = match local {
        Ok(id) => (Some(id), id.0),
        // Not here: one of this identity's pool objects, by id or a prefix of 8 hex digits.
        Err(StoreError::NotFound(msg)) if spec.len() >= 8 => {
            let spec = spec.to_ascii_lowercase();
            let hits: Vec<[u8; 32]> = pools
                .list()
                .into_iter()
                .filter_map(|(_, v)| {
                    v.active(&me).map(|m| m.objects.keys().copied().collect::<Vec<_>>())
                })
                .flatten()
                .filter(|o| kith_crdt::hex(o).starts_with(&spec))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            match hits.as_slice() {
                [one] => (None, *one),
                [] => return Err(StoreError::NotFound(msg).into()),
                _ => bail!("`{spec}` names {} of your pool objects; give more digits", hits.len()),
            }
        }
        Err(e) => return Err(e.into()),
    };
    if here_only && local.is_none() {
        bail!(
            "object {} is not stored on this node; without --local, `kith rm` takes it out of your pools",
            &kith_crdt::hex(&id)[..12]
        );
    }
    let released = if here_only { Vec::new() } else { mine(&id) };
    // Checked in every pool before anything changes.
    for (pool, name) in &released {
        let v = pools.view_of(pool);
        if let Some((site, n)) = v.as_ref().and_then(|v| v.members.get(&me)?.site_version(&id)) {
            bail!(
                "object {} is version {n} of your site {site} in pool {name}: take the site down with `kith site rm {site}` (nothing was forgotten)",
                &kith_crdt::hex(&id)[..12]
            );
        }
    }
    if !released.is_empty() && ctx.pools.is_none() {
        bail!(
            "object {} is in pool {}: start `kith up` to release it from the pool (nothing was forgotten)",
            &kith_crdt::hex(&id)[..12],
            released[0].1
        );
    }
    for (pool, _) in &released {
        let now = pools.now_ms();
        pools.with_pool(&kith_crdt::hex(pool), |p| p.remove_object(pools.signer(), &id, now))?;
    }
    if let Some(oid) = local {
        let store = ctx.store.clone();
        blocking(move || store.remove(&oid)).await?;
    }
    answer(crate::api::store::Forgotten {
        id: kith_crdt::hex(&id),
        local: local.is_some(),
        released_from: released.into_iter().map(|(_, name)| name).collect(),
    })
}

/// `kith ls SPEC`: the entries of an object, read from its tree.
pub(crate) async fn files(ctx: &Ctx, spec: String, cwd: PathBuf, out: &Out) -> Result<Value> {
    let a = available(ctx, &spec, &cwd, Part::nothing(), out).await?;
    let store = ctx.store.clone();
    let id = a.id;
    let entries = blocking(move || store.entries(&id)).await?;
    answer(Files {
        id: id.to_string(),
        entries: entries.iter().map(file_entry).collect(),
        fetched_bytes: a.fetched,
    })
}

/// `kith diff OLD NEW`: what changed between two objects, read from their trees.
pub(crate) async fn diff(
    ctx: &Ctx,
    old: String,
    new: String,
    cwd: PathBuf,
    out: &Out,
) -> Result<Value> {
    let a = available(ctx, &old, &cwd, Part::nothing(), out).await?.id;
    let b = available(ctx, &new, &cwd, Part::nothing(), out).await?.id;
    let store = ctx.store.clone();
    let changes = blocking(move || store.diff(&a, &b)).await?;
    answer(Diff {
        old: a.to_string(),
        new: b.to_string(),
        changes: changes.iter().map(difference).collect(),
    })
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn file_entry(e: &Entry) -> FileEntry {
    FileEntry {
        path: text(&e.path),
        kind: e.kind.name().to_string(),
        size: e.size,
        mode: e.meta.mode,
        mtime_s: e.meta.mtime_s,
        target: (e.kind == kith_node::store::EntryType::Symlink).then(|| text(&e.target)),
    }
}

fn difference(c: &Change) -> Difference {
    let size = |e: &Entry| (e.kind == kith_node::store::EntryType::File).then_some(e.size);
    let (change, old, new) = match c {
        Change::Added(e) => ("added", None, Some(e)),
        Change::Removed(e) => ("removed", Some(e), None),
        Change::Modified { old, new } => ("modified", Some(old), Some(new)),
        Change::Meta { old, new } => ("metadata", Some(old), Some(new)),
    };
    let e = new.or(old).expect("a change has an entry");
    Difference {
        change: change.to_string(),
        path: text(&e.path),
        kind: e.kind.name().to_string(),
        old_size: old.and_then(size),
        new_size: new.and_then(size),
    }
}

pub(crate) async fn report_progress(out: Out, p: Arc<Progress>) {
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    loop {
        tick.tick().await;
        out.send(progress_frame(&p)).await;
    }
}

/// Turns written bytes into data frames.
struct FrameWriter {
    out: Out,
    buf: Vec<u8>,
}

impl Write for FrameWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.out.is_closed() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the reader went away",
            ));
        }
        let n = b.len().min(DATA_FRAME - self.buf.len());
        self.buf.extend_from_slice(&b[..n]);
        if self.buf.len() >= DATA_FRAME {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            let data = std::mem::replace(&mut self.buf, Vec::with_capacity(DATA_FRAME));
            self.out.blocking_send(Frame::Data(data));
        }
        Ok(())
    }
}

/// `kith move --from A --to B|home`: this identity's objects out of pool `from`, each placed
/// and confirmed in `to` (or made whole here) before `from` releases it.
pub(crate) async fn move_objects(ctx: &Ctx, from: String, to: String, out: &Out) -> Result<Value> {
    let (Some(rep), Some(pools)) = (&ctx.replicator, &ctx.pools) else {
        bail!("cannot move between pools: kith is not running here; start it with `kith up`");
    };
    let src = pools.resolve(&from)?;
    let dest = if to == "home" {
        kith_pools::replica::Destination::Home
    } else {
        kith_pools::replica::Destination::Pool(pools.resolve(&to)?)
    };
    let p = Arc::new(Progress::default());
    let ticker = tokio::spawn(report_progress(out.clone(), p.clone()));
    let t = std::time::Instant::now();
    let r = rep.move_objects(src, dest, Some(p)).await;
    ticker.abort();
    let m = r.map_err(|e| anyhow::anyhow!(e))?;
    answer(crate::api::store::Moved {
        from: m.from,
        to: m.to,
        objects: m.objects,
        bytes: m.bytes,
        fetched_bytes: m.fetched,
        copies: m.copies,
        stayed: m
            .stayed
            .into_iter()
            .map(|s| crate::api::store::MoveStayed { id: s.object, name: s.name, reason: s.reason })
            .collect(),
        sites: m.sites,
        seconds: t.elapsed().as_secs_f64(),
    })
}
