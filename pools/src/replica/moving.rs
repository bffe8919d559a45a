//! Moving a member's objects out of a pool, into another pool or home (`kith move`): each
//! object is made whole on this node, placed in the destination and its copies confirmed
//! there by the holders themselves, and only then released in the source. Every step is
//! recorded in the pools' documents or the store, so a move that is stopped at any point is
//! finished by running it again, and no object is ever missing from both places.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use kith_crdt::{Key, hex};
use kith_node::{ObjectId, Progress};

use super::{ReplicaError, Replicator};
use crate::manifest::Manifest;
use crate::placement::place;

/// Where a move puts the objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// Another pool (its id).
    Pool(Key),
    /// This node's own store only.
    Home,
}

/// An object a move left where it was, and why.
#[derive(Debug, Clone)]
pub struct Stayed {
    /// The object (hex).
    pub object: String,
    /// Its name.
    pub name: String,
    /// Why it stayed.
    pub reason: String,
}

/// What a move did.
#[derive(Debug, Clone, Default)]
pub struct Moved {
    /// The source pool's name.
    pub from: String,
    /// The destination pool's name, or `home`.
    pub to: String,
    /// Objects released from the source after their copies were confirmed.
    pub objects: u64,
    /// Their bytes (one copy).
    pub bytes: u64,
    /// Bytes this node fetched first to make objects whole here.
    pub fetched: u64,
    /// Copies every blob moved has at least, as the destination's holders confirmed (0 for
    /// home, or when nothing moved).
    pub copies: u64,
    /// Objects that stayed in the source (a run again finishes them, once the cause is gone).
    pub stayed: Vec<Stayed>,
    /// This identity's sites in the source, which a move does not take: they stay published
    /// there (publish them in the destination with `kith site publish`).
    pub sites: Vec<String>,
}

