//! A drop file as found on a stick (truncated, damaged, made up): its entries read back, the
//! changes parsed within bounds.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut entries) = kith_pools::drop::DropReader::new(data) else { return };
    while let Ok(Some(_)) = entries.next_entry() {}
});
