//! A chunk envelope from a peer or a damaged pack: opened with a key and a claimed length.
#![no_main]
use libfuzzer_sys::fuzz_target;
use kith_node::store::envelope::{ChunkKey, open_with_key};

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let len = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    let _ = open_with_key(&data[4..], &ChunkKey([7; 32]), len);
});
