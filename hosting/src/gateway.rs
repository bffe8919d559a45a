//! The HTTP gateway: every pool node serves every site of its pools, by `Host: NAME.local` and
//! by path `/s/NAME/`. Content this node does not hold is fetched from the pool's nodes
//! (verified by id) and kept; opened chunks stay in a memory cache with a size cap, evicted
//! least recently used first, so hot content is served without reading the store or
//! decrypting again.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use actix_web::http::header;
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};
use bytes::Bytes;
use kith_crdt::{Key, hex};
use kith_node::ChunkId;
use kith_node::net::Node;
use kith_pools::service::Pools;
use kith_pools::{Access, PoolView, SiteVersion};

use crate::access;
use crate::http::{PathError, RangeAsk, accepts_gzip, decode_path, none_match, parse_range};
use crate::site::{ChunkRef, FileEntry, SiteIndex, open_chunk, open_index};

/// Default size of the cache of opened chunks.
pub const DEFAULT_CACHE_BYTES: usize = 256 << 20;
/// Site indexes kept open.
const MAX_INDEXES: usize = 256;

/// Least-recently-used cache of opened chunks, bounded in bytes.
struct Lru {
    map: HashMap<[u8; 32], (Bytes, u64)>,
    order: BTreeMap<u64, [u8; 32]>,
    tick: u64,
    bytes: usize,
    cap: usize,
}

impl Lru {
    fn get(&mut self, id: &[u8; 32]) -> Option<Bytes> {
        let (b, t) = self.map.get_mut(id)?;
        self.order.remove(t);
        self.tick += 1;
        *t = self.tick;
        self.order.insert(self.tick, *id);
        Some(b.clone())
    }

    fn put(&mut self, id: [u8; 32], b: Bytes) {
        if b.len() > self.cap || self.map.contains_key(&id) {
            return;
        }
        self.tick += 1;
        self.bytes += b.len();
        self.map.insert(id, (b, self.tick));
        self.order.insert(self.tick, id);
        while self.bytes > self.cap {
            let Some((_, old)) = self.order.pop_first() else { break };
            if let Some((b, _)) = self.map.remove(&old) {
                self.bytes -= b.len();
            }
        }
    }
}

/// What the gateway did, for `kith status`.
#[derive(Debug, Default)]
pub struct GatewayStats {
    /// Site requests answered.
    pub requests: AtomicU64,
    /// Chunks served from the cache.
    pub hits: AtomicU64,
    /// Chunks read from the store.
    pub reads: AtomicU64,
    /// Chunks fetched from other nodes.
    pub fetched: AtomicU64,
}

/// The gateway of one node.
pub struct Gateway {
    pools: Arc<Pools>,
    node: Arc<Node>,
    cache: Mutex<Lru>,
    indexes: Mutex<HashMap<Key, Arc<SiteIndex>>>,
    stats: GatewayStats,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A site found by name.
struct Found {
    pool: Key,
    view: Arc<PoolView>,
    access: Access,
    version: SiteVersion,
    /// The version's number.
    number: u64,
    /// The site's name.
    name: String,
    /// Whether the request named it by `Host` (else by `/s/NAME/`).
    by_host: bool,
}

/// Seconds a page's later requests keep the version its HTML came from.
const PIN_SECS: u32 = 60;

/// The version a request is pinned to by the cookie a page set (`kithv-NAME=N`).
fn pinned(req: &HttpRequest, name: &str) -> Option<u64> {
    let want = format!("kithv-{name}=");
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(want.as_str()).and_then(|n| n.parse().ok()))
}

fn text(status: StatusCode, body: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/plain; charset=utf-8")
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(format!("{body}\n"))
}

impl Gateway {
    /// A gateway over this node's pools, caching up to `cache_bytes` of opened chunks.
    pub fn new(pools: Arc<Pools>, node: Arc<Node>, cache_bytes: usize) -> Arc<Gateway> {
        Arc::new(Gateway {
            pools,
            node,
            cache: Mutex::new(Lru {
                map: HashMap::new(),
                order: BTreeMap::new(),
                tick: 0,
                bytes: 0,
                cap: cache_bytes,
            }),
            indexes: Mutex::new(HashMap::new()),
            stats: GatewayStats::default(),
        })
    }

    /// Bytes of opened chunks in the cache now.
    pub fn cache_bytes(&self) -> usize {
        lock(&self.cache).bytes
    }

