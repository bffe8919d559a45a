//! Two nodes behind two NATs, each reachable only from a third: they exchange WebRTC
//! descriptions through the neighbour over iroh, open a data channel through both NATs, and
//! the mesh moves chunks over it. Real namespaces, real masquerading (nftables), real daemons.

use std::process::Stdio;
use std::time::Duration;

use kith_node::net::frame;
use kith_node::net::mesh::{Description, Signal, Signed};
use kith_testnet::{Layout, Testnet};
use minicbor::bytes::ByteArray;
use serde_json::Value;

use crate::util::*;

const LINK: Duration = Duration::from_secs(120);

fn mesh(net: &Testnet, i: usize) -> Value {
    net.json(i, &["status"]).unwrap_or_default()["mesh"].clone()
}

fn route_to(net: &Testnet, i: usize, peer: &str) -> Option<String> {
    let peers = net.peers(i).unwrap_or_default();
    let p = peers.iter().find(|p| p["id"] == peer)?;
    p["route"].as_str().map(String::from)
}

#[test]
fn nodes_behind_two_nats_join_through_a_neighbour_and_move_chunks() {
    // 0 is the neighbour on the LAN; 1 and 2 sit behind NAT routers of their own.
    let mut net = testnet(3, Layout::Namespaces);
    net.put_behind_nat(1).unwrap();
    net.put_behind_nat(2).unwrap();
    // 1 and 2 are two devices of one person (a laptop at home, a desktop at the allotment).
    net.kith_ok(0, &["init"]).unwrap();
    net.kith_ok(2, &["init"]).unwrap();
    net.share_identity(1, 2).unwrap();
    net.start_all().unwrap();
    let (b, c) = (net.id(0).unwrap(), net.id(2).unwrap());
    // 1 knows 2's ticket (its addresses are behind 2's NAT) and the neighbour's; 2 does not
    // know the neighbour yet.
    net.connect(1, 2).unwrap();
    net.connect(1, 0).unwrap();
    let file = net.dir().join("data.bin");
    let bytes = random_bytes(6 << 20, 71);
    write(&file, &bytes);
    let id = net.kith_ok(2, &["put", file.to_str().unwrap()]).unwrap().trim().to_string();

    // No neighbour reaches 2: the failure says so, naming the neighbour asked.
    let out = net.kith(1, &["peer", "link", &c[..12]]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("no neighbour could join us"), "{err}");
    assert!(err.contains(&format!("cannot reach {}", &c[..10])), "{err}");
    let out = net.kith(1, &["get", &id, "-o", net.dir().join("nope").to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("not found on any reachable peer") && err.contains("neighbour"), "{err}");
    // And from the neighbour itself. It knows 1 only because 1 dialled it (a node notes the
    // nodes that dial it), and 1 cannot reach 2 either: the failure names who was asked.
    net.connect(0, 2).unwrap();
    let out = net.kith(0, &["peer", "link", &c[..12]]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("no neighbour to pass signalling on")
            || (err.contains("no neighbour could join us") && err.contains("cannot reach")),
        "{err}"
    );

    // 2 reaches the neighbour (outbound through its NAT); 1's pinger links 2 by itself.
    net.connect(2, 0).unwrap();
    net.wait_for(LINK, "node 1 to link node 2 through the neighbour", |net| {
        Ok(route_to(net, 1, &c).is_some_and(|r| r.starts_with("webrtc via")))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}\n{}", net.log(1), net.log(0), net.log(2)));
    assert_eq!(route_to(&net, 1, &c).unwrap(), format!("webrtc via {}", &b[..10]));
    // The explicit command says the same.
    let linked = net.kith_ok(1, &["peer", "link", &c[..12]]).unwrap();
    assert!(linked.contains("webrtc via"), "{linked}");

    // The chunks come over the channel, verified, and the neighbour never held them.
    let out = net.dir().join("out.bin");
    net.kith_ok(1, &["get", &id, "-o", out.to_str().unwrap()]).unwrap();
    assert!(std::fs::read(&out).unwrap() == bytes, "the bytes differ");
    let (m1, m2, m0) = (mesh(&net, 1), mesh(&net, 2), mesh(&net, 0));
    assert!(m1["received_bytes"].as_u64().unwrap() >= bytes.len() as u64, "{m1}");
    assert!(m2["served_bytes"].as_u64().unwrap() >= bytes.len() as u64, "{m2}");
    assert!(m0["relayed"].as_u64().unwrap() >= 1, "{m0}");
    assert!(m0["stun_answered"].as_u64().unwrap() >= 2, "{m0}");
    let served0 = net.json(0, &["status"]).unwrap()["served"]["bytes"].as_u64().unwrap();
    assert!(served0 < bytes.len() as u64 / 4, "the neighbour moved the data: {served0}");

    // 2 vanishes in the middle of a transfer: the get fails clearly, node 1 stays up and
    // forgets the link.
    let big = net.dir().join("big.bin");
    write(&big, &random_bytes(96 << 20, 72));
    let big_id = net.kith_ok(2, &["put", big.to_str().unwrap()]).unwrap().trim().to_string();
    let before = mesh(&net, 1)["received_bytes"].as_u64().unwrap();
    let get = net
        .cmd(1)
        .args(["get", &big_id, "-o", net.dir().join("big.out").to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    net.wait_for(LINK, "part of the big object to arrive", |net| {
        Ok(mesh(net, 1)["received_bytes"].as_u64().unwrap_or(0) > before + (4 << 20))
    })
    .unwrap();
    net.kill(2).unwrap();
    let got = get.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&got.stderr);
    assert!(!got.status.success(), "the get succeeded without its source");
    assert!(err.contains("not found on any reachable peer"), "{err}");
    assert!(!net.dir().join("big.out").exists(), "a partial file was left");
    net.wait_for(LINK, "node 1 to drop the dead link", |net| {
        Ok(mesh(net, 1)["links"].as_array().is_some_and(|l| l.is_empty()))
    })
    .unwrap();
    assert!(net.json(1, &["status"]).is_ok(), "node 1 went down");
}

/// Sends `raw` (frames, or anything) on a new `kith/signal/1` stream to `to`, then the frames of
/// `then`, reading one reply after each; returns the replies.
async fn signal(
    ep: &iroh::Endpoint,
    to: &kith_node::net::ticket::NodeTicket,
    raw: &[u8],
    then: Vec<Signal>,
) -> Vec<Signal> {
    let addr = to.addrs.iter().fold(iroh::EndpointAddr::new(to.id), |a, x| a.with_ip_addr(*x));
    let conn = ep.connect(addr, kith_node::net::mesh::SIGNAL_ALPN).await.unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(raw).await.unwrap();
    let mut replies = Vec::new();
    let mut then = then.into_iter();
    while let Ok(Some(s)) = frame::read::<Signal>(&mut recv).await {
        let done = matches!(s, Signal::Cannot(_) | Signal::Answer(_));
        replies.push(s);
        match then.next() {
            Some(next) if !done => frame::write(&mut send, &next).await.unwrap(),
            _ => break,
        }
    }
    conn.close(0u32.into(), b"done");
    replies
}

fn cannot(replies: &[Signal]) -> String {
    match replies.last() {
        Some(Signal::Cannot(why)) => why.clone(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn bad_signalling_gets_clear_refusals_and_nodes_stay_up() {
    // A neighbour (0) and a far node (1) on loopback; a hand-made client breaks the rules.
    let mut net = testnet(2, Layout::Loopback);
    for i in 0..2 {
        net.kith_ok(i, &["init"]).unwrap();
        net.start(i).unwrap();
    }
    let ticket = |i: usize| -> kith_node::net::ticket::NodeTicket {
        net.kith_ok(i, &["id", "--ticket"]).unwrap().trim().parse().unwrap()
    };
    let (b, c) = (ticket(0), ticket(1));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let key = iroh::SecretKey::generate();
        let ep = iroh::Endpoint::builder(iroh::endpoint::presets::Minimal)
            .secret_key(key.clone())
            .relay_mode(iroh::RelayMode::Disabled)
            .clear_address_lookup()
            .clear_ip_transports()
            .bind_addr("127.0.0.1:0")
            .unwrap()
            .bind()
            .await
            .unwrap();
        let frame_of = |s: &Signal| {
            let body = minicbor::to_vec(s).unwrap();
            [(body.len() as u32).to_le_bytes().to_vec(), body].concat()
        };
        let now = kith_node::keys::now_ms();
        let desc = |from: [u8; 32], to: [u8; 32], sdp: &str| Description {
            from: ByteArray::from(from),
            to: ByteArray::from(to),
            sdp: sdp.into(),
            at_ms: now,
            answers: None,
        };
        let me = *key.public().as_bytes();
        let want_c = Signal::Want { to: ByteArray::from(*c.id.as_bytes()) };

        // Not CBOR; a frame over the limit; the wrong first message.
        let junk = [5u32.to_le_bytes().to_vec(), vec![0xff; 5]].concat();
        assert!(cannot(&signal(&ep, &b, &junk, vec![]).await).contains("malformed"));
        let huge = (1u32 << 20).to_le_bytes();
        assert!(cannot(&signal(&ep, &b, &huge, vec![]).await).contains("exceeds"));
        let first = frame_of(&Signal::Go { stun: 1 });
        assert!(cannot(&signal(&ep, &b, &first, vec![]).await).contains("expected Want"));
        // A node the neighbour cannot reach.
        let nobody =
            Signal::Want { to: ByteArray::from(*iroh::SecretKey::generate().public().as_bytes()) };
        assert!(
            cannot(&signal(&ep, &b, &frame_of(&nobody), vec![]).await).contains("cannot reach")
        );
        // An offer in another node's name: the neighbour does not pass it on.
        let forged = Signed::sign(&key, &desc(*b.id.as_bytes(), *c.id.as_bytes(), "v=0"));
        let r = signal(&ep, &b, &frame_of(&want_c), vec![Signal::Offer(forged)]).await;
        assert!(matches!(r.first(), Some(Signal::Go { .. })), "{r:?}");
        assert!(cannot(&r).contains("not from this connection's node"), "{r:?}");
        // A well-signed offer with SDP that is not SDP: the far node refuses, the refusal
        // comes back through the neighbour.
        let bad_sdp = Signed::sign(&key, &desc(me, *c.id.as_bytes(), "this is not SDP"));
        let r = signal(&ep, &b, &frame_of(&want_c), vec![Signal::Offer(bad_sdp)]).await;
        let why = cannot(&r);
        assert!(why.contains("refused") && why.contains(&c.id.fmt_short().to_string()), "{why}");
        // Straight to the far node: an offer signed by someone else than its sender, and one
        // for another node.
        let not_theirs = Signed::sign(&key, &desc(*b.id.as_bytes(), *c.id.as_bytes(), "v=0"));
        let inc = Signal::Incoming { offer: not_theirs, stun: 3478 };
        assert!(cannot(&signal(&ep, &c, &frame_of(&inc), vec![]).await).contains("not signed by"));
        let elsewhere = Signed::sign(&key, &desc(me, *b.id.as_bytes(), "v=0"));
        let inc = Signal::Incoming { offer: elsewhere, stun: 3478 };
        assert!(cannot(&signal(&ep, &c, &frame_of(&inc), vec![]).await).contains("another node"));
        ep.close().await;
    });
    for i in 0..2 {
        let m = mesh(&net, i);
        assert_eq!(m["answered_sessions"], 0, "node {i} kept a session: {m}");
        assert!(m["refused"].as_u64().unwrap() >= 2, "node {i}: {m}");
    }
    assert_eq!(mesh(&net, 0)["relayed"], 0);
}
