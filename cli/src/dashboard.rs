//! The dashboard: a page the node serves on its LAN listener at `/kith/dashboard`, and the API
//! behind it under `/kith/api/v1/`, which answers only a request that carries the dashboard
//! token (`HOME/dashboard.token`, 0600; `kith dashboard` prints a URL with it), or the control
//! token from the node's own loopback.
//!
//! The token travels in the URL's fragment (which browsers never send) and then in an
//! `Authorization` header, never in a cookie: another page cannot make a browser send it, and
//! a cross-origin request that tried to set the header would need a CORS preflight the node
//! never grants. A request whose `Origin` is not the node itself is refused outright.
//!
//! Every action is a typed [`Request`], run by the same code as the CLI's, so the same rules
//! refuse the same things with the same messages; only requests that act on the node's own
//! state are taken (none that reads or writes a path on its disk).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix_web::http::{Method, StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use anyhow::{Context, Result};
use tokio::sync::mpsc;

use crate::api::{LedgerReq, PoolReq, Request, SiteReq};
use crate::daemon::same;
use crate::ops::{self, Ctx};
use crate::wire::{Frame, Out};

/// The dashboard token's file in the home.
pub const TOKEN_FILE: &str = "dashboard.token";
/// The page.
pub const PATH: &str = "/kith/dashboard";
/// Largest request body.
pub const MAX_BODY: usize = 64 << 10;
/// Live-update streams open at once (each costs a status every [`EVENTS_EVERY`]).
pub const MAX_STREAMS: usize = 8;
/// How often a live-update stream sends the node's state.
pub const EVENTS_EVERY: Duration = Duration::from_secs(2);
/// How long one request may run before the dashboard gives up on it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

const PAGE: &str = include_str!("dashboard.html");
const SCRIPT: &str = include_str!("dashboard.js");

/// The dashboard of one node.
pub struct Dashboard {
    control: String,
    ctx: Arc<Ctx>,
    streams: Arc<AtomicUsize>,
    publishing: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard").finish_non_exhaustive()
    }
}

