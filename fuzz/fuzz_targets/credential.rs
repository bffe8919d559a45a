//! A members-only site credential (a cookie or bearer token), checked against a pool.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

use kith_crdt::Signer;
use kith_pools::{Pool, PoolView};

fn pool() -> &'static ([u8; 32], PoolView) {
    static POOL: OnceLock<([u8; 32], PoolView)> = OnceLock::new();
    POOL.get_or_init(|| {
        let s = Signer::new(&[1; 32], [2; 32]);
        let p = Pool::create(&s, "fuzz", Pool::charter("fuzz"), 1).expect("a pool");
        (p.id(), p.view())
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let (id, view) = pool();
    let _ = kith_hosting::access::check(s, id, view, 1_000);
});
