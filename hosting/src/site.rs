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
use kith_node::store::envelope::{
    ChunkKey, Compression, OpenError, Sealer, StoreKeys, open_with_key,
};
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
    pub fn from_bytes(b: &[u8]) -> Result<SiteIndex, IndexError> {
        let i: SiteIndex = minicbor::decode(b)?;
        if i.v > INDEX_VERSION {
            return Err(IndexError::Newer(i.v.into()));
        }
        if !i.files.windows(2).all(|w| w[0].path < w[1].path) {
            return Err(IndexError::Unsorted);
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
    crate::name::check_name(name).map_err(|e| e.to_string())?;
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
pub fn open_chunk(envelope: &[u8], r: &ChunkRef) -> Result<Vec<u8>, OpenError> {
    open_with_key(envelope, &ChunkKey(*r.key), r.len)
}

/// Opens an index envelope with the key and length from the pool document.
pub fn open_index(envelope: &[u8], key: &[u8; 32], len: u64) -> Result<SiteIndex, IndexError> {
    let len = u32::try_from(len).map_err(|_| IndexError::TooLarge(len))?;
    let plain = open_with_key(envelope, &ChunkKey(*key), len)?;
    SiteIndex::from_bytes(&plain)
}

/// Why a site index could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// Not valid CBOR of an index.
    #[error("bad site index: {0}")]
    Decode(#[from] minicbor::decode::Error),
    /// Written by a newer kith.
    #[error("site index version {0} is newer than this kith reads: upgrade kith")]
    Newer(u64),
    /// Its files are not sorted by path (lookups would miss).
    #[error("bad site index: files are not sorted")]
    Unsorted,
    /// The pool document names an index longer than any envelope.
    #[error("the site index is too large ({0} bytes)")]
    TooLarge(u64),
    /// Its envelope does not open (wrong key, altered bytes).
    #[error(transparent)]
    Open(#[from] OpenError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use kith_node::Home;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let (home, _) = Home::open_or_init(&dir.path().join("home")).unwrap();
        let store = Store::open(&home, "test").unwrap();
        (dir, store)
    }

    fn read(store: &Store, f: &FileEntry, chunks: &[ChunkRef]) -> Vec<u8> {
        let _ = f;
        let mut out = Vec::new();
        for c in chunks {
            let (_, env) = store.read_blob(&ChunkId(*c.id)).unwrap().unwrap();
            out.extend(open_chunk(&env, c).unwrap());
        }
        out
    }

    #[test]
    fn a_folder_publishes_and_reads_back_and_a_second_version_costs_only_its_changes() {
        let (dir, store) = store();
        let site = dir.path().join("www");
        std::fs::create_dir_all(site.join("css")).unwrap();
        std::fs::create_dir_all(site.join(".git")).unwrap();
        std::fs::write(site.join("index.html"), "<h1>hi</h1>".repeat(100)).unwrap();
        std::fs::write(site.join("css/a.css"), "body{}\n".repeat(500)).unwrap();
        std::fs::write(site.join(".git/config"), "secret").unwrap();
        let big: Vec<u8> =
            (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        std::fs::write(site.join("big.bin"), &big).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", site.join("link")).unwrap();
        let secret = site_secret(&[1; 32], &[2; 32], "www");
        let p = publish(&store, &secret, "www", &site, 1).unwrap();
        assert_eq!(p.files, 3);
        assert_eq!(p.skipped.len(), 2, "{:?}", p.skipped);
        let (_, env) = store.read_blob(&p.index).unwrap().unwrap();
        let index = open_index(&env, &p.key, p.len).unwrap();
        let paths: Vec<&str> = index.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["big.bin", "css/a.css", "index.html"]);
        let b = index.file("big.bin").unwrap();
        assert!(b.chunks.len() > 1 && b.gzip.is_none());
        assert!(read(&store, b, &b.chunks) == big);
        let css = index.file("css/a.css").unwrap();
        let (glen, gz) = css.gzip.as_ref().unwrap();
        let packed = read(&store, css, gz);
        assert_eq!(packed.len() as u64, *glen);
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&packed[..]), &mut plain)
            .unwrap();
        assert_eq!(plain, "body{}\n".repeat(500).into_bytes());
        // A wrong key opens nothing.
        assert!(open_index(&env, &[9; 32], p.len).is_err());
        // Version 2 changes one small file: only it and the index are new.
        std::fs::write(site.join("index.html"), "<h1>hello</h1>").unwrap();
        let p2 = publish(&store, &secret, "www", &site, 2).unwrap();
        assert!(p2.new_blobs <= 2, "{} new blobs", p2.new_blobs);
        // Empty folders and bad names are refused.
        let empty = dir.path().join("empty");
        std::fs::create_dir_all(empty.join(".hidden")).unwrap();
        assert!(publish(&store, &secret, "www", &empty, 3).unwrap_err().contains("no files"));
        assert!(publish(&store, &secret, "No", &site, 3).unwrap_err().contains("not a valid"));
    }

    /// Drops, for this thread only, the capabilities that let root read any file.
    fn drop_read_override() {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let mut h = Header { version: 0x2008_0522, pid: 0 };
        let mut d = [Data { effective: 0, permitted: 0, inheritable: 0 }; 2];
        // SAFETY: capget/capset with the v3 header and two data words, as the kernel expects.
        unsafe {
            assert_eq!(libc::syscall(libc::SYS_capget, &mut h as *mut Header, d.as_mut_ptr()), 0);
            // CAP_DAC_OVERRIDE is 1, CAP_DAC_READ_SEARCH is 2 (linux/capability.h).
            let drop = !((1u32 << 1) | (1u32 << 2));
            d[0].effective &= drop;
            assert_eq!(libc::syscall(libc::SYS_capset, &mut h as *mut Header, d.as_ptr()), 0);
        }
    }

    #[test]
    fn an_unreadable_file_is_named_and_nothing_is_published() {
        let (dir, store) = store();
        let site = dir.path().join("www");
        std::fs::create_dir_all(&site).unwrap();
        std::fs::write(site.join("index.html"), "<h1>hi</h1>").unwrap();
        std::fs::write(site.join("private.txt"), "no").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(site.join("private.txt"), std::fs::Permissions::from_mode(0o000))
            .unwrap();
        let e = std::thread::spawn(move || {
            drop_read_override();
            publish(&store, &[1; 32], "www", &site, 1).unwrap_err()
        })
        .join()
        .unwrap();
        assert!(e.contains("private.txt") && e.contains("ermission denied"), "{e}");
    }
}
