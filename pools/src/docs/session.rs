//! One `kith/docs/1` session, from either side: its frames, and the turns in which the two
//! nodes send each other what the other lacks of the pool document, then of its ledgers.

use std::time::Duration;

use iroh::EndpointId;
use iroh::endpoint::{RecvStream, SendStream};
use kith_crdt::{Key, SignedDoc, SyncFrame, SyncState};
use kith_node::net::frame;

use super::Pools;
use crate::ledger::Period;
use crate::rules::PoolRules;

/// ALPN of document sync.
pub const DOCS_ALPN: &[u8] = b"kith/docs/1";
/// Largest sync frame (a whole pool document must fit).
pub const MAX_DOC_FRAME: usize = 4 << 20;
/// Largest sync frame of an identity document (a whole one is a few KiB).
pub(super) const MAX_IDENTITY_FRAME: usize = 256 << 10;
/// Most turns in one session.
pub(super) const MAX_TURNS: usize = 64;
/// Longest a peer may take to send or take one frame of a session (its turn, a hello).
pub(super) const TURN_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest a whole session may take: a backstop only. A session is cut when one frame takes
/// longer than [`TURN_TIMEOUT`], never while this node judges a batch it received: cutting
/// that threw the judged batch away, and a node that had missed many changes (restarted from
/// an old copy of its home) judged the same batch again every round, past the deadline every
/// time, with both cores busy (`testnet chaos`, finding 5).
pub(super) const SESSION_TIMEOUT: Duration = Duration::from_secs(600);

/// `f` (one frame sent or received), cut after [`TURN_TIMEOUT`].
pub(super) async fn in_turn<T, E: std::fmt::Display>(
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    tokio::time::timeout(TURN_TIMEOUT, f)
        .await
        .map_err(|_| format!("the peer sent nothing for {} s", TURN_TIMEOUT.as_secs()))?
        .map_err(|e| e.to_string())
}
/// Rejections remembered for `kith pool show`.
const MAX_REJECTIONS: usize = 32;
/// Domain separation for a new device's proof.
const DEVICE_CONTEXT: &[u8] = b"kith-device-v1";
/// Domain separation for a device's proof in a session about its identity's document.
const IDENTITY_DEVICE_CONTEXT: &[u8] = b"kith-identity-device-v1";

/// How the dialling node may read the pool.
#[derive(Debug, Clone, minicbor::Encode, minicbor::Decode)]
pub enum Proof {
    /// It is listed as a node of an active member.
    #[n(0)]
    Member,
    /// It joins with this invite.
    #[n(1)]
    Invite(#[cbor(n(0), with = "minicbor::bytes")] Vec<u8>),
    /// It is a new device of this member, which signed its node id.
    #[n(2)]
    Device(
        #[cbor(n(0), with = "minicbor::bytes")] Key,
        #[cbor(n(1), with = "minicbor::bytes")] Vec<u8>,
    ),
}

/// The first frame of a session.
#[derive(Debug, Clone, minicbor::Encode, minicbor::Decode)]
pub struct Hello {
    /// The pool.
    #[cbor(n(0), with = "minicbor::bytes")]
    pub pool: Key,
    /// Why the dialler may read it.
    #[n(1)]
    pub proof: Proof,
    /// Ledger periods (`YYYY-MM`, at most [`MAX_PERIODS`]) to sync after the pool document.
    #[n(2)]
    pub periods: Option<Vec<String>>,
    /// The identity whose document the session syncs instead of a pool's. `pool` is then all
    /// zeros (a node that does not know this field answers that it holds no such pool), and
    /// the proof must be a [`Proof::Device`] of that identity.
    #[cbor(n(3), with = "minicbor::bytes")]
    pub identity: Option<Key>,
}

impl Hello {
    /// The hello of a session about `pool`.
    pub fn pool(pool: Key, proof: Proof, periods: Option<Vec<String>>) -> Hello {
        Hello { pool, proof, periods, identity: None }
    }

