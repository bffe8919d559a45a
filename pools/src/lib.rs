//! kith pools: communities sharing their members' storage.
//!
//! - [`Pool`] is a pool's signed, replicated document (charter, members, roles, offers) and the
//!   operations members perform on it; [`PoolRules`] decides who may change what.
//! - [`Invite`] is an admin's signed permission to join.
//! - [`placement::place`] picks the holders of a chunk by weighted rendezvous hashing over the
//!   offers, in distinct zones.
//!
//! The authorisation rules and placement are pure; the shell around them lives in [`docs`]
//! (documents on disk, sync over iroh), [`replica`] (replication, repair, audits, recovery) and
//! [`ledger`] (the usage ledgers).

#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

// The pool document: its schema, its edits, who may make them, invites.
mod edit;
mod invite;
mod pool;
mod rules;
mod view;

// Pure parts of replication and accounting.
pub mod manifest;
pub mod names;
pub mod placement;
pub mod proof;
pub mod quota;
pub mod usage;

// This node's pools: documents and their sync, replication, ledgers, identity and devices,
// leaving, and who may fetch what.
pub mod datakeys;
pub mod devices;
pub mod docs;
pub mod drop;
pub mod fed;
pub mod gate;
pub mod identity;
pub mod leave;
pub mod ledger;
pub mod replica;

// Helpers.
mod error;
mod fmt;
mod fsutil;
mod slots;

pub use error::{DecodeError, ParseError, ShapeError};

/// Every context this crate derives identity keys for ([`kith_crdt::Signer::derive_key`]): a
/// device imported without the identity key is given these keys and no others.
pub const IDENTITY_KEY_CONTEXTS: [&str; 3] =
    [names::NAME_CONTEXT, identity::POOL_REF_CONTEXT, identity::POOL_INDEX_CONTEXT];
pub use invite::{Invite, InviteError};
pub use pool::{
    Pool, PoolError, PoolSnapshot, Standing, check_replicas, parse_duration_ms, parse_price_micro,
    parse_size,
};
pub use rules::PoolRules;
pub use view::{
    Access, Charter, CheckRecord, ComputeOffer, FedEntry, Federation, Member, Offer, POOL_KIND,
    PoolObject, PoolView, RETIRED_DEVICE, Reputation, Role, Site, SiteVersion, State, parse_hours,
    parse_key,
};

#[cfg(test)]
mod tests;
