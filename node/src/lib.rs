//! One kith peer: identity and keys, and the encrypted, deduplicated chunk store.
//!
//! - [`Home`] is a node's directory: its keys ([`NodeKey`], [`Identity`]) and its store.
//! - [`Store`] turns files and folders into objects made of content-defined, compressed,
//!   encrypted chunks, and back, with versions, verification and garbage collection.
//!
//! Later this crate also holds the iroh endpoint, discovery, the peer table and chunk
//! transfer; it knows nothing about pools.

#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod fsutil;
pub mod home;
pub mod ids;
pub mod keys;
pub mod store;

pub use home::{Home, HomeError};
pub use ids::{ChunkId, ObjectId};
pub use keys::{Identity, NodeKey};
pub use store::{ObjectInfo, Progress, PutReport, Store, StoreError};
