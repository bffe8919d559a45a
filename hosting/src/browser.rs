//! Browsers as light peers: the node's LAN listener serves a page (`/kith/`) that opens a WebRTC
//! data channel to the node, signalled over HTTP (`POST /kith/rtc` with the browser's offer;
//! the answer comes back, non-trickle). Over the channel the browser lists the public sites of
//! the node's pools, downloads their files (checked against a SHA-256 the node computes from
//! content it verified), and with a pairing code from `kith pair` uploads a file into the
//! node's store.
//!
//! Channel protocol: JSON text requests, one at a time; file bytes travel as binary messages of
//! at most 64 KiB (the node's SCTP `max-message-size`).
//!
//! ```text
//! → {"op":"list"}                         ← {"op":"list","sites":[{name, files:[{path,len,type}]}]}
//! → {"op":"get","site":S,"path":P}        ← {"op":"file","len":N,"type":T}, N bytes, {"op":"done","sha256":H}
//! → {"op":"upload","code":C,"name":F,"len":N}  ← {"op":"ready"}; → N bytes; → {"op":"end","sha256":H}
//!                                          ← {"op":"stored","id":OBJECT}
//! any error                                ← {"op":"error","error":TEXT}
//! ```

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use kith_node::net::rtc::{
    Events, OPEN_TIMEOUT, is_gone, next_message, peer_connection, wait_open,
};
use serde_json::{Value, json};
use webrtc::data_channel::DataChannel;
use webrtc::peer_connection::{PeerConnection, RTCSdpType, RTCSessionDescription};

use crate::gateway::Gateway;

/// The page.
pub const PAGE: &str = include_str!("browser.html");
/// Largest offer accepted (an SDP with host candidates is a few KiB).
pub const MAX_OFFER: usize = 64 << 10;
/// Browser sessions at once.
pub const MAX_SESSIONS: usize = 16;
/// Largest message on the channel.
pub const MAX_MESSAGE: usize = kith_node::net::rtc::MAX_MESSAGE;
/// Largest upload.
pub const MAX_UPLOAD: u64 = 4 << 30;
/// A session with no request for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Pairing codes: how long one lasts, and how many wrong tries end it.
const PAIR_LIFETIME: Duration = Duration::from_secs(600);
const PAIR_TRIES: u32 = 5;
/// Reports kept for `kith status`.
const MAX_REPORTS: usize = 16;

struct Pairing {
    code: String,
    until: Instant,
    tries: u32,
}

/// Browser sessions of one node.
pub struct Browsers {
    gateway: Arc<Gateway>,
    store: Arc<kith_node::Store>,
    uploads: PathBuf,
    sessions: Mutex<HashMap<u64, Arc<dyn PeerConnection>>>,
    next: std::sync::atomic::AtomicU64,
    pairing: Mutex<Option<Pairing>>,
    reports: Mutex<VecDeque<Value>>,
}

impl std::fmt::Debug for Browsers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browsers").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why an offer was refused.
#[derive(Debug)]
pub enum OfferError {
    /// Bad input (400).
    Bad(String),
    /// Too many sessions (503).
    Busy,
    /// The node could not answer (500).
    Failed(String),
}

impl Browsers {
    /// Browser sessions over `gateway`'s sites, uploading into `store` (through `uploads`, a
    /// folder in the home).
    pub fn new(
        gateway: Arc<Gateway>,
        store: Arc<kith_node::Store>,
        uploads: PathBuf,
    ) -> Arc<Browsers> {
        Arc::new(Browsers {
            gateway,
            store,
            uploads,
            sessions: Mutex::new(HashMap::new()),
            next: std::sync::atomic::AtomicU64::new(1),
            pairing: Mutex::new(None),
            reports: Mutex::new(VecDeque::new()),
        })
    }

    /// A new pairing code (replacing any earlier one), valid for ten minutes and one upload.
    pub fn pair(&self) -> (String, u64) {
        let mut b = [0u8; 5];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
            .expect("the system random source works");
        let code = data_encoding::BASE32_NOPAD.encode(&b).to_ascii_lowercase();
        *lock(&self.pairing) =
            Some(Pairing { code: code.clone(), until: Instant::now() + PAIR_LIFETIME, tries: 0 });
        (code, PAIR_LIFETIME.as_secs())
    }

