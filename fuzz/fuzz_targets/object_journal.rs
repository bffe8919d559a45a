//! A store's object journal as found on disk (torn, damaged, made up): its records read back.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::io::Write;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("kith-fuzz-journal-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let journal = kith_node::store::journal::Journal::new(&dir);
    let mut f = std::fs::File::create(journal.path()).expect("a temporary file");
    f.write_all(data).expect("writing the journal");
    drop(f);
    let _ = journal.read();
});
