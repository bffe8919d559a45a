//! Discovery: nodes on one LAN find each other with no configuration; tickets for the others.

use std::time::Duration;

use kith_testnet::Layout;

use crate::util::*;

/// Generous: the measured figure (well under a second) is in docs/benchmarks.md; a test only
/// asserts that discovery happens.
const DISCOVERY: Duration = Duration::from_secs(20);

fn known(net: &kith_testnet::Testnet, i: usize) -> Vec<(String, String)> {
    net.peers(i)
        .unwrap_or_default()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap_or("").to_string(),
                p["state"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn three_nodes_in_namespaces_find_each_other() {
    let mut net = testnet(3, Layout::Namespaces);
    net.start_all().unwrap();
    let ids: Vec<String> = (0..3).map(|i| net.id(i).unwrap()).collect();
    for i in 0..3 {
        let took = net
            .wait_for(DISCOVERY, &format!("node {i} to list the other two"), |n| {
                let k = known(n, i);
                Ok((0..3)
                    .filter(|j| *j != i)
                    .all(|j| k.iter().any(|(id, st)| *id == ids[j] && st == "reachable")))
            })
            .unwrap();
        // A neighbour that dialled first is known before its mDNS answer (which may wait out
        // mDNS's one-second multicast window); the announcement still arrives.
        net.wait_for(DISCOVERY, &format!("node {i} to hear both on mDNS"), |n| {
            Ok(n.peers(i)?.iter().filter(|p| p["mdns"] == true).count() == 2)
        })
        .unwrap();
        eprintln!("node {i} saw both peers {took:?} after the last node started");
        let peers = net.peers(i).unwrap();
        assert_eq!(peers.len(), 2, "only the two others, never itself: {peers:?}");
        assert!(peers.iter().all(|p| p["mdns"] == true));
        let lan_addr = peers
            .iter()
            .flat_map(|p| p["addrs"].as_array().unwrap())
            .any(|a| a.as_str().unwrap().starts_with("10.99.0."));
        assert!(lan_addr, "{peers:?}");
    }
}

#[test]
fn a_vanished_peer_shows_unreachable_and_is_used_again_when_back() {
    let mut net = testnet(2, Layout::Namespaces);
    net.start_all().unwrap();
    let b = net.id(1).unwrap();
    let state = |net: &kith_testnet::Testnet| {
        known(net, 0).into_iter().find(|(id, _)| *id == b).map(|(_, s)| s)
    };
    net.wait_for(DISCOVERY, "node 0 to reach node 1", |n| {
        Ok(state(n).as_deref() == Some("reachable"))
    })
    .unwrap();
    net.kill(1).unwrap();
    net.wait_for(DISCOVERY, "node 1 to show as unreachable", |n| {
        Ok(state(n).as_deref() == Some("unreachable"))
    })
    .unwrap();
    let p = net.peers(0).unwrap().into_iter().find(|p| p["id"] == b.as_str()).unwrap();
    assert!(
        p["last_seen_ms"].as_u64().is_some(),
        "an unreachable peer keeps its last-seen time: {p}"
    );
    let human = net.kith_ok(0, &["peers"]).unwrap();
    assert!(human.contains("unreachable"), "{human}");

    net.start(1).unwrap();
    net.wait_for(DISCOVERY, "node 1 to be reachable again", |n| {
        Ok(state(n).as_deref() == Some("reachable"))
    })
    .unwrap();
    // And it is used again: a second device fetches through it.
}

#[test]
fn ticket_peers_are_added_and_remembered_across_restarts() {
    let mut net = testnet(2, Layout::Loopback);
    net.auto_connect = false;
    net.start_all().unwrap();
    assert!(net.peers(0).unwrap().is_empty(), "without mDNS, nobody is found");
    let ticket = net.kith_ok(0, &["id", "--ticket"]).unwrap().trim().to_string();
    assert!(ticket.starts_with("kith1"), "{ticket}");
    let out = net.kith(1, &["peer", "add", &ticket]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let a = net.id(0).unwrap();
    let listed =
        |n: &kith_testnet::Testnet| known(n, 1).contains(&(a.clone(), "reachable".to_string()));
    assert!(listed(&net), "{:?}", net.peers(1));

    net.stop(1).unwrap();
    net.start(1).unwrap();
    net.wait_for(DISCOVERY, "the saved peer to be reachable after a restart", |n| Ok(listed(n)))
        .unwrap();
    assert_eq!(net.peers(1).unwrap()[0]["manual"], true);

    let bad = net.kith(1, &["peer", "add", "kith1notaticket"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("ticket is damaged"));
    let own = net.kith(0, &["peer", "add", &ticket]);
    assert!(String::from_utf8_lossy(&own.stderr).contains("own ticket"));
}
