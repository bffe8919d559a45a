//! One dial per peer at a time: callers that want a connection to a peer at once (the streams
//! of a fetch, the pinger) share one dial, so the peer sees one connection, not one each (it
//! refuses those past its cap per node), and a dead peer costs one timeout, not one each.
//! And a node serving a peer as much as it will at once still answers that peer's pings.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use kith_node::net::Node;
use kith_node::net::blobs::{ALPN, Connections, Reply, Request};
use kith_node::net::frame;

mod common;

/// A server and a client that knows it (its peer table has the server's addresses, and the
/// client's node holds one connection to it), with homes in `dir`.
async fn pair(dir: &std::path::Path) -> (Node, Node) {
    let server = common::node(&dir.join("server"), Vec::new()).await;
    let client = common::node(&dir.join("client"), Vec::new()).await;
    client.add_peer(&server.ticket()).await.unwrap();
    (server, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_want_a_connection_at_once_share_one_dial() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = pair(dir.path()).await;
    let admitted = || server.served().connections.load(Ordering::Relaxed);
    let before = admitted();

    // A pool of connections of the client's endpoint that holds none yet.
    let conns = Arc::new(Connections::new(client.endpoint().clone()));
    let peer = server.id();
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let conns = conns.clone();
            tokio::spawn(async move { conns.get(peer).await })
        })
        .collect();
    let mut ids = Vec::new();
    for c in callers {
        ids.push(c.await.unwrap().expect("a caller got no connection").stable_id());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "8 callers at once got {} connections", ids.len());

    let deadline = Instant::now() + Duration::from_secs(20);
    while admitted() == before {
        assert!(Instant::now() < deadline, "the server never admitted the connection");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(admitted() - before, 1, "the server admitted more than one connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_served_all_it_may_at_once_still_gets_its_pings_answered() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = pair(dir.path()).await;

    // 32 MiB the store cannot shrink: each request below asks for all of it, more than a
    // connection buffers, so its reply waits on the client, which does not read.
    let file = dir.path().join("noise");
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..32 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&file, noise).unwrap();
    let object = server.store().put(&file, None).unwrap().id;
    let ids: Vec<_> = server
        .store()
        .object_blobs(&object)
        .unwrap()
        .into_iter()
        .map(|(id, _)| minicbor::bytes::ByteArray::from(id.0))
        .collect();

    // 16 requests (the most one peer is served at once) on two connections of 8 streams.
    let (mut held, mut open) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        let conn = client.endpoint().connect(server.id(), ALPN).await.unwrap();
        for _ in 0..8 {
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            frame::write(&mut send, &Request::Get(ids.clone(), None, None)).await.unwrap();
            send.finish().unwrap();
            // Its first blob begins: the server serves this request.
            let first: Reply = frame::read(&mut recv).await.unwrap().unwrap();
            assert!(matches!(first, Reply::Have { .. }), "asked for a blob it has, got {first:?}");
            held.push(recv);
        }
        open.push(conn);
    }

    // A ping on a third connection is answered while all 16 are served.
    let conns = Connections::new(client.endpoint().clone());
    let pinged = conns.ping(server.id(), false).await;
    assert!(pinged.is_ok(), "the ping was not answered: {:?}", pinged.err());

    // And each of the 16 was still being served (none gave up, making room for the ping):
    // each reply arrives whole now that the client reads them.
    let readers: Vec<_> = held
        .into_iter()
        .map(|mut recv| {
            tokio::spawn(async move {
                let mut bytes = 0;
                while let Some(part) = recv.read_chunk(1 << 20).await? {
                    bytes += part.len();
                }
                Ok::<_, iroh::endpoint::ReadError>(bytes)
            })
        })
        .collect();
    for (i, r) in readers.into_iter().enumerate() {
        let rest = r.await.unwrap();
        assert!(rest.is_ok(), "request {i} ended early: {:?}", rest.err());
    }
    drop(open);
    let total = ids.len() as u64;
    let served = server.served().blobs.load(Ordering::Relaxed);
    assert_eq!(served, 16 * total, "the server sent {served} blobs of {}", 16 * total);
}
