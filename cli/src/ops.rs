//! What each command does, once: the same code runs in this process (no daemon) or in the
//! daemon (`kith up`), and answers with [`Frame`]s.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use kith_node::net::Node;
use kith_node::net::peers::{PeerInfo, PeerTable};
use kith_node::net::ticket::NodeTicket;
use kith_node::store::{GcReport, VerifyReport};
use kith_node::{Home, ObjectInfo, Progress, PutReport, Store, StoreError};
use serde_json::Value;

use crate::wire::{Frame, Out};

pub use crate::api::Request;
use crate::api::{PoolReq, SiteReq};

/// How often a running operation reports progress.
pub(crate) const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// What an operation may use.
pub struct Ctx {
    /// The home.
    pub home: Home,
    /// The store, held by this process.
    pub store: Arc<Store>,
    /// The running node, in the daemon.
    pub node: Option<Arc<Node>>,
    /// When the daemon started.
    pub started: Instant,
    /// The daemon's LAN HTTP listener.
    pub http: Option<std::net::SocketAddr>,
    /// The pools, in the daemon.
    pub pools: Option<Arc<kith_pools::docs::Pools>>,
    /// Replication into the pools, in the daemon.
    pub replicator: Option<Arc<kith_pools::replica::Replicator>>,
    /// Browser peers, in the daemon.
    pub browsers: Option<Arc<kith_hosting::browser::Browsers>>,
    /// The sites' gateway, in the daemon.
    pub gateway: Option<Arc<kith_hosting::gateway::Gateway>>,
    /// Links through neighbours (WebRTC), in the daemon.
    pub mesh: Option<Arc<kith_node::net::mesh::Mesh>>,
    /// Where the daemon serves its metrics (`kith up --metrics`), if it does.
    pub metrics: Option<std::net::SocketAddr>,
    /// Long operations under way (puts, gets, exports, imports, moves, hand-offs).
    pub operations: Operations,
    /// Whether someone may watch a long operation's progress: a daemon's status lists them,
    /// and a command run in this process draws a bar on a terminal. When nobody can, a put
    /// does not count a folder's bytes first (a second walk of the tree).
    pub watched: bool,
    /// This node's runner of the pools' jobs, in the daemon.
    pub jobs: Option<std::sync::Arc<kith_compute::jobs::JobProtocol>>,
    /// The jobs asked for here.
    pub job_book: crate::job_ops::JobBook,
    /// The relay this node serves, in the daemon with `--serve-relay`.
    pub relay: Option<crate::relay::Relay>,
    /// The relays this node was told to use (`--relay`); it also uses those its pools'
    /// agreements name ([`crate::relay::follow`]).
    pub relays: Vec<iroh::RelayUrl>,
}

/// The relays an agreement where this node's pool lends relay names: the one this node serves
/// (unless it listens on every address: no URL reaches that), else those it was told to use.
fn own_relays(ctx: &Ctx) -> Vec<String> {
    let served = ctx.relay.as_ref().map(|r| r.status().url);
    let served = served.filter(|u| !u.contains("://0.0.0.0:") && !u.contains("://[::]:"));
    match served {
        Some(u) => vec![u],
        None => ctx.relays.iter().map(|u| u.to_string()).collect(),
    }
}

/// A long operation under way: what it is, and its progress as its frames report it.
#[derive(Debug)]
pub struct Operation {
    id: u64,
    what: String,
    started: Instant,
    done: AtomicU64,
    total: AtomicU64,
    files: AtomicU64,
    stage: std::sync::Mutex<String>,
}

