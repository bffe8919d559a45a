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
//!
//! Bytes are not the only measure: a run-length column says "a billion of these" in a few
//! bytes, and automerge walks (and collects) every entry a column declares. So every column of
//! a change or a document is walked run by run, never entry by entry, and the entries it
//! declares are counted: a change may declare at most [`MAX_CHANGE_ENTRIES`] per column, a
//! document [`MAX_DOCUMENT_ENTRIES`].

use std::io::Read;

use crate::signed::{DocError, MAX_CHANGE_BYTES};

/// What the chunks of one document file or one sync message may expand to in all. A pool
/// document of tens of thousands of objects is a few MiB; this leaves room without letting a
/// peer make a node allocate much.
pub const MAX_INFLATED_BYTES: usize = 16 << 20;

/// Most entries (operations, predecessors, ...) one column of a change may declare. A change is
/// at most 64 KiB; a change of a kith document writes a few dozen values.
pub const MAX_CHANGE_ENTRIES: u64 = 1 << 16;

/// Most entries one column of a document may declare (a year of a large pool's ledger is far
/// below this).
pub const MAX_DOCUMENT_ENTRIES: u64 = 1 << 22;

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
                check_change(data)?;
            }
            COMPRESSED_CHANGE => {
                let n = inflated_len(data, MAX_CHANGE_BYTES)?;
                spend(budget, n)?;
                check_change(&inflate(data, MAX_CHANGE_BYTES)?)?;
            }
            other => return Err(malformed(&format!("chunk type {other} is not accepted"))),
        }
    }
    Ok(())
}

/// Changes carried by other means than sync (a drop file): `bytes` must be change chunks only
/// (no document chunk), each checked against the bounds before automerge parses it; what they
/// inflate to is taken from `budget`.
pub fn carried_changes(
    bytes: &[u8],
    budget: &mut usize,
) -> Result<Vec<automerge::Change>, DocError> {
    check_chunks(bytes, budget)?;
    let mut r = Reader { b: bytes };
    while !r.b.is_empty() {
        r.take(4)?;
        r.take(4)?;
        let kind = r.take(1)?[0];
        let len = r.uleb()?;
        r.take_len(len)?;
        if kind == DOCUMENT {
            return Err(malformed("a whole document where changes were expected"));
        }
    }
    changes_in(bytes)
}

/// The changes among the chunks of `bytes` (which [`check_chunks`] passed), parsed by
/// automerge one by one; document chunks are left out.
pub(crate) fn changes_in(bytes: &[u8]) -> Result<Vec<automerge::Change>, DocError> {
    let mut out = Vec::new();
    let mut r = Reader { b: bytes };
    while !r.b.is_empty() {
        let start = bytes.len() - r.b.len();
        r.take(4)?;
        r.take(4)?;
        let kind = r.take(1)?[0];
        let len = r.uleb()?;
        r.take_len(len)?;
        let end = bytes.len() - r.b.len();
        if kind == CHANGE || kind == COMPRESSED_CHANGE {
            let chunk = &bytes[start..end];
            let c = crate::signed::guard(|| {
                automerge::Change::try_from(chunk)
                    .map_err(|e| malformed(&format!("a change that does not parse: {e}")))
            })?;
            out.push(c);
        }
    }
    Ok(out)
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
            columns.push((spec, len));
        }
    }
    for (spec, len) in columns {
        let col = r.take_len(len)?;
        if spec & DEFLATE_BIT != 0 {
            let n = inflated_len(col, *budget)?;
            spend(budget, n)?;
            count_entries(spec, &inflate(col, n)?, MAX_DOCUMENT_ENTRIES)?;
        } else {
            spend(budget, col.len())?;
            count_entries(spec, col, MAX_DOCUMENT_ENTRIES)?;
        }
    }
    // What follows (head indexes) is read by automerge from what is left, in place.
    spend(budget, r.b.len())
}

/// A change's body: its header (dependencies, actor, sequence, start, time, message, other
/// actors), then its operation columns, each walked by [`count_entries`].
fn check_change(data: &[u8]) -> Result<(), DocError> {
    let mut r = Reader { b: data };
    let deps = r.uleb()?;
    r.take_len(deps.checked_mul(32).ok_or_else(|| malformed("too many dependencies"))?)?;
    let actor = r.uleb()?;
    r.take_len(actor)?;
    r.uleb()?; // sequence number
    r.uleb()?; // start op
    r.uleb()?; // time (signed, same framing)
    let message = r.uleb()?;
    r.take_len(message)?;
    let others = r.uleb()?;
    if others > r.b.len() as u64 {
        return Err(malformed("more actors than bytes"));
    }
    for _ in 0..others {
        let n = r.uleb()?;
        r.take_len(n)?;
    }
    let n = r.uleb()?;
    if n > r.b.len() as u64 {
        return Err(malformed("more columns than bytes"));
    }
    let mut columns = Vec::new();
    for _ in 0..n {
        columns.push((r.uleb()?, r.uleb()?));
    }
    for (spec, len) in columns {
        let col = r.take_len(len)?;
        if spec & DEFLATE_BIT != 0 {
            return Err(malformed("a change with a compressed column"));
        }
        count_entries(spec, col, MAX_CHANGE_ENTRIES)?;
        op_ids_fit(spec, col)?;
    }
    Ok(())
}

