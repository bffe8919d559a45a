//! Limits on what automerge may make of bytes that come from elsewhere, checked before it sees
//! them.
//!
//! automerge inflates DEFLATE-compressed chunks and columns without a limit, so a few MiB from
//! a peer could become GiB in memory. [`check_chunks`] walks the chunks of a saved document or
//! of a sync message's changes by the binary format's own framing (magic, checksum, type,
//! length; for a document the column metadata), counts what every compressed part would
//! inflate to with a small fixed buffer, and refuses the whole input once the total passes a
//! budget, before anything is allocated for it. Chunk types other than documents, changes and
//! compressed changes (such as automerge's experimental bundles) are refused: kith never sends
//! them.

use std::io::Read;

use crate::signed::{DocError, MAX_CHANGE_BYTES};

/// What the chunks of one document file or one sync message may expand to in all. A pool
/// document of tens of thousands of objects is a few MiB; this leaves room without letting a
/// peer make a node allocate much.
pub const MAX_INFLATED_BYTES: usize = 16 << 20;

const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
const DOCUMENT: u8 = 0;
const CHANGE: u8 = 1;
const COMPRESSED_CHANGE: u8 = 2;
/// The bit of a column specification that says its data is DEFLATE-compressed.
const DEFLATE_BIT: u64 = 0b1000;

/// Checks every chunk in `bytes` and takes what they expand to from `budget` (bytes); an
/// error, and nothing given to automerge, when the framing is broken or the budget runs out.
pub fn check_chunks(bytes: &[u8], budget: &mut usize) -> Result<(), DocError> {
    let mut r = Reader { b: bytes };
    while !r.b.is_empty() {
        if r.take(4)? != MAGIC {
            return Err(malformed("a chunk does not start with automerge's magic bytes"));
        }
        r.take(4)?; // checksum, verified by automerge
        let kind = r.take(1)?[0];
        let len = r.uleb()?;
        let data = r.take_len(len)?;
        match kind {
            DOCUMENT => check_document(data, budget)?,
            CHANGE => {
                if data.len() > MAX_CHANGE_BYTES {
                    return Err(too_large(MAX_CHANGE_BYTES, "a change"));
                }
                spend(budget, data.len())?;
            }
            COMPRESSED_CHANGE => {
                let n = inflated_len(data, MAX_CHANGE_BYTES)?;
                spend(budget, n)?;
            }
            other => return Err(malformed(&format!("chunk type {other} is not accepted"))),
        }
    }
    Ok(())
}

/// A document chunk: actors, heads, the change and operation column metadata, then the
/// columns; compressed columns are counted at their inflated size.
fn check_document(data: &[u8], budget: &mut usize) -> Result<(), DocError> {
    let mut r = Reader { b: data };
    let actors = r.uleb()?;
    for _ in 0..actors {
        let n = r.uleb()?;
        r.take_len(n)?;
    }
    let heads = r.uleb()?;
    r.take_len(heads.checked_mul(32).ok_or_else(|| malformed("too many heads"))?)?;
    let mut columns = Vec::new();
    for _ in 0..2 {
        let n = r.uleb()?;
        if n > r.b.len() as u64 {
            return Err(malformed("more columns than bytes"));
        }
        for _ in 0..n {
            let spec = r.uleb()?;
            let len = r.uleb()?;
            columns.push((spec & DEFLATE_BIT != 0, len));
        }
    }
    for (deflated, len) in columns {
        let col = r.take_len(len)?;
        if deflated {
            let n = inflated_len(col, *budget)?;
            spend(budget, n)?;
        } else {
            spend(budget, col.len())?;
        }
    }
    // What follows (head indexes) is read by automerge from what is left, in place.
    spend(budget, r.b.len())
}

/// What `data` inflates to, counted with a fixed buffer; an error past `limit` bytes or when it
/// is not DEFLATE data.
fn inflated_len(data: &[u8], limit: usize) -> Result<usize, DocError> {
    let mut d = flate2::read::DeflateDecoder::new(data);
    let mut buf = [0u8; 16 << 10];
    let mut total = 0usize;
    loop {
        let n = d.read(&mut buf).map_err(|e| malformed(&format!("bad compressed data: {e}")))?;
        if n == 0 {
            return Ok(total);
        }
        total += n;
        if total > limit {
            return Err(too_large(limit, "compressed data"));
        }
    }
}

fn spend(budget: &mut usize, n: usize) -> Result<(), DocError> {
    *budget = budget.checked_sub(n).ok_or_else(|| too_large(MAX_INFLATED_BYTES, "the data"))?;
    Ok(())
}

fn malformed(why: &str) -> DocError {
    DocError::Format(format!("malformed automerge data: {why}"))
}

fn too_large(limit: usize, what: &str) -> DocError {
    DocError::Expands { what: what.to_string(), limit }
}

/// A cursor over untrusted bytes: every read is bounded by what is there.
struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DocError> {
        if n > self.b.len() {
            return Err(malformed("truncated"));
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }

    fn take_len(&mut self, n: u64) -> Result<&'a [u8], DocError> {
        self.take(usize::try_from(n).map_err(|_| malformed("a length past the address space"))?)
    }

    fn uleb(&mut self) -> Result<u64, DocError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)?[0];
            v |= u64::from(byte & 0x7f).checked_shl(shift).unwrap_or(0);
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(malformed("a number longer than 64 bits"))
    }
}