impl Operation {
    /// Takes a frame's progress or stage.
    pub fn note(&self, f: &Frame) {
        match f {
            Frame::Progress { done, total, files } => {
                self.done.store(*done, Ordering::Relaxed);
                self.total.store(*total, Ordering::Relaxed);
                self.files.store(*files, Ordering::Relaxed);
            }
            Frame::Stage(s) => {
                *self.stage.lock().unwrap_or_else(|e| e.into_inner()) = s.clone();
                self.done.store(0, Ordering::Relaxed);
                self.total.store(0, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// As the status reports it.
    pub fn report(&self) -> crate::api::node::OperationReport {
        let done = self.done.load(Ordering::Relaxed);
        let total = self.total.load(Ordering::Relaxed);
        let elapsed = self.started.elapsed().as_secs_f64();
        let rate = if elapsed > 0.5 { (done as f64 / elapsed) as u64 } else { 0 };
        let eta_s = (rate > 0 && total > done).then(|| (total - done) / rate);
        crate::api::node::OperationReport {
            what: self.what.clone(),
            stage: self.stage.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            running_s: elapsed as u64,
            bytes_done: done,
            bytes_total: total,
            files_done: self.files.load(Ordering::Relaxed),
            rate_bps: rate,
            eta_s,
        }
    }
}

/// The long operations under way on this node.
#[derive(Debug, Default)]
pub struct Operations {
    next: AtomicU64,
    live: std::sync::Mutex<std::collections::BTreeMap<u64, Arc<Operation>>>,
}

impl Operations {
    /// Lists `what` until the guard is dropped.
    pub fn begin(&self, what: String) -> OperationGuard<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let op = Arc::new(Operation {
            id,
            what,
            started: Instant::now(),
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
            files: AtomicU64::new(0),
            stage: Default::default(),
        });
        self.live.lock().unwrap_or_else(|e| e.into_inner()).insert(id, op.clone());
        OperationGuard { ops: self, op }
    }

    /// The operations under way, oldest first.
    pub fn reports(&self) -> Vec<crate::api::node::OperationReport> {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).values().map(|o| o.report()).collect()
    }
}

/// Keeps an operation listed while it runs.
#[derive(Debug)]
pub struct OperationGuard<'a> {
    ops: &'a Operations,
    /// The operation.
    pub op: Arc<Operation>,
}

impl Drop for OperationGuard<'_> {
    fn drop(&mut self) {
        self.ops.live.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.op.id);
    }
}

/// What a long request is, in a few words (none for a short one).
fn long_operation(req: &Request) -> Option<String> {
    let name = |p: &std::path::Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| p.display().to_string())
    };
    Some(match req {
        Request::Put { path, pool: Some(pool) } => format!("put {} into pool {pool}", name(path)),
        Request::Put { path, pool: None } => format!("put {}", name(path)),
        Request::Get { spec, .. } => format!("get {spec}"),
        Request::Export { path, .. } => format!("export to {}", name(path)),
        Request::Import { path } => format!("import {}", name(path)),
        Request::Move { from, to } => format!("move objects from {from} to {to}"),
        Request::Verify => "verify the store".into(),
        Request::Gc => "gc".into(),
        Request::Pool(PoolReq::Leave { pool, .. }) => format!("leave pool {pool}"),
        Request::Site(SiteReq::Publish { name, .. }) => format!("publish site {name}"),
        Request::JobRun(r) => format!("job {}", name(&r.module)),
        _ => return None,
    })
}

/// Runs `req` and sends its frames to `out`, ending with a result or an error frame.
pub async fn run(ctx: Arc<Ctx>, req: Request, out: Out) {
    let guard = long_operation(&req).map(|what| ctx.operations.begin(what));
    let out = match &guard {
        Some(g) => out.watched(g.op.clone()),
        None => out,
    };
    let last = match handle(&ctx, req, &out).await {
        Ok(v) => Frame::Result(v),
        Err(e) => Frame::Error(chain(&e)),
    };
    out.send(last).await;
}

/// An error and its causes, on one line.
pub fn chain(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(&format!(": {c}"));
        }
    }
    msg
}

