//! Sync sessions: automerge's sync protocol, with the signatures of the changes a message carries
//! sent beside it, and every received change checked before it reaches the document.
//!
//! A session is symmetric and keeps an automerge [`SyncState`] per peer. Received messages are
//! applied to a copy of the document; the changes that are new are then checked by
//! [`SignedDoc::ingest`], and only if all pass do they (and the updated state) take effect.

use std::collections::BTreeMap;

use automerge::ChangeHash;
use automerge::sync::{Message, SyncDoc};

use crate::check::Authorizer;
use crate::signed::{DocError, SignedDoc};

pub use automerge::sync::State as SyncState;

/// One sync message with the signatures of the changes it carries.
#[derive(Debug, Clone, PartialEq, Eq, minicbor::Encode, minicbor::Decode)]
pub struct SyncFrame {
    /// An encoded automerge sync message.
    #[cbor(n(0), with = "minicbor::bytes")]
    pub msg: Vec<u8>,
    /// `(change hash, signature)` for every change in `msg`.
    #[n(1)]
    pub sigs: Vec<SigEntry>,
}

/// A change hash and its author's signature.
#[derive(Debug, Clone, PartialEq, Eq, minicbor::Encode, minicbor::Decode)]
pub struct SigEntry {
    /// The change hash.
    #[cbor(n(0), with = "minicbor::bytes")]
    pub hash: [u8; 32],
    /// The signature ([`crate::signed::Sig`]).
    #[cbor(n(1), with = "minicbor::bytes")]
    pub sig: Vec<u8>,
}

impl SyncFrame {
    /// Whether the message carries changes (a malformed one counts as carrying some: taking
    /// it in is what reports it).
    pub fn carries_changes(&self) -> bool {
        Message::decode(&self.msg).map_or(true, |m| !m.changes.is_empty())
    }
}

impl SignedDoc {
    /// The next message for a peer, or `None` when there is nothing to say.
    pub fn sync_out(&mut self, state: &mut SyncState) -> Option<SyncFrame> {
        // The changes a message carries are not listed in it (version 2 concatenates them into
        // one chunk), so the signature of every change the peer may lack goes beside it: every
        // change after the heads the peer last said it has. (Not after the heads we believe we
        // share: a peer put back to an older copy of the document no longer has some of
        // those, and is sent them again.)
        let theirs: Vec<ChangeHash> = state
            .their_heads
            .iter()
            .flatten()
            .filter(|h| self.doc.get_change_by_hash(h).is_some())
            .copied()
            .collect();
        let msg = self.doc.sync().generate_sync_message(state)?;
        let hashes: Vec<ChangeHash> = if msg.changes.is_empty() {
            Vec::new()
        } else {
            self.doc.get_changes(&theirs).iter().map(|c| c.hash()).collect()
        };
        let sigs = hashes
            .iter()
            .filter_map(|h| Some(SigEntry { hash: h.0, sig: self.sigs.get(h)?.clone() }))
            .collect();
        Some(SyncFrame { msg: msg.encode(), sigs })
    }

    /// Takes a peer's message: new changes are checked and applied all together, or the
    /// message is rejected whole and `state` is left as it was. Returns the new changes.
    pub fn sync_in(
        &mut self,
        state: &mut SyncState,
        frame: &SyncFrame,
        authz: &dyn Authorizer,
    ) -> Result<Vec<ChangeHash>, DocError> {
        let msg = Message::decode(&frame.msg)
            .map_err(|e| DocError::Format(format!("malformed sync message: {e}")))?;
        if msg.changes.is_empty() {
            // Heads and a Bloom filter only (most turns): nothing reaches the document, so no
            // copy of it is made (a copy costs in proportion to the history).
            let mut next = state.clone();
            crate::signed::guard(|| Ok(self.doc.sync().receive_sync_message(&mut next, msg)?))?;
            *state = next;
            return Ok(Vec::new());
        }
        let mut budget = crate::bounds::MAX_INFLATED_BYTES;
        for chunk in msg.changes.iter() {
            crate::bounds::check_chunks(chunk, &mut budget)?;
        }
        // automerge applies the message to the copy before any change is judged. A change that
        // reuses operation ids (see `judge::fresh_op_ids`) is refused there anyway; it is kept
        // from automerge altogether, since a document holding two operations of one id is in a
        // state automerge does not define (our probe saw no loop on this path, only on apply).
        let mut ranges: Vec<(automerge::ActorId, u64, u64)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for chunk in msg.changes.iter() {
            for c in crate::bounds::changes_in(chunk)? {
                if !seen.insert(c.hash()) || self.doc.get_change_meta_by_hash(&c.hash()).is_some() {
                    continue;
                }
                let (start, end) = (c.start_op().get(), c.max_op());
                let clash =
                    ranges.iter().any(|(a, s, e)| a == c.actor_id() && start <= *e && *s <= end);
                let fresh = if clash {
                    Err("it reuses operation ids of another change in the message".to_string())
                } else {
                    crate::judge::fresh_op_ids(&mut self.doc, &c)
                };
                if let Err(reason) = fresh {
                    let author = crate::signed::Author::from_actor(c.actor_id())
                        .map(|a| crate::signed::hex(&a.key))
                        .unwrap_or_default();
                    let change = crate::signed::hex(&c.hash().0);
                    return Err(DocError::Unauthorised { change, author, reason });
                }
                ranges.push((c.actor_id().clone(), start, end));
            }
        }
        let mut work = self.doc.fork();
        let mut next = state.clone();
        crate::signed::guard(|| Ok(work.sync().receive_sync_message(&mut next, msg)?))?;
        let heads = self.doc.get_heads();
        let new = work.get_changes(&heads);
        let sigs: BTreeMap<ChangeHash, crate::signed::Sig> =
            frame.sigs.iter().map(|s| (ChangeHash(s.hash), s.sig.clone())).collect();
        let accepted = self.ingest(new, &sigs, authz)?;
        // A change whose dependencies this node lacks (the peer took them for ours: a false
        // positive of the Bloom filter describing what we have) stays out of the document, and
        // the peer, which remembers having sent it, never sends it again: both sides then trade
        // heads for ever (seen about once in twenty runs of the lost-changes tests). Start the
        // exchange again: our next message asks the peer to forget what it sent (automerge's
        // sync reset) and describes all we have in a new filter, which does not take that
        // change for ours again.
        if seen.iter().any(|h| self.doc.get_change_meta_by_hash(h).is_none()) {
            next = SyncState::new();
            next.needs_reset = true;
        }
        *state = next;
        Ok(accepted)
    }
}
