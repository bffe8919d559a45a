//! The answering side of `kith/docs/1`: who may read a pool or an identity's document, which
//! ledger periods a session syncs, and the protocol handler.

use std::sync::Arc;
use std::time::Duration;

use iroh::EndpointId;
use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler};
use kith_crdt::{Key, hex, verify_device};
use kith_node::net::frame;

use super::session::{
    Ack, Doc, Hello, MAX_PERIODS, Proof, SESSION_TIMEOUT, device_message, identity_device_message,
    in_turn,
};
use super::{CustodyError, Pools};
use crate::invite::Invite;
use crate::ledger::{Period, syncable};
use crate::slots::Slots;
use crate::view::State;

impl Pools {
    /// Whether `peer` may read `pool` with `proof`.
    fn admit(&self, hello: &Hello, peer: EndpointId) -> Result<(), String> {
        if let Some(owner) = &hello.identity {
            return self.admit_identity(owner, &hello.proof, peer.as_bytes());
        }
        // The shared view: every session of every peer asks, and a whole pool read costs in
        // proportion to its history.
        let v = self.view_of(&hello.pool).ok_or_else(|| {
            format!(
                "this node holds no pool {} (it may have been deleted, or this node left it)",
                hex(&hello.pool[..8])
            )
        })?;
        let node = *peer.as_bytes();
        // A member who left still syncs the pool document, to pass its departure on.
        let departed =
            v.members.values().any(|m| m.state == State::Left && m.nodes.contains_key(&node));
        match &hello.proof {
            Proof::Member if v.node_owner(&node).is_some() || departed => Ok(()),
            Proof::Member => Err(v.not_a_member_node(&node).into()),
            Proof::Invite(bytes) => {
                let inv = Invite::from_bytes(bytes).map_err(|e| e.to_string())?;
                if v.node_owner(&node).is_some() {
                    return Ok(());
                }
                crate::pool::check_invite(&v, &hello.pool, &inv, self.now_ms())
                    .map_err(|e| e.to_string())
            }
            Proof::Device(member, sig) => {
                let Some(m) = v.active(member) else {
                    return Err("that identity is not an active member of this pool".into());
                };
                if m.retired.contains_key(&node) {
                    return Err(crate::view::RETIRED_DEVICE.into());
                }
                if !verify_device(member, &node, &device_message(&hello.pool, &node), sig) {
                    return Err("the device proof does not verify".into());
                }
                Ok(())
            }
        }
    }

    /// Whether `node` may sync `owner`'s identity document with this node: it proves it is a
    /// device of `owner`, and `owner` is this identity or a member of one of this node's pools
    /// (whose copy this node keeps for it).
    fn admit_identity(&self, owner: &Key, proof: &Proof, node: &Key) -> Result<(), String> {
        let Proof::Device(signer, sig) = proof else {
            return Err("an identity document is synced only with a device of that identity".into());
        };
        if signer != owner
            || !verify_device(owner, node, &identity_device_message(owner, node), sig)
        {
            return Err("the device proof does not verify".into());
        }
        if *owner != self.signer.author().key && !self.keeps_identity_of(owner) {
            return Err(CustodyError::NotAMember.to_string());
        }
        // A retired device may still read its identity's document, which is how it learns it
        // was retired; the rules refuse anything it writes there.
        Ok(())
    }

    /// The ledger periods of `hello` this node syncs with `peer`: those a node of an active
    /// member asks for that have begun and are at most a year old, at most [`MAX_PERIODS`].
    fn ledger_periods(&self, hello: &Hello, peer: EndpointId) -> Vec<Period> {
        let member =
            self.view_of(&hello.pool).is_some_and(|v| v.node_owner(peer.as_bytes()).is_some());
        let now = self.now_ms();
        let mut out: Vec<Period> = Vec::new();
        for p in hello.periods.iter().flatten().take(MAX_PERIODS) {
            if let Ok(p) = Period::parse(p)
                && member
                && syncable(p, now)
                && !out.contains(&p)
            {
                out.push(p);
            }
        }
        out
    }
}

