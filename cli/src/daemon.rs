//! The daemon: one node, every task of it under one owner.
//!
//! It holds the home (a second daemon on the same home is refused), runs the network node,
//! answers commands on the control socket (`HOME/control.sock`, mode 0600, token in
//! `HOME/control.token`, 0600: reachable from this machine only), and serves the LAN-facing
//! HTTP listener, which never exposes the control API. [`Daemon::start`] returns once it is up;
//! it stops within a few seconds of its `shutdown` future resolving (`kith up`: SIGINT or
//! SIGTERM).

use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use anyhow::{Context, Result};
use kith_node::net::mdns::MdnsConfig;
use kith_node::net::{NetConfig, Node};
use kith_node::{Home, Store};
use tokio::sync::mpsc;

use crate::client::{API_HEADER, SOCKET, TOKEN};
use crate::ops::{self, Ctx, Request};
use crate::wire::{Frame, Out};

/// Time the servers get to finish requests when stopping.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// Largest control request body.
const MAX_REQUEST: usize = 64 << 10;
/// Frames buffered per control request.
const FRAME_QUEUE: usize = 16;
/// How long the daemon waits for a command that holds the home to finish.
const LOCK_PATIENCE: Duration = Duration::from_secs(10);

/// How the daemon listens; [`Config::default`] is what `kith up` uses with no options.
#[derive(Debug, Clone)]
pub struct Config {
    /// iroh UDP addresses.
    pub listen: Vec<SocketAddr>,
    /// LAN HTTP listener.
    pub http: SocketAddr,
    /// Discovery.
    pub mdns: MdnsConfig,
    /// Bytes of opened site content the gateway keeps in memory.
    pub site_cache: usize,
    /// The clock the node decides by (the system's; a manual one in tests).
    pub clock: kith_node::Clock,
    /// Where to serve Prometheus metrics (`None`: nowhere, the default).
    pub metrics: Option<SocketAddr>,
    /// Serve federated partners' public sites as their CDN edge (when a pool of this node
    /// lends its partner CDN).
    pub cdn: bool,
    /// Relays to use (`--relay`; none by default: nothing leaves the LAN).
    pub relays: Vec<iroh::RelayUrl>,
    /// Where to serve a relay (`--serve-relay`; nowhere by default).
    pub serve_relay: Option<SocketAddr>,
    /// Connections one node may hold open to this one for blobs.
    pub max_connections_per_peer: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: vec![SocketAddr::from(([0, 0, 0, 0], DEFAULT_UDP_PORT))],
            http: SocketAddr::from(([0, 0, 0, 0], DEFAULT_HTTP_PORT)),
            mdns: MdnsConfig::default(),
            site_cache: DEFAULT_SITE_CACHE,
            clock: kith_node::Clock::system(),
            metrics: None,
            cdn: false,
            relays: Vec::new(),
            serve_relay: None,
            max_connections_per_peer: kith_node::net::blobs::MAX_CONNECTIONS_PER_PEER,
        }
    }
}

/// The UDP port of the node's endpoint by default.
pub const DEFAULT_UDP_PORT: u16 = 7781;
/// The port of the LAN HTTP listener by default.
pub const DEFAULT_HTTP_PORT: u16 = 7780;
/// Memory for opened site content by default.
pub const DEFAULT_SITE_CACHE: usize = 256 << 20;

/// A node's daemon.
#[derive(Debug)]
pub struct Daemon;

/// A running daemon: what it listens on, and its end.
#[derive(Debug)]
pub struct DaemonHandle {
    /// The node's id.
    pub node: String,
    /// The LAN HTTP listener's address.
    pub http: SocketAddr,
    /// The control socket.
    pub control: std::path::PathBuf,
    /// Where metrics are served, if they are.
    pub metrics: Option<SocketAddr>,
    task: tokio::task::JoinHandle<()>,
}

impl DaemonHandle {
    /// Waits until the daemon has stopped (after its `shutdown` resolved).
    pub async fn stopped(self) -> Result<()> {
        self.task.await.context("the daemon's task failed")
    }
}

