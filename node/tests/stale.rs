//! A node that restarted holds no connections of its own to this one, but this one still sees
//! the old ones until the transport's idle timeout: restarted twice within it, the node would
//! have filled its cap of connections and been refused. A connection with no stream for
//! `STALE_AFTER` gives its place to a newer one of the same node; one in use never does.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use iroh::endpoint::{Connection, ConnectionError};
use iroh::protocol::Router;
use kith_node::home::Home;
use kith_node::net::blobs::{ALPN, BUSY, BlobsProtocol, REPLACED, Reply, Request, Served};
use kith_node::net::frame;
use kith_node::store::Store;

/// What the test waits for before a connection counts as stale (the default is 10 s).
const STALE: Duration = Duration::from_secs(2);

async fn endpoint() -> iroh::Endpoint {
    iroh::Endpoint::builder(iroh::endpoint::presets::Minimal)
        .relay_mode(iroh::RelayMode::Disabled)
        .clear_address_lookup()
        .clear_ip_transports()
        .bind_addr("127.0.0.1:0")
        .unwrap()
        .bind()
        .await
        .unwrap()
}

/// A ping on a new stream of `conn`, answered.
async fn ping(conn: &Connection) -> Result<(), String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    frame::write(&mut send, &Request::Ping(7)).await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    match frame::read::<Reply>(&mut recv).await {
        Ok(Some(Reply::Pong(..))) => Ok(()),
        other => Err(format!("no pong: {other:?}")),
    }
}

/// How the server took a new connection: `None` if it answers a ping (admitted), else the
/// application code it closed the connection with.
async fn admitted(conn: &Connection) -> Option<u64> {
    if ping(conn).await.is_ok() {
        return None;
    }
    match conn.closed().await {
        ConnectionError::ApplicationClosed(c) => Some(c.error_code.into_inner()),
        other => panic!("the connection ended otherwise: {other}"),
    }
}

/// The application code `conn` was closed with by the server, once it is closed.
async fn closed_with(conn: &Connection) -> u64 {
    match conn.closed().await {
        ConnectionError::ApplicationClosed(c) => c.error_code.into_inner(),
        other => panic!("the connection ended otherwise: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_back_from_restarts_gets_in_in_the_place_of_its_stale_connections() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::open_or_init(dir.path()).unwrap().0;
    let store = Arc::new(Store::open(&home, "stale test").unwrap());
    let served = Arc::new(Served::default());
    let protocol = BlobsProtocol::new(store, served.clone())
        .with_max_connections_per_peer(2)
        .with_stale_after(STALE);
    let server = endpoint().await;
    let router = Router::builder(server.clone()).accept(ALPN, protocol).spawn();
    let client = endpoint().await;
    let dial = || async { client.connect(server.addr(), ALPN).await.unwrap() };

    // Two connections, as many as the server takes from one node, both in use.
    let (old, older) = (dial().await, dial().await);
    ping(&older).await.unwrap();
    ping(&old).await.unwrap();

    // A third while those two have just carried a stream: refused, as before.
    let third = dial().await;
    assert_eq!(admitted(&third).await, Some(u64::from(BUSY)), "a third connection was not refused");

    // The two sit idle (as a restarted node's old connections do). Once they are stale, a
    // new connection of the node takes the place of the one idle longest.
    let deadline = Instant::now() + Duration::from_secs(30);
    let new = loop {
        let c = dial().await;
        match admitted(&c).await {
            None => break c,
            Some(code) => assert_eq!(code, u64::from(BUSY), "refused otherwise"),
        }
        assert!(Instant::now() < deadline, "no new connection got in after the old went stale");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let code = tokio::time::timeout(Duration::from_secs(30), closed_with(&older)).await;
    assert_eq!(code.ok(), Some(u64::from(REPLACED)), "the stalest was not replaced");
    assert_eq!(served.replaced_connections.load(Ordering::Relaxed), 1);
    // The other old one keeps its place, and the new one works.
    ping(&old).await.unwrap();
    ping(&new).await.unwrap();

    // One in use is never replaced: a stream held open on `old` (a ping whose request never
    // finishes arriving), and `new` busy the same way; a further connection is refused.
    let (mut held, _r1) = old.open_bi().await.unwrap();
    held.write_all(&[0x82]).await.unwrap();
    let (mut held2, _r2) = new.open_bi().await.unwrap();
    held2.write_all(&[0x82]).await.unwrap();
    // Held for twice the staleness (well within the 10 s the server waits for a request).
    let until = Instant::now() + STALE * 2;
    while Instant::now() < until {
        let c = dial().await;
        assert_eq!(admitted(&c).await, Some(u64::from(BUSY)), "a connection in use was replaced");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(served.bad_requests.load(Ordering::Relaxed), 0, "a held stream gave up early");
    assert_eq!(served.replaced_connections.load(Ordering::Relaxed), 1);
    router.shutdown().await.unwrap();
}
