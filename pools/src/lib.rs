//! kith pools: communities sharing their members' storage.
//!
//! - [`Pool`] is a pool's signed, replicated document (charter, members, roles, offers) and the
//!   operations members perform on it; [`PoolRules`] decides who may change what.
//! - [`Invite`] is an admin's signed permission to join.
//! - [`placement::place`] picks the holders of a chunk by weighted rendezvous hashing over the
//!   offers, in distinct zones.
//!
//! The authorisation rules and placement are pure; the service shell (documents on disk, sync
//! over iroh) lives in [`service`].

#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod clock;
pub mod devices;
mod edit;
mod fmt;
mod fsutil;
pub mod gate;
pub mod identity;
mod invite;
pub mod leave;
pub mod ledger;
pub mod manifest;
pub mod placement;
mod pool;
pub mod proof;
pub mod quota;
pub mod replica;
mod rules;
pub mod service;
#[cfg(test)]
mod tests;
pub mod usage;
mod view;

pub use invite::{Invite, InviteError};
pub use pool::{
    Pool, PoolError, PoolSnapshot, Standing, check_replicas, parse_duration_ms, parse_size,
};
pub use rules::PoolRules;
pub use view::{
    Access, Charter, Member, Offer, POOL_KIND, PoolObject, PoolView, Role, Site, SiteVersion,
    State, parse_key,
};

/// The store of ledger documents, by its former path: see [`ledger::Ledgers`].
pub mod ledgers {
    pub use crate::ledger::{Ledgers, SYNC_MONTHS_BACK, live_periods, syncable};
}