/// Reads the dashboard token, making one (0600) the first time.
pub fn token(home: &Path) -> Result<String> {
    let path = home.join(TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) if t.trim().len() == 64 => return Ok(t.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    new_token(home)
}

/// Replaces the dashboard token: every URL given before stops working.
pub fn new_token(home: &Path) -> Result<String> {
    let t = crate::daemon::new_token();
    crate::daemon::write_private(&home.join(TOKEN_FILE), t.as_bytes())?;
    Ok(t)
}

impl Dashboard {
    /// The dashboard of the daemon of `ctx`, whose control token is `control`.
    pub fn new(ctx: Arc<Ctx>, control: String) -> Result<Arc<Dashboard>> {
        token(ctx.home.root())?;
        Ok(Arc::new(Dashboard {
            control,
            ctx,
            streams: Arc::new(AtomicUsize::new(0)),
            publishing: Arc::new(tokio::sync::Semaphore::new(1)),
        }))
    }

    /// Answers a dashboard request, or `None` when the request is not for the dashboard.
    pub async fn handle(
        &self,
        req: &HttpRequest,
        body: &web::Bytes,
        peer: Option<SocketAddr>,
    ) -> Option<HttpResponse> {
        let path = req.path();
        if path == PATH || path == "/kith/dashboard/" {
            return Some(page(req, "text/html; charset=utf-8", PAGE));
        }
        if path == "/kith/dashboard.js" {
            return Some(page(req, "text/javascript; charset=utf-8", SCRIPT));
        }
        let api = path.strip_prefix("/kith/api/v1/")?;
        if let Some(refused) = self.refusal(req, peer) {
            return Some(refused);
        }
        Some(match (api, req.method()) {
            ("run", &Method::POST) => self.run(req, body).await,
            ("events", &Method::GET) => self.events(),
            ("qr", &Method::POST) => qr(body),
            ("statement.csv", &Method::GET) => self.statement(req).await,
            _ => plain(StatusCode::NOT_FOUND, "no such dashboard API"),
        })
    }

    /// Why the request is refused, if it is: it must carry the token (or the control token
    /// from this machine), and come from the node's own page if from a page at all.
    fn refusal(&self, req: &HttpRequest, peer: Option<SocketAddr>) -> Option<HttpResponse> {
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok());
            let same = origin
                .to_str()
                .ok()
                .and_then(|o| o.strip_prefix("http://"))
                .is_some_and(|o| Some(o) == host);
            if !same {
                return Some(plain(
                    StatusCode::FORBIDDEN,
                    "the dashboard answers only its own page (cross-origin request refused)",
                ));
            }
        }
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let local = peer.is_some_and(|p| p.ip().is_loopback());
        // Read at every request, so that `kith dashboard --new-token` takes effect at once.
        let token = std::fs::read_to_string(self.ctx.home.root().join(TOKEN_FILE))
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| t.len() == 64);
        if token.is_some_and(|t| same(given.as_bytes(), t.as_bytes()))
            || (local && same(given.as_bytes(), self.control.as_bytes()))
        {
            return None;
        }
        Some(
            HttpResponse::Unauthorized()
                .insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"kith dashboard\""))
                .content_type("text/plain; charset=utf-8")
                .body(if given.is_empty() {
                    "the dashboard needs its token: open the URL `kith dashboard` prints\n"
                } else {
                    "wrong or outdated dashboard token: open the URL `kith dashboard` prints\n"
                }),
        )
    }

    async fn run(&self, req: &HttpRequest, body: &web::Bytes) -> HttpResponse {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !json {
            return plain(StatusCode::UNSUPPORTED_MEDIA_TYPE, "a request is JSON");
        }
        if body.len() > MAX_BODY {
            return plain(StatusCode::PAYLOAD_TOO_LARGE, "the request is too large");
        }
        let request: Request = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => return plain(StatusCode::BAD_REQUEST, &format!("malformed request: {e}")),
        };
        if !allowed(&request) {
            return plain(
                StatusCode::FORBIDDEN,
                "the dashboard does not take that request (use the command line on the node)",
            );
        }
        match run(self.ctx.clone(), request).await {
            Ok(v) => HttpResponse::Ok().json(serde_json::json!({ "result": v })),
            Err(e) => HttpResponse::UnprocessableEntity().json(serde_json::json!({ "error": e })),
        }
    }

    /// `POST publish?pool=POOL&name=NAME[&members=1]`: a folder dropped on the page, as a
    /// sequence of files (see [`unpack`]), published as a new version of site NAME by the
    /// same code as `kith site publish`. The folder is written under the home and removed
    /// afterwards.
    pub async fn publish(
        &self,
        req: &HttpRequest,
        mut payload: web::Payload,
        peer: Option<SocketAddr>,
    ) -> HttpResponse {
        if let Some(refused) = self.refusal(req, peer) {
            return refused;
        }
        let Ok(_one) = self.publishing.clone().try_acquire_owned() else {
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "another folder is being published; try again when it is done",
            );
        };
        // The body, bounded in size and in time.
        let read = async {
            use n0_future::StreamExt;
            let mut body = web::BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|e| plain(StatusCode::BAD_REQUEST, &e.to_string()))?;
                if body.len() + chunk.len() > MAX_PUBLISH {
                    return Err(plain(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        &format!(
                            "a folder published from the dashboard is at most {} MiB; use `kith site publish` on the node",
                            MAX_PUBLISH >> 20
                        ),
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(body.freeze())
        };
        let body = match tokio::time::timeout(REQUEST_TIMEOUT, read).await {
            Ok(Ok(b)) => b,
            Ok(Err(r)) => return r,
            Err(_) => return plain(StatusCode::REQUEST_TIMEOUT, "the upload took too long"),
        };
        let q =
            web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
                .map(|q| q.into_inner())
                .unwrap_or_default();
        let Some(name) = q.get("name").filter(|n| !n.is_empty()).cloned() else {
            return plain(StatusCode::BAD_REQUEST, "publishing needs the site's name (?name=)");
        };
        let pool = q.get("pool").filter(|p| !p.is_empty()).cloned();
        let members = q.get("members").is_some_and(|m| m == "1" || m == "true");
        let dir = self
            .ctx
            .home
            .root()
            .join("tmp")
            .join(format!("dashboard-publish-{}", &crate::daemon::new_token()[..16]));
        // Unpacked, published and removed by one task, which finishes (and cleans up) even if
        // this request is dropped.
        let ctx = self.ctx.clone();
        let task = tokio::spawn(async move {
            let unpacked = {
                let (dir, body) = (dir.clone(), body.clone());
                tokio::task::spawn_blocking(move || unpack(&body, &dir)).await
            };
            let result = match unpacked {
                Ok(Ok(_)) => {
                    let req =
                        Request::Site(SiteReq::Publish { dir: dir.clone(), name, pool, members });
                    let (tx, mut rx) = mpsc::channel::<Frame>(16);
                    tokio::spawn(ops::run(ctx, req, Out::new(tx)));
                    let mut last = Err("the request ended without an answer".to_string());
                    while let Some(f) = rx.recv().await {
                        match f {
                            Frame::Result(v) => last = Ok(v),
                            Frame::Error(e) => last = Err(e),
                            _ => {}
                        }
                    }
                    last
                }
                Ok(Err(e)) => Err(e),
                Err(e) => Err(e.to_string()),
            };
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&dir)).await;
            result
        });
        let result = task.await.unwrap_or_else(|e| Err(e.to_string()));
        match result {
            Ok(v) => HttpResponse::Ok().json(serde_json::json!({ "result": v })),
            Err(e) => HttpResponse::UnprocessableEntity().json(serde_json::json!({ "error": e })),
        }
    }

    /// `statement.csv?pool=NAME&period=YYYY-MM`: the ledger statement as the CLI writes it.
    async fn statement(&self, req: &HttpRequest) -> HttpResponse {
        let q =
            web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
                .map(|q| q.into_inner())
                .unwrap_or_default();
        let pool = q.get("pool").filter(|p| !p.is_empty()).cloned();
        let period = q.get("period").filter(|p| !p.is_empty()).cloned();
        let file = format!(
            "kith-statement-{}-{}.csv",
            pool.as_deref().unwrap_or("all"),
            period.as_deref().unwrap_or("this-month")
        )
        .replace(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '.'), "_");
        let v = match run(self.ctx.clone(), Request::Ledger(LedgerReq::Statement { pool, period }))
            .await
            .and_then(|v| {
                serde_json::from_value::<crate::api::ledger::Statements>(v)
                    .map_err(|e| e.to_string())
            }) {
            Ok(v) => v,
            Err(e) => return plain(StatusCode::UNPROCESSABLE_ENTITY, &e),
        };
        HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header((
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}\""),
            ))
            .body(v.to_csv())
    }

    /// Server-sent events: the node's status, peers and pools every [`EVENTS_EVERY`].
    fn events(&self) -> HttpResponse {
        let n = self.streams.fetch_add(1, Ordering::AcqRel);
        if n >= MAX_STREAMS {
            self.streams.fetch_sub(1, Ordering::AcqRel);
            return plain(StatusCode::SERVICE_UNAVAILABLE, "too many dashboards open at once");
        }
        let guard = StreamGuard(self.streams.clone());
        let ctx = self.ctx.clone();
        let stream =
            n0_future::stream::unfold((ctx, guard, true), |(ctx, guard, first)| async move {
                if !first {
                    tokio::time::sleep(EVENTS_EVERY).await;
                }
                let state = snapshot(&ctx).await;
                let event = format!("event: state\ndata: {state}\n\n");
                Some((Ok::<_, std::io::Error>(web::Bytes::from(event)), (ctx, guard, false)))
            });
        HttpResponse::Ok()
            .content_type("text/event-stream")
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .streaming(stream)
    }
}

