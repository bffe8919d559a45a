//! kith's replicated documents.
//!
//! This crate will hold the automerge documents every pool member syncs (identity, pool, ledger,
//! federation), the signed-change envelope, the authorisation rules that decide whether an author
//! may make a change, and the sync-session state machine. It does no I/O: the node feeds it bytes
//! and a clock. Nothing lives here yet; see the pools issue.

#![deny(missing_docs)]
