//! Portable data: `kith export` writes everything of an identity into one file, `kith import`
//! takes it in on another machine with no network, byte for byte; bad files are refused.

use std::fs;

use serde_json::Value;

use crate::util::*;

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// A second home with the identity of `a` (a new machine of the same person).
fn same_person(a: &Kith) -> Kith {
    let key = a.path("me.age");
    if !key.exists() {
        let mut cmd = a.cmd();
        cmd.args(["key", "export", key.to_str().unwrap()]).env("KITH_PASSPHRASE", "pw");
        assert!(cmd.output().unwrap().status.success());
    }
    let b = Kith::new();
    let mut cmd = b.cmd();
    cmd.args(["init", "--import", key.to_str().unwrap()]).env("KITH_PASSPHRASE", "pw");
    assert!(cmd.output().unwrap().status.success());
    b
}

fn log(k: &Kith, src: &str) -> Vec<(u64, String)> {
    json(&k.ok(&["log", "--json", src]).stdout)
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["version"].as_u64().unwrap(), o["id"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn everything_of_an_identity_moves_in_one_file_and_bad_files_are_refused() {
    let a = Kith::new();
    let src = a.path("letters");
    write(&src.join("dear.txt"), b"Dear neighbour, the plums are ripe.");
    write(&src.join("scan.bin"), &random_bytes(2_000_000, 5));
    let v1 = describe(&src);
    a.put(&src);
    write(&src.join("dear.txt"), b"Dear neighbour, the plums are gone.");
    a.put(&src);
    write(&src.join("dear.txt"), b"Dear neighbour, the pears are next.");
    let v3 = describe(&src);
    a.put(&src);
    // A forgotten version: the numbers of the others are kept as they are.
    a.ok(&["rm", "--local", &format!("{}@2", src.display())]);
    let photo = a.path("photo.jpg");
    write(&photo, &random_bytes(700_000, 6));
    let photo_id = a.put(&photo);
    let kept = log(&a, src.to_str().unwrap());

    let file = a.path("me.kexp");
    let e = json(&a.ok(&["export", "-o", file.to_str().unwrap(), "--json"]).stdout);
    assert_eq!(e["objects"], 3, "{e}");
    let bytes = fs::read(&file).unwrap();
    assert!(bytes.starts_with(b"KITHEXP1"));
    let plain = b"plums are";
    assert!(!bytes.windows(plain.len()).any(|w| w == plain), "the export holds plaintext");
    let e = a.fail(&["export", "-o", file.to_str().unwrap()]);
    assert!(e.stderr.contains("already exists"), "{}", e.stderr);
    // Or as ordinary files: the latest version of every path, at its path under a folder.
    let plain = a.path("plain");
    let p = json(&a.ok(&["export", "--plain", plain.to_str().unwrap(), "--json"]).stdout);
    assert_eq!(p["objects"], 2, "{p}");
    let under = |path: &std::path::Path| plain.join(path.strip_prefix("/").unwrap());
    assert_eq!(describe(&under(&src)), v3);
    assert_eq!(fs::read(under(&photo)).unwrap(), fs::read(&photo).unwrap());

    // Another machine of the same person takes it all in, with no network, byte for byte.
    let b = same_person(&a);
    let src_s = src.to_str().unwrap();
    let i = json(&b.ok(&["import", file.to_str().unwrap(), "--json"]).stdout);
    assert_eq!((i["objects"].as_u64(), i["blobs_present"].as_u64()), (Some(3), Some(0)), "{i}");
    assert_eq!(log(&b, src_s), kept);
    assert_eq!(kept.iter().map(|(v, _)| *v).collect::<Vec<_>>(), vec![1, 3]);
    for (v, want) in [(1, &v1), (3, &v3)] {
        let out = b.path(&format!("v{v}"));
        b.ok(&["get", &format!("{src_s}@{v}"), "-o", out.to_str().unwrap()]);
        assert_eq!(&describe(&out), want);
    }
    let got = b.path("photo.back");
    b.ok(&["get", &photo_id, "-o", got.to_str().unwrap()]);
    assert_eq!(fs::read(&got).unwrap(), fs::read(&photo).unwrap());
    assert_eq!(json(&b.ok(&["verify", "--json"]).stdout)["damaged"], false);
    // Again: nothing new, nothing doubled.
    let again = json(&b.ok(&["import", file.to_str().unwrap(), "--json"]).stdout);
    assert_eq!((again["objects"].as_u64(), again["blobs"].as_u64()), (Some(0), Some(0)));
    assert_eq!(log(&b, src_s), kept);

    // Bad files: each refused by what is wrong, and no object of it is recorded.
    let c = same_person(&a);
    let bad = c.path("bad.kexp");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (bytes[..bytes.len() / 2].to_vec(), "truncated"),
        (
            {
                let mut b = bytes.clone();
                let at = b.len() / 2;
                b[at] ^= 1;
                b
            },
            "(damaged)",
        ),
        (
            {
                let mut b = bytes.clone();
                *b.last_mut().unwrap() ^= 1;
                b
            },
            "end does not match",
        ),
        (b"PK\x03\x04 a zip file, not an export".to_vec(), "KITHEXP1"),
        (
            {
                let mut b = bytes.clone();
                b[8] = 7;
                b
            },
            "upgrade kith",
        ),
    ];
    for (content, why) in cases {
        fs::write(&bad, &content).unwrap();
        let e = c.fail(&["import", bad.to_str().unwrap()]);
        assert!(e.stderr.contains(why), "{why}: {}", e.stderr);
        assert_eq!(json(&c.ok(&["ls", "--json"]).stdout), Value::Array(vec![]));
    }
    // Somebody else's export: refused by name.
    let stranger = Kith::new();
    stranger.ok(&["init"]);
    let e = stranger.fail(&["import", file.to_str().unwrap()]);
    assert!(
        e.stderr.contains("this export is identity") && e.stderr.contains("init --import"),
        "{}",
        e.stderr
    );
    assert_eq!(json(&stranger.ok(&["ls", "--json"]).stdout), Value::Array(vec![]));
}

#[test]
fn an_import_onto_a_full_disk_fails_clearly_and_loses_nothing() {
    let a = Kith::new();
    let big = a.path("film.bin");
    write(&big, &random_bytes(40 << 20, 21));
    a.put(&big);
    let file = a.path("me.kexp");
    a.ok(&["export", "-o", file.to_str().unwrap()]);
    let key = a.path("me.age");
    let mut cmd = a.cmd();
    cmd.args(["key", "export", key.to_str().unwrap()]).env("KITH_PASSPHRASE", "pw");
    assert!(cmd.output().unwrap().status.success());

    // The same person on a machine whose disk has 24 MiB.
    let mnt = a.path("small-disk");
    let _fs = Tmpfs::mount(&mnt, "24m");
    let home = mnt.join("home");
    let run = |args: &[&str]| -> Out {
        std::process::Command::new(kith_bin())
            .arg("--home")
            .arg(&home)
            .args(args)
            .env("KITH_PASSPHRASE", "pw")
            .output()
            .unwrap()
            .into()
    };
    assert_eq!(run(&["init", "--import", key.to_str().unwrap()]).code, Some(0));
    let note = a.path("note.txt");
    write(&note, b"kept through it all");
    let first = run(&["put", note.to_str().unwrap()]);
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    let note_id = first.stdout.trim().to_string();

    let out = run(&["import", file.to_str().unwrap()]);
    assert_ne!(out.code, Some(0));
    assert!(out.stderr.contains("No space left on device"), "{}", out.stderr);
    // Nothing of the import is recorded, and what was there is intact.
    let ls: Value = serde_json::from_str(&run(&["ls", "--json"]).stdout).unwrap();
    assert_eq!(ls.as_array().unwrap().len(), 1, "{ls}");
    let v = run(&["verify", "--json"]);
    assert_eq!(v.code, Some(0), "{}{}", v.stdout, v.stderr);
    let got = a.path("note.back");
    assert_eq!(run(&["get", &note_id, "-o", got.to_str().unwrap()]).code, Some(0));
    assert_eq!(fs::read(&got).unwrap(), b"kept through it all");
}
