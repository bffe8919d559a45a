//! Audits: each live holder asked, every `audit_every`, to prove it holds one random 1 KiB range
//! of a blob placement gives it; the verdicts recorded; the proofs served; a scrub of this
//! node's blobs after it failed one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use iroh::EndpointId;
use kith_crdt::{Key, hex};
use kith_node::ChunkId;

use super::protocol::{Reply, Request, ask_briefly};
use super::repair::keep_set;
use super::{Replicator, lock};
use crate::manifest::Manifest;
use crate::placement::place;
use crate::view::AuditRecord;

impl Replicator {
    /// This node's audit records for `pool`, by audited node.
    pub fn audits(&self, pool: &Key) -> BTreeMap<Key, AuditRecord> {
        lock(&self.audits)
            .iter()
            .filter(|((p, _), _)| p == pool)
            .map(|((_, n), a)| (*n, a.clone()))
            .collect()
    }

    pub(super) fn random(&self) -> u64 {
        let n = self.nonce.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut h = blake3::Hasher::new();
        h.update(&self.seed.to_le_bytes());
        h.update(&n.to_le_bytes());
        h.update(&self.pools.now_ms().to_le_bytes());
        u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().expect("8 bytes"))
    }

    /// Audits every live holder of `pool` once if the pool's `audit_every` has passed since
    /// the last round: one random 1 KiB range of one random blob placement gives it.
    pub async fn audit_if_due(&self, pool: Key) {
        let Some(v) = self.pools.view_of(&pool) else { return };
        let me = self.pools.node();
        if v.node_owner(&me).is_none() {
            return;
        }
        let every = Duration::from_millis(v.charter.audit_every_ms);
        {
            let mut last = lock(&self.audited);
            let now = std::time::Instant::now();
            // The first round waits one period too: a node that just started has not synced.
            let due = last.entry(pool).or_insert(now);
            if now.duration_since(*due) < every {
                return;
            }
            *due = now;
        }
        let manifests: Vec<Arc<Manifest>> = {
            let cache = lock(&self.manifests);
            v.objects().filter_map(|(_, _, po)| cache.get(&po.manifest).cloned()).collect()
        };
        // Audits follow placement over every live holder (failing ones included, so a node
        // that repaired itself can pass again).
        let live = self.live_holders(&v);
        let r = v.charter.replicas as usize;
        let Ok(node) = self.node() else { return };
        for h in live.iter().filter(|h| h.node != me) {
            let mine: Vec<([u8; 32], u32)> = manifests
                .iter()
                .flat_map(|m| m.blobs.iter())
                .filter(|(id, _)| place(id, &live, r).iter().any(|t| t.node == h.node))
                .map(|(id, len)| (**id, *len))
                .collect();
            if mine.is_empty() {
                continue;
            }
            let (id, len) = mine[(self.random() % mine.len() as u64) as usize];
            let index = self.random() % crate::proof::chunks(len as u64);
            let Ok(peer) = EndpointId::from_bytes(&h.node) else { continue };
            let req = Request::Audit { pool, id, index };
            let verdict = match ask_briefly(&self.pools, node, peer, &req).await {
                Ok(Reply::Proof(p)) => {
                    crate::proof::check(&id, len as u64, index, &p).map_err(|e| e.to_string())
                }
                Ok(Reply::Refused(why)) => Err(format!("refused: {why}")),
                Ok(other) => Err(format!("unexpected answer {other:?}")),
                // Unreachable is for repair to judge, not an audit failure.
                Err(e) => {
                    tracing::debug!(peer = %peer.fmt_short(), error = %e, "audit not delivered");
                    continue;
                }
            };
            self.record_audit(pool, h.node, &hex(&id[..8]), verdict);
        }
    }

    fn record_audit(&self, pool: Key, node: Key, blob: &str, verdict: Result<(), String>) {
        let now = self.pools.now_ms();
        let (rec, publish) = {
            let mut audits = lock(&self.audits);
            let rec = audits.entry((pool, node)).or_default();
            let was = (rec.passed + rec.failed > 0, rec.failing);
            match &verdict {
                Ok(()) => {
                    rec.passed += 1;
                    rec.failing = false;
                }
                Err(why) => {
                    rec.failed += 1;
                    rec.failing = true;
                    rec.reason = format!("blob {blob}: {why}");
                    tracing::warn!(node = %hex(&node[..4]), reason = %rec.reason, "a holder failed an audit");
                }
            }
            rec.at_ms = now;
            // The document hears of the first audit, every change of verdict, and otherwise
            // at most every ten minutes: its size grows with events, not with time.
            let last = lock(&self.published).get(&(pool, node)).copied();
            let publish = !was.0 || was.1 != rec.failing || last.is_none_or(|t| now - t > 600_000);
            (rec.clone(), publish)
        };
        if publish {
            let signer = self.pools.signer();
            match self.pools.with_pool(&hex(&pool), |p| p.set_audit(signer, &node, &rec, now)) {
                Ok(()) => {
                    lock(&self.published).insert((pool, node), now);
                }
                Err(e) => tracing::warn!(error = %e, "cannot record an audit in the pool document"),
            }
        }
    }

    pub(super) async fn serve_audit(
        &self,
        peer: EndpointId,
        pool: Key,
        id: Key,
        index: u64,
    ) -> Result<Reply, String> {
        self.member_view(peer, &pool)?;
        let answer = self.prove_held(id, index, "not held here").await.map(Reply::Proof);
        // A holder knows its own verdict: a proof from the blob it holds passes.
        self.usage.audited(pool, answer.is_ok());
        answer
    }

    /// The proof of chunk `index` of blob `id` as this node holds it, or why not (`missing`
    /// when it is not in the store). A blob that no longer reads back starts a scrub, so the
    /// next repair (or a partner's next `Hold`) fetches it again.
    pub(super) async fn prove_held(
        &self,
        id: Key,
        index: u64,
        missing: &'static str,
    ) -> Result<crate::proof::RangeProof, String> {
        let store = self.node()?.store().clone();
        let answer = tokio::task::spawn_blocking(move || match store.read_blob(&ChunkId(id)) {
            Ok(Some((_, blob))) => crate::proof::prove(&blob, index)
                .ok_or_else(|| format!("the blob has no chunk {index}")),
            Ok(None) => Err(missing.to_string()),
            Err(e) => Err(format!("damaged here: {e}")),
        })
        .await
        .map_err(|e| e.to_string())?;
        if answer.as_ref().is_err_and(|e| e.starts_with("damaged")) {
            self.scrub();
        }
        answer
    }

    /// Checks every blob this node keeps for its pools and forgets those that no longer read
    /// back, so repair fetches good copies (a disk that lost one blob has likely lost more).
    /// One scrub at a time.
    pub(super) fn scrub(&self) {
        if self.scrubbing.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        let Ok(node) = self.node() else { return };
        let (pools, store) = (self.pools.clone(), node.store().clone());
        let flag = self.scrubbing.clone();
        // Manifests in memory too: a damaged manifest on disk hides what it lists.
        let cached: Vec<ChunkId> = lock(&self.manifests)
            .values()
            .flat_map(|m| m.blobs.iter().map(|(id, _)| ChunkId(**id)))
            .collect();
        tokio::task::spawn_blocking(move || {
            let mut forgot = 0u64;
            let (mut keep, _) = keep_set(&pools, &store);
            keep.extend(cached);
            for id in keep {
                if store.has(&id).unwrap_or(false)
                    && store.read_blob(&id).is_err()
                    && store.forget_damaged(&id).unwrap_or(false)
                {
                    forgot += 1;
                }
            }
            tracing::warn!(
                blobs = forgot,
                "scrubbed the pool blobs held here after a failed audit; repair fetches them again"
            );
            flag.store(false, std::sync::atomic::Ordering::Release);
        });
    }
}