    fn check_code(&self, code: &str) -> Result<(), String> {
        let mut p = lock(&self.pairing);
        let Some(cur) = p.as_mut() else {
            return Err("no pairing code is open on this node (run `kith pair` there)".into());
        };
        if Instant::now() > cur.until {
            *p = None;
            return Err("the pairing code has expired (run `kith pair` again)".into());
        }
        let ok = cur.code.len() == code.len()
            && cur
                .code
                .bytes()
                .zip(code.to_ascii_lowercase().bytes())
                .fold(0, |a, (x, y)| a | (x ^ y))
                == 0;
        if ok {
            *p = None;
            return Ok(());
        }
        cur.tries += 1;
        if cur.tries >= PAIR_TRIES {
            *p = None;
            return Err(
                "wrong pairing code; too many tries, the code is void (run `kith pair` again)"
                    .into(),
            );
        }
        Err("wrong pairing code".into())
    }

    /// Keeps a page's report (bounded) for `kith status`.
    pub fn report(&self, v: Value) {
        tracing::info!(report = %v, "browser report");
        let mut r = lock(&self.reports);
        if r.len() == MAX_REPORTS {
            r.pop_front();
        }
        r.push_back(v);
    }

    /// Reports so far, oldest first.
    pub fn reports(&self) -> Vec<Value> {
        lock(&self.reports).iter().cloned().collect()
    }

    /// Open sessions.
    pub fn sessions(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// Answers a browser's offer; `local` is the address the browser reached this node at (the
    /// channel uses that interface).
    pub async fn answer(
        self: &Arc<Self>,
        offer: &[u8],
        local: std::net::IpAddr,
    ) -> Result<String, OfferError> {
        if offer.len() > MAX_OFFER {
            return Err(OfferError::Bad(format!("the offer is over {MAX_OFFER} bytes")));
        }
        let offer: RTCSessionDescription = serde_json::from_slice(offer)
            .map_err(|e| OfferError::Bad(format!("the offer is not a session description: {e}")))?;
        if offer.sdp_type != RTCSdpType::Offer {
            return Err(OfferError::Bad("expected an offer".into()));
        }
        if self.sessions() >= MAX_SESSIONS {
            return Err(OfferError::Busy);
        }
        // No mDNS (see `peer_connection`): browsers' `.local` candidates are then ignored,
        // and their checks still reach us.
        let (pc, events) = peer_connection(std::net::SocketAddr::new(local, 0), Vec::new())
            .await
            .map_err(|e| OfferError::Failed(e.to_string()))?;
        let Events { gathered: mut grx, channels: mut crx, state: srx } = events;
        if let Err(e) = pc.set_remote_description(offer).await {
            let _ = pc.close().await;
            return Err(OfferError::Bad(format!("the offer's SDP was refused: {e}")));
        }
        let answer = async {
            let a = pc.create_answer(None).await?;
            pc.set_local_description(a).await?;
            Ok::<_, webrtc::error::Error>(())
        };
        if let Err(e) = answer.await {
            let _ = pc.close().await;
            return Err(OfferError::Failed(e.to_string()));
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), grx.recv()).await;
        let Some(local_desc) = pc.local_description().await else {
            let _ = pc.close().await;
            return Err(OfferError::Failed("no answer was made".into()));
        };
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        lock(&self.sessions).insert(id, pc.clone());
        let this = self.clone();
        tokio::spawn(async move {
            let mut srx = srx;
            let opened = tokio::time::timeout(OPEN_TIMEOUT, crx.recv()).await;
            match opened {
                Ok(Some(dc)) => {
                    let serve = this.serve(dc);
                    let closed = async {
                        loop {
                            if srx.changed().await.is_err() {
                                break;
                            }
                            if is_gone(*srx.borrow()) {
                                break;
                            }
                        }
                    };
                    tokio::select! {
                        _ = serve => {}
                        _ = closed => tracing::debug!("a browser went away"),
                    }
                }
                _ => tracing::info!("a browser's offer never opened a channel; dropped"),
            }
            let _ = pc.close().await;
            lock(&this.sessions).remove(&id);
        });
        serde_json::to_string(&local_desc).map_err(|e| OfferError::Failed(e.to_string()))
    }