async fn handle(ctx: &Ctx, req: Request, out: &Out) -> Result<Value> {
    let store = ctx.store.clone();
    match req {
        Request::Status => crate::status_ops::status(ctx).await,
        Request::Doctor => crate::doctor_ops::doctor(ctx).await,
        Request::Dashboard { new_token } => {
            let Some(http) = ctx.http else {
                bail!("the dashboard is served by the node: start it with `kith up`");
            };
            let root = ctx.home.root();
            let token = if new_token {
                crate::dashboard::new_token(root)?
            } else {
                crate::dashboard::token(root)?
            };
            let path = format!("{}#t={token}", crate::dashboard::PATH);
            // This machine reaches the listener at loopback, unless it listens on one
            // address only.
            let local = match http.ip() {
                ip if ip.is_unspecified() || ip.is_loopback() => {
                    format!("http://127.0.0.1:{}{path}", http.port())
                }
                std::net::IpAddr::V4(v4) => format!("http://{v4}:{}{path}", http.port()),
                std::net::IpAddr::V6(v6) => format!("http://[{v6}]:{}{path}", http.port()),
            };
            let lan = crate::site_ops::lan_urls(ctx, &path)
                .into_iter()
                .filter(|u| !u.starts_with("http://127.") && !u.starts_with("http://[::1]"))
                .collect();
            answer(crate::api::node::DashboardUrl { local, lan })
        }
        Request::Put { path, pool: None } => {
            let r = reporting(out, put_progress(ctx), move |p| store.put(&path, Some(p))).await?;
            for w in &r.warnings {
                out.send(Frame::Warning(w.clone())).await;
            }
            answer(put_of(&r))
        }
        Request::Put { path, pool: Some(pool) } => {
            let rep = ctx.replicator.as_ref().ok_or_else(|| {
                anyhow!("cannot put into a pool: kith is not running here; start it with `kith up`")
            })?;
            rep.ready_for_put(&pool).map_err(|e| anyhow!(e))?;
            let name =
                path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let r = reporting(out, put_progress(ctx), move |p| store.put(&path, Some(p))).await?;
            for w in &r.warnings {
                out.send(Frame::Warning(w.clone())).await;
            }
            let t = Instant::now();
            out.send(Frame::Stage("to holders".into())).await;
            let p = Arc::new(Progress::default());
            let ticker = tokio::spawn(crate::object_ops::report_progress(out.clone(), p.clone()));
            let pp = rep.put_with_progress(&pool, r.id.0, &name, Some(p.clone())).await;
            ticker.abort();
            out.send(progress_frame(&p)).await;
            let pp = pp.map_err(|e| anyhow!(e))?;
            let mut v = put_of(&r);
            let pools = ctx.pools.as_ref().ok_or_else(|| anyhow!("pools are not running"))?;
            v.pool = Some(crate::pool_ops::pool_put_of(pools, &pp, t.elapsed().as_secs_f64()));
            answer(v)
        }
        Request::Get { spec, cwd, to } => crate::object_ops::get(ctx, spec, cwd, to, out).await,
        Request::Files { spec, cwd } => crate::object_ops::files(ctx, spec, cwd, out).await,
        Request::Diff { old, new, cwd } => crate::object_ops::diff(ctx, old, new, cwd, out).await,
        Request::Ls => answer(objects_of(&blocking(move || store.list()).await?)),
        Request::Log { path } => answer(objects_of(&blocking(move || store.log(&path)).await?)),
        Request::Rm { spec, cwd, here_only } => {
            crate::object_ops::rm(ctx, spec, cwd, here_only).await
        }
        Request::Export { path, plain: false } => crate::portable_ops::export(ctx, path, out).await,
        Request::Export { path, plain: true } => {
            crate::portable_ops::export_plain(ctx, path, out).await
        }
        Request::Move { from, to } => crate::object_ops::move_objects(ctx, from, to, out).await,
        Request::DropMake { pool, path, full } => {
            crate::drop_ops::make(ctx, pool, path, full).await
        }
        Request::DropApply { path } => crate::drop_ops::apply(ctx, path).await,
        Request::BackupAdd { path, to, every, keep, name } => {
            answer(crate::backup::add(ctx, path, to, &every, &keep, name)?)
        }
        Request::BackupLs => {
            answer(crate::backup::load(ctx)?.iter().map(|j| j.api()).collect::<Vec<_>>())
        }
        Request::BackupRun { name } => answer(crate::backup::run_now(ctx, name.as_deref()).await?),
        Request::BackupRm { name } => answer(crate::backup::remove(ctx, &name)?),
        Request::Import { path } => crate::portable_ops::import(ctx, path, out).await,
        Request::Gc => {
            // Blobs held for pools stay, whether or not the daemon runs.
            let pools = match &ctx.pools {
                Some(p) => p.clone(),
                None => crate::pool_ops::open(&ctx.home, kith_node::Clock::system())?,
            };
            let report = blocking(move || {
                let (keep, unreadable) = kith_pools::replica::keep_set(&pools, &store);
                if let Some(first) = unreadable.first() {
                    bail!(
                        "not collecting garbage: cannot tell what this node holds for its pools ({first}); `kith up` repairs it"
                    );
                }
                store.gc_keeping(&keep).map_err(anyhow::Error::from)
            })
            .await?;
            answer(gc_of(&report))
        }
        Request::Verify => {
            answer(verify_of(&with_progress(out, move |p| store.verify(Some(p))).await?))
        }
        Request::Peers if ctx.node.is_none() => {
            // Not running: the peers saved here (from tickets); nobody was asked.
            let me = ctx.home.node_key()?.id();
            let saved = kith_node::net::peers::PeerTable::load(
                me,
                ctx.home.root().join(kith_node::net::PEERS_FILE),
            );
            out.send(Frame::Warning(
                "kith is not running here: these are the peers saved from tickets, not asked (start it with `kith up`)".into(),
            ))
            .await;
            answer(saved.list().iter().map(peer_of).collect::<Vec<_>>())
        }
        Request::Peers => {
            let node = need_node(ctx, "list peers")?;
            let links: std::collections::HashMap<_, _> = node.links().into_iter().collect();
            let peers = node.peers();
            let peers = peers.iter().map(|p| {
                let mut v = peer_of(p);
                v.route = match (links.get(&p.id), p.reachability.name()) {
                    (Some(r), _) => Some(r.clone()),
                    (None, "reachable") => Some("direct".into()),
                    _ => None,
                };
                v.link_error = node.link_error(&p.id);
                v
            });
            answer(peers.collect::<Vec<_>>())
        }
        Request::PeerLink { peer } => {
            let node = need_node(ctx, "reach a peer")?;
            let id = find_peer(node, &peer)?.id;
            let route = node
                .reach(id)
                .await
                .map_err(|e| anyhow!("cannot reach {}: {e}", id.fmt_short()))?;
            answer(crate::api::store::Linked { id: id.to_string(), route })
        }
        Request::PeerRm { peer } => {
            let removed = match &ctx.node {
                Some(node) => {
                    let id = find_peer(node, &peer)?.id;
                    node.remove_peer(&id).map_err(|e| anyhow!(e))?;
                    id
                }
                None => {
                    let me = ctx.home.node_key()?.id();
                    let table = PeerTable::load(me, ctx.home.root().join("peers.cbor"));
                    let id = find_in(table.list(), &peer)?.id;
                    table.remove(&id)?;
                    id
                }
            };
            answer(crate::api::store::PeerRemoved { id: removed.to_string() })
        }
        Request::PeerAdd { ticket } => {
            let t: NodeTicket = ticket.parse().context("cannot add the peer")?;
            match &ctx.node {
                Some(node) => {
                    answer(peer_of(&node.add_owner_peer(&t).await.map_err(|e| anyhow!(e))?))
                }
                None => {
                    let me = ctx.home.node_key()?.id();
                    if t.id == me {
                        bail!("that is this node's own ticket");
                    }
                    let table = PeerTable::load(me, ctx.home.root().join("peers.cbor"));
                    table.add_ticket(&t, true)?;
                    answer(crate::api::store::Peer {
                        id: t.id.to_string(),
                        addrs: t.addrs.iter().map(|a| a.to_string()).collect(),
                        mdns: false,
                        manual: true,
                        owner: true,
                        state: "unknown".into(),
                        last_seen_ms: None,
                        rtt_ms: None,
                        version: None,
                        clock_offset_ms: None,
                        route: None,
                        link_error: None,
                        saved: Some(true),
                    })
                }
            }
        }
        Request::Ticket => answer(crate::api::store::NodeTicket {
            ticket: need_node(ctx, "make a ticket")?.ticket().to_string(),
        }),
        Request::Pool(req) => {
            // Reading the documents works without the daemon; changing them needs the node.
            let node = if req.reads_only() {
                ctx.node.as_ref()
            } else {
                Some(need_node(ctx, "manage pools")?)
            };
            let pools = ctx.pools.as_ref().ok_or_else(|| anyhow!("pools are not running"))?;
            let rep = ctx.replicator.as_ref().ok_or_else(|| anyhow!("pools are not running"))?;
            crate::pool_ops::handle(pools, rep, node, &own_relays(ctx), req, out).await
        }
        Request::JobRun(r) => crate::job_ops::run(ctx, r, out).await,
        Request::JobLs => crate::job_ops::ls(ctx),
        Request::JobShow { id } => crate::job_ops::show(ctx, &id),
        Request::JobCancel { id } => crate::job_ops::cancel(ctx, &id),
        Request::Pair => {
            let b = ctx.browsers.as_ref().ok_or_else(|| {
                anyhow!("cannot pair: kith is not running here; start it with `kith up`")
            })?;
            let (code, secs) = b.pair();
            let page = crate::site_ops::lan_urls(ctx, "/kith/").into_iter().next();
            answer(crate::api::store::PairCode { code, expires_s: secs, page })
        }
        Request::Site(req) => {
            if !req.reads_only() {
                need_node(ctx, "manage sites")?;
            }
            crate::site_ops::handle(ctx, req).await
        }
        Request::Ledger(req) => {
            if !req.reads_only() {
                need_node(ctx, "change the ledger")?;
            }
            let pools = ctx.pools.as_ref().ok_or_else(|| anyhow!("pools are not running"))?;
            crate::ledger_ops::handle(pools, req).await
        }
    }
}