/// `qr`: the QR code (SVG) of the JSON body's `text` (a ticket, a pairing address), drawn by
/// the node so the page needs no script of anyone else's.
fn qr(body: &web::Bytes) -> HttpResponse {
    #[derive(serde::Deserialize)]
    struct Text {
        text: String,
    }
    if body.len() > MAX_BODY {
        return plain(StatusCode::PAYLOAD_TOO_LARGE, "the request is too large");
    }
    let t: Text = match serde_json::from_slice(body) {
        Ok(t) => t,
        Err(e) => return plain(StatusCode::BAD_REQUEST, &format!("malformed request: {e}")),
    };
    match crate::qr::svg(&t.text) {
        Ok(svg) => HttpResponse::Ok()
            .content_type("image/svg+xml")
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .body(svg),
        Err(e) => plain(StatusCode::BAD_REQUEST, &e),
    }
}

/// Largest folder the dashboard publishes (bytes of the upload); larger sites go through
/// `kith site publish` on the node.
pub const MAX_PUBLISH: usize = 64 << 20;
/// Most files in a folder published from the dashboard.
pub const MAX_PUBLISH_FILES: usize = 10_000;

/// Writes an uploaded folder into `dir` (made here; it must not exist): a sequence of files,
/// each a little-endian u32 path length, the path (UTF-8, `/`-separated, relative, no `.`,
/// `..` or empty parts), a little-endian u64 length and the bytes. Returns the file count.
pub fn unpack(mut body: &[u8], dir: &Path) -> Result<usize, String> {
    fn take<'a>(b: &mut &'a [u8], n: usize, what: &str) -> Result<&'a [u8], String> {
        if b.len() < n {
            return Err(format!("the upload is cut short in {what}"));
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Ok(head)
    }
    if body.len() > MAX_PUBLISH {
        return Err(format!(
            "a folder published from the dashboard is at most {} MiB; use `kith site publish` on the node",
            MAX_PUBLISH >> 20
        ));
    }
    std::fs::create_dir_all(dir.parent().unwrap_or(dir)).map_err(|e| e.to_string())?;
    std::fs::create_dir(dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
    let mut files = 0;
    let mut seen = std::collections::HashSet::new();
    while !body.is_empty() {
        files += 1;
        if files > MAX_PUBLISH_FILES {
            return Err(format!(
                "a folder published from the dashboard has at most {MAX_PUBLISH_FILES} files"
            ));
        }
        let n = u32::from_le_bytes(take(&mut body, 4, "a path's length")?.try_into().expect("4"))
            as usize;
        if n == 0 || n > 4096 {
            return Err(format!("a path of {n} bytes (1 to 4096)"));
        }
        let path = std::str::from_utf8(take(&mut body, n, "a path")?)
            .map_err(|_| "a path that is not UTF-8".to_string())?;
        let parts: Vec<&str> = path.split('/').collect();
        if parts.iter().any(|p| p.is_empty() || *p == "." || *p == ".." || p.contains(['\\', '\0']))
        {
            return Err(format!(
                "the path `{}` is not a plain relative path",
                path.escape_default()
            ));
        }
        if !seen.insert(path.to_string()) {
            return Err(format!("the path `{path}` comes twice"));
        }
        let len = u64::from_le_bytes(take(&mut body, 8, "a file's length")?.try_into().expect("8"));
        let data = take(&mut body, usize::try_from(len).unwrap_or(usize::MAX), "a file")?;
        let target = parts.iter().fold(dir.to_path_buf(), |p, part| p.join(part));
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("cannot write `{path}`: {e}"))?;
        }
        std::fs::write(&target, data).map_err(|e| format!("cannot write `{path}`: {e}"))?;
    }
    if files == 0 {
        return Err("the folder is empty".into());
    }
    Ok(files)
}

