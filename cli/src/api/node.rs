//! What the node-wide commands answer: status, peers, tickets, pairing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `kith status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// This node's id.
    pub node: String,
    /// The identity's id.
    pub identity: String,
    /// The home.
    pub home: String,
    /// Whether the daemon runs (the rest is known only then).
    pub running: bool,
    /// kith's version.
    pub version: String,
    /// The store.
    pub store: StoreUsage,
    /// The node's endpoint addresses.
    #[serde(default)]
    pub addrs: Vec<String>,
    /// The LAN HTTP listener's address.
    #[serde(default)]
    pub http: Option<String>,
    /// Where the node serves Prometheus metrics (`kith up --metrics`), if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
    /// Where a person opens this node (its LAN addresses).
    #[serde(default)]
    pub urls: Vec<String>,
    /// When another device of the identity retired this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_ms: Option<i64>,
    /// The node's background workers.
    #[serde(default)]
    pub workers: Vec<Worker>,
    /// Long operations under way (puts, gets, exports, imports, moves, hand-offs), with their
    /// progress.
    #[serde(default)]
    pub operations: Vec<OperationReport>,
    /// Peers known and answering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<PeerCount>,
    /// Seconds since the daemon started.
    #[serde(default)]
    pub uptime_s: u64,
    /// The site gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Gateway>,
    /// Browser peers: open sessions and what their pages reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub browsers: Option<serde_json::Value>,
    /// The relay this node serves (`kith up --serve-relay`), if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<RelayStatus>,
    /// The relays this node uses: those given (`kith up --relay`) and those its pools'
    /// federation agreements name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relays: Vec<String>,
    /// The relay this node is connected to (its home relay), if it uses relays and is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home_relay: Option<String>,
    /// Why it is not connected to a relay, when it uses relays and is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_error: Option<String>,
    /// Links through neighbours (WebRTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh: Option<kith_node::net::mesh::MeshStatus>,
    /// Peers' input refused, by cause.
    #[serde(default)]
    pub refused: BTreeMap<String, u64>,
    /// Blobs served to peers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served: Option<Served>,
}

/// `kith dashboard`: the addresses of the node's dashboard, each with its token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DashboardUrl {
    /// On this machine.
    pub local: String,
    /// On the LAN (the node's addresses).
    pub lan: Vec<String>,
}

/// `kith doctor`: checks of this node's setup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Doctor {
    /// Each check, in the order made.
    pub checks: Vec<Check>,
}

/// One check of `kith doctor`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    /// What was checked: `keys`, `daemon`, `config`, `ports`, `lan`, `disk`, `clock`,
    /// `versions`.
    pub what: String,
    /// `ok`, `warn` (works, but not as it should) or `fail` (does not work).
    pub level: String,
    /// What was found.
    pub says: String,
    /// What to do about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// The store's size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoreUsage {
    /// Objects.
    pub objects: u64,
    /// Chunks (blobs).
    pub chunks: u64,
    /// Pack files.
    pub packs: u64,
    /// Bytes of pack files.
    pub bytes: u64,
}

/// A background worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Worker {
    /// Its name, such as `repair street`.
    pub name: String,
    /// `idle`, `busy`, `error` or `stopped`.
    pub state: String,
    /// Passes run.
    pub passes: u64,
    /// When the last pass ended (ms since the epoch).
    pub last_ms: Option<u64>,
    /// How long it took (ms).
    pub last_took_ms: u64,
    /// How far the pass is: done and total.
    pub progress: Option<(u64, u64)>,
    /// Seconds the pass needs to finish, at the rate it has gone so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_s: Option<u64>,
    /// The last pass's error.
    pub last_error: Option<String>,
}

/// Peers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerCount {
    /// Known.
    pub known: u64,
    /// Answering.
    pub reachable: u64,
}

/// The site gateway's counters.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Gateway {
    /// Requests answered.
    pub requests: u64,
    /// Answered from the memory cache.
    pub cache_hits: u64,
    /// Chunks read from the store.
    pub store_reads: u64,
    /// Chunks fetched from peers.
    pub fetched: u64,
    /// Bytes in the cache.
    pub cache_bytes: u64,
}

/// Blobs served to peers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Served {
    /// Blobs sent.
    pub blobs: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Requests dropped as malformed, oversized or stalled.
    pub bad_requests: u64,
    /// Connections peers opened to fetch blobs.
    #[serde(default)]
    pub connections: u64,
    /// Of those, the ones open now.
    #[serde(default)]
    pub open_connections: u64,
    /// Connections refused because their node had `max_connections_per_peer` open already.
    #[serde(default)]
    pub refused_connections: u64,
    /// Stale connections closed to make room for a newer one of the same node.
    #[serde(default)]
    pub replaced_connections: u64,
}

/// A long operation under way on the node, as its progress reports say.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OperationReport {
    /// What it is (`put photos.bin into pool street`).
    pub what: String,
    /// Its stage, if it has stages (`replicating`).
    #[serde(default)]
    pub stage: String,
    /// Seconds since it started.
    pub running_s: u64,
    /// Bytes done (of the current stage).
    pub bytes_done: u64,
    /// Bytes in all (0: not known yet).
    pub bytes_total: u64,
    /// Files done.
    pub files_done: u64,
    /// Average rate since it started (bytes/s).
    pub rate_bps: u64,
    /// Seconds left at that rate, when known.
    #[serde(default)]
    pub eta_s: Option<u64>,
}

/// What the relay is doing (`kith status`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayStatus {
    /// The URL nodes are given (`kith up --relay URL`).
    pub url: String,
    /// Whether it accepts connections now.
    pub serving: bool,
    /// The month counted (`YYYY-MM`).
    pub month: String,
    /// Bytes received from clients this month (what it relayed).
    pub relayed_bytes: u64,
    /// The bound for the month: the egress lent with relay, if an agreement states one.
    pub bound_bytes: Option<u64>,
    /// Clients connected now.
    pub clients: u64,
    /// Connections refused since it started (unknown nodes).
    pub refused: u64,
    /// Why it does not serve, when it does not.
    pub why_not: Option<String>,
    /// What each partner it is lent to exchanged through it this month.
    #[serde(default)]
    pub partners: Vec<RelayPartner>,
}

/// What a partner pool's nodes exchanged through a relay this month, against what its
/// agreement lends.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayPartner {
    /// The partner pool's name.
    pub partner: String,
    /// Bytes its nodes exchanged through the relay this month (both ways).
    pub relayed_bytes: u64,
    /// The egress its agreement lends a month (0: none stated, no bound of its own).
    pub lent_bytes: u64,
    /// Of that egress, what the pool gave the partner otherwise this month (its edges'
    /// responses, copies sent back, its other relays), by its ledger: one bound for all.
    #[serde(default)]
    pub elsewhere_bytes: u64,
}
