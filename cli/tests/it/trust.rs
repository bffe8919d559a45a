//! The trust model, tried as an attacker would: strangers on the LAN, members taking what is
//! not theirs.

use iroh::{Endpoint, EndpointAddr};
use kith_node::net::frame;
use kith_testnet::{Layout, Testnet};

use crate::util::*;

/// Ada's pool `street` with bob's node in it, and a stranger's raw iroh endpoint aimed at
/// ada's node.
fn street_and_a_stranger() -> (Testnet, tokio::runtime::Runtime, Endpoint, EndpointAddr) {
    let mut net = testnet(2, Layout::Loopback);
    for i in 0..2 {
        net.kith_ok(i, &["init"]).unwrap();
        net.start(i).unwrap();
    }
    net.kith_ok(0, &["pool", "create", "street", "--as", "ada"]).unwrap();
    let ticket = net.kith_ok(0, &["pool", "invite"]).unwrap();
    net.kith_ok(1, &["pool", "join", ticket.trim(), "--as", "bob"]).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ep = rt.block_on(endpoint());
    let to = addr_of(&net, 0);
    (net, rt, ep, to)
}

#[test]
fn regression_strangers_cannot_fill_a_nodes_custody_with_identity_documents() {
    // Issue 16: anyone on the LAN could send identity documents signed by identities it made
    // up, and the node stored each one, up to a 4 MiB frame, with no membership check. They
    // travel in `kith/docs/1` sessions now: one about an identity that is a member of none of
    // the node's pools is refused at its hello, before any change is taken.
    use kith_pools::docs::{Ack, DOCS_ALPN, Hello, Proof};
    let (net, rt, ep, to) = street_and_a_stranger();
    let custody = net.nodes[0].home.join("identities");
    let kept_before = std::fs::read_dir(&custody).map(|d| d.count()).unwrap_or(0);
    let session = |hello: Hello| -> Option<String> {
        rt.block_on(async {
            let conn = ep.connect(to.clone(), DOCS_ALPN).await.unwrap();
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            frame::write(&mut send, &hello).await.unwrap();
            let ack: Ack = frame::read(&mut recv).await.unwrap().unwrap();
            conn.close(0u32.into(), b"done");
            ack.refused
        })
    };
    for n in 0..100u32 {
        let mut secret = [0u8; 32];
        secret[..4].copy_from_slice(&n.to_le_bytes());
        secret[31] = 0xa5;
        let me = kith_crdt::Signer::new(&secret, *ep.id().as_bytes());
        let owner = me.author().key;
        let msg = [&b"kith-identity-device-v1"[..], &owner[..], ep.id().as_bytes()].concat();
        let why = session(Hello::identity(owner, Proof::Device(owner, me.sign(&msg))));
        let why = why.expect("a stranger's identity session was taken");
        assert!(why.contains("not a member"), "{why}");
    }
    // Nor with somebody else's identity and no proof of being its device.
    let ada = net.json(0, &["identity"]).unwrap()["id"].as_str().unwrap().to_string();
    let ada = kith_pools::parse_key(&ada).unwrap();
    let why = session(Hello::identity(ada, Proof::Member)).unwrap();
    assert!(why.contains("only with a device of that identity"), "{why}");
    let why = session(Hello::identity(ada, Proof::Device(ada, vec![1; 64]))).unwrap();
    assert!(why.contains("does not verify"), "{why}");
    let kept_after = std::fs::read_dir(&custody).map(|d| d.count()).unwrap_or(0);
    assert_eq!(kept_after, kept_before, "the node kept a stranger's document");
    // The node goes on serving its pool; it counted every refusal and logged one line.
    assert_eq!(net.json(0, &["pool", "show"]).unwrap()["charter"]["name"], "street");
    let refused = net.json(0, &["status"]).unwrap()["refused"]["sync session refused"].as_u64();
    assert!(refused >= Some(102), "{refused:?}");
    let stranger = format!("peer={}", &ep.id().to_string()[..10]);
    let said = |l: &&str| l.contains("sync session refused") && l.contains(&stranger);
    let lines = net.log(0).lines().filter(said).count();
    assert_eq!(lines, 1, "one log line for one peer and cause:\n{}", net.log(0));
}

