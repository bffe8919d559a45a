//! Objects put into a pool survive their writer: holders acknowledge, a restored identity finds
//! its pools and gets its bytes back, and repair restores the replication factor when a holder
//! goes for good.

use std::time::Duration;

use kith_testnet::{Layout, Testnet};
use serde_json::Value;

use crate::util::*;

const CONVERGE: Duration = Duration::from_secs(60);

fn show(net: &Testnet, i: usize) -> Value {
    net.json(i, &["pool", "show", "street"]).unwrap()
}

/// Nodes 0..4 in one pool, each in its own zone, offering storage; two replicas, repair after
/// 10 s.
fn pool_of_four(net: &mut Testnet) {
    for i in 0..4 {
        net.kith_ok(i, &["init"]).unwrap();
        net.start(i).unwrap();
    }
    net.kith_ok(0, &["pool", "create", "street", "--as", "ada"]).unwrap();
    for i in 1..4 {
        let ticket = net.kith_ok(0, &["pool", "invite", "street"]).unwrap();
        net.kith_ok(i, &["pool", "join", ticket.trim()]).unwrap();
    }
    for i in 0..4 {
        let zone = format!("house-{i}");
        net.kith_ok(i, &["offer", "street", "--storage", "1GiB", "--zone", &zone]).unwrap();
    }
    net.wait_for(CONVERGE, "node 0 to see the four offers", |net| {
        Ok(show(net, 0)["capacity"]["offered"] == 4u64 << 30)
    })
    .unwrap();
    net.kith_ok(0, &["pool", "set", "street", "repair_after", "10s"]).unwrap();
    // Two copies of four holders: losing a holder leaves work for repair.
    net.kith_ok(0, &["pool", "set", "street", "replicas", "2"]).unwrap();
    net.wait_for(CONVERGE, "every node to see four offers and repair_after", |net| {
        Ok((0..4).all(|i| {
            let v = show(net, i);
            v["capacity"]["offered"] == 4u64 << 30
                && v["charter"]["repair_after_ms"] == 10000
                && v["charter"]["replicas"] == 2
        }))
    })
    .unwrap();
}

fn replication(v: &Value) -> (u64, u64, u64) {
    let r = &v["replication"];
    (
        r["objects"].as_u64().unwrap_or(0),
        r["under_replicated_bytes"].as_u64().unwrap_or(u64::MAX),
        r["lost_blobs"].as_u64().unwrap_or(u64::MAX),
    )
}

