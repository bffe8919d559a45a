//! Off-site replicas (docs/federation.md): copies of a pool's chunks on the nodes of pools it
//! federates with, within what each lends.
//!
//! - **The lender** (a node of pool B, which lends storage to A): answers `Holders` with its
//!   pool's nodes that offer storage and each one's share of what B lends A; holds the blobs
//!   A's nodes ask it to (`Hold`), fetching them from A's nodes, never past its share; says
//!   which it has (`Has`); serves them back to A's members' nodes. Each request carries A's
//!   [`Roster`] (signed by A's signer of the agreement) and the asking node's proof that it is
//!   a device of an identity the roster names: B checks both against the agreement in its own
//!   document, and nothing once the agreement has ended. What it holds for each agreement is
//!   kept on disk (`<pools>/offsite/<agreement>.held`, appended after the blobs are synced),
//!   so `gc` keeps it and the gate serves it after a restart.
//! - **The borrower** (a node of A): for each object whose manifest placement gives it first
//!   among A's live holders, places `offsite_replicas` copies of every blob (and of the
//!   manifest) over the partners' holders by rendezvous hashing weighted by their shares, and
//!   asks each holder to hold what it has not confirmed yet. Partners' holder lists (and their
//!   rosters, so their nodes may fetch from A) are asked for every [`PARTNERS_EVERY`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iroh::EndpointId;
use kith_crdt::{Key, hex, verify_device};
use kith_federation::{Agreement, Roster};
use kith_node::ChunkId;
use minicbor::bytes::ByteArray;

use super::protocol::node_message;
use super::{Replicator, lock};
use crate::fed::{Asking, FedReply, FedRequest, OffsiteHolder, SealedCopy, ask_fed};
use crate::placement::{Holder, place};
use crate::view::PoolView;

/// Domain separation of a node's proof that it asks for its identity.
pub(crate) const OFFSITE_CONTEXT: &[u8] = b"kith-offsite-v1";
/// How often a borrowing node asks its partners for their holders (and rosters).
pub const PARTNERS_EVERY: Duration = Duration::from_secs(60);
/// How recent a partner's answer `kith pool show` takes.
const PARTNERS_FRESH: Duration = Duration::from_secs(5);
/// How long `kith pool show` waits for partners' fresh answers.
const SHOW_WAIT: Duration = Duration::from_secs(3);
/// How soon a borrowing node asks again a partner that did not answer (or named no holder).
const PARTNERS_RETRY: Duration = Duration::from_secs(4);
/// Blobs in one `Hold` or `Has`.
pub const MAX_OFFSITE_IDS: usize = 16_384;
/// Blobs a lender fetches before it checks them on disk against their claimed lengths.
const OFFSITE_ROUND: usize = 256;
/// How long a confirmation stands before the borrower asks again (a lender that lost its disk
/// is refilled within this).
const RECONFIRM: Duration = Duration::from_secs(600);
/// Largest sealed copy of a pool's documents a partner keeps (the pool document and its
/// members' identity documents, encrypted).
pub const MAX_SEALED: usize = 8 << 20;
/// How often the first node of a pool sends its partners a sealed copy that has not changed.
pub const SEAL_EVERY: Duration = Duration::from_secs(6 * 3600);
/// A partner's holders a sealed copy goes to, at most (those placement ranks first for the
/// pool's id): a partner with fifty nodes need not keep fifty copies.
const SEALED_PER_PARTNER: usize = 2;
/// How long after sending a sealed copy the next, changed one waits (a busy pool's document
/// changes every few seconds; its partners get it at most this often).
const SEAL_AFTER: Duration = Duration::from_secs(30);
/// One record of a `.held` file: the blob id and its length.
const RECORD: usize = 36;
/// One record of a `.released` file: the blob id and when it was released (ms, LE).
const RELEASED_RECORD: usize = 40;
/// How long a blob the partner released stays in the store (a `Hold` takes it back meanwhile;
/// devices the partner's roster names may still fetch it).
pub const RELEASED_KEEP: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often released blobs past [`RELEASED_KEEP`] are looked at for reclaiming.
const SWEEP_EVERY: Duration = Duration::from_secs(600);
/// How many of a pool's nodes release the off-site copies of an object taken out: the first
/// by the placement of its manifest among the pool's live holders (as for placing them), and
/// the next, in case the first was down when it was taken out.
const RELEASERS: usize = 2;
/// Wait after a release a partner's holder did not take, doubled at each failure up to
/// [`RELEASE_RETRY_MAX`].
const RELEASE_RETRY: Duration = Duration::from_secs(30);
const RELEASE_RETRY_MAX: Duration = Duration::from_secs(3600);
/// Blobs waiting to be released at partners, per pool, at most (past it, the rest stay at
/// the partner until the agreement ends).
const MAX_RELEASING: usize = 1 << 18;

/// Blobs of objects a pool took out, to be released at its partners' holders.
#[derive(Debug, Default)]
pub(super) struct Releasing {
    ids: HashSet<[u8; 32]>,
    failures: u32,
    next: Option<Instant>,
}

/// What this node holds for partners, by agreement, as on disk.
#[derive(Debug)]
pub struct Lent {
    dir: PathBuf,
    held: Mutex<Option<HashMap<Key, Held>>>,
    holds: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
    /// When released blobs were last looked at for reclaiming.
    swept: Mutex<Option<Instant>>,
}

/// What this node holds for one agreement.
#[derive(Debug, Default, Clone)]
pub struct Held {
    /// Blob ids and lengths.
    pub blobs: HashMap<[u8; 32], u32>,
    /// Their bytes.
    pub bytes: u64,
    /// The partner's latest roster this node has seen.
    pub roster: Option<Roster>,
    /// Blobs the partner released, with when (ms, the pools' clock): no longer held for it
    /// nor counted, but kept in the store for a week (`RELEASED_KEEP`; a release made on a
    /// stale view is undone by the next `Hold`, which takes them back without a fetch), then
    /// reclaimed.
    pub released: HashMap<[u8; 32], i64>,
}

impl Lent {
    /// What is recorded under `dir`.
    pub fn new(dir: PathBuf) -> Lent {
        Lent {
            dir,
            held: Mutex::new(None),
            holds: Mutex::new(HashMap::new()),
            swept: Mutex::new(None),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<Key, Held>) -> T) -> T {
        let mut g = lock(&self.held);
        let map = g.get_or_insert_with(|| read_dir(&self.dir));
        f(map)
    }

    /// Whether `id` is held for `agreement`, for each id (no copy of the map is made).
    pub fn has_many(&self, agreement: &Key, ids: &[[u8; 32]]) -> Vec<bool> {
        self.with(|m| {
            let h = m.get(agreement);
            ids.iter().map(|id| h.is_some_and(|h| h.blobs.contains_key(id))).collect()
        })
    }

    /// Bytes held for `agreement`.
    pub fn bytes(&self, agreement: &Key) -> u64 {
        self.with(|m| m.get(agreement).map_or(0, |h| h.bytes))
    }

    /// The partner's latest roster for `agreement`, if one was seen.
    pub fn roster(&self, agreement: &Key) -> Option<Roster> {
        self.with(|m| m.get(agreement).and_then(|h| h.roster.clone()))
    }