    /// The hello of a session about `owner`'s identity document, with a device proof.
    pub fn identity(owner: Key, proof: Proof) -> Hello {
        Hello { pool: [0; 32], proof, periods: None, identity: Some(owner) }
    }
}

/// Most ledger periods one session syncs.
pub const MAX_PERIODS: usize = 3;

/// The answer to a [`Hello`]: empty, or why not.
#[derive(Debug, Clone, minicbor::Encode, minicbor::Decode)]
pub struct Ack {
    /// Why the session is refused.
    #[n(0)]
    pub refused: Option<String>,
    /// The ledger periods of the hello that this side syncs, in the order they follow.
    #[n(1)]
    pub periods: Option<Vec<String>>,
}

/// One turn of a session.
#[derive(Debug, Clone, minicbor::Encode, minicbor::Decode)]
pub struct Turn {
    /// The sync message, if there is anything to say.
    #[n(0)]
    pub frame: Option<SyncFrame>,
}

pub(super) fn device_message(pool: &Key, node: &Key) -> Vec<u8> {
    [DEVICE_CONTEXT, &pool[..], &node[..]].concat()
}

/// What an identity signs to let one of its nodes sync its identity document.
pub(super) fn identity_device_message(owner: &Key, node: &Key) -> Vec<u8> {
    [IDENTITY_DEVICE_CONTEXT, &owner[..], &node[..]].concat()
}

/// A peer's change that was refused.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// The pool.
    pub pool: Key,
    /// The peer that sent it.
    pub peer: String,
    /// Why.
    pub reason: String,
    /// When (ms since the Unix epoch).
    pub at_ms: i64,
}

/// One side's part of a session about one document.
pub(super) struct Side {
    /// What this side knows of the peer's copy.
    state: SyncState,
    /// Changes that arrived.
    got: usize,
    /// A member's identity document this node keeps no copy of yet, until it reads.
    fresh: Option<SignedDoc>,
}

/// Which document a part of a session syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Doc {
    /// The pool document.
    Pool,
    /// The pool's ledger of a period.
    Ledger(Period),
    /// An identity's document (this identity's, or a copy kept for a member).
    Identity(Key),
}

impl Doc {
    /// The key its sync states are kept under.
    fn state_key(self, pool: &Key) -> Key {
        match self {
            Doc::Pool => *pool,
            Doc::Ledger(p) => blake3::derive_key(
                "kith ledger sync state v1",
                &[&pool[..], p.to_string().as_bytes()].concat(),
            ),
            Doc::Identity(owner) => blake3::derive_key("kith identity sync state v1", &owner),
        }
    }
}

