//! Pools as people live them: leaving safely (refused at once when the pool cannot do without
//! you, undone when interrupted, explained when it takes your sites and objects), the last admin,
//! dissolving a pool, joining after someone left.

use std::process::Stdio;
use std::time::Duration;

use kith_testnet::{Layout, Testnet};
use serde_json::Value;

use crate::util::*;

const CONVERGE: Duration = Duration::from_secs(60);

fn show(net: &Testnet, i: usize) -> Value {
    net.json(i, &["pool", "show", "street"]).unwrap()
}

/// Nodes 0..n in pool `street`, node 0 its admin, each offering 1 GiB in its own zone,
/// `replicas` copies, repair after 10 s.
fn street(net: &mut Testnet, n: usize, replicas: u64) {
    for i in 0..n {
        net.kith_ok(i, &["init"]).unwrap();
        net.start(i).unwrap();
    }
    net.kith_ok(0, &["pool", "create", "street", "--as", "ada"]).unwrap();
    let names = ["ada", "bob", "cy", "dee", "eve"];
    for (i, name) in names.iter().enumerate().take(n).skip(1) {
        let ticket = net.kith_ok(0, &["pool", "invite", "street"]).unwrap();
        net.kith_ok(i, &["pool", "join", ticket.trim(), "--as", name]).unwrap();
    }
    for i in 0..n {
        let zone = format!("house-{i}");
        net.kith_ok(i, &["offer", "street", "--storage", "1GiB", "--zone", &zone]).unwrap();
    }
    // The admin's node must see every zone before it may ask for that many replicas.
    net.wait_for(CONVERGE, "ada's node to see every offer", |net| {
        Ok(show(net, 0)["capacity"]["offered"] == (n as u64) << 30)
    })
    .unwrap();
    net.kith_ok(0, &["pool", "set", "street", "repair_after", "10s"]).unwrap();
    net.kith_ok(0, &["pool", "set", "street", "replicas", &replicas.to_string()]).unwrap();
    net.wait_for(CONVERGE, "every node to see every offer", |net| {
        Ok((0..n).all(|i| {
            let v = show(net, i);
            v["capacity"]["offered"] == (n as u64) << 30 && v["charter"]["replicas"] == replicas
        }))
    })
    .unwrap();
}

/// Puts `len` bytes from node `i` into the pool and waits until node 0 sees every copy.
fn put(net: &mut Testnet, i: usize, name: &str, len: usize, seed: u64) -> (String, Vec<u8>) {
    let data = random_bytes(len, seed);
    let src = net.dir().join(name);
    write(&src, &data);
    let put = net.json(i, &["put", src.to_str().unwrap(), "--pool", "street"]).unwrap();
    net.wait_for(CONVERGE, "full replication", |net| {
        let r = &show(net, 0)["replication"];
        Ok(r["under_replicated_bytes"] == 0
            && r["lost_blobs"] == 0
            && r["objects"].as_u64() > Some(0))
    })
    .unwrap();
    (put["id"].as_str().unwrap().to_string(), data)
}

