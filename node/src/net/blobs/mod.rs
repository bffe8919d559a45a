//! `kith/blobs/1`: serving and fetching blobs by id between nodes.
//!
//! Over iroh, one request per bi-directional stream; over a [link](crate::net::link), one
//! request after another, each frame a message (`wire.rs` holds both ends, once for both
//! transports). The client sends a frame, `Ping(nonce)` or
//! `Get([id, ...], pool?)` (at most [`MAX_IDS`]); the server answers `Pong(nonce)`, or for each id in
//! order `Have{kind, len}` followed by `len` raw bytes, or `Missing`. A blob is whatever the
//! store holds under an id (a chunk envelope or an object root); the receiver hashes it before
//! it keeps or uses it, so a peer can waste our time but never our data.
//!
//! The fetcher spreads batches of ids over every peer it can reach (several streams per
//! peer), moves a batch to another peer when one fails, stalls or lies, and gives up on an id
//! only when every live peer said it does not have it.

mod conns;
mod fetch;
mod server;
mod tally;
mod wire;

use std::time::Duration;

use bytes::Bytes;
use minicbor::bytes::ByteArray;
use minicbor::{Decode, Encode};

use crate::ids::ChunkId;
use crate::store::pack::BlobKind;

pub use conns::{Connections, LaneLease, LinkClient, LinkError, Pinged, Route, connect_error};
pub use fetch::{FetchReport, fetch, fetch_from};
pub use server::{BlobGate, BlobsProtocol, ReadBlob, Served, read_ahead};
pub use tally::{MAX_TALLIES, Tallies, Tally};
pub use wire::{GetResult, Received};
pub(crate) use wire::{LinkWire, Sent, Wire, answer};

