//! Leaving a pool: what it takes away, whether the pool can do without this member, and the
//! hand-off of what this member's nodes hold for others.
//!
//! ```text
//! plan ──refuse at once──▶ (not a member, last admin, too few zones or too little space left)
//!   │
//!   ▼ (the member confirms: its sites stop, its objects leave the pool)
//! objects come home ── offers withdrawn (marker file) ── hand-off: others copy what we held
//!   │                                                     │ timed out, failed, interrupted:
//!   ▼                                                     ▼ offers put back, marker removed
//! state = left, marker removed                          still a member, told why
//! ```
//!
//! The plan is a pure function of the pool document ([`plan`]); the hand-off is driven by the
//! replicator's health check. A marker file (`pools/<id>.leaving`) holds the offers withdrawn,
//! so a daemon killed in the middle puts them back when it starts ([`restore_interrupted`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kith_crdt::{Key, hex};

use crate::docs::Pools;
use crate::placement::zones;
use crate::pool::PoolError;
use crate::replica::Replicator;
use crate::view::{Offer, PoolView, Role, State};

// What keeps a member's sites when the pool stops serving them, by its former path.
pub use crate::replica::SiteKeeper;

/// How often the hand-off checks the pool's replication.
const HAND_OFF_POLL: Duration = Duration::from_secs(1);
/// Extension of the marker of a hand-off in progress.
const MARKER_EXT: &str = "leaving";

/// Why leaving was refused or did not complete. Every message names the next step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaveError {
    /// This identity is not an active member.
    #[error("you are not a member of pool {pool} (see `kith pool ls`)")]
    NotMember {
        /// The pool's name.
        pool: String,
    },
    /// The pool would have no admin.
    #[error(
        "you are the only admin of pool {pool}; a pool needs one. Make someone else admin first \
         ({}), then leave; or end the pool for everyone with `kith pool dissolve {pool}`",
        match candidate { Some(c) => format!("`kith pool set {pool} role:{c} admin`"), None => "no other member is active".into() }
    )]
    LastAdmin {
        /// The pool's name.
        pool: String,
        /// An active member who could become admin.
        candidate: Option<String>,
    },
    /// Without this member's nodes, the pool cannot keep its replicas in distinct zones.
    #[error(
        "without your nodes, {zones} zone(s) offer storage in pool {pool}, fewer than its {replicas} \
         replicas: the others' data could not be handed off. Lower the factor first \
         (`kith pool set {pool} replicas {zones}`), or ask a member in another household to offer \
         storage (`kith offer {pool} --storage SIZE --zone NAME`)"
    )]
    TooFewZones {
        /// The pool's name.
        pool: String,
        /// Zones that remain.
        zones: usize,
        /// The replication factor.
        replicas: u64,
    },
    /// The others' offers cannot hold every copy.
    #[error(
        "without your nodes, pool {pool} offers {offered} bytes, and the others' data needs {needed} \
         bytes ({replicas} copies): ask members to offer more storage (`kith offer {pool} --storage SIZE`)"
    )]
    TooLittleSpace {
        /// The pool's name.
        pool: String,
        /// Bytes the remaining offers give.
        offered: u64,
        /// Bytes every copy of the others' objects needs.
        needed: u64,
        /// The replication factor.
        replicas: u64,
    },
    /// This member's objects could not all be brought to this node first.
    #[error(
        "your objects in pool {pool} are not all on this node and could not be fetched ({why}); \
         nothing was changed: try again when the holders are up"
    )]
    NotHome {
        /// The pool's name.
        pool: String,
        /// What failed.
        why: String,
    },
    /// The hand-off did not finish in time; the offers were put back.
    #[error(
        "the hand-off is incomplete after {waited_s} s: {missing} bytes of other members' data \
         would still lack copies without your nodes ({why}). Your storage offer is back and you \
         are still a member: run `kith pool leave {pool}` again later, with a longer --wait, or \
         leave at once with --force (the pool then repairs from the other copies)"
    )]
    Incomplete {
        /// The pool's name.
        pool: String,
        /// How long it waited.
        waited_s: u64,
        /// Bytes still missing.
        missing: u64,
        /// Why, as far as this node can tell.
        why: String,
    },
    /// The caller went away (Ctrl-C); the offers were put back.
    #[error(
        "the leave of pool {pool} was interrupted; your storage offer is back and you are still a member"
    )]
    Interrupted {
        /// The pool's name.
        pool: String,
    },
    /// The pool document refused or could not be saved.
    #[error(transparent)]
    Pool(#[from] PoolError),
}