fn need_node<'a>(ctx: &'a Ctx, what: &str) -> Result<&'a Arc<Node>> {
    ctx.node
        .as_ref()
        .ok_or_else(|| anyhow!("cannot {what}: kith is not running here; start it with `kith up`"))
}

pub(crate) async fn blocking<T: Send + 'static, E>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T>
where
    E: Into<anyhow::Error> + Send + 'static,
{
    tokio::task::spawn_blocking(f).await.context("an internal task failed")?.map_err(Into::into)
}

/// Runs a blocking store operation, reporting its progress counters as frames.
pub(crate) async fn with_progress<T: Send + 'static>(
    out: &Out,
    f: impl FnOnce(Arc<Progress>) -> Result<T, StoreError> + Send + 'static,
) -> Result<T> {
    reporting(out, Progress::default(), f).await
}

/// A put's counters: with a total unless nobody can watch (see [`Ctx::watched`]).
fn put_progress(ctx: &Ctx) -> Progress {
    if ctx.watched { Progress::default() } else { Progress::without_total() }
}

/// Runs a blocking store operation, reporting the counters `p` as frames.
async fn reporting<T: Send + 'static>(
    out: &Out,
    p: Progress,
    f: impl FnOnce(Arc<Progress>) -> Result<T, StoreError> + Send + 'static,
) -> Result<T> {
    let p = Arc::new(p);
    let task = tokio::task::spawn_blocking({
        let p = p.clone();
        move || f(p)
    });
    tokio::pin!(task);
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    loop {
        tokio::select! {
            r = &mut task => return r.context("an internal task failed")?.map_err(Into::into),
            _ = tick.tick() => out.send(progress_frame(&p)).await,
        }
    }
}

