//! A site version: its files cut into chunks, each sealed in the store's chunk envelope under a
//! key derived from the site's secret, and an index listing every file with its chunks and
//! their keys, itself sealed the same way. The pool document names the index and its key, so
//! every member's node (and no one else) can read the site, and serve it.
//!
//! The site secret is derived from the publisher's store secret, the pool and the name, so
//! every version of a site is cut and keyed alike: an unchanged file costs nothing to publish
//! again.

use std::io::Read;
use std::path::{Path, PathBuf};

use kith_node::ChunkId;
use kith_node::store::Store;
use kith_node::store::chunker::{Chunker, Cutter, DATA_CHUNKS};
use kith_node::store::envelope::{ChunkKey, Compression, Sealer, StoreKeys, open_with_key};
use kith_node::store::pack::BlobKind;
use minicbor::bytes::ByteArray;
use minicbor::{Decode, Encode};

/// Version of the site index format.
pub const INDEX_VERSION: u32 = 1;
/// Most files in one site version.
pub const MAX_FILES: usize = 100_000;
/// Longest path of a file in a site, in bytes.
pub const MAX_PATH: usize = 1024;
/// Largest file given a gzip copy.
const GZIP_MAX: u64 = 64 << 20;
/// Folder names starting with `.` that are published anyway.
const PUBLISHED_DOT_DIRS: &[&str] = &[".well-known"];

/// One chunk of a file: where it is and how to open it.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(array)]
pub struct ChunkRef {
    /// The envelope's id.
    #[n(0)]
    pub id: ByteArray<32>,
    /// Its key.
    #[n(1)]
    pub key: ByteArray<32>,
    /// Plaintext length.
    #[n(2)]
    pub len: u32,
    /// Envelope length (what the store and the network move).
    #[n(3)]
    pub stored: u32,
}

/// One file of a site.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(array)]
pub struct FileEntry {
    /// Its path in the site, `/`-separated, no leading `/` (`index.html`, `css/a.css`).
    #[n(0)]
    pub path: String,
    /// Its length.
    #[n(1)]
    pub len: u64,
    /// When it was last modified (ms since the epoch), for `Last-Modified`.
    #[n(2)]
    pub mtime_ms: i64,
    /// BLAKE3 of its bytes, for `ETag`.
    #[n(3)]
    pub hash: ByteArray<32>,
    /// Its content type.
    #[n(4)]
    pub content_type: String,
    /// Its chunks, in order.
    #[n(5)]
    pub chunks: Vec<ChunkRef>,
    /// A gzip-compressed copy, when that is worth it: its length and chunks.
    #[n(6)]
    pub gzip: Option<(u64, Vec<ChunkRef>)>,
}

/// The index of a site version.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(array)]
pub struct SiteIndex {
    /// [`INDEX_VERSION`].
    #[n(0)]
    pub v: u32,
    /// The site's name.
    #[n(1)]
    pub name: String,
    /// When the version was made.
    #[n(2)]
    pub created_ms: i64,
    /// Files, sorted by path.
    #[n(3)]
    pub files: Vec<FileEntry>,
}

impl SiteIndex {
    /// The file at `path`.
    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        self.files.binary_search_by(|f| f.path.as_str().cmp(path)).ok().map(|i| &self.files[i])
    }

    /// Parses an index.
    pub fn from_bytes(b: &[u8]) -> Result<SiteIndex, String> {
        let i: SiteIndex = minicbor::decode(b).map_err(|e| format!("bad site index: {e}"))?;
        if i.v > INDEX_VERSION {
            return Err(format!("site index version {} is newer than this kith reads", i.v));
        }
        if !i.files.windows(2).all(|w| w[0].path < w[1].path) {
            return Err("bad site index: files are not sorted".into());
        }
        Ok(i)
    }
}

/// What publishing made.
#[derive(Debug, Clone)]
pub struct Published {
    /// The index blob.
    pub index: ChunkId,
    /// Its key.
    pub key: [u8; 32],
    /// Its plaintext length.
    pub len: u64,
    /// Files.
    pub files: u64,
    /// Bytes of content.
    pub bytes: u64,
    /// Every blob of the version (index first), with its stored length, once each.
    pub blobs: Vec<([u8; 32], u32)>,
    /// Blobs that were new to the store.
    pub new_blobs: u64,
    /// What was left out, and why.
    pub skipped: Vec<String>,
}

