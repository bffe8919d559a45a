//! Records members sign and peers send: invites, manifests, usage receipts, seals, pool
//! notes, site indexes.
#![no_main]
use libfuzzer_sys::fuzz_target;
fuzz_target!(|data: &[u8]| {
    let _ = kith_pools::Invite::from_bytes(data);
    let _ = kith_pools::manifest::Manifest::from_bytes(data);
    let _ = kith_pools::ledger::Receipt::from_bytes(data);
    let _ = kith_pools::ledger::Seal::from_bytes(data);
    let _ = kith_hosting::site::SiteIndex::from_bytes(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = kith_pools::ledger::parse_pool_note(s);
    }
});
