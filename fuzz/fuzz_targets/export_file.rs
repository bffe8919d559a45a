//! An export file as found on a stick (truncated, damaged, made up): its entries read back.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut entries) = kith_node::store::export::Entries::new(data) else { return };
    while let Ok(Some(_)) = entries.next_entry() {}
});
