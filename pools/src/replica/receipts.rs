//! Partner receipts: the evidence, across two pools, behind what one lends the other. A node
//! that placed copies with a partner's holders signs each holder, at every record, a
//! cumulative receipt for the month: the byte-hours it held of what the node placed there (as
//! the node's off-site passes confirmed it, counting nothing while the holder fails its
//! audits) and the bytes it sent the node back. The node files the receipt in its own row of
//! its pool's ledger (`partners/<agreement>/signed/<holder>`) and sends it to the holder,
//! which checks it against the partner's roster and files it in its own row of its pool's
//! ledger at its next record (`partners/<agreement>/receipts/<node>`). The lending pool's
//! statement prices the storage it lent by those receipts (docs/ledger.md, "Federated
//! partners").

use std::time::{Duration, Instant};

use iroh::EndpointId;
use kith_crdt::Key;

use super::{Replicator, lock};
use crate::fed::{Asking, FedReply, FedRequest, ask_fed};
use crate::ledger::{Period, Receipt};

/// Receipts from partners' nodes waiting for this node's next record, at most (each node of
/// each partner keeps one, its latest, per agreement), in all and per agreement.
pub const MAX_RECEIPTS_IN: usize = 4096;
const MAX_RECEIPTS_IN_PER_AGREEMENT: usize = 1024;
/// Signing nodes of one identity waiting, at most (a member may certify any number of device
/// keys; its own devices are a few).
const MAX_NODES_PER_IDENTITY: usize = 8;
/// All the sends of one pass, at most: a partner whose holders stopped answering does not
/// hold up the off-site worker.
const SEND_WITHIN: Duration = Duration::from_secs(10);

/// A receipt received as a holder, with the partner's roster it was taken under.
pub(super) type Incoming = (Receipt, kith_federation::Roster);
/// How long a receipt that could not be delivered waits before it is sent again.
const RESEND: Duration = Duration::from_secs(60);
/// How long a holder is given to answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// A receipt to deliver: the latest signed for one holder, and when to try again.
#[derive(Debug)]
pub(super) struct Outgoing {
    receipt: Receipt,
    next: Option<Instant>,
}

impl Replicator {
    /// Queues the partner receipts this node just signed for delivery to their holders (the
    /// off-site worker sends them).
    pub(super) fn queue_partner_receipts(&self, pool: Key, signed: Vec<Receipt>) {
        let mut out = lock(&self.receipts_out);
        for r in signed {
            out.insert((pool, r.pool, r.server), Outgoing { receipt: r, next: None });
        }
    }

    /// Sends `pool`'s queued partner receipts to their holders; what is not delivered is
    /// tried again a minute later, and replaced by the next record's.
    pub(super) async fn send_partner_receipts(&self, pool: Key) {
        let _ = tokio::time::timeout(SEND_WITHIN, self.send_partner_receipts_now(pool)).await;
    }

    async fn send_partner_receipts_now(&self, pool: Key) {
        let now = Instant::now();
        // Holders the partners no longer name are not sent anything more.
        {
            let partners = lock(&self.partners);
            lock(&self.receipts_out).retain(|(p, ag, h), _| {
                *p != pool
                    || partners.get(ag).is_none_or(|x| x.holders.iter().any(|y| *y.node == *h))
            });
        }
        // Each is due again a minute later unless delivered: a send cut short by the pass's
        // bound (a holder that does not answer) leaves the others their turn next pass.
        let due: Vec<((Key, Key, Key), Receipt)> = lock(&self.receipts_out)
            .iter_mut()
            .filter(|((p, _, _), o)| *p == pool && o.next.is_none_or(|t| now >= t))
            .map(|(k, o)| {
                o.next = Some(now + RESEND);
                (*k, o.receipt.clone())
            })
            .collect();
        if due.is_empty() {
            return;
        }
        let (Some(v), Ok(node)) = (self.pools.view_of(&pool), self.node()) else { return };
        for (key, r) in due {
            let sent = match v.federation.agreements.get(&r.pool) {
                Some(e) if e.state(&pool, self.pools.now_ms()) != "ended" => match &e.roster {
                    Some(roster) => match EndpointId::from_bytes(&r.server) {
                        Ok(peer) => {
                            let req = FedRequest::Receipt {
                                asking: Box::new(self.asking(&e.agreement, roster)),
                                receipt: r.to_bytes(),
                            };
                            tokio::time::timeout(
                                ANSWER_WITHIN,
                                ask_fed(node, peer, &req, ANSWER_WITHIN),
                            )
                            .await
                            .unwrap_or_else(|_| Err("no answer in time".into()))
                        }
                        Err(e) => Ok(FedReply::Refused(e.to_string())),
                    },
                    None => Err("this pool has no roster for the agreement yet".into()),
                },
                // An agreement that ended takes no more receipts.
                _ => Ok(FedReply::Refused("the agreement has ended".into())),
            };
            let mut out = lock(&self.receipts_out);
            // A newer receipt may have replaced this one meanwhile: it is sent next pass.
            let same = out.get(&key).is_some_and(|o| o.receipt == r);
            match sent {
                Ok(FedReply::Recorded(_)) if same => {
                    out.remove(&key);
                }
                Ok(FedReply::Refused(why)) if same => {
                    tracing::info!(holder = %kith_crdt::hex(&r.server[..4]), %why, "a partner's holder refused a receipt");
                    out.remove(&key);
                }
                answer => {
                    tracing::debug!(holder = %kith_crdt::hex(&r.server[..4]), answer = ?answer, "a partner receipt not delivered: sent again later");
                }
            }
        }
    }

