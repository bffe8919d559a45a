//! A signed WebRTC session description relayed by a neighbour.
#![no_main]
use libfuzzer_sys::fuzz_target;
use kith_node::net::mesh::Signed;

fuzz_target!(|data: &[u8]| {
    if data.len() < 64 {
        return;
    }
    let mut sig = [0u8; 64];
    sig.copy_from_slice(&data[..64]);
    let s = Signed { body: data[64..].to_vec(), sig: sig.into() };
    let me = iroh_id();
    let _ = s.open(me, 1_700_000_000_000);
});

fn iroh_id() -> iroh::EndpointId {
    iroh::SecretKey::from_bytes(&[3; 32]).public()
}