impl Replicator {
    /// Moves every object of this identity out of pool `from` into `to`; see the module's
    /// documentation. `progress` counts the objects' bytes as each one is released.
    pub async fn move_objects(
        &self,
        from: Key,
        to: Destination,
        progress: Option<Arc<Progress>>,
    ) -> Result<Moved, ReplicaError> {
        let node = self.node()?.clone();
        let signer = self.pools.signer();
        let me = signer.author().key;
        let src = self.pools.view_of(&from).ok_or("no such pool")?;
        let mut out = Moved { from: src.charter.name.clone(), ..Moved::default() };
        let Some(m) = src.active(&me) else {
            return Err(format!(
                "you are not an active member of pool {}: it holds nothing of yours to move",
                out.from
            )
            .into());
        };
        out.sites = m.sites.keys().cloned().collect();
        let dest = match &to {
            Destination::Home => {
                out.to = "home".into();
                None
            }
            Destination::Pool(b) => {
                let v = self.pools.view_of(b).ok_or("no such destination pool")?;
                out.to = v.charter.name.clone();
                if *b == from {
                    return Err(format!("pool {} is both source and destination", out.to).into());
                }
                if v.active(&me).is_none() {
                    return Err(format!(
                        "you are not a member of pool {}: join it first (`kith pool join TICKET`); nothing was moved",
                        out.to
                    )
                    .into());
                }
                self.holders_answer(*b, &v).await?;
                self.ready_for_put(&hex(b)).map_err(|e| {
                    format!(
                        "{}; nothing was moved",
                        e.to_string().trim_end_matches("; nothing was stored")
                    )
                })?;
                Some(*b)
            }
        };
        // Site versions are published, not kept: they stay with their site.
        let mut objects: Vec<(Key, crate::view::PoolObject)> = m
            .objects
            .iter()
            .filter(|(o, _)| m.site_version(o).is_none())
            .map(|(o, po)| (*o, po.clone()))
            .collect();
        objects.sort_by_key(|(o, po)| (po.at_ms, *o));
        if let Some(p) = &progress {
            p.bytes_total.store(objects.iter().map(|(_, po)| po.bytes).sum(), Ordering::Relaxed);
            p.total_known.store(true, Ordering::Relaxed);
        }
        let from_nodes = self.pool_nodes(&src);
        for (oid, po) in objects {
            let name = po.name.open(signer, &from, &oid).unwrap_or_default();
            let stay = |reason: String| Stayed { object: hex(&oid), name: name.clone(), reason };
            // Whole here first: the destination's holders fetch from this node.
            match node
                .fetch_object_from(ObjectId(oid), None, Some(from_nodes.clone()), Some(from))
                .await
            {
                Ok(n) => out.fetched += n,
                Err(e) => {
                    out.stayed.push(stay(format!("cannot make it whole on this node: {e}")));
                    continue;
                }
            }
            if let Some(b) = dest {
                match self.place_and_confirm(b, oid, &name).await {
                    Ok(copies) => {
                        out.copies = if out.objects == 0 { copies } else { out.copies.min(copies) }
                    }
                    Err(e) => {
                        out.stayed.push(stay(e));
                        continue;
                    }
                }
            }
            let now = self.pools.now_ms();
            self.pools.with_pool(&hex(&from), |p| p.remove_object(signer, &oid, now))?;
            out.objects += 1;
            out.bytes += po.bytes;
            if let Some(p) = &progress {
                p.bytes_done.fetch_add(po.bytes, Ordering::Relaxed);
                p.files_done.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(out)
    }

    /// Asks every holder placement would use in pool `v` whether it is up (an empty
    /// question), and refuses to start unless all answer: each object would otherwise wait
    /// out the holder that is down, and stay.
    async fn holders_answer(
        &self,
        pool: Key,
        v: &crate::view::PoolView,
    ) -> Result<(), ReplicaError> {
        let node = self.node()?.clone();
        let live: Vec<(Key, Vec<[u8; 32]>)> =
            self.placement_holders(v).iter().map(|h| (h.node, Vec::new())).collect();
        let answers = self.ask_has(pool, &node, live).await;
        let down: Vec<String> = answers
            .iter()
            .filter_map(|(n, _, a)| {
                a.as_ref().err().map(|e| format!("{} ({e})", holder_name(v, n)))
            })
            .collect();
        if !down.is_empty() {
            return Err(format!(
                "pool {}'s holder {} does not answer; nothing was moved: run the move again once it is back (or once the pool stops counting on it, {} s after it was last heard from)",
                v.charter.name,
                down.join(", holder "),
                v.charter.repair_after_ms / 1000
            )
            .into());
        }
        Ok(())
    }

    /// Puts object `oid` (whole on this node) into pool `pool` and asks the holders placement
    /// gives each blob whether they hold it; `Ok(copies the least copied blob has)` when every
    /// blob has as many copies as [`copies_wanted`] says.
    async fn place_and_confirm(&self, pool: Key, oid: Key, name: &str) -> Result<u64, String> {
        let put = self.put(&hex(&pool), oid, name).await.map_err(|e| {
            e.to_string()
                .trim_end_matches("; the object is stored on this node, not in the pool")
                .to_string()
        })?;
        let manifest: Arc<Manifest> =
            self.manifest_here(&put.manifest).ok_or("the manifest just stored is gone")?;
        let v = self.pools.view_of(&pool).ok_or("the destination pool is gone")?;
        let live = self.placement_holders(&v);
        let want = copies_wanted(&v, live.len());
        // A holder counts only if it took the hold (its copy of the document lists the object,
        // so its reclaim keeps the blobs), or it is this node.
        let me = self.pools.node();
        let took: HashSet<Key> = put
            .acks
            .iter()
            .filter(|a| a.result.is_ok())
            .map(|a| a.node)
            .chain(std::iter::once(me))
            .collect();
        let mut asks: BTreeMap<Key, Vec<[u8; 32]>> = BTreeMap::new();
        let mut distinct = HashSet::new();
        for (id, _) in &manifest.blobs {
            if !distinct.insert(**id) {
                continue;
            }
            for h in place(id, &live, want) {
                asks.entry(h.node).or_default().push(**id);
            }
        }
        let node = self.node()?.clone();
        let answers = self.ask_has(pool, &node, asks.into_iter().collect()).await;
        let mut held: HashSet<([u8; 32], Key)> = HashSet::new();
        let mut silent = Vec::new();
        for (holder, ids, answer) in answers {
            match answer {
                Ok(bits) if took.contains(&holder) => {
                    held.extend(
                        ids.iter().zip(bits).filter(|(_, b)| *b).map(|(id, _)| (*id, holder)),
                    );
                }
                Ok(_) => {}
                Err(e) => silent.push(format!("{} ({e})", holder_name(&v, &holder))),
            }
        }
        let mut copies: HashMap<[u8; 32], usize> = HashMap::new();
        for (id, _) in &held {
            *copies.entry(*id).or_default() += 1;
        }
        let short =
            distinct.iter().filter(|id| copies.get(*id).copied().unwrap_or(0) < want).count();
        if short > 0 {
            let why: Vec<String> = put
                .acks
                .iter()
                .filter_map(|a| {
                    a.result.as_ref().err().map(|e| format!("{}: {e}", holder_name(&v, &a.node)))
                })
                .chain(silent)
                .collect();
            return Err(format!(
                "{short} of its {} chunks have fewer than {want} confirmed copies in pool {}{}; it is listed there already, and running the move again finishes it",
                distinct.len(),
                v.charter.name,
                if why.is_empty() { String::new() } else { format!(" ({})", why.join("; ")) }
            ));
        }
        Ok(distinct.iter().map(|id| copies.get(id).copied().unwrap_or(0) as u64).min().unwrap_or(0))
    }
}

/// The copies a move confirms for each blob: as many as the pool asks for, or as many as it
/// has holders placement uses (live, not failing audits) if fewer: what repair would make.
fn copies_wanted(v: &crate::view::PoolView, live: usize) -> usize {
    (v.charter.replicas as usize).min(live).max(1)
}

/// A holder in words: its member's name and the start of its node id.
fn holder_name(v: &crate::view::PoolView, node: &Key) -> String {
    let who = v.node_owner(node).and_then(|m| v.members.get(&m)).map(|m| m.name.clone());
    match who {
        Some(n) if !n.is_empty() => format!("{n} ({})", hex(&node[..4])),
        _ => hex(&node[..4]),
    }
}
