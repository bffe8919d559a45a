//! Answering a site request: routing by `Host` or `/s/NAME/`, access, paths and folders,
//! validators and conditional requests, ranges, gzip, and the body streamed chunk by chunk.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, UNIX_EPOCH};

use actix_web::http::header;
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};
use bytes::Bytes;
use kith_crdt::hex;
use kith_pools::Access;

use super::{Found, Gateway, GatewayRef, Origin};
use crate::access;
use crate::http::{PathError, RangeAsk, accepts_gzip, decode_path, none_match, parse_range};
use crate::site::{ChunkRef, FileEntry};

/// Seconds a page's later requests keep the version its HTML came from.
const PIN_SECS: u32 = 60;

/// The version a request is pinned to by the cookie a page set (`kithv-NAME=N`). A navigation
/// (a person opening or reloading a page) is pinned to nothing: it gets the latest version,
/// whose page then pins what it loads next. Browsers mark a navigation with `Sec-Fetch-Mode:
/// navigate` only towards secure origins, which a LAN's `http://` is not; every browser asks
/// for a document with `text/html` in its `Accept`, which no stylesheet, script, image or
/// `fetch()` does by default.
fn pinned(req: &HttpRequest, name: &str) -> Option<u64> {
    let h = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    if h("sec-fetch-mode").eq_ignore_ascii_case("navigate") || h("accept").contains("text/html") {
        return None;
    }
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
        let r = self.serve(req, &name, &rest, &base).await;
        self.stats.answered(r.status().as_u16());
        Some(r)
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
        self.stats.count(name, |n| n.requests += 1);
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
            && let Err(why) = match &found.origin {
                Origin::Pool(view) => {
                    access::check_request(req, &found.pool, view, self.pools.now_ms() as u64)
                        .map_err(|e| e.to_string())
                }
                Origin::Edge { .. } => Err("an edge serves only public sites".to_string()),
            }
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
        // A partner's site served as its edge: counted for the cross-pool ledger, within the
        // egress the agreement lends.
        if let Origin::Edge { agreement, .. } = &found.origin
            && let Some(edges) = self.edges.get()
            && let Err(why) = edges.take_egress(agreement, len)
        {
            return text(StatusCode::SERVICE_UNAVAILABLE, &why);
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
        let this = GatewayRef { origin: found.origin.clone(), site: Some(found.name.clone()) };
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
}