/// Counts a live-update stream until it ends (the browser went away).
struct StreamGuard(Arc<AtomicUsize>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a live update carries: the answers of `status`, `peers` and `pool ls`.
async fn snapshot(ctx: &Arc<Ctx>) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for (name, req) in [
        ("status", Request::Status),
        ("peers", Request::Peers),
        ("pools", Request::Pool(PoolReq::Ls)),
    ] {
        let v = match run(ctx.clone(), req).await {
            Ok(v) => v,
            Err(e) => serde_json::json!({ "error": e }),
        };
        out.insert(name.to_string(), v);
    }
    serde_json::Value::Object(out)
}

/// Runs a typed request as the control socket does, and returns its result or its error.
async fn run(ctx: Arc<Ctx>, req: Request) -> Result<serde_json::Value, String> {
    let (tx, mut rx) = mpsc::channel::<Frame>(16);
    tokio::spawn(ops::run(ctx, req, Out::new(tx)));
    let wait = async {
        while let Some(f) = rx.recv().await {
            match f {
                Frame::Result(v) => return Ok(v),
                Frame::Error(e) => return Err(e),
                _ => {}
            }
        }
        Err("the request ended without an answer".to_string())
    };
    tokio::time::timeout(REQUEST_TIMEOUT, wait)
        .await
        .unwrap_or_else(|_| Err("the request took too long".into()))
}