    /// Takes the partner receipts received for this node under `v`'s agreements for
    /// `period`, to file at this record (older periods' are dropped: their month is over).
    pub(super) fn take_partner_receipts(
        &self,
        v: &crate::PoolView,
        period: Period,
    ) -> Vec<Incoming> {
        let p = period.to_string();
        let mut inbox = lock(&self.receipts_in);
        inbox.retain(|_, (r, _)| r.period >= p);
        let keys: Vec<(Key, Key)> = inbox
            .iter()
            .filter(|(_, (r, _))| r.period == p && v.federation.agreements.contains_key(&r.pool))
            .map(|(k, _)| *k)
            .collect();
        keys.iter().filter_map(|k| inbox.remove(k)).collect()
    }

    /// Puts back receipts that could not be filed (unless a newer one came meanwhile).
    pub(super) fn put_back_partner_receipts(&self, rs: Vec<Incoming>) {
        let mut inbox = lock(&self.receipts_in);
        for (r, ro) in rs {
            inbox.entry((r.pool, r.last)).or_insert((r, ro));
        }
    }

    /// A partner's node sends this node, one of its holders, a receipt: checked (the asker
    /// is a member the partner's newest roster names, with its device proof for the asking
    /// node; the receipt is that member's, names the asking node, and is for this node, this
    /// agreement and this month, the last or the next), then kept with the roster for the
    /// next record.
    pub(super) fn accept_partner_receipt(
        &self,
        peer: &EndpointId,
        asking: &Asking,
        bytes: &[u8],
    ) -> Result<FedReply, String> {
        let ag = self.check_current(peer, asking)?;
        let r = Receipt::from_bytes(bytes).map_err(|e| e.to_string())?;
        if r.pool != ag.id() {
            return Err("the receipt is for another agreement".into());
        }
        if r.server != self.pools.node() {
            return Err("the receipt is for another holder".into());
        }
        if r.receiver != asking.identity || r.last != *peer.as_bytes() {
            return Err("the receipt is not the asking member's for the asking node".into());
        }
        if !r.partner_signature_ok() {
            return Err("the receipt's signature does not verify".into());
        }
        // This month, the last, or the next (a signer whose clock is a little ahead).
        let now = Period::of(self.pools.now_ms());
        if ![now.prev(), now, now.next()].iter().any(|p| r.period == p.to_string()) {
            return Err(format!("the receipt is for {}, not this month or the last", r.period));
        }
        let mut inbox = lock(&self.receipts_in);
        let key = (r.pool, r.last);
        if !inbox.contains_key(&key) {
            let busy = inbox.len() >= MAX_RECEIPTS_IN
                || inbox.values().filter(|(x, _)| x.pool == r.pool).count()
                    >= MAX_RECEIPTS_IN_PER_AGREEMENT;
            if busy {
                return Ok(FedReply::NotHere(
                    "this node has too many receipts to file: send it again later".into(),
                ));
            }
            let of_identity = inbox.values().filter(|(x, _)| x.receiver == r.receiver).count();
            if of_identity >= MAX_NODES_PER_IDENTITY {
                return Err(format!(
                    "this node takes receipts from at most {MAX_NODES_PER_IDENTITY} nodes of one member at a time"
                ));
            }
        }
        match inbox.get(&key) {
            Some((had, _)) if had.period > r.period => {
                Ok(FedReply::Recorded("a newer month's receipt from yours is here".into()))
            }
            Some((had, _))
                if had.period == r.period
                    && (had.bytes > r.bytes
                        || had.blobs > r.blobs
                        || had.receiver != r.receiver) =>
            {
                Err("the receipt is smaller than one this node has from yours, or another member's"
                    .into())
            }
            _ => {
                inbox.insert(key, (r, asking.roster.clone()));
                Ok(FedReply::Recorded("filed at this node's next record".into()))
            }
        }
    }
}
