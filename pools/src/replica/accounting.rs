//! This node's usage recorded into its pools' ledgers: storage accrued, audits answered, bytes
//! served and received, with the receipts it signs for what it received.

use std::collections::HashMap;

use iroh::EndpointId;
use kith_crdt::{Key, hex};

use super::Replicator;

impl Replicator {
    /// Records this node's usage into the pool's ledger for the current period once the
    /// pool's `record_every` has passed: storage accrued, audits answered, bytes served to and
    /// received from other members' nodes, and a signed receipt per node it received from.
    /// Transfers with this member's own nodes, and with nodes that are not an active member's,
    /// are not pool usage and are dropped.
    pub fn record_usage_if_due(&self, pool: Key) {
        self.record_usage(pool, false);
    }

    /// Records what every pool's usage has accrued now, due or not (when the node stops, so
    /// the last hour is not lost).
    pub fn record_usage_now(&self) {
        for (pool, _) in self.pools.list() {
            self.record_usage(pool, true);
        }
    }

    /// Counts bytes this node's relay carried from the nodes of the partner of `agreement` (an
    /// agreement of `pool` that lends relay), for `pool`'s ledger (`relayed_for`).
    pub fn relayed_for(&self, pool: Key, agreement: Key, bytes: u64) {
        self.usage.partner_relayed(pool, agreement, bytes);
    }

    /// Counts bytes this node sent and received through the relay of the partner of
    /// `agreement` (of `pool`), which lends it relay, for `pool`'s ledger (`relayed_by`).
    pub fn relayed_by(&self, pool: Key, agreement: Key, bytes: u64) {
        self.usage.partner_relayed_by(pool, agreement, bytes);
    }

    /// Records what accrued in `pool` since the last record, at once (before leaving it).
    pub fn record_usage_of(&self, pool: Key) {
        self.record_usage(pool, true);
    }

