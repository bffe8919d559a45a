//! Every protocol's messages as they arrive in a frame: kith/blobs/1, kith/docs/1,
//! kith/pool/1 and kith/signal/1, requests and replies.
#![no_main]
use libfuzzer_sys::fuzz_target;
fuzz_target!(|data: &[u8]| {
    let _ = minicbor::decode::<kith_node::net::blobs::Request>(data);
    let _ = minicbor::decode::<kith_node::net::blobs::Reply>(data);
    let _ = minicbor::decode::<kith_pools::docs::Hello>(data);
    let _ = minicbor::decode::<kith_pools::docs::Ack>(data);
    let _ = minicbor::decode::<kith_pools::docs::Turn>(data);
    let _ = minicbor::decode::<kith_pools::replica::Request>(data);
    let _ = minicbor::decode::<kith_pools::replica::Reply>(data);
    let _ = minicbor::decode::<kith_node::net::mesh::Signal>(data);
});
