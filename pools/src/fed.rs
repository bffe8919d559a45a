//! `kith/fed/1`: an accepting pool's node hands its acceptance of an offer to the offering
//! pool's node named in the offer, which records it when its member is an admin of that pool.
//! When the offering node cannot be reached, the acceptance travels as a `kithfedok1` ticket
//! instead (docs/federation.md).

use std::sync::Arc;
use std::time::Duration;

use iroh::EndpointId;
use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler};
use kith_federation::{Agreement, Notice};
use kith_node::net::ticket::NodeTicket;
use kith_node::net::{Node, frame};

use crate::docs::Pools;
use crate::view::Role;

/// The protocol's name.
pub const FED_ALPN: &[u8] = b"kith/fed/1";
/// Largest request or answer (bytes of CBOR): an agreement is well under 8 KiB.
const MAX_FRAME: usize = 16 << 10;
/// Acceptances handled at once (each is a few signature checks and, at most, one change).
const AT_ONCE: usize = 4;
/// Time for a peer to send its acceptance.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What one pool's node hands the other's.
#[derive(Debug, Clone, PartialEq, Eq, minicbor::Encode, minicbor::Decode)]
pub enum FedRequest {
    /// An acceptance of this pool's offer, to record.
    #[n(0)]
    Accept(#[n(0)] Box<Agreement>),
    /// The partner's notice on an agreement, to record.
    #[n(1)]
    Notice(#[n(0)] Notice),
}

/// What the node answers.
#[derive(Debug, Clone, PartialEq, Eq, minicbor::Encode, minicbor::Decode)]
pub enum FedReply {
    /// Recorded in the offering pool (now, or before).
    #[n(0)]
    Recorded(#[n(0)] String),
    /// Refused for good: the acceptance is not valid there.
    #[n(1)]
    Refused(#[n(0)] String),
    /// This node cannot record it (its member is not an admin): carry the ticket instead.
    #[n(2)]
    NotHere(#[n(0)] String),
}

/// The offering side of `kith/fed/1`.
#[derive(Debug, Clone)]
pub struct FedProtocol {
    pools: Arc<Pools>,
    at_once: Arc<tokio::sync::Semaphore>,
}

impl FedProtocol {
    /// The protocol for these pools.
    pub fn new(pools: Arc<Pools>) -> FedProtocol {
        FedProtocol { pools, at_once: Arc::new(tokio::sync::Semaphore::new(AT_ONCE)) }
    }

    /// Checks and records `ag` in the offering pool, if this node holds it and its member is
    /// an admin there.
    fn record(&self, ag: &Agreement) -> FedReply {
        if let Err(e) = ag.check() {
            return FedReply::Refused(e.to_string());
        }
        let pool = ag.offer.pool;
        let Some(v) = self.pools.view_of(&pool) else {
            return FedReply::NotHere("this node is in no such pool".into());
        };
        let me = self.pools.signer().author().key;
        if !v.active(&me).is_some_and(|m| m.role == Role::Admin) {
            return FedReply::NotHere(format!(
                "this node's member is not an admin of pool {}",
                v.charter.name
            ));
        }
        if let Some(e) = v.federation.agreements.get(&ag.id()) {
            return if e.agreement == *ag {
                FedReply::Recorded(v.charter.name.clone())
            } else {
                FedReply::Refused(format!(
                    "this offer was taken up already, by pool {}",
                    e.agreement.acceptance.pool_name
                ))
            };
        }
        let now = self.pools.now_ms();
        match self
            .pools
            .with_pool(&kith_crdt::hex(&pool), |p| p.add_agreement(self.pools.signer(), ag, now))
        {
            Ok(_) => {
                self.pools.wake();
                FedReply::Recorded(v.charter.name.clone())
            }
            Err(e) => FedReply::Refused(e.to_string()),
        }
    }

    /// Records the partner's notice on an agreement of a pool this node holds, if its member
    /// is an admin there.
    fn record_notice(&self, n: &Notice) -> FedReply {
        if !n.signature_ok() {
            return FedReply::Refused("the notice's signature does not verify".into());
        }
        let held = self
            .pools
            .list()
            .into_iter()
            .find(|(_, v)| v.federation.agreements.contains_key(&n.agreement));
        let Some((pool, v)) = held else {
            return FedReply::NotHere("this node holds no pool in that agreement".into());
        };
        let me = self.pools.signer().author().key;
        if !v.active(&me).is_some_and(|m| m.role == Role::Admin) {
            return FedReply::NotHere(format!(
                "this node's member is not an admin of pool {}",
                v.charter.name
            ));
        }
        let now = self.pools.now_ms();
        let hexed = kith_crdt::hex(&pool);
        match self.pools.with_pool(&hexed, |p| p.record_notice(self.pools.signer(), n, now)) {
            Ok(_) => {
                self.pools.wake();
                FedReply::Recorded(v.charter.name.clone())
            }
            Err(e) => FedReply::Refused(e.to_string()),
        }
    }

    async fn serve(&self, conn: &Connection) -> Result<(), String> {
        let (mut send, mut recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
        let req: FedRequest =
            tokio::time::timeout(READ_TIMEOUT, frame::read_max(&mut recv, MAX_FRAME))
                .await
                .map_err(|_| "no request in time".to_string())?
                .map_err(|e| e.to_string())?
                .ok_or("no request")?;
        let pools = self.clone();
        let reply = tokio::task::spawn_blocking(move || match req {
            FedRequest::Accept(ag) => pools.record(&ag),
            FedRequest::Notice(n) => pools.record_notice(&n),
        })
        .await
        .map_err(|e| e.to_string())?;
        frame::write_max(&mut send, &reply, MAX_FRAME).await.map_err(|e| e.to_string())?;
        let _ = send.finish();
        let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
        Ok(())
    }
}

impl ProtocolHandler for FedProtocol {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let peer = conn.remote_id();
        let Ok(_slot) = self.at_once.clone().try_acquire_owned() else {
            conn.close(1u32.into(), b"busy");
            return Ok(());
        };
        if let Err(e) = self.serve(&conn).await {
            tracing::info!(peer = %peer.fmt_short(), error = %e, "federation request failed");
        }
        Ok(())
    }
}

/// Hands `req` to the other pool's node `to`: its answer, or why it could not be asked.
pub async fn deliver(node: &Node, to: &NodeTicket, req: &FedRequest) -> Result<FedReply, String> {
    let peer: EndpointId = to.id;
    node.add_peer(to).await.map_err(|e| e.to_string())?;
    let conn =
        tokio::time::timeout(Duration::from_secs(10), node.endpoint().connect(peer, FED_ALPN))
            .await
            .map_err(|_| "connecting timed out".to_string())?
            .map_err(|e| kith_node::net::connect_error(&peer, e).to_string())?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    frame::write_max(&mut send, req, MAX_FRAME).await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    let reply: FedReply =
        tokio::time::timeout(Duration::from_secs(20), frame::read_max(&mut recv, MAX_FRAME))
            .await
            .map_err(|_| "no answer in time".to_string())?
            .map_err(|e| e.to_string())?
            .ok_or("the node closed the stream without answering")?;
    conn.close(0u32.into(), b"done");
    Ok(reply)
}