    /// What the gateway did.
    pub fn stats(&self) -> &GatewayStats {
        &self.stats
    }

    /// The site of this name in one of this node's pools (the first pool by id that has one),
    /// at version `pin` if it still has it, else at its current version.
    fn find(&self, name: &str, pin: Option<u64>) -> Option<Found> {
        self.pools.views().iter().find_map(|(pool, view)| {
            let (pool, view) = (*pool, Arc::clone(view));
            let (_, site) = view.site(name)?;
            let (number, version) = pin
                .and_then(|n| site.versions.get(&n).map(|v| (n, v.clone())))
                .or_else(|| site.served().map(|v| (site.current, v.clone())))?;
            let access = site.access;
            Some(Found {
                pool,
                view,
                access,
                version,
                number,
                name: name.to_string(),
                by_host: false,
            })
        })
    }

    /// The site a request is for and the rest of its path: `Host: NAME.local` (any port), or
    /// `/s/NAME/...`.
    fn route(req: &HttpRequest) -> Option<(String, String, String)> {
        let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
        let host = host
            .rsplit_once(':')
            .map_or(host, |(h, p)| if p.bytes().all(|b| b.is_ascii_digit()) { h } else { host });
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let path = req.uri().path();
        if let Some(name) = host.strip_suffix(".local")
            && crate::name::check_name(name).is_ok()
        {
            return Some((name.to_string(), path.trim_start_matches('/').to_string(), "/".into()));
        }
        let rest = path.strip_prefix("/s/")?;
        let (name, rest) = rest.split_once('/').unwrap_or((rest, ""));
        let name = name.to_ascii_lowercase();
        let base = format!("/s/{name}/");
        // `/s/NAME` without its slash: redirected below (rest is empty, base differs).
        let rest =
            if path.len() == base.len() - 1 { "\u{0}".to_string() } else { rest.to_string() };
        Some((name, rest, base))
    }

    /// Answers a site request, or `None` when the request is not for a site (the node's own
    /// pages then answer).
    pub async fn handle(self: &Arc<Self>, req: &HttpRequest) -> Option<HttpResponse> {
        let (name, rest, base) = Self::route(req)?;
        self.stats.requests.fetch_add(1, Relaxed);
        Some(self.serve(req, &name, &rest, &base).await)
    }

