//! testnet: drives real `kith` processes, and the tools users would otherwise pick, on one
//! machine.
//!
//! - [`Testnet`] runs N real `kith up` processes, on loopback or in network namespaces joined
//!   by a bridge ([`netns::Lan`]), with helpers to kill, restart and cut off nodes and to add
//!   latency or loss. Namespaces and processes are always removed.
//! - [`bench`](mod@bench) compares kith with restic on the reference dataset (put, incremental put,
//!   restore, store size), and kith transfer with a raw iroh stream.
//! - [`inproc::Daemons`] runs N daemons in this process through the `kith` library, on one
//!   manual clock, for scenarios that span hours or months.
//! - [`chaos`](mod@chaos) runs a pool under a workload and seeded faults and checks what
//!   must hold afterwards.
//! - [`garbage`](mod@garbage) is a peer that sends garbage on every protocol, for chaos.
//! - [`delay`](mod@delay) delays and reorders what a node sends (no `netem` here), for chaos.
//! - [`up`](mod@up) starts a LAN of nodes in namespaces for a person to try kith on by hand.

#![deny(missing_docs)]

pub mod bench;
pub mod browser;
pub mod chaos;
pub mod compute_bench;
pub mod delay;
pub mod fed_sim;
pub mod federation_bench;
pub mod figures;
pub mod garbage;
pub mod inproc;
pub mod ledger_sim;
pub mod mesh;
pub mod moving;
pub mod net;
pub mod netns;
pub mod pool;
pub mod proc;
pub mod relay_bench;
pub mod site;
pub mod transfer;
pub mod up;
pub mod webdriver;

/// `len` bytes that do not compress, from `seed` (xorshift64), for benchmark data.
pub fn pseudo_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub use net::{Layout, Testnet};