pub(crate) fn progress_frame(p: &Progress) -> Frame {
    Frame::Progress {
        done: p.bytes_done.load(Ordering::Relaxed),
        total: p.bytes_total.load(Ordering::Relaxed),
        files: p.files_done.load(Ordering::Relaxed),
    }
}

/// A put's report.
pub fn put_of(r: &PutReport) -> crate::api::store::Put {
    let s = &r.stats;
    crate::api::store::Put {
        id: r.id.to_string(),
        version: r.version.into(),
        source: r.source.to_string_lossy().into_owned(),
        files: s.files,
        dirs: s.dirs,
        symlinks: s.symlinks,
        files_unchanged: s.files_unchanged,
        bytes_scanned: s.bytes_scanned,
        bytes_read: s.bytes_read,
        chunks_new: s.chunks_new,
        bytes_new: s.bytes_new,
        bytes_stored: s.bytes_stored,
        seconds: s.elapsed.as_secs_f64(),
        warnings: r.warnings.clone(),
        pool: None,
    }
}

fn objects_of(objects: &[ObjectInfo]) -> Vec<crate::api::store::Object> {
    objects
        .iter()
        .map(|o| crate::api::store::Object {
            id: o.id.to_string(),
            version: o.version.into(),
            created_ms: o.created_ms,
            source: o.source.to_string_lossy().into_owned(),
            kind: o.kind.name().to_string(),
            files: o.stats.files,
            dirs: o.stats.dirs,
            bytes: o.stats.bytes,
            parent: o.parent.map(|p| p.to_string()),
        })
        .collect()
}

