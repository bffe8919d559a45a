//! Chunk transfer: a second device gets objects across the network, from several peers,
//! surviving the loss of one and resuming after an interruption.

use std::time::Duration;

use kith_testnet::Layout;

use crate::util::*;

const TRANSFER: Duration = Duration::from_secs(120);

#[test]
fn a_second_device_gets_a_tree_across_the_network() {
    let net = devices(2, Layout::Loopback);
    let src = net.dir().join("docs");
    sample_tree(&src);
    let id = net.kith_ok(0, &["put", src.to_str().unwrap()]).unwrap().trim().to_string();
    let out = net.dir().join("restored");
    let got = net.kith(1, &["get", &id, "-o", out.to_str().unwrap()]);
    assert!(got.status.success(), "{}", String::from_utf8_lossy(&got.stderr));
    assert!(
        String::from_utf8_lossy(&got.stderr).contains("fetched"),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert_eq!(describe(&out), describe(&src));
    // Now it is a local object of the second device too.
    assert!(net.kith_ok(1, &["ls"]).unwrap().contains(&id[..12]));
    let v = net.json(1, &["verify"]).unwrap();
    assert_eq!(v["damaged"], false, "{v}");
}

/// A fetch of many batches spreads its streams over several connections to the peer (one
/// connection's packet work runs on one core at a time), and closes the extra ones when done.
#[test]
fn a_large_fetch_uses_several_connections_and_closes_the_extra_ones_after() {
    let mut net = devices(2, Layout::Loopback);
    let src = net.dir().join("many");
    for i in 0..600 {
        write(&src.join(format!("f{i:04}.bin")), &random_bytes(4096, 7000 + i));
    }
    let id = net.kith_ok(0, &["put", src.to_str().unwrap()]).unwrap().trim().to_string();
    let served = |net: &kith_testnet::Testnet| net.json(0, &["status"]).unwrap()["served"].clone();
    // Node 1 holds its first connection to node 0 already (its pings), so what the fetch opens
    // is the further ones.
    net.wait_for(TRANSFER, "node 1's first connection to node 0", |n| {
        Ok(served(n)["open_connections"].as_u64().unwrap() >= 1)
    })
    .unwrap();
    let before = served(&net)["connections"].as_u64().unwrap();

    let out = net.dir().join("restored");
    let got = net.kith(1, &["get", &id, "-o", out.to_str().unwrap()]);
    assert!(got.status.success(), "{}", String::from_utf8_lossy(&got.stderr));
    assert_eq!(describe(&out), describe(&src));

    let s = served(&net);
    let opened = s["connections"].as_u64().unwrap() - before;
    assert!(opened >= 3, "the fetch opened {opened} connections besides the first: {s}");
    // The extra connections close with the fetch; the one kept for pings may stay.
    net.wait_for(TRANSFER, "the extra connections to close", |n| {
        Ok(served(n)["open_connections"].as_u64().unwrap() <= 1)
    })
    .unwrap();
}

/// A peer that lets a node hold one connection to it refuses a large fetch's further ones; the
/// fetch carries on over the first and gets everything.
#[test]
fn a_fetch_whose_further_connections_are_refused_uses_the_first() {
    let mut net = testnet(2, Layout::Loopback);
    net.kith_ok(0, &["init"]).unwrap();
    net.share_identity(1, 0).unwrap();
    write(&net.nodes[0].home.join("kith.toml"), b"max_connections_per_peer = 1\n");
    net.start_all().unwrap();
    let served = |net: &kith_testnet::Testnet| net.json(0, &["status"]).unwrap()["served"].clone();
    net.wait_for(TRANSFER, "node 1's first connection to node 0", |n| {
        Ok(served(n)["open_connections"].as_u64().unwrap() >= 1)
    })
    .unwrap();
    let src = net.dir().join("many");
    for i in 0..600 {
        write(&src.join(format!("f{i:04}.bin")), &random_bytes(4096, 9000 + i));
    }
    let id = net.kith_ok(0, &["put", src.to_str().unwrap()]).unwrap().trim().to_string();

    let out = net.dir().join("restored");
    let got = net.kith(1, &["get", &id, "-o", out.to_str().unwrap()]);
    assert!(got.status.success(), "{}\n{}", String::from_utf8_lossy(&got.stderr), net.log(1));
    assert_eq!(describe(&out), describe(&src));

    let status = net.json(0, &["status"]).unwrap();
    let s = &status["served"];
    assert!(s["refused_connections"].as_u64().unwrap() >= 1, "no connection refused: {s}");
    assert!(
        status["refused"]["connection past the cap per node"].as_u64().unwrap_or(0) >= 1,
        "{status}"
    );
}

#[test]
fn fetch_uses_several_peers_and_finishes_when_one_dies() {
    let mut net = devices(3, Layout::Loopback);
    let big = net.dir().join("big.bin");
    write(&big, &random_bytes(300 << 20, 61));
    let id = net.kith_ok(0, &["put", big.to_str().unwrap()]).unwrap().trim().to_string();
    // Node 2 gets a copy first, so two peers hold the data.
    assert!(
        net.kith(2, &["get", &id, "-o", net.dir().join("copy2").to_str().unwrap()])
            .status
            .success()
    );
    let served_before = |net: &kith_testnet::Testnet, i| {
        net.json(i, &["status"]).unwrap()["served"]["bytes"].as_u64().unwrap()
    };
    let (s0, s2) = (served_before(&net, 0), served_before(&net, 2));

    let out = net.dir().join("copy1");
    let mut fetch = net
        .cmd(1)
        .args(["get", &id, "-o", out.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Both peers serve; then node 0 dies in the middle.
    net.wait_for(TRANSFER, "both peers to serve", |n| {
        Ok(served_before(n, 0) > s0 && served_before(n, 2) > s2)
    })
    .unwrap();
    net.kill(0).unwrap();
    let status = fetch.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(fetch.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{err}\n{}", net.log(1));
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&big).unwrap(), "restored bytes differ");
}

#[test]
fn an_interrupted_fetch_resumes_where_it_stopped() {
    let mut net = devices(2, Layout::Loopback);
    let big = net.dir().join("big.bin");
    write(&big, &random_bytes(400 << 20, 62));
    let id = net.kith_ok(0, &["put", big.to_str().unwrap()]).unwrap().trim().to_string();
    let mut fetch = net
        .cmd(1)
        .args(["get", &id, "-o", "-"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // A fetch commits a batch of packs at a time (renamed into place, then indexed). The root
    // and the tree come first, in small packs of their own; so once more than two batches'
    // worth of packs are in place, the second batch is being renamed and the first is indexed.
    let packs = net.nodes[1].home.join("store/packs");
    let batch = kith_node::store::INDEX_CHECKPOINT_PACKS;
    net.wait_for(TRANSFER, "the fetch to commit a batch", |_| {
        Ok(std::fs::read_dir(&packs).map(|d| d.count()).unwrap_or(0) > 2 * batch)
    })
    .unwrap();
    net.kill(1).unwrap();
    let _ = fetch.wait();
    net.start(1).unwrap();
    net.wait_for(Duration::from_secs(20), "node 1 to reach node 0 again", |n| {
        Ok(n.peers(1)?.iter().any(|p| p["state"] == "reachable"))
    })
    .unwrap();
    let out = net.dir().join("resumed");
    let got = net.kith(1, &["get", &id, "-o", out.to_str().unwrap()]);
    assert!(got.status.success(), "{}", String::from_utf8_lossy(&got.stderr));
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&big).unwrap());
    let err = String::from_utf8_lossy(&got.stderr);
    let fetched: f64 = err
        .split("fetched ")
        .nth(1)
        .and_then(|s| s.split(" MiB").next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::MAX);
    assert!(fetched < 400.0 - 100.0, "the second fetch should skip what the first kept: {err}");
}

#[test]
fn objects_nobody_has_are_a_clear_error() {
    let net = devices(2, Layout::Loopback);
    let unknown = "ab".repeat(32);
    let out = net.kith(1, &["get", &unknown, "-o", net.dir().join("x").to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not found on any reachable peer"), "{err}");
    assert!(!net.dir().join("x").exists());

    let mut lonely = testnet(1, Layout::Loopback);
    lonely.start(0).unwrap();
    let out = lonely.kith(0, &["get", &unknown, "-o", "-"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no peers to fetch"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