/// What leaving a pool takes away, checked before anything changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeavePlan {
    /// The pool.
    pub pool: Key,
    /// Its name.
    pub name: String,
    /// This member's sites: they stop being served on every node.
    pub sites: Vec<String>,
    /// This member's objects in the pool: they leave it (copies held by others are released).
    pub objects: u64,
    /// Their bytes (one copy).
    pub object_bytes: u64,
    /// This member's nodes that offer storage: what they hold for others is handed off first.
    pub holding_nodes: Vec<Key>,
    /// Bytes of the other members' objects (one copy).
    pub others_bytes: u64,
}

impl LeavePlan {
    /// Whether the member should confirm: always (leaving cannot be undone), and it says why.
    pub fn needs_confirmation(&self) -> bool {
        true
    }

    /// What leaving takes away, in sentences.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = vec![format!(
            "you are out of pool {}: coming back takes a new invite from an admin",
            self.name
        )];
        if !self.sites.is_empty() {
            out.push(format!(
                "your site(s) {} stop being served by the pool's nodes; their current version \
                 comes home as an object in this node's store (publish it in another pool to keep \
                 it up)",
                self.sites.join(", ")
            ));
        }
        if self.objects > 0 {
            out.push(format!(
                "your {} object(s) ({}) leave the pool: they are brought to this node first \
                 and stay in its store (`kith ls`); the copies other members hold are released",
                self.objects,
                crate::fmt::size(self.object_bytes)
            ));
        }
        out
    }
}

/// The plan for `me` leaving the pool `v` (with id `pool`): refused at once if `me` is not a
/// member or is its only admin (see also [`check_capacity`]).
pub fn plan(pool: Key, v: &PoolView, me: &Key) -> Result<LeavePlan, LeaveError> {
    let name = v.charter.name.clone();
    let mine = v.active(me).ok_or_else(|| LeaveError::NotMember { pool: name.clone() })?;
    let admins = v.members.values().filter(|m| m.is_active_admin()).count();
    if mine.role == Role::Admin && admins == 1 {
        let candidate = v
            .members
            .iter()
            .find(|(k, m)| *k != me && m.state == State::Active)
            .map(|(_, m)| m.name.clone());
        return Err(LeaveError::LastAdmin { pool: name, candidate });
    }
    let others_bytes: u64 =
        v.objects().filter(|(owner, _, _)| *owner != me).map(|(_, _, o)| o.bytes).sum();
    let site_objects: std::collections::HashSet<Key> =
        mine.sites.values().flat_map(|s| s.versions.values().map(|x| x.index)).collect();
    let holding_nodes: Vec<Key> =
        mine.nodes.iter().filter(|(_, o)| o.storage > 0).map(|(n, _)| *n).collect();
    Ok(LeavePlan {
        pool,
        name,
        sites: mine.sites.keys().cloned().collect(),
        objects: mine.objects.keys().filter(|o| !site_objects.contains(*o)).count() as u64,
        object_bytes: mine
            .objects
            .iter()
            .filter(|(o, _)| !site_objects.contains(*o))
            .map(|(_, o)| o.bytes)
            .sum(),
        holding_nodes,
        others_bytes,
    })
}

/// Whether the others can take over what `me`'s nodes hold for them: enough zones for the
/// replication factor and enough offered space, without `me`'s nodes. Not needed when leaving
/// with `--force` (no hand-off: the pool repairs from the other copies).
pub fn check_capacity(v: &PoolView, me: &Key) -> Result<(), LeaveError> {
    let name = v.charter.name.clone();
    let others_bytes: u64 =
        v.objects().filter(|(owner, _, _)| *owner != me).map(|(_, _, o)| o.bytes).sum();
    let holds = v.active(me).is_some_and(|m| m.nodes.values().any(|o| o.storage > 0));
    if others_bytes == 0 || !holds {
        return Ok(());
    }
    let rest: Vec<_> =
        v.holders().into_iter().filter(|h| h.member != *me && h.weight > 0).collect();
    let z = zones(&rest);
    let replicas = v.charter.replicas;
    if (z as u64) < replicas {
        return Err(LeaveError::TooFewZones { pool: name, zones: z, replicas });
    }
    let offered: u64 = rest.iter().map(|h| h.weight).sum();
    let needed = others_bytes.saturating_mul(replicas);
    if offered < needed {
        return Err(LeaveError::TooLittleSpace { pool: name, offered, needed, replicas });
    }
    Ok(())
}

/// How far a hand-off is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandOffProgress {
    /// Bytes of copies the others have made so far.
    pub done: u64,
    /// Bytes of copies that were missing without this member's nodes at the start.
    pub total: u64,
}

/// The offers of this member's nodes, withdrawn while a hand-off runs; put back on drop unless
/// the hand-off completed.
struct Withdrawn<'a> {
    pools: &'a Pools,
    pool: Key,
    offers: Vec<(Key, Offer)>,
    done: bool,
}

