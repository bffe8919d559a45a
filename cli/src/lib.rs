//! kith's composition root, as a library: the node's daemon and the typed API of every command.
//!
//! - [`Daemon`] starts every task of a node (store, network, pools, sites, the control socket)
//!   under one owner and stops them when the `shutdown` future it was given resolves.
//! - [`Request`] is every command, sent in this process ([`local`]) or to a running daemon over
//!   its control socket ([`client`]); either way the answer is a stream of [`wire::Frame`]s
//!   ending with the command's result.
//!
//! The `kith` binary only parses arguments, calls this API and renders the results.

#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod api;
mod backup;
pub mod client;
pub mod config;
mod daemon;
pub mod dashboard;
mod doctor_ops;
mod drop_ops;
pub mod fmt;
mod job_ops;
mod ledger_ops;
pub mod local;
mod metrics;
mod object_ops;
mod ops;
mod pool_ops;
mod portable_ops;
pub mod qr;
mod relay;
pub mod service;
mod site_ops;
mod status_ops;
pub mod wire;

pub use api::{GetTo, LedgerReq, PoolReq, Request, SiteReq};
pub use daemon::{Config, Daemon, DaemonHandle};
pub use ledger_ops::parse_cents;
pub use ops::chain;
pub use pool_ops::{device_grant, parse_duration_ms};
pub use site_ops::check_dir;