    async fn serve(
        self: &Arc<Self>,
        req: &HttpRequest,
        name: &str,
        rest: &str,
        base: &str,
    ) -> HttpResponse {
        if crate::name::check_name(name).is_err() {
            return text(StatusCode::NOT_FOUND, &format!("no site `{}` here", name.escape_debug()));
        }
        let Some(mut found) = self.find(name, pinned(req, name)) else {
            return text(StatusCode::NOT_FOUND, &format!("no site `{name}` in this node's pools"));
        };
        found.by_host = base == "/";
        if rest == "\u{0}" {
            return HttpResponse::MovedPermanently()
                .insert_header((header::LOCATION, base.to_string()))
                .finish();
        }
        let head = req.method() == Method::HEAD;
        if req.method() != Method::GET && !head {
            return HttpResponse::MethodNotAllowed()
                .insert_header((header::ALLOW, "GET, HEAD"))
                .content_type("text/plain; charset=utf-8")
                .body("only GET and HEAD\n");
        }
        if found.access == Access::Members
            && let Err(why) = access::check_request(req, &found.pool, &found.view)
        {
            return HttpResponse::Unauthorized()
                .insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"kith members\""))
                .content_type("text/plain; charset=utf-8")
                .body(format!("this site is for the pool's members: {why}\n"));
        }
        let (segs, dir) = match decode_path(rest) {
            Ok(x) => x,
            Err(PathError::Escapes) => {
                return text(StatusCode::BAD_REQUEST, "the path leaves the site");
            }
            Err(PathError::Malformed) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    "the path is not valid percent-encoded UTF-8",
                );
            }
        };
        let index = match self.index(&found).await {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(site = name, error = %e, "cannot open a site's index");
                return text(
                    StatusCode::BAD_GATEWAY,
                    &format!("site `{name}` is unavailable: {e}"),
                );
            }
        };
        self.pools.count_site_request(&found.pool);
        let path = segs.join("/");
        let file = if dir {
            let p = if path.is_empty() {
                "index.html".to_string()
            } else {
                format!("{path}/index.html")
            };
            index.file(&p)
        } else {
            match index.file(&path) {
                Some(f) => Some(f),
                None if index.file(&format!("{path}/index.html")).is_some() => {
                    // A folder asked without its slash: nginx redirects.
                    let loc = format!("{}{}/", base, rest);
                    return HttpResponse::MovedPermanently()
                        .insert_header((header::LOCATION, loc))
                        .finish();
                }
                None => None,
            }
        };
        match file {
            Some(f) => self.send(req, &found, f, StatusCode::OK, head).await,
            None => match index.file("404.html") {
                Some(f) => self.send(req, &found, f, StatusCode::NOT_FOUND, head).await,
                None => text(StatusCode::NOT_FOUND, "not found"),
            },
        }
    }

    /// Sends a file: validators, conditional requests, ranges, gzip.
    async fn send(
        self: &Arc<Self>,
        req: &HttpRequest,
        found: &Found,
        f: &FileEntry,
        status: StatusCode,
        head: bool,
    ) -> HttpResponse {
        let h = |n: header::HeaderName| req.headers().get(n).and_then(|v| v.to_str().ok());
        let etag = format!("\"{}\"", hex(&f.hash[..16]));
        let modified = header::HttpDate::from(
            UNIX_EPOCH + Duration::from_secs(f.mtime_ms.max(0) as u64 / 1000),
        );
        let ok = status == StatusCode::OK;
        let gz = f.gzip.as_ref().filter(|_| accepts_gzip(h(header::ACCEPT_ENCODING)));
        let tag =
            if gz.is_some() { format!("\"{}-gz\"", hex(&f.hash[..16])) } else { etag.clone() };
        let mut b = HttpResponse::build(status);
        b.insert_header((header::CONTENT_TYPE, f.content_type.as_str()))
            .insert_header((header::LAST_MODIFIED, modified.to_string()))
            .insert_header((header::ETAG, tag.as_str()))
            .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
        if f.gzip.is_some() {
            b.insert_header((header::VARY, "Accept-Encoding"));
        }
        // A page pins the version it came from for the requests it makes next (stylesheets,
        // scripts, images), so a page load never mixes an old page with new files.
        if f.content_type.starts_with("text/html") {
            let name = &found.name;
            let path = if found.by_host { "/".to_string() } else { format!("/s/{name}/") };
            b.insert_header((
                header::SET_COOKIE,
                format!(
                    "kithv-{name}={}; Path={path}; Max-Age={PIN_SECS}; SameSite=Lax",
                    found.number
                ),
            ));
        }
        if ok {
            let not_modified = match h(header::IF_NONE_MATCH) {
                Some(inm) => none_match(inm, &tag),
                None => h(header::IF_MODIFIED_SINCE)
                    .and_then(|s| s.parse::<header::HttpDate>().ok())
                    .is_some_and(|since| {
                        std::time::SystemTime::from(since) >= std::time::SystemTime::from(modified)
                    }),
            };
            if not_modified {
                let mut r = HttpResponse::NotModified();
                r.insert_header((header::ETAG, tag.as_str()))
                    .insert_header((header::LAST_MODIFIED, modified.to_string()));
                if f.gzip.is_some() {
                    r.insert_header((header::VARY, "Accept-Encoding"));
                }
                return r.finish();
            }
        }
        // Ranges are served from the identity encoding only, and only if If-Range still holds.
        let range = if ok && f.len > 0 {
            let if_range_ok = h(header::IF_RANGE).is_none_or(|v| v.trim() == etag);
            if if_range_ok { parse_range(h(header::RANGE), f.len) } else { RangeAsk::Whole }
        } else {
            RangeAsk::Whole
        };
        if ok {
            b.insert_header((header::ACCEPT_RANGES, "bytes"));
        }
        match range {
            RangeAsk::Unsatisfiable => {
                return HttpResponse::RangeNotSatisfiable()
                    .insert_header((header::CONTENT_RANGE, format!("bytes */{}", f.len)))
                    .insert_header((header::ETAG, etag.as_str()))
                    .finish();
            }
            RangeAsk::Part(r) => {
                b.status(StatusCode::PARTIAL_CONTENT)
                    .insert_header((header::ETAG, etag.as_str()))
                    .insert_header((
                        header::CONTENT_RANGE,
                        format!("bytes {}-{}/{}", r.start, r.end - 1, f.len),
                    ));
                return self.body(b, found, &f.chunks, r.start, r.end, head).await;
            }
            RangeAsk::Whole => {}
        }
        match gz {
            Some((len, chunks)) => {
                b.insert_header((header::CONTENT_ENCODING, "gzip"));
                self.body(b, found, chunks, 0, *len, head).await
            }
            None => self.body(b, found, &f.chunks, 0, f.len, head).await,
        }
    }

    /// The bytes `start..end` of a file made of `chunks`, as the response body.
    async fn body(
        self: &Arc<Self>,
        mut b: HttpResponseBuilder,
        found: &Found,
        chunks: &[ChunkRef],
        start: u64,
        end: u64,
        head: bool,
    ) -> HttpResponse {
        let len = end - start;
        if head {
            // The body's size gives Content-Length; actix sends no body for HEAD.
            let none = n0_future::stream::empty::<Result<Bytes, std::io::Error>>();
            return b.no_chunking(len).streaming(none);
        }
        // The chunks that hold the range, and where in them it starts and ends.
        let mut parts = Vec::new();
        let mut at = 0u64;
        for c in chunks {
            let (cs, ce) = (at, at + c.len as u64);
            at = ce;
            if ce <= start || cs >= end {
                continue;
            }
            parts.push((c.clone(), start.saturating_sub(cs) as usize, (end.min(ce) - cs) as usize));
        }
        // Small bodies (one chunk, the common case for pages) go out in one piece.
        if parts.len() == 1 {
            let (c, s, e) = &parts[0];
            return match self.chunk(found, c).await {
                Ok(bytes) => b.body(bytes.slice(*s..*e)),
                Err(e) => text(StatusCode::BAD_GATEWAY, &format!("content unavailable: {e}")),
            };
        }
        // Larger ones stream chunk by chunk; the first is read before answering, so a site
        // whose content is gone answers 502 rather than a cut-off 200.
        let first = match parts.first() {
            Some((c, s, e)) => match self.chunk(found, c).await {
                Ok(bytes) => bytes.slice(*s..*e),
                Err(e) => {
                    return text(StatusCode::BAD_GATEWAY, &format!("content unavailable: {e}"));
                }
            },
            None => return b.body(Bytes::new()),
        };
        let this = GatewayRef { view: found.view.clone() };
        let gw = self.clone();
        let rest: Vec<(ChunkRef, usize, usize)> = parts.into_iter().skip(1).collect();
        let stream = n0_future::stream::unfold(
            (Some(first), rest.into_iter(), gw, this),
            |(first, mut rest, gw, this)| async move {
                if let Some(f) = first {
                    return Some((Ok::<_, std::io::Error>(f), (None, rest, gw, this)));
                }
                let (c, s, e) = rest.next()?;
                let out = match gw.chunk_for(&this, &c).await {
                    Ok(bytes) => Ok(bytes.slice(s..e)),
                    // The client sees the body end early, as with any server whose disk
                    // fails mid-file; the error is logged.
                    Err(e) => {
                        tracing::warn!(error = %e, "site content unavailable mid-body");
                        Err(std::io::Error::other(e))
                    }
                };
                Some((out, (None, rest, gw, this)))
            },
        );
        b.no_chunking(len).streaming(stream)
    }

    async fn index(&self, found: &Found) -> Result<Arc<SiteIndex>, String> {
        if let Some(i) = lock(&self.indexes).get(&found.version.index) {
            return Ok(i.clone());
        }
        let r = ChunkRef {
            id: found.version.index.into(),
            key: found.version.key.into(),
            len: 0,
            stored: 0,
        };
        let env = self.envelope(&found.view, &r).await?;
        let i = Arc::new(open_index(&env, &found.version.key, found.version.len)?);
        let mut idx = lock(&self.indexes);
        if idx.len() >= MAX_INDEXES {
            idx.clear();
        }
        idx.insert(found.version.index, i.clone());
        Ok(i)
    }

    async fn chunk(&self, found: &Found, c: &ChunkRef) -> Result<Bytes, String> {
        self.chunk_for(&GatewayRef { view: found.view.clone() }, c).await
    }

    async fn chunk_for(&self, at: &GatewayRef, c: &ChunkRef) -> Result<Bytes, String> {
        if let Some(b) = lock(&self.cache).get(&c.id) {
            self.stats.hits.fetch_add(1, Relaxed);
            return Ok(b);
        }
        let env = self.envelope(&at.view, c).await?;
        let r = c.clone();
        let plain = tokio::task::spawn_blocking(move || open_chunk(&env, &r))
            .await
            .map_err(|e| e.to_string())??;
        let b = Bytes::from(plain);
        lock(&self.cache).put(*c.id, b.clone());
        Ok(b)
    }

    /// Writes the served version of this identity's site `name` in `pool` (a pool this node
    /// may be leaving) into a folder under `scratch`, every file checked against its hash, and
    /// stores it as an ordinary object labelled `site NAME, version N`; returns its id.
    pub async fn keep_site(
        &self,
        pool: Key,
        name: &str,
        scratch: &std::path::Path,
    ) -> Result<Key, String> {
        let view = Arc::new(self.pools.view_of(&pool).ok_or("no such pool")?);
        let me = self.pools.signer().author().key;
        let site = view
            .members
            .get(&me)
            .and_then(|m| m.sites.get(name))
            .ok_or_else(|| format!("you have no site `{name}` in this pool"))?;
        let version = site.served().ok_or_else(|| format!("site `{name}` serves no version"))?;
        let found = Found {
            pool,
            view: view.clone(),
            access: site.access,
            version: version.clone(),
            number: site.current,
            name: name.to_string(),
            by_host: false,
        };
        let index = self.index(&found).await?;
        let dir = scratch.join(format!("{name}-{}", kith_node::keys::now_ms()));
        let root = dir.join(name);
        let result = async {
            for f in &index.files {
                let mut bytes = Vec::with_capacity(f.len as usize);
                for c in &f.chunks {
                    bytes.extend_from_slice(&self.chunk(&found, c).await?);
                }
                if blake3::hash(&bytes).as_bytes() != &*f.hash {
                    return Err(format!("file {} of site {name} does not match its hash", f.path));
                }
                let safe = std::path::Path::new(&f.path)
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)));
                if !safe {
                    return Err(format!("site {name} names a file outside it: {}", f.path));
                }
                let path = root.join(&f.path);
                std::fs::create_dir_all(path.parent().unwrap_or(&root))
                    .and_then(|()| std::fs::write(&path, &bytes))
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            }
            std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
            let label = std::path::PathBuf::from(format!("site {name}, version {}", site.current));
            let store = self.node.store().clone();
            let r = tokio::task::spawn_blocking(move || store.put_as(&root, Some(&label), None))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("cannot store site {name}: {e}"))?;
            Ok(r.id.0)
        }
        .await;
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    /// The public sites of this node's pools with their files (at most 1000 listed per site),
    /// for a browser peer.
    pub async fn public_sites(&self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        let views = self.pools.views();
        for (pool, view) in views.iter() {
            for (owner, name, site) in view.sites() {
                let winner = view.site(name).is_some_and(|(o, _)| o == *owner);
                let Some(version) =
                    site.served().filter(|_| winner && site.access == Access::Public)
                else {
                    continue;
                };
                let found = Found {
                    pool: *pool,
                    view: view.clone(),
                    access: site.access,
                    version: version.clone(),
                    number: site.current,
                    name: name.clone(),
                    by_host: false,
                };
                let files: Vec<serde_json::Value> = match self.index(&found).await {
                    Ok(i) => i
                        .files
                        .iter()
                        .take(1000)
                        .map(|f| serde_json::json!({ "path": f.path, "len": f.len, "type": f.content_type }))
                        .collect(),
                    Err(e) => {
                        tracing::warn!(site = %name, error = %e, "cannot open a site's index");
                        continue;
                    }
                };
                out.push(serde_json::json!({ "name": name, "files": files }));
            }
        }
        out
    }

    /// A file of a public site, and the pool it is read through.
    pub async fn public_file(
        &self,
        site: &str,
        path: &str,
    ) -> Result<(FileEntry, Arc<PoolView>), String> {
        let found = self.find(site, None).ok_or_else(|| format!("no site `{site}` here"))?;
        if found.access != Access::Public {
            return Err(format!("`{site}` is for the pool's members"));
        }
        let index = self.index(&found).await?;
        let f = index.file(path).ok_or_else(|| format!("`{site}` has no file `{path}`"))?;
        Ok((f.clone(), found.view))
    }

    /// A chunk of a file, opened (from the cache, the store or a peer).
    pub async fn chunk_in(&self, view: &Arc<PoolView>, c: &ChunkRef) -> Result<Bytes, String> {
        self.chunk_for(&GatewayRef { view: view.clone() }, c).await
    }

    /// A chunk's envelope: from the store, or fetched (verified) from the pool's nodes into
    /// memory only (the store keeps what placement gives this node; the cache of opened chunks
    /// is what keeps fetched content, within its cap).
    async fn envelope(&self, view: &PoolView, c: &ChunkRef) -> Result<Vec<u8>, String> {
        let id = ChunkId(*c.id);
        let store = self.node.store().clone();
        let read = move || store.read_blob(&id).map_err(|e| e.to_string());
        if let Some((_, env)) =
            tokio::task::spawn_blocking(read.clone()).await.map_err(|e| e.to_string())??
        {
            self.stats.reads.fetch_add(1, Relaxed);
            return Ok(env);
        }
        let from = self.pools.nodes_by_recency(view);
        let what = format!("site content {}", hex(&c.id[..8]));
        let blobs =
            self.node.fetch_to_memory(&what, vec![id], from).await.map_err(|e| e.to_string())?;
        self.stats.fetched.fetch_add(1, Relaxed);
        let blob = blobs.into_iter().next().ok_or("fetched nothing")?;
        Ok(blob.parts.concat())
    }
}