    /// The lock that makes `Hold`s of one agreement run one at a time (what is held is
    /// reckoned before and after each, with no other in between).
    fn hold_lock(&self, agreement: &Key) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.holds).entry(*agreement).or_default().clone()
    }

    /// What is held for `agreement`.
    pub fn held(&self, agreement: &Key) -> Held {
        self.with(|m| m.get(agreement).cloned().unwrap_or_default())
    }

    /// Every agreement this node holds something for, with its bytes.
    pub fn totals(&self) -> BTreeMap<Key, (u64, u64)> {
        self.with(|m| m.iter().map(|(k, h)| (*k, (h.blobs.len() as u64, h.bytes))).collect())
    }

    /// Keeps the partner's roster if it is newer than the one known.
    fn note_roster(&self, r: &Roster) -> Result<(), String> {
        let newer = self.with(|m| {
            let h = m.entry(r.agreement).or_default();
            if h.roster.as_ref().is_none_or(|o| o.at_ms < r.at_ms) {
                h.roster = Some(r.clone());
                true
            } else {
                false
            }
        });
        if newer {
            std::fs::create_dir_all(&self.dir).map_err(|e| e.to_string())?;
            let path = self.dir.join(format!("{}.roster", hex(&r.agreement)));
            crate::fsutil::write_atomic(&path, &r.to_bytes()).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Records blobs now on disk for `agreement` (appended, then synced).
    fn add(&self, agreement: &Key, blobs: &[([u8; 32], u32)]) -> Result<(), String> {
        let new: Vec<([u8; 32], u32)> = self.with(|m| {
            let h = m.entry(*agreement).or_default();
            blobs.iter().filter(|(id, _)| !h.blobs.contains_key(id)).copied().collect()
        });
        if new.is_empty() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| e.to_string())?;
        let path = self.dir.join(format!("{}.held", hex(agreement)));
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let mut buf = Vec::with_capacity(new.len() * RECORD);
        for (id, len) in &new {
            buf.extend_from_slice(id);
            buf.extend_from_slice(&len.to_le_bytes());
        }
        // A torn record left by a failed write or a crash is cut off first, so that what is
        // appended is read back whole; a write that fails now is cut off the same way.
        let whole = {
            let len = f.metadata().map_err(|e| format!("{}: {e}", path.display()))?.len();
            len - len % RECORD as u64
        };
        f.set_len(whole).map_err(|e| format!("{}: {e}", path.display()))?;
        if let Err(e) = f.write_all(&buf).and_then(|_| f.sync_data()) {
            let _ = f.set_len(whole);
            return Err(format!("{}: {e}", path.display()));
        }
        let ids: Vec<[u8; 32]> = new.iter().map(|(id, _)| *id).collect();
        self.with(|m| {
            let h = m.entry(*agreement).or_default();
            for (id, len) in new {
                if h.blobs.insert(id, len).is_none() {
                    h.bytes += len as u64;
                }
            }
        });
        // Held again: no longer released (a failure here leaves it in both: held wins).
        if let Err(e) = self.unrelease(agreement, &ids) {
            tracing::warn!(error = %e, "cannot update what a partner released");
        }
        Ok(())
    }

    /// Keeps the partner's sealed copy of its documents for `agreement`.
    fn keep_sealed(&self, agreement: &Key, sealed: &[u8]) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir).map_err(|e| e.to_string())?;
        let path = self.dir.join(format!("{}.sealed", hex(agreement)));
        crate::fsutil::write_atomic(&path, sealed).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The sealed copies kept under agreements whose partner's latest roster names `identity`
    /// (expired or not: a pool that lost every node cannot renew it; the agreement standing is
    /// checked by the caller), at most `budget` bytes of them.
    fn sealed_for(
        &self,
        identity: &Key,
        standing: impl Fn(&Key) -> bool,
        budget: usize,
    ) -> Vec<SealedCopy> {
        let agreements: Vec<Key> = self.with(|m| {
            m.iter()
                .filter(|(a, h)| {
                    standing(a) && h.roster.as_ref().is_some_and(|r| r.names(identity))
                })
                .map(|(a, _)| *a)
                .collect()
        });
        let mut out = Vec::new();
        let mut left = budget;
        for a in agreements {
            let path = self.dir.join(format!("{}.sealed", hex(&a)));
            if let Ok(bytes) = std::fs::read(&path)
                && bytes.len() <= left
            {
                left -= bytes.len();
                out.push(SealedCopy { agreement: a, bytes });
            }
        }
        out
    }

    /// Forgets blobs of `ids` held for `agreement` (the partner no longer lists them), at
    /// `now_ms`: the record is written again without them, atomically, and they are kept as
    /// released (see [`Held::released`]). The blobs forgotten and their bytes.
    fn forget(
        &self,
        agreement: &Key,
        ids: &[[u8; 32]],
        now_ms: i64,
    ) -> Result<(Vec<[u8; 32]>, u64), String> {
        let gone: Vec<[u8; 32]> = self.with(|m| {
            let Some(h) = m.get(agreement) else { return Vec::new() };
            ids.iter().filter(|id| h.blobs.contains_key(*id)).copied().collect()
        });
        if gone.is_empty() {
            return Ok((gone, 0));
        }
        // The records that stay, as they will be read back.
        let buf: Vec<u8> = self.with(|m| {
            let drop: HashSet<&[u8; 32]> = gone.iter().collect();
            let h = m.get(agreement).map(|h| &h.blobs).into_iter().flatten();
            h.filter(|(id, _)| !drop.contains(id))
                .flat_map(|(id, len)| id.iter().copied().chain(len.to_le_bytes()))
                .collect()
        });
        // Released first: a crash between the two writes leaves a blob both held and
        // released (held wins), never neither (which `gc` would take at once).
        let mut released = self.with(|m| m.get(agreement).map(|h| h.released.clone()));
        let released = released.get_or_insert_default();
        released.extend(gone.iter().map(|id| (*id, now_ms)));
        self.write_released(agreement, released)?;
        let path = self.dir.join(format!("{}.held", hex(agreement)));
        crate::fsutil::write_atomic(&path, &buf).map_err(|e| format!("{}: {e}", path.display()))?;
        let freed = self.with(|m| {
            let h = m.entry(*agreement).or_default();
            let mut freed = 0;
            for id in &gone {
                if let Some(len) = h.blobs.remove(id) {
                    freed += len as u64;
                }
                h.released.insert(*id, now_ms);
            }
            h.bytes -= freed;
            freed
        });
        Ok((gone, freed))
    }

    /// Writes the `.released` record of `agreement` (atomically; none when empty).
    fn write_released(
        &self,
        agreement: &Key,
        released: &HashMap<[u8; 32], i64>,
    ) -> Result<(), String> {
        let path = self.dir.join(format!("{}.released", hex(agreement)));
        if released.is_empty() {
            return match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(format!("{}: {e}", path.display()))
                }
                _ => Ok(()),
            };
        }
        let buf: Vec<u8> = released
            .iter()
            .flat_map(|(id, at)| id.iter().copied().chain(at.to_le_bytes()))
            .collect();
        std::fs::create_dir_all(&self.dir).map_err(|e| e.to_string())?;
        crate::fsutil::write_atomic(&path, &buf).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The blobs held for `agreement` that `listed` says are not listed (no copy of the map).
    pub fn unlisted(&self, agreement: &Key, listed: impl Fn(&[u8; 32]) -> bool) -> Vec<[u8; 32]> {
        self.with(|m| {
            m.get(agreement)
                .map(|h| h.blobs.keys().filter(|id| !listed(id)).copied().collect())
                .unwrap_or_default()
        })
    }

    /// Which of `ids` the partner of `agreement` released and this node still keeps.
    pub fn released_of(&self, agreement: &Key, ids: &[[u8; 32]]) -> HashSet<[u8; 32]> {
        self.with(|m| {
            let Some(h) = m.get(agreement) else { return HashSet::new() };
            ids.iter().filter(|id| h.released.contains_key(*id)).copied().collect()
        })
    }

    /// Whether released blobs are due a look for reclaiming (every [`SWEEP_EVERY`]; a
    /// reclaim reads every manifest this node keeps, and one that cannot run is tried again
    /// then, not at every pass).
    fn sweep_due(&self) -> bool {
        let mut s = lock(&self.swept);
        let due = s.is_none_or(|t| t.elapsed() >= SWEEP_EVERY);
        if due {
            *s = Some(Instant::now());
        }
        due
    }

    /// Released blobs kept longer than `keep` at `now_ms`, by agreement.
    pub fn released_past(&self, now_ms: i64, keep: Duration) -> Vec<(Key, Vec<[u8; 32]>)> {
        let limit = now_ms.saturating_sub(keep.as_millis() as i64);
        self.with(|m| {
            m.iter()
                .map(|(a, h)| {
                    (*a, h.released.iter().filter(|(_, t)| **t <= limit).map(|(i, _)| *i).collect())
                })
                .filter(|(_, v): &(Key, Vec<[u8; 32]>)| !v.is_empty())
                .collect()
        })
    }

    /// Drops `ids` from what `agreement`'s partner released (to be reclaimed from the store,
    /// or held again): those it had, with when they were released.
    fn unrelease(&self, agreement: &Key, ids: &[[u8; 32]]) -> Result<Vec<([u8; 32], i64)>, String> {
        let (dropped, left) = self.with(|m| {
            let Some(h) = m.get_mut(agreement) else { return (Vec::new(), None) };
            let dropped: Vec<([u8; 32], i64)> =
                ids.iter().filter_map(|id| h.released.remove(id).map(|t| (*id, t))).collect();
            let left = (!dropped.is_empty()).then(|| h.released.clone());
            (dropped, left)
        });
        match left {
            Some(left) => self.write_released(agreement, &left).map(|_| dropped),
            None => Ok(dropped),
        }
    }

    /// Records blobs as released by `agreement`'s partner at the given times.
    fn mark_released(&self, agreement: &Key, at: &[([u8; 32], i64)]) -> Result<(), String> {
        let all = self.with(|m| {
            let h = m.entry(*agreement).or_default();
            h.released.extend(at.iter().copied());
            h.released.clone()
        });
        self.write_released(agreement, &all)
    }

    /// Forgets everything held for `agreement` (it ended): its blobs go at the next `gc`.
    pub fn release(&self, agreement: &Key) -> Result<bool, String> {
        let had = self.with(|m| m.remove(agreement).is_some());
        for ext in ["held", "roster", "sealed", "released"] {
            let p = self.dir.join(format!("{}.{ext}", hex(agreement)));
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("{}: {e}", p.display())),
            }
        }
        Ok(had)
    }

    /// Whether `identity` may have the blobs of `ids` as a member of a partner: named by a
    /// roster in force of an agreement this node holds for, and each blob either held for it
    /// or not on this node at all (`here` says which are; those come back as not found).
    pub fn may_serve(
        &self,
        identity: &Key,
        ids: &[[u8; 32]],
        now_ms: i64,
        here: impl Fn(&[u8; 32]) -> bool,
    ) -> bool {
        self.with(|m| {
            m.values().any(|h| {
                // The latest roster, expired or not: a pool whose nodes are all gone cannot
                // renew it, and its members restore from here (holding more needs one in force).
                let _ = now_ms;
                let kept = |id: &[u8; 32]| h.blobs.contains_key(id) || h.released.contains_key(id);
                h.roster.as_ref().is_some_and(|r| r.names(identity))
                    && !(h.blobs.is_empty() && h.released.is_empty())
                    && ids.iter().all(|id| kept(id) || !here(id))
            })
        })
    }
}

/// Every blob held for partners under `dir` (for `gc`'s keep set).
pub fn held_on_disk(dir: &Path) -> HashSet<ChunkId> {
    read_dir(dir)
        .values()
        .flat_map(|h| h.blobs.keys().chain(h.released.keys()).map(|id| ChunkId(*id)))
        .collect()
}

fn read_dir(dir: &Path) -> HashMap<Key, Held> {
    let mut out: HashMap<Key, Held> = HashMap::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return out };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((stem, ext)) = name.split_once('.') else { continue };
        let Some(agreement) = crate::view::parse_key(stem) else { continue };
        match ext {
            "held" => {
                let Ok(b) = std::fs::read(e.path()) else { continue };
                let h = out.entry(agreement).or_default();
                // A torn last record (a crash while appending) is ignored: it was never synced.
                for r in b.chunks_exact(RECORD) {
                    let id: [u8; 32] = r[..32].try_into().unwrap_or([0; 32]);
                    let len = u32::from_le_bytes(r[32..].try_into().unwrap_or([0; 4]));
                    if h.blobs.insert(id, len).is_none() {
                        h.bytes += len as u64;
                    }
                }
            }
            "released" => {
                let Ok(b) = std::fs::read(e.path()) else { continue };
                let h = out.entry(agreement).or_default();
                for r in b.chunks_exact(RELEASED_RECORD) {
                    let id: [u8; 32] = r[..32].try_into().unwrap_or([0; 32]);
                    let at = i64::from_le_bytes(r[32..].try_into().unwrap_or([0; 8]));
                    h.released.insert(id, at);
                }
            }
            "roster" => {
                if let Ok(r) = std::fs::read(e.path())
                    .map_err(|e| e.to_string())
                    .and_then(|b| Roster::from_bytes(&b).map_err(|e| e.to_string()))
                {
                    out.entry(agreement).or_default().roster = Some(r);
                }
            }
            _ => {}
        }
    }
    out
}

/// A partner as a borrowing node last heard it.
#[derive(Debug, Clone)]
pub(super) struct Partner {
    /// The partner pool.
    pub pool: Key,
    /// Its name.
    pub name: String,
    /// Its holders and their shares.
    pub holders: Vec<OffsiteHolder>,
    /// When asked.
    pub at: Instant,
    /// Why the last ask failed, if it did.
    pub error: Option<String>,
    /// When it last answered (ms since the epoch, the pools' clock), since this node started.
    pub answered_ms: Option<i64>,
    /// When this node first asked it (the pools' clock): silence is counted from then when it
    /// never answered.
    pub first_asked_ms: i64,
    /// The digest of its last answer, sent with the next question (see
    /// [`FedRequest::Holders`]).
    pub digest: Option<[u8; 32]>,
}

impl Partner {
    /// How long it has not answered (ms), at `now_ms`.
    pub fn silent_ms(&self, now_ms: i64) -> i64 {
        now_ms - self.answered_ms.unwrap_or(self.first_asked_ms)
    }
}

/// An agreement's notice period (ms): how long a partner may be silent before its copies are
/// placed elsewhere.
fn notice_ms(ag: &Agreement) -> i64 {
    ag.offer.notice_days as i64 * 86_400_000
}

/// The nodes the `partner` side of `ag` named to be reached at (tickets that parse).
pub(super) fn partner_contacts(
    ag: &Agreement,
    partner: &Key,
) -> Vec<kith_node::net::ticket::NodeTicket> {
    let contact =
        if ag.offer.pool == *partner { &ag.offer.contact } else { &ag.acceptance.contact };
    contact.iter().filter_map(|t| t.parse().ok()).collect()
}

/// How many partner holders a pool's sealed copy goes to, with `partners` partners of
/// `holders` holders each.
pub fn sealed_targets(partners: usize, holders: usize) -> usize {
    partners * holders.min(SEALED_PER_PARTNER)
}

/// An audit being served for an agreement (one at a time each); let go when dropped.
struct AuditTurn<'a> {
    serving: &'a Mutex<HashSet<Key>>,
    agreement: Key,
}

