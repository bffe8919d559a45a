//! The tree stream: an object's manifest, as a sequence of framed CBOR items.
//!
//! The items of an object, depth first with each folder's children sorted by name bytes:
//!
//! ```text
//! Dir | Symlink | File Chunk* FileEnd     ... one per entry, the root entry first (path "")
//! End                                        counts, so a truncated stream is detected
//! ```
//!
//! Each item is framed as `length u32 LE | CBOR`. The stream is cut into chunks with
//! [`TREE_CHUNKS`](super::chunker::TREE_CHUNKS) and each chunk is sealed like file data, so
//! unchanged parts of a tree deduplicate between versions and holders see only ciphertext.

use minicbor::{Decode, Encode};

use super::chunker::Cutter;
use super::envelope::ChunkKey;
use crate::ids::ChunkId;

/// Tree stream version this build writes and the newest it reads.
pub const TREE_VERSION: u32 = 1;
/// Largest framed item; paths and link targets are far below it.
pub const MAX_ITEM_BYTES: usize = 1 << 20;

/// A reference to one sealed chunk: its id, key and plaintext length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
#[cbor(array)]
pub struct ChunkRef {
    /// Id of the sealed envelope.
    #[n(0)]
    #[cbor(with = "minicbor::bytes")]
    pub id: [u8; 32],
    /// Key that opens it.
    #[n(1)]
    #[cbor(with = "minicbor::bytes")]
    pub key: [u8; 32],
    /// Plaintext length.
    #[n(2)]
    pub len: u32,
}

impl ChunkRef {
    /// The chunk's id.
    pub fn chunk_id(&self) -> ChunkId {
        ChunkId(self.id)
    }

    /// The chunk's key.
    pub fn chunk_key(&self) -> ChunkKey {
        ChunkKey(self.key)
    }
}

/// Restorable metadata of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
#[cbor(array)]
pub struct Meta {
    /// Permission bits (`st_mode & 0o7777`).
    #[n(0)]
    pub mode: u32,
    /// Modification time, seconds since the epoch.
    #[n(1)]
    pub mtime_s: i64,
    /// Modification time, nanoseconds.
    #[n(2)]
    pub mtime_ns: u32,
    /// Owner.
    #[n(3)]
    pub uid: u32,
    /// Group.
    #[n(4)]
    pub gid: u32,
}

/// What identifies an unchanged file between versions (as restic: size, times, inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
#[cbor(array)]
pub struct ChangeKey {
    /// Size from `lstat`.
    #[n(0)]
    pub size: u64,
    /// Modification time in nanoseconds since the epoch.
    #[n(1)]
    pub mtime_ns: i128,
    /// Change time in nanoseconds since the epoch.
    #[n(2)]
    pub ctime_ns: i128,
    /// Inode number.
    #[n(3)]
    pub ino: u64,
    /// Device number.
    #[n(4)]
    pub dev: u64,
}

