//! Integration tests of the `kith` binary: real processes, real files, real disks.

#![allow(clippy::unwrap_used)]

mod bad_input;
mod crash;
mod dedup;
mod integrity;
mod keys;
mod large;
mod privacy;
mod progress;
mod roundtrip;
mod util;
mod versions;
