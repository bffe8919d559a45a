//! Moving a member's objects out of a pool, into another pool or home (`kith move`): each
//! object is made whole on this node, placed in the destination and its copies confirmed
//! there by the holders themselves, and only then released in the source. Every step is
//! recorded in the pools' documents or the store, so a move that is stopped at any point is
//! finished by running it again, and no object is ever missing from both places.

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

    /// Asks every holder of pool `v` whether it is up (an empty question), and refuses to start
    /// when fewer answer than the copies the move must confirm: each object would wait out a
    /// holder that is down, and stay.
    async fn holders_answer(
        &self,
        pool: Key,
        v: &crate::view::PoolView,
    ) -> Result<(), ReplicaError> {
        let node = self.node()?.clone();
        let offering: Vec<(Key, Vec<[u8; 32]>)> =
            v.holders().iter().filter(|h| h.weight > 0).map(|h| (h.node, Vec::new())).collect();
        let answers = self.ask_has(pool, &node, offering).await;
        let up = answers.iter().filter(|(_, _, a)| a.is_ok()).count();
        let want = copies_wanted(v);
        if up < want {
            let down: Vec<String> = answers
                .iter()
                .filter_map(|(n, _, a)| a.as_ref().err().map(|e| format!("{}: {e}", hex(&n[..8]))))
                .collect();
            return Err(format!(
                "pool {} keeps {want} copies, and only {up} of its holders answer ({}); nothing was moved: run it again when they are back",
                v.charter.name,
                down.join("; ")
            )
            .into());
        }
        Ok(())
    }

    /// Puts object `oid` (whole on this node) into pool `pool` and asks the holders placement
    /// gives each blob whether they hold it; `Ok(copies the least copied blob has)` when every
    /// blob has as many copies as the pool asks for (or as it has holders offering storage, if
    /// fewer).
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
        let want = copies_wanted(&v);
        let mut asks: std::collections::BTreeMap<Key, Vec<[u8; 32]>> = Default::default();
        for (id, _) in &manifest.blobs {
            for h in place(id, &live, want) {
                asks.entry(h.node).or_default().push(**id);
            }
        }
        let node = self.node()?.clone();
        let answers = self.ask_has(pool, &node, asks.into_iter().collect()).await;
        let mut copies: std::collections::HashMap<[u8; 32], usize> = Default::default();
        let mut silent = Vec::new();
        for (holder, ids, answer) in answers {
            match answer {
                Ok(bits) => {
                    for (id, b) in ids.iter().zip(bits) {
                        if b {
                            *copies.entry(*id).or_default() += 1;
                        }
                    }
                }
                Err(e) => silent.push(format!("{}: {e}", hex(&holder[..8]))),
            }
        }
        let short = manifest
            .blobs
            .iter()
            .filter(|(id, _)| copies.get(&**id).copied().unwrap_or(0) < want)
            .count();
        if short > 0 {
            let why: Vec<String> = put
                .acks
                .iter()
                .filter_map(|a| {
                    a.result.as_ref().err().map(|e| format!("{}: {e}", hex(&a.node[..8])))
                })
                .chain(silent)
                .collect();
            return Err(format!(
                "{short} of its {} blobs have fewer than {want} confirmed copies in pool {}{}",
                manifest.blobs.len(),
                v.charter.name,
                if why.is_empty() { String::new() } else { format!(" ({})", why.join("; ")) }
            ));
        }
        Ok(manifest
            .blobs
            .iter()
            .map(|(id, _)| copies.get(&**id).copied().unwrap_or(0) as u64)
            .min()
            .unwrap_or(0))
    }
}

/// The copies a move confirms for each blob: as many as the pool asks for, or as it has
/// holders offering storage if fewer. A holder that is down counts as one the move waits for,
/// not as one it may do without.
fn copies_wanted(v: &crate::view::PoolView) -> usize {
    let offering = v.holders().iter().filter(|h| h.weight > 0).count();
    (v.charter.replicas as usize).min(offering).max(1)
}
