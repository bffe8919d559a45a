//! A progress bar on a terminal, and silence on a pipe.

use std::process::Command;
use std::time::Duration;

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

/// A long operation is listed in the node's status (which `kith status` prints and the
/// dashboard draws) with its progress while it runs, whoever started it, and leaves the list
/// when it ends: here bob's hand-off when he leaves a pool while a node that is to take part of
/// his share is down, until he gives up waiting.
#[test]
fn a_long_operation_is_listed_with_its_progress_while_it_runs_and_not_after() {
    let mut net = street_of_three(2);
    net.kith_ok(0, &["offer", "--storage", "1GiB", "--zone", "z0"]).unwrap();
    let src = net.dir().join("photos.bin");
    write(&src, &random_bytes(3 << 20, 9));
    net.kith_ok(0, &["put", src.to_str().unwrap(), "--pool", "street"]).unwrap();
    // Ada's node, which is to take part of bob's share, is down.
    net.stop(0).unwrap();
    assert!(net.json(1, &["status"]).unwrap()["operations"].as_array().unwrap().is_empty());
    let mut leave = net
        .cmd(1)
        .args(["pool", "leave", "street", "--wait", "120s", "--yes"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = serde_json::Value::Null;
    let waited =
        net.wait_for(Duration::from_secs(60), "the hand-off listed with its bytes", |net| {
            let ops = net.json(1, &["status"])?["operations"].clone();
            let found =
                ops.as_array().into_iter().flatten().any(|o| {
                    o["what"] == "leave pool street" && o["bytes_total"].as_u64() > Some(0)
                });
            seen = ops;
            Ok(found)
        });
    if let Err(e) = waited {
        let _ = leave.kill();
        let out = leave.wait_with_output().unwrap();
        panic!("{e}: the list read {seen}; leave said {out:?}");
    }
    let text = net.kith_ok(1, &["status"]).unwrap();
    assert!(text.contains("running   leave pool street: "), "{text}");
    eprintln!("while leaving: {seen}");
    // He gives up (the command is interrupted): the node stops the hand-off and the list empties.
    leave.kill().unwrap();
    leave.wait().unwrap();
    net.wait_for(Duration::from_secs(30), "the list to empty", |net| {
        Ok(net.json(1, &["status"])?["operations"].as_array().is_some_and(|a| a.is_empty()))
    })
    .unwrap();
}
