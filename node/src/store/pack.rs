//! Pack files: many blobs in one file, as restic and borg store them.
//!
//! ```text
//! "KITHPACK" | version u8 = 1 | 7 zero bytes          16-byte header
//! blob 0 | blob 1 | ...                                 stored bytes, back to back
//! trailer: CBOR [[id bytes(32), kind u8, len u32], ...]
//! trailer length u32 LE | "KITHTAIL"                    12-byte footer
//! ```
//!
//! Blob offsets follow from the lengths. The trailer lets `verify` and an index rebuild read a
//! pack without the index. A pack is written in `tmp/`, synced, then renamed into `packs/`
//! before the index names it, so the index never points at a pack that is not complete.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use minicbor::{Decode, Encode};

use crate::ids::ChunkId;

/// Magic at the start of every pack.
pub const PACK_MAGIC: &[u8; 8] = b"KITHPACK";
/// Magic at the end of every pack.
pub const PACK_TAIL_MAGIC: &[u8; 8] = b"KITHTAIL";
/// Pack format version this build writes and the newest it reads.
pub const PACK_VERSION: u8 = 1;
/// Size of the pack header.
pub const PACK_HEADER_LEN: u64 = 16;
/// A pack is closed once it reaches this size.
pub const PACK_TARGET_BYTES: u64 = 16 << 20;
/// Largest blob a pack accepts (a chunk envelope is at most 1 MiB plus overhead; a root is
/// small). Bounds what a reader allocates for one blob.
pub const MAX_BLOB_BYTES: u32 = 16 << 20;
const FOOTER_LEN: u64 = 12;
const WRITE_BUFFER: usize = 64 << 10;
const MAX_TRAILER_BYTES: u64 = 64 << 20;

/// What a blob is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum BlobKind {
    /// A chunk envelope: file data or a piece of a tree.
    Chunk = 0,
    /// An object root: an age file holding the object's recipe.
    Root = 1,
}

impl BlobKind {
    /// Decodes a kind byte.
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            0 => Some(Self::Chunk),
            1 => Some(Self::Root),
            _ => None,
        }
    }
}

/// One blob listed in a pack trailer.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(array)]
pub struct TrailerEntry {
    /// The blob's id.
    #[n(0)]
    #[cbor(with = "minicbor::bytes")]
    pub id: [u8; 32],
    /// Its kind byte.
    #[n(1)]
    pub kind: u8,
    /// Its length.
    #[n(2)]
    pub len: u32,
}

/// Where a blob sits in a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    /// The pack's number.
    pub pack: u64,
    /// Byte offset in the pack.
    pub offset: u64,
    /// Length in bytes.
    pub len: u32,
    /// What the blob is.
    pub kind: BlobKind,
}

/// Why a pack could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PackError {
    /// I/O failed.
    #[error("{path}: {source}")]
    Io {
        /// The pack.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The pack's structure is damaged.
    #[error("{path}: damaged pack ({reason})")]
    Damaged {
        /// The pack.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// File name of pack `n`.
pub fn pack_file_name(n: u64) -> String {
    format!("{n:016x}.pack")
}

/// Parses a pack file name back to its number.
pub fn parse_pack_file_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".pack")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// Writes one pack in the temporary directory.
pub struct PackWriter {
    number: u64,
    path: PathBuf,
    out: BufWriter<File>,
    offset: u64,
    entries: Vec<(TrailerEntry, u64)>,
}

/// A pack whose blobs and trailer are written and flushed, still in the temporary directory.
pub struct FinishedPack {
    /// The pack's number.
    pub number: u64,
    /// Its temporary path.
    pub tmp_path: PathBuf,
    /// The open file, to be synced.
    pub file: File,
    /// Its blobs with their offsets.
    pub entries: Vec<(TrailerEntry, u64)>,
    /// Its size in bytes.
    pub size: u64,
    /// Bytes of blob data in it (every blob it was written with).
    pub data: u64,
}

impl PackWriter {
    /// Starts pack `number` in `tmp_dir`.
    pub fn create(tmp_dir: &Path, number: u64) -> io::Result<Self> {
        let path = tmp_dir.join(pack_file_name(number));
        let file = OpenOptions::new().write(true).create(true).truncate(true).open(&path)?;
        // Small blobs are gathered; a blob of this size or more goes to the file directly.
        let mut out = BufWriter::with_capacity(WRITE_BUFFER, file);
        let mut header = [0u8; PACK_HEADER_LEN as usize];
        header[..8].copy_from_slice(PACK_MAGIC);
        header[8] = PACK_VERSION;
        out.write_all(&header)?;
        Ok(Self { number, path, out, offset: PACK_HEADER_LEN, entries: Vec::new() })
    }

    /// The pack's number.
    pub fn number(&self) -> u64 {
        self.number
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.offset
    }

    /// Whether no blob has been added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends a blob and returns its offset.
    pub fn append(&mut self, id: ChunkId, kind: BlobKind, bytes: &[u8]) -> io::Result<u64> {
        self.append_parts(id, kind, &[bytes])
    }

    /// Appends a blob given in pieces (as it arrived from the network) and returns its offset.
    pub fn append_parts(
        &mut self,
        id: ChunkId,
        kind: BlobKind,
        parts: &[&[u8]],
    ) -> io::Result<u64> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let len = u32::try_from(total)
            .ok()
            .filter(|l| *l <= MAX_BLOB_BYTES)
            .ok_or_else(|| io::Error::other("blob larger than the pack limit"))?;
        for p in parts {
            self.out.write_all(p)?;
        }
        let at = self.offset;
        self.entries.push((TrailerEntry { id: id.0, kind: kind as u8, len }, at));
        self.offset += len as u64;
        Ok(at)
    }

    /// Writes the trailer and footer and flushes (without syncing).
    pub fn finish(mut self) -> io::Result<FinishedPack> {
        let list: Vec<&TrailerEntry> = self.entries.iter().map(|(e, _)| e).collect();
        let trailer = minicbor::to_vec(&list).expect("encoding into a Vec cannot fail");
        self.out.write_all(&trailer)?;
        self.out.write_all(&(trailer.len() as u32).to_le_bytes())?;
        self.out.write_all(PACK_TAIL_MAGIC)?;
        let size = self.offset + trailer.len() as u64 + FOOTER_LEN;
        let data = self.entries.iter().map(|(e, _)| u64::from(e.len)).sum();
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        Ok(FinishedPack {
            number: self.number,
            tmp_path: self.path,
            file,
            entries: self.entries,
            size,
            data,
        })
    }

    /// Abandons the pack and removes its file.
    pub fn discard(self) {
        let path = self.path.clone();
        drop(self);
        let _ = fs::remove_file(path);
    }
}

