//! BLAKE3 range proofs: a holder proves it has a blob by sending one 1 KiB chunk of it and the
//! chaining values of the sibling subtrees on the path to the root. The auditor needs only the
//! blob's id (its BLAKE3 hash) and length, both in the manifest, so any member can audit any
//! holder without holding the blob itself.
//!
//! The tree is BLAKE3's own (section 2.1 of the BLAKE3 paper): a subtree of `n` bytes splits
//! into a left part of `left_subtree_len(n)` bytes and the rest; chunks are 1024 bytes.

use blake3::hazmat::{
    HasherExt, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root,
};
use blake3::{CHUNK_LEN, Hasher};

/// Longest path: 2^64 bytes have at most 54 levels above 1 KiB chunks.
pub const MAX_PROOF_DEPTH: usize = 64;

/// One chunk of a blob and the sibling chaining values from the root down.
#[derive(Debug, Clone, PartialEq, Eq, minicbor::Encode, minicbor::Decode)]
pub struct RangeProof {
    /// The chunk's bytes.
    #[cbor(n(0), with = "minicbor::bytes")]
    pub data: Vec<u8>,
    /// Sibling chaining values, from the root's children down.
    #[n(1)]
    pub siblings: Vec<minicbor::bytes::ByteArray<32>>,
}

/// Chunks in a blob of `len` bytes (at least one).
pub fn chunks(len: u64) -> u64 {
    len.div_ceil(CHUNK_LEN as u64).max(1)
}

/// One level of a path: the sibling subtree's offset and length, and whether it is on the
/// right.
type Level = (u64, u64, bool);

/// The path to chunk `index` of a `len`-byte blob: each level from the top, then the chunk's
/// (offset, length).
fn path(len: u64, index: u64) -> (Vec<Level>, (u64, u64)) {
    let target = index * CHUNK_LEN as u64;
    let (mut start, mut n) = (0u64, len);
    let mut levels = Vec::new();
    while n > CHUNK_LEN as u64 {
        let left = left_subtree_len(n);
        if target < start + left {
            levels.push((start + left, n - left, true));
            n = left;
        } else {
            levels.push((start, left, false));
            start += left;
            n -= left;
        }
    }
    (levels, (start, n))
}

fn cv(offset: u64, bytes: &[u8]) -> [u8; 32] {
    let mut h = Hasher::new();
    h.set_input_offset(offset);
    h.update(bytes);
    h.finalize_non_root()
}

/// Proves chunk `index` of `blob`; `None` if the blob has no such chunk.
pub fn prove(blob: &[u8], index: u64) -> Option<RangeProof> {
    let len = blob.len() as u64;
    if index >= chunks(len) {
        return None;
    }
    let (levels, (start, n)) = path(len, index);
    let siblings = levels
        .iter()
        .map(|(off, l, _)| cv(*off, &blob[*off as usize..(*off + *l) as usize]).into())
        .collect();
    Some(RangeProof { data: blob[start as usize..(start + n) as usize].to_vec(), siblings })
}

/// Why a proof does not show what it claims.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The chunk asked for is not in the blob.
    #[error("chunk {index} is past the end of a {len}-byte blob")]
    PastEnd {
        /// The chunk asked for.
        index: u64,
        /// The blob's length.
        len: u64,
    },
    /// The proof's data is not the chunk's length.
    #[error("the chunk has {found} bytes, not {expected}")]
    Length {
        /// Bytes in the proof.
        found: usize,
        /// Bytes the chunk has.
        expected: u64,
    },
    /// The proof has the wrong number of sibling hashes.
    #[error("the proof has {found} sibling hashes, not {expected}")]
    Depth {
        /// Hashes in the proof.
        found: usize,
        /// Hashes the path needs.
        expected: usize,
    },
    /// The proof does not lead to the blob's id.
    #[error("the proof does not lead to the blob's id")]
    Mismatch,
}

/// Whether `proof` shows chunk `index` of the `len`-byte blob whose BLAKE3 hash is `id`.
pub fn check(id: &[u8; 32], len: u64, index: u64, proof: &RangeProof) -> Result<(), ProofError> {
    if index >= chunks(len) {
        return Err(ProofError::PastEnd { index, len });
    }
    let (levels, (start, n)) = path(len, index);
    if proof.data.len() as u64 != n {
        return Err(ProofError::Length { found: proof.data.len(), expected: n });
    }
    if proof.siblings.len() != levels.len() || levels.len() > MAX_PROOF_DEPTH {
        return Err(ProofError::Depth { found: proof.siblings.len(), expected: levels.len() });
    }
    if levels.is_empty() {
        return match blake3::hash(&proof.data).as_bytes() == id {
            true => Ok(()),
            false => Err(ProofError::Mismatch),
        };
    }
    let mut acc = cv(start, &proof.data);
    for (i, ((_, _, right), sib)) in levels.iter().zip(&proof.siblings).enumerate().rev() {
        let (l, r) = if *right { (&acc, &**sib) } else { (&**sib, &acc) };
        if i == 0 {
            let root = merge_subtrees_root(l, r, Mode::Hash);
            return match root.as_bytes() == id {
                true => Ok(()),
                false => Err(ProofError::Mismatch),
            };
        }
        acc = merge_subtrees_non_root(l, r, Mode::Hash);
    }
    unreachable!("a non-empty path ends at its root")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn blob(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Every chunk of every size proves against the plain BLAKE3 hash, and a flipped byte
        /// or sibling fails.
        #[test]
        fn proofs_verify_and_tampering_fails(len in 1usize..40_000, pick in any::<u64>(), seed in any::<u8>()) {
            let b = blob(len, seed);
            let id = *blake3::hash(&b).as_bytes();
            let index = pick % chunks(len as u64);
            let p = prove(&b, index).unwrap();
            prop_assert!(check(&id, len as u64, index, &p).is_ok());
            let mut bad = p.clone();
            let at = (pick as usize / 7) % bad.data.len();
            bad.data[at] ^= 1;
            prop_assert!(check(&id, len as u64, index, &bad).is_err());
            if !p.siblings.is_empty() {
                let mut bad = p.clone();
                let s = (pick as usize / 11) % bad.siblings.len();
                bad.siblings[s][0] ^= 1;
                prop_assert!(check(&id, len as u64, index, &bad).is_err());
            }
            // The proof is for this chunk only.
            if chunks(len as u64) > 1 {
                let other = (index + 1) % chunks(len as u64);
                prop_assert!(check(&id, len as u64, other, &p).is_err());
            }
        }
    }

    #[test]
    fn out_of_range_is_refused() {
        let b = blob(3000, 1);
        assert!(prove(&b, 3).is_none());
        let id = *blake3::hash(&b).as_bytes();
        let p = prove(&b, 2).unwrap();
        assert!(
            check(&id, 3000, 3, &p).unwrap_err() == ProofError::PastEnd { index: 3, len: 3000 }
        );
    }
}
