//! Inside an object: `kith ls ID` lists a version's files from its tree, `kith get
//! ID:path/inside` restores one file or folder of it (over the network, fetching only that
//! part), `kith diff` says what changed between two versions.

use std::collections::BTreeSet;
use std::fs;

use serde_json::Value;

use crate::util::*;

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn a_versions_files_are_listed_compared_and_restored_one_by_one() {
    let k = Kith::new();
    let src = k.path("photos");
    write(&src.join("notes.txt"), b"first notes\n");
    write(&src.join("2026/summer/beach.jpg"), &random_bytes(700_000, 1));
    write(&src.join("2026/summer/hill.jpg"), &random_bytes(300_000, 2));
    write(&src.join("2026/old.txt"), b"to be removed\n");
    std::os::unix::fs::symlink("notes.txt", src.join("readme")).unwrap();
    let v1 = describe(&src);
    let id1 = k.put(&src);

    // The listing is the tree: every entry with its type, size and link target.
    let ls = json(&k.ok(&["ls", &id1, "--json"]).stdout);
    assert_eq!(ls["id"], id1.as_str());
    let listed: BTreeSet<(String, String, u64)> = ls["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let (p, kind) = (e["path"].as_str().unwrap(), e["kind"].as_str().unwrap());
            (p.to_string(), kind.to_string(), e["size"].as_u64().unwrap())
        })
        .collect();
    let expected: BTreeSet<(String, String, u64)> = [
        ("", "dir", 0),
        ("2026", "dir", 0),
        ("2026/old.txt", "file", 14),
        ("2026/summer", "dir", 0),
        ("2026/summer/beach.jpg", "file", 700_000),
        ("2026/summer/hill.jpg", "file", 300_000),
        ("notes.txt", "file", 12),
        ("readme", "symlink", 0),
    ]
    .into_iter()
    .map(|(p, k, s)| (p.to_string(), k.to_string(), s))
    .collect();
    assert_eq!(listed, expected);
    let link = ls["entries"].as_array().unwrap().iter().find(|e| e["path"] == "readme").unwrap();
    assert_eq!(link["target"], "notes.txt");
    let human = k.ok(&["ls", &id1[..10]]).stdout;
    assert!(human.contains("2026/summer/beach.jpg") && human.contains("readme -> notes.txt"));

    // A second version: one file changed, one removed, one added, one only chmodded.
    write(&src.join("notes.txt"), b"second notes\n");
    fs::remove_file(src.join("2026/old.txt")).unwrap();
    write(&src.join("2026/summer/dune.jpg"), &random_bytes(10_000, 3));
    let hill = src.join("2026/summer/hill.jpg");
    fs::set_permissions(&hill, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let v2 = describe(&src);
    let id2 = k.put(&src);
    let spec2 = format!("{}@2", src.display());
    let d = json(&k.ok(&["diff", &id1, &spec2, "--json"]).stdout);
    let files: BTreeSet<(String, String)> = d["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] != "dir")
        .map(|c| (c["change"].as_str().unwrap().into(), c["path"].as_str().unwrap().into()))
        .collect();
    let want: BTreeSet<(String, String)> = [
        ("removed", "2026/old.txt"),
        ("added", "2026/summer/dune.jpg"),
        ("metadata", "2026/summer/hill.jpg"),
        ("modified", "notes.txt"),
    ]
    .into_iter()
    .map(|(c, p)| (c.to_string(), p.to_string()))
    .collect();
    assert_eq!(files, want, "{d}");
    let notes = d["changes"].as_array().unwrap().iter().find(|c| c["path"] == "notes.txt");
    assert_eq!(notes.unwrap()["old_size"], 12);
    assert_eq!(notes.unwrap()["new_size"], 13);
    let human = k.ok(&["diff", &id1, &id2]);
    assert!(
        human.stdout.contains("-  2026/old.txt")
            && human.stdout.contains("+  2026/summer/dune.jpg")
    );
    assert!(human.stderr.contains("1 added, 1 removed, 1 modified"), "{}", human.stderr);
    let same = json(&k.ok(&["diff", &id2, &id2, "--json"]).stdout);
    assert_eq!(same["changes"], Value::Array(vec![]));

    // One folder of the old version, as it was: a tree of its own.
    let out = k.path("summer");
    let r = json(
        &k.ok(&["get", &format!("{id1}:2026/summer"), "-o", out.to_str().unwrap(), "--json"])
            .stdout,
    );
    assert_eq!(r["inside"], "2026/summer");
    assert_eq!(r["files"], 2);
    let part = |v: &std::collections::BTreeMap<std::path::PathBuf, Entry>, at: &str| {
        v.iter()
            .filter_map(|(p, e)| {
                let rel = p.strip_prefix(at).ok()?;
                Some((rel.to_path_buf(), e.clone()))
            })
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    assert_eq!(describe(&out), part(&v1, "2026/summer"));
    // One file, to a path (a leading slash is the same) and to standard output.
    let one = k.path("beach.jpg");
    k.ok(&["get", &format!("{id2}:/2026/summer/beach.jpg"), "-o", one.to_str().unwrap()]);
    assert_eq!(fs::read(&one).unwrap(), random_bytes(700_000, 1));
    let old = k.ok(&["get", &format!("{}@1:notes.txt", src.display()), "-o", "-"]);
    assert_eq!(old.stdout, "first notes\n");
    // Without -o, under its own name in the current folder.
    k.ok(&["get", &format!("{id2}:2026/summer/dune.jpg")]);
    assert_eq!(describe(&k.path("dune.jpg")), part(&v2, "2026/summer/dune.jpg"));

    // Bad parts get clear errors and leave nothing behind.
    let outside_home = |k: &Kith| {
        let mut d = describe(&k.path(""));
        d.retain(|p, _| !p.starts_with("home"));
        d
    };
    let before = outside_home(&k);
    let e = k.fail(&["get", &format!("{id1}:2026/nope"), "-o", k.path("x").to_str().unwrap()]);
    assert!(e.stderr.contains("there is no `2026/nope` inside"), "{}", e.stderr);
    let e = k.fail(&["get", &format!("{id1}:2026"), "-o", "-"]);
    assert!(e.stderr.contains("is a folder inside the object"), "{}", e.stderr);
    let e = k.fail(&["get", &format!("{id1}:../etc"), "-o", k.path("y").to_str().unwrap()]);
    assert!(e.stderr.contains("no `.` or `..`"), "{}", e.stderr);
    let e = k.fail(&["ls", "0123456789abcdef"]);
    assert!(e.stderr.contains("neither an object id nor a path"), "{}", e.stderr);
    assert_eq!(outside_home(&k), before, "a failed get left something");
}

#[test]
fn another_device_fetches_only_the_part_it_restores() {
    let net = devices(2, kith_testnet::Layout::Loopback);
    let src = net.dir().join("album");
    write(&src.join("big/video.bin"), &random_bytes(24 << 20, 7));
    write(&src.join("small/letter.txt"), b"dear neighbour\n");
    let id = net.kith_ok(0, &["put", src.to_str().unwrap()]).unwrap().trim().to_string();

    // The listing takes the tree alone.
    let ls = net.json(1, &["ls", &id]).unwrap();
    let fetched = ls["fetched_bytes"].as_u64().unwrap();
    assert!(fetched > 0 && fetched < 64 << 10, "{ls}");
    assert_eq!(ls["entries"].as_array().unwrap().len(), 5, "{ls}");
    // The letter, and none of the video.
    let out = net.dir().join("letter.txt");
    let spec = format!("{id}:small/letter.txt");
    let r = net.json(1, &["get", &spec, "-o", out.to_str().unwrap()]).unwrap();
    assert_eq!(fs::read(&out).unwrap(), b"dear neighbour\n");
    assert!(r["fetched_bytes"].as_u64().unwrap() < 64 << 10, "{r}");
    // A part is not an object of this device: the listing of objects stays empty, and the
    // whole object comes later, the video with it.
    assert!(net.json(1, &["ls"]).unwrap().as_array().unwrap().is_empty());
    let all = net.dir().join("all");
    let r = net.json(1, &["get", &id, "-o", all.to_str().unwrap()]).unwrap();
    assert!(r["fetched_bytes"].as_u64().unwrap() > 24 << 20, "{r}");
    assert_eq!(describe(&all), describe(&src));
}