/// Reads `len` bytes at `offset` of an open pack.
pub fn read_at(file: &File, offset: u64, len: u32) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

/// Reads a pack's trailer: its blobs with their offsets.
pub fn read_trailer(path: &Path) -> Result<Vec<(TrailerEntry, u64)>, PackError> {
    let io_err = |source| PackError::Io { path: path.to_path_buf(), source };
    let damaged = |reason: String| PackError::Damaged { path: path.to_path_buf(), reason };
    let mut f = File::open(path).map_err(io_err)?;
    let size = f.metadata().map_err(io_err)?.len();
    if size < PACK_HEADER_LEN + FOOTER_LEN {
        return Err(damaged(format!("only {size} bytes")));
    }
    let mut header = [0u8; PACK_HEADER_LEN as usize];
    f.read_exact(&mut header).map_err(io_err)?;
    if &header[..8] != PACK_MAGIC {
        return Err(damaged("no pack header".into()));
    }
    if header[8] == 0 || header[8] > PACK_VERSION {
        return Err(damaged(format!("pack version {} is not supported", header[8])));
    }
    let mut footer = [0u8; FOOTER_LEN as usize];
    f.seek(SeekFrom::Start(size - FOOTER_LEN)).map_err(io_err)?;
    f.read_exact(&mut footer).map_err(io_err)?;
    if &footer[4..] != PACK_TAIL_MAGIC {
        return Err(damaged("no pack footer (truncated?)".into()));
    }
    let tlen = u32::from_le_bytes(footer[..4].try_into().expect("4 bytes")) as u64;
    if tlen > MAX_TRAILER_BYTES || tlen + FOOTER_LEN + PACK_HEADER_LEN > size {
        return Err(damaged(format!("trailer length {tlen} does not fit")));
    }
    let mut trailer = vec![0u8; tlen as usize];
    f.read_exact_at(&mut trailer, size - FOOTER_LEN - tlen).map_err(io_err)?;
    let list: Vec<TrailerEntry> =
        minicbor::decode(&trailer).map_err(|e| damaged(format!("trailer: {e}")))?;
    let mut offset = PACK_HEADER_LEN;
    let mut out = Vec::with_capacity(list.len());
    for e in list {
        let len = e.len as u64;
        out.push((e, offset));
        offset += len;
    }
    if offset != size - FOOTER_LEN - tlen {
        return Err(damaged("blob lengths do not add up to the data area".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_trailer_and_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = PackWriter::create(dir.path(), 5).unwrap();
        let blobs: Vec<Vec<u8>> = vec![b"one".to_vec(), vec![9; 1000], b"three".to_vec()];
        for (i, b) in blobs.iter().enumerate() {
            let kind = if i == 2 { BlobKind::Root } else { BlobKind::Chunk };
            w.append(ChunkId::of(b), kind, b).unwrap();
        }
        let done = w.finish().unwrap();
        assert_eq!(done.size, fs::metadata(&done.tmp_path).unwrap().len());
        let trailer = read_trailer(&done.tmp_path).unwrap();
        assert_eq!(trailer.len(), 3);
        let file = File::open(&done.tmp_path).unwrap();
        for ((e, off), b) in trailer.iter().zip(&blobs) {
            assert_eq!(e.id, ChunkId::of(b).0);
            assert_eq!(&read_at(&file, *off, e.len).unwrap(), b);
        }
        assert_eq!(trailer[2].0.kind, BlobKind::Root as u8);
    }

    #[test]
    fn truncated_pack_is_reported_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = PackWriter::create(dir.path(), 1).unwrap();
        w.append(ChunkId::of(b"x"), BlobKind::Chunk, b"x").unwrap();
        let done = w.finish().unwrap();
        let f = OpenOptions::new().write(true).open(&done.tmp_path).unwrap();
        f.set_len(done.size - 3).unwrap();
        let e = read_trailer(&done.tmp_path).unwrap_err();
        assert!(e.to_string().contains("damaged pack"), "{e}");
    }

    #[test]
    fn pack_names_round_trip() {
        assert_eq!(parse_pack_file_name(&pack_file_name(0xabc)), Some(0xabc));
        assert_eq!(parse_pack_file_name("x.pack"), None);
    }
}
