//! testnet: drives real `kith` processes, and the tools users would otherwise pick, on one
//! machine.
//!
//! - [`Testnet`] runs N real `kith up` processes, on loopback or in network namespaces joined
//!   by a bridge ([`netns::Lan`]), with helpers to kill, restart and cut off nodes and to add
//!   latency or loss. Namespaces and processes are always removed.
//! - [`bench`] compares kith with restic on the reference dataset (put, incremental put,
//!   restore, store size), and kith transfer with a raw iroh stream.

#![deny(missing_docs)]

pub mod bench;
pub mod browser;
pub mod ledger_sim;
pub mod mesh;
pub mod net;
pub mod netns;
pub mod pool;
pub mod proc;
pub mod site;
pub mod transfer;

pub use net::{Layout, Testnet};
