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

/// Small files are read and sealed in batches (by count, by bytes) with the folders, links and
/// unchanged files listed between them, and a large file closes a batch: every entry must still
/// come back in its place, in a first put and in the next, where most files are unchanged.
#[test]
fn many_small_files_between_folders_links_and_large_files_keep_their_order() {
    let k = Kith::new();
    let src = k.path("src");
    for d in 0..6u64 {
        for f in 0..70u64 {
            let seed = d * 100 + f;
            let len = if f % 7 == 0 { 90_000 } else { 300 + (seed as usize * 37) % 9_000 };
            write(&src.join(format!("d{d}/f{f:02}.txt")), &text_bytes(len, seed));
            if f % 23 == 0 {
                std::os::unix::fs::symlink(
                    format!("f{f:02}.txt"),
                    src.join(format!("d{d}/l{f:02}")),
                )
                .unwrap();
                fs::create_dir_all(src.join(format!("d{d}/e{f:02}"))).unwrap();
            }
        }
        if d % 2 == 1 {
            write(&src.join(format!("d{d}/f35-big.bin")), &random_bytes(1_500_000, d));
        }
    }
    let first = k.put_json(&src);
    assert_eq!(first["files"], 6 * 70 + 3, "{first}");
    let v1 = describe(&src);
    for d in [1u64, 4] {
        write(&src.join(format!("d{d}/f10.txt")), &text_bytes(5_000, 9_000 + d));
    }
    let second = k.put_json(&src);
    assert_eq!(second["files_unchanged"], 6 * 70 + 3 - 2, "{second}");
    let v2 = describe(&src);
    for (id, want, name) in [(&first["id"], &v1, "v1"), (&second["id"], &v2, "v2")] {
        let out = k.path(name);
        k.ok(&["get", id.as_str().unwrap(), "-o", out.to_str().unwrap()]);
        assert_eq!(&describe(&out), want, "{name}");
    }
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

#[test]
fn a_lost_index_is_rebuilt_from_the_packs_and_the_journal() {
    // Issue 18: `index.redb` held the only list of versions; losing it lost them, and a new
    // index took the packs' numbers, so the next put overwrote a pack.
    let k = Kith::new();
    let src = k.path("notes");
    let mut want = Vec::new();
    let mut ids = Vec::new();
    for (n, text) in ["one", "two", "three"].into_iter().enumerate() {
        write(&src.join("todo.txt"), text.as_bytes());
        write(&src.join(format!("day{n}.bin")), &random_bytes(200_000, n as u64));
        want.push(describe(&src));
        ids.push(k.put(&src));
    }
    let photo = k.path("photo.jpg");
    write(&photo, &random_bytes(1_500_000, 9));
    let photo_id = k.put(&photo);
    k.ok(&["rm", &format!("{}@2", src.display())]);
    let packs = k.packs();
    let listing = |k: &Kith| -> Vec<(u64, String)> {
        let v: serde_json::Value =
            serde_json::from_str(&k.ok(&["log", "--json", src.to_str().unwrap()]).stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|o| (o["version"].as_u64().unwrap(), o["id"].as_str().unwrap().to_string()))
            .collect()
    };
    let before = listing(&k);
    assert_eq!(before, vec![(1, ids[0].clone()), (3, ids[2].clone())]);

    fs::remove_file(k.store_dir().join("index.redb")).unwrap();
    // Every command says what to do, and nothing changes.
    for args in [vec!["ls"], vec!["put", photo.to_str().unwrap()]] {
        let e = k.fail(&args);
        assert!(
            e.stderr.contains("index") && e.stderr.contains("kith store rebuild-index"),
            "{}",
            e.stderr
        );
    }
    assert_eq!(k.packs(), packs, "a pack changed while the index was missing");

    let r: serde_json::Value =
        serde_json::from_str(&k.ok(&["store", "rebuild-index", "--json"]).stdout).unwrap();
    assert_eq!(r["objects"], 3, "{r}");
    assert_eq!(r["from_journal"], 3, "{r}");
    assert_eq!(r["forgotten"], 1, "{r}");
    assert_eq!(r["lost"], serde_json::json!([]), "{r}");
    // The same versions under the same numbers, byte for byte; the forgotten one stays so.
    assert_eq!(listing(&k), before);
    for (v, at) in [(1, 0), (3, 2)] {
        let out = k.path(&format!("v{v}"));
        k.ok(&["get", &format!("{}@{v}", src.display()), "-o", out.to_str().unwrap()]);
        assert_eq!(describe(&out), want[at]);
    }
    let back = k.path("photo.back");
    k.ok(&["get", &photo_id, "-o", back.to_str().unwrap()]);
    assert_eq!(fs::read(&back).unwrap(), fs::read(&photo).unwrap());
    let v: serde_json::Value = serde_json::from_str(&k.ok(&["verify", "--json"]).stdout).unwrap();
    assert_eq!(v["damaged"], false, "{v}");
    // Numbers are not given again, and dedup knows the chunks again.
    write(&src.join("todo.txt"), b"four");
    assert_eq!(k.put_json(&src)["version"], 4);
    let copy = k.path("photo-copy.jpg");
    fs::copy(&photo, &copy).unwrap();
    assert_eq!(k.put_json(&copy)["chunks_new"], 0);

    // Without the journal as well, every version whose root is here comes back, numbered by
    // time (the forgotten one too: only the journal knew it was forgotten).
    fs::remove_file(k.store_dir().join("index.redb")).unwrap();
    fs::remove_file(k.store_dir().join("objects.log")).unwrap();
    let r: serde_json::Value =
        serde_json::from_str(&k.ok(&["store", "rebuild-index", "--json"]).stdout).unwrap();
    assert_eq!(
        (r["from_journal"].as_u64(), r["found_by_time"].as_u64()),
        (Some(0), Some(6)),
        "{r}"
    );
    let versions: Vec<u64> = listing(&k).into_iter().map(|(v, _)| v).collect();
    assert_eq!(versions, vec![1, 2, 3, 4]);

    // A damaged pack: the rebuild says what it could not read and which versions are lost.
    // The highest-numbered pack: the one a new pack would take the number of.
    let biggest = k.packs().into_iter().max().unwrap();
    let f = fs::OpenOptions::new().write(true).open(&biggest).unwrap();
    f.set_len(fs::metadata(&biggest).unwrap().len() / 2).unwrap();
    fs::remove_file(k.store_dir().join("index.redb")).unwrap();
    let out = k.run(&["store", "rebuild-index"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("damaged pack") && out.stderr.contains("left in place"),
        "{}",
        out.stderr
    );
    assert!(biggest.exists(), "a damaged pack was deleted");
    // The damaged pack keeps its number: new packs go after it, never over it.
    let damaged = fs::read(&biggest).unwrap();
    write(&k.path("later.bin"), &random_bytes(3_000_000, 11));
    k.put(&k.path("later.bin"));
    assert_eq!(fs::read(&biggest).unwrap(), damaged, "a put wrote over the damaged pack");

    // A rebuild that did not finish (killed half-way) leaves a marker every command refuses.
    fs::write(k.store_dir().join("index.rebuilding"), b"").unwrap();
    let e = k.fail(&["ls"]);
    assert!(
        e.stderr.contains("did not finish") && e.stderr.contains("rebuild-index"),
        "{}",
        e.stderr
    );
    // (It finishes, and still says what the damaged pack cost.)
    assert_eq!(k.run(&["store", "rebuild-index"]).code, Some(1));
    assert!(!k.store_dir().join("index.rebuilding").exists());
    k.ok(&["ls"]);
}
