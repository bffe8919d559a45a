//! Bad peers: malformed, oversized and unknown requests to a node; peers that lie, stall or
//! disconnect while a node fetches from them. The node stays up, the transfer completes from
//! an honest peer or fails with a clear error, and the store never holds unverified data.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use iroh::Endpoint;
use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler, Router};
use kith_node::net::blobs::{ALPN, Reply, Request};
use kith_node::net::frame;
use kith_node::net::ticket::NodeTicket;
use kith_testnet::{Layout, Testnet};

use crate::util::*;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Misbehaviour {
    /// Sends bytes that do not hash to the id asked for.
    Lie,
    /// Takes the request and never answers.
    Stall,
    /// Announces a blob, sends half of it, and closes.
    HalfAndGone,
    /// Announces a blob larger than any blob.
    Oversized,
}

#[derive(Debug, Clone)]
struct Evil {
    how: Misbehaviour,
    gets: Arc<AtomicU64>,
}

impl ProtocolHandler for Evil {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            let this = self.clone();
            tokio::spawn(async move {
                match frame::read::<Request>(&mut recv).await {
                    Ok(Some(Request::Ping(n))) => {
                        let _ = frame::write(&mut send, &Reply::Pong(n, None)).await;
                        let _ = send.finish();
                    }
                    Ok(Some(Request::Get(..))) => {
                        this.gets.fetch_add(1, Ordering::SeqCst);
                        match this.how {
                            Misbehaviour::Lie => {
                                let _ =
                                    frame::write(&mut send, &Reply::Have { kind: 0, len: 1000 })
                                        .await;
                                let _ = send.write_all(&[7u8; 1000]).await;
                            }
                            Misbehaviour::Stall => std::future::pending::<()>().await,
                            Misbehaviour::HalfAndGone => {
                                let _ =
                                    frame::write(&mut send, &Reply::Have { kind: 0, len: 1000 })
                                        .await;
                                let _ = send.write_all(&[7u8; 500]).await;
                                let _ = send.finish();
                            }
                            Misbehaviour::Oversized => {
                                let _ = frame::write(
                                    &mut send,
                                    &Reply::Have { kind: 0, len: u32::MAX },
                                )
                                .await;
                            }
                        }
                    }
                    _ => {}
                }
            });
        }
        Ok(())
    }
}

fn ticket_of(ep: &Endpoint) -> String {
    NodeTicket { id: ep.id(), addrs: ep.addr().ip_addrs().copied().collect() }.to_string()
}

/// Node 0 (honest) stores a tree of many small files; node 1 (same identity) will fetch it.
/// Node 1 knows only the peers the test gives it.
fn two_devices() -> (Testnet, String, std::path::PathBuf) {
    let mut net = testnet(2, Layout::Loopback);
    net.auto_connect = false;
    net.kith_ok(0, &["init"]).unwrap();
    net.share_identity(1, 0).unwrap();
    net.start_all().unwrap();
    let src = net.dir().join("many");
    for i in 0..800 {
        write(
            &src.join(format!("f{i:04}.txt")),
            format!("small file number {i}\n").repeat(20).as_bytes(),
        );
    }
    let id = net.kith_ok(0, &["put", src.to_str().unwrap()]).unwrap().trim().to_string();
    (net, id, src)
}

