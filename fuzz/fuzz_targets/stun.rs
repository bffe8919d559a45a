//! A STUN binding request on the LAN listener's UDP port.
#![no_main]
use libfuzzer_sys::fuzz_target;
fuzz_target!(|data: &[u8]| {
    let from = std::net::SocketAddr::from(([192, 168, 1, 20], 40000));
    let _ = kith_node::net::mesh::stun::binding_response(data, from);
});
