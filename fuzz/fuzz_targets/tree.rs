//! Tree chunks (a snapshot's directory listing) as read back from the store: split into
//! chunks at 0xff bytes, read item by item.
#![no_main]
use libfuzzer_sys::fuzz_target;
use kith_node::store::tree::{ChunkRef, TreeError, TreeReader};

fuzz_target!(|data: &[u8]| {
    let chunks: Vec<Vec<u8>> = data.split(|b| *b == 0xff).map(<[u8]>::to_vec).take(64).collect();
    let refs: Vec<ChunkRef> = (0..chunks.len())
        .map(|i| ChunkRef { id: [i as u8; 32], key: [0; 32], len: 0 })
        .collect();
    let mut r = TreeReader::new(refs, |r: &ChunkRef| {
        Ok::<_, TreeError>(chunks[r.id[0] as usize].clone())
    });
    for _ in 0..100_000 {
        match r.next_item() {
            Ok(Some(_)) => {}
            _ => break,
        }
    }
});
