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
    let name = path.file_name().context("the export needs a file name")?.to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.kith-partial-{}", std::process::id()));
    let started = Instant::now();
    let (store, t, p) = (ctx.store.clone(), tmp.clone(), path.clone());
    let written = with_progress(out, move |progress| {
        let io = |source| kith_node::StoreError::Dest { path: t.clone(), source };
        // The chunks are encrypted, but the identity document names devices and pools.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&t)
            .map_err(io)?;
        let now = kith_node::keys::now_ms();
        let r =
            store.export(BufWriter::with_capacity(1 << 20, file), &extras, now, Some(&progress));
        let (w, report) = match r {
            Ok(x) => x,
            Err(e) => {
                let _ = std::fs::remove_file(&t);
                return Err(e);
            }
        };
        let file = w.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&t, &p).map_err(io)?;
        Ok(report)
    })
    .await;
    let report = match written {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    answer(Exported {
        path: path.display().to_string(),
        objects: report.objects,
        blobs: report.blobs,
        blob_bytes: report.blob_bytes,
        blobs_present: 0,
        identity_changes: 0,
        incomplete: 0,
        pools: report.pools.into_iter().map(|p| p.name).collect(),
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
        identity_changes,
        incomplete: report.incomplete,
        pools: report.pools.into_iter().map(|p| p.name).collect(),
        seconds: started.elapsed().as_secs_f64(),
    })
}