    /// Serves one data channel until it closes or idles.
    async fn serve(self: &Arc<Self>, dc: Arc<dyn DataChannel>) {
        let mut upload: Option<Upload> = None;
        while let Some(msg) = next_message(&dc, IDLE_TIMEOUT).await {
            if msg.data.len() > MAX_MESSAGE {
                let _ = send_err(&dc, "a message may be at most 64 KiB").await;
                break;
            }
            if !msg.is_string {
                match upload.as_mut() {
                    Some(u) => {
                        if let Err(e) = u.write(&msg.data) {
                            upload = None;
                            let _ = send_err(&dc, &e).await;
                        }
                    }
                    None => {
                        let _ = send_err(&dc, "bytes arrived with no upload open").await;
                    }
                }
                continue;
            }
            let req: Value = match serde_json::from_slice(&msg.data) {
                Ok(v) => v,
                Err(e) => {
                    let _ = send_err(&dc, &format!("not a JSON request: {e}")).await;
                    continue;
                }
            };
            let result = match req["op"].as_str().unwrap_or("") {
                "list" => self.list(&dc).await,
                "get" => {
                    let (site, path) =
                        (req["site"].as_str().unwrap_or(""), req["path"].as_str().unwrap_or(""));
                    // Sent on its own task: this loop must keep polling the channel's events.
                    let (this, dc2) = (self.clone(), dc.clone());
                    let (site, path) = (site.to_string(), path.to_string());
                    tokio::spawn(async move {
                        if let Err(e) = this.send_file(&dc2, &site, &path).await {
                            let _ = send_err(&dc2, &e).await;
                        }
                    });
                    Ok(())
                }
                "upload" => match self.start_upload(&req) {
                    Ok(u) => {
                        upload = Some(u);
                        send_json(&dc, &json!({ "op": "ready" })).await
                    }
                    Err(e) => Err(e),
                },
                "end" => match upload.take() {
                    Some(u) => {
                        match self.finish_upload(u, req["sha256"].as_str().unwrap_or("")).await {
                            Ok(id) => send_json(&dc, &json!({ "op": "stored", "id": id })).await,
                            Err(e) => Err(e),
                        }
                    }
                    None => Err("no upload is open".into()),
                },
                other => {
                    Err(format!("unknown request `{}`", other.chars().take(32).collect::<String>()))
                }
            };
            if let Err(e) = result {
                let _ = send_err(&dc, &e).await;
            }
        }
        if let Some(u) = upload {
            u.discard();
        }
    }

    async fn list(&self, dc: &Arc<dyn DataChannel>) -> Result<(), String> {
        let sites = self.gateway.public_sites().await;
        send_json(dc, &json!({ "op": "list", "sites": sites })).await
    }

    async fn send_file(
        &self,
        dc: &Arc<dyn DataChannel>,
        site: &str,
        path: &str,
    ) -> Result<(), String> {
        let (entry, view) = self.gateway.public_file(site, path).await?;
        send_json(dc, &json!({ "op": "file", "len": entry.len, "type": entry.content_type }))
            .await?;
        let mut sha = ring::digest::Context::new(&ring::digest::SHA256);
        for c in &entry.chunks {
            let bytes = self.gateway.chunk_in(&view, c).await?;
            sha.update(&bytes);
            for part in bytes.chunks(MAX_MESSAGE) {
                dc.send(BytesMut::from(part)).await.map_err(|e| e.to_string())?;
            }
        }
        let h: String = sha.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect();
        send_json(dc, &json!({ "op": "done", "sha256": h })).await
    }

    fn start_upload(&self, req: &Value) -> Result<Upload, String> {
        self.check_code(req["code"].as_str().unwrap_or(""))?;
        let len = req["len"].as_u64().ok_or("say how many bytes the upload has")?;
        if len > MAX_UPLOAD {
            return Err(format!("an upload may be at most {} GiB", MAX_UPLOAD >> 30));
        }
        let name: String = req["name"]
            .as_str()
            .unwrap_or("upload")
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | ' '))
            .take(100)
            .collect();
        let name = if name.trim_matches('.').is_empty() { "upload".to_string() } else { name };
        std::fs::create_dir_all(&self.uploads).map_err(|e| e.to_string())?;
        let dir = self.uploads.join(format!("{}", kith_node::keys::now_ms()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let path = dir.join(&name);
        let file = std::fs::File::create(&path)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(Upload {
            dir,
            path,
            file,
            len,
            got: 0,
            sha: ring::digest::Context::new(&ring::digest::SHA256),
        })
    }

    async fn finish_upload(&self, u: Upload, sha256: &str) -> Result<String, String> {
        if u.got != u.len {
            let (got, len) = (u.got, u.len);
            u.discard();
            return Err(format!("the upload ended after {got} of {len} bytes"));
        }
        let h: String =
            u.sha.clone().finish().as_ref().iter().map(|b| format!("{b:02x}")).collect();
        if h != sha256 {
            u.discard();
            return Err("the bytes that arrived do not match the browser's SHA-256".into());
        }
        u.file.sync_all().map_err(|e| e.to_string())?;
        let (store, path, dir) = (self.store.clone(), u.path.clone(), u.dir.clone());
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let label = PathBuf::from(format!("browser upload: {name}"));
        let r = tokio::task::spawn_blocking(move || store.put_as(&path, Some(&label), None))
            .await
            .map_err(|e| e.to_string())?;
        let _ = std::fs::remove_dir_all(&dir);
        let r = r.map_err(|e| format!("cannot store the upload: {e}"))?;
        tracing::info!(object = %r.id, bytes = u.len, "stored a browser upload");
        Ok(r.id.to_string())
    }
}

