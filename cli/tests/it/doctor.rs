//! `kith doctor`: what it finds wrong in a node's setup, and that it says what to fix.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use kith_testnet::Layout;

use crate::util::*;

/// Debian's libfaketime, for a node whose clock is off.
const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

fn checks(v: &serde_json::Value) -> std::collections::BTreeMap<String, (String, String)> {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let what = c["what"].as_str().unwrap().to_string();
            let level = c["level"].as_str().unwrap().to_string();
            let says = format!("{} | fix: {}", c["says"].as_str().unwrap(), c["fix"]);
            (what, (level, says))
        })
        .collect()
}

#[test]
fn a_peer_whose_clock_is_off_and_a_node_that_offers_more_than_its_disk_are_told() {
    assert!(std::path::Path::new(FAKETIME_LIB).exists(), "install Debian's faketime");
    let mut net = testnet(2, Layout::Loopback);
    // Node 0's home is a small disk of its own.
    let _disk = Tmpfs::mount(&net.nodes[0].home, "96m");
    for i in 0..2 {
        net.kith_ok(i, &["init"]).unwrap();
    }
    // Node 1's clock runs 10 minutes ahead.
    net.nodes[1].up_env = vec![
        ("LD_PRELOAD".into(), FAKETIME_LIB.into()),
        ("FAKETIME".into(), "+600".into()),
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
        ("FAKETIME_DONT_RESET".into(), "1".into()),
    ];
    net.start_all().unwrap();
    net.wait_for(Duration::from_secs(20), "node 0 to hear node 1's time", |net| {
        Ok(net
            .json(0, &["peers"])?
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p["clock_offset_ms"].as_i64().is_some())))
    })
    .unwrap();
    let peers = net.json(0, &["peers"]).unwrap();
    let p = &peers.as_array().unwrap()[0];
    let off = p["clock_offset_ms"].as_i64().unwrap();
    assert!((590_000..610_000).contains(&off), "{p}");
    assert_eq!(p["version"].as_str(), Some(env!("CARGO_PKG_VERSION")), "{p}");
    assert!(p["rtt_ms"].as_u64().is_some(), "{p}");

    // An offer the disk could hold when it was made, and then something else filled it.
    net.kith_ok(0, &["pool", "create", "street", "--as", "ada"]).unwrap();
    net.kith_ok(0, &["offer", "--storage", "64MiB"]).unwrap();
    let fine = checks(&serde_json::from_slice(&net.kith(0, &["doctor", "--json"]).stdout).unwrap());
    assert_ne!(fine["disk"].0, "fail", "{fine:?}");
    write(&net.nodes[0].home.join("ballast"), &vec![0u8; 64 << 20]);

    let out = net.kith(0, &["doctor", "--json"]);
    assert!(!out.status.success(), "a failing check fails the command");
    let c = checks(&serde_json::from_slice(&out.stdout).unwrap());
    assert_eq!(c["daemon"].0, "ok", "{c:?}");
    assert_eq!(c["keys"].0, "ok", "{c:?}");
    assert_eq!(c["versions"].0, "ok", "{c:?}");
    assert_eq!(c["clock"].0, "fail", "{c:?}");
    assert!(c["clock"].1.contains("+600 s") && c["clock"].1.contains("timedatectl"), "{c:?}");
    assert_eq!(c["disk"].0, "fail", "{c:?}");
    assert!(c["disk"].1.contains("street") && c["disk"].1.contains("kith offer"), "{c:?}");
    // In words, for people.
    let human = String::from_utf8(net.kith(0, &["doctor"]).stdout).unwrap();
    assert!(human.lines().any(|l| l.starts_with("fail  clock")), "{human}");
    assert!(human.contains("fix: "), "{human}");
    // Node 1, ten minutes ahead, sees node 0 ten minutes behind.
    let c1 = checks(&serde_json::from_slice(&net.kith(1, &["doctor", "--json"]).stdout).unwrap());
    assert!(c1["clock"].1.contains("-600 s"), "{c1:?}");
}

#[test]
fn a_stopped_node_with_open_keys_and_a_busy_port_is_told_what_to_fix() {
    let net = testnet(1, Layout::Loopback);
    net.kith_ok(0, &["init"]).unwrap();
    let home = net.nodes[0].home.clone();
    let held = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap();
    write(
        &home.join("kith.toml"),
        format!("listen = [\"{port}\"]\nhttp = \"127.0.0.1:0\"\n").as_bytes(),
    );
    let key = home.join("node.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();

    let out = net.kith(0, &["doctor", "--json"]);
    assert!(!out.status.success());
    let c = checks(&serde_json::from_slice(&out.stdout).unwrap());
    assert_eq!(c["daemon"].0, "warn", "{c:?}");
    assert!(c["daemon"].1.contains("kith up"), "{c:?}");
    assert_eq!(c["keys"].0, "fail", "{c:?}");
    assert!(c["keys"].1.contains(&format!("chmod 600 {}", key.display())), "{c:?}");
    assert_eq!(c["ports"].0, "fail", "{c:?}");
    assert!(c["ports"].1.contains(&format!("UDP {port}")), "{c:?}");
    assert_eq!(c["config"].0, "ok", "{c:?}");
    assert!(c["config"].1.contains("kith.toml"), "{c:?}");
    assert!(!c.contains_key("clock"), "no peers' clocks without the daemon: {c:?}");

    // Fixed as it says: nothing fails.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    drop(held);
    let out = net.kith(0, &["doctor", "--json"]);
    let c = checks(&serde_json::from_slice(&out.stdout).unwrap());
    assert!(out.status.success(), "{c:?}");
    assert!(c.values().all(|(level, _)| level != "fail"), "{c:?}");

    // A bad config file is a failed check naming the key and line, not a crash.
    write(&home.join("kith.toml"), b"\nhttp = 7\n");
    let out = net.kith(0, &["doctor", "--json"]);
    let c = checks(&serde_json::from_slice(&out.stdout).unwrap());
    assert_eq!(c["config"].0, "fail", "{c:?}");
    assert!(c["config"].1.contains("line 2") && c["config"].1.contains("http"), "{c:?}");
}
