//! Content addresses: 32-byte BLAKE3 hashes, shown as lowercase hex.

use std::fmt;
use std::str::FromStr;

/// Length in bytes of every hash and key in the store.
pub const HASH_LEN: usize = 32;

/// Shortest id prefix accepted where a full id is not given.
pub const MIN_PREFIX_HEX: usize = 6;

/// Why a string is not an id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdParseError {
    /// The string has a character that is not a hex digit.
    #[error("'{input}' is not an id: ids are hexadecimal (0-9, a-f)")]
    NotHex {
        /// The rejected input.
        input: String,
    },
    /// The string is hex but has the wrong length.
    #[error("'{input}' is not an id: a full id has 64 hex digits, it has {len}")]
    WrongLength {
        /// The rejected input.
        input: String,
        /// Its length in characters.
        len: usize,
    },
}

macro_rules! hash_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; HASH_LEN]);

        impl $name {
            /// The id of `bytes`: their BLAKE3 hash.
            pub fn of(bytes: &[u8]) -> Self {
                Self(*blake3::hash(bytes).as_bytes())
            }

            /// The raw hash.
            pub fn as_bytes(&self) -> &[u8; HASH_LEN] {
                &self.0
            }

            /// The first `n` hex digits, for display in tables.
            pub fn short(&self, n: usize) -> String {
                let mut s = self.to_string();
                s.truncate(n);
                s
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&data_encoding::HEXLOWER.encode(&self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short(12))
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let bytes = parse_hex(s)?;
                let arr: [u8; HASH_LEN] = bytes.try_into().map_err(|_| IdParseError::WrongLength {
                    input: s.to_string(),
                    len: s.len(),
                })?;
                Ok(Self(arr))
            }
        }
    };
}

hash_id!(
    /// The id of a blob in the store (a chunk envelope or an object root): the BLAKE3 hash of
    /// its stored (encrypted) bytes, so anyone can check a blob without its key.
    ChunkId
);
hash_id!(
    /// The id of one version of an object: the BLAKE3 hash of its encrypted root.
    ObjectId
);

impl From<ObjectId> for ChunkId {
    fn from(id: ObjectId) -> Self {
        ChunkId(id.0)
    }
}

/// Checks that `s` is lowercase or uppercase hex; returns it lowercased if it is.
pub fn normalize_hex(s: &str) -> Result<String, IdParseError> {
    if s.is_empty() || !s.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(IdParseError::NotHex { input: s.to_string() });
    }
    Ok(s.to_ascii_lowercase())
}

fn parse_hex(s: &str) -> Result<Vec<u8>, IdParseError> {
    let lower = normalize_hex(s)?;
    if lower.len() != 2 * HASH_LEN {
        return Err(IdParseError::WrongLength { input: s.to_string(), len: s.len() });
    }
    data_encoding::HEXLOWER
        .decode(lower.as_bytes())
        .map_err(|_| IdParseError::NotHex { input: s.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip() {
        let id = ChunkId::of(b"hello");
        let s = id.to_string();
        assert_eq!(s.len(), 64);
        assert_eq!(s.parse::<ChunkId>(), Ok(id));
        assert_eq!(s.to_uppercase().parse::<ChunkId>(), Ok(id));
    }

    #[test]
    fn bad_ids_are_named() {
        let e = "xyz".parse::<ObjectId>().unwrap_err();
        assert!(e.to_string().contains("'xyz' is not an id"), "{e}");
        let e = "abcd".parse::<ObjectId>().unwrap_err();
        assert_eq!(e, IdParseError::WrongLength { input: "abcd".into(), len: 4 });
    }
}
