//! `kith/pool/1`: replication requests between pool nodes (hold, has, audit, pools-of), how this node asks them and how it answers.

use std::sync::Arc;
use std::time::Duration;

use iroh::EndpointId;
use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler};
use kith_crdt::{Key, hex, verify_device};
use kith_node::ChunkId;
use kith_node::net::{Node, frame};
use minicbor::{Decode, Encode};

use super::repair::over_quota;
use super::{FETCH_ROUND, Replicator};
use crate::docs::{Pools, Proof};
use crate::view::PoolView;

/// ALPN of replication requests.
pub const POOL_ALPN: &[u8] = b"kith/pool/1";
/// Largest request or reply frame.
const MAX_FRAME: usize = 4 << 20;
/// Ids in one `Has`.
pub const MAX_HAS: usize = 65_536;
/// Holders named as upstream in one `Hold` that are asked (a writer names at most these; a
/// holder asks the first these of a longer list). A fetch asks at most 8 peers anyway.
pub const MAX_UPSTREAM: usize = 8;
/// Domain separation for `PoolsOf`.
pub(super) const POOLS_OF_CONTEXT: &[u8] = b"kith-pools-of-v1";

/// A replication request (one per stream).
#[derive(Debug, Clone, Encode, Decode)]
pub enum Request {
    /// Hold these blobs (positions in the object's manifest).
    #[n(0)]
    Hold {
        /// The pool.
        #[cbor(n(0), with = "minicbor::bytes")]
        pool: Key,
        /// The object, as recorded in the pool document.
        #[cbor(n(1), with = "minicbor::bytes")]
        object: Key,
        /// Positions of the blobs to hold.
        #[n(2)]
        positions: Vec<u32>,
        /// Holders that already have these blobs (verified and synced), asked before the
        /// writer: chain replication, so the writer sends each blob once. The first 8
        /// are asked; absent from older writers.
        #[n(3)]
        upstream: Option<Vec<minicbor::bytes::ByteArray<32>>>,
    },
    /// Which of these blobs do you hold?
    #[n(1)]
    Has {
        /// The pool.
        #[cbor(n(0), with = "minicbor::bytes")]
        pool: Key,
        /// The blobs (at most [`MAX_HAS`]).
        #[n(1)]
        ids: Vec<minicbor::bytes::ByteArray<32>>,
    },
    /// Prove you hold chunk `index` (1 KiB) of blob `id`.
    #[n(3)]
    Audit {
        /// The pool.
        #[cbor(n(0), with = "minicbor::bytes")]
        pool: Key,
        /// The blob.
        #[cbor(n(1), with = "minicbor::bytes")]
        id: Key,
        /// Which 1 KiB chunk of it.
        #[n(2)]
        index: u64,
    },
    /// Which pools is this identity in? Signed by the identity over the asking node's id.
    #[n(2)]
    PoolsOf {
        /// The identity.
        #[cbor(n(0), with = "minicbor::bytes")]
        identity: Key,
        /// Its signature.
        #[cbor(n(1), with = "minicbor::bytes")]
        sig: Vec<u8>,
    },
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, Encode, Decode)]
pub enum Reply {
    /// The blobs are held: how many were fetched now, and their bytes.
    #[n(0)]
    Held {
        /// Blobs fetched.
        #[n(0)]
        blobs: u64,
        /// Their bytes.
        #[n(1)]
        bytes: u64,
    },
    /// For each asked id, whether it is held.
    #[n(1)]
    Has(#[n(0)] Vec<bool>),
    /// Pool ids.
    #[n(2)]
    Pools(#[n(0)] Vec<minicbor::bytes::ByteArray<32>>),
    /// Not done, and why.
    #[n(3)]
    Refused(#[n(0)] String),
    /// A range proof for an audit.
    #[n(4)]
    Proof(#[n(0)] crate::proof::RangeProof),
}

/// What an identity signs to vouch for one of its nodes, for one purpose.
pub(super) fn node_message(context: &[u8], node: &Key) -> Vec<u8> {
    [context, &node[..]].concat()
}

/// Which of `ids` the local store holds.
pub(super) async fn held_locally(
    store: Arc<kith_node::Store>,
    ids: Vec<[u8; 32]>,
) -> Result<Vec<bool>, String> {
    tokio::task::spawn_blocking(move || {
        ids.iter().map(|id| store.has(&ChunkId(*id))).collect::<Result<Vec<bool>, _>>()
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())
}

impl Replicator {
    async fn serve(&self, peer: EndpointId, req: Request) -> Reply {
        let refused = |e: String| Reply::Refused(e);
        match req {
            Request::Hold { pool, object, positions, upstream } => {
                let upstream = upstream.unwrap_or_default().into_iter().map(|k| *k).collect();
                self.serve_hold(peer, pool, object, positions, upstream)
                    .await
                    .unwrap_or_else(refused)
            }
            Request::Audit { pool, id, index } => {
                self.serve_audit(peer, pool, id, index).await.unwrap_or_else(refused)
            }
            Request::Has { pool, ids } => {
                self.serve_has(peer, pool, ids).await.unwrap_or_else(refused)
            }
            Request::PoolsOf { identity, sig } => {
                let node = *peer.as_bytes();
                if !verify_device(&identity, &node, &node_message(POOLS_OF_CONTEXT, &node), &sig) {
                    return refused("the signature does not verify".into());
                }
                let retired = self.pools.is_retired_device(&node)
                    || self.pools.list().iter().any(|(_, v)| {
                        v.members.get(&identity).is_some_and(|m| m.retired.contains_key(&node))
                    });
                if retired {
                    return refused(crate::view::RETIRED_DEVICE.into());
                }
                Reply::Pools(self.pools.pools_of(&identity).into_iter().map(Into::into).collect())
            }
        }
    }

    pub(super) fn member_view(
        &self,
        peer: EndpointId,
        pool: &Key,
    ) -> Result<(std::sync::Arc<PoolView>, Key), String> {
        let v = self
            .pools
            .view_of(pool)
            .ok_or_else(|| format!("this node holds no pool {}", hex(&pool[..8])))?;
        let owner =
            v.node_owner(peer.as_bytes()).ok_or_else(|| v.not_a_member_node(peer.as_bytes()))?;
        Ok((v, owner))
    }

    async fn serve_hold(
        &self,
        peer: EndpointId,
        pool: Key,
        object: Key,
        positions: Vec<u32>,
        upstream: Vec<Key>,
    ) -> Result<Reply, String> {
        let (v, owner) = self.member_view(peer, &pool)?;
        // Only the pool's own nodes (a writer cannot send this node to fetch from strangers),
        // and the first MAX_UPSTREAM: what the others would have sent comes from the writer.
        let mut upstream: Vec<EndpointId> = upstream
            .iter()
            .filter(|k| v.node_owner(k).is_some() && **k != self.pools.node())
            .filter_map(|k| EndpointId::from_bytes(k).ok())
            .take(MAX_UPSTREAM)
            .collect();
        upstream.dedup();
        let me = self.pools.node();
        if !v.holders().iter().any(|h| h.node == me && h.weight > 0) {
            return Err("this node offers no storage to the pool".into());
        }
        let po = v.members[&owner].objects.get(&object).ok_or_else(|| {
            format!(
                "object {} is not in this node's copy of the pool document (yet)",
                hex(&object[..8])
            )
        })?;
        let mut from = vec![peer];
        from.extend(self.pool_nodes(&v).into_iter().filter(|p| *p != peer));
        let m = self.manifest(&po.manifest, &from).await?;
        if m.object.as_slice() != object.as_slice() {
            return Err("the manifest names another object".into());
        }
        if v.charter.quota > 0 {
            let mut all = Vec::new();
            for (o, oid, x) in v.objects().filter(|(o, _, _)| **o == owner) {
                all.push((*o, *oid, x.at_ms, self.manifest(&x.manifest, &from).await?));
            }
            if over_quota(&v, &all).contains(&object) {
                return Err(format!(
                    "object {} takes its owner over the pool's quota of {}; this node does not hold it",
                    hex(&object[..8]),
                    crate::fmt::size(v.charter.quota)
                ));
            }
        }
        let mut ids = Vec::with_capacity(positions.len());
        for p in positions {
            let (id, _) =
                m.blobs.get(p as usize).ok_or(format!("position {p} is past the manifest"))?;
            ids.push(ChunkId(**id));
        }
        let node = self.node()?;
        let (mut blobs, mut bytes) = (0, 0);
        for round in ids.chunks(FETCH_ROUND) {
            let what = format!("object {} for the pool", hex(&object[..8]));
            if !upstream.is_empty() {
                // From the holders before this one in the chain first; what they lack or fail
                // to send comes from the writer and the pool's other nodes just below.
                match node
                    .fetch_missing_shared(&what, round.to_vec(), None, Some(upstream.clone()), None)
                    .await
                {
                    Ok(rep) => {
                        blobs += rep.blobs;
                        bytes += rep.bytes;
                    }
                    Err(e) => {
                        tracing::info!(error = %e, "upstream holders fell short; asking the writer")
                    }
                }
            }
            let rep = node
                .fetch_missing_shared(&what, round.to_vec(), None, Some(from.clone()), None)
                .await
                .map_err(|e| e.to_string())?;
            blobs += rep.blobs;
            bytes += rep.bytes;
        }
        Ok(Reply::Held { blobs, bytes })
    }

    async fn serve_has(
        &self,
        peer: EndpointId,
        pool: Key,
        ids: Vec<minicbor::bytes::ByteArray<32>>,
    ) -> Result<Reply, String> {
        self.member_view(peer, &pool)?;
        if ids.len() > MAX_HAS {
            return Err(format!("at most {MAX_HAS} ids per request"));
        }
        let ids = ids.iter().map(|id| **id).collect();
        held_locally(self.node()?.store().clone(), ids).await.map(Reply::Has)
    }
}

/// How long a question that needs no work of the peer (has, audit, pools-of) waits for its
/// answer: a peer that takes a connection and then stalls must not hold a repair or an audit.
const QUICK_ANSWER: Duration = Duration::from_secs(20);

/// [`ask`], for a question answered at once: fails after [`QUICK_ANSWER`].
pub(super) async fn ask_briefly(
    pools: &Pools,
    node: &Node,
    peer: EndpointId,
    req: &Request,
) -> Result<Reply, String> {
    tokio::time::timeout(QUICK_ANSWER, ask(pools, node, peer, req))
        .await
        .map_err(|_| format!("no answer within {} s", QUICK_ANSWER.as_secs()))?
}

/// Sends one request to `peer` and reads the answer; a peer that answers is alive, whatever
/// it says.
pub(super) async fn ask(
    pools: &Pools,
    node: &Node,
    peer: EndpointId,
    req: &Request,
) -> Result<Reply, String> {
    let conn =
        tokio::time::timeout(Duration::from_secs(10), node.endpoint().connect(peer, POOL_ALPN))
            .await
            .map_err(|_| "connecting timed out".to_string())?
            .map_err(|e| kith_node::net::connect_error(&peer, e).to_string())?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    frame::write_max(&mut send, req, MAX_FRAME).await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    let reply: Reply = frame::read_max(&mut recv, MAX_FRAME)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the peer closed the stream without answering")?;
    conn.close(0u32.into(), b"done");
    pools.saw(peer.as_bytes());
    Ok(reply)
}

/// What one holder is asked to hold of an object.
#[derive(Debug, Clone, Default)]
pub(super) struct Share {
    /// Positions in the object's manifest.
    pub(super) positions: Vec<u32>,
    /// Holders that have some of these blobs already, asked before the writer, with how many
    /// each has.
    pub(super) upstream: std::collections::BTreeMap<Key, u32>,
    /// Their bytes.
    pub(super) bytes: u64,
}

/// Asks `holder` to hold its `share` of `object`, after making sure it has the document that
/// records the object unless `synced` (this put synced it with `holder` already).
pub(super) async fn hold(
    pools: &Pools,
    node: &Node,
    pool: Key,
    object: Key,
    holder: Key,
    share: Share,
    synced: bool,
) -> Result<u64, String> {
    let Share { positions, upstream, bytes } = share;
    let peer = EndpointId::from_bytes(&holder).map_err(|e| e.to_string())?;
    if !synced {
        pools
            .sync_one(pool, peer, Proof::Member)
            .await
            .map_err(|e| format!("cannot sync the pool: {e}"))?;
    }
    // Generous: the holder fetches at its own pace, and its fetch fails on a stall by itself.
    let limit = Duration::from_secs(600 + bytes / (1 << 20));
    // The upstream holders that have the most of the share.
    let mut upstream: Vec<(Key, u32)> = upstream.into_iter().collect();
    upstream.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    upstream.truncate(MAX_UPSTREAM);
    let upstream =
        (!upstream.is_empty()).then(|| upstream.into_iter().map(|(k, _)| k.into()).collect());
    let req = Request::Hold { pool, object, positions, upstream };
    match tokio::time::timeout(limit, ask(pools, node, peer, &req)).await {
        Err(_) => Err(format!("no answer within {} s", limit.as_secs())),
        Ok(Err(e)) => Err(e),
        Ok(Ok(Reply::Held { bytes, .. })) => Ok(bytes),
        Ok(Ok(Reply::Refused(why))) => Err(format!("refused: {why}")),
        Ok(Ok(other)) => Err(format!("unexpected answer {other:?}")),
    }
}

/// Asks `holder` which of `ids` it holds.
pub(super) async fn has(
    pools: &Pools,
    node: &Node,
    pool: Key,
    holder: Key,
    ids: &[[u8; 32]],
) -> Result<Vec<bool>, String> {
    let peer = EndpointId::from_bytes(&holder).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(ids.len());
    // An empty question is still asked: the answer says the holder is up.
    let empty: [[u8; 32]; 0] = [];
    let batches: Vec<&[[u8; 32]]> =
        if ids.is_empty() { vec![&empty[..]] } else { ids.chunks(MAX_HAS).collect() };
    for batch in batches {
        let req = Request::Has { pool, ids: batch.iter().map(|i| (*i).into()).collect() };
        match ask_briefly(pools, node, peer, &req).await? {
            Reply::Has(bits) if bits.len() == batch.len() => out.extend(bits),
            Reply::Refused(why) => return Err(format!("refused: {why}")),
            other => return Err(format!("unexpected answer {other:?}")),
        }
    }
    Ok(out)
}

/// Serves `kith/pool/1`.
#[derive(Debug, Clone)]
pub struct PoolProtocol {
    rep: Arc<Replicator>,
    slots: Arc<crate::slots::Slots>,
}

/// Requests one peer may have open at once (a writer asks each holder once per put, and a hold
/// stays open while the holder fetches).
const REQUESTS_PER_PEER: usize = 32;
/// Requests open at once from nodes of this node's pools.
const MAX_REQUESTS: usize = 256;
/// Requests open at once from every other peer together (a restored device asking for its
/// pools and identity document).
const MAX_STRANGER_REQUESTS: usize = 16;
/// Time for a peer to open its stream and send its request, and for the answer to go out.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

impl PoolProtocol {
    /// The protocol for this replicator.
    pub fn new(rep: Arc<Replicator>) -> PoolProtocol {
        let slots = crate::slots::Slots::new(
            "pool",
            REQUESTS_PER_PEER,
            MAX_REQUESTS,
            MAX_STRANGER_REQUESTS,
        );
        PoolProtocol { rep, slots }
    }

    async fn serve(&self, conn: &Connection) -> Result<(), String> {
        let peer = conn.remote_id();
        let opened = async {
            let (send, mut recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
            let req: Request = frame::read_max(&mut recv, MAX_FRAME)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("no request")?;
            Ok::<_, String>((send, req))
        };
        let (mut send, req) = tokio::time::timeout(REQUEST_TIMEOUT, opened)
            .await
            .map_err(|_| format!("no request within {} s", REQUEST_TIMEOUT.as_secs()))??;
        let reply = match self.rep.serving.clone().try_acquire_owned() {
            Ok(_permit) => self.rep.serve(peer, req).await,
            Err(_) => Reply::Refused("busy; try again shortly".into()),
        };
        if let Reply::Refused(why) = &reply {
            self.rep.pools.refused(peer.as_bytes(), "pool request refused", why);
        }
        tokio::time::timeout(REQUEST_TIMEOUT, frame::write_max(&mut send, &reply, MAX_FRAME))
            .await
            .map_err(|_| "the answer was not taken within 10 s".to_string())?
            .map_err(|e| e.to_string())?;
        let _ = send.finish();
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
        Ok(())
    }
}

impl ProtocolHandler for PoolProtocol {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let peer = conn.remote_id();
        let known = self.rep.pools.is_known_node(peer.as_bytes());
        let _slot = match self.slots.take(*peer.as_bytes(), known) {
            Ok(slot) => slot,
            Err(full) => {
                let cause = self.slots.cause(full);
                self.rep.pools.refused(peer.as_bytes(), cause, "a pool request");
                conn.close(1u32.into(), cause.as_bytes());
                return Ok(());
            }
        };
        if let Err(e) = self.serve(&conn).await {
            tracing::info!(peer = %peer.fmt_short(), error = %e, "pool request failed");
        }
        Ok(())
    }
}
