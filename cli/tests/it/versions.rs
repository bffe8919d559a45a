//! Versions: log, PATH@N, rm and gc.

use std::fs;

use crate::util::*;

#[test]
fn putting_again_records_a_version_and_old_versions_restore() {
    let k = Kith::new();
    let src = k.path("site");
    write(&src.join("index.html"), b"<h1>version one</h1>");
    write(&src.join("big.bin"), &random_bytes(1_500_000, 3));
    let v1 = describe(&src);
    let id1 = k.put(&src);
    write(&src.join("index.html"), b"<h1>version two</h1>");
    fs::remove_file(src.join("big.bin")).unwrap();
    write(&src.join("new.txt"), b"added in two");
    let v2 = describe(&src);
    let id2 = k.put(&src);
    assert_ne!(id1, id2);

    let log: serde_json::Value =
        serde_json::from_str(&k.ok(&["log", "--json", src.to_str().unwrap()]).stdout).unwrap();
    let versions: Vec<(u64, String)> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["version"].as_u64().unwrap(), o["id"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(versions, vec![(1, id1.clone()), (2, id2.clone())]);
    let human = k.ok(&["log", src.to_str().unwrap()]).stdout;
    assert!(human.contains(&id1[..12]) && human.contains(&id2[..12]), "{human}");

    let spec1 = format!("{}@1", src.display());
    k.ok(&["get", &spec1, "-o", k.path("r1").to_str().unwrap()]);
    assert_eq!(describe(&k.path("r1")), v1);
    k.ok(&["get", "site@2", "-o", k.path("r2").to_str().unwrap()]);
    assert_eq!(describe(&k.path("r2")), v2);
    k.ok(&["get", "./site", "-o", k.path("latest").to_str().unwrap()]);
    assert_eq!(describe(&k.path("latest")), v2);
    k.ok(&["get", &id1[..8], "-o", k.path("by-prefix").to_str().unwrap()]);
    assert_eq!(describe(&k.path("by-prefix")), v1);
}

#[test]
fn unchanged_files_are_not_read_again() {
    let k = Kith::new();
    let src = k.path("src");
    for i in 0..20 {
        write(&src.join(format!("f{i}")), &text_bytes(20_000, i));
    }
    k.put(&src);
    let again = k.put_json(&src);
    assert_eq!(again["files_unchanged"], 20);
    assert_eq!(again["bytes_read"], 0);
    assert_eq!(again["bytes_new"], 0);
}

#[test]
fn rm_forgets_a_version_and_gc_reclaims_its_space() {
    let k = Kith::new();
    let keep = k.path("keep");
    write(&keep.join("k.bin"), &random_bytes(2_000_000, 10));
    let drop_me = k.path("drop");
    write(&drop_me.join("d.bin"), &random_bytes(6_000_000, 11));
    let keep_id = k.put(&keep);
    let drop_id = k.put(&drop_me);
    let before = k.pack_bytes();

    k.ok(&["rm", &drop_id]);
    let ls = k.ok(&["ls"]).stdout;
    assert!(!ls.contains(&drop_id[..12]) && ls.contains(&keep_id[..12]), "{ls}");
    let gone = k.fail(&["get", &drop_id, "-o", k.path("x").to_str().unwrap()]);
    assert!(gone.stderr.contains("no object"), "{}", gone.stderr);
    assert_eq!(k.pack_bytes(), before, "rm alone keeps the bytes");

    k.ok(&["gc"]);
    let after = k.pack_bytes();
    assert!(before - after >= 6_000_000, "gc freed only {} bytes", before - after);
    k.ok(&["get", &keep_id, "-o", k.path("kept").to_str().unwrap()]);
    assert_eq!(describe(&k.path("kept")), describe(&keep));
    let v: serde_json::Value = serde_json::from_str(&k.ok(&["verify", "--json"]).stdout).unwrap();
    assert_eq!(v["unreferenced_blobs"], 0);
    assert_eq!(v["damaged_objects"].as_array().unwrap().len(), 0);
}

#[test]
fn gc_after_removing_an_old_version_keeps_shared_chunks() {
    let k = Kith::new();
    let src = k.path("src");
    write(&src.join("shared.bin"), &random_bytes(3_000_000, 12));
    write(&src.join("v.txt"), b"one");
    let id1 = k.put(&src);
    write(&src.join("v.txt"), b"two");
    let id2 = k.put(&src);
    k.ok(&["rm", &id1]);
    k.ok(&["gc"]);
    k.ok(&["get", &id2, "-o", k.path("out").to_str().unwrap()]);
    assert_eq!(describe(&k.path("out")), describe(&src));
}
