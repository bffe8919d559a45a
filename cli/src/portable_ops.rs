//! Taking everything of an identity elsewhere: `kith export` writes it into one file, `kith
//! import` takes such a file in (no network needed). The format is `kith_node::store::export`.

use std::io::{BufReader, BufWriter};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use kith_node::store::export::{ExportExtras, PoolRef};
use serde_json::Value;

use crate::api::store::Exported;
use crate::ops::{Ctx, answer, with_progress};
use crate::wire::Out;

/// `kith export -o FILE`: written under a temporary name beside FILE and renamed at the end,
/// so FILE appears whole or not at all.
pub(crate) async fn export(ctx: &Ctx, path: PathBuf, out: &Out) -> Result<Value> {
    if std::fs::symlink_metadata(&path).is_ok() {
        bail!("{} already exists; export to a file that does not exist yet", path.display());
    }
    let mut extras = ExportExtras::default();
    if let Some(pools) = &ctx.pools {
        extras.identity_doc = pools.identity_doc_bytes();
        let me = pools.signer().author().key;
        extras.pools = pools
            .list()
            .into_iter()
            .filter(|(_, v)| v.active(&me).is_some())
            .map(|(id, v)| PoolRef { id, name: v.charter.name })
            .collect();
    }
    let started = Instant::now();
    let (store, p) = (ctx.store.clone(), path.clone());
    let report = with_progress(out, move |progress| {
        let now = kith_node::keys::now_ms();
        export_resumable(&store, &p, &extras, now, &progress)
    })
    .await?;
    answer(Exported {
        path: path.display().to_string(),
        objects: report.objects,
        blobs: report.blobs,
        blob_bytes: report.blob_bytes,
        blobs_present: 0,
        resumed_blobs: report.resumed_blobs,
        identity_changes: 0,
        incomplete: 0,
        pools: report.pools.into_iter().map(|p| p.name).collect(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// `kith export` into `path` through `.NAME.kith-partial` beside it (0600), locked while it is
/// written: an export interrupted in any way (Ctrl-C, a crash, a full disk) leaves the partial
/// file, and the same command continues it from its last whole entry; a partial that cannot be
/// read starts over. The partial is synced and renamed to `path` at the end.
fn export_resumable(
    store: &kith_node::Store,
    path: &std::path::Path,
    extras: &ExportExtras,
    now_ms: u64,
    progress: &kith_node::Progress,
) -> Result<kith_node::store::export::ExportReport, kith_node::StoreError> {
    use std::io::{Seek, SeekFrom};
    use std::os::fd::AsRawFd;
    let io = |source| kith_node::StoreError::Dest { path: path.to_path_buf(), source };
    let name = path.file_name().ok_or_else(|| io(std::io::ErrorKind::InvalidInput.into()))?;
    let partial = path.with_file_name(format!(".{}.kith-partial", name.to_string_lossy()));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&partial)
        .map_err(io)?;
    // SAFETY: flock on a descriptor we own; released when the file is closed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(kith_node::StoreError::BadSpec(format!(
            "another kith export to {} is running",
            path.display()
        )));
    }
    let len = file.metadata().map_err(io)?.len();
    let resume = if len > 0 {
        kith_node::store::export::ExportResume::read(std::io::BufReader::new(&file))
    } else {
        None
    };
    // A partial of another identity or home, or of a store that changed since: started over.
    let resume = match resume {
        Some(r) if store.resume_fits(&r, extras)? => Some(r),
        _ => None,
    };
    let report = match resume {
        Some(r) => {
            file.set_len(r.offset).map_err(io)?;
            file.seek(SeekFrom::Start(r.offset)).map_err(io)?;
            let w = BufWriter::with_capacity(1 << 20, file.try_clone().map_err(io)?);
            let (w, report) = store.export_resuming(w, extras, now_ms, Some(progress), Some(r))?;
            w.into_inner().map_err(|e| io(e.into_error()))?;
            report
        }
        None => {
            file.set_len(0).map_err(io)?;
            file.seek(SeekFrom::Start(0)).map_err(io)?;
            let w = BufWriter::with_capacity(1 << 20, file.try_clone().map_err(io)?);
            let (w, report) = store.export(w, extras, now_ms, Some(progress))?;
            w.into_inner().map_err(|e| io(e.into_error()))?;
            report
        }
    };
    publish(&file, &partial, path).map_err(io)?;
    Ok(report)
}

/// Makes the whole file `tmp` (written through `file`) appear as `path`: synced, renamed, and
/// the rename synced.
fn publish(
    file: &std::fs::File,
    tmp: &std::path::Path,
    path: &std::path::Path,
) -> std::io::Result<()> {
    file.sync_all()?;
    std::fs::rename(tmp, path)?;
    if let Some(dir) = path.parent() {
        kith_node::fsutil::sync_dir(dir)?;
    }
    Ok(())
}

