//! Pools across real nodes: invites, joins, offers and policy, converging over iroh.

use std::time::Duration;

use kith_testnet::{Layout, Testnet};
use serde_json::Value;

use crate::util::*;

const CONVERGE: Duration = Duration::from_secs(30);

fn show(net: &Testnet, i: usize) -> Value {
    net.json(i, &["pool", "show", "street"]).unwrap()
}

fn err(net: &Testnet, i: usize, args: &[&str]) -> String {
    let out = net.kith(i, args);
    assert!(!out.status.success(), "{args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Three people, three nodes, one pool: node 0 founds it and invites the others.
fn street() -> Testnet {
    let mut net = testnet(3, Layout::Loopback);
    for i in 0..3 {
        net.kith_ok(i, &["init"]).unwrap();
    }
    net.start_all().unwrap();
    net.kith_ok(0, &["pool", "create", "street", "--as", "ada"]).unwrap();
    for (i, name) in [(1, "bob"), (2, "cy")] {
        let ticket = net.kith_ok(0, &["pool", "invite", "street"]).unwrap();
        net.kith_ok(i, &["pool", "join", ticket.trim(), "--as", name]).unwrap();
    }
    net
}

fn members(v: &Value) -> Vec<(String, String, String)> {
    v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().into(),
                m["role"].as_str().unwrap().into(),
                m["state"].as_str().unwrap().into(),
            )
        })
        .collect()
}

#[test]
fn members_join_by_invite_offer_and_converge() {
    let mut net = street();
    for (i, zone) in [(0, "north"), (1, "south"), (2, "east")] {
        net.kith_ok(i, &["offer", "street", "--storage", "1GiB", "--zone", zone]).unwrap();
    }
    net.wait_for(CONVERGE, "every node to see three members with their offers", |net| {
        Ok((0..3).all(|i| {
            let v = show(net, i);
            v["members"].as_array().map(Vec::len) == Some(3)
                && v["capacity"]["offered"] == 3u64 << 30
        }))
    })
    .unwrap();
    let v0 = show(&net, 0);
    for i in 1..3 {
        assert_eq!(members(&show(&net, i)), members(&v0));
    }
    let mut names: Vec<_> = members(&v0);
    names.sort();
    assert_eq!(
        names,
        vec![
            ("ada".into(), "admin".into(), "active".into()),
            ("bob".into(), "member".into(), "active".into()),
            ("cy".into(), "member".into(), "active".into()),
        ]
    );
    assert_eq!(v0["capacity"]["zones"], 3);
    // Policy: members cannot set it; three zones hold three replicas, not four.
    assert!(err(&net, 1, &["pool", "set", "street", "replicas", "2"]).contains("only an admin"));
    net.kith_ok(0, &["pool", "set", "street", "replicas", "3"]).unwrap();
    let e = err(&net, 0, &["pool", "set", "street", "replicas", "4"]);
    assert!(e.contains("cannot keep 4 replicas") && e.contains("3 zone(s)"), "{e}");
    // The pool listing.
    let ls = net.json(2, &["pool", "ls"]).unwrap();
    assert_eq!(ls[0]["name"], "street");
    assert_eq!(ls[0]["members"], 3);
}

#[test]
fn a_removed_member_is_out_everywhere_and_cannot_write() {
    let mut net = street();
    net.kith_ok(0, &["pool", "remove", "street", "cy"]).unwrap();
    net.wait_for(CONVERGE, "node 2 to learn of its removal", |net| {
        Ok(members(&show(net, 2)).iter().any(|(n, _, s)| n == "cy" && s == "removed"))
    })
    .unwrap();
    let e = err(&net, 2, &["offer", "street", "--storage", "1GiB"]);
    assert!(e.contains("not a member"), "{e}");
    // Bob's changes still flow.
    net.kith_ok(1, &["offer", "street", "--storage", "2GiB"]).unwrap();
    net.wait_for(CONVERGE, "node 0 to see bob's offer", |net| {
        Ok(show(net, 0)["capacity"]["offered"] == 2u64 << 30)
    })
    .unwrap();
}

#[test]
fn bad_tickets_get_clear_errors() {
    let mut net = testnet(2, Layout::Loopback);
    for i in 0..2 {
        net.kith_ok(i, &["init"]).unwrap();
    }
    net.start_all().unwrap();
    net.kith_ok(0, &["pool", "create", "street"]).unwrap();
    let invite = net.json(0, &["pool", "invite", "street", "--expires", "1s"]).unwrap();
    let ticket = invite["ticket"].as_str().unwrap();
    let expires_ms = invite["expires_ms"].as_u64().unwrap();
    // Damaged.
    let mut damaged = ticket.to_string();
    damaged.truncate(ticket.len() - 7);
    let e = err(&net, 1, &["pool", "join", &damaged]);
    assert!(e.contains("damaged"), "{e}");
    assert!(err(&net, 1, &["pool", "join", "kith1abc"]).contains("not a pool ticket"));
    // Expired: the inviting node refuses it with its own clock (the same wall clock as ours).
    net.wait_for(Duration::from_secs(10), "the one-second invite to expire", |_| {
        let now_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();
        Ok(now_ms > u128::from(expires_ms))
    })
    .unwrap();
    let e = err(&net, 1, &["pool", "join", ticket]);
    assert!(e.contains("expired"), "{e}");
    // A used-up invite.
    // (Drawn as a QR code for a phone too: on stderr, the ticket alone on stdout.)
    let out = net.kith(0, &["pool", "invite", "street", "--uses", "1", "--qr"]);
    assert!(out.status.success());
    let once = String::from_utf8(out.stdout).unwrap();
    let drawn = String::from_utf8(out.stderr).unwrap();
    let rows: Vec<&str> = drawn.lines().filter(|l| l.contains('▀') || l.contains('▄')).collect();
    assert!(rows.len() > 20, "a QR code of the ticket: {drawn}");
    assert!(once.trim().starts_with("kithpool1") && !once.contains('▀'), "{once}");
    net.kith_ok(1, &["pool", "join", once.trim()]).unwrap();
    assert!(err(&net, 1, &["pool", "join", once.trim()]).contains("already a member"));
    assert_eq!(net.json(0, &["pool", "ls"]).unwrap()[0]["members"], 2);
    // Node 0 is still up and answering.
    assert!(net.json(0, &["status"]).is_ok());
}

#[test]
fn a_ticket_for_a_pool_its_node_no_longer_holds_is_refused_clearly() {
    let mut net = testnet(2, Layout::Loopback);
    for i in 0..2 {
        net.kith_ok(i, &["init"]).unwrap();
    }
    net.start_all().unwrap();
    net.kith_ok(0, &["pool", "create", "street"]).unwrap();
    let ticket = net.kith_ok(0, &["pool", "invite", "street"]).unwrap();
    // The inviting node's pool is gone (its document deleted while it was down).
    net.stop(0).unwrap();
    let pools_dir = net.dir().join("node0/pools");
    let files = files_under(&pools_dir);
    assert_eq!(files.len(), 1, "{files:?}");
    std::fs::remove_file(&files[0]).unwrap();
    net.start(0).unwrap();
    let e = err(&net, 1, &["pool", "join", ticket.trim()]);
    assert!(e.contains("holds no pool"), "{e}");
    assert_eq!(net.json(1, &["pool", "ls"]).unwrap().as_array().map(Vec::len), Some(0));
}
