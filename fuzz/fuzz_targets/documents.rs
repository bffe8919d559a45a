//! A document file (pool, identity, ledger) read from disk or a peer.
#![no_main]
use libfuzzer_sys::fuzz_target;
fuzz_target!(|data: &[u8]| {
    let _ = kith_crdt::SignedDoc::load(data, "pool");
    let _ = kith_pools::Pool::load(data);
    let _ = kith_pools::identity::IdentityDoc::load(data);
    let _ = kith_pools::ledger::Ledger::load(data);
});