impl<'a> AuditTurn<'a> {
    fn take(serving: &'a Mutex<HashSet<Key>>, agreement: Key) -> Option<AuditTurn<'a>> {
        lock(serving).insert(agreement).then_some(AuditTurn { serving, agreement })
    }
}

impl Drop for AuditTurn<'_> {
    fn drop(&mut self) {
        lock(self.serving).remove(&self.agreement);
    }
}

/// The audits of one partner's holder, as the borrowing node made them.
#[derive(Debug, Clone)]
pub struct PartnerAudit {
    /// The partner pool.
    pub partner: Key,
    /// When it was last audited.
    pub at: Instant,
    /// Audits passed and failed.
    pub passed: u64,
    /// Audits failed.
    pub failed: u64,
    /// Whether the last one failed, and why.
    pub failing: Option<String>,
}

/// What the last off-site pass of a pool found, per partner pool.
#[derive(Debug, Clone, Default)]
pub struct OffsiteStats {
    /// By partner: name, bytes placed there (copies counted), bytes confirmed held, holders.
    pub partners: BTreeMap<Key, PartnerStats>,
    /// The last problem, if the pass had one.
    pub error: Option<String>,
}

/// One partner's figures for one pool.
#[derive(Debug, Clone, Default)]
pub struct PartnerStats {
    /// The partner pool's name.
    pub name: String,
    /// Its nodes holding for this pool.
    pub holders: usize,
    /// Bytes placed there by this node's pass (copies counted).
    pub placed_bytes: u64,
    /// Of those, bytes its nodes confirmed they hold.
    pub held_bytes: u64,
    /// `held_bytes` by holder node (what this node signs partner receipts for).
    pub by_holder: BTreeMap<Key, u64>,
    /// How long it has not answered (ms), when it did not answer the last time it was asked.
    pub silent_ms: Option<i64>,
    /// Whether it has been silent past its agreement's notice: its copies are placed elsewhere.
    pub replaced: bool,
    /// When its agreement ends, once a side gave notice (ms since the epoch).
    pub leaving_ends_ms: Option<i64>,
    /// Whether a partner not leaving lends storage: a leaving one's copies are placed there.
    pub others_lend: bool,
}

impl Replicator {
    /// This node's proof that it asks for its identity, for partners.
    pub(super) fn asking(&self, ag: &Agreement, roster: &Roster) -> Asking {
        let node = self.pools.node();
        Asking {
            agreement: ag.id(),
            roster: roster.clone(),
            identity: self.pools.signer().author().key,
            sig: self.pools.signer().sign(&node_message(OFFSITE_CONTEXT, &node)),
        }
    }

    /// The agreements of `v` that lend this pool storage and stand, with this side's roster;
    /// those in notice last (placement uses them only when no other partner lends).
    pub(super) fn lending_agreements(
        &self,
        pool: &Key,
        v: &PoolView,
    ) -> Vec<(Agreement, Roster, bool)> {
        let now = self.pools.now_ms();
        let mut out = Vec::new();
        for e in v.federation.agreements.values() {
            let state = e.state(pool, now);
            let lent = e.agreement.lending_of(pool).map_or(0, |(_, lent)| lent.storage);
            let Some(r) = &e.roster else { continue };
            if lent == 0 || state == "ended" || state == "pending" {
                continue;
            }
            out.push((e.agreement.clone(), r.clone(), state == "leaving"));
        }
        out
    }

    /// [`Replicator::refresh_partners`], for the looks of `unlisted.rs`.
    pub(super) async fn refresh_partners_for_looks(&self, pool: &Key, v: &PoolView) {
        self.refresh_partners(pool, v).await
    }

    /// Asks each standing partner for its holders, when not asked for [`PARTNERS_EVERY`]:
    /// the partner's nodes named in the agreement first, then the holders it named last time.
    async fn refresh_partners(&self, pool: &Key, v: &PoolView) {
        self.refresh_partners_within(pool, v, PARTNERS_EVERY).await
    }

    /// [`Replicator::refresh_partners`], asking partners whose answer is older than `max_age`.
    async fn refresh_partners_within(&self, pool: &Key, v: &PoolView, max_age: Duration) {
        let Ok(node) = self.node() else { return };
        for (ag, roster, _) in self.lending_agreements(pool, v) {
            let id = ag.id();
            // Every PARTNERS_EVERY; sooner (each pass) while the partner has not answered yet.
            // (and while its roster, which lets its nodes fetch from this pool's, is unknown).
            let no_roster = self.lent.held(&id).roster.is_none();
            let due = lock(&self.partners).get(&id).is_none_or(|p| {
                let wait = if p.error.is_some() || p.holders.is_empty() || no_roster {
                    PARTNERS_RETRY
                } else {
                    max_age
                };
                p.at.elapsed() >= wait
            });
            if !due {
                continue;
            }
            let Some((partner, name)) = ag.partner_of(pool) else { continue };
            let mut tickets = partner_contacts(&ag, &partner);
            let (known, digest) = lock(&self.partners)
                .get(&id)
                .map(|p| (p.holders.iter().map(|h| *h.node).collect::<Vec<Key>>(), p.digest))
                .unwrap_or_default();
            let req =
                FedRequest::Holders(Box::new(self.asking(&ag, &roster)), digest.map(Into::into));
            let mut error = None;
            let mut got = None;
            // The digest of the answer taken (the last one's when it is unchanged).
            let mut got_digest = None;
            let mut peers: Vec<EndpointId> = Vec::new();
            for t in tickets.drain(..) {
                let _ = node.add_peer(&t).await;
                peers.push(t.id);
            }
            peers.extend(known.iter().filter_map(|k| EndpointId::from_bytes(k).ok()));
            peers.dedup();
            // Asked all at once, the first answer taken: a partner that cannot be reached
            // (its link down) costs one connection timeout, not one per node it has.
            let mut asks = tokio::task::JoinSet::new();
            for peer in peers {
                let (node, req) = (node.clone(), req.clone());
                asks.spawn(async move {
                    (peer, ask_fed(&node, peer, &req, Duration::from_secs(20)).await)
                });
            }
            while let Some(Ok((peer, answer))) = asks.join_next().await {
                match answer {
                    // The answer this node has (its holders' addresses learned then).
                    Ok(FedReply::Unchanged) if digest.is_some() => {
                        got = lock(&self.partners).get(&id).map(|p| p.holders.clone());
                        got_digest = digest;
                        break;
                    }
                    Ok(FedReply::Holders { roster, holders }) => {
                        got_digest = Some(
                            FedReply::Holders { roster: roster.clone(), holders: holders.clone() }
                                .digest(),
                        );
                        // The partner's holders may be on another LAN: learn their addresses.
                        for h in holders.iter().filter(|h| *h.node != self.pools.node()) {
                            if let Some(t) = h.ticket.as_deref().filter(|t| t.len() <= 2048)
                                && let Ok(t) = t.parse::<kith_node::net::ticket::NodeTicket>()
                                && t.id.as_bytes() == &*h.node
                            {
                                let _ = node.add_peer(&t).await;
                            }
                        }
                        if let Some(r) = roster
                            && r.check(&ag, self.pools.now_ms().max(0) as u64).is_ok()
                            && r.pool == partner
                        {
                            let _ = self.lent.note_roster(&r);
                        }
                        got = Some(holders);
                        break;
                    }
                    Ok(other) => error = Some(format!("{}: {other:?}", peer.fmt_short())),
                    Err(e) => error = Some(format!("{}: {e}", peer.fmt_short())),
                }
            }
            let now = self.pools.now_ms();
            let mut parts = lock(&self.partners);
            let prev = parts.get(&id).cloned();
            parts.insert(
                id,
                Partner {
                    pool: partner,
                    name: name.to_string(),
                    holders: got.clone().unwrap_or_else(|| {
                        prev.as_ref().map(|p| p.holders.clone()).unwrap_or_default()
                    }),
                    at: Instant::now(),
                    error: if got.is_some() { None } else { error },
                    answered_ms: if got.is_some() {
                        Some(now)
                    } else {
                        prev.as_ref().and_then(|p| p.answered_ms)
                    },
                    first_asked_ms: prev.as_ref().map_or(now, |p| p.first_asked_ms),
                    digest: if got.is_some() { got_digest } else { prev.and_then(|p| p.digest) },
                },
            );
        }
    }

    /// The partners' holders placement uses for `pool`: those of agreements in force, or, when
    /// none lends, those in notice. Zones are partner pools (copies in distinct pools first).
    fn offsite_holders(&self, pool: &Key, v: &PoolView) -> Vec<(Key, Holder)> {
        let ags = self.lending_agreements(pool, v);
        let parts = lock(&self.partners);
        let mut standing = Vec::new();
        let mut leaving = Vec::new();
        let now = self.pools.now_ms();
        for (ag, _, in_notice) in &ags {
            let Some(p) = parts.get(&ag.id()) else { continue };
            // A partner silent for longer than the agreement's notice is given up on, as if it
            // had given notice and left: its copies are placed with the others.
            if p.silent_ms(now) > notice_ms(ag) {
                continue;
            }
            for h in &p.holders {
                let holder =
                    Holder { node: *h.node, member: p.pool, zone: hex(&p.pool), weight: h.share };
                if *in_notice {
                    leaving.push((ag.id(), holder))
                } else {
                    standing.push((ag.id(), holder))
                }
            }
        }
        if standing.is_empty() { leaving } else { standing }
    }

    /// [`Replicator::find_object`], with the partners holding the pool's off-site copies
    /// asked first when this node does not know them yet (a device just restored).
    pub async fn find_object_with_partners(
        &self,
        spec: &str,
    ) -> Option<(Key, Key, Vec<EndpointId>)> {
        let (pool, _, _) = self.find_object(spec)?;
        if let Some(v) = self.pools.view_of(&pool)
            && v.charter.offsite_replicas > 0
        {
            self.refresh_partners(&pool, &v).await;
        }
        self.find_object(spec)
    }

    /// Whether this node releases at the partners' holders the off-site copies of the object
    /// with manifest `m`, taken out of `pool`: the pool borrows storage, and this node is one
    /// of the first [`RELEASERS`] of its live holders by the manifest's placement.
    pub(super) fn releases_offsite(&self, pool: &Key, m: &Key) -> bool {
        let Some(v) = self.pools.view_of(pool) else { return false };
        let me = self.pools.node();
        !self.lending_agreements(pool, &v).is_empty()
            && place(m, &self.placement_holders(&v), RELEASERS).iter().any(|h| h.node == me)
    }

    /// Queues blobs of objects `pool` took out, to release at its partners' holders.
    pub(super) fn queue_release(&self, pool: Key, ids: Vec<[u8; 32]>) {
        let mut r = lock(&self.offsite_release);
        let e = r.entry(pool).or_default();
        for id in ids {
            if e.ids.len() >= MAX_RELEASING {
                tracing::warn!(
                    "too many off-site copies waiting to be released: the rest stay at the partner until the agreement ends"
                );
                break;
            }
            e.ids.insert(id);
        }
    }