/// Node `of`'s member entry as node `at` sees it.
fn member(net: &Testnet, at: usize, of: usize) -> Value {
    let node = net.id(of).unwrap();
    show(net, at)["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["nodes"].as_array().unwrap().iter().any(|n| n["id"] == node.as_str()))
        .cloned()
        .unwrap_or(Value::Null)
}

fn offer(m: &Value) -> u64 {
    m["nodes"][0]["storage"].as_u64().unwrap_or(0)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn leaving_is_refused_at_once_when_the_pool_cannot_keep_its_replicas() {
    let mut net = testnet(3, Layout::Loopback);
    street(&mut net, 3, 3);
    put(&mut net, 0, "photos.bin", 1 << 20, 1);
    let out = net.kith(2, &["pool", "leave", "street", "--yes"]);
    let e = stderr(&out);
    assert!(!out.status.success(), "{e}");
    assert!(e.contains("fewer than its 3 replicas"), "{e}");
    assert!(e.contains("kith pool set street replicas 2"), "the next step is named: {e}");
    // Nothing was withdrawn: cy is still a member, offering what it offered.
    let cy = member(&net, 2, 2);
    assert_eq!((cy["state"].as_str(), offer(&cy)), (Some("active"), 1 << 30), "{cy}");
    // With the factor lowered, the same leave goes through.
    net.kith_ok(0, &["pool", "set", "street", "replicas", "2"]).unwrap();
    net.wait_for(CONVERGE, "cy to see replicas 2", |net| {
        Ok(show(net, 2)["charter"]["replicas"] == 2)
    })
    .unwrap();
    net.kith_ok(2, &["pool", "leave", "street", "--yes"]).unwrap();
    net.wait_for(CONVERGE, "ada to see cy gone, data whole", |net| {
        let v = show(net, 0);
        Ok(member(net, 0, 2)["state"] == "left" && v["replication"]["under_replicated_bytes"] == 0)
    })
    .unwrap();
    assert_eq!(net.json(2, &["pool", "ls"]).unwrap(), Value::Array(vec![]), "cy still lists it");
}

#[test]
fn an_unfinished_leave_puts_the_offer_back() {
    let mut net = testnet(4, Layout::Loopback);
    street(&mut net, 4, 2);
    put(&mut net, 0, "photos.bin", 3 << 20, 2);
    // A holder goes quiet: the hand-off cannot finish within a short wait.
    net.kill(1).unwrap();
    let out = net.kith(3, &["pool", "leave", "street", "--wait", "2s", "--yes"]);
    let e = stderr(&out);
    assert!(!out.status.success(), "{e}");
    assert!(e.contains("hand-off is incomplete"), "{e}");
    assert!(e.contains("did not answer"), "the cause is named: {e}");
    assert!(e.contains("offer is back"), "{e}");
    let dee = member(&net, 3, 3);
    assert_eq!((dee["state"].as_str(), offer(&dee)), (Some("active"), 1 << 30), "{dee}");

    // Ctrl-C in the middle: the offer comes back too.
    let mut child = net
        .cmd(3)
        .args(["pool", "leave", "street", "--wait", "5m", "--yes"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    net.wait_for(CONVERGE, "the offer to be withdrawn", |net| Ok(offer(&member(net, 3, 3)) == 0))
        .unwrap();
    // SAFETY: a plain signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let _ = child.wait();
    net.wait_for(CONVERGE, "the offer to come back after Ctrl-C", |net| {
        Ok(offer(&member(net, 3, 3)) == 1 << 30)
    })
    .unwrap();

    // kill -9 of the daemon in the middle: the offer comes back when it starts again.
    let mut child = net
        .cmd(3)
        .args(["pool", "leave", "street", "--wait", "5m", "--yes"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    net.wait_for(CONVERGE, "the offer to be withdrawn", |net| Ok(offer(&member(net, 3, 3)) == 0))
        .unwrap();
    net.kill(3).unwrap();
    let _ = child.wait();
    net.start(3).unwrap();
    let dee = member(&net, 3, 3);
    assert_eq!((dee["state"].as_str(), offer(&dee)), (Some("active"), 1 << 30), "{dee}");
    assert!(net.log(3).contains("a leave was interrupted"), "the restart says what it undid");
    net.wait_for(CONVERGE, "ada to see dee's offer back", |net| {
        Ok(offer(&member(net, 0, 3)) == 1 << 30)
    })
    .unwrap();
}

#[test]
fn leaving_warns_then_takes_the_members_sites_and_objects_out() {
    let mut net = testnet(3, Layout::Loopback);
    street(&mut net, 3, 2);
    let (object, data) = put(&mut net, 2, "notes.bin", 1 << 20, 3);
    let www = net.dir().join("www");
    write(&www.join("index.html"), b"<h1>bread</h1>");
    net.kith_ok(2, &["site", "publish", www.to_str().unwrap(), "--name", "bakery"]).unwrap();
    let at0 = http(&net, 0);
    net.wait_for(CONVERGE, "ada's node to serve bakery", |_| {
        Ok(get(at0, "/s/bakery/").status == 200)
    })
    .unwrap();

    // Without --yes (and no terminal to ask on), nothing happens and the warning names it all.
    let out = net.kith(2, &["pool", "leave", "street"]);
    let e = stderr(&out);
    assert!(!out.status.success(), "{e}");
    assert!(e.contains("bakery") && e.contains("object") && e.contains("--yes"), "{e}");
    assert_eq!(member(&net, 0, 2)["state"], "active");
    assert_eq!(get(at0, "/s/bakery/").status, 200);

    let out = net.kith(2, &["pool", "leave", "street", "--yes"]);
    let said = stderr(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("left pool street") && said.contains("bakery"), "{said}");
    net.wait_for(CONVERGE, "ada's node to stop serving bakery", |_| {
        Ok(get(at0, "/s/bakery/").status == 404)
    })
    .unwrap();
    // The member who left serves nothing of the pool and no longer lists it.
    assert_eq!(get(http(&net, 2), "/s/bakery/").status, 404);
    assert_eq!(net.json(2, &["pool", "ls"]).unwrap(), Value::Array(vec![]));
    // The site's last version came home as an object, as the warning said.
    let kept = net.kith_ok(2, &["ls"]).unwrap();
    assert!(kept.contains("site bakery, version 1"), "{kept}");
    // Its object is in its own store, byte for byte; the pool no longer lists it.
    let back = net.dir().join("back.bin");
    net.kith_ok(2, &["get", &object, "-o", back.to_str().unwrap()]).unwrap();
    assert!(std::fs::read(&back).unwrap() == data);
    net.wait_for(CONVERGE, "ada's pool to drop cy's object", |net| {
        Ok(show(net, 0)["objects"].as_array().unwrap().iter().all(|o| o["id"] != object.as_str()))
    })
    .unwrap();
}

#[test]
fn the_last_admin_is_told_the_next_step_and_can_dissolve_the_pool() {
    let mut net = testnet(3, Layout::Loopback);
    street(&mut net, 3, 2);
    let (object, data) = put(&mut net, 1, "letters.bin", 1 << 20, 4);
    let out = net.kith(0, &["pool", "leave", "street", "--yes"]);
    let e = stderr(&out);
    assert!(!out.status.success(), "{e}");
    assert!(e.contains("only admin") && e.contains("`kith pool set street role:"), "{e}");
    assert!(e.contains(" admin`"), "the exact command is given: {e}");
    assert!(e.contains("kith pool dissolve street"), "{e}");
    // Another admin: dissolving is refused, naming them.
    net.kith_ok(0, &["pool", "set", "street", "role:bob", "admin"]).unwrap();
    net.wait_for(CONVERGE, "ada's node to know bob is admin", |net| {
        Ok(member(net, 0, 1)["role"] == "admin")
    })
    .unwrap();
    let out = net.kith(0, &["pool", "dissolve", "street", "--yes"]);
    let e = stderr(&out);
    assert!(!out.status.success() && e.contains("bob is also admin"), "{e}");
    net.kith_ok(0, &["pool", "set", "street", "role:bob", "member"]).unwrap();
    net.wait_for(CONVERGE, "bob to be a member again everywhere", |net| {
        Ok((0..3).all(|i| member(net, i, 1)["role"] == "member"))
    })
    .unwrap();

    // Bob forgets his local version and is offline when ada dissolves the pool: when he comes
    // back, his node learns it and brings the object home from the others, who kept it.
    net.kith_ok(1, &["rm", "--local", &object]).unwrap();
    net.stop(1).unwrap();
    net.kith_ok(0, &["pool", "dissolve", "street", "--yes"]).unwrap();
    net.start(1).unwrap();
    net.wait_for(CONVERGE, "every node to stop listing street", |net| {
        Ok((0..3).all(|i| net.json(i, &["pool", "ls"]).is_ok_and(|v| v == Value::Array(vec![]))))
    })
    .unwrap();
    net.wait_for(CONVERGE, "bob's node to bring the object home", |net| {
        Ok(net.log(1).contains("your objects are in this node's store"))
    })
    .unwrap();
    let ls = net.json(1, &["ls"]).unwrap();
    assert!(ls.as_array().unwrap().iter().any(|o| o["id"] == object.as_str()), "{ls}");
    let back = net.dir().join("back.bin");
    net.kith_ok(1, &["get", &object, "-o", back.to_str().unwrap()]).unwrap();
    assert!(std::fs::read(&back).unwrap() == data);
}

#[test]
fn a_lost_device_is_retired_and_nobody_warns_about_it() {
    // Namespaces: the replacement machine gets the lost one's address, as DHCP would give it.
    let mut net = testnet(4, Layout::Namespaces);
    street(&mut net, 3, 2);
    let (object, data) = put(&mut net, 0, "photos.bin", 2 << 20, 5);
    let old = net.id(0).unwrap();
    // Ada's node had been up long enough for bob's node to keep her identity document.
    let ada = net.json(0, &["identity"]).unwrap()["id"].as_str().unwrap().to_string();
    let kept = net.nodes[1].home.join(format!("identities/{ada}.kdoc"));
    net.wait_for(CONVERGE, "bob's node to keep ada's identity document", |_| Ok(kept.exists()))
        .unwrap();
    let export = export_key(&net, 0);
    // Ada's machine is lost; a new one with her identity takes its place on the LAN.
    net.kill(0).unwrap();
    let old_home = net.nodes[0].home.clone();
    net.nodes[0].home = net.dir().join("new-machine");
    net.nodes[0].log = net.dir().join("new-machine.log");
    let out = net
        .cmd(0)
        .args(["init", "--import"])
        .arg(&export)
        .env("KITH_PASSPHRASE", "pw")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    net.start(0).unwrap();
    let new = net.id(0).unwrap();
    net.wait_for(CONVERGE, "the new machine to find street", |net| {
        Ok(net.json(0, &["pool", "ls"])?.as_array().is_some_and(|a| a.len() == 1))
    })
    .unwrap();
    net.wait_for(CONVERGE, "the identity document to list both devices", |net| {
        let devices = net.json(0, &["device", "ls"])?;
        let listed: Vec<&str> =
            devices.as_array().unwrap().iter().map(|d| d["node"].as_str().unwrap()).collect();
        Ok(listed.contains(&old.as_str()) && listed.contains(&new.as_str()))
    })
    .unwrap();
    // Linking the old id says in plain words what is there.
    let out = net.kith(1, &["peer", "link", &old[..12]]);
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(said.contains("another key answers"), "{said}");
    assert!(!said.contains("UnknownIssuer"), "{said}");

    // Retiring the device you are on is refused; retiring the lost one takes it out.
    let out = net.kith(0, &["device", "revoke", &new[..12]]);
    assert!(
        !out.status.success() && stderr(&out).contains("the device you are on"),
        "{}",
        stderr(&out)
    );
    let out = net.kith(0, &["device", "revoke", &old[..12]]);
    assert!(out.status.success() && stderr(&out).contains("street"), "{}", stderr(&out));
    net.kith_ok(0, &["offer", "street", "--storage", "1GiB", "--zone", "house-0"]).unwrap();
    net.wait_for(CONVERGE, "bob to stop counting the lost device, data whole again", |net| {
        let v = show(net, 1);
        let holders = v["replication"]["holders"].as_array().unwrap().clone();
        Ok(holders.iter().all(|h| h["node"] != old.as_str())
            && v["replication"]["under_replicated_bytes"] == 0
            && v["replication"]["lost_blobs"] == 0)
    })
    .unwrap();
    let back = net.dir().join("back.bin");
    net.kith_ok(1, &["get", &object, "-o", back.to_str().unwrap()]).ok();
    net.kith_ok(0, &["get", &object, "-o", back.to_str().unwrap()]).unwrap();
    assert!(std::fs::read(&back).unwrap() == data);
    let retired = net.json(0, &["device", "ls"]).unwrap();
    assert!(
        retired
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["node"] == old.as_str() && d["retired_ms"].is_i64()),
        "{retired}"
    );

    // The old device turns up again on another address: it learns it was retired and stays out.
    net.nodes[3].home = old_home;
    net.start(3).unwrap();
    net.wait_for(CONVERGE, "the old device to learn it was retired", |net| {
        Ok(net.log(3).contains("this device was retired"))
    })
    .unwrap();
    assert_eq!(net.json(3, &["pool", "ls"]).unwrap(), Value::Array(vec![]));
    // Nobody logged certificate errors: at most one plain sentence per node about the address.
    for i in 0..4 {
        let log = net.log(i);
        assert!(!log.contains("invalid peer certificate"), "node {i} logs TLS errors:\n{log}");
        assert!(
            log.matches("another node answers at the address").count() <= 1,
            "node {i}:\n{log}"
        );
    }
}

/// Exports node `i`'s identity key with passphrase `pw`; the file's path.
fn export_key(net: &Testnet, i: usize) -> std::path::PathBuf {
    let export = net.dir().join(format!("identity-{i}.age"));
    let out = net
        .cmd(i)
        .args(["key", "export"])
        .arg(&export)
        .env("KITH_PASSPHRASE", "pw")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    export
}

/// Imports `export` (made by `kith key export` with passphrase `pw`) as a device into node
/// `i`'s home and starts it.
fn import_device(net: &mut Testnet, i: usize, export: &std::path::Path) {
    let out = net
        .cmd(i)
        .args(["init", "--import"])
        .arg(export)
        .env("KITH_PASSPHRASE", "pw")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("is now a device of identity"), "{}", stderr(&out));
    net.start(i).unwrap();
}

#[test]
fn a_stolen_device_is_cut_off_and_never_sees_what_comes_after() {
    // Issue 16 item 9. Ada has a laptop (node 0, where her identity was made), a phone and a
    // tablet (nodes 2 and 3, imported as devices: each its own key, certified, no identity
    // key); bob (node 1) shares street with her.
    let mut net = testnet(4, Layout::Namespaces);
    street(&mut net, 2, 2);
    let export = export_key(&net, 0);
    import_device(&mut net, 2, &export);
    import_device(&mut net, 3, &export);
    let (phone, tablet) = (net.id(2).unwrap(), net.id(3).unwrap());
    net.wait_for(CONVERGE, "the laptop to list the phone and the tablet", |net| {
        let ds = net.json(0, &["device", "ls"])?;
        let listed: Vec<String> =
            ds.as_array().unwrap().iter().map(|d| d["node"].as_str().unwrap().into()).collect();
        Ok(listed.contains(&phone) && listed.contains(&tablet))
    })
    .unwrap();
    net.wait_for(CONVERGE, "the phone to find street", |net| {
        Ok(net.json(2, &["pool", "ls"])?.as_array().is_some_and(|a| a.len() == 1))
    })
    .unwrap();
    // A device holds no identity key: it cannot hand the identity on.
    let out = net
        .cmd(2)
        .args(["key", "export"])
        .arg(net.dir().join("from-phone.age"))
        .env("KITH_PASSPHRASE", "pw")
        .output()
        .unwrap();
    assert!(
        !out.status.success() && stderr(&out).contains("does not hold your identity key"),
        "{}",
        stderr(&out)
    );
    // Before the theft, the laptop stores something the phone never fetched.
    let (before, before_data) = put(&mut net, 0, "before.bin", 300_000, 21);
    let age_before = net.json(0, &["id"]).unwrap()["age"].clone();

    // The phone is stolen. The thief keeps a copy of its home, offline, so it never learns it
    // was retired.
    net.kill(2).unwrap();
    let thief_home = net.dir().join("thief");
    let cp = std::process::Command::new("cp")
        .args(["-a"])
        .arg(&net.nodes[2].home)
        .arg(&thief_home)
        .status()
        .unwrap();
    assert!(cp.success());
    // Ada retires it from her tablet.
    let out = net.kith(3, &["device", "revoke", &phone[..12]]);
    assert!(out.status.success(), "{}", stderr(&out));
    net.wait_for(CONVERGE, "the laptop to seal new objects to the new data key", |net| {
        let v = net.json(0, &["device", "ls"])?;
        let retired = v
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["node"] == phone.as_str() && d["retired_ms"].is_i64());
        Ok(retired && net.json(0, &["id"])?["age"] != age_before)
    })
    .unwrap();
    let (after, after_data) = put(&mut net, 0, "after.bin", 300_000, 22);
    let export_all = net.dir().join("ada.kexp");
    net.kith_ok(0, &["export", "-o", export_all.to_str().unwrap()]).unwrap();

    // The thief's copy comes up on the LAN, and finds every node.
    net.nodes[2].home = thief_home;
    net.nodes[2].log = net.dir().join("thief.log");
    net.start(2).unwrap();
    let others: Vec<String> = [0, 1, 3].iter().map(|&i| net.id(i).unwrap()).collect();
    net.wait_for(CONVERGE, "the thief's node to reach every node", |net| {
        let peers = net.peers(2)?;
        Ok(others
            .iter()
            .all(|o| peers.iter().any(|p| p["id"] == o.as_str() && p["state"] == "reachable")))
    })
    .unwrap();
    // It cannot fetch what it did not hold: no node serves it a blob, and each says why.
    let out = net.kith(2, &["get", &before, "-o", net.dir().join("t1").to_str().unwrap()]);
    assert!(
        !out.status.success() && stderr(&out).contains("retired"),
        "the thief fetched {before}: {}",
        stderr(&out)
    );
    // It cannot write to the pool: no holder takes its chunks and no node syncs with it.
    let loot = net.dir().join("loot.bin");
    write(&loot, &random_bytes(50_000, 23));
    let out = net.kith(2, &["put", loot.to_str().unwrap(), "--pool", "street"]);
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(!out.status.success() && said.contains("retired"), "the thief's put: {said}");
    // Even with every byte of what came after (the laptop's export), it opens nothing of it.
    let _ = net.kith(2, &["import", export_all.to_str().unwrap()]);
    let out = net.kith(2, &["get", &after, "-o", net.dir().join("t2").to_str().unwrap()]);
    assert!(
        !out.status.success() && stderr(&out).contains("cannot be decrypted"),
        "the thief read {after}: {}",
        stderr(&out)
    );
    assert!(!net.dir().join("t2").exists());
    let old = net.dir().join("t3");
    net.kith_ok(2, &["get", &before, "-o", old.to_str().unwrap()]).ok();

    // Ada's other devices read both, the tablet fetching them from the pool.
    for (i, id, data) in
        [(3, &after, &after_data), (3, &before, &before_data), (0, &after, &after_data)]
    {
        let out = net.dir().join(format!("back-{i}-{}", &id[..8]));
        net.kith_ok(i, &["get", id, "-o", out.to_str().unwrap()]).unwrap();
        assert!(std::fs::read(&out).unwrap() == *data, "node {i}, {id}");
    }
    // Nobody lists anything of the thief's: bob's view of ada's objects is what ada stored.
    let v = show(&net, 1);
    let ids: Vec<&str> =
        v["objects"].as_array().unwrap().iter().map(|o| o["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&before.as_str()) && ids.contains(&after.as_str()), "{ids:?}");
}

#[test]
fn the_tour_says_what_to_do_next() {
    let mut net = testnet(2, Layout::Loopback);
    for i in 0..2 {
        net.kith_ok(i, &["init"]).unwrap();
        net.start(i).unwrap();
    }
    net.kith_ok(0, &["pool", "create", "street", "--as", "ada"]).unwrap();
    let ticket = net.kith_ok(0, &["pool", "invite"]).unwrap(); // the only pool, by default
    let mut cut = ticket.trim().to_string();
    cut.truncate(cut.len() - 9);
    let out = net.kith(1, &["pool", "join", &cut]);
    let e = stderr(&out);
    assert!(e.contains("damaged or incomplete") && !e.contains("trailing"), "{e}");
    net.kith_ok(1, &["pool", "join", ticket.trim(), "--as", "bob"]).unwrap();
    // A misspelt pool name gets a suggestion; the only pool needs no name.
    let e = stderr(&net.kith(0, &["pool", "show", "stret"]));
    assert!(e.contains("did you mean street?"), "{e}");
    assert_eq!(net.json(0, &["pool", "show"]).unwrap()["charter"]["name"], "street");
    // A put into a pool nobody offers storage to says how to offer, and stores nothing.
    let src = net.dir().join("a.bin");
    write(&src, &random_bytes(10_000, 9));
    let out = net.kith(0, &["put", src.to_str().unwrap(), "--pool", "street"]);
    let e = stderr(&out);
    assert!(!out.status.success() && e.contains("kith offer street --storage"), "{e}");
    assert_eq!(net.json(0, &["ls"]).unwrap(), Value::Array(vec![]), "no local version was made");
    // An offer larger than the disk is refused, saying how much there is.
    let out = net.kith(0, &["offer", "--storage", "900000TB"]);
    let e = stderr(&out);
    assert!(!out.status.success() && e.contains("free") && e.contains("--storage"), "{e}");
    net.kith_ok(0, &["offer", "--storage", "1GiB"]).unwrap();
    net.kith_ok(1, &["offer", "street", "--storage", "1GiB"]).unwrap();
    net.wait_for(CONVERGE, "ada's node to see bob's offer", |net| {
        Ok(show(net, 0)["capacity"]["offered"] == 2u64 << 30)
    })
    .unwrap();
    net.kith_ok(0, &["pool", "set", "street", "replicas", "2"]).unwrap();
    let put = net.json(0, &["put", src.to_str().unwrap(), "--pool", "street"]).unwrap();
    assert_eq!(put["pool"]["pool_name"], "street", "{put}");
    let said = stderr(&net.kith(0, &["put", src.to_str().unwrap(), "--pool", "street"]));
    assert!(said.contains("into pool street") && said.contains("bob's node"), "{said}");
    // Somebody else's site: the owner is named.
    let www = net.dir().join("www");
    write(&www.join("index.html"), b"hi");
    net.kith_ok(0, &["site", "publish", www.to_str().unwrap(), "--name", "bakery"]).unwrap();
    net.wait_for(CONVERGE, "bob to see bakery", |net| {
        Ok(net.json(1, &["site", "ls"])?["sites"].as_array().is_some_and(|s| !s.is_empty()))
    })
    .unwrap();
    let e = stderr(&net.kith(1, &["site", "rollback", "bakery", "1"]));
    assert!(e.contains("ada's") && e.contains("only its owner"), "{e}");
    // Right after the first put, verify flags no storage claim that no audit could check yet.
    let out = net.kith(0, &["ledger", "verify"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    // Background duties are named workers, one set per pool, shown by status.
    net.wait_for(CONVERGE, "the pool's workers to have run", |net| {
        let st = net.json(0, &["status"])?;
        let names: Vec<String> = st["workers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|w| w["passes"].as_u64() > Some(0))
            .map(|w| w["name"].as_str().unwrap_or("").to_string())
            .collect();
        Ok(["sync", "identity", "repair street", "off-site street", "audit street", "usage street"]
            .iter()
            .all(|n| names.iter().any(|x| x == n)))
    })
    .unwrap();
    // status names real addresses, never 0.0.0.0.
    let st = net.kith_ok(0, &["status"]).unwrap();
    assert!(st.contains("http://127.0.0.1:") && !st.contains("0.0.0.0"), "{st}");
    // Read-only commands work with the daemon stopped, from the documents on disk.
    net.stop(1).unwrap();
    assert_eq!(net.json(1, &["pool", "ls"]).unwrap().as_array().unwrap().len(), 1);
    let v = net.json(1, &["pool", "show"]).unwrap();
    assert_eq!(v["charter"]["name"], "street");
    assert!(v["replication"]["error"].as_str().unwrap().contains("kith up"), "{v}");
    net.kith_ok(1, &["ledger"]).unwrap();
    net.kith_ok(1, &["site", "ls"]).unwrap();
    let out = net.kith(1, &["peers"]);
    assert!(out.status.success() && stderr(&out).contains("not running"), "{}", stderr(&out));
}

/// The month's ledger of `street` as node `i` sees it.
fn ledger(net: &Testnet, i: usize) -> Value {
    net.json(i, &["ledger", "--pool", "street"]).unwrap()["pools"][0].clone()
}

/// A member's row in a ledger table, by name.
fn row<'a>(l: &'a Value, name: &str) -> Option<&'a Value> {
    l["members"].as_array()?.iter().find(|m| m["name"] == name)
}

/// What a newcomer must see: the whole month's ledger (the admin's cost, the rows of a member
/// who left), every live holder up, no change refused, nothing lost.
fn sees_the_pool_whole(net: &Testnet, i: usize, left: &str) -> anyhow::Result<bool> {
    let l = ledger(net, i);
    let v = net.json(i, &["pool", "show", "street"])?;
    let r = &v["replication"];
    let holders_up = r["holders"]
        .as_array()
        .is_some_and(|hs| hs.iter().filter(|h| h["state"] == "up").count() >= 2);
    Ok(l["costs_cents"] == 4250
        && row(&l, left).is_some_and(|m| m["storage_provided"].as_i64() > Some(0))
        && v["rejected_changes"].as_array().is_some_and(|a| a.is_empty())
        && r["lost_blobs"] == 0
        && r["unconfirmed_blobs"].as_u64().unwrap_or(0) == 0
        && r["under_replicated_bytes"] == 0
        && holders_up)
}

#[test]
fn a_pool_lives_its_whole_story() {
    // Ada (0), bob (1) and cy (2) form a pool; dee (3) joins later; node 4 is ada's new
    // machine after hers is lost for good.
    let mut net = testnet(5, Layout::Loopback);
    street(&mut net, 3, 2);
    for (k, v) in [("record_every", "5s"), ("audit_every", "5s")] {
        net.kith_ok(0, &["pool", "set", "street", k, v]).unwrap();
    }
    let (photos, photo_bytes) = put(&mut net, 0, "photos.bin", 2 << 20, 11);
    let (notes, note_bytes) = put(&mut net, 1, "notes.bin", 1 << 20, 12);
    let www = net.dir().join("www");
    write(&www.join("index.html"), b"<h1>fresh bread</h1>");
    net.kith_ok(0, &["site", "publish", www.to_str().unwrap(), "--name", "bakery"]).unwrap();
    net.kith_ok(0, &["ledger", "cost", "street", "42.50", "power"]).unwrap();
    net.wait_for(CONVERGE, "everyone's usage and the cost in everyone's ledger", |net| {
        Ok((0..3).all(|i| {
            let l = ledger(net, i);
            l["costs_cents"] == 4250
                && ["ada", "bob", "cy"]
                    .iter()
                    .all(|m| row(&l, m).is_some_and(|r| r["storage_provided"].as_i64() > Some(0)))
        }))
    })
    .unwrap();

    // Cy leaves: the others copy what cy held, and nothing goes missing.
    net.kith_ok(2, &["pool", "leave", "street", "--yes"]).unwrap();
    net.wait_for(CONVERGE, "ada to see cy gone and the pool whole", |net| {
        let v = show(net, 0);
        Ok(member(net, 0, 2)["state"] == "left" && v["replication"]["under_replicated_bytes"] == 0)
    })
    .unwrap();
    net.kill(2).unwrap();

    // Dee joins after cy left: the whole month's ledger reaches her, cy's rows included.
    net.kith_ok(3, &["init"]).unwrap();
    net.start(3).unwrap();
    let ticket = net.kith_ok(0, &["pool", "invite", "street"]).unwrap();
    net.kith_ok(3, &["pool", "join", ticket.trim(), "--as", "dee"]).unwrap();
    net.kith_ok(3, &["offer", "street", "--storage", "1GiB", "--zone", "house-3"]).unwrap();
    net.wait_for(CONVERGE, "dee to see the pool whole", |net| sees_the_pool_whole(net, 3, "cy"))
        .unwrap();
    let at3 = http(&net, 3);
    net.wait_for(CONVERGE, "dee's node to serve bakery", |_| {
        Ok(get(at3, "/s/bakery/").status == 200)
    })
    .unwrap();
    assert_eq!(get(at3, "/s/bakery/").body, b"<h1>fresh bread</h1>");

    // Ada's machine is lost for good. Her identity, restored on node 4, finds the pool, the
    // month's ledger and her photos; she retires the lost machine.
    let kept = net.nodes[1].home.join(format!(
        "identities/{}.kdoc",
        net.json(0, &["identity"]).unwrap()["id"].as_str().unwrap()
    ));
    net.wait_for(CONVERGE, "bob to keep ada's identity document", |_| Ok(kept.exists())).unwrap();
    let lost = net.id(0).unwrap();
    net.share_identity(4, 0).unwrap();
    net.kill(0).unwrap();
    net.start(4).unwrap();
    net.wait_for(CONVERGE, "ada's new machine to find street", |net| {
        Ok(net.json(4, &["pool", "ls"])?.as_array().is_some_and(|a| a.len() == 1))
    })
    .unwrap();
    let back = net.dir().join("photos-back.bin");
    net.kith_ok(4, &["get", &photos, "-o", back.to_str().unwrap()]).unwrap();
    assert!(std::fs::read(&back).unwrap() == photo_bytes, "ada's photos came back different");
    net.kith_ok(4, &["device", "revoke", &lost[..12]]).unwrap();
    net.kith_ok(4, &["offer", "street", "--storage", "1GiB", "--zone", "house-4"]).unwrap();
    net.wait_for(CONVERGE, "ada's new machine to see the pool whole", |net| {
        sees_the_pool_whole(net, 4, "cy")
    })
    .unwrap();
    net.wait_for(CONVERGE, "bob to see the pool whole without the lost machine", |net| {
        let v = show(net, 1);
        let r = &v["replication"];
        Ok(r["holders"].as_array().unwrap().iter().all(|h| h["node"] != lost.as_str())
            && r["under_replicated_bytes"] == 0
            && r["lost_blobs"] == 0)
    })
    .unwrap();

    // The last admin hands over and leaves; bob, admin now, dissolves the pool.
    net.kith_ok(4, &["pool", "set", "street", "role:bob", "admin"]).unwrap();
    net.wait_for(CONVERGE, "ada's node to know bob is admin", |net| {
        Ok(show(net, 4)["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "bob" && m["role"] == "admin"))
    })
    .unwrap();
    net.kith_ok(4, &["pool", "leave", "street", "--yes"]).unwrap();
    net.wait_for(CONVERGE, "bob to see ada leave", |net| {
        Ok(show(net, 1)["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "ada" && m["state"] == "left"))
    })
    .unwrap();
    net.kith_ok(1, &["pool", "dissolve", "street", "--yes"]).unwrap();
    net.wait_for(CONVERGE, "every node to let street go", |net| {
        Ok([1, 3, 4]
            .iter()
            .all(|i| net.json(*i, &["pool", "ls"]).is_ok_and(|v| v == Value::Array(vec![]))))
    })
    .unwrap();
    assert_eq!(get(at3, "/s/bakery/").status, 404, "a dissolved pool's site is not served");
    // Nothing was lost: ada's site came home with her, everyone's objects are in their stores.
    let kept = net.kith_ok(4, &["ls"]).unwrap();
    assert!(kept.contains("site bakery, version 1"), "{kept}");
    for (i, id, bytes) in [(4, &photos, &photo_bytes), (1, &notes, &note_bytes)] {
        let out = net.dir().join(format!("final-{i}.bin"));
        net.kith_ok(i, &["get", id, "-o", out.to_str().unwrap()]).unwrap();
        assert!(std::fs::read(&out).unwrap() == *bytes, "node {i} lost bytes");
    }
}

/// A writer killed before any holder copied its put, then restarted from a copy of its home
/// taken before the put (chaos seed 1): the pool listed an object no node held, for good; every
/// node counted its blobs lost, `kith gc` could not read its manifest and a member's leave
/// waited for it. Its owner's node now takes it out, and says so.
#[test]
fn an_object_lost_before_the_pool_kept_it_is_taken_out_by_its_owner() {
    let mut net = testnet(2, Layout::Loopback);
    for i in 0..2 {
        net.kith_ok(i, &["init"]).unwrap();
        net.start(i).unwrap();
    }
    net.kith_ok(0, &["pool", "create", "street", "--as", "ada"]).unwrap();
    let ticket = net.kith_ok(0, &["pool", "invite", "street"]).unwrap();
    net.kith_ok(1, &["pool", "join", ticket.trim(), "--as", "bob"]).unwrap();
    // Only ada's node offers storage: what she puts is held by her node alone.
    net.kith_ok(0, &["offer", "street", "--storage", "1GiB"]).unwrap();
    net.kith_ok(0, &["pool", "set", "street", "replicas", "1"]).unwrap();
    net.kith_ok(0, &["pool", "set", "street", "repair_after", "5s"]).unwrap();
    net.wait_for(CONVERGE, "bob's node to see the charter", |net| {
        let v = show(net, 1);
        Ok(v["charter"]["replicas"] == 1 && v["capacity"]["offered"] == 1u64 << 30)
    })
    .unwrap();
    // A copy of ada's home, taken before the put.
    net.kill(0).unwrap();
    let old = net.dir().join("ada-before");
    let cp = std::process::Command::new("cp")
        .arg("-a")
        .arg(&net.nodes[0].home)
        .arg(&old)
        .status()
        .unwrap();
    assert!(cp.success());
    net.start(0).unwrap();
    let src = net.dir().join("soon-lost.bin");
    write(&src, &random_bytes(300_000, 31));
    let id = net.json(0, &["put", src.to_str().unwrap(), "--pool", "street"]).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let listed = |net: &Testnet, i: usize| {
        show(net, i)["objects"].as_array().unwrap().iter().any(|o| o["id"] == id.as_str())
    };
    net.wait_for(CONVERGE, "bob's node to list ada's object", |net| Ok(listed(net, 1))).unwrap();
    // Ada's node is lost and comes back from the copy: nobody holds the object any more.
    net.kill(0).unwrap();
    net.nodes[0].home = old;
    net.nodes[0].log = net.dir().join("ada-restored.log");
    net.start(0).unwrap();
    net.wait_for(Duration::from_secs(120), "the lost object to leave the pool", |net| {
        Ok(!listed(net, 0) && !listed(net, 1))
    })
    .unwrap();
    let log = net.log(0);
    assert!(log.contains("an object of yours is lost"), "{log}");
    assert!(log.contains(&id), "the warning names the object: {log}");
    for i in 0..2 {
        net.wait_for(CONVERGE, "nothing counted lost", |net| {
            let r = &show(net, i)["replication"];
            Ok(r["lost_blobs"] == 0 && r["under_replicated_bytes"] == 0)
        })
        .unwrap();
        net.kith_ok(i, &["gc"]).unwrap();
    }
}
