//! Content-defined chunking: FastCDC (fastcdc 5.0.0, v2020) with a secret gear table.
//!
//! Boundaries depend on the data and on the owner's seed, so one edit changes about one chunk,
//! and a holder cannot recognise known files by their chunk sizes. The parameters are recorded
//! in every object root, so a reader knows how an object was cut.

use std::borrow::Cow;
use std::io::{self, Read};

use fastcdc::v2020::{Normalization, cut_gear, get_gear_with_seed, select_masks};
use minicbor::{Decode, Encode};

/// The chunker version recorded in roots: fastcdc's crate version, whose cut points we pinned.
pub const CHUNKER_NAME: &str = "fastcdc-5.0.0-v2020";

/// Sizes for file data: 64 KiB minimum, 256 KiB average, 1 MiB maximum (level 1). Chosen by
/// measurement (docs/benchmarks.md): zstd compresses larger chunks better, and the
/// reference dataset's v2 costs only a few percent more new bytes than with 64 KiB chunks.
pub const DATA_CHUNKS: ChunkerParams =
    ChunkerParams { min: 64 << 10, avg: 256 << 10, max: 1 << 20, level: 1 };

/// Sizes for the tree stream (the manifest): small, so one changed entry rewrites little.
pub const TREE_CHUNKS: ChunkerParams =
    ChunkerParams { min: 4 << 10, avg: 16 << 10, max: 64 << 10, level: 1 };

/// Read buffer of the streaming chunker; bounds its memory.
const READ_BUFFER: usize = 4 << 20;

/// Chunk size limits and normalisation level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
#[cbor(array)]
pub struct ChunkerParams {
    /// Smallest chunk, except the last of a stream.
    #[n(0)]
    pub min: u32,
    /// Target average (a power of two).
    #[n(1)]
    pub avg: u32,
    /// Largest chunk.
    #[n(2)]
    pub max: u32,
    /// FastCDC normalisation level (0 to 3).
    #[n(3)]
    pub level: u8,
}

/// Chunker parameters outside the limits fastcdc supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid chunker parameters {params:?}")]
pub struct InvalidParams {
    /// The parameters refused.
    pub params: ChunkerParams,
}

impl ChunkerParams {
    /// Checks the limits fastcdc only checks in debug builds.
    pub fn validate(&self) -> Result<(), InvalidParams> {
        let ok = self.min >= 64
            && self.min <= self.avg
            && self.avg <= self.max
            && self.avg.is_power_of_two()
            && self.min.is_multiple_of(2)
            && self.max.is_multiple_of(2)
            && self.max <= 16 << 20
            && self.level <= 3;
        if ok { Ok(()) } else { Err(InvalidParams { params: *self }) }
    }
}

/// Finds cut points with fixed parameters and seed.
pub struct Cutter {
    params: ChunkerParams,
    masks: (u64, u64),
    gear: Cow<'static, [u64]>,
    gear_ls: Cow<'static, [u64]>,
}

impl Cutter {
    /// A cutter for `params` with the owner's `seed`.
    pub fn new(params: ChunkerParams, seed: u64) -> Self {
        params.validate().expect("chunker parameters are constants that validate");
        let level = match params.level {
            0 => Normalization::Level0,
            1 => Normalization::Level1,
            2 => Normalization::Level2,
            _ => Normalization::Level3,
        };
        let masks = select_masks(params.avg as usize, level);
        let (gear, gear_ls) = get_gear_with_seed(seed);
        Self { params, masks, gear, gear_ls }
    }

    /// The parameters.
    pub fn params(&self) -> ChunkerParams {
        self.params
    }

    /// Cuts a whole in-memory stream into chunks.
    pub fn split(&self, data: &[u8]) -> Vec<Vec<u8>> {
        self.pieces(data).map(<[u8]>::to_vec).collect()
    }

    /// The chunks of a whole in-memory stream, as slices of it (no copy).
    pub fn pieces<'d>(&self, data: &'d [u8]) -> impl Iterator<Item = &'d [u8]> {
        let mut rest = data;
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            let (chunk, tail) = rest.split_at(self.cut(rest));
            rest = tail;
            Some(chunk)
        })
    }

    /// Length of the first chunk of `data`. At the end of a stream the whole remainder is a
    /// chunk; otherwise `data` must hold at least `max` bytes for the cut to be final.
    pub fn cut(&self, data: &[u8]) -> usize {
        let p = self.params;
        let (mask_s, mask_l) = self.masks;
        let (_, n) = cut_gear(
            data,
            p.min as usize,
            p.avg as usize,
            p.max as usize,
            mask_s,
            mask_l,
            mask_s << 1,
            mask_l << 1,
            &self.gear,
            &self.gear_ls,
        );
        n
    }
}

