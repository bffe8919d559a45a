//! `kith up --metrics ADDR`: the node's figures for Prometheus, at `http://ADDR/metrics`. Off by
//! default; when on, anyone who can reach ADDR reads them (counts and sizes, never names,
//! contents or keys), so the documented address is a loopback one.
//!
//! Each scrape reads the node's counters afresh, as `kith status` does, into a new registry, and
//! encodes it in the OpenMetrics text format with iroh-metrics (the exposition crate iroh itself
//! uses, already built for it). Names follow Prometheus' conventions: the `kith_` prefix, base
//! units (bytes, seconds) in the name, `_total` on counters. docs/metrics.md lists them.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use anyhow::Result;
use iroh_metrics::{Counter, EncodeLabelSet, Family, Gauge, MetricsGroup, MetricsSource, Registry};

use crate::ops::{Ctx, blocking};

/// The content type of the OpenMetrics text format (Prometheus asks for it first).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct StateL {
    state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct CauseL {
    cause: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct RouteL {
    route: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct DirectionL {
    direction: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct StatusL {
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct PoolL {
    pool: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct AuditL {
    pool: String,
    result: &'static str,
}

/// The node as a whole.
#[derive(Debug, MetricsGroup)]
#[metrics(default, name = "node")]
struct NodeMetrics {
    /// Seconds since the daemon started.
    uptime_seconds: Gauge,
    /// Peers this node knows, by state.
    peers: Family<StateL, Gauge>,
    /// Peers' input this node refused, by cause.
    refusals: Family<CauseL, Counter>,
    /// Background workers, by state.
    workers: Family<StateL, Gauge>,
}

/// The local store.
#[derive(Debug, MetricsGroup)]
#[metrics(default, name = "store")]
struct StoreMetrics {
    /// Bytes of pack files.
    bytes: Gauge,
    /// Chunks (blobs) held.
    chunks: Gauge,
    /// Objects recorded.
    objects: Gauge,
    /// Pack files.
    packs: Gauge,
    /// Puts that finished since the daemon started.
    puts: Counter,
    /// Bytes in the files of those puts.
    put_bytes: Counter,
    /// Bytes those puts added to the store (new data, compressed and encrypted).
    stored_bytes: Counter,
    /// Restores (`kith get`) that finished.
    restores: Counter,
    /// Bytes of file data they wrote.
    restored_bytes: Counter,
}

/// Blobs between this node and its peers.
#[derive(Debug, MetricsGroup)]
#[metrics(default, name = "blobs")]
struct BlobMetrics {
    /// Blobs served to peers, by route (direct: iroh; linked: through a neighbour's link).
    served: Family<RouteL, Counter>,
    /// Bytes of blobs served to peers, by route.
    served_bytes: Family<RouteL, Counter>,
    /// Verified blobs fetched from peers, by route.
    fetched: Family<RouteL, Counter>,
    /// Bytes of verified blobs fetched from peers, by route.
    fetched_bytes: Family<RouteL, Counter>,
    /// Blob requests dropped as malformed, oversized or stalled.
    bad_requests: Counter,
}

/// Syncs of the pool, ledger and identity documents.
#[derive(Debug, MetricsGroup)]
#[metrics(default, name = "sync")]
struct SyncMetrics {
    /// Syncs of one document with one peer that settled.
    settled: Counter,
    /// Syncs that failed (the peer went away, refused, or did not settle).
    failed: Counter,
    /// Changes that arrived in settled syncs.
    changes: Counter,
    /// Bytes of sync turns, by direction.
    bytes: Family<DirectionL, Counter>,
}

/// Each pool this node is in, as this node sees it.
#[derive(Debug, MetricsGroup)]
#[metrics(default, name = "pool")]
struct PoolMetrics {
    /// Active members.
    members: Family<PoolL, Gauge>,
    /// Bytes placement gives this node (summed over a pool's nodes: the pool's data times its replicas).
    responsible_bytes: Family<PoolL, Gauge>,
    /// Of those, bytes this node does not hold yet (summed over a pool's nodes: what the pool is short of full replication).
    lacking_bytes: Family<PoolL, Gauge>,
    /// Blobs this node does not hold yet.
    lacking_blobs: Family<PoolL, Gauge>,
    /// Blobs this node fetched by repair since it started.
    repaired_blobs: Family<PoolL, Counter>,
    /// Their bytes.
    repaired_bytes: Family<PoolL, Counter>,
    /// Audits this node made of the pool's holders, by result.
    audits: Family<AuditL, Counter>,
}

/// The site gateway.
#[derive(Debug, MetricsGroup)]
#[metrics(default, name = "gateway")]
struct GatewayMetrics {
    /// Site requests answered, by HTTP status.
    requests: Family<StatusL, Counter>,
    /// Chunks served from the memory cache.
    cache_hits: Counter,
    /// Chunks read from the store.
    store_reads: Counter,
    /// Chunks fetched from other nodes.
    fetched_chunks: Counter,
    /// Bytes in the memory cache.
    cache_bytes: Gauge,
}

/// Links through neighbours (WebRTC).
#[derive(Debug, MetricsGroup)]
#[metrics(default, name = "mesh")]
struct MeshMetrics {
    /// Links open now.
    links: Gauge,
    /// Links this node made.
    links_made: Counter,
    /// Attempts that failed.
    links_failed: Counter,
    /// Signalling this node passed on as a neighbour.
    relayed: Counter,
}

fn gauge(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// The node's figures now, in the OpenMetrics text format.
pub(crate) async fn render(ctx: &Ctx) -> Result<String> {
    let mut registry = Registry::default();
    let r = registry.sub_registry_with_prefix("kith");

    let store = ctx.store.clone();
    let usage = blocking(move || store.usage()).await?;
    let s = Arc::new(StoreMetrics::default());
    s.bytes.set(gauge(usage.pack_bytes));
    s.chunks.set(gauge(usage.blobs));
    s.objects.set(gauge(usage.objects));
    s.packs.set(gauge(usage.packs));
    let c = ctx.store.counters();
    s.puts.set(c.puts.load(Relaxed));
    s.put_bytes.set(c.put_bytes.load(Relaxed));
    s.stored_bytes.set(c.stored_bytes.load(Relaxed));
    s.restores.set(c.restores.load(Relaxed));
    s.restored_bytes.set(c.restored_bytes.load(Relaxed));
    r.register(s);

    let n = Arc::new(NodeMetrics::default());
    n.uptime_seconds.set(gauge(ctx.started.elapsed().as_secs()));
    if let Some(node) = &ctx.node {
        let mut states: BTreeMap<String, i64> = BTreeMap::new();
        for p in node.peers() {
            *states.entry(p.reachability.name().replace(' ', "_")).or_default() += 1;
        }
        for (state, count) in states {
            n.peers.get_or_create(&StateL { state }).set(count);
        }
        for (cause, count) in node.refusals().counts() {
            n.refusals.get_or_create(&CauseL { cause: cause.to_string() }).set(count);
        }

        let b = Arc::new(BlobMetrics::default());
        let served = node.served();
        let (all_blobs, all_bytes) = (served.blobs.load(Relaxed), served.bytes.load(Relaxed));
        // What went over links is counted by the mesh too; the rest went direct.
        let (link_blobs, link_bytes) = ctx.mesh.as_ref().map_or((0, 0), |m| {
            let st = m.status();
            (st.served_blobs, st.served_bytes)
        });
        let (direct, linked) = (RouteL { route: "direct" }, RouteL { route: "linked" });
        b.served.get_or_create(&direct).set(all_blobs.saturating_sub(link_blobs));
        b.served.get_or_create(&linked).set(link_blobs);
        b.served_bytes.get_or_create(&direct).set(all_bytes.saturating_sub(link_bytes));
        b.served_bytes.get_or_create(&linked).set(link_bytes);
        let f = node.fetched();
        b.fetched.get_or_create(&direct).set(f.direct_blobs.load(Relaxed));
        b.fetched.get_or_create(&linked).set(f.linked_blobs.load(Relaxed));
        b.fetched_bytes.get_or_create(&direct).set(f.direct_bytes.load(Relaxed));
        b.fetched_bytes.get_or_create(&linked).set(f.linked_bytes.load(Relaxed));
        b.bad_requests.set(served.bad_requests.load(Relaxed));
        r.register(b);
    }
    if let Some(rep) = &ctx.replicator {
        let mut states: BTreeMap<&'static str, i64> = BTreeMap::new();
        for w in rep.workers().list() {
            *states.entry(w.state.name()).or_default() += 1;
        }
        for (state, count) in states {
            n.workers.get_or_create(&StateL { state: state.to_string() }).set(count);
        }
    }
    r.register(n);

    if let Some(pools) = &ctx.pools {
        let sc = pools.sync_counts();
        let y = Arc::new(SyncMetrics::default());
        y.settled.set(sc.settled);
        y.failed.set(sc.failed);
        y.changes.set(sc.changes);
        y.bytes.get_or_create(&DirectionL { direction: "sent" }).set(sc.sent_bytes);
        y.bytes.get_or_create(&DirectionL { direction: "received" }).set(sc.received_bytes);
        r.register(y);

        let p = Arc::new(PoolMetrics::default());
        for (id, v) in pools.views().iter() {
            let pool = PoolL { pool: v.charter.name.clone() };
            let active = v.members.values().filter(|m| m.state == kith_pools::State::Active);
            p.members.get_or_create(&pool).set(gauge(active.count()));
            let Some(rep) = &ctx.replicator else { continue };
            if let Some(st) = rep.stats(id) {
                p.responsible_bytes.get_or_create(&pool).set(gauge(st.responsible_bytes));
                p.lacking_bytes.get_or_create(&pool).set(gauge(st.lacking_bytes));
                p.lacking_blobs.get_or_create(&pool).set(gauge(st.lacking_blobs));
                p.repaired_blobs.get_or_create(&pool).set(st.repaired_blobs);
                p.repaired_bytes.get_or_create(&pool).set(st.repaired_bytes);
            }
            let (mut passed, mut failed) = (0, 0);
            for a in rep.audits(id).values() {
                passed += a.passed;
                failed += a.failed;
            }
            let audit = |result| AuditL { pool: pool.pool.clone(), result };
            p.audits.get_or_create(&audit("passed")).set(passed);
            p.audits.get_or_create(&audit("failed")).set(failed);
        }
        r.register(p);
    }

    if let Some(g) = &ctx.gateway {
        let st = g.stats();
        let m = Arc::new(GatewayMetrics::default());
        for (status, count) in st.by_status() {
            m.requests.get_or_create(&StatusL { status }).set(count);
        }
        m.cache_hits.set(st.hits.load(Relaxed));
        m.store_reads.set(st.reads.load(Relaxed));
        m.fetched_chunks.set(st.fetched.load(Relaxed));
        m.cache_bytes.set(gauge(g.cache_bytes()));
        r.register(m);
    }

    if let Some(mesh) = &ctx.mesh {
        let st = mesh.status();
        let m = Arc::new(MeshMetrics::default());
        m.links.set(gauge(st.links.len()));
        m.links_made.set(st.links_made);
        m.links_failed.set(st.links_failed);
        m.relayed.set(st.relayed);
        r.register(m);
    }

    Ok(registry.encode_openmetrics_to_string()?)
}

/// Starts serving `GET /metrics` on `listener` (one worker: a scrape every few seconds).
pub(crate) fn serve(
    ctx: Arc<Ctx>,
    listener: TcpListener,
    grace: Duration,
) -> Result<actix_web::dev::Server> {
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "metrics are served to anyone who can reach this address (counts and sizes, no names or contents)");
    }
    let ctx = web::Data::from(ctx);
    Ok(HttpServer::new(move || {
        App::new().app_data(ctx.clone()).route("/metrics", web::get().to(scrape)).default_service(
            web::to(|| async {
                HttpResponse::NotFound()
                    .content_type("text/plain; charset=utf-8")
                    .body("kith serves its metrics at GET /metrics\n")
            }),
        )
    })
    .workers(1)
    .disable_signals()
    .client_request_timeout(Duration::from_secs(10))
    .shutdown_timeout(grace.as_secs())
    .listen(listener)?
    .run())
}

async fn scrape(_req: HttpRequest, ctx: web::Data<Ctx>) -> HttpResponse {
    match render(&ctx).await {
        Ok(body) => HttpResponse::Ok().content_type(CONTENT_TYPE).body(body),
        Err(e) => {
            tracing::warn!(error = %e, "cannot gather the metrics");
            HttpResponse::InternalServerError()
                .content_type("text/plain; charset=utf-8")
                .body(format!("cannot gather the metrics: {e}\n"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names and the format Prometheus expects: HELP and TYPE per family, `_total` on
    /// counters, labels quoted, `# EOF` at the end.
    #[test]
    fn families_are_named_and_typed_as_prometheus_expects() {
        let mut registry = Registry::default();
        let r = registry.sub_registry_with_prefix("kith");
        let g = Arc::new(GatewayMetrics::default());
        g.requests.get_or_create(&StatusL { status: 404 }).set(3);
        g.cache_hits.set(7);
        g.cache_bytes.set(1024);
        r.register(g);
        let text = registry.encode_openmetrics_to_string().unwrap();
        for line in [
            "# TYPE kith_gateway_requests counter",
            "kith_gateway_requests_total{status=\"404\"} 3",
            "# TYPE kith_gateway_cache_hits counter",
            "kith_gateway_cache_hits_total 7",
            "# TYPE kith_gateway_cache_bytes gauge",
            "kith_gateway_cache_bytes 1024",
            "# HELP kith_gateway_cache_bytes Bytes in the memory cache.",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
