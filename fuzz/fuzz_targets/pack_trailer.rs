//! A pack file as found on disk (truncated, damaged, made up): its trailer read back.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::io::Write;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("kith-fuzz-pack-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("00000001.pack");
    let mut f = std::fs::File::create(&path).expect("a temporary file");
    f.write_all(data).expect("writing the pack");
    drop(f);
    let _ = kith_node::store::pack::read_trailer(&path);
});