fn gc_of(r: &GcReport) -> crate::api::store::Collected {
    crate::api::store::Collected {
        objects: r.objects as u64,
        blobs_kept: r.blobs_kept,
        blobs_removed: r.blobs_removed,
        packs_deleted: r.packs_deleted,
        packs_rewritten: r.packs_rewritten,
        bytes_freed: r.bytes_freed,
        bytes_unreferenced_kept: r.bytes_unreferenced_kept,
        rewrite_skipped: r.rewrite_skipped.clone(),
    }
}

fn verify_of(r: &VerifyReport) -> crate::api::store::Verified {
    use crate::api::store::{DamagedBlob, DamagedObject};
    crate::api::store::Verified {
        damaged: r.is_damaged(),
        packs: r.packs as u64,
        blobs: r.blobs,
        bytes: r.bytes,
        objects: r.objects as u64,
        damaged_blobs: r
            .damaged_blobs
            .iter()
            .map(|(id, why)| DamagedBlob { chunk: id.to_string(), reason: why.clone() })
            .collect(),
        damaged_objects: r
            .damaged_objects
            .iter()
            .map(|d| DamagedObject {
                id: d.id.to_string(),
                source: d.source.as_ref().map(|s| s.to_string_lossy().into_owned()),
                problems: d.problems.clone(),
                problem_count: d.problem_count as u64,
            })
            .collect(),
        unindexed_packs: r
            .unindexed_packs
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect(),
        unreferenced_blobs: r.unreferenced_blobs,
    }
}

/// A typed answer, as the JSON that crosses the control socket.
pub(crate) fn answer<T: serde::Serialize>(t: T) -> Result<Value> {
    Ok(serde_json::to_value(t)?)
}

/// A known peer by its full id or the start of it.
fn find_peer(node: &Node, spec: &str) -> Result<PeerInfo> {
    find_in(node.peers(), spec)
}

/// The one peer of `peers` whose id starts with `spec`.
fn find_in(peers: Vec<PeerInfo>, spec: &str) -> Result<PeerInfo> {
    let spec = spec.trim();
    if spec.len() < 4 {
        bail!("give at least 4 characters of the node id");
    }
    let matches: Vec<_> =
        peers.into_iter().filter(|p| p.id.to_string().starts_with(spec)).collect();
    match matches.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "no known peer starts with {spec} (`kith peers` lists them; `kith peer add TICKET` adds one)"
        ),
        _ => bail!("{} peers start with {spec}; give more of the id", matches.len()),
    }
}

fn peer_of(p: &PeerInfo) -> crate::api::store::Peer {
    crate::api::store::Peer {
        id: p.id.to_string(),
        addrs: p.addrs.iter().map(|a| a.to_string()).collect(),
        mdns: p.mdns,
        manual: p.manual,
        owner: p.owner,
        state: p.reachability.name().to_string(),
        last_seen_ms: p.last_seen_ms,
        rtt_ms: p.pong.as_ref().map(|x| x.rtt_ms),
        version: p.pong.as_ref().and_then(|x| x.version.clone()),
        clock_offset_ms: p.pong.as_ref().and_then(|x| x.clock_offset_ms),
        route: None,
        link_error: None,
        saved: None,
    }
}
