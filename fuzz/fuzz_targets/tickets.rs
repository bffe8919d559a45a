//! Text a person pastes: node tickets, pool tickets, object and chunk ids, sizes, durations,
//! periods, site names.
#![no_main]
use libfuzzer_sys::fuzz_target;
fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = s.parse::<kith_node::net::ticket::NodeTicket>();
    let _ = kith_pools::docs::decode_ticket(s);
    let _ = s.parse::<kith_node::ObjectId>();
    let _ = s.parse::<kith_node::ChunkId>();
    let _ = kith_pools::parse_size(s);
    let _ = kith_pools::parse_duration_ms(s);
    let _ = kith_pools::ledger::Period::parse(s);
    let _ = kith_hosting::check_name(s);
});
