//! The object root: the small record, encrypted with age to the owner, that names an object's
//! source, its tree chunks and how it was cut. Its id is the object id.

use std::io::{Read, Write};

use minicbor::{Decode, Encode};

use super::chunker::ChunkerParams;
use super::tree::{ChunkRef, TreeStats};

/// Root format version this build writes and the newest it reads.
pub const ROOT_VERSION: u32 = 1;
/// Largest decrypted root accepted.
pub const MAX_ROOT_BYTES: u64 = 16 << 20;

/// The kind of an object's root entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum EntryKind {
    /// A regular file.
    File = 0,
    /// A folder tree.
    Dir = 1,
    /// A symbolic link.
    Symlink = 2,
}

impl EntryKind {
    /// Decodes a kind byte.
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            0 => Some(Self::File),
            1 => Some(Self::Dir),
            2 => Some(Self::Symlink),
            _ => None,
        }
    }

    /// A short name for listings.
    pub fn name(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Dir => "dir",
            Self::Symlink => "link",
        }
    }
}

/// The decrypted root record.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
#[cbor(array)]
pub struct Root {
    /// Format version ([`ROOT_VERSION`]).
    #[n(0)]
    pub version: u32,
    /// Kind of the root entry ([`EntryKind`]).
    #[n(1)]
    pub kind: u8,
    /// Absolute path the object was stored from.
    #[n(2)]
    #[cbor(with = "minicbor::bytes")]
    pub source: Vec<u8>,
    /// When it was stored (ms since the epoch).
    #[n(3)]
    pub created_ms: u64,
    /// The previous version of the same source, if any.
    #[n(4)]
    #[cbor(with = "minicbor::bytes")]
    pub parent: Option<[u8; 32]>,
    /// The node that stored it.
    #[n(5)]
    #[cbor(with = "minicbor::bytes")]
    pub device: [u8; 32],
    /// The chunker implementation ([`CHUNKER_NAME`](super::chunker::CHUNKER_NAME)).
    #[n(6)]
    pub chunker: String,
    /// Chunk sizes used for file data.
    #[n(7)]
    pub data_chunks: ChunkerParams,
    /// Chunk sizes used for the tree stream.
    #[n(8)]
    pub tree_chunks: ChunkerParams,
    /// Version of the tree stream ([`TREE_VERSION`](super::tree::TREE_VERSION)).
    #[n(9)]
    pub tree_version: u32,
    /// The tree stream's chunks, in order.
    #[n(10)]
    pub tree: Vec<ChunkRef>,
    /// Counts over the tree.
    #[n(11)]
    pub stats: TreeStats,
}

#[derive(Decode)]
#[cbor(array)]
struct RootHeader {
    #[n(0)]
    version: u32,
}

/// Why a root could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RootError {
    /// Not addressed to this identity, or altered.
    #[error("cannot be decrypted with this identity ({0})")]
    Decrypt(String),
    /// Not a root of a known layout.
    #[error("is malformed ({0})")]
    Malformed(String),
    /// Written by a newer kith.
    #[error("has root format {0}; this kith reads up to {ROOT_VERSION}: upgrade kith")]
    NewerVersion(u32),
}

impl Root {
    /// Encrypts the root to `recipient`.
    pub fn seal(&self, recipient: &age::x25519::Recipient) -> Vec<u8> {
        let plain = minicbor::to_vec(self).expect("encoding into a Vec cannot fail");
        let enc =
            age::Encryptor::with_recipients(std::iter::once(recipient as &dyn age::Recipient))
                .expect("one x25519 recipient is a valid set");
        let mut out = Vec::with_capacity(plain.len() + 256);
        let mut w = enc.wrap_output(&mut out).expect("writing to a Vec cannot fail");
        w.write_all(&plain).expect("writing to a Vec cannot fail");
        w.finish().expect("writing to a Vec cannot fail");
        out
    }

    /// Decrypts and decodes a root with whichever of `keys` it was sealed to.
    pub fn open(sealed: &[u8], keys: &[&age::x25519::Identity]) -> Result<Self, RootError> {
        let dec = age::Decryptor::new(sealed).map_err(|e| RootError::Decrypt(e.to_string()))?;
        let mut plain = Vec::new();
        dec.decrypt(keys.iter().map(|k| *k as &dyn age::Identity))
            .map_err(|e| RootError::Decrypt(e.to_string()))?
            .take(MAX_ROOT_BYTES)
            .read_to_end(&mut plain)
            .map_err(|e| RootError::Decrypt(e.to_string()))?;
        let header: RootHeader =
            minicbor::decode(&plain).map_err(|e| RootError::Malformed(e.to_string()))?;
        if header.version == 0 || header.version > ROOT_VERSION {
            return Err(RootError::NewerVersion(header.version));
        }
        let root: Root =
            minicbor::decode(&plain).map_err(|e| RootError::Malformed(e.to_string()))?;
        if EntryKind::from_u8(root.kind).is_none() {
            return Err(RootError::Malformed(format!("unknown entry kind {}", root.kind)));
        }
        Ok(root)
    }

    /// The kind of the root entry.
    pub fn entry_kind(&self) -> EntryKind {
        EntryKind::from_u8(self.kind).unwrap_or(EntryKind::File)
    }
}