/// Keeps sites as objects for the replicator when a pool stops serving them (see
/// [`kith_pools::leave::SiteKeeper`]), writing them under `scratch` on the way.
#[derive(Debug)]
pub struct SiteKeeper {
    /// The gateway that reads sites.
    pub gateway: Arc<Gateway>,
    /// A folder in the home for the files on their way into the store.
    pub scratch: std::path::PathBuf,
}

impl kith_pools::leave::SiteKeeper for SiteKeeper {
    fn keep<'a>(
        &'a self,
        pool: Key,
        name: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Key, String>> + Send + 'a>> {
        Box::pin(self.gateway.keep_site(pool, name, &self.scratch))
    }
}

struct GatewayRef {
    view: Arc<PoolView>,
}

/// How often the announced site names are brought in line with the pools.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(2);

/// Keeps the names of the sites this node serves announced on mDNS (`NAME.local`, answering
/// with this node's addresses, HTTP on `port`) until `cancel`, and withdraws them then.
pub async fn announce(
    pools: Arc<Pools>,
    mdns: Arc<kith_node::net::mdns::Mdns>,
    port: u16,
    cancel: tokio_util::sync::CancellationToken,
) {
    loop {
        let want: std::collections::BTreeSet<String> = pools
            .list()
            .iter()
            .flat_map(|(_, v)| {
                v.sites()
                    .filter(|(o, n, s)| {
                        s.served().is_some() && v.site(n).is_some_and(|(w, _)| w == **o)
                    })
                    .map(|(_, n, _)| n.clone())
                    .collect::<Vec<_>>()
            })
            .collect();
        let have: std::collections::BTreeSet<String> = mdns.published_names().into_iter().collect();
        for n in want.difference(&have) {
            match mdns.publish_name(n, port) {
                Ok(()) => tracing::info!(site = %n, "answering for {n}.local on mDNS"),
                Err(e) => tracing::warn!(site = %n, error = %e, "cannot announce a site name"),
            }
        }
        for n in have.difference(&want) {
            mdns.unpublish_name(n);
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(ANNOUNCE_EVERY) => {}
        }
    }
    for n in mdns.published_names() {
        mdns.unpublish_name(&n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_keeps_to_its_cap_and_evicts_the_least_recently_used() {
        let mut c = Lru { map: HashMap::new(), order: BTreeMap::new(), tick: 0, bytes: 0, cap: 30 };
        let b = |n: usize| Bytes::from(vec![0u8; n]);
        c.put([1; 32], b(10));
        c.put([2; 32], b(10));
        c.put([3; 32], b(10));
        assert!(c.get(&[1; 32]).is_some(), "touching 1 makes 2 the oldest");
        c.put([4; 32], b(10));
        assert!(c.get(&[2; 32]).is_none());
        assert!(
            c.get(&[1; 32]).is_some() && c.get(&[3; 32]).is_some() && c.get(&[4; 32]).is_some()
        );
        assert_eq!(c.bytes, 30);
        c.put([5; 32], b(31));
        assert!(c.get(&[5; 32]).is_none(), "larger than the whole cache: not kept");
        c.put([6; 32], b(25));
        assert_eq!(c.bytes, 25, "one big entry pushes out all the small ones");
        assert_eq!(c.map.len(), c.order.len());
    }
}
