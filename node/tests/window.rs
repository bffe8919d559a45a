//! What a peer can make a node buffer: a connection's data that nobody has read is held to
//! the connection's flow-control window (`CONNECTION_RECEIVE_WINDOW`), whatever the protocol
//! and however many streams the peer opens. QUIC's default window has no limit: a peer could
//! open 100 streams of 1.25 MB each that the node never reads, and the node never has to
//! grant it more. What this test shows is that the window is finite (a sender of twice it
//! must be granted more as the node reads); its size is the constant's.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, DynProtocolHandler, ProtocolHandler};
use kith_node::net::{CONNECTION_RECEIVE_WINDOW, INITIAL_STREAMS, Node};

mod common;

/// A protocol that reads every stream to its end and counts the bytes.
#[derive(Debug, Clone, Default)]
struct Sink(Arc<AtomicU64>);

impl ProtocolHandler for Sink {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        while let Ok((_send, mut recv)) = conn.accept_bi().await {
            let read = self.0.clone();
            tokio::spawn(async move {
                while let Ok(Some(part)) = recv.read_chunk(1 << 20).await {
                    read.fetch_add(part.len() as u64, Ordering::Relaxed);
                }
            });
        }
        Ok(())
    }
}

const SINK_ALPN: &[u8] = b"kith-test/sink";

async fn node(root: &std::path::Path, sink: &Sink) -> Node {
    let sink: Box<dyn DynProtocolHandler> = Box::new(sink.clone());
    common::node(root, vec![(SINK_ALPN.to_vec(), sink)]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_is_granted_more_than_a_connection_window_only_as_the_node_reads() {
    tokio::time::timeout(Duration::from_secs(120), twice_the_window()).await.expect("hung");
}

async fn twice_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let (sink, unused) = (Sink::default(), Sink::default());
    let server = node(&dir.path().join("server"), &sink).await;
    let client = node(&dir.path().join("client"), &unused).await;
    client.add_peer(&server.ticket()).await.unwrap();
    let conn = client.endpoint().connect(server.id(), SINK_ALPN).await.unwrap();

    // Twice the window, on every stream the node grants at the start.
    let per_stream = 2 * u64::from(CONNECTION_RECEIVE_WINDOW) / u64::from(INITIAL_STREAMS);
    let mut writers = Vec::new();
    for _ in 0..INITIAL_STREAMS {
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        writers.push(tokio::spawn(async move {
            let block = vec![0x5a; 64 << 10];
            let mut left = per_stream;
            while left > 0 {
                let n = left.min(block.len() as u64) as usize;
                send.write_all(&block[..n]).await.unwrap();
                left -= n as u64;
            }
            send.finish().unwrap();
            // Whole once the node has acknowledged all of it.
            assert_eq!(send.stopped().await.unwrap(), None, "the node stopped a stream");
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let total = per_stream * u64::from(INITIAL_STREAMS);
    let deadline = Instant::now() + Duration::from_secs(30);
    while sink.0.load(Ordering::Relaxed) < total {
        assert!(
            Instant::now() < deadline,
            "the node read {} of {total} bytes",
            sink.0.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The client could send more than one window only because the node, reading, granted it
    // more (MAX_DATA frames): with no connection window it never has to.
    let granted = conn.stats().frame_rx.max_data;
    assert!(
        granted > 0,
        "the client sent {total} bytes, twice the window, and was never granted more: the \
         connection has no window"
    );
    conn.close(0u32.into(), b"done");
    client.shutdown().await;
    server.shutdown().await;
}
