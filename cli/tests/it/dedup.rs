//! Deduplication: a changed copy stores only what changed.

use std::fs;

use crate::util::*;

#[test]
fn a_copy_with_two_percent_changed_stores_only_a_few_percent() {
    let k = Kith::new();
    let v1 = k.path("v1");
    for i in 0..300u64 {
        let len = 2_000 + (i as usize * 7_919) % 240_000;
        write(&v1.join(format!("d{}/file-{i:03}.txt", i % 7)), &text_bytes(len, i));
    }
    let first = k.put_json(&v1);
    assert_eq!(first["files"], 300);

    // v2: a copy (another path, so no previous version to compare with: every byte is read
    // and deduplicated by content), with every 50th file edited and two files added.
    let v2 = k.path("v2");
    copy_tree(&v1, &v2);
    for i in (0..300u64).step_by(50) {
        let p = v2.join(format!("d{}/file-{i:03}.txt", i % 7));
        let mut b = fs::read(&p).unwrap();
        b.splice(b.len() / 2..b.len() / 2, *b"#kith-edit#");
        write(&p, &b);
    }
    write(&v2.join("added/one.txt"), &text_bytes(30_000, 999));
    write(&v2.join("added/copy.txt"), &fs::read(v1.join("d3/file-010.txt")).unwrap());
    let second = k.put_json(&v2);
    let scanned = second["bytes_scanned"].as_u64().unwrap() as f64;
    let new = second["bytes_new"].as_u64().unwrap() as f64;
    assert_eq!(second["bytes_read"], second["bytes_scanned"]);
    assert!(new / scanned < 0.05, "new bytes are {:.1}% of the input", 100.0 * new / scanned);
    assert!(new > 0.0);
}

#[test]
fn identical_content_under_another_name_costs_almost_nothing() {
    let k = Kith::new();
    let a = k.path("a.bin");
    write(&a, &random_bytes(5_000_000, 5));
    let first = k.put_json(&a);
    assert!(first["bytes_stored"].as_u64().unwrap() >= 5_000_000);
    let b = k.path("b.bin");
    fs::copy(&a, &b).unwrap();
    let second = k.put_json(&b);
    assert_eq!(second["bytes_new"], 0);
    assert!(second["bytes_stored"].as_u64().unwrap() < 4_096, "{second}");
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    for f in files_under(from) {
        let rel = f.strip_prefix(from).unwrap();
        write(&to.join(rel), &fs::read(&f).unwrap());
    }
}
