//! A request path and a Range header from a browser on the LAN.
#![no_main]
use libfuzzer_sys::fuzz_target;
fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let (path, range) = s.split_once('\n').unwrap_or((s, ""));
    let _ = kith_hosting::http::decode_path(path);
    for len in [0, 1, 4096, u64::MAX] {
        let _ = kith_hosting::http::parse_range(Some(range), len);
    }
});