#[test]
fn holders_keep_no_object_over_its_owners_quota() {
    // Issue 16: quotas were checked only by the writer's client; holders and repair took
    // whatever placement gave them. Here ada's object fitted when she stored it; the admin then
    // sets a quota it is over, and its holder goes: nobody takes its share over, and every
    // node says why.
    let mut net = street_of_three(1);
    net.kith_ok(0, &["pool", "set", "street", "repair_after", "5s"]).unwrap();
    let show = |net: &Testnet, i: usize| net.json(i, &["pool", "show"]).unwrap();
    net.wait_for(std::time::Duration::from_secs(60), "ada to see two offers", |net| {
        Ok(show(net, 0)["capacity"]["offered"] == 2u64 << 30)
    })
    .unwrap();
    let src = net.dir().join("big.bin");
    write(&src, &random_bytes(3 << 20, 1));
    let put = net.json(0, &["put", src.to_str().unwrap(), "--pool", "street"]).unwrap();
    let object = put["id"].as_str().unwrap().to_string();
    let holder = put["pool"]["acks"][0]["node"].as_str().unwrap().to_string();
    let (gone, other) = if holder == net.id(1).unwrap() { (1, 2) } else { (2, 1) };
    net.kith_ok(0, &["pool", "set", "street", "quota", "1MiB"]).unwrap();
    net.wait_for(std::time::Duration::from_secs(60), "the object reported over quota", |net| {
        let r = &show(net, other)["replication"];
        Ok(r["over_quota"]
            .as_array()
            .is_some_and(|o| o.iter().any(|x| object.starts_with(x.as_str().unwrap()))))
    })
    .unwrap();
    net.kill(gone).unwrap();
    // Past repair_after the other node would take the share over: it does not.
    net.wait_for(std::time::Duration::from_secs(60), "the holder to be out", |net| {
        let v = show(net, other);
        Ok(v["replication"]["holders"].as_array().unwrap().iter().any(|h| h["state"] == "out"))
    })
    .unwrap();
    let out_at =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
            as i64;
    let mut last = serde_json::Value::Null;
    net.wait_for(std::time::Duration::from_secs(60), "a repair pass after that", |net| {
        last = show(net, other);
        Ok(last["repair"]["at_ms"].as_i64().is_some_and(|t| t > out_at))
    })
    .unwrap();
    assert_eq!(last["repair"]["responsible_blobs"], 0, "{last}");
}