impl Withdrawn<'_> {
    fn put_back(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        if let Err(e) = put_back(self.pools, &self.pool, &self.offers) {
            tracing::error!(pool = %hex(&self.pool[..4]), error = %e, "cannot put the storage offer back after an unfinished leave");
        }
    }
}

impl Drop for Withdrawn<'_> {
    fn drop(&mut self) {
        self.put_back();
    }
}

fn put_back(pools: &Pools, pool: &Key, offers: &[(Key, Offer)]) -> Result<(), PoolError> {
    let signer = pools.signer();
    let me = signer.author().key;
    pools.with_pool(&hex(pool), |p| {
        // Only nodes still listed (one retired meanwhile stays out).
        let listed: Vec<Key> = p
            .view()
            .members
            .get(&me)
            .map(|m| m.nodes.keys().copied().collect())
            .unwrap_or_default();
        for (node, offer) in offers.iter().filter(|(n, _)| listed.contains(n)) {
            p.offer(signer, node, offer, pools.now_ms())?;
        }
        Ok(())
    })?;
    remove_marker(pools.dir(), pool);
    Ok(())
}

fn marker(dir: &Path, pool: &Key) -> PathBuf {
    dir.join(format!("{}.{MARKER_EXT}", hex(pool)))
}

fn remove_marker(dir: &Path, pool: &Key) {
    let _ = std::fs::remove_file(marker(dir, pool));
}

/// One withdrawn offer, as kept in the marker file.
#[derive(minicbor::Encode, minicbor::Decode)]
struct Kept {
    #[cbor(n(0), with = "minicbor::bytes")]
    node: Key,
    #[n(1)]
    storage: u64,
    #[n(2)]
    egress: u64,
    #[n(3)]
    zone: String,
}

/// Version of the marker file.
const MARKER_VERSION: u8 = 1;

fn write_marker(dir: &Path, pool: &Key, offers: &[(Key, Offer)]) -> std::io::Result<()> {
    let kept: Vec<Kept> = offers
        .iter()
        .map(|(n, o)| Kept { node: *n, storage: o.storage, egress: o.egress, zone: o.zone.clone() })
        .collect();
    let body = minicbor::to_vec((MARKER_VERSION, kept)).expect("encoding to a Vec cannot fail");
    crate::fsutil::write_atomic(&marker(dir, pool), &body)
}

fn read_marker(path: &Path) -> Result<Vec<(Key, Offer)>, String> {
    let b = std::fs::read(path).map_err(|e| e.to_string())?;
    let (v, kept): (u8, Vec<Kept>) = minicbor::decode(&b).map_err(|e| e.to_string())?;
    if v != MARKER_VERSION {
        return Err(format!("marker version {v} is not one this kith knows"));
    }
    Ok(kept
        .into_iter()
        .map(|k| (k.node, Offer { storage: k.storage, egress: k.egress, zone: k.zone }))
        .collect())
}

/// Puts back the offers of leaves that a stopped daemon did not finish; returns the pools.
pub fn restore_interrupted(pools: &Pools) -> Vec<Key> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(pools.dir()) else { return out };
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().and_then(|x| x.to_str()) != Some(MARKER_EXT) {
            continue;
        }
        let Some(pool) = path.file_stem().and_then(|s| s.to_str()).and_then(crate::view::parse_key)
        else {
            continue;
        };
        let still_member =
            pools.view_of(&pool).is_some_and(|v| v.active(&pools.signer().author().key).is_some());
        let result = match read_marker(&path) {
            Ok(offers) if still_member => {
                put_back(pools, &pool, &offers).map_err(|e| e.to_string())
            }
            Ok(_) => {
                remove_marker(pools.dir(), &pool);
                Ok(())
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(()) if still_member => {
                tracing::warn!(pool = %hex(&pool[..4]), "a leave was interrupted when kith stopped; your storage offer is back and you are still a member");
                out.push(pool);
            }
            Ok(()) => {}
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "cannot undo an interrupted leave; left in place")
            }
        }
    }
    out
}