#[test]
fn a_pool_object_outlives_its_writer_and_repair_restores_the_replicas() {
    let mut net = testnet(5, Layout::Loopback);
    pool_of_four(&mut net);
    let data = random_bytes(6 << 20, 41);
    let src = net.dir().join("photos.bin");
    write(&src, &data);
    let put = net.json(0, &["put", src.to_str().unwrap(), "--pool", "street"]).unwrap();
    let p = &put["pool"];
    assert_eq!(p["complete"], true, "{put}");
    assert_eq!(p["replicas"], 2);
    assert_eq!(p["holders"], 4);
    let acks = p["acks"].as_array().unwrap();
    let blobs = p["blobs"].as_u64().unwrap();
    // Every blob went to two holders; each holder's share adds up.
    assert_eq!(acks.iter().map(|a| a["blobs"].as_u64().unwrap()).sum::<u64>(), 2 * blobs);
    let node0 = net.id(0).unwrap();
    let writer_held = acks.iter().any(|a| a["node"] == node0.as_str() && a["blobs"] != 0);
    assert!(acks.iter().all(|a| a["ok"] == true), "{put}");
    let object = put["id"].as_str().unwrap().to_string();

    net.wait_for(CONVERGE, "node 1 to confirm full replication", |net| {
        Ok(replication(&show(net, 1)) == (1, 0, 0))
    })
    .unwrap();
    // Capacity used is every copy: two of each blob.
    let cap = show(&net, 1)["capacity"].clone();
    assert_eq!(cap["used"].as_u64().unwrap(), 2 * p["bytes"].as_u64().unwrap(), "{cap}");
    assert_eq!(cap["free"].as_u64().unwrap(), (4u64 << 30) - cap["used"].as_u64().unwrap());

    // The other members keep a copy of the writer's identity document.
    let ada = net.json(0, &["identity"]).unwrap()["id"].as_str().unwrap().to_string();
    let kept = net.dir().join(format!("node1/identities/{ada}.kdoc"));
    net.wait_for(CONVERGE, "node 1 to keep the writer's identity document", |_| Ok(kept.exists()))
        .unwrap();

    // The writer's machine is gone for good. A new machine with the restored identity finds
    // the pool through its peers and gets the object back from the holders.
    net.kill(0).unwrap();
    net.share_identity(4, 0).unwrap();
    net.start(4).unwrap();
    net.wait_for(CONVERGE, "the restored identity to find its pool", |net| {
        Ok(net.json(4, &["pool", "ls"])?.as_array().is_some_and(|a| a.len() == 1))
    })
    .unwrap();
    let back = net.dir().join("restored.bin");
    net.kith_ok(4, &["get", &object[..12], "-o", back.to_str().unwrap()]).unwrap();
    assert!(std::fs::read(&back).unwrap() == data, "restored bytes differ");
    // The identity document came back from the other members, who kept it: the name, the lost
    // device, this one, and the pool.
    let node4 = net.id(4).unwrap();
    net.wait_for(CONVERGE, "the identity document to come back", |net| {
        let v = net.json(4, &["identity"])?;
        let devices: Vec<&str> =
            v["devices"].as_array().unwrap().iter().map(|d| d["node"].as_str().unwrap()).collect();
        Ok(v["name"] == "ada"
            && devices.contains(&node0.as_str())
            && devices.contains(&node4.as_str())
            && v["pools"][0]["name"] == "street")
    })
    .unwrap();

    // Node 0 is silent past repair_after: its share moves to the other three holders.
    net.wait_for(CONVERGE, "repair after the writer's loss", |net| {
        let v = show(net, 1);
        let out = v["replication"]["holders"]
            .as_array()
            .is_some_and(|hs| hs.iter().any(|h| h["state"] == "out"));
        Ok(out && replication(&v) == (1, 0, 0))
    })
    .unwrap();
    let repaired = |net: &Testnet, nodes: &[usize]| -> u64 {
        nodes.iter().map(|i| show(net, *i)["repair"]["repaired_blobs"].as_u64().unwrap_or(0)).sum()
    };
    if writer_held {
        assert!(repaired(&net, &[1, 2, 3]) > 0, "the writer's copies were not replaced");
    }

    // The new machine offers storage; then one more holder goes: the replicas come back.
    net.kith_ok(4, &["offer", "street", "--storage", "1GiB", "--zone", "house-4"]).unwrap();
    net.wait_for(CONVERGE, "node 1 to see the new offer", |net| {
        Ok(show(net, 1)["capacity"]["offered"] == 5u64 << 30)
    })
    .unwrap();
    net.kill(2).unwrap();
    let node2 = net.id(2).unwrap();
    net.wait_for(CONVERGE, "node 1 to notice node 2 is gone", |net| {
        let v = show(net, 1);
        Ok(v["replication"]["holders"]
            .as_array()
            .is_some_and(|hs| hs.iter().any(|h| h["node"] == node2.as_str() && h["state"] != "up")))
    })
    .unwrap();
    net.wait_for(CONVERGE, "repair after losing a second holder", |net| {
        Ok(replication(&show(net, 1)) == (1, 0, 0))
    })
    .unwrap();
    let v = show(&net, 1);
    let lost_holder = v["replication"]["holders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["node"] == node2.as_str())
        .cloned()
        .unwrap();
    assert_eq!(lost_holder["state"], "out", "{v}");
    assert_eq!(lost_holder["assigned_blobs"], 0, "{v}");
}

/// Bytes node `i` has served since it started.
fn served(net: &Testnet, i: usize) -> u64 {
    net.json(i, &["status"]).unwrap()["served"]["bytes"].as_u64().unwrap()
}

#[test]
fn a_pool_put_sends_each_blob_once_and_the_holders_pass_it_on() {
    let mut net = testnet(4, Layout::Loopback);
    pool_of_four(&mut net);
    net.kith_ok(0, &["pool", "set", "street", "replicas", "3"]).unwrap();
    net.wait_for(CONVERGE, "every node to see three replicas", |net| {
        Ok((0..4).all(|i| show(net, i)["charter"]["replicas"] == 3))
    })
    .unwrap();
    let data = random_bytes(8 << 20, 43);
    let src = net.dir().join("archive.bin");
    write(&src, &data);
    let before: Vec<u64> = (0..4).map(|i| served(&net, i)).collect();
    let put = net.json(0, &["put", src.to_str().unwrap(), "--pool", "street"]).unwrap();
    let p = &put["pool"];
    assert_eq!(p["complete"], true, "{put}");
    let acks = p["acks"].as_array().unwrap();
    assert!(acks.iter().all(|a| a["ok"] == true), "{put}");
    let blobs = p["blobs"].as_u64().unwrap();
    assert_eq!(acks.iter().map(|a| a["blobs"].as_u64().unwrap()).sum::<u64>(), 3 * blobs);
    // Acknowledged means held: every node the put named has its blobs now.
    assert_eq!(replication(&show(&net, 1)), (1, 0, 0), "{}", show(&net, 1));
    let sent: Vec<u64> = (0..4).map(|i| served(&net, i) - before[i]).collect();
    let bytes = p["bytes"].as_u64().unwrap();
    let node0 = net.id(0).unwrap();
    let to_others: u64 = acks
        .iter()
        .filter(|a| a["node"] != node0.as_str())
        .map(|a| a["bytes"].as_u64().unwrap())
        .sum();
    // Four holders, three copies: the writer holds three quarters of the blobs and sending
    // every other copy itself (as before chain replication) would be 2.25 copies. It sends
    // each blob once (plus the manifest to each holder); the holders send the rest.
    assert!(to_others > 2 * bytes, "{put}");
    assert!(
        sent[0] < bytes + bytes / 4,
        "the writer sent {} of a {bytes}-byte object: {sent:?}",
        sent[0]
    );
    let passed_on: u64 = sent[1..].iter().sum();
    assert!(passed_on + sent[0] >= to_others, "copies unaccounted for: {sent:?}, {to_others}");

    // Two puts at once whose objects share most of their blobs (the second is the first with
    // more after it): each holder gets every blob it is given from one of them, so both
    // complete.
    let (a, b) = (net.dir().join("a.bin"), net.dir().join("b.bin"));
    let base = random_bytes(24 << 20, 44);
    write(&a, &base);
    write(&b, &[&base[..], &random_bytes(4 << 20, 45)[..]].concat());
    let put = |f: &std::path::Path| {
        let mut c = net.cmd(0);
        c.args(["put", f.to_str().unwrap(), "--pool", "street", "--json"]);
        c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        c.spawn().unwrap()
    };
    let (pa, pb) = (put(&a), put(&b));
    for p in [pa, pb] {
        let out = p.wait_with_output().unwrap();
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
        assert_eq!(v["pool"]["complete"], true, "{v}");
        assert!(v["pool"]["acks"].as_array().unwrap().iter().all(|a| a["ok"] == true), "{v}");
    }
    net.wait_for(CONVERGE, "three objects fully replicated", |net| {
        Ok(replication(&show(net, 2)) == (3, 0, 0))
    })
    .unwrap();
}

#[test]
fn put_into_a_pool_reports_a_holder_that_cannot_hold() {
    let mut net = testnet(2, Layout::Loopback);
    for i in 0..2 {
        net.kith_ok(i, &["init"]).unwrap();
        net.start(i).unwrap();
    }
    net.kith_ok(0, &["pool", "create", "street", "--replicas", "1"]).unwrap();
    let ticket = net.kith_ok(0, &["pool", "invite", "street"]).unwrap();
    net.kith_ok(1, &["pool", "join", ticket.trim()]).unwrap();
    net.kith_ok(1, &["offer", "street", "--storage", "1GiB"]).unwrap();
    net.wait_for(CONVERGE, "node 0 to see node 1's offer", |net| {
        Ok(show(net, 0)["capacity"]["offered"] == 1u64 << 30)
    })
    .unwrap();
    // Node 1 is the only holder; it stops before the put.
    net.stop(1).unwrap();
    let src = net.dir().join("notes.txt");
    write(&src, &text_bytes(300_000, 5));
    let out = net.kith(0, &["put", src.to_str().unwrap(), "--pool", "street"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("FAILED") && err.contains("repair keeps copying"), "{err}");
    // The object is stored locally all the same.
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(net.json(0, &["ls"]).unwrap()[0]["id"], id.as_str());
    // Node 1 returns: repair copies its share without another put.
    net.start(1).unwrap();
    net.wait_for(CONVERGE, "node 1 to repair the object", |net| {
        Ok(replication(&show(net, 0)) == (1, 0, 0))
    })
    .unwrap();
}

#[test]
fn an_audit_catches_a_holder_that_lost_its_data_and_the_pool_heals() {
    let mut net = testnet(4, Layout::Loopback);
    pool_of_four(&mut net);
    net.kith_ok(0, &["pool", "set", "street", "audit_every", "5s"]).unwrap();
    let src = net.dir().join("ledger.bin");
    write(&src, &random_bytes(3 << 20, 9));
    net.json(0, &["put", src.to_str().unwrap(), "--pool", "street"]).unwrap();
    net.wait_for(CONVERGE, "full replication", |net| Ok(replication(&show(net, 0)) == (1, 0, 0)))
        .unwrap();
    // Node 2's disk loses its packs while it is down; its index still claims the blobs.
    net.stop(2).unwrap();
    let packs = net.dir().join("node2/store/packs");
    let mut damaged = 0;
    for f in files_under(&packs) {
        std::fs::write(&f, b"").unwrap();
        damaged += 1;
    }
    assert!(damaged > 0, "node 2 held no packs");
    net.start(2).unwrap();
    let node2 = net.id(2).unwrap();
    let record = |net: &Testnet| -> Vec<Value> {
        show(net, 0)["audits"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["node"] == node2.as_str())
            .cloned()
            .collect()
    };
    net.wait_for(CONVERGE, "an audit to catch node 2", |net| {
        Ok(record(net).iter().any(|a| a["failed"].as_u64() > Some(0)))
    })
    .unwrap();
    let failed = record(&net);
    assert!(failed.iter().any(|a| a["reason"].as_str().unwrap().contains("damaged")), "{failed:?}");
    // Node 2 forgets what it lost and fetches it again; the next audits pass.
    net.wait_for(CONVERGE, "node 2 to pass its audits again", |net| {
        let r = record(net);
        Ok(!r.is_empty() && r.iter().all(|a| a["failing"] == false))
    })
    .unwrap();
    net.wait_for(CONVERGE, "full replication again", |net| {
        Ok(replication(&show(net, 0)) == (1, 0, 0))
    })
    .unwrap();
    // Holders hold what they cannot read: another member's node fetches the object but
    // cannot open it.
    let back = net.dir().join("back.bin");
    let id = show(&net, 3)["objects"][0]["id"].as_str().unwrap().to_string();
    let out = net.kith(3, &["get", &id, "-o", back.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("cannot be decrypted"), "{err}");
    assert!(!back.exists());
}

#[test]
fn a_leaving_member_hands_its_chunks_over_first() {
    let mut net = testnet(4, Layout::Loopback);
    pool_of_four(&mut net);
    let src = net.dir().join("recipes.bin");
    write(&src, &random_bytes(3 << 20, 17));
    net.json(0, &["put", src.to_str().unwrap(), "--pool", "street"]).unwrap();
    net.wait_for(CONVERGE, "full replication", |net| Ok(replication(&show(net, 0)) == (1, 0, 0)))
        .unwrap();
    let node3 = net.id(3).unwrap();
    let held_by_3 = |v: &Value| {
        v["replication"]["holders"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["node"] == node3.as_str())
            .map(|h| h["assigned_blobs"].as_u64().unwrap())
    };
    assert!(held_by_3(&show(&net, 0)).unwrap() > 0, "node 3 held nothing to hand over");
    net.kith_ok(3, &["pool", "leave", "street", "--yes"]).unwrap();
    // Node 3 stops at once: the other three hold everything already.
    net.kill(3).unwrap();
    let v = show(&net, 0);
    assert_eq!(held_by_3(&v), None, "node 3 is still a holder: {v}");
    assert_eq!(replication(&v), (1, 0, 0), "{v}");
}

#[test]
fn puts_over_the_quota_or_the_pools_capacity_are_refused_clearly() {
    let mut net = testnet(2, Layout::Loopback);
    for i in 0..2 {
        net.kith_ok(i, &["init"]).unwrap();
        net.start(i).unwrap();
    }
    net.kith_ok(0, &["pool", "create", "street", "--replicas", "1", "--quota", "1MiB"]).unwrap();
    let ticket = net.kith_ok(0, &["pool", "invite", "street"]).unwrap();
    net.kith_ok(1, &["pool", "join", ticket.trim()]).unwrap();
    net.kith_ok(1, &["offer", "street", "--storage", "3MiB"]).unwrap();
    net.wait_for(CONVERGE, "node 0 to see the offer", |net| {
        Ok(show(net, 0)["capacity"]["offered"] == 3u64 << 20)
    })
    .unwrap();
    let file = |name: &str, len: usize, seed: u64| {
        let p = net.dir().join(name);
        write(&p, &random_bytes(len, seed));
        p
    };
    let (a, b, c) = (file("a", 700 << 10, 1), file("b", 700 << 10, 2), file("c", 3 << 20, 3));
    let small = file("d", 10 << 10, 4);
    net.json(0, &["put", a.to_str().unwrap(), "--pool", "street"]).unwrap();
    assert_eq!(show(&net, 0)["replication"]["under_replicated_bytes"], 0);
    let out = net.kith(0, &["put", b.to_str().unwrap(), "--pool", "street"]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{e}");
    assert!(e.contains("over your quota") && e.contains("of 1.0 MiB"), "{e}");
    assert!(e.contains("stored on this node, not in the pool"), "{e}");
    // No quota: the pool's capacity (3 MiB offered, one copy) is the limit.
    net.kith_ok(0, &["pool", "set", "street", "quota", "0"]).unwrap();
    let out = net.kith(0, &["put", c.to_str().unwrap(), "--pool", "street"]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("out of capacity"), "{e}");
    // The pool still holds exactly the first object.
    let v = show(&net, 0);
    assert_eq!(v["objects"].as_array().unwrap().len(), 1, "{v}");
    // Two copies wanted, one holder: the put says so and exits 3 (the set-time check refuses
    // such a policy; here the second zone's member has left since).
    net.kith_ok(0, &["offer", "street", "--storage", "1GiB"]).unwrap();
    net.kith_ok(0, &["pool", "set", "street", "replicas", "2"]).unwrap();
    net.kith_ok(1, &["pool", "leave", "street", "--force", "--yes"]).unwrap();
    net.wait_for(CONVERGE, "node 0 to see node 1 leave", |net| {
        Ok(show(net, 0)["capacity"]["offered"] == 1u64 << 30)
    })
    .unwrap();
    let out = net.kith(0, &["put", small.to_str().unwrap(), "--pool", "street"]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{e}");
    assert!(e.contains("only 1 of 2 copies could be placed"), "{e}");
}

#[test]
fn an_object_taken_out_of_the_pool_frees_the_quota_and_the_holders_space() {
    // Issue 18: `kith rm` acted only locally, so a member's quota use only grew and holders
    // kept the chunks for good.
    let mut net = street_of_three(2);
    net.kith_ok(0, &["pool", "set", "street", "quota", "6MiB"]).unwrap();
    net.wait_for(CONVERGE, "ada to see both offers and the quota", |net| {
        let v = show(net, 0);
        Ok(v["capacity"]["offered"] == 2u64 << 30 && v["charter"]["quota"] == 6u64 << 20)
    })
    .unwrap();
    let stored = |net: &Testnet, i: usize| -> u64 {
        net.json(i, &["status"]).unwrap()["store"]["bytes"].as_u64().unwrap()
    };
    let before = [stored(&net, 1), stored(&net, 2)];
    let (a, b) = (net.dir().join("a.bin"), net.dir().join("b.bin"));
    write(&a, &random_bytes(4 << 20, 81));
    write(&b, &random_bytes(4 << 20, 82));
    let put = net.json(0, &["put", a.to_str().unwrap(), "--pool", "street"]).unwrap();
    assert_eq!(put["pool"]["complete"], true, "{put}");
    let id = put["id"].as_str().unwrap().to_string();
    for (n, i) in [1, 2].into_iter().enumerate() {
        assert!(stored(&net, i) >= before[n] + (4 << 20), "node {i} holds no copy");
    }
    // A second object does not fit the quota with the first in the pool.
    let over = net.kith(0, &["put", b.to_str().unwrap(), "--pool", "street"]);
    let err = String::from_utf8_lossy(&over.stderr);
    assert!(!over.status.success() && err.contains("quota"), "{err}");

    // Forgetting it only here keeps the pool's copies: it comes back from the holders.
    let rm = net.kith(0, &["rm", "--local", &id]);
    let said = String::from_utf8_lossy(&rm.stderr);
    assert!(rm.status.success() && !said.contains("released"), "{said}");
    assert_eq!(show(&net, 0)["objects"].as_array().unwrap().len(), 1);
    let back = net.dir().join("a.back");
    net.kith_ok(0, &["get", &id, "-o", back.to_str().unwrap()]).unwrap();
    assert!(std::fs::read(&back).unwrap() == std::fs::read(&a).unwrap(), "the bytes differ");

    let rm = net.kith(0, &["rm", &id[..12]]);
    let said = String::from_utf8_lossy(&rm.stderr);
    assert!(rm.status.success(), "{said}");
    assert!(said.contains("released object") && said.contains("pool street"), "{said}");
    // Every node sees it gone, and each holder gives the space back by itself.
    net.wait_for(CONVERGE, "the holders to reclaim the object's space", |net| {
        Ok([1, 2].into_iter().enumerate().all(|(n, i)| {
            show(net, i)["objects"].as_array().is_some_and(|o| o.is_empty())
                && stored(net, i) < before[n] + (1 << 20)
        }))
    })
    .unwrap_or_else(|e| {
        let workers = |i| net.json(i, &["status"]).unwrap()["workers"].clone();
        panic!("{e}\nnode 1: {}\nnode 2: {}\n{}", workers(1), workers(2), net.log(1))
    });
    for i in 1..3 {
        assert_eq!(net.json(i, &["verify"]).unwrap()["damaged"], false);
    }
    // The quota is free again, and the object is gone for its owner too.
    net.json(0, &["put", b.to_str().unwrap(), "--pool", "street"]).unwrap();
    let gone = net.kith(0, &["get", &id, "-o", net.dir().join("a.out").to_str().unwrap()]);
    assert!(!gone.status.success());
    // Nothing left to take out: a clear error, and nothing changes.
    let again = net.kith(0, &["rm", &id]);
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success() && err.contains(&format!("no object {id}")), "{err}");
}