    /// Tells the partners' holders of `pool` to forget the blobs of objects it took out, but
    /// those another object of its still lists; when due (a failed try waits, longer each
    /// time). Partners that did not take it are asked again.
    pub(super) async fn release_offsite(&self, pool: Key) {
        let queued: Vec<[u8; 32]> = match lock(&self.offsite_release).get(&pool) {
            Some(r) if !r.ids.is_empty() && r.next.is_none_or(|t| Instant::now() >= t) => {
                r.ids.iter().copied().collect()
            }
            _ => return,
        };
        let (Some(v), Ok(node)) = (self.pools.view_of(&pool), self.node()) else { return };
        // The store keeps one copy of a blob for every object listing it: a blob another
        // object lists is not released. Unknown while a manifest cannot be read here.
        let (store, pools) = (node.store().clone(), self.pools.clone());
        let Ok((keep, unreadable)) =
            tokio::task::spawn_blocking(move || super::keep_set(&pools, &store)).await
        else {
            return;
        };
        let mut ok = unreadable.is_empty();
        if let Some(first) = unreadable.first() {
            tracing::debug!(why = %first, "releasing off-site copies later");
        }
        let ids: Vec<[u8; 32]> =
            queued.iter().filter(|id| !keep.contains(&ChunkId(**id))).copied().collect();
        let mut told = 0;
        for (ag, roster, _) in self.lending_agreements(&pool, &v) {
            if !ok || ids.is_empty() {
                break;
            }
            // The holders it named last (none known yet: asked again at the next pass).
            let Some(holders) = lock(&self.partners)
                .get(&ag.id())
                .map(|p| p.holders.iter().map(|h| *h.node).collect::<Vec<Key>>())
            else {
                ok = false;
                break;
            };
            for holder in holders {
                let Ok(peer) = EndpointId::from_bytes(&holder) else { continue };
                for batch in ids.chunks(MAX_OFFSITE_IDS) {
                    let req = FedRequest::Release {
                        asking: Box::new(self.asking(&ag, &roster)),
                        ids: batch.iter().map(|id| (*id).into()).collect(),
                    };
                    match ask_fed(node, peer, &req, Duration::from_secs(60)).await {
                        Ok(FedReply::Recorded(_)) => told += batch.len(),
                        answer => {
                            tracing::info!(holder = %peer.fmt_short(), answer = ?answer, "a partner's holder did not release copies: asked again later");
                            ok = false;
                            break;
                        }
                    }
                }
            }
        }
        let mut r = lock(&self.offsite_release);
        let Some(e) = r.get_mut(&pool) else { return };
        if ok {
            for id in &queued {
                e.ids.remove(id);
            }
            e.failures = 0;
            e.next = None;
            if !ids.is_empty() {
                tracing::info!(
                    blobs = ids.len(),
                    told,
                    "released off-site copies of objects taken out"
                );
                let gone: HashSet<[u8; 32]> = ids.into_iter().collect();
                lock(&self.offsite_confirmed).retain(|(_, id), _| !gone.contains(id));
            }
        } else {
            let wait = RELEASE_RETRY.saturating_mul(1 << e.failures.min(8)).min(RELEASE_RETRY_MAX);
            e.failures = e.failures.saturating_add(1);
            e.next = Some(Instant::now() + wait);
        }
    }

    /// All off-site holders of `pool` this node knows, for fetching (a restore).
    pub fn offsite_nodes(&self, pool: &Key) -> Vec<EndpointId> {
        let Some(v) = self.pools.view_of(pool) else { return Vec::new() };
        v.federation.agreements.keys().flat_map(|a| self.partner_holders(a)).collect()
    }

    /// One off-site pass over `pool`: refresh the partners, then make sure every blob of the
    /// objects this node is first for has its off-site copies.
    pub async fn offsite(&self, pool: Key) {
        let Some(v) = self.pools.view_of(&pool) else { return };
        let k = v.charter.offsite_replicas as usize;
        let me = self.pools.node();
        if k == 0 {
            // No off-site copies wanted: nothing is held for this pool any more as far as
            // this node's counts go (its looks release what partners still hold), and a later
            // `offsite_replicas 1` asks for every copy again.
            if lock(&self.offsite_stats).remove(&pool).is_some() {
                let holders: HashSet<Key> = v
                    .federation
                    .agreements
                    .keys()
                    .flat_map(|ag| {
                        lock(&self.partners)
                            .get(ag)
                            .map(|p| p.holders.iter().map(|h| *h.node).collect::<Vec<Key>>())
                            .unwrap_or_default()
                    })
                    .collect();
                lock(&self.offsite_confirmed).retain(|(h, _), _| !holders.contains(h));
            }
            return;
        }
        if v.node_owner(&me).is_none() {
            return;
        }
        self.refresh_partners(&pool, &v).await;
        let holders = self.offsite_holders(&pool, &v);
        tracing::debug!(pool = %v.charter.name, holders = holders.len(), "off-site pass");
        let mut st = OffsiteStats::default();
        for (_, p) in lock(&self.partners).iter() {
            if holders.iter().any(|(_, h)| h.member == p.pool) || p.error.is_some() {
                let e = st.partners.entry(p.pool).or_default();
                e.name = p.name.clone();
                e.holders = p.holders.len();
                if let Some(err) = &p.error
                    && st.error.is_none()
                {
                    st.error = Some(format!("partner {}: {err}", p.name));
                }
            }
        }
        if holders.is_empty() {
            st.error.get_or_insert_with(|| "no partner's holder is known yet".into());
            lock(&self.offsite_stats).insert(pool, st);
            return;
        }
        let plain: Vec<Holder> = holders.iter().map(|(_, h)| h.clone()).collect();
        let agreement_of: HashMap<Key, Key> = holders.iter().map(|(a, h)| (h.node, *a)).collect();
        // The objects this node is first for, by the manifest's placement among live holders.
        let live = self.placement_holders(&v);
        let from = self.pool_nodes(&v);
        let mut want: BTreeMap<Key, Vec<([u8; 32], u32)>> = BTreeMap::new();
        let mut placed_bytes: HashMap<Key, u64> = HashMap::new();
        let mut seen = HashSet::new();
        let store = match self.node() {
            Ok(n) => n.store().clone(),
            Err(_) => return,
        };
        for (_, oid, po) in v.objects() {
            if place(&po.manifest, &live, 1).first().map(|h| h.node) != Some(me) {
                continue;
            }
            let m = match self.manifest(&po.manifest, &from).await {
                Ok(m) if m.object.as_slice() == oid.as_slice() => m,
                Ok(_) => continue,
                Err(e) => {
                    st.error.get_or_insert(format!("object {}: {e}", hex(&oid[..8])));
                    continue;
                }
            };
            let mlen = store.blob_len(&ChunkId(po.manifest)).ok().flatten().unwrap_or(0);
            let blobs = std::iter::once((po.manifest, mlen))
                .chain(m.blobs.iter().map(|(id, l)| (**id, *l)));
            for (id, len) in blobs {
                if !seen.insert(id) {
                    continue;
                }
                for h in place(&id, &plain, k) {
                    *placed_bytes.entry(h.member).or_default() += len as u64;
                    want.entry(h.node).or_default().push((id, len));
                }
            }
        }
        let Ok(node) = self.node() else { return };
        let audit_every = Duration::from_millis(v.charter.audit_every_ms);
        let fresh = |c: &HashMap<(Key, [u8; 32]), Instant>, n: &Key, id: &[u8; 32]| {
            c.get(&(*n, *id)).is_some_and(|t| t.elapsed() < RECONFIRM)
        };
        let mut held_bytes: HashMap<Key, u64> = HashMap::new();
        let mut held_at: HashMap<Key, u64> = HashMap::new();
        let member_of: HashMap<Key, Key> =
            holders.iter().map(|(_, h)| (h.node, h.member)).collect();
        let hint: Vec<ByteArray<32>> = std::iter::once(me)
            .chain(from.iter().map(|p| *p.as_bytes()))
            .take(8)
            .map(Into::into)
            .collect();
        // Partners that did not answer this pass (their link is down, say) are not asked to
        // hold more now: each ask would wait out a connection timeout.
        let unreachable: HashSet<Key> =
            lock(&self.partners).values().filter(|p| p.error.is_some()).map(|p| p.pool).collect();
        for (holder, blobs) in want {
            let partner = member_of[&holder];
            let (done, todo): (Vec<_>, Vec<_>) = {
                let c = lock(&self.offsite_confirmed);
                blobs.into_iter().partition(|(id, _)| fresh(&c, &holder, id))
            };
            // A holder failing its audit counts nothing as held until it passes one again
            // (what it confirms meanwhile is its word only).
            let was_failing = self.partner_failing(&holder);
            if !was_failing {
                let b: u64 = done.iter().map(|(_, l)| *l as u64).sum();
                *held_bytes.entry(partner).or_default() += b;
                *held_at.entry(holder).or_default() += b;
            }
            if unreachable.contains(&partner) {
                continue;
            }
            let Some(ag) = agreement_of.get(&holder) else { continue };
            let Some(e) = v.federation.agreements.get(ag) else { continue };
            let Some(roster) = &e.roster else { continue };
            let Ok(peer) = EndpointId::from_bytes(&holder) else { continue };
            let mut todo = todo;
            if !done.is_empty() && self.partner_audit_due(&holder, audit_every) {
                let asking = self.asking(&e.agreement, roster);
                if let Some(failed) =
                    self.audit_partner(node, pool, peer, partner, asking, &done).await
                {
                    // Its confirmations no longer count: held bytes drop, and its copies are
                    // asked for again (the holder fetches what it lost).
                    st.error
                        .get_or_insert(format!("{} failed an audit: {failed}", peer.fmt_short()));
                    lock(&self.offsite_confirmed).retain(|(n, _), _| *n != holder);
                    let lost: u64 = done.iter().map(|(_, l)| *l as u64).sum();
                    if !was_failing && let Some(b) = held_bytes.get_mut(&partner) {
                        *b = b.saturating_sub(lost);
                    }
                    if !was_failing && let Some(b) = held_at.get_mut(&holder) {
                        *b = b.saturating_sub(lost);
                    }
                    todo.extend(done.iter().copied());
                }
            }
            let failing = self.partner_failing(&holder);
            for batch in todo.chunks(MAX_OFFSITE_IDS) {
                let req = FedRequest::Hold {
                    asking: Box::new(self.asking(&e.agreement, roster)),
                    blobs: batch.iter().map(|(id, l)| ((*id).into(), *l)).collect(),
                    from: hint.clone(),
                };
                let bytes: u64 = batch.iter().map(|(_, l)| *l as u64).sum();
                let limit = Duration::from_secs(600 + bytes / (1 << 20));
                tracing::debug!(holder = %peer.fmt_short(), blobs = batch.len(), bytes, "asking a partner's holder to hold");
                let answer = ask_fed(node, peer, &req, limit).await;
                tracing::debug!(holder = %peer.fmt_short(), answer = ?answer.as_ref().map(|a| match a { FedReply::Has(h) => format!("has {}/{}", h.iter().filter(|x| **x).count(), h.len()), other => format!("{other:?}") }), "a partner's holder answered");
                match answer {
                    Ok(FedReply::Has(have)) => {
                        let mut c = lock(&self.offsite_confirmed);
                        for ((id, len), ok) in batch.iter().zip(have) {
                            if ok {
                                c.insert((holder, *id), Instant::now());
                                if !failing {
                                    *held_bytes.entry(partner).or_default() += *len as u64;
                                    *held_at.entry(holder).or_default() += *len as u64;
                                }
                            }
                        }
                    }
                    Ok(FedReply::Refused(why) | FedReply::NotHere(why)) => {
                        st.error.get_or_insert(format!("{} refused: {why}", peer.fmt_short()));
                        break;
                    }
                    Ok(other) => {
                        st.error.get_or_insert(format!("{}: {other:?}", peer.fmt_short()));
                        break;
                    }
                    Err(e) => {
                        st.error.get_or_insert(format!("{}: {e}", peer.fmt_short()));
                        break;
                    }
                }
            }
        }
        for (p, s) in st.partners.iter_mut() {
            s.placed_bytes = placed_bytes.get(p).copied().unwrap_or(0);
            s.held_bytes = held_bytes.get(p).copied().unwrap_or(0);
            s.by_holder = held_at
                .iter()
                .filter(|(h, _)| member_of.get(*h) == Some(p))
                .map(|(h, b)| (*h, *b))
                .collect();
        }
        if let Some(e) = &st.error {
            tracing::warn!(pool = %hex(&pool[..4]), error = %e, "off-site pass incomplete");
        }
        lock(&self.offsite_stats).insert(pool, st);
    }