/// Leaves the pool of `plan`: brings this member's objects home, hands off what its nodes hold
/// (withdrawing their offers, waiting at most `limit` for the others to copy), records the
/// departure and takes it to another node. `gone` says whether the caller went away (the leave
/// is then undone); `progress` hears how far the hand-off is. Returns whether another node has
/// the departure (if not, this node passes it on when it next reaches one).
pub async fn leave(
    pools: &Arc<Pools>,
    rep: &Replicator,
    plan: &LeavePlan,
    limit: Duration,
    gone: impl Fn() -> bool,
    mut progress: impl FnMut(HandOffProgress),
) -> Result<bool, LeaveError> {
    let name = plan.name.clone();
    rep.bring_home(plan.pool)
        .await
        .map_err(|why| LeaveError::NotHome { pool: name.clone(), why: why.to_string() })?;
    rep.keep_sites(plan.pool)
        .await
        .map_err(|why| LeaveError::NotHome { pool: name.clone(), why: why.to_string() })?;
    let me = pools.signer().author().key;
    let v =
        pools.view_of(&plan.pool).ok_or_else(|| LeaveError::NotMember { pool: name.clone() })?;
    let offers: Vec<(Key, Offer)> = v
        .active(&me)
        .map(|m| {
            m.nodes.iter().filter(|(_, o)| o.storage > 0).map(|(n, o)| (*n, o.clone())).collect()
        })
        .unwrap_or_default();
    let mut withdrawn = Withdrawn { pools, pool: plan.pool, offers: offers.clone(), done: false };
    if plan.others_bytes > 0 && !offers.is_empty() {
        write_marker(pools.dir(), &plan.pool, &offers)
            .map_err(|e| PoolError::Policy(format!("cannot write the leave marker: {e}")))?;
        let signer = pools.signer();
        pools.with_pool(&hex(&plan.pool), |p| {
            for (node, offer) in &offers {
                let none = Offer { storage: 0, ..offer.clone() };
                p.offer(signer, node, &none, pools.now_ms())?;
            }
            Ok(())
        })?;
        hand_off(rep, plan, limit, &gone, &mut progress).await?;
    }
    let id = plan.pool;
    let others = pools.nodes_by_recency(&v);
    // What this member's nodes accrued since the last record goes into the month's ledger
    // while it is still a member.
    rep.record_usage_of(id);
    pools.with_pool(&hex(&id), |p| p.leave(pools.signer(), pools.now_ms()))?;
    withdrawn.done = true;
    remove_marker(pools.dir(), &id);
    pools.with_identity(|d, s, now| d.drop_pool(s, &id, now).map(|_| ()))?;
    Ok(deliver(pools, id, &others).await)
}

/// How long a departure (or a dissolution) waits to reach another node before the command
/// returns anyway (the node keeps trying in the background).
const DELIVER_TIMEOUT: Duration = Duration::from_secs(20);

/// Takes the latest change of `pool` to one of `nodes` (all tried at once, so a node that is
/// gone costs nothing), so that the member may switch this node off right after: whether one
/// took it in time.
pub async fn deliver(pools: &Arc<Pools>, pool: Key, nodes: &[iroh::EndpointId]) -> bool {
    let mut set = tokio::task::JoinSet::new();
    for peer in nodes.iter().copied() {
        let pools = pools.clone();
        set.spawn(async move {
            let r = pools.sync_one(pool, peer, crate::docs::Proof::Member).await;
            if let Err(e) = &r {
                tracing::debug!(peer = %peer.fmt_short(), error = %e, "departure not delivered");
            }
            r.is_ok()
        });
    }
    let first = async {
        while let Some(r) = set.join_next().await {
            if r.unwrap_or(false) {
                return true;
            }
        }
        false
    };
    tokio::time::timeout(DELIVER_TIMEOUT, first).await.unwrap_or(false)
}

/// Waits until the pool is fully replicated without this member's nodes.
async fn hand_off(
    rep: &Replicator,
    plan: &LeavePlan,
    limit: Duration,
    gone: &impl Fn() -> bool,
    progress: &mut impl FnMut(HandOffProgress),
) -> Result<(), LeaveError> {
    let me = rep.pools().signer().author().key;
    let start = Instant::now();
    let mut total = None;
    loop {
        let h = rep
            .health_without(plan.pool, Some(&me))
            .await
            .map_err(|e| PoolError::Policy(format!("cannot check the pool's replication: {e}")))?;
        let missing = h.under_replicated_bytes;
        let t = *total.get_or_insert(missing);
        progress(HandOffProgress { done: t.saturating_sub(missing), total: t });
        if missing == 0 && h.unreadable.is_empty() {
            return Ok(());
        }
        if gone() {
            return Err(LeaveError::Interrupted { pool: plan.name.clone() });
        }
        if start.elapsed() > limit {
            let why = if !h.unreadable.is_empty() {
                format!("this node cannot read {}", h.unreadable.join("; "))
            } else if h.silent.is_empty() {
                "the other holders have not copied it yet".into()
            } else {
                let names: Vec<String> = h.silent.iter().map(|n| hex(&n[..4])).collect();
                format!("node(s) {} did not answer", names.join(", "))
            };
            return Err(LeaveError::Incomplete {
                pool: plan.name.clone(),
                waited_s: limit.as_secs(),
                missing,
                why,
            });
        }
        tokio::time::sleep(HAND_OFF_POLL).await;
    }
}
