//! Offline by default: with no relay configured a node sends nothing beyond its LAN.

use std::time::Duration;

use kith_testnet::Layout;
use kith_testnet::netns::in_ns;

use crate::util::*;

/// Counts every packet a namespace sends to an address that is not on its LAN: not the LAN
/// subnet, not loopback, not link-local (multicast included: mDNS, IGMP, IPv6 neighbour
/// discovery never leave the link).
const RULES: &str = "table inet kith_test {
  counter beyond { }
  chain out {
    type filter hook output priority 0; policy accept;
    ip daddr { 10.99.0.0/24, 127.0.0.0/8, 224.0.0.0/24 } accept
    ip6 daddr { ::1, fe80::/10, ff02::/16 } accept
    counter name beyond
  }
}
";

fn beyond(ns: &str) -> u64 {
    let out = in_ns(ns, "nft", &["list", "counter", "inet", "kith_test", "beyond"]).unwrap();
    let packets = out
        .split("packets ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok());
    packets.unwrap_or_else(|| panic!("cannot read the counter: {out}"))
}

#[test]
fn with_no_relay_a_node_sends_nothing_beyond_its_lan() {
    let mut net = testnet(2, Layout::Namespaces);
    let rules = net.dir().join("rules.nft");
    std::fs::write(&rules, RULES).unwrap();
    let nss: Vec<String> = (0..2).map(|i| net.lan().unwrap().ns(i).to_string()).collect();
    for ns in &nss {
        // A way out that a misbehaving node could use: a default route (its gateway does not
        // exist, so nothing could leave our namespaces even then).
        in_ns(ns, "ip", &["route", "add", "default", "via", "10.99.0.254"]).unwrap();
        in_ns(ns, "nft", &["-f", rules.to_str().unwrap()]).unwrap();
    }
    net.kith_ok(0, &["init"]).unwrap();
    net.share_identity(1, 0).unwrap();
    net.start_all().unwrap();
    net.wait_for(Duration::from_secs(20), "the nodes to find each other", |n| {
        Ok(n.peers(1)?.iter().any(|p| p["state"] == "reachable"))
    })
    .unwrap();
    let file = net.dir().join("f.bin");
    write(&file, &random_bytes(3 << 20, 71));
    let id = net.kith_ok(0, &["put", file.to_str().unwrap()]).unwrap().trim().to_string();
    let got = net.cmd(1).args(["get", &id, "-o", "-"]).output().unwrap();
    assert!(
        got.stdout == std::fs::read(&file).unwrap(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    net.stop(0).unwrap();
    net.stop(1).unwrap();

    for ns in &nss {
        assert_eq!(beyond(ns), 0, "a node in {ns} sent packets beyond its LAN");
    }
    // The counter does count: one packet to a documentation address (192.0.2.1, TEST-NET-1).
    in_ns(&nss[0], "bash", &["-c", "echo x > /dev/udp/192.0.2.1/9"]).unwrap();
    assert_eq!(beyond(&nss[0]), 1, "the control packet was not counted");
}
