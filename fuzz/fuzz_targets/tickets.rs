//! Text a person pastes: node tickets, pool tickets, federation tickets (checked when they
//! decode), object and chunk ids, sizes, durations, periods, site names, prices.
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
    let _ = kith_pools::parse_price_micro(s);
    if let Ok(o) = kith_federation::Offer::from_ticket(s) {
        let _ = o.check(0);
    }
    if let Ok(a) = kith_federation::Agreement::from_ticket(s) {
        let _ = a.check();
    }
});