/// Serves `kith/docs/1`.
#[derive(Debug, Clone)]
pub struct DocsProtocol {
    pools: Arc<Pools>,
    slots: Arc<Slots>,
}

/// Sessions one peer may have at once (a node dials one per pool it shares with this one).
const SESSIONS_PER_PEER: usize = 16;
/// Sessions at once with nodes of this node's pools.
const MAX_SESSIONS: usize = 128;
/// Sessions at once with every other peer together (joiners with an invite, new devices).
const MAX_STRANGER_SESSIONS: usize = 8;
/// Time for the dialler's hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

impl DocsProtocol {
    /// The protocol for these pools.
    pub fn new(pools: Arc<Pools>) -> DocsProtocol {
        let slots = Slots::new("sync", SESSIONS_PER_PEER, MAX_SESSIONS, MAX_STRANGER_SESSIONS);
        DocsProtocol { pools, slots }
    }

    async fn serve(&self, conn: &Connection) -> Result<usize, String> {
        let peer = conn.remote_id();
        let opened = async {
            let (send, mut recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
            let hello: Hello =
                frame::read(&mut recv).await.map_err(|e| e.to_string())?.ok_or("no hello")?;
            Ok::<_, String>((send, recv, hello))
        };
        let (mut send, mut recv, hello) = tokio::time::timeout(HELLO_TIMEOUT, opened)
            .await
            .map_err(|_| format!("no hello within {} s", HELLO_TIMEOUT.as_secs()))??;
        if let Err(why) = self.pools.admit(&hello, peer) {
            self.pools.refused(peer.as_bytes(), "sync session refused", &why);
            in_turn(frame::write(&mut send, &Ack { refused: Some(why.clone()), periods: None }))
                .await?;
            let _ = send.finish();
            // Dropping the connection now could lose the answer; the dialler closes it.
            let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
            return Err(why);
        }
        self.pools.saw(peer.as_bytes());
        if let Some(owner) = hello.identity {
            in_turn(frame::write(&mut send, &Ack { refused: None, periods: None })).await?;
            let doc = Doc::Identity(owner);
            let n = self.pools.turns(owner, doc, peer, &mut send, &mut recv, false).await?;
            let _ = send.finish();
            let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
            return Ok(n);
        }
        let periods = self.pools.ledger_periods(&hello, peer);
        let ack =
            Ack { refused: None, periods: Some(periods.iter().map(Period::to_string).collect()) };
        in_turn(frame::write(&mut send, &ack)).await?;
        let pool = hello.pool;
        let mut n = self.pools.turns(pool, Doc::Pool, peer, &mut send, &mut recv, false).await?;
        for p in periods {
            n += self.pools.turns(pool, Doc::Ledger(p), peer, &mut send, &mut recv, false).await?;
        }
        self.pools.saw(peer.as_bytes());
        let _ = send.finish();
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
        Ok(n)
    }
}

impl ProtocolHandler for DocsProtocol {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let peer = conn.remote_id();
        let known = self.pools.is_known_node(peer.as_bytes());
        let _slot = match self.slots.take(*peer.as_bytes(), known) {
            Ok(slot) => slot,
            Err(full) => {
                let cause = self.slots.cause(full);
                self.pools.refused(peer.as_bytes(), cause, "a sync session");
                conn.close(1u32.into(), cause.as_bytes());
                return Ok(());
            }
        };
        match tokio::time::timeout(SESSION_TIMEOUT, self.serve(&conn)).await {
            Ok(Ok(n)) if n > 0 => {
                tracing::debug!(peer = %peer.fmt_short(), changes = n, "pool sync")
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::debug!(peer = %peer.fmt_short(), error = %e, "pool sync session failed")
            }
            Err(_) => tracing::info!(peer = %peer.fmt_short(), "pool sync session timed out"),
        }
        Ok(())
    }
}
