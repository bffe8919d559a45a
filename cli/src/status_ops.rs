//! `kith status`: the node, its store, its workers, peers and what it served and refused.

use std::sync::atomic::Ordering;

use anyhow::Result;
use serde_json::{Value, json};

use crate::ops::{Ctx, blocking};

pub(crate) async fn status(ctx: &Ctx) -> Result<Value> {
    use crate::api::node::*;
    let store = ctx.store.clone();
    let usage = blocking(move || store.usage()).await?;
    let mut v = Status {
        node: ctx.home.node_key()?.id().to_string(),
        identity: ctx.home.identity()?.id().to_string(),
        home: ctx.home.root().to_string_lossy().into_owned(),
        running: ctx.node.is_some(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        store: StoreUsage {
            objects: usage.objects,
            chunks: usage.blobs,
            packs: usage.packs,
            bytes: usage.pack_bytes,
        },
        addrs: Vec::new(),
        http: None,
        metrics: None,
        urls: Vec::new(),
        retired_ms: None,
        workers: Vec::new(),
        operations: ctx.operations.reports(),
        peers: None,
        uptime_s: 0,
        gateway: None,
        browsers: None,
        mesh: None,
        relay: ctx.relay.as_ref().map(|r| r.status()),
        relays: match &ctx.node {
            Some(n) => n.relays().iter().map(|u| u.to_string()).collect(),
            None => ctx.relays.iter().map(|u| u.to_string()).collect(),
        },
        home_relay: None,
        relay_error: None,
        refused: Default::default(),
        served: None,
    };
    if let Some((url, state)) = ctx.node.as_ref().and_then(|n| n.home_relay()) {
        match state {
            Ok(()) => v.home_relay = Some(url),
            Err(why) => v.relay_error = Some(format!("{url}: {why}")),
        }
    }
    if let Some(node) = &ctx.node {
        let peers = node.peers();
        let reachable = peers.iter().filter(|p| p.reachability.name() == "reachable").count();
        v.addrs = node.addrs().iter().map(|a| a.to_string()).collect();
        v.http = ctx.http.map(|a| a.to_string());
        v.metrics = ctx.metrics.map(|a| format!("http://{a}/metrics"));
        // Where a person opens this node: its LAN addresses, not the 0.0.0.0 it listens on.
        v.urls = crate::site_ops::lan_urls(ctx, "/");
        v.retired_ms = ctx.pools.as_ref().and_then(|p| p.retired_at());
        if let Some(r) = &ctx.replicator {
            v.workers = r
                .workers()
                .list()
                .into_iter()
                .map(|w| Worker {
                    name: w.name,
                    state: w.state.name().to_string(),
                    passes: w.passes,
                    last_ms: w.last_ms,
                    last_took_ms: w.last_took_ms,
                    progress: w.progress,
                    eta_s: w.eta_s,
                    last_error: w.last_error,
                })
                .collect();
        }
        v.peers = Some(PeerCount { known: peers.len() as u64, reachable: reachable as u64 });
        v.uptime_s = ctx.started.elapsed().as_secs();
        v.gateway = ctx.gateway.as_ref().map(|g| {
            let s = g.stats();
            Gateway {
                requests: s.requests.load(Ordering::Relaxed),
                cache_hits: s.hits.load(Ordering::Relaxed),
                store_reads: s.reads.load(Ordering::Relaxed),
                fetched: s.fetched.load(Ordering::Relaxed),
                cache_bytes: g.cache_bytes() as u64,
            }
        });
        v.browsers = ctx
            .browsers
            .as_ref()
            .map(|b| json!({ "sessions": b.sessions(), "reports": b.reports() }));
        v.mesh = ctx.mesh.as_ref().map(|m| m.status());
        v.refused = node.refusals().counts().into_iter().map(|(k, n)| (k.to_string(), n)).collect();
        let served = node.served();
        v.served = Some(Served {
            blobs: served.blobs.load(Ordering::Relaxed),
            bytes: served.bytes.load(Ordering::Relaxed),
            bad_requests: served.bad_requests.load(Ordering::Relaxed),
            connections: served.connections.load(Ordering::Relaxed),
            open_connections: served.open_connections.load(Ordering::Relaxed),
            refused_connections: served.refused_connections.load(Ordering::Relaxed),
            replaced_connections: served.replaced_connections.load(Ordering::Relaxed),
        });
    }
    Ok(serde_json::to_value(v)?)
}