/// One item of the tree stream.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum Item {
    /// A folder.
    #[n(0)]
    Dir {
        /// Path relative to the object root, `/`-separated; empty for the root.
        #[n(0)]
        #[cbor(with = "minicbor::bytes")]
        path: Vec<u8>,
        /// Its metadata.
        #[n(1)]
        meta: Meta,
    },
    /// The start of a regular file; its chunks and a `FileEnd` follow.
    #[n(1)]
    File {
        /// Path relative to the object root.
        #[n(0)]
        #[cbor(with = "minicbor::bytes")]
        path: Vec<u8>,
        /// Its metadata.
        #[n(1)]
        meta: Meta,
        /// What the next version compares to decide whether to read it again.
        #[n(2)]
        change: ChangeKey,
    },
    /// A chunk of the current file.
    #[n(2)]
    Chunk(#[n(0)] ChunkRef),
    /// The end of the current file.
    #[n(3)]
    FileEnd {
        /// Bytes in the file (the sum of its chunk lengths).
        #[n(0)]
        size: u64,
    },
    /// A symbolic link, stored as a link.
    #[n(4)]
    Symlink {
        /// Path relative to the object root.
        #[n(0)]
        #[cbor(with = "minicbor::bytes")]
        path: Vec<u8>,
        /// Its metadata.
        #[n(1)]
        meta: Meta,
        /// The link's target, as stored by the file system.
        #[n(2)]
        #[cbor(with = "minicbor::bytes")]
        target: Vec<u8>,
    },
    /// The end of the stream.
    #[n(5)]
    End(#[n(0)] TreeStats),
}

/// Counts over a tree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Encode, Decode)]
#[cbor(array)]
pub struct TreeStats {
    /// Regular files.
    #[n(0)]
    pub files: u64,
    /// Folders, the root included if it is one.
    #[n(1)]
    pub dirs: u64,
    /// Symbolic links.
    #[n(2)]
    pub symlinks: u64,
    /// Bytes in regular files.
    #[n(3)]
    pub bytes: u64,
}

/// Why a tree stream is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TreeError {
    /// The stream ends before its `End` item.
    #[error("the tree is truncated")]
    Truncated,
    /// An item is not valid CBOR of a known shape.
    #[error("malformed tree item: {0}")]
    Malformed(String),
    /// An item's frame is larger than any item.
    #[error("tree item of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// A path that could escape the restore target.
    #[error("unsafe path in tree: {0:?}")]
    UnsafePath(String),
    /// Items in an order the format does not allow.
    #[error("tree items out of order: {0}")]
    Order(&'static str),
}

/// Encodes items and cuts the stream into chunks.
pub struct TreeWriter {
    cutter: Cutter,
    buf: Vec<u8>,
    start: usize,
}

impl TreeWriter {
    /// A writer that cuts with `cutter`.
    pub fn new(cutter: Cutter) -> Self {
        Self { cutter, buf: Vec::new(), start: 0 }
    }

    /// Appends an item.
    pub fn push(&mut self, item: &Item) {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        minicbor::encode(item, &mut self.buf).expect("encoding into a Vec cannot fail");
        let len = (self.buf.len() - at - 4) as u32;
        self.buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
    }

    /// Chunks that are final: cut points at least `max` bytes before the end of the buffer.
    pub fn ready(&mut self) -> Vec<Vec<u8>> {
        let max = self.cutter.params().max as usize;
        let mut out = Vec::new();
        while self.buf.len() - self.start >= max {
            let n = self.cutter.cut(&self.buf[self.start..]);
            out.push(self.buf[self.start..self.start + n].to_vec());
            self.start += n;
        }
        if self.start > (1 << 20) {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        out
    }

    /// The remaining chunks, at the end of the stream.
    pub fn finish(mut self) -> Vec<Vec<u8>> {
        let mut out = self.ready();
        while self.start < self.buf.len() {
            let n = self.cutter.cut(&self.buf[self.start..]);
            out.push(self.buf[self.start..self.start + n].to_vec());
            self.start += n;
        }
        out
    }
}

/// Decodes items from a sequence of tree chunks fetched on demand, checking structure.
pub struct TreeReader<F> {
    refs: std::vec::IntoIter<ChunkRef>,
    fetch: F,
    buf: Vec<u8>,
    pos: usize,
    state: ReadState,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ReadState {
    First,
    Between,
    InFile,
    Done,
}

impl<F, E> TreeReader<F>
where
    F: FnMut(&ChunkRef) -> Result<Vec<u8>, E>,
    E: From<TreeError>,
{
    /// A reader over the tree chunks `refs`, fetching each with `fetch`.
    pub fn new(refs: Vec<ChunkRef>, fetch: F) -> Self {
        Self { refs: refs.into_iter(), fetch, buf: Vec::new(), pos: 0, state: ReadState::First }
    }

    /// The next item, or `None` after `End`.
    pub fn next_item(&mut self) -> Result<Option<Item>, E> {
        if self.state == ReadState::Done {
            return Ok(None);
        }
        if !self.fill(4)? {
            return Err(TreeError::Truncated.into());
        }
        let len = u32::from_le_bytes(self.buf[self.pos..self.pos + 4].try_into().expect("4"));
        let len = len as usize;
        if len > MAX_ITEM_BYTES {
            return Err(TreeError::TooLarge(len).into());
        }
        if !self.fill(4 + len)? {
            return Err(TreeError::Truncated.into());
        }
        let body = &self.buf[self.pos + 4..self.pos + 4 + len];
        let item: Item = minicbor::decode(body).map_err(|e| TreeError::Malformed(e.to_string()))?;
        self.pos += 4 + len;
        self.check(&item)?;
        Ok(Some(item))
    }

    fn fill(&mut self, need: usize) -> Result<bool, E> {
        while self.buf.len() - self.pos < need {
            let Some(r) = self.refs.next() else { return Ok(false) };
            let chunk = (self.fetch)(&r)?;
            self.buf.drain(..self.pos);
            self.pos = 0;
            self.buf.extend_from_slice(&chunk);
        }
        Ok(true)
    }

    fn check(&mut self, item: &Item) -> Result<(), TreeError> {
        use ReadState::*;
        let next = match (self.state, item) {
            (First, Item::Dir { path, .. } | Item::Symlink { path, .. }) if path.is_empty() => {
                Between
            }
            (First, Item::File { path, .. }) if path.is_empty() => InFile,
            (First, _) => return Err(TreeError::Order("the first item must be the root entry")),
            (Between, Item::Dir { path, .. } | Item::Symlink { path, .. }) => {
                check_path(path)?;
                Between
            }
            (Between, Item::File { path, .. }) => {
                check_path(path)?;
                InFile
            }
            (Between, Item::End(_)) => Done,
            (Between, _) => return Err(TreeError::Order("chunk outside a file")),
            (InFile, Item::Chunk(_)) => InFile,
            (InFile, Item::FileEnd { .. }) => Between,
            (InFile, _) => return Err(TreeError::Order("file without its end")),
            (Done, _) => return Err(TreeError::Order("items after the end")),
        };
        self.state = next;
        Ok(())
    }
}

/// Accepts only relative paths of normal components: no empty, `.` or `..` component, no NUL.
pub fn check_path(path: &[u8]) -> Result<(), TreeError> {
    let bad = path.is_empty()
        || path.contains(&0)
        || path.split(|b| *b == b'/').any(|c| c.is_empty() || c == b"." || c == b"..");
    if bad {
        Err(TreeError::UnsafePath(String::from_utf8_lossy(path).into_owned()))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::chunker::TREE_CHUNKS;
    use super::*;

    fn meta() -> Meta {
        Meta { mode: 0o644, mtime_s: 1, mtime_ns: 2, uid: 0, gid: 0 }
    }

    fn write(items: &[Item]) -> Vec<Vec<u8>> {
        let mut w = TreeWriter::new(Cutter::new(TREE_CHUNKS, 9));
        let mut chunks = Vec::new();
        for i in items {
            w.push(i);
            chunks.extend(w.ready());
        }
        chunks.extend(w.finish());
        chunks
    }

    fn read(chunks: Vec<Vec<u8>>) -> Result<Vec<Item>, TreeError> {
        let refs: Vec<ChunkRef> = (0..chunks.len())
            .map(|i| ChunkRef { id: [i as u8; 32], key: [0; 32], len: 0 })
            .collect();
        let mut r = TreeReader::new(refs, |r: &ChunkRef| {
            Ok::<_, TreeError>(chunks[r.id[0] as usize].clone())
        });
        let mut out = Vec::new();
        while let Some(i) = r.next_item()? {
            out.push(i);
        }
        Ok(out)
    }

    fn sample(n: usize) -> Vec<Item> {
        let mut items = vec![Item::Dir { path: vec![], meta: meta() }];
        let change = ChangeKey { size: 3, mtime_ns: 1, ctime_ns: 1, ino: 1, dev: 1 };
        for i in 0..n {
            items.push(Item::File {
                path: format!("dir/file-{i:05}").into_bytes(),
                meta: meta(),
                change,
            });
            items.push(Item::Chunk(ChunkRef { id: [i as u8; 32], key: [1; 32], len: 3 }));
            items.push(Item::FileEnd { size: 3 });
        }
        items.push(Item::End(TreeStats {
            files: n as u64,
            dirs: 1,
            symlinks: 0,
            bytes: 3 * n as u64,
        }));
        items
    }

    #[test]
    fn items_round_trip_across_many_chunks() {
        let items = sample(3000);
        let chunks = write(&items);
        assert!(chunks.len() > 5, "{} chunks", chunks.len());
        assert_eq!(read(chunks).unwrap(), items);
    }

    #[test]
    fn truncation_is_detected() {
        let mut chunks = write(&sample(3000));
        chunks.pop();
        assert_eq!(read(chunks), Err(TreeError::Truncated));
    }

    #[test]
    fn escaping_paths_are_refused() {
        for bad in ["..", "a/../b", "/etc/passwd", "a//b", "./a", "a/."] {
            let items = vec![
                Item::Dir { path: vec![], meta: meta() },
                Item::Dir { path: bad.as_bytes().to_vec(), meta: meta() },
                Item::End(TreeStats::default()),
            ];
            assert!(matches!(read(write(&items)), Err(TreeError::UnsafePath(_))), "{bad}");
        }
    }
}
