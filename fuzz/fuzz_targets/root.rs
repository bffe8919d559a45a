//! A sealed snapshot root (age-encrypted) as read from the store.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn identity() -> &'static age::x25519::Identity {
    static ID: OnceLock<age::x25519::Identity> = OnceLock::new();
    ID.get_or_init(age::x25519::Identity::generate)
}

fuzz_target!(|data: &[u8]| {
    let _ = kith_node::store::root::Root::open(data, &[identity()]);
});
