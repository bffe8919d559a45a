//! Bad input: clear errors, non-zero exits, nothing half-written.

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::util::*;

#[test]
fn a_missing_path_is_named() {
    let k = Kith::new();
    let out = k.fail(&["put", "no/such/thing"]);
    assert!(
        out.stderr.contains("no/such/thing") && out.stderr.contains("No such file"),
        "{}",
        out.stderr
    );
}

#[test]
fn special_files_are_refused_by_kind() {
    let k = Kith::new();
    let fifo = k.path("pipe");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let out = k.fail(&["put", fifo.to_str().unwrap()]);
    assert!(out.stderr.contains("named pipe"), "{}", out.stderr);
}

#[test]
fn an_unreadable_file_fails_the_put_and_rolls_back_what_it_wrote() {
    let k = Kith::new();
    let src = k.path("src");
    // Sorted first and larger than a batch of packs, so the put commits packs to the index
    // before it reaches the unreadable file: the rollback must remove them.
    let batch = kith_node::store::INDEX_CHECKPOINT_PACKS;
    write(&src.join("a-big.bin"), &random_bytes((batch + 2) * (16 << 20), 51));
    write(&src.join("z-locked.txt"), b"private");
    fs::set_permissions(src.join("z-locked.txt"), fs::Permissions::from_mode(0o000)).unwrap();
    k.ok(&["id"]);

    // We run as root, which reads anything; drop the capabilities that bypass permissions.
    let out = put_without_root_reads(&k, &src);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("z-locked.txt") && stderr.contains("Permission denied"), "{stderr}");
    let ls: serde_json::Value = serde_json::from_str(&k.ok(&["ls", "--json"]).stdout).unwrap();
    assert_eq!(ls.as_array().unwrap().len(), 0);
    assert!(k.packs().is_empty(), "packs of the failed put remain: {:?}", k.packs());
    assert!(fs::read_dir(k.store_dir().join("tmp")).unwrap().next().is_none());
    let v: serde_json::Value = serde_json::from_str(&k.ok(&["verify", "--json"]).stdout).unwrap();
    assert_eq!(v["blobs"], 0);
}

/// Small files are read in batches; a folder that cannot be listed after an unreadable small
/// file must not hide it: the put fails on the first unreadable entry in tree order.
#[test]
fn the_first_unreadable_entry_in_tree_order_is_the_one_named() {
    let k = Kith::new();
    let src = k.path("src");
    write(&src.join("a-locked.txt"), b"private");
    fs::set_permissions(src.join("a-locked.txt"), fs::Permissions::from_mode(0o000)).unwrap();
    write(&src.join("b-locked/inside.txt"), b"also private");
    fs::set_permissions(src.join("b-locked"), fs::Permissions::from_mode(0o000)).unwrap();
    k.ok(&["id"]);
    let out = put_without_root_reads(&k, &src);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("a-locked.txt") && stderr.contains("Permission denied"), "{stderr}");
    assert!(k.packs().is_empty(), "packs of the failed put remain: {:?}", k.packs());
}

/// `kith put` without the capabilities that let root read anything (we run as root).
fn put_without_root_reads(k: &Kith, src: &std::path::Path) -> std::process::Output {
    Command::new("setpriv")
        .args([
            "--bounding-set=-dac_override,-dac_read_search",
            "--inh-caps=-dac_override,-dac_read_search",
        ])
        .arg(kith_bin())
        .arg("--home")
        .arg(&k.home)
        .args(["put", src.to_str().unwrap()])
        .output()
        .unwrap()
}

#[test]
fn malformed_and_unknown_ids_are_explained() {
    let k = Kith::new();
    let f = k.path("f.txt");
    write(&f, b"x");
    k.put(&f);
    let cases: &[(&str, &str)] = &[
        ("zz!?", "neither an object id nor a path"),
        (&"0".repeat(64), "no object 0000"),
        ("abc", "neither an object id nor a path"),
        ("f.txt@two", "must be a number"),
        ("f.txt@7", "has no version 7"),
        ("elsewhere@1", "no versions stored from"),
    ];
    for (spec, expect) in cases {
        let out = k.fail(&["get", spec, "-o", k.path("o").to_str().unwrap()]);
        assert!(out.stderr.contains(expect), "{spec}: {}", out.stderr);
    }
    let out = k.fail(&["rm", &"f".repeat(64)]);
    assert!(out.stderr.contains("no object"), "{}", out.stderr);
}

#[test]
fn a_full_disk_fails_the_put_cleanly_and_loses_nothing() {
    let k = Kith::new();
    let mnt = k.path("small-disk");
    let _fs = Tmpfs::mount(&mnt, "24m");
    let home = mnt.join("home");
    let run = |args: &[&str]| -> Out {
        Command::new(kith_bin()).arg("--home").arg(&home).args(args).output().unwrap().into()
    };
    let small = k.path("small.txt");
    write(&small, &text_bytes(100_000, 1));
    let first = run(&["put", small.to_str().unwrap()]);
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    let small_id = first.stdout.trim().to_string();

    let big = k.path("big.bin");
    write(&big, &random_bytes(64 << 20, 52));
    let out = run(&["put", big.to_str().unwrap()]);
    assert_ne!(out.code, Some(0));
    assert!(out.stderr.contains("No space left on device"), "{}", out.stderr);

    let ls = run(&["ls", "--json"]);
    assert_eq!(ls.code, Some(0), "{}", ls.stderr);
    let ls: serde_json::Value = serde_json::from_str(&ls.stdout).unwrap();
    assert_eq!(ls.as_array().unwrap().len(), 1);
    let v = run(&["verify", "--json"]);
    assert_eq!(v.code, Some(0), "{}{}", v.stdout, v.stderr);
    let v: serde_json::Value = serde_json::from_str(&v.stdout).unwrap();
    assert_eq!(v["unreferenced_blobs"], 0, "the failed put was rolled back");
    assert!(fs::read_dir(home.join("store/tmp")).unwrap().next().is_none());
    let got = run(&["get", &small_id, "-o", k.path("small-out").to_str().unwrap()]);
    assert_eq!(got.code, Some(0), "{}", got.stderr);
    assert_eq!(fs::read(k.path("small-out")).unwrap(), fs::read(&small).unwrap());
}