    pub(super) fn record_usage(&self, pool: Key, now_anyway: bool) {
        let Some(v) = self.pools.view_of(&pool) else { return };
        let me = self.pools.node();
        let Some(member) = v.node_owner(&me) else { return };
        let Ok(node) = self.node() else { return };
        let now = self.pools.now_ms();
        let every = if now_anyway { 0 } else { v.charter.record_every_ms };
        let Some(due) = self.usage.take_due(pool, every, now) else { return };
        let other = |peer: &EndpointId| v.node_owner(peer.as_bytes()).is_some_and(|m| m != member);
        // This pool's tallies with other members' nodes (put back if they cannot be recorded).
        let take = |t: &kith_node::net::blobs::Tallies| {
            let (mine, rest): (HashMap<_, _>, HashMap<_, _>) =
                t.take().into_iter().partition(|((p, peer), _)| *p == pool && other(peer));
            // Transfers with this member's own nodes or with non-members are not pool usage.
            t.add_all(rest.into_iter().filter(|((p, _), _)| *p != pool).collect());
            mine
        };
        self.take_partner_transfers(&pool, &v, node);
        let (served_tally, received_tally) = (take(node.served().tagged()), take(node.received()));
        let served: u64 = served_tally.values().map(|t| t.bytes).sum();
        let received: Vec<(Key, kith_node::net::blobs::Tally)> =
            received_tally.iter().map(|((_, peer), x)| (*peer.as_bytes(), *x)).collect();
        let requests = self.pools.take_site_requests(&pool);
        let cpu = self.pools.take_cpu(&pool);
        let signer = self.pools.signer();
        let period = crate::ledger::Period::of(now);
        let partners = self.usage.take_partners(pool);
        let holders = self.usage.take_holders(pool);
        let theirs = self.take_partner_receipts(&v, period);
        let Some(snap) = self.pools.snapshot(&pool) else {
            self.usage.put_back_partners(pool, &partners);
            self.usage.put_back_holders(pool, &holders);
            self.put_back_partner_receipts(theirs);
            return;
        };
        let mut to_send = Vec::new();
        let mut unfiled: Vec<crate::usage::HolderDue> = Vec::new();
        let result = self.pools.ledgers().with(&snap, period, |l, rules| {
            let a = signer.author();
            let row = l.view().rows.remove(&(a.key, a.device)).unwrap_or_default();
            let prev = row.receipts;
            let cpu_receipts: Vec<crate::ledger::Receipt> = cpu
                .runners
                .iter()
                .map(|(runner, (fuel, jobs, last))| {
                    let (f, n) =
                        row.cpu_receipts.get(runner).map_or((0, 0), |r| (r.bytes, r.blobs));
                    crate::ledger::Receipt::sign_cpu(
                        signer,
                        pool,
                        period,
                        *runner,
                        f + fuel,
                        n + jobs,
                        *last,
                        now,
                    )
                })
                .collect();
            let receipts: Vec<crate::ledger::Receipt> = received
                .iter()
                .map(|(server, t)| {
                    let (b, n) = prev.get(server).map_or((0, 0), |r| (r.bytes, r.blobs));
                    crate::ledger::Receipt::sign(
                        signer,
                        pool,
                        period,
                        *server,
                        b + t.bytes,
                        n + t.blobs,
                        t.last,
                        now,
                    )
                })
                .collect();
            use crate::ledger::Counter::*;
            let adds: Vec<(crate::ledger::Counter, i64)> = [
                (StorageProvided, due.provided),
                (StorageUsed, due.used),
                (EgressServed, served as i64),
                (EgressReceived, received.iter().map(|(_, t)| t.bytes as i64).sum()),
                (RequestsServed, requests as i64),
                (AuditsPassed, due.audits_passed),
                (AuditsFailed, due.audits_failed),
                (CpuGiven, cpu.given as i64),
                (CpuTaken, cpu.taken as i64),
            ]
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .collect();
            if !(adds.is_empty() && receipts.is_empty() && cpu_receipts.is_empty()) {
                l.record(signer, rules, &adds, &receipts, &cpu_receipts, now)?;
            }
            l.record_partners(signer, rules, &partners, now)?;
            // The partner receipts this node signs its partners' holders (cumulative for the
            // period: what the row has signed them so far, and what accrued since), and those
            // the partners' nodes signed for it as their holder.
            let signed: Vec<crate::ledger::Receipt> = holders
                .iter()
                .map(|(ag, h, bh, bytes)| {
                    let (b, n) =
                        row.partner_signed.get(&(*ag, *h)).map_or((0, 0), |r| (r.bytes, r.blobs));
                    crate::ledger::Receipt::sign_partner(
                        signer,
                        *ag,
                        period,
                        *h,
                        me,
                        b + bytes,
                        n + bh,
                        now,
                    )
                })
                .collect();
            // In changes of their own: a receipt the rules refuse (a partner's node that
            // sent something odd) keeps none of the usage above out of the ledger, nor the
            // other receipts.
            // Only receipts filed here are sent; what one refused counted is due again.
            let mut sent = signed.clone();
            if let Err(e) = l.file_partner_receipts(signer, rules, &signed, &theirs, now) {
                tracing::warn!(error = %e, "partner receipts refused together: filing them one by one");
                sent.clear();
                for (one, due) in signed.iter().zip(&holders) {
                    let alone = std::slice::from_ref(one);
                    match l.file_partner_receipts(signer, rules, alone, &[], now) {
                        Ok(_) => sent.push(one.clone()),
                        Err(e) => {
                            tracing::warn!(error = %e, "a partner receipt this node signed was not filed");
                            unfiled.push(*due);
                        }
                    }
                }
                for one in &theirs {
                    let alone = std::slice::from_ref(one);
                    if let Err(e) = l.file_partner_receipts(signer, rules, &[], alone, now) {
                        tracing::warn!(error = %e, "a partner's receipt was not filed");
                    }
                }
            }
            to_send = sent;
            Ok(())
        });
        self.usage.put_back_holders(pool, &unfiled);
        match result {
            Ok(()) => {
                tracing::debug!(pool = %hex(&pool[..4]), %period, "recorded usage");
                // What the edges served is in the ledger now: their bound reads it again.
                if self.edges.enabled() {
                    for e in v.federation.agreements.values() {
                        let ag = &e.agreement;
                        let lent = ag.lending_of(&pool).map_or(0, |(lends, _)| lends.egress);
                        if lent > 0 && ag.lending_of(&pool).is_some_and(|(l, _)| l.cdn) {
                            self.read_budget(&pool, &ag.id(), lent);
                        }
                    }
                }
                self.pools.wake();
                self.queue_partner_receipts(pool, to_send);
            }
            Err(e) => {
                tracing::warn!(pool = %hex(&pool[..4]), error = %e, "cannot record usage in the ledger");
                self.usage.put_back(pool, due);
                self.usage.put_back_partners(pool, &partners);
                self.usage.put_back_holders(pool, &holders);
                self.put_back_partner_receipts(theirs);
                node.served().tagged().add_all(served_tally);
                node.received().add_all(received_tally);
                self.pools.put_back_site_requests(&pool, requests);
                self.pools.put_back_cpu(&pool, cpu);
            }
        }
    }