    /// Whether `holder` is due an audit: never audited, last audited `every` ago or more, or
    /// failing its last one (audited again at each pass until it passes).
    fn partner_audit_due(&self, holder: &Key, every: Duration) -> bool {
        lock(&self.partner_audits)
            .get(holder)
            .is_none_or(|a| a.failing.is_some() || a.at.elapsed() >= every)
    }

    /// Whether `holder` failed its last audit.
    fn partner_failing(&self, holder: &Key) -> bool {
        lock(&self.partner_audits).get(holder).is_some_and(|a| a.failing.is_some())
    }

    /// Audits partner holder `peer` (of pool `partner`): one random 1 KiB chunk of one random
    /// blob of `held` (what it confirmed), with the proof it belongs to the blob. Records the
    /// verdict; why it failed, if it did. A holder that cannot be reached is not judged.
    async fn audit_partner(
        &self,
        node: &Arc<kith_node::net::Node>,
        pool: Key,
        peer: EndpointId,
        partner: Key,
        asking: crate::fed::Asking,
        held: &[([u8; 32], u32)],
    ) -> Option<String> {
        let (id, len) = held[(self.random() % held.len() as u64) as usize];
        let index = self.random() % crate::proof::chunks(len as u64);
        let agreement = asking.agreement;
        let req = FedRequest::Audit { asking: Box::new(asking), id: id.into(), index };
        let verdict = match ask_fed(node, peer, &req, Duration::from_secs(30)).await {
            Ok(FedReply::Proof(p)) => {
                crate::proof::check(&id, len as u64, index, &p).map_err(|e| e.to_string())
            }
            Ok(FedReply::Refused(why)) => Err(format!("refused: {why}")),
            // Busy (its slots taken, or another audit of this pool under way): not judged.
            Ok(FedReply::NotHere(why)) => {
                tracing::debug!(peer = %peer.fmt_short(), %why, "partner audit not taken now");
                return None;
            }
            Ok(other) => Err(format!("unexpected answer {other:?}")),
            Err(e) => {
                tracing::debug!(peer = %peer.fmt_short(), error = %e, "partner audit not delivered");
                return None;
            }
        };
        // Evidence in the ledger: the partner line counts the audits of its holders.
        self.usage.partner_audited(pool, agreement, true, verdict.is_ok());
        let mut audits = lock(&self.partner_audits);
        let a = audits.entry(*peer.as_bytes()).or_insert(PartnerAudit {
            partner,
            at: Instant::now(),
            passed: 0,
            failed: 0,
            failing: None,
        });
        a.at = Instant::now();
        match verdict {
            Ok(()) => {
                a.passed += 1;
                a.failing = None;
                None
            }
            Err(why) => {
                let why = format!("blob {}: {why}", hex(&id[..8]));
                tracing::warn!(holder = %peer.fmt_short(), reason = %why, "a partner's holder failed an audit");
                a.failed += 1;
                a.failing = Some(why.clone());
                Some(why)
            }
        }
    }

    /// Whether each of `ids` is held here for `agreement`: recorded for the partner and in the
    /// store.
    async fn held_here(&self, agreement: &Key, ids: Vec<[u8; 32]>) -> Result<Vec<bool>, String> {
        let recorded = self.lent.has_many(agreement, &ids);
        let store = self.node()?.store().clone();
        tokio::task::spawn_blocking(move || {
            ids.iter()
                .zip(recorded)
                .map(|(id, r)| r && store.has(&ChunkId(*id)).unwrap_or(false))
                .collect()
        })
        .await
        .map_err(|e| e.to_string())
    }

    /// The audits of `partner`'s holders this node made: passed, failed, and why the last
    /// failing one failed.
    pub fn partner_audits(&self, partner: &Key) -> (u64, u64, Option<String>) {
        let audits = lock(&self.partner_audits);
        let mine = audits.values().filter(|a| a.partner == *partner);
        mine.fold((0, 0, None), |(p, f, why), a| {
            (p + a.passed, f + a.failed, why.or_else(|| a.failing.clone()))
        })
    }

    /// The partner's nodes that hold for this node's pool under `agreement`, as its last answer
    /// named them (none before it answered).
    pub fn partner_holders(&self, agreement: &Key) -> Vec<EndpointId> {
        let parts = lock(&self.partners);
        let holders = parts.get(agreement).map(|p| p.holders.as_slice()).unwrap_or_default();
        holders.iter().filter_map(|h| EndpointId::from_bytes(&h.node).ok()).collect()
    }

    /// The latest off-site figures of `pool` (on this node: the objects it is first for).
    pub fn offsite_stats(&self, pool: &Key) -> Option<OffsiteStats> {
        lock(&self.offsite_stats).get(pool).cloned()
    }

    /// Whether a partner's member `identity` may fetch `ids` from this node (see
    /// [`Lent::may_serve`]).
    pub(crate) fn partner_may_fetch(&self, identity: &Key, ids: &[[u8; 32]]) -> bool {
        let Ok(node) = self.node() else { return false };
        let store = node.store();
        let here = |id: &[u8; 32]| store.has(&ChunkId(*id)).unwrap_or(true);
        self.lent.may_serve(identity, ids, self.pools.now_ms(), here)
    }

    /// What this node holds for partners: by agreement, blobs and bytes.
    pub fn lent(&self) -> &Lent {
        &self.lent
    }

    /// Checks a partner's request: the agreement is one of a pool this node holds, in force
    /// (`growing`: not in notice either), the roster is the partner's and in force and names
    /// the asker's identity, and the asking node is a device of it. The pool's view, the
    /// agreement and what the partner is lent.
    pub(super) fn check_asking(
        &self,
        peer: &EndpointId,
        a: &Asking,
        growing: bool,
    ) -> Result<(Key, Arc<PoolView>, Agreement, u64), String> {
        let now = self.pools.now_ms();
        let (pool, v) = self
            .pools
            .list()
            .into_iter()
            .find(|(_, v)| v.federation.agreements.contains_key(&a.agreement))
            .ok_or("this node holds no pool in that agreement")?;
        let e = &v.federation.agreements[&a.agreement];
        let ag = e.agreement.clone();
        let state = e.state(&pool, now);
        if state == "ended" {
            return Err(format!(
                "the agreement between {} and {} has ended: nothing is held or served under it",
                ag.offer.pool_name, ag.acceptance.pool_name
            ));
        }
        if growing && state == "leaving" {
            return Err("the agreement is in its notice: this pool takes no new copies".into());
        }
        let (partner, _) = ag.partner_of(&pool).ok_or("not this pool's agreement")?;
        if a.roster.pool != partner {
            return Err("the roster is not the partner's".into());
        }
        match a.roster.check(&ag, now.max(0) as u64) {
            Ok(()) => {}
            // Restoring from here takes the latest roster even once it ran out; holding more
            // takes one in force.
            Err(kith_federation::FedError::RosterExpired(_)) if !growing => {}
            Err(e) => return Err(e.to_string()),
        }
        if !a.roster.names(&a.identity) {
            return Err("the partner's roster does not name the asking identity".into());
        }
        let node = *peer.as_bytes();
        if !verify_device(&a.identity, &node, &node_message(OFFSITE_CONTEXT, &node), &a.sig) {
            return Err("the asking node's proof does not verify".into());
        }
        let lent = ag.lending_of(&pool).map_or(0, |(lends, _)| lends.storage);
        self.lent.note_roster(&a.roster)?;
        Ok((pool, Arc::new(v), ag, lent))
    }

    /// [`Replicator::check_asking`] for a request that drops copies or lists them: the
    /// roster must also be in force, and the newest of the agreement this node has seen must
    /// name the asking identity too (a member taken out of the partner pool keeps its older
    /// roster, in force for up to 30 days, until a node of that pool asks with a newer one).
    pub(super) fn check_current(
        &self,
        peer: &EndpointId,
        asking: &Asking,
    ) -> Result<Agreement, String> {
        let (_, _, ag, _) = self.check_asking(peer, asking, false)?;
        asking.roster.check(&ag, self.pools.now_ms().max(0) as u64).map_err(|e| e.to_string())?;
        match self.lent.roster(&ag.id()) {
            Some(r) if !r.names(&asking.identity) => {
                Err("your pool's newest roster does not name the asking identity".into())
            }
            _ => Ok(ag),
        }
    }

    /// This pool's nodes that lend storage, each with its share of `lent` (by what it offers).
    fn shares(&self, v: &PoolView, lent: u64) -> Vec<OffsiteHolder> {
        let live = self.live_holders(v);
        let total: u128 = live.iter().map(|h| h.weight as u128).sum();
        if total == 0 {
            return Vec::new();
        }
        let (me, node) = (self.pools.node(), self.node().ok());
        let peers = node.map(|n| n.peers()).unwrap_or_default();
        let ticket = |k: &Key| -> Option<String> {
            let n = node?;
            if *k == me {
                return Some(n.ticket().to_string());
            }
            let p = peers.iter().find(|p| p.id.as_bytes() == k && !p.addrs.is_empty())?;
            Some(
                kith_node::net::ticket::NodeTicket { id: p.id, addrs: p.addrs.clone() }.to_string(),
            )
        };
        live.iter()
            .map(|h| OffsiteHolder {
                node: h.node.into(),
                share: (lent as u128 * h.weight as u128 / total).min(h.weight as u128) as u64,
                ticket: ticket(&h.node),
            })
            .filter(|h| h.share > 0)
            .collect()
    }

    /// Answers a partner's off-site request.
    pub(crate) async fn serve_offsite(&self, peer: EndpointId, req: FedRequest) -> FedReply {
        match self.serve_offsite_inner(peer, req).await {
            Ok(r) => r,
            Err(e) => FedReply::Refused(e),
        }
    }

