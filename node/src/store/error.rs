//! Why a store operation failed.

use std::io;
use std::path::{Path, PathBuf};

use super::index::IndexError;
use super::pack::PackError;
use super::root::RootError;
use super::tree::TreeError;
use crate::home::HomeError;
use crate::ids::{ChunkId, IdParseError, ObjectId};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The home could not be used.
    #[error(transparent)]
    Home(#[from] HomeError),
    /// The index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// A store file could not be read or written.
    #[error("store {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// An input file could not be read.
    #[error("cannot read {path}: {source}")]
    Source {
        /// The input path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The input is of a kind that cannot be stored.
    #[error("cannot store {path}: it is a {what}; kith stores files, folders and symlinks")]
    Unsupported {
        /// The input path.
        path: PathBuf,
        /// What it is.
        what: &'static str,
    },
    /// A restore target could not be written.
    #[error("cannot write {path}: {source}")]
    Dest {
        /// The target path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The restore target exists.
    #[error("{0} already exists; restore to a path that does not exist yet")]
    DestExists(PathBuf),
    /// A pack is damaged.
    #[error(transparent)]
    Pack(#[from] PackError),
    /// A blob the index does not know.
    #[error("chunk {chunk} is missing from the store")]
    Missing {
        /// The blob.
        chunk: ChunkId,
    },
    /// A blob whose bytes do not match its id, or that does not open.
    #[error("chunk {chunk} is damaged: {reason}")]
    Damaged {
        /// The blob.
        chunk: ChunkId,
        /// What is wrong.
        reason: String,
    },
    /// An object's root could not be opened.
    #[error("object {object}: its root {source}")]
    Root {
        /// The object.
        object: ObjectId,
        /// What is wrong.
        source: RootError,
    },
    /// An object's tree is invalid.
    #[error("invalid tree: {0}")]
    Tree(#[from] TreeError),
    /// An error inside an object, with the object and file it concerns.
    #[error("object {object}{}: {source}", file.as_ref().map(|f| format!(", file {f}")).unwrap_or_default())]
    InObject {
        /// The object.
        object: ObjectId,
        /// The file within the object, if the error concerns one.
        file: Option<String>,
        /// The underlying error.
        source: Box<StoreError>,
    },
    /// No object matches what the user typed.
    #[error("{0}")]
    NotFound(String),
    /// An id prefix matches several objects.
    #[error("'{prefix}' matches {count} objects; type more of the id")]
    Ambiguous {
        /// The prefix typed.
        prefix: String,
        /// How many objects it matches.
        count: usize,
    },
    /// What the user typed is not an id or path spec.
    #[error("{0}")]
    BadSpec(String),
    /// The index is missing from a store that has packs.
    #[error(
        "the store index {} is missing, but the store holds {packs} packs: run `kith store rebuild-index` to rebuild it from them (nothing was changed)",
        .path.display()
    )]
    IndexMissing {
        /// Where the index should be.
        path: PathBuf,
        /// Pack files found.
        packs: usize,
    },
    /// A rebuild of the index did not finish.
    #[error(
        "a rebuild of the store index {} did not finish: run `kith store rebuild-index` again (nothing was changed)",
        .path.display()
    )]
    RebuildUnfinished {
        /// The index.
        path: PathBuf,
    },
    /// A bug: a thread of the pipeline ended unexpectedly.
    #[error("internal error: {0}")]
    Internal(String),
}

impl StoreError {
    pub(super) fn io(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
        move |source| StoreError::Io { path: path.to_path_buf(), source }
    }

    pub(super) fn in_object(self, object: ObjectId, file: Option<&[u8]>) -> StoreError {
        match self {
            e @ StoreError::InObject { .. } => e,
            e => StoreError::InObject {
                object,
                file: file.map(|f| String::from_utf8_lossy(f).into_owned()),
                source: Box::new(e),
            },
        }
    }
}

impl From<IdParseError> for StoreError {
    fn from(e: IdParseError) -> Self {
        StoreError::BadSpec(e.to_string())
    }
}
