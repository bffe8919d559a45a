//! What the node's integration tests share.

#![allow(clippy::unwrap_used, dead_code)]

use std::sync::Arc;

use iroh::protocol::DynProtocolHandler;
use kith_node::home::Home;
use kith_node::net::mdns::MdnsConfig;
use kith_node::net::{NetConfig, Node};
use kith_node::store::Store;

/// A node with its home in `root`, on loopback, without mDNS, serving `protocols` besides the
/// blobs.
pub async fn node(
    root: &std::path::Path,
    protocols: Vec<(Vec<u8>, Box<dyn DynProtocolHandler>)>,
) -> Node {
    let home = Home::open_or_init(root).unwrap().0;
    let store = Arc::new(Store::open(&home, "node test").unwrap());
    let cfg = NetConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        mdns: MdnsConfig { disabled: true, interfaces: Vec::new() },
        relays: Vec::new(),
        max_connections_per_peer: 8,
    };
    Node::start_with(&home, store, cfg, protocols).await.unwrap()
}
