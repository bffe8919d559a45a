//! A node that crashed holds no connections of its own to this one, but this one still sees
//! the old ones until the transport's idle timeout (30 s): a few crashes within it would fill
//! its cap of connections, and it would be refused. A connection on which the peer has sent
//! nothing for `STALE_AFTER` gives its place to a newer one of the same node; a live one (it
//! sends at least a keep-alive every 5 s) never does.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use iroh::endpoint::{Connection, ConnectionError};
use iroh::protocol::Router;
use kith_node::home::Home;
use kith_node::net::blobs::{ALPN, BUSY, BlobsProtocol, Reply, Request, Served};
use kith_node::net::frame;
use kith_node::store::Store;

/// How long a connection must be silent to count as stale here (the default is 10 s).
const STALE: Duration = Duration::from_secs(3);

/// An endpoint of the node with this key, on loopback.
async fn endpoint(key: iroh::SecretKey) -> iroh::Endpoint {
    iroh::Endpoint::builder(iroh::endpoint::presets::Minimal)
        .secret_key(key)
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

/// Dials until the server lets a connection in (each refusal must be `BUSY`), by `deadline`.
async fn let_in<F, Fut>(dial: &F, deadline: Instant, why: &str) -> Connection
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Connection>,
{
    loop {
        let c = dial().await;
        match admitted(&c).await {
            None => return c,
            Some(code) => assert_eq!(code, u64::from(BUSY), "refused otherwise"),
        }
        assert!(Instant::now() < deadline, "{why}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_back_from_a_crash_gets_in_in_the_place_of_its_dead_connections() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::open_or_init(dir.path()).unwrap().0;
    let store = Arc::new(Store::open(&home, "stale test").unwrap());
    let served = Arc::new(Served::default());
    let protocol = BlobsProtocol::new(store, served.clone())
        .with_max_connections_per_peer(2)
        .with_stale_after(STALE);
    let server = endpoint(iroh::SecretKey::generate()).await;
    let router = Router::builder(server.clone()).accept(ALPN, protocol).spawn();
    let (to, key) = (server.addr(), iroh::SecretKey::generate());

    // The node's first run, on a runtime of its own: two connections, as many as the server
    // takes from one node, both answered. Then it crashes: its runtime stops at once, nothing
    // is closed or sent, and the server still holds both connections.
    let first_run =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (addr, k) = (to.clone(), key.clone());
    let old = first_run
        .spawn(async move {
            let ep = endpoint(k).await;
            let (a, b) = (
                ep.connect(addr.clone(), ALPN).await.unwrap(),
                ep.connect(addr, ALPN).await.unwrap(),
            );
            ping(&a).await.unwrap();
            ping(&b).await.unwrap();
            (ep, a, b)
        })
        .await
        .unwrap();
    first_run.shutdown_background();
    assert_eq!(served.open_connections.load(Ordering::Relaxed), 2);

    // Its next run, the same node: refused while the old connections may still be alive,
    // then let in, in the place of one of them, once it has sent nothing for STALE.
    let client = endpoint(key).await;
    let dial = || async { client.connect(to.clone(), ALPN).await.unwrap() };
    let started = Instant::now();
    let deadline = started + Duration::from_secs(30);
    let one = let_in(&dial, deadline, "the node was never let in after its crash").await;
    assert!(started.elapsed() < Duration::from_secs(25), "let in only after the idle timeout");
    assert_eq!(served.replaced_connections.load(Ordering::Relaxed), 1);
    // A second connection takes the other dead one's place (at once, unless a last packet of
    // the crashed run arrived late and restarted its count).
    let two = let_in(&dial, deadline, "the second dead connection kept its place").await;
    assert_eq!(served.replaced_connections.load(Ordering::Relaxed), 2);

    // Two live connections: a third is refused, however long they have been open.
    let until = Instant::now() + STALE * 2;
    while Instant::now() < until {
        ping(&one).await.unwrap();
        ping(&two).await.unwrap();
        let c = dial().await;
        assert_eq!(admitted(&c).await, Some(u64::from(BUSY)), "a live connection was replaced");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(served.replaced_connections.load(Ordering::Relaxed), 2);
    drop(old);
    client.close().await;
    router.shutdown().await.unwrap();
}
