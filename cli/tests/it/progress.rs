//! A progress bar on a terminal, and silence on a pipe.

use std::process::Command;

use crate::util::*;

#[test]
fn a_terminal_gets_a_progress_bar_and_a_pipe_does_not() {
    let k = Kith::new();
    let file = k.path("data.bin");
    write(&file, &random_bytes(64 << 20, 41));

    // `script` runs kith on a pseudo-terminal and copies what it draws to our stdout.
    let line = format!("{} --home {} put {}", kith_bin(), k.home.display(), file.display());
    let tty = Command::new("script").args(["-qefc", &line, "/dev/null"]).output().unwrap();
    assert!(tty.status.success(), "{}", String::from_utf8_lossy(&tty.stderr));
    let drawn = String::from_utf8_lossy(&tty.stdout);
    assert!(drawn.contains("storing"), "no progress bar on a terminal: {drawn:?}");

    let piped = k.ok(&["put", file.to_str().unwrap()]);
    assert!(!piped.stderr.contains("storing"), "{:?}", piped.stderr);
    assert!(!piped.stderr.contains('\r') && !piped.stderr.contains('\x1b'), "{:?}", piped.stderr);
}
