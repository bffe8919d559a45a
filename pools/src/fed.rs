//! `kith/fed/1`: an accepting pool's node hands its acceptance of an offer to the offering
//! pool's node named in the offer, which records it when its member is an admin of that pool.
//! When the offering node cannot be reached, the acceptance travels as a `kithfedok1` ticket
//! instead (docs/federation.md).

use std::sync::Arc;
use std::time::Duration;

use iroh::EndpointId;
use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler};
use kith_crdt::Key;
use kith_federation::{Agreement, Notice, Roster};
use kith_node::net::ticket::NodeTicket;
use kith_node::net::{Node, frame};
use minicbor::bytes::ByteArray;

use crate::docs::Pools;
use crate::view::Role;

/// The protocol's name.
pub const FED_ALPN: &[u8] = b"kith/fed/1";
/// Largest request or answer (bytes of CBOR): an agreement is well under 8 KiB, an off-site
/// `Hold` of [`MAX_OFFSITE_IDS`] blobs about 700 KiB, a roster of 4096 members 140 KiB.
/// A sealed copy of a pool's documents is at most [`crate::replica::MAX_SEALED`].
const MAX_FRAME: usize = crate::replica::MAX_SEALED + (64 << 10);
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
    /// Which of your pool's nodes hold for mine, and how much each? With the digest of the
    /// last answer the asker had ([`FedReply::digest`]), if it had one: the answer is then
    /// [`FedReply::Unchanged`] while it would be the same (nodes before it send none, and
    /// ignore it: they answer in full).
    #[n(2)]
    Holders(#[n(0)] Box<Asking>, #[n(1)] Option<ByteArray<32>>),
    /// Hold these blobs (id, length) for my pool; fetch them from the asking node or `from`.
    #[n(3)]
    Hold {
        /// Who asks.
        #[n(0)]
        asking: Box<Asking>,
        /// The blobs and their lengths.
        #[n(1)]
        blobs: Vec<(ByteArray<32>, u32)>,
        /// Other nodes of the asking pool that have them.
        #[n(2)]
        from: Vec<ByteArray<32>>,
    },
    /// Which of these blobs do you hold for my pool?
    #[n(4)]
    Has {
        /// Who asks.
        #[n(0)]
        asking: Box<Asking>,
        /// The blobs.
        #[n(1)]
        ids: Vec<ByteArray<32>>,
    },
    /// Keep this sealed copy of my pool's documents (the newest replaces the last).
    #[n(5)]
    Keep {
        /// Who asks.
        #[n(0)]
        asking: Box<Asking>,
        /// The age-encrypted bundle.
        #[cbor(n(1), with = "minicbor::bytes")]
        sealed: Vec<u8>,
    },
    /// The sealed copies you keep for pools whose roster names this identity (a restored
    /// identity finding its pools); signed by the identity over the asking node.
    #[n(6)]
    Sealed {
        /// The identity.
        #[cbor(n(0), with = "minicbor::bytes")]
        identity: Key,
        /// Its signature over the asking node's id.
        #[cbor(n(1), with = "minicbor::bytes")]
        sig: Vec<u8>,
    },
    /// Your pool's public sites as served now (an edge of mine asks: my pool lends yours CDN).
    #[n(7)]
    Sites(#[n(0)] Box<Asking>),
    /// My pool's public sites changed: ask again (an origin tells the edges that asked it).
    #[n(8)]
    SitesChanged(#[cbor(n(0), with = "minicbor::bytes")] Key),
    /// Prove you hold blob `id` for my pool: its chunk `index`, with the proof it belongs to
    /// the blob (an audit, as within a pool).
    #[n(9)]
    Audit {
        /// Who asks.
        #[n(0)]
        asking: Box<Asking>,
        /// The blob.
        #[n(1)]
        id: ByteArray<32>,
        /// The chunk (1 KiB) asked for.
        #[n(2)]
        index: u64,
    },
    /// My pool no longer lists these blobs (the objects that had them were taken out):
    /// forget them (nodes before this request refuse it as malformed; the asker tries again
    /// later, and what they hold goes when the agreement ends).
    #[n(10)]
    Release {
        /// Who asks.
        #[n(0)]
        asking: Box<Asking>,
        /// The blobs.
        #[n(1)]
        ids: Vec<ByteArray<32>>,
    },
    /// Which of the blobs you hold for my pool are not in this sieve (a Bloom filter of
    /// every blob my pool lists; `crate::replica::Sieve`)? Answered [`FedReply::Ids`].
    #[n(11)]
    Unlisted {
        /// Who asks.
        #[n(0)]
        asking: Box<Asking>,
        /// The sieve's salt.
        #[n(1)]
        salt: u64,
        /// Its hashes per blob.
        #[n(2)]
        k: u8,
        /// Its bits.
        #[cbor(n(3), with = "minicbor::bytes")]
        bits: Vec<u8>,
    },
    /// A partner receipt for you, my pool's holder (`crate::ledger::Receipt::sign_partner`):
    /// what you held of what my node placed with you and sent it back this period, signed by
    /// my member; file it in your pool's ledger (nodes before this request refuse it as
    /// malformed).
    #[n(12)]
    Receipt {
        /// Who asks (the signing member and node).
        #[n(0)]
        asking: Box<Asking>,
        /// The receipt's bytes.
        #[cbor(n(1), with = "minicbor::bytes")]
        receipt: Vec<u8>,
    },
}

/// A sealed copy of a pool's documents a partner keeps.
#[derive(Debug, Clone, PartialEq, Eq, minicbor::Encode, minicbor::Decode)]
pub struct SealedCopy {
    /// The agreement it is kept under.
    #[cbor(n(0), with = "minicbor::bytes")]
    pub agreement: Key,
    /// The age-encrypted bundle.
    #[cbor(n(1), with = "minicbor::bytes")]
    pub bytes: Vec<u8>,
}

/// Who asks for off-site service: a member of the partner pool, by its roster and its node's
/// proof that it is a device of that member.
#[derive(Debug, Clone, PartialEq, Eq, minicbor::Encode, minicbor::Decode)]
pub struct Asking {
    /// The agreement.
    #[cbor(n(0), with = "minicbor::bytes")]
    pub agreement: Key,
    /// The asking pool's roster for it.
    #[n(1)]
    pub roster: Roster,
    /// The asking node's identity (named by the roster).
    #[cbor(n(2), with = "minicbor::bytes")]
    pub identity: Key,
    /// The identity's (or the certified device's) signature over the asking node's id.
    #[cbor(n(3), with = "minicbor::bytes")]
    pub sig: Vec<u8>,
}

/// A lending node and its share of what its pool lends.
#[derive(Debug, Clone, PartialEq, Eq, minicbor::Encode, minicbor::Decode)]
pub struct OffsiteHolder {
    /// The node.
    #[n(0)]
    pub node: ByteArray<32>,
    /// Bytes it holds for the partner at most.
    #[n(1)]
    pub share: u64,
    /// How to reach it (a node ticket), when the answering node knows its addresses: the
    /// partner's nodes are on another LAN, where mDNS does not reach.
    #[n(2)]
    pub ticket: Option<String>,
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
    /// The lending pool's holders for the asking pool, and its roster (its nodes fetch from
    /// the asking pool's).
    #[n(3)]
    Holders {
        /// The lending side's roster, if its signer has made one.
        #[n(0)]
        roster: Option<Roster>,
        /// Its nodes lending storage.
        #[n(1)]
        holders: Vec<OffsiteHolder>,
    },
    /// For each blob asked, whether this node holds it for the asking pool.
    #[n(4)]
    Has(#[n(0)] Vec<bool>),
    /// The sealed copies kept for the asking identity's pools.
    #[n(5)]
    Sealed(#[n(0)] Vec<SealedCopy>),
    /// This pool's public sites, signed by the answering node's identity, which this pool's
    /// roster names.
    #[n(6)]
    Sites {
        /// This side's roster, if its signer has made one.
        #[n(0)]
        roster: Option<Roster>,
        /// The sites.
        #[n(1)]
        heads: Box<crate::replica::SiteHeads>,
        /// The signing identity.
        #[cbor(n(2), with = "minicbor::bytes")]
        identity: Key,
        /// Its (or its certified device's) signature over the answering node and the sites.
        #[cbor(n(3), with = "minicbor::bytes")]
        sig: Vec<u8>,
    },
    /// The answer is the one whose digest the asker sent.
    #[n(7)]
    Unchanged,
    /// The chunk an audit asked for, with its proof.
    #[n(8)]
    Proof(#[n(0)] crate::proof::RangeProof),
    /// Blob ids (the answer to `Unlisted`).
    #[n(9)]
    Ids(#[n(0)] Vec<ByteArray<32>>),
}

impl FedReply {
    /// The answer to a `Holders` question: `roster` and `holders`, or [`FedReply::Unchanged`]
    /// when `known` (the digest the asker sent) is that answer's.
    pub fn holders(
        roster: Option<Roster>,
        holders: Vec<OffsiteHolder>,
        known: Option<&[u8; 32]>,
    ) -> FedReply {
        let answer = FedReply::Holders { roster, holders };
        if known.is_some_and(|k| *k == answer.digest()) { FedReply::Unchanged } else { answer }
    }

    /// The digest of this answer, as an asker sends it back ([`FedRequest::Holders`]).
    pub fn digest(&self) -> [u8; 32] {
        *blake3::hash(&minicbor::to_vec(self).expect("encoding into a Vec cannot fail")).as_bytes()
    }
}

/// The offering side of `kith/fed/1`.
#[derive(Debug, Clone)]
pub struct FedProtocol {
    pools: Arc<Pools>,
    rep: Arc<crate::replica::Replicator>,
    at_once: Arc<tokio::sync::Semaphore>,
}

impl FedProtocol {
    /// The protocol for these pools (off-site requests are the replicator's).
    pub fn new(rep: Arc<crate::replica::Replicator>) -> FedProtocol {
        FedProtocol {
            pools: rep.pools().clone(),
            rep,
            at_once: Arc::new(tokio::sync::Semaphore::new(AT_ONCE)),
        }
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
        // A slot is taken only once a whole request has arrived: idle connections hold none.
        let Ok(_slot) = self.at_once.clone().try_acquire_owned() else {
            let busy = FedReply::NotHere(
                "this node is busy with other federation requests; ask again soon".into(),
            );
            frame::write_max(&mut send, &busy, MAX_FRAME).await.map_err(|e| e.to_string())?;
            let _ = send.finish();
            return Ok(());
        };
        let pools = self.clone();
        let reply = match req {
            FedRequest::Accept(_) | FedRequest::Notice(_) => {
                tokio::task::spawn_blocking(move || match req {
                    FedRequest::Accept(ag) => pools.record(&ag),
                    FedRequest::Notice(n) => pools.record_notice(&n),
                    _ => FedReply::Refused("unreachable".into()),
                })
                .await
                .map_err(|e| e.to_string())?
            }
            other => self.rep.serve_offsite(conn.remote_id(), other).await,
        };
        frame::write_max(&mut send, &reply, MAX_FRAME).await.map_err(|e| e.to_string())?;
        let _ = send.finish();
        let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
        Ok(())
    }
}

impl ProtocolHandler for FedProtocol {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        let peer = conn.remote_id();
        if let Err(e) = self.serve(&conn).await {
            tracing::info!(peer = %peer.fmt_short(), error = %e, "federation request failed");
        }
        Ok(())
    }
}

/// Sends `req` to the partner's node `peer` (known to this node's endpoint already) and waits
/// up to `limit` for its answer.
pub async fn ask_fed(
    node: &Node,
    peer: EndpointId,
    req: &FedRequest,
    limit: Duration,
) -> Result<FedReply, String> {
    let conn =
        tokio::time::timeout(Duration::from_secs(10), node.endpoint().connect(peer, FED_ALPN))
            .await
            .map_err(|_| "connecting timed out".to_string())?
            .map_err(|e| kith_node::net::connect_error(&peer, e).to_string())?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    frame::write_max(&mut send, req, MAX_FRAME).await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    let reply: FedReply = tokio::time::timeout(limit, frame::read_max(&mut recv, MAX_FRAME))
        .await
        .map_err(|_| "no answer in time".to_string())?
        .map_err(|e| e.to_string())?
        .ok_or("the node closed the stream without answering")?;
    conn.close(0u32.into(), b"done");
    Ok(reply)
}

/// Hands `req` to the other pool's node `to`: its answer, or why it could not be asked.
pub async fn deliver(node: &Node, to: &NodeTicket, req: &FedRequest) -> Result<FedReply, String> {
    node.add_peer(to).await.map_err(|e| e.to_string())?;
    ask_fed(node, to.id, req, Duration::from_secs(20)).await
}