#[test]
fn blobs_go_only_to_the_identitys_devices_and_members_of_a_pool_that_holds_them() {
    // Issue 16: any node that knew an id could fetch the blob. Now: a stranger gets nothing,
    // and a removed member cannot open a members-only site published after its removal.
    let mut net = testnet(3, Layout::Loopback);
    for i in 0..3 {
        net.kith_ok(i, &["init"]).unwrap();
        net.start(i).unwrap();
    }
    net.kith_ok(0, &["pool", "create", "street", "--as", "ada", "--replicas", "2"]).unwrap();
    for (i, name) in [(1, "bob"), (2, "cy")] {
        let ticket = net.kith_ok(0, &["pool", "invite"]).unwrap();
        net.kith_ok(i, &["pool", "join", ticket.trim(), "--as", name]).unwrap();
        net.kith_ok(i, &["offer", "--storage", "1GiB", "--zone", &format!("z{i}")]).unwrap();
    }
    net.kith_ok(0, &["pool", "remove", "street", "cy"]).unwrap();
    let www = net.dir().join("club");
    write(&www.join("index.html"), b"members only");
    net.wait_for(std::time::Duration::from_secs(60), "ada to see bob's offer", |net| {
        Ok(net.json(0, &["pool", "show"])?["capacity"]["offered"] == 1u64 << 30)
    })
    .unwrap();
    net.kith_ok(0, &["site", "publish", www.to_str().unwrap(), "--name", "club", "--members"])
        .unwrap();
    let versions = net.json(0, &["site", "versions", "club"]).unwrap();
    let index = versions["versions"][0]["index"].as_str().unwrap().to_string();
    // Cy, removed before the site was published, asks for its index: refused everywhere.
    let out = net.kith(2, &["get", &index, "-o", net.dir().join("x").to_str().unwrap()]);
    let e = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{e}");
    assert!(e.contains("no pool this node shares") || e.contains("members of its pools"), "{e}");
    // A stranger's raw request gets a refusal, not the blob.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ep = rt.block_on(endpoint());
    let to = addr_of(&net, 0);
    let reply = rt.block_on(async {
        let conn = ep.connect(to, kith_node::net::blobs::ALPN).await.unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let id: kith_node::ChunkId = index.parse().unwrap();
        let req = kith_node::net::blobs::Request::Get(vec![id.0.into()], None, None);
        frame::write(&mut send, &req).await.unwrap();
        send.finish().unwrap();
        frame::read::<kith_node::net::blobs::Reply>(&mut recv).await.unwrap().unwrap()
    });
    assert!(matches!(reply, kith_node::net::blobs::Reply::Refused(_)), "{reply:?}");
    // Bob, a member, is served: his node's gateway opens the site with his credential.
    let at1 = http(&net, 1);
    let cred = net.kith_ok(1, &["site", "credential"]).unwrap().trim().to_string();
    net.wait_for(std::time::Duration::from_secs(60), "bob's node to open the site", |_| {
        let r = req(at1, "GET", "/s/club/", &[&format!("Authorization: Bearer {cred}")]);
        Ok(r.status == 200 && r.body == b"members only")
    })
    .unwrap();
}

#[test]
fn one_peer_holding_many_sessions_does_not_shut_out_the_members() {
    // Issue 16 item 10: sync sessions were bounded per request, not per peer; one peer could
    // hold as many as it opened.
    use kith_pools::docs::{Ack, DOCS_ALPN, Hello, Proof};
    let (net, rt, ep, to) = street_and_a_stranger();
    // A stranger opens 30 sessions at once and says nothing in any of them.
    let held: Vec<iroh::endpoint::Connection> = rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..30 {
            v.push(ep.connect(to.clone(), DOCS_ALPN).await.unwrap());
        }
        v
    });
    // Node 0 keeps eight of them (the places strangers share) and closes the others at once,
    // counting each; the members have places of their own.
    let cause = "too many sync sessions at once";
    let limit = std::time::Duration::from_secs(30);
    wait_for(limit, "the extra sessions refused", || {
        net.json(0, &["status"]).map(|v| v["refused"][cause].as_u64() >= Some(22)).unwrap_or(false)
    });
    // Meanwhile a member's change still reaches node 0.
    net.kith_ok(1, &["offer", "street", "--storage", "1GiB"]).unwrap();
    wait_for(limit, "bob's offer synced to node 0", || {
        let Ok(v) = net.json(0, &["pool", "show"]) else { return false };
        v["members"].as_array().into_iter().flatten().any(|m| {
            m["name"] == "bob"
                && m["nodes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|n| n["storage"].as_u64() > Some(0))
        })
    });
    // Once the stranger lets go, its places come back: a new session is answered (refused
    // for what it is, a stranger's, not for being too many).
    for c in &held {
        c.close(0u32.into(), b"done");
    }
    let mut ack: Option<Ack> = None;
    wait_for(limit, "a stranger's later session answered", || {
        ack = rt.block_on(async {
            let conn = ep.connect(to.clone(), DOCS_ALPN).await.ok()?;
            let (mut send, mut recv) = conn.open_bi().await.ok()?;
            let hello = Hello::pool([7; 32], Proof::Member, None);
            frame::write(&mut send, &hello).await.ok()?;
            let ack: Ack = frame::read(&mut recv).await.ok()??;
            conn.close(0u32.into(), b"done");
            Some(ack)
        });
        ack.is_some()
    });
    let why = ack.and_then(|a| a.refused).unwrap_or_default();
    assert!(why.contains("holds no pool"), "{why}");
}