/// The secret of a publisher's site.
pub fn site_secret(store_secret: &[u8; 32], pool: &[u8; 32], name: &str) -> [u8; 32] {
    blake3::derive_key(
        "kith site secret v1",
        &[&store_secret[..], &pool[..], name.as_bytes()].concat(),
    )
}

/// Lists the files to publish under `dir`: regular files, sorted by site path. Symbolic links
/// and names starting with `.` (except `.well-known`) are left out and listed in `skipped`.
fn walk(dir: &Path, skipped: &mut Vec<String>) -> Result<Vec<(String, PathBuf)>, String> {
    let meta = std::fs::metadata(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("{} is not a folder", dir.display()));
    }
    let mut out = Vec::new();
    let mut stack = vec![(String::new(), dir.to_path_buf())];
    while let Some((prefix, path)) = stack.pop() {
        let entries =
            std::fs::read_dir(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        for e in entries {
            let e = e.map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let p = e.path();
            let name = e.file_name();
            let Some(name) = name.to_str() else {
                return Err(format!(
                    "{}: the name is not UTF-8, which a URL cannot carry",
                    p.display()
                ));
            };
            let site_path = format!("{prefix}{name}");
            let ft = e.file_type().map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            if name.starts_with('.') && !(ft.is_dir() && PUBLISHED_DOT_DIRS.contains(&name)) {
                skipped.push(format!("{site_path} (hidden)"));
                continue;
            }
            if ft.is_symlink() {
                skipped.push(format!("{site_path} (a symbolic link)"));
            } else if ft.is_dir() {
                stack.push((format!("{site_path}/"), p));
            } else if ft.is_file() {
                if site_path.len() > MAX_PATH {
                    return Err(format!("{site_path}: the path is longer than {MAX_PATH} bytes"));
                }
                out.push((site_path, p));
                if out.len() > MAX_FILES {
                    return Err(format!(
                        "more than {MAX_FILES} files; a site may have at most that"
                    ));
                }
            } else {
                skipped.push(format!("{site_path} (not a regular file)"));
            }
        }
    }
    out.sort();
    Ok(out)
}

struct Writer<'s> {
    keys: StoreKeys,
    sealer: Sealer,
    ingest: kith_node::store::Ingest<'s>,
    buf: Vec<u8>,
    blobs: Vec<([u8; 32], u32)>,
    seen: std::collections::HashSet<[u8; 32]>,
    new_blobs: u64,
}

impl Writer<'_> {
    fn chunk(&mut self, plain: &[u8]) -> Result<ChunkRef, String> {
        let key = self.keys.chunk_key(plain);
        let (env, id) = self.sealer.seal(&key, plain, Compression::for_head(plain));
        if self.ingest.add(id, BlobKind::Chunk, &env).map_err(|e| e.to_string())? {
            self.new_blobs += 1;
        }
        if self.seen.insert(id.0) {
            self.blobs.push((id.0, env.len() as u32));
        }
        Ok(ChunkRef {
            id: id.0.into(),
            key: key.0.into(),
            len: plain.len() as u32,
            stored: env.len() as u32,
        })
    }

    fn stream(&mut self, r: impl Read) -> Result<(Vec<ChunkRef>, u64, [u8; 32]), std::io::Error> {
        let mut buf = std::mem::take(&mut self.buf);
        let cutter = Cutter::new(DATA_CHUNKS, self.keys.cdc_seed());
        let mut refs = Vec::new();
        let mut hasher = blake3::Hasher::new();
        let mut len = 0u64;
        for c in Chunker::new(&cutter, r, &mut buf) {
            let c = c?;
            hasher.update(&c);
            len += c.len() as u64;
            refs.push(self.chunk(&c).map_err(std::io::Error::other)?);
        }
        self.buf = buf;
        Ok((refs, len, *hasher.finalize().as_bytes()))
    }
}

