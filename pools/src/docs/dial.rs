//! The dialling side of `kith/docs/1`: a sync round with every node of every pool, one session
//! with one node, joining a pool with a ticket, and fetching a pool document.

use std::sync::Arc;
use std::time::Duration;

use iroh::endpoint::{Connection, RecvStream, SendStream};
use iroh::{Endpoint, EndpointId};
use kith_crdt::{Key, SyncState, hex};
use kith_node::net::frame;
use kith_node::worker::Workers;
use tokio_util::sync::CancellationToken;

use super::Pools;
use super::session::{
    Ack, DOCS_ALPN, Doc, Hello, MAX_DOC_FRAME, MAX_PERIODS, MAX_TURNS, Proof, SESSION_TIMEOUT,
    TURN_TIMEOUT, Turn, in_turn,
};
use super::ticket::decode_ticket;
use crate::ledger::{Period, live_periods};
use crate::pool::{Pool, PoolError};
use crate::rules::PoolRules;
use crate::view::Offer;

/// How often every pool is synced with every reachable member node, besides after changes.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(3);

impl Pools {
    /// Joins a pool with a ticket: fetches the document from the issuing node, adds this
    /// member (and this node), and sends the change back.
    pub async fn join(&self, ticket: &str, display: &str) -> Result<Key, PoolError> {
        let (invite, node) = decode_ticket(ticket)?;
        let peer = node.id;
        if self
            .lock()
            .get(&invite.pool)
            .is_some_and(|p| p.view().active(&self.signer.author().key).is_some())
        {
            return Err(PoolError::Policy("you are already a member of this pool".into()));
        }
        let proof = Proof::Invite(invite.to_bytes());
        let endpoint = self.endpoint()?;
        let addr = iroh::EndpointAddr::from_parts(
            peer,
            node.addrs.iter().map(|a| iroh::TransportAddr::Ip(*a)),
        );
        let doc = fetch_doc(&endpoint, addr, invite.pool, proof.clone()).await?;
        let mut pool = Pool::from_doc(doc)?;
        let now = self.now_ms();
        pool.join(&self.signer, display, &invite, now)?;
        pool.offer(&self.signer, &self.node, &Offer::default(), now)?;
        let id = self.insert(pool)?;
        self.sync_one(id, peer, proof).await.map_err(PoolError::Policy)?;
        Ok(id)
    }

    /// Syncs every pool with every member node until `cancel`, as the worker `sync` of
    /// `workers`: a round every [`SYNC_INTERVAL`] and right after any change.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken, workers: Arc<Workers>) {
        let w = workers.register("sync");
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = self.changed.notified() => {}
                _ = self.clock().pause(SYNC_INTERVAL) => {}
            }
            let t = std::time::Instant::now();
            w.begin();
            self.sync_all().await;
            w.end(t.elapsed(), Ok(()));
        }
        w.stop();
    }

    /// One round: every pool with every other node listed in it, former members included.
    /// Sessions run on their own; a target whose last session is still running (a node that
    /// is gone takes a while to time out) is skipped, so slow peers never delay the others.
    pub async fn sync_all(self: &Arc<Self>) {
        if self.retired_at().is_some() {
            return;
        }
        let me = self.signer.author().key;
        let delivered = self.delivered.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let targets: Vec<(Key, Key)> = self
            .all_views()
            .iter()
            // A pool this identity left is synced until one session has taken the departure
            // to another node, which passes it on.
            .filter(|(id, v)| v.active(&me).is_some() || !delivered.contains(id))
            .flat_map(|(id, v)| {
                let nodes: Vec<Key> = v
                    .members
                    .values()
                    // Former members too: the change that ended their membership must reach
                    // them (what they send back is judged by the rules like anything else).
                    .flat_map(|m| m.nodes.keys().copied())
                    .filter(|n| *n != self.node)
                    .collect();
                nodes.into_iter().map(move |n| (*id, n))
            })
            .collect();
        for (pool, node) in targets {
            let Ok(peer) = EndpointId::from_bytes(&node) else { continue };
            if !self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).insert((pool, node)) {
                continue;
            }
            let this = self.clone();
            tokio::spawn(async move {
                match this.sync_one(pool, peer, Proof::Member).await {
                    Ok(_) => {
                        let me = this.signer.author().key;
                        if this.view_of(&pool).is_some_and(|v| v.active(&me).is_none()) {
                            this.delivered.lock().unwrap_or_else(|p| p.into_inner()).insert(pool);
                        }
                    }
                    Err(e) => {
                        tracing::debug!(pool = %hex(&pool[..4]), peer = %peer.fmt_short(), error = %e, "pool sync failed")
                    }
                }
                this.in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&(pool, node));
            });
        }
    }

    /// One session with `peer` as the dialler.
    pub(crate) async fn sync_one(
        &self,
        pool: Key,
        peer: EndpointId,
        proof: Proof,
    ) -> Result<usize, String> {
        let endpoint = self.endpoint().map_err(|e| e.to_string())?;
        let periods = matches!(proof, Proof::Member)
            .then(|| live_periods(self.now_ms()).iter().map(Period::to_string).collect());
        let run = async {
            let (conn, mut send, mut recv, periods) =
                open_session(&endpoint, peer.into(), Hello::pool(pool, proof, periods)).await?;
            // It answered: it is alive, even if what it sends next is refused.
            self.saw(peer.as_bytes());
            let mut n = self.turns(pool, Doc::Pool, peer, &mut send, &mut recv, true).await?;
            for p in periods {
                n += self.turns(pool, Doc::Ledger(p), peer, &mut send, &mut recv, true).await?;
            }
            let _ = send.finish();
            conn.close(0u32.into(), b"done");
            self.saw(peer.as_bytes());
            Ok(n)
        };
        tokio::time::timeout(SESSION_TIMEOUT, run)
            .await
            .map_err(|_| "the session timed out".to_string())?
    }

    /// One session about this identity's document with `peer` (another of its devices, or a
    /// node of one of its pools, which keeps a copy for a restore), as the dialler; how many
    /// changes arrived.
    pub(crate) async fn sync_identity(&self, peer: EndpointId) -> Result<usize, String> {
        let endpoint = self.endpoint().map_err(|e| e.to_string())?;
        let me = self.signer.author().key;
        let hello = Hello::identity(me, self.identity_proof());
        let run = async {
            let (conn, mut send, mut recv, _) = open_session(&endpoint, peer.into(), hello).await?;
            self.saw(peer.as_bytes());
            let n = self.turns(me, Doc::Identity(me), peer, &mut send, &mut recv, true).await?;
            let _ = send.finish();
            conn.close(0u32.into(), b"done");
            Ok(n)
        };
        tokio::time::timeout(SESSION_TIMEOUT, run)
            .await
            .map_err(|_| "the session timed out".to_string())?
    }
}

