//! Drops (`kith drop make`, `kith drop apply`): a pool's changes and the chunks they reference
//! in a file, for neighbourhoods with no link between them. The format is `kith_pools::drop`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Result, bail};
use kith_pools::drop::{self, DropReport};
use serde_json::Value;

use crate::api::store::Dropped;
use crate::ops::{Ctx, answer, blocking};

fn pools_of(ctx: &Ctx) -> Result<Arc<kith_pools::docs::Pools>> {
    Ok(match &ctx.pools {
        Some(p) => p.clone(),
        None => crate::pool_ops::open(&ctx.home, kith_node::Clock::system())?,
    })
}

fn dropped(
    path: &std::path::Path,
    r: DropReport,
    fetched: u64,
    t: Instant,
    offline: bool,
) -> Dropped {
    Dropped {
        path: path.display().to_string(),
        pool: r.pool,
        changes: r.changes,
        objects: r.objects,
        blobs: r.blobs,
        blob_bytes: r.blob_bytes,
        blobs_present: r.blobs_present,
        blobs_missing: r.blobs_missing,
        blobs_skipped: r.blobs_skipped,
        offline,
        fetched_bytes: fetched,
        incremental: r.incremental,
        seconds: t.elapsed().as_secs_f64(),
    }
}

/// `kith drop make --pool POOL -o FILE`: with `kith up` running, what the drop should carry
/// and this node lacks is fetched from the pool's nodes first.
pub(crate) async fn make(ctx: &Ctx, pool: String, path: PathBuf, full: bool) -> Result<Value> {
    if std::fs::symlink_metadata(&path).is_ok() {
        bail!(
            "{} already exists; write the drop to a file that does not exist yet",
            path.display()
        );
    }
    let t = Instant::now();
    let pools = pools_of(ctx)?;
    let id = pools.resolve(&pool)?;
    let mut fetched = 0;
    if let Some(node) = &ctx.node {
        let (p, store) = (pools.clone(), ctx.store.clone());
        let wanted = blocking(move || {
            let sides = drop::acknowledged(&p, &id, full);
            let known = p.known_manifests(&id, &sides).map_err(|e| anyhow::anyhow!(e))?;
            let (ids, _) = drop::blobs_to_carry(&p, &store, &id, &known)?;
            let mut lacking = Vec::new();
            for c in ids {
                if !store.has(&c)? {
                    lacking.push(c);
                }
            }
            Ok::<_, anyhow::Error>(lacking)
        })
        .await?;
        if !wanted.is_empty() {
            let v = pools.view_of(&id).ok_or_else(|| anyhow::anyhow!("the pool is gone"))?;
            let from = pools.nodes_by_recency(&v);
            // What cannot be had is left out and counted: the drop still carries the rest.
            if let Ok(r) = node
                .fetch_missing_shared("chunks for the drop", wanted, None, Some(from), Some(id))
                .await
            {
                fetched = r.bytes;
            }
        }
    }
    let (store, p, file) = (ctx.store.clone(), pools.clone(), path.clone());
    let report = blocking(move || {
        crate::portable_ops::write_whole(&file, |w| {
            drop::make(&p, &store, &id, full, w)
                .map_err(|e| kith_node::StoreError::BadSpec(e.to_string()))
        })
    })
    .await?;
    answer(dropped(&path, report, fetched, t, ctx.node.is_none()))
}

/// `kith drop apply FILE`.
pub(crate) async fn apply(ctx: &Ctx, path: PathBuf) -> Result<Value> {
    let t = Instant::now();
    let pools = pools_of(ctx)?;
    let (store, file) = (ctx.store.clone(), path.clone());
    let report =
        blocking(move || Ok::<_, anyhow::Error>(drop::apply_file(&pools, &store, &file)?)).await?;
    answer(dropped(&path, report, 0, t, false))
}
