//! Every chunk is verified when read: damage is an error naming object and chunk, never
//! wrong output.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;

use crate::util::*;

fn flip_byte(path: &std::path::Path, at: u64) {
    let f = OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x40;
    f.write_all_at(&b, at).unwrap();
}

#[test]
fn a_flipped_byte_is_named_and_nothing_wrong_is_written() {
    let k = Kith::new();
    let src = k.path("src");
    write(&src.join("data.bin"), &random_bytes(3_000_000, 21));
    write(&src.join("ok.txt"), b"fine");
    let id = k.put(&src);
    let packs = k.packs();
    assert_eq!(packs.len(), 1);
    let len = fs::metadata(&packs[0]).unwrap().len();
    flip_byte(&packs[0], len / 2);

    let dest = k.path("out");
    let out = k.fail(&["get", &id, "-o", dest.to_str().unwrap()]);
    assert!(out.stderr.contains(&format!("object {id}")), "{}", out.stderr);
    assert!(out.stderr.contains("file data.bin"), "{}", out.stderr);
    assert!(out.stderr.contains("is damaged: its bytes do not match its hash"), "{}", out.stderr);
    let chunk = out.stderr.split("chunk ").nth(1).unwrap()[..64].to_string();
    assert!(!dest.exists(), "a damaged restore must leave nothing behind");
    let leftovers: Vec<_> = fs::read_dir(k.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("kith-partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let v = k.run(&["verify"]);
    assert_eq!(v.code, Some(1), "{}", v.stdout);
    assert!(v.stdout.contains(&format!("damaged chunk {chunk}")), "{}", v.stdout);
    assert!(v.stdout.contains(&format!("damaged object {id}")), "{}", v.stdout);
    assert!(v.stdout.contains("file data.bin"), "{}", v.stdout);
}

#[test]
fn a_damaged_file_object_fails_on_stdout_too() {
    let k = Kith::new();
    let file = k.path("f.bin");
    write(&file, &random_bytes(2_000_000, 22));
    let id = k.put(&file);
    let pack = &k.packs()[0];
    flip_byte(pack, 100);
    let out = k.run(&["get", &id, "-o", "-"]);
    assert_ne!(out.code, Some(0));
    assert!(out.stderr.contains("damaged"), "{}", out.stderr);
}

#[test]
fn a_missing_pack_is_reported_by_verify() {
    let k = Kith::new();
    let a = k.path("a.bin");
    write(&a, &random_bytes(500_000, 23));
    let id = k.put(&a);
    fs::remove_file(&k.packs()[0]).unwrap();
    let v = k.run(&["verify"]);
    assert_eq!(v.code, Some(1));
    assert!(v.stdout.contains("pack file is missing"), "{}", v.stdout);
    assert!(v.stdout.contains(&format!("damaged object {id}")), "{}", v.stdout);
}
