//! Errors shared by the pools crate's parts: bytes that do not decode, text that does not parse,
//! documents whose shape is wrong. Each names what it was reading, so a caller can tell them
//! apart by type and a person by message.

/// Bytes from elsewhere (a peer, a file, the store) that are not what they claim to be.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Not valid CBOR of the expected shape.
    #[error("bad {what}: {source}")]
    Cbor {
        /// What was being read ("manifest", "receipt", "seal").
        what: &'static str,
        /// The decoder's words.
        #[source]
        source: minicbor::decode::Error,
    },
    /// Written by a newer kith.
    #[error("{what} version {version} is not understood here: upgrade kith")]
    Version {
        /// What was being read.
        what: &'static str,
        /// The version found.
        version: u64,
    },
    /// Lists more items than the format allows.
    #[error("{what} lists {count} {items}; at most {limit} are allowed")]
    TooMany {
        /// What was being read.
        what: &'static str,
        /// What it lists.
        items: &'static str,
        /// How many it lists.
        count: usize,
        /// The limit.
        limit: usize,
    },
}

/// Decodes CBOR bytes as `what`.
pub(crate) fn decode<'b, T: minicbor::Decode<'b, ()>>(
    b: &'b [u8],
    what: &'static str,
) -> Result<T, DecodeError> {
    minicbor::decode(b).map_err(|source| DecodeError::Cbor { what, source })
}

/// Text a person or a peer gave that does not parse (a size, a duration, a period, a rule).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    /// What was being parsed ("size", "duration", "period", ...).
    pub what: &'static str,
    /// The text given.
    pub input: String,
    message: String,
}

impl ParseError {
    /// `input` is not a valid `what`; `message` says why, in words for people.
    pub fn new(what: &'static str, input: &str, message: impl Into<String>) -> ParseError {
        ParseError { what, input: input.to_string(), message: message.into() }
    }
}

/// A document that does not have the shape its kind requires (a missing or mistyped field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ShapeError(pub String);

impl From<String> for ShapeError {
    fn from(s: String) -> ShapeError {
        ShapeError(s)
    }
}

impl From<&str> for ShapeError {
    fn from(s: &str) -> ShapeError {
        ShapeError(s.to_string())
    }
}

impl From<ParseError> for ShapeError {
    fn from(e: ParseError) -> ShapeError {
        ShapeError(e.to_string())
    }
}

impl From<DecodeError> for ShapeError {
    fn from(e: DecodeError) -> ShapeError {
        ShapeError(e.to_string())
    }
}