/// In a change's operation columns, every actor index and every counter (an integer, or the
/// running sum of a delta column) fits in 32 bits: automerge builds operation ids from them
/// with an `unwrap` (a panic on a change anyone can send).
fn op_ids_fit(spec: u64, col: &[u8]) -> Result<(), DocError> {
    const ACTOR: u64 = 1;
    const INTEGER: u64 = 2;
    const DELTA: u64 = 3;
    let kind = spec & 0b111;
    if !matches!(kind, ACTOR | INTEGER | DELTA) {
        return Ok(());
    }
    let too_big = || malformed("an operation id past 32 bits");
    let mut r = Reader { b: col };
    let mut sum: i128 = 0;
    let mut value = |r: &mut Reader<'_>, times: u64| -> Result<(), DocError> {
        if kind == DELTA {
            sum += i128::from(r.sleb()?) * i128::from(times);
            if !(0..=i128::from(u32::MAX)).contains(&sum) {
                return Err(too_big());
            }
        } else if r.uleb()? > u64::from(u32::MAX) {
            return Err(too_big());
        }
        Ok(())
    };
    while !r.b.is_empty() {
        let count = r.sleb()?;
        if count == 0 {
            r.uleb()?; // a run of nulls
        } else if count > 0 {
            value(&mut r, count.unsigned_abs())?;
        } else {
            for _ in 0..count.unsigned_abs() {
                value(&mut r, 1)?;
            }
        }
    }
    Ok(())
}

/// Walks a column run by run and counts the entries it declares; an error past `limit`.
/// Column types (the low three bits of the specification): 0 group, 1 actor, 2 integer,
/// 3 delta, 4 boolean, 5 string, 6 value metadata (all run-length encoded but boolean, which
/// is alternating run lengths), 7 raw values (no entries of their own).
fn count_entries(spec: u64, col: &[u8], limit: u64) -> Result<u64, DocError> {
    const BOOLEAN: u64 = 4;
    const STRING: u64 = 5;
    const RAW: u64 = 7;
    let kind = spec & 0b111;
    let mut r = Reader { b: col };
    let mut total = 0u64;
    let over = || DocError::Expands { what: "a column's entries".into(), limit: limit as usize };
    let skip_value = |r: &mut Reader<'_>| -> Result<(), DocError> {
        if kind == STRING {
            let n = r.uleb()?;
            r.take_len(n)?;
        } else {
            r.uleb()?;
        }
        Ok(())
    };
    match kind {
        RAW => {}
        BOOLEAN => {
            while !r.b.is_empty() {
                total = total.saturating_add(r.uleb()?);
                if total > limit {
                    return Err(over());
                }
            }
        }
        _ => {
            while !r.b.is_empty() {
                let count = r.sleb()?;
                let n = count.unsigned_abs();
                total = total.saturating_add(if count == 0 { r.uleb()? } else { n });
                if total > limit {
                    return Err(over());
                }
                if count > 0 {
                    skip_value(&mut r)?;
                } else if count < 0 {
                    for _ in 0..n {
                        skip_value(&mut r)?;
                    }
                }
            }
        }
    }
    Ok(total)
}

/// `data` inflated, at most `limit` bytes (checked by [`inflated_len`] first where the size is
/// charged to a budget).
fn inflate(data: &[u8], limit: usize) -> Result<Vec<u8>, DocError> {
    let mut out = Vec::new();
    flate2::read::DeflateDecoder::new(data)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| malformed(&format!("bad compressed data: {e}")))?;
    if out.len() > limit {
        return Err(too_large(limit, "compressed data"));
    }
    Ok(out)
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

    fn sleb(&mut self) -> Result<i64, DocError> {
        let mut v = 0i64;
        let mut shift = 0u32;
        loop {
            let byte = self.take(1)?[0];
            if shift < 64 {
                v |= i64::from(byte & 0x7f) << shift;
            }
            shift += 7;
            if byte & 0x80 == 0 {
                if shift < 64 && byte & 0x40 != 0 {
                    v |= -1i64 << shift;
                }
                return Ok(v);
            }
            if shift >= 70 {
                return Err(malformed("a number longer than 64 bits"));
            }
        }
    }
}