/// Publishes the folder `dir` as a version of site `name` into `store`, keyed by `secret`
/// (see [`site_secret`]). Refuses an empty folder and any file it cannot read, naming it;
/// nothing of a failed publish is referenced anywhere (what it wrote is reclaimed by `gc`).
pub fn publish(
    store: &Store,
    secret: &[u8; 32],
    name: &str,
    dir: &Path,
    now_ms: i64,
) -> Result<Published, String> {
    crate::name::check_name(name)?;
    let mut skipped = Vec::new();
    let list = walk(dir, &mut skipped)?;
    if list.is_empty() {
        return Err(format!(
            "{} has no files to publish{}",
            dir.display(),
            if skipped.is_empty() {
                String::new()
            } else {
                format!(" (left out: {})", skipped.join(", "))
            }
        ));
    }
    let mut w = Writer {
        keys: StoreKeys::derive(secret),
        sealer: Sealer::new(),
        ingest: store.ingest().map_err(|e| e.to_string())?,
        buf: Vec::new(),
        blobs: Vec::new(),
        seen: Default::default(),
        new_blobs: 0,
    };
    let mut files = Vec::with_capacity(list.len());
    let mut bytes = 0u64;
    for (site_path, path) in list {
        let fail = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
        let mut f = std::fs::File::open(&path).map_err(fail)?;
        let meta = f.metadata().map_err(fail)?;
        let mtime_ms = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(now_ms, |d| d.as_millis() as i64);
        let content_type = crate::mime::content_type(&site_path).to_string();
        // Text is read whole (up to 64 MiB) so that its gzip copy is of the same bytes.
        let whole = crate::mime::compressible(&content_type) && meta.len() <= GZIP_MAX;
        let (chunks, len, hash, plain) = if whole {
            let mut plain = Vec::with_capacity(meta.len() as usize);
            f.read_to_end(&mut plain).map_err(fail)?;
            let (c, l, h) = w.stream(&plain[..]).map_err(fail)?;
            (c, l, h, Some(plain))
        } else {
            let (c, l, h) = w.stream(std::io::BufReader::new(f)).map_err(fail)?;
            (c, l, h, None)
        };
        let gzip = if let Some(plain) = plain.filter(|p| p.len() >= 256) {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            std::io::Write::write_all(&mut enc, &plain).map_err(|e| e.to_string())?;
            let gz = enc.finish().map_err(|e| e.to_string())?;
            if (gz.len() as u64) * 10 < len * 9 {
                let (refs, glen, _) = w.stream(&gz[..]).map_err(|e| e.to_string())?;
                Some((glen, refs))
            } else {
                None
            }
        } else {
            None
        };
        bytes += len;
        files.push(FileEntry {
            path: site_path,
            len,
            mtime_ms,
            hash: hash.into(),
            content_type,
            chunks,
            gzip,
        });
    }
    let index = SiteIndex { v: INDEX_VERSION, name: name.to_string(), created_ms: now_ms, files };
    let ibytes = minicbor::to_vec(&index).expect("encoding to a Vec cannot fail");
    let r = w.chunk(&ibytes)?;
    // The index first in the blob list (the pool object's id is the index's).
    let pos = w.blobs.iter().position(|(id, _)| *id == *r.id).expect("just added");
    let first = w.blobs.remove(pos);
    w.blobs.insert(0, first);
    let Writer { ingest, blobs, new_blobs, .. } = w;
    ingest.finish().map_err(|e| format!("cannot write the store: {e}"))?;
    Ok(Published {
        index: ChunkId(*r.id),
        key: *r.key,
        len: ibytes.len() as u64,
        files: index.files.len() as u64,
        bytes,
        blobs,
        new_blobs,
        skipped,
    })
}

/// Opens a chunk envelope with the key its index names.
pub fn open_chunk(envelope: &[u8], r: &ChunkRef) -> Result<Vec<u8>, String> {
    open_with_key(envelope, &ChunkKey(*r.key), r.len).map_err(|e| e.to_string())
}

/// Opens an index envelope with the key and length from the pool document.
pub fn open_index(envelope: &[u8], key: &[u8; 32], len: u64) -> Result<SiteIndex, String> {
    let len = u32::try_from(len).map_err(|_| "the site index is too large".to_string())?;
    let plain = open_with_key(envelope, &ChunkKey(*key), len).map_err(|e| e.to_string())?;
    SiteIndex::from_bytes(&plain)
}
