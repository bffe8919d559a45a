//! put then get: bytes, modes, mtimes, empty folders and symlinks come back.

use std::fs;

use crate::util::*;

#[test]
fn a_tree_comes_back_byte_for_byte() {
    let k = Kith::new();
    let src = k.path("src");
    sample_tree(&src);
    let id = k.put(&src);
    let out = k.path("restored");
    k.ok(&["get", &id, "-o", out.to_str().unwrap()]);
    assert_eq!(describe(&out), describe(&src));
}

#[test]
fn a_single_file_round_trips_to_a_path_and_to_stdout() {
    let k = Kith::new();
    let file = k.path("photo.raw");
    write(&file, &random_bytes(3_000_000, 7));
    fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    let id = k.put(&file);
    let out = k.path("copy.raw");
    k.ok(&["get", &id, "-o", out.to_str().unwrap()]);
    assert_eq!(describe(&out), describe(&file));
    let piped = k.cmd().args(["get", &id, "-o", "-"]).output().unwrap();
    assert!(piped.status.success());
    assert_eq!(piped.stdout, fs::read(&file).unwrap());
}

#[test]
fn a_symlink_is_stored_as_a_link() {
    let k = Kith::new();
    let link = k.path("link");
    std::os::unix::fs::symlink("/some/where/else", &link).unwrap();
    let id = k.put(&link);
    let out = k.path("restored-link");
    k.ok(&["get", &id, "-o", out.to_str().unwrap()]);
    assert_eq!(fs::read_link(&out).unwrap(), fs::read_link(&link).unwrap());
}

#[test]
fn get_without_output_restores_under_the_source_name() {
    let k = Kith::new();
    let src = k.path("src/notes");
    write(&src.join("a.txt"), b"alpha");
    let id = k.put(&src);
    k.ok(&["get", &id[..12]]);
    assert_eq!(fs::read(k.path("notes/a.txt")).unwrap(), b"alpha");
}

#[test]
fn get_refuses_to_overwrite() {
    let k = Kith::new();
    let src = k.path("src");
    write(&src.join("a.txt"), b"alpha");
    let id = k.put(&src);
    let existing = k.path("existing");
    write(&existing.join("mine.txt"), b"keep me");
    let out = k.fail(&["get", &id, "-o", existing.to_str().unwrap()]);
    assert!(out.stderr.contains("already exists"), "{}", out.stderr);
    assert_eq!(fs::read(existing.join("mine.txt")).unwrap(), b"keep me");
}
