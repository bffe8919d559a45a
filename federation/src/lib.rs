//! kith federation: agreements between pools.
//!
//! This crate will hold agreements in which two pools lend each other capacity (off-site
//! replicas, CDN edges, relaying), and the cross-pool ledger that accounts for them. Nothing
//! lives here yet.

#![deny(missing_docs)]
#![forbid(unsafe_code)]