/// Cuts a reader into owned chunks through a fixed, reusable buffer.
pub struct Chunker<'c, 'b, R> {
    cutter: &'c Cutter,
    reader: R,
    buf: &'b mut Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
}

impl<'c, 'b, R: Read> Chunker<'c, 'b, R> {
    /// A chunker over `reader` that reads through `buf` (grown once to its working size, and
    /// worth keeping for the next file: allocating it per file costs more than chunking).
    pub fn new(cutter: &'c Cutter, reader: R, buf: &'b mut Vec<u8>) -> Self {
        let size = READ_BUFFER.max(2 * cutter.params.max as usize);
        if buf.len() < size {
            buf.resize(size, 0);
        }
        Self { cutter, reader, buf, start: 0, end: 0, eof: false }
    }

    fn fill(&mut self) -> io::Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while !self.eof && self.end < self.buf.len() {
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl<R: Read> Iterator for Chunker<'_, '_, R> {
    type Item = io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        if !self.eof
            && self.end - self.start < self.cutter.params.max as usize
            && let Err(e) = self.fill()
        {
            return Some(Err(e));
        }
        if self.start == self.end {
            return None;
        }
        let n = self.cutter.cut(&self.buf[self.start..self.end]);
        let chunk = self.buf[self.start..self.start + n].to_vec();
        self.start += n;
        Some(Ok(chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(len: usize, mut x: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn cut_all(cutter: &Cutter, data: &[u8]) -> Vec<Vec<u8>> {
        let mut buf = Vec::new();
        let streamed: Vec<Vec<u8>> =
            Chunker::new(cutter, data, &mut buf).collect::<io::Result<_>>().unwrap();
        assert_eq!(streamed, cutter.split(data), "streaming and in-memory cutting agree");
        streamed
    }

    #[test]
    fn chunks_reassemble_and_respect_limits() {
        let cutter = Cutter::new(DATA_CHUNKS, 42);
        let data = pseudo_random(10 << 20, 1);
        let chunks = cut_all(&cutter, &data);
        assert_eq!(chunks.concat(), data);
        for c in &chunks[..chunks.len() - 1] {
            assert!(c.len() >= DATA_CHUNKS.min as usize && c.len() <= DATA_CHUNKS.max as usize);
        }
        assert!(cut_all(&cutter, b"").is_empty());
    }

    #[test]
    fn one_edit_changes_few_chunks() {
        let cutter = Cutter::new(DATA_CHUNKS, 42);
        let a = pseudo_random(8 << 20, 2);
        let mut b = a.clone();
        b.insert(3 << 20, 0xAB);
        let ca = cut_all(&cutter, &a);
        let cb = cut_all(&cutter, &b);
        let new = cb.iter().filter(|c| !ca.contains(c)).count();
        assert!(new <= 2, "{new} of {} chunks changed", cb.len());
    }

    #[test]
    fn the_seed_moves_boundaries() {
        let data = pseudo_random(4 << 20, 3);
        let a: Vec<usize> =
            cut_all(&Cutter::new(DATA_CHUNKS, 1), &data).iter().map(Vec::len).collect();
        let b: Vec<usize> =
            cut_all(&Cutter::new(DATA_CHUNKS, 2), &data).iter().map(Vec::len).collect();
        assert_ne!(a, b);
    }

    /// Golden vector: fails if a fastcdc upgrade moves cut points (which would silently stop
    /// deduplication against existing stores).
    #[test]
    fn cut_points_are_stable() {
        let data = pseudo_random(3 << 20, 4);
        let lens: Vec<usize> =
            cut_all(&Cutter::new(DATA_CHUNKS, 0x5eed), &data).iter().map(Vec::len).collect();
        assert_eq!(lens, GOLDEN_LENS, "fastcdc cut points changed");
    }

    const GOLDEN_LENS: &[usize] =
        &[97951, 69124, 119082, 634280, 505321, 368743, 349784, 230238, 91274, 370509, 309422];
}