/// The protocol's ALPN.
pub const ALPN: &[u8] = b"kith/blobs/1";
/// Ids in one `Get`.
pub const MAX_IDS: usize = 256;
/// Requests served at once, over all peers (bounds memory: each holds at most two blobs).
const MAX_SERVING: usize = 32;
/// Requests of one peer served at once (over all its connections): one node fetching
/// several large objects at once leaves the other half to the others.
const MAX_SERVING_PER_PEER: usize = 16;
/// Connections one node may hold open to this one by default (a fetch uses up to
/// `LANES_PER_PEER`; the rest is room for a reconnection while an old one closes).
pub const MAX_CONNECTIONS_PER_PEER: usize = 8;
/// The code a connection past [`MAX_CONNECTIONS_PER_PEER`] is closed with.
pub const BUSY: u32 = 2;
/// The code a stale connection is closed with when a newer one of the same node takes its
/// place at the cap (see [`STALE_AFTER`]).
pub const REPLACED: u32 = 3;
/// A connection on which the peer has sent nothing for this long is stale: at the cap, a
/// newer connection of the same node takes its place instead of being refused. A live node
/// sends on each of its connections at least every 5 s (iroh's keep-alive); one that crashed
/// left its connections open here until the transport's idle timeout (30 s), and a few crashes
/// within it (or one with a fetch's four connections open, on a low cap) would fill the cap.
pub const STALE_AFTER: Duration = Duration::from_secs(10);
/// Streams a peer may open at once on one connection.
const MAX_STREAMS_PER_CONN: u32 = 8;
/// Time for a peer to send its request, or for us to connect to one.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Time without progress on one reply before a peer counts as stalled.
const STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a fetch keeps asking a peer that refuses our connections as too many (see
/// [`BUSY`]): twice [`STALE_AFTER`], time for the peer to see a crashed run's connections go
/// silent and give their places to ours.
const REFUSED_PATIENCE: Duration = Duration::from_secs(20);
/// Ids the fetcher asks one peer for in one request.
const FETCH_BATCH: usize = 64;
/// Streams the fetcher keeps open to one peer.
const STREAMS_PER_PEER: usize = 4;
/// Connections a large fetch uses to one peer (its streams spread over them). One
/// connection's packet work runs on one core at a time (noq seals and opens a connection's
/// packets under its lock), so a fetch over one connection leaves the other cores waiting;
/// see docs/benchmarks.md, "Lanes".
const LANES_PER_PEER: usize = 4;
/// Time to dial a further connection to a peer that answers on its first; past it the fetch
/// uses the first.
const LANE_DIAL_TIMEOUT: Duration = Duration::from_secs(2);
/// Peers one fetch uses at most.
const MAX_FETCH_PEERS: usize = 8;
/// After a failed attempt to link a peer through a neighbour, how long before the next.
const LINK_RETRY: Duration = Duration::from_secs(30);
/// Time a linker gets to make a link.
const LINK_TIMEOUT: Duration = Duration::from_secs(45);

/// What a client asks (the protocol's request frame).
#[derive(Debug, Encode, Decode)]
pub enum Request {
    /// Are you there? Answered with the same nonce.
    #[n(0)]
    Ping(#[n(0)] u64),
    /// These blobs, please (at most [`MAX_IDS`]), fetched on behalf of the pool named
    /// second, if any (what the server counts as served in that pool; see [`Tally`]), by a
    /// device of the identity of the proof, if any (older nodes send none).
    #[n(1)]
    Get(#[n(0)] Vec<ByteArray<32>>, #[n(1)] Option<ByteArray<32>>, #[n(2)] Option<DeviceProof>),
}

/// Domain separation of a [`DeviceProof`].
pub const DEVICE_PROOF_CONTEXT: &[u8] = b"kith-device-proof-v1";

/// A node's proof that it is a device of an identity: the identity's Ed25519 signature over
/// [`DEVICE_PROOF_CONTEXT`] and the node's id. A node serves its identity's own blobs (objects
/// in no pool) to the identity's other devices on this proof.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct DeviceProof {
    /// The identity.
    #[cbor(n(0), with = "minicbor::bytes")]
    pub identity: [u8; 32],
    /// Its signature.
    #[cbor(n(1), with = "minicbor::bytes")]
    pub sig: Vec<u8>,
}

impl DeviceProof {
    /// The message the identity signs for `node`.
    pub fn message(node: &[u8; 32]) -> Vec<u8> {
        [DEVICE_PROOF_CONTEXT, &node[..]].concat()
    }
}

/// What a node says of itself in a pong: its kith version and its clock, for `kith peers` and
/// `kith doctor` (the peer's word, used for nothing but showing).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct Facts {
    /// Its kith version (at most [`MAX_VERSION`] bytes are kept).
    #[n(0)]
    pub version: String,
    /// Its clock when it answered (ms since the Unix epoch).
    #[n(1)]
    pub time_ms: i64,
}

/// Longest version string kept from a peer.
pub const MAX_VERSION: usize = 32;

impl Facts {
    /// This node's.
    pub fn here() -> Facts {
        Facts {
            version: env!("CARGO_PKG_VERSION").to_string(),
            time_ms: crate::keys::now_ms() as i64,
        }
    }
}

/// What a server answers (one frame per ping, one per id of a get).
#[derive(Debug, Encode, Decode)]
pub enum Reply {
    /// The ping's nonce, and what the answering node says of itself (absent from older
    /// nodes; older nodes ignore it).
    #[n(0)]
    Pong(#[n(0)] u64, #[n(1)] Option<Facts>),
    /// The blob follows: `len` raw bytes.
    #[n(1)]
    Have {
        /// Its kind (0 chunk, 1 root).
        #[n(0)]
        kind: u8,
        /// Its length.
        #[n(1)]
        len: u32,
    },
    /// Not here.
    #[n(2)]
    Missing,
    /// The request was not acceptable.
    #[n(3)]
    Refused(#[n(0)] String),
}

/// A verified blob from a peer, in the pieces it arrived in (no copy into one buffer).
#[derive(Debug, Clone)]
pub struct Blob {
    /// Its id (the BLAKE3 hash of its bytes, checked).
    pub id: ChunkId,
    /// What the sender stores it as.
    pub kind: BlobKind,
    /// Its bytes, in order.
    pub parts: Vec<Bytes>,
}

impl Blob {
    /// Its length.
    pub fn len(&self) -> usize {
        self.parts.iter().map(Bytes::len).sum()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reply as nodes before `facts` knew it.
    #[derive(Debug, Decode, Encode)]
    enum OldReply {
        #[n(0)]
        Pong(#[n(0)] u64),
    }

    #[test]
    fn a_pong_with_facts_reads_on_older_nodes_and_an_older_pong_reads_here() {
        let new = Reply::Pong(7, Some(Facts { version: "9.9.9".into(), time_ms: 42 }));
        let bytes = minicbor::to_vec(&new).unwrap();
        let OldReply::Pong(n) = minicbor::decode::<OldReply>(&bytes).unwrap();
        assert_eq!(n, 7);
        let old = minicbor::to_vec(OldReply::Pong(8)).unwrap();
        match minicbor::decode::<Reply>(&old).unwrap() {
            Reply::Pong(8, None) => {}
            other => panic!("{other:?}"),
        }
    }
}
