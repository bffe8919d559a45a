//! kith pools: communities sharing their members' storage.
//!
//! This crate will hold the pool charter and membership, invites, offers, chunk placement by
//! weighted rendezvous hashing, replication and repair workers, audits, and the usage ledger with
//! its settlement. Placement, ledger arithmetic and authorisation stay in a pure, property-tested
//! core. Nothing lives here yet; see the pools and ledger issues.

#![deny(missing_docs)]
