//! The framing shared by kith's carried files (exports, drops): a magic and a format number,
//! then entries `tag u8 | length u32 LE | payload`, closed by an end entry (tag 255) that holds
//! the number of entries before it and the BLAKE3 hash of every byte before it. A reader
//! checks bounds as it goes and gives entries out only while the end can still prove them; the
//! last `None` comes only after a valid end.

use std::io::{self, Read, Write};

/// The end entry's tag.
pub const TAG_END: u8 = 255;

/// Writes entries, hashing everything written.
pub struct FramedWriter<W: Write> {
    out: W,
    hash: blake3::Hasher,
    entries: u64,
}

impl<W: Write> FramedWriter<W> {
    /// Writes the header.
    pub fn new(out: W, magic: &[u8; 8], format: u32) -> io::Result<Self> {
        let mut w = FramedWriter { out, hash: blake3::Hasher::new(), entries: 0 };
        w.raw(magic)?;
        w.raw(&format.to_le_bytes())?;
        Ok(w)
    }

    fn raw(&mut self, b: &[u8]) -> io::Result<()> {
        self.hash.update(b);
        self.out.write_all(b)
    }

    /// Continues a file whose first `entries` entries were written and hashed into `hash`
    /// (see [`FramedReader::hasher`]); `out` is positioned after them.
    pub fn resume(out: W, hash: blake3::Hasher, entries: u64) -> Self {
        FramedWriter { out, hash, entries }
    }

    /// Writes one entry whose payload is `parts` one after the other.
    pub fn entry(&mut self, tag: u8, parts: &[&[u8]]) -> io::Result<()> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let len = u32::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "an entry over 4 GiB"))?;
        self.raw(&[tag])?;
        self.raw(&len.to_le_bytes())?;
        for p in parts {
            self.raw(p)?;
        }
        self.entries += 1;
        Ok(())
    }

    /// Writes the end entry and flushes.
    pub fn end(mut self) -> io::Result<W> {
        let digest = *self.hash.finalize().as_bytes();
        let entries = self.entries.to_le_bytes();
        self.out.write_all(&[TAG_END])?;
        self.out.write_all(&40u32.to_le_bytes())?;
        self.out.write_all(&entries)?;
        self.out.write_all(&digest)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Reads entries; errors are reasons in words (the caller says what kind of file it is).
pub struct FramedReader<R> {
    input: R,
    hash: blake3::Hasher,
    entries: u64,
    offset: u64,
    max_entry: u32,
    done: bool,
}

impl<R: Read> FramedReader<R> {
    /// Reads the header: `Ok((reader, format))`, or why it is not such a file.
    pub fn new(mut input: R, magic: &[u8; 8], max_entry: u32) -> Result<(Self, u32), String> {
        let mut head = [0u8; 12];
        input.read_exact(&mut head).map_err(|_| "it is shorter than its header".to_string())?;
        if &head[..8] != magic {
            return Err(format!("it does not start with {}", String::from_utf8_lossy(magic)));
        }
        let format = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
        let mut hash = blake3::Hasher::new();
        hash.update(&head);
        Ok((FramedReader { input, hash, entries: 0, offset: 12, max_entry, done: false }, format))
    }

    /// The next entry `(tag, payload)`; `None` once the end entry proved the file whole.
    pub fn next_raw(&mut self) -> Result<Option<(u8, Vec<u8>)>, String> {
        if self.done {
            return Ok(None);
        }
        let mut tl = [0u8; 5];
        self.input.read_exact(&mut tl).map_err(|_| "it is truncated (no end entry)".to_string())?;
        let len = u32::from_le_bytes(tl[1..5].try_into().expect("4 bytes"));
        if len > self.max_entry {
            return Err(format!("an entry of {len} bytes is larger than any"));
        }
        let mut payload = vec![0u8; len as usize];
        self.input.read_exact(&mut payload).map_err(|_| "it is truncated".to_string())?;
        if tl[0] == TAG_END {
            let digest = *self.hash.finalize().as_bytes();
            let ok = payload.len() == 40
                && payload[..8] == self.entries.to_le_bytes()
                && payload[8..] == digest;
            if !ok {
                return Err("its end does not match what came before (damaged)".into());
            }
            self.done = true;
            return Ok(None);
        }
        self.hash.update(&tl);
        self.hash.update(&payload);
        self.entries += 1;
        self.offset += 5 + u64::from(len);
        Ok(Some((tl[0], payload)))
    }

    /// The hash of everything read so far (the header and the whole entries given out).
    pub fn hasher(&self) -> blake3::Hasher {
        self.hash.clone()
    }

    /// Entries given out so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Bytes read so far: the header and the whole entries given out.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

/// A blob entry's payload, `id [32] | kind u8 | the blob as stored`, taken apart (the id is
/// not checked here: the store checks it); the reason in words if it is malformed.
pub fn blob_entry(
    mut payload: Vec<u8>,
) -> Result<(crate::ids::ChunkId, super::pack::BlobKind, Vec<u8>), String> {
    if payload.len() < 33 {
        return Err("a blob entry is too short".into());
    }
    let id = crate::ids::ChunkId(payload[..32].try_into().expect("32 bytes"));
    let kind = super::pack::BlobKind::from_u8(payload[32])
        .ok_or_else(|| format!("a blob of unknown kind {}", payload[32]))?;
    payload.drain(..33);
    Ok((id, kind, payload))
}