    async fn serve_offsite_inner(
        &self,
        peer: EndpointId,
        req: FedRequest,
    ) -> Result<FedReply, String> {
        match req {
            FedRequest::Holders(a, known) => {
                let (_, v, ag, lent) = self.check_asking(&peer, &a, false)?;
                let roster = v.federation.agreements.get(&ag.id()).and_then(|e| e.roster.clone());
                // Asked every minute by every borrowing node: the same answer again is one
                // word.
                Ok(FedReply::holders(roster, self.shares(&v, lent), known.as_deref()))
            }
            FedRequest::Sites(a) => self.serve_sites(&peer, &a),
            FedRequest::SitesChanged(agreement) => {
                // Unchecked: it only makes this edge ask (and check) sooner, once a second at
                // most.
                self.edges.poke(&agreement);
                Ok(FedReply::Recorded("noted".into()))
            }
            FedRequest::Audit { asking, id, index } => {
                let (pool, ..) = self.check_asking(&peer, &asking, false)?;
                // One audit at a time per agreement: each reads and hashes a whole blob.
                let Some(_turn) = AuditTurn::take(&self.audits_serving, asking.agreement) else {
                    return Ok(FedReply::NotHere(
                        "busy: one audit at a time for your pool; ask again later".into(),
                    ));
                };
                let id = *id;
                if !self.lent.has_many(&asking.agreement, &[id]).first().copied().unwrap_or(false) {
                    return Err("that blob is not held here for your pool".into());
                }
                // As within a pool: what no longer reads back is forgotten, so the partner's
                // next `Hold` has it fetched again.
                let answer = self.prove_held(id, index, "held for your pool but lost here").await;
                // A holder knows its own verdict: a proof from the blob it holds passes.
                self.usage.partner_audited(pool, asking.agreement, false, answer.is_ok());
                answer.map(FedReply::Proof)
            }
            FedRequest::Has { asking, ids } => {
                self.check_asking(&peer, &asking, false)?;
                if ids.len() > MAX_OFFSITE_IDS {
                    return Err(format!("at most {MAX_OFFSITE_IDS} ids per request"));
                }
                let ids: Vec<[u8; 32]> = ids.iter().map(|id| **id).collect();
                Ok(FedReply::Has(self.held_here(&asking.agreement, ids).await?))
            }
            FedRequest::Hold { asking, blobs, from } => {
                let (_, v, ag, lent) = self.check_asking(&peer, &asking, true)?;
                if blobs.len() > MAX_OFFSITE_IDS {
                    return Err(format!("at most {MAX_OFFSITE_IDS} blobs per request"));
                }
                if blobs.iter().any(|(_, l)| *l == 0 || *l > kith_node::store::pack::MAX_BLOB_BYTES)
                {
                    return Err("a blob's length is out of bounds".into());
                }
                let turn = self.lent.hold_lock(&ag.id());
                tracing::debug!(peer = %peer.fmt_short(), blobs = blobs.len(), "a partner asks this node to hold");
                let _turn = turn.lock().await;
                tracing::debug!(peer = %peer.fmt_short(), "holding for a partner: its turn");
                let me = self.pools.node();
                let share = self
                    .shares(&v, lent)
                    .into_iter()
                    .find(|h| *h.node == me)
                    .map(|h| h.share)
                    .ok_or("this node lends no storage to the partner")?;
                let held_bytes = self.lent.bytes(&ag.id());
                let all: Vec<[u8; 32]> = blobs.iter().map(|(id, _)| **id).collect();
                let known = self.lent.has_many(&ag.id(), &all);
                let new: Vec<([u8; 32], u32)> = blobs
                    .iter()
                    .zip(&known)
                    .filter(|(_, k)| !**k)
                    .map(|((id, l), _)| (**id, *l))
                    .collect();
                let claimed: u64 = new.iter().map(|(_, l)| *l as u64).sum();
                if held_bytes + claimed > share {
                    return Err(format!(
                        "that is more than this node's share of what its pool lends yours ({} held of {}, {} more asked)",
                        crate::fmt::size(held_bytes),
                        crate::fmt::size(share),
                        crate::fmt::size(claimed)
                    ));
                }
                let node = self.node()?;
                // Blobs this node already has for another reason are not taken as the
                // partner's (serving them would hand out what it was not given), but for the
                // partner's own site content this node keeps as its edge under this agreement.
                let store = node.store().clone();
                let ids: Vec<[u8; 32]> = new.iter().map(|(id, _)| *id).collect();
                let edge = self.edges.kept(&ag.id());
                // Nor are those the partner released lately: taken back as they are.
                let released = self.lent.released_of(&ag.id(), &ids);
                let present = tokio::task::spawn_blocking(move || {
                    ids.iter()
                        .map(|id| {
                            !edge.contains(id)
                                && !released.contains(id)
                                && store.has(&ChunkId(*id)).unwrap_or(true)
                        })
                        .collect::<Vec<_>>()
                })
                .await
                .map_err(|e| e.to_string())?;
                let mut new: Vec<([u8; 32], u32)> =
                    new.into_iter().zip(present).filter(|(_, p)| !p).map(|(b, _)| b).collect();
                // Blobs recorded as held here but gone from the store (a disk that lost them,
                // a scrub after damage, found by the partner's audit): fetched again, already
                // counted in what is held.
                let store = node.store().clone();
                let recorded: Vec<([u8; 32], u32)> = blobs
                    .iter()
                    .zip(&known)
                    .filter(|(_, k)| **k)
                    .map(|((id, l), _)| (**id, *l))
                    .collect();
                let lost: Vec<([u8; 32], u32)> = tokio::task::spawn_blocking(move || {
                    recorded
                        .into_iter()
                        .filter(|(id, _)| !store.has(&ChunkId(*id)).unwrap_or(true))
                        .collect()
                })
                .await
                .map_err(|e| e.to_string())?;
                let again: HashSet<[u8; 32]> = lost.iter().map(|(id, _)| *id).collect();
                if !lost.is_empty() {
                    tracing::warn!(
                        blobs = lost.len(),
                        "fetching again blobs held for a partner that were lost here"
                    );
                }
                new.extend(lost);
                let mut sources = vec![peer];
                sources.extend(
                    from.iter()
                        .take(8)
                        .filter_map(|k| EndpointId::from_bytes(k).ok())
                        .filter(|p| *p != peer),
                );
                let what = format!(
                    "off-site copies for pool {}",
                    ag.partner_of(&ag.acceptance.pool).map_or("", |(_, n)| n)
                );
                let mut total = held_bytes;
                // In small rounds, each checked on disk against the lengths claimed and the
                // share before the next: a partner that lies about lengths gets one round.
                for round in new.chunks(OFFSITE_ROUND) {
                    let ids: Vec<ChunkId> = round.iter().map(|(id, _)| ChunkId(*id)).collect();
                    if let Err(e) = node
                        .fetch_missing_shared(&what, ids, None, Some(sources.clone()), None)
                        .await
                    {
                        tracing::info!(error = %e, "off-site fetch incomplete");
                    }
                    let store = node.store().clone();
                    let round = round.to_vec();
                    let got = tokio::task::spawn_blocking(move || {
                        round
                            .iter()
                            .filter_map(|(id, claimed)| {
                                let l = store.blob_len(&ChunkId(*id)).ok().flatten()?;
                                Some((*id, l, *claimed))
                            })
                            .collect::<Vec<_>>()
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                    if got.iter().any(|(_, l, claimed)| l > claimed) {
                        return Err("a blob is longer than its length said; nothing more is held for this request".into());
                    }
                    total += got
                        .iter()
                        .filter(|(id, _, _)| !again.contains(id))
                        .map(|(_, l, _)| *l as u64)
                        .sum::<u64>();
                    let got: Vec<([u8; 32], u32)> =
                        got.into_iter().map(|(id, l, _)| (id, l)).collect();
                    self.lent.add(&ag.id(), &got)?;
                    if total > share {
                        return Err(
                            "that is more than this node's share of what its pool lends yours"
                                .into(),
                        );
                    }
                }
                Ok(FedReply::Has(self.held_here(&ag.id(), all).await?))
            }
            FedRequest::Release { asking, ids } => {
                let ag = self.check_current(&peer, &asking)?;
                if ids.len() > MAX_OFFSITE_IDS {
                    return Err(format!("at most {MAX_OFFSITE_IDS} ids per request"));
                }
                let ids: Vec<[u8; 32]> = ids.iter().map(|id| **id).collect();
                // Not waited for: a `Hold` may take minutes, and this request holds one of
                // the few slots every partner's requests share.
                let turn = self.lent.hold_lock(&ag.id());
                let Ok(_turn) = turn.try_lock() else {
                    return Ok(FedReply::NotHere(
                        "busy holding copies for your pool; release again later".into(),
                    ));
                };
                let (gone, freed) = self.lent.forget(&ag.id(), &ids, self.pools.now_ms())?;
                if !gone.is_empty() {
                    // Their space is free at once; the blobs stay a while (RELEASED_KEEP).
                    tracing::info!(
                        blobs = gone.len(),
                        bytes = freed,
                        "a partner released copies it no longer lists"
                    );
                }
                Ok(FedReply::Recorded(format!("released {} blobs", gone.len())))
            }
            FedRequest::Receipt { asking, receipt } => {
                self.accept_partner_receipt(&peer, &asking, &receipt)
            }
            FedRequest::Unlisted { asking, salt, k, bits } => {
                let ag = self.check_current(&peer, &asking)?;
                let sieve = super::unlisted::Sieve::from_parts(salt, k, bits)?;
                Ok(FedReply::Ids(self.unlisted_here(&ag.id(), &sieve)))
            }
            FedRequest::Keep { asking, sealed } => {
                let (_, _, ag, _) = self.check_asking(&peer, &asking, false)?;
                // Replacing the copy a restore depends on takes a roster in force.
                asking
                    .roster
                    .check(&ag, self.pools.now_ms().max(0) as u64)
                    .map_err(|e| e.to_string())?;
                if sealed.len() > MAX_SEALED {
                    return Err(format!(
                        "a sealed copy is at most {}",
                        crate::fmt::size(MAX_SEALED as u64)
                    ));
                }
                self.lent.keep_sealed(&asking.agreement, &sealed)?;
                Ok(FedReply::Recorded("kept".into()))
            }
            FedRequest::Sealed { identity, sig } => {
                let node = *peer.as_bytes();
                if !verify_device(&identity, &node, &node_message(OFFSITE_CONTEXT, &node), &sig) {
                    return Err("the asking node's proof does not verify".into());
                }
                let now = self.pools.now_ms();
                let views = self.pools.list();
                let standing = |a: &Key| {
                    views.iter().any(|(pool, v)| {
                        v.federation
                            .agreements
                            .get(a)
                            .is_some_and(|e| e.state(pool, now) != "ended")
                    })
                };
                Ok(FedReply::Sealed(self.lent.sealed_for(&identity, standing, MAX_SEALED)))
            }
            _ => Err("not an off-site request".into()),
        }
    }

    /// Forgets what this node held for agreements that have ended (their blobs go at the next
    /// `gc`); at most once a pass.
    pub(super) fn release_ended(&self) {
        let now = self.pools.now_ms();
        let ended: Vec<Key> = self
            .lent
            .totals()
            .keys()
            .filter(|a| {
                self.pools.list().iter().any(|(pool, v)| {
                    v.federation.agreements.get(*a).is_some_and(|e| e.state(pool, now) == "ended")
                })
            })
            .copied()
            .collect();
        for a in ended {
            // Not while a `Hold` or a release of it runs (it would write its record again
            // after): the next pass.
            let turn = self.lent.hold_lock(&a);
            let Ok(_turn) = turn.try_lock() else { continue };
            match self.lent.release(&a) {
                Ok(true) => {
                    tracing::info!(agreement = %hex(&a[..8]), "the federation agreement ended: released what this node held for the partner")
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "cannot release off-site copies"),
            }
        }
    }

    /// Reclaims from the store what partners released longer than [`RELEASED_KEEP`] ago
    /// (what nothing else here keeps); those the reclaim cannot take yet stay released.
    pub(super) async fn sweep_released(&self) {
        if !self.lent.sweep_due() {
            return;
        }
        for (agreement, ids) in self.lent.released_past(self.pools.now_ms(), RELEASED_KEEP) {
            let turn = self.lent.hold_lock(&agreement);
            let Ok(_turn) = turn.try_lock() else { continue };
            // Out of the keep set first (`held_on_disk` lists released blobs too).
            let Ok(at) = self.lent.unrelease(&agreement, &ids) else { continue };
            match self.reclaim_blobs(ids.clone()).await {
                Ok(()) => tracing::info!(
                    blobs = ids.len(),
                    "reclaimed copies a partner released a week ago"
                ),
                Err(e) => {
                    // Released again, as they were, so a `Hold` still takes them back.
                    tracing::info!(error = %e, "released copies wait for the next sweep");
                    if let Err(e) = self.lent.mark_released(&agreement, &at) {
                        tracing::warn!(error = %e, "cannot update what a partner released");
                    }
                }
            }
        }
    }

    /// Renews this node's identity's rosters where it is its pool's signer of an agreement.
    pub(super) fn renew_rosters(&self) {
        let now = self.pools.now_ms();
        let me = self.pools.signer().author().key;
        for (pool, v) in self.pools.list() {
            for (id, e) in &v.federation.agreements {
                let g = &e.agreement;
                let signer = if g.offer.pool == pool { g.offer.by } else { g.acceptance.by };
                if signer != me {
                    continue;
                }
                match self
                    .pools
                    .with_pool(&hex(&pool), |p| p.renew_roster(self.pools.signer(), id, now))
                {
                    Ok(true) => self.pools.wake(),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(pool = %v.charter.name, error = %e, "cannot renew the federation roster")
                    }
                }
            }
        }
    }
}

impl Replicator {
    /// Where `pool`'s off-site copies are: for every partner, the bytes placement gives its
    /// holders (copies counted) and the bytes they say they hold, asked now.
    pub async fn offsite_health(self: &Arc<Self>, pool: Key) -> Result<OffsiteStats, String> {
        let v = self.pools.view_of(&pool).ok_or("no such pool here")?;
        let k = v.charter.offsite_replicas as usize;
        let mut st = OffsiteStats::default();
        if k == 0 {
            return Ok(st);
        }
        // Someone looking at the pool wants it as it is now: partners asked within 5 s, but
        // not waited for past SHOW_WAIT (a partner out of reach would hold `kith pool show` up
        // for a connection timeout; the last answer, or its silence, is shown instead). The
        // asking goes on and records what it finds.
        let (this, v2) = (self.clone(), v.clone());
        let ask = tokio::spawn(async move {
            this.refresh_partners_within(&pool, &v2, PARTNERS_FRESH).await;
        });
        let _ = tokio::time::timeout(SHOW_WAIT, ask).await;
        let holders = self.offsite_holders(&pool, &v);
        let now = self.pools.now_ms();
        for (aid, p) in lock(&self.partners).iter() {
            if let Some(fe) = v.federation.agreements.get(aid) {
                let e = st.partners.entry(p.pool).or_default();
                e.name = p.name.clone();
                e.holders = p.holders.len();
                if let Some(err) = &p.error {
                    st.error.get_or_insert(format!("partner {}: {err}", p.name));
                    let silent = p.silent_ms(now);
                    e.silent_ms = Some(silent);
                    e.replaced = silent > notice_ms(&fe.agreement);
                }
            }
        }
        // Partners in notice: until when, and whether the copies go to another (placement
        // takes a leaving partner's holders only when no other lends).
        let others_lend = holders.iter().any(|(a, _)| {
            v.federation.agreements.get(a).is_some_and(|f| f.state(&pool, now) != "leaving")
        });
        for fe in v.federation.agreements.values() {
            let Some((partner, name)) = fe.agreement.partner_of(&pool) else { continue };
            let lends = fe.agreement.lending_of(&pool).is_some_and(|(_, l)| l.storage > 0);
            if lends && fe.state(&pool, now) == "leaving" {
                let e = st.partners.entry(partner).or_default();
                e.name = name.to_string();
                e.leaving_ends_ms = fe.ends_ms();
                e.others_lend = others_lend;
            }
        }
        let plain: Vec<Holder> = holders.iter().map(|(_, h)| h.clone()).collect();
        let agreement_of: HashMap<Key, Key> = holders.iter().map(|(a, h)| (h.node, *a)).collect();
        let from = self.pool_nodes(&v);
        let node = self.node()?;
        let mut want: BTreeMap<Key, Vec<([u8; 32], u32)>> = BTreeMap::new();
        let mut seen = HashSet::new();
        for (_, oid, po) in v.objects() {
            let m = match self.manifest(&po.manifest, &from).await {
                Ok(m) => m,
                Err(e) => {
                    st.error.get_or_insert(format!("object {}: {e}", hex(&oid[..8])));
                    continue;
                }
            };
            let mlen = node.store().blob_len(&ChunkId(po.manifest)).ok().flatten().unwrap_or(0);
            let blobs = std::iter::once((po.manifest, mlen))
                .chain(m.blobs.iter().map(|(id, l)| (**id, *l)));
            for (id, len) in blobs {
                if seen.insert(id) {
                    for h in place(&id, &plain, k) {
                        want.entry(h.node).or_default().push((id, len));
                    }
                }
            }
        }
        let member_of: HashMap<Key, Key> =
            holders.iter().map(|(_, h)| (h.node, h.member)).collect();
        for (holder, blobs) in want {
            let partner = member_of[&holder];
            let placed: u64 = blobs.iter().map(|(_, l)| *l as u64).sum();
            st.partners.entry(partner).or_default().placed_bytes += placed;
            let Some(e) = agreement_of.get(&holder).and_then(|a| v.federation.agreements.get(a))
            else {
                continue;
            };
            let Some(roster) = &e.roster else { continue };
            let Ok(peer) = EndpointId::from_bytes(&holder) else { continue };
            let mut held = 0;
            for batch in blobs.chunks(MAX_OFFSITE_IDS) {
                let req = FedRequest::Has {
                    asking: Box::new(self.asking(&e.agreement, roster)),
                    ids: batch.iter().map(|(id, _)| (*id).into()).collect(),
                };
                match ask_fed(node, peer, &req, Duration::from_secs(20)).await {
                    Ok(FedReply::Has(have)) => {
                        held += batch
                            .iter()
                            .zip(have)
                            .filter(|(_, h)| *h)
                            .map(|((_, l), _)| *l as u64)
                            .sum::<u64>();
                    }
                    Ok(FedReply::Refused(why) | FedReply::NotHere(why)) => {
                        st.error.get_or_insert(format!("{} refused: {why}", peer.fmt_short()));
                        break;
                    }
                    Ok(other) => {
                        st.error.get_or_insert(format!("{}: {other:?}", peer.fmt_short()));
                        break;
                    }
                    Err(e) => {
                        st.error.get_or_insert(format!("{} did not answer: {e}", peer.fmt_short()));
                        break;
                    }
                }
            }
            st.partners.entry(partner).or_default().held_bytes += held;
        }
        Ok(st)
    }
}

/// What a sealed copy holds: the pool document and its members' identity documents, as saved.
#[derive(Debug, minicbor::Encode, minicbor::Decode)]
struct Bundle {
    #[cbor(n(0), with = "minicbor::bytes")]
    pool: Vec<u8>,
    #[n(1)]
    identities: Vec<minicbor::bytes::ByteVec>,
}

impl Replicator {
    /// The first live holder of `pool` (by the placement of the pool's id) sends every partner
    /// holder a sealed copy of the pool's documents when they changed, or every
    /// [`SEAL_EVERY`]: encrypted to its active members' recovery keys, so a member who lost
    /// every node of the pool restores it from a partner with the identity key alone.
    pub(super) async fn share_sealed(&self, pool: Key) {
        let Some(v) = self.pools.view_of(&pool) else { return };
        let me = self.pools.node();
        if v.charter.offsite_replicas == 0
            || place(&pool, &self.placement_holders(&v), 1).first().map(|h| h.node) != Some(me)
        {
            return;
        }
        let Ok(node) = self.node() else { return };
        let members: Vec<Key> =
            v.members.keys().filter(|m| v.active(m).is_some()).copied().collect();
        let docs = self.pools.identity_docs_of(&members);
        let pool_bytes = match self.pools.with_pool(&hex(&pool), |p| Ok(p.save())) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(pool = %v.charter.name, error = %e, "cannot read the pool to seal it");
                return;
            }
        };
        let mut h = blake3::Hasher::new();
        h.update(&pool_bytes);
        for (_, d, _) in &docs {
            h.update(d);
        }
        let digest = *h.finalize().as_bytes();
        let targets: Vec<(Key, Agreement, Roster)> = {
            let parts = lock(&self.partners);
            self.lending_agreements(&pool, &v)
                .into_iter()
                .flat_map(|(ag, r, _)| {
                    parts
                        .get(&ag.id())
                        .filter(|p| p.error.is_none())
                        .map(|p| {
                            let hs: Vec<Holder> = p
                                .holders
                                .iter()
                                .map(|h| Holder {
                                    node: *h.node,
                                    member: p.pool,
                                    zone: hex(&*h.node),
                                    weight: h.share.max(1),
                                })
                                .collect();
                            place(&pool, &hs, SEALED_PER_PARTNER)
                                .into_iter()
                                .map(|h| h.node)
                                .collect::<Vec<_>>()
                        })
                        .unwrap_or_default()
                        .into_iter()
                        .map(move |n| (n, ag.clone(), r.clone()))
                })
                .collect()
        };
        let due: Vec<(Key, Agreement, Roster)> = {
            let sent = lock(&self.sealed_sent);
            targets
                .into_iter()
                .filter(|(n, _, _)| {
                    sent.get(&(pool, *n)).is_none_or(|(d, t)| {
                        (*d != digest && t.elapsed() >= SEAL_AFTER) || t.elapsed() >= SEAL_EVERY
                    })
                })
                .collect()
        };
        if due.is_empty() {
            return;
        }
        let recipients: Vec<age::x25519::Recipient> =
            docs.iter().filter_map(|(_, _, r)| r.as_ref()?.parse().ok()).collect();
        let bundle = Bundle {
            pool: pool_bytes,
            identities: docs.into_iter().map(|(_, d, _)| d.into()).collect(),
        };
        let sealed = match seal_bundle(&bundle, &recipients) {
            Ok(s) if s.len() <= MAX_SEALED => s,
            Ok(s) => {
                tracing::warn!(pool = %v.charter.name, bytes = s.len(), "the pool's documents are too large to seal for partners");
                return;
            }
            Err(e) => {
                tracing::warn!(pool = %v.charter.name, error = %e, "cannot seal the pool's documents for partners");
                return;
            }
        };
        for (holder, ag, roster) in due {
            let Ok(peer) = EndpointId::from_bytes(&holder) else { continue };
            let req = FedRequest::Keep {
                asking: Box::new(self.asking(&ag, &roster)),
                sealed: sealed.clone(),
            };
            match ask_fed(node, peer, &req, Duration::from_secs(30)).await {
                Ok(FedReply::Recorded(_)) => {
                    lock(&self.sealed_sent).insert((pool, holder), (digest, Instant::now()));
                }
                other => {
                    tracing::info!(peer = %peer.fmt_short(), answer = ?other, "a partner did not keep the sealed copy")
                }
            }
        }
    }

    /// Asks `peer` (a partner's node, perhaps) for sealed copies of this identity's pools and
    /// takes those this node lacks (a restored identity whose pools lost every node). Needs
    /// the identity key (the copies are sealed to its recovery key). How many pools it took.
    pub(super) async fn take_sealed(&self, peer: EndpointId) -> Result<usize, String> {
        let Some(key) = crate::datakeys::recovery_key(self.pools.signer()) else { return Ok(0) };
        let node = self.node()?;
        let me = self.pools.signer().author().key;
        let sig = self.pools.signer().sign(&node_message(OFFSITE_CONTEXT, &self.pools.node()));
        let req = FedRequest::Sealed { identity: me, sig };
        let copies = match ask_fed(node, peer, &req, Duration::from_secs(30)).await? {
            FedReply::Sealed(c) => c,
            other => return Err(format!("{other:?}")),
        };
        let mut taken = 0;
        for c in copies {
            let bundle = match open_bundle(&c.bytes, &key) {
                Ok(b) => b,
                Err(e) => {
                    tracing::info!(error = %e, "a sealed copy does not open with this identity");
                    continue;
                }
            };
            let own = crate::identity::IdentityDoc::id_of(&me);
            for d in &bundle.identities {
                if crate::identity::IdentityDoc::load(d).is_ok_and(|x| x.id() == own)
                    && let Err(e) = self.pools.merge_identity_doc(d)
                {
                    tracing::info!(error = %e, "cannot take this identity's document from a sealed copy");
                }
            }
            let mut pool = match crate::pool::Pool::load_judged(&bundle.pool) {
                Ok(p) => p,
                Err(e) => {
                    tracing::info!(error = %e, "a sealed copy's pool document does not check; skipped");
                    continue;
                }
            };
            let id = pool.id();
            if !pool.view().federation.agreements.contains_key(&c.agreement) {
                continue;
            }
            if self.pools.has_pool(&id) {
                // Another copy (another holder's, perhaps newer): every change of it is taken
                // in, judged, so an old copy cannot roll the pool back.
                let (changes, sigs) = pool.doc_mut().changes_since(&[]);
                match self.pools.carry_judge(&id, changes, &sigs) {
                    Ok(j) => {
                        let _ = self.pools.carry_adopt(&id, j);
                    }
                    Err(e) => tracing::info!(error = %e, "a second sealed copy does not merge"),
                }
                continue;
            }
            if pool.view().active(&me).is_none() {
                continue;
            }
            if let Err(e) = self.join_as_device(pool, None).await {
                tracing::warn!(error = %e, "cannot take a pool found in a sealed copy");
                continue;
            }
            taken += 1;
            let name = self.pools.view_of(&id).map(|v| v.charter.name.clone()).unwrap_or_default();
            tracing::info!(pool = %name, peer = %peer.fmt_short(), "found pool {name} of this identity in a sealed copy a federated pool kept, and joined it as a new device");
        }
        Ok(taken)
    }
}