impl Pools {
    /// Bytes of sync turns sent and received since start (all pools; frame headers excluded).
    pub fn sync_bytes(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.sync_sent.load(Relaxed), self.sync_received.load(Relaxed))
    }

    /// Document syncs since start (all pools, ledgers and identities).
    pub fn sync_counts(&self) -> SyncCounts {
        use std::sync::atomic::Ordering::Relaxed;
        SyncCounts {
            settled: self.sync_settled.load(Relaxed),
            failed: self.sync_failed.load(Relaxed),
            changes: self.sync_changes.load(Relaxed),
            sent_bytes: self.sync_sent.load(Relaxed),
            received_bytes: self.sync_received.load(Relaxed),
        }
    }

    /// Rejected changes, newest last.
    pub fn rejections(&self) -> Vec<Rejection> {
        self.rejections.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn reject(&self, pool: Key, peer: EndpointId, reason: String) {
        self.refused(peer.as_bytes(), "changes the rules refuse", &reason);
        let mut r = self.rejections.lock().unwrap_or_else(|p| p.into_inner());
        if r.len() == MAX_REJECTIONS {
            r.remove(0);
        }
        r.push(Rejection { pool, peer: peer.to_string(), reason, at_ms: self.now_ms() });
    }

    /// Takes turns until both sides are done; returns how many changes arrived. The dialler
    /// speaks first in each round; a round where neither side had anything ends the session.
    pub(super) async fn turns(
        &self,
        pool: Key,
        doc: Doc,
        peer: EndpointId,
        send: &mut SendStream,
        recv: &mut RecvStream,
        dialler: bool,
    ) -> Result<usize, String> {
        use std::sync::atomic::Ordering::Relaxed;
        let r = self.take_turns(pool, doc, peer, send, recv, dialler).await;
        match &r {
            Ok(n) => {
                self.sync_settled.fetch_add(1, Relaxed);
                self.sync_changes.fetch_add(*n as u64, Relaxed);
            }
            Err(_) => {
                self.sync_failed.fetch_add(1, Relaxed);
            }
        }
        r
    }

    async fn take_turns(
        &self,
        pool: Key,
        doc: Doc,
        peer: EndpointId,
        send: &mut SendStream,
        recv: &mut RecvStream,
        dialler: bool,
    ) -> Result<usize, String> {
        let key = (doc.state_key(&pool), *peer.as_bytes());
        // Only the lasting part of a state survives a session (an interrupted one may have left
        // a message marked in flight).
        let state = {
            let states = self.states.lock().unwrap_or_else(|p| p.into_inner());
            states.get(&key).and_then(|s| SyncState::decode(&s.encode()).ok()).unwrap_or_default()
        };
        let mut side = Side { state, got: 0, fresh: None };
        for _ in 0..MAX_TURNS {
            let (mine, theirs) = if dialler {
                let mine = self.speak(pool, doc, &mut side, send).await?;
                (mine, self.listen(pool, doc, peer, &mut side, recv).await?)
            } else {
                let theirs = self.listen(pool, doc, peer, &mut side, recv).await?;
                (self.speak(pool, doc, &mut side, send).await?, theirs)
            };
            if !mine && !theirs {
                self.states.lock().unwrap_or_else(|p| p.into_inner()).insert(key, side.state);
                return Ok(side.got);
            }
        }
        Err(format!("the session did not settle within {MAX_TURNS} turns"))
    }

    /// Sends this side's turn; whether it said anything.
    async fn speak(
        &self,
        pool: Key,
        doc: Doc,
        side: &mut Side,
        send: &mut SendStream,
    ) -> Result<bool, String> {
        let (state, fresh) = (&mut side.state, &mut side.fresh);
        let out = match doc {
            Doc::Identity(owner) => {
                self.identity_sync_out(&owner, state, fresh).map_err(|e| e.to_string())?
            }
            Doc::Pool => {
                self.lock().get_mut(&pool).ok_or("the pool is gone")?.doc_mut().sync_out(state)
            }
            Doc::Ledger(period) => {
                let snap = self.snapshot(&pool).ok_or("the pool is gone")?;
                self.ledgers.sync_out(&snap, period, state)?
            }
        };
        let said = out.is_some();
        let turn = Turn { frame: out };
        let bytes = minicbor::to_vec(&turn).map(|v| v.len() as u64).unwrap_or(0);
        in_turn(frame::write_max(send, &turn, MAX_DOC_FRAME)).await?;
        self.sync_sent.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        Ok(said)
    }

    /// Receives and applies the peer's turn; whether it said anything.
    async fn listen(
        &self,
        pool: Key,
        doc: Doc,
        peer: EndpointId,
        side: &mut Side,
        recv: &mut RecvStream,
    ) -> Result<bool, String> {
        let Side { state, got, fresh } = side;
        let max = if matches!(doc, Doc::Identity(_)) { MAX_IDENTITY_FRAME } else { MAX_DOC_FRAME };
        let turn: Turn =
            in_turn(frame::read_max(recv, max)).await?.ok_or("the peer ended the session")?;
        let bytes = minicbor::to_vec(&turn).map(|v| v.len() as u64).unwrap_or(0);
        self.sync_received.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        let Some(f) = turn.frame else { return Ok(false) };
        let judged = match doc {
            Doc::Identity(owner) => {
                // Counted apart from the pools' rejections (`kith pool show` lists those).
                return match self.identity_sync_in(&owner, state, f, fresh).await {
                    Ok(n) => {
                        *got += n;
                        Ok(true)
                    }
                    Err(e) => {
                        let e = format!("identity {}: {e}", kith_crdt::hex(&owner[..8]));
                        self.refused(peer.as_bytes(), "identity changes refused", &e);
                        Err(format!("refused the peer's changes: {e}"))
                    }
                };
            }
            // Ledgers are judged in place: linear in the batch (see ledger/).
            Doc::Ledger(period) => {
                let snap = self.snapshot(&pool).ok_or("the pool is gone")?;
                self.ledgers
                    .sync_in(&snap, period, state, &f)
                    .map_err(|e| format!("ledger {period}: {e}"))
            }
            Doc::Pool => return self.pool_sync_in(pool, peer, state, got, f).await,
        };
        match judged {
            Ok(n) => *got += n,
            Err(e) => {
                self.reject(pool, peer, e.clone());
                return Err(format!("rejected the peer's changes: {e}"));
            }
        }
        Ok(true)
    }

    /// Applies the peer's turn to the pool document (see [`Pools::listen`]).
    async fn pool_sync_in(
        &self,
        pool: Key,
        peer: EndpointId,
        state: &mut SyncState,
        got: &mut usize,
        f: SyncFrame,
    ) -> Result<bool, String> {
        // A turn without changes (heads and a Bloom filter) only moves the sync state: taken
        // in place, with no copy of the document.
        if !f.carries_changes() {
            let mut pools = self.lock();
            let p = pools.get_mut(&pool).ok_or("the pool is gone")?;
            if let Err(e) = p.doc_mut().sync_in(state, &f, &PoolRules) {
                drop(pools);
                self.reject(pool, peer, e.to_string());
                return Err(format!("rejected the peer's changes: {e}"));
            }
            return Ok(true);
        }
        // Checked on a copy, without the pools' lock: a peer's large batch never holds up this
        // node's other pools, nor local changes to this one, while its changes are judged.
        let (mut work, heads) = {
            let mut pools = self.lock();
            let p = pools.get_mut(&pool).ok_or("the pool is gone")?;
            let heads = p.doc_mut().heads();
            (p.fork(), heads)
        };
        // On a blocking thread: a large batch takes its time without holding up this node's
        // other sessions and requests.
        let mut st = std::mem::replace(state, SyncState::new());
        let (work, st, checked) = tokio::task::spawn_blocking(move || {
            let r = work.doc_mut().sync_in(&mut st, &f, &PoolRules);
            (work, st, r)
        })
        .await
        .map_err(|e| format!("the check of the peer's changes failed: {e}"))?;
        *state = st;
        let result = match checked {
            Ok(new) if !new.is_empty() => {
                let mut pools = self.lock();
                let p = pools.get_mut(&pool).ok_or("the pool is gone")?;
                match p.adopt(work, &heads) {
                    Ok(_) => {
                        *got += new.len();
                        self.save(p).map_err(|e| e.to_string())?;
                        self.changed.notify_one();
                        Ok(())
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = result {
            self.reject(pool, peer, e.clone());
            return Err(format!("rejected the peer's changes: {e}"));
        }
        Ok(true)
    }

    /// A proof that this node is a device of this identity, for a pool.
    pub fn device_proof(&self, pool: &Key) -> Proof {
        Proof::Device(self.signer.author().key, self.signer.sign(&device_message(pool, &self.node)))
    }

    /// A proof that this node is a device of this identity, for a session about its document.
    pub(super) fn identity_proof(&self) -> Proof {
        let me = self.signer.author().key;
        Proof::Device(me, self.signer.sign(&identity_device_message(&me, &self.node)))
    }
}

/// Document syncs since the node started ([`Pools::sync_counts`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct SyncCounts {
    /// Syncs of one document with one peer that settled (both sides had nothing more).
    pub settled: u64,
    /// Syncs that failed (the peer went away, refused, or did not settle).
    pub failed: u64,
    /// Changes that arrived in settled syncs.
    pub changes: u64,
    /// Bytes of turns sent (frame headers excluded).
    pub sent_bytes: u64,
    /// Bytes of turns received.
    pub received_bytes: u64,
}