    /// Takes this pool's transfers with federated partners out of the node's tallies into the
    /// usage accrual: bytes this node served a partner's nodes for the partner (its copies
    /// back: fetches tagged with the partner's pool), bytes it received from a partner's
    /// holders (this pool's copies back), and bytes of partners' sites it served as their
    /// edge.
    fn take_partner_transfers(&self, pool: &Key, v: &crate::PoolView, node: &kith_node::net::Node) {
        let mut by_partner: HashMap<Key, Key> = HashMap::new();
        for (ag, e) in &v.federation.agreements {
            if let Some((partner, _)) = e.agreement.partner_of(pool) {
                by_partner.insert(partner, *ag);
            }
        }
        if by_partner.is_empty() {
            return;
        }
        let holders: HashMap<Key, Key> = super::lock(&self.partners)
            .iter()
            .filter(|(ag, _)| v.federation.agreements.contains_key(*ag))
            .flat_map(|(ag, p)| p.holders.iter().map(move |h| (*h.node, *ag)))
            .collect();
        let stranger = |peer: &EndpointId| v.node_owner(peer.as_bytes()).is_none();
        let split = |t: &kith_node::net::blobs::Tallies,
                     keep: &dyn Fn(&Key, &EndpointId) -> bool| {
            let (kept, rest): (HashMap<_, _>, HashMap<_, _>) =
                t.take().into_iter().partition(|((p, peer), _)| keep(p, peer));
            t.add_all(rest);
            kept
        };
        let served =
            split(node.served().tagged(), &|p, peer| by_partner.contains_key(p) && stranger(peer));
        let received = split(node.received(), &|p, peer| {
            p == pool && stranger(peer) && holders.contains_key(peer.as_bytes())
        });
        for ((p, _), t) in served {
            self.usage.partner_bytes(*pool, by_partner[&p], t.bytes, 0);
        }
        for ((_, peer), t) in received {
            let ag = holders[peer.as_bytes()];
            self.usage.partner_bytes(*pool, ag, 0, t.bytes);
            self.usage.holder_received(*pool, ag, *peer.as_bytes(), t.bytes);
        }
        for (ag, bytes) in self.edges.take_served(|a| v.federation.agreements.contains_key(a)) {
            self.usage.partner_bytes(*pool, ag, bytes, 0);
        }
    }

    /// Accrues this node's storage with `pool`'s partners: what it holds for each, and what
    /// each holds of what this node placed there (as its last off-site pass confirmed).
    pub(super) fn accrue_partners(&self, pool: Key) {
        let Some(v) = self.pools.view_of(&pool) else { return };
        let now = self.pools.now_ms();
        let stats = self.offsite_stats(&pool);
        for (ag, e) in &v.federation.agreements {
            if e.state(&pool, now) == "ended" {
                continue;
            }
            let partner = e.agreement.partner_of(&pool).map(|(p, _)| p);
            let ps = stats.as_ref().and_then(|s| partner.and_then(|p| s.partners.get(&p)));
            let held_by = ps.map_or(0, |p| p.held_bytes);
            self.usage.accrue_partner(pool, *ag, self.lent.bytes(ag), held_by, now);
            let by_holder: Vec<(Key, u64)> =
                ps.map(|p| p.by_holder.iter().map(|(h, b)| (*h, *b)).collect()).unwrap_or_default();
            self.usage.accrue_holders(pool, *ag, &by_holder, now);
        }
    }
}
