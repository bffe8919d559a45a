//! Homes, key files, identity export and import.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::util::*;

fn mode(p: &std::path::Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn ids(k: &Kith) -> serde_json::Value {
    serde_json::from_str(&k.ok(&["id", "--json"]).stdout).unwrap()
}

#[test]
fn any_command_creates_a_home_with_private_key_files() {
    let k = Kith::new();
    let first = ids(&k);
    assert_eq!(mode(&k.home), 0o700);
    assert_eq!(mode(&k.home.join("node.key")), 0o600);
    assert_eq!(mode(&k.home.join("identity.key")), 0o600);
    assert_eq!(first["node"].as_str().unwrap().len(), 64);
    assert_eq!(first["identity"].as_str().unwrap().len(), 64);
    assert!(first["age"].as_str().unwrap().starts_with("age1"));
    assert_eq!(ids(&k), first, "ids are stable");
    let human = k.ok(&["id"]).stdout;
    assert!(
        human.contains("node") && human.contains("identity") && human.contains("age1"),
        "{human}"
    );
}

#[test]
fn kith_home_env_and_init_work() {
    let k = Kith::new();
    let home = k.path("from-env");
    let out = std::process::Command::new(kith_bin())
        .args(["init"])
        .env("KITH_HOME", &home)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(home.join("identity.key").is_file());
}

#[test]
fn an_exported_identity_imports_with_a_new_node_key() {
    let a = Kith::new();
    let export = a.path("me.age");
    let out = a
        .cmd()
        .args(["key", "export", export.to_str().unwrap()])
        .env("KITH_PASSPHRASE", "correct horse")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(mode(&export), 0o600);
    assert!(fs::read_to_string(&export).unwrap().starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));

    let b = Kith::new();
    let out = b
        .cmd()
        .args(["init", "--import", export.to_str().unwrap()])
        .env("KITH_PASSPHRASE", "correct horse")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (ia, ib) = (ids(&a), ids(&b));
    assert_eq!(ia["identity"], ib["identity"]);
    assert_eq!(ia["age"], ib["age"]);
    assert_ne!(ia["node"], ib["node"], "the new machine gets its own node key");
    assert_eq!(mode(&b.home.join("identity.key")), 0o600);

    // The imported identity works: a put and get on the new machine.
    let f = b.path("f.txt");
    write(&f, b"carried over");
    let id = b.put(&f);
    b.ok(&["get", &id, "-o", b.path("g.txt").to_str().unwrap()]);

    // Export refuses to overwrite.
    let again = a
        .cmd()
        .args(["key", "export", export.to_str().unwrap()])
        .env("KITH_PASSPHRASE", "x")
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    // Import refuses to replace an identity.
    let replace = b
        .cmd()
        .args(["init", "--import", export.to_str().unwrap()])
        .env("KITH_PASSPHRASE", "correct horse")
        .output()
        .unwrap();
    assert!(!replace.status.success());
    assert!(String::from_utf8_lossy(&replace.stderr).contains("already holds an identity"));
}

#[test]
fn a_wrong_passphrase_or_a_damaged_export_is_refused_and_leaves_no_home() {
    let a = Kith::new();
    let export = a.path("me.age");
    let out = a
        .cmd()
        .args(["key", "export", export.to_str().unwrap()])
        .env("KITH_PASSPHRASE", "right")
        .output()
        .unwrap();
    assert!(out.status.success());

    let b = Kith::new();
    let wrong = b
        .cmd()
        .args(["init", "--import", export.to_str().unwrap()])
        .env("KITH_PASSPHRASE", "wrong")
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("wrong passphrase"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
    assert!(!b.home.exists(), "a failed import must not leave a home");

    let text = fs::read(&export).unwrap();
    let cut = b.path("cut.age");
    fs::write(&cut, &text[..text.len() * 2 / 3]).unwrap();
    let truncated = b
        .cmd()
        .args(["init", "--import", cut.to_str().unwrap()])
        .env("KITH_PASSPHRASE", "right")
        .output()
        .unwrap();
    assert!(!truncated.status.success());
    let msg = String::from_utf8_lossy(&truncated.stderr);
    assert!(msg.contains("cannot import") && msg.contains(cut.to_str().unwrap()), "{msg}");
    assert!(!b.home.exists());

    let garbage = b.path("garbage");
    fs::write(&garbage, b"this is not an export").unwrap();
    let bad = b
        .cmd()
        .args(["init", "--import", garbage.to_str().unwrap()])
        .env("KITH_PASSPHRASE", "right")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("not a kith key export"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[test]
fn export_without_a_passphrase_source_is_a_clear_error() {
    let k = Kith::new();
    let out = k
        .cmd()
        .args(["key", "export", k.path("x.age").to_str().unwrap()])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("KITH_PASSPHRASE"));
    assert!(!k.path("x.age").exists());
}

#[test]
fn a_truncated_key_file_is_named() {
    let k = Kith::new();
    ids(&k);
    let key = k.home.join("identity.key");
    let bytes = fs::read(&key).unwrap();
    fs::write(&key, &bytes[..bytes.len() / 2]).unwrap();
    let out = k.fail(&["id"]);
    assert!(
        out.stderr.contains("identity.key") && out.stderr.contains("truncated"),
        "{}",
        out.stderr
    );
    let out = k.fail(&["ls"]);
    assert!(out.stderr.contains("identity.key"), "{}", out.stderr);
}