fn seal_bundle(b: &Bundle, to: &[age::x25519::Recipient]) -> Result<Vec<u8>, String> {
    if to.is_empty() {
        return Err("no member lists a recovery recipient".into());
    }
    let plain = minicbor::to_vec(b).map_err(|e| e.to_string())?;
    let enc = age::Encryptor::with_recipients(to.iter().map(|r| r as &dyn age::Recipient))
        .map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(plain.len() + 1024);
    let mut w = enc.wrap_output(&mut out).map_err(|e| e.to_string())?;
    w.write_all(&plain).map_err(|e| e.to_string())?;
    w.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

fn open_bundle(sealed: &[u8], with: &age::x25519::Identity) -> Result<Bundle, String> {
    use std::io::Read;
    if sealed.len() > MAX_SEALED {
        return Err("too large".into());
    }
    let dec = age::Decryptor::new(sealed).map_err(|e| e.to_string())?;
    let mut plain = Vec::new();
    dec.decrypt(std::iter::once(with as &dyn age::Identity))
        .map_err(|e| e.to_string())?
        .take(MAX_SEALED as u64)
        .read_to_end(&mut plain)
        .map_err(|e| e.to_string())?;
    minicbor::decode(&plain).map_err(|e| format!("a damaged sealed copy: {e}"))
}

/// How often this node hands a pending acceptance, or a notice its partner has not taken, to
/// the partner's nodes again.
const HAND_OVER_EVERY: Duration = Duration::from_secs(20);

impl Replicator {
    /// Hands over again what the partner has not recorded: this admin's acceptances still
    /// pending (the offering node was unreachable at `join`), and notices this pool gave that
    /// the partner's nodes did not take yet. Each at most every [`HAND_OVER_EVERY`], until the
    /// partner records it (or refuses it for good).
    pub(super) async fn hand_over_federation(&self) {
        let Ok(node) = self.node() else { return };
        let me = self.pools.signer().author().key;
        let now = self.pools.now_ms();
        for (pool, v) in self.pools.list() {
            if v.active(&me).is_none_or(|m| m.role != crate::view::Role::Admin) {
                continue;
            }
            for (id, e) in &v.federation.agreements {
                let g = &e.agreement;
                if lock(&self.handed_over).contains(id) {
                    continue;
                }
                let pending = e.state(&pool, now) == "pending" && g.acceptance.by == me;
                let partner_signer =
                    if g.offer.pool == pool { g.acceptance.by } else { g.offer.by };
                let notice = e
                    .notice
                    .as_ref()
                    .filter(|n| e.state(&pool, now) == "leaving" && n.by != partner_signer);
                let req = if pending {
                    FedRequest::Accept(Box::new(g.clone()))
                } else if let Some(n) = notice {
                    FedRequest::Notice(n.clone())
                } else {
                    continue;
                };
                let due = lock(&self.hand_over_tried)
                    .get(id)
                    .is_none_or(|t| t.elapsed() >= HAND_OVER_EVERY);
                if !due {
                    continue;
                }
                lock(&self.hand_over_tried).insert(*id, Instant::now());
                let contacts =
                    if g.offer.pool == pool { &g.acceptance.contact } else { &g.offer.contact };
                for c in contacts {
                    let Ok(t) = c.parse::<kith_node::net::ticket::NodeTicket>() else { continue };
                    match crate::fed::deliver(node, &t, &req).await {
                        Ok(FedReply::Recorded(name)) => {
                            if pending {
                                let r = self.pools.with_pool(&hex(&pool), |p| {
                                    p.confirm_agreement(self.pools.signer(), id, now)
                                });
                                if let Err(e) = r {
                                    tracing::warn!(error = %e, "cannot record that the partner took the acceptance");
                                }
                                self.pools.wake();
                                tracing::info!(pool = %v.charter.name, partner = %name, "the partner pool recorded this pool's acceptance: the agreement is active");
                            } else {
                                lock(&self.handed_over).insert(*id);
                                tracing::info!(pool = %v.charter.name, partner = %name, "the partner pool recorded this pool's notice");
                            }
                            break;
                        }
                        Ok(FedReply::Refused(why)) => {
                            tracing::warn!(pool = %v.charter.name, why = %why, "the partner pool refused what this pool handed over; it will not be handed over again");
                            lock(&self.handed_over).insert(*id);
                            // A refused acceptance stays pending: `kith federation ls` says so.
                            break;
                        }
                        Ok(_) | Err(_) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_record_is_cut_off_before_the_next_append_and_nothing_after_it_is_misread() {
        let dir = tempfile::tempdir().unwrap();
        let lent = Lent::new(dir.path().to_path_buf());
        let ag = [7; 32];
        lent.add(&ag, &[([1; 32], 100), ([2; 32], 200)]).unwrap();
        // A crash (or a full disk) in the middle of an append leaves part of a record.
        let path = dir.path().join(format!("{}.held", hex(&ag)));
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[9; 20]).unwrap();
        drop(f);
        let again = Lent::new(dir.path().to_path_buf());
        again.add(&ag, &[([3; 32], 300)]).unwrap();
        let kept = held_on_disk(dir.path());
        let want: HashSet<ChunkId> = [[1; 32], [2; 32], [3; 32]].map(ChunkId).into();
        assert_eq!(kept, want, "every record whole, none shifted");
        assert_eq!(Lent::new(dir.path().to_path_buf()).bytes(&ag), 600);
        // Forgetting an agreement removes its files.
        assert!(again.release(&ag).unwrap());
        assert!(held_on_disk(dir.path()).is_empty());
    }

    #[test]
    fn blobs_the_partner_released_are_forgotten_on_disk_kept_a_while_and_taken_back_by_a_hold() {
        let dir = tempfile::tempdir().unwrap();
        let lent = Lent::new(dir.path().to_path_buf());
        let (ag, other) = ([7; 32], [8; 32]);
        lent.add(&ag, &[([1; 32], 100), ([2; 32], 200), ([3; 32], 300)]).unwrap();
        lent.add(&other, &[([2; 32], 50)]).unwrap();
        // Blob 2 and one never held: only blob 2 goes, and only under this agreement.
        let (gone, freed) = lent.forget(&ag, &[[2; 32], [9; 32]], 1_000).unwrap();
        assert_eq!((gone, freed), (vec![[2; 32]], 200));
        assert_eq!(lent.bytes(&ag), 400);
        let again = Lent::new(dir.path().to_path_buf());
        assert_eq!(again.bytes(&ag), 400, "the record on disk says the same");
        assert_eq!(again.has_many(&ag, &[[1; 32], [2; 32], [3; 32]]), [true, false, true]);
        assert_eq!(again.bytes(&other), 50, "the other agreement's blob 2 stays");
        // Released, it is kept a while: in `gc`'s keep set, shown as released.
        assert_eq!(again.released_of(&ag, &[[1; 32], [2; 32]]), HashSet::from([[2; 32]]));
        assert!(held_on_disk(dir.path()).contains(&ChunkId([2; 32])));
        let week = RELEASED_KEEP.as_millis() as i64;
        assert!(again.released_past(1_000 + week - 1, RELEASED_KEEP).is_empty());
        assert_eq!(again.released_past(1_000 + week, RELEASED_KEEP), vec![(ag, vec![[2; 32]])]);
        // A `Hold` takes it back: held again, no longer released (on disk too).
        again.add(&ag, &[([2; 32], 200)]).unwrap();
        let back = Lent::new(dir.path().to_path_buf());
        assert_eq!((back.bytes(&ag), back.released_of(&ag, &[[2; 32]]).len()), (600, 0));
        // Forgetting everything of this agreement; after the week, out of the keep set.
        let (gone, freed) = back.forget(&ag, &[[1; 32], [2; 32], [3; 32]], 2_000).unwrap();
        assert_eq!((gone.len(), freed), (3, 600));
        assert_eq!(Lent::new(dir.path().to_path_buf()).bytes(&ag), 0);
        let taken = back.unrelease(&ag, &[[1; 32], [3; 32]]).unwrap();
        assert_eq!(taken.len(), 2);
        let kept = held_on_disk(dir.path());
        assert_eq!(
            kept,
            HashSet::from([ChunkId([2; 32])]),
            "blob 2: released here, held for the other"
        );
        // A reclaim that could not run puts them back as released, as they were; the next
        // look is a while later, not at every pass.
        back.mark_released(&ag, &taken).unwrap();
        assert!(back.sweep_due() && !back.sweep_due());
        assert_eq!(
            Lent::new(dir.path().to_path_buf()).released_of(&ag, &[[1; 32], [3; 32]]).len(),
            2
        );
        // Nothing held for an agreement: nothing to forget, no file written.
        assert_eq!(back.forget(&[5; 32], &[[1; 32]], 3_000).unwrap(), (Vec::new(), 0));
        assert!(!dir.path().join(format!("{}.held", hex(&[5; 32]))).exists());
        // The agreement ends: everything of it goes, released ones too.
        assert!(back.release(&ag).unwrap());
        assert!(!dir.path().join(format!("{}.released", hex(&ag))).exists());
    }
}