#[test]
fn a_full_destination_fails_the_get_and_leaves_no_partial_output() {
    let k = Kith::new();
    let src = k.path("src");
    write(&src.join("big.bin"), &random_bytes(16 << 20, 53));
    let id = k.put(&src);
    let mnt = k.path("small-disk");
    let _fs = Tmpfs::mount(&mnt, "4m");
    let out = k.fail(&["get", &id, "-o", mnt.join("out").to_str().unwrap()]);
    assert!(out.stderr.contains("No space left on device"), "{}", out.stderr);
    assert!(
        fs::read_dir(&mnt).unwrap().next().is_none(),
        "left behind: {:?}",
        fs::read_dir(&mnt).unwrap().collect::<Vec<_>>()
    );
}

#[test]
fn a_busy_home_names_the_process_holding_it() {
    let k = Kith::new();
    k.ok(&["id"]);
    let lock = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(k.home.join("lock"))
        .unwrap();
    // SAFETY: flock on our own open file.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    fs::write(k.home.join("lock"), b"pid 4242, kith put").unwrap();
    let out = k.fail(&["ls"]);
    assert!(
        out.stderr.contains("in use by another kith process (pid 4242, kith put)"),
        "{}",
        out.stderr
    );
    drop(lock);
    k.ok(&["ls"]);
}

/// Chaos finding 11: on a full disk `kith gc` failed at its first rewrite and gave nothing
/// back, though gc is what a full disk needs. It now frees what needs no room first (packs
/// with nothing live), and leaves the rewrites that do not fit, saying so.
#[test]
fn regression_gc_on_a_full_disk_frees_what_needs_no_room_and_says_what_it_left() {
    let k = Kith::new();
    let mnt = k.path("small-disk");
    let _fs = Tmpfs::mount(&mnt, "40m");
    let home = mnt.join("home");
    let run = |args: &[&str]| -> Out {
        Command::new(kith_bin()).arg("--home").arg(&home).args(args).output().unwrap().into()
    };
    let put = |p: &std::path::Path| {
        let o = run(&["put", p.to_str().unwrap()]);
        assert_eq!(o.code, Some(0), "{}", o.stderr);
        o.stdout.trim().to_string()
    };
    // A pack with nothing live once its object goes (1 MiB), and a pack mostly dead whose
    // live part (4 MiB) a rewrite would copy.
    let dead = k.path("dead.bin");
    write(&dead, &random_bytes(1 << 20, 61));
    let dead_id = put(&dead);
    let mixed = k.path("mixed");
    write(&mixed.join("big.bin"), &random_bytes(8 << 20, 62));
    write(&mixed.join("keep.bin"), &random_bytes(4 << 20, 63));
    let mixed_id = put(&mixed);
    let keep_id = put(&mixed.join("keep.bin"));
    for id in [&dead_id, &mixed_id] {
        let o = run(&["rm", id]);
        assert_eq!(o.code, Some(0), "{}", o.stderr);
    }
    // The disk fills up.
    let ballast = mnt.join("ballast");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", &format!("of={}", ballast.display()), "bs=1M"])
        .output()
        .unwrap();
    let gc = run(&["gc", "--json"]);
    assert_eq!(gc.code, Some(0), "gc on a full disk: {}", gc.stderr);
    let v: serde_json::Value = serde_json::from_str(&gc.stdout).unwrap();
    assert_eq!(v["packs_deleted"], 1, "{v}");
    assert!(v["bytes_freed"].as_u64().unwrap() >= 1 << 20, "{v}");
    assert_eq!(v["packs_rewritten"], 0, "{v}");
    assert!(v["rewrite_skipped"].as_str().unwrap().contains("no room"), "{v}");
    let human = run(&["gc"]);
    assert!(human.stderr.contains("free some space and run `kith gc` again"), "{}", human.stderr);
    assert!(fs::read_dir(home.join("store/tmp")).unwrap().next().is_none());
    // Nothing live was touched.
    let verify = run(&["verify", "--json"]);
    assert_eq!(verify.code, Some(0), "{}{}", verify.stdout, verify.stderr);
    fs::remove_file(&ballast).unwrap();
    let got = run(&["get", &keep_id, "-o", k.path("keep-out").to_str().unwrap()]);
    assert_eq!(got.code, Some(0), "{}", got.stderr);
    assert!(fs::read(k.path("keep-out")).unwrap() == fs::read(mixed.join("keep.bin")).unwrap());
    // With room again, the rewrite is made.
    let gc = run(&["gc", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&gc.stdout).unwrap();
    assert_eq!(v["packs_rewritten"], 1, "{v}");
    assert!(v.get("rewrite_skipped").is_none(), "{v}");
    assert!(v["bytes_freed"].as_u64().unwrap() >= 8 << 20, "{v}");
}
