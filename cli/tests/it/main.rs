//! Integration tests of the `kith` binary (real processes, real files, real disks), and of
//! daemons started in-process through the library on manual time.

#![allow(clippy::unwrap_used)]

mod backups;
mod bad_input;
mod badpeer;
mod browsers;
mod compute;
mod crash;
mod daemon;
mod dashboard;
mod dedup;
mod discovery;
mod doctor;
mod federation;
mod hosting;
mod inside;
mod integrity;
mod keys;
mod large;
mod ledger;
mod manual_time;
mod mesh;
mod metrics;
mod offline;
mod pool_life;
mod pools;
mod portable;
mod privacy;
mod progress;
mod replication;
mod roundtrip;
mod service;
mod transfer;
mod trust;
mod util;
mod versions;