/// Dials `addr`, says hello and reads the answer: an open session with the ledger periods the
/// peer syncs after the pool document, or why the peer refused.
async fn open_session(
    endpoint: &Endpoint,
    addr: iroh::EndpointAddr,
    hello: Hello,
) -> Result<(Connection, SendStream, RecvStream, Vec<Period>), String> {
    let peer = addr.id;
    let conn = tokio::time::timeout(TURN_TIMEOUT, endpoint.connect(addr, DOCS_ALPN))
        .await
        .map_err(|_| format!("no connection within {} s", TURN_TIMEOUT.as_secs()))?
        .map_err(|e| kith_node::net::connect_error(&peer, e).to_string())?;
    let (mut send, mut recv) = in_turn(conn.open_bi()).await?;
    let asked = hello.periods.clone().unwrap_or_default();
    in_turn(frame::write(&mut send, &hello)).await?;
    let ack: Ack = in_turn(frame::read(&mut recv)).await?.ok_or("the peer closed the session")?;
    if let Some(why) = ack.refused {
        return Err(format!("the peer refused: {why}"));
    }
    // The peer may sync fewer periods than asked, never others.
    let mut periods = Vec::new();
    for p in ack.periods.unwrap_or_default() {
        if !asked.contains(&p) || periods.len() == MAX_PERIODS {
            return Err(format!("the peer answered with ledger period `{p}`, not one asked for"));
        }
        periods.push(Period::parse(&p).map_err(|e| e.to_string())?);
    }
    Ok((conn, send, recv, periods))
}

/// Fetches a pool document from `peer` (a node that holds it) with `proof`.
pub(crate) async fn fetch_doc(
    endpoint: &Endpoint,
    addr: iroh::EndpointAddr,
    pool: Key,
    proof: Proof,
) -> Result<kith_crdt::SignedDoc, PoolError> {
    let fail =
        |e: String| PoolError::Policy(format!("cannot fetch the pool from the inviting node: {e}"));
    let run = async {
        let (conn, mut send, mut recv, _) =
            open_session(endpoint, addr, Hello::pool(pool, proof, None)).await?;
        // An empty document with the pool's id takes the whole history through plain sync.
        let mut doc = kith_crdt::SignedDoc::empty(pool);
        let mut state = SyncState::new();
        for _ in 0..MAX_TURNS {
            let out = doc.sync_out(&mut state);
            let mine = out.is_some();
            in_turn(frame::write_max(&mut send, &Turn { frame: out }, MAX_DOC_FRAME)).await?;
            let turn: Turn = in_turn(frame::read_max(&mut recv, MAX_DOC_FRAME))
                .await?
                .ok_or("the peer ended the session")?;
            let theirs = turn.frame.is_some();
            if let Some(f) = turn.frame {
                doc.sync_in(&mut state, &f, &PoolRules).map_err(|e| e.to_string())?;
            }
            if !mine && !theirs {
                let _ = send.finish();
                conn.close(0u32.into(), b"done");
                return Ok(doc);
            }
        }
        Err(format!("the session did not settle within {MAX_TURNS} turns"))
    };
    tokio::time::timeout(SESSION_TIMEOUT, run)
        .await
        .map_err(|_| fail("timed out".into()))?
        .map_err(fail)
}
