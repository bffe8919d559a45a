//! The manifest of an object stored in a pool: the ids and lengths of every blob it consists of.
//!
//! Holders cannot read an object (its root and chunks are encrypted under its owner's keys), so
//! the owner lists its blobs in a manifest, stores the manifest as a blob of its own and names
//! it in the pool document. Every member node keeps every manifest: they are small (36 bytes
//! per blob) and they are what placement, repair and audits work from when the owner is gone.
//!
//! Encoding: CBOR array `[version, object id, [[blob id, length], ...]]`; the manifest's id is
//! the BLAKE3 hash of those bytes, like any blob.

use minicbor::bytes::ByteArray;
use minicbor::{Decode, Encode};

use crate::error::{DecodeError, decode};

/// Refuses more blobs than a manifest may list.
fn too_many(count: usize) -> Result<(), DecodeError> {
    if count > MAX_MANIFEST_BLOBS {
        return Err(DecodeError::TooMany {
            what: "a pool object's manifest",
            items: "chunks",
            count,
            limit: MAX_MANIFEST_BLOBS,
        });
    }
    Ok(())
}

/// Version of the manifest encoding.
pub const MANIFEST_VERSION: u32 = 1;
/// Most blobs one manifest lists (16 MiB of manifest: about 1 TB of data at the default
/// chunk size).
pub const MAX_MANIFEST_BLOBS: usize = 460_000;

/// One object's blobs.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(array)]
pub struct Manifest {
    /// Encoding version.
    #[n(0)]
    pub version: u32,
    /// The object (its root's id).
    #[n(1)]
    pub object: ByteArray<32>,
    /// Every blob, the root first, with its stored length.
    #[n(2)]
    pub blobs: Vec<(ByteArray<32>, u32)>,
}

impl Manifest {
    /// The manifest of `object` made of `blobs`.
    pub fn new(object: [u8; 32], blobs: &[([u8; 32], u32)]) -> Result<Manifest, DecodeError> {
        too_many(blobs.len())?;
        Ok(Manifest {
            version: MANIFEST_VERSION,
            object: object.into(),
            blobs: blobs.iter().map(|(id, len)| ((*id).into(), *len)).collect(),
        })
    }

    /// Its bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        minicbor::to_vec(self).expect("encoding to a Vec cannot fail")
    }

    /// Parses a manifest, checking its version and size.
    pub fn from_bytes(bytes: &[u8]) -> Result<Manifest, DecodeError> {
        let m: Manifest = decode(bytes, "manifest")?;
        if m.version != MANIFEST_VERSION {
            return Err(DecodeError::Version { what: "manifest", version: m.version.into() });
        }
        too_many(m.blobs.len())?;
        Ok(m)
    }

    /// Its id (the hash of its bytes).
    pub fn id(&self) -> [u8; 32] {
        *blake3::hash(&self.to_bytes()).as_bytes()
    }

    /// Bytes of all its blobs.
    pub fn bytes(&self) -> u64 {
        self.blobs.iter().map(|(_, l)| *l as u64).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let m = Manifest::new([1; 32], &[([2; 32], 10), ([3; 32], 20)]).unwrap();
        let bytes = m.to_bytes();
        assert_eq!(Manifest::from_bytes(&bytes).unwrap(), m);
        assert_eq!(m.bytes(), 30);
        assert_eq!(m.id(), *blake3::hash(&bytes).as_bytes());
        let mut newer = m.clone();
        newer.version = 9;
        let e = Manifest::from_bytes(&newer.to_bytes()).unwrap_err();
        assert!(matches!(e, DecodeError::Version { version: 9, .. }), "{e}");
        let e = Manifest::from_bytes(&bytes[..bytes.len() - 3]).unwrap_err();
        assert!(e.to_string().contains("bad manifest"), "{e}");
    }
}
