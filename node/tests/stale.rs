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
use kith_node::net::blobs::{
    ALPN, BUSY, BlobsProtocol, Connections, Reply, Request, Served, fetch_from,
};
use kith_node::net::frame;
use kith_node::store::Store;

/// How long a connection must be silent to count as stale here (the default is 10 s).
const STALE: Duration = Duration::from_secs(3);

/// An endpoint of the node with this key, on loopback.
async fn endpoint(key: iroh::SecretKey) -> iroh::Endpoint {
    endpoint_knowing(key, Vec::new()).await
}

/// An endpoint of the node with this key, on loopback, that can dial `known` by their ids.
async fn endpoint_knowing(key: iroh::SecretKey, known: Vec<iroh::EndpointAddr>) -> iroh::Endpoint {
    iroh::Endpoint::builder(iroh::endpoint::presets::Minimal)
        .secret_key(key)
        .relay_mode(iroh::RelayMode::Disabled)
        .clear_address_lookup()
        .address_lookup(iroh::address_lookup::MemoryLookup::from_endpoint_info(known))
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

/// A blob server that takes two connections from one node and counts one as stale after
/// [`STALE`], with its store and what it served.
async fn server(dir: &std::path::Path) -> (Router, Arc<Store>, Arc<Served>) {
    let home = Home::open_or_init(dir).unwrap().0;
    let store = Arc::new(Store::open(&home, "stale test").unwrap());
    let served = Arc::new(Served::default());
    let protocol = BlobsProtocol::new(store.clone(), served.clone())
        .with_max_connections_per_peer(2)
        .with_stale_after(STALE);
    let server = endpoint(iroh::SecretKey::generate()).await;
    let router = Router::builder(server).accept(ALPN, protocol).spawn();
    (router, store, served)
}

/// The first run of the node with `key`, on a runtime of its own: two connections to `to`, as
/// many as the server takes from one node, both answered. Then it crashes: its runtime stops
/// at once, nothing is closed or sent, and the server still holds both connections. Returns
/// what the run left behind (to be dropped at the end of the test).
async fn crashed_run(key: iroh::SecretKey, to: iroh::EndpointAddr) -> impl Sized {
    let first_run =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let old = first_run
        .spawn(async move {
            let ep = endpoint(key).await;
            let (a, b) =
                (ep.connect(to.clone(), ALPN).await.unwrap(), ep.connect(to, ALPN).await.unwrap());
            ping(&a).await.unwrap();
            ping(&b).await.unwrap();
            (ep, a, b)
        })
        .await
        .unwrap();
    first_run.shutdown_background();
    old
}

/// A node that crashed holding the cap of `router`'s server, and its next run: the server's
/// address, what the crashed run left behind (to be dropped at the end of the test), and the
/// next run's endpoint (same key), which can dial the server by its id.
async fn back_from_a_crash(router: &Router) -> (iroh::EndpointAddr, impl Sized, iroh::Endpoint) {
    let (to, key) = (router.endpoint().addr(), iroh::SecretKey::generate());
    let old = crashed_run(key.clone(), to.clone()).await;
    let client = endpoint_knowing(key, vec![to.clone()]).await;
    (to, old, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_back_from_a_crash_gets_in_in_the_place_of_its_dead_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (router, _, served) = server(dir.path()).await;
    let (to, key) = (router.endpoint().addr(), iroh::SecretKey::generate());
    let old = crashed_run(key.clone(), to.clone()).await;
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

/// A fetch started right after a crash, while the server still holds the crashed run's
/// connections: it is refused at first, keeps asking, and gets every blob once the dead
/// connections have gone silent for long enough (no "try again" left to its user).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_right_after_a_crash_waits_to_be_let_in() {
    let dir = tempfile::tempdir().unwrap();
    let (router, store, served) = server(&dir.path().join("server")).await;
    let file = dir.path().join("letter");
    std::fs::write(&file, b"dear neighbour, ".repeat(40_000)).unwrap();
    let object = store.put(&file, None).unwrap().id;
    let ids: Vec<_> = store.object_blobs(&object).unwrap().into_iter().map(|(id, _)| id).collect();
    let (to, old, client) = back_from_a_crash(&router).await;
    let conns = Arc::new(Connections::new(client.clone()));
    // As in a running node, a pinger shares the fetch's connections: its pings fail while the
    // peer refuses, and must not close the connection the fetch is let in on.
    let pinger = {
        let conns = conns.clone();
        tokio::spawn(async move {
            loop {
                let _ = conns.ping(to.id, false).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let (sink, mut blobs) = tokio::sync::mpsc::channel(64);
    let fetch = tokio::spawn(fetch_from(conns, vec![to.id], ids.clone(), None, sink));
    let mut got = Vec::new();
    let received = async {
        while let Some(blob) = blobs.recv().await {
            got.push(blob.id);
        }
    };
    tokio::time::timeout(Duration::from_secs(60), received).await.expect("the fetch hangs");
    let report = fetch.await.unwrap();
    pinger.abort();
    assert!(report.failed_peers.is_empty(), "{:?}", report.failed_peers);
    assert!(report.missing.is_empty(), "{:?}", report.missing);
    got.sort();
    let mut want = ids;
    want.sort();
    assert_eq!(got, want);
    assert!(served.refused_connections.load(Ordering::Relaxed) > 0, "never refused");
    assert!(served.replaced_connections.load(Ordering::Relaxed) > 0, "let in otherwise");
    drop(old);
    client.close().await;
    router.shutdown().await.unwrap();
}

/// Closing a connection the peer refused (as a node does when it drops a peer whose ping
/// failed) keeps the peer's reason: a fetch sharing that connection reads it to know it was
/// refused, not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_refused_connection_keeps_the_peers_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (router, _, served) = server(dir.path()).await;
    let (to, old, client) = back_from_a_crash(&router).await;
    let conns = Connections::new(client.clone());
    let conn = conns.get(to.id).await.unwrap();
    let refused = |c: &Connection| matches!(c.close_reason(), Some(ConnectionError::ApplicationClosed(c)) if c.error_code == BUSY.into());
    tokio::time::timeout(Duration::from_secs(20), conn.closed()).await.expect("never closed");
    assert!(refused(&conn), "{:?}", conn.close_reason());
    assert!(served.refused_connections.load(Ordering::Relaxed) > 0);
    conns.drop_peer(&to.id);
    assert!(refused(&conn), "dropping it replaced the reason: {:?}", conn.close_reason());
    drop(old);
    client.close().await;
    router.shutdown().await.unwrap();
}
