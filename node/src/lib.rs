//! One kith peer: identity and keys, and the encrypted, deduplicated chunk store.
//!
//! - [`Home`] is a node's directory: its keys ([`NodeKey`], [`Identity`]) and its store.
//! - [`Store`] turns files and folders into objects made of content-defined, compressed,
//!   encrypted chunks, and back, with versions, verification and garbage collection.
//!
//! - [`net::Node`] is the node on the network: an offline-first iroh endpoint, mDNS discovery,
//!   the peer table and verified blob transfer.
//!
//! It knows nothing about pools.

#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod clock;
pub mod fsutil;
pub mod home;
pub mod ids;
pub mod keys;
pub mod net;
pub mod refusals;
pub mod store;
pub mod worker;

pub use clock::Clock;
pub use home::{Home, HomeError};
pub use ids::{ChunkId, ObjectId};
pub use keys::{Identity, NodeKey};
pub use store::{ObjectInfo, Progress, PutReport, Store, StoreError};