/// The requests the dashboard takes: those about the node's own state and its pools, ledgers
/// and sites; none that names a path on the node's disk (put, get, export, import, publish
/// from a folder) or that only the command line should do.
pub fn allowed(req: &Request) -> bool {
    match req {
        Request::Status
        | Request::Peers
        | Request::Ls
        | Request::Ticket
        | Request::Doctor
        | Request::PeerAdd { .. }
        | Request::PeerRm { .. }
        | Request::PeerLink { .. }
        | Request::Pair => true,
        Request::Pool(p) => !matches!(p, PoolReq::Identity),
        Request::Ledger(l) => matches!(
            l,
            LedgerReq::Show { .. }
                | LedgerReq::Verify { .. }
                | LedgerReq::Statement { .. }
                | LedgerReq::Cost { .. }
                | LedgerReq::Seal { .. }
        ),
        Request::Site(s) => !matches!(s, SiteReq::Publish { .. }),
        _ => false,
    }
}

fn page(req: &HttpRequest, kind: &str, body: &'static str) -> HttpResponse {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "only GET");
    }
    HttpResponse::Ok()
        .content_type(kind)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        // The page runs its own script only, talks to its own node only, and is framed by no
        // one (its token is in its address).
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; \
             form-action 'none'",
        ))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(body)
}

fn plain(status: StatusCode, msg: &str) -> HttpResponse {
    HttpResponse::build(status).content_type("text/plain; charset=utf-8").body(format!("{msg}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dashboard_takes_no_request_that_names_a_path_on_the_node() {
        use std::path::PathBuf;
        let p = PathBuf::from("/etc");
        for r in [
            Request::Put { path: p.clone(), pool: None },
            Request::Export { path: p.clone(), plain: false },
            Request::Import { path: p.clone() },
            Request::Gc,
            Request::Verify,
            Request::Pool(PoolReq::Identity),
        ] {
            assert!(!allowed(&r), "{r:?}");
        }
        for r in [Request::Status, Request::Peers, Request::Pool(PoolReq::Ls), Request::Doctor] {
            assert!(allowed(&r), "{r:?}");
        }
    }

    fn file(path: &str, data: &[u8]) -> Vec<u8> {
        let mut v = (path.len() as u32).to_le_bytes().to_vec();
        v.extend_from_slice(path.as_bytes());
        v.extend_from_slice(&(data.len() as u64).to_le_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn an_uploaded_folder_unpacks_and_a_bad_one_is_refused_with_why() {
        let dir = tempfile::tempdir().unwrap();
        let mut body = file("index.html", b"<h1>hi</h1>");
        body.extend(file("img/a.png", &[1, 2, 3]));
        let to = dir.path().join("a");
        assert_eq!(unpack(&body, &to).unwrap(), 2);
        assert_eq!(std::fs::read(to.join("img/a.png")).unwrap(), [1, 2, 3]);
        for (i, (bad, why)) in [
            (file("../x", b"1"), "not a plain relative path"),
            (file("/etc/x", b"1"), "not a plain relative path"),
            (file("a//b", b"1"), "not a plain relative path"),
            ([file("a", b"1"), file("a", b"2")].concat(), "comes twice"),
            (file("a", b"12345")[..16].to_vec(), "cut short"),
            (Vec::new(), "empty"),
        ]
        .into_iter()
        .enumerate()
        {
            let to = dir.path().join(format!("b{i}"));
            let e = unpack(&bad, &to).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
        assert!(!dir.path().join("x").exists() && !std::path::Path::new("/etc/x").exists());
    }

    #[test]
    fn a_token_is_kept_private_and_replaced_on_demand() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let t = token(dir.path()).unwrap();
        assert_eq!(t.len(), 64);
        assert_eq!(token(dir.path()).unwrap(), t, "kept across restarts");
        let mode = std::fs::metadata(dir.path().join(TOKEN_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let t2 = new_token(dir.path()).unwrap();
        assert_ne!(t2, t);
        assert_eq!(token(dir.path()).unwrap(), t2);
    }
}
