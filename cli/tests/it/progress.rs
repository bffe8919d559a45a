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

/// `put --pool` reports its second step, the holders taking their copies, as a stage whose
/// progress runs to what placement gave the other nodes (what a terminal's bar and the
/// dashboard show).
#[test]
fn a_pool_put_reports_the_holders_taking_their_copies() {
    use kith::wire::Frame;
    let net = street_of_three(2);
    let size = 8 << 20;
    let src = net.dir().join("big.bin");
    write(&src, &random_bytes(size, 5));
    let req = kith::Request::Put { path: src.clone(), pool: Some("street".into()) };
    let mut body = kith::client::send(&net.nodes[0].home, &req).unwrap().expect("the daemon runs");
    let mut frames = Vec::new();
    while let Some(f) = Frame::read(&mut body).unwrap() {
        frames.push(f);
    }
    let stage = frames
        .iter()
        .position(|f| matches!(f, Frame::Stage(s) if s == "to holders"))
        .unwrap_or_else(|| panic!("no stage in {frames:?}"));
    // Before it, the local put's progress; after it, the holders'.
    assert!(frames[..stage].iter().any(|f| matches!(f, Frame::Progress { .. })));
    let after: Vec<(u64, u64)> = frames[stage..]
        .iter()
        .filter_map(|f| match f {
            Frame::Progress { done, total, .. } => Some((*done, *total)),
            _ => None,
        })
        .collect();
    let (done, total) = *after.last().unwrap_or_else(|| panic!("{frames:?}"));
    // Bob and cy each hold every blob (ada offers nothing): two copies leave this node.
    assert!(total >= 2 * size as u64, "{after:?}");
    assert_eq!(done, total, "{after:?}");
    assert!(after.windows(2).all(|w| w[0].0 <= w[1].0), "progress never goes back: {after:?}");
    match frames.last() {
        Some(Frame::Result(v)) => assert_eq!(v["pool"]["acks"].as_array().unwrap().len(), 2, "{v}"),
        other => panic!("{other:?}"),
    }
}
