//! Running as a service: the systemd units `kith service install` writes, and `kith up`'s
//! config file.

use std::path::Path;
use std::process::Command;

use kith_testnet::Layout;

use crate::util::*;

/// systemd's own check of a unit: every key known, every value parses, the binary exists.
fn verify(unit: &Path) {
    let out = Command::new("systemd-analyze").arg("verify").arg(unit).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.trim().is_empty(), "{}: {err}", unit.display());
}

#[test]
fn the_units_kith_writes_pass_systemds_own_check() {
    let k = Kith::new();
    let dir = k.path("units");
    let out = k.ok(&["service", "install", "--no-enable", "--unit-dir", dir.to_str().unwrap()]);
    let unit = dir.join("kith.service");
    assert!(out.stdout.contains(&format!("wrote {}", unit.display())), "{}", out.stdout);
    assert!(out.stdout.contains("systemctl --user daemon-reload"), "{}", out.stdout);
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(text.contains(&format!("--home {} up", k.home.display())), "{text}");
    verify(&unit);

    let system = k.ok(&["service", "install", "--system", "--print"]).stdout;
    assert!(system.contains("--home /var/lib/kith up") && system.contains("DynamicUser=yes"));
    let sys_dir = k.path("system");
    std::fs::create_dir_all(&sys_dir).unwrap();
    write(&sys_dir.join("kith.service"), system.as_bytes());
    verify(&sys_dir.join("kith.service"));
}

#[test]
fn the_config_file_in_the_home_is_read_and_a_bad_one_stops_the_node_before_it_starts() {
    let mut net = testnet(1, Layout::Loopback);
    net.kith_ok(0, &["init"]).unwrap();
    let home = net.nodes[0].home.clone();
    // A typo: the node does not start, and says which key on which line.
    write(
        &home.join("kith.toml"),
        b"# my node\nsite_cache = \"64MiB\"\nmetrix = \"127.0.0.1:0\"\n",
    );
    let out = net
        .cmd(0)
        .args(["up", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--no-mdns"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("kith.toml line 3: unknown key `metrix`"), "{err}");
    assert!(!home.join("control.sock").exists());
    // Fixed, it is read: the metrics it asks for are served.
    write(
        &home.join("kith.toml"),
        b"# my node\nsite_cache = \"64MiB\"\nmetrics = \"127.0.0.1:0\"\n",
    );
    net.start(0).unwrap();
    let status = net.json(0, &["status"]).unwrap();
    let url = status["metrics"].as_str().unwrap_or_else(|| panic!("{status}"));
    let addr = url.strip_prefix("http://").unwrap().strip_suffix("/metrics").unwrap();
    assert_eq!(get(addr.parse().unwrap(), "/metrics").status, 200);
    assert!(net.log(0).contains("read the config file"), "{}", net.log(0));
}
