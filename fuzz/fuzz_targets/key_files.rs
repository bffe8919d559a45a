//! The node key file, the identity file and an identity export, as found on disk.
#![no_main]
use libfuzzer_sys::fuzz_target;
fuzz_target!(|data: &[u8]| {
    let _ = kith_node::NodeKey::from_file_bytes(data);
    let _ = kith_node::Identity::from_file_bytes(data);
    // An export is age-encrypted under a passphrase: only its header is reached unless the
    // fuzzer makes a valid one.
    if data.len() < 2048 {
        let _ = kith_node::Identity::import(data, "correct horse");
    }
});
