//! testnet: drives real `kith` processes, and the tools users would otherwise pick, on one
//! machine.
//!
//! - [`bench`] compares kith with restic on the reference dataset (put, incremental put,
//!   restore, store size).
//!
//! The mesh issue adds networks of nodes here: on loopback or in network namespaces joined by
//! a bridge, with helpers to kill, restart and cut off nodes and to add latency or loss.

#![deny(missing_docs)]

pub mod bench;
pub mod proc;