impl Daemon {
    /// Starts every task of a node on `home` and returns once it is up; everything stops when
    /// `shutdown` resolves (see [`DaemonHandle::stopped`]).
    pub async fn start(
        home: Home,
        config: Config,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<DaemonHandle> {
        let running = start(home, config).await?;
        let (node, http, control, metrics) = (
            running.node.id().to_string(),
            running.http,
            running.sock_path.clone(),
            running.ctx.metrics,
        );
        let task = tokio::spawn(async move {
            shutdown.await;
            running.stop().await;
        });
        Ok(DaemonHandle { node, http, control, metrics, task })
    }

    /// Runs a daemon on `home` in the foreground until SIGINT or SIGTERM (`kith up`).
    pub fn run_until_signal(home: Home, config: Config) -> Result<()> {
        let rt =
            tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("kith").build()?;
        let result = rt.block_on(async {
            Daemon::start(home, config, wait_for_signal()).await?.stopped().await
        });
        // Tasks still running (an abandoned client request) get a moment, not forever.
        rt.shutdown_timeout(STOP_GRACE / 2);
        result
    }
}

/// What a started daemon runs, to be stopped in order.
struct Running {
    node: Arc<Node>,
    http: SocketAddr,
    ctx: Arc<Ctx>,
    pools_stop: tokio_util::sync::CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    control: actix_web::dev::ServerHandle,
    lan: actix_web::dev::ServerHandle,
    metrics: Option<actix_web::dev::ServerHandle>,
    sock_path: std::path::PathBuf,
    token_path: std::path::PathBuf,
}

impl Running {
    async fn stop(self) {
        tracing::info!("stopping");
        self.pools_stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        // What usage accrued since the last record goes into the ledgers before the node stops.
        if let Some(r) = &self.ctx.replicator {
            r.record_usage_now();
        }
        let stop = async {
            let metrics = async {
                if let Some(m) = &self.metrics {
                    m.stop(true).await;
                }
            };
            tokio::join!(
                self.control.stop(true),
                self.lan.stop(true),
                metrics,
                self.node.shutdown()
            );
        };
        if tokio::time::timeout(STOP_GRACE * 2, stop).await.is_err() {
            tracing::warn!("stopping took too long; leaving anyway");
        }
        let _ = std::fs::remove_file(&self.sock_path);
        let _ = std::fs::remove_file(&self.token_path);
        drop(self.ctx);
        tracing::info!("stopped");
    }
}

struct Control {
    token: String,
    ctx: Arc<Ctx>,
    rt: tokio::runtime::Handle,
}

async fn start(home: Home, opts: Config) -> Result<Running> {
    let started = Instant::now();
    let store =
        Arc::new(Store::open_patiently(&home, kith_node::home::DAEMON_WHAT, LOCK_PATIENCE)?);
    let cfg = NetConfig {
        listen: opts.listen.clone(),
        mdns: opts.mdns.clone(),
        relays: opts.relays.clone(),
        max_connections_per_peer: opts.max_connections_per_peer,
    };
    let pools = crate::pool_ops::open(&home, opts.clock.clone())?;
    crate::pool_ops::keep_data_keys(&pools, &store);
    // A leave that a stopped daemon did not finish: the member stays, with its offer back.
    kith_pools::leave::restore_interrupted(&pools);
    let docs = kith_pools::docs::DocsProtocol::new(pools.clone());
    let replicator = kith_pools::replica::Replicator::new(pools.clone());
    if opts.cdn {
        replicator.edges().enable();
    }
    let pool_proto = kith_pools::replica::PoolProtocol::new(replicator.clone());
    let mesh = kith_node::net::mesh::Mesh::new(home.node_key()?.secret().clone());
    // What a stopped daemon left of jobs and dashboard uploads.
    if let Ok(rd) = std::fs::read_dir(home.root().join("tmp")) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with("job-") || n.starts_with("dashboard-publish-") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let jobs = Arc::new(kith_compute::jobs::JobProtocol::new(
        pools.clone(),
        home.node_key()?.secret().clone(),
        home.root().join("tmp"),
    )?);
    let protocols = vec![
        (kith_pools::docs::DOCS_ALPN.to_vec(), docs.into()),
        (kith_pools::replica::POOL_ALPN.to_vec(), pool_proto.into()),
        (kith_compute::jobs::JOB_ALPN.to_vec(), (*jobs).clone().into()),
        (
            kith_pools::fed::FED_ALPN.to_vec(),
            kith_pools::fed::FedProtocol::new(replicator.clone()).into(),
        ),
        (
            kith_node::net::mesh::SIGNAL_ALPN.to_vec(),
            kith_node::net::mesh::SignalProtocol(mesh.clone()).into(),
        ),
    ];
    let node = Arc::new(Node::start_with(&home, store.clone(), cfg, protocols).await?);
    mesh.attach(node.clone());
    pools.attach(node.endpoint().clone());
    pools.count_refusals_in(node.refusals().clone());
    replicator.attach(node.clone());
    // Blobs go only to this identity's devices and to members of a pool that references them.
    node.served().set_gate(kith_pools::gate::PoolsGate::new(replicator.clone()));
    let pools_stop = tokio_util::sync::CancellationToken::new();
    let pools_task =
        tokio::spawn(pools.clone().run(pools_stop.clone(), replicator.workers().clone()));
    let repair_task = tokio::spawn(replicator.clone().run(pools_stop.clone()));

    let gateway = kith_hosting::gateway::Gateway::new(pools.clone(), node.clone(), opts.site_cache);
    let edges = replicator.edges().clone();
    gateway.serve_edges(edges.clone());
    replicator.set_site_keeper(Arc::new(kith_hosting::gateway::SiteKeeper {
        gateway: gateway.clone(),
        scratch: home.root().join("kept-sites"),
    }));
    let browsers = kith_hosting::browser::Browsers::new(
        gateway.clone(),
        store.clone(),
        home.root().join("uploads"),
    );
    let lan = TcpListener::bind(opts.http)
        .with_context(|| format!("cannot listen for HTTP on {}", opts.http))?;
    let http_addr = lan.local_addr()?;
    // STUN for nodes joined through this one: UDP on the HTTP listener's port if free.
    let stun = match tokio::net::UdpSocket::bind(http_addr).await {
        Ok(s) => s,
        Err(_) => tokio::net::UdpSocket::bind((http_addr.ip(), 0))
            .await
            .with_context(|| format!("cannot listen for STUN on {}", http_addr.ip()))?,
    };
    let stun_task = mesh.serve_stun(stun, pools_stop.clone())?;
    let metrics_listener = match opts.metrics {
        Some(a) => {
            Some(TcpListener::bind(a).with_context(|| format!("cannot serve metrics on {a}"))?)
        }
        None => None,
    };
    let metrics_addr = metrics_listener.as_ref().map(|l| l.local_addr()).transpose()?;
    let follow_task = tokio::spawn(crate::relay::follow(
        node.clone(),
        replicator.clone(),
        opts.relays.clone(),
        opts.serve_relay.and_then(|a| format!("http://{a}").parse().ok()),
        pools_stop.clone(),
    ));
    let (relay, relay_task) = match opts.serve_relay {
        Some(addr) => {
            let (r, t) = crate::relay::serve(
                addr,
                node.clone(),
                replicator.clone(),
                home.root().to_path_buf(),
                pools_stop.clone(),
            )
            .await?;
            (Some(r), Some(t))
        }
        None => (None, None),
    };
    let ctx = Arc::new(Ctx {
        home: home.clone(),
        store,
        node: Some(node.clone()),
        started,
        http: Some(http_addr),
        pools: Some(pools),
        replicator: Some(replicator),
        browsers: Some(browsers.clone()),
        gateway: Some(gateway.clone()),
        mesh: Some(mesh),
        metrics: metrics_addr,
        operations: Default::default(),
        watched: true,
        jobs: Some(jobs),
        job_book: crate::job_ops::JobBook::open(home.root()),
        relay,
        relays: opts.relays.clone(),
    });

    let backups_task = tokio::spawn(crate::backup::worker(
        ctx.clone(),
        ctx.replicator.as_ref().expect("the daemon replicates").workers().clone(),
        pools_stop.clone(),
    ));

    let token = new_token();
    let token_path = home.root().join(TOKEN);
    write_private(&token_path, token.as_bytes())?;
    let sock_path = home.root().join(SOCKET);
    let _ = std::fs::remove_file(&sock_path);
    let uds = UnixListener::bind(&sock_path)
        .with_context(|| format!("cannot create {}", sock_path.display()))?;
    std::fs::set_permissions(&sock_path, std::fs::Permissions::from_mode(0o600))?;

    let dashboard = web::Data::from(crate::dashboard::Dashboard::new(ctx.clone(), token.clone())?);
    let control =
        web::Data::new(Control { token, ctx: ctx.clone(), rt: tokio::runtime::Handle::current() });
    let control_server = HttpServer::new(move || {
        App::new()
            .app_data(control.clone())
            .app_data(web::PayloadConfig::new(MAX_REQUEST))
            .route("/v1/run", web::post().to(run_request))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(STOP_GRACE.as_secs())
    .listen_uds(uds)?
    .run();
    let page = web::Data::new(LanPage { node: node.id().to_string() });
    let gateway = web::Data::from(gateway);
    let browsers = web::Data::from(browsers);
    let lan_server = HttpServer::new(move || {
        App::new()
            .app_data(page.clone())
            .app_data(gateway.clone())
            .app_data(browsers.clone())
            .app_data(dashboard.clone())
            .service(web::resource("/kith/api/v1/publish").route(web::post().to(dashboard_publish)))
            .app_data(web::PayloadConfig::new(kith_hosting::browser::MAX_OFFER))
            .default_service(web::to(lan_request))
    })
    .on_connect(|conn, ext| {
        if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>()
            && let Ok(a) = tcp.local_addr()
        {
            ext.insert(LocalAddr(a));
        }
    })
    .workers(2)
    .disable_signals()
    .client_request_timeout(Duration::from_secs(10))
    .shutdown_timeout(STOP_GRACE.as_secs())
    .listen(lan)?
    .run();
    let announce_task = node.mdns().cloned().map(|m| {
        let pools = ctx.pools.clone().expect("the daemon runs pools");
        tokio::spawn(kith_hosting::gateway::announce(
            pools,
            edges.clone(),
            m,
            http_addr.port(),
            pools_stop.clone(),
        ))
    });
    let metrics_server = match metrics_listener {
        Some(l) => Some(crate::metrics::serve(ctx.clone(), l, STOP_GRACE)?),
        None => None,
    };
    let (control_handle, lan_handle) = (control_server.handle(), lan_server.handle());
    let metrics_handle = metrics_server.as_ref().map(|s| s.handle());
    tokio::spawn(control_server);
    tokio::spawn(lan_server);
    if let Some(s) = metrics_server {
        tokio::spawn(s);
    }
    tracing::info!(
        node = %node.id(),
        addrs = ?node.addrs(),
        http = %http_addr,
        control = %sock_path.display(),
        metrics = ?metrics_addr,
        "kith is up"
    );

    let mut tasks = vec![pools_task, repair_task, stun_task, backups_task, follow_task];
    tasks.extend(announce_task);
    tasks.extend(relay_task);
    Ok(Running {
        node,
        http: http_addr,
        ctx,
        pools_stop,
        tasks,
        control: control_handle,
        lan: lan_handle,
        metrics: metrics_handle,
        sock_path,
        token_path,
    })
}

pub(crate) fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

pub(crate) fn new_token() -> String {
    let mut b = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .expect("the system random source works");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("can watch SIGTERM");
    let mut int = signal(SignalKind::interrupt()).expect("can watch SIGINT");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

async fn run_request(
    req: HttpRequest,
    body: web::Bytes,
    control: web::Data<Control>,
) -> HttpResponse {
    let given = req.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    let expected = format!("Bearer {}", control.token);
    if !same(given.as_bytes(), expected.as_bytes()) {
        return HttpResponse::Unauthorized().body("wrong or missing control token\n");
    }
    let theirs = req
        .headers()
        .get(API_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(0);
    if theirs > crate::api::API_VERSION {
        return HttpResponse::BadRequest().body(format!(
            "this daemon runs kith {} (API {}), older than the command's (API {theirs}): upgrade kith and restart `kith up`\n",
            env!("CARGO_PKG_VERSION"),
            crate::api::API_VERSION
        ));
    }
    let request: Request = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) if e.to_string().contains("unknown variant") => {
            return HttpResponse::BadRequest().body(format!(
                "this daemon runs kith {} and does not know that command ({e}): upgrade kith and restart `kith up`\n",
                env!("CARGO_PKG_VERSION")
            ));
        }
        Err(e) => return HttpResponse::BadRequest().body(format!("malformed request: {e}\n")),
    };
    let (tx, rx) = mpsc::channel::<Frame>(FRAME_QUEUE);
    control.rt.spawn(ops::run(control.ctx.clone(), request, Out::new(tx)));
    let stream = n0_future::stream::unfold(rx, |mut rx| async move {
        let f = rx.recv().await?;
        Some((Ok::<_, std::io::Error>(web::Bytes::from(f.encode())), rx))
    });
    HttpResponse::Ok().content_type("application/octet-stream").streaming(stream)
}

/// Compares in time that does not depend on where the inputs differ.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Most bytes of request headers the LAN listener accepts.
const MAX_HEADER_BYTES: usize = 16 << 10;

struct LanPage {
    node: String,
}

/// A folder dropped on the dashboard (the only LAN request with a body of megabytes): the
/// token and origin are checked before a byte of the body is read, one upload at a time.
async fn dashboard_publish(
    req: HttpRequest,
    payload: web::Payload,
    dashboard: web::Data<crate::dashboard::Dashboard>,
) -> HttpResponse {
    dashboard.publish(&req, payload, req.peer_addr()).await
}

/// Every LAN request: a site's (by `Host: NAME.local` or `/s/NAME/`), else the node's page.
/// The address a LAN connection reached this node at.
#[derive(Clone, Copy)]
struct LocalAddr(std::net::SocketAddr);

async fn lan_request(
    req: HttpRequest,
    body: web::Bytes,
    page: web::Data<LanPage>,
    gateway: web::Data<kith_hosting::gateway::Gateway>,
    browsers: web::Data<kith_hosting::browser::Browsers>,
    dashboard: web::Data<crate::dashboard::Dashboard>,
) -> HttpResponse {
    // As nginx's large_client_header_buffers: headers beyond 16 KiB in all are refused (the
    // HTTP parser itself stops reading at 128 KiB).
    let header_bytes: usize =
        req.headers().iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    if header_bytes > MAX_HEADER_BYTES {
        return HttpResponse::build(actix_web::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
            .content_type("text/plain; charset=utf-8")
            .body("the request's headers are too large\n");
    }
    if let Some(r) = dashboard.handle(&req, &body, req.peer_addr()).await {
        return r;
    }
    if let Some(r) = gateway.clone().into_inner().handle(&req).await {
        return r;
    }
    use actix_web::http::Method;
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    match (req.path(), get) {
        ("/", true) => lan_index(page).await,
        ("/kith/", true) => HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .insert_header(("Cache-Control", "no-cache"))
            .body(kith_hosting::browser::PAGE),
        ("/kith", true) => {
            HttpResponse::MovedPermanently().insert_header(("Location", "/kith/")).finish()
        }
        ("/kith/rtc", false) if req.method() == Method::POST => {
            let local = req.conn_data::<LocalAddr>().map(|a| a.0.ip());
            let Some(local) = local else {
                return HttpResponse::InternalServerError().body("no local address\n");
            };
            use kith_hosting::browser::OfferError;
            match browsers.into_inner().answer(&body, local).await {
                Ok(answer) => HttpResponse::Ok().content_type("application/json").body(answer),
                Err(OfferError::Bad(e)) => HttpResponse::BadRequest().body(format!("{e}\n")),
                Err(OfferError::Busy) => HttpResponse::ServiceUnavailable()
                    .body("too many browser sessions at once; try again shortly\n"),
                Err(OfferError::Failed(e)) => {
                    HttpResponse::InternalServerError().body(format!("{e}\n"))
                }
            }
        }
        ("/kith/report", false) if req.method() == Method::POST => {
            match serde_json::from_slice::<serde_json::Value>(&body) {
                Ok(v) if body.len() <= 4096 => {
                    browsers.report(v);
                    HttpResponse::NoContent().finish()
                }
                _ => {
                    HttpResponse::BadRequest().body("a report is a JSON object of at most 4 KiB\n")
                }
            }
        }
        _ => not_found().await,
    }
}

async fn lan_index(page: web::Data<LanPage>) -> HttpResponse {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>kith node</title></head>\
         <body><h1>kith</h1><p>This is kith node <code>{}</code>.</p></body></html>\n",
        page.node
    );
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(html)
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().content_type("text/plain").body("not found\n")
}