struct Upload {
    dir: PathBuf,
    path: PathBuf,
    file: std::fs::File,
    len: u64,
    got: u64,
    sha: ring::digest::Context,
}

impl Upload {
    fn write(&mut self, b: &[u8]) -> Result<(), String> {
        use std::io::Write;
        if self.got + b.len() as u64 > self.len {
            return Err("more bytes arrived than the upload announced".into());
        }
        self.file.write_all(b).map_err(|e| format!("cannot write the upload: {e}"))?;
        self.sha.update(b);
        self.got += b.len() as u64;
        Ok(())
    }

    fn discard(self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn send_json(dc: &Arc<dyn DataChannel>, v: &Value) -> Result<(), String> {
    dc.send_text(&v.to_string()).await.map_err(|e| e.to_string())
}

async fn send_err(dc: &Arc<dyn DataChannel>, e: &str) -> Result<(), String> {
    send_json(dc, &json!({ "op": "error", "error": e })).await
}

/// Opens a data channel to a node's browser endpoint at `http` (`POST /kith/rtc`), as the page
/// does, binding to `local` (a node reaching another's page, tests, benchmarks). Returns the
/// connection and the open channel.
pub async fn connect_http(
    http: std::net::SocketAddr,
    local: std::net::IpAddr,
) -> Result<(Arc<dyn PeerConnection>, Arc<dyn DataChannel>), ConnectHttpError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (pc, mut events) = peer_connection(std::net::SocketAddr::new(local, 0), Vec::new()).await?;
    let grx = &mut events.gathered;
    let dc = pc.create_data_channel("kith", None).await?;
    let offer = pc.create_offer(None).await?;
    pc.set_local_description(offer).await?;
    let _ = tokio::time::timeout(Duration::from_secs(5), grx.recv()).await;
    let offer = pc.local_description().await.ok_or(ConnectHttpError::NoOffer)?;
    let body =
        serde_json::to_vec(&offer).map_err(|e| ConnectHttpError::Malformed(e.to_string()))?;
    let mut s = tokio::net::TcpStream::connect(http).await?;
    let head = format!(
        "POST /kith/rtc HTTP/1.1\r\nHost: {http}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(&body).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf))
        .await
        .map_err(|_| ConnectHttpError::NoAnswer)??;
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| ConnectHttpError::Malformed("no end of headers".into()))?
        + 4;
    let status = String::from_utf8_lossy(&buf[..end]);
    if !status.starts_with("HTTP/1.1 200") {
        return Err(ConnectHttpError::Refused(
            String::from_utf8_lossy(&buf[end..]).trim().to_string(),
        ));
    }
    let answer: RTCSessionDescription = serde_json::from_slice(&buf[end..])
        .map_err(|e| ConnectHttpError::Malformed(e.to_string()))?;
    pc.set_remote_description(answer).await?;
    wait_open(&dc).await.map_err(ConnectHttpError::NotOpen)?;
    Ok((pc, dc))
}

/// Why [`connect_http`] could not open a channel.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectHttpError {
    /// WebRTC failed (making the offer, applying the answer).
    #[error("WebRTC: {0}")]
    WebRtc(#[from] webrtc::error::Error),
    /// The HTTP exchange failed.
    #[error("cannot reach the node's page: {0}")]
    Io(#[from] std::io::Error),
    /// No offer was made.
    #[error("no offer was made")]
    NoOffer,
    /// The node did not answer in time.
    #[error("the node did not answer the offer")]
    NoAnswer,
    /// The answer is not an HTTP response with a session description.
    #[error("a malformed answer: {0}")]
    Malformed(String),
    /// The node refused the offer (its words).
    #[error("the node refused the offer: {0}")]
    Refused(String),
    /// The channel did not open.
    #[error("the channel did not open: {0}")]
    NotOpen(String),
}