/// Writes a new file at `path` through `f`, under a temporary name beside it (mode 0600: what
/// kith carries names devices and pools) that is synced and renamed at the end, so `path`
/// appears whole or not at all; a failure leaves nothing.
pub(crate) fn write_whole<T>(
    path: &std::path::Path,
    f: impl FnOnce(
        BufWriter<std::fs::File>,
    ) -> Result<(BufWriter<std::fs::File>, T), kith_node::StoreError>,
) -> Result<T, kith_node::StoreError> {
    let io = |source| kith_node::StoreError::Dest { path: path.to_path_buf(), source };
    let name = path.file_name().ok_or_else(|| io(std::io::ErrorKind::InvalidInput.into()))?;
    let tmp = path.with_file_name(format!(
        ".{}.kith-partial-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = (|| {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        let (w, t) = f(BufWriter::with_capacity(1 << 20, file))?;
        let file = w.into_inner().map_err(|e| io(e.into_error()))?;
        publish(&file, &tmp, path).map_err(io)?;
        Ok(t)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// `kith export --plain DIR`: the latest version of every stored path, restored under DIR at
/// its original path (`/home/ada/letters` as `DIR/home/ada/letters`). DIR must not exist; a
/// failure leaves what was restored so far, each path whole or absent.
pub(crate) async fn export_plain(ctx: &Ctx, dir: PathBuf, out: &Out) -> Result<Value> {
    if std::fs::symlink_metadata(&dir).is_ok() {
        bail!("{} already exists; export to a folder that does not exist yet", dir.display());
    }
    let started = Instant::now();
    let (store, d) = (ctx.store.clone(), dir.clone());
    let (objects, bytes) = with_progress(out, move |progress| {
        let mut latest: std::collections::BTreeMap<PathBuf, kith_node::ObjectInfo> =
            std::collections::BTreeMap::new();
        for o in store.list()? {
            match latest.get(&o.source) {
                Some(l) if l.version >= o.version => {}
                _ => {
                    latest.insert(o.source.clone(), o);
                }
            }
        }
        let total = latest.values().map(|o| o.stats.bytes).sum();
        progress.bytes_total.store(total, std::sync::atomic::Ordering::Relaxed);
        progress.total_known.store(true, std::sync::atomic::Ordering::Relaxed);
        std::fs::create_dir_all(&d)
            .map_err(|source| kith_node::StoreError::Dest { path: d.clone(), source })?;
        let mut bytes = 0;
        for (source, o) in &latest {
            let rel = source.strip_prefix("/").unwrap_or(source);
            let dest = d.join(rel);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(|source| kith_node::StoreError::Dest {
                    path: parent.to_path_buf(),
                    source,
                })?;
            }
            bytes += store.restore(&o.id, &dest, None)?.bytes;
            progress.bytes_done.fetch_add(o.stats.bytes, std::sync::atomic::Ordering::Relaxed);
        }
        Ok((latest.len() as u64, bytes))
    })
    .await?;
    answer(Exported {
        path: dir.display().to_string(),
        objects,
        blobs: 0,
        blob_bytes: bytes,
        blobs_present: 0,
        resumed_blobs: 0,
        identity_changes: 0,
        incomplete: 0,
        pools: Vec::new(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// `kith import FILE`.
pub(crate) async fn import(ctx: &Ctx, path: PathBuf, out: &Out) -> Result<Value> {
    let started = Instant::now();
    let (store, p) = (ctx.store.clone(), path.clone());
    let report = with_progress(out, move |progress| {
        let file = std::fs::File::open(&p)
            .map_err(|source| kith_node::StoreError::Source { path: p.clone(), source })?;
        if let Ok(md) = file.metadata() {
            progress.bytes_total.store(md.len(), std::sync::atomic::Ordering::Relaxed);
            progress.total_known.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        store.import(BufReader::with_capacity(1 << 20, file), Some(&progress))
    })
    .await?;
    let mut identity_changes = 0;
    if let (Some(doc), Some(pools)) = (&report.identity_doc, &ctx.pools) {
        identity_changes =
            pools.merge_identity_doc(doc).context("the export's identity document was refused")?
                as u64;
    }
    answer(Exported {
        path: path.display().to_string(),
        objects: report.objects,
        blobs: report.blobs,
        blob_bytes: report.blob_bytes,
        blobs_present: report.blobs_present,
        resumed_blobs: 0,
        identity_changes,
        incomplete: report.incomplete,
        pools: report.pools.into_iter().map(|p| p.name).collect(),
        seconds: started.elapsed().as_secs_f64(),
    })
}