fn check_bad_peer(how: Misbehaviour, expect: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mut net, id, src) = two_devices();
    let gets = Arc::new(AtomicU64::new(0));
    let ep = rt.block_on(endpoint());
    let _router = rt.block_on(async {
        Router::builder(ep.clone()).accept(ALPN, Evil { how, gets: gets.clone() }).spawn()
    });
    assert!(net.kith(1, &["peer", "add", &ticket_of(&ep)]).status.success());

    // Only the bad peer: a clear error naming what it did, and nothing written.
    let dest = net.dir().join("only-bad");
    let out = net.kith(1, &["get", &id, "-o", dest.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{how:?}: {err}");
    assert!(
        err.contains("not found on any reachable peer") && err.contains(expect),
        "{how:?}: {err}"
    );
    assert!(!dest.exists());
    assert!(gets.load(Ordering::SeqCst) >= 1);
    let v = net.json(1, &["verify"]).unwrap();
    assert_eq!(v["blobs"], 0, "{how:?}: nothing unverified may be stored: {v}");
    assert!(net.is_running(1));

    // With an honest peer too, the transfer completes from it, although the bad one is asked
    // again (every peer takes a batch at once) and dropped again.
    let asked_before = gets.load(Ordering::SeqCst);
    let drops_before = net.log(1).matches("dropping peer from this fetch").count();
    let honest = net.kith_ok(0, &["id", "--ticket"]).unwrap();
    assert!(net.kith(1, &["peer", "add", honest.trim()]).status.success());
    let dest = net.dir().join("with-honest");
    let out = net.kith(1, &["get", &id, "-o", dest.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{how:?}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        net.log(1)
    );
    assert_eq!(describe(&dest), describe(&src));
    let v = net.json(1, &["verify"]).unwrap();
    assert_eq!(v["damaged"], false, "{v}");
    assert!(
        gets.load(Ordering::SeqCst) > asked_before,
        "{how:?}: the bad peer was not asked again"
    );
    assert!(
        net.log(1).matches("dropping peer from this fetch").count() > drops_before,
        "{}",
        net.log(1)
    );
    rt.block_on(ep.close());
}

#[test]
fn a_peer_sending_wrong_bytes_is_dropped() {
    check_bad_peer(Misbehaviour::Lie, "sent bytes that do not match chunk");
}

#[test]
fn a_peer_that_stalls_is_dropped() {
    check_bad_peer(Misbehaviour::Stall, "stalled");
}

#[test]
fn a_peer_that_disconnects_mid_blob_is_dropped() {
    check_bad_peer(Misbehaviour::HalfAndGone, "disconnected in the middle of a blob");
}

#[test]
fn a_peer_announcing_an_oversized_blob_is_dropped() {
    check_bad_peer(Misbehaviour::Oversized, "announced a blob of 4294967295 bytes");
}

#[test]
fn malformed_oversized_and_unknown_requests_leave_the_node_up() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut net = testnet(1, Layout::Loopback);
    net.start(0).unwrap();
    let target = addr_of(&net, 0);
    rt.block_on(async {
        let ep = endpoint().await;
        let unknown = ep.connect(target.clone(), b"kith/nope/1").await;
        assert!(unknown.is_err(), "an unknown ALPN must be refused");

        let conn = ep.connect(target.clone(), ALPN).await.unwrap();
        let raw: [&[u8]; 3] = [
            &[0xff, 0xff, 0xff, 0xff],                // a frame of 4 GiB announced
            &[5, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 0], // not CBOR of a request
            &[40, 0, 0],                              // a length cut short
        ];
        for bytes in raw {
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            send.write_all(bytes).await.unwrap();
            send.finish().unwrap();
            let reply = frame::read::<Reply>(&mut recv).await;
            assert!(!matches!(reply, Ok(Some(Reply::Have { .. }))), "{reply:?}");
        }
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let many = Request::Get(
            (0..1000).map(|_| minicbor::bytes::ByteArray::from([0u8; 32])).collect(),
            None,
            None,
        );
        // Over the frame limit: refused before it is read.
        let _ = frame::write(&mut send, &many).await;
        let _ = send.finish();
        let _ = frame::read::<Reply>(&mut recv).await;
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let too_many = Request::Get(
            (0..300).map(|_| minicbor::bytes::ByteArray::from([0u8; 32])).collect(),
            None,
            None,
        );
        frame::write(&mut send, &too_many).await.unwrap();
        send.finish().unwrap();
        let reply = frame::read::<Reply>(&mut recv).await.unwrap();
        assert!(
            matches!(reply, Some(Reply::Refused(ref why)) if why.contains("at most 256")),
            "{reply:?}"
        );

        // The node still answers, on a new stream and a new connection.
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        frame::write(&mut send, &Request::Ping(42)).await.unwrap();
        send.finish().unwrap();
        assert!(matches!(
            frame::read::<Reply>(&mut recv).await.unwrap(),
            Some(Reply::Pong(42, Some(_)))
        ));
        ep.close().await;
    });
    let status = net.json(0, &["status"]).unwrap();
    assert!(status["served"]["bad_requests"].as_u64().unwrap() >= 3, "{status}");
    assert!(net.is_running(0));
}
